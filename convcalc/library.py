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
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from convcalc._dataclass import dataclass
from convcalc.choices import API_LABELS, Measure, plain
from convcalc.core.spec import DEFAULT_SIZE, InputSpec, Labels, build_input
from convcalc.errors import ConvcalcError, SpecError

if TYPE_CHECKING:  # the library is light to import: the CLI imports it to build its options
    from convcalc.core.report import Comparison, Report
    from convcalc.kinds import ConvSpec
    from convcalc.sources.batch import Held

Value = int | str | Sequence[int]

#: measure as convcalc conv does; a sweep measures on the meta device by default
DEFAULT_MEASURE = Measure()
SWEEP_MEASURE = Measure(measure_on="meta", memory=False)


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


_INTS = ("in_channels", "out_channels", "groups", "dims")
_FLAGS = ("bias", "transpose")
_SHAPES = ("kernel", "stride", "padding", "dilation", "output_padding")


def _conv_spec(labels: Labels, **values: Any) -> ConvSpec:
    """A conv layer's spec from Python values (3, (3, 5) or "3x5" per dimension), each checked
    for its type first, then by the spec's own rules."""

    from convcalc.kinds import build_conv

    for key, value in values.items():
        if key in _INTS:
            values[key] = _integer(value, key)
        elif key in _FLAGS:
            values[key] = _flag(value, key)
        elif key in _SHAPES:
            values[key] = _text(value, key)
    if "padding_mode" in values:
        values["padding_mode"] = plain(values["padding_mode"])
    return build_conv(labels=labels, **values)


def _keep_size(kernel: Value, dilation: Value, stride: Value, dims: int, labels: Labels) -> str:
    """The padding that keeps the size (the presets' default): see presets.dilated_padding."""
    from convcalc.core.spec import parse_ints
    from convcalc.sources.presets import dilated_padding

    return dilated_padding(
        parse_ints(_text(kernel, "kernel"), dims, "kernel_size", labels),
        parse_ints(_text(dilation, "dilation"), dims, "dilation", labels),
        parse_ints(_text(stride, "stride"), dims, "stride", labels),
    )


