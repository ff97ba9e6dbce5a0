"""A user's model (a torch module, a factory, a file): counted at the dispatch level and
reported module by module."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from convcalc import kinds
from convcalc.core.memo import held
from convcalc.core.memory import Memory, summary_memory
from convcalc.core.modelinput import FILL_NOTE, ModelInput, inputs_text
from convcalc.core.report import NO_RULE, LayerReport, Pair, Report, Total
from convcalc.core.spec import DTYPE_BYTES, InputSpec, Ints
from convcalc.engine.memory import with_model_memory
from convcalc.engine.plan import Options
from convcalc.engine.roofline import resolve_peaks, with_model_roofline
from convcalc.errors import SpecError
from convcalc.kinds import ConvSpec

if TYPE_CHECKING:
    from convcalc.core.formulas import Derived


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


def _check_inputs_fit(inputs: Sequence[ModelInput], dtype: str) -> None:
    """Inputs whose tensors alone exceed this machine's memory do not fit a real run: said
    before torch tries to allocate them (its allocator's error reached the user as an internal
    error, exit 3), with the way that does count them."""
    from convcalc.core.formulas import human_bytes
    from convcalc.engine.plan import physical_memory_bytes

    need = sum(entry.nbytes(dtype) for entry in inputs)
    memory = physical_memory_bytes()
    if memory is not None and need > memory:
        raise SpecError(
            "input",
            f"--input {inputs_text(inputs, dtype)}: its tensors alone need {human_bytes(need)}, "
            f"more than this machine's {human_bytes(memory)} of memory: --measure-on meta counts "
            "the model on torch's meta device",
        )


@held()
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
    inputs: tuple[ModelInput, ...] | None = None,
) -> Report:
    """A user's own network: a target string (``pkg.mod:Attr`` with ``kwargs`` like
    ``"num_classes=10"``, ``file.py:Attr``, ``timm:NAME``, a TorchScript or ONNX file) or an
    ``nn.Module``. One forward pass on ``device`` ("cpu"; "meta": shapes only) is counted at
    torch's dispatch level (every operator counted by a rule or named as not counted, each
    counted one attributed to the innermost module running it), and every module that did
    counted work or that a layer kind knows is set beside its closed form on the input it
    really received. ``receptive_field=False`` skips the autograd probe of the whole model.
    ``inputs``: the forward's arguments, checked (core.modelinput.model_inputs: several,
    integer or keyword ones); ``input_shape`` is then the first one's."""
    if inputs is not None:
        input_shape = inputs[0].shape
    if len(input_shape) < 2:
        raise SpecError("input", "--input needs at least N,C (like 1,3,224,224)")
    if device not in ("cpu", "meta"):
        raise SpecError("device", f"device must be cpu or meta, not {device!r}")
    resolve_peaks(options or Options(), dtype)  # bad peaks or device: before the model runs
    if device == "cpu":
        _check_inputs_fit(inputs or (ModelInput(tuple(input_shape)),), dtype)
    from convcalc.measure.model_run import run_model

    run = run_model(
        target,
        tuple(input_shape),
        kwargs=kwargs,
        device=device,
        receptive_field=receptive_field,
        memory=dtype if device != "meta" else None,
        inputs=inputs,
    )
    options = options or Options()
    if device == "meta" and options.time:
        raise SpecError("time", "--time runs the model: it does not go with --measure-on meta")
    report = model_report(run, tuple(input_shape), dtype)
    report = _with_inputs(report, inputs or (ModelInput(tuple(input_shape)),), dtype)
    if device == "meta":
        report = _meta_keys(report)
    if device != "meta":
        report = with_model_memory(
            report, run.model, tuple(input_shape), dtype, options, once=run.memory, inputs=inputs
        )
    return with_model_roofline(report, run.model, options)


