"""fvcore's count from the one dispatched pass (fvcore_adapter.dispatch_count: fvcore's own
handles and tables on the dispatched shapes) equals its FlopCountAnalysis trace: by module and
operator, and its unsupported ops, per layer and in total, for every layer kind, the built-in
architectures and random stacks. The table of what the trace records per module
(fvcore_adapter.TRACED_OPS, traced_ops) is checked against the trace itself here."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import pytest
import torch
from hypothesis import HealthCheck, given, settings

from convcalc.core.spec import InputSpec, Node, chain
from convcalc.kinds import (
    ACTIVATIONS,
    ActSpec,
    AdaptivePoolSpec,
    LayerSpec,
    LinearSpec,
    NormSpec,
    ShapeSpec,
    build_conv,
    build_pool,
)
from convcalc.measure import fvcore_adapter as fa
from convcalc.measure.build import GraphModule, build_layer
from convcalc.measure.counting import RECORDED_CALLS, run_counted
from convcalc.measure.onepass import run_once
from convcalc.measure.run import Extras, measure_graph
from convcalc.sources.archs import ARCHITECTURES
from convcalc.sources.stack import build_network
from tests.test_memory_budget import chains

C = 4


def conv(c: int, out: int, k: int = 3, **kw: object) -> LayerSpec:
    return build_conv(in_channels=c, out_channels=out, kernel=k, **kw)  # type: ignore[arg-type]


def pool(kind: str, dims: int) -> LayerSpec:
    return build_pool(kind=kind, kernel="2", dims=dims, channels=C)


SIZE = {1: (8,), 2: (8, 8), 3: (4, 4, 4)}

#: one network per kind and variant: (specs, input shape)
KIND_CASES: dict[str, tuple[list[LayerSpec], tuple[int, ...]]] = {
    "conv": ([conv(C, 8, padding=1)], (2, C, 8, 8)),
    "conv1d bias-free": ([conv(C, 8, dims=1, bias=False)], (1, C, 8)),
    "conv3d": ([conv(C, 8, dims=3, padding=1)], (1, C, 4, 4, 4)),
    "grouped": ([conv(C, 8, groups=2)], (1, C, 8, 8)),
    "depthwise dilated strided": ([conv(C, C, groups=C, dilation=2, stride=2)], (1, C, 9, 9)),
    "same, even kernel": ([conv(C, 8, 2, padding="same")], (1, C, 8, 8)),
    "same, odd kernel": ([conv(C, 8, 3, padding="same")], (1, C, 8, 8)),
    "valid 1-D": ([conv(C, 8, dims=1, padding="valid")], (1, C, 8)),
    "transposed": ([conv(C, 8, stride=2, transpose=True, output_padding=1)], (2, C, 5, 5)),
    "transposed 1-D grouped": ([conv(C, 8, dims=1, transpose=True, groups=2)], (1, C, 6)),
    **{
        f"{mode} padding {d}-D": (
            [conv(C, 8, dims=d, padding=1, padding_mode=mode)],
            (1, C, *SIZE[d]),
        )
        for mode in ("reflect", "replicate", "circular")
        for d in (1, 2, 3)
    },
    **{
        f"{k} pool {d}-D": ([pool(k, d)], (1, C, *SIZE[d]))
        for k in ("max", "avg")
        for d in (1, 2, 3)
    },
    **{
        f"adaptive {k} {d}-D to {s}": (
            [AdaptivePoolSpec(k, d, C, (s,) * d)],
            (2, C, *SIZE[d]),
        )
        for k in ("avg", "max")
        for d in (1, 2, 3)
        for s in (1, 3)
    },
    **{f"batch norm {d}-D": ([NormSpec(C, d)], (2, C, *SIZE.get(d, ()))) for d in (0, 1, 2, 3)},
    "batch norm without affine": ([NormSpec(C, 2, affine=False)], (2, C, 8, 8)),
    **{f"activation {a}": ([ActSpec(a, 2, C)], (1, C, 4, 4)) for a in sorted(ACTIVATIONS)},
    "linear": ([LinearSpec(C, 5)], (2, C)),
    "linear bias-free": ([LinearSpec(C, 5, bias=False)], (2, C)),
    "linear over leading dims": ([LinearSpec(C, 5, dims=2)], (2, 3, 3, C)),
    "flatten linear": ([ShapeSpec("flatten", 2, C), LinearSpec(C * 9, 3)], (2, C, 3, 3)),
    "identity dropout": ([ShapeSpec("identity", 2, C), ShapeSpec("dropout", 2, C)], (2, C, 3, 3)),
}


def graph_of(nodes: Sequence[Node]) -> GraphModule:
    return GraphModule([build_layer(n.spec) for n in nodes], [n.inputs for n in nodes])


def traced(graph: GraphModule, x: torch.Tensor) -> dict[str, list[str]]:
    """The ops fvcore's trace records in each node's scope (prim:: ops aside), in order."""
    fa._fvcore()  # imports fvcore.nn, whose import warns (torch.jit.script is deprecated)
    from fvcore.nn.jit_analysis import _get_scoped_trace_graph

    aliases: dict[object, str] = {}
    for name, module in graph.named_modules():
        aliases.setdefault(module, name)
        aliases[name] = aliases[module]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trace = _get_scoped_trace_graph(graph, (x,), aliases)  # type: ignore[arg-type]
    ops: dict[str, list[str]] = {}
    for node in trace.nodes():
        if not node.kind().startswith("prim::"):
            ops.setdefault(node.scopeName().split("/")[-1], []).append(node.kind())
    return ops


def assert_dispatch_equals_trace(nodes: Sequence[Node], shape: tuple[int, ...]) -> fa.FvcoreCount:
    graph = graph_of(nodes)
    x = torch.zeros(shape)
    names = fa.graph_modules(graph)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trace = fa.fvcore_count(graph, x, ["", *names])
        # the plain counted pass and the one pass (autograd on, memory) dispatch alike
        plain = run_counted(graph, x).counter
        once = run_once(graph, x).record.counter
    for counter in (plain, once):
        counted = fa.dispatch_count(graph, counter.ops, counter.calls)
        assert counted is not None, counter.ops
        # by module and operator: every module, "" (the network) and "nodes" included
        assert counted.by_module == trace.by_module
        for name in ["", *names]:
            assert counted.unsupported[name] == trace.unsupported[name], name
            assert counted.macs(name) == trace.macs(name)
            assert counted.others(name) == trace.others(name)
        assert counted.extended == trace.extended
    return counted


@pytest.mark.parametrize("name", sorted(KIND_CASES))
def test_each_kind_counts_from_the_dispatch_as_fvcore_traces_it(name: str) -> None:
    specs, shape = KIND_CASES[name]
    nodes = chain(specs)
    graph = graph_of(nodes)
    # the table of traced ops is the trace's, op for op, in each module's scope
    scopes = traced(graph, torch.zeros(shape))
    for index, (module, node) in enumerate(zip(graph.nodes, nodes)):
        assert fa.traced_ops(module, len(node.inputs)) == tuple(scopes.get(f"nodes.{index}", []))
    assert_dispatch_equals_trace(nodes, shape)


def test_adds_count_as_the_trace_files_them() -> None:
    # a three-way join is two aten::add, fvcore's unsupported op; batch norm's count beside it
    nodes = (
        Node(NormSpec(C, 2), (-1,)),
        Node(ShapeSpec("add", 2, C), (-1, 0)),
        Node(ShapeSpec("add", 2, C), (-1, 0, 1)),
    )
    counted = assert_dispatch_equals_trace(nodes, (2, C, 3, 3))
    assert counted.unsupported["nodes.2"] == {"aten::add": 2}
    assert counted.unsupported[""] == {"aten::add": 3}
    # batchnorm_flop_jit in eval with affine: input elements × 2 = 2·4·3·3 × 2 = 144
    assert counted.by_module["nodes.0"] == {"batch_norm": 144}
    assert counted.handles == {"aten::batch_norm": "batchnorm_flop_jit"}


@pytest.fixture(scope="module")
def arch_networks() -> dict[str, tuple[tuple[Node, ...], tuple[int, ...]]]:
    # 64×64 inputs: the same layers as at 224 (AlexNet's adaptive pool restores its 6×6),
    # quick enough to trace them all here
    networks = {}
    for name, builder in ARCHITECTURES.items():
        network = build_network(builder(), (1, 3, 64, 64), "float32", name)
        networks[name] = (tuple(network.nodes), (1, 3, 64, 64))
    return networks


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_architectures_count_from_the_dispatch_as_fvcore_traces_them(
    arch: str, arch_networks: dict[str, tuple[tuple[Node, ...], tuple[int, ...]]]
) -> None:
    nodes, shape = arch_networks[arch]
    counted = assert_dispatch_equals_trace(nodes, shape)
    assert counted.macs("") > 0


def test_resnet18_figures_by_hand() -> None:
    # ResNet-18's stem alone on 1×3×64×64: conv 7×7/2 p3, 64 out -> 32×32: 64·3·49·32·32 =
    # 9,633,792 MACs; batch norm (eval, affine) 2·64·32·32 = 131,072; relu ignored; max pool
    # 3×3/2 -> aten::max_pool2d, unsupported once
    specs = [
        conv(3, 64, 7, stride=2, padding=3, bias=False),
        NormSpec(64, 2),
        ActSpec("relu", 2, 64),
        build_pool(kind="max", kernel="3", stride="2", padding="1", dims=2, channels=64),
    ]
    counted = assert_dispatch_equals_trace(chain(specs), (1, 3, 64, 64))
    assert counted.by_module[""] == {"conv": 9_633_792, "batch_norm": 131_072}
    assert counted.unsupported[""] == {"aten::max_pool2d": 1}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains())
def test_random_stacks_count_from_the_dispatch_as_fvcore_traces_them(
    case: tuple[tuple[Node, ...], InputSpec, tuple[int, ...]],
) -> None:
    nodes, x, _ = case
    assert_dispatch_equals_trace(nodes, x.shape)


def test_recorded_calls_are_the_carriers() -> None:
    assert set(fa.CARRIERS) == RECORDED_CALLS


def test_fvcore_tables_are_fvcores_own() -> None:
    # read from fvcore's source without importing fvcore.nn: the same table as importing it
    handles, ignored = fa.fvcore_tables()
    fa._fvcore()
    from fvcore.nn.flop_count import _DEFAULT_SUPPORTED_OPS
    from fvcore.nn.jit_analysis import _IGNORED_OPS

    assert set(handles) == set(_DEFAULT_SUPPORTED_OPS) | {"aten::_convolution_mode"}
    assert ignored == frozenset(_IGNORED_OPS)
    for op, handle in _DEFAULT_SUPPORTED_OPS.items():
        assert handles[op].__qualname__ == handle.__qualname__


def test_measure_graph_uses_the_dispatch_and_says_which_handles_ran() -> None:
    specs = [conv(C, 8), NormSpec(8, 2), build_pool(kind="max", kernel="2", dims=2, channels=8)]
    measured = measure_graph(chain(specs), InputSpec(1, C, (8, 8)), "cpu", Extras(memory=True))
    source = measured.sources["macs"]
    assert source.startswith("fvcore's own handles (fvcore.nn.jit_handles) on the shapes")
    assert "aten::_convolution: conv_flop_jit" in source
    assert "aten::batch_norm: batchnorm_flop_jit" in source
    assert "not traced" in source
    # conv 3×3, 4 -> 8, on 8×8 -> 6×6: 8·4·9·36 = 10,368 MACs; batch norm 2·8·36 = 576
    assert measured.layers[0].macs == 10_368
    assert any("fvcore also counts batch_norm: 576" in n for n in measured.layers[1].notes)
    assert any("no handler for aten::max_pool2d (1 call)" in n for n in measured.layers[2].notes)


def test_a_module_whose_trace_is_not_derived_keeps_the_trace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    specs = [conv(C, 8), NormSpec(8, 2)]
    graph = graph_of(chain(specs))
    counter = run_counted(graph, torch.zeros(1, C, 8, 8)).counter
    assert fa.dispatch_count(graph, counter.ops, counter.calls) is not None
    # an in-place activation: its trace records relu_-style ops convcalc has not derived
    inplace = GraphModule([torch.nn.ReLU6(inplace=True)], [(-1,)])
    counter = run_counted(inplace, torch.zeros(1, C, 8, 8)).counter
    assert fa.dispatch_count(inplace, counter.ops, counter.calls) is None
    # an op outside RULE_COVERS (here: batch norm's, taken out) keeps the trace, with its notes
    monkeypatch.setattr(fa, "RULE_COVERS", fa.RULE_COVERS - {"aten.native_batch_norm"})
    measured = measure_graph(chain(specs), InputSpec(1, C, (8, 8)), "cpu")
    assert measured.sources["macs"].startswith("fvcore FlopCountAnalysis")
    assert any("fvcore also counts batch_norm" in n for n in measured.layers[1].notes)


def test_an_fvcore_whose_tables_cannot_be_read_keeps_the_trace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a future fvcore laid out otherwise (its table not a dict literal): the trace counts, as
    # before the dispatch path, never an internal error
    def unreadable() -> None:
        raise LookupError("fvcore's _DEFAULT_SUPPORTED_OPS is not a dict literal")

    monkeypatch.setattr(fa, "fvcore_tables", unreadable)
    specs = [conv(C, 8), NormSpec(8, 2)]
    graph = graph_of(chain(specs))
    counter = run_counted(graph, torch.zeros(1, C, 8, 8)).counter
    assert fa.dispatch_count(graph, counter.ops, counter.calls) is None
    measured = measure_graph(chain(specs), InputSpec(1, C, (8, 8)), "cpu")
    assert measured.sources["macs"].startswith("fvcore FlopCountAnalysis")
    assert measured.layers[0].macs == 10_368  # 8·4·9·36, as above
