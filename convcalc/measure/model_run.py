"""One user's model, measured once: loaded (:mod:`convcalc.measure.loaders`), counted at the
dispatch level (:func:`convcalc.measure.opcount.count_model`: one forward pass, every operator
counted by a rule or named), and its receptive field probed by autograd
(:func:`convcalc.measure.probes.model_receptive_field`). The engine sets these measured figures
beside the closed forms (``engine.analyze_model``).

Where the time goes is kept in :attr:`ModelRun.seconds` (load, count, receptive field).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook

from convcalc.core import opformulas
from convcalc.core.modelinput import ModelInput
from convcalc.core.spec import Ints
from convcalc.errors import SpecError
from convcalc.kinds import LayerSpec
from convcalc.measure.build import first_line, user_code
from convcalc.measure.modelargs import Bound, field_input
from convcalc.measure.opcount import CountResult, _tensors, count_model
from convcalc.measure.probes import model_receptive_field_why, probe_receptive_field


@dataclass(frozen=True)
class ModelRun:
    title: str
    count: CountResult
    #: what the loader did (weights=None, TorchScript attribution...)
    notes: tuple[str, ...]
    #: every module's own parameters (children excluded), where it has any; "" is the root
    own_params: dict[str, int]
    #: every module's parameters with its children's
    subtree_params: dict[str, int]
    #: autograd on the model's geometry stand-in (rfprobe.model_fields), of the first spatial
    #: output, else the last spatial layer (None: not measured, see notes)
    receptive_field: Ints | None
    receptive_field_of: str
    #: wall-clock seconds of each step: load, count, receptive_field
    seconds: dict[str, float]
    #: the model itself (memory figures measure it on a copy)
    model: Any = None
    #: the memory figures the counted forward measured (measure.modelpass.ModelPass), when asked
    memory: Any = None
    #: the field still reached the border of the largest input the probe tried: the true
    #: field is at least ``receptive_field`` (a note says which limit stopped the growth)
    receptive_field_at_least: bool = False
    #: per module (its name in the count), the shape of the first output tensor of each of its
    #: calls in the counted forward, in order (() where a call returned no tensor): a module
    #: called several times (a U-Net's one pool) has one per call (:func:`_call_outputs`)
    call_outputs: dict[str, tuple[tuple[int, ...], ...]] = field(default_factory=dict)
    #: per module with parameters and no counted work that convcalc has a parameter formula
    #: for (an embedding, a norm, PReLU): its hyper-parameters, plain numbers (param_hyper)
    param_hypers: dict[str, opformulas.ParamHyper] = field(default_factory=dict)
    #: a parameter held by more than one module (tied weights): (module, its name for the
    #: parameter, where the model first holds it: "emb.weight"), one per holding after the
    #: first. The model's parameters count it once; own_params count it in each holder
    shared_params: tuple[tuple[str, str, str], ...] = ()


#: the note where no convolution or pooling ran (an MLP, a transformer on (N, L, E))
NO_SPATIAL_GEOMETRY = (
    "the model's receptive field is not measured: no convolution or pooling ran (the field is "
    "a spatial notion)"
)


def spatial_geometry(count: CountResult) -> bool:
    """Whether the counted forward ran a convolution (any, functional ones too) or a pooling
    operator: the model has spatial geometry, so its receptive field means something."""
    if count.conv_calls:
        return True
    return any("pool" in name.rpartition(".")[2] for name in count.uncounted)


class _FirstTensor(nn.Module):
    """The model with its output cut to its first tensor (a dict, tuple or list output): the
    receptive-field probe follows one output element."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return next(_tensors(self.model(x)))


