"""Python function calls a batch spec makes (cProfile's count: the same on a busy machine as on
a quiet one), over bench/batch.py's mix after 100 warm-up specs, through library.sweep and the
JSONL record writer as `convcalc batch` runs them; and a digest of the JSONL written, so two
trees can be shown to write the same bytes.

    python bench/batch_calls.py [--specs 2000] [--formula-only]
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import pstats
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from batch import mixed_specs  # noqa: E402

from convcalc import library  # noqa: E402
from convcalc.output.formats import batch_record  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=int, default=2000)
    parser.add_argument("--formula-only", action="store_true")
    args = parser.parse_args()
    measure = (
        library.Measure(formula_only=True, memory=False)
        if args.formula_only
        else library.Measure("meta", memory=False)
    )

    def run(specs: list[dict[str, object]]) -> str:
        out = io.StringIO()
        for record in library.sweep(specs, measure=measure):
            out.write(batch_record(record, "jsonl"))
        return out.getvalue()

    run(mixed_specs(100, 1))
    specs = mixed_specs(args.specs, 0)
    profile = cProfile.Profile()
    profile.enable()
    text = run(specs)
    profile.disable()
    calls = pstats.Stats(profile).total_calls  # type: ignore[attr-defined]
    mode = "--formula-only" if args.formula_only else "meta"
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    print(f"{mode}: {calls / args.specs:,.0f} Python calls a spec; JSONL sha256 {digest}")


if __name__ == "__main__":
    main()
