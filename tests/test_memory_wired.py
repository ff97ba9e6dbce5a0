"""The memory figures wired into every report (issue 13): per layer and total, measured beside
formula, through the engine; the training step per optimizer; --fit; users' models; output."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from torch import nn

from convcalc.core.spec import InputSpec, Node
from convcalc.engine import Options, analyze_chain, analyze_graph, analyze_model
from convcalc.errors import SpecError
from convcalc.kinds import ActSpec, LinearSpec, NormSpec, ShapeSpec, build_conv, build_pool
from convcalc.output.formats import CSV_COLUMNS, write
from tests.test_memory_budget import Attention, chains, conv, residual


def mem(report: object, index: int | None = None) -> tuple[dict, dict]:
    data = report.to_dict()  # type: ignore[attr-defined]
    if index is None:
        return data["total"]["memory_bytes"], data["total"]["formula"]["memory_bytes"]
    layer = data["layers"][index]
    return layer["memory_bytes"], layer["memory_bytes_formula"]


def test_an_output_in_a_larger_storage_is_counted_whole_and_named() -> None:
    # ConvTranspose3d(8, 1, k1) on 1x8x2x2x2 float32: input 8*8*4 = 256 B, output 1*8*4 = 32 B.
    # By formula the peak is input + output = 288 B. torch's CPU kernel returns the output in a
    # storage of the input's size (256 B), which the allocator holds: 256 + 256 = 512 B
    # measured. The source names the op, the layer and both sizes. On meta: 288 B, agreeing.
    spec = build_conv(in_channels=8, out_channels=1, kernel=1, transpose=True, dims=3)
    x = InputSpec(1, 8, (2, 2, 2))
    cpu = analyze_chain([spec], x, options=Options(measure_on="cpu"))
    layer, layer_formula = mem(cpu, 0)
    assert (layer["peak_inference"], layer_formula["peak_inference"]) == (512, 288)
    assert cpu.layers[0].disagreements == ["peak_inference"]
    assert (
        "aten.convolution.default (layer 0) returned 32 B of elements in a 256 B storage"
        in cpu.sources["memory_peak_inference"]
    )
    meta = analyze_chain([spec], x, options=Options(measure_on="meta"))
    assert mem(meta, 0)[0]["peak_inference"] == 288
    assert "storage" not in meta.sources["memory_peak_inference"].split("kernels' private")[1]


def test_conv_hand_derivation() -> None:
    # Conv2d(3,16,k3) on 1×3×32×32 float32. Saved: its input 3·32·32·4 = 12,288 B.
    # Peak inference: input 12,288 + output 16·30·30·4 = 57,600 -> 69,888 B.
    # Training step, adam, with --train (one real step): params 448·4 = 1,792; grads 1,792;
    # exp_avg + exp_avg_sq 2·1,792 + step 2 tensors·4 = 3,592; saved (the data needs no grad,
    # the conv still saves it for its weight gradient) 12,288; buffers 0.
    # The output 57,600, held through backward (the conv does not save it). Transient bound:
    # the output's gradient, which the loss hands backward, 57,600 (the conv's input needs no
    # gradient); total 1,792 + 1,792 + 3,592 + 12,288 + 57,600 + 57,600 = 134,664 B
    report = analyze_chain([conv(3, 16)], InputSpec(1, 3, (32, 32)), options=Options(train=True))
    layer, layer_formula = mem(report, 0)
    assert layer["saved_for_backward"] == layer_formula["saved_for_backward"] == 12_288
    assert layer["peak_inference"] == layer_formula["peak_inference"] == 69_888
    # torchsummary's figure keeps its old key and gets its honest name beside it: 2·57,600
    assert layer["forward_backward"] == layer["forward_backward_torchsummary"] == 115_200
    total, formula = mem(report)
    expected = {"params": 1_792, "buffers": 0, "grads": 1_792, "optimizer_state": 3_592}
    expected["saved_for_backward"] = 12_288
    expected["output"] = 57_600
    for key, value in expected.items():
        assert total["training_step"][key] == formula["training_step"][key] == value, key
    assert formula["training_step"]["transient"] == 57_600
    assert formula["training_step"]["total"] == 134_664
    # measured: backward seeded with a dense gradient the size of the output, as a loss's is
    assert total["training_step"]["transient"] == 57_600
    assert report.agree and report.to_dict()["total"]["optimizer"] == "adam"


def test_conv_bn_relu_hand_derivation() -> None:
    # conv input 12,288; conv output 16·30·30·4 = 57,600. Saved: conv 12,288; BN its input
    # 57,600 + save_mean/save_invstd 2·16·4 = 128 -> 57,728; ReLU its output 57,600: 127,616.
    # Peak inference, while BN runs: input 12,288 (the caller's) + conv out + BN out
    # = 12,288 + 2·57,600 = 127,488 (the same while the ReLU runs: conv out freed, ReLU out
    # made). Step: params (448 + 32)·4 = 1,920; buffers 2·16·4 + 8 = 136; adam
    # 2·1,920 + 4 tensors·4 = 3,856
    specs = [conv(3, 16), NormSpec(16, 2), ActSpec("relu", 2, 16)]
    report = analyze_chain(specs, InputSpec(1, 3, (32, 32)), options=Options(train=True))
    assert [mem(report, i)[0]["saved_for_backward"] for i in range(3)] == [12_288, 57_728, 57_600]
    assert [mem(report, i)[1]["peak_inference"] for i in range(3)] == [69_888, 127_488, 127_488]
    total, formula = mem(report)
    assert total["saved_for_backward"] == formula["saved_for_backward"] == 127_616
    assert total["peak_inference"] == formula["peak_inference"] == 127_488
    step, step_formula = total["training_step"], formula["training_step"]
    assert (step["params"], step["buffers"], step["optimizer_state"]) == (1_920, 136, 3_856)
    assert step_formula["saved_for_backward"] == step["saved_for_backward"] == 127_616
    assert report.agree


def test_depthwise_separable_block_shares_the_relu_output() -> None:
    # 1×8×16×16: every 8-channel tensor 8,192 B. dw conv 8,192; BN 8,192 + 64 = 8,256; ReLU
    # its output 8,192; the pointwise conv saves the same ReLU output: 0. Total 24,640 B
    specs = [conv(8, 8, padding=1, groups=8), NormSpec(8, 2), ActSpec("relu", 2, 8), conv(8, 16, 1)]
    report = analyze_chain(specs, InputSpec(1, 8, (16, 16)))
    saved = [mem(report, i) for i in range(4)]
    assert [m["saved_for_backward"] for m, _ in saved] == [8_192, 8_256, 8_192, 0]
    assert [f["saved_for_backward"] for _, f in saved] == [8_192, 8_256, 8_192, 0]
    assert "shared with layer 2" in report.layers[3].formula_text["memory_saved_for_backward"]
    assert mem(report)[0]["saved_for_backward"] == 24_640
    # without --train the step is by formula only, and the sources say why
    assert mem(report)[0]["training_step"] is None
    assert mem(report)[1]["training_step"]["saved_for_backward"] == 24_640
    assert "--train" in report.sources["memory_training_step"]


def test_residual_block() -> None:
    # input 3,072 B; every 8-channel tensor 8,192 B. Saved: 3,072 + 8,192 + 8,256 + 8,192 + 0
    # + 8,256 + 0 + 8,192 = 44,160. Peak while BN2 runs: input + stem output (the add needs
    # it) + conv1 out + BN out = 3,072 + 3·8,192 = 27,648 B
    report = analyze_graph(residual(), InputSpec(1, 3, (16, 16)))
    total, formula = mem(report)
    assert total["saved_for_backward"] == formula["saved_for_backward"] == 44_160
    assert total["peak_inference"] == formula["peak_inference"] == 27_648
    assert report.agree


def test_attention_block_measured_only() -> None:
    # x 1×4×8 float32 = 128 B. q, k, v save x (128 once); q @ kᵀ saves q and k (128 + 128);
    # softmax its 1×4×4 output (64); attn @ v saves v (128; attn is shared); the output
    # projection its input (128). Total 704 B. No formula for an arbitrary graph: null
    report = analyze_model(Attention(8), (1, 4, 8))
    total, formula = mem(report)
    assert total["saved_for_backward"] == 704
    # (the whole formula side is null where the model has modules with no formula)
    assert formula is None or (
        formula["saved_for_backward"] is None and formula["training_step"] is None
    )
    assert any("no formula for an arbitrary model" in n for n in report.notes)
    # adam with --train: 4 linear layers of 8·8 + 8 = 72 parameters -> 288·4 = 1,152 B;
    # exp_avg + exp_avg_sq 2·1,152 + 8 tensors·4 = 2,336 B
    step = mem(analyze_model(Attention(8), (1, 4, 8), options=Options(train=True)))[0]
    assert step["training_step"]["params"] == 1_152
    assert step["training_step"]["optimizer_state"] == 2_336


SMALL = [
    conv(3, 8, padding=1),
    NormSpec(8, 2),
    ActSpec("relu", 2, 8),
    build_pool(kind="max", dims=2, channels=8),
    ShapeSpec("flatten", 2, 8),
    LinearSpec(8 * 4 * 4, 10),
]


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "adamw"])
def test_optimizer_state_measured_equals_formula(optimizer: str) -> None:
    # parameters 224 + 16 + 1,290 = 1,530 -> 6,120 B in 6 tensors: sgd 0; momentum 6,120;
    # adam/adamw 2·6,120 + 6·4 = 12,264
    options = Options(train=True, optimizer=optimizer)
    report = analyze_chain(SMALL, InputSpec(2, 3, (8, 8)), options=options)
    total, formula = mem(report)
    expected = {"sgd": 0, "momentum": 6_120, "adam": 12_264, "adamw": 12_264}[optimizer]
    assert total["training_step"]["optimizer_state"] == expected
    assert formula["training_step"]["optimizer_state"] == expected
    assert report.agree


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains())
def test_saved_for_backward_engine_agrees_on_random_chains(
    case: tuple[tuple[Node, ...], InputSpec, tuple[int, ...]],
) -> None:
    nodes, x, _ = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's note on padded copies
        report = analyze_graph(nodes, x)
    for layer in report.layers:
        assert layer.saved_for_backward is not None
        assert layer.saved_for_backward.measured == layer.saved_for_backward.formula
    pair = report.total.saved_for_backward
    assert pair is not None and pair.measured == pair.formula


def test_fit_largest_batches() -> None:
    # conv(3,16,p1) + BN + ReLU on 3×32×32, 64 MiB = 67,108,864 B, float32.
    # Inference: weights (448 + 32)·4 + BN buffers 136 = 2,056 fixed; per sample the peak
    # while BN runs: 12,288 + 2·65,536 = 143,360 -> (67,108,864 − 2,056) // 143,360 = 468.
    # Training (adam): fixed 1,920 + 136 + 1,920 + 3,856 + BN stats 128 = 7,960; per sample
    # saved 12,288 + 65,536 + 65,536 = 143,360, the output 0 (the ReLU saves it), transient
    # during BN's backward: the output's gradient + BN's output grad + its input grad
    # 3·65,536 = 196,608 -> 339,968 a sample -> (67,108,864 − 7,960) // 339,968 = 197
    specs = [conv(3, 16, padding=1), NormSpec(16, 2), ActSpec("relu", 2, 16)]
    report = analyze_chain(specs, InputSpec(1, 3, (32, 32)), options=Options(fit="64MiB"))
    fit = report.to_dict()["total"]["fit"]
    assert fit["memory_limit_bytes"] == 67_108_864
    assert (fit["max_batch_training"], fit["max_batch_inference"]) == (197, 468)
    # what the training batch leaves out is said beside it (a real loss adds its own tensors)
    assert fit["not_counted"].startswith("the loss's own tensors (about one output's size")
    by_dtype = {e["dtype"]: e for e in fit["by_dtype"]}
    assert by_dtype["int8"]["max_batch_training"] is None
    checked = by_dtype["float32"]["checked"]["inference_peak"]
    assert checked["batch"] == 468 and checked["measured"] == checked["formula"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (Options(fit="lots"), "--fit 'lots' is not a size like 16GiB or 80GB"),
        (Options(fit="0GB"), "--fit '0GB' must be a positive size"),
        (Options(optimizer="lion"), "--optimizer 'lion' must be one of sgd, momentum, adam, adamw"),
    ],
)
def test_memory_options_refused(options: Options, message: str) -> None:
    with pytest.raises(SpecError) as error:
        analyze_chain([conv(3, 8)], InputSpec(1, 3, (8, 8)), options=options)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_fit_too_small_names_the_smallest_size() -> None:
    specs = [conv(3, 16, padding=1), NormSpec(16, 2), ActSpec("relu", 2, 16)]
    with pytest.raises(SpecError) as error:
        analyze_chain(specs, InputSpec(1, 3, (32, 32)), options=Options(fit="1KiB"))
    assert error.value.field == "fit"
    assert str(error.value).startswith("--fit 1KiB is too small for batch 1: the smallest size")


def test_meta_run_measures_saved_and_peak_but_no_step() -> None:
    # 64×64×224×224 float32: the conv saves its input 822,083,584 B and the ReLU its output
    # 64·64·222·222·4 = 807,469,056 B: 1,629,552,640 B, measured on the meta device
    x = InputSpec(64, 64, (224, 224))
    report = analyze_chain([conv(64, 64), ActSpec("relu", 2, 64)], x, options=Options(train=True))
    assert report.measured_on == "meta"
    total, formula = mem(report)
    assert total["saved_for_backward"] == formula["saved_for_backward"] == 1_629_552_640
    assert total["training_step"] is None
    assert "meta" in report.sources["memory_training_step"]


def test_formula_only_has_the_formulas() -> None:
    report = analyze_chain(
        [conv(3, 16)], InputSpec(1, 3, (32, 32)), options=Options(formula_only=True)
    )
    total, formula = mem(report)
    assert total["saved_for_backward"] == formula["saved_for_backward"] == 12_288
    assert report.to_dict()["layers"][0]["memory_bytes"] is None


def test_outputs_show_the_memory_figures() -> None:
    specs = [conv(3, 8, padding=1), ActSpec("relu", 2, 8)]
    report = analyze_chain(specs, InputSpec(1, 3, (8, 8)), options=Options(fit="1MiB"))
    table = io.StringIO()
    write(report, "table", table)
    text = table.getvalue()
    for words in ("saved for bwd", "training step: optimizer state (adam)", "bound", "fits 1MiB"):
        assert words in text, words
    assert "torchinfo's 'Forward/backward pass size'" in text
    csv = io.StringIO()
    write(report, "csv", csv)
    header, *_, total = csv.getvalue().splitlines()
    assert header.split(",")[-11:] == list(CSV_COLUMNS[-11:])
    assert CSV_COLUMNS.index("agree") < CSV_COLUMNS.index("saved_for_backward_bytes")
    # conv saves its input 3·8·8·4 = 768; relu its output 8·8·8·4 = 2,048: 2,816 B
    assert total.split(",")[CSV_COLUMNS.index("saved_for_backward_bytes")] == "2816"
    markdown = io.StringIO()
    write(report, "markdown", markdown)
    assert "Memory: saved for backward 2,816 B" in markdown.getvalue()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_max_memory_allocated_beside_both() -> None:
    report = analyze_chain(
        [conv(3, 8), ActSpec("relu", 2, 8)],
        InputSpec(2, 3, (16, 16)),
        options=Options(device="cuda"),
    )
    cuda = report.extra["memory_cuda"]
    assert cuda["peak"] >= cuda["allocated_before"]


def test_a_users_model_is_left_alone() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    analyze_model(model, (2, 3, 8, 8), options=Options(train=True))
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
