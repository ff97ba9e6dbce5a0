"""The roofline model (convcalc.roofline, pure) and the device calibration (convcalc.calibrate).

Hand derivations: every layer's element counts and FLOPs are derived in the comments, then
checked against the real torch layer (numel of input, parameters and output; FLOPs from torch's
FlopCounterMode), and the roofline figures against the hand arithmetic.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from convcalc.core.roofline import (
    LayerRoofline,
    Peaks,
    given_peaks,
    layer_roofline,
    roofline_points,
    validate_peaks,
    with_time,
)
from convcalc.errors import MeasurementError, SpecError
from convcalc.measure import calibrate

# a CPU-like device: 100 GFLOP/s, 20 GB/s, ridge 5 FLOP/B
CPU_LIKE = given_peaks(100, 20, "cpu", "float32", 2)


@dataclass(frozen=True)
class Case:
    name: str
    module: nn.Module
    shape: tuple[int, ...]
    input_elements: int
    weight_elements: int
    output_elements: int
    flops: int
    bytes32: int
    bound: str  # on CPU_LIKE (ridge 5), in float32 and float16 alike


CASES = [
    # 1x1 conv 64->256 on 1x64x56x56, bias:
    #   input 64*56*56 = 200,704; weights 64*256 + 256 = 16,640; output 256*56*56 = 802,816
    #   MACs = 802,816 outputs * 64 taps = 51,380,224; FLOPs = 2*MACs = 102,760,448
    #   bytes = (200,704 + 16,640 + 802,816)*4 = 1,020,160*4 = 4,080,640
    #   intensity = 102,760,448 / 4,080,640 = 25.18 FLOP/B > 5: compute-bound
    Case(
        "conv1x1",
        nn.Conv2d(64, 256, 1),
        (1, 64, 56, 56),
        200_704,
        16_640,
        802_816,
        102_760_448,
        4_080_640,
        "compute",
    ),
    # 3x3 conv 64->256, padding 1, on 1x64x56x56, bias:
    #   input 200,704; weights 64*256*9 + 256 = 147,712; output 802,816
    #   MACs = 802,816 * 64*9 = 462,422,016; FLOPs = 924,844,032
    #   bytes = (200,704 + 147,712 + 802,816)*4 = 1,151,232*4 = 4,604,928
    #   intensity = 924,844,032 / 4,604,928 = 200.84 FLOP/B: compute-bound
    Case(
        "conv3x3",
        nn.Conv2d(64, 256, 3, padding=1),
        (1, 64, 56, 56),
        200_704,
        147_712,
        802_816,
        924_844_032,
        4_604_928,
        "compute",
    ),
    # depthwise 3x3 on 1x256x56x56, groups 256, padding 1, bias:
    #   input 256*56*56 = 802,816; weights 256*1*9 + 256 = 2,560; output 802,816
    #   MACs = 802,816 * 9 = 7,225,344; FLOPs = 14,450,688
    #   bytes = (802,816 + 2,560 + 802,816)*4 = 1,608,192*4 = 6,432,768
    #   intensity = 14,450,688 / 6,432,768 = 2.246 FLOP/B < 5: memory-bound (4.49 in float16)
    Case(
        "depthwise",
        nn.Conv2d(256, 256, 3, padding=1, groups=256),
        (1, 256, 56, 56),
        802_816,
        2_560,
        802_816,
        14_450_688,
        6_432_768,
        "memory",
    ),
    # transposed conv 256->128, kernel 2, stride 2, on 1x256x28x28, bias:
    #   input 256*28*28 = 200,704; weights 256*128*2*2 + 128 = 131,200
    #   output 128*56*56 = 401,408
    #   MACs = each input element feeds 128*2*2 outputs: 200,704 * 512 = 102,760,448
    #   FLOPs = 205,520,896
    #   bytes = (200,704 + 131,200 + 401,408)*4 = 733,312*4 = 2,933,248
    #   intensity = 205,520,896 / 2,933,248 = 70.07 FLOP/B: compute-bound
    Case(
        "transposed",
        nn.ConvTranspose2d(256, 128, 2, stride=2),
        (1, 256, 28, 28),
        200_704,
        131_200,
        401_408,
        205_520_896,
        2_933_248,
        "compute",
    ),
    # linear 2048->1000, batch 1, bias:
    #   input 2,048; weights 2,048*1,000 + 1,000 = 2,049,000; output 1,000
    #   MACs = 2,048,000; FLOPs = 4,096,000
    #   bytes = (2,048 + 2,049,000 + 1,000)*4 = 2,052,048*4 = 8,208,192
    #   intensity = 4,096,000 / 8,208,192 = 0.499 FLOP/B: memory-bound (every weight used once)
    Case(
        "linear",
        nn.Linear(2048, 1000),
        (1, 2048),
        2_048,
        2_049_000,
        1_000,
        4_096_000,
        8_208_192,
        "memory",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_hand_counts_match_the_real_layer(case: Case) -> None:
    x = torch.zeros(case.shape)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        y = case.module(x)
    assert x.numel() == case.input_elements
    assert sum(p.numel() for p in case.module.parameters()) == case.weight_elements
    assert y.numel() == case.output_elements
    assert counter.get_total_flops() == case.flops


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bytes_intensity_and_bound_float32_and_float16(case: Case) -> None:
    args = (case.flops, case.input_elements, case.weight_elements, case.output_elements)
    f32 = layer_roofline(*args, 4, CPU_LIKE)
    assert f32.bytes_moved == case.bytes32
    assert f32.intensity == case.flops / case.bytes32
    assert f32.bound == case.bound
    # the time lower bound: max(FLOPs / 100e9, bytes / 20e9)
    assert f32.time_lower_bound_s == max(case.flops / 100e9, case.bytes32 / 20e9)
    # float16: 2 bytes per element, so half the bytes and twice the intensity
    f16 = layer_roofline(*args, 2, CPU_LIKE)
    assert f16.bytes_moved * 2 == case.bytes32
    assert f16.intensity == pytest.approx(2 * f32.intensity, rel=1e-15)
    assert f16.bound == case.bound


def test_formula_text_puts_the_numbers_in() -> None:
    conv = CASES[1]
    layer = layer_roofline(conv.flops, 200_704, 147_712, 802_816, 4, CPU_LIKE)
    assert layer.bytes_formula == "(200,704 + 147,712 + 802,816)·4 B = 4,604,928 B"
    assert layer.intensity_formula == "924,844,032 FLOPs / 4,604,928 B = 200.838 FLOP/B"
    # a second input is its own term
    add = layer_roofline(100, 10, 0, 10, 2, CPU_LIKE, extra_input_elements=10)
    assert add.bytes_formula == "(10 + 10 + 10)·2 B = 60 B"


def test_layer_without_weights_moves_input_plus_output() -> None:
    # ReLU on 1x64x56x56 float32: 200,704 read + 200,704 written = 401,408 el * 4 = 1,605,632 B
    # torch counts no FLOPs for it: intensity 0, memory-bound, bound = 1,605,632 / 20e9 s
    relu = layer_roofline(0, 200_704, 0, 200_704, 4, CPU_LIKE)
    assert relu.bytes_moved == 1_605_632
    assert relu.bytes_formula == "(200,704 + 200,704)·4 B = 1,605,632 B"
    assert relu.intensity == 0.0
    assert relu.bound == "memory"
    assert relu.time_lower_bound_s == 1_605_632 / 20e9


def test_bound_labels_at_below_and_above_the_ridge() -> None:
    # 30 GFLOP/s and 3 GB/s: ridge exactly 10 FLOP/B
    peaks = given_peaks(30, 3, "cpu", "float32")
    assert peaks.ridge == 10.0
    # one float32 element read (4 B), no weights or output: intensity = flops / 4
    at = layer_roofline(40, 1, 0, 0, 4, peaks)  # 10 FLOP/B: both times 4/3e9 s, "compute"
    below = layer_roofline(39, 1, 0, 0, 4, peaks)  # 9.75 FLOP/B
    above = layer_roofline(41, 1, 0, 0, 4, peaks)  # 10.25 FLOP/B
    assert (at.bound, below.bound, above.bound) == ("compute", "memory", "compute")
    assert at.time_lower_bound_s == 40 / 30e9 == 4 / 3e9
    assert below.time_lower_bound_s == 4 / 3e9
    assert above.time_lower_bound_s == 41 / 30e9


def test_bound_label_on_a_ridge_no_float_holds_exactly() -> None:
    # 1 GFLOP/s and 3 GB/s: ridge 1/3 FLOP/B, which no float equals; 1 FLOP on 3 bytes sits
    # exactly on it (both times 1e-9 s), so the label is "compute"; 1 FLOP on 4 bytes is below.
    peaks = given_peaks(1, 3, "cpu", "float32")
    assert layer_roofline(1, 3, 0, 0, 1, peaks).bound == "compute"
    assert layer_roofline(1, 4, 0, 0, 1, peaks).bound == "memory"
    assert layer_roofline(1, 2, 0, 0, 1, peaks).bound == "compute"


def test_zero_flop_and_empty_layers_are_memory_bound_with_intensity_zero() -> None:
    empty = layer_roofline(0, 0, 0, 0, 4, CPU_LIKE)
    assert (empty.bytes_moved, empty.intensity, empty.bound, empty.time_lower_bound_s) == (
        0,
        0.0,
        "memory",
        0.0,
    )


def test_with_time_fills_the_measured_fields() -> None:
    # 3x3 conv: bound = 924,844,032 / 100e9 = 9.24844032 ms; measured 18.49688064 ms = 2x bound
    conv = CASES[1]
    layer = layer_roofline(conv.flops, 200_704, 147_712, 802_816, 4, CPU_LIKE)
    timed = with_time(layer, 0.01849688064)
    assert timed.time_s == 0.01849688064
    assert timed.achieved_flops_per_s == pytest.approx(50e9)
    assert timed.achieved_bytes_per_s == pytest.approx(4_604_928 / 0.01849688064)
    assert timed.fraction_of_bound == pytest.approx(0.5)
    assert set(layer.to_dict()) == {"bytes_moved", "intensity", "bound", "time_lower_bound_s"}
    assert timed.to_dict()["fraction_of_bound"] == pytest.approx(0.5)
    assert set(timed.to_dict()) >= {"time_s", "achieved_flops_per_s", "fraction_of_bound"}
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(MeasurementError):
            with_time(layer, bad)


def test_peaks_to_dict_is_the_device_contract() -> None:
    data = CPU_LIKE.to_dict()
    assert data["name"] == "cpu"
    assert data["dtype"] == "float32"
    assert data["threads"] == 2
    assert data["peak_flops_per_s"] == 100e9
    assert data["peak_bytes_per_s"] == 20e9
    assert data["measured"] is False
    assert data["ridge_flops_per_byte"] == 5.0
    json.dumps(data)


def test_roofline_points() -> None:
    layers = [(c.name, layer_roofline(c.flops, *_counts(c), 4, CPU_LIKE)) for c in CASES]
    picture = roofline_points(layers, CPU_LIKE)
    assert picture.ridge == 5.0
    by_name = {p.name: p for p in picture.points}
    # linear: 0.499 FLOP/B on the memory roof: 0.499 * 20e9 FLOP/s
    assert by_name["linear"].attainable_flops_per_s == pytest.approx(4_096_000 / 8_208_192 * 20e9)
    # 3x3 conv: beyond the ridge, under the compute roof
    assert by_name["conv3x3"].attainable_flops_per_s == 100e9
    assert by_name["conv3x3"].achieved_flops_per_s is None


def _counts(case: Case) -> tuple[int, int, int]:
    return case.input_elements, case.weight_elements, case.output_elements


@settings(max_examples=200, deadline=None)
@given(
    flops=st.integers(0, 10**12),
    counts=st.tuples(*[st.integers(0, 10**9)] * 4),
    width=st.sampled_from([1, 2, 4, 8]),
    gflops=st.floats(1e-3, 1e6),
    gbps=st.floats(1e-3, 1e5),
)
def test_roofline_invariants(
    flops: int, counts: tuple[int, int, int, int], width: int, gflops: float, gbps: float
) -> None:
    peaks = given_peaks(gflops, gbps, "cpu", "float32")
    inp, extra, weights, out = counts
    layer = layer_roofline(flops, inp, weights, out, width, peaks, extra_input_elements=extra)
    assert layer.bytes_moved == (inp + extra + weights + out) * width
    compute_s, memory_s = flops / peaks.flops_per_s, layer.bytes_moved / peaks.bytes_per_s
    assert layer.time_lower_bound_s == max(compute_s, memory_s)
    if flops and layer.bytes_moved:
        assert layer.intensity == flops / layer.bytes_moved
    else:
        assert layer.intensity == 0.0
    # the label follows the exact comparison of the two times
    exact = Fraction(flops) / Fraction(peaks.flops_per_s) >= Fraction(layer.bytes_moved) / (
        Fraction(peaks.bytes_per_s)
    )
    assert layer.bound == ("compute" if flops and exact else "memory")
    assert layer.bytes_formula.endswith(f"·{width} B = {layer.bytes_moved:,} B")


@pytest.mark.parametrize(
    ("gflops", "gbps", "field", "message"),
    [
        (-1, 10, "peak_gflops", "--peak-gflops -1 must be a positive number"),
        (0, 10, "peak_gflops", "--peak-gflops 0 must be a positive number"),
        (math.nan, 10, "peak_gflops", "--peak-gflops nan must be a positive number"),
        (math.inf, 10, "peak_gflops", "--peak-gflops inf must be a positive number"),
        (100, -2.5, "peak_gbps", "--peak-gbps -2.5 must be a positive number"),
        (100, 0.0, "peak_gbps", "--peak-gbps 0 must be a positive number"),
        (100, -math.inf, "peak_gbps", "--peak-gbps -inf must be a positive number"),
        (True, 10, "peak_gflops", "--peak-gflops True must be a positive number"),
        (None, 10, "peak_gflops", "--peak-gbps needs --peak-gflops too (give both or neither)"),
        (100, None, "peak_gbps", "--peak-gflops needs --peak-gbps too (give both or neither)"),
        (1e300, 10, "peak_gflops", "--peak-gflops is too large"),
    ],
)
def test_validate_peaks_errors(gflops: object, gbps: object, field: str, message: str) -> None:
    with pytest.raises(SpecError) as error:
        validate_peaks(gflops, gbps)  # type: ignore[arg-type]
    assert error.value.field == field
    assert str(error.value) == message
    assert "\n" not in str(error.value)


def test_validate_peaks_accepts_and_converts() -> None:
    assert validate_peaks(None, None) is None
    assert validate_peaks(100, 12.5) == (100e9, 12.5e9)


def test_bad_layer_inputs_are_spec_errors() -> None:
    with pytest.raises(SpecError, match="input_elements"):
        layer_roofline(1, -1, 0, 0, 4, CPU_LIKE)
    with pytest.raises(SpecError, match="dtype_bytes"):
        layer_roofline(1, 1, 0, 0, 0, CPU_LIKE)
    with pytest.raises(SpecError):
        Peaks(0.0, 1.0, "cpu", "float32", 1, False, "given")


# --- calibration -------------------------------------------------------------------------


def _busy() -> str | None:
    """Why a timing comparison would measure other processes, or None on a quiet machine."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    cores = os.cpu_count() or 1
    if load > cores:
        return f"load average {load:.1f} on {cores} cores: other processes hold the CPU"
    return None


