"""convcalc.rfprobe: receptive fields measured on geometry stand-ins (hand-derived values in the
comments), equal to convcalc.cumulative's formulas, deterministic, linear in depth."""

from __future__ import annotations

import time
import tracemalloc
from fractions import Fraction

import torch
from torch import nn

from convcalc.core.cumulative import cumulative
from convcalc.core.grammar import parse_inline
from convcalc.core.graph import graph_inputs
from convcalc.kinds import ConvSpec
from convcalc.measure.build import GraphModule, build_layer
from convcalc.measure.probes import probe_receptive_field
from convcalc.measure.rfprobe import cumulative_fields, cumulative_probe, model_fields, window_field
from convcalc.sources import stack

from .test_stack import RESIDUAL


def network(text: str, shape: tuple[int, ...]) -> stack.Network:
    return stack.build_network({"layers": parse_inline(text)}, shape, "float32", "test")


def formula(net: stack.Network) -> list:
    nodes = tuple(net.nodes)
    return cumulative(nodes, list(graph_inputs(nodes, net.input, None)), net.input)


def graph(net: stack.Network) -> nn.Module:
    modules = [build_layer(n.spec) for n in net.nodes]
    return GraphModule(modules, [n.inputs for n in net.nodes]).eval()


def test_five_layer_chain_by_hand() -> None:
    # r += (k'-1)·J, J *= s, P += p·J (Araujo et al. 2019):
    # conv k3: r 3, J 1, P 0; conv k3 s2: r 5, J 2, P 0; conv k5 d2 p4 (span 9): r 5 + 8·2 = 21,
    # P 0 + 4·2 = 8; maxpool k2 s2: r 21 + 1·2 = 23, J 4, P 8; conv k3 p1: r 23 + 2·4 = 31, P 12
    net = network("conv k3; conv k3 s2; conv k5 d2 p4; maxpool k2 s2; conv k3 p1", (1, 1, 64, 64))
    got = cumulative_probe(net.nodes, net.input)
    expected = [(3, 1, 0), (5, 2, 0), (21, 2, 8), (23, 4, 8), (31, 4, 12)]
    for node, (r, j, p) in zip(got, expected):
        assert node.receptive_field == (r, r)
        assert node.effective_stride == (Fraction(j),) * 2
        assert node.effective_padding == (Fraction(p),) * 2
    assert [f.receptive_field for f in formula(net)] == [n.receptive_field for n in got]


def test_residual_block_is_the_union_of_its_paths() -> None:
    net = stack.build_network(RESIDUAL, None, "float32", "res")
    got = dict(zip(net.names, cumulative_probe(net.nodes, net.input)))
    # identity block: main r 1 + 2 + 2 = 5, P 2; shortcut r 1: union 5, P 2
    assert got["identity.add"].receptive_field == (5, 5)
    assert got["identity.add"].effective_padding == (2, 2)
    # down block (from r 5, J 1, P 2): main k3 s2 p1 -> r 7, J 2, P 3; k3 p1 -> r 11, P 5;
    # shortcut k1 s2 -> r 5, P 2; union: starts -5 / -2, ends 5 / 2 -> r 11, J 2, P 5
    assert got["down.add"].receptive_field == (11, 11)
    assert got["down.add"].effective_stride == (2, 2)
    assert got["down.add"].effective_padding == (5, 5)


# conv k3 s2 p1 (r 3, J 2); conv k3 s2 p1 (r 7, J 4); transposed k4 s2 p1: output o reads
# layer-2 outputs v with o + 1 - j = 2v: o = 2m reads {m-1, m}, o = 2m+1 reads {m, m+1}: two
# neighbours, 7 + 4 = 11. The second transposed k4 s2 p1 reads two neighbouring layer-3 outputs
# {t, t+1}: t = 2m gives layer-2 outputs {m-1, m, m+1}: 7 + 2·4 = 15; t = 2m+1 only {m, m+1}: 11.
# The largest over one period is 15; the central output alone (the old `model`) showed 11.
ENCODER_DECODER = "conv k3 s2 p1; conv k3 s2 p1; conv_transpose k4 s2 p1; conv_transpose k4 s2 p1"


