"""Counting a run at the dispatch level: torch.utils.flop_counter's registered formulas applied
to each aten operator, without FlopCounterMode's module tracker (which imports torch._dynamo:
about a second on first use)."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from convcalc.core.spec import (
    Ints,
    Node,
)
from convcalc.measure.build import GraphModule, first_line, inputs_for

# --- torch's own FLOP counter, without the module tracker ------------------------------


@dataclass
class ConvCall:
    x_shape: Ints
    w_shape: Ints
    out_shape: Ints
    transposed: bool


#: the dispatched ops whose argument and output shapes fvcore's handles read, where its
#: by-module count comes from the dispatch (measure.fvcore_adapter.CARRIERS; tested equal)
RECORDED_CALLS = frozenset(
    {
        "aten.convolution",
        "aten.addmm",
        "aten.mm",
        "aten.native_batch_norm",
        "aten.mean",
        "aten._adaptive_avg_pool2d",
    }
)


class DispatchCounter(TorchDispatchMode):
    """Counts each dispatched aten op with torch.utils.flop_counter's registered formula."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # TorchDispatchMode wraps __torch_dispatch__ in torch._disable_dynamo unless this is
        # False, and that wrapper imports torch._dynamo (~1 s) on the first op. We never compile.
        return False

    def __init__(self) -> None:
        super().__init__()
        self.current: int | None = None
        self.flops: dict[int, int] = {}
        self.convs: dict[int, list[ConvCall]] = {}
        #: (rows, inner, columns) of each matrix multiply (linear layers)
        self.matmuls: dict[int, list[tuple[int, int, int]]] = {}
        self.ops: dict[int, list[str]] = {}
        #: (op, argument shapes, output shapes) of each op in RECORDED_CALLS, in order
        self.calls: dict[int, list[tuple[str, Any, Any]]] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.current is None:
            return out
        packet = func._overloadpacket
        name = _NAMES.get(packet)
        if name is None:
            name = _NAMES[packet] = str(packet)
        self.ops.setdefault(self.current, []).append(name)
        shapes = None
        if name in RECORDED_CALLS:
            shapes = (_shapes(args), _shapes(out))
            self.calls.setdefault(self.current, []).append((name, *shapes))
        if packet in flop_registry:
            count = _flop_formula(packet, args, kwargs, out, shapes)
            self.flops[self.current] = self.flops.get(self.current, 0) + int(count)
        if packet is torch.ops.aten.convolution:
            self.convs.setdefault(self.current, []).append(
                ConvCall(tuple(args[0].shape), tuple(args[1].shape), tuple(out.shape), args[6])
            )
        elif packet is torch.ops.aten.addmm or packet is torch.ops.aten.mm:
            a, b = (args[1], args[2]) if packet is torch.ops.aten.addmm else (args[0], args[1])
            self.matmuls.setdefault(self.current, []).append(
                (int(a.shape[0]), int(a.shape[1]), int(b.shape[1]))
            )
        return out


#: each dispatched op's overload packet's name (``str(packet)``), as first asked
_NAMES: dict[Any, str] = {}

#: types _shapes returns as they are (exact types: a subclass of int could be anything)
_PLAIN = frozenset({int, float, bool, str, type(None)})


def _shapes(value: Any) -> Any:
    """torch.utils.flop_counter's ``get_shape`` over args (tensors to their shapes, through
    lists, tuples and dicts), without the pytree machinery: the same values, a fraction of the
    cost on the per-spec path of a batch. Plain values (a convolution's stride, padding and
    dilation lists hold only ints) are returned as they are without a call each."""
    if type(value) in _PLAIN:
        return value
    if isinstance(value, torch.Tensor):
        return value.shape
    if isinstance(value, list):
        return [item if type(item) in _PLAIN else _shapes(item) for item in value]
    if isinstance(value, tuple):
        # an op's arguments: tensors mapped here, without a call each
        return tuple(
            item
            if type(item) in _PLAIN
            else item.shape
            if isinstance(item, torch.Tensor)
            else _shapes(item)
            for item in value
        )
    if isinstance(value, dict):
        return {key: _shapes(item) for key, item in value.items()}
    return value