def test_measured_peaks_are_plausible_and_stable() -> None:
    busy_before = _busy()
    first = calibrate.measure_peaks("cpu", "float32", budget_s=0.8)
    second = calibrate.measure_peaks("cpu", "float32", budget_s=0.8)
    for peaks in (first, second):
        assert peaks.measured is True
        assert peaks.device == "cpu" and peaks.dtype == "float32"
        assert peaks.threads == torch.get_num_threads()
        # positive and finite; below 100 TFLOP/s and 10 TB/s for any CPU of this decade (the
        # lower limits are loose: a machine whose cores are all busy can be that slow)
        assert 1e6 < peaks.flops_per_s < 1e14 and math.isfinite(peaks.flops_per_s)
        assert 1e6 < peaks.bytes_per_s < 1e13 and math.isfinite(peaks.bytes_per_s)
        assert peaks.source.startswith("measured: torch.mm ")
    busy = busy_before or _busy()
    if busy:
        pytest.skip(f"stability not compared: {busy}")
    assert 1 / 3 < first.flops_per_s / second.flops_per_s < 3
    assert 1 / 3 < first.bytes_per_s / second.bytes_per_s < 3


def _fake(calls: list[tuple[str, str]], flops: float = 5e10) -> object:
    def measure(device: str, dtype: str, *, budget_s: float = 3.0) -> Peaks:
        calls.append((device, dtype))
        return Peaks(flops, 1e10, device, dtype, torch.get_num_threads(), True, "fake", "m")

    return measure


