"""The one adapter to fvcore: its FlopCountAnalysis on a real run, and its rules on shapes a meta
run dispatched. fvcore counts through torch.jit tracing, which torch 2.13 deprecates; everything
fvcore-specific stays here so it can be replaced."""

from __future__ import annotations

import functools
import importlib.util
import sys
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convcalc.measure.build import GraphModule
from convcalc.measure.counting import ConvCall


@dataclass(frozen=True)
class FvcoreCount:
    """What fvcore's FlopCountAnalysis counted, per module name (``""``: the whole model)."""

    #: module -> operator -> count (fvcore's "flops": one multiply-add is one flop)
    by_module: dict[str, dict[str, int]]
    #: module -> operator fvcore has no handler for -> calls
    unsupported: dict[str, dict[str, int]]
    #: operators fvcore has no handler for that convcalc counts with fvcore's own rule
    extended: dict[str, int]

    def macs(self, module: str) -> int:
        """The multiply-adds of convolutions and linear layers fvcore filed under ``module``."""
        counts = self.by_module.get(module, {})
        return sum(v for op, v in counts.items() if op in FVCORE_MAC_OPS)

    def others(self, module: str) -> dict[str, int]:
        """What else fvcore counted under ``module`` (batch_norm, ...), by operator."""
        counts = self.by_module.get(module, {})
        return {op: v for op, v in counts.items() if op not in FVCORE_MAC_OPS and v}


#: the keys fvcore files the multiply-adds of convolutions (and convcalc's handle for
#: aten::_convolution_mode) and of linear layers under
FVCORE_MAC_OPS = ("conv", "linear", "addmm", "matmul", "mm")


def _fvcore() -> tuple[Any, Any, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore.nn's import runs torch.jit.script: deprecated
        from fvcore.nn import FlopCountAnalysis
        from fvcore.nn.jit_handles import conv_flop_count, get_shape
    return FlopCountAnalysis, conv_flop_count, get_shape


def fvcore_count(model: nn.Module, x: torch.Tensor, modules: Sequence[str] = ()) -> FvcoreCount:
    """fvcore's count of a real run of ``model`` on ``x``, per module. Its torch.jit tracing
    warns on every call in torch 2.13 (DeprecationWarning, TracerWarning) and logs unsupported
    operators: none of that is for users; what matters is reported as notes. ``modules``: the
    names whose unsupported operators are wanted.

    ``padding='same'`` or ``'valid'`` makes torch dispatch aten::_convolution_mode, which fvcore
    0.1.5 has no handler for: it would count such a layer as 0 and say so only in a log line.
    convcalc registers fvcore's own conv rule for it (``set_op_handle``, fvcore's extension point).
    Raises what the trace raises (a model fvcore cannot trace).
    """
    flop_count_analysis, conv_flop_count, get_shape = _fvcore()
    extended: dict[str, int] = {}

    def convolution_mode(inputs: list[Any], outputs: list[Any]) -> Counter[str]:
        # aten::_convolution_mode(input, weight, bias, stride, padding: str, dilation, groups)
        extended["aten::_convolution_mode"] = extended.get("aten::_convolution_mode", 0) + 1
        x_shape, w_shape, out_shape = (get_shape(v) for v in (inputs[0], inputs[1], outputs[0]))
        return Counter({"conv": int(conv_flop_count(x_shape, w_shape, out_shape, False))})

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = flop_count_analysis(model, x)
        analysis.set_op_handle("aten::_convolution_mode", convolution_mode)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        by_module = {
            name: {op: int(v) for op, v in counts.items()}
            for name, counts in analysis.by_module_and_operator().items()
        }
        unsupported = {name: dict(analysis.unsupported_ops(name)) for name in modules}
    return FvcoreCount(by_module, unsupported, extended)


def graph_modules(model: GraphModule) -> list[str]:
    """The module names fvcore gives a graph's nodes: ``nodes.0``, ``nodes.1``, ..."""
    return [f"nodes.{index}" for index in range(len(model.nodes))]


@functools.cache
def _conv_rule() -> Any:
    """fvcore's conv rule, ``fvcore.nn.jit_handles.conv_flop_count``, without importing the
    package ``fvcore.nn``: its ``__init__`` imports FlopCountAnalysis and runs torch.jit.script
    (~0.3 s), which the rule does not need. jit_handles imports only the standard library and
    numpy (already loaded by torch); it is loaded from fvcore's own file, under a private name
    so that a later ``import fvcore.nn`` is not disturbed. Where fvcore.nn is loaded already,
    its module is used."""
    loaded = sys.modules.get("fvcore.nn.jit_handles")
    if loaded is not None:
        return loaded.conv_flop_count
    package = importlib.util.find_spec("fvcore")  # finds the package without running it
    if package is None or not package.submodule_search_locations:
        return _fvcore()[1]
    path = Path(package.submodule_search_locations[0]) / "nn" / "jit_handles.py"
    spec = importlib.util.spec_from_file_location("convcalc._fvcore_jit_handles", path)
    if spec is None or spec.loader is None:
        return _fvcore()[1]
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.conv_flop_count


def fvcore_rule(calls: Sequence[ConvCall], matmuls: Sequence[tuple[int, int, int]]) -> int:
    """fvcore's rules on shapes a run dispatched: its conv rule (a pure function in
    fvcore.nn.jit_handles) and its linear rule, rows × inner × columns (linear_flop_jit takes
    traced values, so it is restated here)."""
    conv_flop_count = _conv_rule()
    return sum(
        int(conv_flop_count(list(c.x_shape), list(c.w_shape), list(c.out_shape), c.transposed))
        for c in calls
    ) + sum(rows * inner * columns for rows, inner, columns in matmuls)


#: the aten ops, as a real run dispatches them, whose counterparts in fvcore's torch.jit trace
#: fvcore counts with its conv or linear rule (convolution; addmm and mm under aten::linear) or
#: ignores without a word (relu, the view of a flatten, the transpose of a linear's weight, the
#: padding of padding='same'): a run that dispatched nothing else is counted exactly as the
#: trace counts it by :func:`fvcore_rule` on its shapes, with no note lost (tested against the
#: trace, tests/test_onepass.py). Anything else (pooling, batch norm, other activations, add,
#: reflect padding) keeps the trace: fvcore's notes on it (no handler; its other counts) are
#: the trace's.
RULE_COVERS = frozenset(
    {
        "aten.convolution",
        "aten.constant_pad_nd",
        "aten.relu",
        "aten.relu_",
        "aten.view",
        "aten.t",
        "aten.addmm",
        "aten.mm",
    }
)


def rule_covers(ops: dict[int, list[str]]) -> bool:
    """Whether fvcore's rules on the dispatched shapes count this run as its trace would."""
    return all(op in RULE_COVERS for node in ops.values() for op in node)
