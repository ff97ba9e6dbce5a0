"""The library entry points: validate, compute every figure by formula, measure it with torch, and
set the two side by side. Never prints, never exits; raises :mod:`convcalc.errors` types."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

from convcalc import kinds
from convcalc.core import formulas, memory_model
from convcalc.core.advice import network_warnings
from convcalc.core.cumulative import cumulative as cumulative_figures
from convcalc.core.measured import nothing_measured
from convcalc.core.memory import summary_memory
from convcalc.core.report import LayerReport, Pair, Report, Total
from convcalc.core.spec import DTYPE_BYTES, InputSpec, Labels, Node, chain
from convcalc.errors import SpecError
from convcalc.kinds import ConvSpec, LayerSpec, check_fits

#: Real CPU runs are kept to this much float32 tensor data (input, outputs, parameters) ...
REAL_RUN_MAX_BYTES = 256 * 2**20
#: ... and to about this long per run, at the rates below (about half of what this kind of
#: machine measured with 2 threads; see docs/benchmarks.md). Larger layers are measured on the
#: meta device.
REAL_RUN_MAX_SECONDS = 0.4
MAC_RATES = {
    "dense": 2.5e10,
    "dilated": 9e9,
    "3d": 3.5e9,
    "grouped": 2.5e9,
    "depthwise": 9e8,
}
MEASURE_ON = ("auto", "cpu", "meta")


@dataclass(frozen=True)
class RunPlan:
    device: str
    estimated_bytes: int
    estimated_seconds: float
    reason: str


@dataclass(frozen=True)
class Options:
    """How to measure: where (auto, cpu, meta), and what beyond the forward figures."""

    measure_on: str = "auto"
    train: bool = False
    time: bool = False
    device: str = "cpu"
    min_run_time: float = 0.2
    #: every figure by formula alone: torch is not even imported
    formula_only: bool = False
    #: the optimizer of the training-step memory figure: sgd, momentum, adam or adamw
    optimizer: str = "adam"
    #: a memory size ("16GiB", "80GB"): the largest batches whose training step and whose
    #: inference fit it, per dtype (total.fit)
    fit: str | None = None


def plan_run(
    specs: Sequence[LayerSpec], inputs: Sequence[InputSpec], measure_on: str = "auto"
) -> RunPlan:
    """Where to measure: a real CPU run when it fits in memory and time, else the meta device."""
    elements = math.prod(inputs[0].shape)
    seconds = 0.0
    for spec, layer_input in zip(specs, inputs):
        figures = kinds.figures(spec, layer_input)
        elements += math.prod(figures.output_shape.value) + figures.params.value
        seconds += figures.macs.value / MAC_RATES[kinds.kind_of(spec).rate(spec)]
    estimated_bytes = 4 * elements
    if measure_on in ("cpu", "meta"):
        return RunPlan(measure_on, estimated_bytes, seconds, f"--measure-on {measure_on}")
    if estimated_bytes > REAL_RUN_MAX_BYTES:
        reason = (
            f"a real run needs about {formulas.human_bytes(estimated_bytes)} of tensors "
            f"(limit {formulas.human_bytes(REAL_RUN_MAX_BYTES)})"
        )
        return RunPlan("meta", estimated_bytes, seconds, reason)
    if seconds > REAL_RUN_MAX_SECONDS:
        reason = f"a real run would take about {seconds:.1f} s (limit {REAL_RUN_MAX_SECONDS} s)"
        return RunPlan("meta", estimated_bytes, seconds, reason)
    return RunPlan("cpu", estimated_bytes, seconds, "small enough to run for real")


def graph_inputs(
    nodes: Sequence[Node],
    input_spec: InputSpec,
    labels: Callable[[int], Labels] | Labels | None = None,
) -> list[InputSpec]:
    """Validate the network and give each node's input tensor by formula (what feeds it)."""

    def labels_for(index: int) -> Labels:
        if callable(labels):
            return labels(index)
        return labels or Labels()

    outputs: list[InputSpec] = []
    inputs: list[InputSpec] = []
    for index, node in enumerate(nodes):
        feeds = [input_spec if i < 0 else outputs[i] for i in node.inputs]
        if len({f.shape for f in feeds}) > 1:
            shown = ", ".join(
                f"{path} {'x'.join(map(str, f.shape))}"
                for path, f in zip(("main path", "shortcut", "input 3", "input 4"), feeds)
            )
            raise SpecError(
                "inputs", f"{labels_for(index)['op']}: {shown}: they must match to be added"
            )
        check_fits(node.spec, feeds[0], labels_for(index))
        inputs.append(feeds[0])
        outputs.append(kinds.output_spec(node.spec, feeds[0]))
        if min(outputs[-1].shape, default=1) < 1:
            raise SpecError(
                "size",
                f"{labels_for(index)['op']}: the output "
                f"{'x'.join(map(str, outputs[-1].shape))} is empty",
            )
    return inputs


