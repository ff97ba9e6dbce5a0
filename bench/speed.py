"""Every speed goal of convcalc, measured in one run: medians and ratios to their baselines.

    python bench/speed.py [--repeat 5] [--batch-specs 1000]

Each command runs in a fresh process, `--repeat` times, interleaved with its baseline so that
machine noise hits both alike. Peak memory is the child's maximum resident set size. The peer
tools (fvcore, torchinfo, torch's FlopCounterMode) are run on the same layer, one process each;
torchinfo comes from the `bench` extra (pip install -e ".[bench]"). Standard library only.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from batch import mixed_specs  # noqa: E402

PY = sys.executable
CONVCALC = [PY, "-m", "convcalc"]
LAYER = ["--in", "64", "--out", "256", "-k", "3", "-p", "1"]
HUGE = ["--in", "512", "--out", "512", "-k", "3", "-p", "1", "--size", "8192", "--batch", "64"]

PEER_SETUP = (
    "import torch, warnings\nwarnings.simplefilter('ignore')\n"
    "m = torch.nn.Conv2d(64, 256, 3, padding=1)\nx = torch.zeros(1, 64, 224, 224)\n"
)
PEERS = {
    "fvcore FlopCountAnalysis + parameter_count": PEER_SETUP
    + "from fvcore.nn import FlopCountAnalysis, parameter_count\n"
    "print(FlopCountAnalysis(m, x).total(), parameter_count(m)[''])",
    "torchinfo summary": PEER_SETUP
    + "from torchinfo import summary\nprint(summary(m, input_data=x, verbose=0).total_mult_adds)",
    "torch FlopCounterMode": PEER_SETUP + "from torch.utils.flop_counter import FlopCounterMode\n"
    "with FlopCounterMode(display=False) as c:\n    m(x)\nprint(c.get_total_flops())",
}

BASELINES = {
    "import torch": [PY, "-c", "import torch"],
    # convcalc skips torch's interpreter teardown (os._exit after flushing): so does this one
    "import torch, os._exit": [PY, "-c", "import torch, os; os._exit(0)"],
    "import typer, rich": [PY, "-c", "import typer, rich"],
    # what any Rich table costs: the import, and printing a one-cell table (Rich's first print
    # sets its console up): the floor under goal 6's table
    "typer, rich, a one-cell Rich table": [
        PY,
        "-c",
        "import typer, rich\nfrom rich.console import Console\nfrom rich.table import Table\n"
        "table = Table('a')\ntable.add_row('1')\nConsole().print(table)",
    ],
}

#: (goal, label, command, baseline, goal ratio)
COMMANDS: list[tuple[str, str, list[str], str, float | None]] = [
    ("1", "convcalc --help", [*CONVCALC, "--help"], "import typer, rich", 1.3),
    ("1", "convcalc conv --help", [*CONVCALC, "conv", "--help"], "import typer, rich", 1.3),
    ("1", "convcalc --version", [*CONVCALC, "--version"], "import typer, rich", 2.0),
    (
        "2",
        "convcalc conv (64→256, k3, 224²), table",
        [*CONVCALC, "conv", *LAYER],
        "import torch, os._exit",
        1.3,
    ),
    (
        "2",
        "convcalc conv (64→256, k3, 224²), --json",
        [*CONVCALC, "conv", *LAYER, "--json"],
        "import torch, os._exit",
        1.3,
    ),
    (
        "3",
        "convcalc conv, 512→512 at 8192² batch 64 (8 TiB input)",
        [*CONVCALC, "conv", *HUGE],
        "import torch",
        None,
    ),
    (
        "6",
        "convcalc conv --formula-only, table",
        [*CONVCALC, "conv", *LAYER, "--formula-only"],
        "import typer, rich",
        1.6,
    ),
    (
        "6",
        "convcalc conv --formula-only --json",
        [*CONVCALC, "conv", *LAYER, "--formula-only", "--json"],
        "import typer, rich",
        1.3,
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


def batch_rate(count: int) -> tuple[float, float]:
    """Specs per second after start-up, and seconds to the first result."""
    import json
    import tempfile

    text = "".join(json.dumps(spec) + "\n" for spec in mixed_specs(count, 0))
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as handle:
        handle.write(text)
    started = time.perf_counter()
    process = subprocess.Popen(
        [*CONVCALC, "batch", handle.name],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    stamps = [time.perf_counter() for _ in process.stdout]
    process.wait()
    Path(handle.name).unlink()
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]), stamps[0] - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch-specs", type=int, default=1000)
    args = parser.parse_args()

    peers = {
        name: [PY, "-c", code]
        for name, code in PEERS.items()
        if "torchinfo" not in name or importlib.util.find_spec("torchinfo")
    }
    runs = {**BASELINES, **{label: cmd for _, label, cmd, _, _ in COMMANDS}, **peers}
    times: dict[str, list[float]] = {label: [] for label in runs}
    peaks: dict[str, list[int]] = {label: [] for label in runs}
    run_once(BASELINES["import torch"])  # warm the file cache once, unrecorded
    for _ in range(args.repeat):
        for label, command in runs.items():
            seconds, peak = run_once(command)
            times[label].append(seconds)
            peaks[label].append(peak)
    median = {label: statistics.median(values) for label, values in times.items()}

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; repeats: {args.repeat} (medians); hyperfine "
        f"installed: {bool(shutil.which('hyperfine'))}"
    )
    print()
    header = (
        f"{'goal':<5}{'command':<62}{'median s':>9}{'peak MiB':>9}  {'baseline':<20}"
        f"{'ratio':>7}{'goal':>7}"
    )
    print(header)
    print("-" * len(header))
    for label in BASELINES:
        print(f"{'':<5}{label:<62}{median[label]:>9.3f}{max(peaks[label]) / 1024:>9.0f}")
    for goal, label, _, baseline, target in COMMANDS:
        ratio = median[label] / median[baseline]
        verdict = "" if target is None else ("met" if ratio <= target else "NOT met")
        goal_text = "" if target is None else f"{target:.1f}x"
        print(
            f"{goal:<5}{label:<62}{median[label]:>9.3f}{max(peaks[label]) / 1024:>9.0f}  "
            f"{baseline:<20}{ratio:>6.2f}x{goal_text:>7} {verdict}"
        )

    rich_floor = median["typer, rich, a one-cell Rich table"] / median["import typer, rich"]
    print(
        f"6    a one-cell Rich table (import and print): {rich_floor:.2f}x `import typer, rich`: "
        "the floor of any table under goal 6's 1.6x"
    )

    huge = COMMANDS[5][1]
    one = COMMANDS[4][1]
    extra = median[huge] - median[one]
    print()
    print(
        f"3    huge layer minus one-layer report: {extra:+.2f} s, peak "
        f"{max(peaks[huge]) / 1024:.0f} MiB (goal: under 2 s more, under 1 GiB): "
        f"{'met' if extra < 2 and max(peaks[huge]) < 2**20 else 'NOT met'}"
    )

    rate, first = batch_rate(args.batch_specs)
    print(
        f"4    convcalc batch, {args.batch_specs} mixed specs: {rate:.0f} specs/s after start-up "
        f"({first:.2f} s to the first result; goal at least 200): "
        f"{'met' if rate >= 200 else 'NOT met'}"
    )

    print()
    print("5    the same layer (64→256, k3, 224²) by the tools users would otherwise run:")
    for name in peers:
        print(f"       {name:<48}{median[name]:>8.3f} s")
    fastest = min(peers, key=lambda name: median[name])
    ratio = median[one] / median[fastest]
    print(
        f"       {'convcalc conv --json':<48}{median[one]:>8.3f} s  = {ratio:.2f}x the fastest "
        f"({fastest}); goal at most 1.1x: {'met' if ratio <= 1.1 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
