"""Where a network is measured (a real CPU run or torch's meta device) and the options every
analysis takes."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from convcalc import kinds
from convcalc._dataclass import dataclass
from convcalc.core import formulas
from convcalc.core.spec import InputSpec
from convcalc.errors import SpecError

if TYPE_CHECKING:  # an annotation: naming every kind loads them all (start-up)
    from convcalc.kinds import LayerSpec

#: Real CPU runs are kept to this much float32 tensor data (input, outputs, parameters) ...
REAL_RUN_MAX_BYTES = 256 * 2**20
#: ... and to about this long per run, at the rates below (about half of what this kind of
#: machine measured with 2 threads; see docs/benchmarks.md). Larger layers are measured on the
#: meta device.
REAL_RUN_MAX_SECONDS = 0.4
MAC_RATES = {
    "dense": 2.5e10,
    "dilated": 9e9,
    "3d": 3.5e9,
    "grouped": 2.5e9,
    "depthwise": 9e8,
}
MEASURE_ON = ("auto", "cpu", "meta")


@dataclass(frozen=True)
class RunPlan:
    """Where a network is measured (a real CPU run or the meta device), its estimated bytes and
    seconds, and why."""

    device: str
    estimated_bytes: int
    estimated_seconds: float
    reason: str


@dataclass(frozen=True)
class Options:
    """How to measure: where (auto, cpu, meta), and what beyond the forward figures."""

    measure_on: str = "auto"
    train: bool = False
    time: bool = False
    device: str = "cpu"
    min_run_time: float = 0.2
    #: every figure by formula alone: torch is not even imported
    formula_only: bool = False
    #: the optimizer of the training-step memory figure: sgd, momentum, adam or adamw
    optimizer: str = "adam"
    #: a memory size ("16GiB", "80GB"): the largest batches whose training step and whose
    #: inference fit it, per dtype (total.fit)
    fit: str | None = None
    #: the roofline (issue 14): bytes moved, intensity, bound and time lower bound per layer on
    #: the device's peaks (--time implies it); the peaks given (GFLOP/s, GB/s: nothing is
    #: measured), or measured once and cached (recalibrate: measure again); ``peaks``: already
    #: resolved (compare and batch resolve them once for all their reports); ``progress``: told
    #: one line before a calibration runs (the CLI prints it on stderr)
    roofline: bool = False
    peak_gflops: float | None = None
    peak_gbps: float | None = None
    recalibrate: bool = False
    peaks: Any = None
    progress: Callable[[str], None] | None = None
    #: measure saved-for-backward and the inference peak (False: formula only, and the
    #: sources say so; ``batch`` without --memory, whose rate this would halve)
    measure_memory: bool = True


def plan_run(
    specs: Sequence[LayerSpec], inputs: Sequence[InputSpec], measure_on: str = "auto"
) -> RunPlan:
    """Where to measure: a real CPU run when it fits in memory and time, else the meta device."""
    elements = math.prod(inputs[0].shape)
    seconds = 0.0
    for spec, layer_input in zip(specs, inputs):
        figures = kinds.figures(spec, layer_input)
        elements += math.prod(figures.output_shape.value) + figures.params.value
        seconds += figures.macs.value / MAC_RATES[kinds.kind_of(spec).rate(spec)]
    estimated_bytes = 4 * elements
    if measure_on in ("cpu", "meta"):
        return RunPlan(measure_on, estimated_bytes, seconds, f"--measure-on {measure_on}")
    if estimated_bytes > REAL_RUN_MAX_BYTES:
        reason = (
            f"a real run needs about {formulas.human_bytes(estimated_bytes)} of tensors "
            f"(limit {formulas.human_bytes(REAL_RUN_MAX_BYTES)})"
        )
        return RunPlan("meta", estimated_bytes, seconds, reason)
    if seconds > REAL_RUN_MAX_SECONDS:
        reason = f"a real run would take about {seconds:.1f} s (limit {REAL_RUN_MAX_SECONDS} s)"
        return RunPlan("meta", estimated_bytes, seconds, reason)
    return RunPlan("cpu", estimated_bytes, seconds, "small enough to run for real")


def physical_memory_bytes() -> int | None:
    """This machine's physical memory (None where the system does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_here(plan: RunPlan) -> None:
    """A real CPU run asked for (--measure-on cpu) whose tensors alone exceed this machine's
    memory: it does not fit here, which is said before torch tries and fails (or the system
    kills it)."""
    if plan.device != "cpu":  # nothing runs for real: no need to ask the system
        return
    memory = physical_memory_bytes()
    if memory is not None and plan.estimated_bytes > memory:
        raise SpecError(
            "measure_on",
            f"--measure-on cpu: a real run needs about {formulas.human_bytes(plan.estimated_bytes)}"
            f" of tensors, more than this machine's {formulas.human_bytes(memory)} of memory: it "
            "does not fit here; --measure-on auto or meta measures it on torch's meta device",
        )
