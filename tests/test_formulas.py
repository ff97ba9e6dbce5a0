"""The closed forms against hand-derived figures. No torch is imported by the formula code."""

from __future__ import annotations

import subprocess
import sys

import pytest

from convcalc.core import formulas
from convcalc.core.spec import build_input
from convcalc.kinds import build_conv, conv

from .cases import CASES, Case


def _spec(case: Case):
    spec = build_conv(dims=case.dims, **case.layer)
    return spec, build_input(
        dims=case.dims, channels=spec.in_channels, size=case.size, batch=case.batch
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_formulas_match_hand_derivation(case: Case) -> None:
    spec, input_spec = _spec(case)
    assert conv.output_shape(spec, input_spec).value == case.output_shape
    assert conv.params(spec).value == case.params
    assert conv.macs(spec, input_spec).value == case.macs
    assert conv.flops(spec, input_spec).value == case.flops
    assert conv.bias_adds(spec, input_spec).value == case.bias_adds
    assert conv.receptive_field(spec).value == case.receptive_field


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_instantiated_formula_ends_in_its_value(case: Case) -> None:
    spec, input_spec = _spec(case)
    shown = conv.params(spec).shown
    assert shown.endswith(f"= {case.params:,}")
    assert conv.macs(spec, input_spec).shown.endswith(f"= {case.macs:,}")


def test_standard_memory_matches_torchsummary() -> None:
    # seed 002: torchsummary prints 12.25 / 98.00 / 0.56 / 110.81 MB for Conv2d(64, 256, k3, p1)
    spec = build_conv(in_channels=64, out_channels=256, kernel="3", padding="1")
    memory = conv.memory(spec, build_input(dims=2, channels=64)).value
    assert memory.input == 12_845_056  # 64*224*224*4
    assert memory.output == 51_380_224  # 256*224*224*4
    assert memory.params == 590_848  # 147,712*4
    assert memory.forward_backward == 102_760_448
    assert round(memory.total / 2**20, 2) == 110.81


@pytest.mark.parametrize("dtype, width", [("float32", 4), ("float16", 2), ("bfloat16", 2)])
def test_memory_follows_dtype(dtype: str, width: int) -> None:
    spec = build_conv(in_channels=2, out_channels=4, kernel="3", padding="1")
    memory = conv.memory(spec, build_input(dims=2, channels=2, size="8", dtype=dtype)).value
    assert memory.input == 2 * 64 * width
    assert memory.output == 4 * 64 * width
    assert memory.params == (4 * 2 * 9 + 4) * width


@pytest.mark.parametrize(
    "k, s, d, expected",
    [
        (4, 2, 1, 2),  # k4 s2: two taps reach each output
        (3, 2, 1, 2),  # odd outputs get two inputs, even ones one
        (2, 2, 1, 1),  # each output from exactly one input
        (3, 1, 2, 5),  # stride 1: like a conv, d(k-1)+1
        (3, 2, 2, 3),  # gcd 2: every tap of an even output lands on consecutive inputs
        (5, 3, 2, 3),  # taps 0 and 3 share a residue mod 3: inputs i and i-2 -> extent 3
        (1, 4, 1, 1),
    ],
)
def test_transposed_receptive_length(k: int, s: int, d: int, expected: int) -> None:
    assert formulas.conv_transpose_receptive_length(k, s, d) == expected


def test_chain_receptive_field() -> None:
    # k3 s2 then k3 s1 then k3 d2: r = 1 + 2·1 + 2·2 + 4·2 = 15; J = 2; P = 0 + 0 + 2·2 = 4
    from convcalc.core.cumulative import cumulative
    from convcalc.core.graph import graph_inputs
    from convcalc.core.spec import chain

    specs = [
        build_conv(in_channels=1, out_channels=1, kernel="3", stride="2"),
        build_conv(in_channels=1, out_channels=1, kernel="3"),
        build_conv(in_channels=1, out_channels=1, kernel="3", dilation="2", padding="2"),
    ]
    network_input = build_input(dims=2, channels=1, size="32")
    nodes = chain(specs)
    last = cumulative(nodes, graph_inputs(nodes, network_input), network_input)[-1]
    assert last.receptive_field == (15, 15)
    assert last.effective_stride == (2, 2) and last.effective_padding == (4, 4)


def test_whole_strides_stay_ints_and_fractional_ones_are_exact() -> None:
    """core.cumulative keeps a whole effective stride or padding an int (no fractions import on
    a plain network: start-up) and a fractional one an exact Fraction, equal either way."""
    from fractions import Fraction

    from convcalc.core.cumulative import cumulative, fraction_text
    from convcalc.core.graph import graph_inputs
    from convcalc.core.spec import chain

    # transposed k4 s2 p1 (span 4): J = 1/2, P = 0 + 1·(4 - 1 - 1)/2 = 1 (whole: an int);
    # then k3 s2 p1: J = 1/2·2 = 1 (a Fraction equal to 1), P = 1 + 1·1/2 = 3/2;
    # then k3 s1 p1 over that: J = 1, P = 3/2 + 1·1 = 5/2
    specs = [
        build_conv(
            dims=1,
            in_channels=1,
            out_channels=1,
            kernel="4",
            stride="2",
            padding="1",
            transpose=True,
        ),
        build_conv(dims=1, in_channels=1, out_channels=1, kernel="3", stride="2", padding="1"),
        build_conv(dims=1, in_channels=1, out_channels=1, kernel="3", padding="1"),
    ]
    network_input = build_input(dims=1, channels=1, size="16")
    nodes = chain(specs)
    first, second, third = cumulative(nodes, graph_inputs(nodes, network_input), network_input)
    assert first.effective_stride == (Fraction(1, 2),) and first.effective_padding == (1,)
    assert type(first.effective_padding[0]) is int
    assert second.effective_stride == (1,) and second.effective_padding == (Fraction(3, 2),)
    assert third.effective_padding == (Fraction(5, 2),)
    assert [fraction_text(v) for v in (*first.effective_stride, *third.effective_padding)] == [
        "1/2",
        "5/2",
    ]
    assert third.to_dict()["effective_padding"] == [2.5]
    # the plain chain of test_chain_receptive_field: ints throughout
    plain = chain([build_conv(dims=1, in_channels=1, out_channels=1, kernel="3", stride="2")])
    (only,) = cumulative(plain, graph_inputs(plain, network_input), network_input)
    assert only.effective_stride == (2,) and type(only.effective_stride[0]) is int


def test_formula_modules_import_no_torch() -> None:
    code = (
        "import sys, convcalc.core.formulas, convcalc.core.spec, convcalc.core.report, "
        "convcalc.cli.app;"
        "print('torch' in sys.modules, 'fvcore' in sys.modules, 'rich' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]
