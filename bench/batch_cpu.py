"""CPU seconds a batch spec takes in one process (time.process_time, so other jobs on the
machine matter less than to a wall clock): 100 warm-up specs, then bench/batch.py's mix through
library.sweep and the JSONL record writer, as `convcalc batch` runs them.

    python bench/batch_cpu.py [--specs 2000] [--formula-only] [--same]

``--same``: the mix's first spec, repeated: a sweep remembers an exact repeat's report, so what
is left is the record's assembly and its JSON, the floor under any spec's cost.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from batch import mixed_specs  # noqa: E402

from convcalc import library  # noqa: E402
from convcalc.output.formats import batch_record  # noqa: E402


def warmed_sweep(description: str) -> tuple[argparse.Namespace, Callable[[], str]]:
    """The options (``--specs``, ``--formula-only``) and a function running bench/batch.py's mix
    through library.sweep and the JSONL record writer, as `convcalc batch` runs them, returning
    the JSONL; 100 warm-up specs are run first. Shared with bench/batch_calls.py."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--specs", type=int, default=2000)
    parser.add_argument("--formula-only", action="store_true")
    parser.add_argument("--same", action="store_true", help="the first spec, repeated")
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
    if args.same:
        specs = specs[:1] * args.specs
    return args, lambda: run(specs)


def main() -> None:
    args, sweep = warmed_sweep(__doc__.splitlines()[0])
    cpu, wall = time.process_time(), time.perf_counter()
    sweep()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    mode = ("--formula-only" if args.formula_only else "meta") + (" --same" if args.same else "")
    print(f"{mode}: {args.specs / cpu:,.0f} specs/CPU s, {args.specs / wall:,.0f} specs/s wall")


if __name__ == "__main__":
    main()
