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

import contextlib
import functools
import itertools
import math
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from convcalc.core.measured import ChainMeasurement, LayerMeasurement
from convcalc.core.memory import Memory, summary_memory
from convcalc.core.spec import (
    ActSpec,
    AdaptivePoolSpec,
    ConvSpec,
    InputSpec,
    Ints,
    LayerSpec,
    LinearSpec,
    Node,
    NormSpec,
    PoolSpec,
    chain,
    padding_pairs,
)
from convcalc.errors import MeasurementError, SpecError

CONV_CLASSES: dict[tuple[bool, int], type[nn.Module]] = {
    (False, 1): nn.Conv1d,
    (False, 2): nn.Conv2d,
    (False, 3): nn.Conv3d,
    (True, 1): nn.ConvTranspose1d,
    (True, 2): nn.ConvTranspose2d,
    (True, 3): nn.ConvTranspose3d,
}
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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


class Add(nn.Module):
    """A residual join: the sum of its inputs."""

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        total = inputs[0]
        for other in inputs[1:]:
            total = total + other
        return total


POOL_CLASSES: dict[tuple[str, int], Callable[..., nn.Module]] = {
    ("max", 1): nn.MaxPool1d,
    ("max", 2): nn.MaxPool2d,
    ("max", 3): nn.MaxPool3d,
    ("avg", 1): nn.AvgPool1d,
    ("avg", 2): nn.AvgPool2d,
    ("avg", 3): nn.AvgPool3d,
}
ADAPTIVE_CLASSES: dict[tuple[str, int], Callable[..., nn.Module]] = {
    ("max", 1): nn.AdaptiveMaxPool1d,
    ("max", 2): nn.AdaptiveMaxPool2d,
    ("max", 3): nn.AdaptiveMaxPool3d,
    ("avg", 1): nn.AdaptiveAvgPool1d,
    ("avg", 2): nn.AdaptiveAvgPool2d,
    ("avg", 3): nn.AdaptiveAvgPool3d,
}


def build_layer(spec: LayerSpec, device: str = "cpu") -> nn.Module:
    """The torch module a spec describes, in eval mode (inference: batch norm uses its running
    statistics, dropout is the identity)."""
    if isinstance(spec, ConvSpec):
        return _build_conv(spec, device)
    if isinstance(spec, NormSpec):
        module: nn.Module = NORM_CLASSES[max(spec.dims, 1)](spec.channels, affine=spec.affine)
    elif isinstance(spec, ActSpec):
        module = ACTIVATION_CLASSES[spec.kind](spec)
    elif isinstance(spec, PoolSpec):
        if spec.kind == "max":
            module = POOL_CLASSES[("max", spec.dims)](
                spec.kernel_size,
                spec.stride,
                spec.padding,
                spec.dilation,
                ceil_mode=spec.ceil_mode,
            )
        else:
            module = POOL_CLASSES[("avg", spec.dims)](
                spec.kernel_size, spec.stride, spec.padding, ceil_mode=spec.ceil_mode
            )
    elif isinstance(spec, AdaptivePoolSpec):
        module = ADAPTIVE_CLASSES[(spec.kind, spec.dims)](spec.output_size)
    elif isinstance(spec, LinearSpec):
        module = nn.Linear(spec.in_features, spec.out_features, bias=spec.bias)
    elif spec.kind == "flatten":
        module = nn.Flatten()
    elif spec.kind == "dropout":
        module = nn.Dropout()
    elif spec.kind == "add":
        module = Add()
    else:
        module = nn.Identity()
    return module.to(device).eval()


class GraphModule(nn.Module):
    """A network of nodes run in order; node i reads the outputs of ``inputs[i]`` (-1: the
    network input). Its modules are ``nodes.0``, ``nodes.1``, ... (fvcore reports them so)."""

    def __init__(self, modules: Sequence[nn.Module], inputs: Sequence[tuple[int, ...]]) -> None:
        super().__init__()
        self.nodes = nn.ModuleList(modules)
        self.sources = [tuple(i) for i in inputs]
        #: called before and after each node (convcalc's counter attributes ops to nodes)
        self.before: Callable[[int], None] | None = None
        self.after: Callable[[int, torch.Tensor], None] | None = None

    def run(self, x: torch.Tensor, last: int | None = None) -> list[torch.Tensor]:
        outputs: list[torch.Tensor] = []
        for index, (module, sources) in enumerate(zip(self.nodes, self.sources)):
            if last is not None and index > last:
                break
            if self.before:
                self.before(index)
            out = module(*[x if i < 0 else outputs[i] for i in sources])
            if self.after:
                self.after(index, out)
            outputs.append(out)
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)[-1]


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
        #: (rows, inner, columns) of each matrix multiply (linear layers)
        self.matmuls: dict[int, list[tuple[int, int, int]]] = {}
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
        elif packet is torch.ops.aten.addmm or packet is torch.ops.aten.mm:
            a, b = (args[1], args[2]) if packet is torch.ops.aten.addmm else (args[0], args[1])
            self.matmuls.setdefault(self.current, []).append(
                (int(a.shape[0]), int(a.shape[1]), int(b.shape[1]))
            )
        return out


