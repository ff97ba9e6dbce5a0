"""A module called more than once in one forward (a U-Net's one ``self.pool``, a conv applied
twice): its row's measured and formula sides describe the same calls, so a model whose figures
agree shows ✓ and passes --strict; torchsummary's fwd+bwd and the roofline's bytes count every
call."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from convcalc.engine import Options, analyze_model


class PoolThrice(nn.Module):
    """The U-Net pattern: one pool module between the encoder's stages."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.c3(self.pool(self.c2(self.pool(self.c1(x))))))


class ConvTwice(nn.Module):
    """reuse.py:C of the new-user trial: one conv applied twice, subsampled between."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(self.c(x)[..., ::2, ::2])


class PoolTwice(nn.Module):
    """reuse.py:R of the new-user trial: pool, conv, the same pool."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.c = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.c(self.pool(x)))


PEAKS = Options(peak_gflops=100.0, peak_gbps=20.0)


def _row(report: object, name: str) -> dict:
    rows = {layer["name"]: layer for layer in report.to_dict()["layers"]}  # type: ignore[attr-defined]
    return rows[name]


def test_a_pool_called_three_times_agrees_call_by_call() -> None:
    report = analyze_model(PoolThrice(), (1, 2, 16, 16), receptive_field=False, options=PEAKS)
    row = _row(report, "pool (×3)")
    # c1 keeps 16×16 (padding 1): pool call 1 reads 1×4×16×16 (1,024) -> 1×4×8×8 (256);
    # c2: 1×8×8×8 (512) -> pool call 2 -> 1×8×4×4 (128); c3: 1×8×4×4 -> pool call 3 ->
    # 1×8×2×2 (32). The row's output shape is the first call's, on both sides.
    assert row["output_shape"] == {"measured": [1, 4, 8, 8], "formula": [1, 4, 8, 8]}
    calls = [[1, 4, 8, 8], [1, 8, 4, 4], [1, 8, 2, 2]]
    assert row["call_output_shapes"] == {"measured": calls, "formula": calls}
    assert row["call_input_shapes"] == [[1, 4, 16, 16], [1, 8, 8, 8], [1, 8, 4, 4]]
    assert row["agree"] is True
    # torchsummary's hook makes one entry per call: fwd+bwd = 2·(256 + 128 + 32)·4 = 3,328 B;
    # the row's output is the first call's: 256·4 = 1,024 B; input 1,024·4 = 4,096 B
    for side in (row["memory_bytes"], row["memory_bytes_formula"]):
        assert side["forward_backward"] == 3_328
        assert side["output"] == 1_024
        assert side["total"] == 4_096 + 3_328
    # the total: convs 1,024 + 512 + 128, pools 256 + 128 + 32 = 2,080 outputs:
    # 2·2,080·4 = 16,640 B on both sides
    total = report.total
    assert total.memory.measured is not None
    assert total.memory.measured.forward_backward == 16_640
    assert total.memory.formula.forward_backward == 16_640
    assert report.agree
    # roofline bytes, each call's input and output: (1,024 + 512 + 128) + (256 + 128 + 32)
    # = 2,080 elements · 4 B = 8,320 B (no weights)
    assert row["roofline"]["bytes_moved"] == 8_320


def test_a_pool_called_twice_moves_each_calls_bytes() -> None:
    report = analyze_model(PoolTwice(), (1, 4, 16, 16), receptive_field=False, options=PEAKS)
    row = _row(report, "pool (×2)")
    # call 1: 1×4×16×16 (1,024) -> 1×4×8×8 (256); the conv keeps 8×8; call 2: 256 -> 1×4×4×4
    # (64): (1,024 + 256 + 256 + 64)·4 B = 6,400 B (before: the first input and the last output
    # twice, (1,024 + 64)·2·4 = 8,704 B)
    assert row["roofline"]["bytes_moved"] == 6_400
    assert row["output_shape"] == {"measured": [1, 4, 8, 8], "formula": [1, 4, 8, 8]}
    assert report.agree


def test_a_conv_called_twice_agrees_and_moves_its_weights_once() -> None:
    report = analyze_model(ConvTwice(), (1, 4, 8, 8), receptive_field=False, options=PEAKS)
    row = _row(report, "c (×2)")
    # call 1: 1×4×8×8 -> 1×4×8×8 (256), sliced to 1×4×4×4; call 2: -> 1×4×4×4 (64).
    # MACs 4·8·8·4·9 + 4·4·4·4·9 = 9,216 + 2,304 = 11,520
    assert row["macs"] == {"measured": 11_520, "formula": 11_520}
    assert row["output_shape"] == {"measured": [1, 4, 8, 8], "formula": [1, 4, 8, 8]}
    calls = [[1, 4, 8, 8], [1, 4, 4, 4]]
    assert row["call_output_shapes"] == {"measured": calls, "formula": calls}
    # fwd+bwd 2·(256 + 64)·4 = 2,560 B, on both sides and in the total (the only row)
    assert row["memory_bytes"]["forward_backward"] == 2_560
    assert row["memory_bytes_formula"]["forward_backward"] == 2_560
    assert report.total.memory.measured is not None
    assert report.total.memory.measured.forward_backward == 2_560
    assert report.total.memory.formula.forward_backward == 2_560
    # bytes: inputs 256 + 64, weights 4·4·9 + 4 = 148 (once), outputs 256 + 64:
    # 788 elements · 4 B = 3,152 B
    assert row["roofline"]["bytes_moved"] == 3_152
    assert report.agree


def test_a_later_call_that_differs_is_a_disagreement() -> None:
    from dataclasses import replace

    from convcalc.core.report import Pair

    report = analyze_model(ConvTwice(), (1, 4, 8, 8), receptive_field=False)
    (layer,) = report.layers
    assert layer.call_output_shapes is not None
    wrong = replace(
        layer,
        call_output_shapes=Pair(layer.call_output_shapes.measured, ((1, 4, 8, 8), (1, 4, 2, 2))),
    )
    assert wrong.disagreements == ["call_output_shapes"]


def test_strict_passes_where_a_reused_module_agrees(cli, tmp_path: Path) -> None:
    path = tmp_path / "reuse.py"
    path.write_text(
        "import torch.nn as nn\n"
        "class C(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__(); self.c = nn.Conv2d(4, 4, 3, padding=1)\n"
        "    def forward(self, x):\n"
        "        return self.c(self.c(x)[..., ::2, ::2])\n"
    )
    result = cli("model", f"{path}:C", "--input", "1,4,8,8", "--strict", "--expect", "agree=true")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "✗" not in result.stdout
