"""The one module that imports torch and fvcore: builds the real layers and measures them.

Nothing here uses :mod:`convcalc.formulas`; every figure comes from torch or fvcore observing
a real run (on the CPU, or on torch's ``meta`` device for layers too big to run here).

* output shape and parameters: the real ``nn.ConvNd`` / ``nn.ConvTransposeNd`` modules.
* FLOPs: torch.utils.flop_counter's registered formulas, applied to each aten operator the run
  dispatches (what ``FlopCounterMode`` does, without its module tracker, whose dispatch mode pulls
  in ``torch._dynamo`` on first use: about a second).
* MACs: fvcore's ``FlopCountAnalysis`` tracing the real CPU run. fvcore cannot trace meta
  tensors, so for a meta run its conv rule (``fvcore.nn.jit_handles.conv_flop_count``) is applied
  to the shapes the meta run dispatched, and the source says so.
* receptive field: autograd on a one-channel probe with the layer's kernel, stride and dilation,
  all weights 1, on an input just large enough that the output positions measured lie inside it:
  the extent of the nonzero input gradient of one output element, the largest over one stride
  period (transposed layers differ between output positions).
* memory: ``numel`` of the real input, outputs and parameters times torch's element size for the
  requested dtype.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from .errors import MeasurementError
from .memory import Memory, summary_memory
from .spec import ConvSpec, InputSpec, Ints

CONV_CLASSES: dict[tuple[bool, int], type[nn.Module]] = {
    (False, 1): nn.Conv1d,
    (False, 2): nn.Conv2d,
    (False, 3): nn.Conv3d,
    (True, 1): nn.ConvTranspose1d,
    (True, 2): nn.ConvTranspose2d,
    (True, 3): nn.ConvTranspose3d,
}
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class LayerMeasurement:
    output_shape: Ints
    params: int
    flops: int
    macs: int | None
    receptive_field: Ints
    output_elements: int
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChainMeasurement:
    device: str
    layers: tuple[LayerMeasurement, ...]
    receptive_field: Ints | None  # of the whole chain; None where no probe exists yet
    memory: tuple[Memory, ...]  # one per layer: its input, output and params
    total_memory: Memory
    sources: dict[str, str]


def build_layer(spec: ConvSpec, device: str = "cpu") -> nn.Module:
    cls = CONV_CLASSES[(spec.transposed, spec.dims)]
    kwargs: dict[str, Any] = {
        "stride": spec.stride,
        "padding": spec.padding,
        "dilation": spec.dilation,
        "groups": spec.groups,
        "bias": spec.bias,
        "padding_mode": spec.padding_mode,
        "device": device,
    }
    if spec.transposed:
        kwargs["output_padding"] = spec.output_padding
    return cls(spec.in_channels, spec.out_channels, spec.kernel_size, **kwargs)


def _first_line(error: BaseException | Warning) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


# --- torch's own FLOP counter, without the module tracker ------------------------------


@dataclass
class _ConvCall:
    x_shape: Ints
    w_shape: Ints
    out_shape: Ints
    transposed: bool


class _DispatchCounter(TorchDispatchMode):
    """Counts each dispatched aten op with torch.utils.flop_counter's registered formula."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # TorchDispatchMode wraps __torch_dispatch__ in torch._disable_dynamo unless this is
        # False, and that wrapper imports torch._dynamo (~1 s) on the first op. We never compile.
        return False

    def __init__(self) -> None:
        super().__init__()
        self.current: int | None = None
        self.flops: dict[int, int] = {}
        self.convs: dict[int, list[_ConvCall]] = {}
        self.ops: dict[int, list[str]] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.current is None:
            return out
        packet = func._overloadpacket
        self.ops.setdefault(self.current, []).append(str(packet))
        if packet in flop_registry:
            count = flop_registry[packet](*args, **kwargs, out_val=out)
            self.flops[self.current] = self.flops.get(self.current, 0) + int(count)
        if packet is torch.ops.aten.convolution:
            self.convs.setdefault(self.current, []).append(
                _ConvCall(tuple(args[0].shape), tuple(args[1].shape), tuple(out.shape), args[6])
            )
        return out


