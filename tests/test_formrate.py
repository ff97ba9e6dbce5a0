"""The formula side of a batch spec made cheaper (branch formrate): each shortcut gives what
the code it replaces gives, and falls back to it where it cannot."""

from __future__ import annotations

import dataclasses

import pytest

from convcalc import _dataclass
from convcalc._dataclass import dataclass


@dataclass(frozen=True)
class _Plain:
    a: int
    b: tuple[int, ...] = ()
    c: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class _Checked:
    a: int

    def __post_init__(self) -> None:
        if self.a < 0:
            raise ValueError("a must not be negative")


@dataclass(frozen=True)
class _WithInitVar:
    a: int
    scale: dataclasses.InitVar[int]


@dataclass(frozen=True)
class _NotInit:
    a: int
    b: int = dataclasses.field(default=5, init=False)


def test_replace_copies_fields_like_dataclasses_replace() -> None:
    old = _Plain(1, (2, 3), {"x": 4})
    new = _dataclass.replace(old, a=7)
    assert new == dataclasses.replace(old, a=7) == _Plain(7, (2, 3), {"x": 4})
    assert type(new) is _Plain
    assert list(vars(new)) == ["a", "b", "c"]  # the field order __init__ gives
    assert new.c is old.c  # replace passes the same objects, never copies
    assert old == _Plain(1, (2, 3), {"x": 4})  # the original is untouched
    with pytest.raises(dataclasses.FrozenInstanceError):
        new.a = 3  # type: ignore[misc]
    assert _dataclass.replace(_Checked(1), a=2) == _Checked(2)


def test_replace_falls_back_where_init_does_more() -> None:
    # __post_init__ runs (and rejects), as dataclasses.replace does
    with pytest.raises(ValueError, match="negative"):
        _dataclass.replace(_Checked(1), a=-1)
    # an InitVar must be given again, as dataclasses.replace demands
    with pytest.raises(ValueError, match="InitVar"):
        _dataclass.replace(_WithInitVar(1, 3), a=2)
    # a field __init__ does not take cannot be replaced
    with pytest.raises(ValueError, match="init=False"):
        _dataclass.replace(_NotInit(1), b=2)
    # a name that is no field: dataclasses.replace's TypeError
    with pytest.raises(TypeError):
        _dataclass.replace(_Plain(1), nope=2)
    # an instance holding more than its fields: made by __init__ again, the extra dropped
    odd = _Plain(1)
    object.__setattr__(odd, "extra", 1)
    assert not hasattr(_dataclass.replace(odd, a=2), "extra")


def _residual_stack() -> dict[str, object]:
    return {
        "layers": [
            {"op": "conv", "out": 8, "kernel": 3, "padding": 1, "bn": True, "act": "relu"},
            {
                "op": "residual",
                "main": [{"op": "conv", "out": 16, "kernel": 3, "stride": 2, "padding": 1}],
                "shortcut": [{"op": "conv", "out": 16, "kernel": 1, "stride": 2}],
            },
            {"op": "maxpool", "kernel": 2},
        ]
    }


def test_builder_checked_inputs_are_graph_inputs() -> None:
    from convcalc.core.graph import graph_inputs
    from convcalc.sources.stack import build_network

    network = build_network(_residual_stack(), (2, 3, 20, 20), "float32", "test")
    checked = network.checked_inputs()
    assert checked is not None and len(checked) == len(network.nodes) == 7
    assert list(checked) == graph_inputs(network.nodes, network.input)
    # the input of the add is the main path's output: 16 channels at 10x10 (20 -> 10)
    assert checked[5].shape == (2, 16, 10, 10)


def test_a_changed_network_is_validated_again() -> None:
    from convcalc import engine
    from convcalc.core.spec import Node
    from convcalc.errors import SpecError
    from convcalc.kinds import build_conv
    from convcalc.sources.stack import build_network

    network = build_network(_residual_stack(), (2, 3, 20, 20), "float32", "test")
    # a first layer taking 5 channels where the input has 3: the builder never saw it
    network.nodes[0] = Node(build_conv(dims=2, in_channels=5, out_channels=8), (-1,))
    assert network.checked_inputs() is None
    with pytest.raises(SpecError, match="does not match the input's 3 channels"):
        engine.analyze_network(network, options=engine.Options(formula_only=True))
    # another input: the tensors the builder found are not this input's
    network = build_network(_residual_stack(), (2, 3, 20, 20), "float32", "test")
    network.input = dataclasses.replace(network.input, batch=4)
    assert network.checked_inputs() is None
    report = engine.analyze_network(network, options=engine.Options(formula_only=True))
    assert report.layers[0].input_shape == (4, 3, 20, 20)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_network_memory_is_the_three_functions(optimizer: str) -> None:
    from convcalc.core import memory_model
    from convcalc.sources.stack import build_network

    data = _residual_stack()
    data["layers"] += [  # type: ignore[operator]
        {"op": "dropout"},
        {"op": "conv", "out": 4, "kernel": 3, "padding": 1, "padding_mode": "reflect"},
        {"op": "flatten"},
        {"op": "linear", "out": 10},
    ]
    network = build_network(data, (2, 3, 20, 20), "float16", "test")
    both = memory_model.network_memory(network.nodes, network.input, optimizer)
    assert both.saved == memory_model.saved_for_backward(network.nodes, network.input)
    assert both.peak == memory_model.peak_inference(network.nodes, network.input)
    assert both.step == memory_model.training_step(network.nodes, network.input, optimizer)
    # a reflect-padded first layer: its pad saves the input only when the input carries a
    # gradient (saved: 2·3·20·20·2 B = 4,800 B of input + the padded copy 2·3·22·22·2 B =
    # 5,808 B), the step's data does not (the copy alone)
    layer = {"layers": [{"op": "conv", "out": 4, "padding": 1, "padding_mode": "reflect"}]}
    network = build_network(layer, (2, 3, 20, 20), "float16", "test")
    both = memory_model.network_memory(network.nodes, network.input, optimizer)
    assert both.saved == memory_model.saved_for_backward(network.nodes, network.input)
    assert both.step == memory_model.training_step(network.nodes, network.input, optimizer)
    assert (both.saved.total.value, both.step.saved_for_backward.value) == (4800 + 5808, 5808)


