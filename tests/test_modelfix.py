"""What a new user hit in `convcalc model` (the modelfix pass): in-place forwards and the
receptive field, the CPU attention kernel's FLOPs, inputs without spatial axes, torchinfo's
LayerNorm convention, the training-step rows. Every expected number derived by hand beside it."""

from __future__ import annotations

import io

import torch
from torch import nn

from convcalc.engine import analyze_model
from convcalc.measure.opcount import count_model
from convcalc.measure.rfprobe import model_fields
from convcalc.output.render import render_table


class InPlace(nn.Module):
    """conv 3x3 -> y += 1 -> conv 3x3 -> ReLU(inplace) -> out += identity (torchvision's
    BasicBlock style): every write in place, on the stand-in's conv outputs too."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c1(x)
        y += 1
        identity = y
        out = self.relu(self.c2(y))
        out += identity
        return out


class OutOfPlace(nn.Module):
    """The same graph, written out of place."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c1(x) + 1
        return self.relu(self.c2(y)) + y


def test_in_place_forward_has_the_out_of_place_field() -> None:
    # two 3x3 convs, stride 1: r = 1 + (3 - 1) + (3 - 1) = 5 per axis; the residual branch
    # (one conv, field 3) lies inside it, so the output's field is 5x5
    for model in (InPlace(), OutOfPlace()):
        fields = model_fields(model, (1, 3, 16, 16))
        assert fields.receptive_field == (5, 5), fields.notes
    for model in (InPlace(), OutOfPlace()):
        data = analyze_model(model, (1, 3, 16, 16)).to_dict()
        assert data["total"]["receptive_field"] == [5, 5]
        assert data["total"]["receptive_field_of"] == "output"


class Grouped(nn.Module):
    """A grouped conv (channels repeated per group in the stand-in) written in place."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(4, 8, 3, padding=1, groups=2)
        self.c2 = nn.Conv2d(8, 8, 3, padding=2, dilation=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c1(x)
        y.mul_(2)
        y = self.c2(y)
        y += 1
        return y


def test_in_place_after_grouped_and_dilated_convs() -> None:
    # 3x3, then 3x3 dilated 2 (span 5): r = 1 + 2 + 4 = 7
    assert model_fields(Grouped(), (1, 4, 16, 16)).receptive_field == (7, 7)


class WritesItsInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(2, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x += 1
        return self.c(x)


def test_a_forward_writing_its_input_in_place() -> None:
    # one 3x3 conv: 3x3
    assert model_fields(WritesItsInput(), (1, 2, 9, 9)).receptive_field == (3, 3)


class NeedsNumpy(nn.Module):
    """Runs under no_grad (the counted pass) but not with autograd (the probe)."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(2, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.c(x).numpy())


def test_an_unmeasured_field_says_why() -> None:
    report = analyze_model(NeedsNumpy(), (1, 2, 9, 9))
    data = report.to_dict()
    assert data["total"]["receptive_field"] is None
    why = [n for n in data["notes"] if n.startswith("the model's receptive field was not")]
    assert len(why) == 1 and "numpy" in why[0], data["notes"]
    stream = io.StringIO()
    render_table(report, stream, no_color=True)
    text = stream.getvalue()
    assert "from ;" not in text and "autograd from" not in text


def test_transformer_encoder_layer_flops_agree() -> None:
    # `model --help`'s example: d_model 64, 4 heads of 16, L = 16, batch 1. self_attn's MACs:
    # q, k, v, out projections 4·(16·64·64) = 262,144; q·kᵀ and attn·v 2·(4·16·16·16) = 32,768
    # -> 294,912, FLOPs twice that: 589,824. The CPU fast path runs
    # aten._scaled_dot_product_flash_attention_for_cpu, which torch's registry omits: torch's
    # own SDPA formula counts it, 2·32,768 = 65,536 FLOPs (not 0)
    layer = nn.TransformerEncoderLayer(d_model=64, nhead=4, batch_first=True)
    data = analyze_model(layer, (1, 16, 64)).to_dict()
    rows = {row["name"]: row for row in data["layers"]}
    assert rows["self_attn"]["macs"] == {"measured": 294_912, "formula": 294_912}
    assert rows["self_attn"]["flops"] == {"measured": 589_824, "formula": 589_824}
    assert data["agree"] is True
    assert any("_for_cpu" in n and "sdpa_flop_count" in n for n in data["notes"])


