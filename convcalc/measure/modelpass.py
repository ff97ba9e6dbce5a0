"""A user's model: the memory figures from the counted forward itself, and the model left as it
was found.

:func:`convcalc.measure.opcount.count_model` runs the model once, in eval mode under
``torch.no_grad()``, on zeros of the input shape. That forward is the one
:func:`convcalc.measure.memory.measure_peak_inference` would run (eval mode, no_grad, the model
in its own dtype, not cast), so :class:`ModelPass` nests measure.memory's live-storage tracker
inside the counting mode and takes the inference peak from the same forward. The counting mode
keeps no tensor alive (it records shapes and numbers; parameters are known by weak
references), so every storage dies when it would without it.

Where no module's forward depends on the training mode, the same forward also gives
saved-for-backward, the way :mod:`convcalc.measure.onepass` does it for stacks: autograd on, the
data needing no grad (as the separate saved pass has it), under
``torch.autograd.graph.saved_tensors_hooks`` whose pack hook records each saved storage and
hands autograd a token, so nothing is kept for backward and the live bytes are those of a
no_grad forward. Whether a forward depends on the training mode is judged from the modules
(:func:`mode_dependent`): by type (batch norm, dropout, instance norm with running stats,
RReLU) and by the code of each module's ``forward`` naming ``training`` (``self.training``,
``F.dropout(x, p, self.training)``). A user's model is arbitrary code: a forward that reads the
mode through a helper function it calls is not seen.

Where the counted forward is not what the peak pass would run, the separate passes run
(:func:`peak_blockers` says why): a model whose floating tensors are not all in the dtype
asked (the peak pass casts it), lazy modules (materialised during the forward: their new
parameters would look like activations), nn.MultiheadAttention / nn.TransformerEncoder(Layer)
while torch's fast path is on (the counting turns it off: the inference peak is the fast
path's). With autograd on, an in-place op whose backward needs its input (``silu_``,
``hardswish_``...) makes autograd copy that input first, which a no_grad forward does not: the
pass sees the copy (a ``clone`` of the operand just before the in-place op writes it) and the
caller counts again without autograd.

Where the only modules whose forward depends on the mode are torch's own batch norms
(:func:`training_twins`), each runs a second time beside the counted forward, in training mode,
on the inputs the forward gave it, its running statistics put back after
(measure.onepass.TrainingTwins): its training-mode saved tensors are counted in place of its
eval-mode ones, and the forward gives saved-for-backward after all. What the counted forward
cannot give (saved-for-backward of a model with dropout, or a forward that reads the mode) is
measured on a copy of the model, as before: a training-mode pass writes batch norm's running
statistics, and the user's model must come back as it was.
"""

from __future__ import annotations

import contextlib
import time
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.utils._pytree import tree_flatten

from convcalc.measure.build import TORCH_DTYPES
from convcalc.measure.memory import (
    NOT_COUNTED,
    PeakMeasurement,
    SavedMeasurement,
    _attributing,
    _innermost,
    _layers,
    _LiveTracker,
    _state_ids,
    _storage_id,
)
from convcalc.measure.onepass import SavedRecorder, TrainingTwins

#: module types whose forward differs between training and eval mode
MODE_DEPENDENT_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.dropout._DropoutNd,
    nn.RReLU,
)
#: module types with a fused inference fast path that the dispatch count turns off
FAST_PATH_TYPES: tuple[type[nn.Module], ...] = (
    nn.MultiheadAttention,
    nn.TransformerEncoderLayer,
    nn.TransformerEncoder,
)

_CLONE = torch.ops.aten.clone.default


def _names_training(code: types.CodeType) -> bool:
    if "training" in code.co_names:
        return True
    return any(isinstance(c, types.CodeType) and _names_training(c) for c in code.co_consts)


def _mode_dependent(model: nn.Module) -> Iterator[tuple[str, nn.Module, str]]:
    for name, module in model.named_modules():
        shown = name or "the root"
        if isinstance(module, MODE_DEPENDENT_TYPES):
            yield name, module, f"{shown} ({type(module).__name__})"
        elif isinstance(module, nn.modules.instancenorm._InstanceNorm) and getattr(
            module, "track_running_stats", False
        ):
            yield name, module, f"{shown} ({type(module).__name__} with running statistics)"
        else:
            code = getattr(type(module).forward, "__code__", None)
            if code is not None and _names_training(code):
                yield name, module, f"{shown} ({type(module).__name__}.forward reads the mode)"