def run_model(
    target: Any,
    input_shape: Ints,
    *,
    kwargs: str | None = None,
    device: str = "cpu",
    receptive_field: bool = True,
    memory: str | None = None,
    inputs: tuple[ModelInput, ...] | None = None,
) -> ModelRun:
    """Load ``target`` (a target string, see :func:`~convcalc.measure.loaders.load_target`, or
    an ``nn.Module``), count one forward pass on zeros of ``input_shape`` on ``device`` ("cpu";
    "meta": shapes only), and probe the receptive field of its first output tensor. With
    ``memory`` (a dtype name), the counted forward also measures the memory figures it can for
    that dtype (:func:`_count`). ``inputs``: the forward's arguments (several, integer or
    keyword ones; ``input_shape`` is then the first one's): the field is of the first floating
    input with spatial axes (:func:`_field_probe`)."""
    from convcalc.measure.loaders import load_target

    seconds: dict[str, float] = {}
    start = time.perf_counter()
    notes: list[str] = []
    if isinstance(target, str):
        model, loaded = load_target(target, kwargs, device)
        notes.extend(loaded)
        title = target
    elif isinstance(target, nn.Module):
        if kwargs:
            raise SpecError("kwargs", "--kwargs applies to a target string, not a module")
        model, title = target.eval(), type(target).__name__
    else:
        raise SpecError("model", f"cannot analyze a {type(target).__name__}: not an nn.Module")
    seconds["load"] = time.perf_counter() - start
    start = time.perf_counter()
    once = None
    example: Any = tuple(input_shape) if inputs is None else tuple(inputs)
    with _call_outputs(model) as call_outputs:
        if memory is None or device != "cpu":
            count = count_model(model, example, device)
        else:
            count, once = _count(model, example, memory, call_outputs)
    seconds["count"] = time.perf_counter() - start
    own: dict[str, int] = {}
    subtree: dict[str, int] = {}
    hypers: dict[str, opformulas.ParamHyper] = {}
    first_held: dict[int, str] = {}
    shared: list[tuple[str, str, str]] = []
    for name, module in model.named_modules():
        mine = sum(p.numel() for p in module.parameters(recurse=False))
        if mine:
            own[name] = mine
            hyper = param_hyper(module)
            if hyper is not None:
                hypers[name] = hyper
        for which, param in module.named_parameters(recurse=False):
            where = f"{name}.{which}" if name else which
            if id(param) in first_held:
                shared.append((name, which, first_held[id(param)]))
            else:
                first_held[id(param)] = where
        subtree[name] = sum(p.numel() for p in module.parameters())
    field: Ints | None = None
    of = ""
    at_least = False
    start = time.perf_counter()
    if not receptive_field:
        notes.append("the model's receptive field was not measured (receptive_field=False)")
    elif device == "meta":
        notes.append("the model's receptive field needs a real run: not measured on meta")
    elif not spatial_geometry(count):
        notes.append(NO_SPATIAL_GEOMETRY)
    elif inputs is not None and _bound(inputs) and _field_probe(model, inputs)[0] is None:
        notes.append(_field_probe(model, inputs)[1])
    elif len(input_shape) >= 3 or (inputs is not None and _bound(inputs)):
        single = len(count.output_shapes) == 1 and count.output_names == ("",)
        probe = model if single else _FirstTensor(model)
        probe_shape = tuple(input_shape)
        if inputs is not None and _bound(inputs):
            probe, which = _field_probe(model, inputs)
            probe_shape = inputs[field_input(inputs) or 0].shape
            notes.append(which)
        try:
            with user_code():
                field, of, why = model_receptive_field_why(probe, probe_shape)
            if field is None:
                notes.append(f"the model's receptive field was not measured: {why}")
            elif why:
                shown = "x".join(map(str, field))
                notes.append(f"the model's receptive field, {shown}, {why}")
                at_least = True
        except Exception as error:  # a model that cannot run in float64 or backward
            notes.append(
                "the model's receptive field could not be measured by autograd: "
                f"{type(error).__name__}: {first_line(error)}"
            )
        if field is not None and not single:
            where = count.output_names[0] if count.output_names else "0"
            # the probe's "output" is the first tensor itself: named once ("output seg", not
            # "output seg: output"); a layer inside keeps its name after it
            of = f"output {where}" if of == "output" else f"output {where}: {of}"
    else:
        notes.append(
            "the model's receptive field is not measured: the probe reads the input as "
            "N, C, spatial... and this one has no spatial dimension"
        )
    seconds["receptive_field"] = time.perf_counter() - start
    return ModelRun(
        title,
        count,
        tuple(notes),
        own,
        subtree,
        field,
        of,
        seconds,
        model,
        once,
        receptive_field_at_least=at_least,
        call_outputs={name: tuple(shapes) for name, shapes in call_outputs.items()},
        param_hypers=hypers,
        shared_params=tuple(shared),
    )


#: the parameters each module param_hyper knows holds, by name (a subclass holding any other,
#: a user's own nn.Parameter, gets no formula: its parameters stay named as uncovered)
_PARAM_NAMES = {"weight", "bias"}