def _input(
    dims: int, channels: int, size: Value, batch: int, dtype: str, labels: Labels
) -> InputSpec:
    return build_input(
        dims=_integer(dims, "dims"),
        channels=channels,
        size=_text(size, "size"),
        batch=_integer(batch, "batch"),
        dtype=plain(dtype),
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
    measure: Measure = DEFAULT_MEASURE,
    labels: Labels = API_LABELS,
) -> Report:
    """One conv layer (``convcalc conv``): every figure measured and by formula."""
    from convcalc.engine import analyze_chain

    spec = _conv_spec(
        labels,
        dims=dims,
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

    act = plain(block.act).lower()
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
    measure: Measure = DEFAULT_MEASURE,
    labels: Labels = API_LABELS,
) -> Report:
    """Depthwise separable (``convcalc dw``): a depthwise conv (groups = in) then a pointwise
    1x1. The padding keeps the size by default, for any kernel and dilation."""
    from convcalc.sources.presets import depthwise_separable

    input_spec = _input(dims, in_channels, size, batch, dtype, labels)
    if padding is None:
        padding = _keep_size(kernel, dilation, stride, dims, labels)
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
    measure: Measure = DEFAULT_MEASURE,
    labels: Labels = API_LABELS,
) -> Report:
    """Pointwise (``convcalc pw``): a 1x1 convolution that mixes channels only."""
    from convcalc.sources.presets import single

    input_spec = _input(dims, in_channels, size, batch, dtype, labels)
    spec = _conv_spec(
        labels,
        dims=dims,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel="1",
        bias=(not block.bn) if bias is None else bias,
        name="pointwise",
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
    measure: Measure = DEFAULT_MEASURE,
    labels: Labels = API_LABELS,
) -> Report:
    """A grouped conv (``convcalc group``) with its ratio to the standard conv: measured, by
    formula and by the documents' theory (1/g)."""
    from convcalc.engine import analyze_grouped

    spec = _conv_spec(
        labels,
        dims=dims,
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
    measure: Measure = DEFAULT_MEASURE,
    labels: Labels = API_LABELS,
) -> Report:
    """A dilated conv (``convcalc dilated``) whose padding keeps the size when it can, beside
    the same kernel undilated."""
    from convcalc.engine import analyze_dilated

    if padding is None:
        padding = _keep_size(kernel, dilation, stride, dims, labels)
    spec = _conv_spec(
        labels,
        dims=dims,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel=kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        bias=bias,
        name="dilated",
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
    measure: Measure = DEFAULT_MEASURE,
    labels: Labels = API_LABELS,
) -> Report:
    """A transposed conv (``convcalc transpose``); by default k4 s2 p1, a 2x upsampling."""

    spec = _conv_spec(
        labels,
        dims=dims,
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
    measure: Measure = DEFAULT_MEASURE,
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
    measure: Measure = DEFAULT_MEASURE,
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
        return _stdin_stack(stdin or ""), "<stdin>"
    if not stack.strip():
        raise SpecError("source", "the stack is empty: give a file, - for stdin, or layers")
    if _is_file(stack):
        return load_text(read_source(Path(stack), stack), stack), Path(stack).name
    return None, "inline"


def _stdin_stack(text: str) -> dict[str, Any] | None:
    """Standard input's stack: a stack file's data, or None for inline layers (the same
    grammar as on the command line, with a new line as good as ';'); text that is neither is
    an error naming both forms."""
    from convcalc.core.grammar import STDIN_FILE, STDIN_INLINE, looks_inline
    from convcalc.sources.stack import parse_text

    if not text.strip():
        raise SpecError("source", f"<stdin>: empty: give {STDIN_FILE} or {STDIN_INLINE}")
    if looks_inline(text):
        return None
    data = parse_text(text, "<stdin>")  # a stack file with an error in it: says where
    if not isinstance(data, dict) or "layers" not in data:
        raise SpecError("source", f"<stdin>: neither {STDIN_FILE} nor {STDIN_INLINE}")
    return data


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
    from convcalc.core.grammar import parse_inline, parse_input
    from convcalc.sources.stack import build_network, network_input

    data, label = stack_source(stack, arch, stdin=stdin, labels=labels)
    shape = None
    if input is not None:
        shape = parse_input(input if isinstance(input, str) else list(input), "--input")
    given = [
        option
        for option, value in (
            ("--size", size),
            ("--batch", batch),
            ("--in", in_channels),
            ("--dims", dims),
        )
        if value is not None
    ]
    if data is None:  # inline (on the command line, or on stdin with "-")
        data = {"layers": parse_inline(stdin or "" if stack == "-" else str(stack))}
        if shape is not None and given:
            raise SpecError(
                "input",
                f"{given[0]} does not go with --input: an inline stack's input is either --input "
                "or --batch/--in/--size/--dims",
            )
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
        if shape is not None and given:
            raise SpecError(
                "input",
                f"{given[0]} does not go with --input: --input replaces the whole input of a "
                "stack file or --arch; --batch/--size/--dims change only part of it",
            )
        shape = network_input(data, shape, size, batch, dims, label, labels)
    network = build_network(data, shape, plain(dtype), label)
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
    measure: Measure = DEFAULT_MEASURE,
    stdin: str | None = None,
    labels: Labels = API_LABELS,
) -> Report:
    """A stack or a whole network (``convcalc stack``): a file path, a dict in the file format,
    an inline string (``"conv k3 s2 out64; maxpool k2"``), or ``arch=``. ``input`` replaces
    the network's input; ``size`` and ``batch`` override its spatial size and batch."""
    from convcalc.core.memo import held
    from convcalc.engine import analyze_network

    with held():  # the builder and the analysis share each layer's figures (core.memo)
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
        return analyze_network(
            network, command="stack", title=label, options=measure.options(labels)
        )


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
    input: Sequence[int] | None = None,
    *,
    inputs: Sequence[Any] | Mapping[str, Any] | None = None,
    dtype: str = "float32",
    kwargs: str | None = None,
    measure_on: str = "cpu",
    measure: Measure | None = None,
) -> Report:
    """A model (``convcalc model``): an ``nn.Module``, or a target: ``"package.mod:Attr"``
    (with ``kwargs`` like ``"num_classes=10"``; pretrained weights are never downloaded),
    ``"file.py:Attr"``, ``"timm:NAME"``, a TorchScript or an ONNX file. ``measure_on="meta"``
    counts on torch's meta device (shapes only: no receptive field). ``measure``: its
    time, device, min run time and roofline fields apply (--time, --roofline).

    ``input``: the shape of the one float tensor forward takes (default (1, 3, 224, 224)).
    ``inputs`` (instead of ``input``): every argument of forward, in order, each a shape
    (a float tensor in ``dtype``), a ``(shape, dtype)`` pair (``((1, 128), "int64")``;
    dtypes float32, float16, bfloat16, int64, int32, bool, or torch's dtype objects), a
    :class:`ModelInput` (``ModelInput((1, 128), "bool", name="mask")`` is passed as
    ``mask=``), or the command line's text (``"mask=1,128:bool"``); or a dict of keyword
    inputs (``{"x": (1, 3, 32, 32), "mask": ((1, 128), "bool")}``). Positional inputs come
    before keyword ones, each keyword once. Integer and boolean inputs are zeros (a valid
    index of any embedding; forward's control flow reading them sees zeros). ``input_shape``
    in the report is the first input's; JSON's ``inputs`` lists them all. The CLI's repeated
    ``--input`` is this."""
    from convcalc.core.modelinput import model_inputs
    from convcalc.engine import analyze_model

    if inputs is not None:
        if input is not None:
            raise SpecError("input", "give input= (one shape) or inputs= (every input), not both")
        return analyze_model(
            module,
            (),
            dtype=plain(dtype),
            kwargs=kwargs,
            device=_model_device(module, measure_on),
            options=None if measure is None else measure.options(),
            inputs=model_inputs(inputs, "inputs"),
        )
    input = (1, 3, 224, 224) if input is None else input
    if isinstance(input, str) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in input
    ):
        raise SpecError("input", _model_input_error(input))
    return analyze_model(
        module,
        tuple(input),
        dtype=plain(dtype),
        kwargs=kwargs,
        device=_model_device(module, measure_on),
        options=None if measure is None else measure.options(),
    )


