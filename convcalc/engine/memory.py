"""Memory a user can plan a GPU budget on (issue 13): saved for backward, the inference peak,
one training step and what fits, measured beside the formulas."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import field, replace
from typing import Any

from convcalc import kinds
from convcalc._dataclass import dataclass
from convcalc._dataclass import replace as copy_replace
from convcalc.core import formulas, memory_model
from convcalc.core.report import EXACT_STEP_KEYS, Pair, Report
from convcalc.core.spec import InputSpec, Node
from convcalc.engine.plan import Options, RunPlan
from convcalc.errors import SpecError

#: One real training step (forward, backward, optimizer step) is measured only with --train
#: (Options.train: torch.optim imports torch._dynamo, ~2 s), on a real CPU run whose step
#: needs at most this much by formula ...
TRAINING_RUN_MAX_BYTES = 64 * 2**20
#: ... and whose forward plan_run estimates at most this long (a step costs about three
#: forwards). Anything larger, and everything on the meta device (``batch`` sweeps thousands
#: of specs there), has the training step by formula only, and the sources say why.
TRAINING_RUN_MAX_SECONDS = 0.1
#: models (analyze_model): the training step is measured when torchsummary's total (input +
#: 2·outputs + params, measured) is at most this
MODEL_TRAINING_MAX_BYTES = 64 * 2**20


def check_memory_options(options: Options) -> int | None:
    """Validate ``optimizer`` and ``fit``; the limit in bytes (None: no --fit)."""
    if options.optimizer not in memory_model.OPTIMIZERS:
        raise SpecError(
            "optimizer",
            f"--optimizer {options.optimizer!r} must be one of "
            f"{', '.join(memory_model.OPTIMIZERS)}",
        )
    return None if options.fit is None else memory_model.parse_size(options.fit)


@dataclass
class _MemoryMeasured:
    """What the memory passes measured (each None where not), and the source of each figure."""

    saved: Any = None
    peak: Any = None
    step: Any = None
    cuda: dict[str, int] | None = None
    sources: dict[str, str] = field(default_factory=dict)


#: saved-for-backward and the inference peak are measured on real tensors up to this many
#: estimated seconds of forward, on the meta device beyond (the same bytes, nothing computed)
MEMORY_REAL_MAX_SECONDS = 0.05


#: up to this estimated forward time, a network with a layer whose forward depends on the
#: training mode (batch norm, dropout) has its memory passes run for real on the CPU: on the
#: meta device, batch norm in training mode runs torch's Python decompositions, whose first use
#: imports torch._dynamo (ResNet-50's saved-for-backward: 2.05 s on meta, 0.3 s on the CPU)
MEMORY_REAL_MODE_DEPENDENT_MAX_SECONDS = 1.0


def _memory_device(nodes: Sequence[Node], plan: RunPlan) -> str:
    """Where the memory passes run: where the counted run did, except that beyond a quick
    network the meta device is cheaper (nothing is computed there), unless batch norm's
    decompositions make it dearer (MEMORY_REAL_MODE_DEPENDENT_MAX_SECONDS)."""
    if plan.device != "cpu" or plan.estimated_seconds <= MEMORY_REAL_MAX_SECONDS:
        return plan.device
    if plan.estimated_seconds <= MEMORY_REAL_MODE_DEPENDENT_MAX_SECONDS and any(
        kinds.kind_of(node.spec).mode_dependent(node.spec) for node in nodes
    ):
        return "cpu"
    return "meta"


def _built(once: Any, device: str) -> Any:
    """The modules the counted run built, where the memory pass runs on their device."""
    modules = getattr(once, "modules", None)
    return modules if device == "cpu" else None


def _measure_memory(
    nodes: Sequence[Node],
    input_spec: InputSpec,
    options: Options,
    plan: RunPlan,
    step_bytes: int,
    once: Any = None,
) -> _MemoryMeasured:
    """Saved for backward and the inference peak wherever the run is real or meta; one
    training step on small real CPU runs only; torch's CUDA peak with --device cuda."""
    result = _MemoryMeasured()
    if plan.device not in ("cpu", "meta"):
        return result
    if not options.measure_memory:
        return _memory_not_asked(result)
    from convcalc.errors import MeasurementError
    from convcalc.measure import memory as measure_memory

    # the bytes autograd saves and the live bytes of a forward are the same on the meta device
    # (nothing is computed there): beyond a quick network, two more real passes are not worth it
    device = _memory_device(nodes, plan)
    saved_once, peak_once = _once(once)
    try:
        result.saved = saved_once or measure_memory.measure_network_saved(
            nodes, input_spec, device, built=_built(once, device)
        )
        result.sources["memory_saved_for_backward"] = (
            result.saved.source
            + _saved_mode(nodes, saved_once, peak_once)
            + "; the network input requiring grad (as a "
            "layer inside a bigger network; a training step's data does not)"
        )
    except MeasurementError as error:
        result.sources["memory_saved_for_backward"] = f"not measured: {error}"
    try:
        result.peak = peak_once or measure_memory.measure_network_peak(nodes, input_spec, device)
        result.sources["memory_peak_inference"] = (
            result.peak.source + "; eval mode, each output freed after its last reader; per "
            "layer: the live activation bytes while that layer runs"
        )
    except MeasurementError as error:
        result.sources["memory_peak_inference"] = f"not measured: {error}"
    why_not = ""
    if not options.train:
        why_not = (
            "one real step is measured with --train (conv, the presets, stack): a torch.optim "
            "optimizer imports torch._dynamo, about 2 s"
        )
    elif plan.device != "cpu":
        why_not = "measured on the meta device: nothing runs, no step is taken"
    elif step_bytes > TRAINING_RUN_MAX_BYTES:
        why_not = (
            f"the step needs {formulas.human_bytes(step_bytes)} by formula (a real step is "
            f"run up to {formulas.human_bytes(TRAINING_RUN_MAX_BYTES)})"
        )
    elif plan.estimated_seconds > TRAINING_RUN_MAX_SECONDS:
        why_not = (
            f"the forward alone would take about {plan.estimated_seconds:.2f} s (a real step "
            f"is run up to {TRAINING_RUN_MAX_SECONDS} s of forward)"
        )
    if why_not:
        result.sources["memory_training_step"] = f"formula only: {why_not}"
    else:
        try:
            result.step = measure_memory.measure_network_training(
                nodes, input_spec, options.optimizer
            )
            result.sources["memory_training_step"] = _step_source(result.step)
        except MeasurementError as error:
            result.sources["memory_training_step"] = f"not measured: {error}"
    if options.device.startswith("cuda"):
        result.cuda = _cuda_step(nodes, input_spec, options, result.sources)
    return result


