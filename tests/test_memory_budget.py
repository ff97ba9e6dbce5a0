"""Memory a user can plan a GPU budget on: saved for backward, inference peak, a training step
and what fits. Hand derivations, formula == torch on random chains, and the errors."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from convcalc.core import memory_model as mm
from convcalc.core.spec import InputSpec, Node, chain
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
    output_spec,
)
from convcalc.measure import memory as me


def conv(i: int, o: int, k: int = 3, **kw: object) -> LayerSpec:
    return build_conv(in_channels=i, out_channels=o, kernel=k, **kw)  # type: ignore[arg-type]


def both_saved(nodes: tuple[Node, ...], x: InputSpec, **kw: object) -> tuple[int, int]:
    formula = mm.saved_for_backward(nodes, x, **kw).total.value  # type: ignore[arg-type]
    measured = me.measure_network_saved(nodes, x, **kw).total  # type: ignore[arg-type]
    return formula, measured


# --- hand derivations -----------------------------------------------------------------------


def test_conv_saves_its_input() -> None:
    # Conv2d(3,16,k3) on 1×3×32×32 float32 saves its input: 3·32·32·4 = 12,288 B (the weight is
    # a parameter, saved by reference, not counted)
    x = InputSpec(1, 3, (32, 32))
    assert both_saved(chain([conv(3, 16)]), x) == (12_288, 12_288)
    # float16: half of it, 6,144 B
    x16 = InputSpec(1, 3, (32, 32), "float16")
    assert both_saved(chain([conv(3, 16)]), x16) == (6_144, 6_144)


def test_conv_bn_relu() -> None:
    # conv input 3·32·32·4 = 12,288; conv output 16·30·30 = 14,400 elements = 57,600 B.
    # BN saves its input 57,600 + save_mean/save_invstd 2·16·4 = 128 -> 57,728;
    # ReLU saves its output 57,600. Total 12,288 + 57,728 + 57,600 = 127,616 B
    x = InputSpec(1, 3, (32, 32))
    nodes = chain([conv(3, 16), NormSpec(16, 2), ActSpec("relu", 2, 16)])
    formula = mm.saved_for_backward(nodes, x)
    measured = me.measure_network_saved(nodes, x)
    assert [d.value for d in formula.layers] == [12_288, 57_728, 57_600]
    assert list(measured.layers.values()) == [12_288, 57_728, 57_600]
    assert formula.total.value == measured.total == 127_616
    # in eval mode BN keeps no statistics: 127,616 - 128 = 127,488
    assert both_saved(nodes, x, training=False) == (127_488, 127_488)
    # an in-place ReLU saves its output, which is now the BN output's storage: same bytes
    assert both_saved(nodes, x, inplace=(2,)) == (127_616, 127_616)


def test_depthwise_separable_block_shares_the_relu_output() -> None:
    # 1×8×16×16 float32: every 8-channel tensor is 8·16·16·4 = 8,192 B.
    # dw conv saves its input 8,192; BN 8,192 + 2·8·4 = 8,256; ReLU its output 8,192;
    # the pointwise conv saves its input, the same ReLU output: shared, 0.
    # Total 8,192 + 8,256 + 8,192 = 24,640 B
    x = InputSpec(1, 8, (16, 16))
    nodes = chain(
        [conv(8, 8, padding=1, groups=8), NormSpec(8, 2), ActSpec("relu", 2, 8), conv(8, 16, 1)]
    )
    formula = mm.saved_for_backward(nodes, x)
    measured = me.measure_network_saved(nodes, x)
    assert [d.value for d in formula.layers] == [8_192, 8_256, 8_192, 0]
    assert list(measured.layers.values()) == [8_192, 8_256, 8_192, 0]
    assert "shared with layer 2" in formula.layers[3].shown
    assert formula.total.value == measured.total == 24_640


def residual(with_shortcut: bool = True) -> tuple[Node, ...]:
    """stem conv, then conv-bn-relu-conv-bn (+ the stem output) -> relu."""
    return (
        Node(conv(3, 8, padding=1), (-1,)),
        Node(conv(8, 8, padding=1), (0,)),
        Node(NormSpec(8, 2), (1,)),
        Node(ActSpec("relu", 2, 8), (2,)),
        Node(conv(8, 8, padding=1), (3,)),
        Node(NormSpec(8, 2), (4,)),
        Node(ShapeSpec("add", 2, 8), (5, 0) if with_shortcut else (5,)),
        Node(ActSpec("relu", 2, 8), (6,)),
    )


def test_residual_block_saved() -> None:
    # input 1×3×16×16: 3,072 B; each 8-channel tensor 8,192 B.
    # stem saves the input 3,072; conv1 the stem output 8,192; bn2 8,192 + 64; relu3 its
    # output 8,192; conv4 the relu3 output (shared, 0); bn5 8,192 + 64; add 0; relu7 8,192.
    # Total 3,072 + 8,192 + 8,256 + 8,192 + 8,256 + 8,192 = 44,160 B
    x = InputSpec(1, 3, (16, 16))
    formula = mm.saved_for_backward(residual(), x)
    measured = me.measure_network_saved(residual(), x)
    expected = [3_072, 8_192, 8_256, 8_192, 0, 8_256, 0, 8_192]
    assert [d.value for d in formula.layers] == expected
    assert list(measured.layers.values()) == expected
    assert formula.total.value == measured.total == 44_160


def test_residual_block_peak_inference_holds_the_shortcut() -> None:
    # input 3,072 B (held by the caller throughout), every other tensor T = 8,192 B.
    # While layer 2 (BN) runs: input + stem output (the add still needs it) + conv1 out + bn out
    # = 3,072 + 3·8,192 = 27,648 B, and the same until the add; without the shortcut the stem
    # output is freed after conv1: 3,072 + 2·8,192 = 19,456 B
    x = InputSpec(1, 3, (16, 16))
    for nodes, expected in ((residual(True), 27_648), (residual(False), 19_456)):
        formula = mm.peak_inference(nodes, x)
        measured = me.measure_network_peak(nodes, x)
        assert formula.total.value == measured.peak == expected
        assert str(formula.at) == measured.layer
        assert [d.value for d in formula.layers] == list(measured.layers.values())


def test_chain_peak_inference_counts_pool_indices() -> None:
    # 1×4×8×8 input 1,024 B; conv(4,4,3,p1) out 1,024 B; max pool 2 out 4·4·4·4 = 256 B and,
    # while it runs, torch's int64 indices 4·4·4·8 = 512 B (dropped at once).
    # conv: 1,024 + 1,024 = 2,048; pool: 1,024 + 1,024 + 256 + 512 = 2,816 (the peak)
    x = InputSpec(1, 4, (8, 8))
    nodes = chain([conv(4, 4, padding=1), build_pool(kind="max", dims=2, channels=4)])
    formula = mm.peak_inference(nodes, x)
    measured = me.measure_network_peak(nodes, x)
    assert [d.value for d in formula.layers] == [2_048, 2_816]
    assert formula.total.value == measured.peak == 2_816
    assert measured.op == "aten.max_pool2d_with_indices.default"
    # int8 weights and activations: a quarter of the float32 activations, indices still int64
    # conv: 256 + 256 = 512; pool: 256 + 256 + 64 + 512 = 1,088
    assert mm.peak_inference(nodes, x, "int8").total.value == 1_088


class Attention(nn.Module):
    """Single-head self-attention: q, k, v, softmax(q·kᵀ/√d)·v, output projection."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.scale = dim**-0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        attn = torch.softmax(q @ k.transpose(-2, -1) * self.scale, dim=-1)
        return self.o(attn @ v)