def _with_inputs(report: Report, inputs: tuple[ModelInput, ...], dtype: str) -> Report:
    """JSON's ``inputs`` (every argument of forward, in order: name, shape, dtype) and, for a
    forward of several inputs or of integer ones, torchsummary's input bytes (both sides) as
    the sum of every input's own bytes; the note on integer inputs' zeros."""
    extra = {**report.extra, "inputs": [item.to_dict(dtype) for item in inputs]}
    plain = len(inputs) == 1 and inputs[0].dtype_or(dtype) == dtype
    if plain:
        return replace(report, extra=extra)
    total = report.total
    input_bytes = sum(item.nbytes(dtype) for item in inputs)

    def counted(memory: Memory | None) -> Memory | None:
        if memory is None:
            return None
        return replace(memory, input=input_bytes, total=memory.total - memory.input + input_bytes)

    total = replace(
        total,
        memory=Pair(counted(total.memory.measured), counted(total.memory.formula)),  # type: ignore[arg-type]
    )
    notes = list(report.notes)
    if len(inputs) > 1:
        notes.append(
            f"the model's forward takes {len(inputs)} inputs ("
            + inputs_text(inputs, dtype)
            + "): input_shape is the first one's; every input: inputs in JSON; the memory's "
            "input bytes are every input's, each in its own dtype"
        )
    if any(not item.floating for item in inputs):
        notes.append(FILL_NOTE)
    return replace(report, total=total, extra=extra, notes=tuple(notes))


#: the JSON keys a CPU run of a model has and a meta run does not make (the memory figures
#: of the counted forward, the field's layer): null on meta, for keys never disappear by mode
META_NULL_KEYS = tuple(
    [
        f"layers[].{side}.{key}"
        for side in ("memory_bytes", "memory_bytes_formula")
        for key in ("saved_for_backward", "peak_inference")
    ]
    + [
        f"total.{side}memory_bytes.{key}"
        for side in ("", "formula.")
        for key in ("saved_for_backward", "peak_inference", "training_step")
    ]
    + ["total.optimizer", "total.receptive_field_of", "saved_for_backward_outside_rows"]
)

#: the memory sources a CPU run names, on meta
META_MEMORY_SOURCE = "not measured: --measure-on meta runs no arithmetic (--measure-on cpu does)"


