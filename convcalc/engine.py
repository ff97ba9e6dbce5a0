"""The library entry points: validate, compute every figure by formula, measure it with torch, and
set the two side by side. Never prints, never exits; raises :mod:`convcalc.errors` types."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import field, replace
from fractions import Fraction
from typing import Any

from convcalc import kinds
from convcalc._dataclass import dataclass
from convcalc.choices import check_device_name
from convcalc.core import formulas, memory_model
from convcalc.core.advice import network_warnings
from convcalc.core.cumulative import cumulative as cumulative_figures
from convcalc.core.graph import graph_inputs
from convcalc.core.measured import nothing_measured
from convcalc.core.memory import summary_memory
from convcalc.core.report import Comparison, LayerReport, Pair, Report, Total
from convcalc.core.spec import DTYPE_BYTES, InputSpec, Labels, Node, chain
from convcalc.errors import SpecError
from convcalc.kinds import ConvSpec, LayerSpec

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
    #: the roofline (issue 14): bytes moved, intensity, bound and time lower bound per layer on
    #: the device's peaks (--time implies it); the peaks given (GFLOP/s, GB/s: nothing is
    #: measured), or measured once and cached (recalibrate: measure again); ``peaks``: already
    #: resolved (compare and batch resolve them once for all their reports); ``progress``: told
    #: one line before a calibration runs (the CLI prints it on stderr)
    roofline: bool = False
    peak_gflops: float | None = None
    peak_gbps: float | None = None
    recalibrate: bool = False
    peaks: Any = None
    progress: Callable[[str], None] | None = None
    #: measure saved-for-backward and the inference peak (False: formula only, and the
    #: sources say so; ``batch`` without --memory, whose rate this would halve)
    measure_memory: bool = True


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


def physical_memory_bytes() -> int | None:
    """This machine's physical memory (None where the system does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_here(plan: RunPlan) -> None:
    """A real CPU run asked for (--measure-on cpu) whose tensors alone exceed this machine's
    memory: it does not fit here, which is said before torch tries and fails (or the system
    kills it)."""
    memory = physical_memory_bytes()
    if plan.device == "cpu" and memory is not None and plan.estimated_bytes > memory:
        raise SpecError(
            "measure_on",
            f"--measure-on cpu: a real run needs about {formulas.human_bytes(plan.estimated_bytes)}"
            f" of tensors, more than this machine's {formulas.human_bytes(memory)} of memory: it "
            "does not fit here; --measure-on auto or meta measures it on torch's meta device",
        )


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
    peaks = resolve_peaks(options, input_spec.dtype)
    nodes = tuple(nodes)
    inputs = graph_inputs(nodes, input_spec, labels)
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
    options = with_peaks(options, input_spec.dtype)
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
    options = with_peaks(options, input_spec.dtype)
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
    options = with_peaks(options, input_spec.dtype)
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
    return Comparison(input_spec, reports, ratios, theory_text, why=roofline_why(reports))


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


def _keeping_modes(analyze: Callable[..., Report]) -> Callable[..., Report]:
    """A user's ``nn.Module`` comes back in the training mode it came in (each module's flag):
    the analysis runs it in eval mode."""
    import functools

    @functools.wraps(analyze)
    def kept(target: Any, *args: Any, **kwargs: Any) -> Report:
        modules = getattr(target, "modules", None)
        modes = [] if modules is None else [(m, bool(m.training)) for m in modules()]
        try:
            return analyze(target, *args, **kwargs)
        finally:
            for module, training in modes:
                module.training = training

    return kept