def analyze_chain(
    specs: Sequence[LayerSpec],
    input_spec: InputSpec,
    *,
    command: str = "conv",
    title: str = "",
    options: Options | None = None,
    labels: Labels | None = None,
) -> Report:
    """Every figure of a chain of layers, measured and by formula."""
    if not specs:
        raise SpecError("layers", "no layers to analyze")
    return analyze_graph(
        chain(specs), input_spec, command=command, title=title, options=options, labels=labels
    )


def analyze_graph(
    nodes: Sequence[Node],
    input_spec: InputSpec,
    *,
    command: str = "stack",
    title: str = "",
    options: Options | None = None,
    labels: Callable[[int], Labels] | Labels | None = None,
    names: Sequence[str] | None = None,
    notes: Sequence[str] = (),
) -> Report:
    """Every figure of every layer of a network, measured and by formula, and the cumulative
    figures relative to the network input."""
    options = options or Options()
    if not nodes:
        raise SpecError("layers", "no layers to analyze")
    if options.measure_on not in MEASURE_ON:
        raise SpecError(
            "measure_on", f"--measure-on {options.measure_on!r} must be one of auto, cpu, meta"
        )
    fit_bytes = check_memory_options(options)
    nodes = tuple(nodes)
    inputs = graph_inputs(nodes, input_spec, labels)
    specs = [node.spec for node in nodes]
    plan = plan_run(specs, inputs, options.measure_on)
    cumulative = cumulative_figures(nodes, inputs, input_spec)
    if options.formula_only:
        measured = nothing_measured(len(nodes))
        plan = RunPlan("none", plan.estimated_bytes, plan.estimated_seconds, "--formula-only")
    else:
        from convcalc.measure.run import Extras, measure_graph  # torch: only when measuring

        measured = measure_graph(
            nodes,
            input_spec,
            plan.device,
            Extras(
                train=options.train,
                time=options.time,
                time_device=options.device,
                min_run_time=options.min_run_time,
            ),
        )

    layers: list[LayerReport] = []
    for index, (node, layer_input, result, mem) in enumerate(
        zip(nodes, inputs, measured.layers, measured.memory)
    ):
        spec = node.spec
        figures = kinds.figures(spec, layer_input)
        memory = figures.memory.value
        if len(node.inputs) > 1:  # an add reads all its inputs
            memory = summary_memory(
                math.prod(layer_input.shape) * len(node.inputs),
                [math.prod(figures.output_shape.value)],
                figures.params.value,
                DTYPE_BYTES[input_spec.dtype],
            )
        cumul = cumulative[index]
        layers.append(
            LayerReport(
                name=names[index] if names else spec.name,
                spec=spec,
                input_shape=layer_input.shape,
                output_shape=Pair(result.output_shape, figures.output_shape.value),
                params=Pair(result.params, figures.params.value),
                macs=Pair(result.macs, figures.macs.value),
                flops=Pair(result.flops, figures.flops.value),
                bias_adds=figures.bias_adds.value,
                receptive_field=Pair(result.receptive_field, figures.receptive_field.value),
                memory=Pair(mem, memory),
                formula_text=figures.texts(),
                notes=result.notes,
                backward_flops=(
                    Pair(result.backward_flops, figures.backward_flops.value)
                    if options.train
                    else None
                ),
                backward_flops_torch=result.backward_flops_torch,
                latency_ms=result.latency_ms,
                timed_runs=result.timed_runs,
                timing_requested=options.time,
                cumulative=cumul,
                cumulative_receptive_field=(
                    None
                    if cumul.whole_input or not cumul.effective_stride
                    else Pair(result.cumulative_receptive_field, cumul.receptive_field)
                ),
                inputs=node.inputs,
                path=node.path,
            )
        )

    formula_memory = summary_memory(
        math.prod(input_spec.shape),
        [math.prod(layer.output_shape.formula) for layer in layers],
        sum(layer.params.formula for layer in layers),
        DTYPE_BYTES[input_spec.dtype],
    )
    flops = _sum_pair([x.flops for x in layers])
    train_flops = None
    if options.train:
        backward = _sum_pair([x.backward_flops for x in layers if x.backward_flops is not None])
        train_flops = Pair(
            None
            if flops.measured is None or backward.measured is None
            else flops.measured + backward.measured,
            flops.formula + backward.formula,
        )
    latencies = [x.latency_ms for x in layers]
    spatial = [x for x in layers if x.cumulative_receptive_field is not None]
    last = spatial[-1] if spatial else layers[-1]
    total = Total(
        params=_sum_pair([x.params for x in layers]),
        macs=_sum_pair([x.macs for x in layers]),
        flops=flops,
        bias_adds=sum(x.bias_adds for x in layers),
        output_shape=layers[-1].output_shape,
        receptive_field=last.cumulative_receptive_field or Pair(None, ()),
        memory=Pair(measured.total_memory, formula_memory),
        train_flops=train_flops,
        latency_ms=(
            sum(x for x in latencies if x is not None)
            if latencies and all(x is not None for x in latencies)
            else None
        ),
        timing_requested=options.time,
        cumulative=last.cumulative,
        receptive_field_of=last.name if spatial and last is not layers[-1] else "",
    )
    sources = dict(measured.sources)
    sources["measured_on"] = f"{plan.device}: {plan.reason}"
    warnings = network_warnings(
        [layer.name for layer in layers], nodes, inputs, cumulative, input_spec
    )
    report = Report(
        command=command,
        input=input_spec,
        layers=tuple(layers),
        total=total,
        measured_on=plan.device,
        sources=sources,
        title=title,
        timing=measured.timing,
        notes=tuple(notes),
        warnings=tuple(warnings),
    )
    return with_memory(report, nodes, input_spec, options, plan, fit_bytes)


