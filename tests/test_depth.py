"""Deep networks: the memory passes keep their live sets as the layers go instead of searching
every earlier tensor at each layer (they were quadratic in the layers). Their figures are
checked against the definitions, written out the slow way here, on random graphs with residual
joins, aliases and in-place activations."""

from __future__ import annotations

import math
from typing import Any

import pytest
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
    assert report.to_dict()["receptive_field_at_least"] is False


def test_a_model_field_past_the_largest_input_says_at_least() -> None:
    # 140 3x3 convs: 281 positions; the input grows 4 -> 8 -> ... -> 256 (six doublings) and
    # the field still reaches the border: 256 is reported, with a note that it is at least that
    from convcalc import library

    report = library.model(_convs(140), input=(1, 1, 4, 4))
    assert report.total.receptive_field.measured == (256, 256)
    assert (
        "the model's receptive field, 256x256, reaches the border of the largest input tried "
        "(256x256; the input is doubled at most 6 times): the field is at least this"
        in report.notes
    )
    # a lower bound, in every format: JSON's flag, the table's and markdown's total cell
    import io

    from convcalc.output.formats import write

    assert report.to_dict()["receptive_field_at_least"] is True
    for fmt, cell in (
        ("table", "≥ 256×256"),
        ("markdown", "| ≥ 256×256 |"),
        ("table", "note: the model's receptive field, at least 256×256, is measured by autograd"),
    ):
        out = io.StringIO()
        write(report, fmt, out, no_color=True)
        assert [line for line in out.getvalue().splitlines() if cell in line], fmt


def test_the_probe_stops_growing_at_its_memory_limit() -> None:
    # 40 3x3 convs on 4x4 (a field of 81): a 1-byte limit stops the growth before 8x8; three
    # doublings at most stop it at 32x32; the defaults (1 GiB, six doublings) reach 128x128,
    # where the field is whole.
    # Held at 4x4, in float64 (40·log10 9 > 30 decades of gradient): per conv the zero-padded
    # 6x6 input its window sum saves (288 B), and the last conv's 4x4 output, kept (128 B):
    # 40·288 + 128 = 11,648 B; at 8x8, four times the elements: 46,592 B = 45.50 KiB
    from convcalc.measure.rfprobe import model_fields

    tight = model_fields(_convs(40), (1, 1, 4, 4), max_bytes=1, every_layer=False)
    assert tight.sizes_tried == ((4, 4),)
    assert tight.limit == "at 8x8 the probe would hold about 45.50 KiB, over its 1 B limit"
    assert tight.dtype == "float64"
    assert tight.receptive_field == (4, 4)
    three = model_fields(_convs(40), (1, 1, 4, 4), every_layer=False, max_growth=3)
    assert three.sizes_tried == ((4, 4), (8, 8), (16, 16), (32, 32))
    assert three.limit == "the input is doubled at most 3 times"
    roomy = model_fields(_convs(40), (1, 1, 4, 4), every_layer=False)
    assert roomy.sizes_tried[-1] == (128, 128) and roomy.limit == ""
    assert roomy.receptive_field == (81, 81)


def test_the_probe_keeps_only_the_open_layers_outputs_when_grown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # every conv's output is kept at the model's own size (to find the layer to report); at
    # the grown sizes only the layer still measured is, so the others' memory is freed as the
    # forward goes (a 500-conv probe at 256x256: 250 MB of outputs no longer held)
    from convcalc.measure import rfprobe

    kept: list[int] = []
    run = rfprobe._Recorder.run

    def counted(self: Any, *args: Any) -> Any:
        out = run(self, *args)
        kept.append(len(self.captured))
        return out

    monkeypatch.setattr(rfprobe._Recorder, "run", counted)
    rfprobe.model_fields(_convs(12), (1, 1, 8, 8), every_layer=False)
    assert kept == [12, 1, 1]  # 8 (cut), 16 (cut), 32: 1 + 12*2 = 25 fits


def test_held_counts_the_storages_a_run_leaves_alive() -> None:
    import torch

    from convcalc.measure.rfprobe import _Held

    with _Held() as held:
        a = torch.ones(1000)  # 4,000 B, kept
        b = torch.ones(250) * 2  # the ones freed at once; the product, 1,000 B, kept
        c = a[:10]  # a view: a's storage, counted once
        gone = torch.ones(500)
        del gone
    assert held.held() == 5000
    assert c.untyped_storage().nbytes() == 4000 and b.numel() == 250


def test_expect_and_get_on_a_lower_bound_field_say_so(cli, tmp_path: Any) -> None:
    # 140 3x3 convs on 4x4: the true field is 281, the probe stops at 256 (six doublings).
    # "<= 300" would pass on 256 and is wrong about nothing known: not checkable (exit 1);
    # ">= 200" is proven by the bound; ">= 300" is not known either way: not checkable
    net = tmp_path / "deep.py"
    net.write_text(
        "import torch.nn as nn\n"
        "def Deep():\n"
        "    return nn.Sequential(*[nn.Conv2d(1, 1, 3, padding=1) for _ in range(140)])\n"
    )
    args = ("model", f"{net}:Deep", "--input", "1,1,4,4")
    shown = cli(*args, "--expect", "total.receptive_field.0<=300")
    assert shown.exit_code == 1
    assert shown.stderr.startswith(
        "expectation not checkable: total.receptive_field.0 <= 300, got 256, a lower bound"
    )
    assert cli(*args, "--expect", "total.receptive_field.0>=200").exit_code == 0
    assert cli(*args, "--expect", "total.receptive_field.0>=300").exit_code == 1
    # what the bound decides, axis by axis: "< 100" fails whatever the field is, "!= 100"
    # holds; ">= 100x9999" is proven on one axis only (it passed, comparing the first)
    failed = cli(*args, "--expect", "total.receptive_field.0<100")
    assert failed.exit_code == 1 and failed.stderr.startswith("expectation failed: ")
    assert cli(*args, "--expect", "total.receptive_field.0!=100").exit_code == 0
    both = cli(*args, "--expect", "total.receptive_field>=100x9999")
    assert both.exit_code == 1 and both.stderr.startswith("expectation not checkable: ")
    assert cli(*args, "--expect", "total.receptive_field>=100x100").exit_code == 0
    got = cli(*args, "--get", "total.receptive_field.0")
    assert (got.exit_code, got.stdout) == (0, "256\n")
    assert "note: total.receptive_field.0 is a lower bound" in got.stderr


def test_expect_orders_shapes_axis_by_axis(cli) -> None:
    # a 3x3 conv's field 3x3: ">= 1x9999" fails (Python's tuples compared only the first axis)
    args = ("conv", "--in", "3", "--out", "8", "-k", "3", "--formula-only")
    assert cli(*args, "--expect", "total.receptive_field>=1x9999").exit_code == 1
    assert cli(*args, "--expect", "total.receptive_field>=3x3").exit_code == 0
    assert cli(*args, "--expect", "total.receptive_field<4x4").exit_code == 0
    wrong = cli(*args, "--expect", "total.receptive_field>=1x1x1")
    assert wrong.exit_code == 2 and "a different length" in wrong.stderr
