"""What a scripting user hit on a fresh clone: --get/--expect messages in JSON's words, what
`total` holds under --formula-only, the roofline options' errors, the inline stack grammar on
stdin. Each test failed before its fix."""

from __future__ import annotations

import json

import pytest

from convcalc.core.query import get_path, parse_expectation
from convcalc.errors import SpecError

SMALL = ("conv", "--in", "8", "--out", "8", "-k", "3", "--size", "8")
STEP = "total.memory_bytes.training_step"
TRAIN_WHY = "one real step is measured with --train (conv, the presets, stack)"


def test_get_past_a_null_says_null_and_why(cli) -> None:
    # without --train no step is run: the measured training step is null, and the report's
    # sources.memory_training_step says why (before: "is a value (None)", Python's word)
    result = cli(*SMALL, "--get", f"{STEP}.total")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        f"error: --get {STEP}.total: {STEP} is null ({TRAIN_WHY}), it has no 'total'\n"
    )


def test_get_prints_null_and_flags_as_json_does(cli) -> None:
    assert cli(*SMALL, "--get", STEP, "--get", "agree").stdout == "null\ntrue\n"


def test_formula_only_nulls_say_nothing_was_measured(cli) -> None:
    result = cli(*SMALL, "--formula-only", "--get", "layers.0.params.measured.x")
    assert result.stderr == (
        "error: --get layers.0.params.measured.x: layers.0.params.measured is null (nothing "
        "is measured with --formula-only), it has no 'x'\n"
    )


def test_expect_on_a_null_says_why(cli) -> None:
    unmet = cli(*SMALL, "--expect", f"{STEP}=3")
    assert unmet.exit_code == 1
    assert unmet.stderr == f"expectation failed: {STEP} = 3, got null ({TRAIN_WHY})\n"
    malformed = cli(*SMALL, "--expect", f"{STEP}>=3")
    assert (malformed.exit_code, malformed.stdout) == (2, "")
    assert malformed.stderr == (
        f"error: --expect {STEP}>=3: {STEP} is null ({TRAIN_WHY}), which cannot be compared "
        "with 3 by >=\n"
    )
    assert cli(*SMALL, "--expect", f"{STEP}=null").exit_code == 0


DATA = {"a": {"word": "conv", "flag": False, "none": None, "shape": [1, 8]}, "sources": {}}


@pytest.mark.parametrize(
    "path, message",
    [
        ("a.word.x", "a.word is the value \"conv\", it has no 'x'"),
        ("a.flag.x", "a.flag is the value false, it has no 'x'"),
        ("a.none.x", "a.none is null, it has no 'x'"),  # no source says why: nothing added
    ],
)
def test_values_in_get_errors_are_written_as_json(path: str, message: str) -> None:
    with pytest.raises(SpecError) as raised:
        get_path(DATA, path)
    assert str(raised.value).endswith(f"--get {path}: {message}")


@pytest.mark.parametrize(
    "expectation, message",
    [
        ("a.word=pool", 'expectation failed: a.word = "pool", got "conv"'),
        ("a.flag=true", "expectation failed: a.flag = true, got false"),
        ("a.shape=1x9", "expectation failed: a.shape = [1, 9], got [1, 8]"),
        ("a.none=1", "expectation failed: a.none = 1, got null"),
    ],
)
def test_values_in_expect_failures_are_written_as_json(expectation: str, message: str) -> None:
    assert parse_expectation(expectation).check(DATA) == message


def test_a_null_reason_comes_from_the_sources_only_when_they_say_not_measured() -> None:
    data = {
        "x": {"peak_inference": None, "macs": None},
        "sources": {
            "memory_peak_inference": "not measured: the copy failed: details",
            "macs": "fvcore's own handles",  # says how, not why not: no reason given
        },
    }
    assert parse_expectation("x.peak_inference=1").check(data) == (
        "expectation failed: x.peak_inference = 1, got null (the copy failed)"
    )
    assert parse_expectation("x.macs=1").check(data) == "expectation failed: x.macs = 1, got null"


