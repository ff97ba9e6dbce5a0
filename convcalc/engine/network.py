"""One network (a layer, a chain, a graph of nodes) analysed: every figure by formula, measured
with torch, set side by side in a Report."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from convcalc import kinds
from convcalc.core.advice import network_warnings
from convcalc.core.cumulative import cumulative as cumulative_figures
from convcalc.core.graph import graph_inputs
from convcalc.core.measured import nothing_measured
from convcalc.core.memory import summary_memory
from convcalc.core.report import LayerReport, Pair, Report, Total
from convcalc.core.spec import DTYPE_BYTES, InputSpec, Labels, Node, chain
from convcalc.engine.memory import check_memory_options, with_memory
from convcalc.engine.plan import MEASURE_ON, Options, RunPlan, check_fits_here, plan_run
from convcalc.engine.roofline import resolve_peaks, with_roofline
from convcalc.errors import SpecError
from convcalc.kinds import ConvSpec

if TYPE_CHECKING:  # an annotation: naming every kind loads them all (start-up)
    from convcalc.kinds import LayerSpec


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
    checked_inputs: Sequence[InputSpec] | None = None,
) -> Report:
    """Every figure of every layer of a network, measured and by formula, and the cumulative
    figures relative to the network input. ``checked_inputs``: each node's input tensor, where
    the caller validated the network by the rules of ``graph_inputs`` already (a stack the
    builder made: ``Network.checked_inputs``); None: validated here."""
    options = options or Options()
    if not nodes:
        raise SpecError("layers", "no layers to analyze")
    if options.measure_on not in MEASURE_ON:
        raise SpecError(
            "measure_on", f"--measure-on {options.measure_on!r} must be one of auto, cpu, meta"
        )
    fit_bytes = check_memory_options(options)
    peaks = resolve_peaks(options, input_spec.dtype)
    nodes = tuple(nodes)
    inputs = (
        graph_inputs(nodes, input_spec, labels) if checked_inputs is None else list(checked_inputs)
    )
    specs = [node.spec for node in nodes]
    plan = plan_run(specs, inputs, options.measure_on)
    if not options.formula_only:
        check_fits_here(plan)
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
                memory=options.measure_memory,
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
                latency_iqr_ms=result.latency_iqr_ms,
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
    report = with_memory(report, nodes, input_spec, options, plan, fit_bytes, measured)
    return with_roofline(report, nodes, inputs, peaks)


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
        checked_inputs=_checked_inputs(network),
    )


def _checked_inputs(network: Any) -> Sequence[InputSpec] | None:
    """The node inputs a stack's builder validated (None: none, or the network changed)."""
    checked = getattr(network, "checked_inputs", None)
    return None if checked is None else checked()
