"""What each well-known tool would print for a layer, computed from convcalc's own figures and
labelled with the tool's rule (``--conventions``). Pure: no torch, no tool imported.

The number one confusion among users of FLOP counters is what "FLOPs" means. For a plain
convolution with M multiply-accumulates (MACs) and B bias additions:

======================  =====================  ==================================================
tool                    prints                 rule (and where it is written)
======================  =====================  ==================================================
fvcore                  "flops"                M: one fused multiply-add is one flop, bias not
                                               counted (fvcore/nn/jit_handles.py, conv_flop_count)
torch FlopCounterMode   FLOPs                  2·M, bias not counted
                                               (torch/utils/flop_counter.py, conv_flop_count)
torchinfo               "Mult-Adds"            every weight and bias element × batch × output
                                               positions = M + B for a conv
                                               (torchinfo/layer_info.py, LayerInfo.calculate_macs)
ptflops                 "MACs" (GMac)          ∏k·C_in·(C_out/g) per output position, plus bias:
                                               M + B (ptflops/pytorch_ops.py,
                                               conv_flops_counter_hook)
thop                    "MACs"                 output elements × (C_in/g)·∏k: M, bias not counted
                                               (thop/vision/calc_func.py,
                                               calculate_conv2d_flops ignores its bias flag)
calflops, DeepSpeed     FLOPs                  2·M + B (deepspeed/profiling/flops_profiler/
                                               profiler.py, _conv_flops_compute; calflops copies
                                               it)
======================  =====================  ==================================================

Transposed convolutions: torchinfo and ptflops count per *output* position with the same hooks
(weights × output positions), so they print more than the true multiply-adds whenever the
stride is above 1; fvcore, torch and thop count per input position.
Linear layers: fvcore, thop M; torch 2·M; torchinfo and ptflops M + B; calflops 2·M + B.
"""

from __future__ import annotations

import math
from typing import Any

TOOLS: list[tuple[str, str, str]] = [
    ("fvcore", "flops", "MACs (1 per multiply-add), no bias"),
    ("torch FlopCounterMode", "FLOPs", "2·MACs, no bias"),
    ("torchinfo", "Mult-Adds", "(weights + bias) × batch × output positions"),
    ("ptflops", "MACs", "∏k·C_in·(C_out/g) × output positions, + bias adds"),
    ("thop", "MACs", "MACs, no bias"),
    ("calflops / DeepSpeed", "FLOPs", "2·MACs + bias adds"),
]


def layer_figures(layer: dict[str, Any]) -> dict[str, int] | None:
    """Each tool's figure for one layer of a report's JSON; None for layers none of them counts
    alike (batch norm, activations, pooling: see the tools' own docs)."""
    spec = layer["spec"]
    op = spec["op"]
    macs = layer["macs"]["measured"]
    if macs is None:
        macs = layer["macs"]["formula"]
    bias = layer["bias_adds"]
    params = layer["params"]["formula"]
    out = layer["output_shape"]["formula"]
    if op in ("conv", "conv_transpose"):
        positions = out[0] * math.prod(out[2:])
        per_position = (
            math.prod(spec["kernel_size"])
            * spec["in_channels"]
            * (spec["out_channels"] // spec["groups"])
        )
        torchinfo = params * positions
        ptflops = per_position * positions + bias
    elif op == "linear":
        torchinfo = out[0] * params
        ptflops = macs + bias
    else:
        return None
    return {
        "fvcore": macs,
        "torch FlopCounterMode": 2 * macs,
        "torchinfo": torchinfo,
        "ptflops": ptflops,
        "thop": macs,
        "calflops / DeepSpeed": 2 * macs + bias,
    }


def conventions(report: dict[str, Any]) -> dict[str, Any]:
    """Per tool: its rule, its figure for every counted layer, and the total."""
    per_layer = [(layer["name"], layer_figures(layer)) for layer in report["layers"]]
    result: dict[str, Any] = {}
    for tool, label, rule in TOOLS:
        layers = {name: figures[tool] for name, figures in per_layer if figures is not None}
        result[tool] = {
            "label": label,
            "rule": rule,
            "layers": layers,
            "total": sum(layers.values()),
        }
    return result