def _fail(device: str, dtype: str, *, budget_s: float = 3.0) -> Peaks:
    raise AssertionError("measured although the cache holds the peaks")


def test_cache_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    messages: list[str] = []
    monkeypatch.setattr(calibrate, "measure_peaks", _fake(calls))
    first = calibrate.cached_peaks("cpu", "float32", cache_dir=tmp_path, progress=messages.append)
    assert calls == [("cpu", "float32")]
    assert len(messages) == 1 and "calibrating cpu" in messages[0] and "\n" not in messages[0]
    assert [p.name for p in tmp_path.iterdir()] == ["peaks.json"]  # no temporary file left
    monkeypatch.setattr(calibrate, "measure_peaks", _fail)
    second = calibrate.cached_peaks("cpu", "float32", cache_dir=tmp_path, progress=messages.append)
    assert len(messages) == 1  # nothing measured, nothing said
    assert (second.flops_per_s, second.bytes_per_s) == (first.flops_per_s, first.bytes_per_s)
    assert second.measured is True
    assert second.source.startswith("cached in ")
    # another dtype is another key: measured
    monkeypatch.setattr(calibrate, "measure_peaks", _fake(calls))
    calibrate.cached_peaks("cpu", "bfloat16", cache_dir=tmp_path)
    assert calls[-1] == ("cpu", "bfloat16")
    keys = json.loads((tmp_path / "peaks.json").read_text())["entries"]
    assert len(keys) == 2
    assert all(torch.__version__ in key for key in keys)