def test_cpu_flash_attention_counted_by_torchs_sdpa_formula() -> None:
    class Sdpa(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.scaled_dot_product_attention(x, x, x)

    # (2, 4, 10, 16): 2·4·10·10·16 = 12,800 MACs each for q·kᵀ and attn·v: 25,600 MACs,
    # torch's formula 2 FLOPs per MAC: 51,200
    result = count_model(Sdpa(), (2, 4, 10, 16), device="cpu")
    assert result.total_macs == 25_600
    assert result.total_flops == 51_200
    assert result.warnings == ()


def test_model_takes_an_mlps_input(cli) -> None:
    # Linear(64, 10) on 4×64: 4·64·10 = 2,560 MACs; params 64·10 + 10 = 650
    data = cli.json(
        "model", "torch.nn:Linear", "--input", "4,64",
        "--kwargs", "in_features=64,out_features=10", "-f", "json",
    )  # fmt: skip
    assert data["input_shape"] == [4, 64]
    assert data["total"]["macs"] == 2_560 and data["total"]["params"] == 650
    assert data["total"]["receptive_field"] is None
    assert any("no convolution or pooling ran" in n for n in data["notes"])


def test_model_input_errors_echo_what_was_typed(cli) -> None:
    result = cli("model", "torch.nn:Identity", "--input", "4")
    assert result.exit_code == 2
    assert "--input 4 must be at least 2 integers" in result.stderr
    result = cli("model", "torch.nn:Identity", "--input", "4,a")
    assert result.exit_code == 2 and "--input 4,a must be integers" in result.stderr


def test_transformer_on_n_l_e_has_no_field_over_the_embedding() -> None:
    # (N, L, E) = (1, 16, 64) and no conv or pool: no field (not 64 over the embedding dim)
    layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, batch_first=True)
    data = analyze_model(layer, (1, 16, 16)).to_dict()
    assert data["total"]["receptive_field"] is None
    assert any("no convolution or pooling ran" in n for n in data["notes"])


def test_a_conv1d_on_n_c_l_still_has_its_field() -> None:
    # Conv1d kernel 5, dilation 2: span 2·(5 - 1) + 1 = 9
    data = analyze_model(nn.Conv1d(3, 4, 5, dilation=2), (1, 3, 32)).to_dict()
    assert data["total"]["receptive_field"] == [9]


def test_a_pool_alone_has_spatial_geometry() -> None:
    # MaxPool2d 3, stride 2: field 3
    data = analyze_model(nn.MaxPool2d(3, 2), (1, 2, 11, 11)).to_dict()
    assert data["total"]["receptive_field"] == [3, 3]


def test_torchinfo_counts_a_layernorm_by_its_output_batch() -> None:
    # LayerNorm(64): 64 weights + 64 biases = 128 parameters; its output (2, 16, 64), whose
    # shape[0] is 2: torchinfo's rule parameters × output.shape[0] = 128 × 2 = 256 (was 0: the
    # module has no layer kind, and its batch was never recorded)
    from convcalc.core.conventions import conventions

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 64)
            self.norm = nn.LayerNorm(64)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.norm(self.fc(x))

    data = analyze_model(Block(), (2, 16, 64)).to_dict()
    torchinfo = conventions(data)["torchinfo"]
    assert torchinfo["layers"]["norm"] == 256
    # the linear: (64·64 + 64) × 2 = 8,320
    assert torchinfo["layers"]["fc"] == 8_320
    assert torchinfo["total"] == 8_576


def test_models_training_step_one_honest_row() -> None:
    # `convcalc model` takes no --train: one row says so, not seven rows of 'not measured';
    # the JSON key stays (null)
    report = analyze_model(OutOfPlace(), (1, 3, 8, 8))
    data = report.to_dict()
    assert data["total"]["memory_bytes"]["training_step"] is None
    assert "takes no --train" in data["sources"]["memory_training_step"]
    stream = io.StringIO()
    render_table(report, stream, no_color=True)
    text = stream.getvalue()
    assert not any(line.startswith("training step: ") for line in text.splitlines())
    rows = [line for line in text.splitlines() if line.startswith("training step ")]
    assert len(rows) == 1 and "not measured" in rows[0] and "no --train" in rows[0]
    assert "one real step is measured with --train" not in text


def test_models_training_step_through_the_api() -> None:
    # the Python API's Measure(train=True) does measure it: params 2·(4·3·9 + 4)... here
    # c1 3→4 3x3: 108 + 4 = 112, c2 4→4 3x3: 144 + 4 = 148; 260 float32 = 1,040 B, grads the same
    from convcalc import library
    from convcalc.choices import Measure

    data = library.model(OutOfPlace(), (1, 3, 8, 8), measure=Measure(train=True)).to_dict()
    step = data["total"]["memory_bytes"]["training_step"]
    assert step["params"] == 1_040 and step["grads"] == 1_040
