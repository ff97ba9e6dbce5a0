"""The batch sweep rate: 2,000 mixed specs through one `convcalc batch` process.

    python bench/batch.py [--specs 2000] [--seed 0] [--keep specs.jsonl]
                          [--jobs N] [--formula-only] [--memory]

The specs cover every variant (1-D, 2-D, 3-D; grouped, depthwise, dilated, transposed with
output padding, every padding mode, `same` and `valid`, depthwise-separable pairs, pools), sizes
up to 512, and a few huge layers (measured on the meta device). The rate is taken after start-up:
from the first result line to the last, as the lines stream out. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def mixed_specs(count: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    specs: list[dict[str, object]] = []
    for index in range(count):
        dims = rng.choice([1, 2, 2, 2, 3])
        size_cap = {1: 512, 2: 512, 3: 48}[dims]
        size = rng.choice([7, 14, 28, 32, 56, 64, 112, 128, 224, 256, 512])
        size = min(size, size_cap)
        channels = rng.choice([1, 3, 8, 16, 32, 64, 128])
        out = rng.choice([8, 16, 32, 64, 128, 256])
        kind = rng.choice(
            [
                "conv",
                "grouped",
                "depthwise",
                "dilated",
                "transposed",
                "dw",
                "same",
                "valid",
                "reflect",
                "pool",
            ]
        )
        spec: dict[str, object] = {
            "in": channels,
            "dims": dims,
            "size": size,
            "out": out,
            "kernel": rng.choice([1, 3, 3, 5]),
        }
        if kind == "grouped":
            groups = rng.choice([g for g in (2, 4, 8) if channels % g == 0] or [1])
            spec.update(groups=groups, out=groups * rng.choice([2, 4, 8]), padding=1, kernel=3)
        elif kind == "depthwise":
            spec.update(groups=channels, out=channels, padding=1, kernel=3)
        elif kind == "dilated":
            spec.update(dilation=2, padding=2, kernel=3)
        elif kind == "transposed":
            spec.update(
                op="conv_transpose",
                kernel=4,
                stride=2,
                padding=1,
                output_padding=rng.choice([0, 1]),
            )
            spec["size"] = min(size, 128 if dims < 3 else 16)
        elif kind == "dw":
            spec.update(op="dw", kernel=3)
            spec.pop("dims")
        elif kind in ("same", "valid"):
            spec.update(padding=kind)
        elif kind == "reflect":
            spec.update(padding=1, padding_mode=rng.choice(["reflect", "replicate", "circular"]))
        elif kind == "pool":
            spec = {
                "op": rng.choice(["maxpool", "avgpool"]),
                "in": channels,
                "dims": dims,
                "size": size,
                "kernel": 2,
                "stride": 2,
            }
        else:
            spec["stride"] = rng.choice([1, 1, 2])
        if index % 100 == 7:  # a few huge ones: the meta device
            spec = {"in": 512, "out": 512, "kernel": 3, "padding": 1, "size": 4096, "batch": 32}
        specs.append(spec)
    return specs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="also write the specs to this file")
    parser.add_argument("--jobs", default="1", help="convcalc batch --jobs")
    parser.add_argument("--formula-only", action="store_true", help="convcalc batch --formula-only")
    parser.add_argument("--memory", action="store_true", help="convcalc batch --memory")
    args = parser.parse_args()
    extra = ["--jobs", args.jobs]
    extra += ["--formula-only"] if args.formula_only else []
    extra += ["--memory"] if args.memory else []

    specs = mixed_specs(args.specs, args.seed)
    text = "".join(json.dumps(spec) + "\n" for spec in specs)
    if args.keep:
        args.keep.write_text(text)
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as handle:
        handle.write(text)
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "convcalc", "batch", handle.name, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    stamps: list[float] = []
    errors = 0
    meta = 0
    for line in process.stdout:
        stamps.append(time.perf_counter())
        record = json.loads(line)
        errors += "error" in record
        meta += record.get("measured_on") == "meta"
        assert record.get("index") == len(stamps) - 1, "out of input order"
    process.wait()
    finished = time.perf_counter()
    Path(handle.name).unlink()
    count = len(stamps)
    rate = (count - 1) / (stamps[-1] - stamps[0]) if count > 1 else 0.0
    print(f"specs: {count} ({errors} errors, {meta} measured on the meta device)")
    print(f"start-up to first result: {stamps[0] - started:.2f} s")
    print(f"whole run: {finished - started:.2f} s")
    goal = 20_000 if args.formula_only else 2_500
    print(f"convcalc batch {' '.join(extra)}")
    print(f"rate after start-up: {rate:.1f} specs/s (goal in one process: at least {goal:,})")


if __name__ == "__main__":
    main()
