"""Closed forms of recurrent modules (nn.LSTM / GRU / RNN and their cells): parameters, MACs
and output shapes from the module's hyper-parameters and the input's shape, beside the measured
count. Every expected number is derived by hand in the comment beside it."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from convcalc.core.opformulas import (
    RecurrentHyper,
    recurrent_macs,
    recurrent_outputs,
    recurrent_params,
)
from convcalc.errors import SpecError
from convcalc.measure.opcount import count_model, module_formula, recurrent_hyper

from .test_rnncount import CONV_FC, GRU_MACS, LSTM_MACS, RNN_NET


def test_lstm_two_layers_by_hand() -> None:
    # nn.LSTM(32, 64, num_layers=2) over (50, 2, 32): 50 steps × batch 2 = 100 rows
    #   MACs per row: layer 0: 4·64·(32 + 64) = 24,576; layer 1: 4·64·(64 + 64) = 32,768
    #   -> 57,344 per row × 100 = 5,734,400 (the measured LSTM_MACS of test_rnncount)
    # params: layer 0: 4·64·32 + 4·64·64 + 2·4·64 = 8,192 + 16,384 + 512 = 25,088
    #         layer 1: 4·64·64 + 4·64·64 + 2·4·64 = 16,384 + 16,384 + 512 = 33,280 -> 58,368
    # outputs: output 50×2×64, h_n (2·1)×2×64, c_n 2×2×64
    hyper = recurrent_hyper(nn.LSTM(32, 64, num_layers=2))
    assert hyper == RecurrentHyper("LSTM", 32, 64, 2)
    macs = recurrent_macs(hyper, (50, 2, 32))
    assert macs.value == 5_734_400 == LSTM_MACS
    assert "50·2 = 100" in macs.shown and "57,344" in macs.shown
    assert recurrent_params(hyper).value == 58_368
    assert recurrent_outputs(hyper, (50, 2, 32)).value == ((50, 2, 64), (2, 2, 64), (2, 2, 64))


def test_bidirectional_projected_lstm_by_hand() -> None:
    # nn.LSTM(8, 16, num_layers=2, bidirectional=True, proj_size=4, batch_first=True) over
    # (3, 5, 8): batch 3, 5 steps: 15 rows; h is 4 wide (proj), each layer's output 2·4 = 8
    #   per row and direction: layer 0: 4·16·(8 + 4) + 4·16 = 768 + 64 = 832
    #                          layer 1 reads 2·4 = 8: 4·16·(8 + 4) + 4·16 = 832
    #   4 (layer, direction) copies: 4·832 = 3,328 per row × 15 = 49,920
    # params per layer and direction: w_ih 4·16·8 = 512 (layer 1 too: in 8), w_hh 4·16·4 = 256,
    #   biases 2·4·16 = 128, w_hr 4·16 = 64 -> 960; × 4 = 3,840
    # outputs: output 3×5×8, h_n (2·2)×3×4, c_n 4×3×16
    lstm = nn.LSTM(8, 16, num_layers=2, bidirectional=True, proj_size=4, batch_first=True)
    hyper = recurrent_hyper(lstm)
    assert recurrent_macs(hyper, (3, 5, 8)).value == 49_920
    assert recurrent_params(hyper).value == 3_840 == sum(p.numel() for p in lstm.parameters())
    assert recurrent_outputs(hyper, (3, 5, 8)).value == ((3, 5, 8), (4, 3, 4), (4, 3, 16))
    assert count_model(lstm, (3, 5, 8)).total_macs == 49_920


def test_gru_unbatched_and_rnn_without_bias_by_hand() -> None:
    # nn.GRU(6, 10) on unbatched (7, 6): 7 rows · 3·10·(6 + 10) = 7·480 = 3,360
    #   params 3·10·6 + 3·10·10 + 2·3·10 = 180 + 300 + 60 = 540; output 7×10, h_n 1×10
    gru = recurrent_hyper(nn.GRU(6, 10))
    assert recurrent_macs(gru, (7, 6)).value == 3_360
    assert recurrent_params(gru).value == 540
    assert recurrent_outputs(gru, (7, 6)).value == ((7, 10), (1, 10))
    # nn.RNN(6, 10, bias=False, nonlinearity="relu"): 1 gate, params 10·6 + 10·10 = 160
    rnn = recurrent_hyper(nn.RNN(6, 10, bias=False, nonlinearity="relu"))
    assert rnn is not None and rnn.mode == "RNN_RELU" and rnn.gates == 1
    assert recurrent_params(rnn).value == 160
    # over (4, 2, 6): 8 rows · 10·(6 + 10) = 1,280
    assert recurrent_macs(rnn, (4, 2, 6)).value == 1_280


def test_cells_by_hand() -> None:
    # nn.LSTMCell(16, 8) on (2, 16): 2 rows · 4·8·(16 + 8) = 2·768 = 1,536;
    #   params 4·8·16 + 4·8·8 + 2·4·8 = 512 + 256 + 64 = 832; h' and c' 2×8
    cell = recurrent_hyper(nn.LSTMCell(16, 8))
    assert cell == RecurrentHyper("LSTM", 16, 8, cell=True)
    assert recurrent_macs(cell, (2, 16)).value == 1_536
    assert recurrent_params(cell).value == 832
    assert recurrent_outputs(cell, (2, 16)).value == ((2, 8), (2, 8))
    # nn.GRUCell(16, 8) unbatched (16,): 1 row · 3·8·24 = 576; h' (8,)
    gru = recurrent_hyper(nn.GRUCell(16, 8))
    assert recurrent_macs(gru, (16,)).value == 576
    assert recurrent_outputs(gru, (16,)).value == ((8,),)
    assert recurrent_hyper(nn.Linear(2, 3)) is None


def test_packed_input_rows_are_the_data_axis_and_h_n_is_not_guessed() -> None:
    # packed data of lengths 5 and 3: (8, 16); 8 rows · 4·32·(16 + 32) = 8·6,144 = 49,152
    hyper = recurrent_hyper(nn.LSTM(16, 32))
    macs = recurrent_macs(hyper, (8, 16), packed=True)
    assert macs.value == 49_152
    assert "packed" in macs.shown
    outs = recurrent_outputs(hyper, (8, 16), packed=True)
    # the output's data only: h_n's batch (the number of sequences) is a value, not a shape
    assert outs.value == ((8, 32),)
    assert "no formula" in outs.shown


def test_input_that_does_not_fit_is_a_spec_error() -> None:
    hyper = RecurrentHyper("LSTM", 32, 64)
    with pytest.raises(SpecError, match="input_size=32"):
        recurrent_macs(hyper, (5, 2, 31))
    with pytest.raises(SpecError, match=r"takes \(T, B, I\) or \(T, I\)"):
        recurrent_macs(hyper, (5, 2, 1, 32))


class _Cells(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(16, 32, batch_first=True)
        self.cell = nn.GRUCell(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = pack_padded_sequence(x, torch.tensor([5, 3]), batch_first=True)
        self.cell(x[:, 0])
        self.cell(x[0, 0])
        return self.lstm(p)[0].data


def test_module_formula_matches_the_count_on_cells_and_packed_input() -> None:
    # lstm on packed lengths 5 + 3 = 8 rows: 49,152 (above); GRUCell(16, 8) twice: batch 2
    # (2·3·8·24 = 1,152) and unbatched (576) -> 1,728
    result = count_model(_Cells(), (2, 5, 16))
    lstm, cell = result.module("lstm"), result.module("cell")
    assert module_formula(lstm).value == lstm.macs == 49_152
    assert module_formula(cell).value == cell.macs == 1_728


@settings(max_examples=10, deadline=None)
@given(
    kind=st.sampled_from(["lstm", "gru", "rnn"]),
    size=st.integers(1, 9),
    hidden=st.integers(2, 9),
    layers=st.integers(1, 3),
    bidirectional=st.booleans(),
    batch_first=st.booleans(),
    bias=st.booleans(),
    proj=st.integers(0, 3),
    steps=st.integers(1, 5),
    batch=st.integers(0, 3),
)
def test_formula_matches_the_measured_count(
    kind: str,
    size: int,
    hidden: int,
    layers: int,
    bidirectional: bool,
    batch_first: bool,
    bias: bool,
    proj: int,
    steps: int,
    batch: int,
) -> None:
    # batch 0: an unbatched (T, I) input; proj_size (LSTM only) < hidden
    extra = {"proj_size": min(proj, hidden - 1)} if kind == "lstm" else {}
    module = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[kind](
        size,
        hidden,
        num_layers=layers,
        bidirectional=bidirectional,
        batch_first=batch_first,
        bias=bias,
        **extra,
    )
    if batch == 0:
        shape: tuple[int, ...] = (steps, size)
    else:
        shape = (batch, steps, size) if batch_first else (steps, batch, size)
    hyper = recurrent_hyper(module)
    assert recurrent_params(hyper).value == sum(p.numel() for p in module.parameters())
    result = count_model(module, shape)
    assert recurrent_macs(hyper, shape).value == result.total_macs
    with torch.no_grad():
        out = module(torch.zeros(shape))
    flat = (out[0], *out[1]) if kind == "lstm" else (out[0], out[1])
    assert recurrent_outputs(hyper, shape).value == tuple(tuple(t.shape) for t in flat)


@settings(max_examples=6, deadline=None)
@given(
    kind=st.sampled_from(["lstm", "gru", "rnn"]),
    size=st.integers(1, 9),
    hidden=st.integers(1, 9),
    bias=st.booleans(),
    batch=st.integers(0, 3),
)
def test_cell_formula_matches_the_measured_count(
    kind: str, size: int, hidden: int, bias: bool, batch: int
) -> None:
    module = {"lstm": nn.LSTMCell, "gru": nn.GRUCell, "rnn": nn.RNNCell}[kind](
        size, hidden, bias=bias
    )
    shape = (batch, size) if batch else (size,)
    hyper = recurrent_hyper(module)
    assert recurrent_params(hyper).value == sum(p.numel() for p in module.parameters())
    assert recurrent_macs(hyper, shape).value == count_model(module, shape).total_macs
    with torch.no_grad():
        out = module(torch.zeros(shape))
    flat = out if kind == "lstm" else (out,)
    assert recurrent_outputs(hyper, shape).value == tuple(tuple(t.shape) for t in flat)


def test_model_with_an_lstm_has_a_formula_total_that_agrees(cli, tmp_path) -> None:
    net = tmp_path / "nets.py"
    net.write_text(RNN_NET)
    data = json.loads(cli("model", f"{net}:RNN", "--input", "2,16,50", "--json").stdout)
    rows = {layer["name"].split()[0]: layer for layer in data["layers"]}
    rnn = rows["rnn"]
    # LSTM(32, 64, num_layers=2, batch_first) after the conv: 2×50×32, 100 rows: 5,734,400
    assert rnn["macs"] == {"measured": LSTM_MACS, "formula": LSTM_MACS}
    assert rnn["agree"] is True
    assert rnn["flops"]["formula"] == 2 * LSTM_MACS
    assert rnn["params"]["formula"] == rnn["params"]["measured"] == 58_368
    assert rnn["output_shape"]["formula"] == [2, 50, 64]
    assert rnn["spec"] == {
        "op": "module",
        "type": "LSTM",
        "input_size": 32,
        "hidden_size": 64,
        "num_layers": 2,
        "batch_first": True,
    }
    # the total: conv + LSTM + fc by formula, 5,734,400 + 153,600 + 1,280 = 5,889,280
    assert data["total"]["macs"] == LSTM_MACS + CONV_FC
    assert data["total"]["formula"]["macs"] == LSTM_MACS + CONV_FC
    assert data["total"]["formula"]["flops"] == 2 * (LSTM_MACS + CONV_FC)
    # params: conv 1,568 + LSTM 58,368 + fc 650 = 60,586, every module's by formula
    assert data["total"]["formula"]["params"] == data["total"]["params"] == 60_586
    assert data["agree"] is True
    table = cli("model", f"{net}:RNN", "--input", "2,16,50")
    assert "no closed form" not in table.stdout
    assert "rnn: params layer 0: 4·64·(32 + 64) + bias 2·4·64" in table.stdout


def test_gru_model_total_by_formula(cli, tmp_path) -> None:
    net = tmp_path / "nets.py"
    net.write_text(RNN_NET)
    result = cli("model", f"{net}:RNN", "--input", "2,16,50", "--kwargs", "kind=gru", "--json")
    data = json.loads(result.stdout)
    # GRU_MACS 4,300,800 + conv and fc 154,880 = 4,455,680
    assert data["total"]["formula"]["macs"] == GRU_MACS + CONV_FC


PACKED_NET = (
    "import torch\n"
    "from torch import nn\n"
    "from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence\n"
    "class Net(nn.Module):\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.lstm = nn.LSTM(16, 32, batch_first=True, bidirectional=True)\n"
    "        self.cell = nn.LSTMCell(16, 8)\n"
    "    def forward(self, x):\n"
    "        self.cell(x[:, 0])\n"
    "        self.cell(x[:, 1])\n"
    "        p = pack_padded_sequence(x, torch.tensor([5, 3]), batch_first=True)\n"
    "        return pad_packed_sequence(self.lstm(p)[0], batch_first=True)[0]\n"
)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_packed_lstm_and_a_cell_called_twice_agree(cli, tmp_path, device: str) -> None:
    net = tmp_path / "pack.py"
    net.write_text(PACKED_NET)
    result = cli("model", f"{net}:Net", "--input", "2,5,16", "--measure-on", device, "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    rows = {layer["name"].split()[0]: layer for layer in data["layers"]}
    # cell: two calls on (2, 16): 2·(2·4·8·(16 + 8)) = 2·1,536 = 3,072; h' 2×8 each call
    assert rows["cell"]["macs"] == {"measured": 3_072, "formula": 3_072}
    assert rows["cell"]["call_output_shapes"]["formula"] == [[2, 8], [2, 8]]
    # lstm on packed lengths 5 + 3: 8 rows · 2 directions · 4·32·(16 + 32) = 8·12,288 = 98,304;
    # output: the packed data, 8×(2·32); params 2·(4·32·48 + 2·4·32) = 2·6,400 = 12,800
    assert rows["lstm"]["macs"] == {"measured": 98_304, "formula": 98_304}
    assert rows["lstm"]["output_shape"] == {"measured": [8, 64], "formula": [8, 64]}
    assert rows["lstm"]["params"] == {"measured": 12_800, "formula": 12_800}
    assert "no formula" in rows["lstm"]["formula_text"]["output_shape"]
    assert data["total"]["formula"]["macs"] == 101_376 and data["agree"] is True
