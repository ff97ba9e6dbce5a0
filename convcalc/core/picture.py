"""Pictures of a convolution as character grids: the padded input with the taps of one output
position (dilation's holes, where the next windows start, the rows a stride drops), the output
grid, and for a transposed convolution how one input cell spreads over the output. Pure: the
grids are computed from the layer's index arithmetic; convcalc.render draws them with Rich.

Every cell is one character, distinct without colour:

    .  input            -  padding (or, for a transposed conv, output cropped by padding)
    #  tap              +  tap on padding
    o  hole (inside a dilated kernel's span, not a tap)
    >  where the next window starts
    x  input that no window ever reads (the stride drops it)
    @  the output (or, transposed, the input) being drawn
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import field
from typing import Any

from convcalc._dataclass import dataclass
from convcalc.core.spec import Ints
from convcalc.kinds import ConvSpec
from convcalc.kinds.conv import padding_pairs

LEGEND = {
    ".": "input",
    "-": "padding",
    "#": "tap",
    "+": "tap on padding",
    "o": "hole",
    ">": "next window starts",
    "x": "never read",
    "@": "drawn position",
}
TRANSPOSED_LEGEND = {
    ".": "position",
    "@": "the input cell drawn",
    "#": "output it reaches",
    "+": "reached, but cropped by padding",
    "-": "cropped by padding",
}
#: the largest grid drawn per spatial dimension; larger inputs are drawn at a smaller size that
#: the layer treats alike (the same size modulo the stride)
MAX_CELLS = 16


@dataclass(frozen=True)
class Frame:
    #: the output position drawn (for a transposed conv: the input position)
    position: tuple[int, ...]
    title: str
    input_rows: list[str]
    output_rows: list[str]
    input_label: str
    output_label: str


@dataclass
class Picture:
    frames: list[Frame]
    legend: dict[str, str]
    notes: list[str] = field(default_factory=list)
    #: the layer drawn, as torch prints it
    title: str = ""
    command: str = "draw"

    #: a picture claims nothing to agree or disagree about, and warns about nothing
    agree = None
    warnings: tuple[str, ...] = ()
    disagreements: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The picture as data (``draw --format json``): each frame's grids, one string per
        row, one character per cell (the legend says what each character is)."""
        from convcalc._version import __version__

        return {
            "convcalc_version": __version__,
            "command": self.command,
            "layer": self.title,
            "legend": dict(self.legend),
            "frames": [
                {
                    "position": list(frame.position),
                    "title": frame.title,
                    "input_label": frame.input_label,
                    "input": list(frame.input_rows),
                    "output_label": frame.output_label,
                    "output": list(frame.output_rows),
                }
                for frame in self.frames
            ],
            "notes": list(self.notes),
        }


@dataclass
class StackField:
    """A stack's receptive field drawn: its growth layer by layer (name, largest extent, per
    axis text), and the field of its last spatial layer's central output on the input."""

    label: str
    rows: list[tuple[str, int, str]]
    field_rows: list[str]
    caption: str
    notes: list[str]
    command: str = "draw stack"
    agree = None
    warnings: tuple[str, ...] = ()
    disagreements: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        from convcalc._version import __version__

        return {
            "convcalc_version": __version__,
            "command": self.command,
            "stack": self.label,
            "growth": [
                {"layer": name, "largest": largest, "receptive_field": text}
                for name, largest, text in self.rows
            ],
            "field": list(self.field_rows),
            "caption": self.caption,
            "notes": list(self.notes),
        }


