"""`convcalc conv` through Typer's runner: the seed cases, the JSON contract, every validation rule,
the golden table, and what --help and --version must not import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from convcalc.measure import run as measure

from .cases import CASES, Case, cli_args
from .seed_cases import SEED_CHAINS, STANDARD_MEMORY_MIB, SeedChain


@pytest.mark.parametrize("chain", SEED_CHAINS, ids=lambda c: c.id)
def test_seed_case_through_the_cli(cli, chain: SeedChain) -> None:
    """Each layer of the document's chain, fed the measured output of the one before."""
    shape = chain.input_shape
    total_params = 0
    for layer in chain.layers:
        size = "x".join(map(str, shape[2:]))
        report = cli.json(*("conv", *layer.options, "--size", size, "--batch", str(shape[0])))
        (result,) = report["layers"]
        assert report["input_shape"] == list(shape)
        assert result["output_shape"] == {
            "measured": list(layer.output_shape),
            "formula": list(layer.output_shape),
        }
        assert result["params"] == {"measured": layer.params, "formula": layer.params}
        assert report["agree"] is True
        total_params += report["total"]["params"]
        shape = tuple(result["output_shape"]["measured"])
    assert shape == chain.output_shape
    assert total_params == chain.params


def test_standard_case_memory_matches_torchsummary(cli) -> None:
    report = cli.json("conv", "--in", "64", "--out", "256", "-k", "3", "-p", "1")
    memory = report["layers"][0]["memory_bytes"]
    for key, mib in STANDARD_MEMORY_MIB.items():
        assert round(memory[key] / 2**20, 2) == mib
    assert report["layers"][0]["memory_bytes_formula"] == memory


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_hand_derived_case_through_the_cli(cli, case: Case) -> None:
    report = cli.json(*cli_args(case))
    (layer,) = report["layers"]
    for key, expected in [
        ("output_shape", list(case.output_shape)),
        ("params", case.params),
        ("macs", case.macs),
        ("flops", case.flops),
        ("receptive_field", list(case.receptive_field)),
    ]:
        assert layer[key] == {"measured": expected, "formula": expected}, key
    assert layer["bias_adds"] == case.bias_adds
    assert report["total"]["receptive_field"] == list(case.receptive_field)


def test_json_contract(cli) -> None:
    report = cli.json(
        "conv",
        "--in",
        "64",
        "--out",
        "64",
        "-k",
        "3",
        "-p",
        "same",
        "-d",
        "2",
        "-g",
        "64",
        "--size",
        "56x80",
        "--batch",
        "8",
    )
    assert set(report) >= {"convcalc_version", "input_shape", "layers", "total", "agree"}
    assert report["input_shape"] == [8, 64, 56, 80]
    (layer,) = report["layers"]
    assert layer["name"] == "conv"
    assert layer["spec"] == {
        "op": "conv",
        "dims": 2,
        "in_channels": 64,
        "out_channels": 64,
        "kernel_size": [3, 3],
        "stride": [1, 1],
        "padding": "same",
        "dilation": [2, 2],
        "groups": 64,
        "bias": True,
        "output_padding": [0, 0],
        "padding_mode": "zeros",
    }
    assert layer["input_shape"] == [8, 64, 56, 80]
    for key in ("output_shape", "params", "macs", "flops", "receptive_field"):
        assert set(layer[key]) == {"measured", "formula"}
    assert set(layer["memory_bytes"]) >= {"input", "output", "params"}
    assert isinstance(layer["bias_adds"], int)
    assert layer["agree"] is True
    assert set(report["total"]) >= {"params", "macs", "flops", "output_shape", "receptive_field"}
    assert report["total"]["output_shape"] == [8, 64, 56, 80]
    assert report["agree"] is True


def test_json_short_form_and_transposed_spec(cli) -> None:
    result = cli(
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
        "--json",
    )
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["layers"][0]["spec"]["op"] == "conv_transpose"
    assert report["total"]["output_shape"] == [1, 8, 64, 64]


def test_huge_layer_is_measured_on_the_meta_device(cli) -> None:
    # 64x512x8192x8192 float32 is 8 TiB of input: shapes and counts come from the meta device
    report = cli.json(
        "conv",
        "--in",
        "512",
        "--out",
        "512",
        "-k",
        "3",
        "-p",
        "1",
        "--size",
        "8192",
        "--batch",
        "64",
    )
    assert report["measured_on"] == "meta"
    (layer,) = report["layers"]
    assert layer["output_shape"]["measured"] == [64, 512, 8192, 8192]
    assert layer["macs"]["measured"] == 64 * 512 * 8192 * 8192 * 512 * 9
    assert layer["receptive_field"]["measured"] == [3, 3]
    assert report["agree"] is True
    assert "meta" in report["sources"]["output_shape"]


