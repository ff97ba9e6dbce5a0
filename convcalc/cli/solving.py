"""``convcalc solve``: from the sizes a user needs to the padding (stride, dilation, output
padding) that gives them, each answer checked on the real layer."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import typer

from convcalc import library
from convcalc.cli.emit import check_output, emit
from convcalc.cli.exits import ExitStatus
from convcalc.cli.options import (
    INPUT,
    LAYER,
    SHAPE,
    ConvcalcCommand,
    Dims,
    Kernel,
    OutputOptions,
    Transpose,
    with_groups,
)

app = typer.Typer(rich_markup_mode=None)

#: the section of the options that say what is solved for and how many answers
SEARCH = "Search options"


@app.command(cls=ConvcalcCommand)
@with_groups("plain_output")
def solve(
    size: Annotated[
        str,
        typer.Option(
            "--size", metavar=SHAPE, rich_help_panel=INPUT, help="Input size: 224, or 224x112."
        ),
    ] = "224",
    target: Annotated[
        str,
        typer.Option(
            "--target",
            metavar=SHAPE,
            rich_help_panel=SEARCH,
            show_default=False,
            help="The output size wanted: 112, or 112x56. Not needed with --inverse-of.",
        ),
    ] = "",
    kernel: Kernel = "3",
    stride: Annotated[
        str | None,
        typer.Option(
            "-s",
            "--stride",
            metavar=SHAPE,
            rich_help_panel=LAYER,
            show_default=False,
            help="Stride [default: 1, or searched with --vary stride].",
        ),
    ] = None,
    padding: Annotated[
        str | None,
        typer.Option(
            "-p",
            "--padding",
            metavar=SHAPE,
            rich_help_panel=LAYER,
            show_default=False,
            help="Padding [default: searched].",
        ),
    ] = None,
    dilation: Annotated[
        str | None,
        typer.Option(
            "-d",
            "--dilation",
            metavar=SHAPE,
            rich_help_panel=LAYER,
            show_default=False,
            help="Dilation [default: 1, or searched with --vary dilation].",
        ),
    ] = None,
    output_padding: Annotated[
        str | None,
        typer.Option(
            "--output-padding",
            metavar=SHAPE,
            rich_help_panel=LAYER,
            show_default=False,
            help="Output padding of --transpose [default: searched].",
        ),
    ] = None,
    vary: Annotated[
        str,
        typer.Option(
            "--vary",
            metavar="WHAT[,WHAT]",
            rich_help_panel=SEARCH,
            help="What to search besides padding: stride, dilation (comma list).",
        ),
    ] = "padding",
    transpose: Transpose = False,
    inverse_of: Annotated[
        str | None,
        typer.Option(
            "--inverse-of",
            metavar="'k3 s2 p1'",
            rich_help_panel=SEARCH,
            show_default=False,
            help="Find the transposed conv that maps this conv's output back to --size.",
        ),
    ] = None,
    dims: Dims = 2,
    limit: Annotated[
        int, typer.Option("--limit", rich_help_panel=SEARCH, help="Answers to list, at most.")
    ] = 10,
    *,
    output: OutputOptions,
) -> None:
    """Solve for the padding (and, with --vary, the stride or dilation; with --transpose the
    output padding) that takes --size to --target. Smallest first, each with the layer it gives
    and its receptive field, each checked on the real layer. Exit 1 when none reaches the
    target (the nearest sizes reachable are listed).

    \b
    Examples:
      convcalc solve --size 224 --target 112 -k 3 -s 2
      convcalc solve --size 224 --target 224 -k 3 -d 2
      convcalc solve --size 112 --target 224 -k 4 -s 2 --transpose
      convcalc solve --size 224 --inverse-of "k3 s2 p1"
    """
    check_output(output)
    solution = library.solve(
        size=size,
        target=target,
        kernel=kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        output_padding=output_padding,
        vary=vary,
        transpose=transpose,
        inverse_of=inverse_of,
        dims=dims,
        limit=limit,
    )
    emit(solution, replace(output, strict=True))  # an answer torch does not confirm: exit 1
    if not solution.solved:
        raise typer.Exit(int(ExitStatus.CHECK_FAILED))
