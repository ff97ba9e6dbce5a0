"""The one adapter to fvcore: its FlopCountAnalysis on a real run, and its rules on shapes a meta
run dispatched. fvcore counts through torch.jit tracing, which torch 2.13 deprecates; everything
fvcore-specific stays here so it can be replaced."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from convcalc.measure.build import GraphModule
from convcalc.measure.counting import ConvCall

# --- fvcore ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _FvcoreResult:
    #: per layer: what fvcore counted for convolution operators (its "flops", i.e. MACs)
    per_layer: dict[int, int]
    #: per layer: what it counted for other operators (batch_norm, ...), by operator
    others: dict[int, dict[str, int]]
    unsupported: dict[int, dict[str, int]]
    #: operators fvcore has no handler for, counted with its conv rule by a handle convcalc adds
    extended: dict[str, int]


#: the keys fvcore files the multiply-adds of convolutions (and convcalc's handle for
#: aten::_convolution_mode) and of linear layers under
FVCORE_MAC_OPS = ("conv", "linear", "addmm", "matmul", "mm")


def fvcore_trace(model: GraphModule, x: torch.Tensor) -> _FvcoreResult:
    """fvcore's count of the real run, per layer. Its torch.jit tracing warns on every call in
    torch 2.13 (DeprecationWarning, TracerWarning) and logs unsupported operators: none of that
    is for users; what matters is reported as notes.

    ``padding='same'`` or ``'valid'`` makes torch dispatch aten::_convolution_mode, which fvcore
    0.1.5 has no handler for: it would count such a layer as 0 and say so only in a log line.
    convcalc registers fvcore's own conv rule for it (``set_op_handle``, fvcore's extension point).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore.nn's import runs torch.jit.script: deprecated
        from fvcore.nn import FlopCountAnalysis
        from fvcore.nn.jit_handles import conv_flop_count, get_shape

    extended: dict[str, int] = {}

    def convolution_mode(inputs: list[Any], outputs: list[Any]) -> Counter[str]:
        # aten::_convolution_mode(input, weight, bias, stride, padding: str, dilation, groups)
        extended["aten::_convolution_mode"] = extended.get("aten::_convolution_mode", 0) + 1
        x_shape, w_shape, out_shape = (get_shape(v) for v in (inputs[0], inputs[1], outputs[0]))
        return Counter({"conv": int(conv_flop_count(x_shape, w_shape, out_shape, False))})

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = FlopCountAnalysis(model, x)
        analysis.set_op_handle("aten::_convolution_mode", convolution_mode)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        by_module = analysis.by_module_and_operator()
        count = len(model.nodes)
        unsupported = {
            index: dict(analysis.unsupported_ops(f"nodes.{index}")) for index in range(count)
        }
    per_layer: dict[int, int] = {}
    others: dict[int, dict[str, int]] = {}
    for index in range(count):
        counts = by_module.get(f"nodes.{index}", {})
        per_layer[index] = sum(int(v) for op, v in counts.items() if op in FVCORE_MAC_OPS)
        others[index] = {op: int(v) for op, v in counts.items() if op not in FVCORE_MAC_OPS and v}
    return _FvcoreResult(per_layer, others, unsupported, extended)


def fvcore_rule(calls: Sequence[ConvCall], matmuls: Sequence[tuple[int, int, int]]) -> int:
    """fvcore's rules on shapes a meta run dispatched: its conv rule (a pure function in
    fvcore.nn.jit_handles) and its linear rule, rows × inner × columns (linear_flop_jit takes
    traced values, so it is restated here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore.nn's import runs torch.jit.script: deprecated
        from fvcore.nn.jit_handles import conv_flop_count

    return sum(
        int(conv_flop_count(list(c.x_shape), list(c.w_shape), list(c.out_shape), c.transposed))
        for c in calls
    ) + sum(rows * inner * columns for rows, inner, columns in matmuls)


def fvcore_module(model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis
        from fvcore.nn.jit_handles import conv_flop_count, get_shape

        def convolution_mode(inputs: list[Any], outputs: list[Any]) -> Counter[str]:
            shapes = (get_shape(v) for v in (inputs[0], inputs[1], outputs[0]))
            return Counter({"conv": int(conv_flop_count(*shapes, False))})

        analysis = FlopCountAnalysis(model, x)
        analysis.set_op_handle("aten::_convolution_mode", convolution_mode)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        try:
            return dict(analysis.by_module_and_operator())
        except Exception:  # fvcore could not trace this model
            return {}