@dataclass
class _RunRecord:
    outputs: dict[int, Ints] = field(default_factory=dict)
    counter: _DispatchCounter = field(default_factory=_DispatchCounter)
    #: what torch warned about while running each layer, first lines, in order
    warnings: dict[int, list[str]] = field(default_factory=dict)


def _run_counted(layers: Sequence[nn.Module], x: torch.Tensor) -> _RunRecord:
    """One forward pass, layer by layer, counted; torch's warnings are kept as notes, not
    printed (e.g. 'same' padding with an even kernel makes torch copy the input)."""
    record = _RunRecord()
    with torch.no_grad(), record.counter:
        for index, layer in enumerate(layers):
            record.counter.current = index
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                x = layer(x)
            record.outputs[index] = tuple(x.shape)
            messages = [_first_line(w.message) for w in caught]  # type: ignore[arg-type]
            record.warnings[index] = list(dict.fromkeys(messages))
        record.counter.current = None
    return record


# --- fvcore ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _FvcoreResult:
    per_layer: dict[int, int]
    unsupported: dict[int, dict[str, int]]
    #: operators fvcore has no handler for, counted with its conv rule by a handle convcalc adds
    extended: dict[str, int]


#: ``padding='same'`` or ``'valid'`` makes torch dispatch aten::_convolution_mode, which fvcore
#: (0.1.5) has no handler for: it would count such a layer as 0 and say so only in a log line.
FVCORE_EXTENSIONS = ("aten::_convolution_mode",)


