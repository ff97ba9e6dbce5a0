"""Whole-network counting at the dispatch level (convcalc.opcount), its closed forms
(convcalc.opformulas) and model loading (convcalc.loaders). Every expected number is derived
by hand in the comment beside it."""

from __future__ import annotations

import importlib.util
import sys
import time
import types
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from convcalc.core import opformulas
from convcalc.errors import MeasurementError, SpecError
from convcalc.measure.loaders import load_target, parse_kwargs
from convcalc.measure.opcount import conv_call_formula, count_model, module_formula


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(64, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_multihead_attention_projections_and_matmuls(device: str) -> None:
    # batch 2, seq 10, embed 64, 4 heads of 16:
    # projections 4·(2·10·64·64) = 4·81,920 = 327,680
    # q·kᵀ 2·4·10·10·16 = 12,800; attn·v the same: 12,800  -> 353,280
    result = count_model(Attention(), (2, 10, 64), device=device)
    assert result.total_macs == 353_280
    attn = result.module("attn")
    assert attn.macs == 353_280
    by_weight = {op.weight: op.macs for op in attn.ops if op.weight}
    # q, k, v projections run as one packed product (2·10 rows, 64 in, 192 out), the output
    # projection through out_proj's weight without calling out_proj
    assert by_weight == {"attn.in_proj_weight": 245_760, "attn.out_proj.weight": 81_920}
    assert sum(op.macs for op in attn.ops if op.weight is None) == 25_600
    formula = module_formula(attn)
    assert formula is not None and formula.value == 353_280
    assert result.warnings == ()


class Sdpa(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(64, 192)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).view(2, 10, 3, 4, 16).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_scaled_dot_product_attention(device: str) -> None:
    # qkv linear 2·10·64·192 = 245,760; SDPA on (2, 4, 10, 16): 2·4·10·10·16 twice = 25,600
    result = count_model(Sdpa(), (2, 10, 64), device=device)
    assert result.module("qkv").macs == 245_760
    assert result.module("").macs == 25_600
    assert result.total_macs == 271_360
    assert opformulas.sdpa_macs((2, 4, 10, 16), (2, 4, 10, 16), (2, 4, 10, 16)).value == 25_600
    if device == "cpu":
        # torch's CPU kernel has no formula in torch's counter: said, not silent
        assert any("_scaled_dot_product_flash_attention_for_cpu" in n for n in result.notes)


class Einsum(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bij,bjk->bik", x, x.transpose(1, 2))


def test_einsum_through_its_contraction() -> None:
    # x 2×3×5, xᵀ 2×5×3: b·i·j·k = 2·3·5·3 = 90 (one bmm)
    result = count_model(Einsum(), (2, 3, 5))
    assert result.total_macs == 90
    assert opformulas.einsum_macs("bij,bjk->bik", [(2, 3, 5), (2, 5, 3)]).value == 90
    # ij,jk,kl->il left to right: 2·3·4 = 24 then 2·4·5 = 40
    assert opformulas.einsum_macs("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]).value == 64
    # an outer product has no contraction: torch multiplies elementwise, 0 MACs
    assert opformulas.einsum_macs("i,j->ij", [(3,), (4,)]).value == 0


@given(
    st.sampled_from(["bij,bjk->bik", "ij,jk->ik", "bi,bi->b", "ij,jk->i", "...ij,...jk->...ik"]),
    st.integers(1, 4),
    st.integers(1, 4),
    st.integers(1, 4),
    st.integers(1, 4),
)
@settings(max_examples=30, deadline=None)
def test_einsum_formula_matches_torch(eq: str, b: int, i: int, j: int, k: int) -> None:
    sizes = {"b": b, "i": i, "j": j, "k": k}
    terms = eq.replace("...", "b").split("->")[0].split(",")
    shapes = [tuple(sizes[c] for c in t) for t in terms]

    class Model(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.einsum(eq, *[torch.zeros(s) for s in shapes])

    measured = count_model(Model(), (1,), device="meta").total_macs
    assert measured == opformulas.einsum_macs(eq, shapes).value


def test_linear_over_leading_dimensions() -> None:
    # ConvNeXt-style MLP on N×H×W×C = 2×7×7×32: 2·7·7·32·128 = 98·4,096 = 401,408, and the
    # same for 128 -> 32: 802,816 (a formula counting one position would say 4,096 each)
    model = nn.Sequential(nn.Linear(32, 128), nn.GELU(), nn.Linear(128, 32))
    result = count_model(model, (2, 7, 7, 32), device="meta")
    assert result.total_macs == 802_816
    first = result.module("0")
    formula = module_formula(first)
    assert formula is not None and formula.value == first.macs == 401_408
    assert "aten.gelu" in result.arithmetic


class SameConv(nn.Conv2d):
    """'same' padding done at run time, as model libraries' Conv2dSame layers do."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (1, 1, 1, 1)), self.weight, self.bias, self.stride)


def test_run_time_padding_formula_from_the_padded_input() -> None:
    # input 1×3×16×16 padded to 18×18, 8 filters of 3·3·3, static padding 0:
    # output 16×16: 1·8·16·16·27 = 55,296 (the static padding would give 14×14: 42,336)
    result = count_model(nn.Sequential(SameConv(3, 8, 3)), (1, 3, 16, 16))
    conv = result.module("0")
    assert conv.macs == 55_296
    formula = module_formula(conv)
    assert formula is not None and formula.value == 55_296
    assert "padded input 1×3×18×18" in formula.shown
    assert any("padded at run time" in n for n in conv.notes)
    assert "aten.constant_pad_nd" in result.zero_cost


class FunctionalConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3)

    def forward(self, x: torch.Tensor) -> dict[str, object]:
        return {"a": self.conv(x), "b": [F.conv2d(x, self.conv.weight, stride=2), (x,)]}


def test_functional_conv_with_a_modules_weight() -> None:
    # conv: 1·16·14·14·27 = 84,672; F.conv2d stride 2: 1·16·7·7·27 = 21,168 -> 105,840
    # (hooks on conv alone see 84,672)
    result = count_model(FunctionalConv(), (1, 3, 16, 16))
    assert result.total_macs == 105_840
    assert result.module("conv").macs == 84_672
    root = result.module("")
    assert [(op.op, op.weight, op.macs) for op in root.ops] == [
        ("aten.convolution", "conv.weight", 21_168)
    ]
    functional = [c for c in result.conv_calls if c.module == ""]
    assert conv_call_formula(functional[0]).value == 21_168
    assert any("functional call on conv's parameter" in n for n in result.notes)
    assert result.output_structure == "dict{a: 1×16×14×14, b: list[1×16×7×7, tuple(1×3×16×16)]}"


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_lazy_module_materialised(device: str) -> None:
    # LazyConv2d(8, 3) on 3 channels: params 8·3·3·3 + 8 = 224; MACs 1·8·14·14·27 = 42,336
    model = nn.Sequential(nn.LazyConv2d(8, 3))
    result = count_model(model, (1, 3, 16, 16), device=device)
    conv = result.module("0")
    assert conv.lazy and conv.params == 224
    formula = module_formula(conv)
    assert formula is not None and formula.value == conv.macs == 42_336


class TupleHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        y = self.fc(x)
        return y, [y[:, :3], y[:, 3:]]


def test_nested_output() -> None:
    # fc 2·4·6 = 48
    result = count_model(TupleHead(), (2, 4))
    assert result.total_macs == 48
    assert result.output_structure == "tuple(2×6, list[2×3, 2×3])"
    assert result.output_shapes == ((2, 6), (2, 3), (2, 3))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(64, 64, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn(self.conv(x)))


def test_deep_trunk_on_meta_is_fast() -> None:
    # 100 blocks, each 1·64·56·56·64·9 = 115,605,504 MACs -> 11,560,550,400
    model = nn.Sequential(*[Block() for _ in range(100)])
    start = time.perf_counter()
    result = count_model(model, (1, 64, 56, 56), device="meta")
    elapsed = time.perf_counter() - start
    assert result.total_macs == 11_560_550_400
    assert result.module("").inclusive_macs == result.total_macs
    assert result.module("57").inclusive_macs == 115_605_504
    assert elapsed < 3.0


def test_torch_counts_what_no_rule_does_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    from convcalc.measure import opcount

    rules = dict(opcount.RULES)
    del rules[torch.ops.aten.addmm]
    monkeypatch.setattr(opcount, "RULES", rules)
    result = count_model(nn.Linear(4, 6), (2, 4))
    # torch: 2·(2·4·6) = 96 FLOPs; convcalc: nothing
    assert result.total_macs == 0 and result.total_flops == 96
    assert any("aten.addmm" in w and "no MAC rule" in w for w in result.warnings)
    with pytest.raises(MeasurementError, match="aten.addmm"):
        count_model(nn.Linear(4, 6), (2, 4), strict=True)


# --- bad models: one line each ------------------------------------------------------------------


class Raises(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("boom\nsecond line")


class ReturnsNone(nn.Module):
    def forward(self, x: torch.Tensor) -> None:
        return None


@pytest.mark.parametrize(
    ("model", "message"),
    [(Raises(), "ValueError: boom"), (ReturnsNone(), "holds no tensor")],
)
def test_bad_models_are_one_line(model: nn.Module, message: str) -> None:
    with pytest.raises(SpecError, match=message) as caught:
        count_model(model, (1, 3))
    assert "\n" not in str(caught.value)


# --- formulas against torch over random specs ---------------------------------------------------


@given(
    st.integers(1, 3),
    st.integers(1, 8),
    st.integers(1, 4),
    st.integers(1, 4),
    st.integers(1, 3),
)
@settings(max_examples=25, deadline=None)
def test_mha_formula_matches_dispatch(b: int, length: int, source: int, heads: int, k: int) -> None:
    embed = heads * 4
    model = nn.MultiheadAttention(embed, heads, kdim=k * 3, vdim=k * 5, batch_first=True)
    q = torch.zeros(b, length, embed)
    key, value = torch.zeros(b, source, k * 3), torch.zeros(b, source, k * 5)
    result = count_model(model, (q, key, value), device="meta")
    expected = opformulas.mha_macs(b, length, source, embed, heads, k * 3, k * 5).value
    assert result.total_macs == expected
    formula = module_formula(result.module(""))
    assert formula is not None and formula.value == expected


@given(st.lists(st.integers(1, 4), min_size=1, max_size=3), st.integers(1, 5), st.integers(1, 5))
@settings(max_examples=25, deadline=None)
def test_matmul_and_linear_formulas_match_dispatch(lead: list[int], k: int, n: int) -> None:
    a, b = (*lead, 3, k), (k, n)

    class Model(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.matmul(x, torch.zeros(b))

    assert count_model(Model(), a, device="meta").total_macs == opformulas.matmul_macs(a, b).value
    linear = count_model(nn.Linear(k, n), (*lead, k), device="meta")
    assert linear.total_macs == opformulas.linear_macs((*lead, k), k, n).value


# --- loaders ------------------------------------------------------------------------------------


def test_parse_kwargs() -> None:
    assert parse_kwargs("a=1,b=None,c=x,d=2.5,e=True,f=false") == {
        "a": 1,
        "b": None,
        "c": "x",
        "d": 2.5,
        "e": True,
        "f": False,
    }
    with pytest.raises(SpecError, match="NAME=VALUE"):
        parse_kwargs("a")


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A torchvision-like package written here: models.resnet_like(*, weights, num_classes)."""
    package = tmp_path / "fakevision_oc"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(
        "from torch import nn\n"
        "def resnet_like(*, weights=None, num_classes=1000):\n"
        "    assert weights is None\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(num_classes))\n"
        "def needs(n, *, weights=None):\n"
        "    return nn.Linear(n, n)\n"
    )
    (package / "broken.py").write_text("import missing_package_oc\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in list(sys.modules):
        if name.startswith("fakevision_oc"):
            monkeypatch.delitem(sys.modules, name)
    return "fakevision_oc"


def test_factory_with_kwargs_and_no_weights(stand_in: str) -> None:
    model, notes = load_target(f"{stand_in}.models:resnet_like", "num_classes=10")
    assert any("weights=None" in n for n in notes)
    result = count_model(model, (1, 3, 8, 8))
    # conv 1·4·6·6·27 = 3,888; linear 144·10 = 1,440
    assert result.total_macs == 5_328
    assert result.output_shapes == ((1, 10),)


def test_loader_errors_are_one_line(stand_in: str) -> None:
    with pytest.raises(SpecError, match="needs 'n': pass --kwargs n=") as caught:
        load_target(f"{stand_in}.models:needs")
    assert "\n" not in str(caught.value)
    with pytest.raises(SpecError, match="missing_package_oc"):
        load_target(f"{stand_in}.broken:anything")
    with pytest.raises(SpecError, match="never downloads"):
        load_target(f"{stand_in}.models:resnet_like", "weights=DEFAULT")


def test_timm_stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}
    fake = types.ModuleType("timm")

    def create_model(name: str, **kwargs: object) -> nn.Module:
        seen.update(kwargs, name=name)
        return nn.Linear(4, 2)

    fake.create_model = create_model  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "timm", fake)
    model, notes = load_target("timm:tiny_net", "num_classes=2")
    assert seen == {"name": "tiny_net", "pretrained": False, "num_classes": 2}
    assert isinstance(model, nn.Linear) and notes


def test_timm_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(SpecError, match=r"timm is not installed: pip install 'convcalc\[timm\]'"):
        load_target("timm:resnet18")


def test_torchscript_file(tmp_path: Path) -> None:
    path = tmp_path / "net.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script is deprecated
        torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())).save(str(path))
    model, notes = load_target(str(path))
    result = count_model(model, (1, 3, 8, 8))
    # 1·4·6·6·27 = 3,888, attributed to the root (TorchScript runs its submodules itself)
    assert result.total_macs == 3_888
    assert result.module("").macs == 3_888
    assert any("TorchScript" in n for n in notes)


def test_onnx_file(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx", reason="optional extra convcalc[onnx] not installed")
    if importlib.util.find_spec("onnx2torch") is None:  # importing it needs torchvision: later
        pytest.skip("optional extra convcalc[onnx] not installed")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "W")
    conv = helper.make_node("Conv", ["x", "W"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [conv, helper.make_node("Relu", ["y"], ["z"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 8, 16, 16])],
        [weight],
    )
    path = tmp_path / "net.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    model, notes = load_target(str(path))
    # 1·8·16·16·27 = 55,296
    assert count_model(model, (1, 3, 16, 16)).total_macs == 55_296
    assert any("onnx2torch" in n for n in notes)


def test_onnx_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)
    path = tmp_path / "x.onnx"
    path.write_bytes(b"")
    with pytest.raises(SpecError, match=r"pip install 'convcalc\[onnx\]'"):
        load_target(str(path))
