"""Layer kinds: one module each, holding its spec and everything convcalc does with it
(convcalc.kinds.base.Kind). ``kind_of(spec)`` finds a spec's entry; the registry is the only
place that lists the kinds. Pure: no torch (the measure room hands the torch kit in).

Adding a kind: docs/architecture.md, "Add a layer kind".
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Union

from convcalc.core.formulas import Figures
from convcalc.core.memo import memo
from convcalc.core.spec import InputSpec, Labels
from convcalc.kinds import conv
from convcalc.kinds.base import Geometry, Kind, TorchKit
from convcalc.kinds.conv import ConvSpec, build_conv, padding_pairs

if TYPE_CHECKING:
    from typing import TypeGuard

    from convcalc.kinds import activation as activation
    from convcalc.kinds import adaptive_pool as adaptive_pool
    from convcalc.kinds import linear as linear
    from convcalc.kinds import norm as norm
    from convcalc.kinds import pool as pool
    from convcalc.kinds import shape as shape
    from convcalc.kinds.activation import ACTIVATIONS, ActSpec
    from convcalc.kinds.adaptive_pool import AdaptivePoolSpec
    from convcalc.kinds.linear import LinearSpec
    from convcalc.kinds.norm import NormSpec
    from convcalc.kinds.pool import PoolSpec, build_pool
    from convcalc.kinds.shape import ShapeSpec

    #: every kind, in the order a user's module is matched against them
    KINDS: tuple[Kind, ...]

    LayerSpec = Union[  # noqa: UP007  (a runtime alias: 3.10's X | Y of classes works, kept explicit)
        ConvSpec, NormSpec, ActSpec, PoolSpec, AdaptivePoolSpec, LinearSpec, ShapeSpec
    ]

#: every kind's module, in the order a user's module is matched against them (``KINDS``). A
#: kind's module is imported when it is first needed (start-up: `conv` loads the conv kind
#: alone): a spec of it made (from its module), a name of it asked of this package (``PoolSpec``,
#: by ``__getattr__``), or ``KINDS``, ``LayerSpec`` and ``from_module``, which load them all
KIND_MODULES = ("conv", "pool", "adaptive_pool", "linear", "norm", "activation", "shape")
#: the names this package re-exports from a kind's module, loaded on first use
_FROM_MODULE = {
    "ACTIVATIONS": "activation",
    "ActSpec": "activation",
    "AdaptivePoolSpec": "adaptive_pool",
    "LinearSpec": "linear",
    "NormSpec": "norm",
    "PoolSpec": "pool",
    "build_pool": "pool",
    "ShapeSpec": "shape",
}
#: the order of ``LayerSpec``'s members (as before the kinds were loaded on use)
_LAYER_SPEC = (
    "ConvSpec",
    "NormSpec",
    "ActSpec",
    "PoolSpec",
    "AdaptivePoolSpec",
    "LinearSpec",
    "ShapeSpec",
)
_BY_TYPE: dict[type, Kind] = {ConvSpec: conv.KIND}


def _kind_module(name: str) -> Any:
    from importlib import import_module

    return import_module(f"{__name__}.{name}")


def _name(name: str) -> Any:
    """A name of this package, loaded on first use (a function's global lookup does not call
    the module's ``__getattr__``)."""
    found = globals().get(name)
    return __getattr__(name) if found is None else found


def __getattr__(name: str) -> Any:
    """The names of the kinds not yet loaded (PEP 562): each loads what it needs, once."""
    value: Any
    if name in _FROM_MODULE:
        value = getattr(_kind_module(_FROM_MODULE[name]), name)
    elif name in KIND_MODULES:
        value = _kind_module(name)
    elif name == "KINDS":
        value = tuple(_kind_module(module).KIND for module in KIND_MODULES)
    elif name == "LayerSpec":
        value = Union[tuple(_name(member) for member in _LAYER_SPEC)]  # noqa: UP007
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def _loaded_instance(spec: object, module: str) -> bool:
    """Whether ``spec`` is the spec of the kind in ``module``, without importing it: a kind
    whose module is not loaded has no spec anywhere."""
    loaded = sys.modules.get(f"{__name__}.{module}")
    return loaded is not None and isinstance(spec, loaded.KIND.spec_type)


def is_pool(spec: object) -> TypeGuard[PoolSpec]:
    """``isinstance(spec, PoolSpec)``, without loading the pool kind (start-up)."""
    return _loaded_instance(spec, "pool")


def is_adaptive_pool(spec: object) -> TypeGuard[AdaptivePoolSpec]:
    """``isinstance(spec, AdaptivePoolSpec)``, without loading its kind (start-up)."""
    return _loaded_instance(spec, "adaptive_pool")


def is_linear(spec: object) -> TypeGuard[LinearSpec]:
    """``isinstance(spec, LinearSpec)``, without loading the linear kind (start-up)."""
    return _loaded_instance(spec, "linear")


def is_norm(spec: object) -> TypeGuard[NormSpec]:
    """``isinstance(spec, NormSpec)``, without loading the norm kind (start-up)."""
    return _loaded_instance(spec, "norm")


def is_activation(spec: object) -> TypeGuard[ActSpec]:
    """``isinstance(spec, ActSpec)``, without loading the activation kind (start-up)."""
    return _loaded_instance(spec, "activation")


def is_shape(spec: object) -> TypeGuard[ShapeSpec]:
    """``isinstance(spec, ShapeSpec)``, without loading the shape kind (start-up)."""
    return _loaded_instance(spec, "shape")


def kind_of(spec: Any) -> Kind:
    """The entry of a spec's kind (a KeyError for anything that is not a kind's spec)."""
    cls = type(spec)
    try:
        return _BY_TYPE[cls]
    except KeyError:
        pass
    # a kind loaded since: its spec's class is its module's KIND.spec_type
    module = cls.__module__
    loaded = sys.modules.get(module) if module.startswith(f"{__name__}.") else None
    kind = getattr(loaded, "KIND", None)
    if not isinstance(kind, Kind) or kind.spec_type is not cls:
        raise KeyError(cls)
    _BY_TYPE[cls] = kind
    return kind


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
    kinds: tuple[Kind, ...] = _name("KINDS")
    for kind in kinds:
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
    "is_activation",
    "is_adaptive_pool",
    "is_linear",
    "is_norm",
    "is_pool",
    "is_shape",
    "kind_of",
    "output_spec",
]