def _meta_keys(report: Report) -> Report:
    """A meta run's report with the keys a CPU run's JSON has: null where not measured, and
    the memory figures' sources saying why."""
    sources = dict(report.sources)
    for key in ("saved_for_backward", "peak_inference", "training_step"):
        sources.setdefault(f"memory_{key}", META_MEMORY_SOURCE)
    return replace(report, sources=sources, null_keys=META_NULL_KEYS)


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
    call_outs = _call_outputs(module, run)
    out_elements = (
        sum(math.prod(shape) for shape in call_outs)
        if call_outs is not None
        else module.calls * math.prod(out_shape)
        if out_shape is not None
        else 0
    )
    op_calls: dict[str, int] = {}
    for op in module.ops:  # one entry per operator and weight: an LSTM's layers, a GRU's gates
        op_calls[op.op] = op_calls.get(op.op, 0) + op.calls
    name = module.name or "(model)"
    if module.calls > 1:
        name = f"{name} (×{module.calls})"
    first = calls[0] if calls else ()
    positional = _positional_input_shapes(module)
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
        # the first call's on both sides (every call's: call_output_shapes)
        out_formula = fig0.output_shape.value
        measured_field = (
            layer_receptive_field(spec0, shape0)
            if len(shape0) > 2 and not isinstance(spec0, kinds.LinearSpec)
            else fig0.receptive_field.value
            if isinstance(spec0, kinds.LinearSpec)
            else ()
        )
        params = module.params
        measured_memory = summary_memory(
            math.prod(shape0), [math.prod(out_shape or ())], params, width
        )
        formula_memory = fig0.memory.value
        call_fields: dict[str, Any] = {}
        if module.calls > 1:
            formula_outs = tuple(f.output_shape.value for _, _, f in per_call)
            call_fields = {
                "call_input_shapes": tuple(calls),
                "call_output_shapes": Pair(call_outs, formula_outs),
            }
            # torchsummary's hook makes an entry for every call: fwd+bwd counts each call's
            # output twice (the row's output is still the first call's)
            # (both sides over the same calls: each call's only where each call was measured)
            if call_outs is not None:
                formula_memory = _every_call(formula_memory, formula_outs, width)
                measured_memory = _every_call(measured_memory, call_outs, width)
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
                measured_memory,
                formula_memory,
            ),
            formula_text=texts,
            notes=module.notes,
            positional_input_shapes=positional,
            **call_fields,
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
    elif module.recurrent is not None:
        from convcalc.core.opformulas import recurrent_params

        hyper = _recurrent_hyper_items(module.recurrent)
        params_pair = Pair(module.params, recurrent_params(module.recurrent).value)
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
    recurrent_outs = _recurrent_outputs(module)
    if module.recurrent is not None:
        from convcalc.core.opformulas import recurrent_params

        texts["params"] = recurrent_params(module.recurrent).shown
        if recurrent_outs is not None:
            texts["output_shape"] = recurrent_outs[0].shown
    notes = list(module.notes)
    bias_adds = _attention_bias_adds(module)
    if bias_adds is not None:
        texts["bias_adds"] = bias_adds.shown
        if module.bias_adds != bias_adds.value:
            notes.append(
                f"bias additions: its dispatched operators did {module.bias_adds:,}, the "
                f"closed form says {bias_adds.value:,} (the row shows the closed form's)"
            )
    if formula is None:
        notes.append(
            "no closed form for this module's work ("
            + ", ".join(f"{op} ×{n}" for op, n in op_calls.items())
            + "): measured only"
        )
    unknown_memory = summary_memory(
        math.prod(first), [math.prod(out_shape or ())], params_pair.measured or 0, width
    )
    unknown_calls: dict[str, Any] = {}
    # a recurrent module's output shapes and torchsummary's memory by formula (its first output
    # tensor, as on the measured side)
    recurrent_shapes = None if recurrent_outs is None else tuple(d.value[0] for d in recurrent_outs)
    recurrent_memory: Memory | None = (
        None
        if recurrent_shapes is None or params_pair.formula is None
        else summary_memory(
            math.prod(first), [math.prod(recurrent_shapes[0])], params_pair.formula, width
        )
    )
    if module.calls > 1:
        unknown_calls["call_input_shapes"] = tuple(calls)
        if call_outs is not None:
            unknown_memory = _every_call(unknown_memory, call_outs, width)
            unknown_calls["call_output_shapes"] = Pair(call_outs, None)
            if recurrent_shapes is not None and recurrent_memory is not None:
                recurrent_memory = _every_call(recurrent_memory, recurrent_shapes, width)
                unknown_calls["call_output_shapes"] = Pair(call_outs, recurrent_shapes)
    report = LayerReport(
        name=name,
        spec=ModuleSpec(module.type, module.name, hyper),
        input_shape=first,
        output_shape=Pair(
            out_shape,
            None if recurrent_shapes is None else recurrent_shapes[0],  # type: ignore[arg-type]
        ),
        params=params_pair,
        macs=Pair(module.macs, None if formula is None else formula.value),  # type: ignore[arg-type]
        flops=Pair(module.flops, None if formula is None else 2 * formula.value),  # type: ignore[arg-type]
        bias_adds=0 if bias_adds is None else bias_adds.value,
        receptive_field=Pair(None, ()),
        memory=Pair(
            unknown_memory,
            recurrent_memory,  # type: ignore[arg-type]
        ),
        formula_text=texts,
        notes=tuple(notes),
        positional_input_shapes=positional,
        **unknown_calls,
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
        attention_calls=_attention_calls(module),
    )
    return report, figures


