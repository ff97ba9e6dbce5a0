"""Closed-form figures of a convolution layer. Pure functions on specs and shapes; no torch.

Counting conventions (stated once, here, and in every table caption):

* **MACs**: multiply-accumulates of the convolution proper, one per kernel tap per output
  element per input channel of the group; taps that land on padding count (every tool does);
  bias is not counted. This is what fvcore calls "flops" (one fused multiply-add = one flop).
* **FLOPs**: 2 per MAC, torch.utils.flop_counter's rule. Bias is not counted either.
* **bias additions**: one per output element when the layer has a bias, reported on its own so
  every other tool's convention can be rebuilt (MACs + bias adds = torchinfo's "Mult-Adds").
* **receptive field**: per spatial dimension, how many input positions one output element
  depends on. For a transposed convolution this varies between output positions; the largest.
* **memory**: bytes of the input, the output and the parameters for the chosen dtype, and the
  forward+backward activation size as torchsummary counts it (every layer output, twice).

Each function returns a :class:`Derived`: the value and the formula with the numbers put in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from convcalc.core.memory import Memory, summary_memory
from convcalc.core.spec import (
    DTYPE_BYTES,
    ActSpec,
    AdaptivePoolSpec,
    ConvSpec,
    InputSpec,
    Ints,
    LayerSpec,
    LinearSpec,
    NormSpec,
    PoolSpec,
    padding_pairs,
    pool_output_length,
)

AXIS_NAMES = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}
MUL = "·"


T = TypeVar("T")


@dataclass(frozen=True)
class Derived(Generic[T]):
    """A figure by formula: its value and the formula instantiated with the layer's numbers."""

    value: T
    shown: str
    #: for composite figures, the formula of each part (memory: input, output, ...)
    parts: Mapping[str, str] = field(default_factory=dict)


def group(n: int) -> str:
    """``1234567`` -> ``1,234,567``."""
    return f"{n:,}"


def shape_text(shape: Sequence[int]) -> str:
    return "×".join(str(v) for v in shape)


def human_bytes(n_bytes: int) -> str:
    """Binary units, two decimals (torchsummary's "MB" are MiB): ``12845056`` -> ``12.25 MiB``."""
    if n_bytes < 2**10:
        return f"{n_bytes} B"
    for power, unit in ((5, "PiB"), (4, "TiB"), (3, "GiB"), (2, "MiB"), (1, "KiB")):
        if n_bytes >= 2 ** (10 * power):
            return f"{n_bytes / 2 ** (10 * power):,.2f} {unit}"
    raise AssertionError("unreachable")


def _per_axis(dims: int, parts: Sequence[str]) -> str:
    """One formula per spatial dimension, or one for all when they are the same."""
    if len(set(parts)) == 1:
        return parts[0] if dims == 1 else f"each: {parts[0]}"
    return "; ".join(f"{name}: {part}" for name, part in zip(AXIS_NAMES[dims], parts))


# --- output size -------------------------------------------------------------------------


def conv_output_length(n: int, k: int, s: int, left: int, right: int, d: int) -> int:
    """``floor((n + left + right - d(k-1) - 1) / s) + 1`` (torch's Conv docs, with dilation)."""
    return (n + left + right - d * (k - 1) - 1) // s + 1


def conv_transpose_output_length(n: int, k: int, s: int, p: int, d: int, op: int) -> int:
    """``(n-1)s - 2p + d(k-1) + op + 1`` (torch's ConvTranspose docs)."""
    return (n - 1) * s - 2 * p + d * (k - 1) + op + 1


def output_size(spec: ConvSpec, input_spec: InputSpec) -> Derived[Ints]:
    """Spatial output size, per dimension."""
    values: list[int] = []
    parts: list[str] = []
    for axis, (n, k, s, d, (left, right)) in enumerate(
        zip(input_spec.size, spec.kernel_size, spec.stride, spec.dilation, padding_pairs(spec))
    ):
        if spec.transposed:
            op = spec.output_padding[axis]
            value = conv_transpose_output_length(n, k, s, left, d, op)
            parts.append(f"({n}−1){MUL}{s} − 2{MUL}{left} + {d}{MUL}({k}−1) + {op} + 1 = {value}")
        else:
            value = conv_output_length(n, k, s, left, right, d)
            pad = f"2{MUL}{left}" if left == right else f"{left} + {right}"
            parts.append(f"⌊({n} + {pad} − {d}{MUL}({k}−1) − 1)/{s}⌋ + 1 = {value}")
        values.append(value)
    return Derived(tuple(values), _per_axis(spec.dims, parts))