def _sum_pair(pairs: Sequence[Pair[int]]) -> Pair[int]:
    measured = [p.measured for p in pairs]
    return Pair(
        None if any(m is None for m in measured) else sum(m for m in measured if m is not None),
        sum(p.formula for p in pairs),
    )


def analyze(
    spec: ConvSpec,
    input_spec: InputSpec,
    *,
    measure_on: str = "auto",
    options: Options | None = None,
    labels: Labels | None = None,
) -> Report:
    """One layer, measured and by formula (``convcalc conv``)."""
    options = options or Options(measure_on=measure_on)
    return analyze_chain([spec], input_spec, command="conv", options=options, labels=labels)


# --- the conv kinds of the source documents -------------------------------------------------------


def _presets() -> Any:
    from convcalc.sources import presets  # only the grouped, dilated and compare analyses need it

    return presets


def _ratio_pair(
    numerator: Pair[int], denominator: Pair[int], theory: Fraction | None
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "measured": _presets().ratio(numerator.measured, denominator.measured),
        "formula": _presets().ratio(numerator.formula, denominator.formula),
    }
    if theory is not None:
        entry["theory"] = float(theory)
        entry["theory_text"] = f"{theory.numerator}/{theory.denominator}"
    return entry


def _latency_ratio(report: Report, baseline: Report) -> float | None:
    if report.total.latency_ms is None or not baseline.total.latency_ms:
        return None
    return report.total.latency_ms / baseline.total.latency_ms


