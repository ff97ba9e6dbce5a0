"""`convcalc model` on networks a user brings (issue 12): small models defined here, every figure
derived by hand in a comment, through engine.analyze_model (the lead's CLI calls it)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convcalc.engine import analyze_model
from convcalc.errors import SpecError

# --- the models ----------------------------------------------------------------------------


class AttentionBlock(nn.Module):
    """nn.MultiheadAttention (its projections through F.linear, its products through bmm),
    then a LayerNorm (no formula: its parameters are uncovered) and a Linear on 3-D input."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.norm = nn.LayerNorm(16)
        self.mlp = nn.Linear(16, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.attn(x, x, x)
        return self.mlp(self.norm(x + y))


class SdpaBlock(nn.Module):
    """The same attention by hand: F.scaled_dot_product_attention in the root's forward."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(16, 48)
        self.proj = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, 4, 4).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, 16))


def mlp_4d() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 8))


class SamePadConv(nn.Conv2d):
    """TensorFlow-style 'same' padding done at run time: the conv itself has padding 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (1, 1, 1, 1)))


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.cls = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> dict[str, object]:
        f = self.conv(x)
        logits = self.cls(f.mean((2, 3)))
        return {"map": f, "aux": (logits, [logits * 2])}


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.bn(self.conv1(x))))


class Trunk(nn.Module):
    """A deep residual trunk: a stem, six blocks, global pooling and a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(*[Block() for _ in range(6)])
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class Shared(nn.Module):
    """One block run three times (shared weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.block = Block()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.block(self.block(x)))


