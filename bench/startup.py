"""Wall time and peak memory of convcalc's commands beside their baselines, measured in one run.

    python bench/startup.py [--repeat 5]

Each command runs in a fresh process, ``--repeat`` times, interleaved with its baseline so that
machine noise hits both alike; the table gives medians and the ratio to the baseline. Peak memory
is the child's maximum resident set size (``resource.getrusage``). Standard library only.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

PY = sys.executable
CONVCALC = [PY, "-m", "convcalc"]

BASELINES = {
    "import torch": [PY, "-c", "import torch"],
    "import typer, rich": [PY, "-c", "import typer, rich"],
}

#: (label, command, baseline label, goal ratio or None)
COMMANDS = [
    ("convcalc --help", [*CONVCALC, "--help"], "import typer, rich", 2.0),
    ("convcalc conv --help", [*CONVCALC, "conv", "--help"], "import typer, rich", 2.0),
    ("convcalc --version", [*CONVCALC, "--version"], "import typer, rich", 2.0),
    (
        "convcalc conv --in 64 --out 256 -k 3 -p 1",
        [*CONVCALC, "conv", "--in", "64", "--out", "256", "-k", "3", "-p", "1"],
        "import torch",
        1.2,
    ),
    (
        "  same, --json",
        [*CONVCALC, "conv", "--in", "64", "--out", "256", "-k", "3", "-p", "1", "--json"],
        "import torch",
        1.2,
    ),
    (
        "convcalc conv --in 512 --out 512 -k 3 -p 1 --size 8192 --batch 64",
        [
            *CONVCALC,
            "conv",
            "--in",
            "512",
            "--out",
            "512",
            "-k",
            "3",
            "-p",
            "1",
            "--size",
            "8192",
            "--batch",
            "64",
        ],
        "import torch",
        None,
    ),
]


def run_once(command: list[str]) -> tuple[float, int]:
    """Seconds of wall time and peak RSS (KiB) of one run of ``command``."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{' '.join(command)} failed with status {status}")
    return elapsed, usage.ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    times: dict[str, list[float]] = {label: [] for label in BASELINES}
    peaks: dict[str, list[int]] = {label: [] for label in BASELINES}
    for label, *_ in COMMANDS:
        times[label], peaks[label] = [], []
    everything = list(BASELINES.items()) + [(label, cmd) for label, cmd, *_ in COMMANDS]
    run_once(BASELINES["import torch"])  # warm the file cache once, unrecorded
    for _ in range(args.repeat):
        for label, command in everything:
            seconds, peak = run_once(command)
            times[label].append(seconds)
            peaks[label].append(peak)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        f"repeats: {args.repeat}, medians; hyperfine installed: {bool(shutil.which('hyperfine'))}"
    )
    print()
    header = (
        f"{'command':<70} {'median s':>9} {'peak MiB':>9} {'baseline':>20} {'ratio':>6} {'goal':>6}"
    )
    print(header)
    print("-" * len(header))
    for label in BASELINES:
        print(
            f"{label:<70} {statistics.median(times[label]):>9.3f} {max(peaks[label]) / 1024:>9.0f}"
        )
    for label, _command, baseline, goal in COMMANDS:
        median = statistics.median(times[label])
        ratio = median / statistics.median(times[baseline])
        verdict = "" if goal is None else ("met" if ratio <= goal else "NOT met")
        goal_text = "" if goal is None else f"{goal:.1f}x"
        print(
            f"{label:<70} {median:>9.3f} {max(peaks[label]) / 1024:>9.0f} {baseline:>20} "
            f"{ratio:>5.2f}x {goal_text:>6} {verdict}"
        )
    huge = COMMANDS[-1][0]
    extra = statistics.median(times[huge]) - statistics.median(times[COMMANDS[3][0]])
    print()
    print(f"huge layer minus one-layer report: {extra:+.2f} s (goal: under 2 s more, under 1 GiB)")


if __name__ == "__main__":
    main()