@_keeping_modes
def analyze_model(
    target: Any,
    input_shape: tuple[int, ...],
    *,
    dtype: str = "float32",
    kwargs: str | None = None,
    device: str = "cpu",
    receptive_field: bool = True,
    options: Options | None = None,
) -> Report:
    """A user's own network: a target string (``pkg.mod:Attr`` with ``kwargs`` like
    ``"num_classes=10"``, ``file.py:Attr``, ``timm:NAME``, a TorchScript or ONNX file) or an
    ``nn.Module``. One forward pass on ``device`` ("cpu"; "meta": shapes only) is counted at
    torch's dispatch level (every operator counted by a rule or named as not counted, each
    counted one attributed to the innermost module running it), and every module that did
    counted work or that a layer kind knows is set beside its closed form on the input it
    really received. ``receptive_field=False`` skips the autograd probe of the whole model."""
    if len(input_shape) < 2:
        raise SpecError("input", "--input needs at least N,C (like 1,3,224,224)")
    if device not in ("cpu", "meta"):
        raise SpecError("device", f"device must be cpu or meta, not {device!r}")
    resolve_peaks(options or Options(), dtype)  # bad peaks or device: before the model runs
    from convcalc.measure.model_run import run_model

    run = run_model(
        target,
        tuple(input_shape),
        kwargs=kwargs,
        device=device,
        receptive_field=receptive_field,
        memory=dtype if device != "meta" else None,
    )
    options = options or Options()
    if device == "meta" and options.time:
        raise SpecError("time", "--time runs the model: it does not go with --measure-on meta")
    report = model_report(run, tuple(input_shape), dtype)
    if device != "meta":
        report = with_model_memory(
            report, run.model, tuple(input_shape), dtype, options, once=run.memory
        )
    return with_model_roofline(report, run.model, options)


def _model_input(shape: tuple[int, ...], dtype: str) -> InputSpec:
    return InputSpec(shape[0], shape[1] if len(shape) > 1 else 1, tuple(shape[2:]), dtype)


