"""Formula-only start-up, before against after: interleaved medians of fresh processes.

    python bench/startup_ab.py [--rounds 21] before=/path/to/old/tree after=/path/to/new/tree

Each round runs ``python -c "import typer, rich"`` (the baseline of issue 11's start-up goals)
and then, for every tree (put on ``PYTHONPATH``, so run it with an interpreter that has
convcalc's dependencies installed), ``convcalc conv --in 64 --out 256 -k 3 -p 1
--formula-only --json``, the same as a table, and ``convcalc conv --help``: stdout to
/dev/null and COLUMNS unset, as bench/speed.py runs them. Prints the medians of wall time and
of the child's CPU time, and their ratios to the baseline. Compile each tree's ``.pyc`` first
(``python -m compileall -q TREE/convcalc``): with PYTHONDONTWRITEBYTECODE set, a stale one is
recompiled in every run. Standard library only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

LAYER = ["conv", "--in", "64", "--out", "256", "-k", "3", "-p", "1", "--formula-only"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("trees", nargs="+", help="label=path of a tree holding convcalc/")
    args = parser.parse_args()
    trees = dict(tree.split("=", 1) for tree in args.trees)
    commands: dict[str, tuple[list[str], str | None]] = {
        "import typer, rich": ([sys.executable, "-c", "import typer, rich"], None)
    }
    for label, path in trees.items():
        run = [sys.executable, "-m", "convcalc"]
        commands[f"{label}: --formula-only --json"] = ([*run, *LAYER, "--json"], path)
        commands[f"{label}: --formula-only (table)"] = ([*run, *LAYER], path)
        commands[f"{label}: conv --help"] = ([*run, "conv", "--help"], path)
    wall: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.rounds):
        for name, (command, path) in commands.items():
            env = dict(os.environ)
            env.pop("COLUMNS", None)
            if path is not None:
                env["PYTHONPATH"] = path
            start = time.perf_counter()
            child = subprocess.Popen(
                command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            _, status, usage = os.wait4(child.pid, 0)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(usage.ru_utime + usage.ru_stime)
            if status != 0:
                raise SystemExit(f"{name} failed with status {status}")
    base_wall = statistics.median(wall["import typer, rich"])
    base_cpu = statistics.median(cpu["import typer, rich"])
    for name in commands:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(
            f"{name:<40} wall {w:.4f} s ({w / base_wall:.3f}x)  cpu {c:.4f} s ({c / base_cpu:.3f}x)"
        )


if __name__ == "__main__":
    main()
