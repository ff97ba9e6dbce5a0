"""The pooling kind: ``nn.MaxPoolNd`` (with dilation) and ``nn.AvgPoolNd``. No parameters and
no multiply-adds (convcalc counts those of convolutions and linear layers); a window geometry."""

from __future__ import annotations

from typing import Any

from convcalc._dataclass import dataclass
from convcalc.core.formulas import MUL, Derived, Figures, per_axis, simple_figures
from convcalc.core.saved import INDEX_BYTES, LayerIO, LayerSaved, part, saved
from convcalc.core.spec import (
    InputSpec,
    Ints,
    Labels,
    axis_note,
    compact_ints,
    parse_ints,
    show_ints,
)
from convcalc.errors import SpecError
from convcalc.kinds.base import (
    Geometry,
    Kind,
    TorchKit,
    check_channels,
    check_dims,
    dropped_rows,
    ints_of,
)


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
        parts = [f"k={compact_ints(self.kernel_size)}", f"s={compact_ints(self.stride)}"]
        if any(self.padding):
            parts.append(f"p={compact_ints(self.padding)}")
        if any(d != 1 for d in self.dilation):
            parts.append(f"d={compact_ints(self.dilation)}")
        if self.ceil_mode:
            parts.append("ceil_mode=True")
        return f"{self.kind.capitalize()}Pool{self.dims}d({', '.join(parts)})"


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
            f"{labels['dilation']} {show_ints(dilations)}: avgpool has no "
            "dilation in torch (maxpool has)",
        )
    for field_name, values in (
        ("kernel_size", kernel_size),
        ("stride", strides),
        ("dilation", dilations),
    ):
        if min(values) < 1:
            raise SpecError(
                field_name, f"{labels[field_name]} {show_ints(values)} must be positive"
            )
    if min(pads) < 0:
        raise SpecError("padding", f"{labels['padding']} {show_ints(pads)} must not be negative")
    for axis, (k, p) in enumerate(zip(kernel_size, pads)):
        if p > k // 2:
            raise SpecError(
                "padding",
                f"{labels['padding']} {p} must be at most half of {labels['kernel_size']} {k} "
                f"(torch's pooling rule){axis_note(axis, dims)}",
            )
    return PoolSpec(kind, dims, channels, kernel_size, strides, pads, dilations, ceil_mode, name)


def pool_output_size(spec: PoolSpec, input_spec: InputSpec) -> Derived[Ints]:
    values: list[int] = []
    parts: list[str] = []
    for n, k, s, p, d in zip(
        input_spec.size, spec.kernel_size, spec.stride, spec.padding, spec.dilation
    ):
        value = pool_output_length(n, k, s, p, d, spec.ceil_mode)
        bracket = ("⌈", "⌉") if spec.ceil_mode else ("⌊", "⌋")
        parts.append(
            f"{bracket[0]}({n} + 2{MUL}{p} − {d}{MUL}({k}−1) − 1)/{s}{bracket[1]} + 1 = {value}"
        )
        values.append(value)
    return Derived(tuple(values), per_axis(spec.dims, parts))


def figures(spec: PoolSpec, input_spec: InputSpec) -> Figures:
    out = pool_output_size(spec, input_spec)
    field = tuple(d * (k - 1) + 1 for k, d in zip(spec.kernel_size, spec.dilation))
    field_text = per_axis(
        spec.dims,
        [
            f"{d}{MUL}({k}−1) + 1 = {d * (k - 1) + 1}"
            for k, d in zip(spec.kernel_size, spec.dilation)
        ],
    )
    return simple_figures(
        input_spec,
        Derived((input_spec.batch, input_spec.channels, *out.value), out.shown),
        Derived(0, "0"),
        Derived(field, field_text),
    )


def check_fits(spec: PoolSpec, input_spec: InputSpec, labels: Labels) -> None:
    check_channels(spec.channels, input_spec, spec.describe(), labels)
    check_dims(spec.dims, input_spec, labels)
    for axis, (n, k, st, p, d) in enumerate(
        zip(input_spec.size, spec.kernel_size, spec.stride, spec.padding, spec.dilation)
    ):
        if pool_output_length(n, k, st, p, d, spec.ceil_mode) < 1:
            raise SpecError(
                "kernel_size",
                f"{labels['kernel_size']} {k} (dilation {d}) does not fit the input {n} "
                f"padded by {p}: no output{axis_note(axis, spec.dims)}",
            )


def geometry(spec: PoolSpec) -> Geometry:
    return Geometry(
        "window",
        spec.kernel_size,
        spec.stride,
        tuple((p, p) for p in spec.padding),
        spec.dilation,
        ceil_mode=spec.ceil_mode,
    )


def warnings(name: str, spec: PoolSpec, layer_input: InputSpec) -> list[str]:
    from convcalc.kinds import geometry as known  # remembered per spec

    return dropped_rows(name, known(spec), layer_input)


def _class(kit: TorchKit, kind: str, dims: int) -> Any:
    return getattr(kit.nn, f"{kind.capitalize()}Pool{dims}d")


def build(spec: PoolSpec, kit: TorchKit, device: str) -> Any:
    if spec.kind == "max":
        module = _class(kit, "max", spec.dims)(
            spec.kernel_size, spec.stride, spec.padding, spec.dilation, ceil_mode=spec.ceil_mode
        )
    else:
        module = _class(kit, "avg", spec.dims)(
            spec.kernel_size, spec.stride, spec.padding, ceil_mode=spec.ceil_mode
        )
    return module.to(device).eval()


def from_module(name: str, module: Any, kit: TorchKit) -> PoolSpec | None:
    for kind in ("max", "avg"):
        for dims in (1, 2, 3):
            if type(module) is _class(kit, kind, dims):
                kernel = ints_of(module.kernel_size, dims)
                return PoolSpec(
                    kind,
                    dims,
                    0,  # learnt from the input: with_input
                    kernel,
                    ints_of(module.stride or module.kernel_size, dims),
                    ints_of(module.padding, dims),
                    ints_of(getattr(module, "dilation", 1), dims),
                    bool(module.ceil_mode),
                    name,
                )
    return None


def with_input(spec: PoolSpec, input_shape: Ints) -> PoolSpec:
    from dataclasses import replace

    return replace(spec, channels=input_shape[1])


def saved_for_backward(spec: PoolSpec, io: LayerIO) -> LayerSaved:
    """Its input; max pooling also its int64 indices (output-sized)."""
    parts = [part("input", "input", io.inputs[0], io.width)]
    if spec.kind == "max":
        parts.append(part("new", "int64 indices", io.output, INDEX_BYTES))
    return saved(*parts)


KIND = Kind(
    name="pool",
    spec_type=PoolSpec,
    figures=figures,
    build=build,
    check_fits=check_fits,
    geometry=geometry,
    warnings=warnings,
    from_module=from_module,
    with_input=with_input,
    saved_for_backward=saved_for_backward,
)