def _model_layer(module: Any, run: Any, dtype: str) -> tuple[LayerReport, Any] | None:
    """The row of one module that ran, and its :class:`ModuleFigures`; None for a module that
    did no counted work and that no kind knows."""
    from convcalc.core.opformulas import flops_of, mha_params
    from convcalc.core.report import ModuleFigures, ModuleSpec
    from convcalc.measure.model_run import layer_receptive_field
    from convcalc.measure.opcount import conv_call_formula, module_formula

    spec = module.spec
    calls = [inputs[0] for inputs in module.call_inputs if inputs]
    width = DTYPE_BYTES[dtype]
    out_shape = module.output_shapes[0] if module.output_shapes else None
    in_elements = sum(math.prod(c) for c in calls)
    out_elements = module.calls * math.prod(out_shape) if out_shape is not None else 0
    op_calls = {op.op: op.calls for op in module.ops}
    name = module.name or "(model)"
    if module.calls > 1:
        name = f"{name} (×{module.calls})"
    first = calls[0] if calls else ()
    if spec is not None and calls and (len(first) >= 2):
        texts: dict[str, str] = {}
        per_call = []
        for index, shape in enumerate(calls):
            layer_spec, layer_shape = spec, shape
            received = module.conv_received[index] if index < len(module.conv_received) else None
            if isinstance(spec, ConvSpec) and received is not None and received[0] != shape:
                # padded at run time (F.pad in forward): the conv's figures are those of the
                # padded input it really received
                layer_spec, layer_shape = replace(spec, padding=received[1]), received[0]
            layer_spec = kinds.kind_of(layer_spec).with_input(layer_spec, layer_shape)
            per_call.append(
                (
                    layer_spec,
                    layer_shape,
                    kinds.figures(layer_spec, _model_input(layer_shape, dtype)),
                )
            )
        spec0, shape0, fig0 = per_call[0]
        texts = fig0.texts()
        if shape0 != first:
            texts["macs"] = f"on the padded input it received (run-time padding): {texts['macs']}"
        mac = sum(f.macs.value for _, _, f in per_call)
        flop = sum(f.flops.value for _, _, f in per_call)
        bias = sum(f.bias_adds.value for _, _, f in per_call)
        if len(per_call) > 1:
            texts["macs"] = f"{len(per_call)} calls: {mac:,}"
            texts["flops"] = f"{len(per_call)} calls: {flop:,}"
        out_formula = per_call[-1][2].output_shape.value
        measured_field = (
            layer_receptive_field(spec0, shape0)
            if len(shape0) > 2 and not isinstance(spec0, kinds.LinearSpec)
            else fig0.receptive_field.value
            if isinstance(spec0, kinds.LinearSpec)
            else ()
        )
        params = module.params
        report = LayerReport(
            name=name,
            spec=spec0,
            input_shape=first,
            output_shape=Pair(out_shape, out_formula),
            params=Pair(params, fig0.params.value),
            macs=Pair(module.macs, mac),
            flops=Pair(module.flops, flop),
            bias_adds=bias,
            receptive_field=Pair(
                None if isinstance(spec0, kinds.LinearSpec) else measured_field,
                fig0.receptive_field.value,
            ),
            memory=Pair(
                # the tensor the layer's operator really read (the padded one, padded at run
                # time)
                summary_memory(math.prod(shape0), [math.prod(out_shape or ())], params, width),
                fig0.memory.value,
            ),
            formula_text=texts,
            notes=module.notes,
        )
        positions = sum(
            math.prod(f.output_shape.value[:1] + f.output_shape.value[2:])
            if isinstance(s, ConvSpec)
            else math.prod(f.output_shape.value[:-1])
            for s, _, f in per_call
        )
        weight_positions = (
            positions * fig0.params.value if isinstance(spec0, ConvSpec | kinds.LinearSpec) else 0
        )
        figures = ModuleFigures(
            module.name,
            module.type,
            module.calls,
            spec0.op if not isinstance(spec0, kinds.NormSpec) else "batchnorm",
            module.macs,
            bias,
            params,
            in_elements,
            out_elements,
            op_calls,
            weight_positions,
            out_shape[0] if out_shape else 0,
            _bias_size(spec0),
        )
        return report, figures
    if not module.ops:
        return None
    # no kind knows it, and it did counted work: an attention block, a module calling
    # matmul or a functional conv on a child's weight
    formula = module_formula(module)
    params_pair: Pair[int]
    hyper: tuple[tuple[str, Any], ...] = ()
    op = ""
    if module.attention is not None:
        a = module.attention
        op = "attention"
        hyper = (("embed_dim", a.embed_dim), ("num_heads", a.num_heads))
        params_formula = mha_params(a.embed_dim, a.kdim, a.vdim, a.bias, a.bias_kv)
        params_pair = Pair(run.subtree_params.get(module.name, module.params), params_formula.value)
        if a.bias_kv:
            formula = None  # the source grows by one position: no closed form here
    else:
        params_pair = Pair(module.params, None)  # type: ignore[arg-type]
        convs = [c for c in run.count.conv_calls if c.module == module.name]
        counted_ops = {op.op for op in module.ops}
        if convs and counted_ops <= {"aten.convolution", "aten._convolution"}:
            parts = [conv_call_formula(c) for c in convs]
            from convcalc.core.formulas import Derived

            formula = Derived(
                sum(p.value for p in parts),
                " + ".join(f"[{c.weight or 'conv'}: {p.shown}]" for c, p in zip(convs, parts)),
            )
    texts = {}
    if formula is not None:
        texts["macs"] = formula.shown
        texts["flops"] = flops_of(formula).shown
    if params_pair.formula is not None and module.attention is not None:
        texts["params"] = mha_params(
            module.attention.embed_dim,
            module.attention.kdim,
            module.attention.vdim,
            module.attention.bias,
            module.attention.bias_kv,
        ).shown
    notes = list(module.notes)
    if formula is None:
        notes.append(
            "no closed form for this module's work ("
            + ", ".join(f"{op} ×{n}" for op, n in op_calls.items())
            + "): measured only"
        )
    report = LayerReport(
        name=name,
        spec=ModuleSpec(module.type, module.name, hyper),
        input_shape=first,
        output_shape=Pair(out_shape, None),  # type: ignore[arg-type]
        params=params_pair,
        macs=Pair(module.macs, None if formula is None else formula.value),  # type: ignore[arg-type]
        flops=Pair(module.flops, None if formula is None else 2 * formula.value),  # type: ignore[arg-type]
        bias_adds=0,
        receptive_field=Pair(None, ()),
        memory=Pair(
            summary_memory(
                math.prod(first), [math.prod(out_shape or ())], params_pair.measured or 0, width
            ),
            None,  # type: ignore[arg-type]
        ),
        formula_text=texts,
        notes=tuple(notes),
    )
    figures = ModuleFigures(
        module.name,
        module.type,
        module.calls,
        op,
        module.macs,
        0,
        module.params,
        in_elements,
        out_elements,
        op_calls,
    )
    return report, figures


