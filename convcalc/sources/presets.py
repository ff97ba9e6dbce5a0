"""The conv kinds of the source documents as chains of layer specs, with the documents' defaults,
and the ratios that settle which is cheaper. Pure: no torch, no Rich."""

from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction
from typing import Any

from convcalc._dataclass import dataclass
from convcalc.core.spec import Labels
from convcalc.errors import SpecError
from convcalc.kinds import ACTIVATIONS, ActSpec, ConvSpec, LayerSpec, NormSpec, build_conv

ACT_CHOICES = ("none", *ACTIVATIONS)


@dataclass(frozen=True)
class Block:
    """Batch norm and activation to put after each convolution of a preset."""

    bn: bool = False
    act: str = "none"
    negative_slope: float = 0.01


def check_act(act: str) -> None:
    if act not in ACT_CHOICES:
        raise SpecError("act", f"--act {act!r} must be one of {', '.join(ACT_CHOICES)}")


def _with_block(conv: ConvSpec, block: Block, suffix: str) -> list[LayerSpec]:
    layers: list[LayerSpec] = [conv]
    if block.bn:
        layers.append(NormSpec(conv.out_channels, conv.dims, name=f"bn{suffix}"))
    if block.act != "none":
        layers.append(
            ActSpec(
                block.act,
                conv.dims,
                conv.out_channels,
                block.negative_slope,
                name=f"{block.act}{suffix}",
            )
        )
    return layers


def depthwise_separable(
    *,
    dims: int,
    in_channels: int,
    out_channels: int,
    kernel: str = "3",
    stride: str = "1",
    padding: str = "1",
    dilation: str = "1",
    multiplier: int = 1,
    bias: bool = True,
    block: Block = Block(),
    labels: Labels | None = None,
) -> list[LayerSpec]:
    """A depthwise conv (groups = in, ``multiplier`` filters per channel), then a pointwise 1x1."""
    labels = labels or Labels()
    if multiplier < 1:
        raise SpecError("multiplier", f"--multiplier {multiplier} must be a positive integer")
    depthwise = build_conv(
        dims=dims,
        in_channels=in_channels,
        out_channels=in_channels * multiplier,
        kernel=kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=in_channels,
        bias=bias,
        name="depthwise",
        labels=labels,
    )
    pointwise = build_conv(
        dims=dims,
        in_channels=in_channels * multiplier,
        out_channels=out_channels,
        kernel="1",
        bias=bias,
        name="pointwise",
        labels=labels,
    )
    return [*_with_block(depthwise, block, "1"), *_with_block(pointwise, block, "2")]


def single(conv: ConvSpec, block: Block) -> list[LayerSpec]:
    return _with_block(conv, block, "")


def dilated_padding(
    kernel: tuple[int, ...], dilation: tuple[int, ...], stride: tuple[int, ...]
) -> str:
    """Padding that keeps the size: ``d(k-1)/2`` each side when that is whole; torch's ``same``
    (one more on the right) when it is not and the stride is 1; else ``floor(d(k-1)/2)``."""
    totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
    if all(t % 2 == 0 for t in totals):
        return "x".join(str(t // 2) for t in totals)
    if all(s == 1 for s in stride):
        return "same"
    return "x".join(str(t // 2) for t in totals)


def global_depthwise(
    *,
    dims: int,
    channels: int,
    size: tuple[int, ...],
    bias: bool,
    block: Block,
    labels: Labels | None = None,
) -> list[LayerSpec]:
    """GDConv: a depthwise conv whose kernel is the whole input, giving 1 value per channel."""
    conv = build_conv(
        dims=dims,
        in_channels=channels,
        out_channels=channels,
        kernel="x".join(map(str, size)),
        groups=channels,
        bias=bias,
        name="gdconv",
        labels=labels,
    )
    return _with_block(conv, block, "")


def standard_like(conv: ConvSpec) -> ConvSpec:
    """The same layer with groups = 1: the baseline grouped and depthwise layers are cut from."""
    return replace(conv, groups=1, name="standard")


# --- ratios -------------------------------------------------------------------------------------


def ratio(numerator: int | None, denominator: int | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def grouped_theory(groups: int) -> Fraction:
    """The documents' theory: a grouped conv has 1/g of the parameters and compute."""
    return Fraction(1, groups)


def separable_theory(out_channels: int, kernel: tuple[int, ...]) -> Fraction:
    """The documents' theory for depthwise separable vs standard: ``1/N + 1/K²`` (K² = ∏k)."""
    return Fraction(1, out_channels) + Fraction(1, math.prod(kernel))


def grouped_explanation(conv: ConvSpec) -> dict[str, Any]:
    """Why the measured parameter ratio of a grouped conv is not exactly 1/g: the bias."""
    taps = math.prod(conv.kernel_size)
    standard_weights = conv.out_channels * conv.in_channels * taps
    grouped_weights = conv.out_channels * (conv.in_channels // conv.groups) * taps
    bias = conv.out_channels if conv.bias else 0
    text = (
        f"weights shrink by exactly 1/{conv.groups} ({grouped_weights:,} / "
        f"{standard_weights:,}); "
        + (
            f"the {bias:,} bias terms do not shrink, so the parameter ratio is "
            f"({grouped_weights:,} + {bias:,}) / ({standard_weights:,} + {bias:,})"
            if bias
            else "without bias the parameter ratio is exactly 1/g"
        )
    )
    return {
        "weights_ratio": grouped_weights / standard_weights,
        "why": text,
    }
