"""Users' own modules read back into specs: the layer kinds recognise their torch modules
(``from_module``), handed the torch kit."""

from __future__ import annotations

from torch import nn

from convcalc.kinds import LayerSpec, from_module
from convcalc.measure.build import KIT


def spec_of(name: str, module: nn.Module) -> LayerSpec | None:
    """The spec of a module some layer kind knows (None for anything else)."""
    return from_module(name, module, KIT)