def _model_device(module: Any, measure_on: str) -> str:
    """``measure_on`` of :func:`model`, checked with its module."""
    if not isinstance(module, str) and not hasattr(module, "named_modules"):
        raise SpecError("module", f"module {module!r} must be an nn.Module or 'package.mod:Attr'")
    if plain(measure_on) not in ("cpu", "meta"):
        raise SpecError(
            "measure_on", f"--measure-on {plain(measure_on)!r} must be cpu or meta for a model"
        )
    return plain(measure_on)


analyze_module = model


def _shape_text(value: Any) -> str:
    """A short text of one given input: a tensor or array by its shape (never its values), a
    sequence as written, anything else by its type."""
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"a {type(value).__name__} of shape {tuple(int(v) for v in shape)}"
    if isinstance(value, list | tuple) and len(value) <= 8:
        return "(" + ", ".join(_shape_text(v) for v in value) + ")"
    if isinstance(value, int | str | float) or value is None:
        return repr(value)[:40]
    return f"a {type(value).__name__}"


def _model_input_error(input: Any) -> str:
    """The one line refusing a model's ``input`` that is not one shape of positive integers:
    shapes, never tensors' values; several inputs named as such (a model takes one)."""
    shown = _shape_text(input)
    several = (
        isinstance(input, list | tuple)
        and len(input) > 1
        and all(isinstance(v, list | tuple) or hasattr(v, "shape") for v in input)
    )
    if several:
        return (
            f"input {shown} gives {len(input)} inputs: input= is the shape of one input "
            "tensor, like (1, 3, 224, 224); a forward of several takes inputs=[shape, ...]"
        )
    return f"input {shown} must be positive integers (N, C, ...): one shape"


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
    #: the spec's line as written, when it could not be read as a spec (not JSON, not an
    #: object: ``spec`` then holds only ``__error__``); None otherwise
    text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.report is None:
            data = {"line": self.line, "index": self.index, "error": self.error, "spec": self.spec}
            if self.text is not None:  # added beside spec (the schema is additive)
                data["text"] = self.text
            return data
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
    measure: Measure = SWEEP_MEASURE,
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
    check_sweep_measure(measure, labels)  # before the first spec, as the CLI does
    return _sweep(specs, dtype=dtype, measure=measure, labels=labels, jobs=jobs, shard=shard)


