"""The convolution kind: ``nn.ConvNd`` and ``nn.ConvTransposeNd``, 1-D to 3-D, any padding, groups
and dilation. Its spec, its closed-form figures, its checks and warnings, and (with the torch kit
handed in by the measure room) its real module and its probe stand-in.

Counting conventions are convcalc.core.formulas': MACs exclude bias, FLOPs are 2 per MAC.
"""

from __future__ import annotations

import math
from typing import Any

from convcalc._dataclass import dataclass
from convcalc.core.formulas import (
    MUL,
    Derived,
    Figures,
    conv_output_length,
    conv_receptive_length,
    conv_transpose_output_length,
    conv_transpose_receptive_length,
    group,
    per_axis,
)
from convcalc.core.memory import Memory, summary_memory
from convcalc.core.saved import LayerIO, LayerSaved, part, saved
from convcalc.core.spec import (
    DTYPE_BYTES,
    MAX_INDEX,
    PADDING_MODES,
    InputSpec,
    Ints,
    Labels,
    Padding,
    axis_note,
    compact_ints,
    parse_ints,
    parse_padding,
    same_padding,
    show_ints,
)
from convcalc.errors import SpecError
from convcalc.kinds.base import (
    Geometry,
    Kind,
    TorchKit,
    check_dims,
    dropped_rows,
    ints_of,
    merged,
)


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
        parts = [
            str(self.in_channels),
            str(self.out_channels),
            f"k={compact_ints(self.kernel_size)}",
        ]
        if any(s != 1 for s in self.stride):
            parts.append(f"s={compact_ints(self.stride)}")
        if isinstance(self.padding, str):
            parts.append(f"p={self.padding}")
        elif any(self.padding):
            parts.append(f"p={compact_ints(self.padding)}")
        if any(d != 1 for d in self.dilation):
            parts.append(f"d={compact_ints(self.dilation)}")
        if self.groups != 1:
            parts.append(f"g={self.groups}")
        if any(self.output_padding):
            parts.append(f"op={compact_ints(self.output_padding)}")
        if not self.bias:
            parts.append("bias=False")
        if self.padding_mode != "zeros":
            parts.append(f"mode={self.padding_mode}")
        return f"{self.torch_class_name}({', '.join(parts)})"


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
            raise SpecError(
                field_name, f"{labels[field_name]} {show_ints(values)} must be positive"
            )
    for field_name, offsets in (("padding", pads), ("output_padding", out_pads)):
        if not isinstance(offsets, str) and min(offsets) < 0:
            raise SpecError(
                field_name, f"{labels[field_name]} {show_ints(offsets)} must not be negative"
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
                    f"{labels['output_padding']} {show_ints(out_pads)} must be smaller than "
                    f"{labels['stride']} {show_ints(strides)} or {labels['dilation']} "
                    f"{show_ints(dilations)}{axis_note(axis, dims)}",
                )
    elif any(out_pads):
        raise SpecError(
            "output_padding",
            f"{labels['output_padding']} {show_ints(out_pads)} applies only with "
            f"{labels['transposed']}",
        )
    if pads == "same" and any(s != 1 for s in strides):
        raise SpecError(
            "padding",
            f"{labels['padding']} same needs {labels['stride']} 1 (got {show_ints(strides)}): "
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


def padding_pairs(spec: ConvSpec) -> tuple[tuple[int, int], ...]:
    """(left, right) padding per spatial dimension, string paddings resolved as torch does."""
    if spec.padding == "valid":
        return ((0, 0),) * len(spec.kernel_size)
    if spec.padding == "same":
        return tuple(same_padding(k, d) for k, d in zip(spec.kernel_size, spec.dilation))
    return tuple(zip(spec.padding, spec.padding))  # (p, p) per dimension


# --- figures by formula --------------------------------------------------------


def output_size(spec: ConvSpec, input_spec: InputSpec) -> Derived[Ints]:
    """Spatial output size, per dimension."""
    values: list[int] = []
    parts: list[str] = []
    for axis, (n, k, s, d, (left, right)) in enumerate(
        zip(input_spec.size, spec.kernel_size, spec.stride, spec.dilation, padding_pairs(spec))
    ):
        if spec.transposed:
            op = spec.output_padding[axis]
            value = conv_transpose_output_length(n, k, s, left, d, op)
            parts.append(f"({n}−1){MUL}{s} − 2{MUL}{left} + {d}{MUL}({k}−1) + {op} + 1 = {value}")
        else:
            value = conv_output_length(n, k, s, left, right, d)
            pad = f"2{MUL}{left}" if left == right else f"{left} + {right}"
            parts.append(f"⌊({n} + {pad} − {d}{MUL}({k}−1) − 1)/{s}⌋ + 1 = {value}")
        values.append(value)
    return Derived(tuple(values), per_axis(spec.dims, parts))


def output_shape(spec: ConvSpec, input_spec: InputSpec) -> Derived[Ints]:
    size = output_size(spec, input_spec)
    shape = (input_spec.batch, spec.out_channels, *size.value)
    return Derived(shape, size.shown)


# --- parameters and operations -----------------------------------------------------------


def params(spec: ConvSpec) -> Derived[int]:
    """Weights ``C_out·(C_in/g)·prod(k)`` (transposed: ``C_in·(C_out/g)·prod(k)``) + bias."""
    kernel = math.prod(spec.kernel_size)
    first, second = (
        (spec.in_channels, spec.out_channels)
        if spec.transposed
        else (spec.out_channels, spec.in_channels)
    )
    weights = first * (second // spec.groups) * kernel
    bias = spec.out_channels if spec.bias else 0
    taps = MUL.join(str(k) for k in spec.kernel_size)
    shown = f"{first}{MUL}({second}/{spec.groups}){MUL}{taps}"
    shown += f" + {bias}" if spec.bias else " (no bias)"
    return Derived(weights + bias, f"{shown} = {group(weights + bias)}")


def macs(spec: ConvSpec, input_spec: InputSpec, out: Ints | None = None) -> Derived[int]:
    """Multiply-accumulates, bias excluded.

    A convolution does ``(C_in/g)·prod(k)`` MACs for each output element. A transposed
    convolution scatters: ``(C_out/g)·prod(k)`` MACs for each *input* element, including taps
    that padding later crops from the output (as torch and fvcore count it).
    """
    taps = math.prod(spec.kernel_size)
    taps_text = MUL.join(str(k) for k in spec.kernel_size)
    if spec.transposed:
        sites = input_spec.batch * spec.in_channels * math.prod(input_spec.size)
        per_site = (spec.out_channels // spec.groups) * taps
        sites_text = MUL.join(map(str, input_spec.shape))
        per_site_text = f"({spec.out_channels}/{spec.groups}){MUL}{taps_text}"
    else:
        out = out or output_shape(spec, input_spec).value
        sites = math.prod(out)
        per_site = (spec.in_channels // spec.groups) * taps
        sites_text = MUL.join(map(str, out))
        per_site_text = f"({spec.in_channels}/{spec.groups}){MUL}{taps_text}"
    value = sites * per_site
    return Derived(value, f"{sites_text}{MUL}{per_site_text} = {group(value)}")


def flops(spec: ConvSpec, input_spec: InputSpec, mac: int | None = None) -> Derived[int]:
    """Two FLOPs per MAC (torch.utils.flop_counter's convention), bias excluded. ``mac``: the
    layer's MACs when already known (figures computes them once)."""
    mac = macs(spec, input_spec).value if mac is None else mac
    return Derived(2 * mac, f"2{MUL}{group(mac)} = {group(2 * mac)}")


def bias_adds(spec: ConvSpec, input_spec: InputSpec, out: Ints | None = None) -> Derived[int]:
    """One addition per output element when the layer has a bias."""
    if not spec.bias:
        return Derived(0, "0 (no bias)")
    out = out or output_shape(spec, input_spec).value
    value = math.prod(out)
    return Derived(value, f"{MUL.join(map(str, out))} = {group(value)}")


def receptive_field(spec: ConvSpec) -> Derived[Ints]:
    values: list[int] = []
    parts: list[str] = []
    for k, s, d in zip(spec.kernel_size, spec.stride, spec.dilation):
        if spec.transposed:
            g = math.gcd(s, d)
            value = conv_transpose_receptive_length(k, s, d)
            parts.append(f"⌊({k}−1)/({s}/{g})⌋{MUL}({d}/{g}) + 1 = {value}")
        else:
            value = conv_receptive_length(k, d)
            parts.append(f"{d}{MUL}({k}−1) + 1 = {value}")
        values.append(value)
    return Derived(tuple(values), per_axis(spec.dims, parts))


def memory(
    spec: ConvSpec, input_spec: InputSpec, out: Ints | None = None, count: int | None = None
) -> Derived[Memory]:
    """Bytes of input, output and parameters for the dtype, torchsummary's accounting."""
    out = out or output_shape(spec, input_spec).value
    count = params(spec).value if count is None else count
    width = DTYPE_BYTES[input_spec.dtype]
    mem = summary_memory(math.prod(input_spec.shape), [math.prod(out)], count, width)
    parts = {
        "input": f"{MUL.join(map(str, input_spec.shape))}{MUL}{width} B = {group(mem.input)} B",
        "output": f"{MUL.join(map(str, out))}{MUL}{width} B = {group(mem.output)} B",
        "params": f"{group(count)}{MUL}{width} B = {group(mem.params)} B",
        "forward_backward": f"2{MUL}output = {group(mem.forward_backward)} B",
        "total": f"input + forward/backward + params = {group(mem.total)} B",
    }
    return Derived(mem, parts["total"], parts)


def backward_flops(spec: ConvSpec, input_spec: InputSpec, mac: int | None = None) -> Derived[int]:
    """FLOPs of the backward pass: the input gradient and the weight gradient, 2 per MAC each.

    The input gradient is a transposed convolution of the output gradient with the same weights:
    every forward multiply-add has one partner, so it costs the forward MACs. The weight gradient
    correlates the input with the output gradient within each group: again one multiply-add per
    forward multiply-add, ``(C_in/g)`` input channels per output channel, not ``C_in``. Both are
    counted, as for a layer inside a network; bias gradients (sums) are not.
    """
    mac = macs(spec, input_spec).value if mac is None else mac
    total = 2 * mac + 2 * mac
    shown = (
        f"input grad 2{MUL}{group(mac)} + weight grad 2{MUL}{group(mac)} "
        f"(groups {spec.groups}) = {group(total)}"
    )
    return Derived(total, shown)


def figures(spec: ConvSpec, input_spec: InputSpec) -> Figures:
    # the output shape and the MACs once, handed to the figures built on them (the same
    # functions compute them alone otherwise)
    shape = output_shape(spec, input_spec)
    count = params(spec)
    mac = macs(spec, input_spec, shape.value)
    return Figures(
        output_shape=shape,
        params=count,
        macs=mac,
        flops=flops(spec, input_spec, mac.value),
        bias_adds=bias_adds(spec, input_spec, shape.value),
        receptive_field=receptive_field(spec),
        memory=memory(spec, input_spec, shape.value, count.value),
        backward_flops=backward_flops(spec, input_spec, mac.value),
    )


# --- checks and warnings ---------------------------------------------------------


def check_fits(spec: ConvSpec, input_spec: InputSpec, labels: Labels) -> None:
    """The input has the layer's dimensions and channels, and the kernel fits it."""
    check_dims(spec.dims, input_spec, labels)
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
        where = axis_note(axis, dims)
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


def warnings(name: str, spec: ConvSpec, layer_input: InputSpec) -> list[str]:
    """The traps a convolution falls into, given its input."""
    from convcalc.kinds import geometry as known  # remembered per spec

    found = dropped_rows(name, known(spec), layer_input)
    dims = spec.dims
    if spec.padding == "same":
        same: dict[int, str] = {}
        for axis, (k, d) in enumerate(zip(spec.kernel_size, spec.dilation)):
            total = d * (k - 1)
            if total % 2:
                same[axis] = (
                    f"{name}: padding 'same' with an even effective kernel ({total + 1}) cannot "
                    f"be symmetric: torch pads {total // 2} before and {total - total // 2} "
                    "after, copying the input to do so"
                )
        found += merged(same, dims)
    if (
        spec.groups > 1
        and spec.groups == spec.out_channels
        and spec.in_channels > spec.out_channels
    ):
        found.append(
            f"{name}: groups {spec.groups} = out channels {spec.out_channels} < in channels "
            f"{spec.in_channels}: each output sums {spec.in_channels // spec.groups} input "
            f"channels, so this is not a depthwise layer (its depth multiplier would be "
            f"{spec.out_channels}/{spec.in_channels}, not an integer)"
        )
    if (
        not spec.transposed
        and all(k == 1 for k in spec.kernel_size)
        and not isinstance(spec.padding, str)
        and any(spec.padding)
    ):
        grown = "x".join(str(n + 2 * p) for n, p in zip(layer_input.size, spec.padding))
        shown = "x".join(map(str, dict.fromkeys(spec.padding)))
        found.append(
            f"{name}: a 1x1 convolution with padding {shown} only "
            f"adds a border of {'bias values' if spec.bias else 'zeros'}: the output grows to "
            f"{grown}"
        )
    if spec.transposed:
        ambiguous: dict[int, str] = {}
        for axis, (n, s, d) in enumerate(zip(layer_input.size, spec.stride, spec.dilation)):
            if s > 1:
                left = padding_pairs(spec)[axis][0]
                k = spec.kernel_size[axis]
                op = spec.output_padding[axis]
                base = (n - 1) * s - 2 * left + d * (k - 1) + 1
                sizes = [base + extra for extra in range(s)]
                choices = ", ".join(f"{size} (--output-padding {size - base})" for size in sizes)
                ambiguous[axis] = (
                    f"{name}: the size a stride-{s} transposed conv gives is ambiguous: the conv "
                    f"it inverts maps {s} input sizes to {n}; output padding picks one: "
                    f"{choices}; this layer gives {base + op}"
                )
        found += merged(ambiguous, dims)
    return found


# --- geometry, torch and the entry ----------------------------------------------


def geometry(spec: ConvSpec) -> Geometry:
    return Geometry(
        "window",
        spec.kernel_size,
        spec.stride,
        padding_pairs(spec),
        spec.dilation,
        transposed=spec.transposed,
    )


def rate(spec: ConvSpec) -> str:
    """The compute-rate class (convcalc.engine.MAC_RATES) of this convolution."""
    if spec.groups > 1 and spec.groups == spec.in_channels:
        return "depthwise"
    if spec.groups > 1:
        return "grouped"
    if spec.dims == 3:
        return "3d"
    if any(d > 1 for d in spec.dilation):
        return "dilated"
    return "dense"


def build(spec: ConvSpec, kit: TorchKit, device: str) -> Any:
    kwargs: dict[str, Any] = {
        "stride": spec.stride,
        "padding": spec.padding,
        "dilation": spec.dilation,
        "groups": spec.groups,
        "bias": spec.bias,
        "padding_mode": spec.padding_mode,
        "device": device,
    }
    if spec.transposed:
        kwargs["output_padding"] = spec.output_padding
    cls = getattr(kit.nn, spec.torch_class_name)
    return cls(spec.in_channels, spec.out_channels, spec.kernel_size, **kwargs).eval()


def from_module(name: str, module: Any, kit: TorchKit) -> ConvSpec | None:
    if not isinstance(module, kit.nn.modules.conv._ConvNd):
        return None
    dims = len(module.kernel_size)
    padding: Any = module.padding if isinstance(module.padding, str) else tuple(module.padding)
    return ConvSpec(
        module.in_channels,
        module.out_channels,
        tuple(module.kernel_size),
        tuple(module.stride),
        padding,
        tuple(module.dilation),
        module.groups,
        module.bias is not None,
        module.transposed,
        ints_of(module.output_padding, dims),
        module.padding_mode,
        name,
    )


def backward_module(spec: ConvSpec, kit: TorchKit, device: str) -> Any:
    """torch.utils.flop_counter ignores groups in a conv's weight gradient (counting it g
    times): the same layer split into g dense convs is counted right."""
    return kit.GroupSplit(spec, device) if spec.groups > 1 else None


def padded_copy(spec: ConvSpec, shape: Ints) -> tuple[str, Ints] | None:
    """The padded copy of the input a convolution makes before convolving, if any:
    padding_mode reflect/replicate/circular pads fully; padding='same' with an odd total
    padding on some axis pads those axes by one (the asymmetric part)."""
    pairs = padding_pairs(spec)
    if spec.padding_mode != "zeros":
        size = tuple(n + left + right for n, (left, right) in zip(shape[2:], pairs))
        return spec.padding_mode, (*shape[:2], *size)
    if spec.padding == "same" and any((left + right) % 2 for left, right in pairs):
        size = tuple(n + (left + right) % 2 for n, (left, right) in zip(shape[2:], pairs))
        return "same (odd total padding)", (*shape[:2], *size)
    return None


def saved_for_backward(spec: ConvSpec, io: LayerIO) -> LayerSaved:
    """Its input (any dims, transposed, any groups); with padding_mode reflect/replicate the
    padded copy and, when the input requires grad, its input (saved by the pad); circular: the
    padded copy only; padding='same' with an odd total padding: the copy padded by one."""
    copy = padded_copy(spec, io.inputs[0])
    if copy is None:
        return saved(part("input", "input", io.inputs[0], io.width))
    padded = part("new", f"{copy[0]} padded copy", copy[1], io.width)
    if spec.padding_mode in ("reflect", "replicate") and io.input_requires_grad:
        return saved(part("input", "input", io.inputs[0], io.width), padded)
    return saved(padded)


KIND = Kind(
    name="conv",
    spec_type=ConvSpec,
    figures=figures,
    build=build,
    check_fits=check_fits,
    geometry=geometry,
    warnings=warnings,
    rate=rate,
    from_module=from_module,
    backward_module=backward_module,
    saved_for_backward=saved_for_backward,
)