def _bias_size(spec: Any) -> int:
    if isinstance(spec, ConvSpec) and spec.bias:
        return spec.out_channels
    if isinstance(spec, kinds.LinearSpec) and spec.bias:
        return spec.out_features
    return 0


def model_report(run: Any, input_shape: tuple[int, ...], dtype: str) -> Report:
    """The report of one measured model (:class:`convcalc.measure.model_run.ModelRun`)."""
    from convcalc.core.report import ModelFigures, ModuleFigures

    count = run.count
    layers: list[LayerReport] = []
    modules: list[ModuleFigures] = []
    for module in count.modules:
        found = _model_layer(module, run, dtype)
        if found is None:
            if module.spec is None:
                # still part of the whole-model conventions (activations, norms, adds)
                out = module.output_shapes[0] if module.output_shapes else ()
                ins = [i[0] for i in module.call_inputs if i]
                modules.append(
                    ModuleFigures(
                        module.name,
                        module.type,
                        module.calls,
                        "",
                        module.macs,
                        0,
                        module.params,
                        sum(math.prod(s) for s in ins),
                        module.calls * math.prod(out) if out else 0,
                    )
                )
            continue
        layers.append(found[0])
        modules.append(found[1])
    notes: list[str] = list(run.notes)
    if any("(×" in layer.name for layer in layers):
        notes.append(
            "a layer marked ×N runs N times in one forward pass: its MACs and FLOPs, measured "
            "and by formula, add up every call; its output shape is the first call's"
        )
    # parameters no formula covers: modules with parameters and no row, outside any attention
    # block's row (whose formula counts its out_proj)
    covered = {layer.spec.name for layer in layers if layer.params.formula is not None}
    blocks = [
        layer.spec.name
        for layer in layers
        if getattr(layer.spec, "op", "") == "module" and layer.params.formula is not None
    ]
    uncovered = {
        name: n
        for name, n in run.own_params.items()
        if name not in covered and not any(name.startswith(f"{b}.") or not b for b in blocks)
    }
    formula_params = sum(x.params.formula for x in layers if x.params.formula is not None)
    if uncovered:
        listed = ", ".join(
            f"{name or '(model)'} ({n:,})" for name, n in list(uncovered.items())[:5]
        )
        more = f" and {len(uncovered) - 5} more" if len(uncovered) > 5 else ""
        notes.append(
            f"{sum(uncovered.values()):,} parameters sit in modules convcalc has no formula "
            f"for: {listed}{more}; the formulas cover {formula_params:,} of "
            f"{count.params:,}, so the total has no parameter formula"
        )
    no_form = [x.name for x in layers if x.macs.formula is None]
    # counted operators outside every module that ran (a TorchScript root runs no hook)
    stray = count.total_macs - sum(x.macs.measured or 0 for x in layers)
    if no_form:
        notes.append(
            "modules whose counted work has no closed form (measured only, so the total MACs "
            "have no formula): " + ", ".join(no_form)
        )
    arithmetic = dict(sorted(count.arithmetic.items(), key=lambda kv: -kv[1]))
    if arithmetic:
        shown = ", ".join(f"{op} ×{n}" for op, n in list(arithmetic.items())[:8])
        more = f" and {len(arithmetic) - 8} more" if len(arithmetic) > 8 else ""
        notes.append(
            "not counted (elementwise, norm, softmax, pooling arithmetic is not MACs): "
            f"{shown}{more}; every operator with calls: uncounted_ops"
        )
    notes.extend(count.notes)
    whole = not no_form and not stray
    width = DTYPE_BYTES[dtype]
    outputs = {name: shape for name, shape in zip(count.output_names, count.output_shapes)}
    first_out = count.output_shapes[0]
    total = Total(
        params=Pair(count.params, None if uncovered else formula_params),  # type: ignore[arg-type]
        macs=Pair(
            count.total_macs,
            sum(x.macs.formula for x in layers) if whole else None,  # type: ignore[arg-type]
        ),
        flops=Pair(
            count.total_flops,
            sum(x.flops.formula for x in layers) if whole else None,  # type: ignore[arg-type]
        ),
        bias_adds=sum(x.bias_adds for x in layers),
        output_shape=Pair(first_out, None),  # type: ignore[arg-type]
        receptive_field=Pair(run.receptive_field, None),  # type: ignore[arg-type]
        memory=Pair(
            summary_memory(
                math.prod(input_shape),
                [math.prod(x.output_shape.measured or ()) for x in layers] or [0],
                count.params,
                width,
            ),
            # no formula where some parameters have none (the params total is null too)
            None  # type: ignore[arg-type]
            if uncovered or any(x.output_shape.formula is None for x in layers)
            else summary_memory(
                math.prod(input_shape),
                [math.prod(x.output_shape.formula or ()) for x in layers] or [0],
                formula_params,
                width,
            ),
        ),
        receptive_field_of=run.receptive_field_of,
    )
    if not layers:
        notes.append("no module did counted work or is a kind convcalc knows")
    figures = ModelFigures(
        uncounted_ops={"zero_cost": dict(count.zero_cost), "arithmetic": arithmetic},
        output_structure=count.output_structure,
        outputs=outputs,
        count_warnings=count.warnings,
        modules=tuple(modules),
        seconds=dict(run.seconds),
    )
    report = Report(
        command="model",
        input=_model_input(input_shape, dtype),
        layers=tuple(layers),
        total=total,
        measured_on=count.device,
        sources={
            "output_shape": "the real run (hooks on every module)",
            "params": "the model's own parameters (each row's: its module's)",
            "macs": (
                "convcalc's rule on the shapes torch dispatched, for every convolution and "
                "matrix-product operator, attributed to the innermost module running it"
            ),
            "flops": "torch.utils.flop_counter's formulas on the same dispatched operators",
            "receptive_field": (
                "each layer's: a one-channel probe of its geometry; the model's: autograd on "
                "a stand-in of the model (the same graph; every conv and linear weight "
                "1/fan-in, biases 0, torch's own conv classes computed without their channels, "
                "the same function; activations, dropout and norms the identity; max pools "
                "averaging the same windows), extent of the input gradient of the central "
                "element of its first spatial output, else of its last spatial layer "
                "(receptive_field_of)"
            ),
            "measured_on": (
                "cpu: the model runs for real"
                if count.device == "cpu"
                else "meta: shapes only, no arithmetic run"
            ),
        },
        title=run.title,
        notes=tuple(dict.fromkeys(notes)),
        model=figures,
    )
    return report


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
            + (
                "; no layer's forward depends on the training mode, so the eval-mode pass "
                "saves what training mode does"
                if saved_once
                else _second_pass(peak_once)
            )
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


