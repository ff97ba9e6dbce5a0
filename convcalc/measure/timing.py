"""Forward latency with torch.utils.benchmark, and the devices it can run on."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from convcalc.errors import SpecError


def time_forward(
    module: nn.Module, inputs: Sequence[torch.Tensor], min_run_time: float
) -> tuple[float, int]:
    """Median seconds of one forward pass, and how many runs, with torch.utils.benchmark."""
    from torch.utils import benchmark

    timer = benchmark.Timer(
        stmt="module(*inputs)",
        globals={"module": module, "inputs": inputs},
        num_threads=torch.get_num_threads(),
    )
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        measurement = timer.blocked_autorange(min_run_time=min_run_time)
    return measurement.median, len(measurement.times) * measurement.number_per_run


def cpu_threads() -> int:
    """The threads torch runs CPU operators on."""
    return torch.get_num_threads()


def check_device(device: str) -> str:
    """The torch device to time on: ``cpu``, ``cuda`` (or ``cuda:N``) where one exists."""
    if device == "cpu":
        return device
    if re.fullmatch(r"cuda(:\d+)?", device):
        if not torch.cuda.is_available():
            raise SpecError("device", f"--device {device}: no CUDA device is available here")
        return device
    if device == "mps":
        if not torch.backends.mps.is_available():
            raise SpecError("device", "--device mps: no MPS device is available here")
        return device
    raise SpecError("device", f"--device {device!r} must be cpu, cuda, cuda:N or mps")