def analyze_grouped(
    specs: Sequence[LayerSpec],
    input_spec: InputSpec,
    *,
    options: Options | None = None,
    labels: Labels | None = None,
) -> Report:
    """A grouped conv (with its block), and its ratio to the same conv with groups = 1."""
    conv = specs[0]
    assert isinstance(conv, ConvSpec)
    grouped = analyze_chain(
        specs,
        input_spec,
        command="group",
        options=options,
        labels=labels,
        title=f"grouped convolution, {conv.groups} group{'s' if conv.groups != 1 else ''}",
    )
    standard = analyze_chain(
        [_presets().standard_like(conv)],
        input_spec,
        command="group",
        options=options,
        labels=labels,
    )
    layer, base = grouped.layers[0], standard.layers[0]
    theory = _presets().grouped_theory(conv.groups)
    comparison = {
        "baseline": base.spec.describe(),
        "baseline_params": base.params.to_dict(),
        "baseline_macs": base.macs.to_dict(),
        "params": _ratio_pair(layer.params, base.params, theory),
        "macs": _ratio_pair(layer.macs, base.macs, theory),
        "flops": _ratio_pair(layer.flops, base.flops, theory),
        **_presets().grouped_explanation(conv),
    }
    if options is not None and options.time:
        comparison["latency"] = {
            "measured": _presets().ratio(layer.latency_ms, base.latency_ms),
            "baseline_ms": base.latency_ms,
        }
    return replace(grouped, extra={"vs_standard": comparison})


