"""convcalc: the convolution cost calculator. Every figure measured from the real PyTorch layer
and set beside its closed-form formula."""

from __future__ import annotations

from ._version import __version__

__all__ = ["__version__"]
