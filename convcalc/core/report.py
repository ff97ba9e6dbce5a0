"""Result objects: every figure measured and by formula, and ``to_dict()`` giving the stable JSON.

No torch, no Rich: rendering lives in :mod:`convcalc.render`.
"""

from __future__ import annotations

from dataclasses import field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from convcalc._dataclass import dataclass
from convcalc._lazy import exports
from convcalc._version import __version__
from convcalc.core.cumulative import Cumulative, fraction_text
from convcalc.core.memory import Memory
from convcalc.core.spec import InputSpec, Ints

if TYPE_CHECKING:  # annotations only: the roofline module loads with --roofline (start-up)
    from convcalc.core.comparison import Comparison as Comparison
    from convcalc.core.model_report import ModelFigures as ModelFigures
    from convcalc.core.model_report import ModuleFigures as ModuleFigures
    from convcalc.core.model_report import ModuleSpec as ModuleSpec
    from convcalc.core.roofline import LayerRoofline, Peaks
    from convcalc.kinds import LayerSpec  # its kinds load on use (start-up)

T = TypeVar("T")


@dataclass(frozen=True)
class Pair(Generic[T]):
    """A figure measured from torch beside the same figure by formula."""

    measured: T | None
    formula: T

    @property
    def agree(self) -> bool:
        """Equal, or one side missing: not measured, or no formula (a user's model's output),
        shown as such; not a disagreement."""
        return self.measured is None or self.formula is None or self.measured == self.formula

    def to_dict(self) -> dict[str, Any]:
        return {"measured": _plain(self.measured), "formula": _plain(self.formula)}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Memory):
        return value.to_dict()
    return value


