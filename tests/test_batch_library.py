"""The Python API of a sweep's results files (convcalc.library.held, resume, merge): what
``batch --resume`` and ``batch --merge`` call, byte for byte the CLI's files and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from convcalc import library
from convcalc.choices import Measure
from convcalc.core.spec import CLI_LABELS, Labels
from convcalc.errors import SpecError
from convcalc.output.formats import batch_record

#: formula only: no torch, the records are the same on every machine and run
FORMULA = Measure("auto", formula_only=True, memory=False)
#: the CLI's words in messages (--merge, --format): what `batch` passes
CLI = Labels(CLI_LABELS)


def grid() -> object:
    """9 specs: kernel 1,3,5 x out 4,8,16 (out fastest), in 4, size 8: indices 0-8."""
    return library.sweep_grid("kernel=1,3,5 out=4,8,16", {"in": 4, "size": 8})


def swept(path: Path, shard: tuple[int, int] | None = None, fmt: str = "jsonl") -> str:
    records = library.resume(path, grid(), format=fmt, measure=FORMULA, shard=shard)
    assert all(record.error is None for record in records)
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, object]:
    """The unsharded sweep and its three shards, in JSONL and CSV, written by library.resume
    into new files (as `convcalc batch --grid ... --resume FILE`)."""
    root = tmp_path_factory.mktemp("runs")
    out: dict[str, object] = {"root": root}
    for fmt in ("jsonl", "csv"):
        out[fmt] = swept(root / f"full.{fmt}", fmt=fmt)
        for i in range(3):
            swept(root / f"s{i}.{fmt}", (i, 3), fmt)
    return out


def shards(runs, fmt: str, which=(0, 1, 2)) -> list[Path]:
    return [runs["root"] / f"s{i}.{fmt}" for i in which]


def test_the_resumed_new_file_is_the_cli_output(cli, runs) -> None:
    for fmt in ("jsonl", "csv"):
        result = cli(
            "batch", "--grid", "kernel=1,3,5 out=4,8,16", "--in", "4", "--size", "8",
            "--formula-only", "-f", fmt,
        )  # fmt: skip
        assert result.exit_code == 0
        assert runs[fmt] == result.stdout


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_merge_of_the_shards_is_the_unsharded_run(runs, fmt: str) -> None:
    # shard i/3 holds indices i, i+3, i+6: merged in input order they are 0..8, the full run
    merged = library.merge(shards(runs, fmt))
    assert (merged.format, merged.count, merged.failed) == (fmt, 9, 0)
    assert "".join(merged) == runs[fmt]


def test_merge_converts_jsonl_to_csv(runs) -> None:
    assert "".join(library.merge(shards(runs, "jsonl"), "csv")) == runs["csv"]


def test_merge_of_one_file_in_order_is_that_file(runs) -> None:
    assert "".join(library.merge([runs["root"] / "full.jsonl"])) == runs["jsonl"]


def test_a_missing_shard_raises_naming_it(runs) -> None:
    # without shard 1/3: indices 1, 4, 7 are in no file; s0 starts at 0 and s2 at 2, steps
    # of 3, so the shard whose start (1) no file has is 1/3
    with pytest.raises(SpecError) as caught:
        library.merge(shards(runs, "jsonl", (0, 2)), labels=CLI)
    assert caught.value.field == "merge"
    assert str(caught.value) == (
        "--merge: no file holds 3 of the specs (indices 1, 4, 7): shard 1/3 is missing"
    )


def test_a_shard_that_stops_early_raises_naming_it(runs, tmp_path) -> None:
    short = tmp_path / "short.jsonl"  # shard 1/3's first two records: 1 and 4, not 7
    short.write_text("".join((runs["root"] / "s1.jsonl").read_text().splitlines(True)[:2]))
    paths = [runs["root"] / "s0.jsonl", short, runs["root"] / "s2.jsonl"]
    with pytest.raises(SpecError, match=r"index 7\): .*short.jsonl \(shard 1/3\) stops early"):
        library.merge(paths)


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        ([], "--merge needs the results files"),
        (["s0.jsonl", "s0.jsonl"], "--merge: the spec of index 0 appears twice"),
        (["s0.jsonl", "s1.csv"], "--merge: the files mix JSONL and CSV"),
    ],
)
def test_merge_refusals(runs, paths, message) -> None:
    with pytest.raises(SpecError) as caught:
        library.merge([runs["root"] / name for name in paths], labels=CLI)
    assert str(caught.value) == message


def test_merge_refuses_csv_as_jsonl(runs) -> None:
    with pytest.raises(SpecError, match="cannot become JSONL: give --format csv"):
        library.merge(shards(runs, "csv"), "jsonl", labels=CLI)


def test_held_of_a_truncated_file_drops_the_cut_last_line(runs, tmp_path) -> None:
    lines = runs["jsonl"].splitlines(keepends=True)
    kept = "".join(lines[:4])
    results = tmp_path / "r.jsonl"
    results.write_text(kept + lines[4][:50])  # killed while writing the 5th record
    found = library.held(results, grid(), measure=FORMULA)
    # 4 complete records (indices 0-3), none failed; the cut 5th line is not kept
    assert (found.count, found.failed, found.keep, found.format) == (4, 0, len(kept), "jsonl")
    assert found.profile is not None
    assert next(found.rest).index == 4  # what is left to run starts at the cut record
    assert [r.index for r in library.resume(results, found, measure=FORMULA)] == [5, 6, 7, 8]
    # the cut line went: index 4 was not redone from found.rest (next() took it) ...
    assert results.read_text().count("\n") == 8
    # ... while resuming from the specs redoes it, and the file is the whole run
    results.write_text(kept + lines[4][:50])
    assert [r.index for r in library.resume(results, grid(), measure=FORMULA)] == [4, 5, 6, 7, 8]
    assert results.read_text() == runs["jsonl"]


def test_held_of_a_missing_file_holds_nothing(tmp_path) -> None:
    found = library.held(tmp_path / "new.jsonl", grid(), measure=FORMULA)
    assert (found.count, found.failed, found.keep) == (0, 0, 0)
    assert sum(1 for _ in found.rest) == 9
    assert not (tmp_path / "new.jsonl").exists()  # held() writes nothing


def test_held_refuses_another_sweeps_results(runs, tmp_path) -> None:
    results = tmp_path / "r.jsonl"
    results.write_text("".join(runs["jsonl"].splitlines(keepends=True)[:4]))
    other = library.sweep_grid("kernel=1,3,5 out=4,8,32", {"in": 4, "size": 8})
    with pytest.raises(SpecError) as caught:  # index 2 is out 16 in the file, 32 here
        library.held(results, other, measure=FORMULA)
    assert caught.value.field == "resume"
    assert "layers[0].spec.out_channels: 16 in the file, 32 in this run" in str(caught.value)
    before = results.read_bytes()
    with pytest.raises(SpecError):
        library.resume(results, other, measure=FORMULA)
    assert results.read_bytes() == before  # refused before the file is touched


def test_held_compares_every_layer_not_only_the_first(tmp_path) -> None:
    # a depthwise-separable pair: its depthwise layer (8 -> 8) is the same for out 16 and 32;
    # only the pointwise layer (8 -> 16, not 8 -> 32) tells the two sweeps apart
    results = tmp_path / "r.jsonl"
    made = library.sweep([{"op": "dw", "in": 8, "out": 16, "size": 8}], measure=FORMULA)
    results.write_text("".join(batch_record(record, "jsonl") for record in made))
    other = [{"op": "dw", "in": 8, "out": 32, "size": 8}]
    with pytest.raises(SpecError) as caught:
        library.held(results, other, measure=FORMULA)
    assert "layers[1].spec.out_channels: 16 in the file, 32 in this run" in str(caught.value)
    same = library.held(results, [{"op": "dw", "in": 8, "out": 16, "size": 8}], measure=FORMULA)
    assert (same.count, same.failed) == (1, 0)


def test_resume_refuses_other_options_before_writing(runs, tmp_path) -> None:
    results = tmp_path / "r.jsonl"
    results.write_text("".join(runs["jsonl"].splitlines(keepends=True)[:4]))
    before = results.read_bytes()
    measured = Measure("meta", memory=False)  # the file's records are formula only
    with pytest.raises(SpecError, match="measured: false in the file, true in this run"):
        library.resume(results, grid(), measure=measured)
    assert results.read_bytes() == before


def test_held_refuses_another_format(runs, tmp_path) -> None:
    results = tmp_path / "r.csv"
    results.write_text(runs["csv"])
    with pytest.raises(SpecError, match=r"holds CSV records and this run writes JSONL \(the de"):
        library.held(results, grid(), measure=FORMULA)
    assert library.held(results, grid(), format="csv", measure=FORMULA).count == 9


def test_error_records_are_counted(tmp_path) -> None:
    specs = [{"in": 4, "out": 4, "size": 8}, {"in": 4, "out": "x", "size": 8}]
    results = tmp_path / "r.jsonl"
    assert [r.error is None for r in library.resume(results, specs, measure=FORMULA)] == [
        True,
        False,
    ]
    assert (
        library.held(results, specs, measure=FORMULA).failed,
        library.merge([results]).failed,
    ) == (1, 1)


def test_sweep_size_and_axes(tmp_path) -> None:
    axes = library.sweep_axes("kernel=1,3,5 out=4,8,16")
    assert axes == {"kernel": [1, 3, 5], "out": [4, 8, 16]}
    # 9 specs; shard 1/4 is indices 1 and 5; 1 of them done
    assert library.sweep_size(None, axes, "1/4", done=1) == 1
    assert library.sweep_size("-") is None
    grid_file = tmp_path / "g.yaml"
    grid_file.write_text("kernel: [1, 3]\nout: 4\n")
    assert library.sweep_axes(grid_file=grid_file) == {"kernel": [1, 3], "out": [4]}
    with pytest.raises(SpecError, match="give --grid or --grid-file, not both"):
        library.sweep_axes("kernel=1", grid_file)
    specs = tmp_path / "s.jsonl"
    specs.write_text('{"in": 4, "out": 4}\n# a comment\n{"in": 4, "out": 8}\n')
    assert library.sweep_size(specs) == 2
    assert [s.line for s in library.sweep_file(specs)] == [1, 3]
