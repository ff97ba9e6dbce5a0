"""One real pass (measure/onepass.py) gives what the separate passes gave: saved for backward
(a training-mode grad pass), the inference peak (an eval-mode no_grad pass), and fvcore's count
(its torch.jit trace) where its rules cover the dispatched ops."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

from convcalc.core import memory_model as mm
from convcalc.core.spec import InputSpec, Node, build_input, chain
from convcalc.errors import SpecError
from convcalc.kinds import (
    ActSpec,
    AdaptivePoolSpec,
    LayerSpec,
    LinearSpec,
    NormSpec,
    ShapeSpec,
    build_conv,
    build_pool,
    check_fits,
)
from convcalc.measure import memory as me
from convcalc.measure.build import GraphModule, build_layer
from convcalc.measure.counting import run_counted
from convcalc.measure.fvcore_adapter import fvcore_count, graph_modules, rule_covers
from convcalc.measure.onepass import (
    measure_network_once,
    one_pass_serves,
    run_once,
    training_twins,
)
from convcalc.measure.run import Extras, measure_graph
from tests.test_memory_budget import chains


def conv(c: int, out: int, k: int = 3, **kw: object) -> LayerSpec:
    return build_conv(in_channels=c, out_channels=out, kernel=k, **kw)  # type: ignore[arg-type]


def relu(c: int) -> ActSpec:
    return ActSpec("relu", 2, c)


def separate(
    nodes: tuple[Node, ...], x: InputSpec, inplace: tuple[int, ...] = ()
) -> tuple[me.SavedMeasurement, me.PeakMeasurement]:
    """Today's separate passes: saved in training mode with grad, the peak under no_grad."""
    return (
        me.measure_network_saved(nodes, x, inplace=inplace),
        me.measure_network_peak(nodes, x, inplace=inplace),
    )


