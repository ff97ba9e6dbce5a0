"""Every concrete case of the source documents (five Chinese PyTorch tutorials and blog posts that
convcalc was created from), as re-checked with the real PyTorch 2.13 layers. Copied here so the
project stands alone; each entry says which document it comes from.

Layers are given as `convcalc conv` options; chains as lists of them, each layer fed the previous
layer's output.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SeedLayer:
    options: tuple[str, ...]
    output_shape: tuple[int, ...]
    params: int


@dataclass(frozen=True)
class SeedChain:
    id: str
    source: str
    input_shape: tuple[int, ...]
    layers: tuple[SeedLayer, ...]

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.layers[-1].output_shape

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)


def L(options: str, output_shape: tuple[int, ...], params: int) -> SeedLayer:  # noqa: N802
    return SeedLayer(tuple(options.split()), output_shape, params)


SEED_CHAINS = [
    # seed 002 (torchsummary output): standard, grouped, depthwise separable on 1x64x224x224
    SeedChain(
        "standard",
        "seed 002",
        (1, 64, 224, 224),
        (L("--in 64 --out 256 -k 3 -s 1 -p 1", (1, 256, 224, 224), 147_712),),
    ),
    SeedChain(
        "grouped",
        "seed 002",
        (1, 64, 224, 224),
        (L("--in 64 --out 256 -k 3 -s 1 -p 1 -g 8", (1, 256, 224, 224), 18_688),),
    ),
    SeedChain(
        "depthwise-separable",
        "seed 002",
        (1, 64, 224, 224),
        (
            L("--in 64 --out 64 -k 3 -p 1 -g 64", (1, 64, 224, 224), 640),
            L("--in 64 --out 256 -k 1", (1, 256, 224, 224), 16_640),
        ),
    ),
    # seed 002's MobileFaceNet block, its conv layers (BN and ReLU come with the presets):
    # 576 + 16,384 of its 17,600 parameters; output 1x256x222x222
    SeedChain(
        "mobilefacenet-convs",
        "seed 002",
        (1, 64, 224, 224),
        (
            L("--in 64 --out 64 -k 3 -p 0 -g 64 --no-bias", (1, 64, 222, 222), 576),
            L("--in 64 --out 256 -k 1 --no-bias", (1, 256, 222, 222), 16_384),
        ),
    ),
    # seed 002's global depthwise conv (GDConv), without its BatchNorm (+128)
    SeedChain(
        "gdconv",
        "seed 002",
        (1, 64, 224, 224),
        (L("--in 64 --out 64 -k 224 -p 0 -g 64 --no-bias", (1, 64, 1, 1), 3_211_264),),
    ),
    # seed 003: depthwise separable on 1x3x224x224, conv layers of 420 (30 + 6 + 256 + 128)
    SeedChain(
        "seed003-depthwise-separable",
        "seed 003",
        (1, 3, 224, 224),
        (
            L("--in 3 --out 3 -k 3 -s 1 -p 1 -g 3", (1, 3, 224, 224), 30),
            L("--in 3 --out 64 -k 1", (1, 64, 224, 224), 256),
        ),
    ),
    # seed 001: a 16x3x5x5 weight with bias on 1x3x28x28, three stride/padding choices
    SeedChain(
        "functional-s1-p1",
        "seed 001",
        (1, 3, 28, 28),
        (L("--in 3 --out 16 -k 5 -s 1 -p 1", (1, 16, 26, 26), 1_216),),
    ),
    SeedChain(
        "functional-s2-p2",
        "seed 001",
        (1, 3, 28, 28),
        (L("--in 3 --out 16 -k 5 -s 2 -p 2", (1, 16, 14, 14), 1_216),),
    ),
    SeedChain(
        "functional-s1-p0",
        "seed 001",
        (1, 3, 28, 28),
        (L("--in 3 --out 16 -k 5 -s 1 -p 0", (1, 16, 24, 24), 1_216),),
    ),
    # seed 004: the five kinds side by side, each on a 1xCx5x5 input
    SeedChain(
        "five-kinds-standard",
        "seed 004",
        (1, 1, 5, 5),
        (L("--in 1 --out 1 -k 2 -s 2 -p 1", (1, 1, 3, 3), 5),),
    ),
    SeedChain(
        "five-kinds-transposed",
        "seed 004",
        (1, 1, 5, 5),
        (L("--in 1 --out 1 -k 2 --no-bias --transpose", (1, 1, 6, 6), 4),),
    ),
    SeedChain(
        "five-kinds-dilated",
        "seed 004",
        (1, 1, 5, 5),
        (L("--in 1 --out 1 -k 2 -s 2 -p 2 -d 2 --no-bias", (1, 1, 4, 4), 4),),
    ),
    SeedChain(
        "five-kinds-grouped",
        "seed 004",
        (1, 4, 5, 5),
        (L("--in 4 --out 2 -k 2 -s 2 -p 2 -g 2 --no-bias", (1, 2, 4, 4), 16),),
    ),
    SeedChain(
        "five-kinds-depthwise-separable",
        "seed 004",
        (1, 4, 5, 5),
        (
            L("--in 4 --out 4 -k 2 -s 2 -p 2 -g 4 --no-bias", (1, 4, 4, 4), 16),
            L("--in 4 --out 1 -k 1 --no-bias", (1, 1, 4, 4), 4),
        ),
    ),
    # seed 000: a course's exercise on 1x3x128x128, and the same with stride 3 on the depthwise
    SeedChain(
        "exercise",
        "seed 000",
        (1, 3, 128, 128),
        (
            L("--in 3 --out 3 -k 3 -g 3", (1, 3, 126, 126), 30),
            L("--in 3 --out 10 -k 1", (1, 10, 126, 126), 40),
        ),
    ),
    SeedChain(
        "exercise-stride-3",
        "seed 000",
        (1, 3, 128, 128),
        (
            L("--in 3 --out 3 -k 3 -s 3 -g 3", (1, 3, 42, 42), 30),
            L("--in 3 --out 10 -k 1", (1, 10, 42, 42), 40),
        ),
    ),
    # seed 000's question: a dilated conv keeps the size with padding d(k-1)/2 and stride 1
    SeedChain(
        "dilated-keeps-size",
        "seed 000",
        (1, 3, 128, 128),
        (L("--in 3 --out 3 -k 3 -d 2 -p 2", (1, 3, 128, 128), 84),),
    ),
]

#: seed 002, torchsummary's memory lines for the standard case (float32, "MB" = MiB)
STANDARD_MEMORY_MIB = {"input": 12.25, "forward_backward": 98.00, "params": 0.56, "total": 110.81}

#: seed 002: grouped / standard parameter ratio; weights alone shrink by exactly 1/g
GROUPED_RATIO = 18_688 / 147_712  # 0.12652 (the document prints 0.14038, which is wrong)

#: seed 001: a 5x5 input and 3x3 kernel, conv2d without bias; outputs at stride 1 and 2
FUNCTIONAL_INPUT = [
    [1, 2, 0, 3, 1],
    [0, 1, 2, 3, 1],
    [1, 2, 1, 0, 0],
    [5, 2, 3, 1, 1],
    [2, 1, 0, 1, 1],
]
FUNCTIONAL_KERNEL = [[1, 2, 1], [0, 1, 0], [2, 1, 0]]
FUNCTIONAL_STRIDE_1 = [[10, 12, 12], [18, 16, 16], [13, 9, 3]]
FUNCTIONAL_STRIDE_2 = [[10, 12], [13, 3]]