def _once(once: Any) -> tuple[Any, Any]:
    """Saved for backward and the inference peak the counted real pass measured (None each:
    not measured there)."""
    if once is None:
        return None, None
    return getattr(once, "saved", None), getattr(once, "peak", None)


def _saved_mode(nodes: Sequence[Node], saved_once: Any, peak_once: Any) -> str:
    """How the saved-for-backward measurement came to be training mode's."""
    if saved_once is None:
        return _second_pass(peak_once)
    if any(kinds.kind_of(node.spec).mode_dependent(node.spec) for node in nodes):
        return ""  # the layers that depend on the mode ran in training mode beside the pass
    return (
        "; no layer's forward depends on the training mode, so the eval-mode pass saves what "
        "training mode does"
    )


def _second_pass(peak_once: Any) -> str:
    if peak_once is None:
        return "; training mode"
    return (
        "; training mode, a second pass: a layer's forward depends on the mode (batch norm, "
        "dropout), and the counted real pass ran in eval mode"
    )


def _memory_not_asked(result: _MemoryMeasured) -> _MemoryMeasured:
    """The sources when memory is not measured (batch without --memory, the sweep API's
    default): what would measure each figure, in the user's words."""
    why = (
        "formula only: not measured in this run (batch: add --memory; the Python API: "
        "Measure(memory=True))"
    )
    for key in ("saved_for_backward", "peak_inference"):
        result.sources[f"memory_{key}"] = why
    result.sources["memory_training_step"] = (
        "formula only: not measured in this run (batch: one real step with --memory and "
        "--train, when the layer runs on the CPU, --measure-on auto or cpu, and is small "
        "enough; the Python API: Measure(memory=True, train=True))"
    )
    return result


