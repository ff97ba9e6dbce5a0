"""Recurrent kernels (LSTM, GRU, RNN) counted at the dispatch level, and operators no rule
counts that convcalc does not know to be elementwise named apart (``no_rule``, a warning that
``--strict`` fails on). Every expected number is derived by hand in the comment beside it."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from convcalc.errors import MeasurementError
from convcalc.measure.opcount import count_model, known_arithmetic

aten = torch.ops.aten

RNN_NET = (
    "from torch import nn\n"
    "class RNN(nn.Module):\n"
    "    def __init__(self, kind='lstm'):\n"
    "        super().__init__()\n"
    "        self.conv = nn.Conv1d(16, 32, 3, padding=1)\n"
    "        self.rnn = (nn.LSTM if kind == 'lstm' else nn.GRU)(32, 64, batch_first=True,"
    " num_layers=2)\n"
    "        self.fc = nn.Linear(64, 10)\n"
    "    def forward(self, x):\n"
    "        y = self.conv(x).transpose(1, 2)\n"
    "        y, _ = self.rnn(y)\n"
    "        return self.fc(y[:, -1])\n"
)

# the new user's model on input 2×16×50: batch 2, 50 time steps, so 100 (step, batch) rows
# conv: 2·32·50 outputs · 16·3 taps = 153,600; fc: 2·64·10 = 1,280
CONV_FC = 153_600 + 1_280
# LSTM (4 gates), hidden 64, input 32, two layers, 100 rows:
#   layer 0: 4·64·(32 + 64)·100 = 256·96·100 = 2,457,600
#   layer 1: 4·64·(64 + 64)·100 = 256·128·100 = 3,276,800   -> 5,734,400
LSTM_MACS = 5_734_400
# GRU (3 gates): 3·64·96·100 = 1,843,200 + 3·64·128·100 = 2,457,600 -> 4,300,800 (its CPU path
# is addmm/mm, counted right before this fix: the same number)
GRU_MACS = 4_300_800


def test_lstm_model_row_counts_its_matrix_products(cli, tmp_path) -> None:
    net = tmp_path / "nets.py"
    net.write_text(RNN_NET)
    result = cli("model", f"{net}:RNN", "--input", "2,16,50", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    rows = {layer["name"].split()[0]: layer for layer in data["layers"]}
    assert rows["rnn"]["macs"]["measured"] == LSTM_MACS
    assert rows["rnn"]["flops"]["measured"] == 2 * LSTM_MACS
    assert data["total"]["macs"] == LSTM_MACS + CONV_FC  # 5,889,280
    assert "aten.mkldnn_rnn_layer" not in data["uncounted_ops"]["arithmetic"]
    assert data["uncounted_ops"]["no_rule"] == {}
    assert any("fused recurrent kernel" in note for note in data["notes"])
    table = cli("model", f"{net}:RNN", "--input", "2,16,50")
    assert "5,734,400" in table.stdout
    lines = " ".join(table.stdout.split()).split("note")
    assert not [n for n in lines if n.startswith(": not counted (elementwise") and "rnn" in n]
    # the LSTM has its closed form now (tests/test_rnnform.py): no "no closed form" line for
    # it; a module with none still says so (test_a_module_without_closed_form_says_so)
    assert "  rnn: no closed form (measured only)\n" not in table.stdout
    assert "no closed form for this module's work" not in " ".join(table.stdout.split())


def test_a_module_without_closed_form_says_so(cli, tmp_path) -> None:
    # x @ self.w in the root's own forward: counted (2·8·4 = 64 MACs), no closed form
    net = tmp_path / "mm.py"
    net.write_text(
        "import torch\n"
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.w = nn.Parameter(torch.zeros(8, 4))\n"
        "    def forward(self, x):\n"
        "        return x @ self.w\n"
    )
    table = cli("model", f"{net}:Net", "--input", "2,8")
    # the formulas' lines say so (it printed "(model): params ")
    assert "  (model): no closed form (measured only)\n" in table.stdout
    # the row's operators with their calls
    assert "no closed form for this module's work (aten.mm ×1)" in " ".join(table.stdout.split())


def test_gru_count_unchanged(cli, tmp_path) -> None:
    net = tmp_path / "nets.py"
    net.write_text(RNN_NET)
    result = cli("model", f"{net}:RNN", "--input", "2,16,50", "--kwargs", "kind=gru", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["total"]["macs"] == GRU_MACS + CONV_FC
    # the GRU cell's gate split is a copy, its gate arithmetic elementwise: nothing lacks a rule
    assert data["uncounted_ops"]["no_rule"] == {}
    assert "aten.unsafe_split" in data["uncounted_ops"]["zero_cost"]
    assert "aten.sigmoid_" in data["uncounted_ops"]["arithmetic"]


@pytest.mark.parametrize("batch_first", [True, False])
def test_lstm_batch_first_or_not(batch_first: bool) -> None:
    # one layer, input 8, hidden 16, batch 3, 7 steps: 21 rows; 4·16·(8 + 16)·21 = 32,256
    lstm = nn.LSTM(8, 16, batch_first=batch_first)
    shape = (3, 7, 8) if batch_first else (7, 3, 8)
    result = count_model(lstm, shape)
    assert result.total_macs == 32_256
    assert result.total_flops == 2 * 32_256
    assert result.no_rule == {}


def test_bidirectional_lstm_counts_both_directions() -> None:
    # input 8, hidden 16, 2 layers, both directions, batch 2, 5 steps: 10 rows
    #   layer 0, each direction: 4·16·(8 + 16)·10 = 15,360      ×2 = 30,720
    #   layer 1 reads both directions (32): 4·16·(32 + 16)·10 = 30,720   ×2 = 61,440
    #   -> 92,160
    lstm = nn.LSTM(8, 16, num_layers=2, bidirectional=True)
    result = count_model(lstm, (5, 2, 8))
    assert result.total_macs == 92_160
    ops = result.module("").ops
    assert sum(op.calls for op in ops if op.op == "aten.mkldnn_rnn_layer") == 4


def test_lstm_without_biases_multiplies_each_weight_once() -> None:
    # bias=False: torch passes w_ih and w_hh again where the biases go; counted once:
    # 4·16·(8 + 16)·(5·2) = 15,360
    result = count_model(nn.LSTM(8, 16, bias=False), (5, 2, 8))
    assert result.total_macs == 15_360


def test_lstm_on_meta_decomposes_to_the_same_count() -> None:
    # the meta device has no fused kernel: the same arithmetic as addmm per step, 15,360
    cpu = count_model(nn.LSTM(8, 16), (5, 2, 8))
    meta = count_model(nn.LSTM(8, 16), (5, 2, 8), device="meta")
    assert cpu.total_macs == meta.total_macs == 15_360


@settings(max_examples=8, deadline=None)
@given(
    kind=st.sampled_from(["lstm", "gru", "rnn"]),
    size=st.integers(1, 12),
    hidden=st.integers(1, 12),
    layers=st.integers(1, 2),
    bidirectional=st.booleans(),
    steps=st.integers(1, 6),
    batch=st.integers(1, 3),
)
def test_recurrent_count_matches_the_closed_form(
    kind: str, size: int, hidden: int, layers: int, bidirectional: bool, steps: int, batch: int
) -> None:
    # gates·hidden·(input + hidden)·steps·batch per layer and direction; a later layer's input
    # is directions·hidden
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    module = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[kind](
        size, hidden, num_layers=layers, bidirectional=bidirectional
    )
    directions = 2 if bidirectional else 1
    expected = 0
    for layer in range(layers):
        width = size if layer == 0 else directions * hidden
        expected += directions * gates * hidden * (width + hidden) * steps * batch
    assert count_model(module, (steps, batch, size)).total_macs == expected


def test_known_arithmetic_keeps_the_elementwise_families() -> None:
    for packet in (aten.add, aten.sigmoid_, aten._softmax, aten.native_layer_norm, aten.mean):
        assert known_arithmetic(packet), packet
    assert known_arithmetic(aten.max_pool2d_with_indices)
    # ops that carry multiply-adds and no rule: never elementwise
    assert not known_arithmetic(aten._trilinear)
    assert not known_arithmetic(aten.conv_tbc)


_LIB = torch.library.Library("rnncount_test", "DEF")
_LIB.define("mystery(Tensor x) -> Tensor")
_LIB.impl("mystery", lambda x: x * 2, "CompositeExplicitAutograd")


class Mystery(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.ops.rnncount_test.mystery(x) + torch.ops.rnncount_test.mystery(x))


def test_custom_op_is_named_as_having_no_rule_and_strict_fails() -> None:
    result = count_model(Mystery(), (2, 8))
    # two calls of the custom op, apart from the add (elementwise)
    assert result.no_rule == {"rnncount_test.mystery": 2}
    assert "rnncount_test.mystery" not in result.arithmetic
    assert result.arithmetic == {"aten.add": 1}
    assert result.uncounted["rnncount_test.mystery"] == 2
    assert any("no rule" in w for w in result.warnings)
    assert result.total_macs == 2 * 8 * 4  # the fc alone: 64
    with pytest.raises(MeasurementError, match="no rule"):
        count_model(Mystery(), (2, 8), strict=True)


def test_cli_names_the_op_with_no_rule_and_strict_exits_1(cli, tmp_path) -> None:
    # nn.Bilinear dispatches aten._trilinear, which convcalc has no rule for
    net = tmp_path / "bil.py"
    net.write_text(
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.b = nn.Bilinear(8, 8, 4)\n"
        "    def forward(self, x):\n"
        "        return self.b(x, x)\n"
    )
    result = cli("model", f"{net}:Net", "--input", "2,8")
    assert result.exit_code == 0, result.stderr
    assert "not counted, and convcalc has no rule for it: aten._trilinear ×1" in result.stdout
    assert "pooling arithmetic is not MACs): aten._trilinear" not in result.stdout
    data = json.loads(cli("model", f"{net}:Net", "--input", "2,8", "--json").stdout)
    assert data["uncounted_ops"]["no_rule"] == {"aten._trilinear": 1}
    assert any("_trilinear" in p for p in data["strict_problems"])
    strict = cli("model", f"{net}:Net", "--input", "2,8", "--strict")
    assert strict.exit_code == 1
    # no pair disagrees: agree stays true, and the op is a warning (JSON's list, stderr), which
    # --strict fails on by name (it said "measured and formula disagree", warnings empty)
    warning = (
        "aten._trilinear (1 calls): not counted, and convcalc has no rule for it (it may do "
        "multiply-adds that no total here holds)"
    )
    assert data["agree"] is True and data["warnings"] == [warning]
    assert f"warning: {warning}\n" in result.stderr
    assert strict.stderr.endswith(f"--strict: {warning}\n")
    assert "disagree" not in strict.stderr


def test_a_packed_sequence_is_data_movement_not_work_without_a_rule(cli, tmp_path) -> None:
    # pack_padded_sequence / pad_packed_sequence reorder data: zero cost, so --strict passes
    # (they were filed under "no rule", and --strict failed on an ordinary packed LSTM)
    net = tmp_path / "pack.py"
    net.write_text(
        "import torch\n"
        "from torch import nn\n"
        "from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.lstm = nn.LSTM(16, 32, batch_first=True)\n"
        "    def forward(self, x):\n"
        "        p = pack_padded_sequence(x, torch.tensor([5, 3]), batch_first=True)\n"
        "        return pad_packed_sequence(self.lstm(p)[0], batch_first=True)[0]\n"
    )
    data = json.loads(cli("model", f"{net}:Net", "--input", "2,5,16", "--json").stdout)
    assert data["uncounted_ops"]["no_rule"] == {}
    assert "aten._pack_padded_sequence" in data["uncounted_ops"]["zero_cost"]
    assert cli("model", f"{net}:Net", "--input", "2,5,16", "--strict").exit_code == 0