def test_upsampling_network_takes_the_largest_field_of_a_period() -> None:
    net = network(ENCODER_DECODER, (1, 1, 32, 32))
    assert [n.receptive_field for n in cumulative_probe(net.nodes, net.input)] == [
        (3, 3),
        (7, 7),
        (11, 11),
        (15, 15),
    ]
    assert formula(net)[-1].receptive_field == (15, 15)
    fields = model_fields(graph(net), (1, 1, 32, 32))
    assert fields.receptive_field == (15, 15)
    assert fields.receptive_field_of == "output"
    assert [x.receptive_field for x in fields.layers] == [(3, 3), (7, 7), (11, 11), (15, 15)]


class Trunk(nn.Module):
    """Ends in a conv; its last conv may be zeroed (a zero-initialised head)."""

    def __init__(self, zero: bool = False) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.head = nn.Conv2d(8, 4, 3, padding=1)
        if zero:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.b(torch.relu(self.a(x)))))


def test_a_trunk_ending_in_a_conv_and_a_zero_head_are_not_zero() -> None:
    # k3: 3; k3 s2: 3 + 2 = 5, J 2; k3: 5 + 2·2 = 9
    for zero in (False, True):
        fields = model_fields(Trunk(zero), (1, 3, 32, 32))
        assert fields.receptive_field == (9, 9)
        assert [x.receptive_field for x in fields.layers] == [(3, 3), (5, 5), (9, 9)]
        assert fields.layers[-1].effective_stride == (2, 2)
        assert fields.layers[-1].effective_padding == (4, 4)  # P: 1, then 1 + 1·1, then 2 + 1·2


class Classifier(nn.Module):
    """Features then a flat head: the field is the last spatial layer's, named."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 5), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(4 * 14 * 14, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def test_the_reported_layer_is_the_last_spatial_one_and_runs_agree() -> None:
    # conv k5: 5; max pool k2 s2 (probed as an average of the same windows): 5 + 1 = 6
    runs = [model_fields(Classifier(), (1, 3, 32, 32)) for _ in range(3)]
    assert {r.receptive_field for r in runs} == {(6, 6)}
    assert runs[0].receptive_field_of == "features.2"
    assert runs[0].outputs[0].receptive_field is None


class Mixed(nn.Module):
    """A half-precision layer, a dict output with an integer tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3)
        self.b = nn.Conv2d(2, 2, 3).to(torch.bfloat16)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.b(self.a(x).to(torch.bfloat16)).float()
        return {"seg": y, "label": y.argmax(1)}


def test_half_precision_layer_and_integer_output_do_not_crash() -> None:
    fields = model_fields(Mixed(), (1, 1, 16, 16))
    assert fields.receptive_field == (5, 5)  # 3 + 2
    assert fields.receptive_field_of == "output['seg']"
    label = next(o for o in fields.outputs if o.name == "output['label']")
    assert label.receptive_field is None and "no gradient" in label.note
    assert any("bfloat16" in note for note in fields.notes)


def test_single_layer_probe_does_not_grow_with_stride() -> None:
    spec = ConvSpec(64, 16, (3, 3), (100000, 100000), (0, 0), (1, 1))
    tracemalloc.start()
    started = time.perf_counter()
    assert probe_receptive_field(spec) == (3, 3)
    assert window_field(False, (3, 3), (5000, 5000), (1000, 1000)) == (2001, 2001)
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 50_000_000


def test_500_layer_stack_in_linear_time_equals_the_formula() -> None:
    text = "; ".join(["conv k3 p1 out4"] * 500)
    net = network(text, (1, 4, 16, 16))
    started = time.perf_counter()
    fields = cumulative_fields(net.nodes, net.input)
    assert time.perf_counter() - started < 10
    # 500 convs k3 s1: 1 + 500·2 = 1001
    assert fields[-1] == (1001, 1001)
    assert fields == [f.receptive_field for f in formula(net)]
