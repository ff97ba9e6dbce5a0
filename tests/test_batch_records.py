"""`convcalc batch`'s records are byte-identical to those main produced before the batch path
was made fast (issue 16's rate goals): a fixed varied sweep (tests/data/batch_golden_specs.jsonl:
165 specs, bench/batch.py's mix with seed 7 plus every kind and dimension, dtypes, explicit
inputs, and 16 bad specs) in JSONL and CSV, on the meta device (memory by formula, batch's
default) and with --formula-only. The expected files (gzipped) were written by the code at
da739ae, before any optimisation: `convcalc batch SPECS -f FMT [--formula-only]`; the JSONL
ones were rewritten once since, when each record gained `total_source` and `total_by_formula`
(additive: with those two keys removed the new records equal the old byte for byte), and all
four once more when the training step gained `output` (the network's output, held through
backward) and its transient the output's gradient (changed: training_step's output, transient
and total, by formula), and a stride wider than its kernel got its true count of positions
never read (changed: two records' warnings); every other value equal."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
SPECS = DATA / "batch_golden_specs.jsonl"


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize("mode", ["meta", "fo"])
def test_batch_records_unchanged(cli, mode: str, fmt: str) -> None:
    extra = ["--formula-only"] if mode == "fo" else []
    result = cli("batch", str(SPECS), "--format", fmt, *extra)
    assert result.exit_code == 2  # the 16 bad specs
    assert result.stderr == "16 of 165 specs failed; see their error records\n"
    expected = gzip.decompress((DATA / f"batch_golden_{mode}.{fmt}.gz").read_bytes()).decode()
    got, want = result.stdout.splitlines(), expected.splitlines()
    assert len(got) == len(want)
    for number, (line, expected_line) in enumerate(zip(got, want, strict=True)):
        assert line == expected_line, f"record line {number} differs"
    assert result.stdout == expected
