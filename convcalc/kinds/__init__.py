"""Layer kinds: one module each, holding its spec and everything convcalc does with it
(convcalc.kinds.base.Kind). ``kind_of(spec)`` finds a spec's entry; the registry is the only
place that lists the kinds. Pure: no torch (the measure room hands the torch kit in).

Adding a kind: docs/architecture.md, "Add a layer kind".
"""

from __future__ import annotations

from typing import Any, Union

from convcalc.core.formulas import Figures
from convcalc.core.memo import memo
from convcalc.core.spec import InputSpec, Labels
from convcalc.kinds import activation, adaptive_pool, conv, linear, norm, pool, shape
from convcalc.kinds.activation import ACTIVATIONS, ActSpec
from convcalc.kinds.adaptive_pool import AdaptivePoolSpec
from convcalc.kinds.base import Geometry, Kind, TorchKit
from convcalc.kinds.conv import ConvSpec, build_conv, padding_pairs
from convcalc.kinds.linear import LinearSpec
from convcalc.kinds.norm import NormSpec
from convcalc.kinds.pool import PoolSpec, build_pool
from convcalc.kinds.shape import ShapeSpec

#: every kind, in the order a user's module is matched against them
KINDS: tuple[Kind, ...] = (
    conv.KIND,
    pool.KIND,
    adaptive_pool.KIND,
    linear.KIND,
    norm.KIND,
    activation.KIND,
    shape.KIND,
)
_BY_TYPE: dict[type, Kind] = {kind.spec_type: kind for kind in KINDS}

LayerSpec = Union[  # noqa: UP007  (a runtime alias: 3.10's X | Y of classes works, kept explicit)
    ConvSpec, NormSpec, ActSpec, PoolSpec, AdaptivePoolSpec, LinearSpec, ShapeSpec
]


def kind_of(spec: Any) -> Kind:
    """The entry of a spec's kind."""
    return _BY_TYPE[type(spec)]


@memo(4096)
def figures(spec: LayerSpec, input_spec: InputSpec) -> Figures:
    """Every figure of a layer by formula, whatever its kind. Computed once per layer and
    input: building the graph, planning the run, the report and the memory model all ask for
    them (specs and inputs are frozen, so the figures can be shared; bounded between runs, so a
    long sweep stays flat in memory, and whole within one: :mod:`convcalc.core.memo`)."""
    return kind_of(spec).figures(spec, input_spec)


@memo(4096)
def geometry(spec: LayerSpec) -> Geometry:
    """A layer's spatial geometry (its kind's ``geometry``): pure in the frozen spec, so
    remembered (bounded); the cumulative figures, the probes and the warnings each ask for it."""
    return kind_of(spec).geometry(spec)


def check_fits(spec: LayerSpec, input_spec: InputSpec, labels: Labels | None = None) -> None:
    """Rules that need both the layer and its input: channels match, the kernel fits, the output
    is not empty."""
    kind_of(spec).check_fits(spec, input_spec, labels or Labels())


def output_spec(spec: LayerSpec, input_spec: InputSpec) -> InputSpec:
    """The tensor a layer produces, as the next layer's input."""
    shape = figures(spec, input_spec).output_shape.value
    return InputSpec(batch=shape[0], channels=shape[1], size=shape[2:], dtype=input_spec.dtype)


def from_module(name: str, module: Any, kit: TorchKit) -> LayerSpec | None:
    """The spec of a user's module, where a kind knows it (None for anything else)."""
    for kind in KINDS:
        if kind.from_module is not None:
            spec = kind.from_module(name, module, kit)
            if spec is not None:
                return spec  # type: ignore[no-any-return]
    return None


__all__ = [
    "ACTIVATIONS",
    "KINDS",
    "ActSpec",
    "AdaptivePoolSpec",
    "ConvSpec",
    "Geometry",
    "Kind",
    "LayerSpec",
    "LinearSpec",
    "NormSpec",
    "PoolSpec",
    "ShapeSpec",
    "TorchKit",
    "build_conv",
    "build_pool",
    "padding_pairs",
    "check_fits",
    "figures",
    "from_module",
    "geometry",
    "kind_of",
    "output_spec",
]