def _attention_bias_adds(module: Any) -> Any:
    """An nn.MultiheadAttention's bias additions by closed form (opformulas.mha_bias_adds),
    every call, from each call's query and key shapes; None for other modules or a call
    without query and key."""
    from convcalc.core.formulas import Derived
    from convcalc.core.opformulas import mha_bias_adds, mha_sizes

    hyper = module.attention
    if hyper is None or not module.call_inputs:
        return None
    parts = []
    for inputs in module.call_inputs:
        if len(inputs) < 2:
            return None
        batch, length, source = mha_sizes(inputs[0], inputs[1], hyper.batch_first)
        parts.append(mha_bias_adds(batch, length, source, hyper.embed_dim, hyper.bias))
    if len(parts) == 1:
        return parts[0]
    value = sum(p.value for p in parts)
    return Derived(value, f"{len(parts)} calls: {value:,}")


def _positional_input_shapes(module: Any) -> tuple[tuple[int, ...], ...]:
    """The shapes of a module's first call's positional inputs where each positional argument
    was one tensor (their count is the call's arity); empty where some argument was not a lone
    tensor (a tuple of tensors, a number), whose layout the shapes alone do not give back."""
    if not module.call_inputs or not module.call_arities:
        return ()
    shapes = tuple(tuple(s) for s in module.call_inputs[0])
    return shapes if len(shapes) == module.call_arities[0] else ()


def _recurrent_hyper_items(hyper: Any) -> tuple[tuple[str, Any], ...]:
    """What a recurrent module's row states (its spec in JSON, its name in the table), as
    torch's repr does: input_size and hidden_size, and each other hyper-parameter its closed
    forms read where it is not torch's default (num_layers 1, bidirectional False, proj_size 0,
    bias True, batch_first False)."""
    items: list[tuple[str, Any]] = [
        ("input_size", hyper.input_size),
        ("hidden_size", hyper.hidden_size),
    ]
    others = (
        ("num_layers", hyper.num_layers, 1),
        ("bidirectional", hyper.bidirectional, False),
        ("proj_size", hyper.proj_size, 0),
        ("bias", hyper.bias, True),
        ("batch_first", hyper.batch_first, False),
    )
    items += [(key, value) for key, value, default in others if value != default]
    return tuple(items)


def _recurrent_outputs(module: Any) -> list[Any] | None:
    """Each call's output shapes by formula (:func:`convcalc.core.opformulas.recurrent_outputs`)
    of a recurrent module; None for other modules, or where a call had no tensor input."""
    from convcalc.core.opformulas import recurrent_outputs
    from convcalc.measure.opcount import recurrent_packed

    hyper = module.recurrent
    if hyper is None or not module.call_inputs or not all(module.call_inputs):
        return None
    try:
        return [
            recurrent_outputs(hyper, inputs[0], not hyper.cell and recurrent_packed(inputs))
            for inputs in module.call_inputs
        ]
    except SpecError:
        return None  # a subclass whose forward reshapes its input: no closed form


def _call_outputs(module: Any, run: Any) -> tuple[tuple[int, ...], ...] | None:
    """Each call's measured output shape (first tensor) of a module called more than once
    (ModelRun.call_outputs); None for one call, or where the run did not record every call."""
    if module.calls < 2:
        return None
    shapes = getattr(run, "call_outputs", {}).get(module.name)
    if shapes is None or len(shapes) != module.calls:
        return None
    return tuple(tuple(shape) for shape in shapes)


def _row_output_elements(layer: LayerReport, side: str) -> list[int]:
    """The output elements torchsummary counts for one row on one side: every call's (a
    module called N times: N entries) where each call was measured, else its first output's
    (both sides over the same calls)."""
    calls = layer.call_output_shapes
    shapes = getattr(calls, side, None)
    if calls is not None and calls.measured is not None and shapes is not None:
        return [math.prod(shape) for shape in shapes]
    return [math.prod(getattr(layer.output_shape, side) or ())]


def _every_call(memory: Memory, outputs: Sequence[Ints], width: int) -> Memory:
    """``memory`` (one call's, torchsummary's convention) with fwd+bwd over every call's
    output: torchsummary registers a forward hook per module, and the hook adds an entry to
    its summary on every call (sksq96/pytorch-summary, ``module_idx = len(summary)``), each
    entry's output counted twice in "Forward/backward pass size"."""
    forward_backward = 2 * sum(math.prod(shape) for shape in outputs) * width
    return replace(
        memory,
        forward_backward=forward_backward,
        total=memory.input + memory.params + forward_backward,
    )