def _second_pass(peak_once: Any) -> str:
    if peak_once is None:
        return "; training mode"
    return (
        "; training mode, a second pass: a layer's forward depends on the mode (batch norm, "
        "dropout), and the counted real pass ran in eval mode"
    )


def _memory_not_asked(result: _MemoryMeasured) -> _MemoryMeasured:
    why = "formula only: measured with --memory (Options.measure_memory; batch sweeps skip it)"
    for key in ("saved_for_backward", "peak_inference", "training_step"):
        result.sources[f"memory_{key}"] = why
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
    once: Any = None,
) -> Report:
    """The report with the memory a GPU budget is planned on: per layer saved for backward and
    the live bytes while it runs; for the network those, one training step, and what fits.
    ``once``: the ChainMeasurement whose real pass measured saved and peak already (either may
    be None: measured here)."""
    saved = memory_model.saved_for_backward(nodes, input_spec)
    peak = memory_model.peak_inference(nodes, input_spec)
    step = memory_model.training_step(nodes, input_spec, options.optimizer)
    fit = None
    if fit_bytes is not None:
        fit = _fit(nodes, input_spec, options, fit_bytes, check=plan.device != "none")
    measured = _measure_memory(nodes, input_spec, options, plan, step.total.value, once)
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
    report: Report,
    model: Any,
    input_shape: tuple[int, ...],
    dtype: str,
    options: Options,
    *,
    once: Any = None,
) -> Report:
    """A user's model: saved for backward, the inference peak and (for a model whose
    torchsummary total is at most MODEL_TRAINING_MAX_BYTES) one training step, measured on a
    copy, or taken from the counted forward (``once``: measure.modelpass.ModelPass). No formula: convcalc has none for an arbitrary graph (the formula side is
    null)."""
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
    found = model_memory(model, once, input_shape, dtype, options.optimizer, training_step=small)
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
                else "one real step is measured with --train (conv, the presets, stack)"
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


