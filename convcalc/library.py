"""The library: one function per command, each returning a typed result with ``to_dict()`` (the
JSON of ``--format json``). The CLI calls exactly these; so can you.

    >>> from convcalc import analyze
    >>> report = analyze(64, 256, kernel=3, padding=1)
    >>> report["total.params"], report.agree
    (147712, True)

Never prints, never exits; raises :class:`convcalc.SpecError` (bad input) and
:class:`convcalc.MeasurementError` (torch refused a layer), both :class:`convcalc.ConvcalcError`.
Per-dimension values are given as ``3``, ``(3, 5)`` or ``"3x5"``. Error messages name the
arguments as the caller spells them: Python names by default, the CLI passes its option names.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

from convcalc.core.grammar import parse_inline
from convcalc.core.report import Comparison, Report
from convcalc.core.spec import DEFAULT_SIZE, InputSpec, Labels, build_input
from convcalc.engine import Options
from convcalc.errors import ConvcalcError, SpecError
from convcalc.kinds import ConvSpec, build_conv

Value = int | str | Sequence[int]

#: argument names, for error messages from the Python API
API_LABELS = Labels(
    {
        "dims": "dims",
        "in_channels": "in_channels",
        "out_channels": "out_channels",
        "kernel_size": "kernel",
        "stride": "stride",
        "padding": "padding",
        "dilation": "dilation",
        "groups": "groups",
        "bias": "bias",
        "transposed": "transpose",
        "output_padding": "output_padding",
        "padding_mode": "padding_mode",
        "size": "size",
        "batch": "batch",
        "dtype": "dtype",
        "multiplier": "multiplier",
        "measure_on": "measure_on",
        "act": "act",
    }
)


class Format(str, Enum):
    """Output formats (``--format``)."""

    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"
    markdown = "markdown"


class MeasureOn(str, Enum):
    """Where the measurement runs (``--measure-on``)."""

    auto = "auto"
    cpu = "cpu"
    meta = "meta"


class Dtype(str, Enum):
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


class PaddingMode(str, Enum):
    zeros = "zeros"
    reflect = "reflect"
    replicate = "replicate"
    circular = "circular"


@dataclass(frozen=True)
class Measure:
    """How to measure, for every command that measures: where, and what beyond the forward
    figures. ``formula_only``: every figure by formula alone, without loading torch."""

    measure_on: str = "auto"
    train: bool = False
    time: bool = False
    device: str = "cpu"
    formula_only: bool = False
    #: the training step's optimizer (sgd, momentum, adam, adamw), and a memory limit for
    #: the largest batch that fits ("16GiB", "80GB")
    optimizer: str = "adam"
    fit: str | None = None
    #: measure saved-for-backward and the inference peak (their formulas are always there);
    #: ``batch`` turns it off unless --memory
    memory: bool = True

    def options(self, labels: Labels = API_LABELS) -> Options:
        choices = [m.value for m in MeasureOn]
        if _plain(self.measure_on) not in choices:
            raise SpecError(
                "measure_on",
                f"{labels['measure_on']} {_plain(self.measure_on)!r} must be one of "
                + ", ".join(choices),
            )
        for name in ("train", "time", "formula_only", "memory"):
            _flag(getattr(self, name), name)
        if self.formula_only and self.time:
            raise SpecError(
                "time", "--time measures the real layer: it does not go with --formula-only"
            )
        if _plain(self.device) != "cpu" and not self.time:
            raise SpecError(
                "device",
                f"--device {_plain(self.device)} is where --time runs: it applies only with --time",
            )
        if self.formula_only and _plain(self.measure_on) != "auto":
            raise SpecError(
                "measure_on",
                f"--measure-on {_plain(self.measure_on)} measures: it does not go with "
                "--formula-only",
            )
        return Options(
            measure_on=_plain(self.measure_on),
            train=self.train,
            time=self.time,
            device=_plain(self.device),
            formula_only=self.formula_only,
            optimizer=_plain(self.optimizer),
            fit=self.fit,
            measure_memory=self.memory,
        )


def _plain(value: Any) -> str:
    return str(value.value) if isinstance(value, Enum) else str(value)


def _text(value: Value, name: str) -> int | str:
    """3, "3x5", (3, 5) -> what the spec parser takes; anything else is a SpecError."""
    if isinstance(value, bool):
        raise SpecError(
            name,
            f"{name} {value!r} must be an integer, a string like '3x5', or a sequence of integers",
        )
    if isinstance(value, int | str):
        return value
    if (
        isinstance(value, list | tuple)
        and value
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return "x".join(str(v) for v in value)
    raise SpecError(
        name, f"{name} {value!r} must be an integer, a string like '3x5', or a sequence of integers"
    )


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(name, f"{name} {value!r} must be an integer")
    return value


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(name, f"{name} {value!r} must be True or False")
    return value


def _input(
    dims: int, channels: int, size: Value, batch: int, dtype: str, labels: Labels
) -> InputSpec:
    return build_input(
        dims=_integer(dims, "dims"),
        channels=channels,
        size=_text(size, "size"),
        batch=_integer(batch, "batch"),
        dtype=_plain(dtype),
        labels=labels,
    )


# --- one layer and the conv kinds of the source documents --------------------------------------


def conv(
    in_channels: int,
    out_channels: int,
    *,
    kernel: Value = 3,
    stride: Value = 1,
    padding: Value = 0,
    dilation: Value = 1,
    groups: int = 1,
    bias: bool = True,
    transpose: bool = False,
    output_padding: Value = 0,
    padding_mode: str = "zeros",
    dims: int = 2,
    size: Value = DEFAULT_SIZE,
    batch: int = 1,
    dtype: str = "float32",
    measure: Measure = Measure(),
    labels: Labels = API_LABELS,
) -> Report:
    """One conv layer (``convcalc conv``): every figure measured and by formula."""
    from convcalc.engine import analyze_chain

    spec = build_conv(
        dims=_integer(dims, "dims"),
        in_channels=_integer(in_channels, "in_channels"),
        out_channels=_integer(out_channels, "out_channels"),
        kernel=_text(kernel, "kernel"),
        stride=_text(stride, "stride"),
        padding=_text(padding, "padding"),
        dilation=_text(dilation, "dilation"),
        groups=_integer(groups, "groups"),
        bias=_flag(bias, "bias"),
        transpose=_flag(transpose, "transpose"),
        output_padding=_text(output_padding, "output_padding"),
        padding_mode=_plain(padding_mode),
        labels=labels,
    )
    input_spec = _input(dims, in_channels, size, batch, dtype, labels)
    return analyze_chain(
        [spec], input_spec, command="conv", options=measure.options(labels), labels=labels
    )


def analyze(
    in_channels: int,
    out_channels: int,
    *,
    kernel: Value = 3,
    stride: Value = 1,
    padding: Value = 0,
    dilation: Value = 1,
    groups: int = 1,
    bias: bool = True,
    transpose: bool = False,
    output_padding: Value = 0,
    padding_mode: str = "zeros",
    dims: int = 2,
    size: Value = DEFAULT_SIZE,
    batch: int = 1,
    dtype: str = "float32",
    measure_on: str = "auto",
    train: bool = False,
    time: bool = False,
    device: str = "cpu",
    formula_only: bool = False,
) -> Report:
    """One conv layer, as ``convcalc conv`` measures it (the API's name for :func:`conv`)."""
    return conv(
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
        dims=dims,
        size=size,
        batch=batch,
        dtype=dtype,
        measure=Measure(measure_on, train, time, device, formula_only),
    )


@dataclass(frozen=True)
class Block:
    """Batch norm and an activation after each convolution of a preset. With batch norm, a
    convolution's bias is redundant (the norm's shift replaces it): presets then default to
    no bias."""

    bn: bool = False
    act: str = "none"
    slope: float | None = None


def _block(block: Block, labels: Labels) -> Any:
    import math

    from convcalc.sources.presets import Block as PresetBlock
    from convcalc.sources.presets import check_act

    act = _plain(block.act).lower()
    check_act(act)
    if block.slope is not None:
        if act != "leakyrelu":
            raise SpecError("slope", "--slope applies only with --act leakyrelu")
        if not math.isfinite(block.slope):
            raise SpecError("slope", f"--slope {block.slope} must be a finite number")
    return PresetBlock(
        bn=_flag(block.bn, "bn"),
        act=act,
        negative_slope=0.01 if block.slope is None else block.slope,
    )


def _chain(
    command: str,
    title: str,
    specs: list[Any],
    input_spec: InputSpec,
    measure: Measure,
    labels: Labels,
) -> Report:
    from convcalc.engine import analyze_chain

    return analyze_chain(
        specs,
        input_spec,
        command=command,
        title=title,
        options=measure.options(labels),
        labels=labels,
    )


def dw(
    in_channels: int,
    out_channels: int,
    *,
    kernel: Value = 3,
    stride: Value = 1,
    padding: Value | None = None,
    dilation: Value = 1,
    multiplier: int = 1,
    bias: bool | None = None,
    block: Block = Block(),
    dims: int = 2,
    size: Value = DEFAULT_SIZE,
    batch: int = 1,
    dtype: str = "float32",
    measure: Measure = Measure(),
    labels: Labels = API_LABELS,
) -> Report:
    """Depthwise separable (``convcalc dw``): a depthwise conv (groups = in) then a pointwise
    1x1. The padding keeps the size by default, for any kernel and dilation."""
    from convcalc.core.spec import parse_ints
    from convcalc.sources.presets import depthwise_separable, dilated_padding

    input_spec = _input(dims, in_channels, size, batch, dtype, labels)
    if padding is None:
        padding = dilated_padding(
            parse_ints(_text(kernel, "kernel"), dims, "kernel_size", labels),
            parse_ints(_text(dilation, "dilation"), dims, "dilation", labels),
            parse_ints(_text(stride, "stride"), dims, "stride", labels),
        )
    specs = depthwise_separable(
        dims=dims,
        in_channels=_integer(in_channels, "in_channels"),
        out_channels=_integer(out_channels, "out_channels"),
        kernel=str(_text(kernel, "kernel")),
        stride=str(_text(stride, "stride")),
        padding=str(_text(padding, "padding")),
        dilation=str(_text(dilation, "dilation")),
        multiplier=_integer(multiplier, "multiplier"),
        bias=(not block.bn) if bias is None else _flag(bias, "bias"),
        block=_block(block, labels),
        labels=labels,
    )
    return _chain(
        "dw", "depthwise separable: depthwise then pointwise", specs, input_spec, measure, labels
    )


def pw(
    in_channels: int,
    out_channels: int,
    *,
    bias: bool | None = None,
    block: Block = Block(),
    dims: int = 2,
    size: Value = DEFAULT_SIZE,
    batch: int = 1,
    dtype: str = "float32",
    measure: Measure = Measure(),
    labels: Labels = API_LABELS,
) -> Report:
    """Pointwise (``convcalc pw``): a 1x1 convolution that mixes channels only."""
    from convcalc.sources.presets import single

    input_spec = _input(dims, in_channels, size, batch, dtype, labels)
    spec = build_conv(
        dims=dims,
        in_channels=_integer(in_channels, "in_channels"),
        out_channels=_integer(out_channels, "out_channels"),
        kernel="1",
        bias=(not block.bn) if bias is None else _flag(bias, "bias"),
        name="pointwise",
        labels=labels,
    )
    specs = single(spec, _block(block, labels))
    return _chain("pw", "pointwise 1x1 convolution", specs, input_spec, measure, labels)


def group(
    in_channels: int,
    out_channels: int,
    *,
    groups: int = 8,
    kernel: Value = 3,
    stride: Value = 1,
    padding: Value = 1,
    dilation: Value = 1,
    bias: bool = True,
    dims: int = 2,
    size: Value = DEFAULT_SIZE,
    batch: int = 1,
    dtype: str = "float32",
    measure: Measure = Measure(),
    labels: Labels = API_LABELS,
) -> Report:
    """A grouped conv (``convcalc group``) with its ratio to the standard conv: measured, by
    formula and by the documents' theory (1/g)."""
    from convcalc.engine import analyze_grouped

    spec = build_conv(
        dims=dims,
        in_channels=_integer(in_channels, "in_channels"),
        out_channels=_integer(out_channels, "out_channels"),
        kernel=_text(kernel, "kernel"),
        stride=_text(stride, "stride"),
        padding=_text(padding, "padding"),
        dilation=_text(dilation, "dilation"),
        groups=_integer(groups, "groups"),
        bias=_flag(bias, "bias"),
        name="grouped",
        labels=labels,
    )
    input_spec = _input(dims, in_channels, size, batch, dtype, labels)
    return analyze_grouped([spec], input_spec, options=measure.options(labels), labels=labels)


def dilated(
    in_channels: int,
    out_channels: int,
    *,
    dilation: Value = 2,
    kernel: Value = 3,
    stride: Value = 1,
    padding: Value | None = None,
    bias: bool = True,
    dims: int = 2,
    size: Value = DEFAULT_SIZE,
    batch: int = 1,
    dtype: str = "float32",
    measure: Measure = Measure(),
    labels: Labels = API_LABELS,
) -> Report:
    """A dilated conv (``convcalc dilated``) whose padding keeps the size when it can, beside
    the same kernel undilated."""
    from convcalc.core.spec import parse_ints
    from convcalc.engine import analyze_dilated
    from convcalc.sources.presets import dilated_padding

    if padding is None:
        padding = dilated_padding(
            parse_ints(_text(kernel, "kernel"), dims, "kernel_size", labels),
            parse_ints(_text(dilation, "dilation"), dims, "dilation", labels),
            parse_ints(_text(stride, "stride"), dims, "stride", labels),
        )
    spec = build_conv(
        dims=dims,
        in_channels=_integer(in_channels, "in_channels"),
        out_channels=_integer(out_channels, "out_channels"),
        kernel=_text(kernel, "kernel"),
        stride=_text(stride, "stride"),
        padding=_text(padding, "padding"),
        dilation=_text(dilation, "dilation"),
        bias=_flag(bias, "bias"),
        name="dilated",
        labels=labels,
    )
    input_spec = _input(dims, in_channels, size, batch, dtype, labels)
    return analyze_dilated([spec], input_spec, options=measure.options(labels), labels=labels)


def transpose(
    in_channels: int,
    out_channels: int,
    *,
    kernel: Value = 4,
    stride: Value = 2,
    padding: Value = 1,
    output_padding: Value = 0,
    dilation: Value = 1,
    groups: int = 1,
    bias: bool = True,
    dims: int = 2,
    size: Value = DEFAULT_SIZE,
    batch: int = 1,
    dtype: str = "float32",
    measure: Measure = Measure(),
    labels: Labels = API_LABELS,
) -> Report:
    """A transposed conv (``convcalc transpose``); by default k4 s2 p1, a 2x upsampling."""
    spec = build_conv(
        dims=dims,
        in_channels=_integer(in_channels, "in_channels"),
        out_channels=_integer(out_channels, "out_channels"),
        kernel=_text(kernel, "kernel"),
        stride=_text(stride, "stride"),
        padding=_text(padding, "padding"),
        dilation=_text(dilation, "dilation"),
        groups=_integer(groups, "groups"),
        bias=_flag(bias, "bias"),
        transpose=True,
        output_padding=_text(output_padding, "output_padding"),
        name="transposed",
        labels=labels,
    )
    input_spec = _input(dims, in_channels, size, batch, dtype, labels)
    return _chain("transpose", "transposed convolution", [spec], input_spec, measure, labels)


def gdconv(
    in_channels: int,
    *,
    size: Value = 7,
    bias: bool | None = None,
    bn: bool = False,
    dims: int = 2,
    batch: int = 1,
    dtype: str = "float32",
    measure: Measure = Measure(),
    labels: Labels = API_LABELS,
) -> Report:
    """Global depthwise conv (``convcalc gdconv``, MobileFaceNet): kernel = input size, groups
    = channels. With ``bn`` the conv has no bias by default (the norm's shift replaces it)."""
    from convcalc.core.spec import parse_ints
    from convcalc.sources.presets import Block as PresetBlock
    from convcalc.sources.presets import global_depthwise

    input_spec = _input(dims, in_channels, size, batch, dtype, labels)
    specs = global_depthwise(
        dims=dims,
        channels=_integer(in_channels, "in_channels"),
        size=parse_ints(_text(size, "size"), dims, "size", labels),
        bias=(not bn) if bias is None else _flag(bias, "bias"),
        block=PresetBlock(bn=_flag(bn, "bn")),
        labels=labels,
    )
    return _chain("gdconv", "global depthwise convolution", specs, input_spec, measure, labels)


def compare(
    in_channels: int,
    out_channels: int,
    *,
    kernel: Value = 3,
    groups: int = 8,
    bias: bool = True,
    dims: int = 2,
    size: Value = DEFAULT_SIZE,
    batch: int = 1,
    dtype: str = "float32",
    measure: Measure = Measure(),
    labels: Labels = API_LABELS,
) -> Comparison:
    """Standard, grouped and depthwise-separable versions of one layer (``convcalc compare``),
    each with its ratio to the standard: measured, and by the documents' theory."""
    from convcalc.engine import compare as run_compare

    return run_compare(
        dims=dims,
        in_channels=_integer(in_channels, "in_channels"),
        out_channels=_integer(out_channels, "out_channels"),
        kernel=str(_text(kernel, "kernel")),
        groups=_integer(groups, "groups"),
        bias=_flag(bias, "bias"),
        input_spec=_input(dims, in_channels, size, batch, dtype, labels),
        options=measure.options(labels),
        labels=labels,
    )


# --- networks ----------------------------------------------------------------------------------


def read_source(path: Path, source: str) -> str:
    """A file's text; unreadable or not UTF-8 is invalid input, not a crash."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise SpecError("source", f"{source}: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise SpecError("source", f"{source}: {error.strerror or error}") from None


STACK_SUFFIXES = (".yaml", ".yml", ".json", ".toml")


def _is_file(source: str) -> bool:
    """A stack argument names a file when it has a stack file's suffix or exists; an inline
    stack of any length is never mistaken for one (a long one is not a valid path)."""
    if Path(source).suffix.lower() in STACK_SUFFIXES:
        return True
    if ";" in source or "\n" in source:
        return False
    try:
        return Path(source).is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


def stack_source(
    stack: str | Path | dict[str, Any] | None,
    arch: str | None,
    *,
    stdin: str | None = None,
    labels: Labels = API_LABELS,
) -> tuple[dict[str, Any] | None, str]:
    """The stack's data and a label for it: a file, a dict, ``-`` (``stdin``'s text), an
    architecture; ``None`` data for an inline stack."""
    from convcalc.sources.stack import load_text

    if arch is not None:
        from convcalc.sources.archs import ARCHITECTURES

        option = "--arch" if labels is not API_LABELS else "arch"
        if stack is not None:
            raise SpecError("arch", "give either --arch or a stack, not both")
        if str(arch).lower() not in ARCHITECTURES:
            raise SpecError("arch", f"{option} {arch!r} must be one of {', '.join(ARCHITECTURES)}")
        return ARCHITECTURES[str(arch).lower()](), str(arch).lower()
    if stack is None:
        raise SpecError("source", "give a stack file, - for stdin, layers inline, or --arch")
    if isinstance(stack, dict):
        return stack, "stack"
    if isinstance(stack, Path):
        return load_text(read_source(stack, str(stack)), str(stack)), stack.name
    if stack == "-":
        return load_text(stdin or "", "<stdin>"), "<stdin>"
    if not stack.strip():
        raise SpecError("source", "the stack is empty: give a file, - for stdin, or layers")
    if _is_file(stack):
        return load_text(read_source(Path(stack), stack), stack), Path(stack).name
    return None, "inline"


def _network(
    stack: str | Path | dict[str, Any] | None,
    *,
    arch: str | None,
    input: Sequence[int] | str | None,
    size: Value | None,
    batch: int | None,
    in_channels: int | None,
    dims: int | None,
    dtype: str,
    stdin: str | None,
    labels: Labels,
) -> tuple[Any, str, dict[str, Any], tuple[int, ...] | None]:
    from convcalc.core.grammar import parse_input
    from convcalc.sources.stack import build_network, network_input

    data, label = stack_source(stack, arch, stdin=stdin, labels=labels)
    shape = None
    if input is not None:
        shape = parse_input(input if isinstance(input, str) else list(input), "--input")
    if data is None:  # inline
        data = {"layers": parse_inline(str(stack))}
        if shape is None:
            shape = _input(
                dims if dims is not None else 2,
                in_channels if in_channels is not None else 3,
                size if size is not None else DEFAULT_SIZE,
                batch if batch is not None else 1,
                dtype,
                labels,
            ).shape
    else:
        if in_channels is not None and input is None:
            raise SpecError(
                "in_channels",
                "--in sets the channels of an inline stack; a file or --arch has its own input "
                "(give --input to change it)",
            )
        shape = network_input(data, shape, size, batch, dims, label, labels)
    network = build_network(data, shape, _plain(dtype), label)
    return network, label, data, shape


def stack(
    stack: str | Path | dict[str, Any] | None = None,
    *,
    arch: str | None = None,
    input: Sequence[int] | str | None = None,
    size: Value | None = None,
    batch: int | None = None,
    in_channels: int | None = None,
    dims: int | None = None,
    dtype: str = "float32",
    measure: Measure = Measure(),
    stdin: str | None = None,
    labels: Labels = API_LABELS,
) -> Report:
    """A stack or a whole network (``convcalc stack``): a file path, a dict in the file format,
    an inline string (``"conv k3 s2 out64; maxpool k2"``), or ``arch=``. ``input`` replaces
    the network's input; ``size`` and ``batch`` override its spatial size and batch."""
    from convcalc.engine import analyze_network

    network, label, _, _ = _network(
        stack,
        arch=arch,
        input=input,
        size=size,
        batch=batch,
        in_channels=in_channels,
        dims=dims,
        dtype=dtype,
        stdin=stdin,
        labels=labels,
    )
    return analyze_network(network, command="stack", title=label, options=measure.options(labels))


