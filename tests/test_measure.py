"""The measurement side against the same hand-derived figures, on the CPU and on the meta device."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from convcalc.core.spec import build_input
from convcalc.kinds import build_conv
from convcalc.measure.build import build_layer
from convcalc.measure.probes import probe_receptive_field
from convcalc.measure.run import measure_chain

from .cases import CASES, Case
from .seed_cases import (
    FUNCTIONAL_INPUT,
    FUNCTIONAL_KERNEL,
    FUNCTIONAL_STRIDE_1,
    FUNCTIONAL_STRIDE_2,
)


def _spec(case: Case):
    spec = build_conv(dims=case.dims, **case.layer)
    return spec, build_input(
        dims=case.dims, channels=spec.in_channels, size=case.size, batch=case.batch
    )


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_measurement_matches_hand_derivation(case: Case, device: str) -> None:
    spec, input_spec = _spec(case)
    (layer,) = measure_chain([spec], input_spec, device).layers
    assert layer.output_shape == case.output_shape
    assert layer.params == case.params
    assert layer.macs == case.macs
    assert layer.flops == case.flops
    assert layer.receptive_field == case.receptive_field


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_dispatch_counter_equals_flop_counter_mode(case: Case) -> None:
    """convcalc's counter applies torch's registered formulas without FlopCounterMode's module
    tracker (which imports torch._dynamo); both must give the same count."""
    spec, input_spec = _spec(case)
    layer = build_layer(spec, "meta")
    with FlopCounterMode(display=False) as counter:
        layer(torch.zeros(input_spec.shape, device="meta"))
    (measured,) = measure_chain([spec], input_spec, "meta").layers
    assert measured.flops == counter.get_total_flops()


@pytest.mark.parametrize("stride, expected", [(1, FUNCTIONAL_STRIDE_1), (2, FUNCTIONAL_STRIDE_2)])
def test_layer_builder_reproduces_seed_001_values(stride: int, expected: list) -> None:
    """The layer convcalc builds computes what the document's functional conv2d does."""
    spec = build_conv(in_channels=1, out_channels=1, kernel="3", stride=str(stride), bias=False)
    layer = build_layer(spec)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(FUNCTIONAL_KERNEL, dtype=torch.float32)[None, None])
        out = layer(torch.tensor(FUNCTIONAL_INPUT, dtype=torch.float32)[None, None])
    assert out[0, 0].tolist() == expected


def test_counted_layers_start_at_zero_and_timed_layers_at_torchs_draw(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """build_layer skips torch's random draw (zeros: no NaN or denormal reaches a run) unless
    torch_init; the draw is restored afterwards, and a timed run (--time) gets torch's init."""
    from convcalc.measure import calibrate, run
    from convcalc.measure.run import Extras

    spec = build_conv(in_channels=8, out_channels=16, kernel="3", bias=True)
    zero = build_layer(spec)
    assert not zero.weight.any() and not zero.bias.any()
    drawn = build_layer(spec, torch_init=True)
    assert drawn.weight.abs().sum() > 0 and drawn.bias.abs().sum() > 0
    assert torch.nn.Conv2d(8, 16, 3).weight.abs().sum() > 0  # torch's init put back
    seen: list[torch.nn.Module] = []

    def time_layer(module: torch.nn.Module, *args: object, **kwargs: object) -> object:
        seen.append(module)
        return calibrate.LayerTiming(0.001, 1, "cpu", 1, 0.2, 3, False, None)

    monkeypatch.setattr(run, "time_layer", time_layer)
    measure_chain([spec], build_input(dims=2, channels=8, size=8), "cpu", Extras(time=True))
    assert seen and seen[0].weight.abs().sum() > 0


def test_receptive_field_probe_sees_dilation_holes_and_transposed_gaps() -> None:
    # k3 s2 d2 transposed: odd outputs receive nothing; even ones three consecutive inputs
    spec = build_conv(
        dims=1, in_channels=1, out_channels=1, kernel="3", stride="2", dilation="2", transpose=True
    )
    assert probe_receptive_field(spec) == (3,)
    spec = build_conv(dims=1, in_channels=1, out_channels=1, kernel="3", dilation="4")
    assert probe_receptive_field(spec) == (9,)


def test_fvcore_unsupported_operator_is_reported() -> None:
    # reflect padding runs aten::pad before the convolution: fvcore has no handler for it
    spec = build_conv(
        in_channels=2, out_channels=2, kernel="3", padding="1", padding_mode="reflect"
    )
    (layer,) = measure_chain([spec], build_input(dims=2, channels=2, size="8"), "cpu").layers
    assert any("aten::pad" in note for note in layer.notes)


def test_same_padding_is_counted_by_fvcore_through_convcalcs_handle() -> None:
    spec = build_conv(in_channels=2, out_channels=2, kernel="3", padding="same")
    measured = measure_chain([spec], build_input(dims=2, channels=2, size="8"), "cpu")
    assert measured.layers[0].macs == 2 * 64 * 2 * 9
    assert "aten::_convolution_mode" in measured.sources["macs"]


def test_memory_is_measured_for_the_dtype() -> None:
    spec = build_conv(in_channels=2, out_channels=4, kernel="1")
    half = measure_chain([spec], build_input(dims=2, channels=2, size="4", dtype="float16"), "cpu")
    assert half.total_memory.input == 2 * 16 * 2
    assert half.total_memory.params == (8 + 4) * 2


def test_gc_freeze_after_torch_only_under_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """convcalc._runtime.torch_loaded freezes the heap for convcalc's own command only: a
    library caller's process is left as it was."""
    import gc

    from convcalc import _runtime

    frozen: list[bool] = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    monkeypatch.setattr(_runtime, "command_line", False)
    _runtime.torch_loaded()
    assert frozen == []
    monkeypatch.setattr(_runtime, "command_line", True)
    _runtime.torch_loaded()
    assert frozen == [True]