def mode_dependent(model: nn.Module) -> list[str]:
    """Modules whose forward may depend on the training mode (``""``: the root), each with why:
    its type (batch norm, dropout, RReLU, instance norm with running statistics) or its
    ``forward``'s code naming ``training``."""
    return [why for _, _, why in _mode_dependent(model)]


def training_twins(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """The modules the counted forward runs a second time in training mode beside itself
    (measure.onepass.TrainingTwins) when every module whose forward depends on the mode is
    torch's own batch norm (BatchNorm1d/2d/3d, ``forward`` not overridden: its eval output is a
    new tensor, as its training output is); None when another is (dropout, a forward that reads
    the mode: the copy's training-mode pass measures saved-for-backward then)."""
    twins = []
    for name, module, _ in _mode_dependent(model):
        if (
            type(module).forward is not nn.modules.batchnorm._BatchNorm.forward
            or "forward" in vars(module)  # a forward set on the module itself
        ):
            return None
        twins.append((name, module))
    return twins


def peak_blockers(model: nn.Module, dtype: str) -> list[str]:
    """Why the counted forward (eval, no_grad, the model not cast, zeros of its own dtype) is
    not the forward the inference-peak pass would run; empty when it is."""
    reasons: list[str] = []
    wanted = TORCH_DTYPES[dtype]
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.dtype.is_floating_point and t.dtype != wanted for t in tensors):
        reasons.append(f"the model has floating tensors not in {dtype} (the peak pass casts it)")
    if any(t.device.type != "cpu" for t in tensors):
        reasons.append("the model is not on the CPU")
    if any(
        isinstance(m, LazyModuleMixin) and m.has_uninitialized_params() for m in model.modules()
    ):
        reasons.append("lazy modules are materialised by the counted forward")
    if torch.backends.mha.get_fastpath_enabled():
        fast = [n or "the root" for n, m in model.named_modules() if isinstance(m, FAST_PATH_TYPES)]
        if fast:
            reasons.append(
                f"{fast[0]} has torch's fused inference fast path, which the count turns off"
            )
    return reasons


def _written(func: Any) -> bool:
    """Whether the operator writes its first argument (an in-place op like ``silu_``)."""
    arguments = func._schema.arguments
    info = arguments[0].alias_info if arguments else None
    return bool(info is not None and info.is_write)


class _PassTracker(_LiveTracker):
    """measure.memory's live-storage tracker that also notices autograd copying an operand
    before an in-place op writes it (a ``clone`` of the storage the next op writes)."""

    def __init__(self, excluded: set[int], current: list[str], grad: bool) -> None:
        super().__init__(excluded, current)
        self.grad = grad
        self.cloned: int | None = None
        self.autograd_copy: str | None = None

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if self.grad:
            cloned, self.cloned = self.cloned, None
            if (
                cloned is not None
                and args
                and isinstance(args[0], torch.Tensor)
                and _storage_id(args[0]) == cloned
                and _written(func)
                and self.autograd_copy is None
            ):
                self.autograd_copy = str(func)
            if func is _CLONE and args and isinstance(args[0], torch.Tensor):
                self.cloned = _storage_id(args[0])
        return super().__torch_dispatch__(func, types, args, kwargs)


