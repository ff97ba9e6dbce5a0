"""One layer and the conv kinds of the source documents: conv, dw, pw, group, dilated,
transpose (tconv), gdconv, compare. Each parses its options and calls the library function of
the same name."""

from __future__ import annotations

from typing import Annotated

import typer

from convcalc import library
from convcalc.choices import Measure, PaddingMode
from convcalc.cli.emit import check_output, emit
from convcalc.cli.options import (
    INPUT,
    LAYER,
    SHAPE,
    Act,
    Bias,
    Bn,
    ConvcalcCommand,
    Dilation,
    Groups,
    In,
    InputOptions,
    KeepSizePadding,
    Kernel,
    Out,
    OutputOptions,
    OutputPadding,
    PaddingModeOpt,
    PaddingOpt,
    PresetBias,
    Slope,
    Stride,
    Transpose,
    with_groups,
)
from convcalc.core.spec import CLI_LABELS, Labels

app = typer.Typer(rich_markup_mode=None)
command = app.command
LABELS = Labels(CLI_LABELS)
GROUPS = ("input", "measure", "output")


def _input(inputs: InputOptions) -> dict[str, object]:
    return {"dims": inputs.dims, "size": inputs.size, "batch": inputs.batch, "dtype": inputs.dtype}


@command(cls=ConvcalcCommand)
@with_groups(*GROUPS)
def conv(
    in_channels: In,
    out_channels: Out,
    kernel: Kernel = "3",
    stride: Stride = "1",
    padding: PaddingOpt = "0",
    dilation: Dilation = "1",
    groups: Groups = 1,
    bias: Bias = True,
    transpose: Transpose = False,
    output_padding: OutputPadding = "0",
    padding_mode: PaddingModeOpt = PaddingMode.zeros,
    *,
    inputs: InputOptions,
    measure: Measure,
    output: OutputOptions,
) -> None:
    """Measure one conv layer with real torch and set every figure beside its formula.

    \b
    Examples:
      convcalc conv --in 3 --out 16 -k 5 --size 28
      convcalc conv --in 16 --out 8 -k 4 -s 2 -p 1 --transpose --size 32
      convcalc conv --in 64 --out 64 -k 3 -p same -d 2 -g 64 --size 56x80 --batch 8 --json
    """
    check_output(output)
    report = library.conv(
        in_channels,
        out_channels,
        kernel=kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=bias,
        transpose=transpose,
        output_padding=output_padding,
        padding_mode=padding_mode,
        measure=measure,
        labels=LABELS,
        **_input(inputs),  # type: ignore[arg-type]
    )
    emit(report, output)


@command(cls=ConvcalcCommand)
@with_groups(*GROUPS)
def dw(
    in_channels: In,
    out_channels: Out,
    kernel: Kernel = "3",
    stride: Stride = "1",
    padding: KeepSizePadding = None,
    dilation: Dilation = "1",
    multiplier: Annotated[
        int,
        typer.Option(
            "--multiplier",
            "-m",
            rich_help_panel=LAYER,
            help="Depth multiplier: filters per input channel.",
        ),
    ] = 1,
    bias: PresetBias = None,
    bn: Bn = False,
    act: Act = "none",
    slope: Slope = None,
    *,
    inputs: InputOptions,
    measure: Measure,
    output: OutputOptions,
) -> None:
    """Depthwise separable: a depthwise conv (groups = in) then a pointwise 1x1.

    With no other option, the source documents' case: 640 + 16,640 = 17,280 parameters.
    MobileNet / MobileFaceNet blocks: --bn --act relu (or relu6); with --bn the convs have no
    bias unless --bias is given.

    \b
    Examples:
      convcalc dw --in 64 --out 256
      convcalc dw --in 64 --out 256 -p 0 --bn --act relu
    """
    check_output(output)
    report = library.dw(
        in_channels,
        out_channels,
        kernel=kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        multiplier=multiplier,
        bias=bias,
        block=library.Block(bn=bn, act=act, slope=slope),
        measure=measure,
        labels=LABELS,
        **_input(inputs),  # type: ignore[arg-type]
    )
    emit(report, output)


@command(cls=ConvcalcCommand)
@with_groups(*GROUPS)
def pw(
    in_channels: In,
    out_channels: Out,
    bias: PresetBias = None,
    bn: Bn = False,
    act: Act = "none",
    slope: Slope = None,
    *,
    inputs: InputOptions,
    measure: Measure,
    output: OutputOptions,
) -> None:
    """Pointwise: a 1x1 convolution that mixes channels only.

    Example: convcalc pw --in 64 --out 256
    """
    check_output(output)
    report = library.pw(
        in_channels,
        out_channels,
        bias=bias,
        block=library.Block(bn=bn, act=act, slope=slope),
        measure=measure,
        labels=LABELS,
        **_input(inputs),  # type: ignore[arg-type]
    )
    emit(report, output)


