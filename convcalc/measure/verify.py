"""``convcalc solve``: every answer checked by building its real layer."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

# --- solve: every answer checked on the real layer ----------------------------------------------


def verify_answers(
    transposed: bool, dims: int, axis: int, size: int, answers: Sequence[Any]
) -> list[bool]:
    """Build each answer's real layer (nn.ConvNd / nn.ConvTransposeNd, one channel; along
    ``axis`` the answer's kernel, stride, padding, dilation and output padding, along the other
    dimensions a 1-wide kernel on a 1-wide input) and run it: does torch give the promised
    output size? On the CPU, or on the meta device for inputs too long to allocate here."""
    device = "cpu" if size <= 4_000_000 else "meta"
    results = []
    for answer in answers:

        def along(value: int, other: int) -> tuple[int, ...]:
            return tuple(value if i == axis else other for i in range(dims))

        kwargs: dict[str, Any] = {
            "stride": along(answer.stride, 1),
            "padding": along(answer.padding, 0),
            "dilation": along(answer.dilation, 1),
            "bias": False,
            "device": device,
        }
        if transposed:
            kwargs["output_padding"] = along(answer.output_padding, 0)
        shape = (1, 1, *along(size, 1))
        try:
            cls = getattr(nn, f"{'ConvTranspose' if transposed else 'Conv'}{dims}d")
            layer = cls(1, 1, along(answer.kernel, 1), **kwargs)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = layer(torch.zeros(shape, device=device))
            results.append(int(out.shape[2 + axis]) == answer.output)
        except (RuntimeError, ValueError):
            results.append(False)
    return results
