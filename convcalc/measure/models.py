"""Users' own models: loading ``MODULE:ATTR``, and measuring them with hooks on every layer
convcalc has a formula for."""

from __future__ import annotations

import math
import sys
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


def load_model(target: str) -> nn.Module:
    """``package.module:attr`` or ``path/to/file.py:attr``: an nn.Module, or a class or factory
    called with no arguments. Import errors become :class:`SpecError` (bad input)."""
    if ":" not in target:
        raise SpecError("model", f"{target!r} must be MODULE:ATTR, like mypkg.nets:ResNet")
    module_name, _, attr = target.rpartition(":")
    try:
        with user_code():
            module = _import(module_name)
    except SpecError:
        raise
    except SystemExit as leaving:
        raise SpecError(
            "model", f"importing {module_name} called sys.exit({leaving.code!r})"
        ) from None
    except Exception as error:  # whatever the user's module raises while importing
        raise SpecError(
            "model", f"cannot import {module_name}: {type(error).__name__}: {first_line(error)}"
        ) from None
    return _instantiate(module, module_name, attr, target)


def _import(module_name: str) -> Any:
    import importlib
    import importlib.util
    from pathlib import Path

    if True:
        if module_name.endswith(".py"):
            path = Path(module_name)
            spec = importlib.util.spec_from_file_location(path.stem, path)
            if spec is None or spec.loader is None or not path.exists():
                raise SpecError("model", f"cannot import {module_name}: no such file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = module
            spec.loader.exec_module(module)
        else:
            if "" not in sys.path and "." not in sys.path:
                sys.path.insert(0, "")
            module = importlib.import_module(module_name)
    return module


def _instantiate(module: Any, module_name: str, attr: str, target: str) -> nn.Module:
    try:
        found = module
        for part in attr.split("."):
            found = getattr(found, part)
    except AttributeError:
        raise SpecError("model", f"{module_name} has no attribute {attr!r}") from None
    if isinstance(found, nn.Module):
        return found.eval()
    if not callable(found):
        raise SpecError("model", f"{target} is neither an nn.Module nor a class or factory")
    try:
        with user_code():
            built = found()
    except SystemExit as leaving:
        raise SpecError("model", f"{target}() called sys.exit({leaving.code!r})") from None
    except Exception as error:
        raise SpecError(
            "model", f"{target}() failed: {type(error).__name__}: {first_line(error)}"
        ) from None
    if not isinstance(built, nn.Module):
        raise SpecError("model", f"{target}() returned {type(built).__name__}, not an nn.Module")
    return built.eval()


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
