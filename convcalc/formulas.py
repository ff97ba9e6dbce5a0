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

from .memory import Memory, summary_memory
from .spec import DTYPE_BYTES, ConvSpec, InputSpec, Ints, padding_pairs

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


def mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:,.2f} MiB"


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


def chain_receptive_field(specs: Sequence[ConvSpec]) -> Derived[Ints]:
    """Receptive field of a chain of plain convolutions: ``r += (r_layer - 1)·J``, ``J *= s``.

    (Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural Networks",
    Distill 2019, eq. 2, with J the product of the strides before the layer.)
    """
    dims = specs[0].dims
    values: list[int] = []
    parts: list[str] = []
    for axis in range(dims):
        field, jump = 1, 1
        terms = ["1"]
        for spec in specs:
            layer = conv_receptive_length(spec.kernel_size[axis], spec.dilation[axis])
            field += (layer - 1) * jump
            terms.append(f"({layer}−1){MUL}{jump}")
            jump *= spec.stride[axis]
        values.append(field)
        parts.append(f"{' + '.join(terms)} = {field}")
    return Derived(tuple(values), _per_axis(dims, parts))
