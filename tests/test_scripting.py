"""Scripting and CI: every output format parsed, --get, --expect, --strict, colour, batch sweeps
(bad rows, --fail-fast, interruption), tool conventions and the Python API."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys

import pytest

from convcalc import engine
from convcalc.cli.exits import ExitStatus

DW = ("dw", "--in", "64", "--out", "256")


def test_exit_statuses_are_one_enum() -> None:
    assert {s.name: int(s) for s in ExitStatus} == {
        "OK": 0,
        "CHECK_FAILED": 1,
        "INVALID_INPUT": 2,
        "INTERNAL_ERROR": 3,
        "INTERRUPTED": 130,
    }


def test_jsonl_is_a_row_per_layer_then_the_total(cli) -> None:
    result = cli(*DW, "--format", "jsonl")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["kind"] for row in rows] == ["layer", "layer", "total"]
    assert [row["name"] for row in rows[:2]] == ["depthwise", "pointwise"]
    assert rows[-1]["params"] == 17_280 and rows[-1]["agree"] is True


def test_csv_is_a_row_per_layer_then_the_total(cli) -> None:
    result = cli(*DW, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["kind"] for row in rows] == ["layer", "layer", "total"]
    assert [int(row["params"]) for row in rows] == [640, 16_640, 17_280]
    assert rows[0]["params_formula"] == "640"
    assert rows[1]["output_shape"] == "1x256x224x224"
    assert rows[2]["agree"] == "true"


def test_markdown_is_a_table(cli) -> None:
    text = cli(*DW, "--format", "markdown").stdout
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert lines[0].startswith("| layer | op | output shape | params |")
    assert "| `depthwise` | conv | 1×64×224×224 | 640 |" in lines[2]
    assert lines[-1].startswith("| **total** |  | 1×256×224×224 | 17,280 |")


def test_get_prints_one_value(cli) -> None:
    assert cli(*DW, "--get", "total.params").stdout == "17280\n"
    assert cli(*DW, "--get", "layers.1.spec.kernel_size").stdout == "[1, 1]\n"
    assert cli(*DW, "--get", "agree").stdout == "true\n"


def test_get_a_missing_path_lists_the_valid_ones(cli) -> None:
    result = cli(*DW, "--get", "total.parms")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.startswith(
        "error: --get total.parms: total has no 'parms'; valid: params, "
    )
    result = cli(*DW, "--get", "layers.7")
    assert result.stderr == "error: --get layers.7: layers is a list of 2; use an index 0..1\n"


def test_expectations_met_and_unmet(cli) -> None:
    met = cli(
        *DW,
        "--json",
        "--expect",
        "total.params=17280",
        "--expect",
        "total.macs<=1e9",
        "--expect",
        "total.output_shape=1x256x224x224",
        "--expect",
        "agree=true",
    )
    assert met.exit_code == 0 and met.stderr == ""
    assert json.loads(met.stdout)["total"]["params"] == 17_280
    unmet = cli(
        *DW,
        "--json",
        "--expect",
        "total.params=17281",
        "--expect",
        "total.macs<1e6",
        "--expect",
        "total.output_shape=1x256x112x112",
    )
    assert unmet.exit_code == 1
    assert json.loads(unmet.stdout)["total"]["params"] == 17_280  # the output is still written
    assert unmet.stderr.splitlines() == [
        "expectation failed: total.params = 17281, got 17280",
        "expectation failed: total.macs < 1000000, got 850984960",
        "expectation failed: total.output_shape = [1, 256, 112, 112], got [1, 256, 224, 224]",
    ]


@pytest.mark.parametrize(
    "expectation, message",
    [
        (
            "total.params",
            "error: --expect 'total.params' must be PATH OP VALUE, like "
            "total.params=17280 or 'total.macs<=1e9' (OP: = == != < <= > >=)\n",
        ),
        ("total.nope=3", "error: --expect total.nope: total has no 'nope'; valid: "),
    ],
)
def test_malformed_expectation_is_invalid_input(cli, expectation: str, message: str) -> None:
    result = cli(*DW, "--expect", expectation)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.startswith(message)


def test_strict_fails_on_a_disagreement(cli, monkeypatch) -> None:
    from convcalc.measure import run as measure

    real = measure.probe_receptive_field
    monkeypatch.setattr(
        measure, "probe_receptive_field", lambda spec, size=None: tuple(v + 1 for v in real(spec))
    )
    relaxed = cli("conv", "--in", "3", "--out", "4", "--size", "8", "--json")
    assert relaxed.exit_code == 0
    strict = cli("conv", "--in", "3", "--out", "4", "--size", "8", "--json", "--strict")
    assert strict.exit_code == 1
    assert strict.stderr == (
        "measured and formula disagree (--strict): conv: receptive_field, "
        "conv: cumulative_receptive_field\n"
    )


def test_no_colour_when_piped_or_asked(cli) -> None:
    ansi = re.compile(r"\x1b\[")
    assert not ansi.search(cli(*DW).stdout)
    assert not ansi.search(cli(*DW, "--no-color").stdout)
    assert not ansi.search(cli(*DW, env={"NO_COLOR": "1"}).stdout)
    # piped: no wrapping, a table row is one line however long
    assert any(
        len(line) > 150
        for line in cli("stack", "--arch", "resnet18", "--measure-on", "meta").stdout.splitlines()
    )


# --- conventions ---------------------------------------------------------------------------


def test_conventions_by_hand(cli) -> None:
    # Conv2d(3, 16, k5) on 28x28: MACs 691,200; bias adds 16·24·24 = 9,216; 1,216 params
    # over 576 output positions: torchinfo 1,216·576 = 700,416 = MACs + bias
    report = cli.json(
        "conv", "--in", "3", "--out", "16", "-k", "5", "--size", "28", "--conventions"
    )
    totals = {tool: entry["total"] for tool, entry in report["conventions"].items()}
    assert totals == {
        "fvcore": 691_200,
        "torch FlopCounterMode": 1_382_400,
        "torchinfo": 700_416,
        "ptflops": 700_416,
        "thop": 691_200,
        "calflops / DeepSpeed": 1_382_400 + 9_216,
    }


def test_conventions_for_a_transposed_conv(cli) -> None:
    # ConvTranspose2d(16, 8, k4, s2, p1) on 32x32: MACs 16·32·32·8·16 = 2,097,152, but
    # torchinfo and ptflops count per output position: 2,056 params × 64·64 = 8,421,376
    report = cli.json(
        "conv",
        "--in",
        "16",
        "--out",
        "8",
        "-k",
        "4",
        "-s",
        "2",
        "-p",
        "1",
        "--transpose",
        "--size",
        "32",
        "--conventions",
    )
    tools = report["conventions"]
    assert tools["fvcore"]["total"] == 2_097_152
    assert tools["torchinfo"]["total"] == tools["ptflops"]["total"] == 8_421_376


# --- batch ---------------------------------------------------------------------------------

SWEEP = (
    "\n".join(
        [
            '{"in": 3, "out": 16, "kernel": 5, "size": 28}',
            '{"in": 64, "out": 16, "groups": 3}',
            "not json",
            '{"op": "dw", "in": 8, "out": 16, "size": 16}',
            '{"op": "conv_transpose", "in": 4, "out": 2, "kernel": 4, "stride": 2, "padding": 1, '
            '"size": 8}',
        ]
    )
    + "\n"
)


def test_batch_jsonl_keeps_order_and_survives_bad_rows(cli) -> None:
    result = cli("batch", "-", input=SWEEP)
    assert result.exit_code == 2
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["line"] for row in rows] == [1, 2, 3, 4, 5]
    assert rows[0]["total"]["params"] == 1_216
    assert rows[1]["error"] == "layer 1 (conv1): groups 3 must divide input channels 64"
    assert rows[2]["error"].startswith("not JSON: ")
    assert rows[3]["total"]["params"] == (8 * 9 + 8) + (16 * 8 + 16)
    assert rows[4]["total"]["output_shape"] == [1, 2, 16, 16]
    assert result.stderr == "2 of 5 specs failed; see their error records\n"


def test_batch_csv_in_and_out(cli, tmp_path) -> None:
    path = tmp_path / "sweep.csv"
    path.write_text("in,out,kernel,stride,padding,size\n3,16,5,1,1,28\n3,16,5,2,2,28\n")
    result = cli("batch", str(path), "--format", "csv")
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["line"] for row in rows] == ["2", "3"]
    assert [row["output_shape"] for row in rows] == ["1x16x26x26", "1x16x14x14"]  # seed 001


def test_batch_fail_fast(cli) -> None:
    result = cli("batch", "-", "--fail-fast", input=SWEEP)
    assert result.exit_code == 2
    assert [json.loads(line)["line"] for line in result.stdout.splitlines()] == [1, 2]


def test_interrupted_batch_keeps_its_finished_rows(cli, monkeypatch) -> None:
    real = engine.analyze_network
    calls = []

    def interrupt_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "analyze_network", interrupt_third)
    # five different specs: an exact repeat reuses its first report without analysing again
    sweep = "\n".join(f'{{"in": 2, "out": 4, "size": {8 + n}}}' for n in range(5))
    result = cli("batch", "-", input=sweep)
    assert result.exit_code == 130
    assert [json.loads(line)["line"] for line in result.stdout.splitlines()] == [1, 2]


# --- the Python API ------------------------------------------------------------------------


def test_python_api() -> None:
    import convcalc

    report = convcalc.analyze(64, 256, kernel=3, padding=1)
    assert report["total.params"] == 147_712 and report.agree
    assert report.to_dict()["layers"][0]["macs"] == {
        "measured": 7_398_752_256,
        "formula": 7_398_752_256,
    }
    stack = convcalc.analyze_stack("conv k3 s2 out8; maxpool k2", input=(1, 3, 32, 32))
    assert stack["total.receptive_field"] == [5, 5]
    with pytest.raises(convcalc.SpecError, match="groups 3 must divide in_channels 64"):
        convcalc.analyze(64, 16, groups=3)
    with pytest.raises(convcalc.ConvcalcError):
        convcalc.analyze_stack("frobnicate", input=(1, 3, 8, 8))


def test_python_api_module() -> None:
    import torch

    import convcalc

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3))
    report = convcalc.analyze_module(net, (1, 3, 10, 10))
    assert report["total.params"] == sum(p.numel() for p in net.parameters())
    assert report["total.receptive_field"] == [5, 5]


def test_import_convcalc_loads_no_torch() -> None:
    code = "import sys, convcalc; print('torch' in sys.modules, 'rich' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
