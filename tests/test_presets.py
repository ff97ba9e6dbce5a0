"""The presets, compare, --train and --time through the CLI, against the source documents' cases
(tests/seed_cases.py) and hand derivations."""

from __future__ import annotations

import pytest

from .seed_cases import GROUPED_RATIO, STANDARD_MEMORY_MIB

# (preset command line, output shape, parameters per layer) for every case of the documents
PRESET_SEEDS = [
    # seed 002: depthwise separable, 640 + 16,640 = 17,280
    ("dw --in 64 --out 256", (1, 256, 224, 224), [640, 16_640]),
    # seed 002: MobileFaceNet block, 576 + 128 + 16,384 + 512 = 17,600 (ReLU has none)
    (
        "dw --in 64 --out 256 -p 0 --no-bias --bn --act relu",
        (1, 256, 222, 222),
        [576, 128, 0, 16_384, 512, 0],
    ),
    # seed 002: global depthwise with BN, 3,211,264 + 128 = 3,211,392
    ("gdconv --in 64 --size 224 --no-bias --bn", (1, 64, 1, 1), [3_211_264, 128]),
    # seed 002: grouped, 18,688
    ("group --in 64 --out 256 -g 8", (1, 256, 224, 224), [18_688]),
    # seed 003: depthwise separable with BN and LeakyReLU(0.1): 30 + 6 + 256 + 128 = 420
    (
        "dw --in 3 --out 64 --bn --bias --act leakyrelu --slope 0.1",
        (1, 64, 224, 224),
        [30, 6, 0, 256, 128, 0],
    ),
    # seed 004: the five kinds on a 5x5 input
    ("conv --in 1 --out 1 -k 2 -s 2 -p 1 --size 5", (1, 1, 3, 3), [5]),
    ("transpose --in 1 --out 1 -k 2 -s 1 -p 0 --no-bias --size 5", (1, 1, 6, 6), [4]),
    ("dilated --in 1 --out 1 -k 2 -s 2 -p 2 -d 2 --no-bias --size 5", (1, 1, 4, 4), [4]),
    ("group --in 4 --out 2 -k 2 -s 2 -p 2 -g 2 --no-bias --size 5", (1, 2, 4, 4), [16]),
    ("dw --in 4 --out 1 -k 2 -s 2 -p 2 --no-bias --size 5", (1, 1, 4, 4), [16, 4]),
    # seed 000: the course's exercise, and with stride 3 on the depthwise layer
    ("dw --in 3 --out 10 -p 0 --size 128", (1, 10, 126, 126), [30, 40]),
    ("dw --in 3 --out 10 -p 0 -s 3 --size 128", (1, 10, 42, 42), [30, 40]),
    # seed 000: a dilated conv keeps the size (padding d(k-1)/2, the preset's default)
    ("dilated --in 3 --out 3 -d 2 --size 128", (1, 3, 128, 128), [84]),
    # seed 001: the functional conv2d's layer, three ways
    ("conv --in 3 --out 16 -k 5 -s 1 -p 1 --size 28", (1, 16, 26, 26), [1_216]),
    ("conv --in 3 --out 16 -k 5 -s 2 -p 2 --size 28", (1, 16, 14, 14), [1_216]),
    ("conv --in 3 --out 16 -k 5 --size 28", (1, 16, 24, 24), [1_216]),
]


@pytest.mark.parametrize("line, shape, params", PRESET_SEEDS, ids=[p[0] for p in PRESET_SEEDS])
def test_every_seed_case_with_a_preset(cli, line: str, shape: tuple, params: list[int]) -> None:
    report = cli.json(*line.split())
    assert [layer["params"] for layer in report["layers"]] == [
        {"measured": p, "formula": p} for p in params
    ]
    assert report["total"]["params"] == sum(params)
    assert report["total"]["output_shape"] == list(shape)
    assert report["agree"] is True


def test_grouped_ratio_to_the_standard_conv(cli) -> None:
    report = cli.json("group", "--in", "64", "--out", "256", "-g", "8")
    ratios = report["vs_standard"]
    assert ratios["baseline_params"] == {"measured": 147_712, "formula": 147_712}
    assert ratios["params"]["measured"] == pytest.approx(GROUPED_RATIO)  # 0.12652, not 0.14038
    assert round(ratios["params"]["measured"], 5) == 0.12652
    assert ratios["params"]["theory"] == 0.125
    assert ratios["macs"]["measured"] == 0.125  # compute shrinks by exactly 1/g
    assert ratios["weights_ratio"] == 18_432 / 147_456 == 0.125
    assert "256 bias terms do not shrink" in ratios["why"]