@dataclass(frozen=True)
class LayerReport:
    """One layer of a report: each figure measured and by formula (``Pair``), its texts and
    notes."""

    name: str
    spec: LayerSpec | ModuleSpec
    input_shape: Ints
    output_shape: Pair[Ints]
    params: Pair[int]
    macs: Pair[int]
    flops: Pair[int]
    bias_adds: int
    receptive_field: Pair[Ints]
    memory: Pair[Memory]
    formula_text: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    #: --train: backward FLOPs (input and weight gradients), and torch's own raw count
    backward_flops: Pair[int] | None = None
    backward_flops_torch: int | None = None
    #: --time: median forward latency and achieved throughput
    latency_ms: float | None = None
    timed_runs: int | None = None
    latency_iqr_ms: float | None = None
    timing_requested: bool = False
    #: figures relative to the network input (formula), and the measured receptive field
    cumulative: Cumulative | None = None
    cumulative_receptive_field: Pair[Ints] | None = None
    #: the nodes feeding this one (-1: the network input), and "main"/"shortcut" in a block
    inputs: tuple[int, ...] = ()
    path: str = ""
    #: bytes autograd keeps from this layer's forward for the backward (shared tensors counted
    #: at the first layer saving them), and the live activation bytes while it runs in
    #: inference (core.memory_model; measure.memory)
    saved_for_backward: Pair[int] | None = None
    peak_inference: Pair[int] | None = None
    #: --roofline (or --time): bytes moved, intensity, bound and time lower bound by formula on
    #: the report's device peaks; with --time the measured time's achieved rates
    roofline: LayerRoofline | None = None
    #: a module of a user's model called more than once (its row "name (×N)"): the input shape
    #: of each call, and each call's output shape measured (the real run) and by formula;
    #: ``output_shape`` is the first call's on both sides. Empty / None for one call
    call_input_shapes: tuple[Ints, ...] = ()
    call_output_shapes: Pair[tuple[Ints, ...]] | None = None
    #: a module of a user's model: the shape of each positional input of its first call, where
    #: every positional argument was one tensor (query, key, value of an attention); empty
    #: otherwise. What --time times the module alone on (zeros of each); not in the JSON
    positional_input_shapes: tuple[Ints, ...] = ()

    @property
    def gflops_per_s(self) -> float | None:
        if self.latency_ms is None or self.flops.measured is None or self.latency_ms <= 0:
            return None
        return self.flops.measured / (self.latency_ms * 1e-3) / 1e9

    @property
    def pairs(self) -> dict[str, Pair[Any]]:
        pairs: dict[str, Pair[Any]] = {
            "output_shape": self.output_shape,
            "params": self.params,
            "macs": self.macs,
            "flops": self.flops,
            "receptive_field": self.receptive_field,
            "memory_bytes": self.memory,
        }
        if self.backward_flops is not None:
            pairs["backward_flops"] = self.backward_flops
        if self.cumulative_receptive_field is not None:
            pairs["cumulative_receptive_field"] = self.cumulative_receptive_field
        if self.call_output_shapes is not None:
            pairs["call_output_shapes"] = self.call_output_shapes
        pairs.update(_memory_pairs(self.saved_for_backward, self.peak_inference))
        return pairs

    @property
    def disagreements(self) -> list[str]:
        return [name for name, pair in self.pairs.items() if not pair.agree]

    @property
    def agree(self) -> bool:
        return not self.disagreements

    def to_dict(self) -> dict[str, Any]:
        data = {
            "name": self.name,
            "spec": self.spec.to_dict(),
            "input_shape": list(self.input_shape),
            "output_shape": self.output_shape.to_dict(),
            "params": self.params.to_dict(),
            "macs": self.macs.to_dict(),
            "flops": self.flops.to_dict(),
            "bias_adds": self.bias_adds,
            "receptive_field": self.receptive_field.to_dict(),
            "memory_bytes": _plain(self.memory.measured),
            "memory_bytes_formula": _plain(self.memory.formula),
            "formula_text": dict(self.formula_text),
            "notes": list(self.notes),
            # nothing measured (--formula-only): nothing to agree or disagree
            "agree": self.agree
            if any(pair.measured is not None for pair in self.pairs.values())
            else None,
        }
        _add_memory_keys(data, self.saved_for_backward, self.peak_inference)
        if self.cumulative is not None:
            cumulative = self.cumulative.to_dict()
            if self.cumulative_receptive_field is not None:
                cumulative["receptive_field_measured"] = _plain(
                    self.cumulative_receptive_field.measured
                )
            data["cumulative"] = cumulative
        if self.inputs and self.inputs != (-1,) and len(self.inputs) > 1 or self.path:
            data["inputs"] = list(self.inputs)
            data["path"] = self.path
        if self.backward_flops is not None:
            data["backward_flops"] = self.backward_flops.to_dict()
            data["backward_flops_torch_counter"] = self.backward_flops_torch
        if self.timing_requested:
            gflops = self.gflops_per_s
            data["latency_ms"] = None if self.latency_ms is None else round(self.latency_ms, 4)
            data["gflops_per_s"] = None if gflops is None else round(gflops, 3)
            data["timed_runs"] = self.timed_runs
            iqr = self.latency_iqr_ms
            data["latency_iqr_ms"] = None if iqr is None else round(iqr, 4)
        if self.roofline is not None:
            data["roofline"] = self.roofline.to_dict()
        _add_call_keys(data, self.call_input_shapes, self.call_output_shapes)
        return data


def _add_call_keys(
    data: dict[str, Any], inputs: tuple[Ints, ...], outputs: Pair[tuple[Ints, ...]] | None
) -> None:
    """A module called more than once: ``call_input_shapes`` (one per call) and
    ``call_output_shapes`` ({measured, formula}: one per call, null where a side has none)."""
    if inputs:
        data["call_input_shapes"] = [list(shape) for shape in inputs]
    if outputs is not None:
        data["call_output_shapes"] = {
            side: None if shapes is None else [list(shape) for shape in shapes]
            for side, shapes in (("measured", outputs.measured), ("formula", outputs.formula))
        }


