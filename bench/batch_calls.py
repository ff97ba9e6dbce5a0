"""Python function calls a batch spec makes (cProfile's count: the same on a busy machine as on
a quiet one), over bench/batch.py's mix after 100 warm-up specs, through library.sweep and the
JSONL record writer as `convcalc batch` runs them; and a digest of the JSONL written, so two
trees can be shown to write the same bytes.

    python bench/batch_calls.py [--specs 2000] [--formula-only]
"""

from __future__ import annotations

import cProfile
import hashlib
import pstats
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from batch_cpu import warmed_sweep  # noqa: E402


def main() -> None:
    args, sweep = warmed_sweep(__doc__.splitlines()[0])
    profile = cProfile.Profile()
    profile.enable()
    text = sweep()
    profile.disable()
    calls = pstats.Stats(profile).total_calls  # type: ignore[attr-defined]
    mode = "--formula-only" if args.formula_only else "meta"
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    print(f"{mode}: {calls / args.specs:,.0f} Python calls a spec; JSONL sha256 {digest}")


if __name__ == "__main__":
    main()