def test_grouped_table_explains_the_difference(cli) -> None:
    result = cli("group", "--in", "64", "--out", "256", "-g", "8")
    assert result.exit_code == 0
    assert "0.1265" in result.stdout and "1/8 = 0.1250" in result.stdout
    assert "bias terms do not shrink" in result.stdout


def test_dilated_shows_the_receptive_field_growth(cli) -> None:
    report = cli.json("dilated", "--in", "64", "--out", "64", "-d", "2", "--size", "56")
    growth = report["vs_undilated"]
    assert growth["receptive_field"]["dilated"] == {"measured": [5, 5], "formula": [5, 5]}
    assert growth["receptive_field"]["undilated"] == {"measured": [3, 3], "formula": [3, 3]}
    assert growth["params"]["dilated"] == growth["params"]["undilated"] == 36_928
    assert report["total"]["output_shape"] == [1, 64, 56, 56]  # padding 2 keeps the size


@pytest.mark.parametrize(
    "dilation, kernel, padding", [("2", "3", [2, 2]), ("3", "2", "same"), ("4", "5", [8, 8])]
)
def test_dilated_default_padding_keeps_the_size(cli, dilation, kernel, padding) -> None:
    report = cli.json(
        "dilated", "--in", "2", "--out", "2", "-d", dilation, "-k", kernel, "--size", "40"
    )
    assert report["layers"][0]["spec"]["padding"] == padding
    assert report["total"]["output_shape"] == [1, 2, 40, 40]


def test_transpose_defaults_upsample_twice_and_tconv_is_an_alias(cli) -> None:
    report = cli.json("transpose", "--in", "64", "--out", "32", "--size", "56")
    assert report["total"]["output_shape"] == [1, 32, 112, 112]
    assert report["layers"][0]["spec"]["kernel_size"] == [4, 4]
    alias = cli.json("tconv", "--in", "64", "--out", "32", "--size", "56")
    assert alias["layers"] == report["layers"]


def test_depth_multiplier(cli) -> None:
    # depthwise 8 -> 16 (2 filters per channel): 16*1*9 + 16 = 160; pointwise 16 -> 4: 68
    report = cli.json("dw", "--in", "8", "--out", "4", "-m", "2", "--size", "10")
    assert [x["params"]["measured"] for x in report["layers"]] == [160, 68]
    assert report["layers"][0]["spec"]["groups"] == 8


def test_pointwise(cli) -> None:
    report = cli.json("pw", "--in", "64", "--out", "256")
    assert report["total"]["params"] == 16_640
    assert report["layers"][0]["spec"]["kernel_size"] == [1, 1]


def test_compare_settles_the_argument(cli) -> None:
    report = cli.json("compare", "--in", "64", "--out", "256")
    versions = {v["name"]: v for v in report["versions"]}
    assert set(versions) == {"standard", "grouped", "depthwise_separable"}
    assert versions["standard"]["total"]["params"] == 147_712
    assert versions["grouped"]["total"]["params"] == 18_688
    assert versions["depthwise_separable"]["total"]["params"] == 17_280
    separable = versions["depthwise_separable"]["ratio_to_standard"]
    # MACs have no bias: the measured ratio is the documents' 1/N + 1/K² exactly
    assert separable["macs"]["measured"] == pytest.approx(1 / 256 + 1 / 9, abs=1e-15)
    assert separable["macs"]["theory"] == pytest.approx(1 / 256 + 1 / 9, abs=1e-15)
    assert versions["grouped"]["ratio_to_standard"]["params"]["theory"] == 0.125
    memory = versions["standard"]["total"]["memory_bytes"]
    assert round(memory["total"] / 2**20, 2) == STANDARD_MEMORY_MIB["total"]
    assert report["agree"] is True


# Hand-derived backward FLOPs: input gradient 2·MACs + weight gradient 2·MACs, groups included.
# torch.utils.flop_counter's conv_backward_flop counts the weight gradient as if groups were 1,
# i.e. g times too much: 2·MACs·(1 + g).
TRAIN_CASES = [
    # Conv2d(64, 256, k3, p1, g8) on 8x8: MACs 256·64·(64/8)·9 = 1,179,648
    (["group", "--in", "64", "--out", "256", "-g", "8", "--size", "8"], 1_179_648, 8),
    # depthwise Conv2d(8, 8, k3, p1, g8) on 6x6: MACs 8·36·1·9 = 2,592
    (["conv", "--in", "8", "--out", "8", "-p", "1", "-g", "8", "--size", "6"], 2_592, 8),
    # dense Conv2d(3, 4, k3) on 6x6: MACs 4·16·3·9 = 1,728; torch is right here
    (["conv", "--in", "3", "--out", "4", "--size", "6"], 1_728, 1),
    # transposed grouped ConvTranspose2d(4, 6, k3, s2, g2) on 3x3: MACs 4·9·3·9 = 972
    (
        ["conv", "--in", "4", "--out", "6", "-s", "2", "-g", "2", "--transpose", "--size", "3"],
        972,
        2,
    ),
]


