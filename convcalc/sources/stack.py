"""Stacks of layers: the spec file format (YAML, JSON, TOML), the inline grammar, and their
expansion into a graph of nodes. Pure: no torch.

File format::

    input: [1, 3, 224, 224]          # N, C, spatial...
    layers:
      - {op: conv, out: 64, kernel: 11, stride: 4, padding: 2}
      - {op: maxpool, kernel: 3, stride: 2}
      - op: residual                 # a residual block: main path + shortcut, then add
        main:
          - {op: conv, out: 64, kernel: 3, padding: 1, bn: true, act: relu}
          - {op: conv, out: 64, kernel: 3, padding: 1, bn: true}
        shortcut: []                 # empty: the identity
        act: relu                    # after the add

Inline: layers separated by ``;``, each an op and its arguments, ``k3`` (kernel), ``s2``
(stride), ``p1`` / ``psame`` (padding), ``d2`` (dilation), ``g4`` (groups), ``out64``,
``op1`` (output padding), ``m2`` (depth multiplier), ``ceil``, ``nobias``, ``bn``, or any
``key=value``: ``"conv k7 s2 p3 out64; maxpool k3 s2 p1; dw k3; pw out128"``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import field
from typing import Any

from convcalc._dataclass import dataclass
from convcalc.core.grammar import parse_input
from convcalc.core.spec import InputSpec, Labels, Node, build_input, parse_ints
from convcalc.errors import SpecError
from convcalc.kinds import (
    ACTIVATIONS,
    ActSpec,
    AdaptivePoolSpec,
    LayerSpec,
    LinearSpec,
    NormSpec,
    ShapeSpec,
    build_conv,
    build_pool,
    check_fits,
    output_spec,
)
from convcalc.sources.presets import dilated_padding

CONV_OPS = ("conv", "conv_transpose", "dw", "pw")
POOL_OPS = ("maxpool", "avgpool")
ADAPTIVE_OPS = ("adaptiveavgpool", "adaptivemaxpool", "globalavgpool")
SHAPE_OPS = ("identity", "dropout", "flatten")
OPS = (
    *CONV_OPS,
    *POOL_OPS,
    *ADAPTIVE_OPS,
    "batchnorm",
    *ACTIVATIONS,
    *SHAPE_OPS,
    "linear",
    "residual",
)
#: the keys each kind of op takes (beyond op and name)
KEYS: dict[str, set[str]] = {
    "conv": {
        "out",
        "kernel",
        "stride",
        "padding",
        "dilation",
        "groups",
        "bias",
        "padding_mode",
        "bn",
        "act",
        "slope",
    },
    "conv_transpose": {
        "out",
        "kernel",
        "stride",
        "padding",
        "dilation",
        "groups",
        "bias",
        "output_padding",
        "bn",
        "act",
        "slope",
    },
    "dw": {
        "out",
        "kernel",
        "stride",
        "padding",
        "dilation",
        "multiplier",
        "bias",
        "bn",
        "act",
        "slope",
    },
    "pw": {"out", "bias", "bn", "act", "slope"},
    "maxpool": {"kernel", "stride", "padding", "dilation", "ceil_mode"},
    "avgpool": {"kernel", "stride", "padding", "ceil_mode"},
    "adaptiveavgpool": {"output_size"},
    "adaptivemaxpool": {"output_size"},
    "globalavgpool": set(),
    "batchnorm": set(),
    "linear": {"out", "bias"},
    "residual": {"main", "shortcut", "act", "slope"},
    "leakyrelu": {"slope", "negative_slope"},
}

#: how spec fields are called in a stack file, for error messages
STACK_LABELS = {
    "dims": "dims",
    "in_channels": "input channels",
    "out_channels": "out",
    "kernel_size": "kernel",
    "stride": "stride",
    "padding": "padding",
    "dilation": "dilation",
    "groups": "groups",
    "bias": "bias",
    "transposed": "op conv_transpose",
    "output_padding": "output_padding",
    "padding_mode": "padding_mode",
    "size": "input size",
    "batch": "batch",
    "dtype": "--dtype",
    "multiplier": "multiplier",
    "act": "act",
    "op": "op",
    "output_size": "output_size",
}
#: the labels of a layer's errors (one instance: Labels is frozen and STACK_LABELS is shared)
_STACK_LABELS = Labels(STACK_LABELS)


@dataclass
class Network:
    """A parsed stack: its input, its nodes, each node's display name, and remarks."""

    input: InputSpec
    nodes: list[Node] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: the nodes and input the builder validated, and each node's input tensor it found (the
    #: rules of core.graph.graph_inputs: every layer fits its input, no output is empty); the
    #: engine takes the tensors from here while nodes and input are still these
    checked: tuple[tuple[Node, ...], InputSpec, tuple[InputSpec, ...]] | None = field(
        default=None, repr=False, compare=False
    )

    def checked_inputs(self) -> tuple[InputSpec, ...] | None:
        """Each node's input tensor as the builder validated it, or None when the nodes or the
        input changed since (or the network was not built by the builder)."""
        if self.checked is None:
            return None
        nodes, input_spec, inputs = self.checked
        if input_spec != self.input or nodes != tuple(self.nodes):
            return None
        return inputs


