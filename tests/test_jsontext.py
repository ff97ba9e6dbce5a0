"""output/formats.json_text: json.dumps(data, indent=2), the same text, without importing the
json package on the way (start-up): compared with json.dumps itself on any JSON tree."""

from __future__ import annotations

import enum
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convcalc.output.formats import json_text

#: any text, lone surrogates and control characters included (json escapes them)
TEXT = st.text(st.characters(blacklist_categories=()), max_size=12)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | TEXT
)
TREES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(TEXT, inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(TREES)
def test_the_same_text_as_json_dumps(data: Any) -> None:
    assert json_text(data) == json.dumps(data, indent=2)


class Level(enum.IntEnum):
    HIGH = 3


@pytest.mark.parametrize(
    "data",
    [
        {"a": [], "b": {}, "c": [[]], "d": [{}], "e": ()},  # empty containers: [] and {}
        {"x": math.nan, "y": [math.inf, -math.inf, -0.0, 1e300, 5e-324]},
        {"level": Level.HIGH, "flag": True},  # an int subclass: json's own, as json writes it
        {1: "a", None: "b", 2.5: "c", False: "d"},  # keys json converts: handed to json
        {"é": "ü\u2028\x00\ud800", "": ""},
    ],
)
def test_edge_cases(data: Any) -> None:
    assert json_text(data) == json.dumps(data, indent=2)


def test_what_json_cannot_write_fails_as_json_does() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        json_text({"a": object()})
