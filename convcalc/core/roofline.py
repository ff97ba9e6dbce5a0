"""The roofline model of one layer: bytes moved, arithmetic intensity, the time lower bound.

Pure: closed forms only, no torch. The device's peaks come from elsewhere (measured by
:mod:`convcalc.calibrate`, or given by the user with ``--peak-gflops`` / ``--peak-gbps``).

Conventions:

* **Bytes moved** is the *minimum* traffic between memory and the compute units for one
  forward pass: every input element read once, every weight read once, every output element
  written once, each ``dtype_bytes`` wide. Caches, re-reads by a tiled kernel, im2col buffers
  and workspace are not counted: real traffic is at least this. A bias is a weight (the caller
  passes the parameter count, bias included). A layer without weights (ReLU, pooling) moves
  input + output.
* **FLOPs** are the caller's: convcalc counts 2 FLOPs per multiply-accumulate (torch's
  counter). Nothing here converts MACs.
* **Arithmetic intensity** = FLOPs / bytes moved (FLOP per byte). A layer with zero FLOPs (or
  zero bytes) has intensity 0.
* **Ridge point** = peak FLOP/s / peak bytes/s. A layer is *compute-bound* when its intensity is
  at or above the ridge (FLOPs / peak FLOP/s >= bytes / peak bandwidth; at the ridge the two
  times are equal and the label is "compute"), *memory-bound* below it; zero-FLOP layers are
  memory-bound. The comparison is exact (rational arithmetic on the given numbers).
* **Time lower bound** = max(FLOPs / peak FLOP/s, bytes / peak bytes/s) seconds.
* **Fraction of the bound** reached by a measured time = lower bound / measured time (1 means
  the layer ran at the roofline; above 1 means the peaks were underestimated).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from fractions import Fraction
from typing import Any, Literal

from convcalc._dataclass import dataclass
from convcalc.errors import MeasurementError, SpecError

Bound = Literal["compute", "memory"]

MUL = "·"


@dataclass(frozen=True)
class Peaks:
    """A device's peak compute and bandwidth for one dtype.

    ``device`` is the torch device (``cpu``, ``cuda:0``, ``mps``); ``model`` the hardware's name
    where known (CPU model, GPU name); ``measured`` is False when the user gave the peaks;
    ``source`` says how they were obtained, in one line.
    """

    flops_per_s: float
    bytes_per_s: float
    device: str
    dtype: str
    threads: int | None
    measured: bool
    source: str
    model: str | None = None
    #: why the peaks may be wrong, in one line (measured while other processes loaded the CPU),
    #: or None; JSON's ``device.caveat``, present only when set
    caveat: str | None = None

    def __post_init__(self) -> None:
        for field, value in (("peak_flops", self.flops_per_s), ("peak_bytes", self.bytes_per_s)):
            if not math.isfinite(value) or value <= 0:
                raise SpecError(field, f"{field} {value!r} must be a positive number")

    @property
    def ridge(self) -> float:
        """The ridge point in FLOP per byte: peak FLOP/s / peak bytes/s."""
        return self.flops_per_s / self.bytes_per_s

    def attainable(self, intensity: float) -> float:
        """The roofline: the FLOP/s attainable at ``intensity``, min(peak, intensity·bandwidth)."""
        return min(self.flops_per_s, intensity * self.bytes_per_s)

    def to_dict(self) -> dict[str, Any]:
        """The ``device`` object of the JSON report."""
        return {
            "name": self.device,
            "model": self.model,
            "dtype": self.dtype,
            "threads": self.threads,
            "peak_flops_per_s": self.flops_per_s,
            "peak_bytes_per_s": self.bytes_per_s,
            "ridge_flops_per_byte": self.ridge,
            "measured": self.measured,
            "source": self.source,
            **({"caveat": self.caveat} if self.caveat else {}),
        }


@dataclass(frozen=True)
class LayerRoofline:
    """One layer on the roofline (formula), with the measured fields once timed.

    ``bytes_formula`` and ``intensity_formula`` show the arithmetic with the numbers put in.
    """

    bytes_moved: int
    intensity: float
    bound: Bound
    time_lower_bound_s: float
    time_s: float | None = None
    achieved_flops_per_s: float | None = None
    fraction_of_bound: float | None = None
    achieved_bytes_per_s: float | None = None
    flops: int = 0
    bytes_formula: str = ""
    intensity_formula: str = ""
    #: a view of its input (flatten of a contiguous tensor, identity): it moves nothing, so
    #: its bytes are 0 (JSON's ``view``: true, present only then)
    view: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The per-layer ``roofline`` object of the JSON report (timed fields only if timed)."""
        data: dict[str, Any] = {
            "bytes_moved": self.bytes_moved,
            "intensity": self.intensity,
            "bound": self.bound,
            "time_lower_bound_s": self.time_lower_bound_s,
        }
        if self.view:
            data["view"] = True
        if self.time_s is not None:
            data["time_s"] = self.time_s
            data["achieved_flops_per_s"] = self.achieved_flops_per_s
            data["achieved_bytes_per_s"] = self.achieved_bytes_per_s
            data["fraction_of_bound"] = self.fraction_of_bound
        return data