# --- the roofline (issue 14) ----------------------------------------------------------------

#: the top layers of total.roofline, by measured time (or by bound time when not timed)
ROOFLINE_TOP = 5


def _asks_for_peaks(options: Options) -> bool:
    """Anything that asks for the roofline's peaks: --roofline, --time, either peak (a lone one
    is refused by roofline.validate_peaks) or --recalibrate; without any, resolve_peaks is
    None whatever else is set."""
    return bool(
        options.roofline
        or options.time
        or options.recalibrate
        or options.peak_gflops is not None
        or options.peak_gbps is not None
    )


def resolve_peaks(options: Options, dtype: str) -> Any:
    """The device's peaks for the roofline (a :class:`convcalc.core.roofline.Peaks`), or None
    without --roofline, --time, given peaks or --recalibrate (each asks for it): given
    (nothing measured), resolved already, or from the cache (measured there first when absent,
    or with ``recalibrate``)."""
    if not _asks_for_peaks(options):  # the roofline module is not even loaded (start-up)
        return None
    from convcalc.core.roofline import given_peaks, validate_peaks

    given = validate_peaks(options.peak_gflops, options.peak_gbps)
    # giving the peaks, or asking to measure them again, asks for the roofline too
    if not (options.roofline or options.time or given is not None or options.recalibrate):
        return None
    if options.peaks is not None:
        return options.peaks
    device = check_device_name(options.device)
    if given is not None:
        if options.recalibrate:
            raise SpecError(
                "recalibrate",
                "--recalibrate measures the peaks: it does not go with --peak-gflops/--peak-gbps",
            )
        assert options.peak_gflops is not None and options.peak_gbps is not None
        threads = None
        if not options.formula_only:
            from convcalc.measure.timing import cpu_threads  # torch: loaded to measure anyway

            threads = cpu_threads() if device == "cpu" else None
        return given_peaks(options.peak_gflops, options.peak_gbps, device, dtype, threads)
    if options.formula_only:
        raise SpecError(
            "peak_gflops",
            "--roofline with --formula-only needs --peak-gflops and --peak-gbps (measuring "
            "the device's peaks needs torch)",
        )
    from convcalc.measure.calibrate import cached_peaks

    return cached_peaks(device, dtype, recalibrate=options.recalibrate, progress=options.progress)


def with_peaks(options: Options | None, dtype: str) -> Options | None:
    """``options`` with its peaks resolved once (compare and batch: several reports, one
    calibration)."""
    if options is None:
        return None
    peaks = resolve_peaks(options, dtype)
    return options if peaks is None else replace(options, peaks=peaks)


