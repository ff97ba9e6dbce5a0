"""``convcalc draw``: pictures of a layer's taps, dilation's holes, the stride, a transposed
conv's spread, and a stack's receptive field; ``--format json`` gives the same as data."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from convcalc import library
from convcalc.choices import Format, Measure
from convcalc.cli.emit import emit
from convcalc.cli.options import (
    INPUT,
    LAYER,
    OUTPUT,
    SHAPE,
    ConvcalcCommand,
    Device,
    Dilation,
    Dims,
    Groups,
    Kernel,
    NoColor,
    OutputOptions,
    OutputPadding,
    PaddingOpt,
    RooflineOptions,
    Stride,
    Time,
    Transpose,
    progress_line,
    with_groups,
)
from convcalc.core.spec import CLI_LABELS, Labels

LABELS = Labels(CLI_LABELS)

app = typer.Typer(
    name="draw",
    help="Pictures: the kernel's taps on the padded input, dilation's holes, the stride, the "
    "output grid, a transposed conv's spread, and a stack's receptive field.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

#: the section of the options that choose what a picture shows
PICTURE = "Picture options"

At = Annotated[
    str | None,
    typer.Option(
        "--at",
        metavar="Y,X",
        rich_help_panel=PICTURE,
        show_default=False,
        help="The output position drawn (for --transpose: the input position) "
        "[default: the first].",
    ),
]
OutputAt = Annotated[
    str | None,
    typer.Option(
        "--at",
        metavar="Y,X",
        rich_help_panel=PICTURE,
        show_default=False,
        help="The output position drawn [default: the first].",
    ),
]
InputAt = Annotated[
    str | None,
    typer.Option(
        "--at",
        metavar="Y,X",
        rich_help_panel=PICTURE,
        show_default=False,
        help="The input position drawn [default: the first].",
    ),
]
Steps = Annotated[
    int,
    typer.Option(
        "--steps",
        rich_help_panel=PICTURE,
        help="Draw this many positions, one frame each, in order.",
    ),
]
Svg = Annotated[
    str | None,
    typer.Option(
        "--svg",
        metavar="FILE",
        rich_help_panel=OUTPUT,
        show_default=False,
        help="Also save the picture (every frame) as SVG.",
    ),
]
Html = Annotated[
    str | None,
    typer.Option(
        "--html",
        metavar="FILE",
        rich_help_panel=OUTPUT,
        show_default=False,
        help="Also save the picture (every frame) as HTML.",
    ),
]
DrawIn = Annotated[
    int, typer.Option("--in", rich_help_panel=LAYER, help="Input channels (not drawn).")
]
DrawOut = Annotated[
    int, typer.Option("--out", rich_help_panel=LAYER, help="Output channels (not drawn).")
]
DrawSize = Annotated[
    str,
    typer.Option(
        "--size",
        metavar=SHAPE,
        rich_help_panel=INPUT,
        help="Input size; drawn smaller (and said so) when above 16.",
    ),
]


def _check_writable(svg: str | None, html: str | None) -> None:
    """--svg and --html must be writable before anything is drawn (stdout stays clean)."""
    from convcalc.errors import SpecError

    for option, target in (("--svg", svg), ("--html", html)):
        if target is None:
            continue
        parent = Path(target).expanduser().resolve().parent
        if not parent.is_dir():
            raise SpecError(option, f"{option} {target}: no such directory {parent}")
        path = Path(target).expanduser()
        if not os.access(parent, os.W_OK) or path.is_dir():
            raise SpecError(option, f"{option} {target}: cannot write there")
        existed = os.path.lexists(path)  # a dangling link too: it is kept, not replaced
        try:  # opened for appending, so nothing it holds is lost; a new file is removed again
            with path.open("a"):
                pass
        except OSError as error:  # a file system that refuses files (/proc), a read-only one
            reason = error.strerror or type(error).__name__
            raise SpecError(option, f"{option} {target}: cannot write there ({reason})") from None
        if not existed:
            path.unlink(missing_ok=True)


class DrawFormat(str, Enum):
    table = "table"
    json = "json"


DrawFormatOpt = Annotated[
    DrawFormat,
    typer.Option(
        "--format",
        "-f",
        rich_help_panel=OUTPUT,
        case_sensitive=False,
        help="table: the picture; json: the same grids as data (one string per row).",
    ),
]
DrawJson = Annotated[
    bool, typer.Option("--json", rich_help_panel=OUTPUT, help="Short for --format json.")
]


def _output(fmt: DrawFormat, as_json: bool, no_color: bool) -> OutputOptions:
    return OutputOptions(fmt=Format.json if as_json else Format(fmt.value), no_color=no_color)


def _position(at: str | None, dims: int) -> list[int] | None:
    from convcalc.errors import SpecError

    if at is None:
        return None
    parts = [p for p in at.replace("x", ",").split(",") if p.strip()]
    if len(parts) != dims or not all(p.strip().isdigit() for p in parts):
        raise SpecError("at", f"--at {at!r} must be {dims} indices, like {','.join(['0'] * dims)}")
    return [int(p) for p in parts]


def _draw_conv(
    title: str,
    build: Callable[[], Any],
    dims: int,
    size: str,
    at: str | None,
    steps: int,
    svg: str | None,
    html: str | None,
    output: OutputOptions,
    note: str = "",
) -> None:
    _check_writable(svg, html)
    spec = build()
    picture = library.draw_conv(
        spec, size=size, at=_position(at, dims), steps=steps, note=note, labels=LABELS
    )
    picture.title = spec.describe()
    picture.command = f"draw {title.split()[0]}"
    if output.fmt == Format.json:
        emit(picture, output)
        return
    from convcalc.output.render import picture_renderable, show

    show(
        picture_renderable(f"convcalc draw  {title}  {spec.describe()}", picture),
        sys.stdout,
        no_color=output.no_color,
        svg=svg,
        html=html,
        title=title,
    )


@app.command(cls=ConvcalcCommand, name="conv")
def draw_conv(
    in_channels: DrawIn = 1,
    out_channels: DrawOut = 1,
    kernel: Kernel = "3",
    stride: Stride = "1",
    padding: PaddingOpt = "0",
    dilation: Dilation = "1",
    groups: Groups = 1,
    transpose: Transpose = False,
    output_padding: OutputPadding = "0",
    dims: Dims = 2,
    size: DrawSize = "7",
    at: At = None,
    steps: Steps = 1,
    svg: Svg = None,
    html: Html = None,
    no_color: NoColor = False,
    fmt: DrawFormatOpt = DrawFormat.table,
    as_json: DrawJson = False,
) -> None:
    """Draw one conv layer: the padded input with the taps of one output, the holes of its
    dilation, where the next windows start, the rows the stride drops, and the output grid.

    \b
    Example:
      convcalc draw conv -k 3 -d 2 -s 2 -p 1 --size 7 --steps 3
    """
    from convcalc.kinds import build_conv

    _draw_conv(
        "conv",
        lambda: build_conv(
            dims=dims,
            in_channels=in_channels,
            out_channels=out_channels,
            kernel=kernel,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            transpose=transpose,
            output_padding=output_padding,
        ),
        dims,
        size,
        at,
        steps,
        svg,
        html,
        _output(fmt, as_json, no_color),
    )


@app.command(cls=ConvcalcCommand, name="dw")
def draw_dw(
    in_channels: DrawIn = 4,
    out_channels: DrawOut = 8,
    kernel: Kernel = "3",
    stride: Stride = "1",
    padding: PaddingOpt = "1",
    dilation: Dilation = "1",
    dims: Dims = 2,
    size: DrawSize = "7",
    at: OutputAt = None,
    steps: Steps = 1,
    svg: Svg = None,
    html: Html = None,
    no_color: NoColor = False,
    fmt: DrawFormatOpt = DrawFormat.table,
    as_json: DrawJson = False,
) -> None:
    """Draw a depthwise-separable pair: the depthwise conv's taps (each channel alone); the
    pointwise 1x1 that follows reads one position of every channel."""
    from convcalc.kinds import build_conv

    _draw_conv(
        "dw (depthwise)",
        lambda: build_conv(
            dims=dims,
            in_channels=in_channels,
            out_channels=in_channels,
            kernel=kernel,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=in_channels,
        ),
        dims,
        size,
        at,
        steps,
        svg,
        html,
        _output(fmt, as_json, no_color),
        note=f"then a pointwise 1x1 conv {in_channels} → {out_channels}: each output reads "
        "one position, across all channels",
    )


@app.command(cls=ConvcalcCommand, name="dilated")
def draw_dilated(
    in_channels: DrawIn = 1,
    out_channels: DrawOut = 1,
    kernel: Kernel = "3",
    dilation: Annotated[
        str,
        typer.Option("-d", "--dilation", metavar=SHAPE, rich_help_panel=LAYER, help="Dilation."),
    ] = "2",
    stride: Stride = "1",
    padding: Annotated[
        str | None,
        typer.Option(
            "-p",
            "--padding",
            rich_help_panel=LAYER,
            metavar="N[xN...]|same|valid",
            show_default=False,
            help="Padding: 1, 1x2, 'same' or 'valid' [default: keeps the size: d(k-1)/2 each "
            "side (floored), or 'same' at stride 1 when that is not whole].",
        ),
    ] = None,
    dims: Dims = 2,
    size: DrawSize = "7",
    at: OutputAt = None,
    steps: Steps = 1,
    svg: Svg = None,
    html: Html = None,
    no_color: NoColor = False,
    fmt: DrawFormatOpt = DrawFormat.table,
    as_json: DrawJson = False,
) -> None:
    """Draw a dilated conv: its taps and the holes between them."""
    from convcalc.core.spec import Labels, parse_ints
    from convcalc.kinds import build_conv
    from convcalc.sources.presets import dilated_padding

    def build() -> Any:
        labels = Labels()
        chosen = padding or dilated_padding(
            parse_ints(kernel, dims, "kernel_size", labels),
            parse_ints(dilation, dims, "dilation", labels),
            parse_ints(stride, dims, "stride", labels),
        )
        return build_conv(
            dims=dims,
            in_channels=in_channels,
            out_channels=out_channels,
            kernel=kernel,
            stride=stride,
            padding=chosen,
            dilation=dilation,
        )

    _draw_conv("dilated", build, dims, size, at, steps, svg, html, _output(fmt, as_json, no_color))


def draw_transpose(
    in_channels: DrawIn = 1,
    out_channels: DrawOut = 1,
    kernel: Kernel = "4",
    stride: Stride = "2",
    padding: PaddingOpt = "1",
    output_padding: OutputPadding = "0",
    dilation: Dilation = "1",
    dims: Dims = 2,
    size: DrawSize = "4",
    at: InputAt = None,
    steps: Steps = 1,
    svg: Svg = None,
    html: Html = None,
    no_color: NoColor = False,
    fmt: DrawFormatOpt = DrawFormat.table,
    as_json: DrawJson = False,
) -> None:
    """Draw a transposed conv: how one input cell spreads over the output, and which of those
    outputs the padding crops.

    \b
    Example:
      convcalc draw transpose -k 3 -s 2 -p 1 --size 4 --steps 2
    """
    from convcalc.kinds import build_conv

    _draw_conv(
        "transpose",
        lambda: build_conv(
            dims=dims,
            in_channels=in_channels,
            out_channels=out_channels,
            kernel=kernel,
            stride=stride,
            padding=padding,
            dilation=dilation,
            transpose=True,
            output_padding=output_padding,
        ),
        dims,
        size,
        at,
        steps,
        svg,
        html,
        _output(fmt, as_json, no_color),
    )


app.command("transpose", cls=ConvcalcCommand)(draw_transpose)
app.command("tconv", cls=ConvcalcCommand, help="Alias of draw transpose.")(draw_transpose)


@app.command(cls=ConvcalcCommand, name="stack")
def draw_stack(
    source: Annotated[
        str | None, typer.Argument(show_default=False, help="A stack file, - or layers inline.")
    ] = None,
    arch: Annotated[
        str | None,
        typer.Option(
            "--arch", show_default=False, rich_help_panel=LAYER, help="A built-in architecture."
        ),
    ] = None,
    input_shape: Annotated[
        str | None,
        typer.Option(
            "--input",
            metavar="N,C,H[,W...]",
            rich_help_panel=INPUT,
            show_default=False,
            help="The network input [default: the file's; inline: 1,3,224,224].",
        ),
    ] = None,
    svg: Svg = None,
    html: Html = None,
    no_color: NoColor = False,
    fmt: DrawFormatOpt = DrawFormat.table,
    as_json: DrawJson = False,
) -> None:
    """Draw a stack's receptive field: its growth layer by layer as bars, and the field of the
    central output of its last spatial layer on the input.

    \b
    Example:
      convcalc draw stack --arch resnet18
    """
    from convcalc.cli.networks import _stdin

    output = _output(fmt, as_json, no_color)
    _check_writable(svg, html)
    if (
        source is not None
        and arch is None
        and input_shape is None
        and not library._is_file(source)
        and source != "-"
    ):
        input_shape = "1,3,224,224"  # an inline stack's default input
    field = library.draw_stack(
        source, arch=arch, input=input_shape, stdin=_stdin(source), labels=LABELS
    )
    if output.fmt == Format.json:
        emit(field, output)
        return
    from convcalc.output.render import field_renderable, show

    show(
        field_renderable(
            f"convcalc draw stack  {field.label}",
            field.rows,
            field.field_rows,
            field.caption,
            field.notes,
        ),
        sys.stdout,
        no_color=output.no_color,
        svg=svg,
        html=html,
        title=field.label,
    )


@app.command(cls=ConvcalcCommand, name="roofline")
@with_groups("roofline_peaks")
def draw_roofline(
    source: Annotated[
        str | None, typer.Argument(show_default=False, help="A stack file, - or layers inline.")
    ] = None,
    arch: Annotated[
        str | None,
        typer.Option(
            "--arch", show_default=False, rich_help_panel=LAYER, help="A built-in architecture."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            metavar="MODULE:ATTR",
            rich_help_panel=LAYER,
            show_default=False,
            help="Your nn.Module instead of a stack (as convcalc model takes it).",
        ),
    ] = None,
    input_shape: Annotated[
        str | None,
        typer.Option(
            "--input",
            metavar="N,C,H[,W...]",
            rich_help_panel=INPUT,
            show_default=False,
            help="The input [default: the file's; inline and --model: 1,3,224,224].",
        ),
    ] = None,
    time: Time = False,
    device: Device = "cpu",
    svg: Svg = None,
    html: Html = None,
    no_color: NoColor = False,
    fmt: DrawFormatOpt = DrawFormat.table,
    as_json: DrawJson = False,
    *,
    roofline: RooflineOptions,
) -> None:
    """Draw the roofline: log-log, FLOP/s against arithmetic intensity, the memory and compute
    roofs of the device's peaks, and each layer as a point (measured with --time, else at its
    bound).

    \b
    Examples:
      convcalc draw roofline --arch mobilenet_v2 --peak-gflops 100 --peak-gbps 20
      convcalc draw roofline "conv k3 out64; dw k3; pw out128" --time --svg roofline.svg
    """
    from convcalc.cli.networks import _stdin

    output = _output(fmt, as_json, no_color)
    _check_writable(svg, html)
    measure = Measure(
        time=time,
        device=device,
        roofline=True,
        peak_gflops=roofline.peak_gflops,
        peak_gbps=roofline.peak_gbps,
        recalibrate=roofline.recalibrate,
        progress=progress_line,
    )
    if model is not None:
        from convcalc.core.grammar import parse_input
        from convcalc.errors import SpecError

        if source is not None or arch is not None:
            raise SpecError("model", "give either --model or a stack (or --arch), not both")
        shape = parse_input(input_shape or "1,3,224,224", "--input")
        report = library.model(model, shape, measure=measure)
    else:
        if (
            source is not None
            and arch is None
            and input_shape is None
            and not library._is_file(source)
            and source != "-"
        ):
            input_shape = "1,3,224,224"  # an inline stack's default input
        report = library.stack(
            source,
            arch=arch,
            input=input_shape,
            measure=measure,
            stdin=_stdin(source),
            labels=LABELS,
        )
    drawing = library.draw_roofline(report)
    if output.fmt == Format.json:
        emit(drawing, output)
        return
    from convcalc.output.render import roofline_renderable, show

    show(
        roofline_renderable(
            f"convcalc draw roofline  {report.title or model or ''}",
            report.device,
            drawing.picture,
            list(drawing.names),
        ),
        sys.stdout,
        no_color=output.no_color,
        svg=svg,
        html=html,
        title="roofline",
    )