def test_measure_on_forces_the_device(cli) -> None:
    args = ("conv", "--in", "3", "--out", "4", "--size", "8")
    assert cli.json(*args, "--measure-on", "meta")["measured_on"] == "meta"
    assert cli.json(*args, "--measure-on", "cpu")["measured_on"] == "cpu"


VALIDATION = [
    (["--in", "64", "--out", "16", "-g", "3"], "--groups 3 must divide --in 64"),
    (["--in", "6", "--out", "16", "-g", "3"], "--groups 3 must divide --out 16"),
    (["--in", "6", "--out", "6", "-g", "0"], "--groups 0 must be a positive integer"),
    (["--in", "0", "--out", "3"], "--in 0 must be a positive integer"),
    (["--in", "3", "--out", "-1"], "--out -1 must be a positive integer"),
    (["--in", "3", "--out", "3", "--size", "0"], "--size 0 must be positive"),
    (["--in", "3", "--out", "3", "--batch", "0"], "--batch 0 must be a positive integer"),
    (["--in", "3", "--out", "3", "-k", "0"], "--kernel 0 must be positive"),
    (["--in", "3", "--out", "3", "-s", "0"], "--stride 0 must be positive"),
    (["--in", "3", "--out", "3", "-d", "0"], "--dilation 0 must be positive"),
    (["--in", "3", "--out", "3", "-p", "-1"], "--padding -1 must not be negative"),
    (
        ["--in", "3", "--out", "3", "-k", "3x3x3"],
        "--kernel 3x3x3 has 3 values; --dims 2 takes 1 or 2",
    ),
    (
        ["--in", "3", "--out", "3", "--dims", "1", "--size", "8x8"],
        "--size 8x8 has 2 values; --dims 1 takes 1",
    ),
    (
        ["--in", "3", "--out", "3", "-k", "3,x"],
        "--kernel '3,x' is not a number or one number per dimension (like 3x5)",
    ),
    (
        ["--in", "3", "--out", "3", "-p", "full"],
        "--padding 'full' must be a number, one per dimension (like 1x2), 'same' or 'valid'",
    ),
    (["--in", "3", "--out", "3", "--dims", "4"], "--dims 4 must be 1, 2 or 3"),
    (
        ["--in", "3", "--out", "3", "-k", "5", "-d", "3", "--size", "8"],
        "--kernel 5 with --dilation 3 spans 13, more than the padded input 8 (--size 8 + padding 0)"
        " (spatial dimension 1)",
    ),
    (
        ["--in", "3", "--out", "3", "-k", "5", "--size", "4", "--dims", "1"],
        "--kernel 5 with --dilation 1 spans 5, more than the padded input 4 (--size 4 + padding 0)",
    ),
    (
        ["--in", "3", "--out", "3", "-s", "2", "--output-padding", "2", "--transpose"],
        "--output-padding 2 must be smaller than --stride 2 or --dilation 1 (spatial dimension 1)",
    ),
    (
        ["--in", "3", "--out", "3", "--output-padding", "1"],
        "--output-padding 1 applies only with --transpose",
    ),
    (
        ["--in", "3", "--out", "3", "-p", "same", "-s", "2"],
        "--padding same needs --stride 1 (got 2): torch supports 'same' only for stride 1",
    ),
    (
        ["--in", "3", "--out", "3", "-p", "same", "--transpose"],
        "--padding same does not apply with --transpose: transposed convolutions take numeric "
        "padding only",
    ),
    (
        ["--in", "3", "--out", "3", "-p", "valid", "--transpose"],
        "--padding valid does not apply with --transpose: transposed convolutions take numeric "
        "padding only",
    ),
    (
        ["--in", "3", "--out", "3", "--padding-mode", "reflect", "--transpose"],
        "--padding-mode reflect does not apply with --transpose: torch supports only zeros",
    ),
    (
        ["--in", "3", "--out", "3", "--padding-mode", "mirror"],
        "--padding-mode 'mirror' must be one of zeros, reflect, replicate, circular",
    ),
    (
        ["--in", "3", "--out", "3", "-p", "3", "--padding-mode", "reflect", "--size", "3"],
        "--padding 3 must be smaller than --size 3 with --padding-mode reflect"
        " (spatial dimension 1)",
    ),
    (
        ["--in", "3", "--out", "3", "-p", "4", "--padding-mode", "circular", "--size", "3"],
        "--padding 4 must not exceed --size 3 with --padding-mode circular (spatial dimension 1)",
    ),
    (
        ["--in", "3", "--out", "3", "-p", "5", "--transpose", "--size", "2", "--dims", "1"],
        "--padding 5 leaves no output: (2-1)*1 - 2*5 + 3 + 0 = -6",
    ),
    (
        ["--in", "3", "--out", "3", "--dtype", "float64"],
        "--dtype 'float64' must be one of float32, float16, bfloat16",
    ),
    (
        ["--in", "3", "--out", "3", "--format", "yaml"],
        "--format 'yaml' must be one of table, json, jsonl, csv, markdown",
    ),
    (
        ["--in", "3", "--out", "3", "--measure-on", "gpu"],
        "--measure-on 'gpu' must be one of auto, cpu, meta",
    ),
    (
        ["--in", "3", "--out", "3", "--size", "2000000000", "--batch", "2000000000"],
        "--in 3, --size 2000000000 and --batch 2000000000: the input has more than 2**63 "
        "elements, beyond what torch can index",
    ),
    # what click itself rejects: also one line, exit 2
    (["--out", "3"], "Missing option '--in'."),
    (
        ["--in", "3", "--out", "3", "--bogus"],
        "No such option: --bogus (Possible options: --bias, --groups, --out)",
    ),
]