def _step_source(step: Any) -> str:
    return (
        "one real step on the CPU (forward, out.backward(ones the size of out), "
        "optimizer.step()): "
        + "; ".join(f"{key}: {text}" for key, text in step.sources.items())
        + "; transient and total: the formula is an upper bound (saved tensors are freed "
        "during backward), shown beside the measurement, no agreement claimed"
    )


def _cuda_step(
    nodes: Sequence[Node], input_spec: InputSpec, options: Options, sources: dict[str, str]
) -> dict[str, int] | None:
    from convcalc.errors import MeasurementError
    from convcalc.measure import memory as measure_memory

    try:
        graph = measure_memory.build_network(nodes, "cpu", input_spec.dtype, training=True)
        result = measure_memory.measure_training_step_cuda(
            graph, measure_memory.make_input(input_spec), options.optimizer
        )
    except MeasurementError as error:
        sources["memory_cuda"] = f"not measured: {error}"
        return None
    sources["memory_cuda"] = (
        "torch.cuda.max_memory_allocated over one training step (the caching allocator's "
        "peak: cuDNN workspaces and allocator rounding included, which no formula counts)"
    )
    return result


def with_memory(
    report: Report,
    nodes: Sequence[Node],
    input_spec: InputSpec,
    options: Options,
    plan: RunPlan,
    fit_bytes: int | None,
    once: Any = None,
) -> Report:
    """The report with the memory a GPU budget is planned on: per layer saved for backward and
    the live bytes while it runs; for the network those, one training step, and what fits.
    ``once``: the ChainMeasurement whose real pass measured saved and peak already (either may
    be None: measured here)."""
    # saved for backward, the inference peak and the training step, sharing their passes
    both = memory_model.network_memory(nodes, input_spec, options.optimizer)
    saved, peak, step = both.saved, both.peak, both.step
    fit = None
    if fit_bytes is not None:
        fit = _fit(nodes, input_spec, options, fit_bytes, check=plan.device != "none")
    measured = _measure_memory(nodes, input_spec, options, plan, step.total.value, once)
    layers = []
    for index, layer in enumerate(report.layers):
        key = str(index)
        layers.append(
            copy_replace(
                layer,
                saved_for_backward=Pair(
                    None if measured.saved is None else measured.saved.layers.get(key),
                    saved.layers[index].value,
                ),
                peak_inference=Pair(
                    None if measured.peak is None else measured.peak.layers.get(key),
                    peak.layers[index].value,
                ),
                formula_text={
                    **layer.formula_text,
                    "memory_saved_for_backward": saved.layers[index].shown,
                    "memory_peak_inference": peak.layers[index].shown,
                },
            )
        )
    step_parts = {key: getattr(step, key) for key in EXACT_STEP_KEYS}
    step_parts.update(transient=step.transient, total=step.total)
    total = copy_replace(
        report.total,
        saved_for_backward=Pair(
            None if measured.saved is None else measured.saved.total, saved.total.value
        ),
        peak_inference=Pair(
            None if measured.peak is None else measured.peak.peak, peak.total.value
        ),
        training_step=Pair(
            None if measured.step is None else measured.step.to_dict(), step.to_dict()
        ),
        optimizer=options.optimizer,
        fit=fit,
        memory_text={
            "saved_for_backward": saved.total.shown,
            "peak_inference": peak.total.shown,
            **{f"training_step.{key}": part.shown for key, part in step_parts.items()},
        },
    )
    sources = {**report.sources, **measured.sources}
    extra = dict(report.extra)
    if measured.cuda is not None:
        extra["memory_cuda"] = {"optimizer": options.optimizer, **measured.cuda}
    return copy_replace(report, layers=tuple(layers), total=total, sources=sources, extra=extra)


