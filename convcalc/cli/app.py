"""The Typer app: parse options into specs, call the library, render, map errors to exit codes.

Start-up matters (convcalc runs in shell loops): this module imports neither torch nor Rich at
module level; ``--help`` and ``--version`` never load them.
"""

import functools
import inspect
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from convcalc._version import __version__
from convcalc.cli.exits import ExitStatus
from convcalc.errors import ConvcalcError


def fail(message: str, status: ExitStatus = ExitStatus.INVALID_INPUT) -> NoReturn:
    """One line on stderr, nothing on stdout, and the exit status."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    raise typer.Exit(int(status))


class ConvcalcGroup(TyperGroup):
    """Usage errors as one line on stderr (exit 2), Ctrl-C as 130, a closed pipe quietly."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            result = super().main(
                args=args,
                prog_name=prog_name or "convcalc",
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
        except typer.TyperException as error:  # click's usage errors derive from it
            if type(error).__name__ == "NoArgsIsHelpError":  # bare `convcalc`: show the help
                sys.stdout.write(error.format_message())
                sys.exit(int(ExitStatus.OK))
            sys.stderr.write(f"error: {error.format_message()}\n")
            sys.exit(int(ExitStatus.INVALID_INPUT))
        except (typer.Abort, KeyboardInterrupt):
            sys.stderr.write("interrupted\n")
            sys.exit(int(ExitStatus.INTERRUPTED))
        except BrokenPipeError:
            sys.stderr.close()  # the reader went away (`| head`): nothing more to say
            sys.exit(int(ExitStatus.OK))
        except Exception as error:  # a bug: one line, never a traceback (unless asked for)
            if os.environ.get("CONVCALC_DEBUG"):
                raise
            sys.stderr.write(
                f"error: convcalc failed unexpectedly ({type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''}); please report it, "
                "with CONVCALC_DEBUG=1 for the traceback\n"
            )
            sys.exit(int(ExitStatus.INTERNAL_ERROR))
        sys.exit(result if isinstance(result, int) else int(ExitStatus.OK))


