"""Every exit status convcalc uses, and what leads to each: one table (documented in the
README), applied to whatever ends a command."""

from __future__ import annotations

import errno
import re
from enum import IntEnum


class ExitStatus(IntEnum):
    OK = 0
    #: an expectation failed, measured and formula disagree under --strict, solve found no
    #: setting, or the output could not be written (a full disk)
    CHECK_FAILED = 1
    #: invalid input: a bad option, spec or file (one line on stderr, nothing on stdout; a
    #: model's own code failing: CONVCALC_DEBUG=1 prints its traceback first)
    INVALID_INPUT = 2
    #: convcalc itself failed: a bug (one line on stderr; CONVCALC_DEBUG=1 shows the traceback)
    INTERNAL_ERROR = 3
    #: interrupted (Ctrl-C)
    INTERRUPTED = 130


class Interrupted(Exception):
    """Ctrl-C, carried past Typer (which turns a KeyboardInterrupt into a silent exit 130
    before convcalc could say so): ConvcalcGroup.invoke raises it in the interrupt's place."""


class OutputClosed(Exception):
    """The reader of stdout went away (EPIPE: ``| head -1``), carried past click (which turns
    it into exit 1): ConvcalcGroup.invoke raises it in the BrokenPipeError's place."""


class CheckFailed(Exception):
    """--expect, --strict or solve said no: the lines to print, already on stderr's terms."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def _is(error: BaseException, name: str) -> bool:
    return any(cls.__name__ == name for cls in type(error).__mro__)


#: compiled at its first use (re caches it), not at import: start-up
_CHOICE = r"Invalid value for '([^']+)'(?: / '[^']+')*: (.*?) is not one of (.*)\.$"


def message_of(error: BaseException) -> str:
    """The one line to print for ``error`` (empty: print nothing)."""
    from convcalc.errors import ConvcalcError

    if isinstance(error, CheckFailed):
        return "\n".join(error.lines)
    if isinstance(error, ConvcalcError):  # a user's code failing: where (SpecError.where)
        return f"error: {error}{getattr(error, 'where', '')}"
    if _is(error, "ClickException"):  # click's usage errors (Typer's vendored click)
        text = error.format_message()  # type: ignore[attr-defined]
        match = re.match(_CHOICE, text)
        if match:  # "--format 'yaml' must be one of table, json, ...": as convcalc says it
            option, value, choices = match.groups()
            names = ", ".join(c.strip().strip("'") for c in choices.split(","))
            return f"error: {option} {value} must be one of {names}"
        return f"error: {text}"
    if isinstance(error, KeyboardInterrupt | Interrupted) or _is(error, "Abort"):
        return "interrupted"
    if isinstance(error, BrokenPipeError | OutputClosed):
        return ""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return "error: cannot write the output: No space left on device"
    if isinstance(error, OSError | ValueError) and _closed_stdout(error):
        return "error: cannot write the output: standard output is closed"
    return (
        f"error: convcalc failed unexpectedly ({type(error).__name__}: "
        f"{str(error).splitlines()[0] if str(error) else ''}); please report it, "
        "with CONVCALC_DEBUG=1 for the traceback"
    )


def _closed_stdout(error: BaseException) -> bool:
    import sys

    return (
        sys.stdout is None
        or getattr(sys.stdout, "closed", False)
        or (isinstance(error, OSError) and error.errno == errno.EBADF)
    )


def exit_status(error: BaseException) -> ExitStatus:
    """The exit status of what ended a command."""
    from convcalc.errors import ConvcalcError

    if isinstance(error, CheckFailed):
        return ExitStatus.CHECK_FAILED
    if isinstance(error, ConvcalcError) or _is(error, "ClickException"):
        return ExitStatus.INVALID_INPUT
    if isinstance(error, KeyboardInterrupt | Interrupted) or _is(error, "Abort"):
        return ExitStatus.INTERRUPTED
    if isinstance(error, BrokenPipeError | OutputClosed):
        return ExitStatus.OK
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return ExitStatus.CHECK_FAILED
    if isinstance(error, OSError | ValueError) and _closed_stdout(error):
        return ExitStatus.INVALID_INPUT
    return ExitStatus.INTERNAL_ERROR