def _count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SpecError(name, f"{name} {value!r} must be a whole number >= 0")
    return value


def layer_roofline(
    flops: int,
    input_elements: int,
    weight_elements: int,
    output_elements: int,
    dtype_bytes: int,
    peaks: Peaks,
    extra_input_elements: int = 0,
) -> LayerRoofline:
    """Bytes moved, intensity, bound and time lower bound of one layer on ``peaks``' device.

    ``input_elements`` is the numel of everything the layer reads as input (summed over the
    inputs of an add), ``weight_elements`` its parameter count (bias included), ``output_elements``
    the numel it writes; ``extra_input_elements`` any further tensor it reads, shown as its own
    term. ``flops`` counts 2 per MAC.
    """
    terms = [
        _count("input_elements", input_elements),
        _count("extra_input_elements", extra_input_elements),
        _count("weight_elements", weight_elements),
        _count("output_elements", output_elements),
    ]
    _count("flops", flops)
    if _count("dtype_bytes", dtype_bytes) == 0:
        raise SpecError("dtype_bytes", "dtype_bytes 0 must be a whole number >= 1")
    # zero terms (no second input, no weights) are left out of the formula text
    shown = [input_elements] + [t for t in terms[1:3] if t] + [output_elements]
    elements = sum(terms)
    bytes_moved = elements * dtype_bytes
    bytes_formula = (
        "(" + " + ".join(f"{t:,}" for t in shown) + f"){MUL}{dtype_bytes} B = {bytes_moved:,} B"
    )
    intensity = 0.0 if flops == 0 or bytes_moved == 0 else flops / bytes_moved
    intensity_formula = f"{flops:,} FLOPs / {bytes_moved:,} B = {intensity:,.3f} FLOP/B"
    # exact: compute-bound iff flops / F >= bytes / B, i.e. flops·B >= bytes·F (F, B > 0)
    compute = flops > 0 and Fraction(flops) * Fraction(peaks.bytes_per_s) >= Fraction(
        bytes_moved
    ) * Fraction(peaks.flops_per_s)
    return LayerRoofline(
        bytes_moved=bytes_moved,
        intensity=intensity,
        bound="compute" if compute else "memory",
        time_lower_bound_s=max(flops / peaks.flops_per_s, bytes_moved / peaks.bytes_per_s),
        flops=flops,
        bytes_formula=bytes_formula,
        intensity_formula=intensity_formula,
    )


def view_roofline(flops: int, peaks: Peaks) -> LayerRoofline:
    """A layer whose output is a view of its input (flatten, identity): no bytes move, so its
    bytes, intensity and time lower bound are 0 (memory-bound, as every zero-FLOP layer)."""
    return replace(
        layer_roofline(flops, 0, 0, 0, 1, peaks),
        bytes_formula="a view of its input: no traffic, 0 B",
        view=True,
    )