@command(cls=ConvcalcCommand)
@with_groups(*GROUPS)
def group(
    in_channels: In,
    out_channels: Out,
    groups: Annotated[
        int,
        typer.Option(
            "-g", "--groups", rich_help_panel=LAYER, help="Groups (the documents' case: 8)."
        ),
    ] = 8,
    kernel: Kernel = "3",
    stride: Stride = "1",
    padding: PaddingOpt = "1",
    dilation: Dilation = "1",
    bias: Bias = True,
    *,
    inputs: InputOptions,
    measure: Measure,
    output: OutputOptions,
) -> None:
    """Grouped convolution, with its ratio to the standard conv: measured and by theory (1/g).

    Example: convcalc group --in 64 --out 256 -g 8
    """
    check_output(output)
    report = library.group(
        in_channels,
        out_channels,
        groups=groups,
        kernel=kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        bias=bias,
        measure=measure,
        labels=LABELS,
        **_input(inputs),  # type: ignore[arg-type]
    )
    emit(report, output)


@command(cls=ConvcalcCommand)
@with_groups(*GROUPS)
def dilated(
    in_channels: In,
    out_channels: Out,
    dilation: Annotated[
        str,
        typer.Option(
            "-d", "--dilation", metavar=SHAPE, rich_help_panel=LAYER, help="Dilation: 2, or 2x1."
        ),
    ] = "2",
    kernel: Kernel = "3",
    stride: Stride = "1",
    padding: KeepSizePadding = None,
    bias: Bias = True,
    *,
    inputs: InputOptions,
    measure: Measure,
    output: OutputOptions,
) -> None:
    """Dilated (atrous) convolution, and how its receptive field grows against the same kernel
    undilated. Padding keeps the feature map size by default.

    Example: convcalc dilated --in 64 --out 64 -d 2
    """
    check_output(output)
    report = library.dilated(
        in_channels,
        out_channels,
        dilation=dilation,
        kernel=kernel,
        stride=stride,
        padding=padding,
        bias=bias,
        measure=measure,
        labels=LABELS,
        **_input(inputs),  # type: ignore[arg-type]
    )
    emit(report, output)


def transpose(
    in_channels: In,
    out_channels: Out,
    kernel: Kernel = "4",
    stride: Stride = "2",
    padding: PaddingOpt = "1",
    output_padding: OutputPadding = "0",
    dilation: Dilation = "1",
    groups: Groups = 1,
    bias: Bias = True,
    *,
    inputs: InputOptions,
    measure: Measure,
    output: OutputOptions,
) -> None:
    """Transposed convolution; by default kernel 4, stride 2, padding 1: a 2x upsampling.

    Example: convcalc transpose --in 64 --out 32 --size 56
    """
    check_output(output)
    report = library.transpose(
        in_channels,
        out_channels,
        kernel=kernel,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        groups=groups,
        bias=bias,
        measure=measure,
        labels=LABELS,
        **_input(inputs),  # type: ignore[arg-type]
    )
    emit(report, output)


transpose = with_groups(*GROUPS)(transpose)
command("transpose", cls=ConvcalcCommand)(transpose)
command("tconv", cls=ConvcalcCommand, help="Alias of transpose.")(transpose)


@command(cls=ConvcalcCommand)
@with_groups(*GROUPS)
def gdconv(
    in_channels: In,
    bias: PresetBias = None,
    bn: Bn = False,
    size: Annotated[
        str,
        typer.Option(
            "--size",
            metavar=SHAPE,
            rich_help_panel=INPUT,
            help="Spatial input size, which is also the kernel: 7, or 7x5.",
        ),
    ] = "7",
    *,
    inputs: InputOptions,
    measure: Measure,
    output: OutputOptions,
) -> None:
    """Global depthwise convolution (GDConv, MobileFaceNet): kernel = input size, groups =
    channels; one value per channel out. With --bn the conv has no bias unless --bias is given.

    Example: convcalc gdconv --in 512 --size 7 --bn
    """
    check_output(output)
    report = library.gdconv(
        in_channels,
        size=size,
        bias=bias,
        bn=bn,
        dims=inputs.dims,
        batch=inputs.batch,
        dtype=inputs.dtype,
        measure=measure,
        labels=LABELS,
    )
    emit(report, output)


@command(cls=ConvcalcCommand)
@with_groups(*GROUPS)
def compare(
    in_channels: In,
    out_channels: Out,
    kernel: Kernel = "3",
    groups: Annotated[
        int,
        typer.Option(
            "-g", "--groups", rich_help_panel=LAYER, help="Groups of the grouped version."
        ),
    ] = 8,
    bias: Bias = True,
    *,
    inputs: InputOptions,
    measure: Measure,
    output: OutputOptions,
) -> None:
    """Standard, grouped and depthwise-separable versions of the same layer side by side, each
    with its ratio to the standard conv: measured, and by the documents' theory
    (1/g; 1/N + 1/K²).

    Example: convcalc compare --in 64 --out 256 -g 8 --time
    """
    check_output(output)
    comparison = library.compare(
        in_channels,
        out_channels,
        kernel=kernel,
        groups=groups,
        bias=bias,
        measure=measure,
        labels=LABELS,
        **_input(inputs),  # type: ignore[arg-type]
    )
    emit(comparison, output)