@pytest.mark.parametrize("args, macs, groups", TRAIN_CASES, ids=lambda v: str(v))
def test_train_backward_flops_by_hand(cli, args: list[str], macs: int, groups: int) -> None:
    report = cli.json(*args, "--train")
    layer = report["layers"][0]
    assert layer["macs"]["measured"] == macs
    assert layer["backward_flops"] == {"measured": 4 * macs, "formula": 4 * macs}
    assert layer["backward_flops_torch_counter"] == 2 * macs * (1 + groups)
    assert report["total"]["train_flops"] == 2 * macs + 4 * macs
    if groups > 1:
        assert any("ignores groups in the weight gradient" in note for note in layer["notes"])
    assert layer["agree"] is True


def test_train_on_a_chain_with_batch_norm(cli) -> None:
    report = cli.json(
        "dw", "--in", "4", "--out", "8", "--bn", "--act", "relu", "--size", "6", "--train"
    )
    backward = [layer["backward_flops"]["measured"] for layer in report["layers"]]
    # depthwise MACs 4·36·9 = 1,296; pointwise 8·36·4 = 1,152; BN and ReLU: not counted
    assert backward == [4 * 1_296, 0, 0, 4 * 1_152, 0, 0]
    assert report["total"]["train_flops"] == 6 * (1_296 + 1_152)


def test_time_reports_latency_and_throughput(cli) -> None:
    report = cli.json("conv", "--in", "8", "--out", "8", "--size", "16", "--time")
    layer = report["layers"][0]
    assert layer["latency_ms"] > 0 and layer["gflops_per_s"] > 0 and layer["timed_runs"] >= 1
    assert report["timing"]["threads"] >= 1
    assert report["timing"]["device"] == "cpu"
    assert report["timing"]["tool"] == "torch.utils.benchmark.Timer.blocked_autorange"
    assert report["total"]["latency_ms"] == pytest.approx(layer["latency_ms"], rel=1e-3)


def test_time_in_compare_shows_the_speed_ratio(cli) -> None:
    report = cli.json("compare", "--in", "8", "--out", "16", "--size", "16", "--time")
    for version in report["versions"]:
        assert version["ratio_to_standard"]["latency"] > 0
    assert report["versions"][0]["ratio_to_standard"]["latency"] == 1.0


def test_time_on_a_layer_too_big_to_run_says_so(cli) -> None:
    report = cli.json("conv", "--in", "512", "--out", "512", "--size", "8192", "--time")
    assert report["layers"][0]["latency_ms"] is None
    assert "too big to run here" in report["timing"]["skipped"]


PRESET_ERRORS = [
    (
        ["dw", "--in", "3", "--out", "4", "--act", "swish"],
        "--act 'swish' must be one of none, relu, relu6, leakyrelu, prelu, elu, gelu, silu, "
        "hardswish, hardsigmoid, sigmoid, tanh",
    ),
    (["dw", "--in", "3", "--out", "4", "-m", "0"], "--multiplier 0 must be a positive integer"),
    (["group", "--in", "12", "--out", "16"], "--groups 8 must divide --in 12"),
    (
        ["conv", "--in", "3", "--out", "4", "--time", "--device", "cuda"],
        "--device cuda: no CUDA device is available here",
    ),
    (
        ["conv", "--in", "3", "--out", "4", "--time", "--device", "tpu"],
        "--device 'tpu' must be cpu, cuda, cuda:N or mps",
    ),
    (["gdconv", "--in", "4", "--size", "0"], "--size 0 must be positive"),
    (["compare", "--in", "64", "--out", "256", "-g", "3"], "--groups 3 must divide --in 64"),
]


@pytest.mark.parametrize("args, message", PRESET_ERRORS, ids=[m for _, m in PRESET_ERRORS])
def test_preset_errors(cli, args: list[str], message: str) -> None:
    result = cli(*args)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"error: {message}\n")


@pytest.mark.parametrize(
    "name, args",
    [
        ("dw_64_256.txt", ["dw", "--in", "64", "--out", "256"]),
        ("group_64_256_g8.txt", ["group", "--in", "64", "--out", "256", "-g", "8"]),
    ],
)
def test_golden_preset_tables(cli, golden, name: str, args: list[str]) -> None:
    result = cli(*args)
    assert result.exit_code == 0 and result.stderr == ""
    golden(name, result.stdout)
