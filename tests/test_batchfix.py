"""What a new user hit in `convcalc batch` and the sweep API (the batchfix pass): a finished
file resumed with other options, --time on the meta device, a CSV resumed with another dtype,
the API's messages naming CLI options, the raw text of a line that is not JSON, --get with
--format. Each refusal: one line on stderr, exit 2, nothing on stdout, the file untouched."""

from __future__ import annotations

import json

import pytest

from convcalc import library
from convcalc.choices import Measure
from convcalc.errors import SpecError

#: 4 specs: kernel 1,3 x out 4,8 (out fastest), in 4, size 8
GRID = ["--grid", "kernel=1,3 out=4,8", "--in", "4", "--size", "8"]
FORMULA = Measure(formula_only=True, memory=False)


def refused(result, line: str) -> None:
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"error: {line}\n")


# --- 2. --time on the meta device times nothing -------------------------------------------------


@pytest.mark.parametrize("on", [[], ["--measure-on", "meta"]])
def test_batch_time_on_meta_is_a_usage_error(cli, on) -> None:
    # before any work: no spec is read (the grid's file argument is never opened)
    refused(
        cli("batch", *GRID, "--time", *on),
        "--time needs a real run, and --measure-on meta (batch's default) runs nothing: add "
        "--measure-on auto or cpu",
    )


def test_sweep_time_on_meta_is_refused_by_the_api() -> None:
    # raised by the call itself, before the first record is asked for
    with pytest.raises(SpecError) as caught:
        library.sweep([{"in": 4, "out": 4, "size": 8}], measure=Measure("meta", time=True))
    assert caught.value.field == "time"
    assert str(caught.value) == (
        "time needs a real run, and measure_on 'meta' (the sweep's default) runs nothing: "
        "give Measure(measure_on='auto') or 'cpu'"
    )


def test_sweep_time_on_cpu_times() -> None:
    # the same spec measured for real: timed (latency_ms a positive number)
    (record,) = library.sweep([{"in": 4, "out": 4, "size": 8}], measure=Measure("cpu", time=True))
    assert record.error is None
    assert record.to_dict()["total"]["latency_ms"] > 0


# --- 6. a line that is not JSON: its raw text in the error record -------------------------------


def test_error_record_keeps_the_raw_line(cli) -> None:
    specs = '{"in": 4, "out": 4, "size": 8}\nnot json {\n[1, 2]\n'
    result = cli("batch", "-", "--formula-only", input=specs)
    assert result.exit_code == 2
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert "text" not in records[0]  # a report: no text key
    # not JSON: line 2, index 1; its spec keeps __error__ (the existing key), text the line
    assert records[1] == {
        "line": 2,
        "index": 1,
        "error": "not JSON: Expecting value (column 1)",
        "spec": {"__error__": "not JSON: Expecting value (column 1)"},
        "text": "not json {",
    }
    assert records[2]["text"] == "[1, 2]"
    assert records[2]["error"] == "each line must be a JSON object"


def test_error_record_of_a_bad_value_has_no_text() -> None:
    # a JSON object with a bad value: its spec is the object itself, no text key
    (record,) = library.sweep([{"in": 4, "out": 0, "size": 8}], measure=FORMULA)
    assert record.error is not None
    assert "text" not in record.to_dict()


# --- 7. --get with --format --------------------------------------------------------------------


CONV = ["conv", "--in", "8", "--out", "8", "-k", "3", "--formula-only"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "markdown"])
def test_get_refuses_another_format(cli, fmt) -> None:
    refused(
        cli(*CONV, "--get", "total.params", "--format", fmt),
        f"--get prints the value alone: it does not go with --format {fmt} (give one of them)",
    )


@pytest.mark.parametrize("fmt", [[], ["--format", "json"], ["--json"]])
def test_get_with_table_or_json(cli, fmt) -> None:
    # 8*8*3*3 weights + 8 biases = 584
    result = cli(*CONV, "--get", "total.params", *fmt)
    assert (result.exit_code, result.stdout) == (0, "584\n")


