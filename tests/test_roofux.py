"""The roofline's honesty and legibility, from a new-user trial (roofux): the JSONL lines carry
the device, a view moves no bytes, a calibration under load is said and not cached, a measured
time that beats the bound is explained, and the picture's legend keeps its numbers at any
width."""

from __future__ import annotations

import json

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
