"""Layer and input specifications: frozen dataclasses, parsing of per-dimension values, validation.

Validation happens here, before torch is touched, and raises :class:`SpecError` with a message
that names the option (as the caller spells it) and the rule broken. No torch import.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from convcalc.errors import SpecError

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
}


@dataclass(frozen=True)
class ConvSpec:
    """One convolution layer, as ``nn.ConvNd`` / ``nn.ConvTransposeNd`` would be built."""

    in_channels: int
    out_channels: int
    kernel_size: Ints
    stride: Ints
    padding: Padding
    dilation: Ints
    groups: int = 1
    bias: bool = True
    transposed: bool = False
    output_padding: Ints = ()
    padding_mode: str = "zeros"
    name: str = "conv"

    @property
    def dims(self) -> int:
        return len(self.kernel_size)

    @property
    def op(self) -> str:
        return "conv_transpose" if self.transposed else "conv"

    @property
    def torch_class_name(self) -> str:
        return f"{'ConvTranspose' if self.transposed else 'Conv'}{self.dims}d"

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "dims": self.dims,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
            "dilation": list(self.dilation),
            "groups": self.groups,
            "bias": self.bias,
            "output_padding": list(self.output_padding),
            "padding_mode": self.padding_mode,
        }

    def describe(self) -> str:
        """The layer as torch prints its constructor, e.g. ``Conv2d(64, 256, k=3, p=1)``."""
        parts = [str(self.in_channels), str(self.out_channels), f"k={_compact(self.kernel_size)}"]
        if any(s != 1 for s in self.stride):
            parts.append(f"s={_compact(self.stride)}")
        if isinstance(self.padding, str):
            parts.append(f"p={self.padding}")
        elif any(self.padding):
            parts.append(f"p={_compact(self.padding)}")
        if any(d != 1 for d in self.dilation):
            parts.append(f"d={_compact(self.dilation)}")
        if self.groups != 1:
            parts.append(f"g={self.groups}")
        if any(self.output_padding):
            parts.append(f"op={_compact(self.output_padding)}")
        if not self.bias:
            parts.append("bias=False")
        if self.padding_mode != "zeros":
            parts.append(f"mode={self.padding_mode}")
        return f"{self.torch_class_name}({', '.join(parts)})"


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


ACTIVATIONS: dict[str, str] = {
    "relu": "ReLU",
    "relu6": "ReLU6",
    "leakyrelu": "LeakyReLU",
    "prelu": "PReLU",
    "elu": "ELU",
    "gelu": "GELU",
    "silu": "SiLU",
    "hardswish": "Hardswish",
    "hardsigmoid": "Hardsigmoid",
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
}


@dataclass(frozen=True)
class NormSpec:
    """``nn.BatchNormNd(channels)``: affine, so two parameters per channel (the running mean and
    variance are buffers, not parameters)."""

    channels: int
    dims: int
    name: str = "bn"
    affine: bool = True

    @property
    def op(self) -> str:
        return "batchnorm"

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "dims": self.dims,
            "num_features": self.channels,
            "affine": self.affine,
        }

    def describe(self) -> str:
        return f"BatchNorm{self.dims}d({self.channels})"


@dataclass(frozen=True)
class ActSpec:
    """An elementwise activation; PReLU has one learnable slope per channel."""

    kind: str
    dims: int
    channels: int
    negative_slope: float = 0.01
    name: str = "act"

    @property
    def op(self) -> str:
        return self.kind

    @property
    def params(self) -> int:
        return self.channels if self.kind == "prelu" else 0

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"op": self.op, "dims": self.dims}
        if self.kind == "leakyrelu":
            data["negative_slope"] = self.negative_slope
        return data

    def describe(self) -> str:
        if self.kind == "leakyrelu":
            return f"LeakyReLU({self.negative_slope:g})"
        if self.kind == "prelu":
            return f"PReLU({self.channels})"
        return f"{ACTIVATIONS[self.kind]}()"


@dataclass(frozen=True)
class PoolSpec:
    """``nn.MaxPoolNd`` (with dilation) or ``nn.AvgPoolNd``; the stride defaults to the kernel."""

    kind: str  # "max" or "avg"
    dims: int
    channels: int
    kernel_size: Ints
    stride: Ints
    padding: Ints
    dilation: Ints
    ceil_mode: bool = False
    name: str = "pool"

    @property
    def op(self) -> str:
        return f"{self.kind}pool"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "op": self.op,
            "dims": self.dims,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "ceil_mode": self.ceil_mode,
        }
        if self.kind == "max":
            data["dilation"] = list(self.dilation)
        return data

    def describe(self) -> str:
        parts = [f"k={_compact(self.kernel_size)}", f"s={_compact(self.stride)}"]
        if any(self.padding):
            parts.append(f"p={_compact(self.padding)}")
        if any(d != 1 for d in self.dilation):
            parts.append(f"d={_compact(self.dilation)}")
        if self.ceil_mode:
            parts.append("ceil_mode=True")
        return f"{self.kind.capitalize()}Pool{self.dims}d({', '.join(parts)})"


@dataclass(frozen=True)
class AdaptivePoolSpec:
    """``nn.AdaptiveAvgPoolNd`` / ``nn.AdaptiveMaxPoolNd``: a fixed output size."""

    kind: str
    dims: int
    channels: int
    output_size: Ints
    name: str = "pool"

    @property
    def op(self) -> str:
        return f"adaptive{self.kind}pool"

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "dims": self.dims, "output_size": list(self.output_size)}

    def describe(self) -> str:
        return f"Adaptive{self.kind.capitalize()}Pool{self.dims}d({_compact(self.output_size)})"


@dataclass(frozen=True)
class LinearSpec:
    """``nn.Linear`` on a flat input."""

    in_features: int
    out_features: int
    bias: bool = True
    name: str = "fc"
    dims: int = 0

    @property
    def op(self) -> str:
        return "linear"

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias,
        }

    def describe(self) -> str:
        bias = "" if self.bias else ", bias=False"
        return f"Linear({self.in_features}, {self.out_features}{bias})"


@dataclass(frozen=True)
class ShapeSpec:
    """Layers with nothing to count: ``identity``, ``dropout`` (inference: identity), ``flatten``
    (N, C, *size) -> (N, C·∏size), and ``add`` (the sum of its inputs, as a residual join)."""

    kind: str  # identity, dropout, flatten, add
    dims: int
    channels: int
    name: str = ""

    @property
    def op(self) -> str:
        return self.kind

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "dims": self.dims}

    def describe(self) -> str:
        return {
            "identity": "Identity()",
            "dropout": "Dropout()",
            "flatten": "Flatten()",
            "add": "add",
        }[self.kind]


LayerSpec = Union[  # noqa: UP007
    ConvSpec, NormSpec, ActSpec, PoolSpec, AdaptivePoolSpec, LinearSpec, ShapeSpec
]


@dataclass(frozen=True)
class Node:
    """One layer of a network and where its input comes from: earlier nodes' indices, -1 for
    the network input. A plain chain has inputs (i-1,); a residual join (``add``) has two."""

    spec: LayerSpec
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


def _compact(values: Ints) -> str:
    return str(values[0]) if len(set(values)) == 1 else "x".join(map(str, values))


_INT_LIST = re.compile(r"^\s*-?\d+(\s*[x,]\s*-?\d+)*\s*$", re.IGNORECASE)


def parse_ints(text: str | int | Ints, dims: int, field_name: str, labels: Labels) -> Ints:
    """``"3"`` -> ``(3, 3)`` and ``"3x5"`` -> ``(3, 5)`` for ``dims == 2``; counts must match."""
    label = labels[field_name]
    if isinstance(text, int):
        values: Ints = (text,)
    elif isinstance(text, tuple):
        values = text
    else:
        if not _INT_LIST.match(text):
            raise SpecError(
                field_name,
                f"{label} {text!r} is not a number or one number per dimension (like 3x5)",
            )
        values = tuple(int(v) for v in re.split(r"[x,]", text.strip().lower()))
    if max(values) > MAX_INDEX:
        raise SpecError(field_name, f"{label} {max(values)} is too large (at most 2**31 - 1)")
    if len(values) == 1:
        return values * dims
    if len(values) != dims:
        shown = "x".join(map(str, values))
        raise SpecError(
            field_name,
            f"{label} {shown} has {len(values)} values; {labels['dims']} {dims} takes "
            + ("1" if dims == 1 else f"1 or {dims}"),
        )
    return values


def parse_padding(text: str | int | Ints, dims: int, labels: Labels) -> Padding:
    if isinstance(text, str) and text.strip().lower() in STRING_PADDINGS:
        return text.strip().lower()  # type: ignore[return-value]
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


def padding_pairs(spec: ConvSpec) -> tuple[tuple[int, int], ...]:
    """(left, right) padding per spatial dimension, string paddings resolved as torch does."""
    if spec.padding == "valid":
        return tuple((0, 0) for _ in spec.kernel_size)
    if spec.padding == "same":
        return tuple(same_padding(k, d) for k, d in zip(spec.kernel_size, spec.dilation))
    return tuple((p, p) for p in spec.padding)


def _show(values: Ints) -> str:
    return _compact(values)


def build_conv(
    *,
    dims: int = 2,
    in_channels: int,
    out_channels: int,
    kernel: str | int | Ints = 3,
    stride: str | int | Ints = 1,
    padding: str | int | Ints = 0,
    dilation: str | int | Ints = 1,
    groups: int = 1,
    bias: bool = True,
    transpose: bool = False,
    output_padding: str | int | Ints = 0,
    padding_mode: str = "zeros",
    name: str = "conv",
    labels: Labels | None = None,
) -> ConvSpec:
    """Parse and validate everything about a layer that does not depend on the input size."""
    labels = labels or Labels()
    if dims not in (1, 2, 3):
        raise SpecError("dims", f"{labels['dims']} {dims} must be 1, 2 or 3")
    for field_name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if value < 1:
            raise SpecError(field_name, f"{labels[field_name]} {value} must be a positive integer")
        if value > MAX_INDEX:
            raise SpecError(
                field_name, f"{labels[field_name]} {value} is too large (at most 2**31 - 1)"
            )
    kernel_size = parse_ints(kernel, dims, "kernel_size", labels)
    strides = parse_ints(stride, dims, "stride", labels)
    dilations = parse_ints(dilation, dims, "dilation", labels)
    pads = parse_padding(padding, dims, labels)
    out_pads = parse_ints(output_padding, dims, "output_padding", labels)
    for field_name, values in (
        ("kernel_size", kernel_size),
        ("stride", strides),
        ("dilation", dilations),
    ):
        if min(values) < 1:
            raise SpecError(field_name, f"{labels[field_name]} {_show(values)} must be positive")
    for field_name, offsets in (("padding", pads), ("output_padding", out_pads)):
        if not isinstance(offsets, str) and min(offsets) < 0:
            raise SpecError(
                field_name, f"{labels[field_name]} {_show(offsets)} must not be negative"
            )
    if groups < 1:
        raise SpecError("groups", f"{labels['groups']} {groups} must be a positive integer")
    for field_name, channels in (("in_channels", in_channels), ("out_channels", out_channels)):
        if channels % groups:
            raise SpecError(
                "groups",
                f"{labels['groups']} {groups} must divide {labels[field_name]} {channels}",
            )
    if padding_mode not in PADDING_MODES:
        raise SpecError(
            "padding_mode",
            f"{labels['padding_mode']} {padding_mode!r} must be one of {', '.join(PADDING_MODES)}",
        )
    if transpose:
        if isinstance(pads, str):
            raise SpecError(
                "padding",
                f"{labels['padding']} {pads} does not apply with {labels['transposed']}: "
                "transposed convolutions take numeric padding only",
            )
        if padding_mode != "zeros":
            raise SpecError(
                "padding_mode",
                f"{labels['padding_mode']} {padding_mode} does not apply with "
                f"{labels['transposed']}: torch supports only zeros",
            )
        for axis, (op, s, d) in enumerate(zip(out_pads, strides, dilations)):
            if op >= s and op >= d:
                raise SpecError(
                    "output_padding",
                    f"{labels['output_padding']} {_show(out_pads)} must be smaller than "
                    f"{labels['stride']} {_show(strides)} or {labels['dilation']} "
                    f"{_show(dilations)}{_axis_note(axis, dims)}",
                )
    elif any(out_pads):
        raise SpecError(
            "output_padding",
            f"{labels['output_padding']} {_show(out_pads)} applies only with "
            f"{labels['transposed']}",
        )
    if pads == "same" and any(s != 1 for s in strides):
        raise SpecError(
            "padding",
            f"{labels['padding']} same needs {labels['stride']} 1 (got {_show(strides)}): "
            "torch supports 'same' only for stride 1",
        )
    return ConvSpec(
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernel_size,
        stride=strides,
        padding=pads,
        dilation=dilations,
        groups=groups,
        bias=bias,
        transposed=transpose,
        output_padding=out_pads,
        padding_mode=padding_mode,
        name=name,
    )


def _axis_note(axis: int, dims: int) -> str:
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
        raise SpecError("size", f"{labels['size']} {_show(sizes)} must be positive")
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
            f"{labels['in_channels']} {channels}, {labels['size']} {_show(sizes)} and "
            f"{labels['batch']} {batch}: the input has more than 2**63 elements, beyond what "
            "torch can index",
        )
    return spec


def pool_output_length(n: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """torch's pooling_output_shape: floor (or ceil) of the conv formula, and with ceil_mode the
    last window must start inside the input or its left padding."""
    out = (n + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1
    return out


def build_pool(
    *,
    kind: str,
    dims: int,
    channels: int,
    kernel: str | int | Ints = 2,
    stride: str | int | Ints | None = None,
    padding: str | int | Ints = 0,
    dilation: str | int | Ints = 1,
    ceil_mode: bool = False,
    name: str = "pool",
    labels: Labels | None = None,
) -> PoolSpec:
    labels = labels or Labels()
    kernel_size = parse_ints(kernel, dims, "kernel_size", labels)
    strides = kernel_size if stride is None else parse_ints(stride, dims, "stride", labels)
    pads = parse_ints(padding, dims, "padding", labels)
    dilations = parse_ints(dilation, dims, "dilation", labels)
    if kind == "avg" and any(d != 1 for d in dilations):
        raise SpecError(
            "dilation",
            f"{labels['dilation']} {_show(dilations)}: avgpool has no "
            "dilation in torch (maxpool has)",
        )
    for field_name, values in (
        ("kernel_size", kernel_size),
        ("stride", strides),
        ("dilation", dilations),
    ):
        if min(values) < 1:
            raise SpecError(field_name, f"{labels[field_name]} {_show(values)} must be positive")
    if min(pads) < 0:
        raise SpecError("padding", f"{labels['padding']} {_show(pads)} must not be negative")
    for axis, (k, p) in enumerate(zip(kernel_size, pads)):
        if p > k // 2:
            raise SpecError(
                "padding",
                f"{labels['padding']} {p} must be at most half of {labels['kernel_size']} {k} "
                f"(torch's pooling rule){_axis_note(axis, dims)}",
            )
    return PoolSpec(kind, dims, channels, kernel_size, strides, pads, dilations, ceil_mode, name)


def check_fits(spec: LayerSpec, input_spec: InputSpec, labels: Labels | None = None) -> None:
    """Rules that need both the layer and its input: channels match, the kernel fits, the output
    is not empty."""
    labels = labels or Labels()
    if isinstance(spec, (NormSpec, ActSpec, PoolSpec, AdaptivePoolSpec)) and (
        spec.channels != input_spec.channels
    ):
        raise SpecError(
            "in_channels",
            f"{labels['in_channels']}: {spec.describe()} expects {spec.channels} channels, the "
            f"input has {input_spec.channels}",
        )
    if isinstance(spec, LinearSpec):
        if input_spec.dims:
            raise SpecError(
                "op",
                f"{labels['op']}: linear needs a flat input, not "
                f"{'x'.join(map(str, input_spec.shape))}: flatten it first",
            )
        if spec.in_features != input_spec.channels:
            raise SpecError(
                "in_channels",
                f"{labels['in_channels']}: {spec.describe()} expects {spec.in_features} features, "
                f"the input has {input_spec.channels}",
            )
        return
    if isinstance(spec, (NormSpec, ActSpec, ShapeSpec)):
        return
    if input_spec.dims != spec.dims:
        raise SpecError(
            "size",
            f"{labels['size']} {_show(input_spec.size) if input_spec.size else '(flat)'} has "
            f"{input_spec.dims} spatial dimensions; the layer has {spec.dims}",
        )
    if isinstance(spec, AdaptivePoolSpec):
        if min(spec.output_size) < 1:
            raise SpecError("output_size", f"{labels['output_size']} must be positive")
        return
    if isinstance(spec, PoolSpec):
        for axis, (n, k, st, p, d) in enumerate(
            zip(input_spec.size, spec.kernel_size, spec.stride, spec.padding, spec.dilation)
        ):
            if pool_output_length(n, k, st, p, d, spec.ceil_mode) < 1:
                raise SpecError(
                    "kernel_size",
                    f"{labels['kernel_size']} {k} (dilation {d}) does not fit the input {n} "
                    f"padded by {p}: no output{_axis_note(axis, spec.dims)}",
                )
        return
    if input_spec.dims != spec.dims:
        raise SpecError(
            "size",
            f"{labels['size']} {_show(input_spec.size)} has {input_spec.dims} dimensions; the "
            f"layer has {spec.dims}",
        )
    if input_spec.channels != spec.in_channels:
        raise SpecError(
            "in_channels",
            f"{labels['in_channels']} {spec.in_channels} does not match the input's "
            f"{input_spec.channels} channels",
        )
    dims = spec.dims
    pairs = padding_pairs(spec)
    for axis, (n, k, s, d, (left, right)) in enumerate(
        zip(input_spec.size, spec.kernel_size, spec.stride, spec.dilation, pairs)
    ):
        span = d * (k - 1) + 1
        where = _axis_note(axis, dims)
        if spec.transposed:
            op = spec.output_padding[axis]
            out = (n - 1) * s - 2 * left + span + op
            if out < 1:
                raise SpecError(
                    "padding",
                    f"{labels['padding']} {left} leaves no output{where}: "
                    f"({n}-1)*{s} - 2*{left} + {span} + {op} = {out}",
                )
            continue
        if span > n + left + right:
            raise SpecError(
                "kernel_size",
                f"{labels['kernel_size']} {k} with {labels['dilation']} {d} spans {span}, more "
                f"than the padded input {n + left + right} ({labels['size']} {n} + padding "
                f"{left + right}){where}",
            )
        if spec.padding_mode == "reflect" and max(left, right) >= n:
            raise SpecError(
                "padding",
                f"{labels['padding']} {max(left, right)} must be smaller than {labels['size']} "
                f"{n} with {labels['padding_mode']} reflect{where}",
            )
        if spec.padding_mode == "circular" and max(left, right) > n:
            raise SpecError(
                "padding",
                f"{labels['padding']} {max(left, right)} must not exceed {labels['size']} {n} "
                f"with {labels['padding_mode']} circular{where}",
            )