def check_sweep_measure(measure: Measure, labels: Labels = API_LABELS) -> None:
    """A sweep's measuring options that would run and give nothing: timing (``time``) on the
    meta device (``measure_on`` "meta", the sweep's default), where nothing runs to be timed.
    SpecError("time", ...), naming the options as ``labels`` does (the CLI: --time,
    --measure-on)."""
    on = plain(measure.measure_on)
    if measure.time is True and not measure.formula_only and on == "meta":
        if labels["measure_on"].startswith("--"):
            raise SpecError(
                "time",
                "--time needs a real run, and --measure-on meta (batch's default) runs "
                "nothing: add --measure-on auto or cpu",
            )
        raise SpecError(
            "time",
            f"time needs a real run, and {labels['measure_on']} 'meta' (the sweep's default) "
            "runs nothing: give Measure(measure_on='auto') or 'cpu'",
        )


def _sweep(
    specs: Iterable[Any] | str,
    *,
    dtype: str,
    measure: Measure,
    labels: Labels,
    jobs: int | str,
    shard: str | tuple[int, int] | None,
) -> Iterator[Record]:
    from convcalc.engine import with_peaks
    from convcalc.sources.batch import in_shard, iter_specs, parse_shard, run

    options = with_peaks(measure.options(labels), plain(dtype))
    workers = jobs_count(jobs)
    where = parse_shard(shard) if isinstance(shard, str) else shard
    if where is not None:
        parse_shard(f"{where[0]}/{where[1]}")
    source = (
        iter_specs(specs.splitlines(keepends=True), "specs")
        if isinstance(specs, str)
        else _as_specs(specs)
    )
    for spec, report, problem in run(in_shard(source, where), plain(dtype), options, workers):
        yield Record(spec.line, spec.data, report, problem, spec.index, getattr(spec, "text", None))


def _as_specs(items: Iterable[Any]) -> Iterator[Any]:
    from convcalc.sources.batch import Spec

    for index, item in enumerate(items):
        yield Spec(index + 1, dict(item), index) if isinstance(item, dict) else item


def sweep_file(source: str | Path) -> Iterator[Any]:
    """The specs of a sweep file (JSONL or CSV), streamed; ``"-"``: standard input. A file
    that cannot be read, or is not UTF-8, is invalid input (raised when it is read)."""
    import sys

    from convcalc.sources.batch import file_lines, iter_specs, stream_lines

    if str(source) == "-":
        return iter_specs(stream_lines(sys.stdin, "<stdin>"), "<stdin>")
    return iter_specs(file_lines(Path(source), str(source)), str(source))


def sweep_axes(
    grid: str | None = None, grid_file: str | Path | None = None
) -> dict[str, list[Any]]:
    """The axes of a grid (what :func:`sweep_grid` takes): ``grid`` as ``batch --grid``
    writes it, or ``grid_file``, YAML (a list is an axis, anything else fixed); one of them."""
    from convcalc.sources.batch import grid_axes

    return grid_axes(grid, None if grid_file is None else Path(grid_file), read_source)


def sweep_size(
    source: str | Path | None,
    axes: dict[str, list[Any]] | None = None,
    shard: str | tuple[int, int] | None = None,
    done: int = 0,
) -> int | None:
    """How many specs a sweep of ``source`` (a file) or of ``axes`` (a grid) runs, in
    ``shard``, after the ``done`` a results file holds: None when that is not known before
    it runs (standard input, an unreadable file)."""
    from convcalc.sources.batch import parse_shard, planned_count

    where = parse_shard(shard) if isinstance(shard, str) else shard
    return planned_count(None if source is None else str(source), axes, where, done)


def _batch_csv_header() -> str:
    from convcalc.output.formats import BATCH_COLUMNS

    return ",".join(BATCH_COLUMNS) + "\n"


def _results_format(format: Any, option: str) -> str:
    text = plain(format).lower()
    if text not in ("jsonl", "csv", "json"):
        raise SpecError(option, f"{option} {format!r} must be jsonl, csv or json")
    return text


def _cli_words(labels: Labels) -> bool:
    """Whether ``labels`` name the CLI's options (``--measure-on``), not the API's parameters."""
    return labels["measure_on"].startswith("--")