def export_stack(
    stack: str | Path | dict[str, Any] | None = None,
    *,
    arch: str | None = None,
    input: Sequence[int] | str | None = None,
    size: Value | None = None,
    batch: int | None = None,
    in_channels: int | None = None,
    dims: int | None = None,
    stdin: str | None = None,
    labels: Labels = API_LABELS,
) -> str:
    """The stack (or architecture) as a YAML spec file (``convcalc stack --export``)."""
    from convcalc.sources.stack import export_yaml

    _, _, data, shape = _network(
        stack,
        arch=arch,
        input=input,
        size=size,
        batch=batch,
        in_channels=in_channels,
        dims=dims,
        dtype="float32",
        stdin=stdin,
        labels=labels,
    )
    return export_yaml(data, shape)


_stack = stack  # analyze_stack's parameter is also called ``stack``


def architectures() -> dict[str, str]:
    """The built-in architectures and what each is (``convcalc stack --list-archs``)."""
    from convcalc.sources.archs import DESCRIPTIONS

    return dict(DESCRIPTIONS)


def analyze_stack(
    stack: str | Path | dict[str, Any] | None = None,
    *,
    arch: str | None = None,
    input: Sequence[int] | str | None = None,
    dtype: str = "float32",
    measure_on: str = "auto",
    train: bool = False,
    time: bool = False,
) -> Report:
    """A stack, as ``convcalc stack`` measures it (the API's name for :func:`stack`)."""
    if isinstance(stack, str) and not _is_file(stack) and arch is None and input is None:
        raise SpecError("input", "an inline stack needs input=(N, C, size...)")
    if input is not None and (isinstance(input, str) or not all(isinstance(v, int) for v in input)):
        raise SpecError("input", f"input {input!r} must be a sequence of integers (N, C, ...)")
    return _stack(
        stack,
        arch=arch,
        input=input,
        dtype=dtype,
        measure=Measure(measure_on, train, time),
    )


