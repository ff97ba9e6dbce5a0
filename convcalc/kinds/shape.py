"""Layers with nothing to count: ``identity``, ``dropout`` (inference: the identity), ``flatten``
(N, C, *size) -> (N, C·∏size), and ``add`` (the sum of its inputs: a residual join)."""

from __future__ import annotations

import math
from typing import Any

from convcalc._dataclass import dataclass
from convcalc.core.formulas import MUL, Derived, Figures, simple_figures
from convcalc.core.saved import LayerIO, LayerSaved, part, saved
from convcalc.core.spec import InputSpec, Labels
from convcalc.kinds.base import POINTWISE, Geometry, Kind, TorchKit


@dataclass(frozen=True)
class ShapeSpec:
    """``identity``, ``dropout``, ``flatten`` or ``add``."""

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


def figures(spec: ShapeSpec, input_spec: InputSpec) -> Figures:
    n, channels, size = input_spec.batch, input_spec.channels, input_spec.size
    if spec.kind == "flatten":
        features = channels * math.prod(size)
        return simple_figures(
            input_spec,
            Derived(
                (n, features),
                f"({n}, {channels}{MUL}{MUL.join(map(str, size)) or '1'}) = ({n}, {features:,})",
            ),
            Derived(0, "0"),
            Derived((), "— (flat)"),
        )
    return simple_figures(
        input_spec,
        Derived(input_spec.shape, "same as the input"),
        Derived(0, "0"),
        Derived(tuple(1 for _ in size), "1 (elementwise)"),
    )


def check_fits(spec: ShapeSpec, input_spec: InputSpec, labels: Labels) -> None:
    """Any input will do (an add's inputs are matched where the graph is built)."""


def geometry(spec: ShapeSpec) -> Geometry:
    return {"flatten": Geometry("flatten"), "add": Geometry("join")}.get(spec.kind, POINTWISE)


def build(spec: ShapeSpec, kit: TorchKit, device: str) -> Any:
    module = {
        "flatten": kit.nn.Flatten,
        "dropout": kit.nn.Dropout,
        "add": kit.Add,
    }.get(spec.kind, kit.nn.Identity)()
    return module.to(device).eval()


def saved_for_backward(spec: ShapeSpec, io: LayerIO) -> LayerSaved:
    """Nothing (flatten, identity, add, dropout in eval); dropout in training keeps a mask the
    size of its input, in its dtype (torch's CPU kernel; on CUDA a bool mask, 1 B each)."""
    if spec.kind == "dropout" and io.training:
        return saved(part("new", "dropout mask", io.inputs[0], io.width))
    return saved()


KIND = Kind(
    name="shape",
    spec_type=ShapeSpec,
    figures=figures,
    build=build,
    check_fits=check_fits,
    geometry=geometry,
    saved_for_backward=saved_for_backward,
    mode_dependent=lambda spec: spec.kind == "dropout",  # a random mask only in training
)
