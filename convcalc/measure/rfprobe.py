"""Receptive fields measured on geometry stand-ins, not on real weights: linear in depth.

Three measurements, each by torch on a stand-in that keeps a layer's geometry and makes every
weight positive (so no gradient cancels and no ReLU switches a path off):

* :func:`window_field` — one layer: the extent of the input positions one output reads, by
  autograd through the layer's own torch class, one channel, one spatial axis at a time. The
  probe input is one window: it does not grow with the stride (item 17), and the dilation's
  holes are measured (up to :data:`DIRECT_SPAN_LIMIT` positions; beyond, the undilated window is
  measured and spread by the dilation, which the result's docstring says).
* :func:`cumulative_probe` / :func:`cumulative_fields` — every node of a convcalc graph
  (``stack``): field, effective stride and effective padding relative to the network input, in
  one small probe per layer and axis (O(N) for N layers; memory: the live nodes' index sets).
* :func:`model_fields` — an arbitrary ``nn.Module``: a stand-in copy (positive constant weights,
  activations and norms as identity, max pools as averages) differentiated with hooks on every
  conv and pool layer, the input grown until each field fits inside it.

Why one axis at a time is exact (the stand-ins are separable). A one-channel layer whose weights
are all equal has an N-d kernel that is the outer product of per-axis kernels, and padding and
stride act per axis: the set of input positions output ``u`` reads is the product of per-axis
sets, ``T(u) = T_1(u_1) x ... x T_n(u_n)``. Following a product set through a product relation
gives a product set; a residual join gives a union of products, whose projection on axis ``a`` is
the union of the projections, and the next layer maps that projection by ``T_a`` alone (the image
of a union is the union of the images). So the projection of the field on each axis, and with it
the extent that the N-d gradient would show along that axis, is found by following per-axis sets
only. With positive weights and non-negative signals no sum cancels: the gradient of an output is
nonzero exactly at the positions it reads (the support of the vector-Jacobian product is the union
of the supports), which is what composing sets computes.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from convcalc.core.formulas import human_bytes
from convcalc.core.spec import InputSpec, Ints, Node
from convcalc.errors import MeasurementError
from convcalc.kinds import geometry

#: a window of more positions than this along one axis is not allocated: the undilated window is
#: measured and spread by the dilation instead (see :func:`window_field`)
DIRECT_SPAN_LIMIT = 1 << 22
#: an output's note when its field reaches the border of the largest input tried
BORDER = "reaches the input's border: at least this"
#: how a layer's note begins when its field reaches the border of the largest input tried
LAYER_BORDER = "reaches the border of the largest input tried"
#: the memory the model probe may hold at the largest input it grows to (its autograd graph and
#: the outputs it keeps), projected from what it holds at the model's own input
PROBE_BYTES = 1 << 30
#: the largest period (output positions before the pattern of read positions repeats) followed
#: through a graph; transposed layers multiply it by their stride
PERIOD_LIMIT = 4096

_CONV_1D: dict[bool, type[nn.Module]] = {False: nn.Conv1d, True: nn.ConvTranspose1d}
_CONV_ND: dict[tuple[bool, int], type[nn.Module]] = {
    (False, 1): nn.Conv1d,
    (False, 2): nn.Conv2d,
    (False, 3): nn.Conv3d,
    (True, 1): nn.ConvTranspose1d,
    (True, 2): nn.ConvTranspose2d,
    (True, 3): nn.ConvTranspose3d,
}

Runs = tuple[tuple[int, int], ...]
"""A set of integer positions as sorted, disjoint, non-adjacent inclusive runs ``(first, last)``."""


# --- sets of positions ------------------------------------------------------------------------


def _runs(positions: Iterable[int]) -> Runs:
    ordered = sorted(set(positions))
    out: list[tuple[int, int]] = []
    for p in ordered:
        if out and p == out[-1][1] + 1:
            out[-1] = (out[-1][0], p)
        else:
            out.append((p, p))
    return tuple(out)


def _union(parts: Iterable[tuple[Runs, int]]) -> Runs:
    """The union of run sets, each shifted by its offset."""
    pieces = sorted((a + by, b + by) for runs, by in parts for a, b in runs)
    out: list[tuple[int, int]] = []
    for a, b in pieces:
        if out and a <= out[-1][1] + 1:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return tuple(out)


# --- one layer along one axis ---------------------------------------------------------------


@dataclass(frozen=True)
class AxisTaps:
    """Which input positions each output position of one layer reads, along one axis, as
    measured: output ``u`` reads ``taps[u mod period]`` shifted by ``(u div period) * shift``
    (positions in the layer's own input coordinates, before padding: negative ones are padding).
    """

    period: int
    shift: int
    taps: tuple[Runs, ...]

    def at(self, position: int) -> tuple[Runs, int]:
        q, r = divmod(position, self.period)
        return self.taps[r], q * self.shift


def _stand_in_1d(transposed: bool, kernel: int, stride: int, left: int, dilation: int) -> nn.Module:
    """The layer's geometry along one axis as its torch class, one channel, weights 1,
    float64, frozen (only the input is differentiated). Left padding as the real layer's, so
    probe positions are the real positions; the right padding only changes how many outputs
    there are, never what one reads."""
    kwargs: dict[str, Any] = {"stride": stride, "dilation": dilation, "bias": False}
    layer: nn.Conv1d | nn.ConvTranspose1d
    if transposed:
        layer = nn.ConvTranspose1d(1, 1, kernel, padding=left, dtype=torch.float64, **kwargs)
    else:
        layer = nn.Conv1d(1, 1, kernel, padding=0, dtype=torch.float64, **kwargs)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    layer.weight.requires_grad_(False)
    if transposed or left == 0:
        return layer
    return nn.Sequential(nn.ConstantPad1d((left, 0), 0.0), layer)


def _jacobian_rows(
    layer: nn.Module, width: int, outputs: range, forward_mode: bool
) -> list[list[int]] | None:
    """Positions of a length-``width`` input with a nonzero derivative of each output in
    ``outputs``, by torch.func (reverse mode: one backward per output; forward mode: one
    forward per input position, for layers with more outputs than inputs). None if the layer's
    output is too short."""
    x = torch.ones((1, 1, width), dtype=torch.float64)
    with torch.no_grad():
        length = int(layer(x).shape[-1])
    if outputs.stop > length or outputs.start < 0:
        return None

    def picked(v: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = layer(v)[0, 0, outputs.start : outputs.stop]
        return out

    jac = _jacobian(picked, x, forward_mode)  # (outputs, 1, 1, width)
    jac = jac.reshape(len(outputs), width)
    return [torch.nonzero(row).flatten().tolist() for row in jac]


def _jacobian(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, forward_mode: bool
) -> torch.Tensor:
    """The Jacobian of ``fn`` (linear: a layer without bias) at ``x``, shape (outputs, *x.shape).

    Reverse mode: one autograd backward per output. Forward mode, for layers with more outputs
    than inputs: ``fn`` of each unit impulse, one batch (for a linear map, its response to the
    impulse at position v is exactly column v of its Jacobian; this is what forward-mode
    differentiation computes, without torch.func, whose first use loads torch._dynamo)."""
    if forward_mode:
        impulses = torch.eye(x.numel(), dtype=x.dtype).reshape(x.numel(), *x.shape)
        with torch.no_grad():
            columns = torch.stack([fn(impulse) for impulse in impulses])
        return columns.reshape(x.numel(), -1).T.reshape(-1, *x.shape)
    x = x.detach().requires_grad_(True)
    y = fn(x)
    rows = [
        torch.autograd.grad(y[i], x, retain_graph=i + 1 < y.numel())[0] for i in range(y.numel())
    ]
    return torch.stack(rows)


@functools.lru_cache(maxsize=4096)
def axis_taps(transposed: bool, kernel: int, stride: int, left: int, dilation: int) -> AxisTaps:
    """Measure one layer's reading pattern along one axis (see :class:`AxisTaps`).

    The probe input is a window a few kernel spans and strides wide; the outputs measured are
    two periods in its middle (a plain layer's period is 1, a transposed layer's its stride), so
    none of them reads the window's edges. The second period must read the first's positions
    shifted by one amount: that amount is the measured shift (the stride, or 1 for a transposed
    layer); anything else is a :class:`MeasurementError`.
    """
    span = dilation * (kernel - 1) + 1
    period = stride if transposed else 1
    if transposed:
        width = 2 * (-(-(span + left) // stride) + 4)
    else:
        width = 2 * (left + span + 2 * stride) + 4
    for _ in range(4):
        layer = _stand_in_1d(transposed, kernel, stride, left, dilation)
        with torch.no_grad():
            length = int(layer(torch.zeros((1, 1, width), dtype=torch.float64)).shape[-1])
        base = max(0, length // 2 - period)
        rows = _jacobian_rows(layer, width, range(base, base + 2 * period), transposed)
        # an output may read nothing (a transposed layer's holes); the others must be clear
        if (
            rows is not None
            and any(rows)
            and all(r[0] > 0 and r[-1] < width - 1 for r in rows if r)
        ):
            break
        width *= 2
    else:
        raise MeasurementError(
            f"the receptive-field probe of a kernel {kernel}, stride {stride}, dilation "
            f"{dilation} layer found no output clear of its window's edges"
        )
    first = next(i for i in range(period) if rows[i])
    shift = rows[first + period][0] - rows[first][0] if rows[first + period] else 0
    taps: dict[int, Runs] = {}
    for i in range(period):
        if [p + shift for p in rows[i]] != rows[i + period]:
            raise MeasurementError(
                "the receptive-field probe found outputs one period apart reading differently "
                f"shaped windows (kernel {kernel}, stride {stride}, dilation {dilation})"
            )
        q, r = divmod(base + i, period)
        taps[r] = _runs(p - q * shift for p in rows[i])
    return AxisTaps(period, shift, tuple(taps[r] for r in range(period)))


@functools.lru_cache(maxsize=4096)
def window_field(transposed: bool, kernel: Ints, stride: Ints, dilation: Ints) -> Ints:
    """Receptive field of one layer (padding 0, weights 1, one channel), per spatial axis: the
    extent of the nonzero input gradient of one output, the largest over one stride period for a
    transposed layer.

    Each axis is probed on its own (the kernel of ones is separable: see the module docstring)
    through the layer's own N-d torch class with a 1-wide kernel on the other axes. A plain
    layer's probe input is one window (its dilated span): its size does not depend on the stride.
    A transposed layer's input is the few positions one period of outputs reads. A dilated span
    longer than :data:`DIRECT_SPAN_LIMIT` is not allocated: the undilated window is measured and
    its extent spread by the dilation (each gap between taps is ``dilation`` positions).
    """
    dims = len(kernel)
    out: list[int] = []
    for axis in range(dims):
        k, s, d = kernel[axis], stride[axis], dilation[axis]
        spread = 1
        if d * (k - 1) + 1 > DIRECT_SPAN_LIMIT:
            spread, d = d, 1
        extent = _window_extent(transposed, dims, axis, k, s, d)
        out.append((extent - 1) * spread + 1 if extent else 0)
    return tuple(out)


def _window_extent(transposed: bool, dims: int, axis: int, k: int, s: int, d: int) -> int:
    def along(value: int, other: int) -> tuple[int, ...]:
        return tuple(value if i == axis else other for i in range(dims))

    span = d * (k - 1) + 1
    cls = _CONV_ND[(transposed, dims)]
    layer: nn.Module = cls(
        1,
        1,
        along(k, 1),
        stride=along(s, 1),
        dilation=along(d, 1),
        bias=False,
        dtype=torch.float64,
    )
    weight: torch.Tensor = layer.weight  # type: ignore[assignment]
    with torch.no_grad():
        weight.fill_(1.0)
    weight.requires_grad_(False)
    if not transposed:
        # one window: exactly one output, whatever the stride
        x = torch.ones((1, 1, *along(span, 1)), dtype=torch.float64, requires_grad=True)
        (grad,) = torch.autograd.grad(layer(x).sum(), x)
        return _extent(grad.flatten())
    # transposed: outputs span-1 .. span-1+s-1 read only real inputs when the input has
    # ceil(span/s) + 1 positions; one forward-mode Jacobian gives all of them
    width = -(-span // s) + 1
    first = span - 1

    def picked(v: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = layer(v.reshape(1, 1, *along(width, 1))).flatten()
        return out[first : first + s]

    jac = _jacobian(picked, torch.ones(width, dtype=torch.float64), True)
    return max(_extent(row) for row in jac)


def _extent(values: torch.Tensor) -> int:
    hits = torch.nonzero(values).flatten()
    return int(hits.max() - hits.min()) + 1 if hits.numel() else 0


# --- a graph, node by node --------------------------------------------------------------------


@dataclass(frozen=True)
class AxisState:
    """The network-input positions node outputs read along one axis: output ``u`` reads
    ``sets[u mod period]`` shifted by ``(u div period) * shift``."""

    period: int
    shift: int
    sets: tuple[Runs, ...]

    def at(self, position: int) -> tuple[Runs, int]:
        q, r = divmod(position, self.period)
        return self.sets[r], q * self.shift

    @property
    def stride(self) -> Fraction:
        return Fraction(self.shift, self.period)

    def field(self) -> int:
        return max((s[-1][1] - s[0][0] + 1 if s else 0) for s in self.sets)

    def padding(self) -> Fraction:
        """Largest ``u·J - first position read`` over one period (Araujo et al.'s P; for a
        transposed layer the formula's P is the earliest virtual start, the largest of these)."""
        return max(
            (r * self.stride - s[0][0] for r, s in enumerate(self.sets) if s), default=Fraction(0)
        )


_INPUT = AxisState(1, 1, (((0, 0),),))


class _Unmeasured(Exception):
    """This node (and what follows from it) has no field relative to the network input."""


@functools.lru_cache(maxsize=4096)
def _compose(state: AxisState, taps: AxisTaps) -> AxisState:
    """The positions read after a layer with ``taps`` (measured by :func:`axis_taps`, which is
    still asked every time) on top of ``state``: arithmetic on the two, so remembered (bounded;
    a sweep's first layers all start from the network input)."""
    g = math.gcd(taps.shift, state.period)
    period = taps.period * state.period // g
    if period > PERIOD_LIMIT:
        raise _Unmeasured(f"the pattern of read positions repeats only every {period} outputs")
    shift = state.shift * (taps.shift // g)
    sets = []
    for r in range(period):
        runs, by = taps.at(r)
        parts = [state.at(q) for a, b in runs for q in range(a + by, b + by + 1)]
        sets.append(_union(parts))
    return AxisState(period, shift, tuple(sets))


def _join(states: Sequence[AxisState]) -> AxisState:
    if len({s.stride for s in states}) > 1:
        raise _Unmeasured("a join of paths with different effective strides")
    period = math.lcm(*(s.period for s in states))
    shift = int(states[0].stride * period)
    sets = tuple(_union(s.at(r) for s in states) for r in range(period))
    return AxisState(period, shift, sets)


@dataclass(frozen=True)
class NodeField:
    """A node's output relative to the network input, measured per spatial axis; all None where
    it has no such field (after a linear layer or global pooling), with ``note`` saying why."""

    receptive_field: Ints | None
    effective_stride: tuple[Fraction, ...] | None = None
    effective_padding: tuple[Fraction, ...] | None = None
    note: str = ""


def _node_taps(spec: Any, axis: int, real_in: int | None) -> AxisTaps | None:
    """A node's measured reading pattern along one axis; None for elementwise nodes."""
    shape = geometry(spec)
    if shape.kind == "window":
        # a window of ones: max pooling reads every position of its window
        return axis_taps(
            shape.transposed,
            shape.kernel[axis],
            shape.stride[axis],
            shape.padding[axis][0],
            shape.dilation[axis],
        )
    if shape.kind == "adaptive":
        out = shape.output_size[axis]
        if real_in is None:
            raise _Unmeasured("adaptive pooling with an unknown input size")
        if real_in == out:
            return None
        if real_in % out:
            raise _Unmeasured(
                f"adaptive pooling {real_in} -> {out}: windows of differing widths, no stand-in"
            )
        window = real_in // out
        return axis_taps(False, window, window, 0, 1)
    return None


@functools.lru_cache(maxsize=4096)
def _node_field(state: tuple[AxisState, ...]) -> NodeField:
    """Field, effective stride and effective padding of the positions ``state`` reads (per
    axis): arithmetic on the measured sets, remembered as :func:`_compose` is (bounded)."""
    return NodeField(
        tuple(s.field() for s in state),
        tuple(s.stride for s in state),
        tuple(s.padding() for s in state),
    )


def cumulative_probe(
    nodes: Sequence[Node], input_spec: InputSpec, input_sizes: Sequence[Ints] | None = None
) -> list[NodeField]:
    """Field, effective stride and effective padding of every node's output, relative to the
    network input, per spatial axis, measured.

    Each layer's reading pattern is measured once per geometry by :func:`axis_taps` (autograd
    through the layer's one-channel stand-in on a window of a few kernel spans); a node's sets
    are the union of its input node's sets at the positions it reads (the chain rule of the
    supports), over one period of its outputs (the largest field of the period is reported, as
    for transposed layers in ``stack``). The network input is unbounded: no border clips a
    field, as in convcalc.cumulative. Cost: one probe per distinct layer geometry and axis, and
    set unions linear in the number of runs of the sets; memory: only the sets of nodes still
    to be read by a later node.

    ``input_sizes[i]`` is the real spatial size of node i's input (adaptive pooling's windows
    depend on it).
    """
    dims = input_spec.dims
    sizes = list(input_sizes) if input_sizes is not None else [input_spec.size] * len(nodes)
    last_use: dict[int, int] = {}
    for index, node in enumerate(nodes):
        for source in node.inputs:
            last_use[source] = index
    live: dict[int, tuple[AxisState, ...] | str] = {-1: (_INPUT,) * dims}
    results: list[NodeField] = []
    for index, node in enumerate(nodes):
        spec = node.spec
        sources = [live[i] for i in node.inputs]
        state: tuple[AxisState, ...] | str
        if any(isinstance(s, str) for s in sources):
            state = next(s for s in sources if isinstance(s, str))
        elif geometry(spec).kind in ("whole", "flatten"):
            state = "a flat layer: every output sees the whole input"
        elif geometry(spec).kind == "adaptive" and all(o == 1 for o in geometry(spec).output_size):
            state = "global pooling: every output sees the whole input"
        else:
            try:
                inputs = [s for s in sources if not isinstance(s, str)]
                if geometry(spec).kind == "join" or len(inputs) > 1:
                    state = tuple(_join([s[axis] for s in inputs]) for axis in range(dims))
                else:
                    (before,) = inputs
                    real = sizes[index] if index < len(sizes) else None
                    axes = []
                    for axis in range(dims):
                        taps = _node_taps(spec, axis, None if real is None else real[axis])
                        axes.append(before[axis] if taps is None else _compose(before[axis], taps))
                    state = tuple(axes)
            except _Unmeasured as why:
                state = f"not measured: {why}"
        if isinstance(state, str):
            results.append(NodeField(None, note=state))
        else:
            results.append(_node_field(state))
        live[index] = state
        for source in node.inputs:
            if last_use.get(source) == index and source >= 0:
                live.pop(source, None)
    return results


def cumulative_fields(
    nodes: Sequence[Node],
    input_spec: InputSpec,
    input_sizes: Sequence[Ints] | None = None,
    layer_fields: Sequence[Ints] | None = None,
) -> list[Ints | None]:
    """Receptive field of every node's output relative to the network input (None where there
    is none: after a linear layer or global pooling, or where it could not be measured): the
    ``receptive_field`` of :func:`cumulative_probe`. As in
    ``measure.probe_cumulative_receptive_field``, a node fed by the network input reports
    ``layer_fields[i]`` when given (its own single-layer probe: the same measurement)."""
    results = [f.receptive_field for f in cumulative_probe(nodes, input_spec, input_sizes)]
    if layer_fields is not None:
        for index, node in enumerate(nodes):
            own = layer_fields[index]
            if (
                node.inputs == (-1,)
                and results[index] is not None
                and len(own) == len(results[index] or ())
            ):
                results[index] = own
    return results


# --- arbitrary models -----------------------------------------------------------------------


_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
)
_NORMS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
)
_MAX_POOLS: dict[type[nn.Module], int] = {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3}
_ADAPTIVE: tuple[type[nn.Module], ...] = (
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
_POOLS: tuple[type[nn.Module], ...] = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.LPPool1d,
    nn.LPPool2d,
    *_ADAPTIVE,
)


class _WindowAverage(nn.Module):
    """A max pool's stand-in: the average of the same windows (kernel, stride, padding,
    dilation, ceil mode), so the gradient reaches every position of a window, not only its
    maximum. A depthwise convolution with weights 1/taps on the zero-padded input."""

    def __init__(self, pool: nn.Module, dims: int) -> None:
        super().__init__()

        def ints(value: Any) -> Ints:
            return tuple(value) if isinstance(value, tuple | list) else (int(value),) * dims

        self.kernel = ints(pool.kernel_size)
        self.stride = ints(pool.stride or pool.kernel_size)
        self.padding = ints(pool.padding)
        self.dilation = ints(pool.dilation)
        self.ceil_mode = bool(pool.ceil_mode)
        self.dims = dims
        self.return_indices = bool(getattr(pool, "return_indices", False))

    def forward(self, x: torch.Tensor) -> Any:
        spatial = x.shape[-self.dims :]
        pad: list[int] = []
        for axis in reversed(range(self.dims)):
            n, k, s, p, d = (
                int(spatial[axis]),
                self.kernel[axis],
                self.stride[axis],
                self.padding[axis],
                self.dilation[axis],
            )
            span = d * (k - 1) + 1
            extra = 0
            if self.ceil_mode:
                out = -(-(n + 2 * p - span) // s) + 1
                if (out - 1) * s >= n + p:  # torch drops a last window starting in the padding
                    out -= 1
                extra = max(0, (out - 1) * s + span - (n + 2 * p))
            pad += [p, p + extra]
        channels = int(x.shape[-self.dims - 1])
        weight = torch.full(
            (channels, 1, *self.kernel),
            1.0 / math.prod(self.kernel),
            dtype=x.dtype,
            device=x.device,
        )
        conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[self.dims]
        batched = x if x.dim() == self.dims + 2 else x.unsqueeze(0)
        y = conv(
            F.pad(batched, pad), weight, stride=self.stride, dilation=self.dilation, groups=channels
        )
        y = y if x.dim() == self.dims + 2 else y.squeeze(0)
        return (y, torch.zeros_like(y, dtype=torch.long)) if self.return_indices else y


_PLAIN_CONVS: dict[type[nn.Module], int] = {
    nn.Conv1d: 1,
    nn.Conv2d: 2,
    nn.Conv3d: 3,
    nn.ConvTranspose1d: 1,
    nn.ConvTranspose2d: 2,
    nn.ConvTranspose3d: 3,
}


class _ConstantConv(nn.Module):
    """A convolution whose every weight is the same constant ``1/fan-in`` and whose bias is 0
    (torch's own ``nn.ConvNd`` / ``nn.ConvTransposeNd`` of exactly that class, float32 or
    float64), computed without its channels: every output channel of a group is then the same
    number, ``1/fan-in`` times the sum over the group's input channels and the window's taps.
    So the group's input channels are summed first, one channel per group is convolved (torch's
    own conv functional, the layer's stride, padding, padding mode, dilation, output padding)
    and copied to the group's output channels (real tensors, never a stride-0 view: a forward
    may write a conv's output in place). The same function as the dense layer with those
    weights (values, and so gradients, equal up to the order of summation), at the cost of
    ``groups`` channels convolved instead of ``in x out``."""

    def __init__(self, conv: Any, dims: int) -> None:
        super().__init__()
        self.dims = dims
        self.transposed = bool(conv.transposed)
        self.groups = int(conv.groups)
        self.in_channels = int(conv.in_channels)
        self.out_channels = int(conv.out_channels)
        self.kernel_size = tuple(conv.kernel_size)
        self.stride = tuple(conv.stride)
        self.padding: Any = conv.padding  # ints, or "same"/"valid"
        self.dilation = tuple(conv.dilation)
        self.output_padding = tuple(conv.output_padding)
        self.padding_mode = str(conv.padding_mode)
        self.reversed_padding = list(conv._reversed_padding_repeated_twice)
        # fan-in: an output sums its group's in_channels/groups channels (plain and transposed)
        self.fan_in = max(self.in_channels // self.groups * math.prod(self.kernel_size), 1)
        self.value = 1.0 / self.fan_in
        # the original, unregistered (no parameters copied into the stand-in): its own
        # _output_padding when a transposed layer is called with output_size
        self._original: tuple[Any] = (conv,)
        # from the layer's settings: the copy's own weight is a placeholder (_not_copied)
        first, second = (
            (self.in_channels, self.out_channels)
            if self.transposed
            else (self.out_channels, self.in_channels)
        )
        self._weight_shape = (first, second // self.groups, *self.kernel_size)
        self._bias = conv.bias is not None
        # empty, follows .double(): the dtype of ``weight`` if a forward reads it
        self.register_buffer("_dtype", torch.empty(0, dtype=conv.weight.dtype))
        #: an ungrouped output as real memory (True), or as the one computed channel expanded
        #: (a stride-0 view: no copy; a forward writing it in place is refused, and
        #: model_fields runs the probe again with real memory)
        self.materialize = True

    @property
    def weight(self) -> torch.Tensor:
        """The dense stand-in's weight (every value 1/fan-in), for a forward that reads the
        layer's weight itself (``F.conv2d(x, self.conv.weight)``)."""
        buffer = self._buffers["_dtype"]
        assert buffer is not None
        return torch.full(self._weight_shape, self.value, dtype=buffer.dtype)

    @property
    def bias(self) -> torch.Tensor | None:
        buffer = self._buffers["_dtype"]
        assert buffer is not None
        return torch.zeros(self.out_channels, dtype=buffer.dtype) if self._bias else None

    def forward(self, x: torch.Tensor, output_size: Any = None) -> torch.Tensor:
        dims, groups = self.dims, self.groups
        batched = x if x.dim() == dims + 2 else x.unsqueeze(0)
        n, spatial = batched.shape[0], batched.shape[2:]
        summed = (
            _channel_sum(batched)
            if groups == 1
            else batched.reshape(n, groups, -1, *spatial).sum(2)
        )
        weight = torch.full(
            (groups, 1, *self.kernel_size), self.value, dtype=x.dtype, device=x.device
        )
        if self.transposed:
            output_padding = self.output_padding
            if output_size is not None:
                conv = self._original[0]
                output_padding = tuple(
                    conv._output_padding(
                        batched,
                        output_size,
                        list(self.stride),
                        list(self.padding),
                        list(self.kernel_size),
                        dims,
                        list(self.dilation),
                    )
                )
            transpose = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
            y = transpose[dims](
                summed,
                weight,
                None,
                self.stride,
                self.padding,
                output_padding,
                groups,
                self.dilation,
            )
        else:
            conv_fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
            padding: Any = self.padding
            if self.padding_mode != "zeros":
                summed = F.pad(summed, self.reversed_padding, mode=self.padding_mode)
                padding = (0,) * dims
            if isinstance(padding, str) or any(d != 1 for d in self.dilation):
                y = conv_fn(summed, weight, None, self.stride, padding, self.dilation, groups)
            else:
                y = _window_mean(summed, self.kernel_size, self.stride, padding, self.fan_in)
        if groups == 1:  # every output channel the same values, each its own memory: a
            # forward may write the output in place (``y += 1``, ``nn.ReLU(inplace=True)``),
            # which a stride-0 view refuses (unless not ``materialize``: model_fields' first try)
            out = y.expand(n, self.out_channels, *y.shape[2:])
            if self.materialize:
                out = out.contiguous()
        elif groups == self.out_channels:  # depthwise: one output channel per group
            out = y
        else:
            out = y.repeat_interleave(self.out_channels // groups, dim=1)
        return out if x.dim() == dims + 2 else out.squeeze(0)


def _window_mean(
    x: torch.Tensor, kernel: Ints, stride: Ints, padding: Ints, fan_in: int
) -> torch.Tensor:
    """The sum of each window of ``x`` (zero padding, no dilation) over ``fan_in``: a constant
    conv's output, per channel of the input's summed channels. By pooling rather than by a
    conv of ones: torch's CPU conv of float64 (the probe's dtype in deep models) builds a buffer
    of kernel-size times the output per call; freed at once, these buffers fragmented the heap
    of a deep probe (500 convs at 256x256: 3.0 GB resident, 0.85 GB with the pooling). The same
    windows, the same values up to the order of summation, so the gradient reaches the same
    positions."""
    dims = len(kernel)
    if any(padding):
        x = F.pad(x, [p for p in reversed(padding) for _ in (0, 1)])
    if dims == 1:  # (no divisor_override in 1-D: the mean over the window, then the channels)
        mean = F.avg_pool1d(x, kernel, stride, 0, False, True)
        return mean if fan_in == kernel[0] else mean * (kernel[0] / fan_in)
    pool = F.avg_pool2d if dims == 2 else F.avg_pool3d
    return pool(x, kernel, stride, 0, False, True, divisor_override=fan_in)


def _channel_sum(batched: torch.Tensor) -> torch.Tensor:
    """The sum over the channels (dim 1, kept). Channels that are one memory (stride 0: a
    stand-in conv's expanded output) are one channel times their number: the same values up to
    the order of summation, and the gradient reaches the same positions."""
    channels = int(batched.shape[1])
    if channels > 1 and batched.stride(1) == 0:
        return batched.narrow(1, 0, 1) * channels
    return batched.sum(1, keepdim=True)


def _constant_conv(module: nn.Module) -> bool:
    """A conv the stand-in computes without its channels (:class:`_ConstantConv`): torch's own
    class exactly (a subclass may change its forward, e.g. standardise its weight) with float32
    or float64 weights (half-precision layers keep their dtype and their note)."""
    if type(module) not in _PLAIN_CONVS:
        return False  # (before reading ``weight``: a _ConstantConv's is built on each read)
    weight = getattr(module, "weight", None)
    return (
        isinstance(weight, torch.Tensor)
        and not isinstance(weight, nn.parameter.UninitializedParameter)
        and weight.dtype in (torch.float32, torch.float64)
    )


_HOOKED: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd,
    _ConstantConv,
    _WindowAverage,
    *_POOLS,
)


def _replaced(module: nn.Module) -> bool:
    return (
        isinstance(module, (*_ACTIVATIONS, *_NORMS))
        or type(module) in _MAX_POOLS
        or _constant_conv(module)
    )


def _not_copied(model: nn.Module) -> dict[int, Any]:
    """A deepcopy memo that leaves out the tensors of modules the stand-in replaces (convs
    computed without channels, norms): each is given an empty placeholder instead of a copy of
    its values (a ResNet-50: 100 MB not copied). A tensor also held by a module the stand-in
    keeps (a tied weight) is copied as usual."""
    kept: set[int] = set()
    dropped: dict[int, torch.Tensor] = {}
    for module in model.modules():
        own = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        if _replaced(module):
            dropped.update((id(t), t) for t in own)
        else:
            kept.update(id(t) for t in own)
    return {key: torch.empty(0, dtype=t.dtype) for key, t in dropped.items() if key not in kept}


class _Root(nn.Module):
    """Holds a model that is itself a module the stand-in replaces (a bare ``nn.Conv1d`` or
    ``nn.MaxPool2d`` given as the model), so that it is swapped like any child."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.root = model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.root(*args, **kwargs)


def _root_name(name: str, wrapped: bool) -> str:
    """A module's name in the user's model (``root.x`` -> ``x``, ``root`` -> ``""``)."""
    if not wrapped:
        return name
    return "" if name == "root" else name.removeprefix("root.")


def _replacement(module: nn.Module) -> nn.Module | None:
    """What the stand-in puts in place of ``module`` (made from its settings: none of its
    tensors are read), or None where it keeps a copy of it."""
    if isinstance(module, (*_ACTIVATIONS, *_NORMS)):
        return nn.Identity()
    if type(module) in _MAX_POOLS:
        return _WindowAverage(module, _MAX_POOLS[type(module)])
    if _constant_conv(module):
        return _ConstantConv(module, _PLAIN_CONVS[type(module)])
    return None


def _replaced_kinds(model: nn.Module) -> dict[str, int]:
    """How many children the stand-in replaces, by kind, in the order first met: every
    (parent, child) of ``model``'s modules (a child shared by two parents counts twice)."""
    replaced: dict[str, int] = {}
    for parent in list(model.modules()):
        for _, child in parent.named_children():
            if isinstance(child, _ACTIVATIONS):
                kind = "activations and dropout"
            elif isinstance(child, _NORMS):
                kind = "norms"
            elif type(child) in _MAX_POOLS:
                kind = "max pools"
            else:
                continue
            replaced[kind] = replaced.get(kind, 0) + 1
    return replaced


def _replacements(model: nn.Module) -> dict[int, nn.Module]:
    """A deepcopy memo entry for each module the stand-in replaces that is a leaf registered
    once (one parent, one name): its replacement, so that it is never copied (a ResNet-50: 124
    of its 151 modules). A module registered more than once, or with children, is copied and
    swapped under each name as before."""
    registered: dict[int, int] = {}
    for parent in model.modules():
        for child in parent._modules.values():
            if child is not None:
                registered[id(child)] = registered.get(id(child), 0) + 1
    memo: dict[int, nn.Module] = {}
    for module in model.modules():
        if registered.get(id(module)) != 1 or module._modules:
            continue
        new = _replacement(module)
        if new is not None:
            memo[id(module)] = new
    return memo


def stand_in(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """A copy of ``model`` whose receptive fields are its geometry's: every conv and linear
    weight the positive constant 1/fan-in, biases 0; activations, dropout and norms the
    identity; max pools averaging the same windows. Functional calls in ``forward`` stay: with
    a positive input every value is positive, where ReLU and its kin pass gradients on. Returns
    the copy and what was replaced, by kind, for the notes."""
    if _replaced(model):
        model = _Root(model)
    replaced = _replaced_kinds(model)
    memo = _not_copied(model)
    memo.update(_replacements(model))
    probe = copy.deepcopy(model, memo).eval()
    for parent in list(probe.modules()):
        for name, child in list(parent.named_children()):
            new = _replacement(child)
            if new is not None:
                setattr(parent, name, new)
    with torch.no_grad():
        for module in probe.modules():
            if isinstance(module, _ConstantConv):
                # its weight and bias are properties made on each read (1/fan-in, 0): reading
                # them here would build a ResNet-50's 25 M dense weights only to fill them
                continue
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.Tensor) and weight.dtype.is_floating_point:
                if isinstance(module, nn.modules.conv._ConvNd):
                    # plain: weight (out, in/groups, *k); transposed: (in, out/groups, *k), and
                    # an output sums in/groups channels (at most all taps each)
                    per_group = weight.shape[0] // module.groups if module.transposed else None
                    channels = per_group if per_group is not None else weight.shape[1]
                    fan_in = channels * math.prod(module.kernel_size)
                    weight.fill_(1.0 / max(fan_in, 1))
                elif isinstance(module, nn.Linear | nn.Bilinear):
                    weight.fill_(1.0 / max(weight.shape[-1], 1))
                else:
                    weight.fill_(1.0)
            bias = getattr(module, "bias", None)
            if isinstance(bias, torch.Tensor) and bias.dtype.is_floating_point:
                bias.zero_()
    for parameter in probe.parameters():
        parameter.requires_grad_(False)
    notes = [f"{kind} ({count})" for kind, count in replaced.items()]
    return probe, notes


@dataclass(frozen=True)
class LayerField:
    """One conv or pool layer of a model (each call, if it runs more than once: ``call``)."""

    name: str
    call: int
    output_shape: Ints
    #: extent of the nonzero input gradient of one central output element, the largest over
    #: the positions probed; None where not measured (``note`` says why)
    receptive_field: Ints | None
    #: how far the field moves when the output moves by one position, per axis (None: not
    #: measured)
    effective_stride: tuple[Fraction, ...] | None = None
    #: ``u·J - first input position read``, the largest over the positions probed
    effective_padding: tuple[Fraction, ...] | None = None
    #: the input size (spatial) it was measured at
    measured_at: Ints = ()
    note: str = ""


@dataclass(frozen=True)
class OutputField:
    """One output tensor of the model: its name (``output``, ``output[1]``, ``output['seg']``),
    shape, and its field if spatial and floating point."""

    name: str
    shape: Ints
    receptive_field: Ints | None
    note: str = ""


@dataclass(frozen=True)
class ModelFields:
    """Receptive fields of a model measured on its geometry stand-in (:func:`stand_in`)."""

    layers: tuple[LayerField, ...]
    outputs: tuple[OutputField, ...]
    #: the model's receptive field: its first spatial output's, else the last spatial layer's
    receptive_field: Ints | None
    #: what it is the field of: ``output``, ``output['seg']``, or a layer name
    receptive_field_of: str
    #: the probe's dtype, and the spatial input sizes tried, in order
    dtype: str
    sizes_tried: tuple[Ints, ...]
    notes: tuple[str, ...] = ()
    #: why the input was not grown further while a field still reached its border ("": it was
    #: not cut, or nothing was grown)
    limit: str = ""
    source: str = (
        "autograd on a stand-in of the model (same graph; every conv and linear weight 1/fan-in, "
        "biases 0; activations, dropout and norms as identity; max pools as averages of the same "
        "windows): extent of the nonzero input gradient of one central output element per layer"
    )


class _Held(TorchDispatchMode):
    """The bytes of the storages that ops return during a run and that are still alive after
    it: what the run's autograd graph, the outputs kept and the result hold (each storage once;
    a view's is its base's)."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # as the other dispatch modes: never compile, never import dynamo

    def __init__(self) -> None:
        super().__init__()
        self.storages: dict[int, tuple[StorageWeakRef, int]] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for item in tree_flatten(out)[0]:
            if isinstance(item, torch.Tensor):
                storage = item.untyped_storage()
                self.storages[storage._cdata] = (StorageWeakRef(storage), storage.nbytes())
        return out

    def held(self) -> int:
        return sum(n for ref, n in self.storages.values() if not ref.expired())


class _Stop(Exception):
    """Raised by a hook once every layer still to be measured has run."""


def _flatten_outputs(value: Any, name: str = "output") -> list[tuple[str, Any]]:
    if isinstance(value, torch.Tensor):
        return [(name, value)]
    if isinstance(value, Mapping):
        return [
            item for key, v in value.items() for item in _flatten_outputs(v, f"{name}[{key!r}]")
        ]
    if isinstance(value, tuple | list):
        return [item for i, v in enumerate(value) for item in _flatten_outputs(v, f"{name}[{i}]")]
    return [(name, value)]


def _support(grad: torch.Tensor) -> list[tuple[int, int]] | None:
    """Per spatial axis: first and last input position with a nonzero gradient."""
    spatial = grad.abs().sum(dim=(0, 1))
    hits = torch.nonzero(spatial)
    if hits.numel() == 0:
        return None
    return [(int(hits[:, a].min()), int(hits[:, a].max())) for a in range(hits.shape[1])]


class _Recorder:
    """Forward hooks on every conv and pool module of the stand-in: each call's output, keyed by
    (module name, call number); on the first run the call order, and which calls come after an
    adaptive pool; from then on a :class:`_Stop` once the last call still to measure has run."""

    def __init__(self, hooked: Sequence[tuple[str, nn.Module]]) -> None:
        self.hooked = hooked
        self.order: list[tuple[str, int]] = []
        #: each call's place in ``order`` (looked up at every hook call: a list's index is
        #: linear in the calls, and the probe quadratic in the layers with it)
        self.position: dict[tuple[str, int], int] = {}
        self.after_adaptive: set[tuple[str, int]] = set()
        self.first = True
        self.stop_after: int | None = None
        self.captured: dict[tuple[str, int], torch.Tensor] = {}
        #: the calls whose outputs are kept (None: every call's); each kept output holds its
        #: memory until the run's gradients are taken
        self.wanted: set[tuple[str, int]] | None = None
        self.calls: dict[str, int] = {}
        self.seen_adaptive = False

    def run(self, probe: nn.Module, x: torch.Tensor, stop_after: int | None) -> Any:
        self.captured, self.calls, self.seen_adaptive = {}, {}, False
        self.stop_after = stop_after
        handles = [
            module.register_forward_hook(functools.partial(self._hook, name=name))
            for name, module in self.hooked
        ]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return probe(x)
        except _Stop:
            return None
        finally:
            for handle in handles:
                handle.remove()
            self.first = False

    def _hook(self, module: nn.Module, args: Any, out: Any, name: str = "") -> None:
        call = self.calls.get(name, 0)
        self.calls[name] = call + 1
        key = (name, call)
        if isinstance(module, _ADAPTIVE):
            self.seen_adaptive = True
        if self.first:
            self.position[key] = len(self.order)
            self.order.append(key)
            if self.seen_adaptive:
                self.after_adaptive.add(key)
        tensor = out[0] if isinstance(out, tuple) else out
        if isinstance(tensor, torch.Tensor) and (self.wanted is None or key in self.wanted):
            self.captured[key] = tensor
        stop = self.stop_after
        if stop is not None and self.position.get(key, -1) >= stop:
            raise _Stop


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _probe_dtype(probe: nn.Module, notes: list[str]) -> tuple[nn.Module, torch.dtype]:
    """float32, or float64 where the smallest gradient (about the product of 1/taps along the
    deepest path, bounded by all convs' taps) could underflow float32 and every parameter is
    float32 or float64; half-precision layers stay as they are, with a note."""
    dtypes = {p.dtype for p in probe.parameters()} | {
        b.dtype for b in probe.buffers() if b.dtype.is_floating_point
    }
    odd = dtypes - {torch.float32, torch.float64}
    if odd:
        notes.append(
            "layers in "
            + ", ".join(sorted(str(d).removeprefix("torch.") for d in odd))
            + ": probed in the model's own dtypes (the input in float32); gradients in half "
            "precision underflow after a few layers, so a field there may be measured too small"
        )
    depth = sum(
        math.log10(math.prod(m.kernel_size))
        for m in probe.modules()
        if isinstance(m, nn.modules.conv._ConvNd | _ConstantConv)
    )
    if depth > 30 and not odd:
        return probe.double(), torch.float64
    return probe, torch.float32


def model_fields(
    model: nn.Module,
    input_shape: Ints,
    *,
    max_growth: int = 6,
    max_elements: int = 1 << 24,
    max_bytes: int = PROBE_BYTES,
    period_limit: int = 4,
    every_layer: bool = True,
) -> ModelFields:
    """Receptive field of every conv and pool layer of ``model`` (and of each spatial output),
    relative to its input, measured on the geometry stand-in (:func:`stand_in`).

    A forward pass on a one-valued input (batch 1, the input's channels), hooks keeping each
    conv and pool output; per layer the gradient of its central output element (channel 0), of
    its neighbours up to ``period_limit`` positions further along each axis (the effective
    stride; fields differ within a transposed layer's period) with respect to the input. A field
    that reaches the input's border may be cut by it: the input is doubled along those axes and
    the layers still open measured again, up to ``max_growth`` times, ``max_elements`` input
    elements, or ``max_bytes`` held by the probe (its autograd graph and the outputs it keeps,
    measured at the model's own input and projected by the input's elements: a deep model's
    graph grows with the input); ``ModelFields.limit`` says which stopped it. Layers after an
    adaptive pool are measured at the real size only (adaptive windows change with the input
    size). The forward pass stops after the last layer still open, so heads that need the real
    size do not stop the growth. What cannot be measured is said in a note, never raised.

    ``every_layer=False``: only the layer the model's field is reported of, and its field only
    (the central output and, with transposed layers, its period's positions; no neighbours, so
    no effective stride or padding): one plain backward per position and size tried.

    Cost in depth: ``every_layer=True`` runs one backward per layer, each back through every
    layer before it, so it is quadratic in the layers (a chain of 800 3x3 convs: ~140 s here);
    it serves tests and library users who want every layer's field. convcalc's reports use
    ``every_layer=False`` (:func:`convcalc.measure.probes.model_receptive_field`): one backward
    per size tried, linear in the layers (docs/benchmarks.md, "Cost in depth").
    """
    if len(input_shape) < 3:
        return ModelFields((), (), None, "", "", (), ("no spatial dimensions",))
    probe, replaced = stand_in(model)
    notes: list[str] = ["stand-in replaced " + ", ".join(replaced)] if replaced else []
    probe, dtype = _probe_dtype(probe, notes)
    for module in probe.modules():
        if isinstance(module, _ConstantConv):
            module.materialize = False  # views first (_run_lazily)
    wrapped = isinstance(probe, _Root)
    hooked: list[tuple[str, nn.Module]] = [
        (_root_name(name, wrapped), m)
        for name, m in probe.named_modules()
        if isinstance(m, _HOOKED)
    ]
    recorder = _Recorder(hooked)
    transposed = any(
        isinstance(m, nn.modules.conv._ConvNd | _ConstantConv) and m.transposed for _, m in hooked
    )
    period = period_limit if transposed else 1
    size = tuple(int(n) for n in input_shape[2:])
    dims = len(size)
    results: dict[tuple[str, int], LayerField] = {}
    open_keys: set[tuple[str, int]] = set()
    outputs: list[OutputField] = []
    sizes_tried: list[Ints] = []
    # an output whose field reaches the input's border is measured again at each larger size
    # (the whole forward runs then), unless adaptive pooling changes its windows with the size
    outputs_cut = False
    held_per_element = 0.0
    limit = ""
    for attempt in range(max_growth + 1):
        sizes_tried.append(size)
        stop_after = (
            max(recorder.position[k] for k in open_keys)
            if attempt and open_keys and not outputs_cut
            else None
        )
        final = None  # the last size's graph goes before this one is built
        x = torch.ones((1, int(input_shape[1]), *size), dtype=dtype, requires_grad=True)
        held = _Held() if attempt == 0 else None
        try:
            # a copy: a forward may write its input in place (``x += 1``), which autograd
            # refuses on a leaf; the gradient still reaches ``x`` through the copy
            final = _run_lazily(recorder, probe, x, stop_after, held)
        except Exception as error:  # the stand-in does not run at this size (or at all)
            shown = "x".join(map(str, size))
            notes.append(f"the stand-in failed on input {shown}: {_first_line(error)}")
            limit = f"the stand-in failed on input {shown}" if attempt else ""
            break
        if attempt == 0:
            open_keys = set(recorder.order)
            if not every_layer:
                # only the layer the model's field is reported of (the last with a spatial
                # output): one backward per size tried instead of one per layer
                spatial_keys = [
                    key
                    for key in recorder.order
                    if key in recorder.captured
                    and math.prod(recorder.captured[key].shape[2:]) > 1
                    and key not in recorder.after_adaptive
                ]
                open_keys = set(spatial_keys[-1:])
                recorder.captured = {k: recorder.captured[k] for k in open_keys}
            if held is not None:  # what a larger size keeps: the graph, the open layers'
                # outputs and the result (per input element)
                held_per_element = held.held() / math.prod(size)
            outputs = _output_fields(final, x, dims, period, every_layer)
        elif outputs_cut:
            outputs = _output_fields(final, x, dims, period, every_layer)
        outputs_cut = not recorder.after_adaptive and any(o.note == BORDER for o in outputs)
        touching: set[int] = set()
        for key in sorted(open_keys, key=recorder.position.__getitem__):
            if key not in recorder.captured:
                continue
            if attempt and key in recorder.after_adaptive:
                continue
            layer, touched = _layer_field(key, recorder.captured[key], x, size, period, every_layer)
            results[key] = layer
            if touched and key not in recorder.after_adaptive:
                touching |= touched
            else:
                open_keys.discard(key)
        recorder.captured = {}
        recorder.wanted = open_keys  # later sizes: only the layers still open
        if not open_keys and not outputs_cut:
            break
        grown = tuple(n * 2 if a in touching or outputs_cut else n for a, n in enumerate(size))
        limit = _growth_limit(attempt, max_growth, grown, int(input_shape[1]), max_elements)
        projected = int(held_per_element * math.prod(grown))
        if not limit and projected > max_bytes:
            limit = (
                f"at {'x'.join(map(str, grown))} the probe would hold about "
                f"{human_bytes(projected)}, over its {human_bytes(max_bytes)} limit"
            )
        if limit:
            break
        size = grown
    for key in open_keys:
        found = results.get(key)
        if found is not None and found.receptive_field is not None:
            shown = "x".join(map(str, found.measured_at))
            results[key] = _with_note(found, f"{LAYER_BORDER} ({shown}): at least this")
    for key in recorder.after_adaptive:
        if key in results:
            results[key] = _with_note(results[key], "after adaptive pooling: at the real size")
    layers = tuple(results[k] for k in recorder.order if k in results)
    spatial = [
        layer
        for layer in layers
        if layer.receptive_field is not None and math.prod(layer.output_shape[2:]) > 1
    ]
    primary = next((o for o in outputs if o.receptive_field is not None), None)
    field_: Ints | None = None
    of = ""
    if primary is not None:
        field_, of = primary.receptive_field, primary.name
    elif spatial:
        field_, of = spatial[-1].receptive_field, spatial[-1].name
    return ModelFields(
        layers,
        tuple(outputs),
        field_,
        of,
        str(dtype).removeprefix("torch."),
        tuple(sizes_tried),
        tuple(notes),
        limit=limit,
    )


def _growth_limit(attempt: int, most: int, grown: Ints, channels: int, elements: int) -> str:
    """Why the input is not grown to ``grown`` (``""``: it may be)."""
    if attempt == most:
        return f"the input is doubled at most {most} times"
    if math.prod(grown) * channels > elements:
        shown = "x".join(map(str, (channels, *grown)))
        return f"an input of {shown} would have over {elements:,} elements"
    return ""


def _run_lazily(
    recorder: _Recorder,
    probe: nn.Module,
    x: torch.Tensor,
    stop_after: int | None,
    held: _Held | None = None,
) -> Any:
    """One probe run on a copy of ``x``; first with the channel-free convs' outputs as expanded
    views (no copy of their identical channels), and where that fails (a forward writing such
    an output in place, a ``view`` its strides refuse) again with real memory, as every later
    run then is. The same function either way: the views hold the same values. ``held``: a
    mode that counts what the run leaves alive."""
    convs = [m for m in probe.modules() if isinstance(m, _ConstantConv)]
    if all(m.materialize for m in convs):
        with held or contextlib.nullcontext():
            return recorder.run(probe, x.clone(), stop_after)
    first = recorder.first
    try:
        with held or contextlib.nullcontext():
            return recorder.run(probe, x.clone(), stop_after)
    except Exception:  # noqa: BLE001  (the user's forward on views: run it as before)
        for module in convs:
            module.materialize = True
        if first:
            recorder.order, recorder.after_adaptive, recorder.first = [], set(), True
            recorder.position = {}
        with held or contextlib.nullcontext():
            return recorder.run(probe, x.clone(), stop_after)


def _with_note(layer: LayerField, note: str) -> LayerField:
    from dataclasses import replace

    return replace(layer, note="; ".join(n for n in (layer.note, note) if n))


def _layer_field(
    key: tuple[str, int],
    y: torch.Tensor,
    x: torch.Tensor,
    size: Ints,
    period: int,
    neighbours_too: bool = True,
) -> tuple[LayerField, set[int]]:
    """Measure one captured layer output; also the axes along which the field of the central
    output (or of one of its period's positions) touches the input's border.

    Positions probed: the centre; its neighbours one step either way along each axis (the
    effective stride and padding, from whichever neighbour's field is clear of the border); for
    models with transposed layers, ``period`` positions along each axis (fields differ within a
    period: the largest is kept). All gradients in one batched backward
    (``is_grads_batched``), or one by one where torch cannot batch a layer's backward.
    ``neighbours_too=False``: the field only (the centre and its period's positions; no
    effective stride and padding), in as many backward passes as positions, without vmap."""
    name, call = key
    shape = tuple(int(n) for n in y.shape)
    dims = len(size)
    base = LayerField(name, call, shape, None, measured_at=size)
    if not y.dtype.is_floating_point or not y.requires_grad:
        return _with_note(base, "no gradient reaches this output (integer or detached)"), set()
    if y.dim() < 2 + dims:
        return _with_note(base, "no spatial output"), set()
    spatial = shape[-dims:]
    center = tuple(n // 2 for n in spatial)
    field_positions = {center}
    neighbours: dict[tuple[int, int], tuple[int, ...]] = {}
    for axis in range(dims):
        for step in (-1, 1, *range(2, period)):
            pos = list(center)
            pos[axis] += step
            if 0 <= pos[axis] < spatial[axis]:
                if step in (-1, 1) and neighbours_too:
                    neighbours[(axis, step)] = tuple(pos)
                if step >= 1 and step < period:
                    field_positions.add(tuple(pos))
    positions = sorted(field_positions | set(neighbours.values()))
    lead = (0,) * (y.dim() - dims)
    supports = _batched_supports(y, x, [lead + p for p in positions], batched=neighbours_too)
    if supports is None:
        return _with_note(base, "the output does not depend on the input"), set()
    found = dict(zip(positions, supports))
    measured = [s for s in (found[p] for p in field_positions) if s is not None]
    if not measured:
        return _with_note(base, "a zero gradient: no input position reaches it"), set()
    fields = tuple(max(s[axis][1] - s[axis][0] + 1 for s in measured) for axis in range(dims))
    touched = {
        axis
        for s in measured
        for axis in range(dims)
        if s[axis][0] == 0 or s[axis][1] == size[axis] - 1
    }
    here = found[center]
    if here is None or touched or not neighbours_too:
        return replace_field(base, fields, None, None), touched
    strides: list[Fraction] = []
    paddings: list[Fraction] = []
    for axis in range(dims):
        stride = None
        for step in (1, -1):
            other = found.get(neighbours.get((axis, step), center))
            if other is None or other is here:
                continue
            # the first positions read, if neither is cut by the left border, else the last ones
            if here[axis][0] > 0 and other[axis][0] > 0:
                stride = Fraction(other[axis][0] - here[axis][0], step)
            elif here[axis][1] < size[axis] - 1 and other[axis][1] < size[axis] - 1:
                stride = Fraction(other[axis][1] - here[axis][1], step)
            if stride is not None:
                break
        if stride is None:
            return replace_field(base, fields, None, None), touched
        strides.append(stride)
        paddings.append(center[axis] * stride - here[axis][0])
    return replace_field(base, fields, tuple(strides), tuple(paddings)), touched


def _batched_supports(
    y: torch.Tensor, x: torch.Tensor, indices: Sequence[tuple[int, ...]], batched: bool = True
) -> list[list[tuple[int, int]] | None] | None:
    """Per output element at each index: the first and last input position with a nonzero
    gradient, per spatial axis (None: a zero gradient); None if no gradient reaches ``x``.
    ``batched=False`` (or one index): one backward per index, without vmap."""
    if not batched or len(indices) == 1:
        return _one_by_one(y, x, indices)
    ones = torch.zeros((len(indices), *y.shape), dtype=y.dtype)
    for i, index in enumerate(indices):
        ones[(i,) + tuple(index)] = 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (grads,) = torch.autograd.grad(
                y, x, ones, retain_graph=True, allow_unused=True, is_grads_batched=True
            )
    except RuntimeError:  # an op without a batching rule: one backward per position
        return _one_by_one(y, x, indices)
    if grads is None:
        return None
    return [_support(g) for g in grads]


def _one_by_one(
    y: torch.Tensor, x: torch.Tensor, indices: Sequence[tuple[int, ...]]
) -> list[list[tuple[int, int]] | None] | None:
    supports = []
    for index in indices:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (grad,) = torch.autograd.grad(y[index], x, retain_graph=True, allow_unused=True)
        if grad is None:
            return None
        supports.append(_support(grad))
    return supports


def replace_field(
    base: LayerField,
    fields: Ints,
    strides: tuple[Fraction, ...] | None,
    paddings: tuple[Fraction, ...] | None,
) -> LayerField:
    from dataclasses import replace

    return replace(
        base, receptive_field=fields, effective_stride=strides, effective_padding=paddings
    )


def _output_fields(
    final: Any, x: torch.Tensor, dims: int, period: int, neighbours_too: bool = True
) -> list[OutputField]:
    out: list[OutputField] = []
    for name, value in _flatten_outputs(final):
        if not isinstance(value, torch.Tensor):
            out.append(OutputField(name, (), None, f"not a tensor ({type(value).__name__})"))
            continue
        shape = tuple(int(n) for n in value.shape)
        if not value.dtype.is_floating_point:
            out.append(OutputField(name, shape, None, f"{value.dtype}: no gradient, not measured"))
            continue
        if value.dim() < 2 + dims or math.prod(shape[2:]) <= 1:
            out.append(
                OutputField(name, shape, None, "not spatial: every element sees the whole input")
            )
            continue
        if not value.requires_grad:
            out.append(OutputField(name, shape, None, "no gradient reaches it"))
            continue
        size = tuple(int(n) for n in x.shape[2:])
        layer, touched = _layer_field((name, 0), value, x, size, period, neighbours_too)
        note = layer.note
        if touched:
            note = BORDER
        out.append(OutputField(name, shape, layer.receptive_field, note))
    return out


__all__ = [
    "AxisState",
    "AxisTaps",
    "LayerField",
    "ModelFields",
    "NodeField",
    "OutputField",
    "axis_taps",
    "cumulative_fields",
    "cumulative_probe",
    "model_fields",
    "stand_in",
    "window_field",
]