def _bias_size(spec: Any) -> int:
    if isinstance(spec, ConvSpec) and spec.bias:
        return spec.out_channels
    if isinstance(spec, kinds.LinearSpec) and spec.bias:
        return spec.out_features
    return 0


def _attention_calls(module: Any) -> tuple[dict[str, int], ...]:
    """What ptflops' nn.MultiheadAttention hook reads of each call (core.conventions): the
    positional query, key and value, batched (3-D); none where a call had other positional
    arguments than those three or another rank (ptflops' hook unpacks exactly three and indexes
    three axes: it fails there)."""
    hyper = module.attention
    if hyper is None:
        return ()
    calls = []
    for number, inputs in enumerate(module.call_inputs):
        arity = module.call_arities[number] if number < len(module.call_arities) else 3
        if arity != 3 or len(inputs) != 3 or any(len(shape) != 3 for shape in inputs):
            return ()
        q, k, v = inputs
        batch, at = (q[0], 1) if hyper.batch_first else (q[1], 0)
        calls.append(
            {
                "batch": batch,
                "qlen": q[at],
                "klen": k[at],
                "vlen": v[at],
                "qdim": q[2],
                "kdim": k[2],
                "vdim": v[2],
                "heads": hyper.num_heads,
                "in_proj_bias": int(hyper.bias),
            }
        )
    return tuple(calls)


def _leaves_without_rows(modules: tuple[Any, ...], rowed: set[str]) -> list[str]:
    """The modules that ran and returned a tensor, have no module inside them, and have no row
    (activations, dropout, flatten, ...): torchsummary's hooks count their outputs. Linear in
    the modules (each name's ancestors are collected once)."""
    parents = {
        ".".join(parts[:end])
        for parts in (m.name.split(".") for m in modules if m.name)
        for end in range(1, len(parts))
    }
    return [
        m.name
        for m in modules
        if m.name and m.name not in rowed and m.name not in parents and m.output_shapes
    ]


def _no_rule_note(no_rule: dict[str, int]) -> list[str]:
    """The operators no rule counts that convcalc does not know to be elementwise: apart from
    the arithmetic, for they may carry compute (each is also a count warning: ``--strict``)."""
    if not no_rule:
        return []
    ops = sorted(no_rule.items(), key=lambda kv: -kv[1])
    shown = ", ".join(f"{op} ×{n}" for op, n in ops[:8])
    more = f" and {len(ops) - 8} more" if len(ops) > 8 else ""
    return [
        f"not counted, and convcalc has no rule for it: {shown}{more} (it may do multiply-adds "
        "that no total here holds; --strict fails on it); uncounted_ops.no_rule"
    ]