def model(
    module: Any,
    input: Sequence[int] = (1, 3, 224, 224),
    *,
    dtype: str = "float32",
    kwargs: str | None = None,
    measure_on: str = "cpu",
) -> Report:
    """A model (``convcalc model``): an ``nn.Module``, or a target: ``"package.mod:Attr"``
    (with ``kwargs`` like ``"num_classes=10"``; pretrained weights are never downloaded),
    ``"file.py:Attr"``, ``"timm:NAME"``, a TorchScript or an ONNX file. ``measure_on="meta"``
    counts on torch's meta device (shapes only: no receptive field)."""
    from convcalc.engine import analyze_model

    if isinstance(input, str) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in input
    ):
        raise SpecError("input", f"input {input!r} must be positive integers (N, C, ...)")
    if not isinstance(module, str) and not hasattr(module, "named_modules"):
        raise SpecError("module", f"module {module!r} must be an nn.Module or 'package.mod:Attr'")
    if _plain(measure_on) not in ("cpu", "meta"):
        raise SpecError(
            "measure_on", f"--measure-on {_plain(measure_on)!r} must be cpu or meta for a model"
        )
    return analyze_model(
        module, tuple(input), dtype=_plain(dtype), kwargs=kwargs, device=_plain(measure_on)
    )


analyze_module = model


