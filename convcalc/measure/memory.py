"""Memory measured from real torch runs (CPU, or the meta device for what is too big to run):
what autograd saves for backward, the live activation bytes of an inference forward, and one
real training step. Nothing here uses :mod:`convcalc.memory_model`.

How each figure is measured:

* **saved for backward**: ``torch.autograd.graph.saved_tensors_hooks`` on a training-mode
  forward. Every saved tensor is identified by its storage (``untyped_storage()._cdata``, the
  address of torch's StorageImpl: unique while alive, and it works on meta tensors, whose
  ``data_ptr`` is 0), so a tensor saved twice, or a view of a saved tensor, counts once, with
  its storage's ``nbytes``. Storages of parameters and buffers (saved by reference) are not
  counted. Forward pre-hooks on the layers attribute each storage to the first layer saving it.
* **live activation bytes** (inference peak, backward transient): a ``TorchDispatchMode`` sees
  every aten op; each output's storage is registered with a ``StorageWeakRef`` and its nbytes,
  and registered storages that have expired are dropped before each op's outputs are counted.
  So the live total after each op is exact at op granularity, on CPU and meta alike. Chosen over
  torch.profiler's memory events because it works on meta, attributes to ops and layers, and
  does not see kernels' private workspaces (e.g. the CPU convolution's im2col buffers), which
  depend on the backend and which no formula can promise: they are not counted, and the source
  text says so. A network of nodes is run the way a hand-written forward frees: each output is
  dropped after its last reader (:func:`run_freeing`).
* **training step**: one real forward + ``sum().backward()`` + ``optimizer.step()``; params,
  buffers, grads and optimizer state from the tensors that exist afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from convcalc.core.memory import LARGER_STORAGE
from convcalc.core.spec import InputSpec, Node
from convcalc.errors import MeasurementError, SpecError
from convcalc.measure.build import TORCH_DTYPES, GraphModule, build_layer, first_line, user_code

OPTIMIZERS: dict[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer]] = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.01),
    "momentum": lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9),
    "adam": lambda params: torch.optim.Adam(params),
    "adamw": lambda params: torch.optim.AdamW(params),
}
NOT_COUNTED = (
    "kernels' private workspaces (e.g. im2col buffers of CPU convolutions, allocator slack) "
    "are not seen: only tensors that aten ops return"
)


def _storage_id(tensor: torch.Tensor) -> int:
    return int(tensor.untyped_storage()._cdata)


def _nbytes(tensor: torch.Tensor) -> int:
    return int(tensor.untyped_storage().nbytes())


def _state_ids(module: nn.Module) -> set[int]:
    """Storages of parameters and buffers: saved by reference, never counted as activations."""
    return {_storage_id(t) for t in [*module.parameters(), *module.buffers()]}


def _layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf modules (no children) in registration order: where ops are attributed."""
    leaves = [(n, m) for n, m in module.named_modules() if not any(True for _ in m.children())]
    return leaves or [("", module)]