def _outputs_note(names: tuple[str, ...], shapes: tuple[tuple[int, ...], ...]) -> str:
    """A model returning several tensors (a dict, a tuple, a list, nested): the total row has
    room for one output shape, the first; this names every one (up to 8, then how many
    more)."""
    from convcalc.core.formulas import shape_text

    shown = ", ".join(
        f"{name}: {shape_text(shape) if shape else 'scalar'}"
        for name, shape in list(zip(names, shapes))[:8]
    )
    more = f" and {len(shapes) - 8} more" if len(shapes) > 8 else ""
    return (
        f"the model returns {len(shapes)} outputs ({shown}{more}); the total row shows the "
        f"first one's shape; every output: outputs in JSON"
    )


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
                every = _call_outputs(module, run)
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
                        sum(math.prod(shape) for shape in every)
                        if every is not None
                        else module.calls * math.prod(out)
                        if out
                        else 0,
                        # torchinfo multiplies a norm's parameters by output.shape[0] too
                        batch=int(out[0]) if out else 0,
                    )
                )
            continue
        layers.append(found[0])
        modules.append(found[1])
    notes: list[str] = list(run.notes)
    unrowed = _leaves_without_rows(count.modules, {layer.name.split(" (×")[0] for layer in layers})
    if unrowed:
        shown = ", ".join(unrowed[:5]) + (
            f" and {len(unrowed) - 5} more" if len(unrowed) > 5 else ""
        )
        notes.append(
            "memory out and fwd+bwd (torchsummary) add up the modules with a row; torchsummary "
            f"also counts the outputs of modules convcalc has no row for: {shown}"
        )
    if any("(×" in layer.name for layer in layers):
        notes.append(
            "a layer marked ×N runs N times in one forward pass: its MACs and FLOPs, measured "
            "and by formula, add up every call; its output shape is the first call's on both "
            "sides (every call's: call_output_shapes in JSON); fwd+bwd (torchsummary) counts "
            "every call's output, as torchsummary's per-call hook does; roofline bytes: every "
            "call's input and output, its weights once"
        )
    # parameters no formula covers: modules with parameters and no row, outside any attention
    # block's row (whose formula counts its out_proj)
    covered = {layer.spec.name for layer in layers if layer.params.formula is not None}
    blocks = [
        layer.spec.name
        for layer in layers
        if getattr(layer.spec, "op", "") == "module" and layer.params.formula is not None
    ]
    outside = {
        name: n
        for name, n in run.own_params.items()
        if name not in covered and not any(name.startswith(f"{b}.") or not b for b in blocks)
    }
    # embeddings, norms and PReLU outside the rows: their parameters by closed form
    from convcalc.core.opformulas import module_params

    hypers = getattr(run, "param_hypers", {})
    by_formula = {name: module_params(hypers[name]) for name in outside if name in hypers}
    uncovered = {name: n for name, n in outside.items() if name not in by_formula}
    formula_params = sum(x.params.formula for x in layers if x.params.formula is not None)
    rows_params = formula_params
    formula_params += sum(d.value for d in by_formula.values())
    tied, untied = _tied_params(getattr(run, "shared_params", ()), layers, hypers, outside)
    formula_params -= sum(d.value for _, _, d in tied)
    if untied:
        notes.append(
            "parameters held by two modules whose tied parameter convcalc has no closed form "
            f"for: {', '.join(untied)}; the total has no parameter formula"
        )
    extra: dict[str, Any] = {
        "params_outside_rows": _params_outside_rows(
            run, by_formula, tied, rows_params, formula_params, not (uncovered or untied)
        )
    }
    if (by_formula or tied) and not uncovered and not untied:
        notes.append(_params_total_note(run, by_formula, tied, rows_params, formula_params))
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
    notes.extend(_no_rule_note(count.no_rule))
    notes.extend(count.notes)
    if len(count.output_shapes) > 1:
        notes.append(_outputs_note(count.output_names, count.output_shapes))
    whole = not no_form and not stray
    width = DTYPE_BYTES[dtype]
    outputs = {name: shape for name, shape in zip(count.output_names, count.output_shapes)}
    first_out = count.output_shapes[0]
    total = Total(
        params=Pair(count.params, None if uncovered or untied else formula_params),  # type: ignore[arg-type]
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
                [n for x in layers for n in _row_output_elements(x, "measured")] or [0],
                count.params,
                width,
            ),
            # no formula where some parameters have none (the params total is null too)
            None  # type: ignore[arg-type]
            if uncovered or untied or any(x.output_shape.formula is None for x in layers)
            else summary_memory(
                math.prod(input_shape),
                [n for x in layers for n in _row_output_elements(x, "formula")] or [0],
                formula_params,
                width,
            ),
        ),
        receptive_field_of=run.receptive_field_of,
    )
    if not layers:
        notes.append("no module did counted work or is a kind convcalc knows")
    figures = ModelFigures(
        uncounted_ops={
            "zero_cost": dict(count.zero_cost),
            "arithmetic": arithmetic,
            "no_rule": dict(count.no_rule),
        },
        output_structure=count.output_structure,
        outputs=outputs,
        count_warnings=count.warnings,
        modules=tuple(modules),
        seconds=dict(run.seconds),
        receptive_field_at_least=run.receptive_field_at_least,
    )
    report = Report(
        warnings=tuple(w for w in count.warnings if NO_RULE in w),
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
        extra=extra,
    )
    return report


