"""Machine instructions a batch spec takes (valgrind's callgrind count: the same on a busy
machine as on a quiet one, unlike any clock): bench/batch_cpu.py run under callgrind over the
first 200 and the first 700 specs of bench/batch.py's mix, the difference divided by 500, so
that start-up and the warm-up cancel out. Needs valgrind; about a minute per tree.

    python bench/batch_instructions.py [--formula-only] [--tree PATH]

``--tree``: the convcalc source tree to measure (PYTHONPATH), default this one.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import callgrind  # noqa: E402


def instructions(specs: int, tree: Path, formula_only: bool) -> int:
    command = [sys.executable, str(HERE / "batch_cpu.py"), "--specs", str(specs)]
    command += ["--formula-only"] if formula_only else []
    return callgrind.instructions(command, {**os.environ, "PYTHONPATH": str(tree)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formula-only", action="store_true")
    parser.add_argument("--tree", type=Path, default=HERE.parent)
    args = parser.parse_args()
    low, high = (instructions(n, args.tree, args.formula_only) for n in (200, 700))
    mode = "--formula-only" if args.formula_only else "meta"
    print(f"{mode}: {(high - low) / 500:,.0f} instructions a spec ({args.tree})")


if __name__ == "__main__":
    main()
