"""What a new user of batch --resume/--merge/--shard hit (issue 16's pass): another sweep's
results resumed, a shard missing from --merge, --merge --format, the resume messages, the
progress bar's total. Each refusal: one line on stderr, exit 2, nothing written."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

#: 9 specs: kernel 1,3,5 x out 4,8,16 (out fastest), in 4, size 8, formula only (no torch)
GRID = ["--grid", "kernel=1,3,5 out=4,8,16", "--in", "4", "--size", "8", "--formula-only"]


@pytest.fixture(scope="module")
def full(cli) -> dict[str, str]:
    runs = {fmt: cli("batch", *GRID, "--format", fmt) for fmt in ("jsonl", "csv", "json")}
    assert all(run.exit_code == 0 for run in runs.values())
    return {fmt: run.stdout for fmt, run in runs.items()}


def refused(result, line: str) -> None:
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"error: {line}\n")


def head(text: str, lines: int) -> str:
    return "".join(text.splitlines(keepends=True)[:lines])


# --- 1. --resume with another sweep's results --------------------------------------------------


def test_resume_refuses_other_specs(cli, full, tmp_path) -> None:
    results = tmp_path / "r.jsonl"
    results.write_text(head(full["jsonl"], 4))  # indices 0-3: k1 o4, k1 o8, k1 o16, k3 o4
    before = results.read_bytes()
    # out=4,8,32: index 2 is k1 o32, the file's is k1 o16
    other = [*GRID[:1], "kernel=1,3,5 out=4,8,32", *GRID[2:]]
    refused(
        cli("batch", *other, "--resume", str(results)),
        f"--resume {results}: its record of spec index 2 is not what this run makes of that "
        "spec (layers[0].spec.out_channels: 16 in the file, 32 in this run): the results of "
        "another sweep (other specs, or options such as --formula-only, --memory, --dtype)",
    )
    # a shard of the same sweep: its first spec is index 1, the file's first record index 0
    refused(
        cli("batch", *GRID, "--shard", "1/2", "--resume", str(results)),
        f"--resume {results}: its record 1 is of spec index 0 (line 1), this run's spec 1 is "
        "index 1 (line 2): the results of another sweep (other specs or --shard)",
    )
    # fewer specs than the file holds records
    short = [*GRID[:1], "kernel=1 out=4,8", *GRID[2:]]
    refused(
        cli("batch", *short, "--resume", str(results)),
        f"--resume {results}: holds more records than this run's 2 specs: the results of "
        "another sweep (other specs or --shard)",
    )
    assert results.read_bytes() == before


def test_resume_refuses_other_options(cli, full, tmp_path) -> None:
    results = tmp_path / "r.jsonl"
    results.write_text(head(full["jsonl"], 4))
    before = results.read_bytes()
    base = GRID[:-1]  # measured this time; the file was made with --formula-only
    refused(
        cli("batch", *base, "--resume", str(results)),
        f"--resume {results}: its records were made with other options than this run's "
        "(measured: false in the file, true in this run): the results of another sweep",
    )
    refused(
        cli("batch", *GRID, "--dtype", "float16", "--resume", str(results)),
        f"--resume {results}: its record of spec index 0 is not what this run makes of that "
        'spec (dtype: "float32" in the file, "float16" in this run): the results of another '
        "sweep (other specs, or options such as --formula-only, --memory, --dtype)",
    )
    refused(
        cli("batch", *GRID, "--train", "--resume", str(results)),
        f"--resume {results}: its records were made with other options than this run's "
        "(train_flops (--train): false in the file, true in this run): the results of another "
        "sweep",
    )
    assert results.read_bytes() == before
    # the same options carry on: byte for byte the uninterrupted run
    run = cli("batch", *GRID, "--resume", str(results))
    assert run.exit_code == 0 and results.read_text() == full["jsonl"]


def test_resume_refuses_other_options_in_csv(cli, full, tmp_path) -> None:
    results = tmp_path / "r.csv"
    results.write_text(head(full["csv"], 3))  # the header and indices 0, 1
    before = results.read_bytes()
    refused(
        cli("batch", *GRID[:-1], "--format", "csv", "--resume", str(results)),
        f"--resume {results}: its records were made with other options than this run's "
        "(measured: false in the file, true in this run): the results of another sweep",
    )
    # kernel 1, out 4 on 4 channels: 4*4*1*1 + 4 = 20 parameters; out 8 at index 0: 40
    other = [*GRID[:1], "kernel=1,3,5 out=8,16,4", *GRID[2:]]
    refused(
        cli("batch", *other, "--format", "csv", "--resume", str(results)),
        f"--resume {results}: its record of spec index 0 is not what this run makes of that "
        'spec (params_formula: "20" in the file, "40" in this run): the results of another '
        "sweep (other specs, or options such as --formula-only, --memory, --dtype)",
    )
    assert results.read_bytes() == before


# --- 4. the resume messages ---------------------------------------------------------------------


def test_resume_names_what_the_file_holds(cli, full, tmp_path) -> None:
    csv_file = tmp_path / "results"  # a name that does not say its format
    csv_file.write_text(head(full["csv"], 2))
    array = tmp_path / "array"
    array.write_text(full["json"])
    other = tmp_path / "notes"
    other.write_text("hello\n")
    new = tmp_path / "new.csv"
    cases = [
        (
            [str(csv_file)],
            f"--resume {csv_file}: holds CSV records and this run writes JSONL (the default): "
            "add --format csv",
        ),
        (
            [str(csv_file), "--format", "jsonl"],
            f"--resume {csv_file}: holds CSV records and this run writes JSONL: add --format csv",
        ),
        (
            [str(array)],
            f"--resume {array}: holds a JSON array (--format json), which records cannot be "
            "appended to: resume a JSONL or CSV file",
        ),
        ([str(other), "--format", "csv"], f"--resume {other}: not convcalc batch output"),
        (
            [str(new)],
            f"--resume {new}: its name says CSV and this run writes JSONL (the default): add "
            "--format csv, or give a name ending .jsonl",
        ),
    ]
    for args, line in cases:
        files = {p: p.read_bytes() for p in (csv_file, array, other)}
        refused(cli("batch", *GRID, "--resume", *args), line)
        assert {p: p.read_bytes() for p in files} == files
    assert not new.exists()


# --- 2. and 3. --merge --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shards(cli, tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("shards")
    paths = []
    for shard in range(3):
        run = cli("batch", *GRID, "--shard", f"{shard}/3")
        path = folder / f"shard{shard}.jsonl"
        path.write_text(run.stdout)
        paths.append(path)
    return paths


def test_merge_names_a_missing_shard(cli, shards, tmp_path) -> None:
    # shard 1/3 holds indices 1, 4, 7
    refused(
        cli("batch", "--merge", str(shards[0]), str(shards[2])),
        "--merge: no file holds 3 of the specs (indices 1, 4, 7): shard 1/3 is missing",
    )
    cut = tmp_path / "shard1.jsonl"
    cut.write_text(head(shards[1].read_text(), 2))  # indices 1 and 4: 7 is missing
    refused(
        cli("batch", "--merge", str(shards[0]), str(cut), str(shards[2])),
        f"--merge: no file holds 1 of the specs (index 7): {cut} (shard 1/3) stops early "
        "(--resume it)",
    )


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_merge_writes_the_format_asked_for(cli, full, shards, fmt) -> None:
    run = cli("batch", "--merge", *map(str, shards), "--format", fmt)
    assert (run.exit_code, run.stderr) == (0, "")
    assert run.stdout == full[fmt]  # byte for byte the unsharded run in that format


def test_merge_refuses_csv_into_jsonl(cli, full, tmp_path) -> None:
    rows = tmp_path / "all.csv"
    rows.write_text(full["csv"])
    refused(
        cli("batch", "--merge", str(rows), "--format", "jsonl"),
        "--merge --format jsonl: the files hold CSV rows (each spec's total only), which cannot "
        "become JSONL: give --format csv",
    )
    run = cli("batch", "--merge", str(rows))  # no --format: the files' own
    assert run.exit_code == 0 and run.stdout == full["csv"]


# --- 5. the progress bar's total ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "extra", "total"),
    [
        ("grid", [], 9),
        ("grid", ["--shard", "1/4"], 2),  # indices 1 and 5
        ("file", [], 9),
        ("file", ["--resume", "RESULTS"], 5),  # 4 held
        ("stdin", [], None),
    ],
)
def test_the_progress_bar_shows_the_total_when_known(
    cli, full, tmp_path, monkeypatch, source, extra, total
) -> None:
    from convcalc.cli import sweep
    from convcalc.output import render

    totals = []

    @contextlib.contextmanager
    def progress(count):
        totals.append(count)
        yield lambda: None

    monkeypatch.setattr(sweep, "_shows_progress", lambda: True)
    monkeypatch.setattr(render, "progress", progress)
    specs = tmp_path / "specs.jsonl"
    lines = [
        json.dumps({"in": 4, "size": 8, "kernel": k, "out": o})
        for k in (1, 3, 5)
        for o in (4, 8, 16)
    ]
    specs.write_text(lines[0] + "\n# a comment\n\n" + "\n".join(lines[1:]) + "\n")
    results = tmp_path / "r.jsonl"
    if "--resume" in extra:
        run = cli("batch", str(specs), "--formula-only")
        results.write_text(head(run.stdout, 4))
        totals.clear()
    extra = [str(results) if arg == "RESULTS" else arg for arg in extra]
    if source == "grid":
        run = cli("batch", *GRID, *extra)
    elif source == "file":
        run = cli("batch", str(specs), "--formula-only", *extra)
    else:
        run = cli("batch", "-", "--formula-only", input=specs.read_text())
    assert run.exit_code == 0, run.stderr
    assert totals == [total]  # None: no total shown