@dataclass(frozen=True)
class Total:
    """Whole-chain figures; each a pair like the layers' (a single layer: its own figures)."""

    params: Pair[int]
    macs: Pair[int]
    flops: Pair[int]
    bias_adds: int
    output_shape: Pair[Ints]
    receptive_field: Pair[Ints]
    memory: Pair[Memory]
    #: --train: forward + backward FLOPs
    train_flops: Pair[int] | None = None
    #: --time: sum of the layers' median latencies
    latency_ms: float | None = None
    timing_requested: bool = False
    cumulative: Cumulative | None = None
    #: the layer whose output the total receptive field is of, when not the last (a network
    #: that ends in global pooling or linear layers: its last spatial layer)
    receptive_field_of: str = ""
    #: the network's saved for backward, inference peak and one training step (bytes; the
    #: step's transient and total are upper bounds: no agreement is claimed for them), the
    #: optimizer, the largest batches that fit --fit, and the formulas as text
    saved_for_backward: Pair[int] | None = None
    peak_inference: Pair[int] | None = None
    training_step: Pair[dict[str, int]] | None = None
    optimizer: str = ""
    fit: dict[str, Any] | None = None
    memory_text: dict[str, str] = field(default_factory=dict)
    #: --roofline: the layers' bound times summed, and with --time the measured ones and the
    #: top layers (engine.roofline_total)
    roofline: dict[str, Any] | None = None

    @property
    def memory_pairs(self) -> dict[str, Pair[Any]]:
        """The memory figures that have an agreement: saved for backward, the inference peak,
        and each exact part of the training step."""
        pairs = _memory_pairs(self.saved_for_backward, self.peak_inference)
        step = self.training_step
        if step is not None:
            for key in EXACT_STEP_KEYS:
                measured = None if step.measured is None else step.measured.get(key)
                formula = None if step.formula is None else step.formula.get(key)
                pairs[f"training_step.{key}"] = Pair(measured, formula)
        return pairs

    @property
    def memory_agree(self) -> bool:
        return all(pair.agree for pair in self.memory_pairs.values())

    def _memory_values(self, side: str) -> dict[str, Any]:
        """The new memory keys of ``memory_bytes`` on one side: the formula's, or (the
        measured side) the measurement, None where it was not made. As the rest of the
        measured total, the formula stands in when nothing at all was measured."""
        use_formula = side == "formula" or self.memory.measured is None
        values: dict[str, Any] = {}
        for key in ("saved_for_backward", "peak_inference", "training_step"):
            pair = getattr(self, key)
            if pair is not None:
                values[key] = pair.formula if use_formula else pair.measured
        return values

    def _figure_pairs(self) -> dict[str, Pair[Any]]:
        """The total's figures, each measured beside its formula (train FLOPs where asked)."""
        pairs: dict[str, Pair[Any]] = {
            "params": self.params,
            "macs": self.macs,
            "flops": self.flops,
            "output_shape": self.output_shape,
            "receptive_field": self.receptive_field,
            "memory_bytes": self.memory,
        }
        if self.train_flops is not None:
            pairs["train_flops"] = self.train_flops
        return pairs

    @property
    def disagreements(self) -> list[str]:
        pairs = {**self._figure_pairs(), **self.memory_pairs}
        return [name for name, pair in pairs.items() if not pair.agree]

    def _sided_pairs(self) -> dict[str, Pair[Any]]:
        """The total's figures whose measured side falls back on the formula's (``_values``)."""
        return {k: p for k, p in self._figure_pairs().items() if p.formula is not None}

    @property
    def by_formula(self) -> list[str]:
        """The keys of the measured total (``total.params``...) that hold the formula's value
        because nothing measured them: every one under --formula-only, none when all ran."""
        return [key for key, pair in self._sided_pairs().items() if pair.measured is None]

    @property
    def source(self) -> str:
        """Where the measured total's values come from: "measured", "formula" (nothing was
        measured: --formula-only) or "mixed" (``by_formula`` names the formula's)."""
        return str(self.source_keys()["total_source"])

    def source_keys(self) -> dict[str, Any]:
        """The report's ``total_source`` and ``total_by_formula``, computed once."""
        pairs = self._sided_pairs()
        by_formula = [key for key, pair in pairs.items() if pair.measured is None]
        source = "mixed" if by_formula else "measured"
        if by_formula and len(by_formula) == len(pairs):
            source = "formula"
        return {"total_source": source, "total_by_formula": by_formula}

    def _values(self, side: str) -> dict[str, Any]:
        def pick(pair: Pair[Any]) -> Any:
            measured = pair.measured
            return _plain(measured if side == "measured" and measured is not None else pair.formula)

        values = {
            "params": pick(self.params),
            "macs": pick(self.macs),
            "flops": pick(self.flops),
            "bias_adds": self.bias_adds,
            "output_shape": pick(self.output_shape),
            "receptive_field": pick(self.receptive_field),
            "memory_bytes": pick(self.memory),
        }
        if self.train_flops is not None:
            values["train_flops"] = pick(self.train_flops)
        if isinstance(values["memory_bytes"], dict):
            values["memory_bytes"] = {**values["memory_bytes"], **self._memory_values(side)}
        return values

    def to_dict(self) -> dict[str, Any]:
        measured = self._values("measured")
        if self.cumulative is not None and self.cumulative.effective_stride:
            cumulative = self.cumulative.to_dict()
            measured["effective_stride"] = cumulative["effective_stride"]
            measured["effective_padding"] = cumulative["effective_padding"]
            measured["effective_stride_text"] = [
                fraction_text(v) for v in self.cumulative.effective_stride
            ]
        if self.receptive_field_of:
            measured["receptive_field_of"] = self.receptive_field_of
        if self.timing_requested:
            flops = self.flops.measured
            latency = self.latency_ms
            measured["latency_ms"] = None if latency is None else round(latency, 4)
            measured["gflops_per_s"] = (
                round(flops / (latency * 1e-3) / 1e9, 3)
                if flops is not None and latency is not None and latency > 0
                else None
            )
        if self.optimizer:
            measured["optimizer"] = self.optimizer
        if self.fit is not None:
            measured["fit"] = self.fit
        if self.roofline is not None:
            measured["roofline"] = self.roofline
        measured["formula"] = self._values("formula")
        return measured