# --- 5. the sources of memory not measured: in the user's words ---------------------------------


def test_memory_sources_name_the_options_that_measure_it() -> None:
    (record,) = library.sweep([{"in": 4, "out": 4, "size": 8}])  # meta, memory by formula
    sources = record.to_dict()["sources"]
    for key in ("memory_saved_for_backward", "memory_peak_inference"):
        assert sources[key] == (
            "formula only: not measured in this run (batch: add --memory; the Python API: "
            "Measure(memory=True))"
        )
    assert sources["memory_training_step"] == (
        "formula only: not measured in this run (batch: one real step with --memory and "
        "--train, when the layer runs on the CPU, --measure-on auto or cpu, and is small "
        "enough; the Python API: Measure(memory=True, train=True))"
    )
    assert not any("Options." in text for text in sources.values())


def test_memory_and_train_on_cpu_measure_the_step() -> None:
    # what the training-step source promises: --memory --train on the CPU measures a real step
    measure = Measure("cpu", train=True, memory=True)
    (record,) = library.sweep([{"in": 4, "out": 4, "size": 8}], measure=measure)
    assert record.to_dict()["sources"]["memory_training_step"].startswith("one real step")


# --- 1. a finished file resumed with other options ----------------------------------------------


@pytest.fixture(scope="module")
def finished(cli, tmp_path_factory) -> dict[str, str]:
    """The 4-spec sweep run whole: formula only, and on the meta device (memory by formula)."""
    runs = {
        "fo.jsonl": cli("batch", *GRID, "--formula-only"),
        "meta.jsonl": cli("batch", *GRID),
        "meta.csv": cli("batch", *GRID, "-f", "csv"),
    }
    assert all(run.exit_code == 0 for run in runs.values())
    return {name: run.stdout for name, run in runs.items()}


@pytest.mark.parametrize(
    ("made", "options", "difference"),
    [
        ("meta.jsonl", ["--memory"], "memory measured (--memory): false in the file, true in this "
         "run"),
        ("meta.jsonl", ["--train"], "train_flops (--train): false in the file, true in this run"),
        ("meta.jsonl", ["--formula-only"], "measured: true in the file, false in this run"),
        ("fo.jsonl", [], "measured: false in the file, true in this run"),
        ("meta.jsonl", ["--measure-on", "cpu"], 'measured_on: "meta" in the file, "cpu" in this '
         "run"),
    ],
)  # fmt: skip
def test_resume_of_a_finished_file_checks_the_options(
    cli, finished, tmp_path, made, options, difference
) -> None:
    # the file holds all 4 specs: nothing is left, yet its last spec is analysed (not
    # written) with this run's options and compared, as for a partial file
    results = tmp_path / "r.jsonl"
    results.write_text(finished[made])
    refused(
        cli("batch", *GRID, *options, "--resume", str(results)),
        f"--resume {results}: its records were made with other options than this run's "
        f"({difference}): the results of another sweep",
    )
    assert results.read_text() == finished[made]


def test_resume_of_a_finished_file_with_its_options_adds_nothing(cli, finished, tmp_path) -> None:
    results = tmp_path / "r.jsonl"
    results.write_text(finished["meta.jsonl"])
    result = cli("batch", *GRID, "--resume", str(results))
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    assert results.read_text() == finished["meta.jsonl"]


def test_api_resume_of_a_finished_file_checks_the_options(finished, tmp_path) -> None:
    results = tmp_path / "r.jsonl"
    results.write_text(finished["fo.jsonl"])
    specs = library.sweep_grid("kernel=1,3 out=4,8", {"in": 4, "size": 8})
    with pytest.raises(SpecError) as caught:
        library.resume(results, specs, measure=Measure("meta", memory=False))  # at the call
    assert caught.value.field == "resume"
    assert "measured: false in the file, true in this run" in str(caught.value)
    assert results.read_text() == finished["fo.jsonl"]