# --- sweeps ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One spec of a sweep: its report, or its error. ``index``: the spec's place in the sweep
    from 0 (stable across shards: what --resume and --merge go by); ``line``: its line in the
    file."""

    line: int
    spec: dict[str, Any]
    report: Report | None
    error: str | None
    index: int = -1

    def to_dict(self) -> dict[str, Any]:
        if self.report is None:
            return {"line": self.line, "index": self.index, "error": self.error, "spec": self.spec}
        return {"line": self.line, "index": self.index, **self.report.to_dict()}


def read_sweep(text: str, source: str) -> list[Any]:
    """The specs of a sweep file's text (JSONL or CSV); none at all is invalid input."""
    from convcalc.sources.batch import read_specs

    return read_specs(text, source)


def iter_sweep(lines: Iterable[str], source: str) -> Iterator[Any]:
    """The specs of a sweep file, streamed from its lines (an open file): memory stays flat."""
    from convcalc.sources.batch import iter_specs

    return iter_specs(lines, source)


def sweep_grid(
    axes: str | dict[str, list[Any]], base: dict[str, Any] | None = None
) -> Iterator[Any]:
    """The specs of a Cartesian product, ``"kernel=1,3,5 stride=1,2 groups=1,in"`` (as
    ``batch --grid``) or a dict of key -> values, each over ``base`` (``{"in": 64, "size": 56}``);
    a value naming a key is that key's value. An unknown key or an empty list is invalid input,
    raised before the first spec."""
    from convcalc.sources.batch import expand_grid, parse_grid

    parsed = parse_grid(axes) if isinstance(axes, str) else {k: list(v) for k, v in axes.items()}
    specs = expand_grid(parsed, dict(base or {}))
    first = next(specs)  # validates the axes now, not at the first spec
    return itertools.chain([first], specs)


