"""Paths into a report's JSON (``total.params``, ``layers.0.macs.measured``) for ``--get``, and
expectations on them (``total.macs<=1e9``) for ``--expect``. Pure: no torch, no Rich."""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable, Sequence
from typing import Any

from convcalc._dataclass import dataclass
from convcalc.errors import SpecError

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "!=": operator.ne,
    "==": operator.eq,
    "<": operator.lt,
    ">": operator.gt,
    "=": operator.eq,
}
_EXPECTATION = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(<=|>=|!=|==|<|>|=)\s*([^<>=!\s].*?)\s*$")


def get_path(data: Any, path: str, option: str = "--get") -> Any:
    """The value at a dotted path; a missing step is an error that lists the valid ones."""
    current = data
    walked: list[str] = []
    for step in path.split("."):
        if isinstance(current, dict) and step in current:
            current = current[step]
        elif (
            isinstance(current, list)
            and re.fullmatch(r"-?\d+", step)
            and (-len(current) <= int(step) < len(current))
        ):
            current = current[int(step)]
        else:
            where = ".".join(walked) or "the report"
            if isinstance(current, dict):
                valid = ", ".join(current) or "(none)"
                raise SpecError("path", f"{option} {path}: {where} has no {step!r}; valid: {valid}")
            if isinstance(current, list):
                raise SpecError(
                    "path",
                    f"{option} {path}: {where} is a list of {len(current)}; use an index "
                    f"0..{len(current) - 1}",
                )
            raise SpecError(
                "path",
                f"{option} {path}: {where} is {describe_value(data, walked, current)}, it has "
                f"no {step!r}",
            )
        walked.append(step)
    return current


def json_word(value: Any) -> str:
    """A value as JSON writes it (null, true, false, "quoted"), for messages: the user reads
    the JSON, not Python (None, True)."""
    return json.dumps(list(value) if isinstance(value, tuple) else value)


#: sources texts that say a figure was not measured (engine/memory.py, library's formula-only
#: runs); what follows the prefix is why
_NOT_MEASURED = ("formula only: ", "not measured: ", "formulas only ")


def null_reason(data: Any, walked: Sequence[str]) -> str:
    """Why the value at ``walked`` is null, from the report's ``sources`` (the training step:
    ``sources.memory_training_step``; anything under --formula-only: ``sources.everything``),
    or "" when the sources say nothing about it."""
    sources = data.get("sources") if isinstance(data, dict) else None
    if not isinstance(sources, dict):
        return ""
    keys = [k for step in reversed(walked) for k in (f"memory_{step}", step)]
    for key in [*keys, "everything"]:
        text = sources.get(key)
        if isinstance(text, str) and text.startswith(_NOT_MEASURED):
            if text.startswith("formulas only "):  # (--formula-only): torch was not loaded
                return "nothing is measured with --formula-only"
            return _first_clause(text.split(": ", 1)[1])
    return ""


def _first_clause(text: str) -> str:
    """``text`` up to its first ': ' outside parentheses (the reason, without its detail)."""
    depth = 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and text.startswith(": ", i):
            return text[:i]
    return text


def describe_value(data: Any, walked: Sequence[str], value: Any) -> str:
    """``null (why)``, or ``the value true`` and the like: the value at ``walked`` in a
    message, as JSON writes it."""
    if value is None:
        reason = null_reason(data, walked)
        return f"null ({reason})" if reason else "null"
    return f"the value {json_word(value)}"


