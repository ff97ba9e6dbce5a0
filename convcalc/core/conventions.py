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
    """Per tool: its rule, its figure for every counted layer, and the total. A user's model
    (a report with ``modules``): every module the tool counts, by :func:`model_conventions`."""
    if report.get("command") == "model" and "modules" in report:
        return model_conventions(report)
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


# --- whole models -----------------------------------------------------------------------------

ACTIVATIONS = {"ReLU", "ReLU6", "LeakyReLU", "ELU", "PReLU", "GELU", "SiLU"}
BATCH_NORMS = {"BatchNorm1d", "BatchNorm2d", "BatchNorm3d"}
OTHER_NORMS = {"LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"}
MAX_POOLS = {"MaxPool1d", "MaxPool2d", "MaxPool3d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d"}
AVG_POOLS = {"AvgPool1d", "AvgPool2d", "AvgPool3d"}
ADAPTIVE_AVG = {"AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d"}

#: per tool: what it prints, and its rule for every module kind it counts (read from its
#: source: fvcore 0.1.5 jit_handles.py; torch flop_counter.py; torchinfo 1.8 layer_info.py
#: calculate_macs, leaf modules only; thop 0.1.1 profile.py register_hooks + vision/
#: basic_hooks.py; ptflops pytorch_ops.py MODULES_MAPPING; calflops / DeepSpeed
#: profiler.py _*_flops_compute, eval mode)
MODEL_RULES: dict[str, str] = {
    "fvcore": "conv, linear, matmul, bmm, einsum: MACs; batch norm (eval): input elements × 2 "
    "(× 1 without affine); layer/group/instance norm: input × 5 (× 4 without affine); "
    "adaptive avg pool: input elements; activations, max/avg pool, adds: 0",
    "torch FlopCounterMode": "2·MACs of conv, matrix products and attention; nothing else",
    "torchinfo": "leaf modules with parameters: conv (weights + bias) × batch × output "
    "positions; any other (linear, norms): parameters × output.shape[0] (a linear on 3-D input: "
    "batch only, not every position); parameter-free modules: 0",
    "thop": "conv: MACs, no bias; linear: in_features × output elements; batch norm: 0 (its hook "
    "adds only when total_ops is already nonzero); ReLU, max pool: 0; avg pool: output "
    "elements; adaptive avg pool: (∏ input/output + 1) × output elements",
    "ptflops": "conv: MACs + bias adds; linear: input elements × out_features + out_features "
    "(bias once per call); batch/layer/group/instance norm: input elements × 2 (× 1 without "
    "affine); ReLU-like and GELU: output elements; every pool: input elements; multi-head "
    "attention: query scaling, the three projections, per head QKᵀ, softmax and ·V, the output "
    "projection, biases (its own hook)",
    "calflops / DeepSpeed": "conv: 2·MACs + bias adds; linear: 2·MACs + output elements (with "
    "bias); batch norm (eval): input × 2 (× 1 without affine); layer/group norm: input × 5 "
    "(× 4); activations: input elements; every pool: input elements",
}


