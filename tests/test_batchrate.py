"""The batch path's per-spec shortcuts (issue 16's rate goals, branch batchrate) give exactly
what the work they skip would give: the cumulative figures remembered by geometry, the
receptive-field composition remembered, the JSONL record's encoder."""

from __future__ import annotations

import json
from fractions import Fraction

from convcalc import library
from convcalc.core import cumulative as cumulative_module
from convcalc.core.cumulative import cumulative
from convcalc.core.grammar import parse_inline
from convcalc.core.graph import graph_inputs
from convcalc.measure import rfprobe
from convcalc.output.formats import batch_record
from convcalc.sources import stack


def network(text: str, shape: tuple[int, ...]) -> stack.Network:
    return stack.build_network({"layers": parse_inline(text)}, shape, "float32", "test")


def figures(net: stack.Network) -> list[cumulative_module.Cumulative]:
    nodes = tuple(net.nodes)
    return cumulative(nodes, list(graph_inputs(nodes, net.input, None)), net.input)


def computed(net: stack.Network) -> list[cumulative_module.Cumulative]:
    nodes = tuple(net.nodes)
    return cumulative_module._cumulative(
        nodes, list(graph_inputs(nodes, net.input, None)), net.input
    )


def test_cumulative_by_geometry_is_shared_across_channels_and_sizes() -> None:
    # conv k3 s2 p1: r 3, J 2, P 1; conv k5 d2 p4 (span 9): r 3 + 8·2 = 19, J 2, P 1 + 4·2 = 9
    # at 3 -> 8 -> 16 channels on 64x64 and at 32 -> 64 -> 8 channels on 30x50: the same figures
    first = network("conv out8 k3 s2 p1; conv out16 k5 d2 p4", (1, 3, 64, 64))
    second = network("conv out64 k3 s2 p1; conv out8 k5 d2 p4", (2, 32, 30, 50))
    cumulative_module._BY_GEOMETRY.clear()
    got = figures(first)
    assert len(cumulative_module._BY_GEOMETRY) == 1
    assert [c.receptive_field for c in got] == [(3, 3), (19, 19)]
    assert [c.effective_stride for c in got] == [(Fraction(2),) * 2] * 2
    assert [c.effective_padding for c in got] == [(Fraction(1),) * 2, (Fraction(9),) * 2]
    again = figures(second)
    assert len(cumulative_module._BY_GEOMETRY) == 1  # the same key: remembered
    assert again == got == computed(second) == computed(first)


def test_cumulative_with_adaptive_pooling_or_linear_is_not_remembered() -> None:
    # adaptive pooling to 4: from 16 its windows are 4 wide (r 4), from 12 they are 3 (r 3);
    # a linear layer sees the whole input (16x16, then 12x12): both read the sizes
    cumulative_module._BY_GEOMETRY.clear()
    for size, field in ((16, 4), (12, 3)):
        net = network("adaptiveavgpool output_size=4", (1, 3, size, size))
        assert figures(net)[0].receptive_field == (field, field)
        flat = network("flatten; linear out10", (1, 3, size, size))
        assert figures(flat)[-1].receptive_field == (size, size)
    assert not cumulative_module._BY_GEOMETRY


def test_cumulative_by_geometry_stays_bounded() -> None:
    cumulative_module._BY_GEOMETRY.clear()
    limit = cumulative_module._BY_GEOMETRY_MAX
    try:
        cumulative_module._BY_GEOMETRY_MAX = 3
        for kernel in (1, 3, 5, 7, 9):
            figures(network(f"conv out4 k{kernel}", (1, 3, 32, 32)))
        assert len(cumulative_module._BY_GEOMETRY) == 3
    finally:
        cumulative_module._BY_GEOMETRY_MAX = limit


def test_remembered_composition_equals_the_composition() -> None:
    # conv k3 s2 p1 after conv k3 p1, measured: r 3 then 3 + 2·1 = 5, J 2, P 1 + 1 = 2
    net = network("conv out4 k3 p1; conv out4 k3 s2 p1", (1, 3, 32, 32))
    first = rfprobe.cumulative_probe(net.nodes, net.input)
    hits = rfprobe._compose.cache_info().hits
    second = rfprobe.cumulative_probe(net.nodes, net.input)
    assert rfprobe._compose.cache_info().hits >= hits + 4  # 2 layers x 2 axes
    assert first == second
    assert second[1].receptive_field == (5, 5)
    assert second[1].effective_padding == (Fraction(2),) * 2
    taps = rfprobe.axis_taps(False, 3, 2, 1, 1)
    start = rfprobe._compose.__wrapped__(rfprobe._INPUT, rfprobe.axis_taps(False, 3, 1, 1, 1))
    assert rfprobe._compose(start, taps) == rfprobe._compose.__wrapped__(start, taps)


