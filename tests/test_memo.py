"""Remembered figures (core.memo): bounded between runs, whole within one, so a network of more
distinct layers than the bound still computes each layer's figures once."""

from __future__ import annotations

from convcalc import library
from convcalc.core import memo
from convcalc.kinds import figures


def test_bounded_outside_a_run_and_whole_inside() -> None:
    calls: list[int] = []

    @memo.memo(3)
    def square(n: int) -> int:
        calls.append(n)
        return n * n

    def size() -> int:
        return square.cache_info().currsize

    assert [square(n) for n in (1, 2, 1)] == [1, 4, 1]
    assert calls == [1, 2]  # the repeat is remembered
    square(3)
    square(4)  # outside a run the table is at its bound (3): emptied, then 4 kept
    assert size() == 1
    calls.clear()
    square(4)
    assert calls == []
    with memo.held():
        with memo.held():  # nested runs change nothing
            for n in range(10):
                square(n)
        assert size() == 10  # nothing dropped while the run holds the table
        calls.clear()
        assert [square(n) for n in range(10)] == [n * n for n in range(10)]
        assert calls == []
    assert size() == 0  # past its bound when the outermost run ended: emptied
    with memo.held():
        square(5)
    assert size() == 1  # within its bound: kept for the next run
    assert square.__name__ == "square" and square.__wrapped__ is not None


def test_a_network_past_the_bound_computes_each_layer_once() -> None:
    # 2,200 convs and 2,200 ReLUs, each distinct (its own name): 4,400 layers plus each ReLU's
    # parameter probe is past the 4,096 entries a sweep keeps. Within the run each new entry
    # is computed once: misses == entries added (none was computed twice).
    source = "; ".join(["conv k3 p1 out8", "relu"] * 2200)
    measure = library.Measure(formula_only=True)
    with memo.held():
        before = figures.cache_info()
        report = library.stack(source, size="8", measure=measure)
        after = figures.cache_info()
        assert after.currsize - before.currsize > 4096
        assert after.misses - before.misses == after.currsize - before.currsize
    assert len(report.layers) == 4400
    assert figures.cache_info().currsize <= 4096