def output_shape(spec: ConvSpec, input_spec: InputSpec) -> Derived[Ints]:
    size = output_size(spec, input_spec)
    shape = (input_spec.batch, spec.out_channels, *size.value)
    return Derived(shape, size.shown)


# --- parameters and operations -----------------------------------------------------------


def params(spec: ConvSpec) -> Derived[int]:
    """Weights ``C_out·(C_in/g)·prod(k)`` (transposed: ``C_in·(C_out/g)·prod(k)``) + bias."""
    kernel = math.prod(spec.kernel_size)
    first, second = (
        (spec.in_channels, spec.out_channels)
        if spec.transposed
        else (spec.out_channels, spec.in_channels)
    )
    weights = first * (second // spec.groups) * kernel
    bias = spec.out_channels if spec.bias else 0
    taps = MUL.join(str(k) for k in spec.kernel_size)
    shown = f"{first}{MUL}({second}/{spec.groups}){MUL}{taps}"
    shown += f" + {bias}" if spec.bias else " (no bias)"
    return Derived(weights + bias, f"{shown} = {group(weights + bias)}")


def macs(spec: ConvSpec, input_spec: InputSpec) -> Derived[int]:
    """Multiply-accumulates, bias excluded.

    A convolution does ``(C_in/g)·prod(k)`` MACs for each output element. A transposed
    convolution scatters: ``(C_out/g)·prod(k)`` MACs for each *input* element, including taps
    that padding later crops from the output (as torch and fvcore count it).
    """
    taps = math.prod(spec.kernel_size)
    taps_text = MUL.join(str(k) for k in spec.kernel_size)
    if spec.transposed:
        sites = input_spec.batch * spec.in_channels * math.prod(input_spec.size)
        per_site = (spec.out_channels // spec.groups) * taps
        sites_text = MUL.join(map(str, input_spec.shape))
        per_site_text = f"({spec.out_channels}/{spec.groups}){MUL}{taps_text}"
    else:
        out = output_shape(spec, input_spec).value
        sites = math.prod(out)
        per_site = (spec.in_channels // spec.groups) * taps
        sites_text = MUL.join(map(str, out))
        per_site_text = f"({spec.in_channels}/{spec.groups}){MUL}{taps_text}"
    value = sites * per_site
    return Derived(value, f"{sites_text}{MUL}{per_site_text} = {group(value)}")


def flops(spec: ConvSpec, input_spec: InputSpec) -> Derived[int]:
    """Two FLOPs per MAC (torch.utils.flop_counter's convention), bias excluded."""
    mac = macs(spec, input_spec).value
    return Derived(2 * mac, f"2{MUL}{group(mac)} = {group(2 * mac)}")


def bias_adds(spec: ConvSpec, input_spec: InputSpec) -> Derived[int]:
    """One addition per output element when the layer has a bias."""
    if not spec.bias:
        return Derived(0, "0 (no bias)")
    out = output_shape(spec, input_spec).value
    value = math.prod(out)
    return Derived(value, f"{MUL.join(map(str, out))} = {group(value)}")


# --- receptive field ---------------------------------------------------------------------


def conv_receptive_length(k: int, d: int) -> int:
    """A convolution output sees ``d(k-1) + 1`` consecutive input positions."""
    return d * (k - 1) + 1


def conv_transpose_receptive_length(k: int, s: int, d: int) -> int:
    """Largest input extent feeding one output of a transposed convolution.

    Output ``o`` receives input ``i`` through tap ``j`` when ``o = i·s - p + j·d``. For a fixed
    ``o`` the usable taps form one residue class modulo ``t = s/gcd(s, d)``; consecutive usable
    taps are ``t`` apart and their inputs ``d/gcd(s, d)`` apart. The widest class starts at tap 0,
    so the extent is ``floor((k-1)/t)·(d/gcd) + 1``. With ``s = 1`` this is ``d(k-1) + 1``.
    """
    g = math.gcd(s, d)
    period = s // g
    return ((k - 1) // period) * (d // g) + 1


def receptive_field(spec: ConvSpec) -> Derived[Ints]:
    values: list[int] = []
    parts: list[str] = []
    for k, s, d in zip(spec.kernel_size, spec.stride, spec.dilation):
        if spec.transposed:
            g = math.gcd(s, d)
            value = conv_transpose_receptive_length(k, s, d)
            parts.append(f"⌊({k}−1)/({s}/{g})⌋{MUL}({d}/{g}) + 1 = {value}")
        else:
            value = conv_receptive_length(k, d)
            parts.append(f"{d}{MUL}({k}−1) + 1 = {value}")
        values.append(value)
    return Derived(tuple(values), _per_axis(spec.dims, parts))


# --- memory ------------------------------------------------------------------------------


def memory(spec: ConvSpec, input_spec: InputSpec) -> Derived[Memory]:
    """Bytes of input, output and parameters for the dtype, torchsummary's accounting."""
    out = output_shape(spec, input_spec).value
    count = params(spec).value
    width = DTYPE_BYTES[input_spec.dtype]
    mem = summary_memory(math.prod(input_spec.shape), [math.prod(out)], count, width)
    parts = {
        "input": f"{MUL.join(map(str, input_spec.shape))}{MUL}{width} B = {group(mem.input)} B",
        "output": f"{MUL.join(map(str, out))}{MUL}{width} B = {group(mem.output)} B",
        "params": f"{group(count)}{MUL}{width} B = {group(mem.params)} B",
        "forward_backward": f"2{MUL}output = {group(mem.forward_backward)} B",
        "total": f"input + forward/backward + params = {group(mem.total)} B",
    }
    return Derived(mem, parts["total"], parts)


def backward_flops(spec: ConvSpec, input_spec: InputSpec) -> Derived[int]:
    """FLOPs of the backward pass: the input gradient and the weight gradient, 2 per MAC each.

    The input gradient is a transposed convolution of the output gradient with the same weights:
    every forward multiply-add has one partner, so it costs the forward MACs. The weight gradient
    correlates the input with the output gradient within each group: again one multiply-add per
    forward multiply-add, ``(C_in/g)`` input channels per output channel, not ``C_in``. Both are
    counted, as for a layer inside a network; bias gradients (sums) are not.
    """
    mac = macs(spec, input_spec).value
    total = 2 * mac + 2 * mac
    shown = (
        f"input grad 2{MUL}{group(mac)} + weight grad 2{MUL}{group(mac)} "
        f"(groups {spec.groups}) = {group(total)}"
    )
    return Derived(total, shown)


@dataclass(frozen=True)
class Figures:
    """Every figure of one layer by formula."""

    output_shape: Derived[Ints]
    params: Derived[int]
    macs: Derived[int]
    flops: Derived[int]
    bias_adds: Derived[int]
    receptive_field: Derived[Ints]
    memory: Derived[Memory]
    backward_flops: Derived[int]

    def texts(self) -> dict[str, str]:
        texts = {
            "output_shape": self.output_shape.shown,
            "params": self.params.shown,
            "macs": self.macs.shown,
            "flops": self.flops.shown,
            "bias_adds": self.bias_adds.shown,
            "receptive_field": self.receptive_field.shown,
            "backward_flops": self.backward_flops.shown,
        }
        texts.update({f"memory_{key}": text for key, text in self.memory.parts.items()})
        return texts


NOT_COUNTED = "0 (convcalc counts the multiply-adds of convolutions and linear layers only)"


def _simple(
    input_spec: InputSpec,
    shape: Derived[Ints],
    params: Derived[int],
    field: Derived[Ints],
    macs: Derived[int] | None = None,
    bias: int = 0,
) -> Figures:
    """Figures of a layer that is not a convolution: everything but MACs is bookkeeping."""
    macs = macs or Derived(0, NOT_COUNTED)
    width = DTYPE_BYTES[input_spec.dtype]
    in_elements = math.prod(input_spec.shape)
    out_elements = math.prod(shape.value)
    mem = summary_memory(in_elements, [out_elements], params.value, width)
    memory_parts = {
        "input": f"{MUL.join(map(str, input_spec.shape))}{MUL}{width} B = {group(mem.input)} B",
        "output": f"{MUL.join(map(str, shape.value))}{MUL}{width} B = {group(mem.output)} B",
        "params": f"{group(params.value)}{MUL}{width} B = {group(mem.params)} B",
        "forward_backward": f"2{MUL}output = {group(mem.forward_backward)} B",
        "total": f"input + forward/backward + params = {group(mem.total)} B",
    }
    return Figures(
        output_shape=shape,
        params=params,
        macs=macs,
        flops=Derived(2 * macs.value, f"2{MUL}{group(macs.value)} = {group(2 * macs.value)}"),
        bias_adds=Derived(bias, f"{group(bias)}" if bias else "0"),
        receptive_field=field,
        memory=Derived(mem, memory_parts["total"], memory_parts),
        backward_flops=Derived(
            4 * macs.value,
            f"input grad 2{MUL}{group(macs.value)} + weight grad 2{MUL}{group(macs.value)} = "
            f"{group(4 * macs.value)}"
            if macs.value
            else "0",
        ),
    )


def adaptive_window(n: int, out: int) -> int:
    """Widest window of adaptive pooling from n to out: ``ceil((i+1)n/out) - floor(i·n/out)``."""
    return max(-(-((i + 1) * n) // out) - (i * n) // out for i in range(out))


def pool_output_size(spec: PoolSpec, input_spec: InputSpec) -> Derived[Ints]:
    values: list[int] = []
    parts: list[str] = []
    for n, k, s, p, d in zip(
        input_spec.size, spec.kernel_size, spec.stride, spec.padding, spec.dilation
    ):
        value = pool_output_length(n, k, s, p, d, spec.ceil_mode)
        bracket = ("⌈", "⌉") if spec.ceil_mode else ("⌊", "⌋")
        parts.append(
            f"{bracket[0]}({n} + 2{MUL}{p} − {d}{MUL}({k}−1) − 1)/{s}{bracket[1]} + 1 = {value}"
        )
        values.append(value)
    return Derived(tuple(values), _per_axis(spec.dims, parts))


def figures(spec: LayerSpec, input_spec: InputSpec) -> Figures:
    """Every figure of a layer by formula, whatever its kind."""
    n, channels, size = input_spec.batch, input_spec.channels, input_spec.size
    ones = tuple(1 for _ in size)
    if isinstance(spec, ConvSpec):
        return Figures(
            output_shape=output_shape(spec, input_spec),
            params=params(spec),
            macs=macs(spec, input_spec),
            flops=flops(spec, input_spec),
            bias_adds=bias_adds(spec, input_spec),
            receptive_field=receptive_field(spec),
            memory=memory(spec, input_spec),
            backward_flops=backward_flops(spec, input_spec),
        )
    same = Derived(input_spec.shape, "same as the input")
    if isinstance(spec, NormSpec):
        count = 2 * spec.channels if spec.affine else 0
        return _simple(
            input_spec,
            same,
            Derived(count, f"2{MUL}{spec.channels} (weight, bias) = {count:,}"),
            Derived(ones, "1 (elementwise)"),
            Derived(0, "0 (folds into the preceding conv at inference; not counted)"),
        )
    if isinstance(spec, ActSpec):
        count = spec.params
        return _simple(
            input_spec,
            same,
            Derived(count, f"{spec.channels} slopes = {count}" if count else "0"),
            Derived(ones, "1 (elementwise)"),
        )
    if isinstance(spec, PoolSpec):
        out = pool_output_size(spec, input_spec)
        field = tuple(d * (k - 1) + 1 for k, d in zip(spec.kernel_size, spec.dilation))
        field_text = _per_axis(
            spec.dims,
            [
                f"{d}{MUL}({k}−1) + 1 = {d * (k - 1) + 1}"
                for k, d in zip(spec.kernel_size, spec.dilation)
            ],
        )
        return _simple(
            input_spec,
            Derived((n, channels, *out.value), out.shown),
            Derived(0, "0"),
            Derived(field, field_text),
        )
    if isinstance(spec, AdaptivePoolSpec):
        windows = tuple(adaptive_window(i, o) for i, o in zip(size, spec.output_size))
        field_text = _per_axis(
            spec.dims,
            [
                f"widest window of {i} → {o} = {w}"
                for i, o, w in zip(size, spec.output_size, windows)
            ],
        )
        return _simple(
            input_spec,
            Derived((n, channels, *spec.output_size), "fixed output"),
            Derived(0, "0"),
            Derived(windows, field_text),
        )
    if isinstance(spec, LinearSpec):
        weights = spec.in_features * spec.out_features
        bias = spec.out_features if spec.bias else 0
        mac = n * spec.in_features * spec.out_features
        return _simple(
            input_spec,
            Derived((n, spec.out_features), f"({n}, {spec.out_features})"),
            Derived(
                weights + bias,
                f"{spec.out_features}{MUL}{spec.in_features}"
                + (f" + {bias}" if bias else " (no bias)")
                + f" = {weights + bias:,}",
            ),
            Derived((), "— (flat)"),
            Derived(mac, f"{n}{MUL}{spec.in_features}{MUL}{spec.out_features} = {mac:,}"),
            bias=n * bias,
        )
    if spec.kind == "flatten":
        features = channels * math.prod(size)
        return _simple(
            input_spec,
            Derived(
                (n, features),
                f"({n}, {channels}{MUL}{MUL.join(map(str, size)) or '1'}) = ({n}, {features:,})",
            ),
            Derived(0, "0"),
            Derived((), "— (flat)"),
        )
    return _simple(input_spec, same, Derived(0, "0"), Derived(ones, "1 (elementwise)"))


def output_spec(spec: LayerSpec, input_spec: InputSpec) -> InputSpec:
    """The tensor a layer produces, as the next layer's input."""
    shape = figures(spec, input_spec).output_shape.value
    return InputSpec(batch=shape[0], channels=shape[1], size=shape[2:], dtype=input_spec.dtype)
