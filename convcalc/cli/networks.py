"""Whole networks: stack (files, inline layers, built-in architectures) and model (your own
nn.Module)."""

from __future__ import annotations

import sys
from enum import Enum
from typing import Annotated, Any

import typer

from convcalc import library
from convcalc.choices import Dtype, Measure
from convcalc.cli.emit import check_output, emit, read_stdin
from convcalc.cli.options import (
    INPUT,
    LAYER,
    MEASURE,
    SHAPE,
    ConvcalcCommand,
    Device,
    DtypeOpt,
    OutputOptions,
    RooflineOptions,
    Time,
    progress_line,
    with_groups,
)
from convcalc.core.spec import CLI_LABELS, Labels

app = typer.Typer(rich_markup_mode=None)


class ModelDevice(str, Enum):
    cpu = "cpu"
    meta = "meta"


LABELS = Labels(CLI_LABELS)

NetworkInput = Annotated[
    str | None,
    typer.Option(
        "--input",
        metavar="N,C,H[,W...]",
        rich_help_panel=INPUT,
        help="The network input, like 1,3,224,224 [default: the file's input; inline: --batch, "
        "--in, --size, --dims].",
        show_default=False,
    ),
]
NetworkSize = Annotated[
    str | None,
    typer.Option(
        "--size",
        metavar=SHAPE,
        rich_help_panel=INPUT,
        show_default=False,
        help="Spatial input size: overrides the file's (--size 32: a ResNet's cost on CIFAR) "
        "[default: the file's; inline: 224].",
    ),
]
NetworkBatch = Annotated[
    int | None,
    typer.Option(
        "--batch",
        rich_help_panel=INPUT,
        show_default=False,
        help="Batch size: overrides the file's [default: the file's; inline: 1].",
    ),
]
NetworkDims = Annotated[
    int | None,
    typer.Option(
        "--dims",
        rich_help_panel=INPUT,
        show_default=False,
        help="Spatial dimensions of an inline stack: 1, 2 or 3 [default: 2]; a file's must agree.",
    ),
]


@app.command(cls=ConvcalcCommand)
@with_groups("measure", "output")
def stack(
    source: Annotated[
        str | None,
        typer.Argument(
            help="A stack file (YAML, JSON or TOML), or layers inline: "
            '"conv k7 s2 p3 out64; maxpool k3 s2 p1; dw k3; pw out128"; - reads either from '
            "stdin (YAML or JSON; inline with ';' or new lines between layers).",
            show_default=False,
        ),
    ] = None,
    arch: Annotated[
        str | None,
        typer.Option(
            "--arch",
            rich_help_panel=LAYER,
            help="A built-in architecture (see --list-archs).",
            show_default=False,
        ),
    ] = None,
    list_archs: Annotated[
        bool,
        typer.Option(
            "--list-archs", rich_help_panel=LAYER, help="List the built-in architectures and exit."
        ),
    ] = False,
    export: Annotated[
        bool,
        typer.Option(
            "--export",
            rich_help_panel=LAYER,
            help="Print the stack (or --arch) as a YAML spec file and exit.",
        ),
    ] = False,
    input_shape: NetworkInput = None,
    in_channels: Annotated[
        int | None,
        typer.Option(
            "--in",
            rich_help_panel=INPUT,
            show_default=False,
            help="Input channels of an inline stack without --input [default: 3].",
        ),
    ] = None,
    size: NetworkSize = None,
    batch: NetworkBatch = None,
    dims: NetworkDims = None,
    dtype: DtypeOpt = Dtype.float32,
    *,
    measure: Measure,
    output: OutputOptions,
) -> None:
    """A stack of layers or a whole network: every layer measured and by formula, and the
    cumulative receptive field, effective stride and effective padding relative to the input.

    \b
    Examples:
      convcalc stack "conv k7 s2 p3 out64; maxpool k3 s2 p1; dw k3; pw out128"
      convcalc stack net.yaml
      convcalc stack --arch resnet18 --size 32
    """
    if list_archs:
        for name, description in library.architectures().items():
            sys.stdout.write(f"{name:14s} {description}\n")
        return
    check_output(output)
    where = {
        "arch": arch,
        "input": input_shape,
        "size": size,
        "batch": batch,
        "in_channels": in_channels,
        "dims": dims,
        "stdin": _stdin(source),
        "labels": LABELS,
    }
    if export:
        sys.stdout.write(library.export_stack(source, **where))  # type: ignore[arg-type]
        return
    report = library.stack(source, dtype=dtype, measure=measure, **where)  # type: ignore[arg-type]
    emit(report, output)


