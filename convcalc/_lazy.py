"""Names a module re-exports from other modules, imported on first use (PEP 562): start-up
loads only what a command uses (docs/benchmarks.md, issue 11)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any


def exports(home: str, package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``home``: each name in ``where`` is taken from the module
    ``package.where[name]`` at its first use and kept in ``home``'s namespace."""

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {home!r} has no attribute {name!r}")
        from importlib import import_module

        value = getattr(import_module(f"{package}.{module}"), name)
        setattr(sys.modules[home], name, value)
        return value

    return __getattr__