# --- reading ----------------------------------------------------------------------------------


def load_text(text: str, source: str) -> dict[str, Any]:
    """A stack file's text as data: JSON, TOML or YAML (by extension, else by content)."""
    data = parse_text(text, source)
    if not isinstance(data, dict) or "layers" not in data:
        raise SpecError("file", f"{source}: a stack file needs a 'layers' list (and an 'input')")
    return data


def parse_text(text: str, source: str) -> Any:
    """JSON, TOML or YAML text as data (by extension, else by content), whatever its shape."""
    lowered = source.lower()
    try:
        if lowered.endswith(".json") or (
            not lowered.endswith((".toml", ".yaml", ".yml")) and text.lstrip().startswith("{")
        ):
            data = json.loads(text)
        elif lowered.endswith(".toml"):
            data = _toml().loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except json.JSONDecodeError as error:
        raise SpecError("file", f"{source}: line {error.lineno}: {error.msg}") from None
    except Exception as error:  # yaml.YAMLError, tomllib.TOMLDecodeError
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise SpecError("file", f"{source}: {where}{problem}") from None
    return data


def _toml() -> Any:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    return tomllib


@functools.cache  # one entry per op of OPS (checked before)
def _allowed(op: str) -> frozenset[str]:
    """The keys a layer of ``op`` takes."""
    return frozenset(KEYS.get(op, set()) | {"op", "name"})