def test_recalibrate_with_formula_only_names_recalibrate(cli) -> None:
    # before: "--roofline with --formula-only needs --peak-gflops and --peak-gbps", though the
    # user gave no --roofline
    for extra in ((), ("--roofline",)):
        result = cli(*SMALL, "--recalibrate", "--formula-only", *extra)
        assert (result.exit_code, result.stdout) == (2, "")
        assert result.stderr == (
            "error: --recalibrate: measuring the device's peaks needs torch; it cannot run "
            "with --formula-only\n"
        )


PEAK_OPTIONS = {
    "--roofline": (),
    "--recalibrate": (),
    "--peak-gflops": ("100",),
    "--peak-gbps": ("20",),
    "--time": (),
}
COMBINATIONS = [
    [name for bit, name in enumerate(PEAK_OPTIONS) if mask >> bit & 1]
    for mask in range(1, 2 ** len(PEAK_OPTIONS))
]


@pytest.mark.parametrize("given", COMBINATIONS, ids=" ".join)
def test_formula_only_with_the_roofline_options_errs_in_one_honest_line(cli, given) -> None:
    """Every combination of --formula-only with --roofline, --recalibrate, --peak-gflops,
    --peak-gbps and --time: runs (both peaks given: nothing to measure) or fails as invalid
    input, nothing on stdout, one line on stderr whose first option is one the user gave."""
    args = [part for name in given for part in (name, *PEAK_OPTIONS[name])]
    result = cli(*SMALL, "--formula-only", *args)
    runs = {"--peak-gflops", "--peak-gbps"} <= set(given) and not {"--recalibrate", "--time"} & set(
        given
    )
    if runs:
        assert result.exit_code == 0 and "roofline" in result.stdout
        return
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.startswith("error: --") and result.stderr.count("\n") == 1
    first = result.stderr.removeprefix("error: ").split()[0].rstrip(":")
    assert first in [*given, "--formula-only"], result.stderr


# conv k7 s2 p3 out64 on 3 channels: 64·3·7·7 + 64 = 9,472; maxpool: 0; dw k3 on 64 channels
# (out defaults to in): depthwise 64·1·3·3 + 64 = 640, pointwise 64·64 + 64 = 4,160;
# total 9,472 + 640 + 4,160 = 14,272
INLINE = "conv k7 s2 p3 out64; maxpool k3 s2 p1; dw k3"
INLINE_PARAMS = "14272\n"


@pytest.mark.parametrize(
    "text",
    [
        INLINE,  # before: "<stdin>: a stack file needs a 'layers' list (and an 'input')"
        INLINE.replace("; ", "\n") + "\n",  # one layer a line
        "\n  conv k7 s2 p3 out64\r\nmaxpool k3 s2 p1;\n\ndw k3",  # CRLF, blank lines, both
    ],
    ids=["semicolons", "lines", "mixed"],
)
def test_stack_reads_inline_layers_on_stdin(cli, text: str) -> None:
    result = cli(
        "stack", "-", "--formula-only", "--size", "32", "--get", "total.params", input=text
    )
    assert (result.exit_code, result.stdout, result.stderr) == (0, INLINE_PARAMS, "")


def test_stack_on_stdin_is_the_same_as_on_the_command_line(cli) -> None:
    args = ("--formula-only", "--size", "32", "--in", "3", "--json")
    piped = cli("stack", "-", *args, input=INLINE)
    argued = cli("stack", INLINE, *args)
    assert piped.exit_code == argued.exit_code == 0
    assert json.loads(piped.stdout)["layers"] == json.loads(argued.stdout)["layers"]
    assert json.loads(piped.stdout)["total"] == json.loads(argued.stdout)["total"]


