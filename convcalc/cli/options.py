"""The options of the commands, by purpose: each command declares the groups it uses, and only
those (an option a command would ignore is a usage error, exit 2). In ``--help`` each group is
its own section (ConvcalcCommand)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from enum import Enum
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from convcalc._dataclass import dataclass
from convcalc.choices import Dtype, Format, Measure, MeasureOn, PaddingMode

LAYER = "Layer"
INPUT = "Input"
MEASURE = "Measurement"
OUTPUT = "Output"
ROOFLINE = "Roofline"
SHAPE = "N[xN...]"


class ConvcalcCommand(TyperCommand):
    """Plain click help, with the options in sections by purpose (their ``rich_help_panel``)
    and the ungrouped ones (``--help``) last."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        arguments: list[tuple[str, str]] = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append(record)
                continue
            panel = getattr(param, "rich_help_panel", None) or _ungrouped(param)
            sections.setdefault(panel, []).append(record)
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        order = [LAYER, INPUT, MEASURE, ROOFLINE, OUTPUT]
        for name in sorted(sections, key=lambda s: order.index(s) if s in order else len(order)):
            with formatter.section(f"{name} options" if name in order else name):
                formatter.write_dl(sections[name])


def _ungrouped(param: Any) -> str:
    """The section of an option without a group: --help its own, anything else "Other options"
    (tests/test_outfix.py: no command leaves an option there)."""
    return "Help" if param.name == "help" else "Other options"


