"""What a scripting user hit on a fresh clone: --get/--expect messages in JSON's words, what
`total` holds under --formula-only, the roofline options' errors, the inline stack grammar on
stdin. Each test failed before its fix."""

from __future__ import annotations

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
