"""The roofline's honesty and legibility, from a new-user trial (roofux): the JSONL lines carry
the device, a view moves no bytes, a calibration under load is said and not cached, a measured
time that beats the bound is explained, and the picture's legend keeps its numbers at any
width."""

from __future__ import annotations

import json

import pytest
from rich.cells import cell_len

PEAKS = ("--peak-gflops", "100", "--peak-gbps", "20")


def test_jsonl_total_line_carries_the_device(cli) -> None:
    # README: "JSONL carries the same keys" as JSON; before, no line had the device object
    args = ("stack", "conv k3 out8; dw k3", "--input", "1,3,32,32", "--roofline", *PEAKS)
    result = cli(*args, "--format", "jsonl")
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["kind"] for line in lines] == ["layer", "layer", "layer", "total"]
    device = lines[-1]["device"]
    assert device == cli.json(*args)["device"]
    # 100 GFLOP/s / 20 GB/s = a ridge of 5 FLOP/B; given, not measured
    assert device["ridge_flops_per_byte"] == 5.0 and device["measured"] is False
    assert all("device" not in line for line in lines[:-1])


def test_jsonl_without_roofline_has_no_device(cli) -> None:
    result = cli("stack", "conv k3 out8", "--input", "1,3,8,8", "--format", "jsonl")
    assert result.exit_code == 0, result.stderr
    assert all("device" not in json.loads(line) for line in result.stdout.splitlines())


# --- a calibration under load -----------------------------------------------------------------


def _loaded(monkeypatch, load: float) -> None:
    import os

    from convcalc.measure import calibrate

    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert calibrate._load_average() == load


def test_busy_caveat_by_hand() -> None:
    from convcalc.measure.calibrate import busy_caveat

    # torch's 2 threads on 2 cores: busy from a load of 1 (one other runnable process holds a
    # core the matmul's threads wait for; a new-user trial cached 68 GFLOP/s at load 1.64,
    # against 181 quiet); 4 cores leave 2 idle up to a load of 3; no load average: nothing said
    assert busy_caveat([1.0, 4.1], cores=2, threads=2) == (
        "measured while the load average was 4.1 on 2 cores: the peaks may be low; "
        "--recalibrate on a quiet machine"
    )
    assert busy_caveat([0.5, 1.64], cores=2, threads=2) is not None
    assert busy_caveat([0.9, 0.5], cores=2, threads=2) is None
    assert busy_caveat([2.9], cores=4, threads=2) is None
    assert busy_caveat([None, None], cores=2, threads=2) is None


def test_peaks_measured_under_load_say_so_and_are_not_cached(tmp_path, monkeypatch) -> None:
    # the new-user trial: the first --roofline ran at load 4 on 2 cores and cached 131 GFLOP/s
    # and 12.8 GB/s for good (a quiet --recalibrate gave 183.9 and 30.8)
    from convcalc.measure import calibrate

    _loaded(monkeypatch, 4.1)
    said: list[str] = []
    peaks = calibrate.cached_peaks(
        "cpu", "float32", cache_dir=tmp_path, progress=said.append, budget_s=0.2
    )
    caveat = (
        "measured while the load average was 4.1 on 2 cores: the peaks may be low; "
        "--recalibrate on a quiet machine"
    )
    assert peaks.caveat == caveat and peaks.source.endswith("; " + caveat)
    assert peaks.to_dict()["caveat"] == caveat
    assert said[-1] == f"convcalc: {caveat} (not cached: measured again next time)"
    assert not (tmp_path / "peaks.json").exists()  # nothing cached
    # quiet again: measured again (not read from a cache) and cached, with no caveat
    _loaded(monkeypatch, 0.5)
    quiet = calibrate.cached_peaks("cpu", "float32", cache_dir=tmp_path, budget_s=0.2)
    assert quiet.caveat is None and "load average" not in quiet.source
    assert "caveat" not in quiet.to_dict()
    assert (tmp_path / "peaks.json").exists()


def test_a_report_on_busy_peaks_notes_it(cli, tmp_path, monkeypatch) -> None:
    from convcalc.core.roofline import Peaks
    from convcalc.measure import calibrate

    caveat = "measured while the load average was 4.1 on 2 cores: the peaks may be low"

    def busy(device: str, dtype: str, *, budget_s: float = 3.0) -> Peaks:
        return Peaks(1e11, 2e10, device, dtype, 2, True, "busy; " + caveat, "m", caveat)

    monkeypatch.setattr(calibrate, "measure_peaks", busy)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    result = cli("stack", "conv k3 out8", "--input", "1,3,8,8", "--roofline")
    assert result.exit_code == 0, result.stderr
    assert f"convcalc: {caveat} (not cached: measured again next time)" in result.stderr
    assert f"note: roofline peaks: {caveat}" in result.stdout
    # measured again (not cached), said again
    again = cli("stack", "conv k3 out8", "--input", "1,3,8,8", "--roofline", "--format", "json")
    assert again.exit_code == 0 and "not cached" in again.stderr
    data = json.loads(again.stdout)
    assert data["device"]["caveat"] == caveat
    assert f"roofline peaks: {caveat}" in data["notes"]
    assert not (tmp_path / "convcalc" / "peaks.json").exists()


