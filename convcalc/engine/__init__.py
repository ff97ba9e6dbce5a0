"""The analysis: validate, compute every figure by formula, measure it with torch, and set the
two side by side. Never prints, never exits; raises :mod:`convcalc.errors` types.

One module per job (docs/architecture.md):

- :mod:`.plan`: where a network is measured (a real CPU run or the meta device), ``Options``;
- :mod:`.network`: one network (a layer, a chain, a graph) analysed into a ``Report``;
- :mod:`.presets`: the conv kinds of the source documents against their baselines, ``compare``;
- :mod:`.model`: a user's model, counted at the dispatch level, module by module;
- :mod:`.memory`: saved for backward, the inference peak, a training step, what fits;
- :mod:`.roofline`: bytes moved, intensity, bound and time per layer on the device's peaks.

Every name the modules define for others is importable from ``convcalc.engine`` as before the
split; each is imported on its first use (``_SUBMODULE``), so a command loads only the jobs it
runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from convcalc._lazy import exports

if TYPE_CHECKING:
    from convcalc.engine.memory import (
        MEMORY_REAL_MAX_SECONDS,
        MEMORY_REAL_MODE_DEPENDENT_MAX_SECONDS,
        MODEL_TRAINING_MAX_BYTES,
        TRAINING_RUN_MAX_BYTES,
        TRAINING_RUN_MAX_SECONDS,
        _memory_device,
        check_memory_options,
        with_memory,
        with_model_memory,
    )
    from convcalc.engine.model import (
        analyze_model,
        model_report,
    )
    from convcalc.engine.network import (
        analyze,
        analyze_chain,
        analyze_graph,
        analyze_network,
    )
    from convcalc.engine.plan import (
        MAC_RATES,
        MEASURE_ON,
        REAL_RUN_MAX_BYTES,
        REAL_RUN_MAX_SECONDS,
        Options,
        RunPlan,
        check_fits_here,
        physical_memory_bytes,
        plan_run,
    )
    from convcalc.engine.presets import (
        analyze_dilated,
        analyze_grouped,
        compare,
    )
    from convcalc.engine.roofline import (
        ROOFLINE_TOP,
        resolve_peaks,
        roofline_total,
        roofline_why,
        with_model_roofline,
        with_peaks,
        with_roofline,
    )

#: each public name -> the submodule defining it: a name is imported on first use (PEP 562),
#: so a command loads only the jobs it runs (start-up: `conv` needs neither model nor presets)
_SUBMODULE: dict[str, str] = {
    "MEMORY_REAL_MAX_SECONDS": "memory",
    "MEMORY_REAL_MODE_DEPENDENT_MAX_SECONDS": "memory",
    "MODEL_TRAINING_MAX_BYTES": "memory",
    "TRAINING_RUN_MAX_BYTES": "memory",
    "TRAINING_RUN_MAX_SECONDS": "memory",
    "_memory_device": "memory",
    "check_memory_options": "memory",
    "with_memory": "memory",
    "with_model_memory": "memory",
    "analyze_model": "model",
    "model_report": "model",
    "analyze": "network",
    "analyze_chain": "network",
    "analyze_graph": "network",
    "analyze_network": "network",
    "MAC_RATES": "plan",
    "MEASURE_ON": "plan",
    "REAL_RUN_MAX_BYTES": "plan",
    "REAL_RUN_MAX_SECONDS": "plan",
    "Options": "plan",
    "RunPlan": "plan",
    "check_fits_here": "plan",
    "physical_memory_bytes": "plan",
    "plan_run": "plan",
    "analyze_dilated": "presets",
    "analyze_grouped": "presets",
    "compare": "presets",
    "ROOFLINE_TOP": "roofline",
    "resolve_peaks": "roofline",
    "roofline_total": "roofline",
    "roofline_why": "roofline",
    "with_model_roofline": "roofline",
    "with_peaks": "roofline",
    "with_roofline": "roofline",
}


__getattr__ = exports(__name__, __name__, _SUBMODULE)


__all__ = [
    "MAC_RATES",
    "MEASURE_ON",
    "MEMORY_REAL_MAX_SECONDS",
    "MEMORY_REAL_MODE_DEPENDENT_MAX_SECONDS",
    "MODEL_TRAINING_MAX_BYTES",
    "Options",
    "REAL_RUN_MAX_BYTES",
    "REAL_RUN_MAX_SECONDS",
    "ROOFLINE_TOP",
    "RunPlan",
    "TRAINING_RUN_MAX_BYTES",
    "TRAINING_RUN_MAX_SECONDS",
    "_memory_device",
    "analyze",
    "analyze_chain",
    "analyze_dilated",
    "analyze_graph",
    "analyze_grouped",
    "analyze_model",
    "analyze_network",
    "check_fits_here",
    "check_memory_options",
    "compare",
    "model_report",
    "physical_memory_bytes",
    "plan_run",
    "resolve_peaks",
    "roofline_total",
    "roofline_why",
    "with_memory",
    "with_model_memory",
    "with_model_roofline",
    "with_peaks",
    "with_roofline",
]