# --- layer --------------------------------------------------------------------------------------

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
KeepSizePadding = Annotated[
    str | None,
    typer.Option(
        "-p",
        "--padding",
        metavar="N[xN...]|same|valid",
        rich_help_panel=LAYER,
        show_default=False,
        help="Padding [default: keeps the size when it can: d(k-1)/2].",
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
PresetBias = Annotated[
    bool | None,
    typer.Option(
        "--bias/--no-bias",
        rich_help_panel=LAYER,
        show_default=False,
        help="Learnable bias on the convs [default: with bias; none with --bn, whose shift "
        "replaces it].",
    ),
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
PaddingModeOpt = Annotated[
    PaddingMode,
    typer.Option("--padding-mode", rich_help_panel=LAYER, case_sensitive=False, help="How to pad."),
]
Bn = Annotated[bool, typer.Option("--bn", rich_help_panel=LAYER, help="BatchNorm after each conv.")]
#: --act's choices (convcalc.sources.presets.ACT_CHOICES; a test keeps the two the same)
ACT_METAVAR = "none|relu|relu6|leakyrelu|prelu|elu|gelu|silu|hardswish|hardsigmoid|sigmoid|tanh"
Act = Annotated[
    str,
    typer.Option(
        "--act",
        metavar=ACT_METAVAR,
        rich_help_panel=LAYER,
        help="Activation after each conv (case-insensitive), or none.",
    ),
]
Slope = Annotated[
    float | None,
    typer.Option(
        "--slope",
        rich_help_panel=LAYER,
        show_default=False,
        help="Negative slope of --act leakyrelu [default: torch's 0.01].",
    ),
]

# --- input --------------------------------------------------------------------------------------

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
DtypeOpt = Annotated[
    Dtype,
    typer.Option(
        "--dtype",
        rich_help_panel=INPUT,
        case_sensitive=False,
        help="Element type (memory figures).",
    ),
]

# --- measurement --------------------------------------------------------------------------------

MeasureOnOpt = Annotated[
    MeasureOn,
    typer.Option(
        "--measure-on",
        rich_help_panel=MEASURE,
        case_sensitive=False,
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
        help="Also the backward pass: input and weight gradient FLOPs; and one real "
        "training step's memory, measured (params, grads, optimizer state, saved, peak).",
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
#: --device's names (convcalc.choices.check_device_name; N: a CUDA device's number)
DEVICE_METAVAR = "cpu|cuda|cuda:N|mps"
Device = Annotated[
    str,
    typer.Option(
        "--device",
        metavar=DEVICE_METAVAR,
        rich_help_panel=MEASURE,
        help="Where --time runs, and whose peaks the roofline uses: cpu, cuda (cuda:N) or "
        "mps, where one exists.",
    ),
]


class Optimizer(str, Enum):
    sgd = "sgd"
    momentum = "momentum"
    adam = "adam"
    adamw = "adamw"


OptimizerOpt = Annotated[
    Optimizer,
    typer.Option(
        "--optimizer",
        rich_help_panel=MEASURE,
        case_sensitive=False,
        help="The optimizer of the training-step memory figure (its state: none, one or two "
        "buffers per parameter).",
    ),
]
Fit = Annotated[
    str | None,
    typer.Option(
        "--fit",
        metavar="SIZE",
        rich_help_panel=MEASURE,
        show_default=False,
        help="A memory size (16GiB, 80GB): the largest batch whose training step, and whose "
        "inference, fit in it, per dtype.",
    ),
]

# --- roofline -----------------------------------------------------------------------------------

RooflineOpt = Annotated[
    bool,
    typer.Option(
        "--roofline",
        rich_help_panel=ROOFLINE,
        help="Per layer: bytes moved, arithmetic intensity, compute- or memory-bound and the "
        "time lower bound, on the --device's peaks (--time implies it).",
    ),
]
PeakGflops = Annotated[
    float | None,
    typer.Option(
        "--peak-gflops",
        metavar="N",
        rich_help_panel=ROOFLINE,
        show_default=False,
        help="The device's peak GFLOP/s (with --peak-gbps): given, nothing is calibrated "
        "[default: measured once, cached].",
    ),
]
PeakGbps = Annotated[
    float | None,
    typer.Option(
        "--peak-gbps",
        metavar="M",
        rich_help_panel=ROOFLINE,
        show_default=False,
        help="The device's peak memory bandwidth in GB/s (with --peak-gflops).",
    ),
]
Recalibrate = Annotated[
    bool,
    typer.Option(
        "--recalibrate",
        rich_help_panel=ROOFLINE,
        help="Measure the device's peaks again (a matmul and a copy, about 3 s) and re-cache.",
    ),
]


def progress_line(line: str) -> None:
    """A calibration's announcement, on stderr (stdout stays the result)."""
    import sys

    sys.stderr.write(line + "\n")
    sys.stderr.flush()


@dataclass(frozen=True)
class RooflineOptions:
    """The roofline options of a command without the measurement group (model, batch, draw)."""

    roofline: bool = False
    peak_gflops: float | None = None
    peak_gbps: float | None = None
    recalibrate: bool = False


# --- output -------------------------------------------------------------------------------------

FormatOpt = Annotated[
    Format,
    typer.Option("--format", "-f", rich_help_panel=OUTPUT, case_sensitive=False, help="Output."),
]
Json = Annotated[
    bool, typer.Option("--json", rich_help_panel=OUTPUT, help="Short for --format json.")
]
Detail = Annotated[
    bool,
    typer.Option(
        "--detail",
        rich_help_panel=OUTPUT,
        help="Every figure of every layer, each beside its formula.",
    ),
]
NoColor = Annotated[
    bool, typer.Option("--no-color", rich_help_panel=OUTPUT, help="No colour (also: NO_COLOR).")
]
Get = Annotated[
    list[str] | None,
    typer.Option(
        "--get",
        metavar="PATH",
        rich_help_panel=OUTPUT,
        show_default=False,
        help="Print only the value at PATH of the JSON, like total.params. Repeatable: one "
        "line each.",
    ),
]
Expect = Annotated[
    list[str] | None,
    typer.Option(
        "--expect",
        metavar="PATH[OP]VALUE",
        rich_help_panel=OUTPUT,
        show_default=False,
        help="Fail (exit 1) unless it holds: total.params=17280, 'total.macs<=1e9', "
        "total.output_shape=1x256x224x224, agree=true. Repeatable.",
    ),
]
Strict = Annotated[
    bool,
    typer.Option(
        "--strict",
        rich_help_panel=OUTPUT,
        help="Exit 1 when a measured figure and its formula disagree.",
    ),
]
Conventions = Annotated[
    bool,
    typer.Option(
        "--conventions",
        rich_help_panel=OUTPUT,
        help="Also the figure fvcore, torchinfo, ptflops, thop, torch and "
        "calflops/DeepSpeed would print, each with its rule.",
    ),
]


@dataclass(frozen=True)
class InputOptions:
    """The input a layer command reads: --dims, --size, --batch, --dtype."""

    dims: int = 2
    size: str = "224"
    batch: int = 1
    dtype: Dtype = Dtype.float32


@dataclass(frozen=True)
class OutputOptions:
    """What to write and what decides the exit status."""

    fmt: Format = Format.table
    detail: bool = False
    no_color: bool = False
    get: tuple[str, ...] = ()
    expect: tuple[str, ...] = ()
    strict: bool = False
    conventions: bool = False


#: each group: (the parameter it is handed to the command as, its options, how to pack them)
GROUPS: dict[str, tuple[str, list[tuple[str, Any, Any]], Callable[..., Any]]] = {}


def _register(
    name: str, params: list[tuple[str, Any, Any]], pack: Callable[..., Any], into: str
) -> None:
    GROUPS[name] = (into, params, pack)


def _pack_output(**values: Any) -> OutputOptions:
    as_json, fmt = values.pop("as_json"), values.pop("fmt")
    if as_json and Format(fmt) not in (Format.table, Format.json):
        from convcalc.errors import SpecError

        raise SpecError("format", f"--json and --format {Format(fmt).value} disagree: give one")
    chosen = Format.json if as_json else Format(fmt)

    return OutputOptions(
        fmt=chosen,
        get=tuple(values.pop("get") or ()),
        expect=tuple(values.pop("expect") or ()),
        **values,
    )


_register(
    "input",
    [("dims", Dims, 2), ("size", Size, "224"), ("batch", Batch, 1), ("dtype", DtypeOpt, "float32")],
    lambda **v: InputOptions(**v),
    "inputs",
)
_register(
    "measure",
    [
        ("measure_on", MeasureOnOpt, "auto"),
        ("formula_only", FormulaOnly, False),
        ("train", Train, False),
        ("time", Time, False),
        ("device", Device, "cpu"),
        ("optimizer", OptimizerOpt, "adam"),
        ("fit", Fit, None),
        *(
            _ROOFLINE_PARAMS := [
                ("roofline", RooflineOpt, False),
                ("peak_gflops", PeakGflops, None),
                ("peak_gbps", PeakGbps, None),
                ("recalibrate", Recalibrate, False),
            ]
        ),
    ],
    lambda **v: Measure(**v, progress=progress_line),
    "measure",
)
_register("roofline", _ROOFLINE_PARAMS, lambda **v: RooflineOptions(**v), "roofline")
#: the peaks alone, for a command that always draws the roofline (draw roofline: no --roofline)
_register(
    "roofline_peaks",
    [p for p in _ROOFLINE_PARAMS if p[0] != "roofline"],
    lambda **v: RooflineOptions(roofline=True, **v),
    "roofline",
)
_OUTPUT_PARAMS: list[tuple[str, Any, Any]] = [
    ("fmt", FormatOpt, "table"),
    ("as_json", Json, False),
    ("detail", Detail, False),
    ("no_color", NoColor, False),
    ("get", Get, None),
    ("expect", Expect, None),
    ("strict", Strict, False),
    ("conventions", Conventions, False),
]
_register("output", _OUTPUT_PARAMS, _pack_output, "output")
#: the output options of a command whose result has no formula to agree with (solve, draw)
_register(
    "plain_output",
    [p for p in _OUTPUT_PARAMS if p[0] in ("fmt", "as_json", "no_color", "get", "expect")],
    _pack_output,
    "output",
)


def with_groups(*names: str, defaults: dict[str, Any] | None = None) -> Callable[..., Any]:
    """Give a command the options of these groups (one definition each, as sqlite-utils'
    output_options does for click) and hand each group to it packed as one value (``inputs``,
    ``measure``, ``output``). A command that declares one of the options itself keeps its own
    (gdconv's --size, whose help differs); ``defaults`` changes a group option's default."""
    defaults = defaults or {}

    def decorate(func: Callable[..., None]) -> Callable[..., None]:
        return _Grouped(func, names, defaults)

    return decorate


class _Grouped:
    """A command of :func:`with_groups`: called as the command, with each group packed. Its
    signature and annotations (the command's own options and its groups'), which Typer reads to
    build the command, are worked out when first asked for: only for the command that runs,
    not for every command of the module at import (start-up: docs/benchmarks.md)."""

    def __init__(self, func: Callable[..., None], names: tuple[str, ...], defaults: dict[str, Any]):
        # __annotations__ is worked out below, not copied from func
        functools.update_wrapper(
            self, func, assigned=("__module__", "__name__", "__qualname__", "__doc__")
        )
        self._func = func
        self._names = names
        self._defaults = defaults
        self._prepared: tuple[set[str], inspect.Signature, dict[str, Any]] | None = None

    def _prepare(self) -> tuple[set[str], inspect.Signature, dict[str, Any]]:
        if self._prepared is None:
            signature = inspect.signature(self._func, eval_str=True)
            into_names = {GROUPS[name][0] for name in self._names}
            own = [p for p in signature.parameters.values() if p.name not in into_names]
            own_names = {p.name for p in own}
            added = [
                inspect.Parameter(
                    option,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=self._defaults.get(option, default),
                    annotation=annotation,
                )
                for name in self._names
                for option, annotation, default in GROUPS[name][1]
                if option not in own_names
            ]
            parameters = [*own, *added]
            self._prepared = (
                own_names,
                signature.replace(parameters=parameters),
                {p.name: p.annotation for p in parameters},
            )
        return self._prepared

    @property
    def __signature__(self) -> inspect.Signature:
        return self._prepare()[1]

    @property
    def __annotations__(self) -> dict[str, Any]:  # type: ignore[override]
        return self._prepare()[2]

    def __call__(self, **kwargs: Any) -> None:
        own_names = self._prepare()[0]
        packed = {}
        for name in self._names:
            into, params, pack = GROUPS[name]
            values = {
                option: kwargs[option] if option in own_names else kwargs.pop(option)
                for option, _, _ in params
            }
            packed[into] = pack(**values)
        self._func(**kwargs, **packed)
