"""The one adapter to fvcore: its FlopCountAnalysis on a real run, and its rules on shapes a meta
run dispatched. fvcore counts through torch.jit tracing, which torch 2.13 deprecates; everything
fvcore-specific stays here so it can be replaced."""

from __future__ import annotations

import ast
import functools
import importlib.util
import sys
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convcalc.measure.build import Add, GraphModule
from convcalc.measure.counting import ConvCall


@dataclass(frozen=True)
class FvcoreCount:
    """What fvcore's FlopCountAnalysis counted, per module name (``""``: the whole model)."""

    #: module -> operator -> count (fvcore's "flops": one multiply-add is one flop)
    by_module: dict[str, dict[str, int]]
    #: module -> operator fvcore has no handler for -> calls
    unsupported: dict[str, dict[str, int]]
    #: operators fvcore has no handler for that convcalc counts with fvcore's own rule
    extended: dict[str, int]
    #: counted from the dispatch (:func:`dispatch_count`, no trace): traced op -> the fvcore
    #: handle (qualified name) that counted it; empty where fvcore's trace ran
    handles: dict[str, str] = field(default_factory=dict)

    def macs(self, module: str) -> int:
        """The multiply-adds of convolutions and linear layers fvcore filed under ``module``."""
        counts = self.by_module.get(module, {})
        return sum(v for op, v in counts.items() if op in FVCORE_MAC_OPS)

    def others(self, module: str) -> dict[str, int]:
        """What else fvcore counted under ``module`` (batch_norm, ...), by operator."""
        counts = self.by_module.get(module, {})
        return {op: v for op, v in counts.items() if op not in FVCORE_MAC_OPS and v}


#: the keys fvcore files the multiply-adds of convolutions (and convcalc's handle for
#: aten::_convolution_mode) and of linear layers under
FVCORE_MAC_OPS = ("conv", "linear", "addmm", "matmul", "mm")


