"""The one module that imports torch and fvcore: builds the real layers and measures them.

Nothing here uses :mod:`convcalc.formulas`; every figure comes from torch or fvcore observing
a real run (on the CPU, or on torch's ``meta`` device for layers too big to run here).

* output shape and parameters: the real ``nn.ConvNd`` / ``nn.ConvTransposeNd`` modules.
* FLOPs: torch.utils.flop_counter's registered formulas, applied to each aten operator the run
  dispatches (what ``FlopCounterMode`` does, without its module tracker, whose dispatch mode pulls
  in ``torch._dynamo`` on first use: about a second).
* MACs, and fvcore's notes (what else it counts, what it has no handler for): on a real CPU run,
  fvcore's own handles (``fvcore.nn.jit_handles``) on the shapes the run dispatched, each op
  named as fvcore's torch.jit trace records it, with fvcore's own tables of ignored and handled
  ops (``fvcore_adapter.dispatch_count``, tested equal to the trace); where the run dispatched an
  op outside ``fvcore_adapter.RULE_COVERS`` or ran a module convcalc has not checked, fvcore's
  ``FlopCountAnalysis`` tracing the real CPU run. fvcore cannot trace meta tensors: a meta run
  has its conv and linear rules on the dispatched shapes. The source says which.
* saved for backward and the inference peak (with ``Extras.memory``, real CPU runs in float32):
  from the same counted pass (measure.onepass), where one pass serves them.
* receptive field: autograd on a one-channel probe with the layer's kernel, stride and dilation,
  all weights 1, on an input just large enough that the output positions measured lie inside it:
  the extent of the nonzero input gradient of one output element, the largest over one stride
  period (transposed layers differ between output positions).
* memory: ``numel`` of the real input, outputs and parameters times torch's element size for the
  requested dtype.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from convcalc.core.measured import ChainMeasurement, LayerMeasurement
from convcalc.core.memory import Memory, summary_memory
from convcalc.core.spec import InputSpec, Node, chain
from convcalc.errors import MeasurementError
from convcalc.kinds import LayerSpec, kind_of
from convcalc.measure.build import (
    KIT,
    TORCH_DTYPES,
    GraphModule,
    build_layer,
    first_line,
    inputs_for,
)
from convcalc.measure.calibrate import time_layer
from convcalc.measure.counting import RunRecord, backward_flops, run_counted
from convcalc.measure.fvcore_adapter import (
    FvcoreCount,
    dispatch_count,
    fvcore_count,
    fvcore_rule,
    graph_modules,
)
from convcalc.measure.onepass import OnePass, one_pass_serves, run_once, training_twins
from convcalc.measure.probes import probe_cumulative_receptive_field, probe_receptive_field
from convcalc.measure.timing import MIN_BLOCKS, check_device

# --- the measurement ----------------------------------------------------------------------


#: torch's element size per dtype name, as torch reported it the first time it was asked
_ELEMENT_SIZES: dict[str, int] = {}


def element_size(dtype: str) -> int:
    size = _ELEMENT_SIZES.get(dtype)
    if size is None:
        size = _ELEMENT_SIZES[dtype] = torch.empty((), dtype=TORCH_DTYPES[dtype]).element_size()
    return size


@dataclass(frozen=True)
class Extras:
    """What to measure beyond the forward figures."""

    train: bool = False
    time: bool = False
    time_device: str = "cpu"
    #: each layer is timed for at least this long (torch.utils.benchmark's blocked_autorange)
    min_run_time: float = 0.2
    #: saved-for-backward and the inference peak from the same real CPU pass as the counts
    #: (measure.onepass), where one pass serves them (ChainMeasurement.saved / .peak)
    memory: bool = False


def out_of_memory(error: BaseException) -> bool:
    """torch (or Python) could not allocate the memory a real run needs."""
    return isinstance(error, MemoryError | torch.OutOfMemoryError) or (
        "can't allocate memory" in str(error) or "not enough memory" in str(error)
    )


#: modules built on the meta device, by spec (bounded: a long sweep stays flat in memory)
_META_LAYERS: dict[LayerSpec, torch.nn.Module] = {}
_META_LAYERS_MAX = 2048


def _layer(spec: LayerSpec, device: str, reuse: bool, torch_init: bool) -> torch.nn.Module:
    """:func:`build_layer`; on the meta device (with ``reuse``: no backward pass, which would
    leave gradients on it) a module is built once per spec and reused: it holds no values (its
    parameters are shapes on meta), and a forward pass without gradients changes nothing in it."""
    if device != "meta" or not reuse:
        return build_layer(spec, device, torch_init=torch_init)
    module = _META_LAYERS.get(spec)
    if module is None:
        if len(_META_LAYERS) >= _META_LAYERS_MAX:
            _META_LAYERS.pop(next(iter(_META_LAYERS)))
        module = _META_LAYERS[spec] = build_layer(spec, device)
    return module


#: graphs of meta modules, by the networks' wiring (which node reads which; bounded): one
#: GraphModule per wiring, its modules swapped in per network (``graph.nodes[i] = module``)
#: rather than a GraphModule built per network (an nn.Module and an nn.ModuleList: ~30 µs, for
#: about half the specs of a sweep); it holds the modules of the last network it ran
_META_GRAPHS: dict[tuple[tuple[int, ...], ...], GraphModule] = {}

#: each reused meta module's parameter count (weak keys: a module dropped from _META_LAYERS
#: takes its count with it): a module reused is the same module, its parameters the same shapes
_META_COUNTS: weakref.WeakKeyDictionary[torch.nn.Module, int] = weakref.WeakKeyDictionary()


def _param_counts(graph: GraphModule, reused: bool) -> tuple[list[int], int]:
    """``sum(p.numel() for p in module.parameters())`` of each node's module and of the whole
    graph (``graph.parameters()``: a module in two nodes counted once); counted once per
    reused meta module (``reused``)."""
    if not reused:
        return (
            [sum(p.numel() for p in layer.parameters()) for layer in graph.nodes],
            sum(p.numel() for p in graph.parameters()),
        )
    counts: list[int] = []
    whole: dict[int, int] = {}
    for layer in graph.nodes:
        count = _META_COUNTS.get(layer)
        if count is None:
            count = _META_COUNTS[layer] = sum(p.numel() for p in layer.parameters())
        counts.append(count)
        # the reused modules are built apart and share no parameter: graph.parameters()'s
        # total is each distinct module's count once
        whole[id(layer)] = count
    return counts, sum(whole.values())


def _graph(
    nodes: Sequence[Node], device: str, reuse: bool, torch_init: bool = False
) -> GraphModule:
    """The graph of the nodes' modules (:func:`_layer`); on the meta device with ``reuse``, one
    graph per wiring (:data:`_META_GRAPHS`) with the nodes' modules put in it, reused as its
    modules are (its run hooks are set and cleared around each run). ``torch_init``: the
    weights torch draws (timed layers run on them), not zeros."""
    layers = [_layer(node.spec, device, reuse, torch_init) for node in nodes]
    if device != "meta" or not reuse:
        return GraphModule(layers, [node.inputs for node in nodes])
    key = tuple(tuple(node.inputs) for node in nodes)
    graph = _META_GRAPHS.get(key)
    if graph is None:
        if len(_META_GRAPHS) >= _META_LAYERS_MAX:
            _META_GRAPHS.pop(next(iter(_META_GRAPHS)))
        graph = _META_GRAPHS[key] = GraphModule(layers, key)
    else:
        modules = graph.nodes
        for index, layer in enumerate(layers):
            if modules[index] is not layer:
                modules[index] = layer
    return graph


def measure_chain(
    specs: Sequence[LayerSpec],
    input_spec: InputSpec,
    device: str,
    extras: Extras | None = None,
) -> ChainMeasurement:
    """A plain chain of layers: see :func:`measure_graph`."""
    return measure_graph(chain(specs), input_spec, device, extras)


def measure_graph(
    nodes: Sequence[Node],
    input_spec: InputSpec,
    device: str,
    extras: Extras | None = None,
) -> ChainMeasurement:
    """Build the real layers, run them once counted by torch (fvcore's count from the same
    dispatch; its trace, a second run, only where that cannot be vouched for), on the CPU or the
    meta device; probe every receptive field by autograd; with ``extras``, run each
    layer's backward pass and time its forward pass."""
    extras = extras or Extras()
    if device not in ("cpu", "meta"):
        raise ValueError(f"device must be 'cpu' or 'meta', not {device!r}")
    time_device = check_device(extras.time_device) if extras.time else "cpu"
    specs = [node.spec for node in nodes]
    try:
        graph = _graph(nodes, device, reuse=not extras.train, torch_init=extras.time)
        layers = list(graph.nodes)
        # a meta tensor holds no values: torch.empty is the same tensor without a fill op
        make = torch.empty if device == "meta" else torch.zeros
        x = make(input_spec.shape, device=device)
        once = _one_pass(graph, x, specs, input_spec, device, extras)
        record = once.record if once is not None else run_counted(graph, x)
        macs: dict[int, int | None]
        others: dict[int, dict[str, int]]
        unsupported: dict[int, dict[str, int]]
        counted = (
            dispatch_count(graph, record.counter.ops, record.counter.calls)
            if device == "cpu"
            else None
        )
        if counted is not None:
            macs, others, unsupported = _per_node(counted, graph)
            macs_source = dispatch_source(counted)
        elif device == "cpu":
            fv = fvcore_count(graph, x, graph_modules(graph))
            names = graph_modules(graph)
            macs = {i: fv.macs(name) for i, name in enumerate(names)}
            others = {i: fv.others(name) for i, name in enumerate(names)}
            unsupported = {i: fv.unsupported.get(name, {}) for i, name in enumerate(names)}
            macs_source = "fvcore FlopCountAnalysis, tracing the real CPU run"
            if fv.extended:
                macs_source += (
                    "; fvcore has no handler for "
                    + ", ".join(sorted(fv.extended))
                    + " (torch's op for padding='same'/'valid'): convcalc registers fvcore's "
                    "own conv rule for it"
                )
        else:
            macs = _rule_macs(record, len(layers))
            others, unsupported = {}, {}
            macs_source = (
                "fvcore's conv and linear rules on the meta run's shapes: fvcore cannot trace "
                "meta tensors"
            )
        shapes = [record.outputs[i] for i in range(len(nodes))]
        rf = [
            probe_receptive_field(
                node.spec, input_spec.size if node.inputs[0] < 0 else shapes[node.inputs[0]][2:]
            )
            for node in nodes
        ]
        cumulative = probe_cumulative_receptive_field(
            nodes,
            input_spec,
            [input_spec.size if n.inputs[0] < 0 else shapes[n.inputs[0]][2:] for n in nodes],
            rf,
        )
        backward: list[tuple[int, int] | None] = [None] * len(layers)
        if extras.train:
            for index, (node, layer) in enumerate(zip(nodes, layers)):
                raw = backward_flops(layer, node, shapes, input_spec.shape, device)
                split = raw
                counted_right = kind_of(node.spec).backward_module(node.spec, KIT, device)
                if counted_right is not None:
                    split = backward_flops(counted_right, node, shapes, input_spec.shape, device)
                backward[index] = (split, raw)
        latency: list[tuple[float, int, float] | None] = [None] * len(layers)
        timing: dict[str, Any] | None = None
        if extras.time and device == "cpu":
            from convcalc.measure.calibrate import device_model, load_average, timing_caveat

            started = time.perf_counter()
            load_before = load_average()
            settings: dict[str, Any] = {}
            for index, (node, layer) in enumerate(zip(nodes, layers)):
                # each layer alone on its real input shape: warm-up runs first, a device
                # synchronise around the timed runs on CUDA/MPS (calibrate.time_layer)
                samples = inputs_for(node, shapes, input_spec.shape, "cpu")
                timed_layer = time_layer(
                    layer, samples, device=time_device, min_run_time=extras.min_run_time
                )
                latency[index] = (timed_layer.seconds, timed_layer.runs, timed_layer.iqr)
                settings = timed_layer.settings()
            timing = {
                "device": time_device,
                "threads": torch.get_num_threads(),
                "tool": "torch.utils.benchmark.Timer.blocked_autorange",
                "min_run_time_s": extras.min_run_time,
                "min_blocks": MIN_BLOCKS,
                "machine": device_model(time_device),
                "torch": torch.__version__,
                "seconds": round(time.perf_counter() - started, 3),
                "warmup_runs": settings.get("warmup_runs"),
                "synchronized": settings.get("synchronized"),
                "cudnn_benchmark": settings.get("cudnn_benchmark"),
            }
            caveat = timing_caveat([load_before, load_average()]) if time_device == "cpu" else None
            if caveat:
                timing["load_caveat"] = caveat
        elif extras.time:
            timing = {
                "device": time_device,
                "skipped": "measured on the meta device (too big to run here, or "
                "--measure-on meta): nothing ran, so nothing was timed",
            }
    except (RuntimeError, ValueError, TypeError, MemoryError) as error:
        if out_of_memory(error):  # a valid layer, too big for this machine: not torch's fault
            raise MeasurementError(
                "the layer does not fit in this machine's memory for a real run "
                f"({first_line(error)}); --measure-on auto or meta measures it on torch's meta "
                "device"
            ) from error
        # torch rejected what validation let through
        raise MeasurementError(f"torch rejected the layer: {first_line(error)}") from error

    width = element_size(input_spec.dtype)
    results: list[LayerMeasurement] = []
    memories: list[Memory] = []
    counts, total_params = _param_counts(graph, device == "meta" and not extras.train)
    for index, node in enumerate(nodes):
        count = counts[index]
        out_elements = math.prod(shapes[index])
        in_elements = sum(math.prod(input_spec.shape if i < 0 else shapes[i]) for i in node.inputs)
        notes = [f"torch warned: {message}" for message in record.warnings.get(index, [])]
        notes += [
            f"fvcore has no handler for {op} ({calls} call{'s' if calls > 1 else ''}): "
            "it counted nothing for it"
            for op, calls in sorted(unsupported.get(index, {}).items())
        ]
        notes += [
            f"fvcore also counts {op}: {n:,} (its convention; convcalc's MACs are convolutions "
            "and linear layers only)"
            for op, n in sorted(others.get(index, {}).items())
        ]
        flops = record.counter.flops.get(index, 0)
        fv_macs = macs.get(index)
        if fv_macs is not None and 2 * fv_macs != flops:
            notes.append(
                f"fvcore counts {fv_macs:,} MACs, torch's counter {flops:,} FLOPs: "
                "not 2 FLOPs per MAC"
            )
        split_raw = backward[index]
        if split_raw is not None and split_raw[0] != split_raw[1]:
            groups = getattr(node.spec, "groups", 1)
            notes.append(
                f"torch.utils.flop_counter counts this layer's backward as {split_raw[1]:,} "
                f"FLOPs: it ignores groups in the weight gradient (counting it {groups}x). "
                f"Measured on the same layer split into {groups} dense convolutions: "
                f"{split_raw[0]:,}"
            )
        timed = latency[index]
        results.append(
            LayerMeasurement(
                output_shape=shapes[index],
                params=count,
                flops=flops,
                macs=fv_macs,
                receptive_field=rf[index],
                output_elements=out_elements,
                notes=tuple(notes),
                backward_flops=None if split_raw is None else split_raw[0],
                backward_flops_torch=None if split_raw is None else split_raw[1],
                latency_ms=None if timed is None else timed[0] * 1e3,
                timed_runs=None if timed is None else timed[1],
                latency_iqr_ms=None if timed is None else timed[2] * 1e3,
                cumulative_receptive_field=cumulative[index],
            )
        )
        memories.append(summary_memory(in_elements, [out_elements], count, width))
    total_memory = summary_memory(
        math.prod(input_spec.shape),
        [r.output_elements or 0 for r in results],
        total_params,
        width,
    )
    where = "the real CPU run" if device == "cpu" else "the run on torch's meta device"
    sources = {
        "output_shape": where,
        "params": "the real modules' parameters",
        "macs": macs_source,
        "flops": f"torch.utils.flop_counter's formulas on {where}",
        "receptive_field": (
            "autograd on a one-channel stand-in of the layers with the same geometry and "
            "positive weights (extent of the input gradient of one output; max pooling probed "
            "as averaging, which reaches every input of its window)"
        ),
        "memory": (
            f"numel of the tensors of {where} × torch's element size for {input_spec.dtype}"
        ),
    }
    if extras.train:
        sources["backward_flops"] = (
            "torch.utils.flop_counter's formulas on a real backward pass (input and weight "
            "gradients); grouped layers split into dense convolutions, where torch counts right"
        )
    last_spatial = [r for r in cumulative if r is not None]
    return ChainMeasurement(
        device=device,
        layers=tuple(results),
        receptive_field=last_spatial[-1] if last_spatial else None,
        memory=tuple(memories),
        total_memory=total_memory,
        sources=sources,
        timing=timing,
        saved=None if once is None else once.saved,
        peak=None if once is None else once.peak,
        modules=graph if device == "cpu" and not extras.train else None,
    )