#: how an operator that carries compute and that no rule counts is named in a model's count
#: warnings (measure.opcount): a warning and a --strict problem, not a disagreement
NO_RULE = "not counted, and convcalc has no rule for it"


@dataclass(frozen=True)
class Report:
    """What ``convcalc conv`` (and later presets and stacks) prints, as data."""

    command: str
    input: InputSpec
    layers: tuple[LayerReport, ...]
    total: Total
    measured_on: str
    sources: dict[str, str]
    notes: tuple[str, ...] = ()
    title: str = ""
    timing: dict[str, Any] | None = None
    #: preset-specific figures (grouped: ratio to the standard conv; dilated: the undilated RF)
    extra: dict[str, Any] = field(default_factory=dict)
    #: the traps of conv arithmetic this network falls into (convcalc.advice)
    warnings: tuple[str, ...] = ()
    #: a user's model (``model``): what the dispatch-level count saw beyond the layers
    model: ModelFigures | None = None
    #: --roofline (or --time): the device's peaks the layers' roofline figures are on
    device: Peaks | None = None
    #: JSON keys written as null where this run did not make them (``model --measure-on
    #: meta``: the memory figures a CPU run has), so that no key disappears by mode: dotted
    #: paths, ``layers[].`` for every layer (:func:`_fill_nulls`)
    null_keys: tuple[str, ...] = ()

    @property
    def agree(self) -> bool:
        """Every measured figure equals its formula: every layer's, and every total's."""
        return not self.disagreements

    @property
    def disagreements(self) -> list[str]:
        """Each pair whose measured figure differs from its formula, as ``layer: figure``."""
        found = [f"{layer.name}: {name}" for layer in self.layers for name in layer.disagreements]
        named = {name for layer in self.layers for name in layer.disagreements}
        if named & {"receptive_field", "cumulative_receptive_field"}:
            named.add("receptive_field")
        # a total that differs on its own (a model's parameters beyond its layers' formulas);
        # one that only sums the layers' differences is named by them already
        found += [f"total: {name}" for name in self.total.disagreements if name not in named]
        # operators torch counts and convcalc does not (a user's model): never silent. One that
        # neither counts (no rule) is no disagreement: a warning, and --strict fails on it
        if self.model is not None:
            found += [w for w in self.model.count_warnings if NO_RULE not in w]
        return found

    def with_conventions(self) -> Report:
        """The report with what each other tool would print (``--conventions``)."""
        from dataclasses import replace

        from convcalc.core.conventions import conventions

        return replace(self, extra={**self.extra, "conventions": conventions(self.to_dict())})

    @property
    def strict_problems(self) -> list[str]:
        """What ``--strict`` fails on beyond disagreeing pairs: operators torch counts and
        convcalc does not (a user's model), then every disagreement, layers and totals."""
        problems = list(self.model.count_warnings) if self.model is not None else []
        for layer in self.layers:
            if layer.disagreements:
                problems.append(
                    f"{layer.name}: measured and formula disagree on "
                    + ", ".join(layer.disagreements)
                )
        for key in ("params", "macs", "flops", "receptive_field"):
            pair = getattr(self.total, key)
            if not pair.agree:
                problems.append(
                    f"total {key}: measured {_plain(pair.measured)}, formula {_plain(pair.formula)}"
                )
        return problems

    def get(self, path: str) -> Any:
        """The value at a dotted path of the JSON, as ``--get``: ``"total.params"``."""
        from convcalc.core.query import get_path

        return get_path(self.to_dict(), path, "path")

    def __getitem__(self, path: str) -> Any:
        return self.get(path)

    def to_dict(self) -> dict[str, Any]:
        data = {
            "convcalc_version": __version__,
            "command": self.command,
            "input_shape": list(self.input.shape),
            "dtype": self.input.dtype,
            "measured_on": self.measured_on,
            "layers": [layer.to_dict() for layer in self.layers],
            "total": self.total.to_dict(),
            # what `total` holds: measured values, or the formula's where nothing measured them
            **self.total.source_keys(),
            "sources": dict(self.sources),
            "notes": list(self.notes),
            "warnings": list(self.warnings),
            # nothing measured (--formula-only): nothing to agree or disagree
            "agree": self.agree if self.measured_on != "none" else None,
            **({"timing": self.timing} if self.timing else {}),
            **({"device": self.device.to_dict()} if self.device is not None else {}),
            **(self.model.to_dict(self.strict_problems) if self.model is not None else {}),
            **self.extra,
        }
        return _fill_nulls(data, self.null_keys) if self.null_keys else data


