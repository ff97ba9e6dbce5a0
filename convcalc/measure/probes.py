"""Receptive fields measured by autograd on stand-ins of the layers (one channel, positive
weights): per layer, cumulative through a network, and on a user's model."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from convcalc.core.spec import InputSpec, Ints, Node
from convcalc.kinds import LayerSpec, geometry
from convcalc.measure.build import user_code
from convcalc.measure.rfprobe import (
    BORDER,
    LAYER_BORDER,
    cumulative_fields,
    model_fields,
    window_field,
)

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


def _probe_window(transposed: bool, kernel: Ints, stride: Ints, dilation: Ints) -> Ints:
    """The probe of one window geometry: see :func:`convcalc.measure.rfprobe.window_field` (one
    window per axis: its size grows with neither the stride nor the dilation's holes)."""
    return window_field(transposed, kernel, stride, dilation)


def _probe_adaptive(output_size: Ints, input_size: Ints) -> Ints:
    """Widest window of adaptive average pooling, by autograd at every output position."""
    dims = len(output_size)
    x = torch.ones((1, 1, *input_size), dtype=torch.float64, requires_grad=True)
    y = getattr(nn, f"AdaptiveAvgPool{dims}d")(output_size)(x)
    extents = [0] * dims
    for position in itertools.product(*(range(n) for n in y.shape[2:])):
        extents = [max(e, g) for e, g in zip(extents, _gradient_extents(y, x, position))]
    return tuple(extents)


def probe_cumulative_receptive_field(
    nodes: Sequence[Node],
    input_spec: InputSpec,
    input_sizes: Sequence[Ints] | None = None,
    layer_fields: Sequence[Ints] | None = None,
) -> list[Ints | None]:
    """Receptive field of one output of every node, relative to the network input, measured
    layer by layer (:func:`convcalc.measure.rfprobe.cumulative_fields`: one probe per layer
    geometry, memory independent of depth); None for flat nodes."""
    return cumulative_fields(nodes, input_spec, input_sizes, layer_fields)


def model_receptive_field(model: nn.Module, input_shape: Ints) -> tuple[Ints | None, str]:
    """The receptive field of a user's model's output, as geometry: measured on a stand-in of
    the model (positive constant weights, activations and norms as the identity, max pools
    probed as averages) by :func:`convcalc.measure.rfprobe.model_fields`, not through the real
    random weights."""
    field, of, _ = model_receptive_field_why(model, input_shape)
    return field, of


def model_receptive_field_why(model: nn.Module, input_shape: Ints) -> tuple[Ints | None, str, str]:
    """:func:`model_receptive_field`, with why it is not measured where it is not (the
    probe's own notes: the stand-in failed, no spatial output...); ``""`` where it is."""
    if len(input_shape) < 3:
        return None, "", "the input has no spatial dimensions"
    with user_code():
        fields = model_fields(model, tuple(input_shape), every_layer=False)
    if fields.receptive_field is not None:
        largest = "x".join(map(str, fields.sizes_tried[-1])) if fields.sizes_tried else ""
        cut = any(
            o.name == fields.receptive_field_of and o.note == BORDER for o in fields.outputs
        ) or any(
            f.name == fields.receptive_field_of and f.note.startswith(LAYER_BORDER)
            for f in fields.layers
        )
        tried = f"{largest}; {fields.limit}" if fields.limit else largest
        why = f"{LAYER_BORDER} ({tried}): the field is at least this" if cut else ""
        return fields.receptive_field, fields.receptive_field_of, why
    reasons = [n for n in fields.notes if not n.startswith("stand-in replaced")]
    reasons += [f"{o.name}: {o.note}" for o in fields.outputs if o.note]
    reasons += [f"{f.name}: {f.note}" for f in fields.layers if f.note]
    why = "; ".join(dict.fromkeys(reasons)) or "no output or layer has a spatial field"
    return None, "", why
