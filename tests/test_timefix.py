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