def ptflops_attention(call: dict[str, int]) -> int:
    """ptflops' figure for one call of an nn.MultiheadAttention (its multihead_attention_counter
    _hook, pytorch_ops.py), from the dims of the query, key and value it was given: the query
    scaling, the three input projections (each by its own input's width squared), their biases,
    per head QKᵀ, the softmax and the product with V, and the output projection with its bias;
    times the batch."""
    qlen, klen, vlen = call["qlen"], call["klen"], call["vlen"]
    qdim, kdim, vdim, heads = call["qdim"], call["kdim"], call["vdim"], call["heads"]
    macs = qlen * qdim + qlen * qdim * qdim + klen * kdim * kdim + vlen * vdim * vdim
    if call["in_proj_bias"]:
        macs += (qlen + klen + vlen) * qdim
    macs += heads * (qlen * klen * (qdim // heads) + qlen * klen + qlen * klen * (vdim // heads))
    macs += qlen * vdim * (vdim + 1)
    return macs * call["batch"]


def _module_figure(tool: str, m: dict[str, Any]) -> int | None:
    """One tool's figure for one module of a model report's ``modules``; None: the tool does
    not count this module (0 is a counted zero)."""
    kind, op, calls = str(m["type"]), str(m["op"]), int(m["calls"])
    macs, bias = int(m["macs"]), int(m["bias_adds"])
    inp, out = int(m["input_elements"]), int(m["output_elements"])
    affine = int(m["params"]) > 0
    conv = op in ("conv", "conv_transpose")
    linear = op == "linear"
    if tool == "torch FlopCounterMode":
        return 2 * macs if macs else None
    if tool == "fvcore":
        if macs and not m["ops"].keys() - {
            "aten.convolution",
            "aten._convolution",
            "aten.mm",
            "aten.addmm",
            "aten.bmm",
            "aten.baddbmm",
            "aten.matmul",
        }:
            return macs
        if kind in BATCH_NORMS:
            return inp * (2 if affine else 1)
        if kind in OTHER_NORMS:
            return inp * (5 if affine else 4)
        if kind in ADAPTIVE_AVG:
            return inp
        return None
    if tool == "torchinfo":
        if conv or linear or kind in BATCH_NORMS | OTHER_NORMS:
            if conv:
                return int(m["weight_positions"])
            return calls * int(m["batch"]) * int(m["params"])
        return None
    if tool == "thop":
        if conv or linear:
            return macs
        if kind in BATCH_NORMS or kind in MAX_POOLS or kind in ACTIVATIONS - {"GELU", "SiLU"}:
            return 0
        if kind in AVG_POOLS:
            return out
        if kind in ADAPTIVE_AVG:
            return inp + out
        return None
    if tool == "ptflops":
        if kind == "MultiheadAttention":
            attention = m.get("attention_calls") or []
            return sum(ptflops_attention(call) for call in attention) if attention else None
        if conv:
            return macs + bias
        if linear:
            return macs + calls * int(m["bias_size"])
        if kind in BATCH_NORMS | OTHER_NORMS:
            return inp * (2 if affine else 1)
        if kind in ACTIVATIONS - {"SiLU"}:
            return out
        if kind in MAX_POOLS | AVG_POOLS | ADAPTIVE_AVG:
            return inp
        return None
    # calflops / DeepSpeed
    if conv:
        return 2 * macs + bias
    if linear:
        return 2 * macs + (out if m["bias_size"] else 0)
    if kind in BATCH_NORMS:
        return inp * (2 if affine else 1)
    if kind in OTHER_NORMS - {"InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"}:
        return inp * (5 if affine else 4)
    if kind in ACTIVATIONS:
        return inp
    if kind in MAX_POOLS | AVG_POOLS | ADAPTIVE_AVG:
        return inp
    return None


#: what a tool counts that its module rule above cannot see: calls in a forward that are not
#: modules (thop and torchinfo hook modules only: nothing to add)
CAVEATS = {
    "fvcore": "module rules only: functional calls its torch.jit trace counts as well "
    "(F.adaptive_avg_pool2d, F.batch_norm, F.layer_norm, F.group_norm, F.interpolate) are "
    "not modelled; its matrix products are (counted at the dispatch level)",
    "ptflops": "module rules only: functional calls in forward (F.relu, x + y, torch.matmul) "
    "that the tool may patch are not modelled",
    "calflops / DeepSpeed": "module rules only: functional calls in forward (F.relu, x + y, "
    "torch.matmul) that the tool may patch are not modelled",
}


def model_conventions(report: dict[str, Any]) -> dict[str, Any]:
    """Per tool, for a whole model (a ``model`` report's JSON): its rule applied to every
    module it counts, from the dispatch-level count (MACs, bias adds, elements in and out of
    each module that ran); the total; and the modules with counted work it leaves out."""
    result: dict[str, Any] = {}
    labels = {tool: label for tool, label, _ in TOOLS}
    for tool, rule in MODEL_RULES.items():
        figures: dict[str, int] = {}
        left_out: list[str] = []
        for module in report["modules"]:
            value = _module_figure(tool, module)
            if value is not None:
                figures[module["name"] or "(model)"] = value
            elif module["macs"]:
                left_out.append(module["name"] or "(model)")
        result[tool] = {
            "label": labels[tool],
            "rule": rule,
            "layers": figures,
            "total": sum(figures.values()),
            "not_counted_by_this_rule": left_out,
            "caveat": CAVEATS.get(tool, ""),
        }
    return result