def _stdin(source: str | None) -> str | None:
    """``-``: the stack on standard input (a stack file, or inline layers)."""
    return read_stdin() if source == "-" else None


@app.command(cls=ConvcalcCommand)
@with_groups("roofline", "output")
def model(
    target: Annotated[
        str,
        typer.Argument(
            metavar="MODULE:ATTR",
            help="Your nn.Module: an instance, a class or a factory taking no arguments, as "
            "package.module:Attr or path/to/file.py:Attr.",
            show_default=False,
        ),
    ],
    input_shape: Annotated[
        list[str],
        typer.Option(
            "--input",
            metavar="[NAME=]N,C,H[,W...][:DTYPE]",
            rich_help_panel=INPUT,
            help="An input to run the model on: any shape of rank 2 or more (4,64 for an MLP, "
            "1,16,64 for a transformer on N,L,E); the receptive field is measured where a "
            "convolution or pooling ran. Repeat it for a forward of several inputs, one per "
            "argument in order; :DTYPE (int64, int32, bool, float32, float16, bfloat16; "
            "default --dtype) for token ids or a mask (integers are zeros); NAME= passes it "
            "by keyword: --input 1,128:int64 --input mask=1,128:bool.",
            show_default=True,
        ),
    ] = ["1,3,224,224"],  # noqa: B006  (typer's default, never mutated)
    kwargs: Annotated[
        str | None,
        typer.Option(
            "--kwargs",
            metavar="K=V[,K=V...]",
            rich_help_panel=INPUT,
            show_default=False,
            help="Keyword arguments of the factory or class: num_classes=10,width=2 (weights "
            "are never downloaded: weights=None / pretrained=False where it takes them).",
        ),
    ] = None,
    dtype: DtypeOpt = Dtype.float32,
    measure_on: Annotated[
        ModelDevice,
        typer.Option(
            "--measure-on",
            rich_help_panel=MEASURE,
            case_sensitive=False,
            help="cpu: run the model for real; meta: count on torch's meta device (any size, "
            "shapes only: no receptive field).",
        ),
    ] = ModelDevice.cpu,
    time: Time = False,
    device: Device = "cpu",
    *,
    roofline: RooflineOptions,
    output: OutputOptions,
) -> None:
    """Your own model: runs it once, counts every operator at torch's dispatch level (each
    counted by a named rule, or listed as not counted with its calls), attributes it to the
    module that ran it, and sets each module's figures beside its formula.

    \b
    Examples (the first a model file of your own; the others need torch alone; any
    installed package's model works the same way, like torchvision.models:resnet50):
      convcalc model mynet.py:Net --input 1,3,32,32
      convcalc model torch.nn:Conv2d --input 1,3,32,32 \\
        --kwargs in_channels=3,out_channels=16,kernel_size=3
      convcalc model torch.nn:TransformerEncoderLayer --input 1,16,64 \\
        --kwargs d_model=64,nhead=4,batch_first=True
      convcalc model mynet.py:Net --input 1,3,32,32 --time   # each module timed alone
    """
    check_output(output)
    from convcalc.core.grammar import parse_model_input

    inputs = several_inputs(input_shape)
    shape: tuple[int, ...] | None = None
    if inputs is None:
        text = input_shape[0]
        shape = parse_model_input(text, "--input")
        if min(shape) < 1:
            from convcalc.errors import SpecError

            raise SpecError("input", f"--input {text} must be positive integers (N, C, ...)")
    measure = Measure(
        time=time,
        device=device,
        roofline=roofline.roofline,
        peak_gflops=roofline.peak_gflops,
        peak_gbps=roofline.peak_gbps,
        recalibrate=roofline.recalibrate,
        progress=progress_line,
    )
    report = library.model(
        target,
        shape,
        inputs=inputs,
        dtype=dtype,
        kwargs=kwargs,
        measure_on=measure_on.value,
        measure=measure,
    )
    emit(report, output)


def several_inputs(given: list[str]) -> Any:
    """``convcalc model``'s --input values as ``library.model(inputs=...)`` takes them (each
    one argument of forward, in order; checked by core.modelinput), or None for one plain
    shape (``library.model``'s ``input``)."""
    if len(given) == 1 and not any(mark in given[0] for mark in ":="):
        return None
    from convcalc.core.modelinput import model_inputs, parse_input

    return model_inputs([parse_input(text, "--input") for text in given], "--input")
