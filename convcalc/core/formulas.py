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
from dataclasses import field
from typing import Generic, TypeVar

from convcalc._dataclass import dataclass
from convcalc.core.memory import Memory, summary_memory
from convcalc.core.spec import (
    DTYPE_BYTES,
    InputSpec,
    Ints,
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


def per_axis(dims: int, parts: Sequence[str]) -> str:
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


def simple_figures(
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