app = typer.Typer(
    cls=ConvcalcGroup,
    name="convcalc",
    help=(
        "Convolution cost calculator: builds the real PyTorch layer, measures it, and sets "
        "every figure beside its formula.\n\n\b\nExit statuses:\n"
        "  0    all good\n"
        "  1    an --expect failed, or --strict found a disagreement\n"
        "  2    invalid input (one line on stderr)\n"
        "  3    convcalc itself failed (a bug)\n"
        "  130  interrupted"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # plain help, formatted by click: Typer's Rich help loads rich.markdown and friends, which
    # more than doubles the time `convcalc --help` takes (docs/benchmarks.md)
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"convcalc {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Convolution cost calculator: every figure measured from the real PyTorch layer and set
    beside its closed-form formula.

    Exit statuses: 0 all good; 1 a check failed; 2 invalid input; 130 interrupted.
    """


@contextmanager
def user_errors() -> Iterator[None]:
    """Library errors become one line on stderr and exit status 2; no traceback."""
    try:
        yield
    except ConvcalcError as error:
        fail(str(error))


# --- shared options ----------------------------------------------------------------------------

FORMATS = ("table", "json", "jsonl", "csv", "markdown")  # convcalc.formats.FORMATS
SHAPE = "N[xN...]"
LAYER = "Layer"
INPUT = "Input and output"
MEASURE = "Measurement"

In = Annotated[
    int, typer.Option("--in", help="Input channels.", show_default=False, rich_help_panel=LAYER)
]
Out = Annotated[
    int,
    typer.Option("--out", help="Output channels.", show_default=False, rich_help_panel=LAYER),
]
Kernel = Annotated[
    str,
    typer.Option(
        "-k",
        "--kernel",
        metavar=SHAPE,
        rich_help_panel=LAYER,
        help="Kernel size: 3, or one per dimension (3x5).",
    ),
]
Stride = Annotated[
    str,
    typer.Option("-s", "--stride", metavar=SHAPE, rich_help_panel=LAYER, help="Stride: 2, or 2x1."),
]
PaddingOpt = Annotated[
    str,
    typer.Option(
        "-p",
        "--padding",
        metavar="N[xN...]|same|valid",
        rich_help_panel=LAYER,
        help="Padding: 1, 1x2, 'same' or 'valid'.",
    ),
]
Dilation = Annotated[
    str,
    typer.Option(
        "-d", "--dilation", metavar=SHAPE, rich_help_panel=LAYER, help="Dilation: 2, or 2x1."
    ),
]
Groups = Annotated[
    int,
    typer.Option(
        "-g", "--groups", rich_help_panel=LAYER, help="Groups (--groups = --in: depthwise)."
    ),
]
Bias = Annotated[
    bool,
    typer.Option("--bias/--no-bias", rich_help_panel=LAYER, help="Learnable bias, as in torch."),
]
Transpose = Annotated[
    bool,
    typer.Option(
        "--transpose", rich_help_panel=LAYER, help="A transposed convolution (nn.ConvTransposeNd)."
    ),
]
OutputPadding = Annotated[
    str,
    typer.Option(
        "--output-padding",
        metavar=SHAPE,
        rich_help_panel=LAYER,
        help="Extra output size of a transposed conv: 1, 1x0.",
    ),
]
PaddingMode = Annotated[
    str,
    typer.Option(
        "--padding-mode", rich_help_panel=LAYER, help="zeros, reflect, replicate or circular."
    ),
]
Bn = Annotated[bool, typer.Option("--bn", rich_help_panel=LAYER, help="BatchNorm after each conv.")]
Act = Annotated[
    str,
    typer.Option(
        "--act",
        rich_help_panel=LAYER,
        help="Activation after each conv: relu, relu6, leakyrelu, ..., or none.",
    ),
]
Slope = Annotated[
    float,
    typer.Option(
        "--slope",
        rich_help_panel=LAYER,
        help="Negative slope of --act leakyrelu (torch's default 0.01).",
    ),
]
Dims = Annotated[
    int, typer.Option("--dims", rich_help_panel=INPUT, help="Spatial dimensions: 1, 2 or 3.")
]
Size = Annotated[
    str,
    typer.Option(
        "--size", metavar=SHAPE, rich_help_panel=INPUT, help="Spatial input size: 224, or 56x80."
    ),
]
Batch = Annotated[int, typer.Option("--batch", rich_help_panel=INPUT, help="Batch size.")]
Dtype = Annotated[
    str,
    typer.Option(
        "--dtype", rich_help_panel=INPUT, help="float32, float16 or bfloat16 (memory figures)."
    ),
]
Format = Annotated[
    str,
    typer.Option(
        "--format", "-f", rich_help_panel=INPUT, help="Output: table, json, jsonl, csv or markdown."
    ),
]
Get = Annotated[
    str | None,
    typer.Option(
        "--get",
        metavar="PATH",
        rich_help_panel=INPUT,
        show_default=False,
        help="Print only the value at PATH of the JSON, like total.params.",
    ),
]
Expect = Annotated[
    list[str] | None,
    typer.Option(
        "--expect",
        metavar="PATH[OP]VALUE",
        rich_help_panel=MEASURE,
        show_default=False,
        help="Fail (exit 1) unless it holds: total.params=17280, 'total.macs<=1e9', "
        "total.output_shape=1x256x224x224, agree=true. Repeatable.",
    ),
]
Conventions = Annotated[
    bool,
    typer.Option(
        "--conventions",
        rich_help_panel=INPUT,
        help="Also the figure fvcore, torchinfo, ptflops, thop, torch and "
        "calflops/DeepSpeed would print, each with its rule.",
    ),
]
Strict = Annotated[
    bool,
    typer.Option(
        "--strict",
        rich_help_panel=MEASURE,
        help="Exit 1 when a measured figure and its formula disagree.",
    ),
]
Json = Annotated[
    bool, typer.Option("--json", rich_help_panel=INPUT, help="Short for --format json.")
]
Detail = Annotated[
    bool,
    typer.Option(
        "--detail",
        rich_help_panel=INPUT,
        help="Every figure of every layer, each beside its formula.",
    ),
]
NoColor = Annotated[
    bool, typer.Option("--no-color", rich_help_panel=INPUT, help="No colour (also: NO_COLOR).")
]
MeasureOn = Annotated[
    str,
    typer.Option(
        "--measure-on",
        rich_help_panel=MEASURE,
        help="auto: a real CPU run when it fits here, else torch's meta device; or cpu, meta.",
    ),
]
FormulaOnly = Annotated[
    bool,
    typer.Option(
        "--formula-only",
        rich_help_panel=MEASURE,
        help="Every figure by formula alone, without loading torch: instant, for "
        "loops that need no measurement.",
    ),
]
Train = Annotated[
    bool,
    typer.Option(
        "--train",
        rich_help_panel=MEASURE,
        help="Also the backward pass: input and weight gradient FLOPs.",
    ),
]
Time = Annotated[
    bool,
    typer.Option(
        "--time",
        rich_help_panel=MEASURE,
        help="Also the measured forward latency (torch.utils.benchmark).",
    ),
]
Device = Annotated[
    str,
    typer.Option(
        "--device",
        rich_help_panel=MEASURE,
        help="Device for --time: cpu, or cuda where one exists.",
    ),
]


@dataclass(frozen=True)
class Common:
    """The options every command shares."""

    dims: int
    size: str
    batch: int
    dtype: str
    fmt: str
    measure_on: str
    train: bool
    time: bool
    device: str
    detail: bool
    no_color: bool
    get: str | None = None
    expect: tuple[str, ...] = ()
    strict: bool = False
    conventions: bool = False
    formula_only: bool = False

    def options(self) -> Any:
        from convcalc.engine import Options

        if self.formula_only and self.time:
            fail("--time measures the real layer: it does not go with --formula-only")
        return Options(
            measure_on=self.measure_on,
            train=self.train,
            time=self.time,
            device=self.device,
            formula_only=self.formula_only,
        )

    def input(self, channels: int) -> Any:
        from convcalc.core.spec import build_input

        return build_input(
            dims=self.dims, channels=channels, size=self.size, batch=self.batch, dtype=self.dtype
        )


#: the options every command takes, appended to each command's signature by @shared_options
COMMON_PARAMS: list[tuple[str, Any, Any]] = [
    ("dims", Dims, 2),
    ("size", Size, "224"),
    ("batch", Batch, 1),
    ("dtype", Dtype, "float32"),
    ("fmt", Format, "table"),
    ("as_json", Json, False),
    ("detail", Detail, False),
    ("no_color", NoColor, False),
    ("get", Get, None),
    ("expect", Expect, None),
    ("strict", Strict, False),
    ("conventions", Conventions, False),
    ("measure_on", MeasureOn, "auto"),
    ("formula_only", FormulaOnly, False),
    ("train", Train, False),
    ("time", Time, False),
    ("device", Device, "cpu"),
]
SHARED: Any = None  # placeholder default of a command's ``common`` parameter


def shared_options(func: Callable[..., None]) -> Callable[..., None]:
    """Give a command the shared options (one definition, as sqlite-utils' output_options does
    for click) and hand them to it as one ``common: Common``. A command that declares one of
    them itself (gdconv's --size, whose help differs) keeps its own, and still gets it in
    ``common``."""
    signature = inspect.signature(func, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "common"]
    own_names = {p.name for p in own}
    added = [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
        )
        for name, annotation, default in COMMON_PARAMS
        if name not in own_names
    ]

    @functools.wraps(func)
    def command(**kwargs: Any) -> None:
        shared = {
            name: kwargs[name] if name in own_names else kwargs.pop(name)
            for name, _, _ in COMMON_PARAMS
        }
        fmt = shared.pop("fmt")
        chosen = "json" if shared.pop("as_json") else fmt.lower()
        if chosen not in FORMATS:
            fail(f"--format {fmt!r} must be one of {', '.join(FORMATS)}")
        shared["expect"] = tuple(shared["expect"] or ())
        if shared["get"] is not None and not shared["get"].strip():
            fail("--get needs a path, like total.params")
        if shared["formula_only"] and shared["measure_on"] != "auto":
            fail(
                f"--measure-on {shared['measure_on']} measures: it does not go with --formula-only"
            )
        with user_errors():
            from convcalc.core.query import parse_expectation

            for text in shared["expect"]:
                parse_expectation(text)  # a malformed expectation fails before any work
        func(common=Common(fmt=chosen, **shared), **kwargs)

    parameters = [*own, *added]
    command.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    return command


def _emit(report: Any, common: Common) -> None:
    """Write the report; then --expect and --strict decide the exit status. A bad --get or
    --expect path is invalid input: it fails before anything is written."""
    from convcalc.core.query import check_all, format_value, get_path, parse_expectation
    from convcalc.output.formats import write

    if common.conventions:
        report = _with_conventions(report)
    data = report.to_dict() if (common.get or common.expect) else None
    with user_errors():
        failures = check_all(data, [parse_expectation(text) for text in common.expect])
        value = get_path(data, common.get) if common.get else None
    if common.get:
        sys.stdout.write(format_value(value) + "\n")
    else:
        write(report, common.fmt, no_color=common.no_color, detail=common.detail)
    sys.stdout.flush()
    if common.fmt != "json" or common.get:  # JSON carries them in its "warnings" list
        for line in _warnings(report):
            sys.stderr.write(f"warning: {line}\n")
    if common.strict and not report.agree:
        failures.append(
            "measured and formula disagree (--strict): " + ", ".join(_disagreements(report))
        )
    if failures:
        for line in failures:
            sys.stderr.write(f"{line}\n")
        raise typer.Exit(int(ExitStatus.CHECK_FAILED))


def _with_conventions(report: Any) -> Any:
    from dataclasses import replace

    from convcalc.core.conventions import conventions

    if hasattr(report, "versions"):
        return replace(
            report,
            versions=tuple((name, _with_conventions(version)) for name, version in report.versions),
        )
    return replace(report, extra={**report.extra, "conventions": conventions(report.to_dict())})


def _warnings(report: Any) -> list[str]:
    reports = [r for _, r in report.versions] if hasattr(report, "versions") else [report]
    return list(dict.fromkeys(w for r in reports for w in r.warnings))


def _disagreements(report: Any) -> list[str]:
    reports = [r for _, r in report.versions] if hasattr(report, "versions") else [report]
    found = [
        f"{layer.name}: {name}"
        for r in reports
        for layer in r.layers
        for name in layer.disagreements
    ]
    return found or ["total receptive field"]


@app.command()
@shared_options
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
    padding_mode: PaddingMode = "zeros",
    common: Common = SHARED,
) -> None:
    """Measure one conv layer with real torch and set every figure beside its formula.

    \b
    Examples:
      convcalc conv --in 3 --out 16 -k 5 --size 28
      convcalc conv --in 16 --out 8 -k 4 -s 2 -p 1 --transpose --size 32
      convcalc conv --in 64 --out 64 -k 3 -p same -d 2 -g 64 --size 56x80 --batch 8 --json
    """
    with user_errors():
        from convcalc.engine import analyze
        from convcalc.kinds import build_conv

        spec = build_conv(
            dims=common.dims,
            in_channels=in_channels,
            out_channels=out_channels,
            kernel=kernel,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            transpose=transpose,
            output_padding=output_padding,
            padding_mode=padding_mode,
        )
        report = analyze(spec, common.input(in_channels), options=common.options())
    _emit(report, common)


def _block(bn: bool, act: str, slope: float) -> Any:
    from convcalc.sources.presets import Block, check_act

    check_act(act.lower())
    return Block(bn=bn, act=act.lower(), negative_slope=slope)


def _chain(
    command: str, title: str, build: Callable[[], list[Any]], channels: int, common: Common
) -> None:
    with user_errors():
        from convcalc.engine import analyze_chain

        input_spec = common.input(channels)  # the input's errors first: gdconv's kernel is it
        report = analyze_chain(
            build(), input_spec, command=command, title=title, options=common.options()
        )
    _emit(report, common)


@app.command()
@shared_options
def dw(
    in_channels: In,
    out_channels: Out,
    kernel: Kernel = "3",
    stride: Stride = "1",
    padding: PaddingOpt = "1",
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
    bias: Bias = True,
    bn: Bn = False,
    act: Act = "none",
    slope: Slope = 0.01,
    common: Common = SHARED,
) -> None:
    """Depthwise separable: a depthwise conv (groups = in) then a pointwise 1x1.

    With no other option, the source documents' case: 640 + 16,640 = 17,280 parameters.
    MobileNet / MobileFaceNet blocks: --no-bias --bn --act relu (or relu6).

    \b
    Examples:
      convcalc dw --in 64 --out 256
      convcalc dw --in 64 --out 256 -p 0 --no-bias --bn --act relu
    """

    def build() -> list[Any]:
        from convcalc.sources.presets import depthwise_separable

        return depthwise_separable(
            dims=common.dims,
            in_channels=in_channels,
            out_channels=out_channels,
            kernel=kernel,
            stride=stride,
            padding=padding,
            dilation=dilation,
            multiplier=multiplier,
            bias=bias,
            block=_block(bn, act, slope),
        )

    _chain("dw", "depthwise separable: depthwise then pointwise", build, in_channels, common)


@app.command()
@shared_options
def pw(
    in_channels: In,
    out_channels: Out,
    bias: Bias = True,
    bn: Bn = False,
    act: Act = "none",
    slope: Slope = 0.01,
    common: Common = SHARED,
) -> None:
    """Pointwise: a 1x1 convolution that mixes channels only.

    Example: convcalc pw --in 64 --out 256
    """

    def build() -> list[Any]:
        from convcalc.kinds import build_conv
        from convcalc.sources.presets import single

        conv = build_conv(
            dims=common.dims,
            in_channels=in_channels,
            out_channels=out_channels,
            kernel="1",
            bias=bias,
            name="pointwise",
        )
        return single(conv, _block(bn, act, slope))

    _chain("pw", "pointwise 1x1 convolution", build, in_channels, common)


@app.command()
@shared_options
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
    common: Common = SHARED,
) -> None:
    """Grouped convolution, with its ratio to the standard conv: measured and by theory (1/g).

    Example: convcalc group --in 64 --out 256 -g 8
    """
    with user_errors():
        from convcalc.engine import analyze_grouped
        from convcalc.kinds import build_conv

        conv_spec = build_conv(
            dims=common.dims,
            in_channels=in_channels,
            out_channels=out_channels,
            kernel=kernel,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            name="grouped",
        )
        report = analyze_grouped([conv_spec], common.input(in_channels), options=common.options())
    _emit(report, common)


@app.command()
@shared_options
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
    padding: Annotated[
        str | None,
        typer.Option(
            "-p",
            "--padding",
            metavar="N[xN...]|same|valid",
            rich_help_panel=LAYER,
            help="Padding [default: keeps the size when it can: d(k-1)/2].",
            show_default=False,
        ),
    ] = None,
    bias: Bias = True,
    common: Common = SHARED,
) -> None:
    """Dilated (atrous) convolution, and how its receptive field grows against the same kernel
    undilated. Padding keeps the feature map size by default.

    Example: convcalc dilated --in 64 --out 64 -d 2
    """
    with user_errors():
        from convcalc.core.spec import Labels, parse_ints
        from convcalc.engine import analyze_dilated
        from convcalc.kinds import build_conv
        from convcalc.sources.presets import dilated_padding

        labels = Labels()
        if padding is None:
            padding = dilated_padding(
                parse_ints(kernel, common.dims, "kernel_size", labels),
                parse_ints(dilation, common.dims, "dilation", labels),
                parse_ints(stride, common.dims, "stride", labels),
            )
        conv_spec = build_conv(
            dims=common.dims,
            in_channels=in_channels,
            out_channels=out_channels,
            kernel=kernel,
            stride=stride,
            padding=padding,
            dilation=dilation,
            bias=bias,
            name="dilated",
        )
        report = analyze_dilated([conv_spec], common.input(in_channels), options=common.options())
    _emit(report, common)


@shared_options
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
    common: Common = SHARED,
) -> None:
    """Transposed convolution; by default kernel 4, stride 2, padding 1: a 2x upsampling.

    Example: convcalc transpose --in 64 --out 32 --size 56
    """

    def build() -> list[Any]:
        from convcalc.kinds import build_conv

        return [
            build_conv(
                dims=common.dims,
                in_channels=in_channels,
                out_channels=out_channels,
                kernel=kernel,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=groups,
                bias=bias,
                transpose=True,
                output_padding=output_padding,
                name="transposed",
            )
        ]

    _chain("transpose", "transposed convolution", build, in_channels, common)


app.command("transpose")(transpose)
app.command("tconv", help="Alias of transpose.")(transpose)


@app.command()
@shared_options
def gdconv(
    in_channels: In,
    bias: Bias = True,
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
    common: Common = SHARED,
) -> None:
    """Global depthwise convolution (GDConv, MobileFaceNet): kernel = input size, groups =
    channels; one value per channel out.

    Example: convcalc gdconv --in 512 --size 7 --no-bias --bn
    """

    def build() -> list[Any]:
        from convcalc.core.spec import Labels, parse_ints
        from convcalc.sources.presets import Block, global_depthwise

        sizes = parse_ints(size, common.dims, "size", Labels())
        return global_depthwise(
            dims=common.dims, channels=in_channels, size=sizes, bias=bias, block=Block(bn=bn)
        )

    _chain("gdconv", "global depthwise convolution", build, in_channels, common)


@app.command()
@shared_options
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
    common: Common = SHARED,
) -> None:
    """Standard, grouped and depthwise-separable versions of the same layer side by side, each
    with its ratio to the standard conv: measured, and by the documents' theory
    (1/g; 1/N + 1/K²).

    Example: convcalc compare --in 64 --out 256 -g 8 --time
    """
    with user_errors():
        from convcalc.engine import compare as run_compare

        comparison = run_compare(
            dims=common.dims,
            in_channels=in_channels,
            out_channels=out_channels,
            kernel=kernel,
            groups=groups,
            bias=bias,
            input_spec=common.input(in_channels),
            options=common.options(),
        )
    _emit(comparison, common)


@app.command()
@shared_options
def stack(
    source: Annotated[
        str | None,
        typer.Argument(
            help="A stack file (YAML, JSON or TOML; - for stdin), or layers inline: "
            '"conv k7 s2 p3 out64; maxpool k3 s2 p1; dw k3; pw out128".',
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
    input_shape: Annotated[
        str | None,
        typer.Option(
            "--input",
            metavar="N,C,H[,W...]",
            rich_help_panel=INPUT,
            help="The network input, like 1,3,224,224 [default: the file's input; "
            "inline: --batch, --in, --size, --dims].",
            show_default=False,
        ),
    ] = None,
    in_channels: Annotated[
        int,
        typer.Option(
            "--in", rich_help_panel=INPUT, help="Input channels of an inline stack without --input."
        ),
    ] = 3,
    common: Common = SHARED,
) -> None:
    """A stack of layers or a whole network: every layer measured and by formula, and the
    cumulative receptive field, effective stride and effective padding relative to the input.

    \b
    Examples:
      convcalc stack "conv k7 s2 p3 out64; maxpool k3 s2 p1; dw k3; pw out128"
      convcalc stack net.yaml
      convcalc stack --arch resnet18
    """
    if list_archs:
        from convcalc.sources.archs import DESCRIPTIONS

        for name, description in DESCRIPTIONS.items():
            sys.stdout.write(f"{name:14s} {description}\n")
        return
    with user_errors():
        from convcalc.core.grammar import parse_inline, parse_input
        from convcalc.engine import analyze_network
        from convcalc.sources.stack import build_network

        data, label = _stack_source(source, arch)
        shape = parse_input(input_shape, "--input") if input_shape else None
        if data is None:  # inline
            data = {"layers": parse_inline(source or "")}
            if shape is None:
                size = common.input(in_channels)
                shape = size.shape
        if export:
            _export(data, shape)
            return
        network = build_network(data, shape, common.dtype, label)
        report = analyze_network(network, command="stack", title=label, options=common.options())
    _emit(report, common)


def _stack_source(source: str | None, arch: str | None) -> tuple[dict[str, Any] | None, str]:
    """The stack's data and a label for it; None for an inline stack."""
    from convcalc.errors import SpecError
    from convcalc.sources.stack import load_text

    if arch is not None:
        from convcalc.sources.archs import ARCHITECTURES

        if source is not None:
            raise SpecError("arch", "give either --arch or a stack, not both")
        if arch.lower() not in ARCHITECTURES:
            raise SpecError("arch", f"--arch {arch!r} must be one of {', '.join(ARCHITECTURES)}")
        return ARCHITECTURES[arch.lower()](), arch.lower()
    if source is None:
        raise SpecError("source", "give a stack file, - for stdin, layers inline, or --arch")
    if source == "-":
        return load_text(sys.stdin.read(), "<stdin>"), "<stdin>"
    if not source.strip():
        raise SpecError("source", "the stack is empty: give a file, - for stdin, or layers")
    path = Path(source)
    if path.suffix.lower() in (".yaml", ".yml", ".json", ".toml") or path.exists():
        return load_text(read_text(path, source), source), path.name
    return None, "inline"


def read_text(path: Path, source: str) -> str:
    """A file's text; unreadable or not UTF-8 is invalid input, not a crash."""
    from convcalc.errors import SpecError

    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise SpecError("source", f"{source}: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise SpecError("source", f"{source}: {error.strerror or error}") from None


def _export(data: dict[str, Any], shape: tuple[int, ...] | None) -> None:
    from convcalc.sources.stack import export_yaml

    sys.stdout.write(export_yaml(data, shape))


@app.command()
@shared_options
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
        str,
        typer.Option(
            "--input",
            metavar="N,C,H[,W...]",
            rich_help_panel=INPUT,
            help="The input to run the model on.",
            show_default=True,
        ),
    ] = "1,3,224,224",
    common: Common = SHARED,
) -> None:
    """Your own model: runs it for real with hooks on every conv, pool, linear and batch-norm
    layer and prints the same per-layer figures and the totals; the receptive field of its
    output by autograd.

    Example: convcalc model torchvision.models:resnet18 --input 1,3,224,224
    """
    for flag, value in (
        ("--train", common.train),
        ("--time", common.time),
        ("--formula-only", common.formula_only),
    ):
        if value:
            fail(f"{flag} is not available for model yet (use stack or conv)")
    if common.measure_on not in ("auto", "cpu"):
        fail("--measure-on meta is not available for model: it runs the model for real")
    with user_errors():
        from convcalc.core.grammar import parse_input
        from convcalc.engine import analyze_model

        shape = parse_input(input_shape, "--input")
        report = analyze_model(target, shape, dtype=common.dtype)
    _emit(report, common)


@app.command()
def batch(
    source: Annotated[
        str,
        typer.Argument(
            metavar="FILE|-",
            help="Specs, one layer each: JSONL objects or CSV rows with a header. Keys: those "
            "of a stack layer (op, out, kernel, stride, padding, ...) and in, size, dims, batch "
            "or input.",
            show_default=False,
        ),
    ],
    fmt: Annotated[str, typer.Option("--format", "-f", help="Results: jsonl or csv.")] = "jsonl",
    fail_fast: Annotated[
        bool, typer.Option("--fail-fast", help="Stop at the first spec that fails.")
    ] = False,
    dtype: Dtype = "float32",
    measure_on: Annotated[
        str,
        typer.Option(
            "--measure-on",
            rich_help_panel=MEASURE,
            help="meta: every layer on torch's meta device (shapes, parameters and torch's FLOP "
            "count from torch, fvcore's rules on the shapes it dispatched; no arithmetic run), "
            "fast enough for big sweeps; auto or cpu: run each layer for real as conv does.",
        ),
    ] = "meta",
    train: Train = False,
    time: Time = False,
    device: Device = "cpu",
) -> None:
    """Sweep many specs in one process: one result per spec, in input order, each written and
    flushed as soon as it is done. A bad spec gives an error record (its line and message) and
    the others go on; the exit status is then 2.

    Example: convcalc batch sweep.jsonl > results.jsonl
    """
    chosen = fmt.lower()
    if chosen not in ("jsonl", "csv"):
        fail(f"--format {fmt!r} must be jsonl or csv for batch")
    with user_errors():
        from convcalc.engine import Options
        from convcalc.sources.batch import read_specs, run

        text = sys.stdin.read() if source == "-" else read_text(Path(source), source)
        specs = read_specs(text, source)
        options = Options(measure_on=measure_on, train=train, time=time, device=device)
    from convcalc.output.formats import CSV_COLUMNS, csv_text, flat_rows

    columns = ("line", "error", *CSV_COLUMNS)
    if chosen == "csv":
        sys.stdout.write(csv_text([], header=True, columns=columns))
    failed = 0
    with _progress(len(specs)) as advance:
        for spec, report, problem in run(specs, dtype, options):
            if problem is not None:
                failed += 1
                record: dict[str, Any] = {"line": spec.line, "error": problem, "spec": spec.data}
                if chosen == "jsonl":
                    sys.stdout.write(json.dumps(record) + "\n")
                else:
                    sys.stdout.write(csv_text([record], header=False, columns=columns))
            elif chosen == "jsonl":
                sys.stdout.write(json.dumps({"line": spec.line, **report.to_dict()}) + "\n")
            else:
                total = flat_rows(report.to_dict())[-1]
                sys.stdout.write(
                    csv_text([{"line": spec.line, **total}], header=False, columns=columns)
                )
            sys.stdout.flush()
            advance()
            if problem is not None and fail_fast:
                break
    if failed:
        sys.stderr.write(f"{failed} of {len(specs)} specs failed; see their error records\n")
        raise typer.Exit(int(ExitStatus.INVALID_INPUT))


@contextmanager
def _progress(total: int) -> Iterator[Callable[[], None]]:
    """A Rich progress bar on stderr, only on a terminal; elsewhere nothing."""
    if not sys.stderr.isatty() or total < 2:
        yield lambda: None
        return
    from convcalc.output.render import progress

    with progress(total) as advance:
        yield advance


@app.command()
def solve(
    size: Annotated[
        str, typer.Option("--size", metavar=SHAPE, help="Input size: 224, or 224x112.")
    ] = "224",
    target: Annotated[
        str,
        typer.Option(
            "--target",
            metavar=SHAPE,
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
            show_default=False,
            help="Dilation [default: 1, or searched with --vary dilation].",
        ),
    ] = None,
    output_padding: Annotated[
        str | None,
        typer.Option(
            "--output-padding",
            metavar=SHAPE,
            show_default=False,
            help="Output padding of --transpose [default: searched].",
        ),
    ] = None,
    vary: Annotated[
        str,
        typer.Option(
            "--vary",
            metavar="WHAT[,WHAT]",
            help="What to search besides padding: stride, dilation (comma list).",
        ),
    ] = "padding",
    transpose: Transpose = False,
    inverse_of: Annotated[
        str | None,
        typer.Option(
            "--inverse-of",
            metavar="'k3 s2 p1'",
            show_default=False,
            help="Find the transposed conv that maps this conv's output back to --size.",
        ),
    ] = None,
    dims: Dims = 2,
    limit: Annotated[int, typer.Option("--limit", help="Answers to list, at most.")] = 10,
    fmt: Format = "table",
    as_json: Json = False,
    no_color: NoColor = False,
    get: Get = None,
    expect: Expect = None,
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
    chosen = "json" if as_json else fmt.lower()
    if chosen not in FORMATS:
        fail(f"--format {fmt!r} must be one of {', '.join(FORMATS)}")
    with user_errors():
        from convcalc.core.solve import run_solve

        solution = run_solve(
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
        from convcalc.measure.verify import verify_answers

        for axis, (question, answers) in enumerate(zip(solution.questions, solution.answers)):
            checks = verify_answers(
                solution.transposed, solution.dims, axis, question.size, answers
            )
            solution.answers[axis] = [
                replace(answer, verified=ok) for answer, ok in zip(answers, checks)
            ]
            if not all(checks):
                raise ConvcalcError(
                    "torch gave another size than the formula for "
                    + ", ".join(
                        a.layer(solution.transposed, solution.dims)
                        for a, ok in zip(answers, checks)
                        if not ok
                    )
                )
    common = Common(
        dims,
        "",
        1,
        "float32",
        chosen,
        "auto",
        False,
        False,
        "cpu",
        False,
        no_color,
        get,
        tuple(expect or ()),
    )
    _emit(solution, common)
    if not solution.solved:
        raise typer.Exit(int(ExitStatus.CHECK_FAILED))


# --- convcalc draw --------------------------------------------------------------------------------

draw_app = typer.Typer(
    name="draw",
    help="Pictures: the kernel's taps on the padded input, dilation's holes, the stride, the "
    "output grid, a transposed conv's spread, and a stack's receptive field.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(draw_app, name="draw")

At = Annotated[
    str | None,
    typer.Option(
        "--at",
        metavar="Y,X",
        show_default=False,
        help="The output position drawn (for --transpose: the input position) "
        "[default: the first].",
    ),
]
Steps = Annotated[
    int, typer.Option("--steps", help="Draw this many positions, one frame each, in order.")
]
Svg = Annotated[
    str | None,
    typer.Option(
        "--svg",
        metavar="FILE",
        show_default=False,
        help="Also save the picture (every frame) as SVG.",
    ),
]
Html = Annotated[
    str | None,
    typer.Option(
        "--html",
        metavar="FILE",
        show_default=False,
        help="Also save the picture (every frame) as HTML.",
    ),
]
DrawIn = Annotated[int, typer.Option("--in", help="Input channels (not drawn).")]
DrawOut = Annotated[int, typer.Option("--out", help="Output channels (not drawn).")]
DrawSize = Annotated[
    str,
    typer.Option(
        "--size", metavar=SHAPE, help="Input size; drawn smaller (and said so) when above 16."
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
        if not os.access(parent, os.W_OK) or Path(target).is_dir():
            raise SpecError(option, f"{option} {target}: cannot write there")


def _draw_conv(
    title: str,
    build: Callable[[], Any],
    dims: int,
    size: str,
    at: str | None,
    steps: int,
    svg: str | None,
    html: str | None,
    no_color: bool,
    note: str = "",
) -> None:
    with user_errors():
        from convcalc.core.picture import conv_picture
        from convcalc.core.spec import build_input
        from convcalc.errors import SpecError
        from convcalc.kinds import check_fits

        _check_writable(svg, html)
        spec = build()
        input_spec = build_input(dims=dims, channels=spec.in_channels, size=size)
        check_fits(spec, input_spec)
        if steps < 1:
            raise SpecError("steps", f"--steps {steps} must be a positive integer")
        position = None
        if at is not None:
            parts = [p for p in at.replace("x", ",").split(",") if p.strip()]
            if len(parts) != dims or not all(p.strip().isdigit() for p in parts):
                raise SpecError(
                    "at", f"--at {at!r} must be {dims} indices, like {','.join(['0'] * dims)}"
                )
            position = [int(p) for p in parts]
        picture = conv_picture(spec, input_spec.size, steps=steps, at=position)
        if position is not None and (
            not picture.frames or picture.frames[0].position != tuple(position)
        ):
            raise SpecError("at", f"--at {at}: no such position in this layer")
        if note:
            picture.notes.insert(0, note)
    from convcalc.output.render import picture_renderable, show

    show(
        picture_renderable(f"convcalc draw  {title}  {spec.describe()}", picture),
        sys.stdout,
        no_color=no_color,
        svg=svg,
        html=html,
        title=title,
    )


@draw_app.command("conv")
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
        no_color,
    )


@draw_app.command("dw")
def draw_dw(
    in_channels: DrawIn = 4,
    out_channels: DrawOut = 8,
    kernel: Kernel = "3",
    stride: Stride = "1",
    padding: PaddingOpt = "1",
    dilation: Dilation = "1",
    dims: Dims = 2,
    size: DrawSize = "7",
    at: At = None,
    steps: Steps = 1,
    svg: Svg = None,
    html: Html = None,
    no_color: NoColor = False,
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
        no_color,
        note=f"then a pointwise 1x1 conv {in_channels} → {out_channels}: each output reads "
        "one position, across all channels",
    )


@draw_app.command("dilated")
def draw_dilated(
    kernel: Kernel = "3",
    dilation: Annotated[
        str, typer.Option("-d", "--dilation", metavar=SHAPE, help="Dilation.")
    ] = "2",
    stride: Stride = "1",
    padding: Annotated[
        str | None,
        typer.Option("-p", "--padding", show_default=False, help="[default: keeps the size]"),
    ] = None,
    dims: Dims = 2,
    size: DrawSize = "7",
    at: At = None,
    steps: Steps = 1,
    svg: Svg = None,
    html: Html = None,
    no_color: NoColor = False,
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
            in_channels=1,
            out_channels=1,
            kernel=kernel,
            stride=stride,
            padding=chosen,
            dilation=dilation,
        )

    _draw_conv("dilated", build, dims, size, at, steps, svg, html, no_color)


def draw_transpose(
    kernel: Kernel = "4",
    stride: Stride = "2",
    padding: PaddingOpt = "1",
    output_padding: OutputPadding = "0",
    dilation: Dilation = "1",
    dims: Dims = 2,
    size: DrawSize = "4",
    at: At = None,
    steps: Steps = 1,
    svg: Svg = None,
    html: Html = None,
    no_color: NoColor = False,
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
            in_channels=1,
            out_channels=1,
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
        no_color,
    )


draw_app.command("transpose")(draw_transpose)
draw_app.command("tconv", help="Alias of draw transpose.")(draw_transpose)


@draw_app.command("stack")
def draw_stack(
    source: Annotated[
        str | None, typer.Argument(show_default=False, help="A stack file, - or layers inline.")
    ] = None,
    arch: Annotated[
        str | None, typer.Option("--arch", show_default=False, help="A built-in architecture.")
    ] = None,
    input_shape: Annotated[
        str | None,
        typer.Option(
            "--input",
            metavar="N,C,H[,W...]",
            show_default=False,
            help="The network input [default: the file's; inline: 1,3,224,224].",
        ),
    ] = None,
    svg: Svg = None,
    html: Html = None,
    no_color: NoColor = False,
) -> None:
    """Draw a stack's receptive field: its growth layer by layer as bars, and the field of the
    central output of its last spatial layer on the input.

    \b
    Example:
      convcalc draw stack --arch resnet18
    """
    with user_errors():
        from convcalc.core.cumulative import cumulative as cumulative_figures
        from convcalc.core.grammar import parse_inline, parse_input
        from convcalc.core.picture import field_on_input
        from convcalc.engine import graph_inputs
        from convcalc.sources.stack import build_network

        _check_writable(svg, html)
        data, label = _stack_source(source, arch)
        shape = parse_input(input_shape, "--input") if input_shape else None
        if data is None:
            data = {"layers": parse_inline(source or "")}
            shape = shape or (1, 3, 224, 224)
        network = build_network(data, shape, "float32", label)
        inputs = graph_inputs(network.nodes, network.input)
        figures = cumulative_figures(tuple(network.nodes), inputs, network.input)
        rows = []
        last = None
        previous: tuple[int, ...] = ()
        for name, figure in zip(network.names, figures):
            spatial = figure.effective_stride and not figure.whole_input
            if not spatial or figure.receptive_field == previous:
                continue
            previous = figure.receptive_field
            rows.append(
                (name, max(figure.receptive_field), "x".join(map(str, figure.receptive_field)))
            )
            last = (name, figure)
        notes = [
            "receptive fields by formula (Araujo et al. 2019); `convcalc stack` also measures "
            "them by autograd"
        ]
        if last is None:
            raise ConvcalcError("the stack has no layer with a spatial output to draw")
        name, figure = last
        index = network.names.index(name)
        output_size = formulas_output(network.nodes[index].spec, inputs[index])
        centre = [n // 2 for n in output_size]
        start = [
            int(c * j - p)
            for c, j, p in zip(centre, figure.effective_stride, figure.effective_padding)
        ]
        field_rows, scale = field_on_input(network.input.size, start, figure.receptive_field)
        caption = (
            f"the field of {name}'s central output {tuple(centre)} on the "
            f"{'x'.join(map(str, network.input.size))} input"
            + (f" (a cell is {scale}x{scale} input positions)" if scale > 1 else "")
        )
        if any(j.denominator != 1 for j in figure.effective_stride):
            notes.append("a fractional effective stride: the field drawn is the widest one")
    from convcalc.output.render import field_renderable, show

    show(
        field_renderable(f"convcalc draw stack  {label}", rows, field_rows, caption, notes),
        sys.stdout,
        no_color=no_color,
        svg=svg,
        html=html,
        title=label,
    )


def formulas_output(spec: Any, layer_input: Any) -> tuple[int, ...]:
    from convcalc.kinds import figures

    return tuple(figures(spec, layer_input).output_shape.value[2:])


def main() -> None:
    """Console-script entry point (also ``python -m convcalc``).

    Once torch is loaded, interpreter teardown costs more than most reports take (about 0.6 s
    here: bench/startup.py shows `python -c "import torch"` at 1.4 s with ``os._exit`` and 2.2 s
    without). convcalc holds no files or resources that need it, so after flushing its output
    it leaves at once. Tests drive ``app`` through Typer's runner and never reach this.
    """
    try:
        app()
    except SystemExit as leaving:
        status = (
            leaving.code if isinstance(leaving.code, int) else (0 if leaving.code is None else 1)
        )
        if "torch" not in sys.modules:
            raise
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BrokenPipeError:
            pass
        os._exit(status)
