"""One library under both front ends: for every command, `--format json` is exactly the
`convcalc.library` call's `.to_dict()` (the CLI parses options, calls the library, writes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from convcalc import library
from convcalc.library import Measure

DATA = Path(__file__).parent / "data"
#: what differs between two runs of the same command: how long things took
VOLATILE = {"seconds", "measure_seconds", "latency_ms", "gflops_per_s", "timed_runs", "timing"}


def stable(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: stable(v) for k, v in data.items() if k not in VOLATILE}
    if isinstance(data, list):
        return [stable(v) for v in data]
    return data


CASES: list[tuple[list[str], Any]] = [
    (
        ["conv", "--in", "3", "--out", "8", "-k", "3", "-p", "1", "--size", "16"],
        lambda: library.conv(3, 8, kernel=3, padding=1, size=16),
    ),
    (
        ["dw", "--in", "8", "--out", "16", "--size", "12", "--bn", "--act", "relu"],
        lambda: library.dw(8, 16, size=12, block=library.Block(bn=True, act="relu")),
    ),
    (["pw", "--in", "8", "--out", "4", "--size", "8"], lambda: library.pw(8, 4, size=8)),
    (
        ["group", "--in", "8", "--out", "16", "-g", "4", "--size", "8"],
        lambda: library.group(8, 16, groups=4, size=8),
    ),
    (
        ["dilated", "--in", "4", "--out", "4", "-d", "3", "--size", "16"],
        lambda: library.dilated(4, 4, dilation=3, size=16),
    ),
    (
        ["transpose", "--in", "4", "--out", "2", "--size", "6"],
        lambda: library.transpose(4, 2, size=6),
    ),
    (["tconv", "--in", "4", "--out", "2", "--size", "6"], lambda: library.transpose(4, 2, size=6)),
    (["gdconv", "--in", "8", "--size", "7"], lambda: library.gdconv(8, size=7)),
    (
        ["compare", "--in", "8", "--out", "16", "-g", "2", "--size", "8"],
        lambda: library.compare(8, 16, groups=2, size=8),
    ),
    (
        ["stack", "conv k3 s2 out8; maxpool k2; pw out4", "--input", "1,3,32,32"],
        lambda: library.stack("conv k3 s2 out8; maxpool k2; pw out4", input=(1, 3, 32, 32)),
    ),
    (
        ["stack", "--arch", "alexnet", "--size", "96", "--formula-only"],
        lambda: library.stack(arch="alexnet", size=96, measure=Measure(formula_only=True)),
    ),
    (
        ["stack", str(DATA / "alexnet_head.yaml")],
        lambda: library.stack(str(DATA / "alexnet_head.yaml")),
    ),
    (
        ["model", f"{DATA / 'mynet.py'}:Net", "--input", "1,3,32,32"],
        lambda: library.model(f"{DATA / 'mynet.py'}:Net", (1, 3, 32, 32)),
    ),
    (
        ["solve", "--size", "224", "--target", "112", "-k", "3", "-s", "2"],
        lambda: library.solve(size=224, target=112, kernel=3, stride=2),
    ),
]


@pytest.mark.parametrize(
    "args, call", CASES, ids=lambda v: " ".join(v[:2]) if isinstance(v, list) else ""
)
def test_json_is_the_library_result(cli, args: list[str], call: Any) -> None:
    result = cli(*args, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert stable(json.loads(result.stdout)) == stable(call().to_dict())


def test_draw_json_is_the_library_picture(cli) -> None:
    from convcalc.kinds import build_conv

    result = cli("draw", "conv", "-k", "3", "-d", "2", "--size", "7", "--format", "json")
    assert result.exit_code == 0, result.stderr
    picture = library.draw_conv(build_conv(in_channels=1, out_channels=1, kernel=3, dilation=2))
    data = json.loads(result.stdout)
    assert data["frames"] == picture.to_dict()["frames"]
    stack = cli("draw", "stack", "--arch", "resnet18", "--json")
    assert (
        json.loads(stack.stdout)["growth"]
        == library.draw_stack(arch="resnet18").to_dict()["growth"]
    )


def test_batch_records_are_the_library_sweep(cli) -> None:
    specs = '{"in": 3, "out": 8, "size": 8}\n{"in": 4, "out": 4, "kernel": 1, "size": 6}\n'
    result = cli("batch", "-", input=specs)
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    records = [record.to_dict() for record in library.sweep(specs)]
    assert stable(lines) == stable(records)


@pytest.mark.parametrize(
    "args, option",
    [
        (["model", "x.py:Net", "--size", "32"], "--size"),
        (["model", "x.py:Net", "--batch", "2"], "--batch"),
        (["model", "x.py:Net", "--formula-only"], "--formula-only"),
        (["solve", "--size", "8", "--target", "8", "--strict"], "--strict"),
        (["solve", "--size", "8", "--target", "8", "--detail"], "--detail"),
        (["stack", "--arch", "resnet18", "--kernel", "3"], "--kernel"),
        (["batch", "x.jsonl", "--optimizer", "sgd"], "--optimizer"),
        (["draw", "conv", "--strict"], "--strict"),
    ],
)
def test_an_option_a_command_does_not_use_is_a_usage_error(cli, args, option) -> None:
    result = cli(*args)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.startswith("error: No such option") and option in result.stderr


def test_grid_options_without_a_grid_are_refused(cli, tmp_path) -> None:
    specs = tmp_path / "x.jsonl"
    specs.write_text('{"in": 3, "out": 4, "size": 8}\n')
    result = cli("batch", str(specs), "--size", "8")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == "error: --size goes with --grid\n"


def test_choices_are_listed_in_help(cli) -> None:
    text = cli("conv", "--help").stdout
    assert "<table|json|jsonl|csv|markdown>" in text
    assert "<auto|cpu|meta>" in text
    for section in ("Layer options:", "Input options:", "Measurement options:", "Output options:"):
        assert section in text


def test_solve_exits_1_when_torch_does_not_confirm_an_answer(cli, monkeypatch) -> None:
    # exit 2 means invalid input; an answer the real layer contradicts is a failed check
    from convcalc.measure import verify

    monkeypatch.setattr(verify, "verify_answers", lambda *args: [False] * len(args[-1]))
    result = cli("solve", "--size", "224", "--target", "112", "-k", "3", "-s", "2", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["agree"] is False
    assert "torch gave another size than the formula for Conv2d(k=3, s=2, p=1)" in result.stderr


@pytest.mark.parametrize(
    "args, line",
    [
        (
            ["stack", "conv k3 out8", "--input", "1,3,32,32", "--size", "16"],
            "error: --size does not go with --input: an inline stack's input is either --input "
            "or --batch/--in/--size/--dims\n",
        ),
        (
            ["conv", "--in", "3", "--out", "4", "--json", "--format", "csv"],
            "error: --json and --format csv disagree: give one\n",
        ),
    ],
)
def test_options_that_contradict_each_other_are_refused(cli, args, line) -> None:
    result = cli(*args)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", line)