def _tied_params(
    shared: Any, layers: list[LayerReport], hypers: dict[str, Any], outside: dict[str, int]
) -> tuple[list[tuple[str, str, Derived[int]]], list[str]]:
    """A parameter two modules hold (tied embedding and output weights): the model's measured
    total counts it once, each holder's formula once more. Per holding after the first whose
    holder the formula side counts (a row, or a module outside the rows with a formula): the
    parameter's closed form from that holder's hyper-parameters, subtracted once; where convcalc
    has none (a conv's weight, a parameter inside an attention block's row), the holding is
    named as uncovered instead (the total then has no formula)."""
    from convcalc.core.opformulas import linear_param, module_param

    rows = {layer.spec.name: layer for layer in layers}
    tied: list[tuple[str, str, Derived[int]]] = []
    untied: list[str] = []
    for holder, which, first in shared:
        where = f"{holder}.{which}" if holder else which
        found: Derived[int] | None = None
        row = rows.get(holder)
        if row is not None and isinstance(row.spec, kinds.LinearSpec):
            found = linear_param(row.spec.in_features, row.spec.out_features, which)
        elif holder in hypers and holder in outside:
            found = module_param(hypers[holder], which)
        if found is None:
            untied.append(f"{where} (the same as {first})")
        else:
            tied.append((where, first, found))
    return tied, untied


def _params_outside_rows(
    run: Any,
    by_formula: dict[str, Derived[int]],
    tied: list[tuple[str, str, Derived[int]]],
    rows_params: int,
    total: int,
    complete: bool,
) -> dict[str, Any]:
    """JSON's ``params_outside_rows``: the modules with parameters and no row whose parameters
    have a closed form (embeddings, norms, PReLU), each measured (its own parameters) beside
    its formula, and the tied parameters the formula side counts once."""
    hypers = run.param_hypers
    return {
        "rows_formula": rows_params,
        "by_module": [
            {
                "name": name,
                "type": hypers[name].kind,
                "measured": run.own_params.get(name, 0),
                "formula": derived.value,
                "formula_text": derived.shown,
            }
            for name, derived in by_formula.items()
        ],
        "tied": [
            {"parameter": where, "same_as": first, "formula": d.value, "formula_text": d.shown}
            for where, first, d in tied
        ],
        # null where some parameters have no closed form (named in the notes)
        "total_formula": total if complete else None,
    }


def _params_total_note(
    run: Any,
    by_formula: dict[str, Derived[int]],
    tied: list[tuple[str, str, Derived[int]]],
    rows_params: int,
    total: int,
) -> str:
    """The total parameter formula as text: the rows' formulas, then each group of modules
    outside the rows (embeddings, norms, PReLU), then the tied parameters counted once."""
    from convcalc.core.formulas import MUL
    from convcalc.core.opformulas import PARAM_KINDS

    groups: dict[str, list[tuple[str, Derived[int]]]] = {}
    for name, derived in by_formula.items():
        groups.setdefault(PARAM_KINDS[run.param_hypers[name].kind], []).append((name, derived))
    parts = [f"the rows' {rows_params:,}"]
    for label, members in groups.items():
        texts: dict[str, list[str]] = {}
        for name, derived in members:
            texts.setdefault(derived.shown.rsplit(" = ", 1)[0], []).append(name)
        value = sum(d.value for _, d in members)
        shown = " + ".join(
            f"{len(names)}{MUL}{text}" if len(names) > 1 else f"{names[0]} {text}"
            for text, names in texts.items()
        )
        parts.append(f"{label} {shown} = {value:,}")
    text = " + ".join(parts)
    for where, first, derived in tied:
        text += f" − {where} {derived.shown} (the same parameter as {first}: counted once)"
    return f"params: the total's formula is {text} = {total:,}"
