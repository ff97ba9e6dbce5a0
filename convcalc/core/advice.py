"""Warnings about the traps of conv arithmetic, on every command where they apply (stderr in
table mode, a ``warnings`` list in JSON). Pure: formulas only, no torch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from convcalc.core.cumulative import Cumulative
from convcalc.core.spec import InputSpec, Node, axis_note
from convcalc.kinds import geometry, kind_of

if TYPE_CHECKING:  # an annotation: naming every kind loads them all (start-up)
    from convcalc.kinds import LayerSpec


def layer_warnings(name: str, spec: LayerSpec, layer_input: InputSpec) -> list[str]:
    """The traps one layer falls into, given its input (each kind knows its own)."""
    return kind_of(spec).warnings(name, spec, layer_input)


def network_warnings(
    names: Sequence[str],
    nodes: Sequence[Node],
    inputs: Sequence[InputSpec],
    cumulative: Sequence[Cumulative],
    network_input: InputSpec,
) -> list[str]:
    """Every layer's traps, and a receptive field larger than the input (padding, mostly)."""
    found: list[str] = []
    for name, node, layer_input in zip(names, nodes, inputs):
        found += layer_warnings(name, node.spec, layer_input)
    # the receptive field: once, for the first layer whose field outgrows the input (not after
    # a transposed layer: upsampling networks see past their input by design)
    for name, node, figures in zip(names, nodes, cumulative):
        if geometry(node.spec).transposed:
            break
        if figures.whole_input or not figures.effective_stride:
            continue
        over = [
            (axis, r, n)
            for axis, (r, n) in enumerate(zip(figures.receptive_field, network_input.size))
            if r > n
        ]
        if over:
            axis, r, n = over[0]
            share = (r - n) / r
            found.append(
                f"{name}: its receptive field ({r}) is larger than the input ({n}): at least "
                f"{share:.0%} of it lies in padding{axis_note(axis, network_input.dims)}, and so "
                "for every later layer"
            )
            break
    return found
