"""What a layer kind is: one :class:`Kind` entry holds everything convcalc does with layers of
that kind, so that a new kind is one module in this package (and its tests), not edits in eight.

Pure, like convcalc.core: no torch. The parts that need torch (building the real module, the
reading a user's module back into a spec) receive the torch toolkit
from the measure room as an argument (:class:`TorchKit`): the code of a kind stays in one place
and the rule "torch only in convcalc/measure/" still holds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol

from convcalc._dataclass import dataclass
from convcalc.core.formulas import Figures
from convcalc.core.saved import LayerIO, LayerSaved, saves_nothing
from convcalc.core.spec import InputSpec, Ints, Labels, axis_note, show_ints
from convcalc.errors import SpecError


class TorchKit(Protocol):
    """What the measure room hands a kind: ``torch.nn``, convcalc's own modules, and helpers."""

    @property
    def nn(self) -> Any:
        """``torch.nn``."""

    @property
    def Add(self) -> Any:  # noqa: N802  (a class)
        """A residual join: the sum of its inputs (an nn.Module class)."""

    @property
    def GroupSplit(self) -> Any:  # noqa: N802  (a class)
        """A grouped conv as ``groups`` dense convs (torch counts their backward right)."""


#: how a layer maps input positions to output positions
GeometryKind = Literal["window", "pointwise", "adaptive", "join", "whole", "flatten"]


@dataclass(frozen=True)
class Geometry:
    """The spatial geometry of a layer, for the cumulative receptive field, its probe and the
    warnings: a sliding ``window`` (conv, pool), ``pointwise`` (norms, activations), ``adaptive``
    pooling, a ``join`` of several inputs, ``whole`` (every output sees the whole input: linear),
    or ``flatten`` (spatial positions become features)."""

    kind: GeometryKind
    kernel: Ints = ()
    stride: Ints = ()
    #: (left, right) per axis, string paddings resolved as torch does
    padding: tuple[tuple[int, int], ...] = ()
    dilation: Ints = ()
    transposed: bool = False
    ceil_mode: bool = False
    #: adaptive pooling's output size
    output_size: Ints = ()

    @property
    def taps(self) -> int:
        count = 1
        for k in self.kernel:
            count *= k
        return count


POINTWISE = Geometry("pointwise")


def _pointwise(spec: Any) -> Geometry:
    return POINTWISE


def _no_warnings(name: str, spec: Any, layer_input: InputSpec) -> list[str]:
    return []


def _dense(spec: Any) -> str:
    return "dense"


def _same_spec(spec: Any, input_shape: Ints) -> Any:
    return spec


def _no_backward_module(spec: Any, kit: TorchKit, device: str) -> Any:
    return None


def _never(spec: Any) -> bool:
    return False


@dataclass(frozen=True)
class Kind:
    """Everything convcalc does with one kind of layer."""

    #: the kind's name in docs and errors
    name: str
    #: the spec dataclass of the kind (frozen; ``to_dict()`` and ``describe()``)
    spec_type: type
    #: every figure by formula: (spec, input) -> Figures
    figures: Callable[[Any, InputSpec], Figures]
    #: the real torch module, in eval mode: (spec, kit, device) -> nn.Module
    build: Callable[[Any, TorchKit, str], Any]
    #: rules that need the layer and its input: raise SpecError
    check_fits: Callable[[Any, InputSpec, Labels], None]
    geometry: Callable[[Any], Geometry] = _pointwise
    #: the traps of conv arithmetic this layer falls into, given its input
    warnings: Callable[[str, Any, InputSpec], list[str]] = _no_warnings
    #: the compute-rate class used to decide whether a real run is quick enough
    rate: Callable[[Any], str] = _dense
    #: a user's module read back into a spec (None: not this kind): (name, module, kit)
    from_module: Callable[[str, Any, TorchKit], Any] | None = None
    #: a spec read from a module, completed from the input it received (channels, dims)
    with_input: Callable[[Any, Ints], Any] = _same_spec
    #: the module whose backward torch counts right, when the layer's own is miscounted
    backward_module: Callable[[Any, TorchKit, str], Any] = _no_backward_module
    #: what the layer keeps for its backward pass, on its own (nothing shared with its
    #: neighbours): (spec, core.saved.LayerIO) -> LayerSaved; the default saves nothing.
    #: Found with torch.autograd.graph.saved_tensors_hooks on the real layers (torch 2.13,
    #: training mode); core.memory_model shares and sums it over a network
    saved_for_backward: Callable[[Any, LayerIO], LayerSaved] = saves_nothing
    #: whether the layer's forward depends on the module's training mode (batch norm's
    #: statistics, dropout's mask): such a network's saved-for-backward (training mode) and
    #: inference peak (eval mode) need two passes; one pass serves both otherwise
    mode_dependent: Callable[[Any], bool] = _never
    #: for a mode-dependent layer: whether running it a second time in training mode, on the
    #: inputs the eval-mode pass gave it, yields what a training-mode pass would save. True
    #: when its eval output is a new tensor, as its training output is (batch norm), so the
    #: layers after it save the same storages in both modes; not dropout, whose eval output is
    #: its input itself (measure.onepass: the network then takes a second, training-mode pass)
    training_twin: Callable[[Any], bool] = _never


# --- checks shared by kinds ----------------------------------------------------------------


