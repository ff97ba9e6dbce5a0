"""--time on a user's model: the total latency when the root row (model) is timed (it holds
its children), modules taking several positional tensors (nn.MultiheadAttention) timed on
zeros of every input they received, and nn.MultiheadAttention's bias additions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from convcalc.measure import model_run

PEAKS = ("--peak-gflops", "100", "--peak-gbps", "20")

TWO_INPUTS = (
    "from torch import nn\n"
    "class Net(nn.Module):\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.a = nn.Linear(4, 8)\n"
    "        self.b = nn.Linear(4, 8)\n"
    "    def forward(self, x, y):\n"
    "        return self.a(x) @ self.b(y).T\n"
)

ONE_INPUT = (
    "from torch import nn\n"
    "class Net(nn.Module):\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.a = nn.Linear(4, 8)\n"
    "        self.b = nn.Linear(8, 2)\n"
    "    def forward(self, x):\n"
    "        return self.b(self.a(x))\n"
)


def _fixed_times(monkeypatch: pytest.MonkeyPatch, seconds: dict[str, float]) -> list[Any]:
    """time_modules replaced by fixed times per row name (so the totals are exact)."""
    seen: list[Any] = []

    def fake(model: Any, rows: Any, *args: Any, **kwargs: Any) -> Any:
        seen.extend(rows)
        times = [(seconds[name], 10, 0.0) for name, *_ in rows]
        return times, [], {"device": "cpu"}

    monkeypatch.setattr(model_run, "time_modules", fake)
    return seen


def test_a_timed_root_row_is_the_total_not_added_to_its_children(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "net.py"
    source.write_text(TWO_INPUTS)
    _fixed_times(monkeypatch, {"(model)": 0.003, "a": 0.001, "b": 0.0005})
    report = cli.json(
        "model", f"{source}:Net", "--input", "2,4", "--input", "2,4", "--time", *PEAKS
    )
    assert [x["name"] for x in report["layers"]] == ["(model)", "a", "b"]
    # the root's row is the whole forward (3 ms) and holds a's 1 ms and b's 0.5 ms: the total
    # is 3 ms, not 3 + 1 + 0.5 = 4.5 ms (what it was before)
    assert report["total"]["latency_ms"] == 3.0
    assert "the whole forward timed at once" in report["timing"]["total_latency"]
    assert any("total latency is the (model) row's" in n for n in report["notes"])


def test_without_a_root_row_the_total_is_the_rows_summed(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "net.py"
    source.write_text(ONE_INPUT)
    _fixed_times(monkeypatch, {"a": 0.001, "b": 0.0005})
    report = cli.json("model", f"{source}:Net", "--input", "2,4", "--time", *PEAKS)
    assert [x["name"] for x in report["layers"]] == ["a", "b"]
    # 1 ms + 0.5 ms
    assert report["total"]["latency_ms"] == 1.5
    assert "summed" in report["timing"]["total_latency"]


ATTENTION = (
    "from torch import nn\n"
    "class Net(nn.Module):\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)\n"
    "        self.fc = nn.Linear(8, 4)\n"
    "    def forward(self, x):\n"
    "        return self.fc(self.attn(x, x, x, need_weights=False)[0])\n"
)


def test_an_attention_row_is_timed_on_its_query_key_and_value(cli, tmp_path: Path) -> None:
    source = tmp_path / "net.py"
    source.write_text(ATTENTION)
    report = cli.json("model", f"{source}:Net", "--input", "1,5,8", "--time", *PEAKS)
    attn = next(x for x in report["layers"] if x["name"] == "attn")
    # timed (it took query, key and value: before, only the query, so a TypeError and "—")
    assert attn["latency_ms"] is not None and attn["latency_ms"] > 0
    assert report["total"]["latency_ms"] is not None
    assert not any("not timed alone" in n for n in report["notes"])
    note = next(n for n in report["notes"] if n.startswith("timing: attn:"))
    assert "3 positional inputs (1, 5, 8), (1, 5, 8), (1, 5, 8)" in note
    assert "keyword arguments" in note


def test_time_modules_times_a_cross_attention_on_each_of_its_shapes() -> None:
    from torch import nn

    model = nn.Sequential(nn.MultiheadAttention(8, 2, batch_first=True))
    # query of 5 positions, key and value of 3: timed on zeros of each (the first shape alone
    # would not run)
    times, notes, _ = model_run.time_modules(
        model, [("0", ((1, 5, 8), (1, 3, 8), (1, 3, 8)))], min_run_time=0.01
    )
    assert times[0] is not None and times[0][0] > 0
    assert notes == [
        "0: timed alone on zeros of its 3 positional inputs (1, 5, 8), (1, 3, 8), (1, 3, 8); "
        "keyword arguments its caller passed (masks, need_weights...) are not recorded, so it "
        "ran with its defaults for them"
    ]


def test_mha_bias_adds_by_closed_form() -> None:
    from convcalc.core.opformulas import mha_bias_adds

    # E 64, B 1, L = S = 16: q 16·64 + k 16·64 + v 16·64 + out 16·64 = 4·1,024 = 4,096
    assert mha_bias_adds(1, 16, 16, 64).value == 4_096
    # B 2, L 16, S 10 (kdim, vdim do not matter: every bias is E long):
    # 2·(16 + 10 + 10 + 16)·64 = 2·52·64 = 6,656
    assert mha_bias_adds(2, 16, 10, 64).value == 6_656
    assert mha_bias_adds(2, 16, 10, 64, bias=False).value == 0


@pytest.mark.parametrize("grad", [True, False])
def test_mha_bias_adds_measured_from_the_dispatched_operators(grad: bool) -> None:
    import torch
    from torch import nn

    from convcalc.measure.opcount import _OpCounter

    # with autograd: four addmm (q, k, v, out projections) each adding a 64-long bias at 16
    # positions = 4·1,024; without (eval): one fused _native_multi_head_attention whose
    # qkv_bias (192) and proj_bias (64) give the same 16·192 + 16·64 = 4,096
    module = nn.MultiheadAttention(64, 4, batch_first=True).eval()
    x = torch.zeros(1, 16, 64)
    with torch.set_grad_enabled(grad), _OpCounter({}) as counter:
        module(x, x, x)
    assert counter.bias_adds == {"": 4_096}


MHA = ("model", "torch.nn:MultiheadAttention", "--kwargs")


def test_mha_bias_adds_in_the_report(cli) -> None:
    three = ("--input", "1,16,64") * 3
    got = cli(*MHA, "embed_dim=64,num_heads=4,batch_first=True", *three, "--get", "total.bias_adds")
    assert got.exit_code == 0, got.stderr
    # 16 positions·(3·64 in-proj + 64 out-proj) = 4,096 (it was 0)
    assert got.stdout.strip() == "4096"
    report = cli.json(*MHA, "embed_dim=64,num_heads=4,batch_first=True", *three)
    assert report["layers"][0]["bias_adds"] == 4_096
    assert report["total"]["formula"]["bias_adds"] == 4_096
    # the dispatched operators' count agrees: no note of a difference
    assert not any("bias additions:" in n for n in report["notes"])
    none = cli.json(*MHA, "embed_dim=64,num_heads=4,batch_first=True,bias=False", *three)
    assert none["total"]["bias_adds"] == 0
    cross = cli.json(
        *MHA,
        "embed_dim=64,num_heads=4,batch_first=True,kdim=32,vdim=48",
        "--input",
        "2,16,64",
        "--input",
        "2,10,32",
        "--input",
        "2,10,48",
    )
    # 2·(16 + 10 + 10 + 16)·64 = 6,656
    assert cross["total"]["bias_adds"] == 6_656
    assert not any("bias additions:" in n for n in cross["notes"])
