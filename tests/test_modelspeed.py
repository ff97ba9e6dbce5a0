"""`convcalc model`'s speed (issue 12, item 7) without another figure: the work the receptive
field's stand-in, the memory passes and the counted forward no longer repeat."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from convcalc.measure import rfprobe
from convcalc.measure.rfprobe import _ConstantConv, stand_in


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=True)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return self.fc(self.conv2(y).mean((2, 3)))


def test_stand_in_builds_no_dense_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    # a _ConstantConv's weight and bias are made on each read (the dense out x in/groups x k
    # tensor): building the stand-in must not read them (it used to, to fill them with 1.0)
    reads: list[str] = []
    weight, bias = _ConstantConv.weight, _ConstantConv.bias

    def counted(name: str, prop: Any) -> property:
        def get(self: _ConstantConv) -> Any:
            reads.append(name)
            return prop.fget(self)

        return property(get)

    monkeypatch.setattr(_ConstantConv, "weight", counted("weight", weight))
    monkeypatch.setattr(_ConstantConv, "bias", counted("bias", bias))
    probe, notes = stand_in(Block())
    assert reads == []
    assert isinstance(probe.conv1, _ConstantConv) and isinstance(probe.conv2, _ConstantConv)
    # the kept linear is still the constant 1/fan-in (8 inputs), bias 0
    assert torch.equal(probe.fc.weight, torch.full((4, 8), 1 / 8))
    assert torch.equal(probe.fc.bias, torch.zeros(4))
    # the properties still give the dense stand-in's values: conv1 1/(3·3·3), bias 0
    assert torch.equal(probe.conv1.weight, torch.full((8, 3, 3, 3), 1 / 27))
    assert torch.equal(probe.conv1.bias, torch.zeros(8))
    assert rfprobe.model_fields(Block(), (1, 3, 12, 12)).layers[1].receptive_field == (5, 5)
