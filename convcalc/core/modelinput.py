"""The inputs of a user's model (``convcalc model --input``, ``convcalc.model(inputs=...)``):
each one argument of its forward, positional in order or by keyword, with a shape and a dtype.

Pure: the rules are checked here, before torch is touched, and broken ones raise
:class:`SpecError` naming the option (as the caller spells it: ``--input`` on the command line,
``inputs`` in Python) and the rule. The tensors are made in :mod:`convcalc.measure.modelargs`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from convcalc._dataclass import dataclass
from convcalc.core.spec import DTYPE_BYTES, MAX_ELEMENTS, Ints
from convcalc.errors import SpecError

#: every dtype an input may have, and its width in bytes: the float dtypes convcalc computes in
#: (``--dtype``'s choices) and the integer and boolean ones token ids, indices and masks use
INPUT_DTYPES: dict[str, int] = {**DTYPE_BYTES, "int64": 8, "int32": 4, "bool": 1}

#: the dtype names torch prints that mean one of INPUT_DTYPES (``torch.long``: int64)
_ALIASES = {"long": "int64", "int": "int32", "half": "float16", "float": "float32"}

#: what an integer or boolean input is filled with, said in a note of the report
FILL_NOTE = (
    "integer and boolean inputs are filled with zeros (False): a valid index of any embedding; "
    "the values do not change the cost of the operators convcalc counts, but control flow in "
    "forward that reads them (a padding mask, a length) sees zeros"
)


@dataclass(frozen=True)
class ModelInput:
    """One argument of a model's forward: its ``shape``, its ``dtype`` (None: a float input
    in the model's dtype, ``--dtype``), and ``name`` (None: positional; else passed as
    ``name=``)."""

    shape: Ints
    dtype: str | None = None
    name: str | None = None

    @property
    def floating(self) -> bool:
        return self.dtype is None or self.dtype in DTYPE_BYTES

    def dtype_or(self, default: str) -> str:
        """Its dtype, ``default`` (``--dtype``) for a float input that names none."""
        return self.dtype or default

    def to_dict(self, default: str) -> dict[str, Any]:
        """JSON's ``inputs[]`` entry."""
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype_or(default)}

    def text(self, default: str) -> str:
        """As the command line spells it: ``mask=1x128:bool``; the dtype only where it is not
        ``default``."""
        shape = "x".join(map(str, self.shape))
        dtype = self.dtype_or(default)
        named = f"{self.name}=" if self.name else ""
        return f"{named}{shape}" + (f":{dtype}" if dtype != default else "")

    def nbytes(self, default: str) -> int:
        elements = 1
        for n in self.shape:
            elements *= n
        return elements * INPUT_DTYPES[self.dtype_or(default)]


def inputs_text(inputs: Sequence[ModelInput], default: str) -> str:
    """Every input, as the table's and Markdown's header line shows them."""
    return ", ".join(item.text(default) for item in inputs)


def _dtype(text: str, shown: str, source: str) -> str:
    name = text.strip().lower().removeprefix("torch.")
    name = _ALIASES.get(name, name)
    if name not in INPUT_DTYPES:
        raise SpecError(
            "input",
            f"{source} {shown}: dtype {text.strip()!r} must be one of {', '.join(INPUT_DTYPES)}",
        )
    return name


def _name(text: str, shown: str, source: str) -> str:
    name = text.strip()
    if not name:
        raise SpecError("input", f"{source} {shown}: the name before '=' is empty")
    if not name.isidentifier():
        raise SpecError("input", f"{source} {shown}: the name {name!r} must be a Python identifier")
    return name


def parse_input(text: str, source: str = "--input") -> ModelInput:
    """``"1,3,224,224"``, ``"1,128:int64"``, ``"mask=1,128:bool"``: a shape (integers
    separated by commas or x), an optional ``:dtype``, an optional ``name=`` before it."""
    shown = text
    name = None
    body = text.strip()
    if "=" in body:
        left, _, body = body.partition("=")
        name = _name(left, shown, source)
    dtype = None
    if ":" in body:
        body, _, kind = body.partition(":")
        dtype = _dtype(kind, shown, source)
    parts = [p for p in re.split(r"[x,\s]+", body.strip()) if p]
    if not parts or not all(re.fullmatch(r"\d+", p) for p in parts):
        raise SpecError(
            "input",
            f"{source} {shown} must be integers like 1,3,224,224 or 4,64, then an optional "
            ":dtype (1,128:int64), an optional name= before them (mask=1,128:bool)",
        )
    return ModelInput(tuple(int(p) for p in parts), dtype, name)


