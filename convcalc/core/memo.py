"""Remembered pure functions, bounded between runs and whole within one. Pure: no torch.

A layer's figures, its geometry and its parameter count are asked for by every pass of a run
(the stack builder, the memory model's shapes, the plan, the report). ``functools.lru_cache``
with a bound keeps a long sweep flat in memory, but a network of more distinct layers than the
bound cycles through it, and each pass then computes every layer again (docs/benchmarks.md,
"Cost in depth"). Here a run holds its tables open (:func:`held`): nothing is dropped while
it runs, and when the outermost run ends, a table past its bound is emptied. Outside any run,
a table at its bound is emptied at its next new entry.

Each table is an unbounded ``functools.lru_cache``: a call it remembers costs what an
``lru_cache`` hit costs (no Python frame); only a new entry runs the bound's check.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import ContextDecorator
from typing import Any, TypeVar

T = TypeVar("T")

_holds = 0
_tables: list[tuple[Any, int]] = []


def memo(limit: int) -> Callable[[Callable[..., T]], functools._lru_cache_wrapper[T]]:
    """A decorator: ``function`` remembered by its (hashable) arguments, up to ``limit``
    entries between runs; ``cache_info()`` and ``cache_clear()`` as ``functools.lru_cache``'s."""

    def wrap(function: Callable[..., T]) -> functools._lru_cache_wrapper[T]:
        def computed(*args: Any) -> T:
            if not _holds and remembered.cache_info().currsize >= limit:
                remembered.cache_clear()
            return function(*args)

        remembered = functools.lru_cache(maxsize=None)(computed)
        functools.update_wrapper(remembered, function)
        _tables.append((remembered, limit))
        return remembered

    return wrap


class held(ContextDecorator):  # noqa: N801  (used as a function: ``with held():``, ``@held()``)
    """One run: every table keeps what it learns until the outermost run ends (nested runs
    change nothing); then tables past their bound are emptied. Held where a network can be
    deep: ``library.stack`` (its builder and analysis), each batch spec, a user's model. A
    class, not a generator: a sweep enters one per spec."""

    def __enter__(self) -> None:
        global _holds
        _holds += 1

    def __exit__(self, *exc: object) -> None:
        global _holds
        _holds -= 1
        if not _holds:
            for remembered, limit in _tables:
                if remembered.cache_info().currsize > limit:
                    remembered.cache_clear()
