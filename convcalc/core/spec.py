"""Layer and input specifications: frozen dataclasses, parsing of per-dimension values, validation.

Validation happens here, before torch is touched, and raises :class:`SpecError` with a message
that names the option (as the caller spells it) and the rule broken. No torch import.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import field
from typing import TYPE_CHECKING, Literal, Union

from convcalc._dataclass import dataclass
from convcalc.errors import SpecError

if TYPE_CHECKING:  # the kinds build on this module; at run time a spec is any kind's
    from convcalc.kinds import LayerSpec

DTYPE_BYTES: dict[str, int] = {"float32": 4, "float16": 2, "bfloat16": 2}
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
STRING_PADDINGS = ("same", "valid")
DEFAULT_SIZE = 224  # the source documents' input size
#: torch indexes tensors with int64: no tensor may hold more elements than this
MAX_ELEMENTS = 2**63 - 1
#: the largest size, kernel, stride, padding, dilation or channel count accepted (torch's conv
#: backends take 32-bit sizes for some of these, and larger ones overflow before they fail)
MAX_INDEX = 2**31 - 1

Ints = tuple[int, ...]
Padding = Union[Ints, Literal["same", "valid"]]  # noqa: UP007  (a runtime alias: 3.10 has no X | Literal)

#: how each field is spelt on the command line; other front ends (stack files) pass their own
CLI_LABELS: dict[str, str] = {
    "dims": "--dims",
    "in_channels": "--in",
    "out_channels": "--out",
    "kernel_size": "--kernel",
    "stride": "--stride",
    "padding": "--padding",
    "dilation": "--dilation",
    "groups": "--groups",
    "bias": "--bias",
    "transposed": "--transpose",
    "output_padding": "--output-padding",
    "padding_mode": "--padding-mode",
    "size": "--size",
    "batch": "--batch",
    "dtype": "--dtype",
    "measure_on": "--measure-on",
    "multiplier": "--multiplier",
}


@dataclass(frozen=True)
class InputSpec:
    """The dummy input: batch, channels and spatial size, plus the dtype memory figures use."""

    batch: int
    channels: int
    size: Ints
    dtype: str = "float32"

    @property
    def shape(self) -> Ints:
        return (self.batch, self.channels, *self.size)

    @property
    def dims(self) -> int:
        return len(self.size)


@dataclass(frozen=True)
class Node:
    """One layer of a network and where its input comes from: earlier nodes' indices, -1 for
    the network input. A plain chain has inputs (i-1,); a residual join (``add``) has two."""

    spec: LayerSpec  # a spec of one of convcalc.kinds
    inputs: tuple[int, ...]
    #: where the layer sits: "" in a chain; "main" or "shortcut" inside a residual block
    path: str = ""


def chain(specs: Sequence[LayerSpec]) -> tuple[Node, ...]:
    """A plain chain of layers as a graph."""
    return tuple(Node(spec, (index - 1,)) for index, spec in enumerate(specs))


@dataclass(frozen=True)
class Labels:
    """Names to use for fields in error messages."""

    names: Mapping[str, str] = field(default_factory=lambda: dict(CLI_LABELS))

    def __getitem__(self, key: str) -> str:
        return self.names.get(key, key)


def compact_ints(values: Ints) -> str:
    return str(values[0]) if len(set(values)) == 1 else "x".join(map(str, values))


_INT_LIST = re.compile(r"^\s*-?\d+(\s*[x,]\s*-?\d+)*\s*$", re.IGNORECASE)


def parse_ints(text: str | int | Ints, dims: int, field_name: str, labels: Labels) -> Ints:
    """``"3"`` -> ``(3, 3)`` and ``"3x5"`` -> ``(3, 5)`` for ``dims == 2``; counts must match."""
    if isinstance(text, int):
        values: Ints = (text,)
    elif isinstance(text, tuple):
        values = text
    else:
        if not _INT_LIST.match(text):
            label = labels[field_name]  # the label: only for an error
            if _is_number_list(text):  # 1e3, 2.5: numbers, but not whole ones
                raise SpecError(
                    field_name,
                    f"{label} {text!r} must be an integer (like 1000, not 1e3 or 2.5), or one "
                    "integer per dimension (like 3x5)",
                )
            raise SpecError(
                field_name,
                f"{label} {text!r} is not a number or one number per dimension (like 3x5)",
            )
        values = tuple(int(v) for v in re.split(r"[x,]", text.strip().lower()))
    if max(values) > MAX_INDEX:
        label = labels[field_name]
        raise SpecError(field_name, f"{label} {max(values)} is too large (at most 2**31 - 1)")
    if len(values) == 1:
        return values * dims
    if len(values) != dims:
        shown, label = "x".join(map(str, values)), labels[field_name]
        raise SpecError(
            field_name,
            f"{label} {shown} has {len(values)} values; {labels['dims']} {dims} takes "
            + ("1" if dims == 1 else f"1 or {dims}"),
        )
    return values


def _is_number_list(text: str) -> bool:
    try:
        return all(math.isfinite(float(v)) for v in re.split(r"[x,]", text.strip().lower()))
    except ValueError:
        return False


def parse_padding(text: str | int | Ints, dims: int, labels: Labels) -> Padding:
    if isinstance(text, str) and text.strip().lower() in STRING_PADDINGS:
        return text.strip().lower()  # type: ignore[return-value]
    if not isinstance(text, str) or _INT_LIST.match(text) or _is_number_list(text):
        # numbers: what is wrong with them (too large, not whole, too many) is said as such
        return parse_ints(text, dims, "padding", labels)
    try:
        return parse_ints(text, dims, "padding", labels)
    except SpecError:
        raise SpecError(
            "padding",
            f"{labels['padding']} {text!r} must be a number, one per dimension (like 1x2), "
            "'same' or 'valid'",
        ) from None


def same_padding(kernel: int, dilation: int) -> tuple[int, int]:
    """Left and right padding torch uses for ``padding='same'`` (the extra one goes right)."""
    total = dilation * (kernel - 1)
    left = total // 2
    return left, total - left


def show_ints(values: Ints) -> str:
    return compact_ints(values)


def axis_note(axis: int, dims: int) -> str:
    return f" (spatial dimension {axis + 1})" if dims > 1 else ""


def build_input(
    *,
    dims: int,
    channels: int,
    size: str | int | Ints = DEFAULT_SIZE,
    batch: int = 1,
    dtype: str = "float32",
    labels: Labels | None = None,
) -> InputSpec:
    labels = labels or Labels()
    sizes = parse_ints(size, dims, "size", labels)
    if min(sizes) < 1:
        raise SpecError("size", f"{labels['size']} {show_ints(sizes)} must be positive")
    if batch < 1:
        raise SpecError("batch", f"{labels['batch']} {batch} must be a positive integer")
    if dtype not in DTYPE_BYTES:
        raise SpecError(
            "dtype", f"{labels['dtype']} {dtype!r} must be one of {', '.join(DTYPE_BYTES)}"
        )
    spec = InputSpec(batch=batch, channels=channels, size=sizes, dtype=dtype)
    if math.prod(spec.shape) > MAX_ELEMENTS:
        raise SpecError(
            "size",
            f"{labels['in_channels']} {channels}, {labels['size']} {show_ints(sizes)} and "
            f"{labels['batch']} {batch}: the input has more than 2**63 elements, beyond what "
            "torch can index",
        )
    return spec
