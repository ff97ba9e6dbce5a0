"""The torch room: the only package that imports torch and fvcore. Every figure here comes from
torch or fvcore observing a real run (on the CPU, or on torch's ``meta`` device for layers too big
to run here); nothing uses convcalc.core.formulas.

* build: the real modules a spec describes, and the graph that runs them
* counting: torch's registered FLOP formulas applied at the dispatch level
* fvcore_adapter: fvcore's FlopCountAnalysis (one adapter, so it can be replaced)
* probes: receptive fields by autograd on stand-ins
* timing: latency with torch.utils.benchmark
* run: one network measured (measure_graph)
* models: users' own nn.Modules
* verify: solve's answers checked on the real layer
"""

import torch as _torch  # noqa: F401  (every module here needs it: loaded first, then the GC told)

from convcalc import _runtime

_runtime.torch_loaded()