class Functional(nn.Module):
    """A conv called functionally with its child's parameters: the child never runs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.conv.weight, self.conv.bias, padding=1)


# --- figures -------------------------------------------------------------------------------


def test_attention_block_counts_projections_and_both_products() -> None:
    report = analyze_model(AttentionBlock(), (2, 5, 16))
    data = report.to_dict()
    rows = {layer["name"]: layer for layer in data["layers"]}
    # B=2, L=S=5, E=16, h=4 heads of 4: q, k, v and out projections 4·(2·5·16·16) = 10,240;
    # q·kᵀ and attn·v 2·(2·4·5·5·4) = 1,600; together 11,840
    assert rows["attn"]["macs"] == {"measured": 11_840, "formula": 11_840}
    # 4·16·16 weights + 4·16 biases (in_proj 3E×E + 3E, out_proj E×E + E) = 1,088
    assert rows["attn"]["params"] == {"measured": 1_088, "formula": 1_088}
    assert rows["attn"]["spec"] == {
        "op": "module",
        "type": "MultiheadAttention",
        "embed_dim": 16,
        "num_heads": 4,
    }
    # the Linear on 2×5×16: 10 positions · 16 · 32 = 5,120; params 16·32 + 32 = 544
    assert rows["mlp"]["macs"] == {"measured": 5_120, "formula": 5_120}
    assert rows["mlp"]["output_shape"] == {"measured": [2, 5, 32], "formula": [2, 5, 32]}
    assert data["total"]["macs"] == 16_960
    assert data["total"]["formula"]["macs"] == 16_960
    assert data["total"]["flops"] == data["total"]["formula"]["flops"] == 2 * 16_960
    # the model's 1,088 + 32 (LayerNorm(16): weight 16 + bias 16) + 544 = 1,664; the
    # LayerNorm's closed form 2·16 = 32 completes the total's formula
    assert data["total"]["params"] == 1_664
    assert data["total"]["formula"]["params"] == 1_664
    assert not any("sit in modules" in note for note in data["notes"])
    assert any("norms norm 2·16 = 32" in note for note in data["notes"])
    assert "aten.softmax" in data["uncounted_ops"]["arithmetic"] or (
        "aten._softmax" in data["uncounted_ops"]["arithmetic"]
    )
    assert data["strict_problems"] == []
    assert report.agree


def test_attention_in_the_roots_forward_is_measured_and_named() -> None:
    data = analyze_model(SdpaBlock(), (2, 5, 16)).to_dict()
    rows = {layer["name"]: layer for layer in data["layers"]}
    # qkv 10·16·48 = 7,680; proj 10·16·16 = 2,560; the root's SDPA 2·4·5·5·(4 + 4) = 1,600
    assert rows["qkv"]["macs"] == {"measured": 7_680, "formula": 7_680}
    assert rows["proj"]["macs"] == {"measured": 2_560, "formula": 2_560}
    assert rows["(model)"]["macs"] == {"measured": 1_600, "formula": None}
    assert data["total"]["macs"] == 11_840  # every counted operator, the root's included
    assert data["total"]["formula"]["macs"] is None  # one module's work has no closed form
    assert any("no closed form" in note and "(model)" in note for note in data["notes"])
    assert data["agree"] is True  # nothing differs: one side is missing, and says so


def test_mlp_on_4d_input_counts_every_leading_position() -> None:
    data = analyze_model(mlp_4d(), (2, 4, 4, 8)).to_dict()
    rows = {layer["name"]: layer for layer in data["layers"]}
    # 2·4·4 = 32 positions: 32·8·32 = 8,192 and 32·32·8 = 8,192
    assert rows["0"]["macs"] == {"measured": 8_192, "formula": 8_192}
    assert rows["0"]["output_shape"] == {"measured": [2, 4, 4, 32], "formula": [2, 4, 4, 32]}
    assert rows["2"]["macs"] == {"measured": 8_192, "formula": 8_192}
    # bias adds: 32 positions × (32 + 8)
    assert rows["0"]["bias_adds"] + rows["2"]["bias_adds"] == 32 * 40
    # 8·32 + 32 + 32·8 + 8 = 552
    assert data["total"]["params"] == data["total"]["formula"]["params"] == 552
    assert data["total"]["macs"] == data["total"]["formula"]["macs"] == 16_384
    assert data["strict_problems"] == [] and data["agree"] is True


def test_run_time_padding_takes_the_padded_input() -> None:
    data = analyze_model(nn.Sequential(SamePadConv(3, 8, 3)), (1, 3, 10, 10)).to_dict()
    (row,) = data["layers"]
    # F.pad makes 1×3×12×12; the 3×3 conv (padding 0) gives 10×10: 100·8·27 = 21,600 MACs
    assert row["macs"] == {"measured": 21_600, "formula": 21_600}
    assert row["output_shape"] == {"measured": [1, 8, 10, 10], "formula": [1, 8, 10, 10]}
    assert row["params"] == {"measured": 224, "formula": 224}  # 8·27 + 8
    assert "padded input" in row["formula_text"]["macs"]
    assert any("padded at run time" in note for note in row["notes"])
    assert data["agree"] is True


def test_dict_output_every_tensor_named() -> None:
    report = analyze_model(TwoHeads(), (1, 3, 6, 6))
    data = report.to_dict()
    assert data["output_structure"] == "dict{map: 1×4×6×6, aux: tuple(1×2, list[1×2])}"
    assert data["outputs"] == {"map": [1, 4, 6, 6], "aux.0": [1, 2], "aux.1.0": [1, 2]}
    # conv 36·4·3 = 432, linear 4·2 = 8
    assert data["total"]["macs"] == data["total"]["formula"]["macs"] == 440
    assert data["total"]["params"] == data["total"]["formula"]["params"] == 26  # 16 + 10
    # the receptive field is the first output's: a 1×1 conv sees one position
    assert data["total"]["receptive_field"] == [1, 1]
    # named once: the first tensor itself (it read "output map: output")
    assert data["total"]["receptive_field_of"] == "output map"
    assert report.agree


def test_deep_residual_trunk() -> None:
    data = analyze_model(Trunk(), (1, 3, 8, 8)).to_dict()
    # stem 64·8·27 = 13,824; 12 block convs 64·8·72 = 36,864 each = 442,368; linear 80
    assert data["total"]["macs"] == data["total"]["formula"]["macs"] == 456_272
    # stem 224, six blocks 2·576 + 16 = 1,168 each = 7,008, linear 90
    assert data["total"]["params"] == data["total"]["formula"]["params"] == 7_322
    assert data["uncounted_ops"]["arithmetic"]["aten.add"] == 6  # the six residual adds
    # geometry, not clipped to the 8x8 input: the stem's 3, then 12 3x3 convs add 2 each
    assert data["total"]["receptive_field"] == [27, 27]
    assert len(data["layers"]) == 1 + 6 * 3 + 2
    assert data["agree"] is True


def test_a_module_run_three_times_adds_every_call() -> None:
    data = analyze_model(Shared(), (1, 8, 4, 4)).to_dict()
    rows = {layer["name"]: layer for layer in data["layers"]}
    # 16·8·72 = 9,216 per call, three calls
    assert rows["block.conv1 (×3)"]["macs"] == {"measured": 27_648, "formula": 27_648}
    assert data["total"]["params"] == data["total"]["formula"]["params"] == 1_168


def test_functional_conv_with_a_childs_weight() -> None:
    data = analyze_model(Functional(), (1, 3, 6, 6)).to_dict()
    (row,) = data["layers"]
    # F.conv2d padding 1 on 6×6: 36·4·27 = 3,888, in the root, with conv.weight
    assert row["name"] == "(model)"
    assert row["macs"] == {"measured": 3_888, "formula": 3_888}
    assert any("conv.weight" in note for note in data["notes"])
    # conv never ran: its 112 parameters have no row
    assert data["total"]["params"] == 112 and data["total"]["formula"]["params"] is None


def test_lazy_module_gets_the_materialised_formula() -> None:
    data = analyze_model(nn.Sequential(nn.LazyLinear(5)), (2, 7)).to_dict()
    (row,) = data["layers"]
    assert row["macs"] == {"measured": 70, "formula": 70}  # 2·7·5
    assert row["params"] == {"measured": 40, "formula": 40}  # 7·5 + 5


def test_meta_device_counts_shapes_only() -> None:
    data = analyze_model(Trunk(), (1, 3, 8, 8), device="meta").to_dict()
    assert data["measured_on"] == "meta"
    assert data["total"]["macs"] == 456_272
    assert data["total"]["receptive_field"] is None


def test_an_op_torch_counts_and_convcalc_does_not_is_a_strict_problem(monkeypatch) -> None:
    from convcalc.measure import opcount

    monkeypatch.delitem(opcount.RULES, torch.ops.aten.addmm)
    report = analyze_model(nn.Sequential(nn.Linear(4, 3)), (2, 4))
    problems = report.to_dict()["strict_problems"]
    assert problems and problems[0].startswith("aten.addmm (1 calls): torch's flop counter")
    # torch's 2·2·4·3 = 48 FLOPs are in the measured total; no rule made MACs of them
    assert report.total.flops.measured == 48
    assert not report.agree


# --- failures: one line each (the CLI exits 2 on SpecError) ---------------------------------


class ReturnsNothing(nn.Module):
    def forward(self, x: torch.Tensor) -> None:
        return None


class NeedsMask(nn.Module):
    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x * mask


class Raises(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("bad input")


@pytest.mark.parametrize(
    "target, message",
    [
        (ReturnsNothing(), "the model returned NoneType, which holds no tensor"),
        (
            NeedsMask(),
            "the model failed on input 1x3: TypeError: NeedsMask.forward() missing 1 required "
            "positional argument: 'mask'",
        ),
        (Raises(), "the model failed on input 1x3: ValueError: bad input"),
        ("timm:resnet18", "timm is not installed: pip install 'convcalc[timm]'"),
        ("no_such_net.onnx", "cannot load no_such_net.onnx: no such file"),
    ],
)
def test_failures_are_one_line(target: object, message: str) -> None:
    with pytest.raises(SpecError) as raised:
        analyze_model(target, (1, 3))
    assert raised.value.message == message


def test_a_factory_missing_an_argument(tmp_path) -> None:
    path = tmp_path / "factory.py"
    path.write_text("from torch import nn\n\ndef make(width):\n    return nn.Linear(3, width)\n")
    with pytest.raises(SpecError) as raised:
        analyze_model(f"{path}:make", (1, 3))
    assert raised.value.message == f"{path}:make needs 'width': pass --kwargs width=..."
    report = analyze_model(f"{path}:make", (1, 3), kwargs="width=4")
    assert report.total.macs.measured == report.total.macs.formula == 12


def test_an_onnx_file_without_onnx_installed(tmp_path) -> None:
    path = tmp_path / "net.onnx"
    path.write_bytes(b"not read: onnx is missing")
    with pytest.raises(SpecError) as raised:
        analyze_model(str(path), (1, 3))
    assert raised.value.message == "onnx is not installed: pip install 'convcalc[onnx]'"


def test_cli_missing_extra_exits_2(cli) -> None:
    result = cli("model", "timm:resnet18", "--input", "1,3,8,8")
    assert (result.exit_code, result.stderr) == (
        2,
        "error: timm is not installed: pip install 'convcalc[timm]'\n",
    )


# --- conventions of the well-known tools, for a whole model ---------------------------------


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    ).eval()


def test_model_conventions_by_hand() -> None:
    from convcalc.core.conventions import conventions

    tools = conventions(analyze_model(small_cnn(), (1, 3, 4, 4)).to_dict())
    # conv 3→4 k3 p1 on 4×4: 16 positions, M = 16·4·27 = 1,728, bias adds B = 16·4 = 64,
    # params 112; BN in 64 elements (affine); ReLU 64 → 64; max pool 64 → 16; adaptive avg
    # 16 → 4; linear 4→2: M = 8, 2 output elements, params 10
    expected = {
        # 1,728 + BN 2·64 + adaptive pool 16 + linear 8
        "fvcore": 1_728 + 128 + 16 + 8,
        # 2·(1,728 + 8)
        "torch FlopCounterMode": 3_472,
        # conv 112·16 + BN 8·batch 1 + linear 10·1
        "torchinfo": 1_792 + 8 + 10,
        # conv M + BN 0 + ReLU 0 + max 0 + adaptive (2·2 + 1)·4 = 20 + linear 4·2
        "thop": 1_728 + 20 + 8,
        # conv M + B + BN 2·64 + ReLU 64 + pools 64 + 16 (inputs) + linear 4·2 + 2
        "ptflops": 1_792 + 128 + 64 + 64 + 16 + 10,
        # conv 2M + B + BN 128 + ReLU 64 + pools 64 + 16 + linear 2·8 + 2
        "calflops / DeepSpeed": 3_520 + 128 + 64 + 64 + 16 + 18,
    }
    assert {tool: tools[tool]["total"] for tool in expected} == expected
    assert tools["thop"]["layers"]["1"] == 0  # its batch-norm hook adds nothing


def test_model_conventions_match_fvcore_and_torchinfo_run() -> None:
    import warnings

    from convcalc.core.conventions import conventions

    net = small_cnn()
    tools = conventions(analyze_model(net, (1, 3, 4, 4)).to_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(net, torch.zeros(1, 3, 4, 4))
        analysis.unsupported_ops_warnings(False)
        assert tools["fvcore"]["total"] == analysis.total()
    torchinfo = pytest.importorskip("torchinfo")
    summary = torchinfo.summary(net, input_size=(1, 3, 4, 4), verbose=0)
    assert tools["torchinfo"]["total"] == summary.total_mult_adds


def test_table_of_a_model_with_modules_convcalc_has_no_formula_for(cli, tmp_path) -> None:
    # LayerNorm's parameters have no formula: the total memory formula is null, and the table
    # says "no formula" instead of failing (a new user's pass found exit 3 here)
    net = tmp_path / "attn_net.py"
    net.write_text(
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.norm = nn.LayerNorm(16)\n"
        "        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)\n"
        "    def forward(self, x):\n"
        "        f = self.norm(x)\n"
        "        return self.attn(f, f, f)[0]\n"
    )
    result = cli("model", f"{net}:Net", "--input", "1,5,16")
    assert result.exit_code == 0, result.stderr
    assert "no formula" in result.stdout


def test_model_conventions_table_names_what_each_rule_leaves_out(cli, tmp_path) -> None:
    # a functional adaptive pool and a torch.matmul in forward: the table says which tools'
    # module rules cannot see them (fvcore's trace counts F.adaptive_avg_pool2d; thop hooks
    # modules only and leaves the matmul's MACs out of its total, so the "(model)" row is named)
    source = tmp_path / "fnet.py"
    source.write_text(
        "import torch\nimport torch.nn.functional as F\nfrom torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 8, 3, padding=1)\n"
        "        self.w = nn.Parameter(torch.ones(8, 4))\n"
        "    def forward(self, x):\n"
        "        return torch.matmul(F.adaptive_avg_pool2d(self.conv(x), 1).flatten(1), self.w)\n"
    )
    result = cli("model", f"{source}:Net", "--input", "1,3,8,8", "--conventions")
    assert result.exit_code == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "what other tools would print: each tool's rule on every module it counts" in text
    assert "fvcore: module rules only: functional calls its torch.jit trace counts" in text
    assert "thop does not count: (model)" in text
    data = cli.json("model", f"{source}:Net", "--input", "1,3,8,8", "--conventions")
    thop = data["conventions"]["thop"]
    # conv 3->8 k3 p1 on 8x8: 8·8·8·27 = 13,824 MACs; the matmul (1x8 @ 8x4): 32 MACs, unseen
    assert thop["total"] == 13_824 and thop["not_counted_by_this_rule"] == ["(model)"]


def test_model_names_the_modules_torchsummary_counts_and_it_has_no_row_for(cli, tmp_path) -> None:
    # torchsummary hooks every module but Sequential and the model: the ReLUs' outputs count
    # there (2·(32+32+8+8+8+8) KiB = 196,608 B); convcalc's rows are conv, pool, conv, bn
    # (2·(32+8+8+8) KiB = 114,688 B) and the note names the two ReLUs it leaves out
    source = tmp_path / "seq.py"
    source.write_text(
        "from torch import nn\n"
        "def Seq():\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),\n"
        "                         nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())\n"
    )
    data = cli.json("model", f"{source}:Seq", "--input", "1,3,32,32")
    assert data["total"]["memory_bytes"]["forward_backward_torchsummary"] == 114_688
    assert any(
        "torchsummary also counts the outputs of modules convcalc has no row for: 1, 5" in note
        for note in data["notes"]
    )


def test_ptflops_counts_multihead_attention_by_its_own_hook() -> None:
    # ptflops' multihead_attention_counter_hook on AttentionBlock's attn, input 2×5×16
    # (batch_first: batch 2, lengths 5, dims 16, 4 heads of 4, biases): per batch item
    #   query scaling 5·16 = 80; projections 3·(5·16·16) = 3,840; their biases (5+5+5)·16 = 240;
    #   heads 4·(5·5·4 + 5·5 + 5·5·4) = 4·225 = 900; output projection 5·16·17 = 1,360
    #   = 6,420; × batch 2 = 12,840
    from convcalc.core.conventions import model_conventions

    data = analyze_model(AttentionBlock(), (2, 5, 16)).to_dict()
    (attn,) = [m for m in data["modules"] if m["name"] == "attn"]
    assert attn["attention_calls"] == [
        {
            "batch": 2,
            "qlen": 5,
            "klen": 5,
            "vlen": 5,
            "qdim": 16,
            "kdim": 16,
            "vdim": 16,
            "heads": 4,
            "in_proj_bias": 1,
        }
    ]
    ptflops = model_conventions(data)["ptflops"]
    assert ptflops["layers"]["attn"] == 12_840
    assert "attn" not in ptflops["not_counted_by_this_rule"]


def test_ptflops_has_no_attention_figure_where_its_hook_would_fail() -> None:
    # attn(q, k, v, None, False): five positional arguments; ptflops' hook unpacks three
    from convcalc.core.conventions import model_conventions

    class Extra(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(16, 4, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.attn(x, x, x, None, False)[0]

    data = analyze_model(Extra(), (2, 5, 16)).to_dict()
    (attn,) = [m for m in data["modules"] if m["name"] == "attn"]
    assert attn["attention_calls"] == []
    ptflops = model_conventions(data)["ptflops"]
    assert "attn" not in ptflops["layers"] and "attn" in ptflops["not_counted_by_this_rule"]
