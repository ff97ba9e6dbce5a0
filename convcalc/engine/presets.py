"""The conv kinds of the source documents side by side: grouped and dilated against their
baselines, and `compare`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from convcalc.core.report import Comparison, Pair, Report
from convcalc.core.spec import InputSpec, Labels
from convcalc.engine.network import analyze_chain
from convcalc.engine.plan import Options
from convcalc.engine.roofline import roofline_why, with_peaks
from convcalc.kinds import ConvSpec

if TYPE_CHECKING:  # imported where compare uses it: a single layer's run does not load fractions
    from fractions import Fraction

    from convcalc.kinds import LayerSpec


def _presets() -> Any:
    from convcalc.sources import presets  # only the grouped, dilated and compare analyses need it

    return presets


def _ratio_pair(
    numerator: Pair[int], denominator: Pair[int], theory: Fraction | None
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "measured": _presets().ratio(numerator.measured, denominator.measured),
        "formula": _presets().ratio(numerator.formula, denominator.formula),
    }
    if theory is not None:
        entry["theory"] = float(theory)
        entry["theory_text"] = f"{theory.numerator}/{theory.denominator}"
    return entry


def _latency_ratio(report: Report, baseline: Report) -> float | None:
    if report.total.latency_ms is None or not baseline.total.latency_ms:
        return None
    return report.total.latency_ms / baseline.total.latency_ms


def analyze_grouped(
    specs: Sequence[LayerSpec],
    input_spec: InputSpec,
    *,
    options: Options | None = None,
    labels: Labels | None = None,
) -> Report:
    """A grouped conv (with its block), and its ratio to the same conv with groups = 1."""
    options = with_peaks(options, input_spec.dtype)
    conv = specs[0]
    assert isinstance(conv, ConvSpec)
    grouped = analyze_chain(
        specs,
        input_spec,
        command="group",
        options=options,
        labels=labels,
        title=f"grouped convolution, {conv.groups} group{'s' if conv.groups != 1 else ''}",
    )
    standard = analyze_chain(
        [_presets().standard_like(conv)],
        input_spec,
        command="group",
        options=options,
        labels=labels,
    )
    layer, base = grouped.layers[0], standard.layers[0]
    theory = _presets().grouped_theory(conv.groups)
    comparison = {
        "baseline": base.spec.describe(),
        "baseline_params": base.params.to_dict(),
        "baseline_macs": base.macs.to_dict(),
        "params": _ratio_pair(layer.params, base.params, theory),
        "macs": _ratio_pair(layer.macs, base.macs, theory),
        "flops": _ratio_pair(layer.flops, base.flops, theory),
        **_presets().grouped_explanation(conv),
    }
    if options is not None and options.time:
        comparison["latency"] = {
            "measured": _presets().ratio(layer.latency_ms, base.latency_ms),
            "baseline_ms": base.latency_ms,
        }
    return replace(grouped, extra={"vs_standard": comparison})


def analyze_dilated(
    specs: Sequence[LayerSpec],
    input_spec: InputSpec,
    *,
    options: Options | None = None,
    labels: Labels | None = None,
) -> Report:
    """A dilated conv, and how its receptive field grows against the same kernel undilated."""
    options = with_peaks(options, input_spec.dtype)
    conv = specs[0]
    assert isinstance(conv, ConvSpec)
    report = analyze_chain(
        specs,
        input_spec,
        command="dilated",
        options=options,
        labels=labels,
        title=f"dilated convolution, dilation {'x'.join(map(str, conv.dilation))}",
    )
    undilated = replace(
        conv,
        dilation=tuple(1 for _ in conv.dilation),
        padding=conv.padding
        if isinstance(conv.padding, str)
        else tuple((k - 1) // 2 for k in conv.kernel_size),
        name="undilated",
    )
    base = analyze_chain([undilated], input_spec, command="dilated", options=options, labels=labels)
    layer, plain = report.layers[0], base.layers[0]
    growth = {
        "undilated": plain.spec.describe(),
        "receptive_field": {
            "dilated": layer.receptive_field.to_dict(),
            "undilated": plain.receptive_field.to_dict(),
        },
        "params": {"dilated": layer.params.measured, "undilated": plain.params.measured},
        "macs": {"dilated": layer.macs.measured, "undilated": plain.macs.measured},
        "output_shape": {
            "dilated": list(layer.output_shape.measured or ()),
            "undilated": list(plain.output_shape.measured or ()),
        },
    }
    return replace(report, extra={"vs_undilated": growth})


def compare(
    *,
    dims: int,
    in_channels: int,
    out_channels: int,
    kernel: str,
    groups: int,
    input_spec: InputSpec,
    bias: bool = True,
    options: Options | None = None,
    labels: Labels | None = None,
) -> Comparison:
    """The documents' argument settled by measurement: the same layer as a standard conv, a
    grouped conv and a depthwise-separable pair; each one's ratio to the standard."""
    from convcalc.core.spec import parse_ints
    from convcalc.kinds import build_conv

    labels = labels or Labels()
    options = with_peaks(options, input_spec.dtype)
    kernel_size = parse_ints(kernel, dims, "kernel_size", labels)
    padding = "x".join(str((k - 1) // 2) for k in kernel_size)
    standard = build_conv(
        dims=dims,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel=kernel,
        padding=padding,
        bias=bias,
        name="standard",
        labels=labels,
    )
    grouped = replace(
        build_conv(
            dims=dims,
            in_channels=in_channels,
            out_channels=out_channels,
            kernel=kernel,
            padding=padding,
            groups=groups,
            bias=bias,
            labels=labels,
        ),
        name="grouped",
    )
    separable = _presets().depthwise_separable(
        dims=dims,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel=kernel,
        padding=padding,
        bias=bias,
        labels=labels,
    )
    reports = (
        (
            "standard",
            analyze_chain(
                [standard],
                input_spec,
                command="compare",
                options=options,
                labels=labels,
                title=standard.describe(),
            ),
        ),
        (
            "grouped",
            analyze_chain(
                [grouped],
                input_spec,
                command="compare",
                options=options,
                labels=labels,
                title=grouped.describe(),
            ),
        ),
        (
            "depthwise_separable",
            analyze_chain(
                separable,
                input_spec,
                command="compare",
                options=options,
                labels=labels,
                title="depthwise + pointwise",
            ),
        ),
    )
    from fractions import Fraction

    theories = {
        "standard": Fraction(1),
        "grouped": _presets().grouped_theory(groups),
        "depthwise_separable": _presets().separable_theory(out_channels, kernel_size),
    }
    theory_text = {
        "standard": "1",
        "grouped": f"1/g = 1/{groups}",
        "depthwise_separable": (f"1/N + 1/K² = 1/{out_channels} + 1/{math.prod(kernel_size)}"),
    }
    base = reports[0][1].total
    ratios: dict[str, dict[str, Any]] = {}
    for name, report in reports:
        total = report.total
        ratios[name] = {
            "params": _ratio_pair(total.params, base.params, theories[name]),
            "macs": _ratio_pair(total.macs, base.macs, theories[name]),
            "flops": _ratio_pair(total.flops, base.flops, theories[name]),
            "memory_total": _presets().ratio(
                total.memory.measured.total if total.memory.measured else None,
                base.memory.measured.total if base.memory.measured else None,
            ),
        }
        if options is not None and options.time:
            ratios[name]["latency"] = _latency_ratio(report, reports[0][1])
    return Comparison(input_spec, reports, ratios, theory_text, why=roofline_why(reports))
