"""The inline stack grammar (``"conv k7 s2 p3 out64; maxpool k3 s2 p1"``) and input shapes given
as text: pure parsing into the layer dicts of the stack file format."""

from __future__ import annotations

import re
from typing import Any

from convcalc.errors import SpecError

_TOKEN = re.compile(r"^(out|op|k|s|p|d|g|m)(\d+(?:x\d+)*|same|valid)$", re.IGNORECASE)
_SHORT = {
    "out": "out",
    "op": "output_padding",
    "k": "kernel",
    "s": "stride",
    "p": "padding",
    "d": "dilation",
    "g": "groups",
    "m": "multiplier",
}
_FLAGS = {
    "ceil": ("ceil_mode", True),
    "nobias": ("bias", False),
    "bias": ("bias", True),
    "bn": ("bn", True),
}


#: an inline layer: an op word, then arguments that each start with a letter or digit (k3,
#: out64, act=relu) and hold no ':' (a YAML mapping) -- what tells inline layers on stdin from a
#: stack file there (YAML or JSON: 'layers:', '{', '- {op: ...}'; TOML: 'input = [...]')
_INLINE_LAYER = re.compile(r"\s*[A-Za-z_]\w*(?:\s+[A-Za-z0-9_][^\s:]*)*\s*")

#: the two forms standard input may hold, for the message when it holds neither
STDIN_FILE = "a stack file (YAML or JSON with a 'layers' list and an 'input')"
STDIN_INLINE = (
    "layers inline ('conv k7 s2 p3 out64; maxpool k3 s2 p1': ';' or a new line between layers)"
)


def looks_inline(text: str) -> bool:
    """Whether ``text`` (standard input's) is inline layers rather than a stack file: its first
    layer reads as one (an op and its arguments, no ':', '{', '[' or a lone '=')."""
    first = next((chunk for chunk in re.split(r"[;\n]", text) if chunk.strip()), "")
    return bool(first) and _INLINE_LAYER.fullmatch(first) is not None


def parse_inline(text: str) -> list[dict[str, Any]]:
    """``"conv k7 s2 p3 out64; maxpool k3 s2 p1"`` -> layer dicts of the file format."""
    layers: list[dict[str, Any]] = []
    for chunk in re.split(r"[;\n]", text):
        words = chunk.split()
        if not words:
            continue
        layer: dict[str, Any] = {"op": words[0].lower()}
        said: dict[str, str] = {"op": words[0]}  # each key and the word that set it
        for word in words[1:]:
            if "=" in word:
                key, value = word.split("=", 1)
                _once(said, key, word, layer, len(layers) + 1)
                layer[key] = scalar(value)
            elif word.lower() in _FLAGS:
                key, flag = _FLAGS[word.lower()]
                _once(said, key, word, layer, len(layers) + 1)
                layer[key] = flag
            elif match := _TOKEN.match(word):
                key = _SHORT[match.group(1).lower()]
                _once(said, key, word, layer, len(layers) + 1)
                layer[key] = scalar(match.group(2))
            else:
                raise SpecError(
                    "inline",
                    f"layer {len(layers) + 1} ({layer['op']}): {word!r} is not an argument "
                    "(k3, s2, p1, psame, d2, g4, out64, op1, m2, ceil, nobias, bn, key=value)",
                )
        layers.append(layer)
    if not layers:
        raise SpecError("inline", "the inline stack has no layers")
    return layers


def _once(said: dict[str, str], key: str, word: str, layer: dict[str, Any], number: int) -> None:
    """A layer gives each key once: ``conv k3 k5`` is an error, not a kernel of 5."""
    if key in said:
        raise SpecError(
            "inline",
            f"layer {number} ({layer['op']}): {word!r} sets {key} again (after {said[key]!r}): "
            "give each argument once",
        )
    said[key] = word


def scalar(value: str) -> Any:
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    if re.fullmatch(r"-?\d*\.\d+", value):
        return float(value)
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def parse_input(value: Any, source: str) -> tuple[int, ...]:
    """``[1, 3, 224, 224]`` or ``"1,3,224,224"`` or ``"1x3x224x224"``."""
    if isinstance(value, str):
        parts = re.split(r"[x,\s]+", value.strip())
        if not all(re.fullmatch(r"\d+", p) for p in parts):
            raise SpecError("input", f"{source} {value!r} must be N,C,size... like 1,3,224,224")
        value = [int(p) for p in parts]
    if (
        not isinstance(value, list | tuple)
        or not all(isinstance(v, int) for v in value)
        or not 3 <= len(value) <= 5
    ):
        raise SpecError(
            "input",
            f"{source} {value!r} must be [N, C, spatial...] with 1 to 3 "
            "spatial dimensions, like [1, 3, 224, 224]",
        )
    return tuple(value)


def parse_model_input(value: Any, source: str) -> tuple[int, ...]:
    """A model's input: ``"4,64"`` (an MLP), ``"1,16,64"`` (N, L, E), ``"1,3,224,224"``: any
    rank of at least 2 (a model reads its input as it likes); echoed as typed in an error."""
    typed = value
    if isinstance(value, str):
        parts = re.split(r"[x,\s]+", value.strip())
        if not all(re.fullmatch(r"\d+", p) for p in parts):
            raise SpecError("input", f"{source} {typed} must be integers like 1,3,224,224 or 4,64")
        value = [int(p) for p in parts]
    if (
        not isinstance(value, list | tuple)
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        or len(value) < 2
    ):
        raise SpecError(
            "input", f"{source} {typed} must be at least 2 integers (N, ...), like 4,64"
        )
    return tuple(value)


# --- building ---------------------------------------------------------------------------------
