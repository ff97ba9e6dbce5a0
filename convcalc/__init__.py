"""convcalc: the convolution cost calculator. Every figure measured from the real PyTorch layer
and set beside its closed-form formula.

    from convcalc import analyze, analyze_stack, analyze_module
    report = analyze(64, 256, kernel=3, padding=1)
    report["total.params"]      # 147712, as in `convcalc conv ... --get total.params`
    report.to_dict()            # the JSON of `--format json`

The API is imported lazily: ``import convcalc`` loads neither torch nor Rich.
"""

from __future__ import annotations

from typing import Any

from convcalc._version import __version__
from convcalc.errors import ConvcalcError, MeasurementError, SpecError

__all__ = [
    "ConvcalcError",
    "MeasurementError",
    "ModelInput",
    "SpecError",
    "__version__",
    "analyze",
    "analyze_module",
    "analyze_stack",
    "held",
    "merge",
    "model",
    "resume",
    "sweep",
]


def __getattr__(name: str) -> Any:
    if name in ("analyze", "analyze_stack", "analyze_module", "sweep", "held", "resume", "merge"):
        from convcalc import library

        return getattr(library, name)
    if name == "model":  # a user's model (analyze_module)
        from convcalc import library

        return library.model
    if name == "ModelInput":  # one input of a model's forward: model(m, inputs=[...])
        from convcalc.core.modelinput import ModelInput

        return ModelInput
    raise AttributeError(f"module 'convcalc' has no attribute {name!r}")
