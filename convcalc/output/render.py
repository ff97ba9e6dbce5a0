"""The one module that imports Rich: reports as tables (``--format table``, the default).

convcalc.formats picks the renderer for every format; this one is loaded only for tables.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from convcalc import _dataclass

with _dataclass.kept(__name__):  # Rich's dataclasses' generated code kept between runs too
    from rich import box
    from rich.cells import cell_len
    from rich.console import Console, Group
    from rich.measure import Measurement
    from rich.table import Table
    from rich.text import Text

from convcalc.core.cumulative import fraction_text
from convcalc.core.formulas import group, human_bytes, shape_text
from convcalc.core.memory import LARGER_STORAGE, Memory
from convcalc.core.report import (
    BOUND_STEP_KEYS,
    EXACT_STEP_KEYS,
    LayerReport,
    Pair,
    Report,
    Total,
)

CAPTION = (
    "MACs: fvcore's count (one multiply-add = one flop). FLOPs: torch.utils.flop_counter's "
    "count (two per multiply-add). Neither counts bias: its additions have their own line. "
    "Memory: {dtype}, as torchsummary counts it (forward/backward = every output twice)."
)
MEMORY_CAPTION = (
    " Memory ({dtype}): input/output/params/fwd+bwd/total are torchsummary's convention "
    "(fwd+bwd = every output twice: torchinfo's 'Forward/backward pass size'); saved for "
    "backward: the tensors autograd keeps for the backward; peak inference: the live "
    "activation bytes under no_grad (per layer: while it runs); training step: params + "
    "buffers + grads + optimizer state + saved + the output (held through backward) + the "
    "backward's transient (by formula an upper bound: 'bound', no agreement claimed)."
)
BOUND = "bound"
AGREE = "✓"
DISAGREE = "✗"


def make_console(file: IO[str] | None = None, *, no_color: bool = False) -> Console:
    """Colour and width follow the terminal: piped output gets no colour and no wrapping, unless
    the COLUMNS environment variable gives a width (``COLUMNS=80 convcalc ... | less``)."""
    stream = file or sys.stdout
    is_terminal = stream.isatty()
    width = columns_from_environment()
    return _console_class(stream)(
        file=stream,
        width=width if width is not None else (None if is_terminal else 10_000),
        no_color=no_color or "NO_COLOR" in os.environ or not is_terminal,
        highlight=False,
        soft_wrap=not is_terminal and width is None,
        emoji=False,
    )


def _console_class(stream: IO[str]) -> type[Console]:
    """Rich's Console, or, on a stream that cannot encode convcalc's symbols, one that turns
    them into their ASCII stand-ins before Rich lays the tables out (so that every row of a
    table has one width: ``⌊`` becoming ``floor(`` after the layout would widen its row)."""
    from convcalc.output.charset import needs_fallback

    return AsciiConsole if needs_fallback(stream) else Console


class AsciiConsole(Console):
    """A Console whose printed renderables have every symbol by its ASCII stand-in
    (convcalc/output/charset.py), converted cell by cell before the layout."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(ascii_renderable(part) for part in objects), **kwargs)


def ascii_renderable(renderable: Any) -> Any:
    """``renderable`` (text, a Text, a Table, a Group, nested) with every symbol by its ASCII
    stand-in; tables and groups are changed in place; styles kept."""
    from convcalc.output.charset import ascii_text

    if isinstance(renderable, str):
        return ascii_text(renderable)
    if isinstance(renderable, Text):
        return _ascii_styled(renderable, ascii_text)
    if isinstance(renderable, Folded):
        renderable.table = ascii_renderable(renderable.table)
    elif isinstance(renderable, Group):
        renderable._renderables = tuple(ascii_renderable(part) for part in renderable._renderables)
    elif isinstance(renderable, Table):
        for name in ("title", "caption"):
            if getattr(renderable, name) is not None:
                setattr(renderable, name, ascii_renderable(getattr(renderable, name)))
        for column in renderable.columns:
            column.header = ascii_renderable(column.header)
            column.footer = ascii_renderable(column.footer)
            column._cells = [ascii_renderable(cell) for cell in column._cells]
    elif hasattr(renderable, "renderable"):  # Padding, Panel, Align
        renderable.renderable = ascii_renderable(renderable.renderable)
    return renderable


def _ascii_styled(text: Text, convert: Callable[[str], str]) -> Text:
    """``text`` with each character converted, its spans moved to the converted positions."""
    pieces = [convert(char) for char in text.plain]
    starts = [0]
    for piece in pieces:
        starts.append(starts[-1] + len(piece))
    result = text.copy()
    result.plain = "".join(pieces)
    result.spans = [
        span.__class__(starts[span.start], starts[min(span.end, len(pieces))], span.style)
        for span in text.spans
    ]
    return result


def columns_from_environment() -> int | None:
    """The width COLUMNS asks for (a positive whole number), or None."""
    text = os.environ.get("COLUMNS", "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def render_table(
    report: Any, stream: IO[str], *, no_color: bool = False, detail: bool = False
) -> None:
    """Print a Report (or a Comparison) as Rich tables."""
    console = make_console(stream, no_color=no_color)
    if isinstance(report, Report):
        console.print(fit_tables(_report(report, detail)))
    elif hasattr(report, "questions"):
        console.print(fit_tables(_solution(report)))
    else:
        console.print(fit_tables(_comparison(report, detail)))


# --- width: every number whole at any width ------------------------------------------------------

#: a column with one of these headers stays beside the column before it when a table folds
ATTACHED_HEADERS = ("", "ratio", "theory")
#: a column of text that wraps (formula, instantiated) keeps at least this many characters
WRAP_MIN = 24


def fit_tables(renderable: Any) -> Any:
    """Every table in ``renderable`` (a Group, nested) made to fit the console's width when it
    prints: see :class:`Folded`."""
    if isinstance(renderable, Table):
        return Folded(renderable)
    if isinstance(renderable, Group):
        return Group(*(fit_tables(part) for part in renderable.renderables))
    return renderable


class Folded:
    """A table that keeps every number whole at the console's width. Where its columns do not
    fit, the first column (the layer or figure) wraps at spaces, and the columns that still do
    not fit fold into a further block below, which repeats the first column; a column headed
    ``ratio``, ``theory`` or nothing (the check mark) stays beside the column before it. Number
    columns never wrap; headers wrap at spaces; text columns (formula, instantiated) wrap at
    spaces, never narrower than their longest word (``WRAP_MIN`` characters at least).
    The one place where width is decided: columns added to any table fold the same way."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def __rich_console__(self, console: Console, options: Any) -> Iterator[Any]:
        width = options.max_width
        table = self.table
        natural, widths = _natural_widths(console, options, table)
        if natural <= width or len(table.columns) < 2:
            if natural <= width:
                _fix_widths(table, widths)
            yield table
            return
        blocks = fold_columns(_column_widths(console, options, table), width, _gap(table))
        for number, (columns, widths) in enumerate(blocks):
            if number:
                yield Text()
            yield _block(table, columns, widths, first=number == 0, last=number == len(blocks) - 1)


def _natural_widths(console: Console, options: Any, table: Table) -> tuple[int, list[int]]:
    """The table's natural width and its columns' (padding included), each cell measured once:
    what ``Measurement.get(table)`` gives, which measures every cell twice, and Rich's render
    then a third time (start-up: docs/benchmarks.md)."""
    wide = options.update_width(10**6)
    widths = [table._measure_column(console, wide, column).maximum for column in table.columns]
    return sum(widths) + table._extra_width, widths


def _fix_widths(table: Table, widths: list[int]) -> None:
    """Fix each column at the width it was measured at (a table that fits at its natural
    width: the widths Rich would compute), so that Rich's render does not measure the cells
    again. A column too narrow for its padding is left to Rich."""
    for index, (column, width) in enumerate(zip(table.columns, widths)):
        inner = width - table._get_padding_width(index)
        if column.width is None and inner >= 1:
            column.width = inner


def _gap(table: Table) -> int:
    """Characters between two columns: the padding on both sides and the divider."""
    left, right = table.padding[3], table.padding[1]
    return left + right + (1 if table.box is not None and table.show_lines is not None else 0)


def _words(text: str) -> list[str]:
    return [word for word in text.split() if word] or [""]


def _column_widths(
    console: Console, options: Any, table: Table
) -> list[tuple[int, int, bool, str]]:
    """Per column: the width it needs (its widest cell; for text that wraps, its longest word),
    its natural width, whether it wraps, and its header."""
    result = []
    wide = options.update_width(10**6)
    for index, column in enumerate(table.columns):
        cells = list(column.cells)
        natural = max((Measurement.get(console, wide, cell).maximum for cell in cells), default=1)
        header = str(column.header)
        word = max(len(w) for w in _words(header))
        wraps = index == 0 or not column.no_wrap
        if wraps:
            longest = max(
                (max(cell_len(w) for w in _words(_plain(cell))) for cell in cells),
                default=1,
            )
            need = min(max(natural, word), max(longest, word, WRAP_MIN if index else 0))
        else:
            need = max(natural, word)
        result.append((need, max(natural, cell_len(header)), wraps, header))
    return result


def _plain(cell: Any) -> str:
    return cell.plain if isinstance(cell, Text) else str(cell)


def fold_columns(
    columns: list[tuple[int, int, bool, str]], width: int, gap: int
) -> list[tuple[list[int], list[int]]]:
    """Which columns go in which block, and each one's width, for a table ``width`` wide: the
    first column in every block, narrowed to a quarter of the width (or its longest word);
    the rest in order, a block holding what fits; what a block leaves over goes to its
    wrapping columns (and the first), up to their natural width. Pure: tested on its own."""
    need0, natural0, _, _ = columns[0]
    key = min(natural0, max(need0, width // 4))
    units: list[list[int]] = []
    for index in range(1, len(columns)):
        if units and columns[index][3].strip() in ATTACHED_HEADERS:
            units[-1].append(index)
        else:
            units.append([index])
    blocks: list[list[int]] = [[0]]
    used = key
    for unit in units:
        cost = sum(columns[i][0] + gap for i in unit)
        if used + cost > width and len(blocks[-1]) > 1:
            blocks.append([0])
            used = key
        blocks[-1].extend(unit)
        used += cost
    result = []
    for block in blocks:
        widths = [key] + [columns[i][0] for i in block[1:]]
        spare = width - sum(widths) - gap * (len(block) - 1)
        growing = [n for n, i in enumerate(block) if columns[i][2]]
        for n in sorted(growing, key=lambda n: n == 0):  # text columns first, then the first
            grow = min(max(spare, 0), columns[block[n]][1] - widths[n])
            if grow > 0:
                widths[n] += grow
                spare -= grow
        result.append((block, widths))
    return result


def _block(
    table: Table, columns: list[int], widths: list[int], *, first: bool, last: bool
) -> Table:
    """The part of ``table`` with ``columns`` at ``widths``: the title on the first block, the
    caption on the last."""
    part = Table(
        box=table.box,
        title=table.title if first else None,
        title_justify=table.title_justify,
        caption=table.caption if last else None,
        caption_justify=table.caption_justify,
        show_edge=table.show_edge,
        pad_edge=table.pad_edge,
        show_header=table.show_header,
        padding=table.padding,
    )
    for index, width in zip(columns, widths):
        column = table.columns[index]
        part.add_column(
            column.header,
            justify=column.justify,
            style=column.style,
            header_style=column.header_style,
            width=width,
            no_wrap=False,
            overflow="fold",
        )
    cells = [list(table.columns[index].cells) for index in columns]
    for number, row in enumerate(table.rows):
        part.add_row(
            *(column[number] for column in cells), style=row.style, end_section=row.end_section
        )
    return part


# --- pieces -------------------------------------------------------------------------------------


def _mark(agree: bool) -> Text:
    return (
        Text(AGREE, style="bold green") if agree else Text(f"{DISAGREE} differs", style="bold red")
    )


def _value(value: Any) -> str:
    if value is None:
        return "not measured"
    if isinstance(value, tuple):
        return shape_text(value)
    if isinstance(value, int):
        return group(value)
    if isinstance(value, float):
        return f"{value:,.3f}"
    return str(value)


def _cell(pair: Pair[Any]) -> Text:
    """The measured value; where the formula differs, both, in red."""
    if pair.agree:
        return Text(_value(pair.measured if pair.measured is not None else pair.formula))
    return Text(f"{_value(pair.measured)} ≠ {_value(pair.formula)}", style="bold red")


def _total_field_cell(report: Report) -> Text:
    """The total's receptive field; ``≥`` before a model's field that is a lower bound (it
    reached the border of the largest input the probe tried: a note says so)."""
    cell = _cell(report.total.receptive_field)
    if report.model is not None and report.model.receptive_field_at_least:
        return Text("≥ ") + cell
    return cell


def _figure_table(layer: LayerReport, dtype: str, total: Total | None = None) -> Table:
    table = Table(
        box=box.SIMPLE_HEAVY,
        caption=CAPTION.format(dtype=dtype)
        + (MEMORY_CAPTION.format(dtype=dtype) if layer.saved_for_backward else ""),
        caption_justify="left",
        show_edge=False,
        pad_edge=False,
    )
    table.add_column("figure", style="bold", no_wrap=True)
    table.add_column("measured", justify="right", no_wrap=True)
    table.add_column("formula", justify="right", no_wrap=True)
    table.add_column("formula, instantiated", overflow="fold")
    table.add_column("", no_wrap=True)
    text = layer.formula_text

    def row(label: str, pair: Pair[Any], formula_key: str) -> None:
        table.add_row(
            label,
            _value(pair.measured),
            _value(pair.formula),
            text.get(formula_key, ""),
            _mark(pair.agree) if pair.measured is not None else Text(""),
        )

    row("output shape", layer.output_shape, "output_shape")
    row("parameters", layer.params, "params")
    row("MACs", layer.macs, "macs")
    row("FLOPs", layer.flops, "flops")
    table.add_row("bias additions", "—", group(layer.bias_adds), text.get("bias_adds", ""), "")
    if layer.backward_flops is not None:
        row("backward FLOPs", layer.backward_flops, "backward_flops")
    row("receptive field", layer.receptive_field, "receptive_field")
    measured_memory, formula_memory = layer.memory.measured, layer.memory.formula
    for key, label in (
        ("input", "memory: input"),
        ("output", "memory: output"),
        ("params", "memory: params"),
        ("forward_backward", "memory: fwd+bwd (torchsummary)"),
        ("total", "memory: total"),
    ):
        measured = getattr(measured_memory, key) if isinstance(measured_memory, Memory) else None
        formula = getattr(formula_memory, key)
        table.add_row(
            label,
            human_bytes(measured) if measured is not None else "not measured",
            human_bytes(formula),
            text.get(f"memory_{key}", ""),
            _mark(measured == formula) if measured is not None else Text(""),
        )
    _memory_rows(table, layer, total)
    if layer.latency_ms is not None:
        gflops = layer.gflops_per_s
        table.add_row(
            "latency",
            f"{layer.latency_ms:,.3f} ms",
            "—",
            f"median of {layer.timed_runs} runs{_iqr_text(layer.latency_iqr_ms)}"
            + (f"; {gflops:,.1f} GFLOP/s achieved" if gflops is not None else ""),
            "",
        )
    return table


def _bytes_cell(pair: Pair[int] | None) -> Text:
    """Bytes measured (the formula where nothing was measured); both, in red, where they
    differ."""
    if pair is None:
        return Text("—")
    if pair.agree:
        shown = pair.measured if pair.measured is not None else pair.formula
        return Text("—" if shown is None else human_bytes(shown))
    return Text(
        f"{human_bytes(pair.measured or 0)} ≠ {human_bytes(pair.formula or 0)}", style="bold red"
    )


#: a sum of more terms than this is shown by its first and last terms in a table (a deep
#: network's saved-for-backward total has one per layer; JSON keeps every term)
SUM_TERMS = 12


def shortened_sum(text: str) -> str:
    """``a + b + ... + z = total`` with more than :data:`SUM_TERMS` terms, as its first 8 and
    last 2 terms and how many are left out between them; any other text as it is."""
    head, equals, result = text.rpartition(" = ")
    # only the sum before the last "=": a text naming its terms first ("params + grads + ... =
    # 1,792 + 1,792 + ... = 7,168 B") keeps its names whole
    named, then, head = head.rpartition(" = ")
    terms = head.split(" + ")
    if not equals or len(terms) <= SUM_TERMS:
        return text
    left_out = len(terms) - 10
    return (
        named
        + then
        + " + ".join(terms[:8])
        + f" + ... ({left_out:,} more terms) ... + "
        + " + ".join(terms[-2:])
        + equals
        + result
    )


def _byte_row(table: Table, label: str, pair: Pair[int], text: str, bound: bool = False) -> None:
    text = shortened_sum(text)
    measured, formula = pair.measured, pair.formula
    mark: Text = Text("")
    if measured is not None and formula is not None:
        mark = Text(BOUND, style="dim") if bound else _mark(measured == formula)
    table.add_row(
        label,
        human_bytes(measured) if measured is not None else "not measured",
        human_bytes(formula) if formula is not None else "no formula",
        text,
        mark,
    )


def _memory_rows(table: Table, layer: LayerReport | None, total: Total | None) -> None:
    """The 'memory' section: the layer's saved for backward and inference peak, and with
    ``total`` the network's: those, one training step, torchsummary's convention and --fit."""
    text = layer.formula_text if layer is not None else {}
    if layer is not None and layer.saved_for_backward is not None:
        table.add_section()
        _byte_row(
            table,
            "saved for backward",
            layer.saved_for_backward,
            text.get("memory_saved_for_backward", ""),
        )
        if layer.peak_inference is not None:
            _byte_row(
                table,
                "peak inference (while it runs)",
                layer.peak_inference,
                text.get("memory_peak_inference", ""),
            )
    if total is None or total.training_step is None:
        return
    if layer is None:
        for key, label in (
            ("saved_for_backward", "saved for backward"),
            ("peak_inference", "peak inference"),
        ):
            pair = getattr(total, key)
            if pair is not None:
                _byte_row(table, label, pair, total.memory_text.get(key, ""))
        measured, formula = total.memory.measured, total.memory.formula
        both = measured is not None and formula is not None
        table.add_row(
            "fwd+bwd (torchsummary)",
            human_bytes(measured.forward_backward) if measured else "not measured",
            # a user's model whose parameters convcalc has no formula for: none here either
            human_bytes(formula.forward_backward) if formula else "no formula",
            "every output twice (torchinfo's 'Forward/backward pass size')",
            _mark(total.memory.agree) if both else Text(""),
        )
    table.add_section()
    step = total.training_step
    if _step_row_unmeasured(table, total):
        return
    for key in EXACT_STEP_KEYS:
        label = key.replace("_", " ")
        if key == "optimizer_state":
            label = f"optimizer state ({total.optimizer})"
        _byte_row(
            table,
            f"training step: {label}",
            _step_pair(step, key),
            total.memory_text.get(f"training_step.{key}", ""),
        )
    for key in BOUND_STEP_KEYS:
        _byte_row(
            table,
            f"training step: {key}",
            _step_pair(step, key),
            total.memory_text.get(f"training_step.{key}", ""),
            bound=True,
        )
    if total.fit is not None:
        table.add_section()
        for entry in total.fit["by_dtype"]:
            training = entry["max_batch_training"]
            table.add_row(
                f"fits {total.fit['memory_limit']}: {entry['dtype']}",
                _fit_check(entry.get("checked")),
                f"batch {group(entry['max_batch_inference'])} inference"
                + (f", {group(training)} training" if training is not None else ""),
                "largest batch whose inference (weights + peak)"
                + (" and whose training step" if training is not None else "")
                + f" fit {group(total.fit['memory_limit_bytes'])} B"
                + (
                    f"; not counted: {total.fit['not_counted']}"
                    if training is not None
                    and total.fit.get("not_counted")
                    and entry is total.fit["by_dtype"][0]
                    else ""
                ),
                "",
            )


def _step_row_unmeasured(table: Table, total: Total) -> bool:
    """A training step with neither side (a user's model without --train): one row saying why,
    instead of a row per part that all read 'not measured'."""
    step = total.training_step
    if step is None or step.measured is not None or step.formula is not None:
        return False
    why = total.memory_text.get("training_step", "")
    table.add_row("training step", "not measured", "no formula", why, Text(""))
    return True


def _step_pair(step: Pair[dict[str, int]], key: str) -> Pair[int]:
    """One part of a training step, measured beside formula (either may be missing)."""
    return Pair(
        None if step.measured is None else step.measured.get(key),
        None if step.formula is None else step.formula.get(key),  # type: ignore[arg-type]
    )


def _fit_check(checked: dict[str, Any] | None) -> str:
    """The meta device's check of a --fit answer at the batch found."""
    if not checked:
        return ""
    shown = []
    for key, label in (("inference_peak", "peak"), ("saved_for_backward", "saved")):
        entry = checked.get(key)
        if entry:
            apart = entry["measured"] - entry["formula"]
            if apart and apart == entry.get("meta_statistics_bytes"):
                shown.append(
                    f"{label} ≈ (meta +{apart:,} B: torch's meta batch norm keeps float32 "
                    "statistics, as CUDA does; the CPU and the formula, the input's dtype)"
                )
                continue
            shown.append(
                f"{label} {AGREE if not apart else DISAGREE + ' ' + human_bytes(entry['measured'])}"
            )
    return ("meta: " + ", ".join(shown)) if shown else ""


def _memory_table(report: Report) -> Table:
    """A network's memory section: measured beside formula, with the check mark."""
    dtype = report.input.dtype
    table = Table(
        box=box.SIMPLE_HEAVY,
        title="memory",
        title_justify="left",
        caption=MEMORY_CAPTION.format(dtype=dtype).strip(),
        caption_justify="left",
        show_edge=False,
        pad_edge=False,
    )
    table.add_column("figure", style="bold", no_wrap=True)
    table.add_column("measured", justify="right", no_wrap=True)
    table.add_column("formula", justify="right", no_wrap=True)
    table.add_column("formula, instantiated", overflow="fold")
    table.add_column("", no_wrap=True)
    _memory_rows(table, None, report.total)
    return table


def _summary_table(report: Report) -> Table:
    """One row per layer and a total: measured values, both figures where they differ."""
    train = any(layer.backward_flops is not None for layer in report.layers)
    timed = any(layer.latency_ms is not None for layer in report.layers)
    table = Table(
        box=box.SIMPLE_HEAVY,
        caption=CAPTION.format(dtype=report.input.dtype)
        + " Receptive field: the layer's own; cumulative RF, effective stride and padding: "
        "relative to the network input (Araujo et al., Distill 2019)."
        + (
            " Memory out: the layer's output; saved for bwd: what autograd keeps for the "
            "backward (a tensor saved twice counts once, at the first layer)."
            if report.total.saved_for_backward is not None
            else ""
        ),
        caption_justify="left",
        show_edge=False,
        pad_edge=False,
        show_footer=False,
    )
    for name, justify in (
        ("layer", "left"),
        ("output shape", "right"),
        ("params", "right"),
        ("MACs", "right"),
        ("FLOPs", "right"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    if train:
        table.add_column("backward FLOPs", justify="right", no_wrap=True)
    table.add_column("receptive field", justify="right", no_wrap=True)
    cumulative_columns = any(layer.cumulative is not None for layer in report.layers)
    if cumulative_columns:
        table.add_column("cumulative RF", justify="right", no_wrap=True)
        table.add_column("eff. stride", justify="right", no_wrap=True)
        table.add_column("eff. padding", justify="right", no_wrap=True)
    table.add_column("memory out", justify="right", no_wrap=True)
    saved_column = any(layer.saved_for_backward is not None for layer in report.layers)
    if saved_column:
        table.add_column("saved for bwd", justify="right", no_wrap=True)
    if timed:
        table.add_column("latency ms", justify="right", no_wrap=True)
        table.add_column("IQR ms", justify="right", no_wrap=True)
        table.add_column("runs", justify="right", no_wrap=True)
        table.add_column("GFLOP/s", justify="right", no_wrap=True)
    table.add_column("", no_wrap=True)
    for layer in report.layers:
        memory = layer.memory.measured or layer.memory.formula
        cells: list[Any] = [
            Text(f"{layer.name}  {layer.spec.describe()}"),
            _cell(layer.output_shape),
            _cell(layer.params),
            _cell(layer.macs),
            _cell(layer.flops),
        ]
        if train:
            cells.append(_cell(layer.backward_flops) if layer.backward_flops else Text("—"))
        cells += [
            _cell(layer.receptive_field),
            *(_cumulative_cells(layer) if cumulative_columns else []),
            Text(human_bytes(memory.output)),
        ]
        if saved_column:
            cells.append(_bytes_cell(layer.saved_for_backward))
        if timed:
            gflops = layer.gflops_per_s
            cells += [
                Text(f"{layer.latency_ms:,.3f}" if layer.latency_ms is not None else "—"),
                *_spread_cells(layer),
                Text(f"{gflops:,.1f}" if gflops is not None else "—"),
            ]
        cells.append(_mark(layer.agree) if report.measured_on != "none" else Text(""))
        table.add_row(*cells)
    total = report.total
    memory = total.memory.measured or total.memory.formula
    cells = [
        Text("total", style="bold"),
        _cell(total.output_shape),
        _cell(total.params),
        _cell(total.macs),
        _cell(total.flops),
    ]
    if train:
        cells.append(
            Text(f"train {_value(total.train_flops.measured)}") if total.train_flops else Text("")
        )
    cumulative = total.cumulative
    if cumulative_columns:
        cells += [
            Text(""),
            _total_field_cell(report),
            Text(_fractions(cumulative.effective_stride) if cumulative else ""),
            Text(_fractions(cumulative.effective_padding) if cumulative else ""),
        ]
    else:
        cells.append(_total_field_cell(report))
    cells.append(Text(f"{human_bytes(memory.total)} all"))
    if saved_column:
        cells.append(_bytes_cell(total.saved_for_backward))
    if timed:
        cells += [
            Text(f"{total.latency_ms:,.3f}" if total.latency_ms is not None else "—"),
            Text(""),
            Text(""),
            Text(""),
        ]
    cells.append(_mark(report.agree) if report.measured_on != "none" else Text(""))
    table.add_section()
    table.add_row(*cells, style="bold")
    return table


def _iqr_text(iqr_ms: float | None) -> str:
    return "" if iqr_ms is None else f", IQR {iqr_ms:,.3f} ms"


def _spread_cells(layer: LayerReport) -> list[Text]:
    """--time: the interquartile range of the timed blocks, and how many runs."""
    iqr = layer.latency_iqr_ms
    return [
        Text(f"{iqr:,.3f}" if iqr is not None else "—"),
        Text(group(layer.timed_runs) if layer.timed_runs is not None else "—"),
    ]


def _version_spread(report: Report) -> list[str]:
    """compare --time: each layer's IQR (joined by +: the spread of a sum is not their sum),
    and the fewest runs any layer was timed from."""
    iqrs = [layer.latency_iqr_ms for layer in report.layers]
    runs = [layer.timed_runs for layer in report.layers if layer.timed_runs is not None]
    return [
        "+".join(f"{iqr:,.3f}" for iqr in iqrs) if all(i is not None for i in iqrs) else "—",
        group(min(runs)) if runs else "—",
    ]


def _fractions(values: tuple[Any, ...]) -> str:
    texts = [fraction_text(v) for v in values]
    if not texts:
        return "—"
    return texts[0] if len(set(texts)) == 1 and len(texts) > 1 else "×".join(texts)


def _cumulative_cells(layer: LayerReport) -> list[Text]:
    cumulative = layer.cumulative
    if cumulative is None:
        return [Text("")] * 3
    if cumulative.whole_input:
        return [Text("whole input"), Text("—"), Text("—")]
    field = layer.cumulative_receptive_field
    return [
        _cell(field) if field is not None else Text("—"),
        Text(_fractions(cumulative.effective_stride)),
        Text(_fractions(cumulative.effective_padding)),
    ]


def _formula_lines(report: Report) -> Text:
    """The formulas of each layer, instantiated, under the summary table."""
    lines = Text()
    lines.append("formulas, instantiated:\n", style="dim")
    for layer in report.layers:
        text = layer.formula_text
        if layer.params.formula is None and not text.get("params"):
            # a module convcalc has no closed form for (a user's LSTM): said, not left blank
            lines.append(f"  {layer.name}: no closed form (measured only)\n", style="dim")
            continue
        parts = [f"params {text.get('params', '')}"]
        if layer.macs.formula:
            parts.append(f"MACs {text.get('macs', '')}")
        if layer.receptive_field.formula != tuple(1 for _ in layer.receptive_field.formula):
            parts.append(f"receptive field {text.get('receptive_field', '')}")
        lines.append(f"  {layer.name}: " + "; ".join(parts) + "\n", style="dim")
    if len(report.layers) > 1 and report.total.receptive_field.formula is not None:
        lines.append(
            f"  total receptive field: {_value(report.total.receptive_field.formula)}\n",
            style="dim",
        )
    lines.rstrip()
    return lines


def _grouped_notes(report: Report) -> list[tuple[list[str], str]]:
    """Each distinct note once, with the layers it applies to (numbers aside: a network's 50
    batch norms give one line, not 50)."""
    groups: dict[str, tuple[list[str], str]] = {}
    for layer in report.layers:
        for note in layer.notes:
            key = re.sub(r"[\d,]+", "#", note)
            names, first = groups.setdefault(key, ([], note))
            names.append(layer.name)
    return list(groups.values())


def _where_shown(name: str) -> str:
    """Where a layer's disagreeing figure is shown: the table, or (each call's output shape of
    a module called several times) the JSON."""
    if name == "call_output_shapes":
        return "each call's, both sides: call_output_shapes in JSON"
    return "both are shown"


def _larger_storage(report: Report, figure: str) -> str:
    """Where a peak's ✗ has its explanation: an op's output held in a larger storage (torch's
    CPU kernel for 3-D transposed convolutions), which the peak counts whole and the formula
    does not, is named in the peak's source."""
    if figure != "peak_inference" or LARGER_STORAGE not in report.sources.get(
        "memory_peak_inference", ""
    ):
        return ""
    return (
        " (torch's kernel returned an output in a storage larger than its elements, counted "
        "whole: see measured by, memory peak inference)"
    )


def _at_least(report: Report) -> str:
    """``"at least "`` before a model's field that is a lower bound, else nothing."""
    at_least = report.model is not None and report.model.receptive_field_at_least
    return "at least " if at_least else ""


def _notes(report: Report) -> Text:
    lines = Text()
    for names, note in _grouped_notes(report):
        if len(names) == 1:
            lines.append(f"note ({names[0]}): {note}\n", style="yellow")
        else:
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            lines.append(
                f"note ({len(names)} layers: {shown}): {note} (first of them)\n", style="yellow"
            )
    for layer in report.layers:
        for name in layer.disagreements:
            lines.append(
                f"{DISAGREE} {layer.name}: {name} measured and formula differ; "
                f"{_where_shown(name)}{_larger_storage(report, name)}\n",
                style="bold red",
            )
    seen: set[str] = set()
    for layer in report.layers:
        note = layer.cumulative.note if layer.cumulative else ""
        key = note.split("(")[0]
        if note and key not in seen and "residual add" not in note:
            seen.add(key)
            lines.append(f"note ({layer.name}): {note}\n", style="yellow")
    if report.command == "model" and report.total.receptive_field.measured is None:
        pass  # not measured: the notes say why
    elif report.command == "model":
        lines.append(
            f"note: the model's receptive field, {_at_least(report)}"
            f"{_value(report.total.receptive_field.measured)}, is measured by autograd from "
            f"{report.total.receptive_field_of}; convcalc has no "
            "formula for an arbitrary model's graph\n",
            style="yellow",
        )
    elif report.total.receptive_field_of:
        lines.append(
            f"note: the total receptive field is that of {report.total.receptive_field_of}, the "
            "last layer with a spatial output; after it every output sees the whole input\n",
            style="yellow",
        )
    if not report.total.receptive_field.agree:
        lines.append(
            f"{DISAGREE} total receptive field: measured and formula differ; both are shown\n",
            style="bold red",
        )
    for note in report.notes:
        lines.append(f"note: {note}\n", style="yellow")
    if report.timing:
        timing = report.timing
        if "skipped" in timing:
            lines.append(f"timing: {timing['skipped']}\n", style="yellow")
        else:
            lines.append(
                f"timing: {timing['tool']} on {timing['device']}"
                + (
                    f" ({timing['machine']}, torch {timing['torch']})"
                    if "machine" in timing
                    else ""
                )
                + f", {timing['threads']} threads, at least {timing['min_run_time_s']} s and "
                f"{timing.get('min_blocks', 1)} timed blocks per layer (median and IQR over the "
                f"blocks); took {timing['seconds']} s. Latencies are this machine's: an example, "
                "not a property of the layer\n",
                style="dim",
            )
            if timing.get("load_caveat"):
                lines.append(f"timing: {timing['load_caveat']}\n", style="yellow")
    lines.append("measured by:\n", style="dim")
    for key, source in report.sources.items():
        lines.append(f"  {key.replace('_', ' ')}: {source}\n", style="dim")
    lines.rstrip()
    return lines


def _title(report: Report) -> Text:
    title = Text()
    title.append(f"convcalc {report.command}", style="bold")
    if report.title:
        title.append(f"  {report.title}")
    if len(report.layers) == 1 and report.command not in ("stack", "model"):
        title.append(f"  {report.layers[0].spec.describe()}")
    title.append(_on_input(report))
    return title


def _on_input(report: Report) -> str:
    """The title's input: every input of a model's forward where it takes several, integer or
    keyword ones (JSON's ``inputs``), else the one input's shape."""
    from convcalc.core.modelinput import several_shown

    several = several_shown(report.extra.get("inputs"), report.input.dtype)
    if several is not None:
        return f"  on inputs {several} ({report.input.dtype})"
    return f"  on input {shape_text(report.input.shape)} ({report.input.dtype})"


def _verdict(agree: bool) -> Text:
    if agree:
        return Text(f"{AGREE} every measured figure agrees with its formula", style="bold green")
    return Text(f"{DISAGREE} measured and formula disagree", style="bold red")


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _vs_standard(extra: dict[str, Any]) -> Group:
    table = Table(
        box=box.SIMPLE_HEAVY,
        show_edge=False,
        pad_edge=False,
        title=f"vs the standard conv {extra['baseline']}",
        title_justify="left",
    )
    for name in ("figure", "ratio measured", "ratio by formula", "theory"):
        table.add_column(name, justify="left" if name == "figure" else "right", no_wrap=True)
    for key, label in (("params", "parameters"), ("macs", "MACs"), ("flops", "FLOPs")):
        entry = extra[key]
        table.add_row(
            label,
            _ratio(entry["measured"]),
            _ratio(entry["formula"]),
            f"{entry['theory_text']} = {entry['theory']:.4f}",
        )
    table.add_row("weights only", "", _ratio(extra["weights_ratio"]), "")
    if "latency" in extra and extra["latency"]["measured"] is not None:
        table.add_row("latency", _ratio(extra["latency"]["measured"]), "—", "")
    return Group(table, Text(f"why: {extra['why']}", style="italic"))


def _vs_undilated(extra: dict[str, Any]) -> Table:
    table = Table(
        box=box.SIMPLE_HEAVY,
        show_edge=False,
        pad_edge=False,
        title=f"vs the same kernel undilated, {extra['undilated']}",
        title_justify="left",
    )
    for name in ("figure", "dilated", "undilated"):
        table.add_column(name, justify="left" if name == "figure" else "right", no_wrap=True)
    field = extra["receptive_field"]
    table.add_row(
        "receptive field (measured)",
        shape_text(field["dilated"]["measured"] or field["dilated"]["formula"]),
        shape_text(field["undilated"]["measured"] or field["undilated"]["formula"]),
    )
    table.add_row(
        "output shape",
        shape_text(extra["output_shape"]["dilated"]),
        shape_text(extra["output_shape"]["undilated"]),
    )
    table.add_row(
        "parameters", _value(extra["params"]["dilated"]), _value(extra["params"]["undilated"])
    )
    table.add_row("MACs", _value(extra["macs"]["dilated"]), _value(extra["macs"]["undilated"]))
    return table


def _conventions(tools: dict[str, Any]) -> Group:
    table = Table(
        box=box.SIMPLE_HEAVY,
        show_edge=False,
        pad_edge=False,
        title="what other tools would print"
        + (
            ": each tool's rule on every module it counts"
            if any("not_counted_by_this_rule" in entry for entry in tools.values())
            else " (convolutions and linear layers)"
        ),
        title_justify="left",
    )
    for name in ("tool", "prints", "rule", "total"):
        table.add_column(name, justify="right" if name == "total" else "left", no_wrap=True)
    for tool, entry in tools.items():
        table.add_row(tool, entry["label"], entry["rule"], group(entry["total"]))
    # below the table, not its caption: a table folded for a narrow terminal would wrap the
    # caption to its last part's width
    return Group(table, Text(_conventions_caption(tools)))


def _conventions_caption(tools: dict[str, Any], shown: int = 5) -> str:
    """Where the rules come from, and per tool what its rule leaves out: the modules with
    counted work it does not count (the first ``shown``), and its caveat."""
    lines = ["Rules checked against each tool's source: see convcalc/core/conventions.py."]
    for tool, entry in tools.items():
        left_out = entry.get("not_counted_by_this_rule") or []
        if left_out:
            more = f" and {len(left_out) - shown:,} more" if len(left_out) > shown else ""
            lines.append(f"{tool} does not count: {', '.join(left_out[:shown])}{more}")
        if entry.get("caveat"):
            lines.append(f"{tool}: {entry['caveat']}")
    return "\n".join(lines)


def _report(report: Report, detail: bool) -> Group:
    parts: list[Any] = [_title(report), Text()]
    if len(report.layers) == 1 and report.command not in ("stack", "model"):
        parts.append(_figure_table(report.layers[0], report.input.dtype, report.total))
    else:
        parts.append(_summary_table(report))
        parts.append(_formula_lines(report))
        if report.total.saved_for_backward is not None:
            parts += [Text(), _memory_table(report)]
        if detail:
            for layer in report.layers:
                parts += [
                    Text(),
                    Text(f"{layer.name}: {layer.spec.describe()}", style="bold"),
                    _figure_table(layer, report.input.dtype),
                ]
    if report.device is not None:
        parts += [Text(), roofline_table(report)]
    parts.append(Text())
    if "vs_standard" in report.extra:
        parts += [_vs_standard(report.extra["vs_standard"]), Text()]
    if "vs_undilated" in report.extra:
        parts += [_vs_undilated(report.extra["vs_undilated"]), Text()]
    if "conventions" in report.extra:
        parts += [_conventions(report.extra["conventions"]), Text()]
    if report.measured_on == "none":
        parts += [
            Text("formulas only (--formula-only): nothing was measured", style="bold"),
            _notes(report),
        ]
    else:
        parts += [_verdict(report.agree), _notes(report)]
    return Group(*parts)


# --- roofline -----------------------------------------------------------------------------------


def device_line(peaks: Any) -> Text:
    """The peaks the roofline is drawn on, and where they come from."""
    where = peaks.device + (f" ({peaks.model})" if peaks.model else "")
    threads = f", {peaks.threads} threads" if peaks.threads else ""
    return Text(
        f"roofline on {where} {peaks.dtype}{threads}: peak {peaks.flops_per_s / 1e9:,.1f} "
        f"GFLOP/s, {peaks.bytes_per_s / 1e9:,.1f} GB/s, ridge {peaks.ridge:,.2f} FLOP/B "
        f"({'measured; ' if peaks.measured else ''}{peaks.source})"
    )


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value * 1e3:,.4f}"


def _view_caption(report: Report) -> str:
    """The caption's word on views, where a layer is one (else nothing: the captions before)."""
    if any(x.roofline is not None and x.roofline.view for x in report.layers):
        return "; a view (flatten, identity) moves nothing: 0 B, its bound 0 (JSON: memory)"
    return ""


def roofline_table(report: Report) -> Group:
    """Per layer: bytes moved, intensity, bound, the time lower bound; with --time the
    measured time, the achieved rates and the fraction of the bound; the total and the top
    layers."""
    peaks = report.device
    timed = any(x.roofline is not None and x.roofline.time_s is not None for x in report.layers)
    table = Table(
        box=box.SIMPLE_HEAVY,
        show_edge=False,
        pad_edge=False,
        caption="bytes moved: input + weights + output, each once, at the dtype's width (the "
        "minimum traffic); intensity: formula FLOPs / bytes; bound: compute at or above the "
        "ridge, memory below; bound ms: max(FLOPs / peak FLOP/s, bytes / peak B/s)"
        + ("; of bound: bound time / measured time (1 = at the roofline)" if timed else "")
        + _view_caption(report)
        + ".",
        caption_justify="left",
    )
    columns = ["layer", "bytes moved", "FLOP/B", "bound", "bound ms"]
    if timed:
        columns += ["time ms", "GFLOP/s", "GB/s", "of bound"]
    for name in columns:
        table.add_column(name, justify="left" if name == "layer" else "right", no_wrap=True)
    for layer in report.layers:
        roof = layer.roofline
        if roof is None:
            table.add_row(layer.name, "—", "—", "no formula", "—", *(["—"] * 4 if timed else []))
            continue
        style = "yellow" if roof.bound == "memory" else "cyan"
        row: list[Any] = [
            layer.name,
            human_bytes(roof.bytes_moved),
            f"{roof.intensity:,.2f}",
            Text("a view" if roof.view else roof.bound, style=style),
            _seconds(roof.time_lower_bound_s),
        ]
        if timed:
            row += [
                _seconds(roof.time_s),
                "—"
                if roof.achieved_flops_per_s is None
                else f"{roof.achieved_flops_per_s / 1e9:,.1f}",
                "—"
                if roof.achieved_bytes_per_s is None
                else f"{roof.achieved_bytes_per_s / 1e9:,.1f}",
                "—" if roof.fraction_of_bound is None else f"{roof.fraction_of_bound:.0%}",
            ]
        table.add_row(*row)
    total = report.total.roofline or {}
    row = [
        Text("total", style="bold"),
        human_bytes(total.get("bytes_moved", 0)),
        "",
        f"{total.get('layers_compute_bound', 0)} compute, "
        f"{total.get('layers_memory_bound', 0)} memory",
        _seconds(total.get("time_lower_bound_s")),
    ]
    if timed:
        achieved = total.get("achieved_flops_per_s")
        fraction = total.get("fraction_of_bound")
        row += [
            _seconds(total.get("time_s")),
            "—" if achieved is None else f"{achieved / 1e9:,.1f}",
            "",
            "—" if fraction is None else f"{fraction:.0%}",
        ]
    table.add_section()
    table.add_row(*row, style="bold")
    parts: list[Any] = [device_line(peaks), table]
    top = total.get("top_layers") or []
    if len(report.layers) > 1 and top:
        key = total.get("top_layers_by", "time_lower_bound_s")
        what = "measured time" if key == "time_s" else "bound time"
        parts.append(
            Text(
                f"top layers by {what}: "
                + ", ".join(f"{t['name']} {t['share']:.0%} ({t['bound']})" for t in top)
            )
        )
    return Group(*parts)


# --- compare ------------------------------------------------------------------------------------


def _comparison(comparison: Any, detail: bool) -> Group:
    timed = any(r.total.latency_ms is not None for _, r in comparison.versions)
    train = any(r.total.train_flops is not None for _, r in comparison.versions)
    table = Table(
        box=box.SIMPLE_HEAVY,
        show_edge=False,
        pad_edge=False,
        caption="ratio: to the standard conv, measured (theory: the documents' 1/g and "
        "1/N + 1/K², for weights and compute; bias does not shrink). "
        + CAPTION.format(dtype=comparison.input.dtype),
        caption_justify="left",
    )
    columns = ["version", "params", "ratio", "theory", "MACs", "ratio", "FLOPs"]
    if train:
        columns.append("train FLOPs")
    columns += ["receptive field", "memory", "ratio"]
    if timed:
        columns += ["latency ms", "ratio", "IQR ms (layers')", "runs", "GFLOP/s"]
    roofline = comparison.why != ""
    if roofline:
        columns += ["FLOP/B", "bound ms"]
    columns.append("")
    for name in columns:
        table.add_column(name, justify="left" if name == "version" else "right", no_wrap=True)
    for name, report in comparison.versions:
        total = report.total
        ratios = comparison.ratios[name]
        memory = total.memory.measured or total.memory.formula
        row: list[Any] = [
            Text(f"{name.replace('_', ' ')}  {report.title}"),
            _cell(total.params),
            _ratio(ratios["params"]["measured"]),
            comparison.theory_text[name] + f" = {ratios['params']['theory']:.4f}",
            _cell(total.macs),
            _ratio(ratios["macs"]["measured"]),
            _cell(total.flops),
        ]
        if train:
            row.append(_value(total.train_flops.measured) if total.train_flops else "—")
        row += [
            _cell(total.receptive_field),
            human_bytes(memory.total),
            _ratio(ratios["memory_total"]),
        ]
        if timed:
            latency = total.latency_ms
            flops = total.flops.measured
            row += [
                f"{latency:,.3f}" if latency is not None else "—",
                _ratio(ratios.get("latency")),
                *_version_spread(report),
                f"{flops / (latency * 1e-3) / 1e9:,.1f}" if latency and flops else "—",
            ]
        if roofline:
            row += _comparison_roofline(total.roofline or {})
        row.append(_mark(report.agree))
        table.add_row(*row)
    parts: list[Any] = [
        Text(
            f"convcalc compare  on input {shape_text(comparison.input.shape)} "
            f"({comparison.input.dtype})",
            style="bold",
        ),
        Text(),
        table,
        Text(),
    ]
    if roofline:
        parts += [device_line(comparison.versions[0][1].device), Text(comparison.why), Text()]
    if detail:
        for _, report in comparison.versions:
            parts += [_report(report, detail), Text()]
    parts.append(_verdict(comparison.agree))
    first = comparison.versions[0][1]
    if first.timing:
        parts.append(_notes(first))
    return Group(*parts)


def _comparison_roofline(total: dict[str, Any]) -> list[str]:
    """A version's intensity (all its FLOPs / all its bytes) and its bound time."""
    moved = total.get("bytes_moved") or 0
    intensity = total.get("intensity")
    return [
        "—" if intensity is None or not moved else f"{intensity:,.2f}",
        _seconds(total.get("time_lower_bound_s")),
    ]


@contextmanager
def progress(total: int) -> Iterator[Callable[[], None]]:
    """A progress bar with rate and time left, on stderr."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeRemainingColumn,
    )

    class Rate(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.speed
            return Text(f"{speed:,.1f} specs/s" if speed else "", style="progress.data.speed")

    with Progress(
        TextColumn("specs"),
        BarColumn(),
        MofNCompleteColumn(),
        Rate(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("batch", total=total)
        yield lambda: bar.advance(task)


# --- solve --------------------------------------------------------------------------------------


def _solution(solution: Any) -> Group:
    data = solution.to_dict()
    parts: list[Any] = []
    if data.get("inverse_of"):
        for info in data["inverse_of"]["axes"][: 1 if solution.same_axes else None]:
            others = [n for n in info["inputs_with_that_output"] if n != info["input_size"]]
            parts.append(
                Text(
                    f"the conv k{info['kernel']} s{info['stride']} p{info['padding']}"
                    f"{' d' + str(info['dilation']) if info['dilation'] != 1 else ''} maps "
                    f"{info['input_size']} to {info['output_size']}"
                    + (
                        f", and so does {', '.join(map(str, others))}: a transposed conv must pick "
                        "one with its output padding"
                        if others
                        else ""
                    )
                )
            )
    for axis in data["axes"]:
        if not axis["answers"]:
            continue  # the note below says so, with the nearest sizes
        where = "" if axis["axis"] == "all" else f" (spatial dimension {axis['axis'] + 1})"
        title = f"convcalc solve  {axis['size']} → {axis['target']}{where}"
        table = Table(
            box=box.SIMPLE_HEAVY, show_edge=False, pad_edge=False, title=title, title_justify="left"
        )
        columns = ["padding", "stride", "dilation"]
        if data["transposed"]:
            columns.append("output padding")
        columns += ["output size", "receptive field", "layer", "checked on torch"]
        for name in columns:
            table.add_column(name, justify="left" if name == "layer" else "right", no_wrap=True)
        for answer in axis["answers"]:
            row = [str(answer["padding"]), str(answer["stride"]), str(answer["dilation"])]
            if data["transposed"]:
                row.append(str(answer["output_padding"]))
            row += [str(answer["output_size"]), str(answer["receptive_field"]), answer["layer"]]
            row.append(AGREE if answer["verified"] else DISAGREE)
            table.add_row(*row)
        parts += [table, Text()]
    for note in data["notes"]:
        parts.append(Text(note, style="bold yellow"))
    return Group(*parts)


# --- pictures -----------------------------------------------------------------------------------

CELL_STYLES = {
    ".": "grey50",
    "-": "grey35",
    "#": "bold red",
    "+": "bold magenta",
    "o": "cyan",
    ">": "bold yellow",
    "x": "bold bright_red",
    "@": "bold green",
    " ": "",
}


def _cells(rows: list[str]) -> Text:
    text = Text()
    for row in rows:
        for char in row:
            text.append(char, style=CELL_STYLES.get(char, ""))
            text.append(" ")
        text.rstrip()
        text.append("\n")
    text.rstrip()
    return text


def _frame(frame: Any) -> Group:
    grid = Table.grid(padding=(0, 4))
    grid.add_column()
    grid.add_column()
    grid.add_row(Text(frame.input_label, style="bold"), Text(frame.output_label, style="bold"))
    grid.add_row(_cells(frame.input_rows), _cells(frame.output_rows))
    return Group(Text(frame.title, style="bold underline"), grid, Text())


def _legend(legend: dict[str, str]) -> Text:
    text = Text("legend: ")
    for char, meaning in legend.items():
        text.append(char, style=CELL_STYLES.get(char, ""))
        text.append(f" {meaning}   ")
    text.rstrip()
    return text


def picture_renderable(title: str, picture: Any) -> Group:
    parts: list[Any] = [Text(title, style="bold"), Text()]
    parts += [_frame(frame) for frame in picture.frames]
    parts.append(_legend(picture.legend))
    parts += [Text(f"note: {note}", style="yellow") for note in picture.notes]
    return Group(*parts)


def field_chart(rows: list[tuple[str, int, str]], width: int = 40) -> Table:
    """The cumulative receptive field, layer by layer, as bars."""
    table = Table(
        box=box.SIMPLE_HEAVY,
        show_edge=False,
        pad_edge=False,
        title="receptive field, layer by layer",
        title_justify="left",
    )
    table.add_column("layer", no_wrap=True)
    table.add_column("receptive field", justify="right", no_wrap=True)
    table.add_column("", no_wrap=True)
    top = max((value for _, value, _ in rows), default=1) or 1
    for name, value, shown in rows:
        bar = "█" * max(1, round(width * value / top))
        table.add_row(name, shown, Text(bar, style="bold blue"))
    return table


def field_renderable(
    title: str,
    rows: list[tuple[str, int, str]],
    field_rows: list[str],
    caption: str,
    notes: list[str],
) -> Group:
    parts: list[Any] = [
        Text(title, style="bold"),
        Text(),
        field_chart(rows),
        Text(),
        Text(caption, style="bold"),
        _cells(field_rows),
        Text(),
        _legend({"#": "receptive field", "+": "receptive field on padding", ".": "input"}),
    ]
    parts += [Text(f"note: {note}", style="yellow") for note in notes]
    return Group(*parts)


def show(
    renderable: Any,
    stream: IO[str],
    *,
    no_color: bool = False,
    svg: str | None = None,
    html: str | None = None,
    title: str = "convcalc",
) -> None:
    """Print to the terminal; with ``svg``/``html``, also save everything drawn (Rich's export,
    in colour whatever the terminal)."""
    make_console(stream, no_color=no_color).print(renderable)
    if svg or html:
        import io

        recorder = Console(
            file=io.StringIO(),
            record=True,
            force_terminal=True,
            width=160,
            color_system="truecolor",
        )
        recorder.print(renderable)
        if svg:
            recorder.save_svg(svg, title=title, clear=False)
        if html:
            recorder.save_html(html, clear=False)


# --- the roofline picture -----------------------------------------------------------------------

MARKS = "123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#: the mark of every layer past the 61st: they share it, and the legend says so
SHARED_MARK = "*"
#: the legend's mark of a layer not drawn (no FLOPs: intensity 0 on a log axis)
UNDRAWN_MARK = "—"
#: the character of a cell that several layers land on (the legend names them)
SHARED_CELL_MARK = "+"


def _log_axis(low: float, high: float, size: int) -> Callable[[float], int]:
    import math

    span = math.log10(high) - math.log10(low)

    def place(value: float) -> int:
        return min(
            size - 1, max(0, round((math.log10(value) - math.log10(low)) / span * (size - 1)))
        )

    return place


def _roofline_marks(
    names: list[str], points: Any, column: Callable[[float], int], row: Callable[[float], int]
) -> tuple[list[tuple[str, str, Any, str]], list[tuple[tuple[int, int], str, Any]]]:
    """The legend (mark, layer, point, how drawn) and the plot's cells (cell, character,
    point). Marks go to drawn layers only, in order (past the 61st: ``*``); a layer that is not
    drawn (no FLOPs) is listed with ``—``. A cell that several layers land on shows
    ``SHARED_CELL_MARK``, and each of those layers' legend rows says so and names the others."""
    placed: list[tuple[str, Any, tuple[int, int] | None, str]] = []
    for name, point in zip(names, points):
        measured = point.achieved_flops_per_s is not None
        value = point.achieved_flops_per_s if measured else point.attainable_flops_per_s
        if point.intensity <= 0:
            placed.append((name, point, None, "no FLOPs: intensity 0, not drawn"))
        elif not value or value <= 0:
            placed.append((name, point, None, "no FLOP/s to place: not drawn"))
        else:
            cell = (column(point.intensity), row(value))
            placed.append((name, point, cell, "measured" if measured else "on its bound"))
    together: dict[tuple[int, int], list[str]] = {}
    for name, _, where, _ in placed:
        if where is not None:
            together.setdefault(where, []).append(name)
    marks = iter(MARKS)
    legend: list[tuple[str, str, Any, str]] = []
    cells: list[tuple[tuple[int, int], str, Any]] = []
    for name, point, spot, drawn in placed:
        if spot is None:
            legend.append((UNDRAWN_MARK, name, point, drawn))
            continue
        cell = spot
        mark = next(marks, SHARED_MARK)
        if mark == SHARED_MARK:
            drawn += (
                f"; {SHARED_MARK}: every layer after layer {len(MARKS)} shares this mark "
                "(drawn layers counted)"
            )
        others = [other for other in together[cell] if other != name]
        if others:
            shown = ", ".join(others[:3]) + (
                f" and {len(others) - 3} more" if len(others) > 3 else ""
            )
            drawn += f"; drawn under mark {SHARED_CELL_MARK}: its cell also holds {shown}"
            mark_on_plot = SHARED_CELL_MARK
        else:
            mark_on_plot = mark
        cells.append((cell, mark_on_plot, point))
        legend.append((mark, name, point, drawn))
    return legend, cells


def roofline_chart(picture: Any, names: list[str], width: int = 64, height: int = 18) -> Group:
    """A log-log roofline drawn with characters: the memory roof (/), the compute roof (=),
    and each layer as a mark at its intensity and its measured FLOP/s (its bound where not
    timed); the legend below names each mark. Layers with no FLOPs sit at intensity 0, which
    a log axis cannot show: they are listed, not drawn."""
    import math

    points = [p for p in picture.points if p.intensity > 0]
    ridge = picture.ridge
    xs = [p.intensity for p in points] + [ridge]
    x_low = 10 ** math.floor(math.log10(min(xs) / 2))
    x_high = 10 ** math.ceil(math.log10(max(xs) * 2))
    ys = [picture.flops_per_s] + [p.attainable_flops_per_s for p in points]
    ys += [p.achieved_flops_per_s for p in points if p.achieved_flops_per_s]
    ys.append(x_low * picture.bytes_per_s)
    y_low = 10 ** math.floor(math.log10(max(min(ys), picture.flops_per_s * 1e-6)))
    y_high = max(picture.flops_per_s, *ys) * 2
    column = _log_axis(x_low, x_high, width)
    line = _log_axis(y_low, y_high, height)
    grid = [[" "] * width for _ in range(height)]
    styles = [[""] * width for _ in range(height)]
    for x in range(width):
        intensity = 10 ** (math.log10(x_low) + x / (width - 1) * math.log10(x_high / x_low))
        roof = min(picture.flops_per_s, intensity * picture.bytes_per_s)
        if roof < y_low:
            continue
        y = height - 1 - line(roof)
        grid[y][x] = "=" if intensity >= ridge else "/"
        styles[y][x] = "grey50"
    legend, cells = _roofline_marks(names, picture.points, column, lambda v: height - 1 - line(v))
    for (x, y), mark, point in cells:
        grid[y][x] = mark
        styles[y][x] = "bold yellow" if point.bound == "memory" else "bold cyan"
    text = Text()
    for row_index, row in enumerate(grid):
        label = ""
        if row_index == 0:
            label = f"{y_high / 1e9:,.3g} GFLOP/s"
        elif row_index == height - 1:
            label = f"{y_low / 1e9:,.3g} GFLOP/s"
        text.append(f"{label:>16} |")
        for char, style in zip(row, styles[row_index]):
            text.append(char, style=style)
        text.append("\n")
    text.append(" " * 17 + "+" + "-" * width + "\n")
    left, right = f"{x_low:g}", f"{x_high:g} FLOP/B"
    text.append(" " * 18 + left + " " * max(1, width - len(left) - len(right)) + right)
    return Group(text, Text(), _chart_caption(picture, cells), Text(), _roofline_legend(legend))


#: the chart's widest plot (characters), and its narrowest: below it the plot is not drawn
PLOT_WIDTH, PLOT_MIN = 64, 16
#: the characters left of the plot: the axis labels and the axis
PLOT_MARGIN = 18


class RooflineChart:
    """``roofline_chart`` drawn to the console's width: the plot ``PLOT_WIDTH`` characters
    wide where it fits, narrower down to ``PLOT_MIN`` (the roof lines never wrap), and below
    that a line saying it is not drawn and why; the legend folds (``FoldingLegend``)."""

    def __init__(self, picture: Any, names: list[str], height: int = 18) -> None:
        self.picture, self.names, self.height = picture, names, height

    def __rich_console__(self, console: Console, options: Any) -> Iterator[Any]:
        width = min(PLOT_WIDTH, options.max_width - PLOT_MARGIN)
        if width >= PLOT_MIN:
            yield roofline_chart(self.picture, self.names, width, self.height)
            return
        chart = roofline_chart(self.picture, self.names, PLOT_MIN, self.height)
        yield Text(
            f"(the plot is not drawn: it needs {PLOT_MARGIN + PLOT_MIN} columns, the output "
            f"has {options.max_width}; widen the terminal or COLUMNS, or use --format json)"
        )
        yield from chart.renderables[1:]


def _chart_caption(picture: Any, cells: Any) -> Text:
    return Text(
        f"roofs: / memory ({picture.bytes_per_s / 1e9:,.1f} GB/s × intensity), = compute "
        f"({picture.flops_per_s / 1e9:,.1f} GFLOP/s); they meet at the ridge, "
        f"{picture.ridge:,.2f} FLOP/B. Log-log. Yellow: memory-bound; cyan: compute-bound."
        + (
            f" {SHARED_CELL_MARK}: a cell several layers land on (the legend names them)."
            if any(mark == SHARED_CELL_MARK for _, mark, _ in cells)
            else ""
        )
    )


class FoldingLegend:
    """The roofline legend: a table (mark, layer, FLOP/B, bound, GFLOP/s, drawn) where it fits
    the console's width; where it does not, each layer folded: its mark and name on a line of
    their own, then its numbers and how it is drawn, indented, wrapped at spaces. No number is
    cut and no name shortened at any width."""

    def __init__(self, table: Table, rows: list[tuple[Text, str, str, str]]) -> None:
        self.table, self.rows = table, rows

    def __rich_console__(self, console: Console, options: Any) -> Iterator[Any]:
        natural, _ = _natural_widths(console, options, self.table)
        if natural <= options.max_width:
            yield self.table
            return
        from rich.padding import Padding

        for mark, name, numbers, drawn in self.rows:
            yield Text.assemble(mark, " ", name, overflow="fold")
            yield Padding(Text(f"{numbers}; {drawn}", overflow="fold"), (0, 0, 0, 4))


def _roofline_legend(legend: list[tuple[str, str, Any, str]]) -> FoldingLegend:
    table = Table(box=box.SIMPLE, show_edge=False, pad_edge=False)
    for column_name in ("", "layer", "FLOP/B", "bound", "GFLOP/s", "drawn"):
        table.add_column(column_name, no_wrap=True)
    rows = []
    for mark, name, point, drawn in legend:
        value = point.achieved_flops_per_s or point.attainable_flops_per_s
        table.add_row(
            Text(mark, style="bold yellow" if point.bound == "memory" else "bold cyan"),
            name,
            f"{point.intensity:,.2f}",
            point.bound,
            f"{value / 1e9:,.2f}",
            drawn,
        )
        rows.append(
            (
                Text(mark, style="bold yellow" if point.bound == "memory" else "bold cyan"),
                name,
                f"{point.intensity:,.2f} FLOP/B, {point.bound}, {value / 1e9:,.2f} GFLOP/s",
                drawn,
            )
        )
    return FoldingLegend(table, rows)


def roofline_renderable(title: str, peaks: Any, picture: Any, names: list[str]) -> Group:
    """``draw roofline``: the title, the device's peaks, the chart and its legend."""
    return Group(
        Text(title, style="bold"), device_line(peaks), Text(), RooflineChart(picture, names)
    )
