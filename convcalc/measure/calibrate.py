"""The device's peaks, measured with torch, cached; and timing one layer in isolation.

* Peak FLOP/s: square matmuls ``torch.mm(a, b, out=c)`` (2·n³ FLOPs each). The size grows from
  n = 128 by doubling while the next size fits the budget and the FLOP/s has not halved (float16
  on a CPU gets *slower* per FLOP as n grows); each size is timed twice after a warm-up; then
  the best size is repeated while the budget lasts. The peak is the best FLOP/s of any timed run.
* Peak bandwidth: ``dst.copy_(src)`` of a tensor of 32 MiB upwards (doubling while the budget
  allows, up to 256 MiB on a CPU, 1 GiB on a GPU: beyond the last-level cache), 2·nbytes moved
  per copy (read + write), best of the repetitions at the largest size.
* On CUDA/MPS every timed run is bracketed by a device synchronise, after a warm-up run.
* threads = ``torch.get_num_threads()`` at the time of measuring.

The peaks are cached as JSON in the user's cache directory, keyed by device (with the CPU model
and thread count, or the GPU's name), dtype and torch version.

A calibration on a CPU while the load average (``os.getloadavg``, where the platform has it)
exceeds the cores, before or after measuring, measured other processes too: its peaks carry a
``caveat`` saying so (in their ``source`` too), ``cached_peaks`` says it on ``progress`` and
does not cache them, so the next run measures again.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convcalc.core.roofline import Peaks
from convcalc.errors import MeasurementError, SpecError
from convcalc.measure.build import TORCH_DTYPES
from convcalc.measure.timing import MIN_BLOCKS, check_device, time_forward

CACHE_FILE = "peaks.json"
CACHE_FORMAT = 1
MIB = 2**20


# --- where the cache lives ----------------------------------------------------------------


def default_cache_dir() -> Path:
    """convcalc's directory in the user's cache directory, per platform.

    Linux and others: ``$XDG_CACHE_HOME/convcalc`` or ``~/.cache/convcalc``; macOS:
    ``~/Library/Caches/convcalc``; Windows: ``%LOCALAPPDATA%\\convcalc\\Cache``.
    """
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "convcalc"
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        base = Path(local) if local else Path.home() / "AppData" / "Local"
        return base / "convcalc" / "Cache"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "convcalc"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else platform.processor(), else 'unknown CPU'."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_model(device: str) -> str:
    """The hardware behind a torch device: CPU model, CUDA device name, or 'Apple MPS'."""
    if device.startswith("cuda"):
        return str(torch.cuda.get_device_name(torch.device(device)))
    if device == "mps":
        return f"Apple MPS ({platform.processor() or platform.machine()})"
    return cpu_model()


def cache_key(device: str, dtype: str, model: str, threads: int) -> str:
    """The key of one calibration: device, hardware, threads (CPU), dtype, torch version."""
    where = f"{device} [{model}]" + (f" {threads} threads" if device == "cpu" else "")
    return f"{where} {dtype} torch {torch.__version__}"


# --- checks -------------------------------------------------------------------------------


def _check(device: str, dtype: str) -> tuple[str, torch.dtype]:
    # measure.py imports this module (time_forward), so it is imported here, not at the top
    checked = check_device(device)
    if dtype not in TORCH_DTYPES:
        raise SpecError("dtype", f"--dtype {dtype!r} must be one of {', '.join(TORCH_DTYPES)}")
    return checked, TORCH_DTYPES[dtype]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))
    elif device == "mps":
        torch.mps.synchronize()


def _timed(fn: Callable[[], object], device: str) -> float:
    _sync(device)
    started = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - started


# --- load ---------------------------------------------------------------------------------


def _load_average() -> float | None:
    """The 1-minute load average, or None where the platform has none (Windows)."""
    if not hasattr(os, "getloadavg"):
        return None
    try:
        return float(os.getloadavg()[0])
    except OSError:
        return None


def _busy(
    loads: Sequence[float | None], cores: int | None, threads: int | None
) -> tuple[float, int, int] | None:
    """The highest of ``loads``, the cores and torch's threads, when that load left fewer idle
    cores than the threads (load ≥ cores − threads + 1: another process held a core an
    operator's threads wait for, and a parallel operator then waits for the scheduler); None
    on a quiet machine, or where no load average is known."""
    known = [load for load in loads if load is not None]
    cores = cores or os.cpu_count() or 1
    threads = threads or torch.get_num_threads()
    if not known or max(known) < max(cores - threads, 0) + 1:
        return None
    return max(known), cores, threads


def busy_caveat(
    loads: Sequence[float | None], cores: int | None = None, threads: int | None = None
) -> str | None:
    """The caveat of a CPU calibration measured while busy (:func:`_busy`: the matmul runs on
    every thread), or None."""
    busy = _busy(loads, cores, threads)
    if busy is None:
        return None
    return (
        f"measured while the load average was {busy[0]:.1f} on {busy[1]} cores: the peaks "
        "may be low; --recalibrate on a quiet machine"
    )


def timing_caveat(
    loads: Sequence[float | None], cores: int | None = None, threads: int | None = None
) -> str | None:
    """The caveat of CPU timings taken while busy (:func:`_busy`), or None."""
    busy = _busy(loads, cores, threads)
    if busy is None:
        return None
    load, cores, threads = busy
    return (
        f"timed while the load average was {load:.1f} on {cores} cores, torch running "
        f"{threads} threads: other processes shared the cores, so these times may be "
        "inflated; time again on a quiet machine"
    )


def load_average() -> float | None:
    """The 1-minute load average, or None where the platform has none."""
    return _load_average()


# --- peaks --------------------------------------------------------------------------------


def _matmul_peak(device: str, dtype: torch.dtype, budget_s: float) -> tuple[float, int, int, float]:
    """Best FLOP/s of square matmuls, the n it came from, runs timed and seconds spent."""
    started = time.perf_counter()
    max_n = 4096 if device == "cpu" else 8192
    n, best_rate, best_n, best_t, runs = 128, 0.0, 128, 0.0, 0
    best: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    while True:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        c = torch.empty(n, n, device=device, dtype=dtype)
        torch.mm(a, b, out=c)  # warm-up: thread pool, kernels, first touch
        run = functools.partial(torch.mm, a, b, out=c)
        t = min(_timed(run, device), _timed(run, device))
        runs += 2
        rate = 2 * n**3 / t
        falling = rate < 0.5 * best_rate
        if rate > best_rate:
            best_rate, best_n, best_t, best = rate, n, t, (a, b, c)
        elapsed = time.perf_counter() - started
        # the next size costs up to 8x per run (less where a busy machine's latency dominates):
        # a warm-up and two timed runs must fit in half of what is left of the budget
        if n >= max_n or falling or 3 * 8 * t > 0.5 * (budget_s - elapsed):
            break
        n *= 2
    assert best is not None
    a, b, c = best
    repeats = 0
    while repeats < 2 or (repeats < 30 and time.perf_counter() - started + best_t < budget_s):
        t = _timed(functools.partial(torch.mm, a, b, out=c), device)
        runs += 1
        repeats += 1
        best_rate = max(best_rate, 2 * best_n**3 / t)
    return best_rate, best_n, runs, time.perf_counter() - started


def _copy_peak(device: str, dtype: torch.dtype, budget_s: float) -> tuple[float, int, int, float]:
    """Best bytes/s of a tensor copy (read + write), the bytes per tensor, runs, seconds."""
    started = time.perf_counter()
    itemsize = torch.empty((), dtype=dtype).element_size()
    max_bytes = 256 * MIB if device == "cpu" else 1024 * MIB
    size = 32 * MIB
    while True:
        src = torch.ones(size // itemsize, device=device, dtype=dtype)
        dst = torch.empty_like(src)
        dst.copy_(src)  # warm-up and first touch of dst
        t = _timed(functools.partial(dst.copy_, src), device)
        runs, best = 1, t
        elapsed = time.perf_counter() - started
        # doubling costs ~2x per copy: fill, warm-up and three timed copies, about 10 t
        if size >= max_bytes or elapsed + 10 * 2 * t > budget_s * 0.8:
            break
        del src, dst
        size *= 2
    while runs < 3 or (runs < 20 and time.perf_counter() - started + t < budget_s):
        best = min(best, _timed(functools.partial(dst.copy_, src), device))
        runs += 1
    return 2 * size / best, size, runs, time.perf_counter() - started


def measure_peaks(device: str, dtype: str, *, budget_s: float = 3.0) -> Peaks:
    """The device's peak FLOP/s (matmul) and bandwidth (copy) for ``dtype``, measured now.

    About 55 % of ``budget_s`` goes to the matmul, the rest to the copy; the whole takes about
    ``budget_s`` seconds (a little more on a very slow device: at least three timed runs each).
    Raises SpecError for an unknown device or dtype, or cuda/mps where there is none.
    """
    if not budget_s > 0:
        raise SpecError("budget_s", f"budget_s {budget_s!r} must be a positive number of seconds")
    checked, torch_dtype = _check(device, dtype)
    load_before = _load_average() if checked == "cpu" else None
    started = time.perf_counter()
    threads = torch.get_num_threads()
    try:
        with torch.no_grad():
            flops, n, mm_runs, mm_s = _matmul_peak(checked, torch_dtype, 0.55 * budget_s)
            spent = time.perf_counter() - started
            remaining = max(0.95 * budget_s - spent, 0.2 * budget_s)
            bandwidth, size, cp_runs, cp_s = _copy_peak(checked, torch_dtype, remaining)
    except RuntimeError as error:
        raise MeasurementError(
            f"calibrating {device} {dtype} failed: {str(error).splitlines()[0]}"
        ) from error
    total = time.perf_counter() - started
    source = (
        f"measured: torch.mm {n}x{n} {dtype}, best of {mm_runs} runs ({mm_s:.2f} s); "
        f"copy of {size // MIB} MiB, best of {cp_runs} runs ({cp_s:.2f} s); "
        f"{threads} threads; {total:.2f} s"
    )
    caveat = busy_caveat([load_before, _load_average()]) if checked == "cpu" else None
    if caveat:
        source += f"; {caveat}"
    return Peaks(
        flops_per_s=flops,
        bytes_per_s=bandwidth,
        device=checked,
        dtype=dtype,
        threads=threads,
        measured=True,
        source=source,
        model=device_model(checked),
        caveat=caveat,
    )


def _read_cache(path: Path) -> dict[str, Any]:
    """The cache's entries; an absent, unreadable or malformed file counts as empty."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}


def _peaks_from(entry: object, path: Path) -> Peaks | None:
    if not isinstance(entry, dict):
        return None
    try:
        peaks = Peaks(
            flops_per_s=float(entry["flops_per_s"]),
            bytes_per_s=float(entry["bytes_per_s"]),
            device=str(entry["device"]),
            dtype=str(entry["dtype"]),
            threads=int(entry["threads"]),
            measured=True,
            source=f"cached in {path} ({entry['measured_at']}): {entry['source']}",
            model=str(entry["model"]),
        )
    except (KeyError, TypeError, ValueError):  # SpecError is a ValueError: bad peaks too
        return None
    return peaks


def _write_cache(path: Path, entries: dict[str, Any]) -> None:
    """Write atomically: a temporary file in the same directory, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"format": CACHE_FORMAT, "entries": entries}, indent=2, sort_keys=True)
    handle, temporary = tempfile.mkstemp(prefix=".peaks-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text + "\n")
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def cached_peaks(
    device: str,
    dtype: str,
    *,
    recalibrate: bool = False,
    cache_dir: Path | str | None = None,
    progress: Callable[[str], None] | None = None,
    budget_s: float = 3.0,
) -> Peaks:
    """The device's peaks from the cache, or measured (and cached) when absent or recalibrating.

    ``progress`` is called with one line before measuring (the CLI prints it to stderr). A
    corrupt cache file is ignored and rewritten; a cache that cannot be written is not an
    error (the peaks are still returned, measured). Peaks measured on a busy CPU (a ``caveat``)
    are said on ``progress`` and not cached: the next run measures again.
    """
    checked, _ = _check(device, dtype)
    threads = torch.get_num_threads()
    model = device_model(checked)
    key = cache_key(checked, dtype, model, threads)
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / CACHE_FILE
    entries = _read_cache(path)
    if not recalibrate:
        hit = _peaks_from(entries.get(key), path)
        if hit is not None:
            return hit
    if progress is not None:
        progress(
            f"convcalc: calibrating {checked} ({model}"
            + (f", {threads} threads" if checked == "cpu" else "")
            + f") {dtype}: a matmul and a copy, about {budget_s:g} s; cached in {path}"
        )
    peaks = measure_peaks(checked, dtype, budget_s=budget_s)
    if peaks.caveat:
        if progress is not None:
            progress(f"convcalc: {peaks.caveat} (not cached: measured again next time)")
        return peaks
    entries[key] = {
        "flops_per_s": peaks.flops_per_s,
        "bytes_per_s": peaks.bytes_per_s,
        "device": peaks.device,
        "dtype": peaks.dtype,
        "threads": peaks.threads,
        "model": peaks.model,
        "source": peaks.source,
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    with contextlib.suppress(OSError):
        _write_cache(path, entries)
    return peaks


# --- timing one layer ---------------------------------------------------------------------


@dataclass(frozen=True)
class LayerTiming:
    """One layer's measured forward time and how it was measured."""

    seconds: float
    runs: int
    device: str
    threads: int
    min_run_time_s: float
    warmup_runs: int
    synchronized: bool
    cudnn_benchmark: bool | None
    #: the spread of the timed blocks: their interquartile range, in seconds
    iqr: float = 0.0

    def settings(self) -> dict[str, Any]:
        """How the time was measured, for the report (``cudnn_benchmark`` None off CUDA)."""
        return {
            "device": self.device,
            "threads": self.threads,
            "tool": "torch.utils.benchmark.Timer.blocked_autorange (median)",
            "min_run_time_s": self.min_run_time_s,
            "min_blocks": MIN_BLOCKS,
            "runs": self.runs,
            "warmup_runs": self.warmup_runs,
            "synchronized": self.synchronized,
            "cudnn_benchmark": self.cudnn_benchmark,
        }


def time_layer(
    module: nn.Module,
    inputs: Sequence[torch.Tensor],
    *,
    device: str = "cpu",
    min_run_time: float = 0.2,
    warmup: int = 3,
    cudnn_benchmark: bool | None = None,
) -> LayerTiming:
    """Time ``module(*inputs)`` alone on ``device``, on the real input shapes, in no_grad.

    The module and inputs are moved to ``device`` (their dtype is kept). ``warmup`` untimed
    runs come first, followed by a synchronise on CUDA/MPS. ``cudnn_benchmark`` sets
    ``torch.backends.cudnn.benchmark`` for the run (restored after); None leaves it as it is.
    The module is timed in whatever mode (train/eval) it is in.
    """
    checked = _check(device, "float32")[0]
    accelerator = checked != "cpu"
    moved = module.to(checked)
    samples = [x.to(checked) for x in inputs]
    cuda = checked.startswith("cuda")
    previous = torch.backends.cudnn.benchmark
    if cuda and cudnn_benchmark is not None:
        torch.backends.cudnn.benchmark = cudnn_benchmark
    try:
        with torch.no_grad():
            for _ in range(warmup):
                moved(*samples)
        _sync(checked)
        seconds, runs, iqr = time_forward(moved, samples, min_run_time)
    except RuntimeError as error:
        raise MeasurementError(
            f"timing failed on {checked}: {str(error).splitlines()[0]}"
        ) from error
    finally:
        state = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = previous
    return LayerTiming(
        seconds=seconds,
        iqr=iqr,
        runs=runs,
        device=checked,
        threads=torch.get_num_threads(),
        min_run_time_s=min_run_time,
        warmup_runs=warmup,
        synchronized=accelerator,
        cudnn_benchmark=state if cuda else None,
    )
