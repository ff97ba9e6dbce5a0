"""The measured side's per-spec shortcuts (branch metarate): what is remembered is what torch
reported for the same module, and a sweep's collector settings are its own."""

from __future__ import annotations

import gc

import torch

from convcalc import library
from convcalc.measure import counting, run
from convcalc.sources import batch


def test_sweep_raises_the_collector_threshold_only_while_it_runs() -> None:
    before = gc.get_threshold()
    seen: list[tuple[int, int, int]] = []
    specs = [{"in": 3, "out": 8, "kernel": 3, "size": 16}, {"in": 3, "out": 8, "kernel": 1}]
    for _ in library.sweep(specs, measure=library.Measure(formula_only=True, memory=False)):
        seen.append(gc.get_threshold())
    assert gc.get_threshold() == before
    # Python's default first threshold is 700; the sweep's is SWEEP_GC_THRESHOLD (10,000)
    assert seen and all(t[0] == max(before[0], batch.SWEEP_GC_THRESHOLD) for t in seen)
    assert all(t[1:] == before[1:] for t in seen)


def test_parameter_counts_of_a_reused_meta_graph_are_its_modules() -> None:
    from convcalc.sources.batch import spec_network

    # conv 16 -> 32, 3x3, bias: 16*32*9 + 32 = 4,640; the second run reads the remembered count
    net = spec_network({"in": 16, "out": 32, "kernel": 3, "size": 8}, "float32")
    first = run.measure_graph(net.nodes, net.input, "meta")
    module = run._META_LAYERS[net.nodes[0].spec]
    assert run._META_COUNTS[module] == 4640
    second = run.measure_graph(net.nodes, net.input, "meta")
    assert first.layers[0].params == second.layers[0].params == 4640
    assert second.total_memory == first.total_memory
    # params memory: 4,640 float32 = 18,560 B
    assert first.total_memory.params == 18560


def test_one_graph_per_wiring_takes_each_networks_modules() -> None:
    from convcalc.sources.batch import spec_network

    # two one-layer networks of the same wiring share a graph, each run with its own module:
    # conv 3 -> 8, 3x3 on 10x10: 8x8 out, 3*8*9 + 8 = 224 params; conv 3 -> 5, 1x1: 10x10, 20
    a = spec_network({"in": 3, "out": 8, "kernel": 3, "size": 10}, "float32")
    b = spec_network({"in": 3, "out": 5, "kernel": 1, "size": 10}, "float32")
    ma = run.measure_graph(a.nodes, a.input, "meta")
    mb = run.measure_graph(b.nodes, b.input, "meta")
    assert run._graph(a.nodes, "meta", True) is run._graph(b.nodes, "meta", True)
    assert (ma.layers[0].output_shape, ma.layers[0].params) == ((1, 8, 8, 8), 224)
    assert (mb.layers[0].output_shape, mb.layers[0].params) == ((1, 5, 10, 10), 20)
    again = run.measure_graph(a.nodes, a.input, "meta")
    assert again.layers == ma.layers
    # a depthwise-separable pair is another wiring, its own graph: 3*9 + 3 = 30 (depthwise,
    # bias) and 3*8 + 8 = 32 (pointwise); 62 params, 248 B
    pair = spec_network({"op": "dw", "in": 3, "out": 8, "kernel": 3, "size": 10}, "float32")
    mp = run.measure_graph(pair.nodes, pair.input, "meta")
    assert [layer.params for layer in mp.layers] == [30, 32]
    assert mp.total_memory.params == 4 * 62


def test_element_size_is_torchs() -> None:
    for name, dtype in (("float32", torch.float32), ("float16", torch.float16)):
        assert run.element_size(name) == torch.empty((), dtype=dtype).element_size()
        assert run._ELEMENT_SIZES[name] == torch.empty((), dtype=dtype).element_size()


def test_counter_hooks_are_plain_attributes_cleared_after() -> None:
    from convcalc.sources.batch import spec_network

    net = spec_network({"in": 4, "out": 4, "kernel": 3, "size": 8}, "float32")
    graph = run._graph(net.nodes, "meta", True)
    record = counting.run_counted(graph, torch.empty(net.input.shape, device="meta"))
    assert graph.before is None and graph.after is None
    assert "before" not in graph._modules and "before" not in graph._parameters
    # each output element reads 4 channels x 3x3 = 36 MACs; 4 channels x 6x6 outputs = 144
    # elements: 5,184 MACs, 10,368 FLOPs (the bias adds are not in torch's conv formula)
    assert record.counter.flops == {0: 10368}
    assert record.outputs == {0: (1, 4, 6, 6)}


def test_fits_here_asks_the_system_only_for_a_real_run(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from convcalc.engine import plan
    from convcalc.errors import SpecError

    asked: list[bool] = []

    def memory() -> int:
        asked.append(True)
        return 1000

    monkeypatch.setattr(plan, "physical_memory_bytes", memory)
    plan.check_fits_here(plan.RunPlan("meta", 10**12, 1.0, "x"))
    assert asked == []
    plan.check_fits_here(plan.RunPlan("cpu", 999, 1.0, "x"))  # 999 B <= 1,000 B: fits
    with pytest.raises(SpecError, match="more than this machine's"):
        plan.check_fits_here(plan.RunPlan("cpu", 1001, 1.0, "x"))
    assert asked == [True, True]
