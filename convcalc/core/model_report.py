"""The result types only ``model`` makes: a module no kind knows (``ModuleSpec``), each module's
dispatch-level figures and the whole forward's (``ModuleFigures``, ``ModelFigures``). Kept out
of :mod:`convcalc.core.report` (which re-exports them) so that a layer's command does not build
them (start-up)."""

from __future__ import annotations

from dataclasses import field
from typing import Any

from convcalc._dataclass import dataclass
from convcalc.core.spec import Ints


@dataclass(frozen=True)
class ModuleSpec:
    """A module of a user's model that no layer kind knows but that did counted work (an
    attention block, a module calling matmul or a functional conv): the spec of its row."""

    type: str
    name: str = ""
    #: what the module states that its closed form uses (embed_dim, num_heads...)
    hyper: tuple[tuple[str, Any], ...] = ()

    @property
    def op(self) -> str:
        return "module"

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "type": self.type, **dict(self.hyper)}

    def describe(self) -> str:
        inner = ", ".join(f"{k}={v}" for k, v in self.hyper)
        return f"{self.type}({inner})"


@dataclass(frozen=True)
class ModuleFigures:
    """One module of a user's model that ran, as the dispatch-level count saw it: what each
    tool's conventions are computed from (``core.conventions.model_conventions``)."""

    name: str
    type: str
    calls: int
    #: the layer kind's op (conv, linear, batchnorm...), "attention", or "" (none)
    op: str
    #: MACs of the operators it ran itself, by convcalc's rules on the dispatched shapes
    macs: int
    #: bias additions of its conv / linear (formula, every call), 0 elsewhere
    bias_adds: int
    #: its own parameters (children excluded)
    params: int
    #: elements of its first input and of its output, summed over calls
    input_elements: int
    output_elements: int
    #: counted operators it ran: aten name -> calls
    ops: dict[str, int] = field(default_factory=dict)
    #: a conv / linear: weights × output positions (torchinfo's rule), summed over calls
    weight_positions: int = 0
    #: the first dimension of its output (torchinfo multiplies a linear's parameters by it)
    batch: int = 0
    #: a conv / linear with bias: its out channels / features (0 without bias)
    bias_size: int = 0
    #: an nn.MultiheadAttention: per call, what ptflops' hook reads of its positional query,
    #: key and value (batch, qlen, klen, vlen, qdim, kdim, vdim) and of the module (heads,
    #: in_proj_bias 0/1); empty otherwise
    attention_calls: tuple[dict[str, int], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "calls": self.calls,
            "op": self.op,
            "macs": self.macs,
            "bias_adds": self.bias_adds,
            "params": self.params,
            "input_elements": self.input_elements,
            "output_elements": self.output_elements,
            "ops": dict(self.ops),
            "weight_positions": self.weight_positions,
            "batch": self.batch,
            "bias_size": self.bias_size,
            "attention_calls": [dict(call) for call in self.attention_calls],
        }


@dataclass(frozen=True)
class ModelFigures:
    """What ``model`` reports beyond the layers: the dispatch-level count of the whole forward."""

    #: "zero_cost" (shape and copy operators), "arithmetic" (add, softmax, relu... that
    #: convcalc does not count) and "no_rule" (any other: convcalc has no rule for it and does
    #: not know it to be elementwise; each is a count warning): aten name -> calls
    uncounted_ops: dict[str, dict[str, int]]
    #: ``dict{out: 2×21×32×32, aux: 2×21×32×32}``
    output_structure: str
    #: place in the output (``""`` for a lone tensor, a dict key, ``"1.0"``) -> shape
    outputs: dict[str, Ints]
    #: operators torch's counter counts and convcalc does not (or counts differently)
    count_warnings: tuple[str, ...]
    modules: tuple[ModuleFigures, ...] = ()
    #: wall-clock seconds of each step of the measurement
    seconds: dict[str, float] = field(default_factory=dict)
    #: the model's receptive field (``total.receptive_field``) is a lower bound: it still
    #: reached the border of the largest input the probe tried (a note says why no larger one)
    receptive_field_at_least: bool = False

    def to_dict(self, strict_problems: list[str]) -> dict[str, Any]:
        return {
            "uncounted_ops": {k: dict(v) for k, v in self.uncounted_ops.items()},
            "output_structure": self.output_structure,
            "outputs": {k: list(v) for k, v in self.outputs.items()},
            "strict_problems": list(strict_problems),
            "modules": [m.to_dict() for m in self.modules],
            "measure_seconds": {k: round(v, 4) for k, v in self.seconds.items()},
            "receptive_field_at_least": self.receptive_field_at_least,
        }