def _fit(
    nodes: Sequence[Node], input_spec: InputSpec, options: Options, limit: int, *, check: bool
) -> dict[str, Any]:
    """total.fit: the entry of the report's dtype at the top (memory_limit_bytes,
    max_batch_training, max_batch_inference), every dtype in ``by_dtype``; each answer found
    by formula and, unless --formula-only, checked on the meta device at that batch."""
    answers = memory_model.fit(nodes, input_spec, limit, options.optimizer, limit_text=options.fit)
    by_dtype = []
    for answer in answers:
        entry = answer.to_dict()
        entry["checked"] = _check_fit(nodes, input_spec, answer) if check else None
        by_dtype.append(entry)
    main = next((e for e in by_dtype if e["dtype"] == input_spec.dtype), by_dtype[0])
    return {
        "memory_limit": options.fit,
        "memory_limit_bytes": limit,
        "dtype": main["dtype"],
        "optimizer": options.optimizer,
        "max_batch_training": main["max_batch_training"],
        "max_batch_inference": main["max_batch_inference"],
        "by_dtype": by_dtype,
        "not_counted": LOSS_NOT_COUNTED,
    }


#: what the training step (and so --fit's training batch) leaves out: the loss's own tensors
LOSS_NOT_COUNTED = (
    "the loss's own tensors (about one output's size more a sample for MSE, two for "
    "cross-entropy) and the targets"
)


def meta_statistics_bytes(nodes: Sequence[Node], dtype: str) -> int:
    """How many more bytes the meta device's batch norms save in ``dtype`` training than the
    CPU's (and the formula's): torch's meta kernel keeps save_mean and save_invstd in float32
    (as CUDA does), the CPU kernel in the input's dtype; 2·C·(4 − width) per batch norm."""
    width = memory_model.WIDTHS[dtype]
    channels = [
        int(getattr(node.spec, "channels", 0))
        for node in nodes
        if kinds.kind_of(node.spec).name == "batchnorm"
    ]
    return sum(2 * c * (4 - width) for c in channels)


def _check_fit(nodes: Sequence[Node], input_spec: InputSpec, answer: Any) -> dict[str, Any]:
    """At the batch found, the meta device's inference peak (activations) and saved for
    backward (data needing no grad), measured beside the formula's. Nothing runs on meta:
    shapes and storages only; int8 is not checked (torch's layers do not run in int8).
    Known: in float16/bfloat16 training torch's meta batch norm keeps float32 statistics (as
    CUDA does) where the CPU, and the formula, keep the input's dtype: 4·C bytes apart."""
    from convcalc.errors import MeasurementError
    from convcalc.measure import memory as measure_memory

    checked: dict[str, Any] = {"on": "meta", "inference_peak": None, "saved_for_backward": None}
    if answer.dtype not in memory_model.TRAINING_DTYPES:
        return checked
    try:
        if answer.max_batch_inference:
            at = replace(input_spec, batch=answer.max_batch_inference, dtype=answer.dtype)
            checked["inference_peak"] = {
                "batch": at.batch,
                "measured": measure_memory.measure_network_peak(nodes, at, "meta").peak,
                "formula": memory_model.peak_inference(nodes, at).total.value,
            }
        if answer.max_batch_training:
            at = replace(input_spec, batch=answer.max_batch_training, dtype=answer.dtype)
            checked["saved_for_backward"] = {
                "batch": at.batch,
                "measured": measure_memory.measure_network_saved(
                    nodes, at, "meta", input_requires_grad=False
                ).total,
                "formula": memory_model.saved_for_backward(
                    nodes, at, input_requires_grad=False
                ).total.value,
                "meta_statistics_bytes": meta_statistics_bytes(nodes, answer.dtype),
            }
    except MeasurementError:
        pass
    return checked


