"""Forward latency with torch.utils.benchmark, and the devices it can run on."""

from __future__ import annotations

import re
import statistics
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from convcalc.errors import SpecError

#: a median is taken over at least this many timed blocks (a slow layer was timed from one or
#: two otherwise: its median was one run)
MIN_BLOCKS = 15


def time_forward(
    module: nn.Module, inputs: Sequence[torch.Tensor], min_run_time: float
) -> tuple[float, int, float]:
    """Median seconds of one forward pass, how many runs, and the interquartile range (seconds)
    of the blocks' per-run times, with torch.utils.benchmark: blocked_autorange for at least
    ``min_run_time``, then further blocks of the same size until there are ``MIN_BLOCKS``."""
    from torch.utils import benchmark

    timer = benchmark.Timer(
        stmt="module(*inputs)",
        globals={"module": module, "inputs": inputs},
        num_threads=torch.get_num_threads(),
    )
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        measurement = timer.blocked_autorange(min_run_time=min_run_time)
        number = measurement.number_per_run
        times = list(measurement.times)
        while len(times) < MIN_BLOCKS:
            times += timer.timeit(number).times
    quartiles = statistics.quantiles(times, n=4, method="inclusive")
    return statistics.median(times), len(times) * number, quartiles[2] - quartiles[0]


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