def _fvcore() -> tuple[Any, Any, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore.nn's import runs torch.jit.script: deprecated
        from fvcore.nn import FlopCountAnalysis
        from fvcore.nn.jit_handles import conv_flop_count, get_shape
    return FlopCountAnalysis, conv_flop_count, get_shape


def fvcore_count(model: nn.Module, x: torch.Tensor, modules: Sequence[str] = ()) -> FvcoreCount:
    """fvcore's count of a real run of ``model`` on ``x``, per module. Its torch.jit tracing
    warns on every call in torch 2.13 (DeprecationWarning, TracerWarning) and logs unsupported
    operators: none of that is for users; what matters is reported as notes. ``modules``: the
    names whose unsupported operators are wanted.

    ``padding='same'`` or ``'valid'`` makes torch dispatch aten::_convolution_mode, which fvcore
    0.1.5 has no handler for: it would count such a layer as 0 and say so only in a log line.
    convcalc registers fvcore's own conv rule for it (``set_op_handle``, fvcore's extension point).
    Raises what the trace raises (a model fvcore cannot trace).
    """
    flop_count_analysis, _, _ = _fvcore()
    extended: dict[str, int] = {}

    def convolution_mode(inputs: list[Any], outputs: list[Any]) -> Counter[str]:
        extended["aten::_convolution_mode"] = extended.get("aten::_convolution_mode", 0) + 1
        return convolution_mode_flop_jit(inputs, outputs)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = flop_count_analysis(model, x)
        analysis.set_op_handle("aten::_convolution_mode", convolution_mode)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        by_module = {
            name: {op: int(v) for op, v in counts.items()}
            for name, counts in analysis.by_module_and_operator().items()
        }
        unsupported = {name: dict(analysis.unsupported_ops(name)) for name in modules}
    return FvcoreCount(by_module, unsupported, extended)


def graph_modules(model: GraphModule) -> list[str]:
    """The module names fvcore gives a graph's nodes: ``nodes.0``, ``nodes.1``, ..."""
    return [f"nodes.{index}" for index in range(len(model.nodes))]


@functools.cache
def _jit_handles() -> Any:
    """fvcore's ``fvcore.nn.jit_handles`` (its conv rule ``conv_flop_count``, its handles
    ``conv_flop_jit``, ``batchnorm_flop_jit``, ...) without importing the package ``fvcore.nn``:
    its ``__init__`` imports FlopCountAnalysis and runs torch.jit.script (~0.3 s), which the
    handles do not need. jit_handles imports only the standard library and numpy (already
    loaded by torch); it is loaded from fvcore's own file, under a private name so that a later
    ``import fvcore.nn`` is not disturbed. Where fvcore.nn is loaded already, its module is
    used."""
    loaded = sys.modules.get("fvcore.nn.jit_handles")
    if loaded is not None:
        return loaded
    path = _fvcore_file("jit_handles.py")
    spec = (
        None
        if path is None
        else importlib.util.spec_from_file_location("convcalc._fvcore_jit_handles", path)
    )
    if spec is None or spec.loader is None:
        _fvcore()
        return sys.modules["fvcore.nn.jit_handles"]
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fvcore_file(name: str) -> Path | None:
    """A file of fvcore's ``nn`` package, found without running the package."""
    package = importlib.util.find_spec("fvcore")
    if package is None or not package.submodule_search_locations:
        return None
    return Path(package.submodule_search_locations[0]) / "nn" / name


def _conv_rule() -> Any:
    """fvcore's conv rule, ``fvcore.nn.jit_handles.conv_flop_count`` (:func:`_jit_handles`)."""
    return _jit_handles().conv_flop_count


def fvcore_rule(calls: Sequence[ConvCall], matmuls: Sequence[tuple[int, int, int]]) -> int:
    """fvcore's rules on shapes a run dispatched: its conv rule (a pure function in
    fvcore.nn.jit_handles) and its linear rule, rows × inner × columns (linear_flop_jit takes
    traced values, so it is restated here)."""
    conv_flop_count = _conv_rule()
    return sum(
        int(conv_flop_count(list(c.x_shape), list(c.w_shape), list(c.out_shape), c.transposed))
        for c in calls
    ) + sum(rows * inner * columns for rows, inner, columns in matmuls)


#: the aten ops, as a real run dispatches them, that the layers convcalc builds dispatch (every
#: kind's, traced and dispatched once each in tests/test_fvrule.py): a run that dispatched
#: nothing else is counted by :func:`dispatch_count` exactly as fvcore's trace counts it,
#: with no note lost. The first eight are what fvcore's conv and linear rules alone cover
#: (:func:`fvcore_rule`: the meta device's count). Anything else keeps the trace.
RULE_COVERS = frozenset(
    {
        "aten.convolution",
        "aten.constant_pad_nd",
        "aten.relu",
        "aten.relu_",
        "aten.view",
        "aten.t",
        "aten.addmm",
        "aten.mm",
        # padding modes: reflect, replicate, circular (torch pads by slices and copies)
        "aten.reflection_pad1d",
        "aten.reflection_pad2d",
        "aten.reflection_pad3d",
        "aten.replication_pad1d",
        "aten.replication_pad2d",
        "aten.replication_pad3d",
        "aten.new_empty",
        "aten.slice",
        "aten.copy_",
        # pooling (1-D as 2-D on an unsqueezed input)
        "aten.unsqueeze",
        "aten.squeeze",
        "aten.max_pool2d_with_indices",
        "aten.max_pool3d_with_indices",
        "aten.avg_pool2d",
        "aten.avg_pool3d",
        "aten.mean",
        "aten._adaptive_avg_pool2d",
        "aten._adaptive_avg_pool3d",
        "aten.adaptive_max_pool2d",
        "aten.adaptive_max_pool3d",
        # batch norm
        "aten.empty",
        "aten.native_batch_norm",
        # activations
        "aten.hardtanh",
        "aten.leaky_relu",
        "aten._prelu_kernel",
        "aten.elu",
        "aten.gelu",
        "aten.silu",
        "aten.hardswish",
        "aten.hardsigmoid",
        "aten.sigmoid",
        "aten.tanh",
        # add
        "aten.add",
    }
)


def rule_covers(ops: dict[int, list[str]]) -> bool:
    """Whether fvcore's rules on the dispatched shapes count this run as its trace would."""
    return all(op in RULE_COVERS for node in ops.values() for op in node)


# --- fvcore's count from the dispatch: its own handles and tables, without its trace --------
#
# FlopCountAnalysis traces the model with torch.jit and, for each traced op (``node.kind()``,
# e.g. aten::batch_norm) in each module's scope: calls its handle on the op's jit Values where
# it has one (flop_count._DEFAULT_SUPPORTED_OPS), skips it where fvcore ignores it
# (jit_analysis._IGNORED_OPS), and otherwise files it as unsupported. The counted pass sees the
# same layers one level lower, below autograd (aten.native_batch_norm, aten.mean, ...). Here
# each module of a graph names the ops its trace records (TRACED_OPS, traced once per kind in
# tests/test_fvrule.py), fvcore's own tables decide which are handled, ignored or unsupported,
# and each handled op's handle runs on small stand-ins for its jit Values built from the
# dispatched op that computed it (CARRIERS): the same function on the same shapes, no trace.


def _read_assignment(path: Path, name: str) -> ast.expr:
    """The value expression assigned to module-level ``name`` in a source file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for statement in tree.body:
        if isinstance(statement, ast.AnnAssign | ast.Assign):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            named = any(isinstance(t, ast.Name) and t.id == name for t in targets)
            if named and statement.value is not None:
                return statement.value
    raise LookupError(f"{name} not found in {path}")


@functools.cache
def fvcore_tables() -> tuple[dict[str, Any], frozenset[str]]:
    """fvcore's own handle table (``fvcore.nn.flop_count._DEFAULT_SUPPORTED_OPS``: traced op
    -> handle) and the ops it ignores (``fvcore.nn.jit_analysis._IGNORED_OPS``), plus
    convcalc's handle for aten::_convolution_mode (what :func:`fvcore_count` registers). Read
    from fvcore's source files without importing ``fvcore.nn`` (whose import runs
    torch.jit.script): the table's entries are evaluated in jit_handles' namespace, where its
    handles live (flop_count imports them from there). Where fvcore.nn is loaded, its objects
    are used."""
    handles_module = _jit_handles()
    flop_count = sys.modules.get("fvcore.nn.flop_count")
    jit_analysis = sys.modules.get("fvcore.nn.jit_analysis")
    if flop_count is not None and jit_analysis is not None:
        handles = dict(flop_count._DEFAULT_SUPPORTED_OPS)
        ignored = frozenset(jit_analysis._IGNORED_OPS)
    else:
        table = _fvcore_file("flop_count.py")
        analysis = _fvcore_file("jit_analysis.py")
        if table is None or analysis is None:
            raise LookupError("fvcore is not installed")
        value = _read_assignment(table, "_DEFAULT_SUPPORTED_OPS")
        if not isinstance(value, ast.Dict):
            raise LookupError("fvcore's _DEFAULT_SUPPORTED_OPS is not a dict literal")
        namespace = vars(handles_module)
        handles = {}
        for key, entry in zip(value.keys, value.values):
            if not isinstance(key, ast.Constant) or not isinstance(key.value, str):
                raise LookupError("fvcore's _DEFAULT_SUPPORTED_OPS has a computed key")
            code = compile(ast.Expression(entry), str(table), "eval")
            handles[key.value] = eval(code, dict(namespace))  # noqa: S307  (fvcore's own table)
        ignored = frozenset(ast.literal_eval(_read_assignment(analysis, "_IGNORED_OPS")))
    handles["aten::_convolution_mode"] = convolution_mode_flop_jit
    return handles, ignored


def convolution_mode_flop_jit(inputs: list[Any], outputs: list[Any]) -> Counter[str]:
    """convcalc's handle for aten::_convolution_mode (padding='same'/'valid', which fvcore 0.1.5
    has no handler for): fvcore's own conv rule on its shapes, filed under "conv" as fvcore's
    conv_flop_jit files aten::_convolution. Signature: (input, weight, bias, stride,
    padding: str, dilation, groups)."""
    handles = _jit_handles()
    x_shape, w_shape, out_shape = (handles.get_shape(v) for v in (inputs[0], inputs[1], outputs[0]))
    return Counter({"conv": int(handles.conv_flop_count(x_shape, w_shape, out_shape, False))})


class JitValue:
    """A stand-in for the torch.jit Value fvcore's handles read: a tensor of a complete shape
    (``isCompleteTensor()``, ``type().sizes()``), a constant (``toIValue()``), or an absent
    tensor (None: not a complete tensor, as a traced ``None`` argument is not)."""

    __slots__ = ("shape", "value")

    def __init__(self, shape: Sequence[int] | None = None, value: Any = None) -> None:
        self.shape = None if shape is None else [int(size) for size in shape]
        self.value = value

    def isCompleteTensor(self) -> bool:  # noqa: N802  (torch._C.Value's name)
        return self.shape is not None

    def type(self) -> JitValue:
        return self

    def sizes(self) -> list[int]:
        if self.shape is None:
            raise TypeError("not a tensor")
        return list(self.shape)

    def toIValue(self) -> Any:  # noqa: N802  (torch._C.Value's name)
        return self.value


def _tensor(shape: Any) -> JitValue:
    return JitValue(None if shape is None else tuple(shape))


def _constant(value: Any) -> JitValue:
    return JitValue(None, value)


Shims = tuple[list[JitValue], list[JitValue]]


def _convolution_shims(op: str, args: Any, out: Any) -> Shims:
    # dispatched aten.convolution(input, weight, bias, stride, padding, dilation, transposed,
    # output_padding, groups)
    x, w, bias, stride, padding, dilation, transposed, output_padding, groups = args[:9]
    head = [_tensor(x), _tensor(w), _tensor(bias), _constant(stride), _constant(padding)]
    if op == "aten::_convolution_mode":
        # traced (input, weight, bias, stride, padding: str, dilation, groups); where 'same'
        # padding is uneven torch pads first (aten.constant_pad_nd): the input here is the
        # padded one, of which the handle reads only the batch size
        inputs = [*head, _constant(dilation), _constant(groups)]
    else:
        # traced aten::_convolution(input, weight, bias, stride, padding, dilation,
        # transposed, output_padding, groups, benchmark, deterministic, cudnn_enabled,
        # allow_tf32): the four cudnn flags, which no handle reads, as torch passes them
        inputs = [
            *head,
            _constant(dilation),
            _constant(transposed),
            _constant(output_padding),
            _constant(groups),
            *(_constant(flag) for flag in (False, False, True, True)),
        ]
    return inputs, [_tensor(out)]


def _linear_shims(op: str, args: Any, out: Any) -> Shims:
    # dispatched aten.addmm(bias, input, weight.t()) or aten.mm(input, weight.t()); traced
    # aten::linear(input, weight, bias). A linear over leading dimensions dispatches its input
    # viewed as (rows, features): the same elements, which is what linear_flop_jit multiplies
    bias, x, wt = args[:3] if len(args) >= 3 else (None, *args[:2])
    weight = None if wt is None else tuple(reversed(tuple(wt)))
    return [_tensor(x), _tensor(weight), _tensor(bias)], [_tensor(out)]


def _batch_norm_shims(op: str, args: Any, out: Any) -> Shims:
    # traced aten::batch_norm(input, weight, bias, running_mean, running_var, training,
    # momentum, eps, cudnn_enabled); dispatched aten.native_batch_norm(input, weight, bias,
    # running_mean, running_var, training, momentum, eps), in eval mode with or without grad
    x, weight, bias, mean, var, training, momentum, eps = args[:8]
    inputs = [_tensor(x), _tensor(weight), _tensor(bias), _tensor(mean), _tensor(var)]
    inputs += [_constant(bool(training)), _constant(momentum), _constant(eps), _constant(True)]
    return inputs, [_tensor(out[0] if isinstance(out, tuple | list) else out)]


def _adaptive_avg_shims(op: str, args: Any, out: Any) -> Shims:
    # traced aten::adaptive_avg_pool2d(input, output_size); dispatched as
    # aten._adaptive_avg_pool2d(input, output_size), or, for a 1×1 output, aten.mean(input,
    # [-1, -2], keepdim=True)
    return [_tensor(args[0]), _constant(list(out[-2:]))], [_tensor(out)]


#: dispatched op -> (the traced ops it computes, the stand-ins for their jit Values)
CARRIERS: dict[str, tuple[frozenset[str], Any]] = {
    "aten.convolution": (
        frozenset({"aten::_convolution", "aten::_convolution_mode"}),
        _convolution_shims,
    ),
    "aten.addmm": (frozenset({"aten::linear"}), _linear_shims),
    "aten.mm": (frozenset({"aten::linear"}), _linear_shims),
    "aten.native_batch_norm": (frozenset({"aten::batch_norm"}), _batch_norm_shims),
    "aten._adaptive_avg_pool2d": (frozenset({"aten::adaptive_avg_pool2d"}), _adaptive_avg_shims),
    "aten.mean": (frozenset({"aten::adaptive_avg_pool2d"}), _adaptive_avg_shims),
}

#: what fvcore's torch.jit trace records for a module (its scope's ops, in order), by class
#: name; convolutions and adds depend on the module (:func:`traced_ops`). Each entry is
#: checked against the trace in tests/test_fvrule.py.
TRACED_OPS: dict[str, tuple[str, ...]] = {
    **{f"MaxPool{d}d": (f"aten::max_pool{d}d",) for d in (1, 2, 3)},
    **{f"AvgPool{d}d": (f"aten::avg_pool{d}d",) for d in (1, 2, 3)},
    **{f"AdaptiveAvgPool{d}d": (f"aten::adaptive_avg_pool{d}d",) for d in (1, 2, 3)},
    **{f"AdaptiveMaxPool{d}d": (f"aten::adaptive_max_pool{d}d",) for d in (1, 2, 3)},
    **{f"BatchNorm{d}d": ("aten::batch_norm",) for d in (1, 2, 3)},
    "Linear": ("aten::linear",),
    "Flatten": ("aten::flatten",),
    "Dropout": ("aten::dropout",),
    "Identity": (),
    "ReLU": ("aten::relu",),
    "ReLU6": ("aten::hardtanh",),
    "LeakyReLU": ("aten::leaky_relu",),
    "PReLU": ("aten::prelu",),
    "ELU": ("aten::elu",),
    "GELU": ("aten::gelu",),
    "SiLU": ("aten::silu",),
    "Hardswish": ("aten::hardswish",),
    "Hardsigmoid": ("aten::hardsigmoid",),
    "Sigmoid": ("aten::sigmoid",),
    "Tanh": ("aten::tanh",),
}


def traced_ops(module: nn.Module, inputs: int) -> tuple[str, ...] | None:
    """The ops fvcore's trace records in ``module``'s scope, run on ``inputs`` tensors; None
    where convcalc has not derived them (an in-place activation, a module of another class)."""
    if getattr(module, "inplace", False) or getattr(module, "return_indices", False):
        return None
    if isinstance(module, nn.modules.conv._ConvNd):
        if module.padding_mode != "zeros":  # F.pad, then a convolution with padding 0
            return ("aten::pad", "aten::_convolution")
        if isinstance(module.padding, str):
            return ("aten::_convolution_mode",)
        return ("aten::_convolution",)
    if isinstance(module, Add):
        return ("aten::add",) * (inputs - 1)
    if not type(module).__module__.startswith("torch.nn.modules."):
        return None  # a class of the same name elsewhere may trace anything
    return TRACED_OPS.get(type(module).__name__)


def dispatch_count(
    graph: GraphModule,
    ops: dict[int, list[str]],
    calls: dict[int, list[tuple[str, Any, Any]]],
) -> FvcoreCount | None:
    """What fvcore's FlopCountAnalysis would report on ``graph`` (by module and operator, its
    unsupported ops per node, convcalc's aten::_convolution_mode handle in ``extended``), from
    the counted pass that dispatched ``ops`` and recorded ``calls``
    (counting.DispatchCounter), with fvcore's own handles and tables: no trace. ``handles``
    says which handle counted which traced op. None where this cannot be vouched for: an op
    outside RULE_COVERS, a module whose trace convcalc has not derived, or a handled traced op
    whose dispatched counterpart is not where it is expected (the caller traces)."""
    if not rule_covers(ops):
        return None
    try:
        handles, ignored = fvcore_tables()
    except LookupError:  # an fvcore whose source is laid out otherwise: its trace counts
        return None
    names = graph_modules(graph)
    by_module: dict[str, Counter[str]] = {name: Counter() for name in ("", "nodes", *names)}
    unsupported: dict[str, Counter[str]] = {name: Counter() for name in ("", "nodes", *names)}
    ran: dict[str, str] = {}
    extended: dict[str, int] = {}
    for index, (module, name) in enumerate(zip(graph.nodes, names)):
        traced = traced_ops(module, len(graph.sources[index]))
        if traced is None:
            return None
        # fvcore files an op under its module and every ancestor ("owner" mode)
        scopes = ("", "nodes", name)
        # the dispatched ops that compute the handled ones, in order; the others (aten.mean
        # inside an adaptive_avg_pool1d, which fvcore has no handler for) count for nothing,
        # as the trace, which sees only the op around them, does not count them
        handled = {op for op in traced if op in handles}
        pending = [call for call in calls.get(index, []) if CARRIERS[call[0]][0] & handled]
        for op in traced:
            handle = handles.get(op)
            if handle is None:
                if op not in ignored:
                    for scope in scopes:
                        unsupported[scope][op] += 1
                continue
            if not pending or op not in CARRIERS[pending[0][0]][0]:
                return None
            carrier, args, out = pending.pop(0)
            inputs, outputs = CARRIERS[carrier][1](op, args, out)
            counts = handle(inputs, outputs)
            if not isinstance(counts, Counter):  # a number: fvcore files it under the op
                counts = Counter({op.split("::", 1)[-1]: counts})
            for scope in scopes:
                by_module[scope] += counts
            ran[op] = getattr(handle, "__qualname__", repr(handle))
            if op == "aten::_convolution_mode":
                extended[op] = extended.get(op, 0) + 1
        if pending:  # more dispatched than traced: not the module convcalc derived
            return None
    return FvcoreCount(
        {name: {op: int(v) for op, v in c.items()} for name, c in by_module.items()},
        {name: dict(c) for name, c in unsupported.items()},
        extended,
        ran,
    )