@contextmanager
def _worded(labels: Labels) -> Iterator[None]:
    """The results files' refusals (sources.batch speaks the CLI's words: ``--resume PATH:``,
    ``--merge:``, ``--format csv``, ``--formula-only``) in the Python API's when ``labels``
    are the API's: ``path PATH:``, ``merge:``, ``format='csv'``, ``formula_only``, and
    ``resume()`` for the advice to resume; the CLI's labels keep the messages as they are."""
    try:
        yield
    except SpecError as error:
        if _cli_words(labels):
            raise
        raise SpecError(error.field, _api_words(error.message)) from None


def _api_words(message: str) -> str:
    import re

    text = re.sub(r"^--resume (?!appends)", "path ", message)
    text = text.replace("--format jsonl or csv", "format='jsonl' or 'csv'")
    text = re.sub(r"--format (jsonl|csv|json)\b", r"format='\1'", text)
    text = re.sub(r"--resume\b", "resume()", text)
    return re.sub(r"--([a-z][a-z-]*)", lambda m: m[1].replace("-", "_"), text)


def held(
    path: str | Path,
    specs: Iterable[Any] | str,
    *,
    format: str | None = None,
    dtype: str = "float32",
    measure: Measure = SWEEP_MEASURE,
    shard: str | tuple[int, int] | None = None,
    labels: Labels = API_LABELS,
) -> Held:
    """What a results file (``batch --resume``'s RESULTS) already holds of this sweep, checked
    before anything is written: a ``convcalc.sources.batch.Held`` with ``count`` (its complete
    records: this sweep's first specs, in order), ``failed`` (its error records), ``keep``
    (its bytes up to the last complete line: a truncated last line is dropped), ``format``
    and ``rest`` (the sweep's specs after those held: what is left to run). ``specs`` as
    :func:`sweep` takes them; ``format``: what this run writes, "jsonl" (the default, also
    for a new file) or "csv". A file of another sweep (other specs, shard, dtype, or options
    such as formula-only or memory), of another format, or not convcalc batch output raises
    SpecError("resume", ...), its message naming this function's parameters (``labels``:
    the CLI's name its options, ``--resume PATH``). A missing file holds nothing."""
    with _worded(labels):
        return _held(path, specs, format=format, dtype=dtype, measure=measure, shard=shard)


def _held(
    path: str | Path,
    specs: Iterable[Any] | str,
    *,
    format: str | None,
    dtype: str,
    measure: Measure,
    shard: str | tuple[int, int] | None,
) -> Held:
    from convcalc.sources.batch import held_records, in_shard, iter_specs, parse_shard

    fmt = "jsonl" if format is None else _results_format(format, "--format")
    if fmt == "json":
        raise SpecError("resume", "--resume appends records: it needs --format jsonl or csv")
    where = parse_shard(shard) if isinstance(shard, str) else shard
    source = (
        iter_specs(specs.splitlines(keepends=True), "specs")
        if isinstance(specs, str)
        else _as_specs(specs)
    )
    found = held_records(
        Path(path),
        fmt,
        format is not None,
        in_shard(source, where),
        plain(dtype),
        plain(measure.measure_on) != "auto",
        _batch_csv_header(),
    )
    _check_csv_formulas(found, Path(path), plain(dtype))
    return found


def resume(
    path: str | Path,
    specs: Held | Iterable[Any] | str,
    *,
    format: str | None = None,
    dtype: str = "float32",
    measure: Measure = SWEEP_MEASURE,
    labels: Labels = API_LABELS,
    jobs: int | str = 1,
    shard: str | tuple[int, int] | None = None,
) -> Generator[Record, None, None]:
    """Resume a sweep into its results file (``batch --resume``): run the specs the file
    does not hold (:func:`held`; or give what :func:`held` returned as ``specs``), append
    each record to the file as it is made (flushed; a truncated last line is cut off first,
    a new file is created) and yield it. Everything is checked before the file is touched:
    what :func:`held` checks, and that this run's first report is made with the options of
    the file's last (with nothing left to run: of the file's last spec analysed again, not
    written). Refusals name this function's parameters (``labels``: the CLI's, its options).
    Iterate to the end to run the sweep."""
    with _worded(labels):
        return _resume(path, specs, format, dtype, measure, labels, jobs, shard)


