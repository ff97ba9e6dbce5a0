"""``convcalc batch``: many one-layer specs (JSONL or CSV), one result per spec, in order,
streamed. Pure orchestration: the measuring happens in convcalc.engine and convcalc.measure."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from convcalc.core.grammar import parse_inline, parse_input, scalar
from convcalc.errors import ConvcalcError, SpecError

#: keys a batch spec takes beyond a stack layer's: the input
INPUT_KEYS = ("in", "dims", "size", "batch", "input", "dtype")


@dataclass(frozen=True)
class Spec:
    line: int
    data: dict[str, Any]


def read_specs(text: str, source: str) -> list[Spec]:
    """JSONL (an object per line) or CSV (a header of keys, a spec per row), by content; a line
    that is not a spec becomes a spec whose error is reported in its turn."""
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    if first.lstrip().startswith("{"):
        specs = []
        for number, line in enumerate(lines, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as error:
                data = {"__error__": f"not JSON: {error.msg} (column {error.colno})"}
            if not isinstance(data, dict):
                data = {"__error__": "each line must be a JSON object"}
            specs.append(Spec(number, data))
        return specs
    reader = csv.DictReader(io.StringIO(text))
    specs = []
    for row in reader:
        data = {
            key.strip(): scalar(value.strip())
            for key, value in row.items()
            if key is not None and value is not None and value.strip() != ""
        }
        specs.append(Spec(reader.line_num, data))
    if not specs and text.strip():
        raise SpecError("batch", f"{source}: no specs: JSONL objects or CSV with a header row")
    return specs


def spec_network(data: dict[str, Any], dtype: str) -> Any:
    """One spec as a one-layer network (a stack of one; `dw` gives its pair)."""
    from convcalc.sources.stack import build_network

    if "__error__" in data:
        raise SpecError("spec", data["__error__"])
    layer = {k: v for k, v in data.items() if k not in INPUT_KEYS}
    layer.setdefault("op", "conv")
    if "input" in data:
        if any(key in data for key in ("in", "size", "dims", "batch")):
            raise SpecError("input", "give either 'input' or in/size/dims/batch, not both")
        shape = parse_input(data["input"], "input")
    else:
        if "in" not in data:
            raise SpecError("in", "a spec needs 'in' (input channels) or 'input' (N,C,size...)")
        dims = _whole(data.get("dims", 2), "dims")
        size = data.get("size", 224)
        text = str(size).replace(",", "x")
        if isinstance(size, bool) or not re.fullmatch(r"\d+(x\d+)*", text):
            raise SpecError(
                "size",
                f"size {size!r} must be a number (an integer, like 1000, not 1e3), or one per "
                "dimension like 56x80",
            )
        sizes = [int(v) for v in text.split("x")]
        if len(sizes) == 1:
            sizes *= dims
        shape = (_whole(data.get("batch", 1), "batch"), _whole(data["in"], "in"), *sizes)
    label = "dtype" if "dtype" in data else "--dtype"  # the spec's own key, or the option
    dtype = str(data.get("dtype", dtype))
    if isinstance(layer.get("layers"), str):  # a whole inline stack in one spec
        layers = parse_inline(layer["layers"])
        return build_network({"layers": layers}, shape, dtype, "spec", label)
    return build_network({"layers": [layer]}, shape, dtype, "spec", label)


def _whole(value: Any, key: str) -> int:
    if isinstance(value, bool) or not re.fullmatch(r"-?\d+", str(value).strip()):
        raise SpecError(key, f"{key} {value!r} must be a whole number")
    return int(value)


def run(specs: list[Spec], dtype: str, options: Any) -> Iterator[tuple[Spec, Any, str | None]]:
    """Each spec's report, or its error message, in input order."""
    from convcalc.engine import analyze_network

    for spec in specs:
        try:
            network = spec_network(spec.data, dtype)
            report = analyze_network(network, command="batch", options=options)
        except ConvcalcError as error:
            yield spec, None, str(error)
        except (ValueError, TypeError) as error:  # a value of a type nothing expected
            yield spec, None, f"invalid spec: {error}"
        else:
            yield spec, report, None
