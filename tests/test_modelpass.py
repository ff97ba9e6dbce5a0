"""A user's model: the counted forward also gives the inference peak and (no module's forward
depending on the training mode) saved-for-backward, exactly the bytes the separate passes give
(measure/modelpass.py); the count is the one a plain count gives; the model comes back as it
went in."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convcalc
from convcalc.core.spec import InputSpec
from convcalc.measure import memory as me
from convcalc.measure.model_run import run_model
from convcalc.measure.modelpass import mode_dependent, model_memory, peak_blockers
from convcalc.measure.opcount import count_model

# --- small models --------------------------------------------------------------------------


class Trunk(nn.Module):
    """conv + BN + ReLU, a residual block of two of them, pooled to a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.c1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.b2 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        z = self.relu(self.b1(self.c1(y)))
        z = self.relu(self.b2(self.c2(z)) + y)
        return self.head(z.mean((2, 3)))


class Mlp4d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.b = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x))).sum(-1)


class Attention(nn.Module):
    """Pre-norm self-attention written out (scaled dot product), residual, GELU."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(self.norm(x)).chunk(3, -1)
        scores = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1)
        attended = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1))
        return F.gelu(self.out(scores @ v + attended.squeeze(1)) + x)


class DictHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 6, 3, padding=1)
        self.seg = nn.Conv2d(6, 2, 1)
        self.cls = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = torch.sigmoid(self.body(x))
        return {"seg": self.seg(y), "cls": self.cls(F.adaptive_avg_pool2d(y, 1).flatten(1))}


class InplaceRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3)
        self.r = nn.ReLU(inplace=True)
        self.c2 = nn.Conv2d(4, 4, 3)
        self.l = nn.LeakyReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.l(self.c2(self.r(self.c1(x)))))


class InplaceSilu(nn.Module):
    """silu_ and hardswish_ save a copy of their input with autograd on: not a no_grad pass."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.hardswish(self.act(self.c(x)), inplace=True).mean((2, 3))


class WithDropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.drop = nn.Dropout(0.5)
        self.b = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.drop(F.relu(self.a(x))))


class SharedNorm(nn.Module):
    """One batch norm called twice, its first input also read (and saved) by a conv, the
    branches added: the batch norm's training twin must count each storage once."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.side = nn.Conv2d(6, 6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        z = self.bn(y) + self.side(y)
        return self.bn(F.relu(z, inplace=True))


class FunctionalAfterNorm(nn.Module):
    """Plain functions on a batch norm's output (F.relu, a sigmoid): they run in no module, so
    their saved tensors are attributed to the batch norm, the last module entered; only what
    the batch norm's own call saved is replaced by its training twin's."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn(self.conv(x)))
        return torch.sigmoid(self.bn2(self.conv2(y))) * 3


class HookedNorm(nn.Module):
    """A user's forward hook on the batch norm saves its own tensor (o * o); it is not the
    batch norm's own saving, and must stay counted."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.bn.register_forward_hook(lambda module, inputs, output: output * output)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.c(x)))


class DirectForward(nn.Module):
    """The batch norm's forward called directly (no module hook runs): its training-mode
    save_mean and save_invstd must still be counted."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn.forward(self.c(x)))


class KeywordNorm(DirectForward):
    """The batch norm called with its input as a keyword (its twin gets the same keywords)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(input=self.c(x)) * 2


class OwnNorm(nn.BatchNorm2d):
    """A batch norm whose forward is the user's: no training twin (its eval output could be
    anything), so the copy's training-mode pass measures saved-for-backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


class WithOwnNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = OwnNorm(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class ReadsMode(nn.Module):
    """Its forward depends on the mode without any mode-dependent module type."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        return y * 2 if self.training else torch.relu(y)


class Mha(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


CASES: list[tuple[str, Any, tuple[int, ...]]] = [
    ("trunk", Trunk, (2, 3, 8, 8)),
    ("shared batch norm", SharedNorm, (2, 3, 5, 5)),
    ("functions after batch norm", FunctionalAfterNorm, (2, 3, 6, 6)),
    ("hooked batch norm", HookedNorm, (2, 3, 8, 8)),
    ("batch norm's forward called", DirectForward, (2, 3, 8, 8)),
    ("batch norm given a keyword", KeywordNorm, (2, 3, 8, 8)),
    ("own batch norm", WithOwnNorm, (2, 3, 6, 6)),
    ("mlp4d", Mlp4d, (2, 3, 5, 8)),
    ("attention", Attention, (2, 4, 8)),
    ("dict head", DictHead, (1, 3, 6, 6)),
    ("in-place relu", InplaceRelu, (1, 3, 10, 10)),
    ("in-place silu", InplaceSilu, (1, 3, 6, 6)),
    ("dropout", WithDropout, (3, 8)),
    ("reads the mode", ReadsMode, (2, 8)),
    ("multi-head attention", Mha, (2, 5, 8)),
]


def make_input(shape: tuple[int, ...]) -> torch.Tensor:
    return me.make_input(InputSpec(shape[0], shape[1], tuple(shape[2:]), "float32"))


def separate(model: nn.Module, shape: tuple[int, ...]) -> tuple[Any, Any]:
    """The separate passes as measure.memory.measure_model_memory runs them: on a copy, saved
    for backward in training mode (the data needing no grad), the peak in eval mode."""
    twin = copy.deepcopy(model)
    x = make_input(shape)
    return me.measure_saved(twin.train(), x), me.measure_peak_inference(twin.eval(), x)


#: models whose saved-for-backward comes from the counted forward (batch norms: their training
#: twins run beside it)
SAVED_ONCE = {
    "mlp4d",
    "attention",
    "dict head",
    "in-place relu",
    "in-place silu",
    "trunk",
    "shared batch norm",
    "functions after batch norm",
    "hooked batch norm",
    "batch norm's forward called",
    "batch norm given a keyword",
}
#: models with a module whose forward reads the mode
MODE = {
    "trunk",
    "dropout",
    "reads the mode",
    "multi-head attention",
    "shared batch norm",
    "functions after batch norm",
    "hooked batch norm",
    "batch norm's forward called",
    "batch norm given a keyword",
    "own batch norm",
}


@pytest.mark.parametrize(("name", "make", "shape"), CASES, ids=[c[0] for c in CASES])
def test_counted_forward_gives_the_bytes_of_the_separate_passes(
    name: str, make: Any, shape: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    model = make().eval()
    saved, peak = separate(model, shape)
    plain = count_model(model, shape)
    state = copy.deepcopy(model.state_dict())
    run = run_model(model, shape, receptive_field=False, memory="float32")
    once = run.memory
    # the count is the one a plain count (no_grad, no memory) gives: every module, operator
    # and call count, in-place silu included (counted again without autograd)
    assert run.count == plain
    assert (once.autograd_copy is not None) == (name == "in-place silu")
    assert bool(mode_dependent(model)) == (name in MODE)
    assert (once.saved is not None) == (name in SAVED_ONCE)
    # nn.MultiheadAttention's inference fast path: the counted forward is not the peak pass's
    assert (once.peak is None) == (name == "multi-head attention")
    found = model_memory(model, once, shape, training_step=False)
    assert found.peak is not None and found.saved is not None
    assert (found.peak.peak, found.peak.layer, found.peak.layers) == (
        peak.peak,
        peak.layer,
        peak.layers,
    )
    assert (found.saved.total, found.saved.layers) == (saved.total, saved.layers)
    assert sorted(found.saved.tensors, key=repr) == sorted(saved.tensors, key=repr)
    if once.peak is not None:
        assert "dispatch count's forward" in found.sources["peak"]
    # the model is as it was: mode, parameters, buffers (batch norm's running statistics)
    assert not model.training
    after = model.state_dict()
    assert all(torch.equal(state[key], after[key]) for key in state)


def test_mlp_on_4d_input_by_hand() -> None:
    # x 2×3×5×8 float32 = 240·4 = 960 B, held by the caller. a: 30×16 outputs = 1,920 B; tanh
    # makes another 1,920 B while a's output is still alive: 960 + 1,920 + 1,920 = 4,800 B,
    # the peak (tanh runs inside no module: it is attributed to a, the last one entered). b:
    # 30×4 = 480 B beside x and tanh's output: 3,360 B. Saved: a's input x (960; its weight is
    # a parameter, not counted) and tanh's output (1,920), which b saves too (once): 2,880 B
    run = run_model(Mlp4d().eval(), (2, 3, 5, 8), receptive_field=False, memory="float32")
    once = run.memory
    assert (once.peak.peak, once.peak.op, once.peak.layers) == (
        4_800,
        "aten.tanh.default",
        {"a": 4_800, "b": 3_360},
    )
    assert (once.saved.total, once.saved.layers) == (2_880, {"a": 2_880, "b": 0})


class Stateful(nn.Module):
    """In training mode its forward writes a parameter in place, counts its calls in an
    attribute and replaces a buffer: the training-mode pass runs on a copy, so none of it
    reaches the user's model."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4))
        self.register_buffer("seen", torch.zeros(4))
        self.calls = 0
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                self.scale.mul_(3.0)
            self.calls += 1
            self.seen = self.seen + x.detach().sum(0)
        return self.bn(x * self.scale)


def test_a_stateful_model_is_left_as_it_was() -> None:
    model = Stateful().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    buffer = model.seen
    report = convcalc.analyze_module(model, (3, 4))
    assert report.total.saved_for_backward.measured > 0
    assert not model.training and not model.bn.training
    assert model.calls == 0 and model.seen is buffer
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert int(model.bn.num_batches_tracked) == 0


@pytest.mark.parametrize("training", [False, True])
def test_analyze_module_leaves_the_model_unchanged(training: bool) -> None:
    torch.manual_seed(1)
    model = Trunk().train(training)
    with torch.no_grad():  # running statistics that are not the initial ones
        for bn in (model.stem[1], model.b1, model.b2):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    model.b2.num_batches_tracked.fill_(7)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    report = convcalc.analyze_module(model, (2, 3, 8, 8))
    assert report.total.saved_for_backward.measured > 0
    assert "training mode" in report.sources["memory_saved_for_backward"]
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert int(model.b2.num_batches_tracked) == 7
    assert [m.training for m in model.modules()] == modes


def test_dropout_model_random_state_and_mode_kept() -> None:
    model = WithDropout().train()
    rng = torch.get_rng_state()
    convcalc.analyze_module(model, (3, 8))
    assert model.training and model.drop.training
    assert torch.equal(torch.get_rng_state(), rng)


class FailsWithGrad(nn.Module):
    """An in-place write to a parameter: fine under no_grad, refused by autograd."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.scale.mul_(1.0)
        return x * self.scale


def test_a_model_autograd_refuses_is_still_counted() -> None:
    report = convcalc.analyze_module(FailsWithGrad(), (2, 4))
    assert report.total.peak_inference.measured == 2 * 4 * 4 * 2  # x and the product: 64 B
    assert report.total.saved_for_backward.measured is None
    assert report.sources["memory_saved_for_backward"].startswith("not measured: ")


def test_what_keeps_the_counted_forward_from_serving() -> None:
    assert peak_blockers(Mlp4d(), "float32") == []
    assert "not in float32" in peak_blockers(Mlp4d().double(), "float32")[0]
    assert "not in float16" in peak_blockers(Mlp4d(), "float16")[0]
    assert "lazy" in peak_blockers(nn.Sequential(nn.LazyLinear(4)), "float32")[0]
    assert "fast path" in peak_blockers(Mha(), "float32")[0]
    assert mode_dependent(Mlp4d()) == []
    assert mode_dependent(ReadsMode()) == ["the root (ReadsMode.forward reads the mode)"]
    assert mode_dependent(nn.Sequential(nn.InstanceNorm2d(3, track_running_stats=True))) == [
        "0 (InstanceNorm2d with running statistics)"
    ]
    assert mode_dependent(nn.Sequential(nn.InstanceNorm2d(3))) == []