# --- a view moves nothing -------------------------------------------------------------------


def test_flatten_is_a_view_and_moves_no_bytes(cli) -> None:
    import torch
    from torch import nn

    # torch: flatten of the conv's contiguous 1x8x6x6 output is a view of it (same storage,
    # nothing copied): the measured side of "a view moves nothing"
    x = torch.zeros(1, 8, 6, 6)
    out = nn.Flatten()(x)
    assert out._is_view() and out.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
    # by hand, float32, on 100 GFLOP/s and 20 GB/s:
    #   conv k3 out8 on 1x3x8x8: input 192 + weights 3*8*9 + 8 = 224 + output 8*6*6 = 288
    #     = 704 elements * 4 = 2,816 B
    #   flatten: a view: 0 B (before: input 288 + output 288 = 576 * 4 = 2,304 B)
    #   linear 288 -> 10: input 288 + weights 2,880 + 10 = 2,890 + output 10 = 3,188 * 4
    #     = 12,752 B
    #   total 2,816 + 0 + 12,752 = 15,568 B
    args = ("stack", "conv k3 out8; flatten; linear out10", "--input", "1,3,8,8", "--roofline")
    data = cli.json(*args, *PEAKS)
    rows = [layer["roofline"] for layer in data["layers"]]
    assert [row["bytes_moved"] for row in rows] == [2_816, 0, 12_752]
    assert data["total"]["roofline"]["bytes_moved"] == 15_568
    flat = rows[1]
    assert flat["view"] is True and flat["intensity"] == 0.0
    assert flat["time_lower_bound_s"] == 0.0 and flat["bound"] == "memory"
    assert "view" not in rows[0] and "view" not in rows[2]
    table = cli(*args, *PEAKS, env={"COLUMNS": "200"}).stdout
    assert "flatten1           0 B     0.00                a view     0.0000" in table
    assert "a view (flatten, identity) moves nothing: 0 B" in " ".join(table.split())


def test_a_timed_view_has_its_measured_time_and_zero_bytes_per_second() -> None:
    from convcalc.core.roofline import view_roofline, with_time
    from tests.test_roofline import CPU_LIKE

    # a view timed at 2.5 us: 0 FLOPs and 0 B in 2.5e-6 s -> 0 FLOP/s, 0 B/s; bound 0 s, so 0
    roof = with_time(view_roofline(0, CPU_LIKE), 2.5e-6)
    assert (roof.bytes_moved, roof.time_lower_bound_s, roof.time_s) == (0, 0.0, 2.5e-6)
    assert (roof.achieved_bytes_per_s, roof.fraction_of_bound) == (0.0, 0.0)
    assert roof.bytes_formula == "a view of its input: no traffic, 0 B"


# --- a measured time that beats the bound ---------------------------------------------------


def test_a_time_beating_the_bound_is_named_and_kept() -> None:
    from convcalc.core.roofline import Peaks, given_peaks, layer_roofline, with_time
    from convcalc.engine.roofline import beaten_note

    given = given_peaks(100, 5, "cpu", "float32", 2)
    measured = Peaks(1e11, 5e9, "cpu", "float32", 2, True, "measured: ...")
    # ReLU on 1x16x16x16: 4,096 in + 4,096 out = 8,192 elements * 4 = 32,768 B = 32.00 KiB;
    # bound 32,768 B / 5e9 B/s = 6.5536e-6 s = 0.0066 ms; measured 5e-6 s: 6.5536 / 5 = 131%
    relu = with_time(layer_roofline(0, 4096, 0, 4096, 4, given), 5e-6)
    assert relu.fraction_of_bound == 6.5536e-6 / 5e-6  # the number is kept, not capped
    head = "measured 0.0050 ms beats the roofline's bound 0.0066 ms (131% of bound): "
    assert beaten_note(relu, measured) == head + (
        "its 32.00 KiB moved fit in cache, and the bound assumes DRAM bandwidth (the peak, "
        "5.0 GB/s, is a copy larger than the caches)"
    )
    assert beaten_note(relu, given) == head + (
        "its 32.00 KiB moved may fit in cache (the bound assumes DRAM bandwidth), or the peak "
        "given, 5.0 GB/s, is low"
    )
    # at or below the bound, or not timed: nothing to explain
    assert beaten_note(with_time(relu, 6.5536e-6), given) is None
    assert beaten_note(with_time(relu, 1e-5), given) is None
    assert beaten_note(layer_roofline(0, 4096, 0, 4096, 4, given), given) is None
    # compute-bound: 1e6 FLOPs, 100 elements (400 B): 2,500 FLOP/B >= 20; bound 1e6 / 1e11 =
    # 1e-5 s; measured 8e-6 s: 125%, 1e6 / 8e-6 = 125.0 GFLOP/s
    mm = with_time(layer_roofline(1_000_000, 50, 0, 50, 4, given), 8e-6)
    assert mm.bound == "compute"
    assert beaten_note(mm, measured) == (
        "measured 0.0080 ms beats the roofline's bound 0.0100 ms (125% of bound): it ran at "
        "125.0 GFLOP/s, above the FLOP/s peak (100.0 GFLOP/s, torch.mm's best at one size): "
        "the peak is low for this kernel"
    )