def assert_one_pass_equals_separate(
    nodes: tuple[Node, ...], x: InputSpec, inplace: tuple[int, ...] = ()
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's note on padded copies
        saved, peak = separate(nodes, x, inplace)
        once = measure_network_once(nodes, x, inplace=inplace)
    serves_saved, serves_peak = one_pass_serves([n.spec for n in nodes], inplace)
    assert once.saved is not None and once.peak is not None
    if serves_saved:
        assert once.saved.total == saved.total
        assert once.saved.layers == saved.layers
        assert sorted(t.bytes for t in once.saved.tensors) == sorted(t.bytes for t in saved.tensors)
    if serves_peak:
        assert once.peak.peak == peak.peak
        assert once.peak.layers == peak.layers


C, S = 4, 12
X = InputSpec(2, C, (S, S))


def residual() -> tuple[Node, ...]:
    # x -> conv -> relu -> conv -> add(x) -> relu
    return (
        Node(conv(C, C, padding=1), (-1,)),
        Node(relu(C), (0,)),
        Node(conv(C, C, padding=1), (1,)),
        Node(ShapeSpec("add", 2, C), (2, -1)),
        Node(relu(C), (3,)),
    )


NETWORKS = {
    "conv": (chain([conv(C, 8)]), ()),
    "conv relu conv": (chain([conv(C, 8, padding=1), relu(8), conv(8, 4)]), ()),
    "conv relu(in place) conv": (chain([conv(C, 8, padding=1), relu(8), conv(8, 4)]), (1,)),
    "conv maxpool avgpool": (
        chain(
            [
                conv(C, 8, padding=1),
                build_pool(kind="max", kernel="2", dims=2, channels=8),
                build_pool(kind="avg", kernel="2", dims=2, channels=8),
            ]
        ),
        (),
    ),
    "activations, leakyrelu and elu in place": (
        chain(
            [
                conv(C, 8, padding=1),
                ActSpec("gelu", 2, 8),
                conv(8, 8, padding=1),
                ActSpec("leakyrelu", 2, 8),
                ActSpec("sigmoid", 2, 8),
                conv(8, 8),
                ActSpec("elu", 2, 8),
                ActSpec("tanh", 2, 8),
                ActSpec("prelu", 2, 8),
            ]
        ),
        (3, 6),
    ),
    "residual": (residual(), ()),
    "conv relu flatten linear linear": (
        chain(
            [
                conv(C, 2),
                relu(2),
                ShapeSpec("flatten", 2, 2),
                LinearSpec(2 * 10 * 10, 6),
                LinearSpec(6, 3, bias=False),
            ]
        ),
        (),
    ),
    "adaptive pools": (
        chain(
            [
                conv(C, 4),
                AdaptivePoolSpec("avg", 2, 4, (3, 3)),
                AdaptivePoolSpec("max", 2, 4, (1, 1)),
            ]
        ),
        (),
    ),
    # batch norm: its training-mode saved tensors from its twin run beside the pass
    "conv bn relu(in place) conv": (
        chain([conv(C, 8, padding=1), NormSpec(8, 2), relu(8), conv(8, 4)]),
        (2,),
    ),
    # conv0's output read by a batch norm and a conv (both save it: counted once, for the
    # batch norm, first), the two joined
    "conv, then bn and conv on its output, added": (
        (
            Node(conv(C, 8, padding=1), (-1,)),
            Node(NormSpec(8, 2), (0,)),
            Node(conv(8, 8, padding=1), (0,)),
            Node(ShapeSpec("add", 2, 8), (1, 2)),
            Node(NormSpec(8, 2), (3,)),
        ),
        (),
    ),
    # mode-dependent without a twin (dropout): only the peak is served by the one pass
    "conv bn relu dropout": (
        chain([conv(C, 8), NormSpec(8, 2), relu(8), ShapeSpec("dropout", 2, 8)]),
        (),
    ),
}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_one_pass_equals_the_separate_passes(name: str) -> None:
    nodes, inplace = NETWORKS[name]
    assert_one_pass_equals_separate(nodes, X, inplace)


def test_one_pass_serves_by_the_kinds_registry() -> None:
    assert one_pass_serves([conv(C, C), relu(C)]) == (True, True)
    # batch norm runs again in training mode beside the pass (its training twin); dropout,
    # whose eval output is its input itself, cannot
    assert one_pass_serves([conv(C, C), NormSpec(C, 2)]) == (True, True)
    assert training_twins([conv(C, C), NormSpec(C, 2), ShapeSpec("dropout", 2, C)]) == (1,)
    assert one_pass_serves([ShapeSpec("dropout", 2, C)]) == (False, True)
    assert one_pass_serves([ShapeSpec("identity", 2, C)]) == (True, True)
    # in place, silu saves a copy of its input that only autograd makes
    assert one_pass_serves([conv(C, C), ActSpec("silu", 2, C)], inplace=(1,)) == (True, False)
    assert one_pass_serves([conv(C, C), ActSpec("relu", 2, C)], inplace=(1,)) == (True, True)


def test_residual_one_pass_by_hand() -> None:
    # 2×4×12×12 float32: every activation is 2·4·144·4 = 4,608 B.
    # saved: conv0 its input x (4,608); relu1 its output (4,608); conv2 its input, relu1's
    # output again (counted once); the add nothing; relu4 its output (4,608): 13,824 B.
    # peak: x is live throughout (the caller holds it, the add reads it). Each later node
    # runs with x, its input and its output live, its input's producer freed after its last
    # reader: 3 × 4,608 = 13,824 B at every node from relu1 on (conv0: x + out0 = 9,216 B).
    once = measure_network_once(residual(), X)
    assert once.saved is not None and once.peak is not None
    assert once.saved.total == 3 * 4608
    assert once.saved.layers == {"0": 4608, "1": 4608, "2": 0, "3": 0, "4": 4608}
    assert once.peak.peak == 3 * 4608


class Cat(nn.Module):
    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.cat(inputs, dim=1)


def test_concatenating_graph_one_pass_equals_separate() -> None:
    def graph(training: bool) -> GraphModule:
        torch.manual_seed(0)
        layers = [
            build_layer(conv(C, 4, padding=1)).train(training),
            nn.ReLU(inplace=True),
            build_layer(conv(C, 4, padding=1)).train(training),
            Cat(),
            build_layer(conv(8, 2)).train(training),
        ]
        return GraphModule(layers, [(-1,), (0,), (-1,), (1, 2), (3,)])

    x = torch.randn(X.shape)
    g = graph(True)
    names = [(str(i), m) for i, m in enumerate(g.nodes)]
    saved = me.measure_saved(g, x.clone().requires_grad_(True), names, me._graph_forward)
    g = graph(False)
    peak = me.measure_peak_inference(
        g, x.clone(), [(str(i), m) for i, m in enumerate(g.nodes)], me._graph_forward
    )
    once = run_once(graph(False), x.clone())
    assert once.saved is not None and once.peak is not None
    assert once.saved.total == saved.total and once.saved.layers == saved.layers
    assert once.peak.peak == peak.peak and once.peak.layers == peak.layers
    # by hand: 2×4×12×12 float32 = 4,608 B a tensor of 4 channels. Saved: conv0 and conv2 the
    # same input x (once: 4,608); the in-place relu its output (conv0's, 4,608); cat nothing;
    # conv4 the 8-channel cat (9,216): 18,432 B.
    assert once.saved.total == 4608 + 4608 + 9216


class Keep(nn.Module):
    """A layer that keeps its output (so that a backward can be tried on it)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer
        self.kept: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layer(x)
        self.kept.append(out)
        return out


def test_a_backward_on_a_token_is_refused() -> None:
    keep = Keep(build_layer(conv(C, 4)))
    run_once(GraphModule([keep], [(-1,)]), torch.zeros(X.shape))
    with pytest.raises(RuntimeError, match="keeps no saved tensors"):
        keep.kept[0].sum().backward()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains())
def test_one_pass_equals_separate_passes_on_random_chains(
    case: tuple[tuple[Node, ...], InputSpec, tuple[int, ...]],
) -> None:
    nodes, x, inplace = case
    assert_one_pass_equals_separate(nodes, x, inplace)


@st.composite
def conv_cases(draw: st.DrawFn) -> tuple[tuple[Node, ...], InputSpec]:
    dims = draw(st.integers(1, 3))
    c = draw(st.integers(1, 4))
    groups = draw(st.sampled_from([g for g in (1, 2) if c % g == 0]))
    out = groups * draw(st.integers(1, 3))
    size = draw(st.integers(4, 9 if dims < 3 else 6))
    transpose = draw(st.booleans())
    stride = draw(st.integers(1, 2))
    spec = build_conv(
        dims=dims,
        in_channels=c,
        out_channels=out,
        kernel=draw(st.integers(1, 3)),
        stride=stride,
        padding=draw(st.integers(0, 1)),
        dilation=draw(st.integers(1, 2)),
        groups=groups,
        bias=draw(st.booleans()),
        transpose=transpose,
        output_padding=draw(st.integers(0, stride - 1)) if transpose else 0,
    )
    x = InputSpec(draw(st.integers(1, 2)), c, (size,) * dims)
    try:
        check_fits(spec, x)
    except SpecError:
        assume(False)  # the kernel does not fit the input: refused before torch runs
    return chain([spec]), x


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_cases())
def test_one_pass_saved_and_peak_equal_the_formula_on_random_convs(
    case: tuple[tuple[Node, ...], InputSpec],
) -> None:
    nodes, x = case
    once = measure_network_once(nodes, x)
    assert once.saved is not None and once.peak is not None
    # a lone conv saves its input (the input requires grad); its peak is input + output
    assert once.saved.total == mm.saved_for_backward(nodes, x).total.value
    assert once.saved.total == math.prod(x.shape) * 4
    assert once.peak.peak == me.measure_network_peak(nodes, x).peak
    spec = nodes[0].spec
    if not (getattr(spec, "transposed", False) and len(x.size) == 3):
        # where the formula is exact: torch's CPU ConvTranspose3d can return an output whose
        # storage is larger than its elements (e.g. 2 -> 1 channels, k=1, 4³: a 512 B storage
        # for 256 B of output), in the separate no_grad pass as in this one
        assert once.peak.peak == mm.peak_inference(nodes, x).total.value


# --- fvcore's rules on the dispatched shapes, against its trace -----------------------------

RULE_CASES: dict[str, tuple[list[LayerSpec], tuple[int, ...]]] = {
    "conv": ([conv(C, 8, padding=1)], (1, C, 8, 8)),
    "conv same, even kernel": ([conv(C, 8, 2, padding="same")], (1, C, 8, 8)),
    "conv1d valid": ([conv(C, 8, dims=1, padding="valid")], (1, C, 8)),
    "transposed": ([conv(C, 8, stride=2, transpose=True, output_padding=1)], (1, C, 8, 8)),
    "grouped 3-D": ([conv(C, 8, dims=3, groups=2)], (1, C, 6, 6, 6)),
    "conv relu flatten linear": (
        [
            conv(C, 2),
            relu(2),
            ShapeSpec("flatten", 2, 2),
            LinearSpec(72, 5),
            LinearSpec(5, 3, bias=False),
        ],
        (2, C, 8, 8),
    ),
    "reflect padding": ([conv(C, 8, padding=1, padding_mode="reflect")], (1, C, 8, 8)),
    "maxpool": ([conv(C, 8), build_pool(kind="max", kernel="2", dims=2, channels=8)], (1, C, 8, 8)),
    "batch norm": ([conv(C, 8), NormSpec(8, 2)], (1, C, 8, 8)),
    "gelu": ([conv(C, 8), ActSpec("gelu", 2, 8)], (1, C, 8, 8)),
    "adaptive avg": ([conv(C, 8), AdaptivePoolSpec("avg", 2, 8, (1, 1))], (1, C, 8, 8)),
}
#: every case since fvcore's count comes from the dispatch with its own handles and tables
#: (fvcore_adapter.dispatch_count; was: conv, linear, relu and flatten alone). The trace's
#: fallback: tests/test_fvrule.py
COVERED = set(RULE_CASES)


@pytest.mark.parametrize("name", sorted(RULE_CASES))
def test_fvcore_rule_counts_as_its_trace_where_it_covers_the_run(name: str) -> None:
    specs, shape = RULE_CASES[name]
    nodes = chain(specs)
    graph = GraphModule([build_layer(s) for s in specs], [n.inputs for n in nodes])
    x = torch.zeros(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        record = run_counted(graph, x)
        trace = fvcore_count(graph, x, graph_modules(graph))
    assert rule_covers(record.counter.ops) == (name in COVERED)
    input_spec = InputSpec(shape[0], shape[1], shape[2:])
    measured = measure_graph(nodes, input_spec, "cpu", Extras(memory=True))
    for index, layer in enumerate(measured.layers):
        module = graph_modules(graph)[index]
        assert layer.macs == trace.macs(module)
        if name in COVERED:
            # nothing the trace would have said is lost: its notes are the layer's
            for op in [*trace.unsupported.get(module, {}), *trace.others(module)]:
                assert any(op in note for note in layer.notes), op
    if name in COVERED:
        assert measured.sources["macs"].startswith("fvcore's own handles (fvcore.nn.jit_handles)")
    else:
        assert measured.sources["macs"].startswith("fvcore FlopCountAnalysis")
        notes = " ".join(note for layer in measured.layers for note in layer.notes)
        assert "fvcore" in notes  # its word on what it has no handler for, or counts besides


def test_measure_graph_one_pass_figures() -> None:
    # Conv2d(4, 8, k3, p1) on 1×4×8×8: saved its input 1·4·64·4 = 1,024 B; peak input +
    # output 1,024 + 1·8·64·4 = 3,072 B; MACs 8·64·4·9 = 18,432
    nodes = chain([conv(C, 8, padding=1)])
    measured = measure_graph(
        nodes, build_input(dims=2, channels=C, size="8"), "cpu", Extras(memory=True)
    )
    assert measured.saved.total == 1024 and measured.peak.peak == 3072
    assert measured.layers[0].macs == 18432
    # with batch norm the pass is eval mode; the batch norm runs again in training mode beside
    # it: conv its input 1,024 B; batch norm its input 1·8·64·4 = 2,048 B and save_mean and
    # save_invstd, 8 floats each (64 B): 2,112 B, as the separate training-mode pass saves
    nodes = chain([conv(C, 8, padding=1), NormSpec(8, 2)])
    spec = build_input(dims=2, channels=C, size="8")
    measured = measure_graph(nodes, spec, "cpu", Extras(memory=True))
    assert measured.saved.layers == {"0": 1024, "1": 2112} and measured.peak is not None
    assert measured.saved.layers == me.measure_network_saved(nodes, spec).layers
    # dropout has no twin (its eval output is its input): its saved is measured apart
    nodes = chain([conv(C, 8, padding=1), ShapeSpec("dropout", 2, 8)])
    measured = measure_graph(nodes, spec, "cpu", Extras(memory=True))
    assert measured.saved is None and measured.peak is not None
    # batch norm of one value per channel cannot run in training mode: no saved figure here
    # (the training-mode pass says why)
    nodes = chain([conv(C, 8), NormSpec(8, 2)])
    measured = measure_graph(
        nodes, build_input(dims=2, channels=C, size="3"), "cpu", Extras(memory=True)
    )
    assert measured.saved is None and measured.peak is not None
    # float16: the layers run in float32 here, so the memory is measured apart in float16
    measured = measure_graph(
        chain([conv(C, 8)]), build_input(dims=2, channels=C, size="8", dtype="float16"), "cpu",
        Extras(memory=True),
    )  # fmt: skip
    assert measured.saved is None and measured.peak is None


def test_one_layer_report_imports_no_sympy() -> None:
    code = (
        "import sys\nfrom convcalc import library\n"
        "report = library.conv(64, 256, kernel=3, padding=1)\n"
        "assert report.total.peak_inference.measured is not None\n"
        "assert report.total.saved_for_backward.measured is not None\n"
        "print('sympy' in sys.modules, 'torch._dynamo' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]


def test_memory_passes_of_a_batch_norm_network_run_for_real_up_to_a_second() -> None:
    # beyond a quick network the memory passes move to the meta device, except where batch
    # norm would run torch's Python decompositions there (and import torch._dynamo): up to
    # MEMORY_REAL_MODE_DEPENDENT_MAX_SECONDS of estimated forward, the CPU is cheaper
    from convcalc.engine import MEMORY_REAL_MODE_DEPENDENT_MAX_SECONDS, RunPlan, _memory_device

    plain = chain([conv(C, 8), relu(8)])
    normed = chain([conv(C, 8), NormSpec(8, 2), relu(8)])
    quick, slower = RunPlan("cpu", 0, 0.01, ""), RunPlan("cpu", 0, 0.5, "")
    slowest = RunPlan("cpu", 0, MEMORY_REAL_MODE_DEPENDENT_MAX_SECONDS + 0.1, "")
    assert [_memory_device(plain, plan) for plan in (quick, slower, slowest)] == [
        "cpu",
        "meta",
        "meta",
    ]
    assert [_memory_device(normed, plan) for plan in (quick, slower, slowest)] == [
        "cpu",
        "cpu",
        "meta",
    ]
    assert _memory_device(normed, RunPlan("meta", 0, 0.01, "")) == "meta"


def test_the_saved_pass_reuses_the_counted_modules_and_saves_the_same() -> None:
    # a dropout network's saved-for-backward is a second, training-mode pass: it reuses the
    # modules the counted run built (no second build) and saves what freshly built ones do
    nodes = chain([conv(C, 8), NormSpec(8, 2), relu(8), ShapeSpec("dropout", 2, 8), conv(8, 4, 1)])
    spec = InputSpec(2, C, (9, 9))
    measured = measure_graph(nodes, spec, "cpu", Extras(memory=True))
    assert measured.modules is not None and measured.saved is None  # dropout: apart
    reused = me.measure_network_saved(nodes, spec, "cpu", built=measured.modules)
    fresh = me.measure_network_saved(nodes, spec, "cpu")
    assert reused.total == fresh.total > 0
    assert reused.layers == fresh.layers
    assert all(module.training for module in measured.modules.nodes)
    # float16 runs its own modules: the counted ones are float32
    half = me.measure_network_saved(
        nodes, InputSpec(2, C, (9, 9), "float16"), "cpu", built=measured.modules
    )
    assert half.total == fresh.total // 2