@dataclass
class ModelPass:
    """What the counted forward measured besides the counts: the inference peak, and
    saved-for-backward when ``saved`` was asked. Handed to ``count_model(within=...)``, which
    enters :meth:`running` inside its counting mode with the model and inputs it runs."""

    saved_asked: bool
    peak: PeakMeasurement | None = None
    saved: SavedMeasurement | None = None
    #: an in-place op autograd copied the operand of (the pass is not the no_grad forward)
    autograd_copy: str | None = None
    #: why saved-for-backward was not asked of this pass (modules whose forward reads the mode)
    not_saved: list[str] = field(default_factory=list)
    #: why the counted forward gives no memory figure at all (:func:`peak_blockers`)
    blocked: list[str] = field(default_factory=list)
    #: the batch norms run again in training mode beside the forward (:func:`training_twins`)
    twins: list[tuple[str, nn.Module]] = field(default_factory=list)

    @contextlib.contextmanager
    def running(self, model: nn.Module, inputs: Sequence[Any]) -> Iterator[None]:
        started = time.perf_counter()
        layers = _layers(model)
        excluded = _state_ids(model)
        current = [""]
        tracker = _PassTracker(excluded, current, self.saved_asked)
        for tensor in tree_flatten(list(inputs))[0]:
            if isinstance(tensor, torch.Tensor):
                tracker.register(tensor)
        recorder = SavedRecorder(excluded, current)
        # each saved storage and live byte also goes to the innermost module running, as the
        # counted operators do: the report's rows (measure.memory._innermost)
        inner = [""]
        tracker.inner = recorder.inner = inner
        twins = TrainingTwins(recorder)

        with contextlib.ExitStack() as stack:
            if self.saved_asked:
                stack.enter_context(torch.enable_grad())
                stack.enter_context(recorder.hooks())
                for _, module in self.twins:
                    stack.enter_context(twins.beside(module))
            stack.enter_context(_attributing(layers, current, tracker.enter))
            stack.enter_context(_innermost(model, inner, tracker.enter_module))
            stack.enter_context(tracker)
            yield
        tracker.finish()
        seconds = time.perf_counter() - started
        self.autograd_copy = tracker.autograd_copy
        names = [name for name, _ in layers]
        where = "in the dispatch count's forward (eval mode, the model not cast, on zeros of "
        self.peak = PeakMeasurement(
            tracker.peak,
            tracker.peak_layer,
            tracker.peak_op,
            {name: tracker.layer_peak.get(name, 0) for name in names},
            seconds,
            tracker.described(
                "storages returned by aten ops (TorchDispatchMode) until freed (StorageWeakRef), "
                + where
                + "the input shape), "
                + (
                    "autograd on with every saved tensor replaced by a token (nothing is kept "
                    "for backward: each storage dies when it would under torch.no_grad()); "
                    if self.saved_asked
                    else "under torch.no_grad(); "
                )
                + NOT_COUNTED
            ),
            dict(tracker.module_peak),
        )
        if self.saved_asked and not twins.failed:
            self.saved = recorder.measurement(
                names,
                seconds,
                "torch.autograd.graph.saved_tensors_hooks on the real forward; each storage "
                "once; parameters and buffers not counted; "
                + where
                + "the input shape, the data needing no grad; the hook records each saved "
                "storage and keeps a token in its place): "
                + (
                    "the batch norms, the only modules whose forward depends on the training "
                    "mode (judged by module type and by each forward's code naming "
                    "`training`), run a second time beside it, in training mode, on the inputs "
                    "it gave them, their running statistics put back: their training-mode "
                    "saved tensors are counted"
                    if self.twins
                    else "no module's forward depends on the training mode (judged by module "
                    "type and by each forward's code naming `training`), so training mode "
                    "saves the same"
                ),
                twins if self.twins else None,
            )


# --- the memory figures of a user's model ----------------------------------------------------


def plan_pass(model: nn.Module, dtype: str) -> ModelPass:
    """The memory figures the counted forward of ``model`` can give for ``dtype``: the inference
    peak unless :func:`peak_blockers` says otherwise (then none: ``blocked``), saved-for-backward
    too unless a module's forward depends on the training mode (``not_saved``) and is not
    torch's batch norm (those run again beside it: ``twins``)."""
    blocked = peak_blockers(model, dtype)
    if blocked:
        return ModelPass(False, blocked=blocked)
    dependent = mode_dependent(model)
    twins = training_twins(model) if dependent else None
    if twins:
        return ModelPass(True, twins=twins)
    return ModelPass(not dependent, not_saved=dependent)


def model_memory(
    model: nn.Module,
    once: ModelPass | None,
    input_shape: Sequence[int],
    dtype: str = "float32",
    optimizer: str = "adam",
    *,
    training_step: bool = True,
    inputs: Any = None,
) -> Any:
    """:func:`convcalc.measure.memory.measure_model_memory` (on a copy of the model) with what
    the counted forward already measured (``once``) not measured again. ``inputs``: the
    forward's arguments (core.modelinput.ModelInput), where not one float tensor."""
    from convcalc.measure.memory import measure_model_memory

    return measure_model_memory(
        model,
        input_shape,
        dtype,
        optimizer,
        training_step=training_step,
        inputs=inputs,
        peak=once.peak if once is not None else None,
        saved=once.saved if once is not None else None,
    )
