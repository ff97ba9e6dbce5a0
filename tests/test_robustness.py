"""Bad input found by a new-user pass over every command: each is a one-line error (exit 2) or
an error record, never a crash (exit 3) and never a silently wrong answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import convcalc

DATA = Path(__file__).parent / "data"


def one_line_error(result, start: str) -> None:
    assert (result.exit_code, result.stdout) == (2, ""), (result.exit_code, result.stderr)
    assert result.stderr.startswith(f"error: {start}"), result.stderr
    assert result.stderr.count("\n") == 1


def test_files_that_are_not_utf8(cli, tmp_path: Path) -> None:
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    one_line_error(cli("stack", str(binary)), f"{binary}: not UTF-8 text")
    sweep = tmp_path / "bin.jsonl"
    sweep.write_bytes(b"\xff\xfe\x00garbage")
    one_line_error(cli("batch", str(sweep)), f"{sweep}: not UTF-8 text")


@pytest.mark.parametrize("line", ["leakyrelu slope=abc", "conv out8 act=leakyrelu slope=x"])
def test_a_slope_that_is_not_a_number(cli, line: str) -> None:
    one_line_error(cli("stack", line, "--input", "1,3,8,8"), "layer 1 (")


def test_batch_keeps_going_past_values_of_the_wrong_kind(cli) -> None:
    sweep = "\n".join(
        [
            '{"op": "leakyrelu", "in": 3, "slope": "abc", "size": 8}',
            '{"in": 3, "out": 8, "size": ""}',
            '{"in": "x", "out": 8, "size": 8}',
            '{"in": 3, "out": 8, "bias": "maybe", "size": 8}',
            '{"in": 3, "out": 8, "size": 8}',
        ]
    )
    result = cli("batch", "-", input=sweep)
    assert result.exit_code == 2
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [("error" in row) for row in rows] == [True, True, True, True, False]
    assert rows[0]["error"] == "layer 1 (leakyrelu1): slope 'abc' must be a number"
    assert rows[1]["error"].startswith("size '' must be a number")
    assert rows[2]["error"] == "in 'x' must be a whole number"
    assert rows[3]["error"] == "layer 1 (conv1): bias 'maybe' must be true or false"


def test_batch_csv_with_a_malformed_size(cli) -> None:
    result = cli(
        "batch", "-", "--format", "csv", input="in,out,kernel,padding,size\n3,8,3,1,8x\n3,8,3,1,8\n"
    )
    assert result.exit_code == 2
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows[0]["line"] == "2" and rows[0]["error"].startswith("size '8x' must be a number")
    assert rows[1]["line"] == "3" and rows[1]["error"] == "" and rows[1]["params"] == "224"


def test_unwritable_picture_files(cli) -> None:
    one_line_error(
        cli("draw", "conv", "--size", "8", "--svg", "/nonexistent/dir/x.svg"),
        "--svg /nonexistent/dir/x.svg: no such directory",
    )


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_file_system_refusing_the_picture_is_bad_input(cli, tmp_path: Path) -> None:
    # /proc takes no new files: the check opens the file as the draw would (it exited 3, an
    # internal error, after printing the table); a file that was not there is not left behind
    one_line_error(
        cli("draw", "conv", "--size", "8", "--html", "/proc/convcalc-x.html"),
        "--html /proc/convcalc-x.html: cannot write there (",
    )
    kept = tmp_path / "kept.svg"
    kept.write_text("old")
    fresh = tmp_path / "fresh.svg"
    bad = cli("draw", "conv", "--size", "8", "--svg", str(fresh), "--html", "/proc/x.html")
    assert bad.exit_code == 2 and not fresh.exists()
    assert cli("draw", "conv", "--size", "8", "--svg", str(kept)).exit_code == 0
    assert kept.read_text().startswith("<svg")
    # a link to a file not yet there stays a link; the drawing lands in its target (the check
    # once removed the link: it read a dangling link as no file)
    link = tmp_path / "link.svg"
    link.symlink_to(tmp_path / "target.svg")
    assert cli("draw", "conv", "--size", "8", "--svg", str(link)).exit_code == 0
    assert link.is_symlink() and (tmp_path / "target.svg").read_text().startswith("<svg")


@pytest.mark.parametrize(
    "line, params",
    [
        ("conv k3 out8 bn=no", 224),
        ("conv k3 out8 bn=off", 224),
        ("conv k3 out8 bn", 240),
        ("conv k3 out8 bias=no", 216),
        ("conv k3 out8 nobias", 216),
        ("conv k3 out8", 224),
    ],
)
def test_boolean_keys_are_read_as_booleans(cli, line: str, params: int) -> None:
    result = cli("stack", line, "--input", "1,3,8,8", "--formula-only", "--get", "total.params")
    assert result.stdout == f"{params}\n"


def test_boolean_keys_refuse_other_words(cli, tmp_path: Path) -> None:
    one_line_error(
        cli("stack", "conv k3 out8 bias=maybe", "--input", "1,3,8,8"),
        "layer 1 (conv1): bias 'maybe' must be true or false",
    )
    path = tmp_path / "s.yaml"
    path.write_text(
        "input: [1, 3, 7, 7]\nlayers:\n  - {op: maxpool, kernel: 2, ceil_mode: "
        '"false"}\n  - {op: conv, out: 4, bn: "false"}\n'
    )
    report = cli.json("stack", str(path), "--formula-only")
    assert report["total"]["output_shape"] == [1, 4, 1, 1]  # floor: 7 -> 3; conv k3: 1
    assert [layer["spec"]["op"] for layer in report["layers"]] == ["maxpool", "conv"]


def test_model_run_twice_prints_and_exits(cli, tmp_path: Path) -> None:
    path = tmp_path / "shared.py"
    path.write_text(
        "import sys\nfrom torch import nn\nprint('hello from import')\n"
        "class Shared(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.c = nn.Conv2d(4, 4, 3, padding=1)\n    def forward(self, x):\n"
        "        print('forward!')\n        return self.c(self.c(x))\n"
        "def leave():\n    sys.exit(0)\n"
    )
    result = cli("model", f"{path}:Shared", "--input", "1,4,8,8", "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)  # the model's prints went to stderr
    assert "forward!" in result.stderr
    (layer,) = report["layers"]
    assert layer["name"] == "c (×2)"
    assert layer["macs"] == {"measured": 2 * 4 * 64 * 36, "formula": 2 * 4 * 64 * 36}
    assert report["agree"] is True
    left = cli("model", f"{path}:leave")
    assert (left.exit_code, left.stdout) == (2, "")
    # the module's own print at import goes to stderr, then convcalc's one-line error
    assert left.stderr.splitlines() == [
        "hello from import",
        f"error: {path}:leave() called sys.exit(0)",
    ]


@pytest.mark.parametrize(
    "args, start",
    [
        (["--inverse-of", "garbage"], "--inverse-of 'garbage': one conv, like 'k3 s2 p1'"),
        (["--inverse-of", ""], "--inverse-of needs a conv"),
        (["--inverse-of", "maxpool k3 s2"], "--inverse-of 'maxpool k3 s2': one conv"),
        (["--inverse-of", "k3 s2 p1; k3 s2 p1"], "--inverse-of 'k3 s2 p1; k3 s2 p1': one conv"),
        (["--inverse-of", "k3 s2", "--target", "9"], "--target does not go with --inverse-of"),
    ],
)
def test_solve_inverse_of_refuses_what_it_cannot_solve(cli, args: list[str], start: str) -> None:
    one_line_error(cli("solve", "--size", "224", *args), start)


@pytest.mark.parametrize(
    "expectation",
    [
        "total.params>=",
        "total.params===",
        "total.params=[1,",
        "total.params=abc",
        "total.macs>total.params",
        "total.output_shape<5",
    ],
)
def test_malformed_expectations_are_invalid_input(cli, expectation: str) -> None:
    one_line_error(
        cli("conv", "--in", "3", "--out", "8", "--size", "8", "--json", "--expect", expectation),
        "--expect ",
    )


def test_expectation_with_a_json_string(cli) -> None:
    result = cli(
        "conv", "--in", "3", "--out", "8", "--size", "8", "--json", "--expect", 'measured_on="cpu"'
    )
    assert result.exit_code == 0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: convcalc.analyze("a", 8), "in_channels 'a' must be an integer"),
        (lambda: convcalc.analyze(3, 8, kernel=3.5), "kernel 3.5 must be an integer"),
        (lambda: convcalc.analyze(3, 8, kernel=True), "kernel True must be an integer"),
        (lambda: convcalc.analyze(3, 8, size=None), "size None must be an integer"),
        (lambda: convcalc.analyze(3, 8, bias="no"), "bias 'no' must be True or False"),
        (lambda: convcalc.analyze(3, 8, measure_on="x"), "measure_on 'x' must be one of"),
        (lambda: convcalc.analyze_stack("nonexist.yaml"), "nonexist.yaml: No such file"),
        (lambda: convcalc.analyze_module(5), "module 5 must be an nn.Module"),
        (lambda: convcalc.analyze_module("x:y", input="abc"), "input 'abc' must be positive"),
    ],
)
def test_python_api_raises_only_typed_errors(call, message: str) -> None:
    with pytest.raises(convcalc.SpecError) as caught:
        call()
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    "args, start",
    [
        (["dw", "--in", "64", "--out", "256", "--get", ""], "--get needs a path"),
        (
            ["conv", "--in", "3", "--out", "3", "--formula-only", "--measure-on", "cpu"],
            "--measure-on cpu measures: it does not go with --formula-only",
        ),
        (["stack", ""], "the stack is empty"),
        (
            ["stack", "flatten; conv k3", "--input", "1,3,8,8"],
            "layer 2 (conv1): conv needs a spatial input, but its input is flat (1x192)",
        ),
        (
            ["conv", "--in", "99999999999999999999999", "--out", "8"],
            "--in 99999999999999999999999 is too large (at most 2**31 - 1)",
        ),
    ],
)
def test_more_one_line_errors(cli, args: list[str], start: str) -> None:
    one_line_error(cli(*args), start)


def test_stack_file_without_an_input(cli, tmp_path: Path) -> None:
    path = tmp_path / "noinput.yaml"
    path.write_text("layers:\n  - {op: conv, out: 4}\n")
    one_line_error(cli("stack", str(path)), "noinput.yaml: no 'input' in the file")
    assert cli("stack", str(path), "--input", "1,3,8,8", "--formula-only").exit_code == 0


def test_given_peaks_ask_for_the_roofline_on_any_device(cli) -> None:
    # the README: giving the peaks asks for the roofline; --device cuda was refused without
    # --roofline spelt out (no GPU is needed: given peaks are not measured)
    import json

    args = ["pw", "--in", "8", "--out", "8", "--size", "8", "--device", "cuda"]
    peaks = ["--peak-gflops", "19500", "--peak-gbps", "1555", "--json"]
    given = json.loads(cli(*args, *peaks).stdout)
    spelt = json.loads(cli(*args, *peaks, "--roofline").stdout)
    assert given["device"]["name"] == "cuda" and given["device"] == spelt["device"]
    assert given["total"]["roofline"] == spelt["total"]["roofline"]
    one_line_error(cli(*args), "--device cuda is where --time runs and the roofline's peaks are")
