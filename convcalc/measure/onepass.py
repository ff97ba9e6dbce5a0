"""One real forward pass that yields every figure a report measures from a forward: the output
shapes and torch's FLOP formulas (measure.counting's dispatch mode), the shapes fvcore's rules
count (convolutions, matrix multiplies), the bytes saved for backward and the inference peak.

How saved-for-backward and the inference peak come from the same pass: the pass runs with
autograd on and the network input requiring grad, under
``torch.autograd.graph.saved_tensors_hooks`` whose pack hook RECORDS each saved tensor (its
storage and bytes, as measure.memory.measure_saved counts them) and hands autograd a token
instead of the tensor. Autograd then keeps no activation alive: every storage dies when it
would under ``torch.no_grad()``, so measure.memory's live-storage tracker (a dispatch mode with
``StorageWeakRef``) measures the inference peak in the same pass. No backward runs; unpacking
a token raises.

Layers whose forward depends on the training mode (``Kind.mode_dependent``) save other tensors
in training than in the eval-mode pass. Batch norm (``Kind.training_twin``) runs a second time
beside the pass, in training mode, on the very inputs the pass gave it, with the counters and
the live tracker paused and its own recorder: what it saves there (its input, save_mean and
save_invstd) is counted in place of what its eval-mode call saved, storages an earlier layer
saved excepted, as a training-mode pass would count them. Its eval output, like its training
output, is a new tensor, so every later layer saves the same storages in both modes.

What this does not cover (the callers measure it separately, and say so):

* a network with a mode-dependent layer that has no such twin (dropout: its eval output is its
  input itself, so later layers would save other storages than in training);
* an in-place activation whose in-place backward saves a copy of its input (relu6, silu,
  hardswish, hardsigmoid: ``kinds.activation.INPLACE_SAVES_COPY``): that copy is made only with
  autograd on, so the pass's live bytes are not the inference peak's.

Tested equal to the separate passes (measure.memory.measure_network_saved in training mode,
measure_network_peak under no_grad) on conv, pool, activation, linear, residual and
concatenating networks, in-place activations included (tests/test_onepass.py).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import _disable_current_modes

from convcalc.core.spec import InputSpec, Node
from convcalc.errors import MeasurementError
from convcalc.kinds import ActSpec, kind_of
from convcalc.kinds.activation import INPLACE_SAVES_COPY
from convcalc.measure.build import GraphModule
from convcalc.measure.counting import RunRecord, observed
from convcalc.measure.memory import (
    NOT_COUNTED,
    PeakMeasurement,
    SavedMeasurement,
    SavedTensor,
    _LiveTracker,
    _nbytes,
    _state_ids,
    _storage_id,
    build_network,
    make_input,
    run_freeing,
)


class _Saved:
    """The token autograd keeps in place of a saved tensor: nothing to unpack."""

    __slots__ = ()


_TOKEN = _Saved()


def _unpack(token: Any) -> torch.Tensor:
    raise RuntimeError(
        "convcalc's one-pass measurement keeps no saved tensors: no backward can run on it"
    )


class SavedRecorder:
    """The pack hook of ``saved_tensors_hooks`` that records each saved storage once
    (parameters and buffers, ``excluded``, not counted; attributed to ``current[0]``, the layer
    running) and hands autograd a token, so that nothing is kept alive for backward. The
    storage is held by a weak reference only: its address may be reused once it dies, and a
    dead entry is then a different storage. Used by the stacks' one pass and by a user's
    model's counted forward (measure.modelpass)."""

    def __init__(self, excluded: Collection[int], current: list[str]) -> None:
        self.excluded = excluded
        self.current = current
        self.seen: dict[int, tuple[StorageWeakRef, SavedTensor]] = {}
        #: while a list: every new entry is also appended to it (TrainingTwins.enter)
        self.log: list[tuple[StorageWeakRef, SavedTensor]] | None = None
        #: the innermost module running (measure.memory._innermost), where followed
        self.inner: list[str] | None = None

    def pack(self, tensor: torch.Tensor) -> _Saved:
        key = _storage_id(tensor)
        if key not in self.excluded:
            old = self.seen.get(key)
            if old is None or old[0].expired():
                entry = (
                    StorageWeakRef(tensor.untyped_storage()),
                    SavedTensor(
                        self.current[0],
                        tuple(tensor.shape),
                        str(tensor.dtype).removeprefix("torch."),
                        _nbytes(tensor),
                        None if self.inner is None else self.inner[0],
                    ),
                )
                self.seen[key] = entry
                if self.log is not None:
                    self.log.append(entry)
        return _TOKEN

    def hooks(self) -> Any:
        """The context manager that installs the hook."""
        return torch.autograd.graph.saved_tensors_hooks(self.pack, _unpack)

    def measurement(
        self,
        names: Sequence[str],
        seconds: float,
        source: str,
        twins: TrainingTwins | None = None,
    ) -> SavedMeasurement:
        """What was recorded, per layer (each of ``names``, 0 where nothing) and in total;
        with ``twins``, what the twinned calls saved in eval mode replaced by what they saved in
        training mode."""
        dropped = {id(entry) for entry in twins.dropped} if twins else set()
        tensors = tuple(
            [entry[1] for entry in self.seen.values() if id(entry) not in dropped]
            + (twins.saved if twins else [])
        )
        per_layer = dict.fromkeys(names, 0)
        for tensor in tensors:
            per_layer[tensor.layer] = per_layer.get(tensor.layer, 0) + tensor.bytes
        return SavedMeasurement(per_layer, sum(t.bytes for t in tensors), tensors, seconds, source)


