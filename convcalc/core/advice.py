"""Warnings about the traps of conv arithmetic, on every command where they apply (stderr in
table mode, a ``warnings`` list in JSON). Pure: formulas only, no torch."""

from __future__ import annotations

from collections.abc import Sequence

from convcalc.core.cumulative import Cumulative
from convcalc.core.spec import InputSpec, Node
from convcalc.kinds import ConvSpec, PoolSpec
from convcalc.kinds.conv import padding_pairs


def _axis(axis: int, dims: int) -> str:
    return f" (spatial dimension {axis + 1})" if dims > 1 else ""


def _merged(by_axis: dict[int, str], dims: int) -> list[str]:
    """One message when every spatial dimension has the same one; else one per dimension."""
    if len(by_axis) == dims and len(set(by_axis.values())) == 1:
        return [next(iter(by_axis.values()))]
    return [message + _axis(axis, dims) for axis, message in by_axis.items()]


def layer_warnings(name: str, spec: object, layer_input: InputSpec) -> list[str]:
    """The traps one layer falls into, given its input."""
    found: list[str] = []
    if isinstance(spec, ConvSpec | PoolSpec):
        found += _dropped_rows(name, spec, layer_input)
    if not isinstance(spec, ConvSpec):
        return found
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
        found += _merged(same, dims)
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
        found += _merged(ambiguous, dims)
    return found


def _dropped_rows(name: str, spec: ConvSpec | PoolSpec, layer_input: InputSpec) -> list[str]:
    """A stride whose windows do not reach the end of the input: the floor drops those rows."""
    if (isinstance(spec, ConvSpec) and spec.transposed) or (
        isinstance(spec, PoolSpec) and spec.ceil_mode
    ):
        return []
    pairs = padding_pairs(spec) if isinstance(spec, ConvSpec) else [(p, p) for p in spec.padding]
    unused: dict[int, int] = {}
    for axis, (n, k, s, d, (left, right)) in enumerate(
        zip(layer_input.size, spec.kernel_size, spec.stride, spec.dilation, pairs)
    ):
        span = d * (k - 1) + 1
        padded = n + left + right
        if padded < span:
            continue
        out = (padded - span) // s + 1
        reached = (out - 1) * s + span  # padded positions the last window reaches
        if padded - reached - right > 0:  # real input positions beyond it
            unused[axis] = padded - reached - right
    if not unused:
        return []
    names = {1: ("position",), 2: ("row", "column"), 3: ("slice", "row", "column")}[spec.dims]
    strides = "x".join(str(s) for s in dict.fromkeys(spec.stride))
    shape = "x".join(map(str, layer_input.size))
    if len(unused) == spec.dims and len(set(unused.values())) == 1:
        count = next(iter(unused.values()))
        kinds = [f"{n}{'s' if count > 1 else ''}" for n in names]
        what = kinds[0] if len(kinds) == 1 else ", ".join(kinds[:-1]) + " and " + kinds[-1]
        return [
            f"{name}: stride {strides} leaves the last {count} input {what} of {shape} unused: "
            "no window reaches them (the floor in the size formula drops them)"
        ]
    return [
        f"{name}: stride {spec.stride[axis]} leaves the last {count} input {names[axis]}"
        f"{'s' if count > 1 else ''} of {layer_input.size[axis]} unused: no window reaches "
        f"{'them' if count > 1 else 'it'} (the floor in the size formula drops "
        f"{'them' if count > 1 else 'it'}){_axis(axis, spec.dims)}"
        for axis, count in unused.items()
    ]


def network_warnings(
    names: Sequence[str],
    nodes: Sequence[Node],
    inputs: Sequence[InputSpec],
    cumulative: Sequence[Cumulative],
    network_input: InputSpec,
) -> list[str]:
    """Every layer's traps, and a receptive field larger than the input (padding, mostly)."""
    found: list[str] = []
    for name, node, layer_input in zip(names, nodes, inputs):
        found += layer_warnings(name, node.spec, layer_input)
    # the receptive field: once, for the first layer whose field outgrows the input (not after
    # a transposed layer: upsampling networks see past their input by design)
    for name, node, figures in zip(names, nodes, cumulative):
        if isinstance(node.spec, ConvSpec) and node.spec.transposed:
            break
        if figures.whole_input or not figures.effective_stride:
            continue
        over = [
            (axis, r, n)
            for axis, (r, n) in enumerate(zip(figures.receptive_field, network_input.size))
            if r > n
        ]
        if over:
            axis, r, n = over[0]
            share = (r - n) / r
            found.append(
                f"{name}: its receptive field ({r}) is larger than the input ({n}): at least "
                f"{share:.0%} of it lies in padding{_axis(axis, network_input.dims)}, and so "
                "for every later layer"
            )
            break
    return found