def param_hyper(module: nn.Module) -> opformulas.ParamHyper | None:
    """What an nn.Embedding, EmbeddingBag, LayerNorm, RMSNorm, GroupNorm, InstanceNorm*,
    BatchNorm* or PReLU states about its parameters, as plain numbers for
    :func:`convcalc.core.opformulas.module_params` (whether a bias exists is read as
    ``module.bias is not None``, as torch 2.13 registers None for bias=False); None for any
    other module, or one holding a parameter other than weight and bias."""
    names = {which for which, _ in module.named_parameters(recurse=False)}
    if not names <= _PARAM_NAMES:
        return None
    # these hold a weight alone: a subclass's own bias is a parameter no formula here counts
    weight_only = (nn.Embedding, nn.EmbeddingBag, nn.RMSNorm, nn.PReLU)
    if "bias" in names and isinstance(module, weight_only):
        return None
    has_bias = getattr(module, "bias", None) is not None
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        kind = "EmbeddingBag" if isinstance(module, nn.EmbeddingBag) else "Embedding"
        return opformulas.ParamHyper(kind, (int(module.num_embeddings), int(module.embedding_dim)))
    if isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
        kind = "LayerNorm" if isinstance(module, nn.LayerNorm) else "RMSNorm"
        return opformulas.ParamHyper(
            kind,
            tuple(int(n) for n in module.normalized_shape),
            bool(module.elementwise_affine),
            has_bias,
        )
    if isinstance(module, nn.GroupNorm):
        return opformulas.ParamHyper(
            "GroupNorm", (int(module.num_channels),), bool(module.affine), has_bias
        )
    if isinstance(module, nn.modules.instancenorm._InstanceNorm):
        return opformulas.ParamHyper(
            "InstanceNorm", (int(module.num_features),), bool(module.affine), has_bias
        )
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return opformulas.ParamHyper(
            "BatchNorm", (int(module.num_features),), bool(module.affine), has_bias
        )
    if isinstance(module, nn.PReLU):
        return opformulas.ParamHyper("PReLU", (int(module.num_parameters),))
    return None


def _bound(inputs: tuple[ModelInput, ...]) -> bool:
    """Whether the forward takes more than one positional float tensor: several inputs, an
    integer one, a keyword one (the probe then runs the model through measure.modelargs.Bound)."""
    return len(inputs) > 1 or not inputs[0].floating or inputs[0].name is not None


def _field_probe(model: nn.Module, inputs: tuple[ModelInput, ...]) -> tuple[Any, str]:
    """The module the receptive-field probe runs for a model of several inputs (the model
    called with the field's input alone varying: modelargs.Bound), and the note saying which
    input the field belongs to; (None, why) where no input has a field."""
    number = field_input(inputs)
    if number is None:
        return None, (
            "the model's receptive field is not measured: no floating input has spatial axes "
            "(N, C, spatial...); integer and boolean inputs (token ids, masks) have no field"
        )
    item = inputs[number]
    label = f"{item.name}=" if item.name else f"{number}" if number else "0 (the first)"
    others = "the other inputs zeros (batch 1 where their first axis is the batch)"
    return Bound(model, inputs, number), (
        f"the model's receptive field is of its input {label} "
        f"({'x'.join(map(str, item.shape))}): the first floating input with spatial axes; " + others
    )


@contextlib.contextmanager
def _call_outputs(model: nn.Module) -> Iterator[dict[str, list[tuple[int, ...]]]]:
    """While it lasts, every call of one of ``model``'s modules (named as the count names
    them: its first name in ``named_modules``) appends the shape of its output's first tensor
    to the yielded dict: the count (measure.opcount) keeps the first call's output only. The
    count's forward may run twice (``_count``): the caller clears it before the second."""
    names: dict[int, str] = {}
    for name, module in model.named_modules():
        names.setdefault(id(module), name)
    outputs: dict[str, list[tuple[int, ...]]] = {}

    def after(module: nn.Module, inputs: Any, output: Any) -> None:
        name = names.get(id(module))
        if name is not None:
            first = next(_tensors(output), None)
            shape = () if first is None else tuple(int(v) for v in first.shape)
            outputs.setdefault(name, []).append(shape)

    handle = register_module_forward_hook(after)
    try:
        yield outputs
    finally:
        handle.remove()


def _count(
    model: nn.Module,
    input_shape: Any,
    dtype: str,
    call_outputs: dict[str, list[tuple[int, ...]]] | None = None,
) -> tuple[CountResult, Any]:
    """The dispatch count of one CPU forward that also measures the inference peak and, where
    no module's forward depends on the training mode, saved-for-backward
    (measure.modelpass.ModelPass). Counted again without autograd where autograd changed the
    forward (it copied an in-place op's operand) or the model failed with autograd on: the count
    is of a no_grad forward; saved-for-backward is kept from the first where it was measured."""
    from convcalc.measure.modelpass import ModelPass, plan_pass

    once = plan_pass(model, dtype)
    if once.blocked:
        return count_model(model, input_shape), once
    if not once.saved_asked:
        return count_model(model, input_shape, within=once), once
    try:
        count = count_model(model, input_shape, within=once)
    except SpecError:
        again = ModelPass(False, not_saved=["the model failed with autograd on"])
        if call_outputs is not None:
            call_outputs.clear()
        return count_model(model, input_shape, within=again), again
    if once.autograd_copy is None:
        return count, once
    again = ModelPass(False)
    if call_outputs is not None:
        call_outputs.clear()
    count = count_model(model, input_shape, within=again)
    if once.saved is not None:
        again.saved = replace(
            once.saved,
            source=once.saved.source.replace(
                "in the dispatch count's forward",
                "in a first run of the dispatch count's forward (counted again without "
                f"autograd, which copied the operand of {once.autograd_copy} first)",
            ),
        )
    again.autograd_copy = once.autograd_copy
    return count, again