def jobs_count(jobs: int | str) -> int:
    """``jobs``: a number of worker processes, or "auto" (the cores)."""
    import os

    if str(jobs).strip().lower() == "auto":
        return max(1, os.cpu_count() or 1)
    text = str(jobs).strip()
    if isinstance(jobs, bool) or not text.isdigit() or int(text) < 1:
        raise SpecError("jobs", f"--jobs {jobs!r} must be a whole number from 1, or auto")
    return int(text)


def sweep(
    specs: Iterable[Any] | str,
    *,
    dtype: str = "float32",
    measure: Measure = Measure(measure_on="meta", memory=False),
    labels: Labels = API_LABELS,
    jobs: int | str = 1,
    shard: str | tuple[int, int] | None = None,
) -> Iterator[Record]:
    """Each spec's result (``convcalc batch``), in input order, streamed. ``specs``: the text
    of a JSONL/CSV sweep, what :func:`read_sweep`, :func:`iter_sweep` or :func:`sweep_grid`
    give, or spec dicts (``{"in": 64, "out": 128, "kernel": 3, "size": 56}``). ``jobs``: worker
    processes (each imports torch once; "auto": the cores); ``shard``: ``"I/N"`` or ``(I, N)``,
    every N-th spec from the I-th (by index), for one machine's share of a sweep. By default
    memory (saved for backward, inference peak) is by formula only: ``Measure(memory=True)``
    measures it too, at about twice the time per spec."""
    from convcalc.sources.batch import in_shard, iter_specs, parse_shard, run

    options = measure.options(labels)
    workers = jobs_count(jobs)
    where = parse_shard(shard) if isinstance(shard, str) else shard
    if where is not None:
        parse_shard(f"{where[0]}/{where[1]}")
    source = (
        iter_specs(specs.splitlines(keepends=True), "specs")
        if isinstance(specs, str)
        else _as_specs(specs)
    )
    for spec, report, problem in run(in_shard(source, where), _plain(dtype), options, workers):
        yield Record(spec.line, spec.data, report, problem, spec.index)