# --- 3. a CSV resumed with another dtype ----------------------------------------------------------


@pytest.mark.parametrize("rows", [3, 5])  # header + 2 records (partial), header + 4 (finished)
def test_csv_resume_refuses_another_dtype(cli, finished, tmp_path, rows) -> None:
    # the file's last record (spec index rows-2) is float32: 4->8 channels of 8x8, kernel 1 or 3:
    # memory_total_bytes by formula is dtype-linear, so float16 halves it; the first column of
    # the formula columns that differs is memory_total_bytes (its value in the file shown)
    results = tmp_path / "r.csv"
    text = "".join(finished["meta.csv"].splitlines(keepends=True)[:rows])
    results.write_text(text)
    held_row = text.splitlines()[-1].split(",")
    total = held_row[finished["meta.csv"].splitlines()[0].split(",").index("memory_total_bytes")]
    result = cli("batch", *GRID, "-f", "csv", "--dtype", "float16", "--resume", str(results))
    refused(
        result,
        f"--resume {results}: its record of spec index {rows - 2} is not what this run makes of "
        f'that spec (memory_total_bytes: "{total}" in the file, "{int(total) // 2}" in this '
        "run): the results of another sweep (other specs, or options such as --formula-only, "
        "--memory, --dtype)",
    )
    assert results.read_text() == text
    # the same dtype resumes: the file becomes the whole run
    assert cli("batch", *GRID, "-f", "csv", "--resume", str(results)).exit_code == 0
    assert results.read_text() == finished["meta.csv"]


# --- 4. the API's refusals name its parameters ----------------------------------------------------


def test_api_merge_and_held_messages_name_parameters(finished, tmp_path) -> None:
    jsonl, csv_file = tmp_path / "r.jsonl", tmp_path / "r.csv"
    jsonl.write_text(finished["meta.jsonl"])
    csv_file.write_text(finished["meta.csv"])
    specs = library.sweep_grid("kernel=1,3 out=4,8", {"in": 4, "size": 8})
    cases = [
        (lambda: library.merge([]), "merge needs the results files"),
        (lambda: library.merge([jsonl, csv_file]), "merge: the files mix JSONL and CSV"),
        (
            lambda: library.merge([csv_file], "jsonl"),
            "merge format='jsonl': the files hold CSV rows (each spec's total only), which "
            "cannot become JSONL: give format='csv'",
        ),
        (
            lambda: library.held(csv_file, specs),
            f"path {csv_file}: holds CSV records and this run writes JSONL (the default): add "
            "format='csv'",
        ),
        (
            lambda: library.held(jsonl, specs, format="json"),
            "resume() appends records: it needs format='jsonl' or 'csv'",
        ),
    ]
    for call, message in cases:
        with pytest.raises(SpecError) as caught:
            call()
        assert str(caught.value) == message
        assert "--" not in str(caught.value)


def test_api_resume_message_names_parameters(finished, tmp_path) -> None:
    results = tmp_path / "r.jsonl"
    results.write_text("".join(finished["meta.jsonl"].splitlines(keepends=True)[:2]))
    other = library.sweep_grid("kernel=1,3 out=4,16", {"in": 4, "size": 8})
    with pytest.raises(SpecError) as caught:  # index 1: out 8 in the file, 16 here
        library.resume(results, other)
    assert str(caught.value) == (
        f"path {results}: its record of spec index 1 is not what this run makes of that spec "
        "(layers[0].spec.out_channels: 8 in the file, 16 in this run): the results of another "
        "sweep (other specs, or options such as formula_only, memory, dtype)"
    )


def test_top_level_exports() -> None:
    import convcalc

    assert (convcalc.held, convcalc.resume, convcalc.merge) == (
        library.held,
        library.resume,
        library.merge,
    )
    assert {"held", "resume", "merge"} <= set(convcalc.__all__)
