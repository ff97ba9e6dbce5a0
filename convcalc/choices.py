"""The choices and measurement options every front end shares: light to import (the CLI builds
its options from them before anything heavy is loaded)."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Any

from convcalc._dataclass import dataclass
from convcalc.core.spec import Labels
from convcalc.errors import SpecError

if TYPE_CHECKING:
    from convcalc.engine import Options

#: argument names, for error messages from the Python API
API_LABELS = Labels(
    {
        "dims": "dims",
        "in_channels": "in_channels",
        "out_channels": "out_channels",
        "kernel_size": "kernel",
        "stride": "stride",
        "padding": "padding",
        "dilation": "dilation",
        "groups": "groups",
        "bias": "bias",
        "transposed": "transpose",
        "output_padding": "output_padding",
        "padding_mode": "padding_mode",
        "size": "size",
        "batch": "batch",
        "dtype": "dtype",
        "multiplier": "multiplier",
        "measure_on": "measure_on",
        "act": "act",
    }
)


class Format(str, Enum):
    """Output formats (``--format``)."""

    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"
    markdown = "markdown"


class MeasureOn(str, Enum):
    """Where the measurement runs (``--measure-on``)."""

    auto = "auto"
    cpu = "cpu"
    meta = "meta"


class Dtype(str, Enum):
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


class PaddingMode(str, Enum):
    zeros = "zeros"
    reflect = "reflect"
    replicate = "replicate"
    circular = "circular"


@dataclass(frozen=True)
class Measure:
    """How to measure, for every command that measures: where, and what beyond the forward
    figures. ``formula_only``: every figure by formula alone, without loading torch."""

    measure_on: str = "auto"
    train: bool = False
    time: bool = False
    device: str = "cpu"
    formula_only: bool = False
    #: the training step's optimizer (sgd, momentum, adam, adamw), and a memory limit for
    #: the largest batch that fits ("16GiB", "80GB")
    optimizer: str = "adam"
    fit: str | None = None
    #: the roofline (--roofline; --time implies it): the device's peaks given in GFLOP/s and
    #: GB/s (both, or neither: then measured once and cached; ``recalibrate`` measures again);
    #: ``progress`` is told one line before a calibration runs
    roofline: bool = False
    peak_gflops: float | None = None
    peak_gbps: float | None = None
    recalibrate: bool = False
    progress: Callable[[str], None] | None = None
    #: measure saved-for-backward and the inference peak (their formulas are always there);
    #: ``batch`` turns it off unless --memory
    memory: bool = True

    def options(self, labels: Labels = API_LABELS) -> Options:
        from convcalc.engine import Options

        choices = [m.value for m in MeasureOn]
        if plain(self.measure_on) not in choices:
            raise SpecError(
                "measure_on",
                f"{labels['measure_on']} {plain(self.measure_on)!r} must be one of "
                + ", ".join(choices),
            )
        for name in ("train", "time", "formula_only", "roofline", "recalibrate", "memory"):
            _flag(getattr(self, name), name)
        check_device_name(plain(self.device))
        if self.formula_only and self.time:
            raise SpecError(
                "time", "--time measures the real layer: it does not go with --formula-only"
            )
        roofline = self.roofline or self.peak_gflops is not None or self.peak_gbps is not None
        if plain(self.device) != "cpu" and not (self.time or roofline):
            raise SpecError(
                "device",
                f"--device {plain(self.device)} is where --time runs and the roofline's peaks "
                "are: it applies only with --time, --roofline or the peaks (--peak-gflops, "
                "--peak-gbps)",
            )
        if self.formula_only and plain(self.measure_on) != "auto":
            raise SpecError(
                "measure_on",
                f"--measure-on {plain(self.measure_on)} measures: it does not go with "
                "--formula-only",
            )
        return Options(
            measure_on=plain(self.measure_on),
            train=self.train,
            time=self.time,
            device=plain(self.device),
            formula_only=self.formula_only,
            optimizer=plain(self.optimizer),
            fit=self.fit,
            roofline=self.roofline,
            peak_gflops=self.peak_gflops,
            peak_gbps=self.peak_gbps,
            recalibrate=self.recalibrate,
            progress=self.progress,
            measure_memory=self.memory,
        )


def plain(value: Any) -> str:
    return str(value.value) if isinstance(value, Enum) else str(value)


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(name, f"{name} {value!r} must be True or False")
    return value


def check_device_name(device: str) -> str:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (by name only: whether one exists is asked of
    torch when something runs there)."""
    import re

    if device in ("cpu", "cuda", "mps") or re.fullmatch(r"cuda:\d+", device):
        return device
    raise SpecError("device", f"--device {device!r} must be cpu, cuda, cuda:N or mps")
