"""The tensors a user's model is run on (:class:`convcalc.core.modelinput.ModelInput`): its
positional and keyword arguments, made on a device in their dtypes. A float input is zeros (the
counted forward) or seeded normal values (the memory passes); an integer or boolean input is
zeros (core.modelinput.FILL_NOTE)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from convcalc.core.modelinput import ModelInput

#: torch's dtype of each of core.modelinput.INPUT_DTYPES
TORCH_INPUT_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "bool": torch.bool,
}


class ModelArgs:
    """A forward's arguments: ``args`` (positional, in order) and ``kwargs`` (by name)."""

    def __init__(self, args: tuple[torch.Tensor, ...], kwargs: dict[str, torch.Tensor]) -> None:
        self.args = args
        self.kwargs = kwargs

    @property
    def tensors(self) -> list[torch.Tensor]:
        return [*self.args, *self.kwargs.values()]

    def call(self, model: nn.Module) -> Any:
        return model(*self.args, **self.kwargs)


def make_args(
    inputs: Sequence[ModelInput],
    device: str,
    float_dtype: torch.dtype,
    *,
    random: bool = False,
) -> ModelArgs:
    """Each input as a tensor on ``device``: a float input without a dtype in ``float_dtype``;
    floats zeros, or with ``random`` normal values from a generator seeded 0 (made in float32
    then cast, as measure.memory.make_input does); integers and booleans zeros."""
    generator = torch.Generator().manual_seed(0) if random and device != "meta" else None
    args: list[torch.Tensor] = []
    kwargs: dict[str, torch.Tensor] = {}
    for item in inputs:
        dtype = float_dtype if item.dtype is None else TORCH_INPUT_DTYPES[item.dtype]
        if generator is not None and dtype.is_floating_point:
            tensor = torch.randn(item.shape, generator=generator).to(device, dtype)
        else:
            tensor = torch.zeros(item.shape, device=device, dtype=dtype)
        if item.name is None:
            args.append(tensor)
        else:
            kwargs[item.name] = tensor
    return ModelArgs(tuple(args), kwargs)


def field_input(inputs: Sequence[ModelInput]) -> int | None:
    """The input the receptive field is measured of: the first floating one with spatial axes
    (N, C, spatial...); None where there is none."""
    for number, item in enumerate(inputs):
        if item.floating and len(item.shape) >= 3:
            return number
    return None


class Bound(nn.Module):
    """``model`` called with one input, ``number`` of ``inputs``, as its only argument, the
    others fixed (zeros: integers, booleans and floats alike, floats in the dtype of the input
    given): what the receptive-field probe runs (its input has batch 1, so an other input
    whose first axis is the batch, ``batch``, gets batch 1 too). Returns the model's first
    output tensor."""

    def __init__(self, model: nn.Module, inputs: Sequence[ModelInput], number: int) -> None:
        super().__init__()
        self.model = model
        self.inputs = tuple(inputs)
        self.number = number

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from convcalc.measure.opcount import _tensors

        batch = self.inputs[self.number].shape[0]
        args: list[torch.Tensor] = []
        kwargs: dict[str, torch.Tensor] = {}
        for number, item in enumerate(self.inputs):
            if number == self.number:
                tensor = x
            else:
                shape = item.shape
                if shape and shape[0] == batch:
                    shape = (x.shape[0], *shape[1:])
                dtype = x.dtype if item.dtype is None or item.floating else None
                tensor = torch.zeros(
                    shape,
                    device=x.device,
                    dtype=dtype or TORCH_INPUT_DTYPES[item.dtype or "float32"],
                )
            if item.name is None:
                args.append(tensor)
            else:
                kwargs[item.name] = tensor
        return next(_tensors(self.model(*args, **kwargs)))
