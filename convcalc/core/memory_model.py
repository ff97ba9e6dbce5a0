"""Memory a user can plan a GPU budget on, by formula: saved for backward, peak during
inference, a training step, and the largest batch that fits. Pure: no torch.

Every figure is in bytes, for the dtype asked (``float32``/``float16``/``bfloat16``; ``int8``
for inference only), and each comes as a :class:`~convcalc.formulas.Derived` whose ``shown``
text has the numbers put in.

**What each layer kind saves for backward** (torch 2.13, training mode, an input that requires
grad; found by ``torch.autograd.graph.saved_tensors_hooks`` on the real layers; each rule is
its kind's ``saved_for_backward`` in :mod:`convcalc.kinds`). Parameters and buffers (weights,
biases, batch norm's running statistics) are saved by reference: they exist anyway and are not
counted as activations.

=========================================  ==================================================
conv (1/2/3d, transposed, any groups)      its input
conv, padding_mode reflect / replicate     the padded copy, and its input (saved by the pad)
                                           when the input requires grad
conv, padding_mode circular                the padded copy only
conv, padding 'same' with odd total pad    the copy padded by one on those axes only
linear                                     its input
batch norm, training                       its input + save_mean and save_invstd (C each,
                                           in the input's dtype on the CPU)
batch norm, eval                           its input
relu, sigmoid, tanh                        its output
relu6, leakyrelu, elu, gelu, silu,         its input
hardswish, hardsigmoid, prelu
in place relu / leakyrelu / elu            its output, which *is* its input's storage
in place relu6 / silu / hardswish /        a copy of its input (a new tensor)
hardsigmoid
max pool, adaptive max pool                its input + int64 indices (output-sized)
avg pool, adaptive avg pool                its input
adaptive avg pool to 1 (a mean)            nothing
flatten, identity, add, dropout (eval)     nothing
dropout, training (CPU)                    a mask the size of its input, in its dtype
=========================================  ==================================================

**Sharing.** A tensor saved by several layers is kept once: a ReLU's output saved by the ReLU
and by the convolution after it, a view (flatten) of a tensor saved by the next linear layer.
In a network total each storage counts once; per layer it is attributed to the *first* layer
(in node order) that saves it, and later layers show it as shared with 0 bytes. An alias
(flatten, identity, dropout in eval, an in-place activation) has its input's storage.

Conventions stated where they matter: the network input is held by the caller for the whole
run; optimizer state has the parameters' dtype (Adam's ``step`` is one float32 scalar per
parameter tensor); dropout's mask and batch norm's statistics follow torch's CPU kernels (on
CUDA dropout keeps a bool mask, 1 B per element, and cuDNN keeps float32 statistics).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

from convcalc._dataclass import dataclass
from convcalc.core.formulas import MUL, Derived, group, human_bytes, shape_text
from convcalc.core.memo import memo
from convcalc.core.saved import INDEX_BYTES, LayerIO, LayerSaved, SavedPart, part
from convcalc.core.spec import InputSpec, Ints, Node
from convcalc.errors import SpecError
from convcalc.kinds import (
    ConvSpec,
    figures,
    is_activation,
    is_adaptive_pool,
    is_linear,
    is_norm,
    is_pool,
    is_shape,
    kind_of,
    output_spec,
)
from convcalc.kinds import conv as conv_kind

if TYPE_CHECKING:  # the other kinds load on use (start-up): tested with kinds.is_* here
    from convcalc.kinds import LayerSpec
    from convcalc.kinds.activation import INPLACE_SAVES_COPY as INPLACE_SAVES_COPY
    from convcalc.kinds.activation import INPLACE_SAVES_OUTPUT as INPLACE_SAVES_OUTPUT
    from convcalc.kinds.activation import SAVES_OUTPUT as SAVES_OUTPUT

#: bytes per element; int8 only for inference (weights and activations)
WIDTHS: dict[str, int] = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}
TRAINING_DTYPES = ("float32", "float16", "bfloat16")
INFERENCE_DTYPES = ("float32", "float16", "bfloat16", "int8")
#: Adam's per-parameter ``step`` is a float32 scalar tensor (torch 2.x, not fused/capturable)
STEP_BYTES = 4
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")


__all__ = [  # the per-layer types and sets live with the kinds and in core.saved; kept here too
    "INDEX_BYTES",
    "INPLACE_SAVES_COPY",
    "INPLACE_SAVES_OUTPUT",
    "SAVES_OUTPUT",
    "LayerIO",
    "LayerSaved",
    "SavedPart",
]


def _inplace_kinds() -> frozenset[str]:
    """The activations torch runs in place (the activation kind's sets)."""
    from convcalc.kinds import activation

    return activation.INPLACE_SAVES_OUTPUT | activation.INPLACE_SAVES_COPY


def __getattr__(name: str) -> Any:
    """The activation kind's sets, kept importable from here (``__all__``) and loaded with
    that kind on first use (start-up)."""
    if name in ("INPLACE_SAVES_COPY", "INPLACE_SAVES_OUTPUT", "SAVES_OUTPUT"):
        from convcalc.kinds import activation

        return getattr(activation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- one layer ------------------------------------------------------------------------------


def conv_padded_copy(spec: ConvSpec, shape: Ints) -> tuple[str, Ints] | None:
    """The padded copy of the input a convolution makes (the conv kind's ``padded_copy``)."""
    return conv_kind.padded_copy(spec, shape)


def layer_saved(spec: LayerSpec, io: LayerIO) -> LayerSaved:
    """What one layer saves for backward, on its own (nothing shared with neighbours): the
    rule of its kind (``kinds.base.Kind.saved_for_backward``)."""
    return kind_of(spec).saved_for_backward(spec, io)


def _is_alias(node: Node, training: bool, inplace: bool) -> bool:
    """Whether a layer's output has its input's storage (a view, the same tensor, in place)."""
    spec = node.spec
    if inplace:
        return True
    if is_shape(spec):
        if spec.kind == "add":
            return len(node.inputs) == 1  # a sum of one tensor is that tensor
        return spec.kind in ("flatten", "identity") or (spec.kind == "dropout" and not training)
    return False


def _has_params(spec: LayerSpec) -> bool:
    return figures_params(spec) > 0


@memo(4096)
def figures_params(spec: LayerSpec) -> int:
    """Parameter count of a layer (the closed form in formulas.py), input-independent.
    Remembered per spec (bounded): the memory passes ask for it several times a layer. A
    convolution's is its kind's own ``params`` (what its figures use), without a probe."""
    if isinstance(spec, ConvSpec):
        return conv_kind.params(spec).value
    probe = InputSpec(1, _in_channels(spec), (8,) * spec.dims if spec.dims else ())
    return figures(spec, probe).params.value


def _in_channels(spec: LayerSpec) -> int:
    if isinstance(spec, ConvSpec):
        return spec.in_channels
    if is_linear(spec):
        return spec.in_features
    # linear returned above (a TypeGuard does not narrow the rest): the other kinds have channels
    return spec.channels  # type: ignore[union-attr]


def _param_tensors(spec: LayerSpec) -> int:
    """How many parameter tensors a layer has (Adam keeps one ``step`` per tensor)."""
    if isinstance(spec, ConvSpec) or is_linear(spec):
        return 2 if spec.bias else 1
    if is_norm(spec):
        return 2 if spec.affine else 0
    if is_activation(spec):
        return 1 if spec.kind == "prelu" else 0
    return 0


def _buffer_bytes(spec: LayerSpec, width: int) -> int:
    """Batch norm's running mean and variance (the dtype's width) and num_batches_tracked."""
    if is_norm(spec):
        return 2 * spec.channels * width + INDEX_BYTES
    return 0


# --- a network ------------------------------------------------------------------------------


def shapes(nodes: Sequence[Node], input_spec: InputSpec) -> list[Ints]:
    """Each node's output shape, by formula."""
    return list(_shapes(tuple(nodes), input_spec))


@functools.lru_cache(maxsize=256)
def _shapes(nodes: tuple[Node, ...], input_spec: InputSpec) -> tuple[Ints, ...]:
    """:func:`shapes`, remembered (bounded): the memory passes (saved for backward twice, the
    inference peak, the training step) each ask for the same network's shapes."""
    result: list[Ints] = []
    base = InputSpec(input_spec.batch, input_spec.channels, input_spec.size, "float32")
    for node in nodes:
        source = node.inputs[0]
        if source < 0:
            spec_in = base
        else:
            shape = result[source]
            spec_in = InputSpec(shape[0], shape[1], shape[2:], "float32")
        result.append(output_spec(node.spec, spec_in).shape)
    return tuple(result)


def _check_inplace(nodes: Sequence[Node], inplace: Collection[int]) -> None:
    for index in inplace:
        if not 0 <= index < len(nodes):
            raise SpecError("inplace", f"inplace: no layer {index} (0..{len(nodes) - 1})")
        spec = nodes[index].spec
        if not (is_activation(spec) and spec.kind in _inplace_kinds()):
            raise SpecError(
                "inplace",
                f"inplace: layer {index} ({spec.describe()}) has no in-place version in torch",
            )


@dataclass(frozen=True)
class _Graph:
    """Storages of a network: node outputs resolved through aliases."""

    shapes: list[Ints]
    #: storage of each node's output: -1 the network input, else the node that made it
    storage: list[int]
    width: int

    def shape_of(self, index: int, input_shape: Ints) -> Ints:
        return input_shape if index < 0 else self.shapes[index]

    def storage_of(self, index: int) -> int:
        return -1 if index < 0 else self.storage[index]


def _graph(
    nodes: Sequence[Node],
    input_spec: InputSpec,
    width: int,
    training: bool,
    inplace: Collection[int],
    out_shapes: list[Ints] | None = None,
) -> _Graph:
    out_shapes = shapes(nodes, input_spec) if out_shapes is None else out_shapes
    storage: list[int] = []
    for index, node in enumerate(nodes):
        if _is_alias(node, training, index in inplace):
            source = node.inputs[0]
            storage.append(-1 if source < 0 else storage[source])
        else:
            storage.append(index)
    return _Graph(out_shapes, storage, width)


class _Passes:
    """What the memory passes over one network share (saved for backward with and without an
    input gradient, the inference peak, the training step and its backward): the nodes' output
    shapes, their storages per training mode and in-place set, and which tensors carry a
    gradient; each worked out at its first use, once. :func:`network_memory` hands one to every
    pass; each public function alone makes its own."""

    __slots__ = ("_described", "_graphs", "_requires", "_shapes", "input_spec", "nodes")

    def __init__(self, nodes: Sequence[Node], input_spec: InputSpec) -> None:
        self.nodes = nodes
        self.input_spec = input_spec
        self._shapes: list[Ints] | None = None
        self._graphs: dict[tuple[int, bool, tuple[int, ...]], _Graph] = {}
        self._requires: dict[bool, dict[int, bool]] = {}
        self._described: dict[int, str] = {}

    def shapes(self) -> list[Ints]:
        if self._shapes is None:
            self._shapes = shapes(self.nodes, self.input_spec)
        return self._shapes

    def graph(self, width: int, training: bool, inplace: Collection[int]) -> _Graph:
        key = (width, training, tuple(sorted(inplace)))
        graph = self._graphs.get(key)
        if graph is None:
            graph = self._graphs[key] = _graph(
                self.nodes, self.input_spec, width, training, inplace, self.shapes()
            )
        return graph

    def describe(self, index: int) -> str:
        """Node ``index``'s layer as its spec describes it (the peak and the backward name
        the node where theirs is)."""
        text = self._described.get(index)
        if text is None:
            text = self._described[index] = self.nodes[index].spec.describe()
        return text

    def requires(self, input_requires_grad: bool) -> dict[int, bool]:
        requires = self._requires.get(input_requires_grad)
        if requires is None:
            requires = self._requires[input_requires_grad] = _requires_grad(
                self.nodes, input_requires_grad
            )
        return requires


@dataclass(frozen=True)
class NetworkSaved:
    """Saved for backward per layer (shared tensors attributed to the first layer that saves
    them) and in total (each storage once)."""

    layers: tuple[Derived[int], ...]
    total: Derived[int]
    #: the storages saved (graph keys): whether a tensor, the output, is among them
    storages: frozenset[tuple[str, int]] = frozenset()


def saved_for_backward(
    nodes: Sequence[Node],
    input_spec: InputSpec,
    dtype: str | None = None,
    *,
    training: bool = True,
    inplace: Collection[int] = (),
    input_requires_grad: bool = True,
) -> NetworkSaved:
    """Bytes autograd keeps from the forward for the backward, per layer and in total.

    ``training``: batch norm and dropout in training mode (the default); ``inplace``: indices of
    activation nodes run in place. ``input_requires_grad``: whether the network input carries a
    gradient (as a layer inside a bigger network does; real data does not). A layer records
    nothing when none of its inputs requires grad and it has no parameters.
    """
    return _saved_for_backward(
        _Passes(nodes, input_spec),
        dtype,
        training=training,
        inplace=inplace,
        input_requires_grad=input_requires_grad,
    )


def _saved_for_backward(
    passes: _Passes,
    dtype: str | None,
    *,
    training: bool = True,
    inplace: Collection[int] = (),
    input_requires_grad: bool = True,
) -> NetworkSaved:
    """:func:`saved_for_backward` with what the passes share (``passes``)."""
    nodes, input_spec = passes.nodes, passes.input_spec
    dtype = dtype or input_spec.dtype
    width = _width(dtype, training=True)
    _check_inplace(nodes, inplace)
    graph = passes.graph(width, training, inplace)
    requires = passes.requires(input_requires_grad)
    seen: dict[tuple[str, int], int] = {}
    layers: list[Derived[int]] = []
    total = 0
    input_shape = input_spec.shape
    for index, node in enumerate(nodes):
        io = LayerIO(
            tuple(graph.shape_of(i, input_shape) for i in node.inputs),
            graph.shapes[index],
            width,
            training,
            index in inplace,
            requires[node.inputs[0]],
        )
        if not (any(requires[i] for i in node.inputs) or _has_params(node.spec)):
            layers.append(Derived(0, "nothing (no input requires grad, no parameters)"))
            continue
        alone = layer_saved(node.spec, io)
        value = 0
        texts: list[str] = []
        for number, piece in enumerate(alone.tensors):
            key = _storage_key(piece.tensor, node, index, number, graph)
            if key in seen:
                texts.append(f"{piece.shown.split(' ')[0]} shared with layer {seen[key]} (0 B)")
                continue
            seen[key] = index
            value += piece.bytes
            texts.append(piece.shown)
        total += value
        layers.append(Derived(value, "; ".join(texts) if texts else alone.shown))
    return NetworkSaved(
        tuple(layers),
        Derived(
            total,
            " + ".join(group(d.value) for d in layers if d.value) + f" = {group(total)} B"
            if total
            else "0 B",
        ),
        frozenset(seen),
    )


def _requires_grad(nodes: Sequence[Node], input_requires_grad: bool) -> dict[int, bool]:
    requires = {-1: input_requires_grad}
    for index, node in enumerate(nodes):
        requires[index] = any(requires[i] for i in node.inputs) or _has_params(node.spec)
    return requires


def _storage_key(
    tensor: str, node: Node, index: int, number: int, graph: _Graph
) -> tuple[str, int]:
    if tensor == "output":
        return ("storage", graph.storage_of(index))
    if tensor.startswith("input"):
        which = int(tensor[5:] or 0)
        return ("storage", graph.storage_of(node.inputs[which]))
    return (f"new{number}", index)


# --- peak during inference ------------------------------------------------------------------


def inference_workspace(spec: LayerSpec, io: LayerIO) -> Derived[int]:
    """Bytes a layer allocates during inference besides its output, freed when it returns:
    a convolution's padded copy, max pooling's int64 indices (torch computes them and drops
    them), the partial sums of an add of three or more tensors."""
    if isinstance(spec, ConvSpec):
        copy = conv_padded_copy(spec, io.inputs[0])
        if copy is not None:
            return _derived(part("new", f"{copy[0]} padded copy", copy[1], io.width))
    if (is_pool(spec) or is_adaptive_pool(spec)) and spec.kind == "max":
        return _derived(part("new", "int64 indices", io.output, INDEX_BYTES))
    if is_shape(spec) and spec.kind == "add" and len(io.inputs) > 2:
        return _derived(part("new", "partial sum", io.output, io.width))
    return Derived(0, "0")


def _derived(part: SavedPart) -> Derived[int]:
    return Derived(part.bytes, part.shown)


@dataclass(frozen=True)
class Peak:
    """Live activation bytes while each layer runs, and the largest (the peak) and where."""

    layers: tuple[Derived[int], ...]
    total: Derived[int]
    #: the node at the peak
    at: int


def peak_inference(
    nodes: Sequence[Node],
    input_spec: InputSpec,
    dtype: str | None = None,
    *,
    inplace: Collection[int] = (),
) -> Peak:
    """Largest total of live activation bytes at any point of a ``torch.no_grad()`` forward.

    A tensor is live from the layer that makes it until the last layer reading it (or any
    alias of it) returns; the network input is held by the caller throughout and the last
    output is returned. While layer k runs, live = its inputs and every tensor still needed
    later + its output (none if it is an alias) + its workspace (:func:`inference_workspace`).
    Layers in eval mode (batch norm on running statistics, dropout the identity).
    """
    return _peak_inference(_Passes(nodes, input_spec), dtype, inplace=inplace)


def _peak_inference(passes: _Passes, dtype: str | None, *, inplace: Collection[int] = ()) -> Peak:
    """:func:`peak_inference` with what the passes share (``passes``)."""
    nodes, input_spec = passes.nodes, passes.input_spec
    dtype = dtype or input_spec.dtype
    width = _width(dtype, training=False)
    _check_inplace(nodes, inplace)
    graph = passes.graph(width, False, inplace)
    last_use: dict[int, int] = {-1: len(nodes)}
    for index, node in enumerate(nodes):
        last_use.setdefault(graph.storage_of(index), index)
        for source in node.inputs:
            key = graph.storage_of(source)
            last_use[key] = max(last_use.get(key, index), index)
    last_use[graph.storage_of(len(nodes) - 1)] = len(nodes)
    born = {-1: -1, **{i: i for i in range(len(nodes)) if graph.storage[i] == i}}
    input_shape = input_spec.shape
    # each storage's bytes, once (every layer it is live through counts them)
    born_bytes = {s: math.prod(graph.shape_of(s, input_shape)) * width for s in born}
    # the storages live while each layer runs, kept as the layers go (born in node order, so the
    # dict stays in birth order) rather than searched for at each layer: linear in the layers
    expires: dict[int, list[int]] = {}
    for storage in born:
        expires.setdefault(last_use[storage], []).append(storage)
    live: dict[int, int] = {-1: born_bytes[-1]}
    layers: list[Derived[int]] = []
    for index, node in enumerate(nodes):
        if index in born:
            live[index] = born_bytes[index]
        io = LayerIO(
            tuple(graph.shape_of(i, input_shape) for i in node.inputs),
            graph.shapes[index],
            width,
            False,
            index in inplace,
        )
        work = inference_workspace(node.spec, io)
        value = sum(live.values()) + work.value
        shown = " + ".join(f"{'input' if s < 0 else f'out{s}'} {group(b)}" for s, b in live.items())
        if work.value:
            shown += f" + workspace {group(work.value)}"
        layers.append(Derived(value, f"{shown} = {group(value)} B"))
        for storage in expires.get(index, ()):
            del live[storage]
    at = max(range(len(layers)), key=lambda i: layers[i].value)
    peak = layers[at]
    return Peak(
        tuple(layers),
        Derived(peak.value, f"while layer {at} ({passes.describe(at)}) runs: {peak.shown}"),
        at,
    )


# --- a training step ------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingStep:
    """Bytes of one training step: total = params + buffers + grads + optimizer_state +
    saved_for_backward + output + transient (an upper bound: saved tensors are freed during
    backward). ``output``: the network's output, which a training loop holds through backward
    (its loss reads it), where not saved for backward already. A loss's own tensors (MSE's
    difference, cross-entropy's softmax) are not counted."""

    params: Derived[int]
    buffers: Derived[int]
    grads: Derived[int]
    optimizer_state: Derived[int]
    saved_for_backward: Derived[int]
    output: Derived[int]
    transient: Derived[int]
    total: Derived[int]

    def to_dict(self) -> dict[str, int]:
        return {
            "params": self.params.value,
            "buffers": self.buffers.value,
            "grads": self.grads.value,
            "optimizer_state": self.optimizer_state.value,
            "saved_for_backward": self.saved_for_backward.value,
            "output": self.output.value,
            "transient": self.transient.value,
            "total": self.total.value,
        }


def optimizer_state(
    param_count: int, param_tensors: int, width: int, optimizer: str
) -> Derived[int]:
    """sgd: nothing; momentum: one buffer per parameter; adam/adamw: exp_avg and exp_avg_sq
    per parameter + a float32 ``step`` per parameter tensor. Buffers have the parameters' dtype."""
    if optimizer == "sgd":
        return Derived(0, "0 (plain SGD keeps no state)")
    if optimizer == "momentum":
        value = param_count * width
        return Derived(
            value, f"momentum buffer {group(param_count)}{MUL}{width} B = {group(value)} B"
        )
    if optimizer in ("adam", "adamw"):
        value = 2 * param_count * width + STEP_BYTES * param_tensors
        return Derived(
            value,
            f"exp_avg + exp_avg_sq 2{MUL}{group(param_count)}{MUL}{width} B + step "
            f"{param_tensors}{MUL}{STEP_BYTES} B = {group(value)} B",
        )
    raise SpecError(
        "optimizer", f"--optimizer {optimizer!r} must be one of {', '.join(OPTIMIZERS)}"
    )


def backward_transient(
    nodes: Sequence[Node],
    input_spec: InputSpec,
    dtype: str | None = None,
    *,
    input_requires_grad: bool = False,
) -> Derived[int]:
    """An upper bound on the gradient bytes alive at once during backward (parameter gradients
    are counted as ``grads``, not here).

    Nodes run backward in reverse. While node k runs: the network output's gradient, which the
    loss hands backward (a loss but a plain sum makes it the output's size; alive until
    backward returns, as ``out.backward(grad)`` keeps it), every gradient already started and
    still waiting for its producer (a residual branch point waits for both branches), the
    gradient of k's output, the gradients k makes for its inputs (none for an input that needs no
    gradient), one more copy where such a gradient is added to one already waiting (autograd
    may sum out of place), and k's own backward workspace (a padded copy's gradient; PReLU's
    full-size weight gradient before it is summed). Every gradient is counted as a new tensor
    of its tensor's size, even where torch passes a view (flatten): conservative.
    """
    return _backward_transient(
        _Passes(nodes, input_spec), dtype, input_requires_grad=input_requires_grad
    )


def _backward_transient(
    passes: _Passes, dtype: str | None, *, input_requires_grad: bool = False
) -> Derived[int]:
    """:func:`backward_transient` with what the passes share (``passes``)."""
    nodes, input_spec = passes.nodes, passes.input_spec
    dtype = dtype or input_spec.dtype
    width = _width(dtype, training=True)
    out_shapes = passes.shapes()
    requires = passes.requires(input_requires_grad)

    # each tensor's bytes, once (the loop below asks for each several times)
    sizes = {-1: math.prod(input_spec.shape) * width}
    for index, shape in enumerate(out_shapes):
        sizes[index] = math.prod(shape) * width
    size = sizes.__getitem__

    # A gradient waits while node k runs when its tensor j comes before k (j < k) and a node
    # after k reads it (its last reader > k). Going backward, j starts waiting at its last
    # reader - 1 and stops at k = j: kept as k goes down, not searched for at each k (linear).
    last_reader: dict[int, int] = {}
    for index, node in enumerate(nodes):
        for source in node.inputs:
            last_reader[source] = index
    starts: dict[int, list[int]] = {}
    for source, reader in last_reader.items():
        if requires[source] and reader - 1 > source:
            starts.setdefault(reader - 1, []).append(source)
    waiting: set[int] = set()
    pending = 0
    last = len(nodes) - 1
    # the output's gradient, which the loss hands backward, alive until backward returns (a
    # caller's out.backward(grad) holds it; a loss frees it sooner: an upper bound)
    seed = size(last)
    best, best_at, best_terms = 0, last, ""
    for k in range(last, -1, -1):
        node = nodes[k]
        for source in starts.get(k, ()):
            waiting.add(source)
            pending += size(source)
        if k in waiting:
            waiting.remove(k)
            pending -= size(k)
        made = 0
        extra = 0
        for source in node.inputs:
            if requires[source]:
                made += size(source)
                if source in waiting:
                    extra += size(source)
        work = 0
        spec = node.spec
        if isinstance(spec, ConvSpec):
            shape = input_spec.shape if node.inputs[0] < 0 else out_shapes[node.inputs[0]]
            copy = conv_padded_copy(spec, shape)
            if copy is not None:
                work = math.prod(copy[1]) * width
        elif is_activation(spec) and spec.kind == "prelu":
            work = size(node.inputs[0])
        own = size(k) if k != last else 0  # the last node's output gradient is the seed
        value = seed + pending + own + made + extra + work
        if value > best:
            best, best_at = value, k
            best_terms = (
                f"the output's gradient {group(seed)} + waiting {group(pending)} + "
                + (f"layer output grad {group(own)} + " if k != last else "")
                + f"input grads {group(made)}"
                + (f" + sum {group(extra)}" if extra else "")
                + (f" + workspace {group(work)}" if work else "")
            )
    return Derived(
        best,
        f"during layer {best_at}'s backward ({passes.describe(best_at)}): {best_terms} = "
        f"{group(best)} B",
    )


def training_step(
    nodes: Sequence[Node],
    input_spec: InputSpec,
    optimizer: str = "adam",
    dtype: str | None = None,
    *,
    inplace: Collection[int] = (),
) -> TrainingStep:
    """One step of training with ``optimizer``: parameters, buffers, their gradients, the
    optimizer's state, what the forward saves (the data needs no gradient), and the backward's
    transient gradients (:func:`backward_transient`)."""
    return _training_step(_Passes(nodes, input_spec), optimizer, dtype, inplace=inplace)


def _training_step(
    passes: _Passes, optimizer: str, dtype: str | None, *, inplace: Collection[int] = ()
) -> TrainingStep:
    """:func:`training_step` with what the passes share (``passes``)."""
    nodes, input_spec = passes.nodes, passes.input_spec
    dtype = dtype or input_spec.dtype
    width = _width(dtype, training=True)
    if optimizer not in OPTIMIZERS:
        raise SpecError(
            "optimizer", f"--optimizer {optimizer!r} must be one of {', '.join(OPTIMIZERS)}"
        )
    count = sum(figures_params(n.spec) for n in nodes)
    tensors = sum(_param_tensors(n.spec) for n in nodes)
    buffers = sum(_buffer_bytes(n.spec, width) for n in nodes)
    params = Derived(count * width, f"{group(count)}{MUL}{width} B = {group(count * width)} B")
    grads = Derived(count * width, f"one per parameter: {group(count * width)} B")
    state = optimizer_state(count, tensors, width, optimizer)
    network_saved = _saved_for_backward(passes, dtype, inplace=inplace, input_requires_grad=False)
    saved = network_saved.total
    output = _held_output(passes, width, inplace, network_saved.storages)
    transient = _backward_transient(passes, dtype)
    parts = (params, Derived(buffers, ""), grads, state, saved, output, transient)
    value = sum(p.value for p in parts)
    return TrainingStep(
        params=params,
        buffers=Derived(
            buffers,
            f"batch norm running mean + var (2·C·{width} B) + num_batches_tracked (8 B): "
            f"{group(buffers)} B"
            if buffers
            else "0",
        ),
        grads=grads,
        optimizer_state=state,
        saved_for_backward=saved,
        output=output,
        transient=transient,
        total=Derived(
            value,
            "params + buffers + grads + optimizer state + saved + output + transient = "
            + " + ".join(group(p.value) for p in parts)
            + f" = {group(value)} B",
        ),
    )


@dataclass(frozen=True)
class NetworkMemory:
    """The three memory figures of a report: saved for backward (the network input requiring
    grad, as a layer inside a bigger network), the inference peak, one training step."""

    saved: NetworkSaved
    peak: Peak
    step: TrainingStep


def network_memory(
    nodes: Sequence[Node], input_spec: InputSpec, optimizer: str = "adam"
) -> NetworkMemory:
    """``saved_for_backward(nodes, input_spec)``, ``peak_inference(nodes, input_spec)`` and
    ``training_step(nodes, input_spec, optimizer)``: the same functions, computed together so
    that they share the network's shapes, storages and gradient flags (:class:`_Passes`)."""
    passes = _Passes(nodes, input_spec)
    return NetworkMemory(
        _saved_for_backward(passes, None),
        _peak_inference(passes, None),
        _training_step(passes, optimizer, None),
    )


# --- sizes and what fits --------------------------------------------------------------------

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
#: compiled at its first use (re caches it), not at import: start-up (docs/benchmarks.md)
_SIZE = r"^\s*(\d+(?:\.\d*)?(?:e\+?\d+)?|\.\d+(?:e\+?\d+)?)\s*([a-z]*)\s*$"


def parse_size(text: str, option: str = "--fit") -> int:
    """``"16GiB"`` -> 17179869184, ``"80GB"`` -> 80·10^9, ``"512MiB"``, ``"1e9"`` (bytes).
    GB/MB/KB/TB are powers of 10, GiB/MiB/KiB/TiB powers of 2."""
    match = re.match(_SIZE, text, re.I)
    if not match or match.group(2).lower() not in _UNITS:
        raise SpecError("fit", f"{option} {text!r} is not a size like 16GiB or 80GB")
    value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value < 1:
        raise SpecError("fit", f"{option} {text!r} must be a positive size like 16GiB or 80GB")
    return value


@dataclass(frozen=True)
class Linear:
    """A figure linear in the batch size: bytes = fixed + per_sample·batch."""

    fixed: int
    per_sample: int

    def at(self, batch: int) -> int:
        return self.fixed + self.per_sample * batch


def linear_in_batch(figure_at_batch: Callable[[int], int]) -> Linear:
    """Fit ``a + b·batch`` from batches 1 and 2 and check it at 3 and 7 (every figure here is
    linear in the batch: activations scale with it, parameters and state do not)."""
    one, two = figure_at_batch(1), figure_at_batch(2)
    model = Linear(2 * one - two, two - one)
    for batch in (3, 7):
        if figure_at_batch(batch) != model.at(batch) or model.per_sample < 0:
            raise ValueError(f"memory is not linear in the batch (at batch {batch})")
    return model


def max_batch(limit_bytes: int, figure_at_batch: Callable[[int], int]) -> int:
    """The largest batch whose figure fits ``limit_bytes``, solved exactly from the linear
    model (0 when batch 1 does not fit)."""
    model = linear_in_batch(figure_at_batch)
    if model.at(1) > limit_bytes:
        return 0
    if model.per_sample == 0:
        raise ValueError("memory does not grow with the batch: every batch fits")
    return (limit_bytes - model.fixed) // model.per_sample


@dataclass(frozen=True)
class Fit:
    """The largest batches that fit ``memory_limit_bytes`` for one dtype (0: not even batch 1;
    None: not applicable, as training in int8), with the figures at batch 1."""

    dtype: str
    memory_limit_bytes: int
    max_batch_training: int | None
    max_batch_inference: int
    training_at_1: int | None
    inference_at_1: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "dtype": self.dtype,
            "memory_limit_bytes": self.memory_limit_bytes,
            "max_batch_training": self.max_batch_training,
            "max_batch_inference": self.max_batch_inference,
        }


def _with_batch(input_spec: InputSpec, batch: int) -> InputSpec:
    return InputSpec(batch, input_spec.channels, input_spec.size, input_spec.dtype)


def inference_bytes(nodes: Sequence[Node], input_spec: InputSpec, dtype: str) -> int:
    """What inference needs: the parameters (and buffers) + the activation peak."""
    width = WIDTHS[dtype]
    weights = sum(figures_params(n.spec) for n in nodes) * width
    buffers = sum(_buffer_bytes(n.spec, width) for n in nodes)
    return weights + buffers + peak_inference(nodes, input_spec, dtype).total.value


def _inference_at(nodes: Sequence[Node], input_spec: InputSpec, dtype: str) -> Callable[[int], int]:
    def at(batch: int) -> int:
        return inference_bytes(nodes, _with_batch(input_spec, batch), dtype)

    return at


def _held_output(
    passes: _Passes, width: int, inplace: Collection[int], saved: frozenset[tuple[str, int]]
) -> Derived[int]:
    """The network's output, which a training loop holds through backward (its loss reads
    it): its bytes, or 0 where its storage is saved for backward already."""
    last = len(passes.nodes) - 1
    shape = passes.shapes()[last]
    graph = passes.graph(width, True, inplace)
    if ("storage", graph.storage_of(last)) in saved:
        return Derived(0, f"the output {shape_text(shape)} is saved for backward already: 0 B")
    value = math.prod(shape) * width
    return Derived(
        value,
        f"the output {shape_text(shape)}, held through backward: "
        f"{group(math.prod(shape))}{MUL}{width} B = {group(value)} B",
    )


def _training_at(
    nodes: Sequence[Node], input_spec: InputSpec, optimizer: str, dtype: str
) -> Callable[[int], int]:
    def at(batch: int) -> int:
        return training_step(nodes, _with_batch(input_spec, batch), optimizer, dtype).total.value

    return at


def fit(
    nodes: Sequence[Node],
    input_spec: InputSpec,
    limit_bytes: int,
    optimizer: str = "adam",
    dtypes: Sequence[str] = INFERENCE_DTYPES,
    *,
    limit_text: str | None = None,
) -> list[Fit]:
    """Per dtype, the largest batch whose training step (:func:`training_step`) and whose
    inference (weights + :func:`peak_inference`) fit ``limit_bytes``.

    Raises SpecError ("fit") when the limit is too small for batch 1 of anything, naming the
    smallest size that would fit."""
    answers: list[Fit] = []
    for dtype in dtypes:
        infer = linear_in_batch(_inference_at(nodes, input_spec, dtype))
        train: Linear | None = None
        if dtype in TRAINING_DTYPES:
            train = linear_in_batch(_training_at(nodes, input_spec, optimizer, dtype))
        answers.append(
            Fit(
                dtype,
                limit_bytes,
                None if train is None else max_batch(limit_bytes, train.at),
                max_batch(limit_bytes, infer.at),
                None if train is None else train.at(1),
                infer.at(1),
            )
        )
    if all(a.max_batch_inference == 0 for a in answers):
        smallest = min(answers, key=lambda a: a.inference_at_1)
        text = limit_text or f"{limit_bytes}B"
        trainable = [a for a in answers if a.training_at_1 is not None]
        training_note = ""
        if trainable:
            least = min(trainable, key=lambda a: a.training_at_1 or 0)
            training_note = (
                f"; a training step ({least.dtype}, {optimizer}) needs "
                f"{human_bytes(least.training_at_1 or 0)}"
            )
        raise SpecError(
            "fit",
            f"--fit {text} is too small for batch 1: the smallest size that fits is "
            f"{human_bytes(smallest.inference_at_1)} ({group(smallest.inference_at_1)} B, "
            f"inference in {smallest.dtype}){training_note}",
        )
    return answers


def _width(dtype: str, *, training: bool) -> int:
    allowed = TRAINING_DTYPES if training else INFERENCE_DTYPES
    if dtype not in allowed:
        raise SpecError("dtype", f"--dtype {dtype!r} must be one of {', '.join(allowed)}")
    return WIDTHS[dtype]
