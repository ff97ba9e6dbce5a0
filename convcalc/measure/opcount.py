"""Whole-network counting at torch's dispatch level, attributed to modules (measured side).

Every aten operator a forward pass dispatches is either counted by a named rule of
:data:`RULES` (convolution, matrix products, attention kernels) from the shapes the dispatch
really saw, or listed as not counted with its call count: shape and copy operators that do no
arithmetic (:data:`ZERO_COST`), operators whose arithmetic convcalc does not count (add, mul,
softmax, activations, norms...: :func:`known_arithmetic`), and any other operator, which may
carry compute convcalc has no rule for (``no_rule``: a warning, so ``--strict`` fails on it).
torch's own counter (torch.utils.flop_counter's
``flop_registry``) is applied to the same operators for the measured FLOPs; an operator it counts
and no rule here does is a warning. Each counted operator goes to the innermost module running
it (hooks on every module's forward, removed afterwards); operators outside any submodule go to
the root, ``""``. An operator that uses a module's parameter as its weight names it, so a
functional ``F.conv2d(x, self.conv.weight)`` is found even outside ``conv``'s forward.

The closed-form side is :mod:`convcalc.opformulas` (no torch); :func:`module_formula` feeds it the
numbers a module states (its spec, its input shapes), never the rule's counts.

No ``FlopCounterMode`` or ``torch.utils.module_tracker``: the first imports ``torch._dynamo`` on
first use (about a second); hooks are enough here.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.modules.module import (
    register_module_forward_hook,
    register_module_forward_pre_hook,
)
from torch.nn.parameter import UninitializedParameter, is_lazy
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from convcalc.core import opformulas
from convcalc.core.formulas import MUL, Derived, group, shape_text
from convcalc.core.report import NO_RULE
from convcalc.errors import MeasurementError, SpecError
from convcalc.kinds import ConvSpec, LayerSpec, LinearSpec
from convcalc.measure.models import spec_of

Shape = tuple[int, ...]

aten = torch.ops.aten


# --- rules: MACs of one dispatched operator from its arguments and output --------------------


def _numel(shape: Sequence[int]) -> int:
    return math.prod(int(v) for v in shape)


def _conv(args: Sequence[Any], out: Any) -> int:
    # convolution(input, weight, bias, stride, padding, dilation, transposed, ...): each output
    # element (each input element, transposed: it scatters) takes weight.shape[1:] taps:
    # (C_in/g)·∏k, or (C_out/g)·∏k for a transposed weight laid out (C_in, C_out/g, *k)
    transposed = bool(args[6]) if len(args) > 6 else False
    sites = args[0].shape if transposed else out.shape
    return _numel(sites) * _numel(args[1].shape[1:])


def _slow_conv(args: Sequence[Any], out: Any) -> int:
    return _numel(out.shape) * _numel(args[1].shape[1:])


def _mm(args: Sequence[Any], out: Any) -> int:
    m, k = args[0].shape
    return int(m) * int(k) * int(args[1].shape[1])


def _addmm(args: Sequence[Any], out: Any) -> int:
    return _mm(args[1:3], out)


def _bmm(args: Sequence[Any], out: Any) -> int:
    b, m, k = args[0].shape
    return int(b) * int(m) * int(k) * int(args[1].shape[2])


def _baddbmm(args: Sequence[Any], out: Any) -> int:
    return _bmm(args[1:3], out)


def _mv(args: Sequence[Any], out: Any) -> int:
    return _numel(args[0].shape)


def _addmv(args: Sequence[Any], out: Any) -> int:
    return _numel(args[1].shape)


def _dot(args: Sequence[Any], out: Any) -> int:
    return _numel(args[0].shape)


def _matmul(args: Sequence[Any], out: Any) -> int:
    # rarely reaches dispatch (it decomposes into mm/bmm); the output has ∏batch·m·n elements,
    # each a k-long dot product
    return _numel(out.shape) * int(args[0].shape[-1])


def _attention(q: Any, k: Any, v: Any) -> int:
    # q (..., L, E), k (..., S, E), v (..., S, Ev): L·S·E for q·kᵀ plus L·S·Ev for attn·v, per
    # batch × head
    batch = _numel(q.shape[:-2])
    length, source = int(q.shape[-2]), int(k.shape[-2])
    return batch * length * source * (int(q.shape[-1]) + int(v.shape[-1]))


def _sdpa(args: Sequence[Any], out: Any) -> int:
    return _attention(args[0], args[1], args[2])


def _efficient_attention(args: Sequence[Any], out: Any) -> int:
    # _efficient_attention_forward lays q out (B, L, H, E): move heads before positions
    q, k, v = (t.transpose(1, 2) for t in args[:3])
    return _attention(q, k, v)


def _native_mha(args: Sequence[Any], out: Any) -> int:
    # _native_multi_head_attention(query, key, value, embed_dim, num_head, qkv_weight, ...):
    # the eval-mode fast path of nn.MultiheadAttention, one operator for the whole block
    query, key = args[0], args[1]
    embed, heads = int(args[3]), int(args[4])
    batch = _numel(query.shape[:-2]) if query.dim() > 2 else 1
    length, source = int(query.shape[-2]), int(key.shape[-2])
    projections = batch * (length + 2 * source + length) * embed * embed
    head = embed // heads
    return projections + 2 * batch * heads * length * source * head


def _bias_adds(packet: Any, args: Sequence[Any], out: Any) -> int:
    """Bias additions one dispatched operator did, read from its operands: ``addmm(bias, x, w)``
    adds its 1-D bias to every output element; the fused ``_native_multi_head_attention``
    (query, key, value, E, heads, qkv_weight, qkv_bias, proj_weight, proj_bias, ...) adds
    qkv_bias's E-long thirds at each query, key and value position and proj_bias at each query
    position. 0 for other operators (a convolution's bias stays with its formula)."""
    if packet is aten.addmm:
        bias = args[0]
        return _numel(out.shape) if isinstance(bias, torch.Tensor) and bias.dim() == 1 else 0
    if packet is aten._native_multi_head_attention:
        query, key, value = args[0], args[1], args[2]
        qkv_bias = args[6] if len(args) > 6 else None
        proj_bias = args[8] if len(args) > 8 else None
        total = 0
        if isinstance(qkv_bias, torch.Tensor):
            third = _numel(qkv_bias.shape) // 3
            rows = sum(_numel(t.shape[:-1]) for t in (query, key, value))
            total += rows * third
        if isinstance(proj_bias, torch.Tensor):
            total += _numel(query.shape[:-1]) * _numel(proj_bias.shape)
        return total
    return 0


def _rows(data: Any) -> int:
    # the (time step, batch) pairs a recurrent kernel runs: its input holds one input_size-long
    # row per pair, laid out (T, B, I), (B, T, I), unbatched (T, I) or packed (ΣB_t, I)
    size = int(data.shape[-1]) if data.dim() else 0
    return _numel(data.shape) // size if size else 0


def _recurrent(data: Any, weights: Sequence[Any]) -> int:
    # each row meets every weight matrix of every layer and direction once: gates·hidden·input
    # (w_ih), gates·hidden·hidden (w_hh, gates·hidden·proj with projections) and proj·hidden
    # (w_hr); 1-D tensors in the list are biases (additions, not MACs)
    return _rows(data) * sum(_numel(w.shape) for w in weights if w.dim() == 2)


def _mkldnn_rnn_layer(args: Sequence[Any], out: Any) -> int:
    # mkldnn_rnn_layer(input, weight0 = w_ih (G·H, I), weight1 = w_hh (G·H, H), weight2,
    # weight3, hx, cx, reverse, batch_sizes, mode, hidden_size, ...): one layer, one direction
    # (reverse: the backward one). weight2/3 are the biases, or, without biases, w_ih/w_hh again
    # (torch passes them twice): only weight0 and weight1 are multiplied
    return _recurrent(args[0], (args[1], args[2]))


def _cudnn_rnn(args: Sequence[Any], out: Any) -> int:
    # _cudnn_rnn(input, weight[], weight_stride0, ...): every layer's and direction's w_ih,
    # w_hh (and w_hr with proj_size) in one list, biases beside them
    return _recurrent(args[0], args[1])


def _rnn_input(args: Sequence[Any], out: Any) -> int:
    # lstm/gru/rnn_tanh/rnn_relu.input(input, hx, params[], ...) and _lstm_mps; the .data
    # overload (a packed sequence) is (data, batch_sizes, hx, params[], ...)
    if isinstance(args[1], torch.Tensor) and isinstance(args[3], list | tuple):
        return _recurrent(args[0], args[3])
    return _recurrent(args[0], args[2])


def _rnn_cell(args: Sequence[Any], out: Any) -> int:
    # lstm_cell/gru_cell/rnn_tanh_cell/rnn_relu_cell(input, hx, w_ih, w_hh, b_ih, b_hh)
    return _recurrent(args[0], (args[2], args[3]))


Rule = Callable[[Sequence[Any], Any], int]

#: aten overload packet -> (its MAC rule, the arguments that may be a module's weight)
RULES: dict[Any, tuple[Rule, tuple[int, ...]]] = {
    aten.convolution: (_conv, (1,)),
    aten._convolution: (_conv, (1,)),
    aten.convolution_overrideable: (_conv, (1,)),
    aten._slow_conv2d_forward: (_slow_conv, (1,)),
    aten.mm: (_mm, (1, 0)),
    aten.addmm: (_addmm, (2, 1)),
    aten.bmm: (_bmm, (1, 0)),
    aten.baddbmm: (_baddbmm, (2, 1)),
    aten.mv: (_mv, (0, 1)),
    aten.addmv: (_addmv, (1, 2)),
    aten.dot: (_dot, (0, 1)),
    aten.matmul: (_matmul, (1, 0)),
    aten._scaled_dot_product_flash_attention_for_cpu: (_sdpa, ()),
    aten._scaled_dot_product_flash_attention: (_sdpa, ()),
    aten._scaled_dot_product_efficient_attention: (_sdpa, ()),
    aten._scaled_dot_product_cudnn_attention: (_sdpa, ()),
    aten._efficient_attention_forward: (_efficient_attention, ()),
    aten._flash_attention_forward: (_efficient_attention, ()),
    aten._native_multi_head_attention: (_native_mha, (5,)),
}
#: fused recurrent kernels (LSTM, GRU, RNN): one operator for a layer's (or the whole module's)
#: matrix products over every time step; torch's flop counter has no formula for them
RECURRENT_RULES: dict[str, tuple[Rule, tuple[int, ...]]] = {
    "mkldnn_rnn_layer": (_mkldnn_rnn_layer, (1, 2)),
    "_cudnn_rnn": (_cudnn_rnn, ()),
    "miopen_rnn": (_cudnn_rnn, ()),
    "lstm": (_rnn_input, ()),
    "gru": (_rnn_input, ()),
    "rnn_tanh": (_rnn_input, ()),
    "rnn_relu": (_rnn_input, ()),
    "_lstm_mps": (_rnn_input, ()),
    "lstm_cell": (_rnn_cell, (2, 3)),
    "gru_cell": (_rnn_cell, (2, 3)),
    "rnn_tanh_cell": (_rnn_cell, (2, 3)),
    "rnn_relu_cell": (_rnn_cell, (2, 3)),
}
RECURRENT_PACKETS: set[Any] = set()
for _name, _entry in RECURRENT_RULES.items():
    _packet = getattr(aten, _name, None)  # a kernel this build of torch lacks: no rule needed
    if _packet is not None:
        RULES[_packet] = _entry
        RECURRENT_PACKETS.add(_packet)
#: the note on a recurrent kernel's count
RECURRENT_NOTE = (
    "a fused recurrent kernel (LSTM, GRU, RNN) that torch's flop counter has no formula for "
    "(FlopCounterMode counts 0): convcalc counts gates·hidden·(input + hidden) MACs per time "
    "step, batch row, layer and direction (gates: LSTM 4, GRU 3, RNN 1; + proj·hidden with "
    "proj_size), read from the weights the kernel received, and FLOPs = 2·MACs (convcalc's, "
    "as torch counts mm); the gates' elementwise arithmetic (sigmoid, tanh, the cell update) "
    "is not counted, like other elementwise operators"
)
CONV_PACKETS = {aten.convolution, aten._convolution, aten.convolution_overrideable}


def _sdpa_torch_flops(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
    # torch's own SDPA formula (the one its registry applies to the flash, efficient and cudnn
    # variants), on the CPU flash kernel's q, k, v: (B, H, L, E), the same layout
    from torch.utils.flop_counter import sdpa_flop_count

    return int(sdpa_flop_count(args[0].shape, args[1].shape, args[2].shape))


#: operators torch's flop registry has no entry for whose FLOPs are still torch's formula: the
#: CPU fast path of scaled_dot_product_attention runs a variant the registry omits (torch 2.x)
TORCH_FORMULA_ALIASES: dict[Any, Callable[..., int]] = {
    packet: _sdpa_torch_flops
    for name in ("_scaled_dot_product_flash_attention_for_cpu",)
    if (packet := getattr(aten, name, None)) is not None
}


def torch_flop_formula(packet: Any) -> Callable[..., int] | None:
    """torch's FLOP formula for ``packet``: its registry's, else the same formula torch applies
    to that operator's other variants (:data:`TORCH_FORMULA_ALIASES`); None where torch has none."""
    found = flop_registry.get(packet)
    if found is None:
        found = TORCH_FORMULA_ALIASES.get(packet)
    return found


#: operators that move, reshape, copy or create data and do no arithmetic
ZERO_COST = frozenset(
    f"aten.{name}"
    for name in (
        "view",
        "_unsafe_view",
        "reshape",
        "permute",
        "transpose",
        "t",
        "expand",
        "squeeze",
        "unsqueeze",
        "select",
        "slice",
        "narrow",
        "split",
        "split_with_sizes",
        "chunk",
        "unbind",
        "cat",
        "stack",
        "flatten",
        "unflatten",
        "as_strided",
        "alias",
        "detach",
        "clone",
        "contiguous",
        "_to_copy",
        "copy_",
        "empty",
        "empty_like",
        "new_empty",
        "empty_strided",
        "zeros",
        "zeros_like",
        "new_zeros",
        "ones",
        "ones_like",
        "new_ones",
        "full",
        "full_like",
        "fill_",
        "zero_",
        "arange",
        "lift_fresh",
        "lift_fresh_copy",
        "constant_pad_nd",
        "reflection_pad1d",
        "reflection_pad2d",
        "reflection_pad3d",
        "replication_pad1d",
        "replication_pad2d",
        "replication_pad3d",
        "_pad_circular",
        "index_select",
        "gather",
        "index",
        "embedding",
        "diagonal",
        "roll",
        # a packed sequence's order and its undoing (nn.utils.rnn): data moved, nothing computed
        "_pack_padded_sequence",
        "_pad_packed_sequence",
        "flip",
        "repeat",
        "pixel_shuffle",
        "pixel_unshuffle",
        "channel_shuffle",
        "uniform_",
        "normal_",
        "randn",
        "rand",
        "dropout",
        "native_dropout",
        "sym_size",
        "sym_stride",
        "sym_numel",
        "masked_fill",
        # the in-place fill a padding mask takes (nn.MultiheadAttention's key_padding_mask)
        "masked_fill_",
        "index_fill",
        "index_fill_",
        "masked_scatter",
        "masked_scatter_",
        "where",
        "bernoulli_",
        # the in-place and unsafe twins of the views above, and other copies (a GRU's cell
        # splits its gates with unsafe_split)
        "unsafe_split",
        "unsafe_split_with_sizes",
        "unsafe_chunk",
        "transpose_",
        "t_",
        "squeeze_",
        "unsqueeze_",
        "as_strided_",
        "_reshape_alias",
        "view_as",
        "expand_as",
        "unfold",
        "_unsafe_index",
        "im2col",
        "slice_scatter",
        "select_scatter",
        "masked_select",
        "nonzero",
        "_local_scalar_dense",
        "scalar_tensor",
        "new_full",
        "empty_permuted",
        "resize_",
        "set_",
        "lift",
    )
)

#: operators with arithmetic that is not multiply-adds, beyond what torch tags pointwise or
#: reduction and the pooling, norm, softmax and upsampling families (:func:`known_arithmetic`)
KNOWN_ARITHMETIC = frozenset(
    f"aten.{name}"
    for name in (
        "hardswish",
        "hardswish_",
        "glu",
        "prelu",
        "_prelu_kernel",
        "log_sigmoid_forward",
        "rrelu_with_noise",
        "cumsum",
        "cumprod",
        "logcumsumexp",
        "topk",
        "sort",
        "argsort",
        "scatter",
        "scatter_",
        "scatter_add",
        "scatter_add_",
        "scatter_reduce",
        "index_add",
        "index_add_",
        "index_put",
        "index_put_",
        "_index_put_impl_",
        "index_copy",
        "col2im",
        "grid_sampler_2d",
        "grid_sampler_3d",
        "affine_grid_generator",
        "embedding_bag",
        "_embedding_bag",
        "_embedding_bag_forward_only",
        "bucketize",
        "searchsorted",
        "histc",
        "bincount",
        "one_hot",
        "linspace",
        "logspace",
        "cross_entropy_loss",
        "nll_loss_forward",
        "nll_loss2d_forward",
        "mse_loss",
        "l1_loss",
        "smooth_l1_loss",
        "huber_loss",
        "binary_cross_entropy",
        "binary_cross_entropy_with_logits",
        "kl_div",
        # gate arithmetic on gates the matrix products (counted) already made
        "_thnn_fused_lstm_cell",
        "_thnn_fused_gru_cell",
    )
)
_ARITHMETIC_WORDS = ("pool", "norm", "softmax", "upsample")
_ARITHMETIC_TAGS = frozenset({torch.Tag.pointwise, torch.Tag.reduction})


def known_arithmetic(packet: Any) -> bool:
    """Whether an operator no rule counts is known to do no multiply-adds worth counting:
    elementwise (torch tags it pointwise), a reduction, a pooling, norm, softmax or upsampling
    operator, or one of :data:`KNOWN_ARITHMETIC`. Any other (a fused kernel, a custom op, an
    aten operator convcalc has no rule for) may carry compute: :func:`count_model` names it
    apart, in ``no_rule``."""
    name = str(packet)
    if name in KNOWN_ARITHMETIC:
        return True
    if not name.startswith("aten."):
        return False
    if any(word in name for word in _ARITHMETIC_WORDS):
        return True
    overloads = getattr(packet, "overloads", None)
    if overloads is None:
        return False
    return any(
        not _ARITHMETIC_TAGS.isdisjoint(getattr(packet, overload).tags) for overload in overloads()
    )


#: operators through which a parameter keeps its name (``t(weight)`` is still the weight)
_WEIGHT_VIEWS = {
    aten.t,
    aten.transpose,
    aten.view,
    aten._unsafe_view,
    aten.reshape,
    aten.permute,
    aten.expand,
    aten.unsqueeze,
    aten.squeeze,
    aten.select,
    aten.slice,
    aten.split,
    aten.split_with_sizes,
    aten.chunk,
    aten.unbind,
    aten.alias,
    aten.detach,
    aten.clone,
    aten._to_copy,
}


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpCount:
    """One counted operator in one module: how often it ran and what it cost."""

    module: str
    #: aten overload packet, like ``aten.addmm``
    op: str
    calls: int
    #: convcalc's rule on the dispatched shapes
    macs: int
    #: torch.utils.flop_counter's formula on the same calls (0 where torch has none)
    flops: int
    #: the parameter (full dotted name) the operator used as its weight, if any
    weight: str | None = None
    #: whether torch's flop counter has a formula for this operator
    torch_counts: bool = True


@dataclass(frozen=True)
class ConvCall:
    """One dispatched convolution: what it really received."""

    module: str
    weight: str | None
    input_shape: Shape
    weight_shape: Shape
    output_shape: Shape
    stride: Shape
    padding: Shape
    dilation: Shape
    transposed: bool
    output_padding: Shape
    groups: int
    #: the first tensor input of the module running it (this call), if a module was running
    module_input: Shape | None


@dataclass(frozen=True)
class AttentionHyper:
    """What an ``nn.MultiheadAttention`` states: enough for its closed form."""

    embed_dim: int
    num_heads: int
    kdim: int
    vdim: int
    batch_first: bool
    #: in_proj and out_proj have biases
    bias: bool = True
    #: add_bias_kv: two learned (1, 1, E) rows appended to key and value
    bias_kv: bool = False


@dataclass(frozen=True)
class ModuleCount:
    """One module that ran: its own operators (those it ran itself, children excluded)."""

    name: str
    type: str
    calls: int
    #: MACs and torch FLOPs of the operators this module ran itself
    macs: int
    flops: int
    #: its own parameters (not its children's), read after the run (lazy modules materialised)
    params: int
    #: tensors of the first call's positional inputs and of its output, flattened from any
    #: structure (tuples, lists, dicts)
    input_shapes: tuple[Shape, ...]
    output_shapes: tuple[Shape, ...]
    ops: tuple[OpCount, ...]
    #: with its children
    inclusive_macs: int = 0
    inclusive_flops: int = 0
    #: positional input tensors of every call, in order
    call_inputs: tuple[tuple[Shape, ...], ...] = ()
    #: how many positional arguments (tensors or not) each call had
    call_arities: tuple[int, ...] = ()
    #: bias additions its own dispatched operators did, every call (addmm's 1-D bias, the fused
    #: attention's qkv and out biases: opcount._bias_adds); convolutions' not read here
    bias_adds: int = 0
    #: per call: (input shape, padding) the module's first convolution operator really received
    conv_received: tuple[tuple[Shape, Shape] | None, ...] = ()
    #: a lazy module (nn.LazyConv2d...) that this run materialised
    lazy: bool = False
    #: conv / linear / pool / norm spec of the module after the run (None for other modules)
    spec: LayerSpec | None = None
    attention: AttentionHyper | None = None
    notes: tuple[str, ...] = ()
    #: what an nn.LSTM / GRU / RNN or a recurrent cell states (None for other modules)
    recurrent: opformulas.RecurrentHyper | None = None


@dataclass(frozen=True)
class CountResult:
    """Everything one forward pass dispatched, counted or named."""

    modules: tuple[ModuleCount, ...]
    #: sum of convcalc's rules over every counted operator
    total_macs: int
    #: sum of torch.utils.flop_counter's formulas over every operator it has one for
    total_flops: int
    #: every operator no rule counts: name -> calls (= zero_cost + arithmetic + no_rule)
    uncounted: dict[str, int]
    #: of those, shape/copy operators that do no arithmetic
    zero_cost: dict[str, int]
    #: of those, operators with arithmetic convcalc does not count (add, mul, softmax, relu...):
    #: known elementwise, reduction, pooling, norm or softmax operators
    arithmetic: dict[str, int]
    #: operators torch counts and convcalc does not, or where the two disagree (``--strict``)
    warnings: tuple[str, ...]
    #: what the reader should know (torch has no formula for an operator convcalc counts, ...)
    notes: tuple[str, ...]
    #: ``dict{out: 2×21×32×32, aux: 2×21×32×32}``, ``tuple(2×10, list[2×5, 2×5])``
    output_structure: str
    output_shapes: tuple[Shape, ...]
    conv_calls: tuple[ConvCall, ...]
    params: int
    device: str
    #: where each of output_shapes sits in the output: ``""`` for a lone tensor, ``"out"``,
    #: ``"1.0"`` (dict keys and sequence indexes, dotted)
    output_names: tuple[str, ...] = ()
    #: of the uncounted, operators convcalc has no rule for and does not know to be
    #: elementwise (a fused kernel, a custom op): they may carry compute; each is a warning
    no_rule: dict[str, int] = field(default_factory=dict)

    def module(self, name: str) -> ModuleCount:
        """The module of that dotted name (``""``: the root); KeyError if it did not run."""
        for module in self.modules:
            if module.name == name:
                return module
        raise KeyError(name)


# --- the counting mode -------------------------------------------------------------------------


class _OpCounter(TorchDispatchMode):
    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # TorchDispatchMode wraps __torch_dispatch__ in torch._disable_dynamo unless this is
        # False, and that wrapper imports torch._dynamo (~1 s) on the first op. We never compile.
        return False

    def __init__(self, owners: dict[int, tuple[Any, str]]) -> None:
        super().__init__()
        #: id(tensor) -> (weakref to it, parameter name): parameters and views of them
        self.owners = owners
        self.stack: list[str] = [""]
        self.inputs: list[Shape | None] = [None]
        #: (module, packet, weight) -> [calls, macs, flops]
        self.counts: dict[tuple[str, Any, str | None], list[int]] = {}
        self.uncounted: dict[Any, int] = {}
        self.torch_only: dict[Any, list[int]] = {}
        self.convs: list[ConvCall] = []
        #: module name -> how many positional arguments each of its calls had
        self.arities: dict[str, list[int]] = {}
        #: module name -> bias additions its dispatched operators did (_bias_adds)
        self.bias_adds: dict[str, int] = {}

    def _owner(self, args: Sequence[Any], indexes: tuple[int, ...]) -> str | None:
        for index in indexes:
            if index < len(args):
                entry = self.owners.get(id(args[index]))
                if entry is not None and entry[0]() is args[index]:
                    return str(entry[1])
        return None

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        entry = RULES.get(packet)
        if entry is None:
            self.uncounted[packet] = self.uncounted.get(packet, 0) + 1
            if packet in flop_registry:
                found = self.torch_only.setdefault(packet, [0, 0])
                found[0] += 1
                found[1] += int(flop_registry[packet](*args, **kwargs, out_val=out))
            elif packet in _WEIGHT_VIEWS and args and id(args[0]) in self.owners:
                self._propagate(args[0], out)
            return out
        rule, weight_args = entry
        macs = rule(args, out)
        biased = _bias_adds(packet, args, out)
        if biased:
            self.bias_adds[self.stack[-1]] = self.bias_adds.get(self.stack[-1], 0) + biased
        formula = torch_flop_formula(packet)
        flops = int(formula(*args, **kwargs, out_val=out)) if formula is not None else 0
        if formula is None and packet in RECURRENT_PACKETS:
            flops = 2 * macs  # torch has no formula: convcalc's, as RECURRENT_NOTE says
        weight = self._owner(args, weight_args) if self.owners else None
        module = self.stack[-1]
        key = (module, packet, weight)
        found_count = self.counts.get(key)
        if found_count is None:
            self.counts[key] = [1, macs, flops]
        else:
            found_count[0] += 1
            found_count[1] += macs
            found_count[2] += flops
        if packet in CONV_PACKETS:
            self.convs.append(
                ConvCall(
                    module,
                    weight,
                    tuple(args[0].shape),
                    tuple(args[1].shape),
                    tuple(out.shape),
                    tuple(args[3]),
                    tuple(args[4]),
                    tuple(args[5]),
                    bool(args[6]),
                    tuple(args[7]),
                    int(args[8]),
                    self.inputs[-1],
                )
            )
        return out

    def _propagate(self, source: Any, out: Any) -> None:
        entry = self.owners[id(source)]
        if entry[0]() is not source:
            return
        outs = out if isinstance(out, list | tuple) else (out,)
        for item in outs:
            if isinstance(item, torch.Tensor):
                self.owners[id(item)] = (weakref.ref(item), entry[1])


# --- structures --------------------------------------------------------------------------------


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item)


def _named_tensors(value: Any, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Like :func:`_tensors`, with each tensor's place: dict keys and indexes, dotted."""
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _named_tensors(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _named_tensors(item, f"{prefix}.{index}" if prefix else str(index))


def _shapes(value: Any) -> tuple[Shape, ...]:
    return tuple(tuple(int(v) for v in t.shape) for t in _tensors(value))


def describe_structure(value: Any) -> str:
    """``2×10`` for a tensor, ``tuple(…)``, ``list[…]``, ``dict{key: …}``, nested; any other
    value by its type name."""
    if isinstance(value, torch.Tensor):
        return shape_text(value.shape) if value.dim() else "scalar"
    if isinstance(value, dict):
        inner = ", ".join(f"{k}: {describe_structure(v)}" for k, v in value.items())
        return f"{type(value).__name__}{{{inner}}}"
    if isinstance(value, list):
        return "list[" + ", ".join(describe_structure(v) for v in value) + "]"
    if isinstance(value, tuple):
        return f"{type(value).__name__}(" + ", ".join(describe_structure(v) for v in value) + ")"
    return type(value).__name__


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


@contextlib.contextmanager
def _user_code() -> Iterator[None]:
    """The user's code may print (to stderr: stdout carries convcalc's data) and warn."""
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def own_dtype(model: nn.Module) -> torch.dtype:
    """The dtype a model computes in: its first floating parameter's (or buffer's), float32
    for a model with none. A model made half (``.half()``) is probed with a half input."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.dtype.is_floating_point and not is_lazy(tensor):
            return tensor.dtype
    return torch.float32


def _inputs(
    example_inputs: Any, device: str, dtype: torch.dtype = torch.float32
) -> tuple[Any, ...]:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs.to(device),)
    if isinstance(example_inputs, list | tuple) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in example_inputs
    ):
        if not example_inputs or any(v <= 0 for v in example_inputs):
            raise SpecError("input", f"input shape {example_inputs!r} must be positive sizes")
        return (torch.zeros(tuple(example_inputs), device=device, dtype=dtype),)
    if isinstance(example_inputs, list | tuple):
        return tuple(v.to(device) if isinstance(v, torch.Tensor) else v for v in example_inputs)
    raise SpecError("input", f"cannot make inputs of {type(example_inputs).__name__}")


def _args_and_kwargs(
    example_inputs: Any, device: str, dtype: torch.dtype
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The forward's positional and keyword arguments: a tuple of
    :class:`~convcalc.core.modelinput.ModelInput` (several inputs, integer ones, keyword ones:
    measure.modelargs), else what :func:`_inputs` makes (no keywords)."""
    from convcalc.core.modelinput import ModelInput

    if isinstance(example_inputs, tuple) and any(isinstance(v, ModelInput) for v in example_inputs):
        from convcalc.measure.modelargs import make_args

        made = make_args(example_inputs, device, dtype)
        return made.args, made.kwargs
    return _inputs(example_inputs, device, dtype), {}


def _on_device(model: nn.Module, device: str) -> nn.Module:
    tensors = [*model.parameters(), *model.buffers()]
    if all(t.device.type == device for t in tensors):
        return model
    # a copy: the caller's model stays where it is
    moved = copy.deepcopy(model)
    for module in moved.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if is_lazy(param):
                # .to() would turn it into an empty initialised tensor that never materialises
                setattr(module, name, UninitializedParameter(device=device, dtype=param.dtype))
    return moved.to(device)


# --- counting ----------------------------------------------------------------------------------


def count_model(
    model: nn.Module,
    example_inputs: Any,
    device: str = "cpu",
    strict: bool = False,
    *,
    within: Any = None,
) -> CountResult:
    """Run ``model`` once under no_grad on ``device`` ("cpu" or "meta": shapes only, so huge
    models count in milliseconds) and count every dispatched operator.

    ``example_inputs``: a tensor, a tuple/list of positional inputs, or a shape (tuple of ints:
    zeros of that shape). The model may return any structure of tensors (dict, tuple, list,
    nested). Raises :class:`SpecError` when the model raises, exits, or returns no tensor;
    with ``strict``, :class:`MeasurementError` when there is any warning (an operator torch's
    counter counts and convcalc does not, or one where the two disagree).

    ``within``: an object whose ``running(model, inputs)`` is a context entered inside the
    counting mode around the forward (measure.modelpass.ModelPass: the memory figures of the
    same forward; its dispatch mode sees each operator before the counting mode does).
    """
    if device not in ("cpu", "meta"):
        raise SpecError("device", f"device must be cpu or meta, not {device!r}")
    model = _on_device(model, device).eval()
    args, kwargs = _args_and_kwargs(example_inputs, device, own_dtype(model))
    names: dict[int, str] = {}
    for name, module in model.named_modules():
        names.setdefault(id(module), name)
    lazy = {
        name
        for name, module in model.named_modules()
        if isinstance(module, LazyModuleMixin) and module.has_uninitialized_params()  # type: ignore[misc]
    }
    owners: dict[int, tuple[Any, str]] = {
        id(p): (weakref.ref(p), name) for name, p in model.named_parameters()
    }
    counter = _OpCounter(owners)
    calls: dict[str, int] = {}
    call_inputs: dict[str, list[tuple[Shape, ...]]] = {}
    outputs: dict[str, tuple[Shape, ...]] = {}
    order: list[str] = []
    conv_starts: dict[str, list[int]] = {}

    def before(module: nn.Module, inputs: Any) -> None:
        name = names.get(id(module))
        if name is None:  # a module built inside forward: its ops stay with its caller
            counter.stack.append(counter.stack[-1])
            counter.inputs.append(counter.inputs[-1])
            return
        if name not in calls:
            calls[name] = 0
            order.append(name)
            call_inputs[name] = []
        calls[name] += 1
        shapes = _shapes(inputs)
        call_inputs[name].append(shapes)
        counter.arities.setdefault(name, []).append(len(inputs))
        conv_starts.setdefault(name, []).append(len(counter.convs))
        counter.stack.append(name)
        counter.inputs.append(shapes[0] if shapes else None)

    def after(module: nn.Module, inputs: Any, output: Any) -> None:
        if len(counter.stack) > 1:
            counter.stack.pop()
            counter.inputs.pop()
        name = names.get(id(module))
        if name is not None and name not in outputs:
            outputs[name] = _shapes(output)

    handles = [
        register_module_forward_pre_hook(before),
        register_module_forward_hook(after, always_call=True),
    ]
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # nn.MultiheadAttention's eval fast path is one fused operator (aten._native_multi_head_
    # attention) that torch's counter has no formula for; the slow path does the same
    # arithmetic as separate projections and attention products, each attributed and counted
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with (
            torch.no_grad(),
            counter,
            within.running(model, (*args, *kwargs.values()))
            if within is not None
            else contextlib.nullcontext(),
            _user_code(),
        ):
            output = model(*args, **kwargs)
    except SystemExit as leaving:
        raise SpecError("model", f"the model called sys.exit({leaving.code!r})") from None
    except SpecError:
        raise
    except Exception as error:  # whatever the user's forward raises
        from convcalc.measure.build import user_error

        shown = ", ".join("x".join(map(str, s)) for s in _shapes((args, kwargs))) or "no tensors"
        raise user_error(  # from error: CONVCALC_DEBUG=1 prints its traceback
            "input",
            f"the model failed on input {shown}: {type(error).__name__}: {_first_line(error)}",
            error,
        ) from error
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for handle in handles:
            handle.remove()
    output_shapes = _shapes(output)
    if not output_shapes:
        raise SpecError(
            "model", f"the model returned {describe_structure(output)}, which holds no tensor"
        )
    return _result(
        model,
        counter,
        calls,
        call_inputs,
        outputs,
        order,
        conv_starts,
        lazy,
        output,
        device,
        strict,
    )


def _result(
    model: nn.Module,
    counter: _OpCounter,
    calls: dict[str, int],
    call_inputs: dict[str, list[tuple[Shape, ...]]],
    outputs: dict[str, tuple[Shape, ...]],
    order: list[str],
    conv_starts: dict[str, list[int]],
    lazy: set[str],
    output: Any,
    device: str,
    strict: bool,
) -> CountResult:
    modules_by_name = dict(model.named_modules())
    ops: dict[str, list[OpCount]] = {}
    inclusive: dict[str, list[int]] = {}
    notes: list[str] = []
    warnings_: list[str] = []
    for (module, packet, weight), (n, macs, flops) in counter.counts.items():
        torch_counts = torch_flop_formula(packet) is not None
        ops.setdefault(module, []).append(
            OpCount(module, str(packet), n, macs, flops, weight, torch_counts)
        )
        if torch_counts and flops != 2 * macs:
            warnings_.append(
                f"{packet} in {module or 'the root'}: torch counts {group(flops)} FLOPs, "
                f"convcalc 2{MUL}{group(macs)} MACs"
            )
        owner = weight.rpartition(".")[0] if weight else None
        if owner is not None and owner != module and owner in modules_by_name:
            notes.append(
                f"{packet} ran in {module or 'the root'} with {weight} ({n} calls): a "
                f"functional call on {owner}'s parameter, counted in {module or 'the root'}"
            )
        # ancestors: "a.b.c" -> "a.b", "a", ""
        chain = module
        while True:
            total = inclusive.setdefault(chain, [0, 0])
            total[0] += macs
            total[1] += flops
            if not chain:
                break
            chain = chain.rpartition(".")[0]
    recurrent: dict[tuple[str, Any], int] = {}
    for (module, packet, _), (n, _, _) in counter.counts.items():
        if packet in RECURRENT_PACKETS and packet not in flop_registry:
            recurrent[(module, packet)] = recurrent.get((module, packet), 0) + n
    for (module, packet), n in recurrent.items():
        notes.append(f"{packet} ({n} calls in {module or 'the root'}): {RECURRENT_NOTE}")
    for (module, packet, _), (n, macs, _) in counter.counts.items():
        if packet in RECURRENT_PACKETS:
            continue
        if packet in TORCH_FORMULA_ALIASES:
            notes.append(
                f"{packet} ({n} calls in {module or 'the root'}): torch's flop counter has no "
                "entry for this CPU kernel; its FLOPs are torch's own SDPA formula "
                "(sdpa_flop_count, as torch counts the flash, efficient and cudnn variants)"
            )
        elif packet not in flop_registry and macs:
            notes.append(
                f"torch's flop counter has no formula for {packet} ({n} calls in "
                f"{module or 'the root'}): its {group(2 * macs)} FLOPs are not in torch's total"
            )
    for packet, (n, flops) in counter.torch_only.items():
        warnings_.append(
            f"{packet} ({n} calls): torch's flop counter counts {group(flops)} FLOPs, "
            "convcalc has no MAC rule for it"
        )
    zero_cost = {str(p): n for p, n in counter.uncounted.items() if str(p) in ZERO_COST}
    no_rule = {
        str(p): n
        for p, n in counter.uncounted.items()
        if str(p) not in ZERO_COST and p not in counter.torch_only and not known_arithmetic(p)
    }
    arithmetic = {
        str(p): n
        for p, n in counter.uncounted.items()
        if str(p) not in ZERO_COST and str(p) not in no_rule
    }
    for op, n in no_rule.items():
        warnings_.append(
            f"{op} ({n} calls): {NO_RULE} (it may do multiply-adds that no total here holds)"
        )
    result_modules: list[ModuleCount] = []
    for name in order:
        module = modules_by_name[name]
        own = tuple(ops.get(name, ()))
        spec = spec_of(name, module)
        received: list[tuple[Shape, Shape] | None] = []
        module_notes: list[str] = []
        starts = conv_starts.get(name, [])
        for index, start in enumerate(starts):
            end = starts[index + 1] if index + 1 < len(starts) else len(counter.convs)
            found = next((c for c in counter.convs[start:end] if c.module == name), None)
            received.append((found.input_shape, found.padding) if found else None)
            first = call_inputs[name][index][0] if call_inputs[name][index] else None
            if found is not None and first is not None and found.input_shape != first:
                text = (
                    f"the convolution received {shape_text(found.input_shape)} "
                    f"(padding {shape_text(found.padding)}) where the module's input was "
                    f"{shape_text(first)}: padded at run time"
                )
                if text not in module_notes:
                    module_notes.append(text)
        if name in lazy:
            module_notes.append(f"lazy: materialised by this run as {type(module).__name__}")
        attention = None
        if isinstance(module, nn.MultiheadAttention):
            attention = AttentionHyper(
                module.embed_dim,
                module.num_heads,
                int(module.kdim),
                int(module.vdim),
                bool(module.batch_first),
                module.in_proj_bias is not None,
                module.bias_k is not None,
            )
        recurrent_of = recurrent_hyper(module)
        macs_total = sum(o.macs for o in own)
        flops_total = sum(o.flops for o in own)
        shapes_in = call_inputs[name]
        result_modules.append(
            ModuleCount(
                name=name,
                type=type(module).__name__,
                calls=calls[name],
                macs=macs_total,
                flops=flops_total,
                params=sum(p.numel() for p in module.parameters(recurse=False)),
                input_shapes=shapes_in[0] if shapes_in else (),
                output_shapes=outputs.get(name, ()),
                ops=own,
                inclusive_macs=inclusive.get(name, [0, 0])[0],
                inclusive_flops=inclusive.get(name, [0, 0])[1],
                call_inputs=tuple(shapes_in),
                call_arities=tuple(counter.arities.get(name, ())),
                bias_adds=counter.bias_adds.get(name, 0),
                conv_received=tuple(received),
                lazy=name in lazy,
                spec=spec,
                attention=attention,
                notes=tuple(module_notes),
                recurrent=recurrent_of,
            )
        )
    total_macs = sum(v[1] for v in counter.counts.values())
    total_flops = sum(v[2] for v in counter.counts.values()) + sum(
        v[1] for v in counter.torch_only.values()
    )
    if strict and warnings_:
        raise MeasurementError(f"--strict: {warnings_[0]}")
    return CountResult(
        modules=tuple(result_modules),
        total_macs=total_macs,
        total_flops=total_flops,
        uncounted={str(p): n for p, n in counter.uncounted.items()},
        zero_cost=zero_cost,
        arithmetic=arithmetic,
        no_rule=no_rule,
        warnings=tuple(warnings_),
        notes=tuple(dict.fromkeys(notes)),
        output_structure=describe_structure(output),
        output_shapes=_shapes(output),
        conv_calls=tuple(counter.convs),
        params=sum(p.numel() for p in model.parameters()),
        device=device,
        output_names=tuple(name for name, _ in _named_tensors(output, "")),
    )


# --- the closed form of a module, from what it states ------------------------------------------


def recurrent_hyper(module: Any) -> opformulas.RecurrentHyper | None:
    """The hyper-parameters an nn.LSTM / GRU / RNN (or LSTMCell / GRUCell / RNNCell) states,
    as plain numbers for the closed forms (never its weights' shapes, which the measured rule
    reads); None for other modules, or a subclass with a mode convcalc does not know."""
    if isinstance(module, nn.RNNBase):
        if module.mode not in opformulas.RECURRENT_GATES:
            return None
        return opformulas.RecurrentHyper(
            module.mode,
            int(module.input_size),
            int(module.hidden_size),
            int(module.num_layers),
            bool(module.bidirectional),
            int(getattr(module, "proj_size", 0) or 0),
            bool(module.bias),
            bool(module.batch_first),
        )
    cells = ((nn.LSTMCell, "LSTM"), (nn.GRUCell, "GRU"), (nn.RNNCell, "RNN"))
    for cls, mode in cells:
        if isinstance(module, cls):
            return opformulas.RecurrentHyper(
                mode,
                int(module.input_size),
                int(module.hidden_size),
                bias=bool(module.bias),
                cell=True,
            )
    return None


def recurrent_packed(inputs: Sequence[Shape]) -> bool:
    """Whether a recurrent module's call received a PackedSequence: its flattened inputs are
    the packed data (ΣB_t, I) and batch_sizes (T,), a 1-D tensor no other input of an nn.LSTM /
    GRU / RNN is (h_0 and c_0 are 2-D or 3-D)."""
    return len(inputs) >= 2 and len(inputs[0]) == 2 and len(inputs[1]) == 1


def module_formula(module: ModuleCount) -> Derived[int] | None:
    """MACs of a conv, linear, multi-head attention or recurrent module by closed form
    (:mod:`convcalc.opformulas`), summed over its calls, from its spec and its input shapes;
    None for other modules. A convolution fed by run-time padding (F.pad in forward) gets its
    formula from the padded input it really received, and the text says so."""
    spec = module.spec
    parts: list[Derived[int]] = []
    if isinstance(spec, ConvSpec):
        for index, inputs in enumerate(module.call_inputs):
            if not inputs:
                return None
            received = module.conv_received[index] if index < len(module.conv_received) else None
            if received is not None and received[0] != inputs[0]:
                padded = replace(spec, padding=received[1])
                part = opformulas.conv_macs(padded, received[0])
                parts.append(
                    Derived(
                        part.value,
                        f"on the padded input {shape_text(received[0])} it received "
                        f"(run-time padding): {part.shown}",
                    )
                )
            else:
                parts.append(opformulas.conv_macs(spec, inputs[0]))
    elif isinstance(spec, LinearSpec):
        for inputs in module.call_inputs:
            if not inputs:
                return None
            parts.append(opformulas.linear_macs(inputs[0], spec.in_features, spec.out_features))
    elif module.attention is not None:
        hyper = module.attention
        for inputs in module.call_inputs:
            if len(inputs) < 2:
                return None
            batch, length, source = opformulas.mha_sizes(inputs[0], inputs[1], hyper.batch_first)
            parts.append(
                opformulas.mha_macs(
                    batch,
                    length,
                    source,
                    hyper.embed_dim,
                    hyper.num_heads,
                    hyper.kdim,
                    hyper.vdim,
                )
            )
    elif module.recurrent is not None:
        for inputs in module.call_inputs:
            if not inputs:
                return None
            packed = not module.recurrent.cell and recurrent_packed(inputs)
            try:
                parts.append(opformulas.recurrent_macs(module.recurrent, inputs[0], packed))
            except SpecError:
                return None  # a subclass whose forward reshapes its input: no closed form
    else:
        return None
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    value = sum(p.value for p in parts)
    shown = " + ".join(f"[{p.shown}]" for p in parts)
    return Derived(value, f"{len(parts)} calls: {shown} = {group(value)}")


def conv_call_formula(call: ConvCall) -> Derived[int]:
    """MACs of one dispatched convolution by closed form, from the geometry it was called with
    (input shape, weight shape, stride, padding, dilation, groups): for a functional
    ``F.conv2d(x, self.conv.weight, ...)`` outside any conv module's forward. The output size
    is computed by the formula, not read from the run."""
    groups = call.groups
    if call.transposed:
        in_channels, out_channels = call.weight_shape[0], call.weight_shape[1] * groups
    else:
        out_channels, in_channels = call.weight_shape[0], call.weight_shape[1] * groups
    spec = ConvSpec(
        in_channels,
        out_channels,
        tuple(call.weight_shape[2:]),
        call.stride,
        call.padding,
        call.dilation,
        groups,
        False,
        call.transposed,
        call.output_padding,
        name=call.weight or "conv",
    )
    return opformulas.conv_macs(spec, call.input_shape)
