"""Issue 11's start-up goals in machine instructions (valgrind's callgrind count: the same on a
busy machine as on a quiet one, unlike any clock), each command's count over the baseline's,
``python -c "import typer, rich"``, in one run.

    python bench/startup_instructions.py [--tree PATH] [--repeat 1]

Run it with the interpreter of a regular (non-editable) install, as bench/speed.py is run.
``--tree``: a convcalc source tree put first on PYTHONPATH (compile its ``.pyc`` first:
``python -m compileall -q TREE/convcalc``); without it, the installed convcalc. Every command
runs once uncounted first, so convcalc's dataclass code table (convcalc/_dataclass.py) holds
what it uses, as after a user's first run. PYTHONHASHSEED is fixed, so a count repeats to about
0.01 %. Needs valgrind; about 15 s a command.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import callgrind  # noqa: E402

LAYER = ["conv", "--in", "64", "--out", "256", "-k", "3", "-p", "1", "--formula-only"]
#: (label, arguments after the interpreter, the goal as a ratio to the baseline or None)
COMMANDS: list[tuple[str, list[str], float | None]] = [
    ('python -c "import typer, rich"', ["-c", "import typer, rich"], None),
    ("convcalc --help", ["-m", "convcalc", "--help"], 1.3),
    ("convcalc conv --help", ["-m", "convcalc", "conv", "--help"], 1.3),
    (
        "convcalc conv ... --formula-only --format json",
        ["-m", "convcalc", *LAYER, "--format", "json"],
        1.3,
    ),
    ("convcalc conv ... --formula-only (table)", ["-m", "convcalc", *LAYER], 1.6),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, help="a convcalc source tree (PYTHONPATH)")
    parser.add_argument("--repeat", type=int, default=1, help="counts per command (the least)")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    env.pop("COLUMNS", None)
    if args.tree is not None:
        env["PYTHONPATH"] = str(args.tree.resolve())
    baseline = 0
    for label, arguments, goal in COMMANDS:
        subprocess.run([sys.executable, *arguments], env=env, capture_output=True)  # warm
        counted = min(
            callgrind.instructions([sys.executable, *arguments], env) for _ in range(args.repeat)
        )
        baseline = baseline or counted
        ratio = counted / baseline
        verdict = "" if goal is None else f"  goal {goal}x: {'met' if ratio <= goal else 'NOT met'}"
        print(f"{label:<48} {counted / 1e6:8.2f} M  {ratio:5.2f}x{verdict}", flush=True)


if __name__ == "__main__":
    main()
