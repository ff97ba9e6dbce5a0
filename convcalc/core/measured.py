"""What a measurement found, as plain data (no torch): convcalc.measure fills it in; with
``--formula-only`` nothing is measured and every field is None."""

from __future__ import annotations

from typing import Any

from convcalc._dataclass import dataclass
from convcalc.core.memory import Memory
from convcalc.core.spec import Ints


@dataclass(frozen=True)
class LayerMeasurement:
    """One layer's figures as torch (or fvcore) measured them; None where not measured."""

    output_shape: Ints | None
    params: int | None
    flops: int | None
    macs: int | None
    receptive_field: Ints | None
    output_elements: int | None
    notes: tuple[str, ...] = ()
    #: --train: torch's counter on the backward pass of the layer split into ``groups`` dense
    #: convolutions (where its formula is right), and on the real layer itself
    backward_flops: int | None = None
    backward_flops_torch: int | None = None
    #: --time: median latency of the forward pass, and the number of timed runs
    latency_ms: float | None = None
    timed_runs: int | None = None
    #: --time: the interquartile range of the timed blocks' per-run times
    latency_iqr_ms: float | None = None
    #: receptive field of one output relative to the network input (None: flat output)
    cumulative_receptive_field: Ints | None = None


@dataclass(frozen=True)
class ChainMeasurement:
    """What one measured run of a network gave: each layer's figures, the whole field, the
    memory, and the source of each figure."""

    device: str
    layers: tuple[LayerMeasurement, ...]
    receptive_field: Ints | None  # of the whole chain
    memory: tuple[Memory | None, ...]  # one per layer: its input, output and params
    total_memory: Memory | None
    sources: dict[str, str]
    #: --time: what was timed, how, and how long the timing took
    timing: dict[str, Any] | None = None
    #: saved for backward and the inference peak measured in the same real pass as the
    #: counts (measure.onepass: SavedMeasurement, PeakMeasurement); None: measured apart
    saved: Any = None
    peak: Any = None
    #: the real modules the counted run built and ran (a measure.build.GraphModule; None on
    #: the meta device), for the memory passes to reuse instead of building them again
    modules: Any = None


def nothing_measured(count: int) -> ChainMeasurement:
    """``--formula-only``: every figure by formula, none measured."""
    blank = LayerMeasurement(None, None, None, None, None, None)
    return ChainMeasurement(
        device="none",
        layers=(blank,) * count,
        receptive_field=None,
        memory=(None,) * count,
        total_memory=None,
        sources={"everything": "formulas only (--formula-only): torch was not loaded"},
    )