def _model_step_not_measured(train: bool) -> str:
    """Why a user's model's training step was not measured (one line, true for the CLI and
    the Python API alike)."""
    limit = formulas.human_bytes(MODEL_TRAINING_MAX_BYTES)
    if train:
        return f"torchsummary's total of the model is above {limit}"
    return (
        "convcalc model takes no --train (the Python API measures one real step of a model "
        f"whose torchsummary total is at most {limit}: Measure(train=True))"
    )


def with_model_memory(
    report: Report,
    model: Any,
    input_shape: tuple[int, ...],
    dtype: str,
    options: Options,
    *,
    once: Any = None,
    inputs: Any = None,
) -> Report:
    """A user's model: saved for backward, the inference peak and (for a model whose
    torchsummary total is at most MODEL_TRAINING_MAX_BYTES) one training step, measured on a
    copy, or taken from the counted forward (``once``: measure.modelpass.ModelPass). No
    formula: convcalc has none for an arbitrary graph (the formula side is null)."""
    check_memory_options(options)
    if options.fit is not None:
        raise SpecError(
            "fit",
            "--fit needs the formulas of a network of known layers: convcalc has none for an "
            "arbitrary model's graph",
        )
    from convcalc.measure.modelpass import model_memory

    summary = report.total.memory.measured
    small = summary is not None and summary.total <= MODEL_TRAINING_MAX_BYTES and options.train
    found = model_memory(
        model, once, input_shape, dtype, options.optimizer, training_step=small, inputs=inputs
    )
    saved_layers, peak_layers = _by_module(found)
    layers = [
        replace(
            layer,
            saved_for_backward=Pair(
                None if found.saved is None else saved_layers.get(_row_module(layer.name), 0),
                None,  # type: ignore[arg-type]
            ),
            peak_inference=Pair(
                None if found.peak is None else peak_layers.get(_row_module(layer.name), 0),
                None,  # type: ignore[arg-type]
            ),
        )
        for layer in report.layers
    ]
    total = replace(
        report.total,
        saved_for_backward=Pair(
            None if found.saved is None else found.saved.total,
            None,  # type: ignore[arg-type]
        ),
        peak_inference=Pair(
            None if found.peak is None else found.peak.peak,
            None,  # type: ignore[arg-type]
        ),
        training_step=Pair(
            None if found.step is None else found.step.to_dict(),
            None,  # type: ignore[arg-type]
        ),
        optimizer=options.optimizer,
    )
    sources = {
        **report.sources,
        "memory_saved_for_backward": found.sources["saved"]
        + (_PER_ROW_SAVED if found.saved is not None else ""),
        "memory_peak_inference": found.sources["peak"]
        + "; per layer: the live activation bytes while that layer runs"
        + (_PER_ROW_PEAK if found.peak is not None else ""),
        "memory_training_step": found.sources.get(
            "step", "not measured: " + _model_step_not_measured(options.train)
        ),
    }
    if found.step is None:
        total = replace(
            total,
            memory_text={
                **total.memory_text,
                "training_step": _model_step_not_measured(options.train),
            },
        )
    note = (
        "memory: saved for backward, the inference peak and the training step are measured "
        "only: convcalc has no formula for an arbitrary model's graph"
        if found.step is not None
        else "memory: saved for backward and the inference peak are measured only (convcalc "
        "has no formula for an arbitrary model's graph); the training step is not measured: "
        + _model_step_not_measured(options.train)
    )
    notes = (*report.notes, note)
    extra = report.extra
    if found.saved is not None:
        outside = _saved_outside_rows(report, saved_layers, found.saved.total)
        extra = {**extra, "saved_for_backward_outside_rows": outside}
        if outside["bytes"]:
            notes = (*notes, _outside_rows_note(report, outside))
    return replace(
        report, layers=tuple(layers), total=total, sources=sources, notes=notes, extra=extra
    )


