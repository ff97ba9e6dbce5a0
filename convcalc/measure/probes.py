"""Receptive fields measured by autograd on stand-ins of the layers (one channel, positive
weights): per layer, cumulative through a network, and on a user's model."""

from __future__ import annotations

import functools
import itertools
import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from convcalc.core.spec import InputSpec, Ints, Node
from convcalc.kinds import ConvSpec, LayerSpec, geometry, kind_of
from convcalc.measure.build import KIT, GraphModule, user_code

# --- receptive field probe ------------------------------------------------------------------


def _gradient_extents(y: torch.Tensor, x: torch.Tensor, index: Sequence[int]) -> list[int]:
    """How many input positions along each axis one output element depends on (0 if none)."""
    (grad,) = torch.autograd.grad(y[(0, 0) + tuple(index)], x, retain_graph=True)
    hits = torch.nonzero(grad[0, 0]).T
    return [int(h.max() - h.min()) + 1 if h.numel() else 0 for h in hits]


def _gradient_extent(y: torch.Tensor, x: torch.Tensor, index: Sequence[int], axis: int) -> int:
    return _gradient_extents(y, x, index)[axis]


def probe_receptive_field(spec: LayerSpec, input_size: Ints | None = None) -> Ints:
    """Extent of the nonzero input gradient of one output element, per spatial dimension.

    The probe has one channel, no bias, all weights 1, padding 0 (padding moves where outputs
    sit, not how far one reaches) and float64. Its input is just long enough that the output
    positions measured have every tap inside it; it is measured at every output position of one
    stride period, and the largest extent is kept. Elementwise layers (batch norm, activations)
    connect each position to itself only: 1.
    """
    shape = geometry(spec)
    if shape.kind in ("whole", "flatten"):
        return ()
    if shape.kind == "adaptive" and input_size is not None:
        return _probe_adaptive(shape.output_size, input_size)
    if shape.kind != "window":
        return tuple(1 for _ in range(spec.dims))
    # a pool's window probed as a conv of ones: max pooling's gradient would reach only the
    # maximum of each window
    return _probe_window(shape.transposed, shape.kernel, shape.stride, shape.dilation)


