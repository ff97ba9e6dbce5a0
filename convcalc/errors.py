"""Typed exceptions raised by the library; only the CLI turns them into messages and exit codes."""

from __future__ import annotations


class ConvcalcError(Exception):
    """Base class of every error convcalc raises on purpose."""


class SpecError(ConvcalcError, ValueError):
    """A layer or input specification breaks a rule (bad input: exit status 2).

    ``field`` is the spec field at fault (``"groups"``); the message already names it the way
    the caller spelt it (``--groups`` on the command line).
    """

    #: where a user's own code raised the error behind this one (`` (at mynet.py:25 in
    #: forward)``; its ``__cause__``): the CLI's one line ends with it; empty otherwise
    where: str = ""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message

    def __str__(self) -> str:
        return self.message


class MeasurementError(ConvcalcError, RuntimeError):
    """torch rejected a layer that validation accepted, or a measurement failed."""