def _layer_roofline(layer: LayerReport, extra_inputs: int, peaks: Any, calls: int = 1) -> Any:
    """One layer's roofline by formula: FLOPs its formula's, bytes from its formula's shapes
    and parameters at the dtype's width; with a measured latency, the achieved rates. A
    module called ``calls`` times reads its input and writes its output each time, its
    weights once."""
    from convcalc.core.roofline import layer_roofline, with_time

    if layer.flops.formula is None or layer.params.formula is None:
        return None
    if layer.output_shape.formula is None:
        return None
    width = DTYPE_BYTES.get(peaks.dtype, 4)
    elements = math.prod(layer.input_shape) * calls
    roof = layer_roofline(
        flops=layer.flops.formula,
        input_elements=elements,
        weight_elements=layer.params.formula,
        output_elements=math.prod(layer.output_shape.formula) * calls,
        dtype_bytes=width,
        peaks=peaks,
        extra_input_elements=elements * extra_inputs,
    )
    if layer.latency_ms is not None and layer.latency_ms > 0:
        roof = with_time(roof, layer.latency_ms * 1e-3)
    return roof


def roofline_total(layers: Sequence[LayerReport], peaks: Any) -> dict[str, Any]:
    """total.roofline: the bound times summed (each layer alone: the network's bound when
    layers do not overlap), the measured times summed, the fraction reached, and the top
    layers by measured time (by bound time when not timed)."""
    rows = [(layer.name, layer.roofline) for layer in layers if layer.roofline is not None]
    bound = sum(roof.time_lower_bound_s for _, roof in rows)
    timed = bool(rows) and all(roof.time_s is not None for _, roof in rows)
    moved = sum(roof.bytes_moved for _, roof in rows)
    flops = sum(roof.flops for _, roof in rows)
    data: dict[str, Any] = {
        "time_lower_bound_s": bound,
        "bytes_moved": moved,
        "flops": flops,
        # the layers' FLOPs over their bytes: each layer's traffic counted alone (a network
        # that kept activations in cache would move less)
        "intensity": flops / moved if moved and flops else 0.0,
        "layers_compute_bound": sum(1 for _, roof in rows if roof.bound == "compute"),
        "layers_memory_bound": sum(1 for _, roof in rows if roof.bound == "memory"),
        "layers_without_roofline": [layer.name for layer in layers if layer.roofline is None],
        "ridge_flops_per_byte": peaks.ridge,
    }
    key = "time_s" if timed else "time_lower_bound_s"
    if timed:
        time_s = sum(roof.time_s or 0.0 for _, roof in rows)
        data.update(
            time_s=time_s,
            achieved_flops_per_s=flops / time_s if time_s > 0 else None,
            fraction_of_bound=bound / time_s if time_s > 0 else None,
        )
    whole = sum(getattr(roof, key) or 0.0 for _, roof in rows) or 1.0
    top = sorted(rows, key=lambda row: -(getattr(row[1], key) or 0.0))[:ROOFLINE_TOP]
    data["top_layers_by"] = key
    data["top_layers"] = [
        {
            "name": name,
            key: getattr(roof, key),
            "share": (getattr(roof, key) or 0.0) / whole,
            "bound": roof.bound,
            "intensity": roof.intensity,
            **({"fraction_of_bound": roof.fraction_of_bound} if timed else {}),
        }
        for name, roof in top
    ]
    return data


def with_roofline(
    report: Report, nodes: Sequence[Node], inputs: Sequence[Any], peaks: Any
) -> Report:
    """The report with every layer on the roofline of ``peaks`` (None: the report as it is)."""
    if peaks is None:
        return report
    del inputs  # each layer's input shape is in its row
    layers = tuple(
        replace(layer, roofline=_layer_roofline(layer, len(node.inputs) - 1, peaks))
        for layer, node in zip(report.layers, nodes)
    )
    total = replace(report.total, roofline=roofline_total(layers, peaks))
    sources = {
        **report.sources,
        "roofline": (
            "by formula: bytes moved = (input + weights + output elements) x the dtype's "
            "width, each read or written once (the minimum traffic: caches, re-reads and "
            "workspace not counted); intensity = formula FLOPs / bytes; bound = "
            "max(FLOPs / peak FLOP/s, bytes / peak bytes/s); peaks: " + peaks.source
        ),
    }
    return replace(report, layers=layers, total=total, sources=sources, device=peaks)