#: how a user's model's rows get their memory figures (appended to the sources)
_PER_ROW_SAVED = (
    "; per row: each storage goes to the innermost module running when it is first saved, as "
    "the counted operators do (a functional call to the module whose forward makes it); what "
    "no row's module saved: saved_for_backward_outside_rows"
)
_PER_ROW_PEAK = " (as its innermost module, so not while its children run)"


def _by_module(found: Any) -> tuple[dict[str, int], dict[str, int]]:
    """Saved for backward and the inference peak of each module of a user's model, attributed
    to the innermost module running, as its counted operators are (measure.memory._innermost):
    a functional call to the module whose forward makes it, nn.MultiheadAttention's work (its
    out_proj never runs as a module) to the attention module. The leaf entered last where
    the measurement did not follow the modules."""
    saved: dict[str, int] = {}
    peak: dict[str, int] = {}
    if found.saved is not None:
        modules = found.saved.by_module()
        saved = found.saved.layers if modules is None else modules
    if found.peak is not None:
        peak = found.peak.layers if found.peak.modules is None else found.peak.modules
    return saved, peak


def _row_module(name: str) -> str:
    """The module a model's row stands for: its name without `` (×N)`` (called N times);
    ``""`` (the root) for ``(model)``."""
    base = name.split(" (×")[0]
    return "" if base == "(model)" else base


def _saved_outside_rows(report: Report, saved: dict[str, int], total: int) -> dict[str, Any]:
    """JSON's ``saved_for_backward_outside_rows``: the bytes saved for backward while no module
    with a row was the innermost running (modules without a row: activations, flatten,
    dropout; functional calls in a module's own forward), each by that module (``""``: the
    model's own forward), and what the rows sum to. ``bytes`` + ``rows_bytes`` =
    ``total_bytes``."""
    rowed = {_row_module(layer.name) for layer in report.layers}
    outside = {name: n for name, n in saved.items() if name not in rowed and n}
    return {
        "bytes": sum(outside.values()),
        "rows_bytes": total - sum(outside.values()),
        "total_bytes": total,
        "by_module": outside,
    }


def _outside_rows_note(report: Report, outside: dict[str, Any]) -> str:
    """One line naming what saves the bytes the rows of a user's model do not sum to."""
    figures = {m.name: m for m in (report.model.modules if report.model else ())}

    def parent(name: str) -> bool:
        return any(
            other != name and (not name or other.startswith(f"{name}.")) for other in figures
        )

    parts = []
    for name, n in outside["by_module"].items():
        module = figures.get(name)
        kind = module.type if module is not None else ""
        calls = f" ×{module.calls}" if module is not None and module.calls > 1 else ""
        if parent(name):
            shown = f"functional calls in the forward of {name or 'the model'}"
            parts.append(f"{shown} ({kind}{calls}) {n:,} B" if kind else f"{shown} {n:,} B")
        else:
            parts.append(f"{name} ({kind}{calls}) {n:,} B" if kind else f"{name} {n:,} B")
    more = f"; and {len(parts) - 6} more" if len(parts) > 6 else ""
    return (
        f"saved for backward: {outside['bytes']:,} B of the total {outside['total_bytes']:,} B "
        f"are saved where no row is, so the rows sum to {outside['rows_bytes']:,} B: "
        + "; ".join(parts[:6])
        + more
        + " (every figure in saved_for_backward_outside_rows)"
    )