@pytest.mark.parametrize("args, message", VALIDATION, ids=[m for _, m in VALIDATION])
def test_bad_input_is_one_line_on_stderr_and_exit_2(cli, args: list[str], message: str) -> None:
    result = cli("conv", *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"error: {message}\n"


def test_non_integer_option_is_one_line(cli) -> None:
    result = cli("conv", "--in", "abc", "--out", "3")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: Invalid value for '--in'")
    assert result.stderr.count("\n") == 1


def test_what_torch_rejects_after_validation_is_reported_the_same_way(cli, monkeypatch) -> None:
    def reject(*args, **kwargs):
        raise RuntimeError("Given groups=1, weight of size [3, 3, 3, 3], expected input ...\nmore")

    monkeypatch.setattr(measure, "build_layer", reject)
    result = cli("conv", "--in", "3", "--out", "3", "--size", "8")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        "error: torch rejected the layer: Given groups=1, weight of size [3, 3, 3, 3], "
        "expected input ...\n"
    )


def test_golden_table(cli, golden) -> None:
    result = cli("conv", "--in", "3", "--out", "16", "-k", "5", "--size", "28")
    assert result.exit_code == 0
    assert result.stderr == ""
    golden("conv_3_16_k5_28.txt", result.stdout)


def test_disagreement_is_shown_not_hidden(cli, monkeypatch) -> None:
    """If torch ever measured something else than the formula, both figures stay visible."""
    real = measure.probe_receptive_field
    monkeypatch.setattr(
        measure, "probe_receptive_field", lambda spec, size=None: tuple(v + 1 for v in real(spec))
    )
    result = cli("conv", "--in", "3", "--out", "4", "--size", "8")
    assert result.exit_code == 0
    assert "✗ differs" in result.stdout
    assert "receptive_field measured and formula differ" in result.stdout
    report = cli.json("conv", "--in", "3", "--out", "4", "--size", "8")
    assert report["layers"][0]["receptive_field"] == {"measured": [4, 4], "formula": [3, 3]}
    assert report["agree"] is False


def test_version_and_bare_command(cli) -> None:
    from convcalc import __version__

    result = cli("--version")
    assert (result.exit_code, result.stdout) == (0, f"convcalc {__version__}\n")
    assert cli().exit_code == 0


@pytest.mark.parametrize("args", [["--help"], ["conv", "--help"], ["--version"]])
def test_help_and_version_import_no_torch(args: list[str]) -> None:
    code = (
        "import sys\nfrom convcalc.cli.app import app\n"
        "try:\n    app(" + repr(args) + ")\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules, 'fvcore' in sys.modules, file=sys.stderr)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stderr.split()[-2:] == ["False", "False"], out.stderr
    assert out.stdout.strip()


def test_python_dash_m(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "convcalc", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("convcalc ")
