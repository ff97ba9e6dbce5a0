"""Cumulative figures of a network, relative to its input: receptive field, effective stride and
effective padding per spatial dimension, by formula. Pure: no torch.

Definitions and recursion from Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional
Neural Networks", Distill, 2019: for a layer with kernel k, stride s, left padding p and dilation
d (effective kernel k' = d(k-1)+1), after layers with receptive field r, effective stride J and
effective padding P,

    r' = r + (k' - 1)·J        J' = J·s        P' = P + p·J

so that output u of the layer sees network inputs u·J' - P' ... u·J' - P' + r' - 1.

Extensions, each said in the output where it applies:

* a residual join (``add``) sees the union of its inputs' fields: with equal J, the union runs from
  the leftmost start to the rightmost end: P' = max P, r' = max end - min start + 1.
* a transposed convolution has a fractional stride 1/s: J' = J/s and, taking it as a stride-1
  conv over the zero-stuffed input padded by d(k-1) - p, P' = P + J·(d(k-1) - p)/s. Its receptive
  field depends on the output position; convcalc traces the exact set of input positions back
  through the network for one period of output positions and keeps the largest extent.
* after a linear layer every output sees the whole input.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from convcalc._dataclass import dataclass
from convcalc.core.formulas import adaptive_window
from convcalc.core.spec import InputSpec, Node
from convcalc.kinds import geometry

if TYPE_CHECKING:  # a whole stride or padding stays an int: see _divided
    from fractions import Fraction

#: the largest number of output positions traced for a network with transposed layers
TRACE_PERIOD_LIMIT = 64


@dataclass(frozen=True)
class Cumulative:
    """Figures of one layer's output relative to the network input, per spatial dimension."""

    receptive_field: tuple[int, ...]
    effective_stride: tuple[int | Fraction, ...]
    effective_padding: tuple[int | Fraction, ...]
    #: every output sees the whole input (after a linear layer)
    whole_input: bool = False
    #: how an add's figures were formed, or other remarks
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "receptive_field": list(self.receptive_field),
            "effective_stride": [_number(v) for v in self.effective_stride],
            "effective_padding": [_number(v) for v in self.effective_padding],
        }
        if self.whole_input:
            data["whole_input"] = True
        if self.note:
            data["note"] = self.note
        return data


def _divided(value: int | Fraction, divisor: int) -> int | Fraction:
    """``value / divisor`` exactly: an int when it divides, else a Fraction. The figures are
    the same numbers either way (``Fraction(2) == 2``, and their hashes, texts and JSON agree);
    whole ones stay ints so that a network without a fractional stride (every one but the
    transposed and the adaptive) never loads ``fractions`` (start-up: docs/benchmarks.md)."""
    if isinstance(value, int) and value % divisor == 0:
        return value // divisor
    from fractions import Fraction

    return Fraction(value) / divisor


def _number(value: int | Fraction) -> int | float:
    return int(value) if value.denominator == 1 else float(value)


def fraction_text(value: int | Fraction) -> str:
    return (
        str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
    )