def stack_field(network: Any, label: str) -> StackField:
    """The receptive-field picture of a parsed stack (convcalc.sources.stack.Network), by
    formula (Araujo et al. 2019). ValueError when no layer has a spatial output."""
    from convcalc.core.cumulative import cumulative
    from convcalc.core.graph import graph_inputs
    from convcalc.kinds import figures

    inputs = graph_inputs(network.nodes, network.input)
    fields = cumulative(tuple(network.nodes), inputs, network.input)
    rows = []
    last = None
    previous: tuple[int, ...] = ()
    for name, figure in zip(network.names, fields):
        spatial = figure.effective_stride and not figure.whole_input
        if not spatial or figure.receptive_field == previous:
            continue
        previous = figure.receptive_field
        rows.append((name, max(figure.receptive_field), "x".join(map(str, figure.receptive_field))))
        last = (name, figure)
    notes = [
        "receptive fields by formula (Araujo et al. 2019); `convcalc stack` also measures "
        "them by autograd"
    ]
    if last is None:
        raise ValueError("the stack has no layer with a spatial output to draw")
    name, figure = last
    index = network.names.index(name)
    output_size = figures(network.nodes[index].spec, inputs[index]).output_shape.value[2:]
    centre = [n // 2 for n in output_size]
    start = [
        int(c * j - p) for c, j, p in zip(centre, figure.effective_stride, figure.effective_padding)
    ]
    field_rows, scale = field_on_input(network.input.size, start, figure.receptive_field)
    caption = (
        f"the field of {name}'s central output {tuple(centre)} on the "
        f"{'x'.join(map(str, network.input.size))} input"
        + (f" (a cell is {scale}x{scale} input positions)" if scale > 1 else "")
    )
    if any(j.denominator != 1 for j in figure.effective_stride):
        notes.append("a fractional effective stride: the field drawn is the widest one")
    return StackField(label, rows, field_rows, caption, notes)


def drawable_size(n: int, span: int, stride: int) -> int:
    """``n`` itself when small; else the smallest size at least one window plus two strides
    that is congruent to ``n`` modulo the stride (so dropped rows stay dropped)."""
    if n <= MAX_CELLS:
        return n
    small = max(span + 2 * stride, 5)
    small += (n - small) % stride
    return min(small, n)


def conv_taps(spec: ConvSpec, position: Sequence[int]) -> list[tuple[int, ...]]:
    """Padded-input coordinates of the taps of output ``position`` (torch's index arithmetic:
    output o reads padded input o·s + j·d)."""
    return [
        tuple(o * s + j * d for o, s, j, d in zip(position, spec.stride, tap, spec.dilation))
        for tap in itertools.product(*(range(k) for k in spec.kernel_size))
    ]


def transposed_targets(spec: ConvSpec, position: Sequence[int]) -> list[tuple[int, ...]]:
    """Uncropped output coordinates input ``position`` of a transposed conv writes to:
    i·s + j·d for each tap j (torch crops ``padding`` from each end afterwards)."""
    return [
        tuple(i * s + j * d for i, s, j, d in zip(position, spec.stride, tap, spec.dilation))
        for tap in itertools.product(*(range(k) for k in spec.kernel_size))
    ]


def conv_picture(
    spec: ConvSpec, size: Ints, steps: int = 1, at: Sequence[int] | None = None
) -> Picture:
    """Frames for ``steps`` output positions (row-major from ``at``, or from the first)."""
    notes: list[str] = []
    spans = [d * (k - 1) + 1 for k, d in zip(spec.kernel_size, spec.dilation)]
    drawn = tuple(drawable_size(n, span, s) for n, span, s in zip(size, spans, spec.stride))
    if drawn != tuple(size):
        notes.append(
            f"the input is {'x'.join(map(str, size))}: drawn at {'x'.join(map(str, drawn))}, "
            "which this layer treats alike (the same size modulo the stride)"
        )
    if spec.dims == 3:
        notes.append("a 3-D layer: drawn is the slice through the drawn position's centre")
    if spec.transposed:
        return _transposed(spec, drawn, steps, at, notes)
    pads = padding_pairs(spec)
    padded = [n + left + right for n, (left, right) in zip(drawn, pads)]
    outs = [(p - span) // s + 1 for p, span, s in zip(padded, spans, spec.stride)]
    read: set[tuple[int, ...]] = set()
    for position in itertools.product(*(range(o) for o in outs)):
        read.update(conv_taps(spec, position))
    positions = list(itertools.product(*(range(o) for o in outs)))
    start = positions.index(tuple(at)) if at is not None and tuple(at) in positions else 0
    frames = []
    for position in positions[start : start + steps]:
        taps = set(conv_taps(spec, position))
        span_cells = set(
            itertools.product(
                *(range(o * s, o * s + span) for o, s, span in zip(position, spec.stride, spans))
            )
        )
        following = []
        for axis in range(spec.dims):
            nxt = list(position)
            nxt[axis] += 1
            if nxt[axis] < outs[axis]:
                following.append(tuple(o * s for o, s in zip(nxt, spec.stride)))
        fixed = _slice_fixed(
            spec.dims, [o * s + (span // 2) for o, s, span in zip(position, spec.stride, spans)]
        )
        input_rows = _grid(
            padded,
            fixed,
            functools.partial(
                _input_kind,
                pads=pads,
                size=drawn,
                taps=taps,
                span=span_cells,
                following=following,
                read=read,
            ),
        )
        out_fixed = _slice_fixed(spec.dims, list(position))
        output_rows = _grid(outs, out_fixed, functools.partial(_marked, position=position))
        frames.append(
            Frame(
                position=position,
                title=f"output {_coords(position)}: its {len(taps)} taps",
                input_rows=input_rows,
                output_rows=output_rows,
                input_label=f"input {'x'.join(map(str, drawn))}, padded to "
                f"{'x'.join(map(str, padded))}",
                output_label=f"output {'x'.join(map(str, outs))}",
            )
        )
    return Picture(frames, dict(LEGEND), notes)


def _input_kind(
    cell: tuple[int, ...],
    pads: Sequence[tuple[int, int]],
    size: Sequence[int],
    taps: set[tuple[int, ...]],
    span: set[tuple[int, ...]],
    following: list[tuple[int, ...]],
    read: set[tuple[int, ...]],
) -> str:
    on_padding = any(c < left or c >= left + n for c, (left, _), n in zip(cell, pads, size))
    if cell in taps:
        return "+" if on_padding else "#"
    if cell in following:
        return ">"
    if cell in span:
        return "o"
    if on_padding:
        return "-"
    return "." if cell in read else "x"


def _transposed(
    spec: ConvSpec, size: Ints, steps: int, at: Sequence[int] | None, notes: list[str]
) -> Picture:
    pads = [p for p, _ in padding_pairs(spec)]
    full = [
        (n - 1) * s + d * (k - 1) + 1 + op
        for n, s, d, k, op in zip(
            size, spec.stride, spec.dilation, spec.kernel_size, spec.output_padding
        )
    ]
    positions = list(itertools.product(*(range(n) for n in size)))
    start = positions.index(tuple(at)) if at is not None and tuple(at) in positions else 0
    frames = []
    for position in positions[start : start + steps]:
        targets = set(transposed_targets(spec, position))
        kind = functools.partial(_spread_kind, targets=targets, pads=pads, full=full)

        centre = [
            i * s + (d * (k - 1)) // 2
            for i, s, d, k in zip(position, spec.stride, spec.dilation, spec.kernel_size)
        ]
        output_rows = _grid(full, _slice_fixed(spec.dims, centre), kind)
        input_rows = _grid(
            list(size),
            _slice_fixed(spec.dims, list(position)),
            functools.partial(_marked, position=position),
        )
        cropped_size = [f - 2 * p for f, p in zip(full, pads)]
        frames.append(
            Frame(
                position=position,
                title=f"input {_coords(position)} spreads over {len(targets)} outputs",
                input_rows=input_rows,
                output_rows=output_rows,
                input_label=f"input {'x'.join(map(str, size))}",
                output_label=f"output {'x'.join(map(str, cropped_size))} (before cropping "
                f"{'x'.join(map(str, pads))} from each end: "
                f"{'x'.join(map(str, full))})",
            )
        )
    return Picture(frames, dict(TRANSPOSED_LEGEND), notes)


def _marked(cell: tuple[int, ...], position: tuple[int, ...]) -> str:
    return "@" if cell == position else "."


def _spread_kind(
    cell: tuple[int, ...], targets: set[tuple[int, ...]], pads: Sequence[int], full: Sequence[int]
) -> str:
    cropped = any(c < p or c >= f - p for c, p, f in zip(cell, pads, full))
    if cell in targets:
        return "+" if cropped else "#"
    return "-" if cropped else "."


def _slice_fixed(dims: int, centre: Sequence[int]) -> dict[int, int]:
    """For a 3-D layer, the depth index of the slice drawn; nothing fixed otherwise."""
    return {0: centre[0]} if dims == 3 else {}


def _grid(extent: Sequence[int], fixed: dict[int, int], kind: object) -> list[str]:
    """Rows of characters over the last two axes (one row for 1-D)."""
    assert callable(kind)
    if len(extent) == 1:
        return ["".join(kind((x,)) for x in range(extent[0]))]
    height, width = extent[-2], extent[-1]
    rows = []
    for y in range(height):
        cells = []
        for x in range(width):
            cell = (fixed[0], y, x) if len(extent) == 3 else (y, x)
            cells.append(kind(cell))
        rows.append("".join(cells))
    return rows


def _coords(position: Sequence[int]) -> str:
    return "(" + ", ".join(map(str, position)) + ")"


# --- stacks -------------------------------------------------------------------------------------


def field_on_input(
    size: Ints, start: Sequence[int], extent: Sequence[int], max_cells: int = 48
) -> tuple[list[str], int]:
    """The input grid with one output's receptive field marked ('#'), and the part of the field
    outside the input as padding ('-'); each cell stands for ``scale`` input positions."""
    scale = max(1, -(-max(size) // max_cells))
    lo = [min(0, s) for s in start]
    hi = [max(n, s + e) for n, s, e in zip(size, start, extent)]

    def kind(cell: tuple[int, ...]) -> str:
        real = [c * scale + low for c, low in zip(cell, lo)]
        inside = all(0 <= r < n for r, n in zip(real, size))
        in_field = all(s <= r < s + e for r, s, e in zip(real, start, extent))
        if in_field:
            return "#" if inside else "+"
        return "." if inside else " "

    cells = [-(-(h - low) // scale) for h, low in zip(hi, lo)]
    return _grid(cells, {0: cells[0] // 2} if len(cells) == 3 else {}, kind), scale