def dispatch_source(counted: FvcoreCount) -> str:
    """The MACs source where fvcore's handles counted the dispatched shapes
    (fvcore_adapter.dispatch_count): which handle counted which op, exactly."""
    ran = "; ".join(f"{op}: {handle}" for op, handle in sorted(counted.handles.items()))
    text = (
        "fvcore's own handles (fvcore.nn.jit_handles) on the shapes the real CPU run "
        "dispatched, each op named as fvcore's torch.jit trace records it"
        + (f" ({ran})" if ran else "")
        + "; what it ignores or has no handler for from fvcore's own tables (not traced)"
    )
    if counted.extended:
        text += (
            "; fvcore has no handler for aten::_convolution_mode (torch's op for "
            "padding='same'/'valid'): convcalc's handle applies fvcore's conv_flop_count"
        )
    return text


def _per_node(
    counted: FvcoreCount, graph: GraphModule
) -> tuple[dict[int, int | None], dict[int, dict[str, int]], dict[int, dict[str, int]]]:
    """MACs, fvcore's other counts and its unsupported ops, per node of ``graph``."""
    names = graph_modules(graph)
    macs: dict[int, int | None] = {i: counted.macs(name) for i, name in enumerate(names)}
    others = {i: counted.others(name) for i, name in enumerate(names)}
    unsupported = {i: counted.unsupported.get(name, {}) for i, name in enumerate(names)}
    return macs, others, unsupported


def _rule_macs(record: RunRecord, count: int) -> dict[int, int | None]:
    return {
        index: fvcore_rule(
            record.counter.convs.get(index, []), record.counter.matmuls.get(index, [])
        )
        for index in range(count)
    }


def _one_pass(
    graph: GraphModule,
    x: torch.Tensor,
    specs: Sequence[LayerSpec],
    input_spec: InputSpec,
    device: str,
    extras: Extras,
) -> OnePass | None:
    """The counted pass measuring saved-for-backward and the inference peak too (real CPU runs
    in float32, the dtype the layers run in here, with ``extras.memory``); what one pass cannot
    serve (onepass.one_pass_serves) is dropped, for the caller to measure apart. None: the
    plain counted pass."""
    if not extras.memory or device != "cpu" or input_spec.dtype != "float32":
        return None
    serves_saved, serves_peak = one_pass_serves(specs)
    if not serves_saved and not serves_peak:
        return None
    once = run_once(graph, x, twins=training_twins(specs) if serves_saved else ())
    return OnePass(
        once.record, once.saved if serves_saved else None, once.peak if serves_peak else None
    )