def test_attention_block_saved_by_hand() -> None:
    # x: 1×4×8 float32 = 128 B. q, k, v projections all save x (a view of it): 128 once.
    # q @ kᵀ saves q and k: 128 + 128. The scaling by a Python number saves nothing.
    # softmax saves its output, the 1×4×4 weights: 64. attn @ v saves attn (shared) and v: 128.
    # The output projection saves its input, attn @ v: 128.
    # Total 128 + 128 + 128 + 64 + 128 + 128 = 704 B
    module = Attention(8).train()
    x = torch.randn(1, 4, 8, requires_grad=True)
    assert me.measure_saved(module, x).total == 704
    # float16: every tensor half as wide, 352 B
    half = me.measure_saved(module.half(), x.detach().half().requires_grad_())
    assert half.total == 352


# --- formula == torch on random chains --------------------------------------------------------


@st.composite
def chains(draw: st.DrawFn) -> tuple[tuple[Node, ...], InputSpec, tuple[int, ...]]:
    dims = draw(st.integers(1, 2))
    channels = draw(st.integers(1, 4))
    x = InputSpec(draw(st.integers(1, 2)), channels, (draw(st.integers(6, 10)),) * dims)
    current = x
    specs: list[LayerSpec] = []
    inplace: list[int] = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["conv", "bn", "act", "pool", "adaptive", "shape"]))
        c, n = current.channels, min(current.size)
        spec: LayerSpec
        if kind == "conv" and n >= 3:
            out = draw(st.integers(1, 4))
            mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]))
            spec = conv(
                c,
                out,
                draw(st.integers(1, 3)),
                dims=dims,
                stride=draw(st.integers(1, 2)),
                padding=draw(st.integers(0, 1)),
                padding_mode=mode,
                bias=draw(st.booleans()),
                transpose=mode == "zeros" and draw(st.integers(0, 4)) == 0,
            )
        elif kind == "bn" and current.batch * math.prod(current.size) > 1:
            # torch refuses batch norm in training with one value per channel
            spec = NormSpec(c, dims, affine=draw(st.booleans()))
        elif kind == "act":
            spec = ActSpec(draw(st.sampled_from(sorted(ACTIVATIONS))), dims, c)
            previous = specs[-1] if specs else None
            if (
                previous is not None
                and type(previous).__name__ in ("ConvSpec", "NormSpec", "PoolSpec")
                and spec.kind in mm.INPLACE_SAVES_OUTPUT | mm.INPLACE_SAVES_COPY
                and draw(st.booleans())
            ):
                inplace.append(len(specs))
        elif kind == "pool" and n >= 2:
            spec = build_pool(kind=draw(st.sampled_from(["max", "avg"])), dims=dims, channels=c)
        elif kind == "adaptive":
            size = draw(st.integers(1, 3))
            spec = AdaptivePoolSpec(draw(st.sampled_from(["max", "avg"])), dims, c, (size,) * dims)
        else:
            spec = ShapeSpec(draw(st.sampled_from(["identity", "dropout"])), dims, c)
        specs.append(spec)
        current = output_spec(spec, current)
    if draw(st.booleans()):
        specs.append(ShapeSpec("flatten", dims, current.channels))
        features = current.channels * math.prod(current.size)
        specs.append(LinearSpec(features, draw(st.integers(1, 5))))
    return chain(specs), x, tuple(inplace)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains())