def analyze_dilated(
    specs: Sequence[LayerSpec],
    input_spec: InputSpec,
    *,
    options: Options | None = None,
    labels: Labels | None = None,
) -> Report:
    """A dilated conv, and how its receptive field grows against the same kernel undilated."""
    conv = specs[0]
    assert isinstance(conv, ConvSpec)
    report = analyze_chain(
        specs,
        input_spec,
        command="dilated",
        options=options,
        labels=labels,
        title=f"dilated convolution, dilation {'x'.join(map(str, conv.dilation))}",
    )
    undilated = replace(
        conv,
        dilation=tuple(1 for _ in conv.dilation),
        padding=conv.padding
        if isinstance(conv.padding, str)
        else tuple((k - 1) // 2 for k in conv.kernel_size),
        name="undilated",
    )
    base = analyze_chain([undilated], input_spec, command="dilated", options=options, labels=labels)
    layer, plain = report.layers[0], base.layers[0]
    growth = {
        "undilated": plain.spec.describe(),
        "receptive_field": {
            "dilated": layer.receptive_field.to_dict(),
            "undilated": plain.receptive_field.to_dict(),
        },
        "params": {"dilated": layer.params.measured, "undilated": plain.params.measured},
        "macs": {"dilated": layer.macs.measured, "undilated": plain.macs.measured},
        "output_shape": {
            "dilated": list(layer.output_shape.measured or ()),
            "undilated": list(plain.output_shape.measured or ()),
        },
    }
    return replace(report, extra={"vs_undilated": growth})


@dataclass(frozen=True)
class Comparison:
    """Standard, grouped and depthwise-separable versions of one layer, side by side."""

    input: InputSpec
    versions: tuple[tuple[str, Report], ...]
    ratios: dict[str, dict[str, Any]]
    theory_text: dict[str, str]

    @property
    def agree(self) -> bool:
        return all(report.agree for _, report in self.versions)

    def to_dict(self) -> dict[str, Any]:
        from convcalc._version import __version__

        return {
            "convcalc_version": __version__,
            "command": "compare",
            "input_shape": list(self.input.shape),
            "dtype": self.input.dtype,
            "versions": [
                {
                    "name": name,
                    **report.to_dict(),
                    "ratio_to_standard": self.ratios[name],
                    "theory": self.theory_text[name],
                }
                for name, report in self.versions
            ],
            "agree": self.agree,
        }


def compare(
    *,
    dims: int,
    in_channels: int,
    out_channels: int,
    kernel: str,
    groups: int,
    input_spec: InputSpec,
    bias: bool = True,
    options: Options | None = None,
    labels: Labels | None = None,
) -> Comparison:
    """The documents' argument settled by measurement: the same layer as a standard conv, a
    grouped conv and a depthwise-separable pair; each one's ratio to the standard."""
    from convcalc.core.spec import parse_ints
    from convcalc.kinds import build_conv

    labels = labels or Labels()
    kernel_size = parse_ints(kernel, dims, "kernel_size", labels)
    padding = "x".join(str((k - 1) // 2) for k in kernel_size)
    standard = build_conv(
        dims=dims,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel=kernel,
        padding=padding,
        bias=bias,
        name="standard",
        labels=labels,
    )
    grouped = replace(
        build_conv(
            dims=dims,
            in_channels=in_channels,
            out_channels=out_channels,
            kernel=kernel,
            padding=padding,
            groups=groups,
            bias=bias,
            labels=labels,
        ),
        name="grouped",
    )
    separable = _presets().depthwise_separable(
        dims=dims,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel=kernel,
        padding=padding,
        bias=bias,
        labels=labels,
    )
    reports = (
        (
            "standard",
            analyze_chain(
                [standard],
                input_spec,
                command="compare",
                options=options,
                labels=labels,
                title=standard.describe(),
            ),
        ),
        (
            "grouped",
            analyze_chain(
                [grouped],
                input_spec,
                command="compare",
                options=options,
                labels=labels,
                title=grouped.describe(),
            ),
        ),
        (
            "depthwise_separable",
            analyze_chain(
                separable,
                input_spec,
                command="compare",
                options=options,
                labels=labels,
                title="depthwise + pointwise",
            ),
        ),
    )
    theories = {
        "standard": Fraction(1),
        "grouped": _presets().grouped_theory(groups),
        "depthwise_separable": _presets().separable_theory(out_channels, kernel_size),
    }
    theory_text = {
        "standard": "1",
        "grouped": f"1/g = 1/{groups}",
        "depthwise_separable": (f"1/N + 1/K² = 1/{out_channels} + 1/{math.prod(kernel_size)}"),
    }
    base = reports[0][1].total
    ratios: dict[str, dict[str, Any]] = {}
    for name, report in reports:
        total = report.total
        ratios[name] = {
            "params": _ratio_pair(total.params, base.params, theories[name]),
            "macs": _ratio_pair(total.macs, base.macs, theories[name]),
            "flops": _ratio_pair(total.flops, base.flops, theories[name]),
            "memory_total": _presets().ratio(
                total.memory.measured.total if total.memory.measured else None,
                base.memory.measured.total if base.memory.measured else None,
            ),
        }
        if options is not None and options.time:
            ratios[name]["latency"] = _latency_ratio(report, reports[0][1])
    return Comparison(input_spec, reports, ratios, theory_text)


def analyze_network(
    network: Any, *, command: str = "stack", title: str = "", options: Options | None = None
) -> Report:
    """A parsed stack (:class:`convcalc.stack.Network`): every layer, measured and by formula."""
    return analyze_graph(
        network.nodes,
        network.input,
        command=command,
        title=title,
        options=options,
        names=network.names,
        notes=network.notes,
    )


def analyze_model(
    target: Any,
    input_shape: tuple[int, ...],
    *,
    dtype: str = "float32",
    options: Options | None = None,
) -> Report:
    """A user's own nn.Module (``MODULE:ATTR``), run for real with hooks on every conv, pool,
    linear and batch-norm layer: the same per-layer figures, and the model's totals."""
    from convcalc.measure.loaders import load_model
    from convcalc.measure.models import measure_model

    if len(input_shape) < 2:
        raise SpecError("input", "--input needs at least N,C (like 1,3,224,224)")
    model = load_model(target) if isinstance(target, str) else target.eval()
    if not isinstance(target, str):
        target = type(target).__name__
    measured = measure_model(model, input_shape, dtype)
    input_spec = InputSpec(input_shape[0], input_shape[1], tuple(input_shape[2:]), dtype)
    layers: list[LayerReport] = []
    calls_note = False
    for layer in measured.layers:
        shape = layer.input_shape
        layer_input = InputSpec(shape[0], shape[1], tuple(shape[2:]), dtype)
        figures = kinds.figures(layer.spec, layer_input)
        calls = layer.calls or (shape,)
        if len(calls) > 1:
            # a module run more than once: its measured MACs and FLOPs add up every call
            calls_note = True
            per_call = [
                kinds.figures(layer.spec, InputSpec(c[0], c[1], tuple(c[2:]), dtype)) for c in calls
            ]
            mac = sum(f.macs.value for f in per_call)
            flop = sum(f.flops.value for f in per_call)
            bias = sum(f.bias_adds.value for f in per_call)
            out_formula = per_call[-1].output_shape.value
        else:
            mac, flop, bias = figures.macs.value, figures.flops.value, figures.bias_adds.value
            out_formula = figures.output_shape.value
        result = layer.measurement
        width = DTYPE_BYTES[dtype]
        texts = figures.texts()
        if len(calls) > 1:
            texts["macs"] = f"{len(calls)} calls: {mac:,}"
            texts["flops"] = f"{len(calls)} calls: {flop:,}"
        layers.append(
            LayerReport(
                name=layer.name if len(calls) == 1 else f"{layer.name} (×{len(calls)})",
                spec=layer.spec,
                input_shape=shape,
                output_shape=Pair(result.output_shape, out_formula),
                params=Pair(result.params, figures.params.value),
                macs=Pair(result.macs, mac),
                flops=Pair(result.flops, flop),
                bias_adds=bias,
                receptive_field=Pair(result.receptive_field, figures.receptive_field.value),
                memory=Pair(
                    summary_memory(
                        math.prod(shape), [result.output_elements or 0], result.params or 0, width
                    ),
                    figures.memory.value,
                ),
                formula_text=texts,
            )
        )
    notes = []
    if calls_note:
        notes.append(
            "a layer marked ×N runs N times in one forward pass: its MACs and FLOPs, measured "
            "and by formula, add up every call; its output shape is the last call's"
        )
    if measured.uncovered:
        listed = ", ".join(
            f"{name or '(model)'} ({count:,})"
            for name, count in list(measured.uncovered.items())[:5]
        )
        notes.append(
            f"{sum(measured.uncovered.values()):,} parameters sit in modules convcalc has no "
            f"formula for: {listed}; the total parameter formula leaves them out"
        )
    if not layers:
        notes.append("the model has no conv, pool, linear or batch-norm layer")
    width = DTYPE_BYTES[dtype]
    formula_params = sum(x.params.formula for x in layers)
    total = Total(
        params=Pair(measured.params, formula_params),
        macs=_sum_pair([x.macs for x in layers]),
        flops=_sum_pair([x.flops for x in layers]),
        bias_adds=sum(x.bias_adds for x in layers),
        output_shape=Pair(measured.output_shape, None),  # type: ignore[arg-type]
        receptive_field=Pair(measured.receptive_field, None),  # type: ignore[arg-type]
        memory=Pair(
            summary_memory(
                math.prod(input_shape),
                [math.prod(x.output_shape.measured or ()) for x in layers] or [0],
                measured.params,
                width,
            ),
            summary_memory(
                math.prod(input_shape),
                [math.prod(x.output_shape.formula) for x in layers] or [0],
                formula_params,
                width,
            ),
        ),
        receptive_field_of=measured.receptive_field_of,
    )
    report = Report(
        command="model",
        input=input_spec,
        layers=tuple(layers),
        total=total,
        measured_on="cpu",
        sources={**measured.sources, "measured_on": "cpu: the model runs for real"},
        title=target,
        notes=tuple(notes),
    )
    return with_model_memory(report, model, input_shape, dtype, options or Options())


# --- memory a user can plan a GPU budget on (issue 13) ----------------------------------------

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
    saved: Any = None
    peak: Any = None
    step: Any = None
    cuda: dict[str, int] | None = None
    sources: dict[str, str] = field(default_factory=dict)


def _measure_memory(
    nodes: Sequence[Node],
    input_spec: InputSpec,
    options: Options,
    plan: RunPlan,
    step_bytes: int,
) -> _MemoryMeasured:
    """Saved for backward and the inference peak wherever the run is real or meta; one
    training step on small real CPU runs only; torch's CUDA peak with --device cuda."""
    result = _MemoryMeasured()
    if plan.device not in ("cpu", "meta"):
        return result
    from convcalc.errors import MeasurementError
    from convcalc.measure import memory as measure_memory

    try:
        result.saved = measure_memory.measure_network_saved(nodes, input_spec, plan.device)
        result.sources["memory_saved_for_backward"] = (
            result.saved.source + "; training mode, the network input requiring grad (as a "
            "layer inside a bigger network; a training step's data does not)"
        )
    except MeasurementError as error:
        result.sources["memory_saved_for_backward"] = f"not measured: {error}"
    try:
        result.peak = measure_memory.measure_network_peak(nodes, input_spec, plan.device)
        result.sources["memory_peak_inference"] = (
            result.peak.source + "; eval mode, each output freed after its last reader; per "
            "layer: the live activation bytes while that layer runs"
        )
    except MeasurementError as error:
        result.sources["memory_peak_inference"] = f"not measured: {error}"
    why_not = ""
    if not options.train:
        why_not = (
            "one real step is measured with --train (Options.train): creating a torch.optim "
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


def _step_source(step: Any) -> str:
    return (
        "one real step on the CPU (forward, out.sum().backward(), optimizer.step()): "
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
) -> Report:
    """The report with the memory a GPU budget is planned on: per layer saved for backward and
    the live bytes while it runs; for the network those, one training step, and what fits."""
    saved = memory_model.saved_for_backward(nodes, input_spec)
    peak = memory_model.peak_inference(nodes, input_spec)
    step = memory_model.training_step(nodes, input_spec, options.optimizer)
    fit = None
    if fit_bytes is not None:
        fit = _fit(nodes, input_spec, options, fit_bytes, check=plan.device != "none")
    measured = _measure_memory(nodes, input_spec, options, plan, step.total.value)
    layers = []
    for index, layer in enumerate(report.layers):
        key = str(index)
        layers.append(
            replace(
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
    step_parts = {
        key: getattr(step, key)
        for key in ("params", "buffers", "grads", "optimizer_state", "saved_for_backward")
    }
    step_parts.update(transient=step.transient, total=step.total)
    total = replace(
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
    return replace(report, layers=tuple(layers), total=total, sources=sources, extra=extra)


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
    }


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
            }
    except MeasurementError:
        pass
    return checked


def with_model_memory(
    report: Report, model: Any, input_shape: tuple[int, ...], dtype: str, options: Options
) -> Report:
    """A user's model: saved for backward, the inference peak and (for a model whose
    torchsummary total is at most MODEL_TRAINING_MAX_BYTES) one training step, measured on a
    copy. No formula: convcalc has none for an arbitrary graph (the formula side is null)."""
    check_memory_options(options)
    if options.fit is not None:
        raise SpecError(
            "fit",
            "--fit needs the formulas of a network of known layers: convcalc has none for an "
            "arbitrary model's graph",
        )
    from convcalc.measure.memory import measure_model_memory

    summary = report.total.memory.measured
    small = summary is not None and summary.total <= MODEL_TRAINING_MAX_BYTES and options.train
    found = measure_model_memory(model, input_shape, dtype, options.optimizer, training_step=small)
    saved_layers = found.saved.layers if found.saved is not None else {}
    peak_layers = found.peak.layers if found.peak is not None else {}
    layers = [
        replace(
            layer,
            saved_for_backward=Pair(saved_layers.get(layer.name), None),  # type: ignore[arg-type]
            peak_inference=Pair(peak_layers.get(layer.name), None),  # type: ignore[arg-type]
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
        "memory_saved_for_backward": found.sources["saved"],
        "memory_peak_inference": found.sources["peak"]
        + "; per layer: the live activation bytes while that layer runs",
        "memory_training_step": found.sources.get(
            "step",
            "not measured: "
            + (
                f"torchsummary's total of the model is above "
                f"{formulas.human_bytes(MODEL_TRAINING_MAX_BYTES)}"
                if options.train
                else "one real step is measured with --train (Options.train)"
            ),
        ),
    }
    note = (
        "memory: saved for backward, the inference peak and the training step are measured "
        "only: convcalc has no formula for an arbitrary model's graph"
    )
    return replace(
        report, layers=tuple(layers), total=total, sources=sources, notes=(*report.notes, note)
    )