def test_recalibrate_bypasses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(calibrate, "measure_peaks", _fake(calls, 5e10))
    calibrate.cached_peaks("cpu", "float32", cache_dir=tmp_path)
    monkeypatch.setattr(calibrate, "measure_peaks", _fake(calls, 7e10))
    again = calibrate.cached_peaks("cpu", "float32", cache_dir=tmp_path, recalibrate=True)
    assert len(calls) == 2 and again.flops_per_s == 7e10
    monkeypatch.setattr(calibrate, "measure_peaks", _fail)
    assert calibrate.cached_peaks("cpu", "float32", cache_dir=tmp_path).flops_per_s == 7e10


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        '{"format": 1, "entries": []}',
        '{"format": 99, "entries": {}}',
        "KEY_WITH_NEGATIVE_PEAKS",
    ],
)
def test_corrupt_cache_is_ignored_and_rewritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str
) -> None:
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(calibrate, "measure_peaks", _fake(calls))
    if content == "KEY_WITH_NEGATIVE_PEAKS":
        model = calibrate.device_model("cpu")
        key = calibrate.cache_key("cpu", "float32", model, torch.get_num_threads())
        entry = {
            "flops_per_s": -1.0,
            "bytes_per_s": 1.0,
            "device": "cpu",
            "dtype": "float32",
            "threads": 1,
            "model": model,
            "source": "x",
            "measured_at": "then",
        }
        content = json.dumps({"format": 1, "entries": {key: entry}})
    (tmp_path / "peaks.json").write_text(content)
    peaks = calibrate.cached_peaks("cpu", "float32", cache_dir=tmp_path)
    assert calls == [("cpu", "float32")] and peaks.flops_per_s == 5e10
    data = json.loads((tmp_path / "peaks.json").read_text())
    assert data["format"] == 1 and len(data["entries"]) == 1


