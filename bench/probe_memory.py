"""The model receptive-field probe's memory and CPU time in depth: `convcalc model`'s probe on a
chain of 3x3 convolutions (16 channels, ReLUs between) on a 1x3x32x32 input, whose field (two
positions a layer) is cut by the input's border at every size the probe tries, so it grows the
input as far as its limits let it.

    python bench/probe_memory.py [--convs 250 500 1000 2000]

Each depth runs in a process of its own (the peak resident memory is per process), with one
intra-op thread (CPU time on a shared machine). Columns: the largest input tried, why the
growth stopped, the probe's CPU seconds, and the process's peak resident memory (the model, its
weights and torch included: the first row shows about what that base is).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

CHILD = r"""
import resource, sys, time
import torch
from torch import nn
from convcalc.measure.rfprobe import model_fields
torch.set_num_threads(1)
convs = int(sys.argv[1])
layers = [nn.Conv2d(3, 16, 3, padding=1)]
for _ in range(convs - 1):
    layers += [nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1)]
model = nn.Sequential(*layers)
start = time.process_time()
fields = model_fields(model, (1, 3, 32, 32), every_layer=False)
cpu = time.process_time() - start
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
largest = "x".join(map(str, fields.sizes_tried[-1]))
limit = getattr(fields, "limit", "") or "-"
print(f"| {convs:,} | {largest} | {limit} | {cpu:.2f} s | {rss:,} MB |")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--convs", type=int, nargs="+", default=[250, 500, 1000, 2000])
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    print("| convs | largest input tried | growth stopped by | probe CPU | peak RSS |")
    print("|---:|---|---|---:|---:|")
    for convs in args.convs:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(convs)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        print(out.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
