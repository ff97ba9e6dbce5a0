"""`convcalc stack` and `convcalc model`: hand-derived cumulative figures for small stacks,
autograd agreement for every built-in architecture, files, stdin, inline, and error cases."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"


def cumulative(report: dict, name: str) -> dict:
    (layer,) = [x for x in report["layers"] if x["name"] == name]
    return layer["cumulative"]


# (inline stack, input, {layer: (receptive field, effective stride, effective padding)}),
# each derived by hand with r += (k'-1)·J, J *= s, P += p·J (Araujo et al. 2019)
HAND_STACKS = [
    (
        "conv k7 s2 p3 out64; maxpool k3 s2 p1; dw k3; pw out128",
        "1,3,224,224",
        {
            "conv1": (7, 2, 3),
            "maxpool1": (7 + 2 * 2, 4, 3 + 1 * 2),
            "dw1.depthwise": (11 + 2 * 4, 4, 5 + 1 * 4),
            "pw1": (19, 4, 9),
        },
    ),
    (
        # dilation: a k3 d2 conv spans 5
        "conv k3 d2 p2; conv k3 s2; conv k5 p2",
        "1,1,64",
        {"conv1": (5, 1, 2), "conv2": (5 + 2, 2, 2), "conv3": (7 + 4 * 2, 2, 2 + 2 * 2)},
    ),
    (
        # down then up: the transposed k4 s2 p1 output o reads two neighbouring inputs of the
        # first layer, each of which sees 3 network inputs 2 apart: 5 in all; J = 2/2 = 1;
        # P = 1 + 2·(3 - 1)/2 = 3 (output 0 reads network inputs -3 .. 1)
        "conv k3 s2 p1; conv_transpose k4 s2 p1",
        "1,1,32,32",
        {"conv1": (3, 2, 1), "conv_transpose1": (5, 1, 3)},
    ),
]


@pytest.mark.parametrize("line, shape, expected", HAND_STACKS, ids=[h[0] for h in HAND_STACKS])
def test_hand_derived_cumulative_figures(cli, line: str, shape: str, expected: dict) -> None:
    report = cli.json("stack", line, "--input", shape)
    dims = len(shape.split(",")) - 2
    for name, (field, stride, padding) in expected.items():
        figures = cumulative(report, name)
        assert figures["receptive_field"] == [field] * dims, name
        assert figures["receptive_field_measured"] == [field] * dims, name
        assert figures["effective_stride"] == [stride] * dims, name
        assert figures["effective_padding"] == [padding] * dims, name
    assert report["agree"] is True


def test_transposed_layer_gives_a_fractional_stride(cli) -> None:
    # U-Net's up-convolution: each output from exactly one input; outputs 1/2 input apart
    report = cli.json("stack", "conv_transpose k2 s2", "--input", "1,4,8")
    figures = report["layers"][0]["cumulative"]
    assert figures["effective_stride"] == [0.5]
    assert figures["effective_padding"] == [0.5]  # (d(k-1) - p)/s = 1/2
    assert figures["receptive_field"] == figures["receptive_field_measured"] == [1]
    assert "fractional stride" in figures["note"]
    assert report["total"]["effective_stride_text"] == ["1/2"]
    table = cli("stack", "conv_transpose k2 s2", "--input", "1,4,8").stdout
    assert "1/2" in table and "fractional stride" in table


RESIDUAL = {
    "input": [1, 8, 16, 16],
    "layers": [
        {
            "op": "residual",
            "name": "identity",
            "act": "relu",
            "main": [
                {"op": "conv", "kernel": 3, "padding": 1},
                {"op": "conv", "kernel": 3, "padding": 1},
            ],
        },
        {
            "op": "residual",
            "name": "down",
            "main": [
                {"op": "conv", "out": 16, "kernel": 3, "stride": 2, "padding": 1},
                {"op": "conv", "out": 16, "kernel": 3, "padding": 1},
            ],
            "shortcut": [{"op": "conv", "out": 16, "kernel": 1, "stride": 2}],
        },
    ],
}


def test_residual_blocks_follow_the_union_of_paths(cli, tmp_path: Path) -> None:
    path = tmp_path / "res.json"
    path.write_text(json.dumps(RESIDUAL))
    report = cli.json("stack", str(path))
    # identity block: main r = 1 + 2 + 2 = 5, P = 2; shortcut r = 1, P = 0: union r 5, P 2
    add = cumulative(report, "identity.add")
    assert (add["receptive_field"], add["effective_padding"]) == ([5, 5], [2, 2])
    assert "main path's contains the others" in add["note"]
    # down block, from r 5, J 1, P 2: main conv k3 s2 p1 -> r 7, J 2, P 3; conv k3 p1 ->
    # r 11, P 5; shortcut k1 s2 -> r 5, J 2, P 2; union: starts -5 / -2, ends 5 / 2 -> r 11
    add = cumulative(report, "down.add")
    assert add["receptive_field"] == add["receptive_field_measured"] == [11, 11]
    assert add["effective_stride"] == [2, 2] and add["effective_padding"] == [5, 5]
    shortcut = cumulative(report, "down.shortcut.conv1")
    assert shortcut["receptive_field"] == [5, 5]
    assert [x["path"] for x in report["layers"] if x["name"] == "down.shortcut.conv1"] == [
        "shortcut"
    ]
    assert report["total"]["params"] == (8 * 8 * 9 + 8) * 2 + (16 * 8 * 9 + 16) + (
        16 * 16 * 9 + 16
    ) + (16 * 8 + 16)
    assert any("residual blocks" in note for note in report["notes"])


ARCHITECTURES = {
    # name: (parameters, as torchvision counts them; receptive field of the last spatial layer)
    "alexnet": (61_100_840, 195),
    "vgg16": (138_357_544, 212),
    "resnet18": (11_689_512, 435),
    "resnet50": (25_557_032, 427),
    "mobilenet_v1": (4_231_976, 315),
    "mobilenet_v2": (3_504_872, 491),
}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_built_in_architecture_agrees_with_autograd(cli, arch: str) -> None:
    params, field = ARCHITECTURES[arch]
    device = "cpu" if arch in ("resnet18", "mobilenet_v2") else "meta"
    report = cli.json("stack", "--arch", arch, "--measure-on", device)
    assert report["total"]["params"] == params
    assert report["total"]["receptive_field"] == [field, field]
    assert report["total"]["formula"]["receptive_field"] == [field, field]
    assert report["total"]["effective_stride"] == [32, 32]
    for layer in report["layers"]:
        measured = layer["cumulative"].get("receptive_field_measured")
        if measured is not None:
            assert measured == layer["cumulative"]["receptive_field"], layer["name"]
    assert report["agree"] is True, [x["name"] for x in report["layers"] if not x["agree"]]


def test_list_and_export_round_trip(cli) -> None:
    listed = cli("stack", "--list-archs")
    assert listed.exit_code == 0
    assert [line.split()[0] for line in listed.stdout.splitlines()] == list(ARCHITECTURES)
    exported = cli("stack", "--arch", "resnet18", "--export")
    assert exported.exit_code == 0 and exported.stdout.startswith("input: [1, 3, 224, 224]")
    again = cli("stack", "-", "--format", "json", input=exported.stdout)
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["total"]["params"] == 11_689_512


def test_yaml_toml_json_and_stdin_give_the_same_stack(cli, tmp_path: Path) -> None:
    yaml_report = cli.json("stack", str(DATA / "alexnet_head.yaml"))
    toml = tmp_path / "head.toml"
    toml.write_text(
        "input = [1, 3, 224, 224]\n"
        '[[layers]]\nop = "conv"\nout = 64\nkernel = 11\nstride = 4\npadding = 2\n'
        '[[layers]]\nop = "relu"\n'
        '[[layers]]\nop = "maxpool"\nkernel = 3\nstride = 2\n'
    )
    toml_report = cli.json("stack", str(toml))
    text = (DATA / "alexnet_head.yaml").read_text()
    stdin = cli("stack", "-", "--format", "json", input=text)
    inline = cli.json(
        "stack", "conv out64 k11 s4 p2; relu; maxpool k3 s2", "--input", "1,3,224,224"
    )
    for other in (toml_report, json.loads(stdin.stdout), inline):
        assert other["total"] == yaml_report["total"]
    # AlexNet's first conv: floor((224 + 4 - 11)/4) + 1 = 55; pool: floor((55 - 3)/2) + 1 = 27
    assert yaml_report["total"]["output_shape"] == [1, 64, 27, 27]
    assert yaml_report["total"]["receptive_field"] == [19, 19]  # 11 + (3-1)·4


def test_inline_input_from_the_shared_options(cli) -> None:
    report = cli.json("stack", "conv k3 p1 out8", "--in", "2", "--size", "10", "--batch", "3")
    assert report["input_shape"] == [3, 2, 10, 10]


STACK_ERRORS = [
    (
        ["stack", "conv k3; frobnicate k2", "--input", "1,3,8,8"],
        "layer 2 (frobnicate1): unknown op 'frobnicate'; ops: ",
    ),
    (
        ["stack", "conv k3 colour=red", "--input", "1,3,8,8"],
        "layer 1 (conv1): unknown key 'colour' for conv; it takes ",
    ),
    (
        ["stack", "conv k7 out4", "--input", "1,3,4,4"],
        "layer 1 (conv1): kernel 7 with dilation 1 spans 7, more than the padded input 4",
    ),
    (
        ["stack", "conv k3 out4; linear out10", "--input", "1,3,8,8"],
        "layer 2 (linear1): op: linear needs a flat input, not 1x4x6x6: flatten it first",
    ),
    (
        ["stack", "conv k3 g2 out4", "--input", "1,3,8,8"],
        "layer 1 (conv1): groups 2 must divide input channels 3",
    ),
    (
        ["stack", "maxpool k2; maxpool k2; maxpool k2", "--input", "1,3,4,4"],
        "layer 3 (maxpool3): kernel 2 (dilation 1) does not fit the input 1 padded by 0",
    ),
    (["stack", "conv k3 s2 x9", "--input", "1,3,8,8"], "layer 1 (conv): 'x9' is not an argument"),
    (["stack", "--arch", "lenet"], "--arch 'lenet' must be one of alexnet, vgg16, resnet18, "),
    (["stack"], "give a stack file, - for stdin, layers inline, or --arch"),
    (
        ["stack", "conv k3", "--input", "1,3"],
        "--input [1, 3] must be [N, C, spatial...] with 1 to 3 spatial dimensions",
    ),
    (["stack", "missing.yaml"], "missing.yaml: No such file or directory"),
]


@pytest.mark.parametrize("args, start", STACK_ERRORS, ids=[s for _, s in STACK_ERRORS])
def test_stack_errors_name_the_layer_and_key(cli, args: list[str], start: str) -> None:
    result = cli(*args)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.startswith(f"error: {start}"), result.stderr
    assert result.stderr.count("\n") == 1


def test_malformed_file_gives_its_line(cli, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("input: [1, 3, 8, 8]\nlayers:\n  - {op: conv, kernel: 3\n  - {op: relu}\n")
    result = cli("stack", str(path))
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("error: bad.yaml: line ") or "bad.yaml: line" in result.stderr


def test_residual_paths_that_do_not_match(cli, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps(
            {
                "input": [1, 4, 8, 8],
                "layers": [
                    {
                        "op": "residual",
                        "name": "r",
                        "main": [{"op": "conv", "kernel": 3, "stride": 2}],
                    },
                ],
            }
        )
    )
    result = cli("stack", str(path))
    assert result.exit_code == 2
    assert result.stderr == (
        "error: layer 1 (r): main path 1x4x3x3, shortcut 1x4x8x8: they must match to be added\n"
    )


# --- convcalc model -------------------------------------------------------------------------


def test_model_totals_equal_the_models_own_and_fvcores(cli) -> None:
    import importlib.util

    with warnings.catch_warnings():  # fvcore.nn's import runs torch.jit.script: deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        from fvcore.nn import FlopCountAnalysis

    spec = importlib.util.spec_from_file_location("mynet_for_test", DATA / "mynet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.Net().eval()
    x = torch.zeros(1, 3, 32, 32)
    with warnings.catch_warnings():  # fvcore's tracing warns; convcalc hides that from users
        warnings.simplefilter("ignore")
        analysis = FlopCountAnalysis(net, x)
        analysis.unsupported_ops_warnings(False)
        fvcore_macs = analysis.by_operator()["conv"] + analysis.by_operator()["linear"]
    report = cli.json("model", f"{DATA / 'mynet.py'}:Net", "--input", "1,3,32,32")
    assert report["total"]["params"] == sum(p.numel() for p in net.parameters()) == 3_146
    assert report["total"]["macs"] == fvcore_macs == 442_368 + 147_456 + 320
    # the field is geometry, of the last layer with a spatial output (after it, global pooling:
    # every output sees the whole input): stem conv 3, max pool 2 -> 4, block k3 s2 on a
    # stride-2 map -> 4 + 2·2 = 8 (issue 12: not the gradient through random weights)
    assert report["total"]["receptive_field"] == [8, 8]
    assert report["total"]["receptive_field_of"] == "block"
    assert [layer["name"] for layer in report["layers"]] == [
        "stem.0",
        "stem.1",
        "pool",
        "block",
        "head.0",
        "head.2",
    ]
    assert report["agree"] is True


def _at(path: Path, line: int, function: str) -> str:
    """Where a user's code raised, as the CLI's line ends (measure.build.where_raised): the
    file relative to the working directory where it lies under it."""
    import os

    resolved = str(path.resolve())
    shown = os.path.relpath(resolved) if resolved.startswith(os.getcwd() + os.sep) else path
    return f" (at {shown}:{line} in {function})"


MODEL_ERRORS = [
    (
        ["model", "nosuchmodule_xyz:Net"],
        "error: cannot import nosuchmodule_xyz: ModuleNotFoundError: No module named "
        "'nosuchmodule_xyz'\n",
    ),
    (
        ["model", f"{DATA / 'mynet.py'}:Nope"],
        f"error: {DATA / 'mynet.py'} has no attribute 'Nope'\n",
    ),
    (
        ["model", f"{DATA / 'mynet.py'}:broken"],
        # (at its line 17, `raise ValueError("nope")` in broken(): added by the modelin pass)
        f"error: {DATA / 'mynet.py'}:broken() failed: ValueError: nope"
        f"{_at(DATA / 'mynet.py', 17, 'broken')}\n",
    ),
    (
        ["model", f"{DATA / 'mynet.py'}:Net", "--input", "1,4,32,32"],
        "error: the model failed on input 1x4x32x32: RuntimeError: Given groups=1, weight of size "
        "[16, 3, 3, 3], expected input[1, 4, 32, 32] to have 3 channels, but got 4 channels "
        # (at its line 13, the forward's call of the stem: added by the modelin pass)
        f"instead{_at(DATA / 'mynet.py', 13, 'forward')}\n",
    ),
    (["model", "mynet"], "error: 'mynet' must be MODULE:ATTR, like mypkg.nets:ResNet\n"),
]


@pytest.mark.parametrize("args, message", MODEL_ERRORS, ids=[m for _, m in MODEL_ERRORS])
def test_model_errors(cli, args: list[str], message: str) -> None:
    result = cli(*args)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", message)