class _Builder:
    def __init__(self, input_spec: InputSpec, dtype: str) -> None:
        self.network = Network(input=input_spec)
        self.dtype = dtype
        self.counts: dict[str, int] = {}
        self.tensors: list[InputSpec] = []  # each node's output, by formula
        self.inputs: list[InputSpec] = []  # each node's (first) input, validated
        self.index = 0  # layers of the file, counted as the user reads them

    def tensor(self, source: int) -> InputSpec:
        return self.network.input if source < 0 else self.tensors[source]

    def default_name(self, op: str, prefix: str) -> str:
        self.counts[prefix + op] = self.counts.get(prefix + op, 0) + 1
        return f"{prefix}{op}{self.counts[prefix + op]}"

    def add(
        self, spec: LayerSpec, inputs: tuple[int, ...], name: str, where: str, path: str
    ) -> int:
        labels = _STACK_LABELS
        feeds = [self.tensor(i) for i in inputs]
        try:
            if len({f.shape for f in feeds}) > 1:
                shown = ", ".join(
                    f"{p} {'x'.join(map(str, f.shape))}"
                    for p, f in zip(("main path", "shortcut"), feeds)
                )
                raise SpecError("inputs", f"{shown}: they must match to be added")
            check_fits(spec, feeds[0], labels)
            out = output_spec(spec, feeds[0])
            if min(out.shape) < 1:
                raise SpecError(
                    "size",
                    f"the output {'x'.join(map(str, out.shape))} is empty: "
                    "the input shrinks to nothing",
                )
        except SpecError as error:
            raise SpecError(error.field, f"{where}: {error.message}") from None
        self.network.nodes.append(Node(spec, inputs, path))
        self.network.names.append(name)
        self.tensors.append(out)
        self.inputs.append(feeds[0])
        return len(self.network.nodes) - 1

    def layers(
        self, layers: Any, source: int, prefix: str = "", path: str = "", context: str = ""
    ) -> int:
        if not isinstance(layers, list):
            raise SpecError("layers", f"{context or 'the stack'}: 'layers' must be a list")
        for layer in layers:
            source = self.layer(layer, source, prefix, path)
        return source

    def layer(self, layer: Any, source: int, prefix: str, path: str) -> int:
        self.index += 1
        if not isinstance(layer, dict) or "op" not in layer:
            raise SpecError("op", f"layer {self.index}: each layer needs an 'op' (got {layer!r})")
        op = str(layer["op"]).lower()
        name = f"{prefix}{layer['name']}" if layer.get("name") else self.default_name(op, prefix)
        where = f"layer {self.index} ({name})"
        if op not in OPS:
            raise SpecError("op", f"{where}: unknown op {layer['op']!r}; ops: {', '.join(OPS)}")
        allowed = _allowed(op)
        unknown = sorted(set(layer) - allowed)
        if unknown:
            raise SpecError(
                "key",
                f"{where}: unknown key {unknown[0]!r} for {op}; it takes "
                f"{', '.join(sorted(allowed - {'op', 'name'})) or 'no keys'}",
            )
        try:
            return self._build(op, layer, name, where, source, prefix, path)
        except SpecError as error:
            if error.message.startswith("layer "):
                raise
            raise SpecError(error.field, f"{where}: {error.message}") from None

    def _spatial(self, op: str, here: InputSpec) -> None:
        if here.dims == 0:
            raise SpecError(
                "op",
                f"{op} needs a spatial input, but its input is flat "
                f"({'x'.join(map(str, here.shape))}): it comes after flatten or "
                "linear",
            )

    def _build(
        self,
        op: str,
        layer: dict[str, Any],
        name: str,
        where: str,
        source: int,
        prefix: str,
        path: str,
    ) -> int:
        here = self.tensor(source)
        dims, channels = here.dims, here.channels
        labels = _STACK_LABELS
        get = layer.get
        if op == "residual":
            return self._residual(layer, name, where, source, path)
        if op in (*CONV_OPS, *POOL_OPS, *ADAPTIVE_OPS):
            self._spatial(op, here)
        if op in CONV_OPS:
            return self._conv(op, layer, name, where, source, path)
        if op in POOL_OPS:
            spec: LayerSpec = build_pool(
                kind=op[:3],
                dims=dims,
                channels=channels,
                kernel=get("kernel", 2),
                stride=get("stride"),
                padding=get("padding", 0),
                dilation=get("dilation", 1),
                ceil_mode=flag(get("ceil_mode", False), "ceil_mode"),
                name=name,
                labels=labels,
            )
        elif op in ADAPTIVE_OPS:
            size = parse_ints(get("output_size", 1), dims, "output_size", labels)
            spec = AdaptivePoolSpec(
                "max" if op == "adaptivemaxpool" else "avg", dims, channels, size, name
            )
        elif op == "batchnorm":
            spec = NormSpec(channels, dims, name)
        elif op in ACTIVATIONS:
            slope = number(get("slope", get("negative_slope", 0.01)), "slope")
            spec = ActSpec(op, dims, channels, slope, name)
        elif op == "linear":
            if "out" not in layer:
                raise SpecError("out", "linear needs 'out' (its output features)")
            spec = LinearSpec(
                channels, _positive(layer["out"], "out"), flag(get("bias", True), "bias"), name
            )
        else:
            spec = ShapeSpec(op, dims, channels, name)
        return self.add(spec, (source,), name, where, path)

    def _conv(
        self, op: str, layer: dict[str, Any], name: str, where: str, source: int, path: str
    ) -> int:
        here = self.tensor(source)
        labels = _STACK_LABELS
        get = layer.get
        bias = flag(get("bias", True), "bias")
        common: dict[str, Any] = {"dims": here.dims, "in_channels": here.channels, "labels": labels}
        if op == "dw":
            multiplier = _positive(get("multiplier", 1), "multiplier")
            kernel = parse_ints(get("kernel", 3), here.dims, "kernel_size", labels)
            dilation = parse_ints(get("dilation", 1), here.dims, "dilation", labels)
            stride = parse_ints(get("stride", 1), here.dims, "stride", labels)
            padding = get("padding", dilated_padding(kernel, dilation, stride))
            depthwise = build_conv(
                out_channels=here.channels * multiplier,
                kernel=kernel,
                stride=stride,
                padding=_text(padding),
                dilation=dilation,
                groups=here.channels,
                bias=bias,
                name=f"{name}.depthwise",
                **common,
            )
            source = self.add(depthwise, (source,), f"{name}.depthwise", where, path)
            source = self._block(layer, f"{name}.depthwise", where, source, path)
            pointwise = build_conv(
                dims=here.dims,
                in_channels=here.channels * multiplier,
                out_channels=_positive(get("out", here.channels * multiplier), "out"),
                kernel=1,
                bias=bias,
                name=f"{name}.pointwise",
                labels=labels,
            )
            source = self.add(pointwise, (source,), f"{name}.pointwise", where, path)
            return self._block(layer, f"{name}.pointwise", where, source, path)
        transposed = op == "conv_transpose"
        spec = build_conv(
            out_channels=_positive(get("out", here.channels), "out"),
            kernel=_text(get("kernel", 1 if op == "pw" else (2 if transposed else 3))),
            stride=_text(get("stride", 2 if transposed else 1)),
            padding=_text(get("padding", 0)),
            dilation=_text(get("dilation", 1)),
            groups=int(get("groups", 1)),
            bias=bias,
            transpose=transposed,
            output_padding=_text(get("output_padding", 0)),
            padding_mode=str(get("padding_mode", "zeros")),
            name=name,
            **common,
        )
        source = self.add(spec, (source,), name, where, path)
        return self._block(layer, name, where, source, path)

    def _block(self, layer: dict[str, Any], name: str, where: str, source: int, path: str) -> int:
        """``bn: true`` and ``act: relu`` on a conv: BatchNorm and an activation after it."""
        here = self.tensor(source)
        if flag(layer.get("bn", False), "bn"):
            source = self.add(
                NormSpec(here.channels, here.dims, f"{name}.bn"),
                (source,),
                f"{name}.bn",
                where,
                path,
            )
        return self._activation(layer, name, where, source, path)

    def _activation(
        self, layer: dict[str, Any], name: str, where: str, source: int, path: str
    ) -> int:
        """``act: relu`` on a conv or a residual block: the activation after it."""
        act = layer.get("act")
        if not act or str(act).lower() == "none":
            return source
        here = self.tensor(source)
        return self.add(
            self._act(str(act), layer, f"{name}.{act}", here),
            (source,),
            f"{name}.{str(act).lower()}",
            where,
            path,
        )

    def _act(self, act: str, layer: dict[str, Any], name: str, here: InputSpec) -> ActSpec:
        if act.lower() not in ACTIVATIONS:
            raise SpecError("act", f"act {act!r} must be one of {', '.join(ACTIVATIONS)}")
        slope = number(layer.get("slope", 0.01), "slope")
        return ActSpec(act.lower(), here.dims, here.channels, slope, name)

    def _residual(
        self, layer: dict[str, Any], name: str, where: str, source: int, path: str
    ) -> int:
        main = layer.get("main")
        if not isinstance(main, list) or not main:
            raise SpecError("main", "a residual block needs a 'main' list of layers")
        end_main = self.layers(main, source, f"{name}.", "main", where)
        shortcut = layer.get("shortcut") or []
        end_short = self.layers(shortcut, source, f"{name}.shortcut.", "shortcut", where)
        here = self.tensor(end_main)
        joined = self.add(
            ShapeSpec("add", here.dims, here.channels, f"{name}.add"),
            (end_main, end_short),
            f"{name}.add",
            where,
            path,
        )
        return self._activation(layer, name, where, joined, path)


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def flag(value: Any, key: str) -> bool:
    """A yes/no key: true/false (also yes/no, on/off, 1/0); anything else is an error, not
    silently true."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise SpecError(key, f"{key} {value!r} must be true or false")


def number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SpecError(key, f"{key} {value!r} must be a number")
    try:
        return float(value)
    except ValueError:
        raise SpecError(key, f"{key} {value!r} must be a number") from None


def _positive(value: Any, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SpecError(key, f"{key} {value!r} must be a positive integer")
    return value


def _text(value: Any) -> Any:
    """Lists in a file ([3, 5]) become the per-dimension form the spec parser takes (3x5)."""
    if isinstance(value, list | tuple):
        return "x".join(str(v) for v in value)
    return value if isinstance(value, int | str) else str(value)


@functools.lru_cache(maxsize=64)
def _input_labels(source: str, dtype_label: str) -> Labels:
    """The labels of a stack input's errors (remembered: a sweep asks for the same few)."""
    return Labels(
        {
            **STACK_LABELS,
            "size": f"{source}: input size",
            "batch": f"{source}: input batch",
            "in_channels": f"{source}: input channels",
            "dtype": dtype_label,
        }
    )


