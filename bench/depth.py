"""How a network's cost grows with its depth: CPU seconds per layer at doubling depths, in one
process, for an inline stack by formula alone, the same stack measured on the meta device, and a
user's nn.Sequential through `convcalc model` (the CPU, the receptive-field probe included).
Flat per-layer figures mean linear cost; the last column is the deepest run's cost per layer
over the shallowest's.

    python bench/depth.py [--max 6400]

Each network alternates a 3x3 convolution (16 channels, or 8 for the model) and a ReLU, on a
32x32 input (16x16 for the model); the reports' JSON dicts are built too.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable

from convcalc import library


def stack_run(measure: library.Measure) -> Callable[[int], None]:
    def run(layers: int) -> None:
        source = "; ".join(["conv k3 p1 out16", "relu"] * (layers // 2))
        library.stack(source, size="32", measure=measure).to_dict()

    return run


def model_run(layers: int) -> None:
    from torch import nn

    modules: list[nn.Module] = []
    for _ in range(layers // 2):
        modules += [nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()]
    library.model(nn.Sequential(*modules), input=(1, 8, 16, 16)).to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=int, default=6400, help="deepest stack (layers)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # fvcore's tracing warns once per trace on torch 2.13
    depths = []
    depth = 200
    while depth <= args.max:
        depths.append(depth)
        depth *= 2
    cases: list[tuple[str, Callable[[int], None], list[int]]] = [
        ("stack --formula-only", stack_run(library.Measure(formula_only=True)), depths),
        ("stack --measure-on meta", stack_run(library.Measure("meta")), depths),
        ("model (nn.Sequential, CPU)", model_run, [d for d in depths if d <= args.max // 2]),
    ]
    print(f"{'network':28}" + "".join(f"{d:>10,}" for d in depths) + "   deepest/shallowest")
    for name, run, sizes in cases:
        run(20)  # imports and first uses
        per_layer = []
        for layers in sizes:
            started = time.process_time()
            run(layers)
            per_layer.append((time.process_time() - started) / layers)
        cells = "".join(f"{1e3 * t:>8.3f}ms" for t in per_layer)
        cells += " " * 10 * (len(depths) - len(sizes))
        print(f"{name:28}{cells}   {per_layer[-1] / per_layer[0]:.2f}x", flush=True)


if __name__ == "__main__":
    main()
