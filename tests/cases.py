"""Hand-derived figures for each conv variant. Each number was worked out on paper from the layer's
definition (the derivation is in the comment), not produced by convcalc's formula code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Case:
    id: str
    #: keyword arguments of convcalc.core.spec.build_conv / the CLI options of `convcalc conv`
    layer: dict[str, Any]
    size: str
    batch: int
    output_shape: tuple[int, ...]
    params: int
    macs: int
    receptive_field: tuple[int, ...]
    bias_adds: int = 0
    dims: int = 2
    cli: list[str] = field(default_factory=list)

    @property
    def flops(self) -> int:
        return 2 * self.macs


CASES = [
    # Conv1d(8, 16, k5, s2, p2) on 1x8x100: floor((100 + 4 - 4 - 1)/2) + 1 = 50;
    # params 16*8*5 + 16 = 656; MACs 16*50 outputs * 8*5 = 32,000
    Case(
        "1d",
        dict(in_channels=8, out_channels=16, kernel="5", stride="2", padding="2"),
        "100",
        1,
        (1, 16, 50),
        656,
        32_000,
        (5,),
        bias_adds=800,
        dims=1,
    ),
    # Conv2d(3, 16, k5) on 1x3x28x28 (seed 001, s1 p0): 28 - 4 = 24; 16*3*25 + 16 = 1,216;
    # 16*24*24 * 3*25 = 691,200
    Case(
        "2d",
        dict(in_channels=3, out_channels=16, kernel="5"),
        "28",
        1,
        (1, 16, 24, 24),
        1_216,
        691_200,
        (5, 5),
        bias_adds=9_216,
    ),
    # Conv3d(4, 8, k3, s2, p1) on 2x4x9x10x11: floor((n - 1)/2) + 1 = 5, 5, 6;
    # 8*4*27 + 8 = 872; 2*8*5*5*6 outputs * 4*27 = 259,200
    Case(
        "3d",
        dict(in_channels=4, out_channels=8, kernel="3", stride="2", padding="1"),
        "9x10x11",
        2,
        (2, 8, 5, 5, 6),
        872,
        259_200,
        (3, 3, 3),
        bias_adds=2_400,
        dims=3,
    ),
    # Conv2d(64, 256, k3, p1, g8) on 1x64x224x224 (seed 002): 256*8*9 + 256 = 18,688;
    # 256*224*224 outputs * 8*9 = 924,844,032
    Case(
        "grouped",
        dict(in_channels=64, out_channels=256, kernel="3", padding="1", groups=8),
        "224",
        1,
        (1, 256, 224, 224),
        18_688,
        924_844_032,
        (3, 3),
        bias_adds=12_845_056,
    ),
    # Conv2d(64, 64, k3, p1, g64) (seed 002's depthwise half): 64*1*9 + 64 = 640;
    # 64*224*224 * 9 = 28,901,376
    Case(
        "depthwise",
        dict(in_channels=64, out_channels=64, kernel="3", padding="1", groups=64),
        "224",
        1,
        (1, 64, 224, 224),
        640,
        28_901_376,
        (3, 3),
        bias_adds=3_211_264,
    ),
    # Conv2d(64, 256, k1) (seed 002's pointwise half): 256*64 + 256 = 16,640; 256*224*224*64
    Case(
        "pointwise",
        dict(in_channels=64, out_channels=256, kernel="1"),
        "224",
        1,
        (1, 256, 224, 224),
        16_640,
        822_083_584,
        (1, 1),
        bias_adds=12_845_056,
    ),
    # Conv2d(1, 1, k2, s2, p2, d2, bias=False) on 1x1x5x5 (seed 004): span 2*(2-1)+1 = 3;
    # floor((5 + 4 - 3)/2) + 1 = 4; 4 weights; 16 outputs * 4 taps = 64
    Case(
        "dilated",
        dict(
            in_channels=1,
            out_channels=1,
            kernel="2",
            stride="2",
            padding="2",
            dilation="2",
            bias=False,
        ),
        "5",
        1,
        (1, 1, 4, 4),
        4,
        64,
        (3, 3),
    ),
    # Conv2d(64, 64, k3, p2, d2) on 1x64x56x56: span 5, size kept; 64*64*9 + 64 = 36,928;
    # 64*56*56 * 64*9 = 115,605,504
    Case(
        "dilated-same-size",
        dict(in_channels=64, out_channels=64, kernel="3", padding="2", dilation="2"),
        "56",
        1,
        (1, 64, 56, 56),
        36_928,
        115_605_504,
        (5, 5),
        bias_adds=200_704,
    ),
    # ConvTranspose2d(16, 8, k3, s2, p1, op1) on 1x16x10x10: (10-1)*2 - 2 + 2 + 1 + 1 = 20;
    # 16*8*9 + 8 = 1,160; transposed MACs per input: 16*10*10 inputs * 8*9 = 115,200;
    # output o = 2i - 1 + j: o odd -> j in {0, 2}, two inputs; o even -> one: RF 2
    Case(
        "transposed-output-padding",
        dict(
            in_channels=16,
            out_channels=8,
            kernel="3",
            stride="2",
            padding="1",
            output_padding="1",
            transpose=True,
        ),
        "10",
        1,
        (1, 8, 20, 20),
        1_160,
        115_200,
        (2, 2),
        bias_adds=3_200,
    ),
    # ConvTranspose2d(1, 1, k2, bias=False) on 1x1x5x5 (seed 004): (5-1)*1 + 1*(2-1) + 1 = 6;
    # 4 weights; 25 inputs * 4 taps = 100; stride 1: RF = 2
    Case(
        "transposed-seed",
        dict(in_channels=1, out_channels=1, kernel="2", bias=False, transpose=True),
        "5",
        1,
        (1, 1, 6, 6),
        4,
        100,
        (2, 2),
    ),
    # ConvTranspose1d(2, 4, k3, s2, d2) on 1x2x7: 6*2 + 2*2 + 1 = 17; 2*4*3 + 4 = 28;
    # 2*7 inputs * 4*3 = 168; o = 2i + 2j: even o gets i = o/2 - j, j = 0..2: RF 3
    Case(
        "transposed-dilated",
        dict(in_channels=2, out_channels=4, kernel="3", stride="2", dilation="2", transpose=True),
        "7",
        1,
        (1, 4, 17),
        28,
        168,
        (3,),
        bias_adds=68,
        dims=1,
    ),
    # ConvTranspose2d(16, 8, k4, s2, p1, g4) on 1x16x8x8: 7*2 - 2 + 3 + 1 = 16;
    # 16*(8/4)*16 + 8 = 520; 16*64 inputs * 2*16 = 32,768; k4 s2: two taps per output, RF 2
    Case(
        "transposed-grouped",
        dict(
            in_channels=16,
            out_channels=8,
            kernel="4",
            stride="2",
            padding="1",
            groups=4,
            transpose=True,
        ),
        "8",
        1,
        (1, 8, 16, 16),
        520,
        32_768,
        (2, 2),
        bias_adds=2_048,
    ),
    # Conv2d(3, 8, k3x5, s1x2, p1x2) on 1x3x32x40: H 32 + 2 - 2 = 32; W floor((40+4-4-1)/2)+1 = 20;
    # 8*3*15 + 8 = 368; 8*32*20 * 3*15 = 230,400
    Case(
        "non-square",
        dict(in_channels=3, out_channels=8, kernel="3x5", stride="1x2", padding="1x2"),
        "32x40",
        1,
        (1, 8, 32, 20),
        368,
        230_400,
        (3, 5),
        bias_adds=5_120,
    ),
    # Conv2d(4, 4, k4, padding='same') on 1x4x10x10: torch pads 1 left, 2 right: size kept;
    # 4*4*16 + 4 = 260; 4*100 outputs * 4*16 = 25,600
    Case(
        "same-even-kernel",
        dict(in_channels=4, out_channels=4, kernel="4", padding="same"),
        "10",
        1,
        (1, 4, 10, 10),
        260,
        25_600,
        (4, 4),
        bias_adds=400,
    ),
    # Conv2d(64, 64, k3, same, d2, g64) on 8x64x56x80 (the core issue's example): size kept;
    # 64*9 + 64 = 640; 8*64*56*80 * 9 = 20,643,840
    Case(
        "same-dilated-depthwise",
        dict(in_channels=64, out_channels=64, kernel="3", padding="same", dilation="2", groups=64),
        "56x80",
        8,
        (8, 64, 56, 80),
        640,
        20_643_840,
        (5, 5),
        bias_adds=2_293_760,
    ),
    # Conv2d(3, 6, k3, padding='valid') on 1x3x10x12: 8x10; 6*3*9 + 6 = 168; 6*80 * 27 = 12,960
    Case(
        "valid",
        dict(in_channels=3, out_channels=6, kernel="3", padding="valid"),
        "10x12",
        1,
        (1, 6, 8, 10),
        168,
        12_960,
        (3, 3),
        bias_adds=480,
    ),
    # Conv2d(3, 8, k3, p2, reflect) on 1x3x16x16: 16 + 4 - 2 = 18; 8*27 + 8 = 224; 8*324*27
    Case(
        "reflect",
        dict(in_channels=3, out_channels=8, kernel="3", padding="2", padding_mode="reflect"),
        "16",
        1,
        (1, 8, 18, 18),
        224,
        69_984,
        (3, 3),
        bias_adds=2_592,
    ),
]


def cli_args(case: Case) -> list[str]:
    """The `convcalc conv` options that build the case's layer."""
    option = {
        "in_channels": "--in",
        "out_channels": "--out",
        "kernel": "--kernel",
        "stride": "--stride",
        "padding": "--padding",
        "dilation": "--dilation",
        "groups": "--groups",
        "output_padding": "--output-padding",
        "padding_mode": "--padding-mode",
    }
    args = ["conv", "--dims", str(case.dims), "--size", case.size, "--batch", str(case.batch)]
    for key, value in case.layer.items():
        if key == "bias":
            args.append("--bias" if value else "--no-bias")
        elif key == "transpose":
            if value:
                args.append("--transpose")
        else:
            args += [option[key], str(value)]
    return args