def roofline_why(versions: Sequence[tuple[str, Report]]) -> str:
    """compare's one line: each version's layers with their bound and intensity against the
    ridge, its bound time, and (timed) the fraction of that bound its measured time reached."""
    parts = []
    ridge = None
    for name, report in versions:
        roof = report.total.roofline
        if roof is None or report.device is None:
            return ""
        ridge = report.device.ridge
        rows = [(layer.name, layer.roofline) for layer in report.layers if layer.roofline]
        layers = ", ".join(
            ("" if len(rows) == 1 else f"{layer} ") + f"{r.bound}-bound ({r.intensity:,.1f} FLOP/B)"
            for layer, r in rows
        )
        text = (
            f"{name.replace('_', ' ')}: {layers}; bound {roof['time_lower_bound_s'] * 1e3:,.3f} ms"
        )
        if roof.get("time_s"):
            text += (
                f", measured {roof['time_s'] * 1e3:,.3f} ms "
                f"({roof['fraction_of_bound']:.0%} of the roofline)"
            )
        parts.append(text)
    return (
        f"why (ridge {ridge:,.1f} FLOP/B): "
        + "; ".join(parts)
        + ". A memory-bound layer's time is set by its bytes, not its FLOPs: cutting FLOPs "
        "there does not cut time."
    )


def with_model_roofline(report: Report, model: Any, options: Options) -> Report:
    """A user's model on the roofline: every row with a formula (FLOPs, parameters, output
    shape), by formula; with --time each row's module timed alone on its real input shape."""
    import re

    peaks = resolve_peaks(options, report.input.dtype)
    if peaks is None:
        return report
    layers = list(report.layers)
    timing = report.timing
    notes = list(report.notes)
    if options.time:
        from convcalc.measure.model_run import time_modules

        started = __import__("time").perf_counter()
        times, timing_notes, settings = time_modules(
            model,
            [(layer.name, tuple(layer.input_shape)) for layer in layers],
            options.device,
            options.min_run_time,
        )
        layers = [
            replace(
                layer,
                latency_ms=None if timed is None else timed[0] * 1e3,
                timed_runs=None if timed is None else timed[1],
                latency_iqr_ms=None if timed is None else timed[2] * 1e3,
                timing_requested=True,
            )
            for layer, timed in zip(layers, times)
        ]
        notes += [f"timing: {note}" for note in timing_notes]
        timing = {
            **settings,
            "seconds": round(__import__("time").perf_counter() - started, 3),
            "scope": "each module with a row, alone on zeros of its real input shape; "
            "container modules are not timed (their children are)",
        }
    roofed = []
    for layer in layers:
        match = re.fullmatch(r".* \(×(\d+)\)", layer.name)
        roofed.append(
            replace(
                layer,
                roofline=_layer_roofline(layer, 0, peaks, int(match.group(1)) if match else 1),
            )
        )
    latencies = [x.latency_ms for x in roofed]
    total = replace(
        report.total,
        roofline=roofline_total(roofed, peaks),
        latency_ms=sum(x for x in latencies if x is not None)
        if options.time and latencies and all(x is not None for x in latencies)
        else None,
        timing_requested=options.time,
    )
    sources = {
        **report.sources,
        "roofline": "by formula, for each row with one (FLOPs, parameters, output shape): "
        "bytes moved = (input + weights + output elements) x the dtype's width; peaks: "
        + peaks.source,
    }
    return replace(
        report,
        layers=tuple(roofed),
        total=total,
        sources=sources,
        device=peaks,
        timing=timing,
        notes=tuple(notes),
    )
