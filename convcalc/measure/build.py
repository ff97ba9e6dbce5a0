"""The real torch modules a spec describes, and the graph that runs them."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from convcalc.core.spec import Ints, Node
from convcalc.errors import SpecError
from convcalc.kinds import ConvSpec, LayerSpec, TorchKit, kind_of

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class Add(nn.Module):
    """A residual join: the sum of its inputs."""

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        total = inputs[0]
        for other in inputs[1:]:
            total = total + other
        return total


class _Kit:
    """The torch toolkit handed to the layer kinds (convcalc.kinds.base.TorchKit)."""

    nn = nn
    Add = Add

    @property
    def GroupSplit(self) -> type[nn.Module]:  # noqa: N802  (a class, as the protocol names it)
        return GroupSplit


KIT: TorchKit = _Kit()


def build_layer(spec: LayerSpec, device: str = "cpu", *, torch_init: bool = False) -> nn.Module:
    """The torch module a spec describes, in eval mode (inference: batch norm uses its running
    statistics, dropout is the identity).

    Its weights start at zero, not at torch's random draw, unless ``torch_init`` (timing asks
    for it): no figure convcalc measures depends on the values (shapes, counts, saved tensors
    and live bytes are the same for any weights; receptive fields are probed on stand-ins), and
    drawing them was most of building a network (ResNet-50's 25 M weights: 0.18 s of a 2 s
    run, docs/benchmarks.md). Zeros rather than uninitialised memory: no NaN or denormal can
    reach a run."""
    with _skipped_random_init(device, torch_init):
        module: nn.Module = kind_of(spec).build(spec, KIT, device)
    return module


#: the initialisers nn.ConvNd, nn.ConvTransposeNd and nn.Linear draw their random weights and
#: biases with (batch norm's ones_ and zeros_ cost nothing); on the meta device there are no
#: values to draw, yet each runs torch's Python decompositions (about 0.1 ms a layer, a tenth of
#: a batch spec's time)
_RANDOM_INIT = ("kaiming_uniform_", "uniform_")


def _keep(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return tensor


def _zero(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    with torch.no_grad():
        return tensor.zero_()


@contextlib.contextmanager
def _skipped_random_init(device: str, torch_init: bool) -> Iterator[None]:
    """While building: torch's random initialisers skipped (meta) or replaced by zeros."""
    if torch_init and device != "meta":
        yield
        return
    init = nn.init
    saved = {name: getattr(init, name) for name in _RANDOM_INIT}
    instead = _keep if device == "meta" else _zero
    for name in _RANDOM_INIT:
        setattr(init, name, instead)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(init, name, function)


class GraphModule(nn.Module):
    """A network of nodes run in order; node i reads the outputs of ``inputs[i]`` (-1: the
    network input). Its modules are ``nodes.0``, ``nodes.1``, ... (fvcore reports them so)."""

    def __init__(self, modules: Sequence[nn.Module], inputs: Sequence[tuple[int, ...]]) -> None:
        super().__init__()
        self.nodes = nn.ModuleList(modules)
        self.sources = [tuple(i) for i in inputs]
        #: called before and after each node (convcalc's counter attributes ops to nodes)
        self.before: Callable[[int], None] | None = None
        self.after: Callable[[int, torch.Tensor], None] | None = None

    def run(self, x: torch.Tensor, last: int | None = None) -> list[torch.Tensor]:
        outputs: list[torch.Tensor] = []
        for index, (module, sources) in enumerate(zip(self.nodes, self.sources)):
            if last is not None and index > last:
                break
            if self.before:
                self.before(index)
            out = module(*[x if i < 0 else outputs[i] for i in sources])
            if self.after:
                self.after(index, out)
            outputs.append(out)
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)[-1]


class GroupSplit(nn.Module):
    """A grouped convolution as ``groups`` dense convolutions on channel slices, concatenated:
    the same arithmetic with groups = 1, where torch's backward FLOP formula is right."""

    def __init__(self, spec: ConvSpec, device: str = "cpu") -> None:
        super().__init__()
        part = replace(
            spec,
            in_channels=spec.in_channels // spec.groups,
            out_channels=spec.out_channels // spec.groups,
            groups=1,
        )
        # built as the caller builds (its initialisation, not build_layer's own)
        kind = kind_of(part)
        self.parts = nn.ModuleList(kind.build(part, KIT, device) for _ in range(spec.groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chunks = x.chunk(len(self.parts), dim=1)
        return torch.cat([part(chunk) for part, chunk in zip(self.parts, chunks)], dim=1)


def element_size(dtype: str) -> int:
    return torch.empty((), dtype=TORCH_DTYPES[dtype]).element_size()


def inputs_for(
    node: Node, shapes: Sequence[Ints], input_shape: Ints, device: str, requires_grad: bool = False
) -> list[torch.Tensor]:
    return [
        torch.zeros(input_shape if i < 0 else shapes[i], device=device, requires_grad=requires_grad)
        for i in node.inputs
    ]


@contextlib.contextmanager
def user_code() -> Iterator[None]:
    """The user's code may print: its output goes to stderr, stdout carries convcalc's data."""
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def first_line(error: BaseException | Warning) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def where_raised(error: BaseException) -> str:
    """Where a user's code raised ``error``: `` (at FILE:LINE in FUNCTION)`` of the last frame
    of its traceback outside torch, convcalc and the standard library (the model's own
    file: its forward, or the torch call it made), the file relative to the working directory
    where it lies under it; empty where no frame is the user's."""
    import os
    import sysconfig
    import traceback
    from pathlib import Path

    import convcalc

    outside = tuple(
        str(Path(root).resolve()) + os.sep
        for root in (
            Path(torch.__file__).parent,
            Path(convcalc.__file__).parent,
            sysconfig.get_paths()["stdlib"],
        )
    )
    frames = traceback.extract_tb(error.__traceback__)
    for frame in reversed(frames):
        name = frame.filename
        if name.startswith("<"):  # <frozen importlib._bootstrap>, <string>
            continue
        resolved = str(Path(name).resolve())
        if resolved.startswith(outside):
            continue
        shown = os.path.relpath(resolved) if resolved.startswith(os.getcwd() + os.sep) else name
        return f" (at {shown}:{frame.lineno} in {frame.name})"
    return ""


def user_error(field: str, message: str, error: BaseException) -> SpecError:
    """The :class:`SpecError` of a user's code failing with ``error``: ``where`` it raised
    (:func:`where_raised`; the CLI's line ends with it), to be raised ``from error`` (its
    traceback: CONVCALC_DEBUG=1)."""
    failed = SpecError(field, message)
    failed.where = where_raised(error)
    return failed
