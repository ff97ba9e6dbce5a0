"""Models from a target string: ``pkg.mod:Attr``, ``path/file.py:Attr``, ``timm:NAME``, a
TorchScript file (``.pt``, ``.pth``, ``.ts``), an ONNX file (``.onnx``). Weights are never
downloaded: factories that take ``weights`` get ``weights=None``, ``pretrained`` gets ``False``,
and a note says so. Every failure is one :class:`SpecError` line (bad input: exit 2).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import sys
import types
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convcalc.errors import SpecError
from convcalc.measure.build import first_line, user_code, user_error

TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".jit")


def _value(text: str) -> Any:
    lowered = text.strip()
    if lowered in ("None", "none", "null"):
        return None
    if lowered in ("True", "true"):
        return True
    if lowered in ("False", "false"):
        return False
    for kind in (int, float):
        try:
            return kind(lowered)
        except ValueError:
            pass
    if len(lowered) >= 2 and lowered[0] == lowered[-1] and lowered[0] in "'\"":
        return lowered[1:-1]
    return lowered


def parse_kwargs(text: str | None) -> dict[str, Any]:
    """``"num_classes=10,weights=None,name=x"`` -> ``{"num_classes": 10, "weights": None,
    "name": "x"}``: ints, floats, None, True/False, otherwise strings (quotes optional)."""
    if text is None or not text.strip():
        return {}
    found: dict[str, Any] = {}
    for item in text.split(","):
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals or not key.isidentifier():
            raise SpecError("kwargs", f"--kwargs {item.strip()!r} must be NAME=VALUE")
        if key in found:
            raise SpecError("kwargs", f"--kwargs names {key!r} twice")
        found[key] = _value(value)
    return found


def _missing_extra(package: str, extra: str) -> SpecError:
    return SpecError("model", f"{package} is not installed: pip install 'convcalc[{extra}]'")


def load_target(
    target: str, kwargs_text: str | None = None, device: str = "cpu"
) -> tuple[nn.Module, list[str]]:
    """The model a target names, in eval mode, and notes for the reader. ``device="meta"``
    builds factories under ``torch.device("meta")`` (no memory for weights)."""
    kwargs = parse_kwargs(kwargs_text)
    notes: list[str] = []
    context = torch.device(device) if device == "meta" else contextlib.nullcontext()
    if target.startswith("timm:"):
        with context:
            return _timm(target[5:], kwargs, notes), notes
    suffix = Path(target).suffix.lower()
    if suffix == ".onnx":
        _no_kwargs(kwargs, "an ONNX file")
        return _onnx(target, notes), notes
    if suffix in TORCHSCRIPT_SUFFIXES:
        _no_kwargs(kwargs, "a TorchScript file")
        return _torchscript(target, notes), notes
    with context:
        return load_model(target, kwargs, notes), notes


def _no_kwargs(kwargs: dict[str, Any], what: str) -> None:
    if kwargs:
        raise SpecError("kwargs", f"--kwargs does not apply to {what}")


def _timm(name: str, kwargs: dict[str, Any], notes: list[str]) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise _missing_extra("timm", "timm") from None
    if kwargs.get("pretrained"):
        raise SpecError("kwargs", "convcalc never downloads weights: drop pretrained=True")
    kwargs = {**kwargs, "pretrained": False}
    notes.append("timm.create_model(..., pretrained=False): random weights, none downloaded")
    try:
        with user_code():
            model = timm.create_model(name, **kwargs)
    except Exception as error:
        raise SpecError(
            "model", f"timm:{name} failed: {type(error).__name__}: {first_line(error)}"
        ) from None
    if not isinstance(model, nn.Module):
        raise SpecError("model", f"timm:{name} did not build an nn.Module")
    return model.eval()


def _torchscript(path: str, notes: list[str]) -> nn.Module:
    if not Path(path).is_file():
        raise SpecError("model", f"cannot load {path}: no such file")
    try:
        with user_code():
            model: nn.Module = torch.jit.load(path, map_location="cpu")
    except Exception as error:
        raise SpecError(
            "model",
            f"{path} is not a TorchScript file: {type(error).__name__}: {first_line(error)}",
        ) from None
    notes.append(
        "TorchScript: its submodules run inside the TorchScript interpreter, where no Python "
        "hook sees them: every operator is attributed to the root"
    )
    return model.eval()


def _import_onnx2torch() -> Any:
    """onnx2torch imports torchvision at import time (for its NMS and RoIAlign converters).
    Where torchvision cannot be imported, a stand-in whose ops raise is put in its place for
    the import only, then removed: models with those two nodes fail with one line, others
    convert."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise _missing_extra("onnx", "onnx") from None
    stub = None
    if importlib.util.find_spec("onnx2torch") is None:
        raise _missing_extra("onnx2torch", "onnx")
    try:
        with user_code():
            import torchvision  # noqa: F401
    except Exception:
        stub = types.ModuleType("torchvision")
        ops = types.ModuleType("torchvision.ops")

        def unavailable(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("this ONNX node needs torchvision, which cannot be imported here")

        for name in ("nms", "roi_align", "box_convert", "batched_nms"):
            setattr(ops, name, unavailable)
        stub.ops = ops  # type: ignore[attr-defined]
        sys.modules["torchvision"], sys.modules["torchvision.ops"] = stub, ops
    try:
        with user_code():
            import onnx2torch
    except Exception as error:
        raise SpecError(
            "model", f"cannot import onnx2torch: {type(error).__name__}: {first_line(error)}"
        ) from None
    finally:
        if stub is not None:
            sys.modules.pop("torchvision", None)
            sys.modules.pop("torchvision.ops", None)
    return onnx2torch


def _onnx(path: str, notes: list[str]) -> nn.Module:
    if not Path(path).is_file():
        raise SpecError("model", f"cannot load {path}: no such file")
    onnx2torch = _import_onnx2torch()
    try:
        with user_code():
            model = onnx2torch.convert(path)
    except Exception as error:
        raise SpecError(
            "model", f"cannot convert {path}: {type(error).__name__}: {first_line(error)}"
        ) from None
    notes.append(
        "ONNX: converted into torch modules by onnx2torch; modules are named after the "
        "graph's nodes"
    )
    return model.eval()  # type: ignore[no-any-return]


# --- Python targets ----------------------------------------------------------------------------


def load_model(
    target: str, kwargs: dict[str, Any] | None = None, notes: list[str] | None = None
) -> nn.Module:
    """``package.module:attr`` or ``path/to/file.py:attr``: an nn.Module, or a class or factory
    called with ``kwargs``. Import errors become :class:`SpecError` (bad input)."""
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
        raise user_error(  # from error: CONVCALC_DEBUG=1 prints its traceback
            "model",
            f"cannot import {module_name}: {type(error).__name__}: {first_line(error)}",
            error,
        ) from error
    return _instantiate(module, module_name, attr, target, dict(kwargs or {}), notes)


def _import(module_name: str) -> Any:
    if module_name.endswith(".py"):
        path = Path(module_name)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None or not path.exists():
            raise SpecError("model", f"cannot import {module_name}: no such file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        return module
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    return importlib.import_module(module_name)


def _no_downloads(
    found: Any, target: str, kwargs: dict[str, Any], notes: list[str] | None
) -> dict[str, Any]:
    """weights=None / pretrained=False where the factory takes them and the user said
    nothing; refuse a request for pretrained weights."""
    try:
        parameters = inspect.signature(found).parameters
    except (TypeError, ValueError):
        return kwargs
    if "weights" in parameters and "weights" not in kwargs:
        kwargs["weights"] = None
        if notes is not None:
            notes.append(f"{target}(weights=None): random weights, none downloaded")
    if "pretrained" in parameters and "pretrained" not in kwargs:
        kwargs["pretrained"] = False
        if notes is not None:
            notes.append(f"{target}(pretrained=False): random weights, none downloaded")
    if kwargs.get("weights") is not None or kwargs.get("pretrained"):
        raise SpecError("kwargs", "convcalc never downloads weights: pass weights=None")
    missing = [
        name
        for name, p in parameters.items()
        if p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and name not in kwargs
        and name != "self"
    ]
    if missing:
        needed = ", ".join(repr(m) for m in missing)
        example = ",".join(f"{m}=..." for m in missing)
        raise SpecError("model", f"{target} needs {needed}: pass --kwargs {example}")
    return kwargs


def _instantiate(
    module: Any,
    module_name: str,
    attr: str,
    target: str,
    kwargs: dict[str, Any],
    notes: list[str] | None,
) -> nn.Module:
    try:
        found = module
        for part in attr.split("."):
            found = getattr(found, part)
    except AttributeError:
        raise SpecError("model", f"{module_name} has no attribute {attr!r}") from None
    if isinstance(found, nn.Module):
        if kwargs:
            raise SpecError("kwargs", f"{target} is a module instance: --kwargs does not apply")
        return found.eval()
    if not callable(found):
        raise SpecError("model", f"{target} is neither an nn.Module nor a class or factory")
    kwargs = _no_downloads(found, target, kwargs, notes)
    _check_kwargs(found, target, kwargs)
    try:
        with user_code():
            built = found(**kwargs)
    except SystemExit as leaving:
        raise SpecError("model", f"{target}() called sys.exit({leaving.code!r})") from None
    except Exception as error:
        failed = f"{target}() failed: {type(error).__name__}: {first_line(error)}"
        lead = _suspect_text(found, kwargs)
        if lead:  # from error: CONVCALC_DEBUG=1 prints its traceback
            raise user_error("kwargs", lead + failed, error) from error
        raise user_error("model", failed + _text_kwargs_note(kwargs), error) from error
    if not isinstance(built, nn.Module):
        raise SpecError("model", f"{target}() returned {type(built).__name__}, not an nn.Module")
    return built.eval()


#: the annotation or default type a --kwargs value must be read as, by its name
_NUMBERS = {"int": "an integer", "float": "a number", "bool": "true or false"}


def _expected(parameter: inspect.Parameter) -> str | None:
    """What a parameter takes, where its annotation says it is a number or a flag and never a
    string (``width: int = 1``); None where it may be a string (``padding: int | str``) or
    no annotation says."""
    annotation = parameter.annotation
    if annotation is not inspect.Parameter.empty:  # annotated: only what it says
        name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        return _NUMBERS.get(str(name).strip())
    return None


def _default_kind(parameter: inspect.Parameter) -> str | None:
    """What an unannotated parameter's default suggests it takes (a number or a flag): a
    hint only, for the default does not forbid a string."""
    if parameter.annotation is not inspect.Parameter.empty:
        return None
    default = parameter.default
    if isinstance(default, bool):
        return _NUMBERS["bool"]
    if isinstance(default, int):
        return _NUMBERS["int"]
    if isinstance(default, float):
        return _NUMBERS["float"]
    return None


def _check_kwargs(found: Any, target: str, kwargs: dict[str, Any]) -> None:
    """A --kwargs value read as text (not a number, None or a flag) for a parameter whose
    annotation says it is a number or a flag, and a name the factory does not take: one line
    naming the key, before the factory runs on it. Text is passed through where the
    parameter may take a string (``norm="bn"``, ``padding="same"``) or no annotation says
    (the factory's failure then names the text: :func:`_suspect_text`)."""
    try:
        parameters = inspect.signature(found).parameters
    except (TypeError, ValueError):
        return
    open_ended = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    for key, value in kwargs.items():
        parameter = parameters.get(key)
        if parameter is None or parameter.kind in (
            parameter.POSITIONAL_ONLY,
            parameter.VAR_POSITIONAL,
        ):
            if open_ended:
                continue
            takes = ", ".join(
                name
                for name, p in parameters.items()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name != "self"
            )
            raise SpecError(
                "kwargs",
                f"--kwargs {key}={_shown(value)}: {target} takes no argument {key!r} "
                f"(it takes: {takes or 'none'})",
            )
        if not isinstance(value, str):
            continue
        expected = _expected(parameter)
        if expected is not None:
            raise SpecError(
                "kwargs",
                f"--kwargs {key}={value}: {target}'s {key} takes {expected}, not the text "
                f"{value!r}",
            )


def _suspect_text(found: Any, kwargs: dict[str, Any]) -> str:
    """The lead of a factory's failure where one --kwargs value was read as text for an
    unannotated parameter whose default is a number or a flag (``width=abc``, default 1):
    ``"--kwargs width=abc (text; width's default is 1, an integer): "``; else empty."""
    try:
        parameters = inspect.signature(found).parameters
    except (TypeError, ValueError):
        return ""
    for key, value in kwargs.items():
        parameter = parameters.get(key)
        if isinstance(value, str) and parameter is not None:
            kind = _default_kind(parameter)
            if kind is not None:
                return (
                    f"--kwargs {key}={value} (text; {key}'s default is "
                    f"{parameter.default!r}, {kind}): "
                )
    return ""


def _shown(value: Any) -> str:
    return "None" if value is None else str(value)


def _text_kwargs_note(kwargs: dict[str, Any]) -> str:
    """Where a factory failed and --kwargs passed some values as text: which (a value that is
    not a number, None or true/false is passed as a string)."""
    texts = [f"{key}={value!r}" for key, value in kwargs.items() if isinstance(value, str)]
    if not texts:
        return ""
    return f" (--kwargs passed {', '.join(texts)} as text)"