def check_channels(expected: int, layer_input: InputSpec, what: str, labels: Labels) -> None:
    if expected != layer_input.channels:
        raise SpecError(
            "in_channels",
            f"{labels['in_channels']}: {what} expects {expected} channels, the input has "
            f"{layer_input.channels}",
        )


def check_dims(dims: int, layer_input: InputSpec, labels: Labels) -> None:
    if layer_input.dims != dims:
        shown = show_ints(layer_input.size) if layer_input.size else "(flat)"
        raise SpecError(
            "size",
            f"{labels['size']} {shown} has {layer_input.dims} spatial dimensions; the layer "
            f"has {dims}",
        )


# --- warnings shared by windowed kinds -----------------------------------------------------


def dropped_rows(name: str, geometry: Geometry, layer_input: InputSpec) -> list[str]:
    """Input positions no window reads: past the last window (the floor in the size formula
    drops them), or, where the stride is wider than an undilated kernel, between the windows
    too (a 1x1 conv of stride 2 reads every other row)."""
    if geometry.kind != "window" or geometry.transposed or geometry.ceil_mode:
        return []
    dims = len(geometry.kernel)
    unused: dict[int, int] = {}
    skipped: dict[int, int] = {}
    for axis, (n, k, s, d, (left, right)) in enumerate(
        zip(layer_input.size, geometry.kernel, geometry.stride, geometry.dilation, geometry.padding)
    ):
        span = d * (k - 1) + 1
        padded = n + left + right
        if padded < span:
            continue
        out = (padded - span) // s + 1
        if d == 1 and s > k:
            never = n - _real_reads(n, k, s, left, out)
            if never > 0:
                skipped[axis] = never
            continue
        reached = (out - 1) * s + span  # padded positions the last window reaches
        if padded - reached - right > 0:  # real input positions beyond it
            unused[axis] = padded - reached - right
    names = {1: ("position",), 2: ("row", "column"), 3: ("slice", "row", "column")}[dims]
    strides = "x".join(str(s) for s in dict.fromkeys(geometry.stride))
    shape = "x".join(map(str, layer_input.size))
    return _skipped_rows(name, geometry, layer_input, skipped, names) + _unused_rows(
        name, geometry, unused, names, strides, shape
    )


def _real_reads(n: int, k: int, s: int, left: int, out: int) -> int:
    """How many of the ``n`` real positions (after ``left`` of padding) windows of ``k``
    positions at stride ``s > k`` read (``out`` windows, disjoint): each window's ``k`` less
    what falls in the padding, counted over the few windows that reach it."""
    reads = out * k
    for o in range(min(out, -(-left // s))):  # windows starting in the left padding
        reads -= min(o * s + k, left) - o * s
    end = left + n  # the first position of the right padding
    for o in range(max(0, -(-(end - k + 1) // s)), out):  # windows ending in it
        reads -= o * s + k - max(o * s, end)
    return reads


def _skipped_rows(
    name: str,
    geometry: Geometry,
    layer_input: InputSpec,
    skipped: dict[int, int],
    names: tuple[str, ...],
) -> list[str]:
    dims = len(names)
    if not skipped:
        return []
    texts = {
        axis: f"stride {geometry.stride[axis]}, wider than the kernel ({geometry.kernel[axis]}), "
        f"never reads {count} of the {layer_input.size[axis]} input {{what}}"
        for axis, count in skipped.items()
    }
    if len(texts) == dims and len(set(texts.values())) == 1:
        kinds = [f"{n}s" for n in names]
        what = kinds[0] if dims == 1 else ", ".join(kinds[:-1]) + " and " + kinds[-1]
        text = next(iter(texts.values())).format(what=what)
        return [f"{name}: {text}: no window covers them"]
    return [
        f"{name}: {text.format(what=names[axis] + 's')}: no window covers them"
        f"{axis_note(axis, dims)}"
        for axis, text in texts.items()
    ]


def _unused_rows(
    name: str,
    geometry: Geometry,
    unused: dict[int, int],
    names: tuple[str, ...],
    strides: str,
    shape: str,
) -> list[str]:
    dims = len(names)
    if not unused:
        return []
    if len(unused) == dims and len(set(unused.values())) == 1:
        count = next(iter(unused.values()))
        kinds = [f"{n}{'s' if count > 1 else ''}" for n in names]
        what = kinds[0] if len(kinds) == 1 else ", ".join(kinds[:-1]) + " and " + kinds[-1]
        return [
            f"{name}: stride {strides} leaves the last {count} input {what} of {shape} unused: "
            "no window reaches them (the floor in the size formula drops them)"
        ]
    return [
        f"{name}: stride {geometry.stride[axis]} leaves the last {count} input {names[axis]}"
        f"{'s' if count > 1 else ''} of {shape.split('x')[axis]} unused: no window reaches "
        f"{'them' if count > 1 else 'it'} (the floor in the size formula drops "
        f"{'them' if count > 1 else 'it'}){axis_note(axis, dims)}"
        for axis, count in unused.items()
    ]


def merged(by_axis: dict[int, str], dims: int) -> list[str]:
    """One message when every spatial dimension has the same one; else one per dimension."""
    if len(by_axis) == dims and len(set(by_axis.values())) == 1:
        return [next(iter(by_axis.values()))]
    return [message + axis_note(axis, dims) for axis, message in by_axis.items()]


def ints_of(value: Any, dims: int) -> Ints:
    """A torch module attribute (an int or a tuple) as one value per dimension."""
    return tuple(value) if isinstance(value, tuple | list) else (int(value),) * dims