def test_unwritable_cache_still_returns_peaks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(calibrate, "measure_peaks", _fake(calls))
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where the cache directory should be
    assert calibrate.cached_peaks("cpu", "float32", cache_dir=blocker / "sub").flops_per_s == 5e10


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG layout")
def test_default_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert calibrate.default_cache_dir() == tmp_path / "convcalc"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert calibrate.default_cache_dir() == Path(os.path.expanduser("~")) / ".cache" / "convcalc"


@pytest.mark.parametrize(
    ("device", "dtype", "field"),
    [("tpu", "float32", "device"), ("cpu", "float64", "dtype")]
    + ([] if torch.cuda.is_available() else [("cuda", "float32", "device")]),
)
def test_bad_device_or_dtype_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str, dtype: str, field: str
) -> None:
    monkeypatch.setattr(calibrate, "measure_peaks", _fail)
    for call in (
        lambda: calibrate.cached_peaks(device, dtype, cache_dir=tmp_path),
        lambda: calibrate.__dict__["_check"](device, dtype),
    ):
        with pytest.raises(SpecError) as error:
            call()
        assert error.value.field == field
        assert "\n" not in str(error.value)
    assert not (tmp_path / "peaks.json").exists()


def test_time_layer_on_cpu() -> None:
    conv = nn.Conv2d(8, 16, 3, padding=1)
    timing = calibrate.time_layer(conv, [torch.zeros(1, 8, 16, 16)], min_run_time=0.05)
    assert timing.seconds > 0 and math.isfinite(timing.seconds) and timing.runs >= 1
    settings_ = timing.settings()
    assert settings_["device"] == "cpu"
    assert settings_["synchronized"] is False and settings_["cudnn_benchmark"] is None
    # 8*16*9 MACs per output site * 16*16 sites = 294,912 MACs = 589,824 FLOPs
    # bytes: (2,048 + 1,168 + 4,096)*4 = 29,248
    layer = with_time(layer_roofline(589_824, 2_048, 1_168, 4_096, 4, CPU_LIKE), timing.seconds)
    assert isinstance(layer, LayerRoofline) and layer.fraction_of_bound is not None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_calibration_and_timing(tmp_path: Path) -> None:
    peaks = calibrate.cached_peaks("cuda", "float16", cache_dir=tmp_path, budget_s=1.0)
    assert peaks.flops_per_s > 1e9 and peaks.bytes_per_s > 1e9 and peaks.device == "cuda"
    conv = nn.Conv2d(8, 16, 3, padding=1)
    timing = calibrate.time_layer(
        conv, [torch.zeros(1, 8, 16, 16)], device="cuda", min_run_time=0.05, cudnn_benchmark=True
    )
    assert timing.synchronized is True and timing.cudnn_benchmark is True
    assert timing.seconds > 0
