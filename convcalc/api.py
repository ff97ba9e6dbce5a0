"""The Python API: the figures convcalc prints, as report objects. Never prints, never exits;
raises :class:`convcalc.SpecError` (bad input) and :class:`convcalc.MeasurementError` (torch
refused a layer), both :class:`convcalc.ConvcalcError`.

    >>> from convcalc import analyze
    >>> report = analyze(64, 256, kernel=3, padding=1)
    >>> report["total.params"], report.agree
    (147712, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from convcalc.core.report import Report
from convcalc.core.spec import Labels, build_input
from convcalc.engine import Options, analyze_model, analyze_network
from convcalc.engine import analyze as _analyze_spec
from convcalc.errors import SpecError
from convcalc.kinds import build_conv

#: argument names, for error messages from the API
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
    }
)

Value = int | str | Sequence[int]


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


def _choice(value: Any, name: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise SpecError(name, f"{name} {value!r} must be one of {', '.join(choices)}")
    return str(value)


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
    size: Value = 224,
    batch: int = 1,
    dtype: str = "float32",
    measure_on: str = "auto",
    train: bool = False,
    time: bool = False,
    device: str = "cpu",
) -> Report:
    """One conv layer, as ``convcalc conv`` measures it. Per-dimension values as 3, (3, 5) or
    "3x5"; ``padding`` also "same" or "valid"."""
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
        padding_mode=str(padding_mode),
        labels=API_LABELS,
    )
    input_spec = build_input(
        dims=dims,
        channels=in_channels,
        size=_text(size, "size"),
        batch=_integer(batch, "batch"),
        dtype=str(dtype),
        labels=API_LABELS,
    )
    options = Options(
        measure_on=_choice(measure_on, "measure_on", ("auto", "cpu", "meta")),
        train=_flag(train, "train"),
        time=_flag(time, "time"),
        device=str(device),
    )
    return _analyze_spec(spec, input_spec, options=options, labels=API_LABELS)


def analyze_stack(
    stack: str | Path | dict[str, Any] | None = None,
    *,
    arch: str | None = None,
    input: Sequence[int] | None = None,
    dtype: str = "float32",
    measure_on: str = "auto",
    train: bool = False,
    time: bool = False,
) -> Report:
    """A stack, as ``convcalc stack`` measures it: a file path, a dict in the file format, an
    inline string (``"conv k3 s2 out64; maxpool k2"``, with ``input``), or ``arch=``."""
    from convcalc.core.grammar import parse_inline
    from convcalc.sources.archs import ARCHITECTURES
    from convcalc.sources.stack import build_network, load_text

    if arch is not None:
        if arch not in ARCHITECTURES:
            raise SpecError("arch", f"arch {arch!r} must be one of {', '.join(ARCHITECTURES)}")
        data, label = ARCHITECTURES[arch](), arch
    elif isinstance(stack, dict):
        data, label = stack, "stack"
    elif isinstance(stack, Path) or (
        isinstance(stack, str) and Path(stack).suffix.lower() in (".yaml", ".yml", ".json", ".toml")
    ):
        path = Path(stack)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or str(error)
            raise SpecError("stack", f"{path}: {reason}") from None
        data, label = load_text(text, str(path)), path.name
    elif isinstance(stack, str):
        if input is None:
            raise SpecError("input", "an inline stack needs input=(N, C, size...)")
        data, label = {"layers": parse_inline(stack)}, "inline"
    else:
        raise SpecError("stack", "give a stack (path, dict or inline string) or arch=")
    if input is not None and (isinstance(input, str) or not all(isinstance(v, int) for v in input)):
        raise SpecError("input", f"input {input!r} must be a sequence of integers (N, C, ...)")
    network = build_network(data, tuple(input) if input else None, dtype, label)
    options = Options(
        measure_on=_choice(measure_on, "measure_on", ("auto", "cpu", "meta")),
        train=_flag(train, "train"),
        time=_flag(time, "time"),
    )
    return analyze_network(network, title=label, options=options)


def analyze_module(
    module: Any, input: Sequence[int] = (1, 3, 224, 224), *, dtype: str = "float32"
) -> Report:
    """A model, as ``convcalc model`` measures it: an ``nn.Module`` or ``"package.mod:Attr"``."""
    if isinstance(input, str) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in input
    ):
        raise SpecError("input", f"input {input!r} must be positive integers (N, C, ...)")
    if not isinstance(module, str) and not hasattr(module, "named_modules"):
        raise SpecError("module", f"module {module!r} must be an nn.Module or 'package.mod:Attr'")
    return analyze_model(module, tuple(input), dtype=dtype)