def _fvcore_trace(model: nn.Sequential, x: torch.Tensor) -> _FvcoreResult:
    """fvcore's count of the real run. Its torch.jit tracing warns on every call in torch 2.13
    (DeprecationWarning, TracerWarning) and logs unsupported operators: none of it is for users."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore.nn's import runs torch.jit.script: deprecated
        from fvcore.nn import FlopCountAnalysis
        from fvcore.nn.jit_handles import conv_flop_count, get_shape

    extended: dict[str, int] = {}

    def convolution_mode(inputs: list[Any], outputs: list[Any]) -> int:
        # aten::_convolution_mode(input, weight, bias, stride, padding: str, dilation, groups)
        extended["aten::_convolution_mode"] = extended.get("aten::_convolution_mode", 0) + 1
        x_shape, w_shape, out_shape = (get_shape(v) for v in (inputs[0], inputs[1], outputs[0]))
        return int(conv_flop_count(x_shape, w_shape, out_shape, transposed=False))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = FlopCountAnalysis(model, x)
        analysis.set_op_handle("aten::_convolution_mode", convolution_mode)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        by_module = analysis.by_module()
        per_layer = {index: int(by_module.get(str(index), 0)) for index in range(len(model))}
        unsupported = {
            index: dict(analysis.unsupported_ops(str(index))) for index in range(len(model))
        }
    return _FvcoreResult(per_layer, unsupported, extended)


def _fvcore_rule(calls: Sequence[_ConvCall]) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore.nn's import runs torch.jit.script: deprecated
        from fvcore.nn.jit_handles import conv_flop_count

    return sum(
        int(conv_flop_count(list(c.x_shape), list(c.w_shape), list(c.out_shape), c.transposed))
        for c in calls
    )


# --- receptive field probe ------------------------------------------------------------------


def _gradient_extent(y: torch.Tensor, x: torch.Tensor, index: Sequence[int], axis: int) -> int:
    """How many input positions along ``axis`` one output element depends on (0 if none)."""
    (grad,) = torch.autograd.grad(y[(0, 0) + tuple(index)], x, retain_graph=True)
    hit = torch.nonzero(grad[0, 0]).T[axis]
    return int(hit.max() - hit.min()) + 1 if hit.numel() else 0


def probe_receptive_field(spec: ConvSpec) -> Ints:
    """Extent of the nonzero input gradient of one output element, per spatial dimension.

    The probe has one channel, no bias, all weights 1, padding 0 (padding moves where outputs
    sit, not how far one reaches) and float64. Its input is just long enough that the output
    positions measured have every tap inside it; it is measured at every output position of one
    stride period, and the largest extent is kept.
    """
    cls = CONV_CLASSES[(spec.transposed, spec.dims)]
    layer = cls(
        1,
        1,
        spec.kernel_size,
        stride=spec.stride,
        padding=0,
        dilation=spec.dilation,
        bias=False,
        dtype=torch.float64,
    )
    with torch.no_grad():
        layer.weight.fill_(1.0)  # type: ignore[operator]
    spans = [d * (k - 1) + 1 for k, d in zip(spec.kernel_size, spec.dilation)]
    if spec.transposed:
        lengths = [-(-span // s) + 2 for span, s in zip(spans, spec.stride)]
    else:
        lengths = [span + 2 * s for span, s in zip(spans, spec.stride)]
    x = torch.ones((1, 1, *lengths), dtype=torch.float64, requires_grad=True)
    y = layer(x)
    out_size = y.shape[2:]
    # a transposed layer's outputs span-1 .. span-1+s-1 see only real inputs (output span-1
    # always receives input 0 through the last tap); a plain conv on an unpadded input has every
    # output inside it
    if spec.transposed:
        base = [span - 1 for span in spans]
        counts = list(spec.stride)
    else:
        base = [n // 2 for n in out_size]
        counts = list(out_size)
    extents: list[int] = []
    for axis in range(spec.dims):
        first = base[axis] if spec.transposed else 0
        widest = 0
        for position in range(first, first + counts[axis]):
            index = list(base)
            index[axis] = position
            widest = max(widest, _gradient_extent(y, x, index, axis))
        extents.append(widest)
    return tuple(extents)


def probe_chain_receptive_field(specs: Sequence[ConvSpec]) -> Ints:
    """Receptive field of one output of a chain of (non-transposed) layers, by autograd."""
    if len(specs) == 1:
        return probe_receptive_field(specs[0])
    dims = specs[0].dims
    modules = [
        CONV_CLASSES[(False, dims)](
            1,
            1,
            s.kernel_size,
            stride=s.stride,
            padding=0,
            dilation=s.dilation,
            bias=False,
            dtype=torch.float64,
        )
        for s in specs
    ]
    bound = [1] * dims
    jump = [1] * dims
    for s in specs:
        for axis in range(dims):
            bound[axis] += s.dilation[axis] * (s.kernel_size[axis] - 1) * jump[axis]
            jump[axis] *= s.stride[axis]
    lengths = [b + 2 * j for b, j in zip(bound, jump)]
    model = nn.Sequential(*modules)
    with torch.no_grad():
        for module in modules:
            module.weight.fill_(1.0)  # type: ignore[operator]
    x = torch.ones((1, 1, *lengths), dtype=torch.float64, requires_grad=True)
    y = model(x)
    extents = []
    for axis in range(dims):
        center = [n // 2 for n in y.shape[2:]]
        widest = 0
        for position in range(y.shape[2 + axis]):
            center[axis] = position
            widest = max(widest, _gradient_extent(y, x, center, axis))
        extents.append(widest)
    return tuple(extents)


# --- the measurement ----------------------------------------------------------------------


def element_size(dtype: str) -> int:
    return torch.empty((), dtype=TORCH_DTYPES[dtype]).element_size()


def measure_chain(
    specs: Sequence[ConvSpec], input_spec: InputSpec, device: str
) -> ChainMeasurement:
    """Build the real layers, run them once counted by torch and once traced by fvcore (CPU), or
    once on the meta device, and probe each receptive field by autograd."""
    if device not in ("cpu", "meta"):
        raise ValueError(f"device must be 'cpu' or 'meta', not {device!r}")
    try:
        layers = [build_layer(spec, device) for spec in specs]
        model = nn.Sequential(*layers)
        x = torch.zeros(input_spec.shape, device=device)
        record = _run_counted(layers, x)
        if device == "cpu":
            fv = _fvcore_trace(model, x)
            macs: dict[int, int | None] = dict(fv.per_layer)
            unsupported = fv.unsupported
            macs_source = "fvcore FlopCountAnalysis, tracing the real CPU run"
            if fv.extended:
                macs_source += (
                    "; fvcore has no handler for "
                    + ", ".join(sorted(fv.extended))
                    + " (torch's op for padding='same'/'valid'): convcalc registers fvcore's "
                    "own conv rule for it"
                )
        else:
            macs = {
                index: _fvcore_rule(record.counter.convs.get(index, []))
                for index in range(len(layers))
            }
            unsupported = {}
            macs_source = (
                "fvcore's conv rule (jit_handles.conv_flop_count) on the meta run's shapes: "
                "fvcore cannot trace meta tensors"
            )
        rf = [probe_receptive_field(spec) for spec in specs]
        chain_rf = rf[0] if len(specs) == 1 else _chain_rf_or_none(specs)
    except (
        RuntimeError,
        ValueError,
        TypeError,
    ) as error:  # torch rejected what validation let through
        raise MeasurementError(f"torch rejected the layer: {_first_line(error)}") from error

    width = element_size(input_spec.dtype)
    results: list[LayerMeasurement] = []
    memories: list[Memory] = []
    previous_elements = math.prod(input_spec.shape)
    for index, layer in enumerate(layers):
        count = sum(p.numel() for p in layer.parameters())
        out_shape = record.outputs[index]
        out_elements = math.prod(out_shape)
        notes = [f"torch warned: {message}" for message in record.warnings.get(index, [])]
        notes += [
            f"fvcore has no handler for {op} ({calls} call{'s' if calls > 1 else ''}): "
            "it counted nothing for it"
            for op, calls in sorted(unsupported.get(index, {}).items())
        ]
        flops = record.counter.flops.get(index, 0)
        fv_macs = macs.get(index)
        if fv_macs is not None and 2 * fv_macs != flops:
            notes.append(
                f"fvcore counts {fv_macs:,} MACs, torch's counter {flops:,} FLOPs: "
                "not 2 FLOPs per MAC"
            )
        results.append(
            LayerMeasurement(
                output_shape=out_shape,
                params=count,
                flops=flops,
                macs=fv_macs,
                receptive_field=rf[index],
                output_elements=out_elements,
                notes=tuple(notes),
            )
        )
        memories.append(summary_memory(previous_elements, [out_elements], count, width))
        previous_elements = out_elements
    total_memory = summary_memory(
        math.prod(input_spec.shape),
        [r.output_elements for r in results],
        sum(r.params for r in results),
        width,
    )
    where = "the real CPU run" if device == "cpu" else "the run on torch's meta device"
    sources = {
        "output_shape": where,
        "params": "the real module's parameters",
        "macs": macs_source,
        "flops": f"torch.utils.flop_counter's formulas on {where}",
        "receptive_field": (
            "autograd on a one-channel probe with the same kernel, stride and dilation "
            "(extent of the input gradient of one output)"
        ),
        "memory": (
            f"numel of the tensors of {where} × torch's element size for {input_spec.dtype}"
        ),
    }
    return ChainMeasurement(
        device=device,
        layers=tuple(results),
        receptive_field=chain_rf,
        memory=tuple(memories),
        total_memory=total_memory,
        sources=sources,
    )


def _chain_rf_or_none(specs: Sequence[ConvSpec]) -> Ints | None:
    if any(s.transposed for s in specs):
        return None
    return probe_chain_receptive_field(specs)
