"""The activation kind: elementwise nonlinearities; PReLU has one learnable slope per channel."""

from __future__ import annotations

from typing import Any

from convcalc._dataclass import dataclass
from convcalc.core.formulas import Derived, Figures, simple_figures
from convcalc.core.saved import LayerIO, LayerSaved, part, saved
from convcalc.core.spec import InputSpec, Labels
from convcalc.kinds.base import Kind, TorchKit, check_channels

#: the op name in stack files and --act -> torch's class name
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


def figures(spec: ActSpec, input_spec: InputSpec) -> Figures:
    count = spec.params
    return simple_figures(
        input_spec,
        Derived(input_spec.shape, "same as the input"),
        Derived(count, f"{spec.channels} slopes = {count}" if count else "0"),
        Derived(tuple(1 for _ in input_spec.size), "1 (elementwise)"),
    )


def check_fits(spec: ActSpec, input_spec: InputSpec, labels: Labels) -> None:
    check_channels(spec.channels, input_spec, spec.describe(), labels)


def build(spec: ActSpec, kit: TorchKit, device: str) -> Any:
    cls = getattr(kit.nn, ACTIVATIONS[spec.kind])
    if spec.kind == "leakyrelu":
        module = cls(spec.negative_slope)
    elif spec.kind == "prelu":
        module = cls(spec.channels)
    else:
        module = cls()
    return module.to(device).eval()


#: activations torch can run in place whose in-place version saves its output (= its input's
#: storage), and those whose in-place version saves a copy of its input
INPLACE_SAVES_OUTPUT = frozenset({"relu", "leakyrelu", "elu"})
INPLACE_SAVES_COPY = frozenset({"relu6", "silu", "hardswish", "hardsigmoid"})
#: activations whose backward is written in terms of their output
SAVES_OUTPUT = frozenset({"relu", "sigmoid", "tanh"})


def saved_for_backward(spec: ActSpec, io: LayerIO) -> LayerSaved:
    """relu, sigmoid, tanh: their output; the others: their input. In place: relu, leakyrelu
    and elu save their output (their input's storage); relu6, silu, hardswish and hardsigmoid
    a new copy of their input."""
    if io.inplace:
        if spec.kind in INPLACE_SAVES_OUTPUT:
            return saved(part("output", "output (in place: its input)", io.output, io.width))
        return saved(part("new", "copy of the input (in place)", io.inputs[0], io.width))
    if spec.kind in SAVES_OUTPUT:
        return saved(part("output", "output", io.output, io.width))
    return saved(part("input", "input", io.inputs[0], io.width))


KIND = Kind(
    name="activation",
    spec_type=ActSpec,
    figures=figures,
    build=build,
    check_fits=check_fits,
    saved_for_backward=saved_for_backward,
)
