"""The batch-norm kind: ``nn.BatchNormNd`` (inference: it uses its running statistics)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from convcalc._dataclass import dataclass
from convcalc.core.formulas import MUL, Derived, Figures, group, simple_figures
from convcalc.core.saved import LayerIO, LayerSaved, SavedPart, part, saved
from convcalc.core.spec import InputSpec, Ints, Labels
from convcalc.kinds.base import Kind, TorchKit, check_channels


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


def figures(spec: NormSpec, input_spec: InputSpec) -> Figures:
    count = 2 * spec.channels if spec.affine else 0
    return simple_figures(
        input_spec,
        Derived(input_spec.shape, "same as the input"),
        Derived(count, f"2{MUL}{spec.channels} (weight, bias) = {count:,}"),
        Derived(tuple(1 for _ in input_spec.size), "1 (elementwise)"),
        Derived(0, "0 (folds into the preceding conv at inference; not counted)"),
    )


def check_fits(spec: NormSpec, input_spec: InputSpec, labels: Labels) -> None:
    check_channels(spec.channels, input_spec, spec.describe(), labels)


def build(spec: NormSpec, kit: TorchKit, device: str) -> Any:
    cls = getattr(kit.nn, f"BatchNorm{max(spec.dims, 1)}d")
    return cls(spec.channels, affine=spec.affine).to(device).eval()


def from_module(name: str, module: Any, kit: TorchKit) -> NormSpec | None:
    if isinstance(module, kit.nn.modules.batchnorm._BatchNorm):
        return NormSpec(module.num_features, 0, name, module.affine)
    return None


def with_input(spec: NormSpec, input_shape: Ints) -> NormSpec:
    """BatchNorm1d serves (N, C) and (N, C, L) alike: its dims come from its input."""
    return replace(spec, dims=len(input_shape) - 2)


def saved_for_backward(spec: NormSpec, io: LayerIO) -> LayerSaved:
    """Its input; in training also save_mean and save_invstd (C each, in the input's dtype on
    the CPU). The running statistics are buffers, saved by reference: not counted."""
    parts = [part("input", "input", io.inputs[0], io.width)]
    if io.training:
        value = 2 * spec.channels * io.width
        parts.append(
            SavedPart(
                "new",
                value,
                f"save_mean + save_invstd 2{MUL}{spec.channels}{MUL}{io.width} B = "
                f"{group(value)} B",
            )
        )
    return saved(*parts)


KIND = Kind(
    name="batchnorm",
    spec_type=NormSpec,
    figures=figures,
    build=build,
    check_fits=check_fits,
    from_module=from_module,
    with_input=with_input,
    saved_for_backward=saved_for_backward,
    mode_dependent=lambda spec: True,  # batch statistics in training, running ones in eval
    training_twin=lambda spec: True,  # its output is a new tensor in both modes
)