@functools.lru_cache(maxsize=4096)
def _probe_window(transposed: bool, kernel: Ints, stride: Ints, dilation: Ints) -> Ints:
    """The probe of one window geometry (kernel, stride, dilation), measured once per process:
    a sweep repeats geometries, and the probe depends on nothing else."""
    spec = ConvSpec(1, 1, kernel, stride, (0,) * len(kernel), dilation, transposed=transposed)
    layer = getattr(nn, spec.torch_class_name)(
        1,
        1,
        spec.kernel_size,
        stride=spec.stride,
        padding=0,
        dilation=spec.dilation,
        bias=False,
        dtype=torch.float64,
    )
    with torch.no_grad():
        layer.weight.fill_(1.0)
    spans = [d * (k - 1) + 1 for k, d in zip(spec.kernel_size, spec.dilation)]
    if spec.transposed:
        lengths = [-(-span // s) + 2 for span, s in zip(spans, spec.stride)]
    else:
        lengths = [span + 2 * s for span, s in zip(spans, spec.stride)]
    x = torch.ones((1, 1, *lengths), dtype=torch.float64, requires_grad=True)
    y = layer(x)
    out_size = y.shape[2:]
    # a transposed layer's outputs span-1 .. span-1+s-1 see only real inputs (output span-1
    # always receives input 0 through the last tap); a plain conv on an unpadded input has every
    # output inside it
    if spec.transposed:
        base = [span - 1 for span in spans]
        counts = list(spec.stride)
    else:
        base = [n // 2 for n in out_size]
        counts = list(out_size)
    extents: list[int] = []
    for axis in range(spec.dims):
        first = base[axis] if spec.transposed else 0
        widest = 0
        for position in range(first, first + counts[axis]):
            index = list(base)
            index[axis] = position
            widest = max(widest, _gradient_extent(y, x, index, axis))
        extents.append(widest)
    return tuple(extents)


def _probe_adaptive(output_size: Ints, input_size: Ints) -> Ints:
    """Widest window of adaptive average pooling, by autograd at every output position."""
    dims = len(output_size)
    x = torch.ones((1, 1, *input_size), dtype=torch.float64, requires_grad=True)
    y = getattr(nn, f"AdaptiveAvgPool{dims}d")(output_size)(x)
    extents = [0] * dims
    for position in itertools.product(*(range(n) for n in y.shape[2:])):
        extents = [max(e, g) for e, g in zip(extents, _gradient_extents(y, x, position))]
    return tuple(extents)


def _probe_dtype(nodes: Sequence[Node]) -> torch.dtype:
    """float32 (six times faster here) unless the smallest gradient the probe can produce, the
    product of 1/taps along the longest path, could underflow it: then float64."""
    depth: dict[int, float] = {-1: 0.0}
    for index, node in enumerate(nodes):
        shape = geometry(node.spec)
        taps = shape.taps if shape.kind == "window" else 1
        depth[index] = max(depth[i] for i in node.inputs) + math.log10(taps)
    return torch.float32 if max(depth.values()) < 30 else torch.float64


def _probe_module(
    spec: LayerSpec, real_size: Ints, dtype: torch.dtype = torch.float64
) -> nn.Module | None:
    """The one-channel stand-in of a layer in the receptive-field probe (its kind's): its
    geometry, every weight 1/taps (an average: values stay at most 1); None where the probe stops
    (flat layers)."""
    module: nn.Module | None = kind_of(spec).stand_in(spec, KIT, real_size, dtype)
    return module


def _geometry_bound(
    nodes: Sequence[Node], last: int, dims: int, modules: Sequence[nn.Module | None]
) -> tuple[list[int], list[int]]:
    """Upper bounds, per axis, of the receptive field and stride of node ``last``'s output, from
    kernel extents and strides alone (transposed layers counted as stride 1)."""
    fields: dict[int, list[int]] = {-1: [1] * dims}
    jumps: dict[int, list[int]] = {-1: [1] * dims}
    for index, node in enumerate(nodes[: last + 1]):
        source = max(node.inputs, key=lambda i: sum(fields[i]))
        field, jump = list(fields[source]), list(jumps[source])
        shape = geometry(node.spec)
        if shape.kind == "window":
            for axis in range(dims):
                field[axis] += shape.dilation[axis] * (shape.kernel[axis] - 1) * jump[axis]
                jump[axis] *= 1 if shape.transposed else shape.stride[axis]
        elif shape.kind == "adaptive" and not isinstance(modules[index], nn.Identity):
            window = _ints(getattr(modules[index], "kernel_size", 1), dims)
            field = [f + (w - 1) * j for f, w, j in zip(field, window, jump)]
            jump = [j * w for j, w in zip(jump, window)]
        fields[index], jumps[index] = field, jump
    return fields[last], jumps[last]


def _global_pool(spec: LayerSpec) -> bool:
    """Adaptive pooling to size 1: every output sees the whole input, by definition."""
    shape = geometry(spec)
    return shape.kind == "adaptive" and all(o == 1 for o in shape.output_size)


def _ints(value: Any, dims: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, tuple | list) else (int(value),) * dims


def _asymmetry(nodes: Sequence[Node], axis: int) -> int:
    """How far uneven padding ('same' with an even kernel) can shift a central output, in
    network-input positions: the probe input is made this much longer."""
    shift, jump = 0, 1
    for node in nodes:
        shape = geometry(node.spec)
        if shape.kind == "window" and not shape.transposed:
            left, right = shape.padding[axis]
            shift += abs(right - left) * jump
        if shape.kind == "window":
            jump *= shape.stride[axis]
    return 2 * shift


def probe_cumulative_receptive_field(
    nodes: Sequence[Node],
    input_spec: InputSpec,
    input_sizes: Sequence[Ints] | None = None,
    layer_fields: Sequence[Ints] | None = None,
) -> list[Ints | None]:
    """Receptive field of one output of every node, relative to the network input, by autograd
    through a one-channel stand-in of the whole network (None for flat nodes).

    For node i the probe input is larger than any receptive field node i could have, by a
    multiple of the network's total stride (so every node's output size, and every residual
    join, behaves as at the real size); the gradient of the central output element (of one
    stride period of them, where transposed layers make positions differ) is taken, and the
    extent of its nonzero entries per axis is the measurement.
    """
    dims = input_spec.dims
    sizes = input_sizes or [input_spec.size] * len(nodes)
    dtype = _probe_dtype(nodes)
    modules = [_probe_module(node.spec, size, dtype) for node, size in zip(nodes, sizes)]
    spatial = []
    for index, module in enumerate(modules):
        if module is None:
            break
        spatial.append(index)
    shapes = [geometry(node.spec) for node in nodes]
    has_transposed = any(shape.transposed for shape in shapes)
    graph = GraphModule([m or nn.Identity() for m in modules], [n.inputs for n in nodes])
    total_jump = [1] * dims
    for shape, module in zip(shapes, modules):
        if isinstance(module, nn.AvgPool1d | nn.AvgPool2d | nn.AvgPool3d) and (
            shape.kind == "adaptive"
        ):
            total_jump = [j * s for j, s in zip(total_jump, _ints(module.stride, dims))]
        if shape.kind == "window" and not shape.transposed:
            total_jump = [j * s for j, s in zip(total_jump, shape.stride)]
    results: list[Ints | None] = [None] * len(nodes)
    measured = [index for index in spatial if not _global_pool(nodes[index].spec)]
    if layer_fields is not None:
        # a layer fed by the network input: its field relative to the network input is its own,
        # already measured by its probe (the same gradient, on a smaller input)
        for index in list(measured):
            if nodes[index].inputs == (-1,) and len(layer_fields[index]) == dims:
                results[index] = layer_fields[index]
                measured.remove(index)
    if not measured:
        return results
    # one probe input for all nodes, a little larger than any of their fields could be: the
    # central output of a node then sees only real input positions. Its length is congruent to
    # the real input's modulo the network's total stride, so that every node's output size
    # rounds as at the real size (and residual joins still match).
    need = [8] * dims
    for index in measured:
        bound, jump = _geometry_bound(nodes, index, dims, modules)
        need = [max(n, b + 2 * j + 4) for n, b, j in zip(need, bound, jump)]
    need = [n + _asymmetry(nodes, axis) for axis, n in enumerate(need)]
    lengths = [n + (real - n) % step for real, n, step in zip(input_spec.size, need, total_jump)]
    x = torch.ones((1, 1, *lengths), dtype=dtype, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outputs = graph.run(x, last=measured[-1])
    for index in measured:
        source = nodes[index].inputs[0]
        if isinstance(modules[index], nn.Identity) and source >= 0 and results[source]:
            # batch norm, activations: the probe's output here is its input's, unchanged
            results[index] = results[source]
            continue
        y = outputs[index]
        center = [n // 2 for n in y.shape[2:]]
        if not has_transposed:  # every position alike: one gradient gives every axis
            results[index] = tuple(_gradient_extents(y, x, center))
            continue
        # transposed layers: positions differ; every combination of one period per axis
        periods = [
            min(
                math.prod(shape.stride[axis] for shape in shapes[: index + 1] if shape.stride),
                8,
            )
            for axis in range(dims)
        ]
        extents = [0] * dims
        for offsets in itertools.product(*(range(p) for p in periods)):
            position = [min(c + o, n - 1) for c, o, n in zip(center, offsets, y.shape[2:])]
            extents = [max(e, g) for e, g in zip(extents, _gradient_extents(y, x, position))]
        results[index] = tuple(extents)
    return results


def model_receptive_field(model: nn.Module, input_shape: Ints) -> tuple[Ints | None, str]:
    """Extent of the nonzero input gradient of the output's central element (its first, for a
    flat output), on the real model in float64 with a random positive input."""
    if len(input_shape) < 3:
        return None, ""
    import copy

    probe = copy.deepcopy(model).double().eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(input_shape, generator=generator, dtype=torch.float64) + 0.5
    x.requires_grad_(True)
    with user_code():
        y = probe(x)
    index = (0, 0, *(n // 2 for n in y.shape[2:])) if y.dim() > 2 else (0,) * y.dim()
    (grad,) = torch.autograd.grad(y[index], x)
    hits = torch.nonzero(grad[0].abs().sum(0)).T
    extents = tuple(int(h.max() - h.min()) + 1 if h.numel() else 0 for h in hits)
    return extents, "output[" + ", ".join(map(str, index)) + "]"