@functools.lru_cache(maxsize=4096)
def _probe_cached(spec: LayerSpec, size: Ints) -> Ints:
    return probe_receptive_field(spec, size)


def layer_receptive_field(spec: LayerSpec, input_shape: Ints) -> Ints:
    """The receptive field of one layer of a user's model, measured by the one-channel probe;
    cached by geometry (the spec without its name, and the input's spatial size)."""
    return _probe_cached(replace(spec, name=""), tuple(input_shape[2:]))


def time_modules(
    model: nn.Module,
    rows: list[tuple[str, tuple[tuple[int, ...], ...]]],
    device: str = "cpu",
    min_run_time: float = 0.2,
    inputs: tuple[ModelInput, ...] | None = None,
) -> tuple[list[tuple[float, int, float] | None], list[str], dict[str, object]]:
    """Each row's module (``name`` as the model report names it: ``"(model)"`` for the root,
    ``" (×N)"`` for a module called N times) timed alone on zeros of its first call's positional
    input shapes (each row gives them: one, or several for a module such as an attention taking
    query, key and value; keyword arguments are not recorded, so the module's defaults stand
    for them, and a note says so), in its parameters' dtype (calibrate.time_layer: warm-up,
    synchronise on CUDA/MPS).
    A module called N times: one call's time × N (its IQR too). Returns (seconds, runs, IQR
    seconds) or None per row, a note per module not timed, and how the timing was done.
    ``inputs``: the model's own (several, integer or keyword ones): the root's row is timed on
    all of them (zeros), as the count ran it."""
    import copy
    import re

    from convcalc.measure.calibrate import time_layer

    modules = dict(model.named_modules())
    results: list[tuple[float, int, float] | None] = []
    notes: list[str] = []
    settings: dict[str, object] = {}
    for name, shapes in rows:
        match = re.fullmatch(r"(.*) \(×(\d+)\)", name)
        base, calls = (match.group(1), int(match.group(2))) if match else (name, 1)
        module = modules.get("" if base == "(model)" else base)
        if module is None or not shapes or not shapes[0]:
            results.append(None)
            notes.append(f"{name}: not timed (no module of that name takes one tensor)")
            continue
        dtype = next((p.dtype for p in module.parameters()), torch.float32)
        if not dtype.is_floating_point:
            dtype = torch.float32
        target = module if device == "cpu" else copy.deepcopy(module)
        given = [torch.zeros(shape, dtype=dtype) for shape in shapes]
        if module is model and inputs is not None and _bound(inputs):
            target, given = _Keywords.of(target, inputs, dtype)
        try:
            with user_code():
                timed = time_layer(
                    target,
                    given,
                    device=device,
                    min_run_time=min_run_time,
                )
        except Exception as error:  # a module that takes more than one tensor, an embedding
            results.append(None)
            notes.append(
                f"{name}: not timed alone on zeros of {_shapes_text(shapes)} "
                f"({type(error).__name__}: {first_line(error)})"
            )
            continue
        results.append((timed.seconds * calls, timed.runs, timed.iqr * calls))
        settings = timed.settings()
        if calls > 1:
            notes.append(f"{name}: timed one call, × {calls} calls")
        if len(given) > 1 and module is not model:
            notes.append(
                f"{name}: timed alone on zeros of its {len(given)} positional inputs "
                f"{_shapes_text(shapes)}; keyword arguments its caller passed (masks, "
                "need_weights...) are not recorded, so it ran with its defaults for them"
            )
    return results, notes, settings


def _shapes_text(shapes: tuple[tuple[int, ...], ...]) -> str:
    """``(1, 16, 64)``, or ``(1, 16, 64), (1, 16, 64)`` for several inputs."""
    return ", ".join(str(tuple(shape)) for shape in shapes)


class _Keywords(nn.Module):
    """A model taking keyword inputs called positionally (calibrate.time_layer passes its
    inputs by position): the last ``len(names)`` tensors go by those names."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *tensors: torch.Tensor) -> Any:
        cut = len(tensors) - len(self.names)
        return self.model(*tensors[:cut], **dict(zip(self.names, tensors[cut:])))

    @staticmethod
    def of(
        model: nn.Module, inputs: tuple[ModelInput, ...], dtype: torch.dtype
    ) -> tuple[nn.Module, list[torch.Tensor]]:
        from convcalc.measure.modelargs import make_args

        made = make_args(inputs, "cpu", dtype)
        return _Keywords(model, tuple(made.kwargs)), made.tensors
