"""Whole networks without repeated work (issue 12): the model's receptive-field stand-in computes
its convolutions without their channels, and it is the same function as the dense stand-in."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from convcalc.measure import rfprobe
from convcalc.measure.rfprobe import _ConstantConv, model_fields

CONVS = {
    (False, 1): nn.Conv1d,
    (False, 2): nn.Conv2d,
    (False, 3): nn.Conv3d,
    (True, 1): nn.ConvTranspose1d,
    (True, 2): nn.ConvTranspose2d,
    (True, 3): nn.ConvTranspose3d,
}


def dense_stand_in(conv: nn.Module) -> nn.Module:
    """The stand-in conv as it was before: the layer itself, every weight 1/fan-in, bias 0."""
    with torch.no_grad():
        weight = conv.weight
        channels = weight.shape[0] // conv.groups if conv.transposed else weight.shape[1]
        weight.fill_(1.0 / (channels * math.prod(conv.kernel_size)))
        if conv.bias is not None:
            conv.bias.zero_()
    return conv


@st.composite
def convs(draw: Any) -> tuple[nn.Module, torch.Tensor, int]:
    dims = draw(st.sampled_from([1, 2, 3]))
    transposed = draw(st.booleans())
    groups = draw(st.sampled_from([1, 2, 3]))
    cin = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 3))
    kernel = draw(st.integers(1, 3))
    stride = draw(st.integers(1, 3))
    dilation = draw(st.integers(1, 2))
    padding = draw(st.integers(0, 2))
    mode = "zeros" if transposed else draw(st.sampled_from(["zeros", "reflect", "circular"]))
    size = draw(st.integers(5, 9 if dims < 3 else 6))
    kwargs: dict[str, Any] = {"stride": stride, "padding": padding, "dilation": dilation}
    if transposed:
        kwargs["output_padding"] = draw(st.integers(0, max(stride, dilation) - 1))
    else:
        kwargs["padding_mode"] = mode
    conv = CONVS[(transposed, dims)](cin, cout, kernel, groups=groups, **kwargs).double()
    batched = draw(st.booleans())
    shape = ((2,) if batched else ()) + (cin,) + (size,) * dims
    x = torch.rand(shape, dtype=torch.float64) + 0.5
    return conv, x, dims


@settings(max_examples=60, deadline=None)
@given(convs())
def test_channel_free_conv_is_the_dense_stand_in(case: tuple[nn.Module, torch.Tensor, int]) -> None:
    conv, x, dims = case
    try:
        expected = dense_stand_in(conv)(x)
    except RuntimeError:  # torch refuses the geometry (reflect padding wider than the input)
        with pytest.raises(RuntimeError):
            _ConstantConv(conv, dims)(x)
        return
    got = _ConstantConv(conv, dims)(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_transposed_output_size_is_followed() -> None:
    conv = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, groups=2).double()
    x = torch.rand(1, 4, 5, 5, dtype=torch.float64)
    # 5 -> (5 - 1)·2 - 2 + 3 = 9, or 10 with output padding 1 (asked for by output_size)
    got = _ConstantConv(conv, 2)(x, output_size=[10, 10])
    assert got.shape == (1, 6, 10, 10)
    torch.testing.assert_close(got, dense_stand_in(conv)(x, output_size=[10, 10]))


class Split(nn.Module):
    """Channels that see different fields (a split, a 1×1 and a 5×5 branch, a concat), then a
    grouped conv whose first group reads only the 1×1 branch, and a dense 3×3."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.narrow = nn.Conv2d(4, 4, 1)
        self.wide = nn.Conv2d(4, 4, 5, padding=2, padding_mode="reflect")
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.up = nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1)
        self.head = nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.stem(x).chunk(2, dim=1)
        y = self.grouped(torch.cat([self.narrow(a), self.wide(b)], dim=1))
        return self.head(torch.relu(self.up(y)))


def test_model_fields_equal_the_dense_stand_ins(monkeypatch: pytest.MonkeyPatch) -> None:
    # stem k3 s2: 3, J 2; grouped conv, channel 0 (group 0: the 1×1 branch only): 3 + 2·2 = 7;
    # up (transposed k4 s2 p1) reads two neighbours: 7 + 2 = 9 or 11 over its period; head k3
    # (J 1): 11 + 2 = 13 at most. The channel-free stand-in must find what the dense one finds.
    shape = (1, 3, 24, 24)
    fast = model_fields(Split(), shape)
    monkeypatch.setattr(rfprobe, "_constant_conv", lambda module: False)
    dense = model_fields(Split(), shape)
    assert fast == dense
    assert [layer.receptive_field for layer in fast.layers][:3] == [(3, 3), (3, 3), (11, 11)]
    assert fast.layers[3].receptive_field == (7, 7)  # grouped: channel 0 reads only the 1×1
    assert fast.receptive_field == dense.receptive_field
    quick = model_fields(Split(), shape, every_layer=False)
    assert quick.receptive_field == fast.receptive_field
    assert quick.receptive_field_of == fast.receptive_field_of


class ReadsTheWeight(nn.Module):
    """A forward that reads a conv's weight itself: the stand-in still runs it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return torch.nn.functional.conv2d(y, self.conv.weight[:, :3].transpose(0, 1), padding=1)


def test_a_forward_reading_a_conv_weight_still_runs() -> None:
    # conv k3: 3; the functional conv k3 p1 with the stand-in's weight: 3 + 2 = 5
    fields = model_fields(ReadsTheWeight(), (1, 2, 16, 16))
    assert fields.receptive_field == (5, 5)