def _resume(
    path: str | Path,
    specs: Held | Iterable[Any] | str,
    format: str | None,
    dtype: str,
    measure: Measure,
    labels: Labels,
    jobs: int | str,
    shard: str | tuple[int, int] | None,
) -> Generator[Record, None, None]:
    from convcalc.sources.batch import Held, append_to

    found = (
        specs
        if isinstance(specs, Held)
        else held(
            path, specs, format=format, dtype=dtype, measure=measure, shard=shard, labels=labels
        )
    )
    exact_on = plain(measure.measure_on) != "auto"
    first = next(found.rest, None)
    if first is None:  # nothing left to run: the options are checked on the file's last spec
        _check_finished(found, Path(path), dtype, measure, labels, exact_on)
    rest = found.rest if first is None else itertools.chain([first], found.rest)
    records = sweep(rest, dtype=dtype, measure=measure, labels=labels, jobs=jobs)
    records = _checked(records, found, Path(path), exact_on)
    return _appended(records, append_to(Path(path), found.keep), found)


def _check_finished(
    found: Held, path: Path, dtype: str, measure: Measure, labels: Labels, exact_on: bool
) -> None:
    """A file that holds every spec of the sweep: its last report's spec analysed once more
    with this run's options (the record is not written), so that other options are refused
    as they are when specs are left (:func:`_checked`)."""
    from convcalc.output.formats import batch_record
    from convcalc.sources.batch import check_made

    if found.profile is None or found.last_spec is None:
        return  # nothing to compare with: no report in the file
    for record in sweep([found.last_spec], dtype=dtype, measure=measure, labels=labels):
        text = batch_record(record, found.format)
        check_made(found, text, _batch_csv_header(), exact_on, path)


def _check_csv_formulas(found: Held, path: Path, dtype: str) -> None:
    """A CSV results file's last report against what this run writes for the same spec in
    the columns set by formula alone (parameters, output shape, MACs, FLOPs, memory bytes: the
    dtype shows in the memory columns), computed here by formula (no torch): a file made with
    another --dtype is refused as another sweep's. JSONL records carry their dtype and are
    compared by it (sources.batch.held_difference)."""
    import csv

    from convcalc.output.formats import batch_record
    from convcalc.sources.batch import _not_this_sweep, signature_difference

    if found.format != "csv" or found.last_spec is None or found.last_text is None:
        return
    (record,) = sweep([found.last_spec], dtype=dtype, measure=_FORMULAS)
    if record.report is None:
        return  # the engine's refusal is reported when the spec runs (it ran before: no)
    columns = _batch_csv_header().rstrip("\n").split(",")
    held_row = dict(zip(columns, next(csv.reader([found.last_text]))))
    made_row = dict(zip(columns, next(csv.reader([batch_record(record, "csv")]))))
    keys = [key for key in columns if key in _FORMULA_COLUMNS or key.endswith("_formula")]
    difference = signature_difference(
        {key: held_row.get(key, "") for key in keys}, {key: made_row.get(key, "") for key in keys}
    )
    if difference is not None:
        raise SpecError("resume", _not_this_sweep(path, found.last_spec, difference))


#: a sweep by formula alone (the CSV check of :func:`held`), and the CSV columns beyond those
#: named *_formula that hold a formula whatever was measured
_FORMULAS = Measure(formula_only=True, memory=False)
_FORMULA_COLUMNS = ("memory_total_bytes", "forward_backward_torchsummary_bytes")


def _checked(records: Iterator[Record], found: Any, path: Path, exact_on: bool) -> Iterator[Record]:
    """The run's records, once its first report says the options that made the results
    file's last report: read ahead to that report, before anything is written."""
    from convcalc.output.formats import batch_record
    from convcalc.sources.batch import check_made

    header = _batch_csv_header()
    ahead: list[Record] = []
    if found.profile is not None:
        for record in records:
            ahead.append(record)
            if check_made(found, batch_record(record, found.format), header, exact_on, path):
                break
    return itertools.chain(ahead, records)