def build_network(
    data: dict[str, Any],
    input_shape: tuple[int, ...] | None,
    dtype: str,
    source: str,
    dtype_label: str = "--dtype",
) -> Network:
    """The graph of a stack file's data (or of inline layers, with the input given);
    ``dtype_label`` names where the dtype came from in errors (a batch spec's ``dtype`` key)."""
    if input_shape is None and data.get("input") is None:
        raise SpecError(
            "input",
            f"{source}: no 'input' in the file: add one, like "
            "input: [1, 3, 224, 224], or give --input N,C,H,W",
        )
    shape = input_shape or parse_input(data.get("input"), f"{source}: input")
    spatial = shape[2:]
    input_spec = build_input(
        dims=len(shape) - 2,
        channels=shape[1],
        # whole numbers as they are (build_input reads "56x80" back to them); anything else
        # (a bool) as text, as before
        size=tuple(spatial)
        if spatial and all(type(v) is int for v in spatial)
        else "x".join(map(str, spatial)),
        batch=shape[0],
        dtype=dtype,
        labels=_input_labels(source, dtype_label),
    )
    builder = _Builder(input_spec, dtype)
    builder.layers(data["layers"], -1)
    network = builder.network
    if not network.nodes:
        raise SpecError("layers", f"{source}: the stack has no layers")
    network.checked = (tuple(network.nodes), network.input, tuple(builder.inputs))
    if any(len(n.inputs) > 1 for n in network.nodes):
        network.notes.append(
            "residual blocks: an add's output sees the union of its paths' receptive fields; "
            "convcalc follows the path whose field contains the other (the main path in "
            "ResNets: its 3x3 convs widen it, a 1x1 shortcut does not)"
        )
    return network