def _from_value(value: Any, source: str) -> ModelInput:
    """One input of the Python API: a shape, a ``(shape, dtype)`` pair, a :class:`ModelInput`,
    or the command line's text."""
    if isinstance(value, ModelInput):
        return value
    if isinstance(value, str):
        return parse_input(value, source)
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and isinstance(value[0], list | tuple)
        and not isinstance(value[1], int)
    ):
        shape, dtype = value
        return ModelInput(_shape(shape, source), _dtype(str(dtype), repr(tuple(value)), source))
    return ModelInput(_shape(value, source))


def _shape(value: Any, source: str) -> Ints:
    if isinstance(value, list | tuple) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return tuple(value)
    shown = f"a {type(value).__name__}" if hasattr(value, "shape") else repr(value)[:60]
    raise SpecError(
        "input",
        f"{source}: {shown} is not a shape: give a tuple of integers like (1, 3, 224, 224), a "
        "(shape, dtype) pair like ((1, 128), 'int64'), or a ModelInput",
    )


def model_inputs(
    given: Sequence[Any] | Mapping[str, Any], source: str = "inputs"
) -> tuple[ModelInput, ...]:
    """The inputs of a model, checked: ``given`` a sequence (each a shape, a ``(shape,
    dtype)`` pair, a :class:`ModelInput` or the command line's text; a named one is passed by
    keyword) or a mapping of keyword name -> one of those. The rules: at least one input; each
    shape positive integers, the first of rank 2 or more (N, C, ...); no positional input after
    a keyword one (Python's own rule); each keyword once."""
    items: list[ModelInput] = []
    if isinstance(given, Mapping):
        for key, value in given.items():
            item = _from_value(value, source)
            items.append(ModelInput(item.shape, item.dtype, _name(str(key), f"{key}=...", source)))
    elif isinstance(given, str) or not isinstance(given, Sequence):
        raise SpecError(
            "input",
            f"{source} must be a list of inputs (shapes, (shape, dtype) pairs or ModelInput) "
            f"or a dict of keyword inputs, not {type(given).__name__}",
        )
    else:
        items = [_from_value(value, source) for value in given]
    if not items:
        raise SpecError("input", f"{source} is empty: the model needs at least one input")
    seen: set[str] = set()
    keyword: ModelInput | None = None
    for number, item in enumerate(items):
        shown = item.text("")
        if not item.shape or any(n < 1 for n in item.shape):
            raise SpecError("input", f"{source} {shown} must be positive integers")
        if number == 0 and len(item.shape) < 2:
            raise SpecError(
                "input",
                f"{source} {shown}: the first input needs at least 2 axes (N, ...), like 4,64",
            )
        size = 1
        for n in item.shape:
            size *= n
        if size > MAX_ELEMENTS:
            raise SpecError("input", f"{source} {shown} has more than 2**63 elements")
        if item.name is None and keyword is not None:
            raise SpecError(
                "input",
                f"{source} {shown} is positional after the keyword input {keyword.text('')}: "
                "give positional inputs first, in forward's order",
            )
        if item.name is not None:
            if item.name in seen:
                raise SpecError("input", f"{source} {item.name}= is given twice")
            seen.add(item.name)
            keyword = item
    return tuple(items)


def several_shown(entries: Any, default: str) -> str | None:
    """The header line's text of a model's inputs (JSON's ``inputs``: dicts of name, shape,
    dtype), ``x``-separated like ``1×3×32×32, mask=1×128:bool``; None where the report has
    one input of ``default``'s dtype (the line shows ``input_shape`` as before)."""
    if not entries:
        return None
    plain = len(entries) == 1 and entries[0]["name"] is None and entries[0]["dtype"] == default
    if plain:
        return None
    return ", ".join(
        (f"{e['name']}=" if e["name"] else "")
        + "×".join(map(str, e["shape"]))
        + (f":{e['dtype']}" if e["dtype"] != default else "")
        for e in entries
    )
