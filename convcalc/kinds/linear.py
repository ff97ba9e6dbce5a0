"""The linear kind: ``nn.Linear`` on a flat input; every output sees the whole input."""

from __future__ import annotations

import math
from typing import Any

from convcalc._dataclass import dataclass
from convcalc.core.formulas import MUL, Derived, Figures, simple_figures
from convcalc.core.saved import saves_input
from convcalc.core.spec import InputSpec, Labels
from convcalc.errors import SpecError
from convcalc.kinds.base import Geometry, Kind, TorchKit


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


def figures(spec: LinearSpec, input_spec: InputSpec) -> Figures:
    if input_spec.dims:
        return _figures_over_leading_dims(spec, input_spec)
    n = input_spec.batch
    weights = spec.in_features * spec.out_features
    bias = spec.out_features if spec.bias else 0
    mac = n * spec.in_features * spec.out_features
    return simple_figures(
        input_spec,
        Derived((n, spec.out_features), f"({n}, {spec.out_features})"),
        Derived(
            weights + bias,
            f"{spec.out_features}{MUL}{spec.in_features}"
            + (f" + {bias}" if bias else " (no bias)")
            + f" = {weights + bias:,}",
        ),
        Derived((), "— (flat)"),
        Derived(mac, f"{n}{MUL}{spec.in_features}{MUL}{spec.out_features} = {mac:,}"),
        bias=n * bias,
    )


def _figures_over_leading_dims(spec: LinearSpec, input_spec: InputSpec) -> Figures:
    """nn.Linear on an input of more than 2 dims (a user's model: tokens, an MLP on N×H×W×C):
    the whole shape is (leading dims..., in_features); every leading position is one product of
    in_features × out_features. ``stack`` never gets here: check_fits refuses spatial input."""
    shape = input_spec.shape
    leading = shape[:-1]
    positions = math.prod(leading)
    weights = spec.in_features * spec.out_features
    bias = spec.out_features if spec.bias else 0
    mac = positions * spec.in_features * spec.out_features
    out = (*leading, spec.out_features)
    return simple_figures(
        input_spec,
        Derived(out, "(" + ", ".join(map(str, out)) + ")"),
        Derived(
            weights + bias,
            f"{spec.out_features}{MUL}{spec.in_features}"
            + (f" + {bias}" if bias else " (no bias)")
            + f" = {weights + bias:,}",
        ),
        Derived((), "— (flat: every output sees its position's whole feature vector)"),
        Derived(
            mac,
            f"{MUL.join(map(str, leading))} positions{MUL}{spec.in_features}{MUL}"
            f"{spec.out_features} = {mac:,}",
        ),
        bias=positions * bias,
    )


def check_fits(spec: LinearSpec, input_spec: InputSpec, labels: Labels) -> None:
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


def geometry(spec: LinearSpec) -> Geometry:
    return Geometry("whole")


def build(spec: LinearSpec, kit: TorchKit, device: str) -> Any:
    return kit.nn.Linear(spec.in_features, spec.out_features, bias=spec.bias).to(device).eval()


def from_module(name: str, module: Any, kit: TorchKit) -> LinearSpec | None:
    if isinstance(module, kit.nn.Linear):
        return LinearSpec(module.in_features, module.out_features, module.bias is not None, name)
    return None


KIND = Kind(
    name="linear",
    spec_type=LinearSpec,
    figures=figures,
    build=build,
    check_fits=check_fits,
    geometry=geometry,
    from_module=from_module,
    saved_for_backward=saves_input,
)
