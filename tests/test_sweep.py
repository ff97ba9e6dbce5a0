"""Sweeps at scale (issue 16): shards and --merge, --resume, --jobs, --grid, the Python API twin,
and batch's bad input (issue 15)."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

import convcalc
from convcalc import library

#: five specs, one of them bad (groups 5 does not divide 3): index 3
SPECS = (
    "\n".join(
        [
            '{"in": 3, "out": 8, "size": 16}',
            '{"in": 3, "out": 8, "kernel": 5, "size": 12}',
            '{"op": "dw", "in": 4, "out": 8, "size": 8}',
            '{"in": 3, "out": 8, "groups": 5, "size": 8}',
            '{"op": "maxpool", "in": 4, "kernel": 2, "stride": 2, "size": 8}',
        ]
    )
    + "\n"
)


def one_line_error(result, text: str) -> None:
    assert result.exit_code == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and text in result.stderr, result.stderr


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sweep") / "specs.jsonl"
    path.write_text(SPECS)
    return path


@pytest.fixture(scope="module")
def whole(cli, sweep_file: Path) -> dict[str, str]:
    """The uninterrupted, unsharded run in each streamed format."""
    runs = {fmt: cli("batch", str(sweep_file), "--format", fmt) for fmt in ("jsonl", "csv")}
    for run in runs.values():
        assert run.exit_code == 2  # the bad spec
    return {fmt: run.stdout for fmt, run in runs.items()}


# --- shards and --merge ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_shards_merged_equal_the_unsharded_run(cli, sweep_file, whole, tmp_path, fmt) -> None:
    files = []
    for shard in range(3):
        result = cli("batch", str(sweep_file), "--shard", f"{shard}/3", "--format", fmt)
        path = tmp_path / f"shard{shard}.{fmt}"
        path.write_text(result.stdout)
        files.append(str(path))
    # shard 0 has indices 0 and 3 (the bad one), 1 has 1 and 4, 2 has 2
    first = tmp_path / f"shard0.{fmt}"
    if fmt == "jsonl":
        assert [json.loads(x)["index"] for x in first.read_text().splitlines()] == [0, 3]
    merged = cli("batch", "--merge", *files)
    assert merged.stdout == whole[fmt]
    assert (
        merged.exit_code == 2 and merged.stderr == "1 of 5 specs failed; see their error records\n"
    )


def test_merge_refuses_a_cut_shard_and_a_twice_given_one(cli, sweep_file, tmp_path) -> None:
    shard = tmp_path / "s0.jsonl"
    shard.write_text(cli("batch", str(sweep_file), "--shard", "0/2").stdout)
    one_line_error(cli("batch", "--merge", str(shard), str(shard)), "appears twice")
    cut = tmp_path / "cut.jsonl"
    cut.write_text(shard.read_text()[:-10])
    one_line_error(cli("batch", "--merge", str(cut)), "cut short")


@pytest.mark.parametrize("shard", ["3/3", "a/b", "1/0", "-1/2", "1"])
def test_a_malformed_shard(cli, sweep_file, shard) -> None:
    one_line_error(cli("batch", str(sweep_file), "--shard", shard), "--shard")


# --- --resume ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_resume_after_a_kill_anywhere_gives_the_uninterrupted_file(
    cli, sweep_file, whole, tmp_path, fmt
) -> None:
    full = whole[fmt].encode()
    ends = [i + 1 for i, byte in enumerate(full) if byte == ord("\n")]
    rng = random.Random(16)
    # a kill at a line boundary, in the middle of a line, before anything, and after all
    cuts = {0, ends[1], len(full), *(rng.randrange(1, len(full)) for _ in range(4))}
    for cut in sorted(cuts):
        results = tmp_path / f"results{cut}.{fmt}"
        results.write_bytes(full[:cut])
        run = cli("batch", str(sweep_file), "--format", fmt, "--resume", str(results))
        assert run.stdout == ""
        assert results.read_bytes() == full, cut
        # the status and the count cover the whole file: the bad spec (index 3) was written by
        # this run or found by it
        assert run.exit_code == 2
        assert run.stderr == "1 of 5 specs failed; see their error records\n"
    missing = tmp_path / f"new.{fmt}"  # a first run with --resume creates the file
    cli("batch", str(sweep_file), "--format", fmt, "--resume", str(missing))
    assert missing.read_bytes() == full


def test_resume_skips_the_finished_specs(cli, sweep_file, whole, tmp_path, monkeypatch) -> None:
    from convcalc import engine

    lines = whole["jsonl"].splitlines(keepends=True)
    results = tmp_path / "results.jsonl"
    results.write_text("".join(lines[:4]))
    seen = []
    real = engine.analyze_network
    monkeypatch.setattr(engine, "analyze_network", lambda *a, **k: seen.append(1) or real(*a, **k))
    cli("batch", str(sweep_file), "--resume", str(results))
    assert len(seen) == 1  # only index 4: indices 0-3 were complete (3 an error record)


@pytest.mark.parametrize(
    "text", ['{"a": 1}\n', "hello\n", "line,index\n1,0\n", '{"index": 0}\n', "\xff\n"]
)
def test_resume_refuses_a_file_that_is_not_batch_output(cli, sweep_file, tmp_path, text) -> None:
    results = tmp_path / "other.jsonl"
    results.write_text(text, encoding="latin-1")
    before = results.read_bytes()
    fmt = "csv" if text[0] not in "{" else "jsonl"
    one_line_error(
        cli("batch", str(sweep_file), "--format", fmt, "--resume", str(results)), "error: "
    )
    assert results.read_bytes() == before


# --- --jobs -----------------------------------------------------------------------------------


def test_two_jobs_equal_one(sweep_file, whole) -> None:
    """Real worker processes (spawned: each imports torch once), through the installed entry."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    run = subprocess.run(
        [sys.executable, "-m", "convcalc", "batch", str(sweep_file), "--jobs", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 2
    assert run.stdout == whole["jsonl"]


def test_jobs_must_be_a_count(cli, sweep_file) -> None:
    one_line_error(cli("batch", str(sweep_file), "--jobs", "0"), "--jobs")
    one_line_error(cli("batch", str(sweep_file), "--jobs", "many"), "--jobs")


# --- --grid -----------------------------------------------------------------------------------

GRID = "kernel=1,3,5 stride=1,2 groups=1,g=in out=64,128"


def test_grid_expands_the_product_with_references(cli) -> None:
    result = cli("batch", "--grid", GRID, "--in", "64", "--size", "56", "--formula-only")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 3 * 2 * 2 * 2
    assert [row["index"] for row in rows] == list(range(24))
    # index 15 = kernel 3 (1·8), stride 2 (1·4), groups in = 64 (1·2), out 128 (1):
    # a depthwise-style conv, 128 filters of 1 channel × 3·3 + 128 biases = 1,280 parameters;
    # output (56 + 2·0 - 3) // 2 + 1 = 27
    spec = rows[15]["layers"][0]["spec"]
    assert (spec["kernel_size"], spec["stride"], spec["groups"]) == ([3, 3], [2, 2], 64)
    assert rows[15]["total"]["formula"]["params"] == 1_280
    assert rows[15]["total"]["formula"]["output_shape"] == [1, 128, 27, 27]


def test_grid_file_says_the_same(cli, tmp_path) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text("kernel: [1, 3, 5]\nstride: [1, 2]\ngroups: [1, in]\nout: [64, 128]\n")
    by_file = cli("batch", "--grid-file", str(path), "--in", "64", "--size", "56", "--formula-only")
    inline = cli("batch", "--grid", GRID, "--in", "64", "--size", "56", "--formula-only")
    assert by_file.exit_code == 0 and by_file.stdout == inline.stdout


@pytest.mark.parametrize(
    ("grid", "text"),
    [
        ("kernel=1,3 colour=red", "'colour' is not a spec key"),
        ("kernel= stride=1", "--grid kernel: no values"),
        ("kernel=1,,3", "an empty value"),
        ("groups=g=out", "'out' is neither a grid key nor given"),
        ("kernel", "must be key=value"),
    ],
)
def test_a_bad_grid(cli, grid, text) -> None:
    one_line_error(cli("batch", "--grid", grid, "--in", "8", "--size", "8"), text)


# --- the Python API twin ----------------------------------------------------------------------


def test_the_python_api_sweeps_dicts_and_shards() -> None:
    specs = [{"in": 3, "out": 8, "size": size} for size in (8, 9, 10, 11)]
    records = list(convcalc.sweep(specs, shard="1/2"))
    assert [r.index for r in records] == [1, 3]
    # size 9, kernel 3 (the default), padding 0: 9 - 3 + 1 = 7
    assert records[0].report is not None
    assert records[0].report.total.output_shape.measured == (1, 8, 7, 7)
    assert records[0].report.total.output_shape.formula == (1, 8, 7, 7)
    # saved for backward by formula only unless memory=True
    assert records[0].report.total.saved_for_backward.measured is None
    assert "formula only" in records[0].report.sources["memory_saved_for_backward"]
    measured = next(convcalc.sweep(specs[:1], measure=library.Measure("meta", memory=True)))
    assert measured.report is not None
    saved = measured.report.total.saved_for_backward
    assert saved.measured == saved.formula


def test_the_api_grid_and_its_errors() -> None:
    specs = list(library.sweep_grid("kernel=1,3 groups=1,in", {"in": 4, "out": 8, "size": 8}))
    assert [s.data["groups"] for s in specs] == [1, 4, 1, 4]
    with pytest.raises(convcalc.SpecError, match="no values"):
        library.sweep_grid({"kernel": []}, {"in": 4})


# --- bad input (issue 15) ---------------------------------------------------------------------


def test_input_and_in_agreeing_are_accepted_and_conflicting_refused(cli) -> None:
    sweep = "\n".join(
        [
            '{"input": "2,3,8,8", "in": 3, "batch": 2, "size": 8, "out": 4}',
            '{"input": "1,3,8,8", "in": 4, "out": 4}',
            '{"input": "1,3,8,8", "size": "8x9", "out": 4}',
        ]
    )
    rows = [json.loads(x) for x in cli("batch", "-", input=sweep).stdout.splitlines()]
    assert rows[0]["input_shape"] == [2, 3, 8, 8]
    assert rows[1]["error"] == "in 4 conflicts with input '1,3,8,8' (in 3)"
    assert rows[2]["error"] == "size '8x9' conflicts with input '1,3,8,8' (size 8x8)"


def test_a_csv_row_with_more_fields_than_the_header(cli) -> None:
    result = cli("batch", "-", "--format", "csv", input="in,out,size\n3,8,8,5\n3,8,8\n")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows[0]["error"] == "the row has 4 fields, the header 3"
    assert rows[1]["error"] == "" and rows[1]["params"] == "224"  # 8·3·3·3 + 8


@pytest.mark.parametrize("text", ["", "  \n\n \t\n"])
def test_empty_and_whitespace_only_are_both_no_specs(cli, tmp_path, text) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text(text)
    one_line_error(cli("batch", str(path)), f"error: {path}: no specs")
    one_line_error(cli("batch", "-", input=text), "error: <stdin>: no specs")


def test_a_closed_pipe_ends_quietly(tmp_path) -> None:
    path = tmp_path / "big.jsonl"
    path.write_text("".join(f'{{"in": 3, "out": 8, "size": {8 + i % 50}}}\n' for i in range(400)))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    run = subprocess.run(
        f"{sys.executable} -m convcalc batch {path} --formula-only | head -1",
        shell=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        executable="/bin/bash",
    )
    assert run.stdout.count("\n") == 1 and json.loads(run.stdout)["index"] == 0
    assert run.stderr == ""
    status = subprocess.run(
        f"set -o pipefail; {sys.executable} -m convcalc batch {path} --formula-only | head -1"
        " > /dev/null",
        shell=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        executable="/bin/bash",
    )
    assert status.returncode == 0 and status.stderr == ""


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_sweep_streams_its_specs(jobs) -> None:
    """An endless sweep yields its first records: specs are pulled as needed, at most
    jobs × AHEAD chunks of CHUNK ahead (flat memory), in input order."""
    import itertools

    from convcalc.sources.batch import AHEAD, CHUNK

    pulled = []

    def endless():
        for index in itertools.count():
            pulled.append(index)
            yield {"in": 3, "out": 8, "size": 8 + index % 7}

    measure = library.Measure(formula_only=True, memory=False)
    records = convcalc.sweep(endless(), measure=measure, jobs=jobs)
    first = list(itertools.islice(records, 40))
    records.close()
    assert [r.index for r in first] == list(range(40))
    assert len(pulled) <= 40 + jobs * AHEAD * CHUNK + CHUNK
