"""What a layer saves for backward, as data: the types each layer kind's
``saved_for_backward`` rule returns (``kinds.base.Kind.saved_for_backward``), and the helpers
the rules share. Pure: no torch. The network figures (sharing, totals) are in
:mod:`convcalc.core.memory_model`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from convcalc._dataclass import dataclass
from convcalc.core.formulas import MUL, Derived, group
from convcalc.core.spec import Ints

#: torch's index tensors (max pooling) are int64 whatever the data's dtype
INDEX_BYTES = 8


@dataclass(frozen=True)
class SavedPart:
    """One tensor a layer saves: which (``input``, ``input1``, ``output`` or ``new``: a tensor
    made by the layer), its bytes, and the formula."""

    tensor: str
    bytes: int
    shown: str


@dataclass(frozen=True)
class LayerSaved(Derived[int]):
    """Bytes one layer saves for backward (nothing shared), and the tensors they are."""

    tensors: tuple[SavedPart, ...] = ()


@dataclass(frozen=True)
class LayerIO:
    """What a rule needs besides the spec: the shapes around the layer and how it runs."""

    inputs: tuple[Ints, ...]
    output: Ints
    width: int
    training: bool = True
    inplace: bool = False
    #: whether the (first) input carries a gradient: the pad before a reflect/replicate
    #: convolution saves its input only then
    input_requires_grad: bool = True


def part(tensor: str, label: str, shape: Sequence[int], width: int) -> SavedPart:
    """A saved tensor of ``shape``, ``width`` bytes per element, with its formula."""
    value = math.prod(shape) * width
    return SavedPart(
        tensor, value, f"{label} {MUL.join(map(str, shape))}{MUL}{width} B = {group(value)} B"
    )


def saved(*parts: SavedPart) -> LayerSaved:
    """What a layer saves: the sum of its parts (nothing: 0 B)."""
    if not parts:
        return LayerSaved(0, "nothing (0 B)")
    value = sum(p.bytes for p in parts)
    shown = " + ".join(p.shown for p in parts)
    if len(parts) > 1:
        shown += f"; total {group(value)} B"
    return LayerSaved(value, shown, tensors=tuple(parts))


def saves_nothing(spec: Any, io: LayerIO) -> LayerSaved:
    """The default rule: a layer that keeps nothing for its backward."""
    return saved()


def saves_input(spec: Any, io: LayerIO) -> LayerSaved:
    """The commonest rule: the layer keeps its input (linear layers, most activations)."""
    return saved(part("input", "input", io.inputs[0], io.width))