def test_a_timed_stack_notes_the_layers_that_beat_the_bound(monkeypatch) -> None:
    from convcalc.core.report import Report
    from convcalc.engine import roofline as engine_roofline

    # every layer "measured" at a nanosecond: each beats its bound, and each says so
    real = engine_roofline.with_roofline

    def fast(report: Report, nodes, inputs, peaks):  # type: ignore[no-untyped-def]
        from dataclasses import replace

        timed = replace(report, layers=tuple(replace(x, latency_ms=1e-6) for x in report.layers))
        return real(timed, nodes, inputs, peaks)

    monkeypatch.setattr("convcalc.engine.network.with_roofline", fast)
    from convcalc import library

    measure = library.Measure(roofline=True, peak_gflops=100, peak_gbps=20)
    result = library.stack("relu", input="1,3,8,8", measure=measure)
    (layer,) = result.layers
    # 192 in + 192 out = 384 * 4 = 1,536 B; bound 1,536 / 2e10 = 7.68e-8 s; measured 1e-9 s
    assert layer.roofline.fraction_of_bound == 7.68e-8 / 1e-9
    assert layer.notes[-1].startswith("measured 0.0000 ms beats the roofline's bound")
    assert "its 1.50 KiB moved may fit in cache" in layer.notes[-1]


# --- draw roofline at any width -------------------------------------------------------------

DRAWN = "conv k3 out32; dw k3; pw out64; maxpool k2; dw k3; pw out128"


@pytest.mark.parametrize("columns", [60, 80, 120])
def test_draw_roofline_fits_the_width_with_every_name_and_number(cli, golden, columns) -> None:
    # the new-user trial, at COLUMNS=80: the legend showed the mark, FLOP/B, bound and GFLOP/s
    # columns as '…' and cut the names ('dw1.d…'); at 60 the plot wrapped and the roof broke
    args = ("draw", "roofline", DRAWN, "--input", "1,3,64,64", *PEAKS)
    result = cli(*args, env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(cell_len(line) for line in lines) <= columns
    assert "…" not in result.stdout
    # every plot row (the roofs' rows too) is whole: the axis bar, then the plot
    plot = [line for line in lines if "|" in line and not line.startswith("roof")]
    assert len(plot) == 18 and all(line[17] == "|" for line in plot)
    assert any("=" in line for line in plot) and any("/" in line for line in plot)
    words = set(result.stdout.split())
    points = cli.json(*args)["points"]
    assert len(points) == 8
    for point in points:
        assert point["name"] in words, point["name"]  # whole, never shortened
        assert f"{point['intensity']:,.2f}" in words
        value = point["achieved_flops_per_s"] or point["attainable_flops_per_s"]
        assert f"{value / 1e9:,.2f}" in words
    golden(f"draw_roofline_{columns}.txt", result.stdout)


def test_draw_roofline_too_narrow_says_so(cli) -> None:
    # the plot needs 18 columns of axis and 16 of plot: 34; at 30 it is not drawn, and said
    args = ("draw", "roofline", "conv k3 out32; dw k3", "--input", "1,3,64,64", *PEAKS)
    result = cli(*args, env={"COLUMNS": "30"})
    assert result.exit_code == 0, result.stderr
    assert max(cell_len(line) for line in result.stdout.splitlines()) <= 30
    text = " ".join(result.stdout.split())
    assert "(the plot is not drawn: it needs 34 columns, the output has 30;" in text
    assert "dw1.depthwise" in text and "dw1.pointwise" in text  # the legend still names them


def test_timings_taken_on_a_loaded_machine_say_so(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    # torch runs as many threads as cores here: one other runnable process (load 1.0 on 2
    # cores, 2 threads) makes a parallel operator wait for the scheduler (ms, not µs)
    from convcalc.measure import calibrate

    assert calibrate.timing_caveat([0.3, 0.9], cores=2, threads=2) is None
    assert calibrate.timing_caveat([0.3, 1.0], cores=2, threads=2) == (
        "timed while the load average was 1.0 on 2 cores, torch running 2 threads: other "
        "processes shared the cores, so these times may be inflated; time again on a quiet "
        "machine"
    )
    assert calibrate.timing_caveat([2.5], cores=4, threads=2) is None  # two idle cores left
    assert calibrate.timing_caveat([None], cores=2, threads=2) is None  # no load average
    args = ("conv", "--in", "2", "--out", "2", "-k", "1", "--size", "4", "--time")
    monkeypatch.setattr(calibrate, "_load_average", lambda: 9.0)
    busy = json.loads(cli(*args, "--json").stdout)["timing"]["load_caveat"]
    assert busy.startswith("timed while the load average was 9.0 on ")
    assert f"timing: {busy}" in " ".join(cli(*args).stdout.split())
    monkeypatch.setattr(calibrate, "_load_average", lambda: 0.0)
    assert "load_caveat" not in json.loads(cli(*args, "--json").stdout)["timing"]
