"""Output on a stream that cannot encode convcalc's symbols (``PYTHONIOENCODING=ascii``, a C
locale, a Windows code page): every symbol falls back to ASCII (``×`` to ``x``, ``✓`` to ``ok``,
``→`` to ``->``) instead of crashing with a UnicodeEncodeError.

One mechanism for every format and command: the CLI calls :func:`ascii_fallback` on stdout and
stderr before any command runs, which installs a codec error handler on the stream. It is only
consulted for characters the stream cannot encode, so UTF-8 output is untouched. Standard library
only (the CLI loads it at start-up).
"""

from __future__ import annotations

import codecs
from typing import IO, Any

#: each symbol convcalc prints, and what stands for it where it cannot be encoded
ASCII_FALLBACK: dict[str, str] = {
    "×": "x",
    "✓": "ok",
    "✗": "X",
    "→": "->",
    "≠": "!=",
    "≤": "<=",
    "≥": ">=",
    "—": "-",
    "–": "-",
    "−": "-",
    "·": "*",
    "…": "...",
    "²": "^2",
    "³": "^3",
    "ᵀ": "^T",
    "∏": "prod",
    "⌊": "floor(",
    "⌋": ")",
    "⌈": "ceil(",
    "⌉": ")",
    "█": "#",
    "━": "-",
    "─": "-",
    "│": "|",
    "\u00a0": " ",
}

#: the codec error handler's name (codecs.register_error)
HANDLER = "convcalc-ascii"

#: symbols whose absence from an encoding means the stream needs the fallback
PROBE = "×✓→≠—·"


def _replace(error: UnicodeError) -> tuple[str, int]:
    """Known symbols by their ASCII stand-ins; anything else as a visible escape (``\\u2192``),
    never dropped."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    text = error.object[error.start : error.end]
    shown = "".join(
        ASCII_FALLBACK.get(char, char.encode("ascii", "backslashreplace").decode("ascii"))
        for char in text
    )
    return shown, error.end


codecs.register_error(HANDLER, _replace)


def ascii_text(text: str) -> str:
    """``text`` with every symbol convcalc prints by its ASCII stand-in."""
    return text.encode("ascii", HANDLER).decode("ascii")


def needs_fallback(stream: IO[str] | Any) -> bool:
    """Whether ``stream``'s encoding cannot encode convcalc's symbols."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        PROBE.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return True
    return False


def ascii_fallback(stream: IO[str] | Any) -> bool:
    """Make ``stream`` write ASCII stand-ins for what its encoding cannot encode (a text stream
    that can be reconfigured: sys.stdout, sys.stderr). Returns whether it had to."""
    if not needs_fallback(stream):
        return False
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is None:
        return False
    try:
        reconfigure(errors=HANDLER)
    except (ValueError, OSError, TypeError):
        return False
    return True
