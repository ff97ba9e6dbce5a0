"""Every exit status convcalc uses, in one place (documented in the README)."""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    OK = 0
    #: an expectation failed, or measured and formula disagree under --strict
    CHECK_FAILED = 1
    #: invalid input: a bad option, spec or file (one line on stderr, nothing on stdout)
    INVALID_INPUT = 2
    #: convcalc itself failed: a bug (one line on stderr; CONVCALC_DEBUG=1 shows the traceback)
    INTERNAL_ERROR = 3
    #: interrupted (Ctrl-C)
    INTERRUPTED = 130
