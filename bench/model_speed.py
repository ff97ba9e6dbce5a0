"""`convcalc model`'s speed goal (issue 12, item 7): a ResNet-50 (written here with torch.nn, no
torchvision) at 1×3×224×224 through the command a user runs, `convcalc model
bench/model_speed.py:resnet50 --input 1x3x224x224 --json`, against fvcore's FlopCountAnalysis,
torchinfo and torch's FlopCounterMode on the same model.

    python bench/model_speed.py [--repeat 5]

Run it from a regular (non-editable) install: convcalc is imported from wherever the
interpreter finds it, never from this checkout. Each tool runs in a fresh process, interleaved
round by round so that machine noise hits all alike; the wall time is the whole process
(interpreter, imports, model build, analysis; the peers' interpreter teardown included, which
convcalc's command skips by leaving with os._exit once its output is flushed). The goal is the
command's. Two more rows show where convcalc's time goes: the library call
convcalc.engine.analyze_model in a process of its own (which, as any library caller, tears
the interpreter down and compiles its dataclasses' code afresh: only the command keeps it
between runs), with and without its receptive-field probe; those children also print the time
of their analysis alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def resnet50():  # type: ignore[no-untyped-def]
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
            super().__init__()
            width, out = planes, planes * 4
            self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, out, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(out)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = (
                nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))
                if stride != 1 or inplanes != out
                else None
            )

        def forward(self, x):  # type: ignore[no-untyped-def]
            identity = x if self.downsample is None else self.downsample(x)
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.relu(self.bn2(self.conv2(y)))
            return self.relu(self.bn3(self.conv3(y)) + identity)

    class ResNet50(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            layers, inplanes = [], 64
            for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
                stage = []
                for index in range(blocks):
                    stage.append(Bottleneck(inplanes, planes, stride if index == 0 else 1))
                    inplanes = planes * 4
                layers.append(nn.Sequential(*stage))
            self.layer1, self.layer2, self.layer3, self.layer4 = layers
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(2048, 1000)

        def forward(self, x):  # type: ignore[no-untyped-def]
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(self.avgpool(x).flatten(1))

    return ResNet50().eval()


def one(tool: str) -> None:
    """Run one tool in this (fresh) process; print its figure and its analysis time."""
    import warnings

    warnings.simplefilter("ignore")
    import torch

    model = resnet50()
    shape = (1, 3, 224, 224)
    start = time.perf_counter()
    if tool.startswith("convcalc"):
        from convcalc.engine import analyze_model

        report = analyze_model(model, shape, receptive_field=tool == "convcalc")
        figure = report.total.macs.measured
        extra = {k: round(v, 3) for k, v in report.model.seconds.items()} if report.model else {}
    elif tool == "fvcore":
        from fvcore.nn import FlopCountAnalysis

        figure = FlopCountAnalysis(model, torch.zeros(shape)).total()
        extra = {}
    elif tool == "torchinfo":
        from torchinfo import summary

        figure = summary(model, input_size=shape, verbose=0).total_mult_adds
        extra = {}
    elif tool == "FlopCounterMode":
        from torch.utils.flop_counter import FlopCounterMode

        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(shape))
        figure = counter.get_total_flops()
        extra = {}
    else:
        raise SystemExit(f"unknown tool {tool}")
    print(f"{figure}\t{time.perf_counter() - start:.3f}\t{extra}")


COMMAND = "convcalc model (the command)"
TOOLS = [
    COMMAND,
    "convcalc",
    "convcalc (receptive_field=False)",
    "fvcore",
    "torchinfo",
    "FlopCounterMode",
]
#: how the library rows are shown
LIBRARY = {
    "convcalc": "analyze_model (library)",
    "convcalc (receptive_field=False)": "  same, receptive_field=False",
}


def command(tool: str) -> list[str]:
    """The child process that runs one tool."""
    if tool == COMMAND:
        return [
            sys.executable,
            "-m",
            "convcalc",
            "model",
            f"{Path(__file__).resolve()}:resnet50",
            "--input",
            "1x3x224x224",
            "--json",
        ]
    return [sys.executable, __file__, "--one", tool]


def parse(tool: str, stdout: str) -> tuple[str, float | None, str]:
    """The figure a tool printed, its analysis seconds (None: not printed), and its extras."""
    if tool == COMMAND:
        report = json.loads(stdout)
        return str(report["total"]["macs"]), None, "{}"
    figure, seconds, extra = stdout.strip().splitlines()[-1].split("\t")
    return figure, float(seconds), extra


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--one")
    args = parser.parse_args()
    if args.one:
        one(args.one)
        return
    walls: dict[str, list[float]] = {t: [] for t in TOOLS}
    inner: dict[str, list[float]] = {t: [] for t in TOOLS}
    shown: dict[str, str] = {}
    for _ in range(args.repeat):
        for tool in TOOLS:
            start = time.perf_counter()
            done = subprocess.run(command(tool), capture_output=True, text=True, check=True)
            walls[tool].append(time.perf_counter() - start)
            figure, seconds, extra = parse(tool, done.stdout)
            if seconds is not None:
                inner[tool].append(seconds)
            shown[tool] = f"{int(float(figure)):,} {extra}"
    fastest_peer = min(
        statistics.median(walls[t]) for t in ("fvcore", "torchinfo", "FlopCounterMode")
    )
    print(f"ResNet-50, 1x3x224x224, {args.repeat} fresh processes each, interleaved; medians")
    print(f"{'tool':34} {'process s':>10} {'analysis s':>11} {'/ fastest peer':>15}  figure")
    for tool in TOOLS:
        wall = statistics.median(walls[tool])
        analysis = f"{statistics.median(inner[tool]):11.2f}" if inner[tool] else f"{'':11}"
        print(
            f"{LIBRARY.get(tool, tool):34} {wall:10.2f} {analysis} "
            f"{wall / fastest_peer:15.2f}  {shown[tool]}"
        )


if __name__ == "__main__":
    main()