@contextmanager
def _attributing(
    layers: Sequence[tuple[str, nn.Module]],
    current: list[str],
    on_enter: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Forward pre-hooks that set ``current[0]`` to the running layer's name (and call
    ``on_enter`` with it)."""

    def hook_for(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: Any) -> None:
            current[0] = name
            if on_enter is not None:
                on_enter(name)

        return hook

    handles = [m.register_forward_pre_hook(hook_for(n)) for n, m in layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _innermost(
    model: nn.Module, inner: list[str], on_enter: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Forward pre- and post-hooks on every module of ``model`` that keep ``inner[0]`` the name
    of the innermost module running (``""``, the root, outside every child), as the dispatch
    count attributes its operators (measure.opcount): a functional call goes to the module
    whose forward makes it, not to the leaf entered last. ``on_enter`` is called with each
    module's name as it starts. A module not registered in ``model`` is not followed."""
    stack = [inner[0]]

    def before(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: Any) -> None:
            stack.append(name)
            inner[0] = name
            if on_enter is not None:
                on_enter(name)

        return hook

    def after(_module: nn.Module, _args: Any, _out: Any) -> None:
        if len(stack) > 1:
            stack.pop()
        inner[0] = stack[-1]

    handles = []
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(before(name)))
        handles.append(module.register_forward_hook(after, always_call=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


# --- building networks ----------------------------------------------------------------------


def build_network(
    nodes: Sequence[Node],
    device: str = "cpu",
    dtype: str = "float32",
    *,
    training: bool = True,
    inplace: Collection[int] = (),
) -> GraphModule:
    """The real layers of ``nodes`` (measure.build_layer) in ``dtype``, in training or eval
    mode; activation nodes listed in ``inplace`` run in place."""
    layers = []
    for index, node in enumerate(nodes):
        layer = build_layer(node.spec, device).to(TORCH_DTYPES[dtype])
        if index in inplace:
            if not hasattr(layer, "inplace"):
                raise SpecError("inplace", f"inplace: {type(layer).__name__} has no in-place mode")
            setattr(layer, "inplace", True)  # noqa: B010  (nn.Module typing)
        layers.append(layer.train(training))
    return GraphModule(layers, [node.inputs for node in nodes])


def make_input(
    input_spec: InputSpec, device: str = "cpu", dtype: str | None = None
) -> torch.Tensor:
    """A random input of the spec's shape (seeded), in ``dtype`` (default the spec's)."""
    torch_dtype = TORCH_DTYPES[dtype or input_spec.dtype]
    if device == "meta":
        return torch.empty(input_spec.shape, device="meta", dtype=torch_dtype)
    generator = torch.Generator().manual_seed(0)
    return torch.randn(input_spec.shape, generator=generator).to(device, torch_dtype)


def run_freeing(graph: GraphModule, x: torch.Tensor) -> torch.Tensor:
    """Run a GraphModule as a hand-written forward would: every output dropped as soon as its
    last reader has run (GraphModule.run keeps them all); the last output is returned.
    ``graph.before``/``graph.after``, when set, are called around each node as GraphModule.run
    calls them (the one-pass measurement counts through them)."""
    sources = graph.sources
    last: dict[int, int] = {}
    for index, inputs in enumerate(sources):
        for source in inputs:
            last[source] = index
    final = len(sources) - 1
    outputs: dict[int, torch.Tensor] = {}
    for index, (module, inputs) in enumerate(zip(graph.nodes, sources)):
        args = [x if i < 0 else outputs[i] for i in inputs]
        if graph.before:
            graph.before(index)
        outputs[index] = module(*args)
        if graph.after:
            graph.after(index, outputs[index])
        del args
        for source in set(inputs):
            if source >= 0 and source != final and last.get(source) == index:
                del outputs[source]
        if index != final and index not in last:
            del outputs[index]  # nothing reads it
    return outputs[final]


def _graph_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(module, GraphModule):
        raise TypeError("expected a GraphModule")
    return run_freeing(module, x)


# --- saved for backward ---------------------------------------------------------------------


@dataclass(frozen=True)
class SavedTensor:
    layer: str
    shape: tuple[int, ...]
    dtype: str
    bytes: int
    #: the innermost module running when it was saved (None: not asked, :func:`_innermost`);
    #: beside the layer, not part of the tensor's identity (equality, repr)
    module: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class SavedMeasurement:
    """Bytes saved for backward per layer (each storage attributed to the first layer saving
    it) and in total (each storage once), and the unique tensors."""

    layers: dict[str, int]
    total: int
    tensors: tuple[SavedTensor, ...]
    seconds: float
    source: str

    def by_module(self) -> dict[str, int] | None:
        """The bytes attributed to the innermost module running when each storage was first
        saved (a user's model: functional calls go to the module whose forward makes them, a
        module's children never ran, as nn.MultiheadAttention's out_proj, to itself); None
        where the measurement did not follow the modules (:func:`_innermost`)."""
        if any(t.module is None for t in self.tensors):
            return None
        found: dict[str, int] = {}
        for tensor in self.tensors:
            key = str(tensor.module)
            found[key] = found.get(key, 0) + tensor.bytes
        return found


def measure_saved(
    module: nn.Module,
    x: torch.Tensor,
    layers: Sequence[tuple[str, nn.Module]] | None = None,
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
    *,
    innermost: bool = False,
    storages: set[int] | None = None,
) -> SavedMeasurement:
    """Run ``forward(module, x)`` (default ``module(x)``) with autograd on and count what it
    saves for backward. The module's mode (train/eval) and ``x.requires_grad`` are the
    caller's. Works on CPU and meta tensors. ``innermost``: each saved tensor also names the
    innermost module running (:meth:`SavedMeasurement.by_module`). ``storages``: given the
    ids of the storages saved (parameters excluded)."""
    started = time.perf_counter()
    layers = list(layers) if layers is not None else _layers(module)
    excluded = _state_ids(module)
    current = [""]
    inner = [""]
    seen: dict[int, SavedTensor] = {}
    keep: list[torch.Tensor] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        key = _storage_id(tensor)
        if key not in excluded and key not in seen:
            seen[key] = SavedTensor(
                current[0],
                tuple(tensor.shape),
                str(tensor.dtype).removeprefix("torch."),
                _nbytes(tensor),
                inner[0] if innermost else None,
            )
            keep.append(tensor)  # alive until counted: no storage address is reused
            if storages is not None:
                storages.add(key)
        return tensor

    try:
        with (
            torch.enable_grad(),
            _attributing(layers, current),
            _innermost(module, inner) if innermost else nullcontext(),
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        ):
            out = (forward or _call)(module, x)
    except (RuntimeError, ValueError, TypeError) as error:
        raise MeasurementError(f"torch rejected the forward: {error}") from error
    del out
    keep.clear()
    per_layer = {name: 0 for name, _ in layers}
    for tensor in seen.values():
        per_layer[tensor.layer] = per_layer.get(tensor.layer, 0) + tensor.bytes
    return SavedMeasurement(
        per_layer,
        sum(t.bytes for t in seen.values()),
        tuple(seen.values()),
        time.perf_counter() - started,
        "torch.autograd.graph.saved_tensors_hooks on "
        + (
            "the forward on torch's meta device (shapes only, nothing computed)"
            if x.device.type == "meta"
            else "the real forward"
        )
        + "; each storage once; parameters and buffers not counted",
    )


def _call(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    result: torch.Tensor = module(x)
    return result


def measure_network_saved(
    nodes: Sequence[Node],
    input_spec: InputSpec,
    device: str = "cpu",
    *,
    training: bool = True,
    inplace: Collection[int] = (),
    input_requires_grad: bool = True,
    built: GraphModule | None = None,
) -> SavedMeasurement:
    """Saved for backward of a network of nodes; ``layers`` keyed by node index as text.
    ``built``: the float32 modules of these nodes that the counted run built on ``device``,
    reused (set to the training mode asked) where they fit: building a ResNet-50's again costs
    about 0.3 s, as much as the pass."""
    if built is not None and input_spec.dtype == "float32" and not inplace:
        graph = built.train(training)
    else:
        graph = build_network(nodes, device, input_spec.dtype, training=training, inplace=inplace)
    x = make_input(input_spec, device).requires_grad_(input_requires_grad)
    names = [(str(i), m) for i, m in enumerate(graph.nodes)]
    return measure_saved(graph, x, names, _graph_forward)


# --- live activation bytes ------------------------------------------------------------------


@dataclass
class _Entry:
    ref: StorageWeakRef
    nbytes: int
    born: int
    died: int | None = None


def _allocated_outputs(func: Any, args: Any, out: Any) -> list[Any]:
    """The tensors an op returns, as the CPU kernel allocates them. One exception, on the meta
    device only: batch norm in eval (``native_batch_norm`` with training=False) returns C-sized
    save_mean/save_invstd there, where the CPU (and CUDA) kernels return empty tensors; the
    meta run counts them as the CPU run does (not at all), so that the two devices agree."""
    items = tree_flatten(out)[0]
    if (
        func is torch.ops.aten.native_batch_norm.default
        and len(args) > 5
        and not args[5]
        and items
        and isinstance(items[0], torch.Tensor)
        and items[0].device.type == "meta"
    ):
        return items[:1]
    return list(items)


class _LiveTracker(TorchDispatchMode):
    """Registers the storage of every op output; drops expired ones; records the live total
    after each op, the op and the layer."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # as measure._DispatchCounter: never compile, avoid importing dynamo

    def __init__(self, excluded: set[int], current: list[str]) -> None:
        super().__init__()
        self.excluded = excluded
        self.current = current
        self.live: dict[int, _Entry] = {}
        self.entries: list[_Entry] = []
        self.step = 0
        self.peak = 0
        self.peak_op = ""
        self.peak_layer = ""
        self.layer_peak: dict[str, int] = {}
        #: op outputs held in a storage larger than their elements, each op and layer once:
        #: (op, layer) -> (the elements' bytes, the storage's bytes)
        self.oversized: dict[tuple[str, str], tuple[int, int]] = {}
        #: the innermost module running (:func:`_innermost`), and the largest live bytes while
        #: each is: None where not followed
        self.inner: list[str] | None = None
        self.module_peak: dict[str, int] = {}

    def register(self, tensor: torch.Tensor, func: Any = None) -> None:
        key = _storage_id(tensor)
        if key in self.excluded or key in self.live:
            return
        nbytes = _nbytes(tensor)
        entry = _Entry(StorageWeakRef(tensor.untyped_storage()), nbytes, self.step)
        self.live[key] = entry
        self.entries.append(entry)
        if func is not None and nbytes > tensor.numel() * tensor.element_size():
            where = (str(func), self.current[0])
            self.oversized.setdefault(where, (tensor.numel() * tensor.element_size(), nbytes))

    def described(self, source: str) -> str:
        """``source``, with the op outputs held in a larger storage than their elements: the
        live bytes count the storage (what the allocator holds), a formula the elements."""
        if not self.oversized:
            return source
        held = "; ".join(
            f"{op}{f' (layer {layer})' if layer else ''} returned {elements:,} B of elements in a "
            f"{nbytes:,} B storage"
            for (op, layer), (elements, nbytes) in self.oversized.items()
        )
        return (
            f"{source}; {LARGER_STORAGE}, as the allocator holds them (a formula counts "
            f"elements): {held}"
        )

    def _purge(self) -> None:
        for key in [k for k, e in self.live.items() if e.ref.expired()]:
            self.live.pop(key).died = self.step

    def total(self) -> int:
        return sum(e.nbytes for e in self.live.values())

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        self.step += 1
        self._purge()
        # an output sharing an argument's storage (a view, detach, an in-place op) allocates
        # nothing: e.g. backward unpacking a saved tensor made before tracking began
        shared = {
            _storage_id(a) for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)
        }
        for item in _allocated_outputs(func, args, out):
            if isinstance(item, torch.Tensor) and _storage_id(item) not in shared:
                self.register(item, func)
        live = self.total()
        layer = self.current[0]
        self.layer_peak[layer] = max(self.layer_peak.get(layer, 0), live)
        if self.inner is not None:
            self.enter_module(self.inner[0], live)
        if live > self.peak:
            self.peak, self.peak_op, self.peak_layer = live, str(func), layer
        return out

    def enter_module(self, name: str, live: int | None = None) -> None:
        """The innermost module running is ``name`` (starting, or after an op): what is live
        now is live while it runs."""
        if live is None:
            self._purge()
            live = self.total()
        self.module_peak[name] = max(self.module_peak.get(name, 0), live)

    def enter(self, layer: str) -> None:
        """A layer starts: what is live now is live while it runs (even if it runs no op)."""
        self._purge()
        live = self.total()
        self.layer_peak[layer] = max(self.layer_peak.get(layer, 0), live)
        if live > self.peak:
            self.peak, self.peak_op, self.peak_layer = live, "(entering the layer)", layer

    def finish(self) -> None:
        self.step += 1
        self._purge()


@dataclass(frozen=True)
class PeakMeasurement:
    """The largest live activation bytes after any op of a no_grad forward, where it was, and
    the largest per layer."""

    peak: int
    layer: str
    op: str
    layers: dict[str, int]
    seconds: float
    source: str
    #: the largest live bytes while each module is the innermost running (a user's model:
    #: attributed as its MACs are, measure.opcount); None where not followed (:func:`_innermost`)
    modules: dict[str, int] | None = None


def measure_peak_inference(
    module: nn.Module,
    x: torch.Tensor,
    layers: Sequence[tuple[str, nn.Module]] | None = None,
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
    *,
    innermost: bool = False,
    also: Sequence[torch.Tensor] = (),
) -> PeakMeasurement:
    """Live activation bytes during ``forward(module, x)`` under ``torch.no_grad()``: the
    input (held by the caller) and every op output until it is freed. Parameters and buffers
    are not activations and are not counted. ``innermost``: also the largest live bytes while
    each module is the innermost running (``modules``)."""
    started = time.perf_counter()
    layers = list(layers) if layers is not None else _layers(module)
    current = [""]
    tracker = _LiveTracker(_state_ids(module), current)
    tracker.register(x)
    for other in also:  # a forward's other inputs (measure.modelargs), live throughout too
        tracker.register(other)
    if innermost:
        tracker.inner = [""]
    try:
        with (
            torch.no_grad(),
            _attributing(layers, current, tracker.enter),
            _innermost(module, tracker.inner, tracker.enter_module)
            if tracker.inner is not None
            else nullcontext(),
            tracker,
        ):
            out = (forward or _call)(module, x)
            del out
        tracker.finish()
    except (RuntimeError, ValueError, TypeError) as error:
        raise MeasurementError(f"torch rejected the forward: {error}") from error
    return PeakMeasurement(
        tracker.peak,
        tracker.peak_layer,
        tracker.peak_op,
        {name: tracker.layer_peak.get(name, 0) for name, _ in layers},
        time.perf_counter() - started,
        tracker.described(
            "storages returned by aten ops (TorchDispatchMode) until freed (StorageWeakRef), "
            "under torch.no_grad(); " + NOT_COUNTED
        ),
        None if tracker.inner is None else dict(tracker.module_peak),
    )


def measure_network_peak(
    nodes: Sequence[Node],
    input_spec: InputSpec,
    device: str = "cpu",
    *,
    inplace: Collection[int] = (),
    dtype: str | None = None,
) -> PeakMeasurement:
    """Inference peak of a network of nodes in eval mode, outputs freed after their last
    reader; ``layers`` keyed by node index as text."""
    dtype = dtype or input_spec.dtype
    graph = build_network(nodes, device, dtype, training=False, inplace=inplace)
    x = make_input(input_spec, device, dtype)
    names = [(str(i), m) for i, m in enumerate(graph.nodes)]
    return measure_peak_inference(graph, x, names, _graph_forward)


# --- a training step ------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingMeasurement:
    """Bytes of one real training step (see memory_model.TrainingStep for the formula)."""

    params: int
    buffers: int
    grads: int
    optimizer_state: int
    saved_for_backward: int
    #: the forward's output, held through backward (its storage, where not saved already)
    output: int
    #: peak of tensors made during backward that are not parameter gradients
    transient: int
    total: int
    #: peak of tensors made during optimizer.step() beyond its state (not in total)
    optimizer_transient: int
    seconds: float
    sources: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, int]:
        return {
            "params": self.params,
            "buffers": self.buffers,
            "grads": self.grads,
            "optimizer_state": self.optimizer_state,
            "saved_for_backward": self.saved_for_backward,
            "output": self.output,
            "transient": self.transient,
            "total": self.total,
        }


def _unique_bytes(tensors: Sequence[torch.Tensor]) -> int:
    seen: dict[int, int] = {}
    for tensor in tensors:
        seen[_storage_id(tensor)] = _nbytes(tensor)
    return sum(seen.values())


def _peak_excluding(entries: Sequence[_Entry], skip: set[int], end: int) -> int:
    """Largest live total over time of the entries not in ``skip`` (indices)."""
    events: list[tuple[int, int]] = []
    for index, entry in enumerate(entries):
        if index in skip:
            continue
        events.append((entry.born, entry.nbytes))
        events.append((entry.died if entry.died is not None else end + 1, -entry.nbytes))
    live = best = 0
    for _, change in sorted(events, key=lambda e: (e[0], e[1])):
        live += change
        best = max(best, live)
    return best


def measure_training_step(
    module: nn.Module,
    x: torch.Tensor,
    optimizer: str = "adam",
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
) -> TrainingMeasurement:
    """One real step on the CPU: forward (saved tensors hooked), ``out.backward(ones)``
    (allocations tracked; a dense gradient the size of the output, as any loss but a plain sum
    gives; ``out`` held through it, as a training loop holds it), ``optimizer.step()``. The
    module should be in training mode; ``x`` needs no gradient (data)."""
    if optimizer not in OPTIMIZERS:
        raise SpecError(
            "optimizer", f"--optimizer {optimizer!r} must be one of {', '.join(OPTIMIZERS)}"
        )
    started = time.perf_counter()
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.grad = None
    opt = OPTIMIZERS[optimizer](params)
    run = forward or _call
    outputs: list[torch.Tensor] = []

    def keep_output(m: nn.Module, t: torch.Tensor) -> torch.Tensor:
        out = run(m, t)
        outputs.append(out)
        return out

    storages: set[int] = set()
    saved = measure_saved(module, x, forward=keep_output, storages=storages)
    out = outputs.pop()
    output = 0 if _storage_id(out) in storages else _nbytes(out)
    current = [""]
    tracker = _LiveTracker(_state_ids(module), current)
    try:
        with tracker:
            out.backward(torch.ones_like(out))
        tracker.finish()
        del out
        grad_ids = {_storage_id(p.grad) for p in params if p.grad is not None}
        skip = {
            i
            for i, e in enumerate(tracker.entries)
            if e.died is None and _storage_id_of(e) in grad_ids
        }
        transient = _peak_excluding(tracker.entries, skip, tracker.step)
        before = {_storage_id(t) for t in _state_tensors(opt)}
        step_tracker = _LiveTracker(_state_ids(module) | before, current)
        with step_tracker:
            opt.step()
        step_tracker.finish()
    except (RuntimeError, ValueError, TypeError) as error:
        raise MeasurementError(f"torch rejected the training step: {error}") from error
    state = _state_tensors(opt)
    state_ids = {_storage_id(t) for t in state}
    step_skip = {
        i
        for i, e in enumerate(step_tracker.entries)
        if e.died is None and _storage_id_of(e) in state_ids
    }
    figures = {
        "params": _unique_bytes(params),
        "buffers": _unique_bytes(list(module.buffers())),
        "grads": _unique_bytes([p.grad for p in params if p.grad is not None]),
        "optimizer_state": _unique_bytes(state),
        "saved_for_backward": saved.total,
        "output": output,
        "transient": transient,
    }
    return TrainingMeasurement(
        **figures,
        total=sum(figures.values()),
        optimizer_transient=_peak_excluding(step_tracker.entries, step_skip, step_tracker.step),
        seconds=time.perf_counter() - started,
        sources={
            "params": "the module's parameters after the step",
            "buffers": "the module's buffers",
            "grads": "p.grad of every parameter after backward",
            "optimizer_state": f"every tensor in torch.optim {type(opt).__name__}.state",
            "saved_for_backward": saved.source,
            "output": "the forward's output, held through backward (its storage, 0 where "
            "saved for backward already)",
            "transient": "storages made during backward (TorchDispatchMode), parameter "
            "gradients excluded, the output's gradient included (backward is seeded with "
            "ones the size of the output, as a loss's gradient is); a loss's own tensors "
            "(MSE's difference, cross-entropy's softmax) are not counted; " + NOT_COUNTED,
        },
    )


def _storage_id_of(entry: _Entry) -> int:
    return int(entry.ref.cdata)


def _state_tensors(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [
        value
        for state in opt.state.values()
        for value in state.values()
        if isinstance(value, torch.Tensor)
    ]


def measure_network_training(
    nodes: Sequence[Node],
    input_spec: InputSpec,
    optimizer: str = "adam",
    *,
    inplace: Collection[int] = (),
) -> TrainingMeasurement:
    """One real training step of a network of nodes on the CPU, in the spec's dtype."""
    graph = build_network(nodes, "cpu", input_spec.dtype, training=True, inplace=inplace)
    x = make_input(input_spec, "cpu")
    return measure_training_step(graph, x, optimizer, _graph_forward)


# --- GPU ------------------------------------------------------------------------------------


def measure_training_step_cuda(
    module: nn.Module, x: torch.Tensor, optimizer: str = "adam"
) -> dict[str, int]:
    """On a CUDA device: torch.cuda.max_memory_allocated over one step (everything the caching
    allocator handed out, workspaces included), and the bytes allocated before it."""
    if not torch.cuda.is_available():
        raise MeasurementError("no CUDA device is available here")
    device = torch.device("cuda")
    module = module.to(device).train()
    x = x.to(device)
    opt = OPTIMIZERS[optimizer]([p for p in module.parameters() if p.requires_grad])
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = module(x)
    out.backward(torch.ones_like(out))  # a dense gradient, as a loss gives; out held through it
    del out
    opt.step()
    torch.cuda.synchronize()
    return {
        "allocated_before": int(before),
        "peak": int(torch.cuda.max_memory_allocated()),
        "after": int(torch.cuda.memory_allocated()),
    }


def element_bytes(dtype: str) -> int:
    """torch's element size for a dtype name (int8 included)."""
    return int(torch.empty((), dtype=getattr(torch, dtype)).element_size())


# --- a user's model -------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelMemory:
    """What a user's model saves for backward, its inference peak and (when run) one training
    step; each None where torch refused, with the reason in ``sources``."""

    saved: SavedMeasurement | None
    peak: PeakMeasurement | None
    step: TrainingMeasurement | None
    sources: dict[str, str]


def measure_model_memory(
    model: nn.Module,
    input_shape: Sequence[int],
    dtype: str = "float32",
    optimizer: str = "adam",
    *,
    training_step: bool = True,
    peak: PeakMeasurement | None = None,
    saved: SavedMeasurement | None = None,
    inputs: Sequence[Any] | None = None,
) -> ModelMemory:
    """A user's model measured on a copy (its mode, parameters and buffers are left alone):
    saved for backward (training mode, data needing no grad), the inference peak (eval mode),
    and with ``training_step`` one real step with ``optimizer``. ``peak``/``saved``: already
    measured (measure.modelpass: by the counted forward), not measured again. ``inputs``: the
    forward's arguments (core.modelinput.ModelInput: several, integer or keyword ones; each
    counted in the peak), else one float input of ``input_shape``."""
    import copy

    if saved is not None and peak is not None and not training_step:
        # nothing is left to run: no copy is made (nor needed: a model that cannot be copied
        # keeps the figures its counted forward gave)
        return ModelMemory(saved, peak, None, {"saved": saved.source, "peak": peak.source})
    try:
        twin = copy.deepcopy(model, _lazy_parameters(model)).to(TORCH_DTYPES[dtype])
    except Exception as error:  # noqa: BLE001  (the user's module)
        reason = f"not measured: the model could not be copied ({first_line(error)})"
        return ModelMemory(None, None, None, dict.fromkeys(("saved", "peak", "step"), reason))
    if inputs is not None:
        return _model_memory_of_inputs(
            model, twin, inputs, dtype, optimizer, training_step, peak, saved
        )
    x = make_input(InputSpec(input_shape[0], input_shape[1], tuple(input_shape[2:]), dtype))
    # the passes draw random numbers (dropout in training mode, the step's data): the user's
    # random state is left as it was
    with torch.random.fork_rng(devices=[]):
        found = _model_memory(twin, x, optimizer, training_step, peak, saved)
    if found.saved is None and found.peak is None:
        # a model that fixes its own precision (a half layer, a cast in its forward) fails
        # when cast to --dtype: measured again in its own dtypes, and said so
        own = _own_dtypes(model)
        if own and own != {TORCH_DTYPES[dtype]}:
            first = next(
                t.dtype
                for t in (*model.parameters(), *model.buffers())
                if t.dtype.is_floating_point
            )
            names = ", ".join(sorted(str(d).removeprefix("torch.") for d in own))
            why = found.sources.get("peak", "").removeprefix("not measured: ")
            with torch.random.fork_rng(devices=[]):
                again = _model_memory(copy.deepcopy(model), x.to(first), optimizer, training_step)
            note = (
                f"; in the model's own dtypes ({names}), the input in "
                f"{str(first).removeprefix('torch.')}: cast to {dtype} it failed ({why})"
            )
            return replace(again, sources={key: text + note for key, text in again.sources.items()})
    return found


def _model_memory_of_inputs(
    model: nn.Module,
    twin: nn.Module,
    inputs: Sequence[Any],
    dtype: str,
    optimizer: str,
    training_step: bool,
    peak: PeakMeasurement | None,
    saved: SavedMeasurement | None,
) -> ModelMemory:
    """:func:`measure_model_memory` of a forward taking several, integer or keyword inputs
    (measure.modelargs): floats seeded normal values in ``dtype`` (or their own), integers and
    booleans zeros; every input is live from the start of the peak. A model failing in
    ``dtype`` is measured again in its own float dtype, as one input's is."""
    import copy

    from convcalc.measure.modelargs import make_args

    def measured(module: nn.Module, float_dtype: torch.dtype) -> ModelMemory:
        made = make_args(inputs, "cpu", float_dtype, random=True)
        first = made.tensors[0]

        def forward(m: nn.Module, _: torch.Tensor) -> Any:
            return made.call(m)

        with torch.random.fork_rng(devices=[]):
            return _model_memory(
                module, first, optimizer, training_step, peak, saved, forward, made.tensors[1:]
            )

    found = measured(twin, TORCH_DTYPES[dtype])
    own = _own_dtypes(model)
    if found.saved is None and found.peak is None and own and own != {TORCH_DTYPES[dtype]}:
        first = next(
            t.dtype for t in (*model.parameters(), *model.buffers()) if t.dtype.is_floating_point
        )
        why = found.sources.get("peak", "").removeprefix("not measured: ")
        again = measured(copy.deepcopy(model), first)
        names = ", ".join(sorted(str(d).removeprefix("torch.") for d in own))
        note = (
            f"; in the model's own dtypes ({names}), the float inputs in "
            f"{str(first).removeprefix('torch.')}: cast to {dtype} it failed ({why})"
        )
        return replace(again, sources={key: text + note for key, text in again.sources.items()})
    return found


def _lazy_parameters(model: nn.Module) -> dict[int, Any]:
    """A deepcopy memo whose parameters are copy-on-write clones of the model's
    (``torch._lazy_clone``): each (a plain ``nn.Parameter``) a new Parameter with the same
    ``requires_grad`` on a storage that shares the model's memory until either side writes it,
    when that side gets its own copy. The same values as a deep copy, and nothing the copy does
    reaches the model; the passes that only read the parameters (saved for backward, the
    inference peak: a forward and autograd read them) copy nothing (a ResNet-50: 100 MB not
    copied); the training step's optimizer writes them, and pays the copy then. Empty (a plain
    deep copy) where this torch has no ``_lazy_clone``."""
    lazy = getattr(torch, "_lazy_clone", None)
    if lazy is None:
        return {}
    return {
        id(p): nn.Parameter(lazy(p.detach()), requires_grad=p.requires_grad)
        for p in model.parameters()
        if type(p) is nn.Parameter
    }


def _own_dtypes(model: nn.Module) -> set[Any]:
    return {t.dtype for t in (*model.parameters(), *model.buffers()) if t.dtype.is_floating_point}


def _model_memory(
    twin: nn.Module,
    x: torch.Tensor,
    optimizer: str,
    training_step: bool,
    peak: PeakMeasurement | None = None,
    saved: SavedMeasurement | None = None,
    forward: Callable[[nn.Module, torch.Tensor], Any] | None = None,
    also: Sequence[torch.Tensor] = (),
) -> ModelMemory:
    sources: dict[str, str] = {}
    step = None
    # the user's forward may print (to stderr, as measure_model does) or raise anything
    with user_code():
        if saved is not None:
            sources["saved"] = saved.source
        else:
            try:
                saved = measure_saved(twin.train(), x, forward=forward, innermost=True)
                sources["saved"] = saved.source + "; training mode, the data needing no grad"
            except Exception as error:  # noqa: BLE001  (the user's code)
                sources["saved"] = f"not measured: {first_line(error)}"
        if peak is not None:
            sources["peak"] = peak.source
        else:
            try:
                peak = measure_peak_inference(
                    twin.eval(), x, forward=forward, innermost=True, also=also
                )
                sources["peak"] = peak.source + "; eval mode"
            except Exception as error:  # noqa: BLE001
                sources["peak"] = f"not measured: {first_line(error)}"
        if training_step:
            try:
                step = measure_training_step(twin.train(), x, optimizer, forward)
                sources["step"] = "one real step on the CPU: " + "; ".join(
                    f"{key}: {text}" for key, text in step.sources.items()
                )
            except Exception as error:  # noqa: BLE001
                sources["step"] = f"not measured: {first_line(error)}"
    return ModelMemory(saved, peak, step, sources)