def test_saved_and_peak_formula_equals_torch_on_random_chains(
    case: tuple[tuple[Node, ...], InputSpec, tuple[int, ...]],
) -> None:
    nodes, x, inplace = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's note on padded copies
        formula = mm.saved_for_backward(nodes, x, inplace=inplace)
        measured = me.measure_network_saved(nodes, x, inplace=inplace)
        assert [d.value for d in formula.layers] == list(measured.layers.values())
        assert formula.total.value == measured.total
        # the input needs no gradient (data): layers without parameters before the first
        # parameterised one record nothing
        no_grad_input = both_saved(nodes, x, inplace=inplace, input_requires_grad=False)
        assert no_grad_input[0] == no_grad_input[1]
        peak = mm.peak_inference(nodes, x, inplace=inplace)
        measured_peak = me.measure_network_peak(nodes, x, inplace=inplace)
        assert peak.total.value == measured_peak.peak
        assert [d.value for d in peak.layers] == list(measured_peak.layers.values())


def test_meta_device_measures_a_layer_too_big_to_run() -> None:
    # Conv2d(64,64,3) + ReLU on 64×64×224×224 float32: the conv saves its input
    # 64·64·224·224·4 = 822,083,584 B, the ReLU its output 64·64·222·222·4 = 807,469,056 B
    x = InputSpec(64, 64, (224, 224))
    nodes = chain([conv(64, 64), ActSpec("relu", 2, 64)])
    measured = me.measure_network_saved(nodes, x, device="meta")
    assert measured.total == mm.saved_for_backward(nodes, x).total.value == 1_629_552_640
    assert "meta" in measured.source
    assert me.measure_network_peak(nodes, x, "meta").peak == mm.peak_inference(nodes, x).total.value