def test_exact_key_of_flat_specs_tells_types_apart() -> None:
    from convcalc.sources.batch import _exact

    same = [{"in": 1, "size": 2.0}, {"in": 1, "size": 2.0}]
    assert _exact(same[0]) == _exact(same[1])
    different = [
        {"in": 1},
        {"in": 1.0},
        {"in": True},
        {"in": "1"},
        {"in": None},
        {"in": -0.0},
        {"in": 0.0},
        {"in": [1]},  # nested: walked item by item
        {"in": (1,)},
        {"in": 1, "out": 2},
        {"out": 2, "in": 1},  # key order
        {"in": "1', 'out': 2"},  # a quote inside a string stays inside it
        {"in": "1", "out": 2},
    ]
    keys = [_exact(spec) for spec in different]
    assert len(set(keys)) == len(keys)
    assert _exact({"in": object()}) is None  # never remembered
    assert _exact({1: 2}) == _exact({1: 2}) != _exact({"1": 2})


def _sweep_specs() -> list[dict[str, object]]:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from batch import mixed_specs  # type: ignore[import-not-found]

    bad: list[dict[str, object]] = [
        {"in": 3, "out": 8, "kernel": 9, "size": 4},  # the kernel spans more than the input
        {"in": 3, "out": 8, "groups": 2},  # groups do not divide the channels
        {"in": 3, "nope": 1},  # an unknown key
        {"in": "x"},  # not a number
        {"__error__": "line 3 is not JSON"},
    ]
    return mixed_specs(120, 3) + bad


def test_the_heap_is_frozen_every_so_many_specs(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    from convcalc import _runtime, library
    from convcalc.sources import batch

    frozen: list[int] = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(1))
    monkeypatch.setattr(batch, "FREEZE_EVERY", 4)
    monkeypatch.setattr(batch, "_FROZEN", [])  # as in a fresh process
    specs = [{"in": 3, "out": 4, "size": 8 + n} for n in range(10)]
    records = list(library.sweep(specs, measure=library.Measure(formula_only=True)))
    assert len(records) == 10 and all(r.error is None for r in records)
    assert frozen == []  # a library caller's process: its objects are its collector's
    monkeypatch.setattr(_runtime, "command_line", True)  # convcalc's own command
    list(library.sweep(specs, measure=library.Measure(formula_only=True)))
    assert len(frozen) == 3  # after the 1st, 5th and 9th spec (numbers 0, 4 and 8)


def test_a_sweep_makes_no_cyclic_garbage() -> None:
    """What the periodic gc.freeze relies on: whatever a spec leaves behind is freed by its
    reference count, errors included, so freezing never keeps garbage."""
    import gc

    from convcalc import library

    specs = _sweep_specs()
    list(library.sweep(specs[:3], measure=library.Measure(formula_only=True)))  # warm
    gc.collect()
    gc.disable()
    try:
        records = list(library.sweep(specs, measure=library.Measure(formula_only=True)))
        assert sum(r.error is not None for r in records) == 5
        assert gc.collect() == 0
    finally:
        gc.enable()


# bad specs on the shortcuts' edges (whole numbers taken as they are, the input size handed to
# build_input as numbers, the keys a layer takes remembered per op): the messages main gave
EDGE_SPECS: list[tuple[dict[str, object], str | tuple[int, ...]]] = [
    ({"in": 3, "size": True}, "size True must be a number (an integer, like 1000, not 1e3)"),
    ({"in": 3, "size": -3}, "size -3 must be a number (an integer, like 1000, not 1e3)"),
    ({"in": 3, "size": 8.0}, "size 8.0 must be a number (an integer, like 1000, not 1e3)"),
    ({"in": 3, "size": 0}, "spec: input size 0 must be positive"),
    ({"in": True, "size": 8}, "in True must be a whole number"),
    ({"in": 3, "dims": True}, "dims True must be a whole number"),
    ({"in": 3, "batch": -1}, "spec: input batch -1 must be a positive integer"),
    ({"input": [1, 3, True, 8]}, "spec: input size 'Truex8' is not a number or one number per"),
    ({"input": [1, 3, -2, 8]}, "spec: input size -2x8 must be positive"),
    ({"in": 3, "size": 2**40}, "spec: input size 1099511627776 is too large (at most 2**31 - 1)"),
    (
        {"in": 3, "op": "maxpool", "out": 3},
        "layer 1 (maxpool1): unknown key 'out' for maxpool; it takes ceil_mode, dilation, "
        "kernel, padding, stride",
    ),
    ({"in": 3, "size": "8x9", "dims": 2}, (1, 3, 8, 9)),
    ({"input": "1,3,8"}, (1, 3, 8)),
]


@pytest.mark.parametrize(("spec", "expected"), EDGE_SPECS)
def test_spec_edges_read_as_before(spec: dict[str, object], expected: object) -> None:
    from convcalc import library

    (record,) = library.sweep([spec], measure=library.Measure(formula_only=True))
    if isinstance(expected, tuple):
        assert record.error is None and record.report is not None
        assert record.report.input.shape == expected
    else:
        assert record.error is not None and record.error.startswith(str(expected))