def network_input(
    data: dict[str, Any],
    shape: tuple[int, ...] | None,
    size: Any,
    batch: int | None,
    dims: int | None,
    source: str,
    labels: Labels,
) -> tuple[int, ...]:
    """The input of a stack file or architecture: ``shape`` (--input) if given, else the file's;
    ``size`` and ``batch`` override its spatial size and batch (CIFAR-sized costs of a ResNet:
    ``--size 32``); ``dims`` must agree with it."""
    if shape is None:
        if data.get("input") is None:
            raise SpecError(
                "input",
                f"{source}: no 'input' in the file: add one, like "
                "input: [1, 3, 224, 224], or give --input N,C,H,W",
            )
        shape = parse_input(data["input"], f"{source}: input")
    spatial = len(shape) - 2
    if dims is not None and dims != spatial:
        raise SpecError(
            "dims",
            f"{labels['dims']} {dims}: the network's input {'x'.join(map(str, shape))} has "
            f"{spatial} spatial dimensions",
        )
    if size is not None:
        sizes = parse_ints(str(size).replace(",", "x"), spatial, "size", labels)
        if min(sizes) < 1:
            raise SpecError("size", f"{labels['size']} {size} must be positive")
        shape = (shape[0], shape[1], *sizes)
    if batch is not None:
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise SpecError("batch", f"{labels['batch']} {batch!r} must be a positive integer")
        shape = (batch, *shape[1:])
    return tuple(shape)


def export_yaml(data: dict[str, Any], shape: tuple[int, ...] | None) -> str:
    """The stack as a YAML spec file (``--export``): it loads back to the same network."""
    import yaml

    document = {"input": list(shape) if shape else data.get("input"), "layers": data["layers"]}
    return str(yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=100))
