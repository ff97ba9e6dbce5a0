"""Deep networks: the memory passes keep their live sets as the layers go instead of searching
every earlier tensor at each layer (they were quadratic in the layers). Their figures are
checked against the definitions, written out the slow way here, on random graphs with residual
joins, aliases and in-place activations."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from convcalc.core import memory_model as mm
from convcalc.core.saved import LayerIO
from convcalc.core.spec import InputSpec, Node
from convcalc.kinds import ActSpec, LayerSpec, NormSpec, ShapeSpec, build_conv

C = 2


def _layer(kind: str) -> LayerSpec:
    if kind == "conv":
        return build_conv(in_channels=C, out_channels=C, kernel=3, padding=1)
    if kind == "reflect":
        return build_conv(
            in_channels=C, out_channels=C, kernel=3, padding=1, padding_mode="reflect"
        )
    if kind in ("relu", "sigmoid"):
        return ActSpec(kind, 2, C)
    if kind == "bn":
        return NormSpec(C, 2)
    return ShapeSpec(kind, 2, C)  # identity, dropout, add


@st.composite
def graphs(draw: st.DrawFn) -> tuple[tuple[Node, ...], InputSpec, list[int]]:
    count = draw(st.integers(1, 16))
    kinds = ["conv", "reflect", "relu", "sigmoid", "bn", "identity", "dropout", "add"]
    nodes: list[Node] = []
    inplace: list[int] = []
    for index in range(count):
        kind = draw(st.sampled_from(kinds))
        sources = draw(st.integers(2, 3)) if kind == "add" else 1
        inputs = tuple(draw(st.integers(-1, index - 1)) for _ in range(sources))
        if kind == "relu" and draw(st.booleans()):
            inplace.append(index)
        nodes.append(Node(_layer(kind), inputs))
    size = draw(st.sampled_from([3, 5]))
    return tuple(nodes), InputSpec(draw(st.integers(1, 2)), C, (size, size)), inplace


def _peak_by_definition(nodes: tuple[Node, ...], x: InputSpec, inplace: list[int]) -> list[int]:
    """Each layer's live bytes: every storage made at or before it and read at or after it
    (the input and the last output throughout), its output, and its workspace."""
    graph = mm._graph(nodes, x, 4, False, inplace)
    storages = [-1] + [i for i in range(len(nodes)) if graph.storage[i] == i]
    readers = {
        s: [i for i, node in enumerate(nodes) if any(graph.storage_of(j) == s for j in node.inputs)]
        for s in storages
    }
    last_output = graph.storage_of(len(nodes) - 1)
    values = []
    for index, node in enumerate(nodes):
        live = 0
        for s in storages:
            ends = len(nodes) if s in (-1, last_output) else max(readers[s] + [s])
            if s <= index <= ends:
                live += math.prod(graph.shape_of(s, x.shape)) * 4
        io = LayerIO(
            tuple(graph.shape_of(i, x.shape) for i in node.inputs),
            graph.shapes[index],
            4,
            False,
            index in inplace,
        )
        values.append(live + mm.inference_workspace(node.spec, io).value)
    return values


def _waiting_by_definition(nodes: tuple[Node, ...], x: InputSpec, k: int, grad: bool) -> int:
    """Bytes of the gradients waiting while node k runs backward: every tensor before k that
    needs a gradient and is read by a node after k."""
    shapes = mm.shapes(nodes, x)
    requires = mm._requires_grad(nodes, grad)
    return sum(
        math.prod(x.shape if j < 0 else shapes[j]) * 4
        for j in range(-1, k)
        if requires[j] and any(j in nodes[c].inputs for c in range(k + 1, len(nodes)))
    )


@settings(max_examples=300, deadline=None)
@given(graphs())
def test_peak_inference_is_its_definition(
    graph: tuple[tuple[Node, ...], InputSpec, list[int]],
) -> None:
    nodes, x, inplace = graph
    peak = mm.peak_inference(nodes, x, inplace=inplace)
    expected = _peak_by_definition(nodes, x, inplace)
    assert [layer.value for layer in peak.layers] == expected
    assert peak.total.value == max(expected)
    assert peak.at == expected.index(max(expected))


@settings(max_examples=300, deadline=None)
@given(graphs(), st.booleans())
def test_backward_transient_waits_by_definition(
    graph: tuple[tuple[Node, ...], InputSpec, list[int]], grad: bool
) -> None:
    nodes, x, _ = graph
    shown = mm.backward_transient(nodes, x, input_requires_grad=grad).shown
    k = int(shown.split("layer ", 1)[1].split("'", 1)[0])
    waiting = int(shown.split("waiting ", 1)[1].split(" ", 1)[0].replace(",", ""))
    assert waiting == _waiting_by_definition(nodes, x, k, grad)


def test_a_long_residual_chain_holds_each_shortcut_until_its_add() -> None:
    # (conv; add(conv, shortcut)) x 200 on 1x2x5x5 float32, every tensor 2*5*5*4 = 200 B. The
    # caller holds the input throughout. Conv: input + its input + its output = 600 B (the
    # first conv reads the network input: 400 B). Add: input + shortcut + conv output + sum
    # = 800 B (the first add's shortcut is the network input: 600 B). Nothing older stays live.
    nodes: list[Node] = []
    for _ in range(200):
        start = len(nodes) - 1
        nodes.append(Node(_layer("conv"), (start,)))
        nodes.append(Node(_layer("add"), (len(nodes) - 1, start)))
    peak = mm.peak_inference(tuple(nodes), InputSpec(1, C, (5, 5)))
    assert [layer.value for layer in peak.layers] == [400, 600] + [600, 800] * 199
    assert peak.layers[-1].shown == "input 200 + out397 200 + out398 200 + out399 200 = 800 B"


def _convs(count: int) -> Any:
    from torch import nn

    layers: list[nn.Module] = []
    for _ in range(count):
        layers += [nn.Conv2d(1, 1, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers)


def test_a_model_field_wider_than_its_input_is_grown_into() -> None:
    # 10 3x3 convs: a field of 1 + 10*2 = 21 positions, wider than the 8x8 input. The output's
    # field is measured again on larger inputs (16, 32) until it no longer reaches the border
    from convcalc import library

    report = library.model(_convs(10), input=(1, 1, 8, 8))
    assert report.total.receptive_field.measured == (21, 21)
    assert not [n for n in report.notes if "at least" in n]


def test_a_model_field_past_the_largest_input_says_at_least() -> None:
    # 40 3x3 convs: 81 positions; the input grows 4 -> 8 -> 16 -> 32 (three doublings) and the
    # field still reaches the border: 32 is reported, with a note that it is at least that
    from convcalc import library

    report = library.model(_convs(40), input=(1, 1, 4, 4))
    assert report.total.receptive_field.measured == (32, 32)
    assert (
        "the model's receptive field, 32x32, reaches the border of the largest input tried "
        "(32x32): the field is at least this" in report.notes
    )