@dataclass
class _RunRecord:
    outputs: dict[int, Ints] = field(default_factory=dict)
    counter: _DispatchCounter = field(default_factory=_DispatchCounter)
    #: what torch warned about while running each layer, first lines, in order
    warnings: dict[int, list[str]] = field(default_factory=dict)


def _run_counted(graph: GraphModule, x: torch.Tensor) -> _RunRecord:
    """One forward pass, node by node, counted; torch's warnings are kept as notes, not
    printed (e.g. 'same' padding with an even kernel makes torch copy the input)."""
    record = _RunRecord()
    with torch.no_grad(), record.counter, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seen = 0

        def before(index: int) -> None:
            nonlocal seen
            record.counter.current = index
            seen = len(caught)

        def after(index: int, out: torch.Tensor) -> None:
            record.outputs[index] = tuple(out.shape)
            messages = [_first_line(w.message) for w in caught[seen:]]  # type: ignore[arg-type]
            record.warnings[index] = list(dict.fromkeys(messages))

        graph.before, graph.after = before, after
        try:
            graph.run(x)
        finally:
            graph.before = graph.after = None
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


#: the keys fvcore files the multiply-adds of convolutions (and convcalc's handle for
#: aten::_convolution_mode) and of linear layers under
FVCORE_MAC_OPS = ("conv", "linear", "addmm", "matmul", "mm")


def _fvcore_trace(model: GraphModule, x: torch.Tensor) -> _FvcoreResult:
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
        count = len(model.nodes)
        unsupported = {
            index: dict(analysis.unsupported_ops(f"nodes.{index}")) for index in range(count)
        }
    per_layer: dict[int, int] = {}
    others: dict[int, dict[str, int]] = {}
    for index in range(count):
        counts = by_module.get(f"nodes.{index}", {})
        per_layer[index] = sum(int(v) for op, v in counts.items() if op in FVCORE_MAC_OPS)
        others[index] = {op: int(v) for op, v in counts.items() if op not in FVCORE_MAC_OPS and v}
    return _FvcoreResult(per_layer, others, unsupported, extended)