class TrainingTwins:
    """Mode-dependent layers run a second time in training mode beside a counted eval-mode pass
    (see the module docstring). :meth:`enter` is called as such a layer's call starts and
    :meth:`run` once it has returned, with the inputs it was given: what that eval-mode call
    saved (``main``, the pass's recorder, logged it) goes to ``dropped``, and what the
    training-mode call saves to ``saved``, attributed to the layer the pass attributes the call
    to, but for storages another layer saved before it, as a training-mode pass counts them.
    Each layer's buffers (batch norm's running statistics, which training mode updates) are put
    back, and the dispatch modes are paused, so the pass's counts and live bytes never see the
    twin. Linear in the saved tensors. Used by the stacks'
    one pass and by a user's model's counted forward (measure.modelpass)."""

    def __init__(self, main: SavedRecorder) -> None:
        self.main = main
        self.recorders: dict[str, SavedRecorder] = {}
        self.saved: list[SavedTensor] = []
        self.dropped: list[tuple[StorageWeakRef, SavedTensor]] = []
        self.failed = False

    def enter(self) -> None:
        """A twinned layer's eval-mode call starts: log what it saves."""
        self.main.log = []

    @contextlib.contextmanager
    def beside(self, module: torch.nn.Module) -> Iterator[None]:
        """While it lasts, ``module``'s ``forward`` (an attribute set on the module itself, which
        ``module(x)`` and ``module.forward(x)`` both call) logs what its own call saves, then
        runs it again in training mode on the same arguments: its class's ``forward``, so no
        module hook (the count's, a user's) sees the second call, and what a user's hook saves
        is never taken for the layer's."""
        own = type(module).forward.__get__(module)

        def forward(*args: Any, **kwargs: Any) -> Any:
            self.enter()
            out = own(*args, **kwargs)
            self.run(module, args, own, kwargs)
            return out

        module.forward = forward
        try:
            yield
        finally:
            del module.forward

    def run(
        self,
        module: torch.nn.Module,
        args: Sequence[Any],
        call: Any = None,
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        """Run ``module`` (or ``call``, e.g. its class's ``forward``) on ``args`` and ``kwargs``
        in training mode."""
        own, self.main.log = self.main.log or [], None
        if self.failed:
            return
        # attributed as the pass attributes the call's own saves: to the layer running (the
        # module's own name, unless its forward was called directly inside another's)
        layer = self.main.current[0]
        recorder = self.recorders.setdefault(layer, SavedRecorder(self.main.excluded, [layer]))
        recorder.inner = None if self.main.inner is None else [self.main.inner[0]]
        known = set(recorder.seen)
        mode = module.training
        try:
            with _disable_current_modes():
                kept = [(buffer, buffer.clone()) for buffer in module.buffers()]
                try:
                    with recorder.hooks():
                        module.train()
                        out = (call or module)(*args, **(kwargs or {}))
                        del out
                finally:
                    module.train(mode)
                    with torch.no_grad():
                        for buffer, value in kept:
                            buffer.copy_(value)
        except (RuntimeError, ValueError, TypeError):
            self.failed = True  # the caller's training-mode pass meets it and says why
            return
        self.dropped.extend(own)
        mine = {id(entry) for entry in own}
        for key, (_, saved) in recorder.seen.items():
            if key in known:
                continue
            prior = self.main.seen.get(key)
            if (
                prior is not None
                and id(prior) not in mine
                and prior[1].layer != layer
                and not prior[0].expired()
            ):
                continue  # an earlier layer saved it: counted there
            self.saved.append(saved)


@dataclass
class OnePass:
    """What one pass measured: the counted record (shapes, FLOPs, dispatched convolution and
    matrix-multiply shapes), and, where asked, saved-for-backward and the inference peak."""

    record: RunRecord
    saved: SavedMeasurement | None
    peak: PeakMeasurement | None


def run_once(
    graph: GraphModule, x: torch.Tensor, *, memory: bool = True, twins: Collection[int] = ()
) -> OnePass:
    """One forward of ``graph`` on ``x``, each output freed after its last reader
    (measure.memory.run_freeing), counted by torch's FLOP formulas; with ``memory``, under
    autograd with ``x`` requiring grad, recording what is saved for backward (each storage
    once, parameters and buffers not counted, attributed to the node that saves it first) and
    the live activation bytes after every op. Layers keyed by node index as text. The module
    mode is the caller's (see the module docstring for what one pass cannot serve). ``twins``:
    the nodes run again in training mode beside the pass (:func:`training_twins`), their
    training-mode saved tensors counted (saved: None if one of them failed there)."""
    started = time.perf_counter()
    record = RunRecord()
    names = [str(index) for index in range(len(graph.nodes))]
    if not memory:
        with torch.no_grad(), observed(graph, record):
            run_freeing(graph, x)
        return OnePass(record, None, None)
    excluded = _state_ids(graph)
    current = [""]
    tracker = _LiveTracker(excluded, current)
    x = x if x.requires_grad else x.detach().requires_grad_(True)
    tracker.register(x)
    recorder = SavedRecorder(excluded, current)
    twin = TrainingTwins(recorder) if twins else None

    try:
        with contextlib.ExitStack() as stack:
            if twin is not None:
                for index in twins:
                    stack.enter_context(twin.beside(graph.nodes[index]))
            stack.enter_context(torch.enable_grad())
            stack.enter_context(tracker)
            stack.enter_context(observed(graph, record))
            stack.enter_context(recorder.hooks())
            counted = graph.before

            def before(index: int) -> None:
                current[0] = names[index]
                tracker.enter(names[index])
                if counted is not None:
                    counted(index)

            graph.before = before
            out = run_freeing(graph, x)
            del out
        tracker.finish()
    except (RuntimeError, ValueError, TypeError) as error:
        raise MeasurementError(f"torch rejected the forward: {error}") from error
    seconds = time.perf_counter() - started
    saved: SavedMeasurement | None = recorder.measurement(
        names,
        seconds,
        "torch.autograd.graph.saved_tensors_hooks on the real forward; each storage once; "
        "parameters and buffers not counted; in the same real CPU pass as the counts (the "
        "hook records each saved storage and keeps a token in its place)"
        + (TWINS_SOURCE if twin else ""),
        twin,
    )
    if twin is not None and twin.failed:
        saved = None
    peak = PeakMeasurement(
        tracker.peak,
        tracker.peak_layer,
        tracker.peak_op,
        {name: tracker.layer_peak.get(name, 0) for name in names},
        seconds,
        tracker.described(
            "storages returned by aten ops (TorchDispatchMode) until freed (StorageWeakRef), "
            "in the same real CPU pass as the counts, autograd on with every saved tensor "
            "replaced by a token (nothing is kept for backward: each storage dies when it would "
            "under torch.no_grad()); " + NOT_COUNTED
        ),
    )
    return OnePass(record, saved, peak)


#: what the saved-for-backward source adds when layers ran again in training mode beside the pass
TWINS_SOURCE = (
    "; the batch norms (their forward depends on the training mode) run a second time beside "
    "the pass, in training mode, on the inputs it gave them: their training-mode saved "
    "tensors are counted"
)


def training_twins(specs: Sequence[Any]) -> tuple[int, ...]:
    """The layers whose training-mode saved tensors the one pass measures by running them again
    in training mode beside it (``Kind.training_twin``: batch norm)."""
    return tuple(
        index
        for index, spec in enumerate(specs)
        if kind_of(spec).mode_dependent(spec) and kind_of(spec).training_twin(spec)
    )


def one_pass_serves(specs: Sequence[Any], inplace: Collection[int] = ()) -> tuple[bool, bool]:
    """Whether one pass (eval mode, autograd on) gives (saved for backward, the inference
    peak) of these layers as the separate passes would: saved, unless a layer's forward depends
    on the training mode and has no training twin (:func:`training_twins`); the peak, unless
    an in-place activation saves a copy of its input."""
    saved = not any(
        kind_of(spec).mode_dependent(spec) and not kind_of(spec).training_twin(spec)
        for spec in specs
    )
    peak = not any(
        index in inplace and isinstance(spec, ActSpec) and spec.kind in INPLACE_SAVES_COPY
        for index, spec in enumerate(specs)
    )
    return saved, peak


def measure_network_once(
    nodes: Sequence[Node],
    input_spec: InputSpec,
    *,
    inplace: Collection[int] = (),
    training: bool = False,
) -> OnePass:
    """:func:`run_once` on the real CPU layers of ``nodes`` in the spec's dtype (measure.memory
    .build_network: ``training`` mode, ``inplace`` activations), the input requiring grad; in
    eval mode with the training twins (:func:`training_twins`) where they serve."""
    graph = build_network(nodes, "cpu", input_spec.dtype, training=training, inplace=inplace)
    specs = [node.spec for node in nodes]
    twins = () if training or not one_pass_serves(specs)[0] else training_twins(specs)
    return run_once(graph, make_input(input_spec, "cpu"), twins=twins)
