"""The formula side of a batch spec made cheaper (branch formrate): each shortcut gives what
the code it replaces gives, and falls back to it where it cannot."""

from __future__ import annotations

import dataclasses

import pytest

from convcalc import _dataclass
from convcalc._dataclass import dataclass


@dataclass(frozen=True)
class _Plain:
    a: int
    b: tuple[int, ...] = ()
    c: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class _Checked:
    a: int

    def __post_init__(self) -> None:
        if self.a < 0:
            raise ValueError("a must not be negative")


@dataclass(frozen=True)
class _WithInitVar:
    a: int
    scale: dataclasses.InitVar[int]


@dataclass(frozen=True)
class _NotInit:
    a: int
    b: int = dataclasses.field(default=5, init=False)


def test_replace_copies_fields_like_dataclasses_replace() -> None:
    old = _Plain(1, (2, 3), {"x": 4})
    new = _dataclass.replace(old, a=7)
    assert new == dataclasses.replace(old, a=7) == _Plain(7, (2, 3), {"x": 4})
    assert type(new) is _Plain
    assert list(vars(new)) == ["a", "b", "c"]  # the field order __init__ gives
    assert new.c is old.c  # replace passes the same objects, never copies
    assert old == _Plain(1, (2, 3), {"x": 4})  # the original is untouched
    with pytest.raises(dataclasses.FrozenInstanceError):
        new.a = 3  # type: ignore[misc]
    assert _dataclass.replace(_Checked(1), a=2) == _Checked(2)


def test_replace_falls_back_where_init_does_more() -> None:
    # __post_init__ runs (and rejects), as dataclasses.replace does
    with pytest.raises(ValueError, match="negative"):
        _dataclass.replace(_Checked(1), a=-1)
    # an InitVar must be given again, as dataclasses.replace demands
    with pytest.raises(ValueError, match="InitVar"):
        _dataclass.replace(_WithInitVar(1, 3), a=2)
    # a field __init__ does not take cannot be replaced
    with pytest.raises(ValueError, match="init=False"):
        _dataclass.replace(_NotInit(1), b=2)
    # a name that is no field: dataclasses.replace's TypeError
    with pytest.raises(TypeError):
        _dataclass.replace(_Plain(1), nope=2)
    # an instance holding more than its fields: made by __init__ again, the extra dropped
    odd = _Plain(1)
    object.__setattr__(odd, "extra", 1)
    assert not hasattr(_dataclass.replace(odd, a=2), "extra")
