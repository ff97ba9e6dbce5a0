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

from .engine import Options, analyze_model, analyze_network
from .engine import analyze as _analyze_spec
from .errors import SpecError
from .report import Report
from .spec import Labels, build_conv, build_input

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


def _text(value: Value) -> int | str:
    return value if isinstance(value, int | str) else "x".join(str(v) for v in value)


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
        dims=dims,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel=_text(kernel),
        stride=_text(stride),
        padding=_text(padding),
        dilation=_text(dilation),
        groups=groups,
        bias=bias,
        transpose=transpose,
        output_padding=_text(output_padding),
        padding_mode=padding_mode,
        labels=API_LABELS,
    )
    input_spec = build_input(
        dims=dims,
        channels=in_channels,
        size=_text(size),
        batch=batch,
        dtype=dtype,
        labels=API_LABELS,
    )
    options = Options(measure_on=measure_on, train=train, time=time, device=device)
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
    from .archs import ARCHITECTURES
    from .stack import build_network, load_text, parse_inline

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
        data, label = load_text(path.read_text(encoding="utf-8"), str(path)), path.name
    elif isinstance(stack, str):
        if input is None:
            raise SpecError("input", "an inline stack needs input=(N, C, size...)")
        data, label = {"layers": parse_inline(stack)}, "inline"
    else:
        raise SpecError("stack", "give a stack (path, dict or inline string) or arch=")
    network = build_network(data, tuple(input) if input else None, dtype, label)
    options = Options(measure_on=measure_on, train=train, time=time)
    return analyze_network(network, title=label, options=options)


def analyze_module(
    module: Any, input: Sequence[int] = (1, 3, 224, 224), *, dtype: str = "float32"
) -> Report:
    """A model, as ``convcalc model`` measures it: an ``nn.Module`` or ``"package.mod:Attr"``."""
    return analyze_model(module, tuple(input), dtype=dtype)
