"""Built-in architectures in convcalc's stack format, layer for layer as torchvision defines them
(torchvision.models 0.2x, 1000 classes, 224x224 input); MobileNet v1, which torchvision lacks,
as in its paper (Howard et al., 2017, Table 1, width 1.0) with BatchNorm and ReLU after every
conv, as the paper's Figure 3 draws them. Pure data: no torch, no torchvision."""

from __future__ import annotations

from typing import Any

Layer = dict[str, Any]


def _conv(
    out: int,
    kernel: int,
    stride: int = 1,
    padding: int = 0,
    *,
    bias: bool = False,
    bn: bool = True,
    act: str | None = "relu",
    groups: int = 1,
    name: str = "",
) -> Layer:
    layer: Layer = {"op": "conv", "out": out, "kernel": kernel}
    if name:
        layer["name"] = name
    if stride != 1:
        layer["stride"] = stride
    if padding:
        layer["padding"] = padding
    if groups != 1:
        layer["groups"] = groups
    if not bias:
        layer["bias"] = False
    if bn:
        layer["bn"] = True
    if act:
        layer["act"] = act
    return layer


def alexnet() -> dict[str, Any]:
    """torchvision.models.alexnet: 61,100,840 parameters."""
    layers: list[Layer] = [
        _conv(64, 11, 4, 2, bias=True, bn=False, name="features.0"),
        {"op": "maxpool", "kernel": 3, "stride": 2, "name": "features.2"},
        _conv(192, 5, 1, 2, bias=True, bn=False, name="features.3"),
        {"op": "maxpool", "kernel": 3, "stride": 2, "name": "features.5"},
        _conv(384, 3, 1, 1, bias=True, bn=False, name="features.6"),
        _conv(256, 3, 1, 1, bias=True, bn=False, name="features.8"),
        _conv(256, 3, 1, 1, bias=True, bn=False, name="features.10"),
        {"op": "maxpool", "kernel": 3, "stride": 2, "name": "features.12"},
        {"op": "adaptiveavgpool", "output_size": 6, "name": "avgpool"},
        {"op": "flatten", "name": "flatten"},
        {"op": "dropout", "name": "classifier.0"},
        {"op": "linear", "out": 4096, "name": "classifier.1"},
        {"op": "relu", "name": "classifier.2"},
        {"op": "dropout", "name": "classifier.3"},
        {"op": "linear", "out": 4096, "name": "classifier.4"},
        {"op": "relu", "name": "classifier.5"},
        {"op": "linear", "out": 1000, "name": "classifier.6"},
    ]
    return {"input": [1, 3, 224, 224], "layers": layers}


def vgg16() -> dict[str, Any]:
    """torchvision.models.vgg16 (configuration D, no batch norm): 138,357,544 parameters."""
    layers: list[Layer] = []
    index = 0
    for item in (
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        "M",
    ):
        if item == "M":
            layers.append({"op": "maxpool", "kernel": 2, "stride": 2, "name": f"features.{index}"})
            index += 1
        else:
            layers.append(_conv(int(item), 3, 1, 1, bias=True, bn=False, name=f"features.{index}"))
            index += 2
    layers += [
        {"op": "adaptiveavgpool", "output_size": 7, "name": "avgpool"},
        {"op": "flatten", "name": "flatten"},
        {"op": "linear", "out": 4096, "name": "classifier.0"},
        {"op": "relu", "name": "classifier.1"},
        {"op": "dropout", "name": "classifier.2"},
        {"op": "linear", "out": 4096, "name": "classifier.3"},
        {"op": "relu", "name": "classifier.4"},
        {"op": "dropout", "name": "classifier.5"},
        {"op": "linear", "out": 1000, "name": "classifier.6"},
    ]
    return {"input": [1, 3, 224, 224], "layers": layers}


def _stem() -> list[Layer]:
    return [
        _conv(64, 7, 2, 3, name="conv1"),
        {"op": "maxpool", "kernel": 3, "stride": 2, "padding": 1, "name": "maxpool"},
    ]


def _head() -> list[Layer]:
    return [
        {"op": "adaptiveavgpool", "output_size": 1, "name": "avgpool"},
        {"op": "flatten", "name": "flatten"},
        {"op": "linear", "out": 1000, "name": "fc"},
    ]