def _unwrapped(entry: Any) -> Any:
    """The formula behind a registered entry that is ``shape_wrapper``'s (it maps tensors to
    shapes and calls it), or None: the entry takes raw values."""
    formula = getattr(entry, "__wrapped__", None)
    code = getattr(entry, "__code__", None)
    if formula is None or code is None or code.co_qualname != "shape_wrapper.<locals>.nf":
        return None
    return formula


#: _unwrapped of each registered entry asked so far (flop_registry's entries live as long as
#: torch: a new registration is a new entry, looked up afresh)
_FORMULAS: dict[Any, tuple[Any]] = {}


def _flop_formula(
    packet: Any, args: Any, kwargs: dict[str, Any], out: Any, shapes: Any = None
) -> int:
    """torch's registered FLOP formula for ``packet``: the formula itself on the shapes (what
    its ``shape_wrapper`` hands it), or the registered entry as is where it takes raw values.
    ``shapes``: ``(_shapes(args), _shapes(out))`` when the caller has them already."""
    entry = flop_registry[packet]
    resolved = _FORMULAS.get(entry)
    if resolved is None:
        resolved = _FORMULAS[entry] = (_unwrapped(entry),)
    formula = resolved[0]
    if formula is None:
        return int(entry(*args, **kwargs, out_val=out))
    arg_shapes, out_shape = shapes if shapes is not None else (_shapes(args), _shapes(out))
    return int(formula(*arg_shapes, out_shape=out_shape, **_shapes(kwargs)))


@dataclass
class RunRecord:
    outputs: dict[int, Ints] = field(default_factory=dict)
    counter: DispatchCounter = field(default_factory=DispatchCounter)
    #: what torch warned about while running each layer, first lines, in order
    warnings: dict[int, list[str]] = field(default_factory=dict)


#: warnings about convcalc's own machinery (fvcore's torch.jit trace), not about the layer
_MACHINERY_WARNINGS = (DeprecationWarning, torch.jit._trace.TracerWarning)


@contextlib.contextmanager
def observed(graph: GraphModule, record: RunRecord, count: bool = True) -> Iterator[None]:
    """While a forward pass of ``graph`` runs (plain, or fvcore's trace of it): each node's
    output shape, and what torch warned about while running it (kept as notes, not printed:
    e.g. 'same' padding with an even kernel makes torch copy the input); with ``count``, every
    dispatched operator counted and attributed to its node."""
    counting = record.counter if count else contextlib.nullcontext()
    with counting, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seen = 0

        def before(index: int) -> None:
            nonlocal seen
            record.counter.current = index
            seen = len(caught)

        def after(index: int, out: torch.Tensor) -> None:
            record.outputs[index] = tuple(int(size) for size in out.shape)
            messages = [
                first_line(w.message)  # type: ignore[arg-type]
                for w in caught[seen:]
                if not issubclass(w.category, _MACHINERY_WARNINGS)
            ]
            record.warnings[index] = list(dict.fromkeys(messages))

        # plain attributes: object.__setattr__ is what nn.Module.__setattr__ ends in for them
        _set_hooks(graph, before, after)
        try:
            yield
        finally:
            _set_hooks(graph, None, None)
            record.counter.current = None


def _set_hooks(graph: GraphModule, before: Any, after: Any) -> None:
    """``graph.before, graph.after = before, after`` without nn.Module.__setattr__'s checks
    for parameters, modules and buffers (neither is one)."""
    object.__setattr__(graph, "before", before)
    object.__setattr__(graph, "after", after)


def run_counted(graph: GraphModule, x: torch.Tensor) -> RunRecord:
    """One forward pass, node by node, counted."""
    record = RunRecord()
    with torch.no_grad(), observed(graph, record):
        graph.run(x)
    return record


def backward_flops(
    module: nn.Module, node: Node, shapes: Sequence[Ints], input_shape: Ints, device: str
) -> int:
    """torch's counter on one backward pass (input and weight gradients) of ``module``."""
    inputs = inputs_for(node, shapes, input_shape, device, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = module(*inputs)
    counter = DispatchCounter()
    counter.current = 0
    with counter:
        y.backward(torch.ones_like(y))
    return counter.flops.get(0, 0)