def _as_specs(items: Iterable[Any]) -> Iterator[Any]:
    from convcalc.sources.batch import Spec

    for index, item in enumerate(items):
        yield Spec(index + 1, dict(item), index) if isinstance(item, dict) else item


# --- solve -------------------------------------------------------------------------------------


def solve(
    *,
    size: Value = DEFAULT_SIZE,
    target: Value = "",
    kernel: Value = 3,
    stride: Value | None = None,
    padding: Value | None = None,
    dilation: Value | None = None,
    output_padding: Value | None = None,
    vary: str = "padding",
    transpose: bool = False,
    inverse_of: str | None = None,
    dims: int = 2,
    limit: int = 10,
) -> Any:
    """The paddings (and, with ``vary``, strides, dilations, output paddings) that take
    ``size`` to ``target`` (``convcalc solve``), each checked on the real layer."""
    from convcalc.core.solve import run_solve
    from convcalc.measure.verify import verify_answers

    def text(value: Value | None, name: str) -> str | None:
        return None if value is None else str(_text(value, name))

    solution = run_solve(
        size=str(_text(size, "size")),
        target=str(_text(target, "target")) if target != "" else "",
        kernel=str(_text(kernel, "kernel")),
        stride=text(stride, "stride"),
        padding=text(padding, "padding"),
        dilation=text(dilation, "dilation"),
        output_padding=text(output_padding, "output_padding"),
        vary=vary,
        transpose=_flag(transpose, "transpose"),
        inverse_of=inverse_of,
        dims=_integer(dims, "dims"),
        limit=_integer(limit, "limit"),
    )
    for axis, (question, answers) in enumerate(zip(solution.questions, solution.answers)):
        checks = verify_answers(solution.transposed, solution.dims, axis, question.size, answers)
        solution.answers[axis] = [
            replace(answer, verified=ok) for answer, ok in zip(answers, checks)
        ]
    return solution