# --- a training step ------------------------------------------------------------------------


SMALL = chain(
    [
        conv(3, 8, padding=1),
        NormSpec(8, 2),
        ActSpec("relu", 2, 8),
        build_pool(kind="max", dims=2, channels=8),
        ShapeSpec("flatten", 2, 8),
        LinearSpec(8 * 4 * 4, 10),
    ]
)


@pytest.mark.parametrize("optimizer", mm.OPTIMIZERS)
def test_training_step_optimizer_state_measured_equals_formula(optimizer: str) -> None:
    # parameters: conv 8·3·9 + 8 = 224; BN 16; linear 128·10 + 10 = 1,290: 1,530 = 6,120 B
    # in 6 tensors. sgd keeps nothing; momentum 6,120 B; adam/adamw 2·6,120 + 6·4 (step) = 12,264
    x = InputSpec(2, 3, (8, 8))
    formula = mm.training_step(SMALL, x, optimizer)
    measured = me.measure_network_training(SMALL, x, optimizer)
    expected_state = {"sgd": 0, "momentum": 6_120, "adam": 12_264, "adamw": 12_264}[optimizer]
    assert formula.optimizer_state.value == measured.optimizer_state == expected_state
    assert formula.params.value == measured.params == 6_120
    assert formula.grads.value == measured.grads == 6_120
    # BN running mean and var 2·8·4 + num_batches_tracked 8 = 72
    assert formula.buffers.value == measured.buffers == 72
    assert formula.saved_for_backward.value == measured.saved_for_backward
    # the transient is a bound: never below what the backward made
    assert formula.transient.value >= measured.transient > 0
    assert formula.total.value >= measured.total


def test_training_transient_equals_measurement_on_a_block() -> None:
    # conv-bn-relu on 2×3×16×16: each 16-channel activation gradient 2·16·14·14·4 = 25,088 B.
    # During BN's backward: the output's gradient, which the loss hands backward (a dense
    # tensor, held until backward returns) 25,088 + the ReLU's input grad 25,088 + BN's input
    # grad 25,088 = 75,264 B (the conv's input needs no gradient)
    x = InputSpec(2, 3, (16, 16))
    nodes = chain([conv(3, 16), NormSpec(16, 2), ActSpec("relu", 2, 16)])
    measured = me.measure_network_training(nodes, x, "sgd")
    assert measured.transient == 75_264
    assert mm.backward_transient(nodes, x).value == 75_264
    # the output (the ReLU's) is saved for backward already: nothing more to hold
    assert measured.output == mm.training_step(nodes, x, "sgd").output.value == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_training_step_peak() -> None:
    module = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    result = me.measure_training_step_cuda(module, torch.randn(2, 3, 16, 16))
    assert result["peak"] >= result["allocated_before"]


# --- sizes and what fits ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("16GiB", 16 * 2**30),
        ("80GB", 80 * 10**9),
        ("512MiB", 512 * 2**20),
        ("1e9", 10**9),
        ("1.5 KiB", 1_536),
        ("100", 100),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert mm.parse_size(text) == expected