def test_jsonl_record_is_json_dumps_of_the_record() -> None:
    specs = [
        {"in": 3, "out": 8, "kernel": 3, "size": 14},
        {"op": "dw", "in": 8, "out": 16, "size": 7},
        {"in": 3, "out": 8, "kernel": 99, "size": 7},  # an error record
    ]
    records = list(library.sweep(specs, measure=library.Measure(formula_only=True)))
    assert len(records) == 3
    for record in records:
        line = batch_record(record, "jsonl")
        assert line == json.dumps(record.to_dict()) + "\n"
        assert batch_record(record, "json", first=False) == ",\n" + json.dumps(record.to_dict())


def test_dispatch_shapes_are_torchs_get_shape() -> None:
    # torch.utils.flop_counter hands its formulas tree_map(get_shape, args): tensors become
    # their shapes through lists, tuples and dicts; everything else stays as it is
    import torch
    from torch.utils._pytree import tree_map
    from torch.utils.flop_counter import get_shape

    from convcalc.measure.counting import _shapes

    x, w = torch.zeros((1, 3, 8, 8), device="meta"), torch.zeros((4, 3, 3, 3), device="meta")
    args = (x, w, None, [1, 2], [0, 0], [1, 1], False, [0, 0], 1, 2.5, "name", torch.float32)
    nested = {"a": [x, (w, 3)], "b": (True, [None, [x]])}
    for value in (args, nested, x, [], (), 7):
        got, want = _shapes(value), tree_map(get_shape, value)
        assert got == want
        assert type(got) is type(want)
    assert _shapes(args)[:2] == (torch.Size([1, 3, 8, 8]), torch.Size([4, 3, 3, 3]))


def test_exact_repeats_reuse_their_report_and_nothing_else(monkeypatch) -> None:
    from convcalc.engine.plan import Options
    from convcalc.sources import batch as batch_source

    specs = [
        {"in": 3, "out": 8, "kernel": 3, "size": 14},
        {"in": 3, "out": 8, "kernel": 3, "size": 14.0},  # a float size: an error, not a repeat
        {"out": 8, "in": 3, "kernel": 3, "size": 14},  # another key order: analysed again
        {"in": 3, "out": 8, "kernel": 3, "size": 14},  # an exact repeat of the first
        {"in": 3, "out": 8, "kernel": 3, "size": 14.0},  # errors are not remembered
        {"in": 3, "out": 8, "kernel": 3, "size": 15},
    ]
    read = [batch_source.Spec(n + 1, spec, n) for n, spec in enumerate(specs)]
    analysed: list[int] = []
    real = batch_source.analyze_spec

    def counted(spec, dtype, options):  # type: ignore[no-untyped-def]
        analysed.append(spec.index)
        return real(spec, dtype, options)

    monkeypatch.setattr(batch_source, "analyze_spec", counted)
    options = Options(measure_on="meta", measure_memory=False)
    results = list(batch_source.run(iter(read), "float32", options))
    assert analysed == [0, 1, 2, 4, 5]
    assert results[3][1] is results[0][1]
    alone = [real(spec, "float32", options) for spec in read]
    assert [(r[1] is None, r[2]) for r in results] == [(a[0] is None, a[1]) for a in alone]
    for (_, report, _), (want, _) in zip(results, alone):
        if want is not None:
            assert json.dumps(report.to_dict()) == json.dumps(want.to_dict())
    analysed.clear()
    list(batch_source.run(iter(read), "float32", Options(measure_on="meta", time=True)))
    assert analysed == [0, 1, 2, 3, 4, 5]  # each spec timed afresh


def test_exact_keys_tell_types_apart() -> None:
    from convcalc.sources.batch import _exact

    values = [1, 1.0, True, "1", [1], (1,), 0.0, -0.0, None, {"a": 1}]
    keys = [_exact(v) for v in values]
    assert len(set(keys)) == len(values)
    assert _exact({"a": 1, "b": 2}) != _exact({"b": 2, "a": 1})
    assert _exact({"a": [1, {"b": 2.5}]}) == _exact({"a": [1, {"b": 2.5}]})
    assert _exact({"a": object()}) is None  # anything else is never remembered


def test_remembered_node_field_equals_the_arithmetic() -> None:
    # conv k3 s2 p1 after conv k3 p1 (as above): r 5, J 2, P 2 on both axes, remembered
    net = network("conv out4 k3 p1; conv out4 k3 s2 p1", (1, 3, 32, 32))
    first = rfprobe.cumulative_probe(net.nodes, net.input)
    hits = rfprobe._node_field.cache_info().hits
    again = rfprobe.cumulative_probe(net.nodes, net.input)
    assert rfprobe._node_field.cache_info().hits == hits + 2
    assert again == first
    assert again[1] == rfprobe.NodeField((5, 5), (Fraction(2),) * 2, (Fraction(2),) * 2)