def _inputs_of(spec: Any, axis: int, position: int, size: int | None) -> list[int]:
    """Positions of a layer's input (before padding) that output ``position`` depends on."""
    shape = geometry(spec)
    if shape.kind == "window":
        k, s, p, d = (
            shape.kernel[axis],
            shape.stride[axis],
            shape.padding[axis][0],
            shape.dilation[axis],
        )
        if shape.transposed:
            return [
                (position + p - j * d) // s for j in range(k) if (position + p - j * d) % s == 0
            ]
        return [position * s - p + j * d for j in range(k)]
    if shape.kind == "adaptive" and size is not None:
        out = shape.output_size[axis]
        return list(range((position * size) // out, -(-((position + 1) * size) // out)))
    return [position]


def _traced(nodes: tuple[Node, ...], index: int, axis: int, sizes: list[tuple[int, ...]]) -> int:
    """Largest extent of network-input positions one output of node ``index`` depends on, over
    one period of output positions, by following position sets back through the graph."""
    period = 1
    for node in nodes[: index + 1]:
        shape = geometry(node.spec)
        if shape.kind == "window":
            period *= shape.stride[axis]
    period = min(period, TRACE_PERIOD_LIMIT)
    widest = 0
    # the input is taken as unbounded (no position is clipped), so any period will do
    for position in range(period):
        pending: dict[int, set[int]] = {index: {position}}
        reached: set[int] = set()
        for current in range(index, -1, -1):
            positions = pending.pop(current, None)
            if not positions:
                continue
            node = nodes[current]
            size = sizes[node.inputs[0] + 1][axis] if node.inputs[0] + 1 < len(sizes) else None
            found = {i for o in positions for i in _inputs_of(node.spec, axis, o, size)}
            for source in node.inputs:
                if source < 0:
                    reached |= found
                else:
                    pending.setdefault(source, set()).update(found)
        if reached:
            widest = max(widest, max(reached) - min(reached) + 1)
    return widest


#: cumulative figures by the network's geometries (bounded: a long sweep stays flat in memory)
_BY_GEOMETRY: dict[tuple[Any, ...], tuple[Cumulative, ...]] = {}
_BY_GEOMETRY_MAX = 4096


def cumulative(
    nodes: tuple[Node, ...], inputs: list[InputSpec], network_input: InputSpec
) -> list[Cumulative]:
    """Cumulative figures of every node; ``inputs[i]`` is node i's input tensor.

    Remembered by the network's layer geometries, how its nodes connect and its number of
    spatial dimensions, for networks with no linear layer and no adaptive pooling: only those
    two read the sizes (of the network input, of a node's input), so without them the figures
    are a function of that key alone (a sweep's specs often share a geometry at other channel
    counts and sizes)."""
    shapes = tuple(geometry(node.spec) for node in nodes)
    if any(shape.kind in ("whole", "adaptive") for shape in shapes):
        return _cumulative(nodes, inputs, network_input)
    key = (network_input.dims, shapes, tuple(node.inputs for node in nodes))
    known = _BY_GEOMETRY.get(key)
    if known is None:
        known = tuple(_cumulative(nodes, inputs, network_input))
        if len(_BY_GEOMETRY) >= _BY_GEOMETRY_MAX:
            _BY_GEOMETRY.pop(next(iter(_BY_GEOMETRY)))
        _BY_GEOMETRY[key] = known
    return list(known)


def _cumulative(
    nodes: tuple[Node, ...], inputs: list[InputSpec], network_input: InputSpec
) -> list[Cumulative]:
    """:func:`cumulative`, computed."""
    dims = network_input.dims
    start = Cumulative((1,) * dims, (1,) * dims, (0,) * dims)
    shapes = [geometry(node.spec) for node in nodes]
    has_transposed = any(shape.transposed for shape in shapes)
    sizes = [network_input.size] + [spec_input.size for spec_input in inputs]
    results: list[Cumulative] = []

    def state(source: int) -> Cumulative:
        return start if source < 0 else results[source]

    for index, (node, shape) in enumerate(zip(nodes, shapes)):
        before = state(node.inputs[0])
        if before.whole_input:
            results.append(before)
            continue
        if shape.kind == "whole":
            results.append(
                Cumulative(
                    network_input.size,
                    (),
                    (),
                    whole_input=True,
                    note="a linear layer: every output sees the whole input",
                )
            )
            continue
        if shape.kind == "join":
            joined = _join([state(i) for i in node.inputs])
            if has_transposed:
                traced = tuple(_traced(nodes, index, axis, sizes) for axis in range(dims))
                joined = Cumulative(
                    traced, joined.effective_stride, joined.effective_padding, note=joined.note
                )
            results.append(joined)
            continue
        if shape.kind == "adaptive":
            results.append(_adaptive(shape.output_size, inputs[index], before, network_input))
            continue
        if shape.kind != "window" or not before.effective_stride:
            results.append(before)
            continue
        fields, strides, paddings = [], [], []
        note = ""
        for axis in range(dims):
            r = before.receptive_field[axis]
            jump, pad = before.effective_stride[axis], before.effective_padding[axis]
            k, s, p, d = (
                shape.kernel[axis],
                shape.stride[axis],
                shape.padding[axis][0],
                shape.dilation[axis],
            )
            span = d * (k - 1) + 1
            if shape.transposed:
                strides.append(_divided(jump, s))
                paddings.append(pad + _divided(jump * (span - 1 - p), s))
                fields.append(0)  # traced below
                note = (
                    "transposed layer: fractional stride; the receptive field differs between "
                    "output positions, the largest is traced exactly"
                )
            else:
                fields.append(r + (span - 1) * jump)  # type: ignore[arg-type]
                strides.append(jump * s)
                paddings.append(pad + p * jump)
        if has_transposed:
            fields = [_traced(nodes, index, axis, sizes) for axis in range(dims)]
        results.append(
            Cumulative(
                tuple(int(math.ceil(f)) for f in fields), tuple(strides), tuple(paddings), note=note
            )
        )
    return results


def _adaptive(
    output_size: tuple[int, ...],
    spec_input: InputSpec,
    before: Cumulative,
    network_input: InputSpec,
) -> Cumulative:
    """Adaptive pooling: the identity when sizes match, the whole input when it pools to 1,
    else windows of differing widths: the widest, with a fractional stride."""
    if output_size == spec_input.size:
        return before
    if all(o == 1 for o in output_size):
        return Cumulative(
            network_input.size,
            (),
            (),
            whole_input=True,
            note="global pooling: every output sees the whole input",
        )
    fields, strides = [], []
    for axis, (n, out) in enumerate(zip(spec_input.size, output_size)):
        jump = before.effective_stride[axis]
        fields.append(
            int(math.ceil(before.receptive_field[axis] + (adaptive_window(n, out) - 1) * jump))
        )
        strides.append(_divided(jump * n, out))
    return Cumulative(
        tuple(fields),
        tuple(strides),
        before.effective_padding,
        note="adaptive pooling: windows differ in width; the widest is used",
    )


def _join(states: list[Cumulative]) -> Cumulative:
    """A residual add sees the union of its inputs' fields."""
    if any(s.whole_input for s in states):
        return next(s for s in states if s.whole_input)
    dims = len(states[0].receptive_field)
    fields, strides, paddings = [], [], []
    for axis in range(dims):
        starts = [-s.effective_padding[axis] for s in states]
        ends = [-s.effective_padding[axis] + s.receptive_field[axis] - 1 for s in states]
        fields.append(int(max(ends) - min(starts) + 1))
        strides.append(states[0].effective_stride[axis])
        paddings.append(max(s.effective_padding[axis] for s in states))
    widest = max(range(len(states)), key=lambda i: sum(states[i].receptive_field))
    # a residual add's inputs are (main path, shortcut) by construction (convcalc.stack)
    paths = ["main", "shortcut", *(f"input {i}" for i in range(3, len(states) + 1))][: len(states)]
    described = ", ".join(
        f"{path} {'x'.join(map(str, s.receptive_field))}" for path, s in zip(paths, states)
    )
    note = (
        f"residual add: the union of its inputs' fields ({described}); the "
        f"{paths[widest]} path's contains the others, so the figures follow it"
        if tuple(fields) == states[widest].receptive_field
        else f"residual add: the union of its inputs' fields ({described})"
    )
    if len({s.effective_stride for s in states}) > 1:
        note += "; the paths' effective strides differ: the first one's is shown"
    return Cumulative(tuple(fields), tuple(strides), tuple(paddings), note=note)
