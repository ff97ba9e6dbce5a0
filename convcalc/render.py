"""The one module that imports Rich: turns a :class:`Report` into a table or JSON on stdout.

One function, :func:`render`, picks the renderer for ``--format``; data goes to stdout only.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import IO, Any

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from .formulas import group, human_bytes, shape_text
from .memory import Memory
from .report import LayerReport, Pair, Report

FORMATS = ("table", "json")

CAPTION = (
    "MACs: fvcore's count (one multiply-add = one flop). FLOPs: torch.utils.flop_counter's "
    "count (two per multiply-add). Neither counts bias: its additions have their own line. "
    "Memory: {dtype}, as torchsummary counts it (forward/backward = every output twice)."
)
AGREE = "✓"
DISAGREE = "✗"


def make_console(file: IO[str] | None = None, *, no_color: bool = False) -> Console:
    """Colour and width follow the terminal: piped output gets no colour and no wrapping."""
    stream = file or sys.stdout
    is_terminal = stream.isatty()
    return Console(
        file=stream,
        width=None if is_terminal else 10_000,
        no_color=no_color or "NO_COLOR" in os.environ or not is_terminal,
        highlight=False,
        soft_wrap=not is_terminal,
        emoji=False,
    )


def render(
    report: Report, fmt: str, file: IO[str] | None = None, *, no_color: bool = False
) -> None:
    renderers: dict[str, Callable[[Report, IO[str], bool], None]] = {
        "table": _render_table,
        "json": _render_json,
    }
    renderers[fmt](report, file or sys.stdout, no_color)


def _render_json(report: Report, file: IO[str], no_color: bool) -> None:
    file.write(json.dumps(report.to_dict(), indent=2) + "\n")


# --- table ----------------------------------------------------------------------------------


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
    return str(value)


def _figure_table(layer: LayerReport, dtype: str) -> Table:
    table = Table(
        box=box.SIMPLE_HEAVY,
        caption=CAPTION.format(dtype=dtype),
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
            _mark(pair.agree),
        )

    row("output shape", layer.output_shape, "output_shape")
    row("parameters", layer.params, "params")
    row("MACs", layer.macs, "macs")
    row("FLOPs", layer.flops, "flops")
    table.add_row("bias additions", "—", group(layer.bias_adds), text.get("bias_adds", ""), "")
    row("receptive field", layer.receptive_field, "receptive_field")
    measured_memory, formula_memory = layer.memory.measured, layer.memory.formula
    for key, label in (
        ("input", "memory: input"),
        ("output", "memory: output"),
        ("params", "memory: params"),
        ("forward_backward", "memory: fwd+bwd"),
        ("total", "memory: total"),
    ):
        measured = getattr(measured_memory, key) if isinstance(measured_memory, Memory) else None
        formula = getattr(formula_memory, key)
        table.add_row(
            label,
            human_bytes(measured) if measured is not None else "not measured",
            human_bytes(formula),
            text.get(f"memory_{key}", ""),
            _mark(measured == formula),
        )
    return table


def _notes(report: Report) -> Text:
    lines = Text()
    for layer in report.layers:
        for note in layer.notes:
            lines.append(f"note ({layer.name}): {note}\n", style="yellow")
        for name in layer.disagreements:
            lines.append(
                f"{DISAGREE} {layer.name}: {name} measured and formula differ; both are shown\n",
                style="bold red",
            )
    for note in report.notes:
        lines.append(f"note: {note}\n", style="yellow")
    lines.append("measured by:\n", style="dim")
    for key, source in report.sources.items():
        lines.append(f"  {key.replace('_', ' ')}: {source}\n", style="dim")
    lines.rstrip()
    return lines


def _title(report: Report) -> Text:
    layers = " → ".join(layer.spec.describe() for layer in report.layers)
    title = Text()
    title.append(f"convcalc {report.command}", style="bold")
    title.append(f"  {layers}  on input {shape_text(report.input.shape)} ({report.input.dtype})")
    return title


def _render_table(report: Report, file: IO[str], no_color: bool) -> None:
    console = make_console(file, no_color=no_color)
    parts: list[Any] = [_title(report), Text()]
    for layer in report.layers:
        if len(report.layers) > 1:
            parts.append(Text(f"{layer.name}: {layer.spec.describe()}", style="bold"))
        parts.append(_figure_table(layer, report.input.dtype))
        parts.append(Text())
    verdict = (
        Text(f"{AGREE} every measured figure agrees with its formula", style="bold green")
        if report.agree
        else Text(f"{DISAGREE} measured and formula disagree", style="bold red")
    )
    parts.extend([verdict, _notes(report)])
    console.print(Group(*parts))
