"""The real torch modules a spec describes, and the graph that runs them."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from convcalc.core.spec import Ints, Node
from convcalc.kinds import (
    ActSpec,
    AdaptivePoolSpec,
    ConvSpec,
    LayerSpec,
    LinearSpec,
    NormSpec,
    PoolSpec,
)

CONV_CLASSES: dict[tuple[bool, int], type[nn.Module]] = {
    (False, 1): nn.Conv1d,
    (False, 2): nn.Conv2d,
    (False, 3): nn.Conv3d,
    (True, 1): nn.ConvTranspose1d,
    (True, 2): nn.ConvTranspose2d,
    (True, 3): nn.ConvTranspose3d,
}
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


ACTIVATION_CLASSES: dict[str, Callable[[ActSpec], nn.Module]] = {
    "relu": lambda spec: nn.ReLU(),
    "relu6": lambda spec: nn.ReLU6(),
    "leakyrelu": lambda spec: nn.LeakyReLU(spec.negative_slope),
    "prelu": lambda spec: nn.PReLU(spec.channels),
    "elu": lambda spec: nn.ELU(),
    "gelu": lambda spec: nn.GELU(),
    "silu": lambda spec: nn.SiLU(),
    "hardswish": lambda spec: nn.Hardswish(),
    "hardsigmoid": lambda spec: nn.Hardsigmoid(),
    "sigmoid": lambda spec: nn.Sigmoid(),
    "tanh": lambda spec: nn.Tanh(),
}
NORM_CLASSES = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


class Add(nn.Module):
    """A residual join: the sum of its inputs."""

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        total = inputs[0]
        for other in inputs[1:]:
            total = total + other
        return total


POOL_CLASSES: dict[tuple[str, int], Callable[..., nn.Module]] = {
    ("max", 1): nn.MaxPool1d,
    ("max", 2): nn.MaxPool2d,
    ("max", 3): nn.MaxPool3d,
    ("avg", 1): nn.AvgPool1d,
    ("avg", 2): nn.AvgPool2d,
    ("avg", 3): nn.AvgPool3d,
}
ADAPTIVE_CLASSES: dict[tuple[str, int], Callable[..., nn.Module]] = {
    ("max", 1): nn.AdaptiveMaxPool1d,
    ("max", 2): nn.AdaptiveMaxPool2d,
    ("max", 3): nn.AdaptiveMaxPool3d,
    ("avg", 1): nn.AdaptiveAvgPool1d,
    ("avg", 2): nn.AdaptiveAvgPool2d,
    ("avg", 3): nn.AdaptiveAvgPool3d,
}


def build_layer(spec: LayerSpec, device: str = "cpu") -> nn.Module:
    """The torch module a spec describes, in eval mode (inference: batch norm uses its running
    statistics, dropout is the identity)."""
    if isinstance(spec, ConvSpec):
        return build_conv_module(spec, device)
    if isinstance(spec, NormSpec):
        module: nn.Module = NORM_CLASSES[max(spec.dims, 1)](spec.channels, affine=spec.affine)
    elif isinstance(spec, ActSpec):
        module = ACTIVATION_CLASSES[spec.kind](spec)
    elif isinstance(spec, PoolSpec):
        if spec.kind == "max":
            module = POOL_CLASSES[("max", spec.dims)](
                spec.kernel_size,
                spec.stride,
                spec.padding,
                spec.dilation,
                ceil_mode=spec.ceil_mode,
            )
        else:
            module = POOL_CLASSES[("avg", spec.dims)](
                spec.kernel_size, spec.stride, spec.padding, ceil_mode=spec.ceil_mode
            )
    elif isinstance(spec, AdaptivePoolSpec):
        module = ADAPTIVE_CLASSES[(spec.kind, spec.dims)](spec.output_size)
    elif isinstance(spec, LinearSpec):
        module = nn.Linear(spec.in_features, spec.out_features, bias=spec.bias)
    elif spec.kind == "flatten":
        module = nn.Flatten()
    elif spec.kind == "dropout":
        module = nn.Dropout()
    elif spec.kind == "add":
        module = Add()
    else:
        module = nn.Identity()
    return module.to(device).eval()


class GraphModule(nn.Module):
    """A network of nodes run in order; node i reads the outputs of ``inputs[i]`` (-1: the
    network input). Its modules are ``nodes.0``, ``nodes.1``, ... (fvcore reports them so)."""

    def __init__(self, modules: Sequence[nn.Module], inputs: Sequence[tuple[int, ...]]) -> None:
        super().__init__()
        self.nodes = nn.ModuleList(modules)
        self.sources = [tuple(i) for i in inputs]
        #: called before and after each node (convcalc's counter attributes ops to nodes)
        self.before: Callable[[int], None] | None = None
        self.after: Callable[[int, torch.Tensor], None] | None = None

    def run(self, x: torch.Tensor, last: int | None = None) -> list[torch.Tensor]:
        outputs: list[torch.Tensor] = []
        for index, (module, sources) in enumerate(zip(self.nodes, self.sources)):
            if last is not None and index > last:
                break
            if self.before:
                self.before(index)
            out = module(*[x if i < 0 else outputs[i] for i in sources])
            if self.after:
                self.after(index, out)
            outputs.append(out)
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)[-1]


def build_conv_module(spec: ConvSpec, device: str) -> nn.Module:
    cls = CONV_CLASSES[(spec.transposed, spec.dims)]
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
    return cls(spec.in_channels, spec.out_channels, spec.kernel_size, **kwargs).eval()


class GroupSplit(nn.Module):
    """A grouped convolution as ``groups`` dense convolutions on channel slices, concatenated:
    the same arithmetic with groups = 1, where torch's backward FLOP formula is right."""

    def __init__(self, spec: ConvSpec, device: str = "cpu") -> None:
        super().__init__()
        part = replace(
            spec,
            in_channels=spec.in_channels // spec.groups,
            out_channels=spec.out_channels // spec.groups,
            groups=1,
        )
        self.parts = nn.ModuleList(build_conv_module(part, device) for _ in range(spec.groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chunks = x.chunk(len(self.parts), dim=1)
        return torch.cat([part(chunk) for part, chunk in zip(self.parts, chunks)], dim=1)


def element_size(dtype: str) -> int:
    return torch.empty((), dtype=TORCH_DTYPES[dtype]).element_size()


def inputs_for(
    node: Node, shapes: Sequence[Ints], input_shape: Ints, device: str, requires_grad: bool = False
) -> list[torch.Tensor]:
    return [
        torch.zeros(input_shape if i < 0 else shapes[i], device=device, requires_grad=requires_grad)
        for i in node.inputs
    ]


@contextlib.contextmanager
def user_code() -> Iterator[None]:
    """The user's code may print: its output goes to stderr, stdout carries convcalc's data."""
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def first_line(error: BaseException | Warning) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