#: the parts of a training step measured == formula is claimed for; ``transient`` (and so
#: ``total``) is an upper bound by formula, shown beside the measurement as "bound"
EXACT_STEP_KEYS = (
    "params",
    "buffers",
    "grads",
    "optimizer_state",
    "saved_for_backward",
    "output",
)
BOUND_STEP_KEYS = ("transient", "total")


def _fill_nulls(data: dict[str, Any], paths: tuple[str, ...]) -> dict[str, Any]:
    """``data`` with each dotted path of ``paths`` set to None where it is missing
    (``total.memory_bytes.peak_inference``; ``layers[].memory_bytes.saved_for_backward`` in
    every layer). A path is followed through dicts only: one whose parent is not a dict (a
    memory figure that is null itself) is left as it is."""
    for path in paths:
        _fill_null(data, path.split("."))
    return data


def _fill_null(node: Any, parts: list[str]) -> None:
    head, rest = parts[0], parts[1:]
    if head.endswith("[]"):
        items = node.get(head[:-2]) if isinstance(node, dict) else None
        for item in items if isinstance(items, list) else []:
            _fill_null(item, rest)
        return
    if not isinstance(node, dict):
        return
    if not rest:
        node.setdefault(head, None)
    elif head in node:
        _fill_null(node[head], rest)


def _memory_pairs(saved: Pair[int] | None, peak: Pair[int] | None) -> dict[str, Pair[Any]]:
    pairs: dict[str, Pair[Any]] = {}
    if saved is not None:
        pairs["saved_for_backward"] = saved
    if peak is not None:
        pairs["peak_inference"] = peak
    return pairs


def _add_memory_keys(data: dict[str, Any], saved: Pair[int] | None, peak: Pair[int] | None) -> None:
    """A layer's saved_for_backward and peak_inference, added to its memory_bytes (measured;
    None where not measured) and memory_bytes_formula dicts."""
    for key, pair in (("saved_for_backward", saved), ("peak_inference", peak)):
        if pair is None:
            continue
        if isinstance(data.get("memory_bytes"), dict):
            data["memory_bytes"][key] = pair.measured
        if isinstance(data.get("memory_bytes_formula"), dict):
            data["memory_bytes_formula"][key] = pair.formula


#: the result types of other commands, in their own modules (start-up: `conv` does not make
#: them), importable from here as before: name -> its module
_ELSEWHERE = {
    "ModuleSpec": "model_report",
    "ModuleFigures": "model_report",
    "ModelFigures": "model_report",
    "Comparison": "comparison",
}


__getattr__ = exports(__name__, "convcalc.core", _ELSEWHERE)
