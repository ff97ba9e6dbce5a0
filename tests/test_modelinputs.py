"""`convcalc model` on a forward of several inputs, integer inputs and keyword inputs (--input
repeated, NAME=SHAPE:DTYPE; ``convcalc.model(inputs=...)``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import convcalc
from convcalc.choices import Measure
from convcalc.core.modelinput import ModelInput, model_inputs, parse_input
from convcalc.errors import SpecError

NETS = """
import torch
from torch import nn


class Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(1, 8, 3, padding=1)

    def forward(self, x, y):
        return self.a(x) + self.b(y)


class Tok(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(100, 16)
        self.q = nn.Linear(16, 16)
        self.k = nn.Linear(16, 16)
        self.v = nn.Linear(16, 16)

    def forward(self, ids, mask=None):
        if mask is None or mask.dtype != torch.bool:
            raise ValueError("mask= not passed by keyword as a bool tensor")
        h = self.emb(ids)
        q, k, v = self.q(h), self.k(h), self.v(h)
        s = (q @ k.transpose(-1, -2)).masked_fill(mask[:, None, :], -1e9)
        return s.softmax(-1) @ v
"""


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("nets") / "nets.py"
    path.write_text(NETS, encoding="utf-8")
    return path


class Two(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(1, 8, 3, padding=1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.a(x) + self.b(y)


class Tower(nn.Module):
    """Two towers: token ids (no field) first, an image (the field's input) second."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.conv = nn.Conv2d(3, 4, 5, padding=2)

    def forward(self, ids: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.conv(image).mean((2, 3)) + self.emb(ids).mean(1)


def _two_input_checks(data: dict[str, Any]) -> None:
    # a: conv 3->8, 3x3, padding 1 on 1x3x8x8: output 1x8x8x8; MACs 8·8·8 positions·3·9 =
    # 13,824; params 8·3·9 + 8 = 224. b: conv 1->8 on 1x1x8x8: MACs 8·8·8·1·9 = 4,608; params
    # 8·9 + 8 = 80. The model: 13,824 + 4,608 = 18,432 MACs, 224 + 80 = 304 params
    assert data["total"]["macs"] == 18_432 and data["total"]["formula"]["macs"] == 18_432
    assert data["total"]["params"] == 304
    assert data["input_shape"] == [1, 3, 8, 8]
    assert data["inputs"] == [
        {"name": None, "shape": [1, 3, 8, 8], "dtype": "float32"},
        {"name": None, "shape": [1, 1, 8, 8], "dtype": "float32"},
    ]
    # torchsummary's input bytes, every input: (1·3·8·8 + 1·1·8·8)·4 = (192 + 64)·4 = 1,024
    assert data["total"]["memory_bytes"]["input"] == 1_024
    assert data["total"]["formula"]["memory_bytes"]["input"] == 1_024
    # the field, of x: one 3x3 conv
    assert data["total"]["receptive_field"] == [3, 3]
    assert any("receptive field is of its input 0 (the first)" in n for n in data["notes"])


def test_two_inputs_counted_as_the_sum_of_both_branches(cli, nets: Path) -> None:
    data = cli.json("model", f"{nets}:Two", "--input", "1,3,8,8", "--input", "1,1,8,8")
    _two_input_checks(data)
    # the inference peak holds both inputs (1,024 B) and the outputs: a's and b's 1x8x8x8
    # (2,048 B each) and their sum (2,048 B): 1,024 + 3·2,048 = 7,168
    assert data["total"]["memory_bytes"]["peak_inference"] == 7_168
    # saved for backward (the data needing no grad): each conv keeps its input, 768 + 256 B
    assert data["total"]["memory_bytes"]["saved_for_backward"] == 1_024


def test_the_library_call_is_the_cli_json(cli, nets: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("nets_lib", nets)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    by_cli = cli.json("model", f"{nets}:Tok", "--input", "2,10:int64", "--input", "mask=2,10:bool")
    by_api = convcalc.model(
        module.Tok(), inputs=[((2, 10), torch.int64), ModelInput((2, 10), "bool", name="mask")]
    ).to_dict()
    for key in ("layers", "total", "inputs", "input_shape", "warnings", "agree"):
        assert by_api[key] == by_cli[key], key
    # the notes but the title's: the same
    assert by_api["notes"] == by_cli["notes"]


def test_embedding_and_attention_on_int64_tokens(cli, nets: Path) -> None:
    data = cli.json("model", f"{nets}:Tok", "--input", "2,10:int64", "--input", "mask=2,10:bool")
    # N = 2, L = 10, E = 16. q, k, v: Linear(16, 16) on 2·10 positions: 2·10·16·16 = 5,120
    # each, 15,360. The root's own: q @ kᵀ 2·10·10·16 = 3,200 and softmax(s) @ v 2·10·10·16 =
    # 3,200: 6,400. Total 15,360 + 6,400 = 21,760 MACs; FLOPs twice that, 43,520
    assert data["total"]["macs"] == 21_760 and data["total"]["flops"] == 43_520
    rows = {layer["name"]: layer["macs"]["measured"] for layer in data["layers"]}
    assert rows == {"(model)": 6_400, "q": 5_120, "k": 5_120, "v": 5_120}
    assert data["inputs"] == [
        {"name": None, "shape": [2, 10], "dtype": "int64"},
        {"name": "mask", "shape": [2, 10], "dtype": "bool"},
    ]
    # input bytes: ids 2·10·8 = 160, mask 2·10·1 = 20: 180
    assert data["total"]["memory_bytes"]["input"] == 180
    # the mask reached forward by name (it raises otherwise) and its masked_fill ran
    assert data["uncounted_ops"]["zero_cost"]["aten.masked_fill"] == 1
    assert any("filled with zeros" in n for n in data["notes"])
    assert any("not measured: no convolution or pooling ran" in n for n in data["notes"])
    # meta counts the same
    meta = cli.json(
        "model",
        f"{nets}:Tok",
        "--input",
        "2,10:int64",
        "--input",
        "mask=2,10:bool",
        "--measure-on",
        "meta",
    )
    assert meta["total"]["macs"] == 21_760 and meta["inputs"] == data["inputs"]
    assert meta["total"]["memory_bytes"]["input"] == 180


def test_the_headers_show_every_input(cli, nets: Path) -> None:
    args = ("model", f"{nets}:Tok", "--input", "2,10:int64", "--input", "mask=2,10:bool")
    table = cli(*args, env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.stderr
    assert "on inputs 2×10:int64, mask=2×10:bool (float32)" in table.stdout.splitlines()[0]
    markdown = cli(*args, "--format", "markdown").stdout
    assert markdown.startswith("**convcalc model** on inputs 2×10:int64, mask=2×10:bool (float32)")
    lines = cli(*args, "--format", "csv").stdout.splitlines()
    # the total row's input_shape cell: every input (a layer row's: its own input)
    assert lines[-1].startswith("total,,,total,,2x10:int64;mask=2x10:bool,2x10x16,")


@pytest.mark.parametrize(
    ("given", "line"),
    [
        (
            ["1,3:int8"],
            "--input 1,3:int8: dtype 'int8' must be one of float32, float16, bfloat16, int64, "
            "int32, bool",
        ),
        (["=1,3"], "--input =1,3: the name before '=' is empty"),
        (["a-b=1,3"], "--input a-b=1,3: the name 'a-b' must be a Python identifier"),
        (
            ["1,3", "mask=1,3:bool", "1,3"],
            "--input 1x3 is positional after the keyword input mask=1x3:bool: give positional "
            "inputs first, in forward's order",
        ),
        (["1,3", "m=1,3", "m=1,3"], "--input m= is given twice"),
        (["1,3", "1,0"], "--input 1x0 must be positive integers"),
        (["5:int64"], "--input 5:int64: the first input needs at least 2 axes (N, ...), like 4,64"),
        (
            ["1,3", "1,a"],
            "--input 1,a must be integers like 1,3,224,224 or 4,64, then an optional :dtype "
            "(1,128:int64), an optional name= before them (mask=1,128:bool)",
        ),
    ],
)
def test_a_bad_input_is_one_line(cli, given: list[str], line: str) -> None:
    args = [a for text in given for a in ("--input", text)]
    result = cli("model", "torch.nn:Identity", *args)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == f"error: {line}\n"


def test_the_field_is_of_the_first_floating_spatial_input() -> None:
    # the image's conv, 5x5: field 5x5; the ids (first) have none
    data = convcalc.model(
        Tower(), inputs={"ids": ((2, 3), "int64"), "image": (2, 3, 16, 16)}
    ).to_dict()
    assert data["total"]["receptive_field"] == [5, 5]
    assert any("receptive field is of its input image=" in n for n in data["notes"])
    assert [i["name"] for i in data["inputs"]] == ["ids", "image"]


def test_the_training_step_runs_with_integer_inputs() -> None:
    report = convcalc.model(
        Tower(), inputs=[((2, 3), "int64"), (2, 3, 16, 16)], measure=Measure(train=True)
    )
    step = report.to_dict()["total"]["memory_bytes"]["training_step"]
    # params: emb 10·4 = 40, conv 4·3·25 + 4 = 304: 344 floats, 1,376 B; grads the same
    assert step is not None and step["params"] == 1_376 and step["grads"] == 1_376


def test_python_inputs_forms() -> None:
    # a shape, a (shape, dtype) pair (a torch dtype too), text, a ModelInput: one rule set
    found = model_inputs(
        [(1, 3, 8, 8), ((1, 5), torch.int32), "2,2:bool", ModelInput((1, 4), None, "m")]
    )
    assert found == (
        ModelInput((1, 3, 8, 8)),
        ModelInput((1, 5), "int32"),
        ModelInput((2, 2), "bool"),
        ModelInput((1, 4), None, "m"),
    )
    assert parse_input("mask=1x128:torch.bool") == ModelInput((1, 128), "bool", "mask")
    with pytest.raises(SpecError, match=r"^give input= \(one shape\) or inputs="):
        convcalc.model(Two(), (1, 3, 8, 8), inputs=[(1, 3, 8, 8)])
    with pytest.raises(SpecError, match=r"^inputs is empty"):
        convcalc.model(Two(), inputs=[])
    # the same model through input= (one shape) and inputs= (one shape): the same JSON
    one = convcalc.model(nn.Conv2d(3, 4, 3), (1, 3, 8, 8)).to_dict()
    same = convcalc.model(nn.Conv2d(3, 4, 3), inputs=[(1, 3, 8, 8)]).to_dict()
    assert one["total"] == same["total"] and one["inputs"] == same["inputs"]
    assert one["notes"] == same["notes"]


def test_a_padding_mask_is_data_movement_and_strict_passes(cli, tmp_path) -> None:
    # nn.TransformerEncoder given src_key_padding_mask fills the masked scores in place
    # (aten.masked_fill_): a fill, no arithmetic. It was filed under "no rule", so --strict
    # failed on any transformer run with a padding mask
    net = tmp_path / "masked.py"
    net.write_text(
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.emb = nn.Embedding(50, 16)\n"
        "        layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)\n"
        "        self.enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)\n"
        "    def forward(self, tokens, mask):\n"
        "        return self.enc(self.emb(tokens), src_key_padding_mask=mask)\n"
    )
    args = ("model", f"{net}:Net", "--input", "2,6:int64", "--input", "mask=2,6:bool")
    data = json.loads(cli(*args, "--json").stdout)
    assert data["uncounted_ops"]["no_rule"] == {}
    assert "aten.masked_fill_" in data["uncounted_ops"]["zero_cost"]
    strict = cli(*args, "--strict")
    assert strict.exit_code == 0, strict.stderr


def test_inputs_too_big_for_this_machine_are_bad_input_not_a_crash(cli, monkeypatch) -> None:
    # torch's allocator raised inside convcalc's own input making: exit 3 ("please report
    # it"). 1·99,999,999,999 int64 elements = 799,999,999,992 B = 745.06 GiB
    from convcalc.engine import plan

    monkeypatch.setattr(plan, "physical_memory_bytes", lambda: 16 * 2**30)
    args = ("model", "torch.nn:Embedding", "--kwargs", "num_embeddings=10,embedding_dim=4")
    result = cli(*args, "--input", "1,99999999999:int64")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == (
        "error: --input 1x99999999999:int64: its tensors alone need 745.06 GiB, more than this "
        "machine's 16.00 GiB of memory: --measure-on meta counts the model on torch's meta "
        "device\n"
    )
    meta = cli(*args, "--input", "1,99999999999:int64", "--measure-on", "meta", "--json")
    assert meta.exit_code == 0, meta.stderr
