"""The behaviour each speed change relies on, kept by tests (the timings themselves live in
bench/speed.py and docs/benchmarks.md, not in tests)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def run_app(args: list[str], modules: list[str]) -> list[bool]:
    """Run the CLI in a fresh interpreter; which of ``modules`` ended up imported."""
    code = (
        "import sys\nfrom convcalc.cli.app import app\n"
        f"try:\n    app({args!r})\nexcept SystemExit:\n    pass\n"
        f"sys.stderr.write(repr([m in sys.modules for m in {modules!r}]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return eval(out.stderr.strip().splitlines()[-1])  # noqa: S307 - our own repr of bools


@pytest.mark.parametrize("args", [["--help"], ["conv", "--help"], ["--version"]])
def test_help_loads_neither_torch_nor_rich_nor_pydantic(args: list[str]) -> None:
    # plain click help: Typer's Rich help would load rich.markdown and friends
    assert run_app(args, ["torch", "fvcore", "rich.console", "pydantic"]) == [False] * 4


def test_formula_only_loads_no_torch() -> None:
    args = ["conv", "--in", "64", "--out", "256", "-p", "1", "--formula-only", "--json"]
    assert run_app(args, ["torch", "fvcore", "rich.console"]) == [False, False, False]


def test_a_report_does_not_load_torch_dynamo() -> None:
    # torch's FlopCounterMode would import torch._dynamo (~1 s): convcalc's dispatch counter
    # applies the same registered formulas without it
    args = ["conv", "--in", "8", "--out", "8", "--size", "16", "--json"]
    assert run_app(args, ["torch", "torch._dynamo"]) == [True, False]


def test_json_reports_load_no_rich() -> None:
    args = ["conv", "--in", "8", "--out", "8", "--size", "16", "--json"]
    assert run_app(args, ["rich.console"]) == [False]


def test_console_script_flushes_before_leaving_early() -> None:
    # after torch is loaded the console script exits with os._exit (skipping ~0.6 s of
    # teardown); everything written must still arrive, also through a pipe
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "convcalc",
            "stack",
            "--arch",
            "resnet18",
            "--formula-only",
            "--format",
            "jsonl",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert rows[-1]["kind"] == "total" and rows[-1]["params"] == 11_689_512
    measured = subprocess.run(
        [
            sys.executable,
            "-m",
            "convcalc",
            "conv",
            "--in",
            "4",
            "--out",
            "4",
            "--size",
            "8",
            "--json",
            "--expect",
            "total.params=0",
        ],
        capture_output=True,
        text=True,
    )
    assert measured.returncode == 1
    assert json.loads(measured.stdout)["total"]["params"] == 148
    assert measured.stderr == "expectation failed: total.params = 0, got 148\n"


def test_batch_measures_on_the_meta_device_by_default(cli) -> None:
    result = cli("batch", "-", input='{"in": 3, "out": 4, "size": 8}\n')
    assert json.loads(result.stdout)["measured_on"] == "meta"


def test_formula_only_claims_no_agreement(cli) -> None:
    report = cli.json("dw", "--in", "8", "--out", "16", "--formula-only")
    assert report["agree"] is None
    assert [layer["agree"] for layer in report["layers"]] == [None, None]
    assert report["layers"][0]["params"] == {"measured": None, "formula": 80}
