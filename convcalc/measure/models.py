"""Users' own models: loading ``MODULE:ATTR``, and measuring them with hooks on every layer
convcalc has a formula for."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from convcalc.core.measured import LayerMeasurement
from convcalc.core.spec import Ints
from convcalc.errors import SpecError
from convcalc.kinds import LayerSpec, from_module, kind_of
from convcalc.measure.build import KIT, first_line, user_code
from convcalc.measure.counting import DispatchCounter
from convcalc.measure.fvcore_adapter import FvcoreCount, fvcore_count
from convcalc.measure.probes import model_receptive_field, probe_receptive_field

# --- users' own models ----------------------------------------------------------------------------


def spec_of(name: str, module: nn.Module) -> LayerSpec | None:
    """The spec of a module some layer kind knows (None for anything else)."""
    return from_module(name, module, KIT)


@dataclass(frozen=True)
class ModelLayer:
    name: str
    spec: LayerSpec
    input_shape: Ints
    measurement: LayerMeasurement
    #: the input shape of every call, in order (a module can run more than once)
    calls: tuple[Ints, ...] = ()


@dataclass(frozen=True)
class ModelMeasurement:
    layers: tuple[ModelLayer, ...]
    params: int
    output_shape: Ints
    #: autograd on the real model: extent of the input gradient of one output element
    receptive_field: Ints | None
    receptive_field_of: str
    #: modules with parameters that no formula covers: name -> parameter count
    uncovered: dict[str, int]
    sources: dict[str, str]


def measure_model(model: nn.Module, input_shape: Ints, dtype: str = "float32") -> ModelMeasurement:
    """Run a user's model for real with hooks on every conv, pool, linear and batch-norm module:
    per layer its input and output shapes, torch's FLOPs and fvcore's MACs; the model's own
    parameter count; and the receptive field of its output by autograd."""
    named = [(name, module, spec_of(name, module)) for name, module in model.named_modules()]
    hooked = [(name, module, spec) for name, module, spec in named if spec is not None]
    counter = DispatchCounter()
    shapes_in: dict[int, list[Ints]] = {}
    shapes_out: dict[int, Ints] = {}
    handles = []
    for index, (_, module, _) in enumerate(hooked):

        def before(_module: nn.Module, args: Any, index: int = index) -> None:
            counter.current = index
            shapes_in.setdefault(index, []).append(tuple(args[0].shape))

        def after(_module: nn.Module, args: Any, out: Any, index: int = index) -> None:
            shapes_out[index] = tuple(out.shape) if hasattr(out, "shape") else ()
            counter.current = None

        handles.append(module.register_forward_pre_hook(before))
        handles.append(module.register_forward_hook(after))
    x = torch.zeros(input_shape)
    shown = "x".join(map(str, input_shape))
    try:
        with torch.no_grad(), counter, user_code():
            output = model(x)
    except SystemExit as leaving:
        raise SpecError("model", f"the model called sys.exit({leaving.code!r})") from None
    except Exception as error:
        raise SpecError(
            "input",
            f"the model failed on input {shown}: {type(error).__name__}: {first_line(error)}",
        ) from None
    finally:
        for handle in handles:
            handle.remove()
    if not isinstance(output, torch.Tensor):
        raise SpecError("model", f"the model returned {type(output).__name__}, not a tensor")
    with user_code():
        try:
            fv: FvcoreCount | None = fvcore_count(model, x)
        except Exception:  # fvcore could not trace this model: its MACs are then not measured
            fv = None
    layers = []
    for index, (name, module, spec) in enumerate(hooked):
        if index not in shapes_in:
            continue  # not called in this forward pass
        calls = shapes_in[index]
        spec = kind_of(spec).with_input(spec, calls[0])
        macs = fv.macs(name) if fv is not None else None
        layers.append(
            ModelLayer(
                name,
                spec,
                calls[0],
                LayerMeasurement(
                    output_shape=shapes_out[index],
                    params=sum(p.numel() for p in module.parameters(recurse=False)),
                    flops=counter.flops.get(index, 0),
                    macs=macs,
                    receptive_field=probe_receptive_field(spec, calls[0][2:]),
                    output_elements=math.prod(shapes_out[index]),
                ),
                tuple(calls),
            )
        )
    covered = {name for name, _, _ in hooked}
    uncovered = {
        name: sum(p.numel() for p in module.parameters(recurse=False))
        for name, module in model.named_modules()
        if name not in covered and any(True for _ in module.parameters(recurse=False))
    }
    field, of = model_receptive_field(model, input_shape)
    return ModelMeasurement(
        layers=tuple(layers),
        params=sum(p.numel() for p in model.parameters()),
        output_shape=tuple(output.shape),
        receptive_field=field,
        receptive_field_of=of,
        uncovered=uncovered,
        sources={
            "output_shape": "the real CPU run, hooks on each layer",
            "params": "the model's own parameters (each layer's: its module's)",
            "macs": "fvcore FlopCountAnalysis of the whole model, per module",
            "flops": "torch.utils.flop_counter's formulas on the real CPU run, per module",
            "receptive_field": (
                "each layer's: a one-channel probe of its geometry; the model's: autograd on the "
                "real model (real weights), extent of the input gradient of one output element"
            ),
        },
    )
