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


class Writes(nn.Module):
    """A forward that writes one of its parameters (under no_grad) in training mode."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.scale = nn.Parameter(torch.ones(4, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                self.scale.mul_(3.0)
        return self.bn(self.conv(x)) * self.scale


@pytest.mark.parametrize("training_step", [False, True])
def test_memory_twin_copies_no_parameter_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, training_step: bool
) -> None:
    import copy

    from convcalc.measure import memory

    torch.manual_seed(0)
    model = Writes().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clones: list[tuple[int, ...]] = []
    plain_clone = torch.Tensor.clone

    def clone(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        clones.append(tuple(self.shape))
        return plain_clone(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "clone", clone)
    found = memory.measure_model_memory(model, (2, 2, 6, 6), training_step=training_step)
    monkeypatch.undo()
    # Parameter.__deepcopy__ clones each parameter's data (conv (4, 2, 3, 3), bn (4,) twice,
    # scale (4, 1, 1)); the copy-on-write memo makes the copy's parameters without a clone
    assert clones == []
    # the model is as it was, though the copy's forward wrote `scale` and the running stats
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # the same figures as a copy made by a plain deepcopy
    monkeypatch.setattr(memory, "_lazy_parameters", lambda model: {})
    plain = memory.measure_model_memory(
        copy.deepcopy(model), (2, 2, 6, 6), training_step=training_step
    )
    assert found.saved is not None and plain.saved is not None
    assert (found.saved.total, found.saved.layers) == (plain.saved.total, plain.saved.layers)
    assert found.peak is not None and plain.peak is not None
    assert (found.peak.peak, found.peak.layers) == (plain.peak.peak, plain.peak.layers)
    if training_step:
        assert found.step is not None and plain.step is not None
        assert found.step.to_dict() == plain.step.to_dict()
    assert found.sources == plain.sources


class Residual(nn.Module):
    """conv 3x3, conv 3x3, plus a 1x1 of the input (in place and then a `view`, or neither),
    conv 3x3, flattened."""

    def __init__(self, inplace: bool) -> None:
        super().__init__()
        self.inplace = inplace
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.skip = nn.Conv2d(2, 4, 1)
        self.c3 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c2(self.c1(x))
        if self.inplace:
            y += self.skip(x)  # torchvision's `out += identity`: in place on a conv's output
            return self.c3(y).view(x.shape[0], -1)  # `view` of a conv's output
        return self.c3(y + self.skip(x)).flatten(1)


@pytest.mark.parametrize("inplace", [False, True])
def test_probe_views_then_real_memory(monkeypatch: pytest.MonkeyPatch, inplace: bool) -> None:
    # c1 k3: 3; c2 k3: 3 + 2 = 5; the 1x1 skip adds nothing wider; c3 k3: 5 + 2 = 7, the last
    # spatial layer (the output is flat). The channel-free convs' outputs are first expanded
    # views: the in-place add refuses them, and the probe runs again with real memory; without
    # in-place writes (or a `view`) it runs once, on views.
    runs: list[bool] = []
    strides: list[int] = []
    run = rfprobe._Recorder.run

    def counted(self: Any, probe: nn.Module, x: torch.Tensor, stop_after: Any) -> Any:
        runs.append(all(m.materialize for m in probe.modules() if isinstance(m, _ConstantConv)))
        out = run(self, probe, x, stop_after)
        strides.extend(t.stride(1) for t in self.captured.values())
        return out

    monkeypatch.setattr(rfprobe._Recorder, "run", counted)
    fields = rfprobe.model_fields(Residual(inplace), (1, 2, 16, 16), every_layer=False)
    assert (fields.receptive_field, fields.receptive_field_of) == ((7, 7), "c3")
    if inplace:
        assert runs == [False, True]  # views refused, then real memory
        assert 0 not in strides
    else:
        assert runs == [False]  # one run, every conv's output a view (channel stride 0)
        assert strides == [0, 0, 0, 0]
    everything = rfprobe.model_fields(Residual(inplace), (1, 2, 16, 16))
    assert [f.receptive_field for f in everything.layers] == [(3, 3), (5, 5), (1, 1), (7, 7)]


class NoCopy(nn.BatchNorm2d):
    """A norm that must not be copied: the stand-in replaces it (by the identity)."""

    def __deepcopy__(self, memo: Any) -> Any:
        raise AssertionError("the stand-in copied a module it replaces")


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        act = nn.ReLU()
        self.a = nn.Sequential(nn.Conv2d(1, 2, 3), act)  # one ReLU under two parents
        self.b = nn.Sequential(NoCopy(2), act)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Conv2d(2, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.b(self.a(x))))


def test_stand_in_does_not_copy_what_it_replaces() -> None:
    model = Shared()
    probe, notes = stand_in(model)
    # met as the root's children, then a's, then b's: the pool, a's ReLU, b's norm and the
    # shared ReLU again (under its second parent)
    assert notes == ["max pools (1)", "activations and dropout (2)", "norms (1)"]
    assert isinstance(probe.a[1], nn.Identity) and isinstance(probe.b[1], nn.Identity)
    assert isinstance(probe.b[0], nn.Identity)
    assert isinstance(probe.a[0], _ConstantConv) and isinstance(probe.head, _ConstantConv)
    assert isinstance(probe.pool, rfprobe._WindowAverage)
    assert isinstance(model.a[1], nn.ReLU) and model.a[1] is model.b[1]  # the model is kept
    # a 3x3, the 2x2 pool (stride 2): 3 + 1 = 4; head 3x3 at stride 2: 4 + 2·2 = 8
    assert rfprobe.model_fields(Shared(), (1, 1, 32, 32)).receptive_field == (8, 8)