def format_value(value: Any) -> str:
    """A value as ``--get`` prints it: plain numbers and words, JSON for anything composite."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float | str):
        return str(value)
    return json.dumps(value)


@dataclass(frozen=True)
class Expectation:
    path: str
    op: str
    expected: Any
    text: str
    #: the value as written (a shape written with commas, 1,256,224,224, reads as thousands)
    raw: str = ""

    def check(self, data: Any) -> str | None:
        """None when met; else the line that says what was expected and what was found. A
        value of another kind than the one at the path (a word for a number) is a malformed
        expectation, not a failed one."""
        found = get_path(data, self.path, "--expect")
        actual = _comparable(found)
        walked = self.path.split(".")
        expected = self.expected
        if isinstance(actual, tuple) and _GROUPED.fullmatch(self.raw.strip()):
            expected = tuple(int(v) for v in self.raw.split(","))  # a shape, not thousands
            return Expectation(self.path, self.op, expected, self.text).check(data)
        if not _same_kind(actual, self.expected, self.op):
            raise SpecError(
                "expect",
                f"--expect {self.text}: {self.path} is {_as_found(data, walked, found)}, which "
                f"cannot be compared with {json_word(self.expected)} by {self.op}",
            )
        bound = (
            " a lower bound (receptive_field_at_least: the field reached the border of the "
            "largest input the probe tried; see the notes)"
        )
        if _lower_bound(data, self.path):
            # a model's field cut by the largest input tried: only "at least" is known
            verdict = _bound_verdict(self.op, actual, self.expected)
            if verdict is True:
                return None
            word = "failed" if verdict is False else "not checkable"
            return (
                f"expectation {word}: {self.path} {self.op} {json_word(self.expected)}, "
                f"got {json_word(found)},{bound}"
            )
        met = _compare(self.op, actual, self.expected)
        if met is None:
            raise SpecError(
                "expect",
                f"--expect {self.text}: {self.path} is {json_word(found)}, which cannot be "
                f"compared with {json_word(self.expected)} by {self.op} (a different length)",
            )
        if met:
            return None
        return (
            f"expectation failed: {self.path} {self.op} {json_word(self.expected)}, "
            f"got {_as_found(data, walked, found)}"
        )


_ORDERING = ("<", "<=", ">", ">=")


def _compare(op: str, actual: Any, expected: Any) -> bool | None:
    """``actual op expected``; shapes and fields (tuples) ordered axis by axis, every axis
    holding (``41x41 >= 1x9999`` is false; Python's tuples compare only the first axis that
    differs), None for tuples of different lengths."""
    if op in _ORDERING and isinstance(actual, tuple) and isinstance(expected, tuple):
        if len(actual) != len(expected):
            return None
        return all(OPERATORS[op](a, e) for a, e in zip(actual, expected))
    return OPERATORS[op](actual, expected)


def _bound_verdict(op: str, low: Any, expected: Any) -> bool | None:
    """What a lower bound ``low`` on the true value decides of ``true op expected``, axis by
    axis: True (holds whatever the true value), False (fails whatever it is), None (unknown)."""
    lows = low if isinstance(low, tuple) else (low,)
    wants = expected if isinstance(expected, tuple) else (expected,)
    if len(lows) != len(wants) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in (*lows, *wants)
    ):
        return None
    pairs = list(zip(lows, wants))
    if op in (">=", ">"):
        return True if all(OPERATORS[op](lo, e) for lo, e in pairs) else None
    if op == "<=" or op in ("=", "=="):
        return False if any(lo > e for lo, e in pairs) else None
    if op == "<":
        return False if any(lo >= e for lo, e in pairs) else None
    if op == "!=":
        return True if any(lo > e for lo, e in pairs) else None
    return None


def _lower_bound(data: Any, path: str) -> bool:
    """Whether ``path`` reads a model's receptive field that is only a lower bound."""
    return (
        isinstance(data, dict)
        and data.get("receptive_field_at_least") is True
        and path.split(".")[:2] == ["total", "receptive_field"]
    )


def lower_bound_note(data: Any, path: str) -> str | None:
    """``--get``'s stderr note where ``path`` reads a lower bound (stdout keeps the value)."""
    if not _lower_bound(data, path):
        return None
    return (
        f"{path} is a lower bound: the field reached the border of the largest input the "
        "probe tried (receptive_field_at_least)"
    )


def _as_found(data: Any, walked: Sequence[str], value: Any) -> str:
    """The value an expectation found, as JSON writes it, and why when it is null."""
    described = describe_value(data, walked, value)
    return described.removeprefix("the value ")


def _same_kind(actual: Any, expected: Any, op: str) -> bool:
    def kind(value: Any) -> str:
        if isinstance(value, bool) or value is None:
            return "flag"
        if isinstance(value, int | float):
            return "number"
        if isinstance(value, tuple):
            return "list"
        return type(value).__name__

    if op in ("=", "==", "!=") and (actual is None or expected is None):
        return True
    if kind(actual) != kind(expected):
        return False
    return op in ("=", "==", "!=") or kind(actual) in ("number", "list")


def _comparable(value: Any) -> Any:
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return tuple(value)
    return value


_GROUPED = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?")


def parse_value(text: str) -> Any:
    """``17280``, ``17,280`` (as tables print it), ``1e9``, ``true``, ``1x256x224x224`` (a
    shape) or ``[1, 2]`` (JSON). A number must be finite: nan and inf compare with nothing."""
    if _GROUPED.fullmatch(text.strip()):
        text = text.replace(",", "")
    if re.fullmatch(r"\s*[+-]?\d+\s*", text):
        return int(text)  # exactly: a float would round integers above 2**53
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none"):
        return None
    if re.fullmatch(r"\d+(x\d+)+", lowered):
        return tuple(int(v) for v in lowered.split("x"))
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise SpecError(
                "expect",
                f"--expect value {text!r} must be a finite number (or true, false, a shape)",
            )
        return int(number) if number.is_integer() and math.isfinite(number) else number
    if text.startswith(("[", "{", '"')):
        try:
            return _comparable(json.loads(text))
        except json.JSONDecodeError:
            raise SpecError("expect", f"--expect value {text!r} is not valid JSON") from None
    return text


def parse_expectation(text: str) -> Expectation:
    match = _EXPECTATION.match(text)
    if not match:
        raise SpecError(
            "expect",
            f"--expect {text!r} must be PATH OP VALUE, like total.params=17280 or "
            "'total.macs<=1e9' (OP: = == != < <= > >=)",
        )
    path, op, value = match.groups()
    return Expectation(path, op, parse_value(value), text, value)


def check_all(data: Any, expectations: Sequence[Expectation]) -> list[str]:
    return [message for e in expectations if (message := e.check(data)) is not None]