def _fvcore_rule(calls: Sequence[_ConvCall], matmuls: Sequence[tuple[int, int, int]]) -> int:
    """fvcore's rules on shapes a meta run dispatched: its conv rule (a pure function in
    fvcore.nn.jit_handles) and its linear rule, rows × inner × columns (linear_flop_jit takes
    traced values, so it is restated here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore.nn's import runs torch.jit.script: deprecated
        from fvcore.nn.jit_handles import conv_flop_count

    return sum(
        int(conv_flop_count(list(c.x_shape), list(c.w_shape), list(c.out_shape), c.transposed))
        for c in calls
    ) + sum(rows * inner * columns for rows, inner, columns in matmuls)


# --- receptive field probe ------------------------------------------------------------------


def _gradient_extents(y: torch.Tensor, x: torch.Tensor, index: Sequence[int]) -> list[int]:
    """How many input positions along each axis one output element depends on (0 if none)."""
    (grad,) = torch.autograd.grad(y[(0, 0) + tuple(index)], x, retain_graph=True)
    hits = torch.nonzero(grad[0, 0]).T
    return [int(h.max() - h.min()) + 1 if h.numel() else 0 for h in hits]


def _gradient_extent(y: torch.Tensor, x: torch.Tensor, index: Sequence[int], axis: int) -> int:
    return _gradient_extents(y, x, index)[axis]


def probe_receptive_field(spec: LayerSpec, input_size: Ints | None = None) -> Ints:
    """Extent of the nonzero input gradient of one output element, per spatial dimension.

    The probe has one channel, no bias, all weights 1, padding 0 (padding moves where outputs
    sit, not how far one reaches) and float64. Its input is just long enough that the output
    positions measured have every tap inside it; it is measured at every output position of one
    stride period, and the largest extent is kept. Elementwise layers (batch norm, activations)
    connect each position to itself only: 1.
    """
    if isinstance(spec, LinearSpec) or getattr(spec, "kind", "") == "flatten":
        return ()
    if isinstance(spec, PoolSpec):
        # the window's geometry, as a conv of ones: max pooling's gradient would reach only the
        # maximum of each window
        spec = ConvSpec(1, 1, spec.kernel_size, spec.stride, (0,) * spec.dims, spec.dilation)
    if isinstance(spec, AdaptivePoolSpec) and input_size is not None:
        return _probe_adaptive(spec, input_size)
    if not isinstance(spec, ConvSpec):
        return tuple(1 for _ in range(spec.dims))
    return _probe_window(spec.transposed, spec.kernel_size, spec.stride, spec.dilation)


@functools.lru_cache(maxsize=4096)
def _probe_window(transposed: bool, kernel: Ints, stride: Ints, dilation: Ints) -> Ints:
    """The probe of one window geometry (kernel, stride, dilation), measured once per process:
    a sweep repeats geometries, and the probe depends on nothing else."""
    spec = ConvSpec(1, 1, kernel, stride, (0,) * len(kernel), dilation, transposed=transposed)
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


def _probe_adaptive(spec: AdaptivePoolSpec, input_size: Ints) -> Ints:
    """Widest window of adaptive average pooling, by autograd at every output position."""
    x = torch.ones((1, 1, *input_size), dtype=torch.float64, requires_grad=True)
    y = ADAPTIVE_CLASSES[("avg", spec.dims)](spec.output_size)(x)
    extents = [0] * spec.dims
    for position in itertools.product(*(range(n) for n in y.shape[2:])):
        extents = [max(e, g) for e, g in zip(extents, _gradient_extents(y, x, position))]
    return tuple(extents)


def _averaging(module: nn.Module, kernel: Ints) -> nn.Module:
    """Every weight 1/taps, frozen: the probe only differentiates with respect to its input."""
    with torch.no_grad():
        module.weight.fill_(1.0 / math.prod(kernel))  # type: ignore[operator]
    module.weight.requires_grad_(False)
    return module


def _probe_dtype(nodes: Sequence[Node]) -> torch.dtype:
    """float32 (six times faster here) unless the smallest gradient the probe can produce, the
    product of 1/taps along the longest path, could underflow it: then float64."""
    depth: dict[int, float] = {-1: 0.0}
    for index, node in enumerate(nodes):
        spec = node.spec
        taps = math.prod(spec.kernel_size) if isinstance(spec, ConvSpec | PoolSpec) else 1
        depth[index] = max(depth[i] for i in node.inputs) + math.log10(taps)
    return torch.float32 if max(depth.values()) < 30 else torch.float64


def _probe_module(
    spec: LayerSpec, real_size: Ints, dtype: torch.dtype = torch.float64
) -> nn.Module | None:
    """The one-channel stand-in of a layer in the receptive-field probe: its geometry, every
    weight 1/taps (an average: values stay at most 1); None where the probe stops (flat
    layers)."""
    if isinstance(spec, ConvSpec):
        cls = CONV_CLASSES[(spec.transposed, spec.dims)]
        kwargs: dict[str, Any] = {
            "stride": spec.stride,
            "padding": spec.padding,
            "dilation": spec.dilation,
            "bias": False,
            "dtype": dtype,
        }
        if spec.transposed:
            kwargs["output_padding"] = spec.output_padding
        module = cls(1, 1, spec.kernel_size, **kwargs)
        return _averaging(module, spec.kernel_size)
    if isinstance(spec, PoolSpec):
        # max pooling routes the gradient to one input per window: the probe averages instead,
        # which reaches every input of the window (its geometry is what is measured)
        if all(d == 1 for d in spec.dilation):
            return POOL_CLASSES[("avg", spec.dims)](
                spec.kernel_size, spec.stride, spec.padding, ceil_mode=spec.ceil_mode
            )
        module = CONV_CLASSES[(False, spec.dims)](
            1,
            1,
            spec.kernel_size,
            stride=spec.stride,
            padding=spec.padding,
            dilation=spec.dilation,
            bias=False,
            dtype=dtype,
        )
        return _averaging(module, spec.kernel_size)
    if isinstance(spec, AdaptivePoolSpec):
        # its windows depend on the input size, which the probe changes: stand in with the
        # windows it has at the real size (the identity, or uniform windows); otherwise stop
        if spec.output_size == real_size:
            return nn.Identity()
        if all(n % o == 0 for n, o in zip(real_size, spec.output_size)) and any(
            o > 1 for o in spec.output_size
        ):
            window = tuple(n // o for n, o in zip(real_size, spec.output_size))
            return POOL_CLASSES[("avg", spec.dims)](window, window)
        return None
    if isinstance(spec, LinearSpec) or getattr(spec, "kind", "") == "flatten":
        return None
    if getattr(spec, "kind", "") == "add":
        return Add()
    return nn.Identity()  # batch norm, activations, identity, dropout: no geometry


def _geometry_bound(
    nodes: Sequence[Node], last: int, dims: int, modules: Sequence[nn.Module | None]
) -> tuple[list[int], list[int]]:
    """Upper bounds, per axis, of the receptive field and stride of node ``last``'s output, from
    kernel extents and strides alone (transposed layers counted as stride 1)."""
    fields: dict[int, list[int]] = {-1: [1] * dims}
    jumps: dict[int, list[int]] = {-1: [1] * dims}
    for index, node in enumerate(nodes[: last + 1]):
        source = max(node.inputs, key=lambda i: sum(fields[i]))
        field, jump = list(fields[source]), list(jumps[source])
        spec = node.spec
        if isinstance(spec, ConvSpec | PoolSpec):
            for axis in range(dims):
                field[axis] += spec.dilation[axis] * (spec.kernel_size[axis] - 1) * jump[axis]
                transposed = isinstance(spec, ConvSpec) and spec.transposed
                jump[axis] *= 1 if transposed else spec.stride[axis]
        elif isinstance(spec, AdaptivePoolSpec) and not isinstance(modules[index], nn.Identity):
            window = _ints(getattr(modules[index], "kernel_size", 1), dims)
            field = [f + (w - 1) * j for f, w, j in zip(field, window, jump)]
            jump = [j * w for j, w in zip(jump, window)]
        fields[index], jumps[index] = field, jump
    return fields[last], jumps[last]


def _global_pool(spec: LayerSpec) -> bool:
    """Adaptive pooling to size 1: every output sees the whole input, by definition."""
    return isinstance(spec, AdaptivePoolSpec) and all(o == 1 for o in spec.output_size)


def _ints(value: Any, dims: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, tuple | list) else (int(value),) * dims


def _asymmetry(nodes: Sequence[Node], axis: int) -> int:
    """How far uneven padding ('same' with an even kernel) can shift a central output, in
    network-input positions: the probe input is made this much longer."""
    shift, jump = 0, 1
    for node in nodes:
        spec = node.spec
        if isinstance(spec, ConvSpec) and not spec.transposed:
            left, right = padding_pairs(spec)[axis]
            shift += abs(right - left) * jump
        if isinstance(spec, ConvSpec | PoolSpec):
            jump *= spec.stride[axis]
    return 2 * shift


def probe_cumulative_receptive_field(
    nodes: Sequence[Node],
    input_spec: InputSpec,
    input_sizes: Sequence[Ints] | None = None,
    layer_fields: Sequence[Ints] | None = None,
) -> list[Ints | None]:
    """Receptive field of one output of every node, relative to the network input, by autograd
    through a one-channel stand-in of the whole network (None for flat nodes).

    For node i the probe input is larger than any receptive field node i could have, by a
    multiple of the network's total stride (so every node's output size, and every residual
    join, behaves as at the real size); the gradient of the central output element (of one
    stride period of them, where transposed layers make positions differ) is taken, and the
    extent of its nonzero entries per axis is the measurement.
    """
    dims = input_spec.dims
    sizes = input_sizes or [input_spec.size] * len(nodes)
    dtype = _probe_dtype(nodes)
    modules = [_probe_module(node.spec, size, dtype) for node, size in zip(nodes, sizes)]
    spatial = []
    for index, module in enumerate(modules):
        if module is None:
            break
        spatial.append(index)
    has_transposed = any(isinstance(n.spec, ConvSpec) and n.spec.transposed for n in nodes)
    graph = GraphModule([m or nn.Identity() for m in modules], [n.inputs for n in nodes])
    total_jump = [1] * dims
    for node, module in zip(nodes, modules):
        if isinstance(module, nn.AvgPool1d | nn.AvgPool2d | nn.AvgPool3d) and isinstance(
            node.spec, AdaptivePoolSpec
        ):
            total_jump = [j * s for j, s in zip(total_jump, _ints(module.stride, dims))]
        if isinstance(node.spec, ConvSpec | PoolSpec) and not (
            isinstance(node.spec, ConvSpec) and node.spec.transposed
        ):
            total_jump = [j * s for j, s in zip(total_jump, node.spec.stride)]
    results: list[Ints | None] = [None] * len(nodes)
    measured = [index for index in spatial if not _global_pool(nodes[index].spec)]
    if layer_fields is not None:
        # a layer fed by the network input: its field relative to the network input is its own,
        # already measured by its probe (the same gradient, on a smaller input)
        for index in list(measured):
            if nodes[index].inputs == (-1,) and len(layer_fields[index]) == dims:
                results[index] = layer_fields[index]
                measured.remove(index)
    if not measured:
        return results
    # one probe input for all nodes, a little larger than any of their fields could be: the
    # central output of a node then sees only real input positions. Its length is congruent to
    # the real input's modulo the network's total stride, so that every node's output size
    # rounds as at the real size (and residual joins still match).
    need = [8] * dims
    for index in measured:
        bound, jump = _geometry_bound(nodes, index, dims, modules)
        need = [max(n, b + 2 * j + 4) for n, b, j in zip(need, bound, jump)]
    need = [n + _asymmetry(nodes, axis) for axis, n in enumerate(need)]
    lengths = [n + (real - n) % step for real, n, step in zip(input_spec.size, need, total_jump)]
    x = torch.ones((1, 1, *lengths), dtype=dtype, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outputs = graph.run(x, last=measured[-1])
    for index in measured:
        source = nodes[index].inputs[0]
        if isinstance(modules[index], nn.Identity) and source >= 0 and results[source]:
            # batch norm, activations: the probe's output here is its input's, unchanged
            results[index] = results[source]
            continue
        y = outputs[index]
        center = [n // 2 for n in y.shape[2:]]
        if not has_transposed:  # every position alike: one gradient gives every axis
            results[index] = tuple(_gradient_extents(y, x, center))
            continue
        # transposed layers: positions differ; every combination of one period per axis
        periods = [
            min(
                math.prod(
                    n.spec.stride[axis]
                    for n in nodes[: index + 1]
                    if isinstance(n.spec, ConvSpec | PoolSpec)
                ),
                8,
            )
            for axis in range(dims)
        ]
        extents = [0] * dims
        for offsets in itertools.product(*(range(p) for p in periods)):
            position = [min(c + o, n - 1) for c, o, n in zip(center, offsets, y.shape[2:])]
            extents = [max(e, g) for e, g in zip(extents, _gradient_extents(y, x, position))]
        results[index] = tuple(extents)
    return results


# --- backward pass and latency ------------------------------------------------------------------


def _backward_flops(
    module: nn.Module, node: Node, shapes: Sequence[Ints], input_shape: Ints, device: str
) -> int:
    """torch's counter on one backward pass (input and weight gradients) of ``module``."""
    inputs = _inputs_for(node, shapes, input_shape, device, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = module(*inputs)
    counter = _DispatchCounter()
    counter.current = 0
    with counter:
        y.backward(torch.ones_like(y))
    return counter.flops.get(0, 0)


def _time_forward(
    module: nn.Module, inputs: Sequence[torch.Tensor], min_run_time: float
) -> tuple[float, int]:
    """Median seconds of one forward pass, and how many runs, with torch.utils.benchmark."""
    from torch.utils import benchmark

    timer = benchmark.Timer(
        stmt="module(*inputs)",
        globals={"module": module, "inputs": inputs},
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
    """A plain chain of layers: see :func:`measure_graph`."""
    return measure_graph(chain(specs), input_spec, device, extras)


def _inputs_for(
    node: Node, shapes: Sequence[Ints], input_shape: Ints, device: str, requires_grad: bool = False
) -> list[torch.Tensor]:
    return [
        torch.zeros(input_shape if i < 0 else shapes[i], device=device, requires_grad=requires_grad)
        for i in node.inputs
    ]


def measure_graph(
    nodes: Sequence[Node],
    input_spec: InputSpec,
    device: str,
    extras: Extras | None = None,
) -> ChainMeasurement:
    """Build the real layers, run them once counted by torch and once traced by fvcore (CPU), or
    once on the meta device; probe every receptive field by autograd; with ``extras``, run each
    layer's backward pass and time its forward pass."""
    extras = extras or Extras()
    if device not in ("cpu", "meta"):
        raise ValueError(f"device must be 'cpu' or 'meta', not {device!r}")
    time_device = check_device(extras.time_device) if extras.time else "cpu"
    specs = [node.spec for node in nodes]
    try:
        layers = [build_layer(spec, device) for spec in specs]
        graph = GraphModule(layers, [node.inputs for node in nodes])
        x = torch.zeros(input_spec.shape, device=device)
        record = _run_counted(graph, x)
        shapes = [record.outputs[i] for i in range(len(nodes))]
        if device == "cpu":
            fv = _fvcore_trace(graph, x)
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
                index: _fvcore_rule(
                    record.counter.convs.get(index, []), record.counter.matmuls.get(index, [])
                )
                for index in range(len(layers))
            }
            others, unsupported = {}, {}
            macs_source = (
                "fvcore's conv and linear rules on the meta run's shapes: fvcore cannot trace "
                "meta tensors"
            )
        rf = [
            probe_receptive_field(
                node.spec, input_spec.size if node.inputs[0] < 0 else shapes[node.inputs[0]][2:]
            )
            for node in nodes
        ]
        cumulative = probe_cumulative_receptive_field(
            nodes,
            input_spec,
            [input_spec.size if n.inputs[0] < 0 else shapes[n.inputs[0]][2:] for n in nodes],
            rf,
        )
        backward: list[tuple[int, int] | None] = [None] * len(layers)
        if extras.train:
            for index, (node, layer) in enumerate(zip(nodes, layers)):
                raw = _backward_flops(layer, node, shapes, input_spec.shape, device)
                split = raw
                if isinstance(node.spec, ConvSpec) and node.spec.groups > 1:
                    split = _backward_flops(
                        GroupSplit(node.spec, device), node, shapes, input_spec.shape, device
                    )
                backward[index] = (split, raw)
        latency: list[tuple[float, int] | None] = [None] * len(layers)
        timing: dict[str, Any] | None = None
        if extras.time and device == "cpu":
            started = time.perf_counter()
            for index, (node, layer) in enumerate(zip(nodes, layers)):
                moved = layer.to(time_device)
                samples = _inputs_for(node, shapes, input_spec.shape, time_device)
                latency[index] = _time_forward(moved, samples, extras.min_run_time)
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
                "skipped": "measured on the meta device (too big to run here, or "
                "--measure-on meta): nothing ran, so nothing was timed",
            }
    except (RuntimeError, ValueError, TypeError) as error:
        # torch rejected what validation let through
        raise MeasurementError(f"torch rejected the layer: {_first_line(error)}") from error

    width = element_size(input_spec.dtype)
    results: list[LayerMeasurement] = []
    memories: list[Memory] = []
    for index, (node, layer) in enumerate(zip(nodes, layers)):
        count = sum(p.numel() for p in layer.parameters())
        out_elements = math.prod(shapes[index])
        in_elements = sum(math.prod(input_spec.shape if i < 0 else shapes[i]) for i in node.inputs)
        notes = [f"torch warned: {message}" for message in record.warnings.get(index, [])]
        notes += [
            f"fvcore has no handler for {op} ({calls} call{'s' if calls > 1 else ''}): "
            "it counted nothing for it"
            for op, calls in sorted(unsupported.get(index, {}).items())
        ]
        notes += [
            f"fvcore also counts {op}: {n:,} (its convention; convcalc's MACs are convolutions "
            "and linear layers only)"
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
            groups = getattr(node.spec, "groups", 1)
            notes.append(
                f"torch.utils.flop_counter counts this layer's backward as {split_raw[1]:,} "
                f"FLOPs: it ignores groups in the weight gradient (counting it {groups}x). "
                f"Measured on the same layer split into {groups} dense convolutions: "
                f"{split_raw[0]:,}"
            )
        timed = latency[index]
        results.append(
            LayerMeasurement(
                output_shape=shapes[index],
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
                cumulative_receptive_field=cumulative[index],
            )
        )
        memories.append(summary_memory(in_elements, [out_elements], count, width))
    total_memory = summary_memory(
        math.prod(input_spec.shape),
        [r.output_elements or 0 for r in results],
        sum(p.numel() for p in graph.parameters()),
        width,
    )
    where = "the real CPU run" if device == "cpu" else "the run on torch's meta device"
    sources = {
        "output_shape": where,
        "params": "the real modules' parameters",
        "macs": macs_source,
        "flops": f"torch.utils.flop_counter's formulas on {where}",
        "receptive_field": (
            "autograd on a one-channel stand-in of the layers with the same geometry and "
            "positive weights (extent of the input gradient of one output; max pooling probed "
            "as averaging, which reaches every input of its window)"
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
    last_spatial = [r for r in cumulative if r is not None]
    return ChainMeasurement(
        device=device,
        layers=tuple(results),
        receptive_field=last_spatial[-1] if last_spatial else None,
        memory=tuple(memories),
        total_memory=total_memory,
        sources=sources,
        timing=timing,
    )


# --- users' own models ----------------------------------------------------------------------------


def load_model(target: str) -> nn.Module:
    """``package.module:attr`` or ``path/to/file.py:attr``: an nn.Module, or a class or factory
    called with no arguments. Import errors become :class:`SpecError` (bad input)."""
    if ":" not in target:
        raise SpecError("model", f"{target!r} must be MODULE:ATTR, like mypkg.nets:ResNet")
    module_name, _, attr = target.rpartition(":")
    try:
        with _user_code():
            module = _import(module_name)
    except SpecError:
        raise
    except SystemExit as leaving:
        raise SpecError(
            "model", f"importing {module_name} called sys.exit({leaving.code!r})"
        ) from None
    except Exception as error:  # whatever the user's module raises while importing
        raise SpecError(
            "model", f"cannot import {module_name}: {type(error).__name__}: {_first_line(error)}"
        ) from None
    return _instantiate(module, module_name, attr, target)


@contextlib.contextmanager
def _user_code() -> Iterator[None]:
    """The user's code may print: its output goes to stderr, stdout carries convcalc's data."""
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _import(module_name: str) -> Any:
    import importlib
    import importlib.util
    from pathlib import Path

    if True:
        if module_name.endswith(".py"):
            path = Path(module_name)
            spec = importlib.util.spec_from_file_location(path.stem, path)
            if spec is None or spec.loader is None or not path.exists():
                raise SpecError("model", f"cannot import {module_name}: no such file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = module
            spec.loader.exec_module(module)
        else:
            if "" not in sys.path and "." not in sys.path:
                sys.path.insert(0, "")
            module = importlib.import_module(module_name)
    return module


def _instantiate(module: Any, module_name: str, attr: str, target: str) -> nn.Module:
    try:
        found = module
        for part in attr.split("."):
            found = getattr(found, part)
    except AttributeError:
        raise SpecError("model", f"{module_name} has no attribute {attr!r}") from None
    if isinstance(found, nn.Module):
        return found.eval()
    if not callable(found):
        raise SpecError("model", f"{target} is neither an nn.Module nor a class or factory")
    try:
        with _user_code():
            built = found()
    except SystemExit as leaving:
        raise SpecError("model", f"{target}() called sys.exit({leaving.code!r})") from None
    except Exception as error:
        raise SpecError(
            "model", f"{target}() failed: {type(error).__name__}: {_first_line(error)}"
        ) from None
    if not isinstance(built, nn.Module):
        raise SpecError("model", f"{target}() returned {type(built).__name__}, not an nn.Module")
    return built.eval()


def spec_of(name: str, module: nn.Module) -> LayerSpec | None:
    """The spec of a conv, pool, linear or batch-norm module (None for anything else)."""

    def ints(value: Any, dims: int) -> Ints:
        return tuple(value) if isinstance(value, tuple | list) else (int(value),) * dims

    if isinstance(module, nn.modules.conv._ConvNd):
        dims = len(module.kernel_size)
        padding: Any = module.padding if isinstance(module.padding, str) else tuple(module.padding)
        return ConvSpec(
            module.in_channels,
            module.out_channels,
            tuple(module.kernel_size),
            tuple(module.stride),
            padding,
            tuple(module.dilation),
            module.groups,
            module.bias is not None,
            module.transposed,
            tuple(module.output_padding),
            module.padding_mode,
            name,
        )
    pools = {
        nn.MaxPool1d: ("max", 1),
        nn.MaxPool2d: ("max", 2),
        nn.MaxPool3d: ("max", 3),
        nn.AvgPool1d: ("avg", 1),
        nn.AvgPool2d: ("avg", 2),
        nn.AvgPool3d: ("avg", 3),
    }
    for cls, (kind, dims) in pools.items():
        if type(module) is cls:
            kernel = ints(module.kernel_size, dims)
            stride = ints(module.stride or module.kernel_size, dims)
            dilation = ints(getattr(module, "dilation", 1), dims)
            return PoolSpec(
                kind,
                dims,
                0,
                kernel,
                stride,
                ints(module.padding, dims),
                dilation,
                bool(module.ceil_mode),
                name,
            )
    for cls, (kind, dims) in {
        nn.AdaptiveAvgPool1d: ("avg", 1),
        nn.AdaptiveAvgPool2d: ("avg", 2),
        nn.AdaptiveAvgPool3d: ("avg", 3),
        nn.AdaptiveMaxPool1d: ("max", 1),
        nn.AdaptiveMaxPool2d: ("max", 2),
        nn.AdaptiveMaxPool3d: ("max", 3),
    }.items():
        if type(module) is cls:
            size = module.output_size
            if size is None or (isinstance(size, tuple) and None in size):
                return None
            return AdaptivePoolSpec(kind, dims, 0, ints(size, dims), name)
    if isinstance(module, nn.Linear):
        return LinearSpec(module.in_features, module.out_features, module.bias is not None, name)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return NormSpec(module.num_features, 0, name, module.affine)
    return None


@dataclass(frozen=True)
class ModelLayer:
    name: str
    spec: LayerSpec
    input_shape: Ints
    measurement: LayerMeasurement
    #: the input shape of every call, in order (a module can run more than once)
    calls: tuple[Ints, ...] = ()


@dataclass(frozen=True)
class ModelMeasurement:
    layers: tuple[ModelLayer, ...]
    params: int
    output_shape: Ints
    #: autograd on the real model: extent of the input gradient of one output element
    receptive_field: Ints | None
    receptive_field_of: str
    #: modules with parameters that no formula covers: name -> parameter count
    uncovered: dict[str, int]
    sources: dict[str, str]


def measure_model(model: nn.Module, input_shape: Ints, dtype: str = "float32") -> ModelMeasurement:
    """Run a user's model for real with hooks on every conv, pool, linear and batch-norm module:
    per layer its input and output shapes, torch's FLOPs and fvcore's MACs; the model's own
    parameter count; and the receptive field of its output by autograd."""
    named = [(name, module, spec_of(name, module)) for name, module in model.named_modules()]
    hooked = [(name, module, spec) for name, module, spec in named if spec is not None]
    counter = _DispatchCounter()
    shapes_in: dict[int, list[Ints]] = {}
    shapes_out: dict[int, Ints] = {}
    handles = []
    for index, (_, module, _) in enumerate(hooked):

        def before(_module: nn.Module, args: Any, index: int = index) -> None:
            counter.current = index
            shapes_in.setdefault(index, []).append(tuple(args[0].shape))

        def after(_module: nn.Module, args: Any, out: Any, index: int = index) -> None:
            shapes_out[index] = tuple(out.shape) if hasattr(out, "shape") else ()
            counter.current = None

        handles.append(module.register_forward_pre_hook(before))
        handles.append(module.register_forward_hook(after))
    x = torch.zeros(input_shape)
    shown = "x".join(map(str, input_shape))
    try:
        with torch.no_grad(), counter, _user_code():
            output = model(x)
    except SystemExit as leaving:
        raise SpecError("model", f"the model called sys.exit({leaving.code!r})") from None
    except Exception as error:
        raise SpecError(
            "input",
            f"the model failed on input {shown}: {type(error).__name__}: {_first_line(error)}",
        ) from None
    finally:
        for handle in handles:
            handle.remove()
    if not isinstance(output, torch.Tensor):
        raise SpecError("model", f"the model returned {type(output).__name__}, not a tensor")
    with _user_code():
        fv = _fvcore_module(model, x)
    layers = []
    for index, (name, module, spec) in enumerate(hooked):
        if index not in shapes_in:
            continue  # not called in this forward pass
        calls = shapes_in[index]
        spec = _with_channels(spec, calls[0])
        counts = fv.get(name, {})
        macs = sum(int(v) for op, v in counts.items() if op in FVCORE_MAC_OPS)
        layers.append(
            ModelLayer(
                name,
                spec,
                calls[0],
                LayerMeasurement(
                    output_shape=shapes_out[index],
                    params=sum(p.numel() for p in module.parameters(recurse=False)),
                    flops=counter.flops.get(index, 0),
                    macs=macs,
                    receptive_field=probe_receptive_field(spec, calls[0][2:]),
                    output_elements=math.prod(shapes_out[index]),
                ),
                tuple(calls),
            )
        )
    covered = {name for name, _, _ in hooked}
    uncovered = {
        name: sum(p.numel() for p in module.parameters(recurse=False))
        for name, module in model.named_modules()
        if name not in covered and any(True for _ in module.parameters(recurse=False))
    }
    field, of = _model_receptive_field(model, input_shape)
    return ModelMeasurement(
        layers=tuple(layers),
        params=sum(p.numel() for p in model.parameters()),
        output_shape=tuple(output.shape),
        receptive_field=field,
        receptive_field_of=of,
        uncovered=uncovered,
        sources={
            "output_shape": "the real CPU run, hooks on each layer",
            "params": "the model's own parameters (each layer's: its module's)",
            "macs": "fvcore FlopCountAnalysis of the whole model, per module",
            "flops": "torch.utils.flop_counter's formulas on the real CPU run, per module",
            "receptive_field": (
                "each layer's: a one-channel probe of its geometry; the model's: autograd on the "
                "real model (real weights), extent of the input gradient of one output element"
            ),
        },
    )


def _with_channels(spec: LayerSpec, input_shape: Ints) -> LayerSpec:
    """Pools and 1-D batch norms learn their channel count and dims from their input."""
    if isinstance(spec, PoolSpec | AdaptivePoolSpec):
        return replace(spec, channels=input_shape[1])
    if isinstance(spec, NormSpec):
        return replace(spec, dims=len(input_shape) - 2)
    return spec


def _fvcore_module(model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis
        from fvcore.nn.jit_handles import conv_flop_count, get_shape

        def convolution_mode(inputs: list[Any], outputs: list[Any]) -> Counter[str]:
            shapes = (get_shape(v) for v in (inputs[0], inputs[1], outputs[0]))
            return Counter({"conv": int(conv_flop_count(*shapes, False))})

        analysis = FlopCountAnalysis(model, x)
        analysis.set_op_handle("aten::_convolution_mode", convolution_mode)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        try:
            return dict(analysis.by_module_and_operator())
        except Exception:  # fvcore could not trace this model
            return {}


def _model_receptive_field(model: nn.Module, input_shape: Ints) -> tuple[Ints | None, str]:
    """Extent of the nonzero input gradient of the output's central element (its first, for a
    flat output), on the real model in float64 with a random positive input."""
    if len(input_shape) < 3:
        return None, ""
    import copy

    probe = copy.deepcopy(model).double().eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(input_shape, generator=generator, dtype=torch.float64) + 0.5
    x.requires_grad_(True)
    with _user_code():
        y = probe(x)
    index = (0, 0, *(n // 2 for n in y.shape[2:])) if y.dim() > 2 else (0,) * y.dim()
    (grad,) = torch.autograd.grad(y[index], x)
    hits = torch.nonzero(grad[0].abs().sum(0)).T
    extents = tuple(int(h.max() - h.min()) + 1 if h.numel() else 0 for h in hits)
    return extents, "output[" + ", ".join(map(str, index)) + "]"


# --- solve: every answer checked on the real layer ----------------------------------------------


def verify_answers(
    transposed: bool, dims: int, axis: int, size: int, answers: Sequence[Any]
) -> list[bool]:
    """Build each answer's real layer (nn.ConvNd / nn.ConvTransposeNd, one channel; along
    ``axis`` the answer's kernel, stride, padding, dilation and output padding, along the other
    dimensions a 1-wide kernel on a 1-wide input) and run it: does torch give the promised
    output size? On the CPU, or on the meta device for inputs too long to allocate here."""
    device = "cpu" if size <= 4_000_000 else "meta"
    results = []
    for answer in answers:

        def along(value: int, other: int) -> tuple[int, ...]:
            return tuple(value if i == axis else other for i in range(dims))

        kwargs: dict[str, Any] = {
            "stride": along(answer.stride, 1),
            "padding": along(answer.padding, 0),
            "dilation": along(answer.dilation, 1),
            "bias": False,
            "device": device,
        }
        if transposed:
            kwargs["output_padding"] = along(answer.output_padding, 0)
        shape = (1, 1, *along(size, 1))
        try:
            layer = CONV_CLASSES[(transposed, dims)](1, 1, along(answer.kernel, 1), **kwargs)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = layer(torch.zeros(shape, device=device))
            results.append(int(out.shape[2 + axis]) == answer.output)
        except (RuntimeError, ValueError):
            results.append(False)
    return results
