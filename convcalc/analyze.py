"""The library entry points: validate, compute every figure by formula, measure it with torch, and
set the two side by side. Never prints, never exits; raises :mod:`convcalc.errors` types."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from . import formulas
from .errors import SpecError
from .memory import summary_memory
from .report import LayerReport, Pair, Report, Total
from .spec import DTYPE_BYTES, ConvSpec, InputSpec, Labels, check_fits

#: Real CPU runs are kept to this much float32 tensor data (input, outputs, parameters) ...
REAL_RUN_MAX_BYTES = 256 * 2**20
#: ... and to about this long per run, at the rates below (half of what this kind of machine
#: measured with 2 threads: bench/throughput.py). Larger layers are measured on the meta device.
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


def _rate(spec: ConvSpec) -> float:
    if spec.groups > 1 and spec.groups == spec.in_channels:
        return MAC_RATES["depthwise"]
    if spec.groups > 1:
        return MAC_RATES["grouped"]
    if spec.dims == 3:
        return MAC_RATES["3d"]
    if any(d > 1 for d in spec.dilation):
        return MAC_RATES["dilated"]
    return MAC_RATES["dense"]


def plan_run(
    specs: Sequence[ConvSpec], inputs: Sequence[InputSpec], measure_on: str = "auto"
) -> RunPlan:
    """Where to measure: a real CPU run when it fits in memory and time, else the meta device."""
    elements = math.prod(inputs[0].shape)
    seconds = 0.0
    for spec, layer_input in zip(specs, inputs):
        out = formulas.output_shape(spec, layer_input).value
        elements += math.prod(out) + formulas.params(spec).value
        seconds += formulas.macs(spec, layer_input).value / _rate(spec)
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


def layer_inputs(
    specs: Sequence[ConvSpec], input_spec: InputSpec, labels: Labels
) -> list[InputSpec]:
    """Validate the chain and give each layer's input by formula (its predecessor's output)."""
    inputs = [input_spec]
    for index, spec in enumerate(specs):
        check_fits(spec, inputs[-1], labels)
        out = formulas.output_shape(spec, inputs[-1]).value
        if index + 1 < len(specs):
            inputs.append(
                InputSpec(batch=out[0], channels=out[1], size=out[2:], dtype=input_spec.dtype)
            )
    return inputs


def analyze_chain(
    specs: Sequence[ConvSpec],
    input_spec: InputSpec,
    *,
    command: str = "conv",
    measure_on: str = "auto",
    labels: Labels | None = None,
) -> Report:
    """Every figure of a chain of conv layers, measured and by formula."""
    if not specs:
        raise SpecError("layers", "no layers to analyze")
    if measure_on not in MEASURE_ON:
        raise SpecError("measure_on", f"--measure-on {measure_on!r} must be one of auto, cpu, meta")
    labels = labels or Labels()
    inputs = layer_inputs(specs, input_spec, labels)
    plan = plan_run(specs, inputs, measure_on)

    from . import measure  # torch: only once a measurement is really wanted

    measured = measure.measure_chain(specs, input_spec, plan.device)

    layers: list[LayerReport] = []
    for spec, layer_input, result, mem in zip(specs, inputs, measured.layers, measured.memory):
        shape = formulas.output_shape(spec, layer_input)
        count = formulas.params(spec)
        mac = formulas.macs(spec, layer_input)
        flop = formulas.flops(spec, layer_input)
        bias = formulas.bias_adds(spec, layer_input)
        field = formulas.receptive_field(spec)
        memory = formulas.memory(spec, layer_input)
        layers.append(
            LayerReport(
                name=spec.name,
                spec=spec,
                input_shape=layer_input.shape,
                output_shape=Pair(result.output_shape, shape.value),
                params=Pair(result.params, count.value),
                macs=Pair(result.macs, mac.value),
                flops=Pair(result.flops, flop.value),
                bias_adds=bias.value,
                receptive_field=Pair(result.receptive_field, field.value),
                memory=Pair(mem, memory.value),
                formula_text={
                    "output_shape": shape.shown,
                    "params": count.shown,
                    "macs": mac.shown,
                    "flops": flop.shown,
                    "bias_adds": bias.shown,
                    "receptive_field": field.shown,
                    **{f"memory_{key}": text for key, text in memory.parts.items()},
                },
                notes=result.notes,
            )
        )

    formula_memory = summary_memory(
        math.prod(input_spec.shape),
        [math.prod(layer.output_shape.formula) for layer in layers],
        sum(layer.params.formula for layer in layers),
        DTYPE_BYTES[input_spec.dtype],
    )
    total = Total(
        params=Pair(sum(r.params for r in measured.layers), sum(x.params.formula for x in layers)),
        macs=_sum_pair([x.macs for x in layers]),
        flops=_sum_pair([x.flops for x in layers]),
        bias_adds=sum(x.bias_adds for x in layers),
        output_shape=layers[-1].output_shape,
        receptive_field=Pair(
            measured.receptive_field,
            layers[0].receptive_field.formula
            if len(specs) == 1
            else formulas.chain_receptive_field(specs).value,
        ),
        memory=Pair(measured.total_memory, formula_memory),
    )
    sources = dict(measured.sources)
    sources["measured_on"] = f"{plan.device}: {plan.reason}"
    return Report(
        command=command,
        input=input_spec,
        layers=tuple(layers),
        total=total,
        measured_on=plan.device,
        sources=sources,
    )


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
    labels: Labels | None = None,
) -> Report:
    """One layer, measured and by formula (``convcalc conv``)."""
    return analyze_chain([spec], input_spec, command="conv", measure_on=measure_on, labels=labels)