def _appended(
    records: Iterable[Record], stream: IO[str], found: Held
) -> Generator[Record, None, None]:
    from convcalc.output.formats import batch_footer, batch_header, batch_record

    with stream:
        if not found.count and stream.tell() == 0:
            stream.write(batch_header(found.format))
        written = 0
        for record in records:
            stream.write(batch_record(record, found.format, first=written == 0))
            stream.flush()
            written += 1
            yield record
        stream.write(batch_footer(found.format, written))
        stream.flush()


class Merged:
    """The text :func:`merge` writes, streamed: iterate it. ``format``: what it is ("jsonl",
    "csv" or "json"); ``count``: the records; ``failed``: how many are error records (known
    before the first line: the files are checked whole first)."""

    def __init__(self, lines: Iterator[str], format: str, count: int, failed: int) -> None:
        self._lines = lines
        self.format = format
        self.count = count
        self.failed = failed

    def __iter__(self) -> Merged:
        return self

    def __next__(self) -> str:
        return next(self._lines)


def merge(
    paths: Iterable[str | Path], format: str | None = None, *, labels: Labels = API_LABELS
) -> Merged:
    """Shards' results files (``batch --merge``) joined in input order, as text, streamed (a
    k-way merge: memory stays flat): in the files' format, or ``format`` ("jsonl", "csv",
    "json") when given (JSONL records become CSV rows or a JSON array; CSV rows cannot become
    JSONL). Every file is checked whole before the first line: one cut short or out of order,
    a spec twice, specs in none of the files (naming the shard missing or stopping early),
    mixed formats or not convcalc batch output raise SpecError("merge", ...), naming this
    function's parameters (``labels``: the CLI's name its options, ``--merge``)."""
    with _worded(labels):
        return _merge(paths, format)


def _merge(paths: Iterable[str | Path], format: str | None) -> Merged:
    from convcalc.sources.batch import merge_formats, merged_records

    names = [str(path) for path in paths]
    header = _batch_csv_header()
    given = None if format is None else _results_format(format, "--format")
    kind, out = merge_formats(names, given, header)
    count = failed = 0
    for _, _, bad in merged_records(names, header):  # the check: nothing is written yet
        count += 1
        failed += bad
    return Merged(_merged_text(names, header, kind, out), out, count, failed)


def _merged_text(names: list[str], header: str, kind: str, out: str) -> Iterator[str]:
    from convcalc.output.formats import batch_footer, batch_header
    from convcalc.sources.batch import merged_records

    written = 0
    yield batch_header(out)
    for _, text, _ in merged_records(names, header):
        yield _converted(text, kind, out, written == 0)
        written += 1
    yield batch_footer(out, written)


def _converted(text: str, kind: str, out: str, first: bool) -> str:
    """A record line of a ``kind`` file as merge writes it in ``out``."""
    if out == kind:
        return text
    if out == "json":
        return ("" if first else ",\n") + text.rstrip("\n")
    import json

    from convcalc.output.formats import batch_row_of

    return batch_row_of(json.loads(text))


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


@dataclass(frozen=True)
class RooflineDrawing:
    """``convcalc draw roofline``: the report's layers as points under the device's two roofs
    (a :class:`convcalc.core.roofline.RooflinePicture`), by name."""

    report: Report
    picture: Any
    names: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    agree: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        assert self.report.device is not None
        return {
            "command": "draw roofline",
            "title": self.report.title,
            "device": self.report.device.to_dict(),
            "ridge_flops_per_byte": self.picture.ridge,
            "points": [
                {
                    "name": name,
                    "intensity": point.intensity,
                    "bound": point.bound,
                    "attainable_flops_per_s": point.attainable_flops_per_s,
                    "achieved_flops_per_s": point.achieved_flops_per_s,
                }
                for name, point in zip(self.names, self.picture.points)
            ],
            "total": self.report.total.roofline,
        }


def draw_roofline(report: Report) -> RooflineDrawing:
    """The roofline picture of a report analysed with the roofline (``Measure(roofline=True)``
    or ``time=True``): one point per layer that has a roofline, measured where timed."""
    from convcalc.core.roofline import roofline_points

    if report.device is None:
        raise SpecError("roofline", "the report has no roofline: analyse it with roofline=True")
    rows = [(layer.name, layer.roofline) for layer in report.layers if layer.roofline]
    picture = roofline_points(rows, report.device)
    return RooflineDrawing(report, picture, tuple(name for name, _ in rows))
