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
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from .errors import MeasurementError, SpecError
from .memory import Memory, summary_memory
from .spec import ActSpec, ConvSpec, InputSpec, Ints, LayerSpec, NormSpec

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
    #: --train: torch's counter on the backward pass of the layer split into ``groups`` dense
    #: convolutions (where its formula is right), and on the real layer itself
    backward_flops: int | None = None
    backward_flops_torch: int | None = None
    #: --time: median latency of the forward pass, and the number of timed runs
    latency_ms: float | None = None
    timed_runs: int | None = None


@dataclass(frozen=True)
class ChainMeasurement:
    device: str
    layers: tuple[LayerMeasurement, ...]
    receptive_field: Ints | None  # of the whole chain; None where no probe exists yet
    memory: tuple[Memory, ...]  # one per layer: its input, output and params
    total_memory: Memory
    sources: dict[str, str]
    #: --time: what was timed, how, and how long the timing took
    timing: dict[str, Any] | None = None


ACTIVATION_CLASSES: dict[str, Callable[[ActSpec], nn.Module]] = {
    "relu": lambda spec: nn.ReLU(),
    "relu6": lambda spec: nn.ReLU6(),
    "leakyrelu": lambda spec: nn.LeakyReLU(spec.negative_slope),
    "prelu": lambda spec: nn.PReLU(spec.channels),
    "elu": lambda spec: nn.ELU(),
    "gelu": lambda spec: nn.GELU(),
    "silu": lambda spec: nn.SiLU(),
    "hardswish": lambda spec: nn.Hardswish(),
    "hardsigmoid": lambda spec: nn.Hardsigmoid(),
    "sigmoid": lambda spec: nn.Sigmoid(),
    "tanh": lambda spec: nn.Tanh(),
}
NORM_CLASSES = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def build_layer(spec: LayerSpec, device: str = "cpu") -> nn.Module:
    """The torch module a spec describes, in eval mode (inference: batch norm uses its running
    statistics)."""
    if isinstance(spec, NormSpec):
        return NORM_CLASSES[spec.dims](spec.channels, affine=spec.affine, device=device).eval()
    if isinstance(spec, ActSpec):
        return ACTIVATION_CLASSES[spec.kind](spec).to(device).eval()
    return _build_conv(spec, device)


def _build_conv(spec: ConvSpec, device: str) -> nn.Module:
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
    return cls(spec.in_channels, spec.out_channels, spec.kernel_size, **kwargs).eval()


