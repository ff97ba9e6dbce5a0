"""Where a batch spec's time goes, stage by stage: perf_counter around each stage of the per-spec
path (the rest runs unwrapped), over bench/batch.py's mix, in one process.

    python bench/batch_profile.py [--specs 500] [--memory] [--formula-only]

For the functions inside a stage: python -m cProfile -s tottime bench/batch_profile.py
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from batch import mixed_specs  # noqa: E402

from convcalc import engine, library  # noqa: E402
from convcalc.sources import batch as sweep_source  # noqa: E402

spent: collections.Counter[str] = collections.Counter()


def wrap(module: Any, name: str, label: str) -> None:
    real: Callable[..., Any] = getattr(module, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            spent[label] += time.perf_counter() - started

    setattr(module, name, timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=int, default=500)
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--formula-only", action="store_true")
    args = parser.parse_args()
    if not args.formula_only:
        from convcalc.measure import run

        wrap(run, "build_layer", "2a build the torch modules (meta)")
        wrap(run, "run_counted", "2b the meta forward, dispatch-counted")
        wrap(run, "probe_receptive_field", "2c receptive-field probes")
        wrap(run, "probe_cumulative_receptive_field", "2c receptive-field probes")
        wrap(run, "measure_graph", "2 measure_graph, all of it")
    wrap(sweep_source, "spec_network", "1 spec -> network (stack builder, validation)")
    wrap(engine, "with_memory", "3 memory figures (formulas; measured with --memory)")
    wrap(engine, "analyze_network", "0 engine.analyze_network, all of it")
    measure = (
        library.Measure(formula_only=True, memory=False)
        if args.formula_only
        else library.Measure("meta", memory=args.memory)
    )
    warm, specs = mixed_specs(100, 1), mixed_specs(args.specs, 0)
    for record in library.sweep(warm, measure=measure):
        json.dumps(record.to_dict())
    spent.clear()
    started = time.perf_counter()
    encoding = 0.0
    for record in library.sweep(specs, measure=measure):
        mark = time.perf_counter()
        json.dumps(record.to_dict())
        encoding += time.perf_counter() - mark
    total = time.perf_counter() - started
    spent["4 Record.to_dict + json.dumps"] = encoding
    count = len(specs)
    print(f"{count} specs: {count / total:,.0f} specs/s, {total / count * 1e3:.3f} ms a spec")
    for label, seconds in sorted(spent.items()):
        print(f"  {label:55s} {seconds / count * 1e3:7.3f} ms")


if __name__ == "__main__":
    main()
