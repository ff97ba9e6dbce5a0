"""A whole network through `convcalc stack --arch resnet50` against the tools users would
otherwise run on the same network (torchinfo, fvcore), whole processes, interleaved, medians.

    python bench/stack_speed.py [--repeat 3]

Peers need the `bench` extra (torchinfo) and fvcore; the network they run is model_speed.py's
ResNet-50 (torchvision's layout, written with torch.nn: torchvision is not needed).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
PEER = (
    "import torch, warnings, sys\n"
    f"sys.path.insert(0, {str(HERE)!r})\n"
    "warnings.simplefilter('ignore')\n"
    "import model_speed\nm = model_speed.resnet50().eval()\nx = torch.zeros(1, 3, 224, 224)\n"
)
COMMANDS = {
    "convcalc stack --arch resnet50 --json": [
        sys.executable,
        "-m",
        "convcalc",
        "stack",
        "--arch",
        "resnet50",
        "--json",
    ],
    "torchinfo summary": [
        sys.executable,
        "-c",
        PEER + "from torchinfo import summary\nprint(summary(m, input_data=x, verbose=0))",
    ],
    "fvcore FlopCountAnalysis": [
        sys.executable,
        "-c",
        PEER + "from fvcore.nn import FlopCountAnalysis\nprint(FlopCountAnalysis(m, x).total())",
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    repeat = parser.parse_args().repeat
    seconds: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(repeat):
        for name, command in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            seconds[name].append(time.perf_counter() - start)
    fastest = min(statistics.median(v) for k, v in seconds.items() if not k.startswith("convcalc"))
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"{name:40s} {median:7.2f} s  {median / fastest:5.2f}x the fastest peer")


if __name__ == "__main__":
    main()