@pytest.mark.parametrize(
    "text",
    [
        "input: [1, 3, 32, 32]\nlayers:\n  - {op: conv, out: 8, kernel: 3}\n",
        '{"input": [1, 3, 32, 32], "layers": [{"op": "conv", "out": 8, "kernel": 3}]}',
    ],
    ids=["yaml", "json"],
)
def test_stack_still_reads_a_stack_file_on_stdin(cli, text: str) -> None:
    # 8·3·3·3 + 8 = 224
    result = cli("stack", "-", "--formula-only", "--get", "total.params", input=text)
    assert (result.exit_code, result.stdout) == (0, "224\n")


BOTH_FORMS = (
    "a stack file (YAML or JSON with a 'layers' list and an 'input') nor layers inline "
    "('conv k7 s2 p3 out64; maxpool k3 s2 p1': ';' or a new line between layers)"
)


@pytest.mark.parametrize(
    "text, message",
    [
        ("foo: 3\n", f"error: <stdin>: neither {BOTH_FORMS}\n"),
        ("input = [1, 3, 32, 32]\n", f"error: <stdin>: neither {BOTH_FORMS}\n"),  # TOML
        (" \n", f"error: <stdin>: empty: give {BOTH_FORMS.replace(' nor ', ' or ')}\n"),
        ("covn k3\n", "error: layer 1 (covn1): unknown op 'covn'; ops: conv, "),
        ("layers: [\n", "error: <stdin>: line 2: "),  # a broken YAML file says where
    ],
)
def test_stdin_that_is_neither_form_names_both(cli, text: str, message: str) -> None:
    result = cli("stack", "-", "--formula-only", input=text)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.startswith(message)


def test_a_stack_too_long_for_the_command_line_goes_through_stdin(cli) -> None:
    # 3,000 layers of 'relu' on 1x3x8x8, one a line: nothing to count, every shape 1x3x8x8.
    # (16,000 convs, 'conv k3 p1 out8' a line, are 256 kB: more than one argument may hold,
    # MAX_ARG_STRLEN = 128 KiB; this keeps the test fast with the same path through stdin)
    text = "relu\n" * 3000
    result = cli(
        "stack",
        "-",
        "--formula-only",
        "--size",
        "8",
        "--get",
        "layers.2999.output_shape.formula",
        input=text,
    )
    assert (result.exit_code, result.stdout) == (0, "[1, 3, 8, 8]\n")


def test_the_total_says_it_holds_formulas_under_formula_only(cli) -> None:
    # conv 8->8 k3 on 8x8: params 8·8·3·3 + 8 = 584, MACs 8·6·6·8·9 = 20,736; under
    # --formula-only nothing is measured, and the measured-side `total` holds these formulas
    data = cli.json(*SMALL, "--formula-only")
    assert data["total"]["params"] == data["total"]["formula"]["params"] == 584
    assert data["total"]["macs"] == 20_736
    assert data["layers"][0]["params"]["measured"] is None
    assert data["total_source"] == "formula"
    assert data["total_by_formula"] == [
        "params",
        "macs",
        "flops",
        "output_shape",
        "receptive_field",
        "memory_bytes",
    ]


def test_a_measured_total_says_so(cli) -> None:
    data = cli.json(*SMALL)
    assert (data["total_source"], data["total_by_formula"]) == ("measured", [])
    assert data["total"]["params"] == 584


def test_the_jsonl_total_row_carries_the_total_source(cli) -> None:
    rows = [
        json.loads(line)
        for line in cli(*SMALL, "--formula-only", "--format", "jsonl").stdout.splitlines()
    ]
    assert rows[-1]["kind"] == "total" and rows[-1]["total_source"] == "formula"
    assert "total_source" not in rows[0]  # a layer row: its own measured/formula pairs


def test_a_total_with_one_figure_unmeasured_is_mixed() -> None:
    from dataclasses import replace

    from convcalc.core.report import Pair

    report = _measured_report()
    total = replace(report.total, receptive_field=Pair(None, report.total.receptive_field.formula))
    assert (total.source, total.by_formula) == ("mixed", ["receptive_field"])
    assert total.to_dict()["receptive_field"] == list(report.total.receptive_field.formula)


def _measured_report():
    from convcalc import library

    return library.conv(8, 8, kernel=3, size=8)