@pytest.mark.parametrize("text", ["abc", "16 parsecs", "", "GB", "-1GB", "1e-9"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(SpecError) as error:
        mm.parse_size(text)
    assert error.value.field == "fit"
    assert str(error.value).startswith(f"--fit {text!r}")
    assert "16GiB" in str(error.value)
    assert "\n" not in str(error.value)


def test_parse_size_refuses_zero() -> None:
    with pytest.raises(SpecError, match="positive"):
        mm.parse_size("0GB")


def test_fit_is_the_largest_batch_and_checked_by_measuring() -> None:
    x = InputSpec(1, 3, (32, 32))
    nodes = chain([conv(3, 16, padding=1), NormSpec(16, 2), ActSpec("relu", 2, 16)])
    limit = mm.parse_size("64MiB")
    answers = {a.dtype: a for a in mm.fit(nodes, x, limit, "adam")}
    assert answers["int8"].max_batch_training is None
    for dtype, answer in answers.items():
        best = answer.max_batch_inference
        at = mm.inference_bytes(nodes, InputSpec(best, 3, (32, 32)), dtype)
        above = mm.inference_bytes(nodes, InputSpec(best + 1, 3, (32, 32)), dtype)
        assert at <= limit < above
        if answer.max_batch_training is not None:
            b = answer.max_batch_training
            step = mm.training_step(nodes, InputSpec(b, 3, (32, 32), dtype), "adam").total.value
            step_above = mm.training_step(
                nodes, InputSpec(b + 1, 3, (32, 32), dtype), "adam"
            ).total.value
            assert step <= limit < step_above
    # half the bytes per element: about twice the batch
    assert answers["float16"].max_batch_inference > 1.9 * answers["float32"].max_batch_inference
    # the inference peak at that batch (468), measured on a real CPU run, is the formula's.
    # (Not on meta: torch's meta batch norm returns C-sized statistics in eval, the CPU empty
    # ones: 128 B more there.)
    batch = answers["float32"].max_batch_inference
    big = InputSpec(batch, 3, (32, 32))
    assert me.measure_network_peak(nodes, big).peak == mm.peak_inference(nodes, big).total.value


def test_fit_too_small_names_the_smallest_size() -> None:
    # int8 inference at batch 1: weights 448 + BN buffers 2·16 + 8 = 40, peak (input 3,072 +
    # conv output 16,384 + ...) - the message names the smallest and the option
    x = InputSpec(1, 3, (32, 32))
    nodes = chain([conv(3, 16, padding=1), NormSpec(16, 2), ActSpec("relu", 2, 16)])
    with pytest.raises(SpecError) as error:
        mm.fit(nodes, x, mm.parse_size("1KiB"), limit_text="1KiB")
    message = str(error.value)
    smallest = min(mm.inference_bytes(nodes, x, dtype) for dtype in ("float32", "float16", "int8"))
    assert error.value.field == "fit"
    assert message.startswith("--fit 1KiB is too small for batch 1")
    assert f"{smallest:,} B" in message
    assert "\n" not in message
    # that smallest size does fit batch 1
    assert mm.fit(nodes, x, smallest)[-1].max_batch_inference >= 1


def test_max_batch_is_exact_for_a_linear_figure() -> None:
    # 1,000 + 300·b <= 10,000 -> b = 30
    assert mm.max_batch(10_000, lambda b: 1_000 + 300 * b) == 30
    assert mm.max_batch(1_200, lambda b: 1_000 + 300 * b) == 0
    with pytest.raises(ValueError, match="not linear"):
        mm.max_batch(10_000, lambda b: b * b)


def test_unknown_optimizer_and_training_in_int8_are_refused() -> None:
    x = InputSpec(1, 3, (8, 8))
    with pytest.raises(SpecError, match="--optimizer 'lion'"):
        mm.training_step(SMALL, x, "lion")
    with pytest.raises(SpecError, match="--dtype 'int8'"):
        mm.training_step(SMALL, x, "adam", "int8")
    with pytest.raises(SpecError, match="no in-place version"):
        mm.saved_for_backward(SMALL, x, inplace=(0,))


def test_fit_names_the_meta_devices_float32_batch_norm_statistics(cli) -> None:
    # float16 training on torch's meta device: its batch norm keeps save_mean and save_invstd in
    # float32 (as CUDA does), the CPU kernel and the formula in float16: per batch norm
    # 2·C·(4 − 2) B more, here 2·16·2 + 2·32·2 = 192 B, shown as the known difference, not a ✗
    stack = "conv k3 p1 out16; batchnorm; relu; conv k3 p1 out32; batchnorm"
    data = cli.json("stack", stack, "--input", "1,3,32,32", "--fit", "1GiB")
    by_dtype = {entry["dtype"]: entry for entry in data["total"]["fit"]["by_dtype"]}
    half = by_dtype["float16"]["checked"]["saved_for_backward"]
    assert half["measured"] - half["formula"] == half["meta_statistics_bytes"] == 192
    assert by_dtype["float32"]["checked"]["saved_for_backward"]["meta_statistics_bytes"] == 0
    shown = cli("stack", stack, "--input", "1,3,32,32", "--fit", "1GiB")
    text = " ".join(shown.stdout.split())
    assert "saved ≈ (meta +192 B: torch's meta batch norm keeps float32 statistics" in text
    assert "saved ✗" not in text
