"""The adaptive pooling kind: ``nn.AdaptiveAvgPoolNd`` / ``nn.AdaptiveMaxPoolNd``, a fixed output
size whatever the input; windows of differing widths."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from convcalc._dataclass import dataclass
from convcalc.core.formulas import Derived, Figures, adaptive_window, per_axis, simple_figures
from convcalc.core.saved import INDEX_BYTES, LayerIO, LayerSaved, part, saved
from convcalc.core.spec import InputSpec, Ints, Labels, compact_ints
from convcalc.errors import SpecError
from convcalc.kinds.base import Geometry, Kind, TorchKit, check_channels, check_dims, ints_of


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
        return f"Adaptive{self.kind.capitalize()}Pool{self.dims}d({compact_ints(self.output_size)})"


def figures(spec: AdaptivePoolSpec, input_spec: InputSpec) -> Figures:
    windows = tuple(adaptive_window(i, o) for i, o in zip(input_spec.size, spec.output_size))
    field_text = per_axis(
        spec.dims,
        [
            f"widest window of {i} → {o} = {w}"
            for i, o, w in zip(input_spec.size, spec.output_size, windows)
        ],
    )
    return simple_figures(
        input_spec,
        Derived((input_spec.batch, input_spec.channels, *spec.output_size), "fixed output"),
        Derived(0, "0"),
        Derived(windows, field_text),
    )


def check_fits(spec: AdaptivePoolSpec, input_spec: InputSpec, labels: Labels) -> None:
    check_channels(spec.channels, input_spec, spec.describe(), labels)
    check_dims(spec.dims, input_spec, labels)
    if min(spec.output_size) < 1:
        raise SpecError("output_size", f"{labels['output_size']} must be positive")


def geometry(spec: AdaptivePoolSpec) -> Geometry:
    return Geometry("adaptive", output_size=spec.output_size)


def _class(kit: TorchKit, kind: str, dims: int) -> Any:
    return getattr(kit.nn, f"Adaptive{kind.capitalize()}Pool{dims}d")


def build(spec: AdaptivePoolSpec, kit: TorchKit, device: str) -> Any:
    return _class(kit, spec.kind, spec.dims)(spec.output_size).to(device).eval()


def from_module(name: str, module: Any, kit: TorchKit) -> AdaptivePoolSpec | None:
    for kind in ("avg", "max"):
        for dims in (1, 2, 3):
            if type(module) is _class(kit, kind, dims):
                size = module.output_size
                if size is None or (isinstance(size, tuple) and None in size):
                    return None
                return AdaptivePoolSpec(kind, dims, 0, ints_of(size, dims), name)
    return None


def with_input(spec: AdaptivePoolSpec, input_shape: Ints) -> AdaptivePoolSpec:
    return replace(spec, channels=input_shape[1])


def saved_for_backward(spec: AdaptivePoolSpec, io: LayerIO) -> LayerSaved:
    """Its input (max: and int64 indices, output-sized); an average to size 1 is a mean, whose
    backward needs only the shape: nothing."""
    if spec.kind == "avg" and all(o == 1 for o in spec.output_size):
        return saved()
    parts = [part("input", "input", io.inputs[0], io.width)]
    if spec.kind == "max":
        parts.append(part("new", "int64 indices", io.output, INDEX_BYTES))
    return saved(*parts)


KIND = Kind(
    name="adaptive_pool",
    spec_type=AdaptivePoolSpec,
    figures=figures,
    build=build,
    check_fits=check_fits,
    geometry=geometry,
    from_module=from_module,
    with_input=with_input,
    saved_for_backward=saved_for_backward,
)