class GroupSplit(nn.Module):
    """A grouped convolution as ``groups`` dense convolutions on channel slices, concatenated:
    the same arithmetic with groups = 1, where torch's backward FLOP formula is right."""

    def __init__(self, spec: ConvSpec, device: str = "cpu") -> None:
        super().__init__()
        part = replace(
            spec,
            in_channels=spec.in_channels // spec.groups,
            out_channels=spec.out_channels // spec.groups,
            groups=1,
        )
        self.parts = nn.ModuleList(_build_conv(part, device) for _ in range(spec.groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chunks = x.chunk(len(self.parts), dim=1)
        return torch.cat([part(chunk) for part, chunk in zip(self.parts, chunks)], dim=1)


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
    #: per layer: what fvcore counted for convolution operators (its "flops", i.e. MACs)
    per_layer: dict[int, int]
    #: per layer: what it counted for other operators (batch_norm, ...), by operator
    others: dict[int, dict[str, int]]
    unsupported: dict[int, dict[str, int]]
    #: operators fvcore has no handler for, counted with its conv rule by a handle convcalc adds
    extended: dict[str, int]


#: the key fvcore's conv handle files its counts under (and convcalc's handle for
#: aten::_convolution_mode too)
FVCORE_CONV_OPS = ("conv",)


def _fvcore_trace(model: nn.Sequential, x: torch.Tensor) -> _FvcoreResult:
    """fvcore's count of the real run, per layer. Its torch.jit tracing warns on every call in
    torch 2.13 (DeprecationWarning, TracerWarning) and logs unsupported operators: none of that
    is for users; what matters is reported as notes.

    ``padding='same'`` or ``'valid'`` makes torch dispatch aten::_convolution_mode, which fvcore
    0.1.5 has no handler for: it would count such a layer as 0 and say so only in a log line.
    convcalc registers fvcore's own conv rule for it (``set_op_handle``, fvcore's extension point).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore.nn's import runs torch.jit.script: deprecated
        from fvcore.nn import FlopCountAnalysis
        from fvcore.nn.jit_handles import conv_flop_count, get_shape

    extended: dict[str, int] = {}

    def convolution_mode(inputs: list[Any], outputs: list[Any]) -> Counter[str]:
        # aten::_convolution_mode(input, weight, bias, stride, padding: str, dilation, groups)
        extended["aten::_convolution_mode"] = extended.get("aten::_convolution_mode", 0) + 1
        x_shape, w_shape, out_shape = (get_shape(v) for v in (inputs[0], inputs[1], outputs[0]))
        return Counter({"conv": int(conv_flop_count(x_shape, w_shape, out_shape, False))})

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = FlopCountAnalysis(model, x)
        analysis.set_op_handle("aten::_convolution_mode", convolution_mode)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        by_module = analysis.by_module_and_operator()
        unsupported = {
            index: dict(analysis.unsupported_ops(str(index))) for index in range(len(model))
        }
    per_layer: dict[int, int] = {}
    others: dict[int, dict[str, int]] = {}
    for index in range(len(model)):
        counts = by_module.get(str(index), {})
        per_layer[index] = sum(int(v) for op, v in counts.items() if op in FVCORE_CONV_OPS)
        others[index] = {op: int(v) for op, v in counts.items() if op not in FVCORE_CONV_OPS and v}
    return _FvcoreResult(per_layer, others, unsupported, extended)


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


def probe_receptive_field(spec: LayerSpec) -> Ints:
    """Extent of the nonzero input gradient of one output element, per spatial dimension.

    The probe has one channel, no bias, all weights 1, padding 0 (padding moves where outputs
    sit, not how far one reaches) and float64. Its input is just long enough that the output
    positions measured have every tap inside it; it is measured at every output position of one
    stride period, and the largest extent is kept. Elementwise layers (batch norm, activations)
    connect each position to itself only: 1.
    """
    if not isinstance(spec, ConvSpec):
        return tuple(1 for _ in range(spec.dims))
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


def probe_chain_receptive_field(chain: Sequence[LayerSpec]) -> Ints:
    """Receptive field of one output of a chain of (non-transposed) layers, by autograd through a
    one-channel probe of the chain's convolutions (elementwise layers change no geometry)."""
    specs = [s for s in chain if isinstance(s, ConvSpec)]
    if not specs:
        return tuple(1 for _ in range(chain[0].dims))
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


# --- backward pass and latency ------------------------------------------------------------------


def _backward_flops(module: nn.Module, x_shape: Ints, device: str) -> int:
    """torch's counter on one backward pass (input and weight gradients) of ``module``."""
    x = torch.zeros(x_shape, device=device, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = module(x)
    counter = _DispatchCounter()
    counter.current = 0
    with counter:
        y.backward(torch.ones_like(y))
    return counter.flops.get(0, 0)


def _time_forward(module: nn.Module, x: torch.Tensor, min_run_time: float) -> tuple[float, int]:
    """Median seconds of one forward pass, and how many runs, with torch.utils.benchmark."""
    from torch.utils import benchmark

    timer = benchmark.Timer(
        stmt="module(x)",
        globals={"module": module, "x": x},
        num_threads=torch.get_num_threads(),
    )
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        measurement = timer.blocked_autorange(min_run_time=min_run_time)
    return measurement.median, len(measurement.times) * measurement.number_per_run


def check_device(device: str) -> str:
    """The torch device to time on: ``cpu``, ``cuda`` (or ``cuda:N``) where one exists."""
    if device == "cpu":
        return device
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SpecError("device", f"--device {device}: no CUDA device is available here")
        return device
    if device == "mps":
        if not torch.backends.mps.is_available():
            raise SpecError("device", "--device mps: no MPS device is available here")
        return device
    raise SpecError("device", f"--device {device!r} must be cpu, cuda, cuda:N or mps")


# --- the measurement ----------------------------------------------------------------------


def element_size(dtype: str) -> int:
    return torch.empty((), dtype=TORCH_DTYPES[dtype]).element_size()


@dataclass(frozen=True)
class Extras:
    """What to measure beyond the forward figures."""

    train: bool = False
    time: bool = False
    time_device: str = "cpu"
    #: each layer is timed for at least this long (torch.utils.benchmark's blocked_autorange)
    min_run_time: float = 0.2


def measure_chain(
    specs: Sequence[LayerSpec],
    input_spec: InputSpec,
    device: str,
    extras: Extras | None = None,
) -> ChainMeasurement:
    """Build the real layers, run them once counted by torch and once traced by fvcore (CPU), or
    once on the meta device; probe each receptive field by autograd; with ``extras``, run the
    backward pass and time the forward pass."""
    extras = extras or Extras()
    if device not in ("cpu", "meta"):
        raise ValueError(f"device must be 'cpu' or 'meta', not {device!r}")
    time_device = check_device(extras.time_device) if extras.time else "cpu"
    try:
        layers = [build_layer(spec, device) for spec in specs]
        model = nn.Sequential(*layers)
        x = torch.zeros(input_spec.shape, device=device)
        record = _run_counted(layers, x)
        if device == "cpu":
            fv = _fvcore_trace(model, x)
            macs: dict[int, int | None] = dict(fv.per_layer)
            others, unsupported = fv.others, fv.unsupported
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
            others, unsupported = {}, {}
            macs_source = (
                "fvcore's conv rule (jit_handles.conv_flop_count) on the meta run's shapes: "
                "fvcore cannot trace meta tensors"
            )
        rf = [probe_receptive_field(spec) for spec in specs]
        chain_rf = rf[0] if len(specs) == 1 else _chain_rf_or_none(specs)
        shapes = [input_spec.shape] + [record.outputs[i] for i in range(len(layers) - 1)]
        backward: list[tuple[int, int] | None] = [None] * len(layers)
        if extras.train:
            for index, (spec, layer) in enumerate(zip(specs, layers)):
                raw = _backward_flops(layer, shapes[index], device)
                split = raw
                if isinstance(spec, ConvSpec) and spec.groups > 1:
                    split = _backward_flops(GroupSplit(spec, device), shapes[index], device)
                backward[index] = (split, raw)
        latency: list[tuple[float, int] | None] = [None] * len(layers)
        timing: dict[str, Any] | None = None
        if extras.time and device == "cpu":
            started = time.perf_counter()
            for index, layer in enumerate(layers):
                moved = layer.to(time_device)
                sample = torch.zeros(shapes[index], device=time_device)
                latency[index] = _time_forward(moved, sample, extras.min_run_time)
            timing = {
                "device": time_device,
                "threads": torch.get_num_threads(),
                "tool": "torch.utils.benchmark.Timer.blocked_autorange",
                "min_run_time_s": extras.min_run_time,
                "seconds": round(time.perf_counter() - started, 3),
            }
        elif extras.time:
            timing = {
                "device": time_device,
                "skipped": "measured on the meta device: too big to run here, so not timed",
            }
    except (RuntimeError, ValueError, TypeError) as error:
        # torch rejected what validation let through
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
        notes += [
            f"fvcore also counts {op}: {n:,} (its convention; convcalc's MACs are convolutions "
            "only)"
            for op, n in sorted(others.get(index, {}).items())
        ]
        flops = record.counter.flops.get(index, 0)
        fv_macs = macs.get(index)
        if fv_macs is not None and 2 * fv_macs != flops:
            notes.append(
                f"fvcore counts {fv_macs:,} MACs, torch's counter {flops:,} FLOPs: "
                "not 2 FLOPs per MAC"
            )
        split_raw = backward[index]
        if split_raw is not None and split_raw[0] != split_raw[1]:
            groups = getattr(specs[index], "groups", 1)
            notes.append(
                f"torch.utils.flop_counter counts this layer's backward as {split_raw[1]:,} "
                f"FLOPs: it ignores groups in the weight gradient (counting it {groups}x). "
                f"Measured on the same layer split into {groups} dense convolutions: "
                f"{split_raw[0]:,}"
            )
        timed = latency[index]
        results.append(
            LayerMeasurement(
                output_shape=out_shape,
                params=count,
                flops=flops,
                macs=fv_macs,
                receptive_field=rf[index],
                output_elements=out_elements,
                notes=tuple(notes),
                backward_flops=None if split_raw is None else split_raw[0],
                backward_flops_torch=None if split_raw is None else split_raw[1],
                latency_ms=None if timed is None else timed[0] * 1e3,
                timed_runs=None if timed is None else timed[1],
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
    if extras.train:
        sources["backward_flops"] = (
            "torch.utils.flop_counter's formulas on a real backward pass (input and weight "
            "gradients); grouped layers split into dense convolutions, where torch counts right"
        )
    return ChainMeasurement(
        device=device,
        layers=tuple(results),
        receptive_field=chain_rf,
        memory=tuple(memories),
        total_memory=total_memory,
        sources=sources,
        timing=timing,
    )


def _chain_rf_or_none(specs: Sequence[LayerSpec]) -> Ints | None:
    if any(isinstance(s, ConvSpec) and s.transposed for s in specs):
        return None
    return probe_chain_receptive_field(specs)