def with_time(layer: LayerRoofline, time_s: float) -> LayerRoofline:
    """``layer`` with the measured fields filled from a measured forward time in seconds."""
    if isinstance(time_s, bool) or not math.isfinite(time_s) or time_s <= 0:
        raise MeasurementError(f"a measured time must be positive and finite, not {time_s!r}")
    return replace(
        layer,
        time_s=time_s,
        achieved_flops_per_s=layer.flops / time_s,
        achieved_bytes_per_s=layer.bytes_moved / time_s,
        fraction_of_bound=layer.time_lower_bound_s / time_s,
    )


def _positive(field: str, option: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(field, f"{option} {value!r} must be a positive number")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise SpecError(field, f"{option} {number:g} must be a positive number")
    return number


def validate_peaks(gflops: float | None, gbps: float | None) -> tuple[float, float] | None:
    """The given peaks in FLOP/s and bytes/s, or None when neither was given (measure them).

    Raises SpecError naming the option for a negative, zero, nan or infinite peak, or when only
    one of the two is given.
    """
    if gflops is None and gbps is None:
        return None
    if gflops is None:
        raise SpecError("peak_gflops", "--peak-gbps needs --peak-gflops too (give both or neither)")
    if gbps is None:
        raise SpecError("peak_gbps", "--peak-gflops needs --peak-gbps too (give both or neither)")
    flops = _positive("peak_gflops", "--peak-gflops", gflops) * 1e9
    bandwidth = _positive("peak_gbps", "--peak-gbps", gbps) * 1e9
    if not (math.isfinite(flops) and math.isfinite(bandwidth)):
        field = "peak_gflops" if not math.isfinite(flops) else "peak_gbps"
        raise SpecError(field, f"--{field.replace('_', '-')} is too large")
    return flops, bandwidth


def given_peaks(
    gflops: float, gbps: float, device: str, dtype: str, threads: int | None = None
) -> Peaks:
    """Peaks the user gave (``--peak-gflops`` GFLOP/s, ``--peak-gbps`` GB/s): nothing measured."""
    checked = validate_peaks(gflops, gbps)
    assert checked is not None
    flops, bandwidth = checked
    return Peaks(
        flops_per_s=flops,
        bytes_per_s=bandwidth,
        device=device,
        dtype=dtype,
        threads=threads,
        measured=False,
        source=f"given: --peak-gflops {gflops:g} --peak-gbps {gbps:g}",
    )


@dataclass(frozen=True)
class RooflinePoint:
    """One layer in the roofline picture: where it sits and what the roof allows there."""

    name: str
    intensity: float
    attainable_flops_per_s: float
    achieved_flops_per_s: float | None
    bound: Bound


@dataclass(frozen=True)
class RooflinePicture:
    """Data for a roofline plot: the two roofs meet at ``ridge`` (FLOP/B).

    The memory roof is the line FLOP/s = intensity · ``bytes_per_s`` (up to the ridge), the
    compute roof the horizontal line FLOP/s = ``flops_per_s`` (from the ridge on).
    """

    flops_per_s: float
    bytes_per_s: float
    ridge: float
    points: tuple[RooflinePoint, ...]


def roofline_points(layers: Sequence[tuple[str, LayerRoofline]], peaks: Peaks) -> RooflinePicture:
    """The roofs of ``peaks`` and one point per named layer, for a picture."""
    return RooflinePicture(
        flops_per_s=peaks.flops_per_s,
        bytes_per_s=peaks.bytes_per_s,
        ridge=peaks.ridge,
        points=tuple(
            RooflinePoint(
                name=name,
                intensity=layer.intensity,
                attainable_flops_per_s=peaks.attainable(layer.intensity),
                achieved_flops_per_s=layer.achieved_flops_per_s,
                bound=layer.bound,
            )
            for name, layer in layers
        ),
    )
