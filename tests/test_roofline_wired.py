"""The roofline wired into the commands (issue 14): --roofline, --peak-gflops/--peak-gbps,
--recalibrate, --time for stacks and models, compare's why, batch's columns, draw roofline.

Every test gives the peaks (100 GFLOP/s, 20 GB/s: ridge 5 FLOP/B) so nothing is calibrated,
except the one test of the calibrated path (measure_peaks monkeypatched, its own cache dir)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch

from convcalc.measure import calibrate

PEAKS = ("--peak-gflops", "100", "--peak-gbps", "20")

# (command args, layer index, FLOPs, bytes in float32, bound on the ridge-5 device in float32
# and float16 alike). Derivations: tests/test_roofline.py's CASES, the same layers.
CLI_CASES = [
    # 1x1 conv 64->256 on 1x64x56x56: (200,704 + 16,640 + 802,816)·4 = 4,080,640 B;
    # FLOPs 102,760,448; 25.18 FLOP/B (50.4 in float16) >= 5: compute
    (
        ["conv", "--in", "64", "--out", "256", "-k", "1", "--size", "56"],
        0,
        102_760_448,
        4_080_640,
        "compute",
    ),
    # 3x3 conv p1: (200,704 + 147,712 + 802,816)·4 = 4,604,928 B; FLOPs 924,844,032: compute
    (
        ["conv", "--in", "64", "--out", "256", "-k", "3", "-p", "1", "--size", "56"],
        0,
        924_844_032,
        4_604_928,
        "compute",
    ),
    # depthwise 3x3 on 1x256x56x56: (802,816 + 2,560 + 802,816)·4 = 6,432,768 B; FLOPs
    # 14,450,688; 2.246 FLOP/B (4.49 in float16) < 5: memory
    (
        ["conv", "--in", "256", "--out", "256", "-k", "3", "-p", "1", "-g", "256", "--size", "56"],
        0,
        14_450_688,
        6_432_768,
        "memory",
    ),
    # transposed k2 s2 256->128 on 28x28: (200,704 + 131,200 + 401,408)·4 = 2,933,248 B;
    # FLOPs 205,520,896: compute
    (
        [
            "conv",
            "--in",
            "256",
            "--out",
            "128",
            "-k",
            "2",
            "-s",
            "2",
            "--transpose",
            "--size",
            "28",
        ],
        0,
        205_520_896,
        2_933_248,
        "compute",
    ),
    # linear 2048->1000 after a flatten: (2,048 + 2,049,000 + 1,000)·4 = 8,208,192 B; FLOPs
    # 4,096,000; 0.499 FLOP/B: memory
    (
        ["stack", "flatten; linear out1000", "--input", "1,2048,1,1"],
        1,
        4_096_000,
        8_208_192,
        "memory",
    ),
]


@pytest.mark.parametrize("dtype, width", [("float32", 4), ("float16", 2)])
@pytest.mark.parametrize("case", CLI_CASES, ids=["1x1", "3x3", "depthwise", "transposed", "linear"])
def test_hand_derived_roofline_through_the_cli(cli, case, dtype: str, width: int) -> None:
    args, index, flops, bytes32, bound = case
    report = cli.json(*args, "--roofline", *PEAKS, "--dtype", dtype, "--measure-on", "meta")
    roof = report["layers"][index]["roofline"]
    moved = bytes32 // 4 * width
    assert roof["bytes_moved"] == moved
    assert roof["intensity"] == pytest.approx(flops / moved, rel=1e-12)
    assert roof["bound"] == bound
    # max(FLOPs / 1e11, bytes / 2e10)
    assert roof["time_lower_bound_s"] == pytest.approx(max(flops / 1e11, moved / 2e10), rel=1e-12)
    assert "time_s" not in roof
    device = report["device"]
    assert device["name"] == "cpu" and device["dtype"] == dtype and device["measured"] is False
    assert device["peak_flops_per_s"] == 1e11 and device["peak_bytes_per_s"] == 2e10
    assert set(device) >= {"name", "dtype", "threads", "peak_flops_per_s", "peak_bytes_per_s"}


def test_given_peaks_need_no_torch_with_formula_only(cli) -> None:
    report = cli.json("dw", "--in", "64", "--out", "256", "--size", "56", "--formula-only", *PEAKS)
    # depthwise: (200,704 + 640 + 200,704)·4 = 1,608,192 B, FLOPs 2·200,704·9 = 3,612,672:
    # 2.246 FLOP/B: memory; pointwise 1x1 64->256: 4,080,640 B, compute
    bounds = [layer["roofline"]["bound"] for layer in report["layers"]]
    assert bounds == ["memory", "compute"]
    assert report["layers"][0]["roofline"]["bytes_moved"] == 1_608_192
    total = report["total"]["roofline"]
    assert total["bytes_moved"] == 1_608_192 + 4_080_640
    assert (total["layers_compute_bound"], total["layers_memory_bound"]) == (1, 1)
    assert total["top_layers_by"] == "time_lower_bound_s"
    assert total["top_layers"][0]["name"] == "pointwise"


def test_without_the_roofline_nothing_changes(cli) -> None:
    report = cli.json("conv", "--in", "3", "--out", "4", "--size", "8")
    assert "device" not in report and "roofline" not in report["layers"][0]
    assert "roofline" not in report["total"]


def test_time_on_a_stack_fills_the_measured_fields(cli) -> None:
    report = cli.json(
        "stack", "conv k3 out8; relu; dw k3", "--input", "1,3,16,16", "--time", *PEAKS
    )
    for layer in report["layers"]:
        roof = layer["roofline"]
        # latency_ms is rounded to 4 decimals in the JSON
        assert roof["time_s"] == pytest.approx(layer["latency_ms"] / 1e3, abs=1e-7)
        assert roof["fraction_of_bound"] == pytest.approx(
            roof["time_lower_bound_s"] / roof["time_s"], rel=1e-9
        )
        assert roof["achieved_bytes_per_s"] == pytest.approx(
            roof["bytes_moved"] / roof["time_s"], rel=1e-9
        )
    total = report["total"]["roofline"]
    assert total["top_layers_by"] == "time_s"
    assert total["time_s"] == pytest.approx(sum(x["roofline"]["time_s"] for x in report["layers"]))
    assert report["timing"]["warmup_runs"] == 3 and report["timing"]["synchronized"] is False


def test_model_time_and_roofline(cli, tmp_path: Path) -> None:
    source = tmp_path / "net.py"
    source.write_text(
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 8, 3, padding=1)\n"
        "        self.fc = nn.Linear(8, 10)\n"
        "    def forward(self, x):\n"
        "        return self.fc(self.conv(x).mean((2, 3)))\n"
    )
    report = cli.json("model", f"{source}:Net", "--input", "1,3,8,8", "--time", *PEAKS)
    names = [layer["name"] for layer in report["layers"]]
    assert names == ["conv", "fc"]
    conv = report["layers"][0]["roofline"]
    # conv 3->8 k3 p1 on 1x3x8x8: (192 + 224 + 512)·4 = 3,712 B; FLOPs 2·512·27 = 27,648
    assert conv["bytes_moved"] == 3_712 and conv["bound"] == "compute"
    assert conv["time_s"] > 0 and report["layers"][0]["latency_ms"] > 0
    assert report["total"]["roofline"]["time_s"] > 0
    # the spread of each module's timed runs, as the layer report gives it
    assert all(layer["latency_iqr_ms"] >= 0 for layer in report["layers"])
    table = cli("model", f"{source}:Net", "--input", "1,3,8,8", "--time", *PEAKS)
    assert table.exit_code == 0, table.stderr
    assert "IQR ms" in table.stdout
    # each module timed in at least 15 blocks, as a layer is (measure/timing.MIN_BLOCKS)
    assert report["timing"]["min_blocks"] == 15
    assert "15 timed blocks per layer" in " ".join(table.stdout.split())


def test_compare_has_the_intensity_and_why(cli) -> None:
    report = cli.json(
        "compare",
        "--in",
        "64",
        "--out",
        "256",
        "--size",
        "56",
        "--roofline",
        *PEAKS,
        "--measure-on",
        "meta",
    )
    why = report["roofline_why"]
    assert "standard: compute-bound" in why and "depthwise memory-bound (2.2 FLOP/B)" in why
    table = cli(
        "compare", "--in", "64", "--out", "256", "--size", "56", *PEAKS, "--measure-on", "meta"
    )
    assert table.exit_code == 0 and "FLOP/B" in table.stdout and "why (ridge 5.0" in table.stdout


def test_csv_markdown_and_batch_carry_the_roofline(cli, tmp_path: Path) -> None:
    result = cli(
        "dw",
        "--in",
        "64",
        "--out",
        "256",
        "--size",
        "56",
        *PEAKS,
        "--measure-on",
        "meta",
        "-f",
        "csv",
    )
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["bound"] for r in rows] == ["memory", "compute", "mixed"]
    assert rows[0]["bytes_moved"] == "1608192"
    markdown = cli(
        "dw",
        "--in",
        "64",
        "--out",
        "256",
        "--size",
        "56",
        *PEAKS,
        "--measure-on",
        "meta",
        "-f",
        "markdown",
    ).stdout
    assert (
        "Roofline on cpu float32 (given)" in markdown and "| `depthwise` | 1,608,192 |" in markdown
    )
    sweep = tmp_path / "sweep.jsonl"
    sweep.write_text('{"in": 64, "out": 256, "kernel": 3, "size": 56}\n')
    batch = cli("batch", str(sweep), "-f", "csv", *PEAKS)
    assert batch.exit_code == 0, batch.stderr
    (row,) = csv.DictReader(io.StringIO(batch.stdout))
    # 3x3 64->256 on 56x56 without padding: output 54x54; FLOPs 2·256·54·54·576 = 859,963,392;
    # bytes (200,704 + 147,712 + 746,496)·4 = 4,379,648
    assert (row["bound"], row["bytes_moved"]) == ("compute", "4379648")
    assert float(row["time_lower_bound_s"]) == pytest.approx(859_963_392 / 1e11)


ERRORS = [
    (["--peak-gflops", "-1", "--peak-gbps", "20"], "--peak-gflops -1 must be a positive number"),
    (["--peak-gflops", "100", "--peak-gbps", "0"], "--peak-gbps 0 must be a positive number"),
    (["--peak-gflops", "100"], "--peak-gflops needs --peak-gbps too (give both or neither)"),
    (["--roofline", "--device", "tpu"], "--device 'tpu' must be cpu, cuda, cuda:N or mps"),
    (
        ["--recalibrate", *PEAKS],
        "--recalibrate measures the peaks: it does not go with --peak-gflops/--peak-gbps",
    ),
]


@pytest.mark.parametrize("extra, message", ERRORS, ids=[m for _, m in ERRORS])
def test_bad_roofline_options_are_one_line_exit_2(cli, extra: list[str], message: str) -> None:
    result = cli("conv", "--in", "3", "--out", "4", "--size", "8", *extra)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"error: {message}\n")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_one_line_exit_2(cli) -> None:
    result = cli("conv", "--in", "3", "--out", "4", "--roofline", "--device", "cuda")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == "error: --device cuda: no CUDA device is available here\n"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_roofline_and_time(cli) -> None:
    report = cli.json(
        "conv", "--in", "16", "--out", "16", "--size", "32", "--time", "--device", "cuda", *PEAKS
    )
    assert report["device"]["name"] == "cuda"
    assert report["timing"]["synchronized"] is True
    assert report["timing"]["cudnn_benchmark"] in (True, False)
    assert report["layers"][0]["roofline"]["time_s"] > 0


def test_calibrated_path_announces_measures_once_and_caches(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str]] = []

    def fake(device: str, dtype: str, *, budget_s: float = 3.0):
        from convcalc.core.roofline import Peaks

        calls.append((device, dtype))
        return Peaks(5e10, 1e10, device, dtype, torch.get_num_threads(), True, "fake", "m")

    monkeypatch.setattr(calibrate, "measure_peaks", fake)
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    args = ["conv", "--in", "3", "--out", "4", "--size", "8", "--roofline", "-f", "json"]
    first = cli(*args, env=env)
    assert first.exit_code == 0, first.stderr
    assert first.stderr.startswith("convcalc: calibrating cpu (") and "about 3 s" in first.stderr
    device = json.loads(first.stdout)["device"]
    assert device["measured"] is True and device["peak_flops_per_s"] == 5e10
    second = cli(*args, env=env)
    assert second.exit_code == 0 and second.stderr == ""
    assert json.loads(second.stdout)["device"]["source"].startswith("cached in ")
    assert calls == [("cpu", "float32")]
    third = cli(*args, "--recalibrate", env=env)
    assert third.exit_code == 0 and "calibrating" in third.stderr
    assert calls == [("cpu", "float32")] * 2
    assert (tmp_path / "convcalc" / "peaks.json").is_file()


def test_draw_roofline_table_json_and_svg(cli, tmp_path: Path) -> None:
    stack = "conv k3 out16; relu; dw k3; pw out32"
    data = cli.json("draw", "roofline", stack, "--input", "1,3,32,32", *PEAKS)
    names = [p["name"] for p in data["points"]]
    assert names == ["conv1", "relu1", "dw1.depthwise", "dw1.pointwise", "pw1"]
    assert data["ridge_flops_per_byte"] == 5.0
    relu = data["points"][1]
    assert relu["intensity"] == 0.0 and relu["bound"] == "memory"
    svg = tmp_path / "roof.svg"
    shown = cli("draw", "roofline", stack, "--input", "1,3,32,32", *PEAKS, "--svg", str(svg))
    assert shown.exit_code == 0, shown.stderr
    assert "/" in shown.stdout and "=" in shown.stdout and "ridge, 5.00 FLOP/B" in shown.stdout
    assert "no FLOPs: intensity 0, not drawn" in shown.stdout
    assert svg.read_text().startswith("<svg")


def test_draw_roofline_marks_never_repeat(cli) -> None:
    # 64 convs: marks 1-9, A-Z, a-z are the first 61 layers' own; layers 62-64 share "*" and the
    # legend says so (the marks used to cycle, so layer 36 was drawn as a second "1")
    stack = "; ".join(["conv k3 p1 out8"] * 64)
    shown = cli("draw", "roofline", stack, "--input", "1,8,16,16", *PEAKS)
    assert shown.exit_code == 0, shown.stderr
    legend = [line.split() for line in shown.stdout.splitlines() if " conv" in line]
    marks = [row[0] for row in legend if row[1].startswith("conv")]
    assert len(marks) == 64
    assert len(set(marks[:61])) == 61 and marks[61:] == ["*", "*", "*"]
    assert "every layer after layer 61 shares this mark" in shown.stdout
    assert "(given: --peak-gflops 100 --peak-gbps 20)" in shown.stdout


def test_model_time_with_no_module_timed_alone_says_so(cli, tmp_path: Path) -> None:
    # a module whose forward takes a tensor and a number: it cannot be timed alone on zeros of
    # its input (the number is not recorded), and it is the only row: the timing line says
    # nothing was timed (this was exit 3). (nn.MultiheadAttention, once the example here, is
    # timed on its query, key and value now: tests/test_timefix.py)
    source = tmp_path / "mha.py"
    source.write_text(
        "import torch\n"
        "from torch import nn\n"
        "class Repeat(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.w = nn.Parameter(torch.ones(64, 64))\n"
        "    def forward(self, x, times):\n"
        "        for _ in range(times):\n"
        "            x = x @ self.w\n"
        "        return x\n"
        "class OnlyMHA(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.a = Repeat()\n"
        "    def forward(self, x):\n"
        "        return self.a(x, 2)\n"
    )
    shown = cli("model", f"{source}:OnlyMHA", "--input", "2,10,64", "--time")
    assert shown.exit_code == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    assert "timing: no module with a row could be timed alone (see the notes)" in text
    assert "a: not timed alone on zeros of (2, 10, 64)" in text
    data = cli.json("model", f"{source}:OnlyMHA", "--input", "2,10,64", "--time")
    assert data["timing"]["skipped"].startswith("no module with a row could be timed")