def _resnet(block: str, counts: tuple[int, ...]) -> dict[str, Any]:
    layers = _stem()
    channels = 64
    expansion = 4 if block == "bottleneck" else 1
    for stage, (count, width) in enumerate(zip(counts, (64, 128, 256, 512)), start=1):
        for index in range(count):
            stride = 2 if stage > 1 and index == 0 else 1
            name = f"layer{stage}.{index}"
            out = width * expansion
            if block == "basic":
                main = [
                    _conv(width, 3, stride, 1, name="conv1"),
                    _conv(width, 3, 1, 1, act=None, name="conv2"),
                ]
            else:  # torchvision's v1.5: the stride sits on the 3x3 conv
                main = [
                    _conv(width, 1, name="conv1"),
                    _conv(width, 3, stride, 1, name="conv2"),
                    _conv(out, 1, act=None, name="conv3"),
                ]
            shortcut = (
                [_conv(out, 1, stride, act=None, name="downsample")]
                if stride != 1 or channels != out
                else []
            )
            layers.append(
                {"op": "residual", "name": name, "main": main, "shortcut": shortcut, "act": "relu"}
            )
            channels = out
    return {"input": [1, 3, 224, 224], "layers": layers + _head()}


def resnet18() -> dict[str, Any]:
    """torchvision.models.resnet18: 11,689,512 parameters."""
    return _resnet("basic", (2, 2, 2, 2))


def resnet50() -> dict[str, Any]:
    """torchvision.models.resnet50: 25,557,032 parameters."""
    return _resnet("bottleneck", (3, 4, 6, 3))


def mobilenet_v1() -> dict[str, Any]:
    """MobileNet v1 (Howard et al. 2017, Table 1): 4,231,976 parameters with affine BatchNorm."""
    layers: list[Layer] = [_conv(32, 3, 2, 1, name="conv0")]
    for index, (out, stride) in enumerate(
        (
            (64, 1),
            (128, 2),
            (128, 1),
            (256, 2),
            (256, 1),
            (512, 2),
            (512, 1),
            (512, 1),
            (512, 1),
            (512, 1),
            (512, 1),
            (1024, 2),
            (1024, 1),
        ),
        start=1,
    ):
        layers.append(
            {
                "op": "dw",
                "name": f"block{index}",
                "out": out,
                "kernel": 3,
                "stride": stride,
                "padding": 1,
                "bias": False,
                "bn": True,
                "act": "relu",
            }
        )
    layers += _head()
    return {"input": [1, 3, 224, 224], "layers": layers}


def mobilenet_v2() -> dict[str, Any]:
    """torchvision.models.mobilenet_v2: 3,504,872 parameters."""
    layers: list[Layer] = [_conv(32, 3, 2, 1, act="relu6", name="features.0")]
    channels, index = 32, 1
    for expand, out, count, first_stride in (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ):
        for repeat in range(count):
            stride = first_stride if repeat == 0 else 1
            hidden = channels * expand
            main: list[Layer] = []
            if expand != 1:
                main.append(_conv(hidden, 1, act="relu6", name="expand"))
            main += [
                _conv(hidden, 3, stride, 1, groups=hidden, act="relu6", name="depthwise"),
                _conv(out, 1, act=None, name="project"),
            ]
            name = f"features.{index}"
            if stride == 1 and channels == out:
                layers.append({"op": "residual", "name": name, "main": main, "shortcut": []})
            else:
                layers += [{**layer, "name": f"{name}.{layer['name']}"} for layer in main]
            channels, index = out, index + 1
    layers.append(_conv(1280, 1, act="relu6", name=f"features.{index}"))
    layers += [
        {"op": "adaptiveavgpool", "output_size": 1, "name": "avgpool"},
        {"op": "flatten", "name": "flatten"},
        {"op": "dropout", "name": "classifier.0"},
        {"op": "linear", "out": 1000, "name": "classifier.1"},
    ]
    return {"input": [1, 3, 224, 224], "layers": layers}


ARCHITECTURES = {
    "alexnet": alexnet,
    "vgg16": vgg16,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "mobilenet_v1": mobilenet_v1,
    "mobilenet_v2": mobilenet_v2,
}

DESCRIPTIONS = {
    name: (builder.__doc__ or "").split(":")[0] for name, builder in ARCHITECTURES.items()
}