# --- pictures ----------------------------------------------------------------------------------


def draw_conv(
    spec: ConvSpec,
    *,
    size: Value = 7,
    at: Sequence[int] | None = None,
    steps: int = 1,
    note: str = "",
    labels: Labels = API_LABELS,
) -> Any:
    """The picture of one conv layer (``convcalc draw conv|dw|dilated|transpose``)."""
    from convcalc.core.picture import conv_picture
    from convcalc.kinds import check_fits

    input_spec = build_input(
        dims=spec.dims, channels=spec.in_channels, size=_text(size, "size"), labels=labels
    )
    check_fits(spec, input_spec, labels)
    if _integer(steps, "steps") < 1:
        raise SpecError("steps", f"--steps {steps} must be a positive integer")
    picture = conv_picture(spec, input_spec.size, steps=steps, at=list(at) if at else None)
    if at is not None and (not picture.frames or picture.frames[0].position != tuple(at)):
        raise SpecError("at", f"--at {','.join(map(str, at))}: no such position in this layer")
    if note:
        picture.notes.insert(0, note)
    return picture


def draw_stack(
    stack: str | Path | dict[str, Any] | None = None,
    *,
    arch: str | None = None,
    input: Sequence[int] | str | None = None,
    stdin: str | None = None,
    labels: Labels = API_LABELS,
) -> Any:
    """The receptive field of a stack (``convcalc draw stack``): its growth layer by layer, and
    the field of its last spatial layer's central output on the input."""
    from convcalc.core.picture import stack_field

    network, label, _, _ = _network(
        stack,
        arch=arch,
        input=input,
        size=None,
        batch=None,
        in_channels=None,
        dims=None,
        dtype="float32",
        stdin=stdin,
        labels=labels,
    )
    try:
        return stack_field(network, label)
    except ValueError as error:
        raise ConvcalcError(str(error)) from None
