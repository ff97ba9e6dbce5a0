"""`convcalc draw`: the taps drawn are the ones torch's own layer uses (autograd), transposed
spreads too; golden renders without colour; SVG and HTML export; errors."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from convcalc.core.picture import conv_picture, conv_taps, drawable_size, transposed_targets
from convcalc.kinds import build_conv
from convcalc.kinds.conv import padding_pairs


@settings(max_examples=80, deadline=None)
@given(
    dims=st.sampled_from([1, 2]),
    k=st.integers(1, 4),
    s=st.integers(1, 3),
    d=st.integers(1, 3),
    p=st.integers(0, 3),
    n=st.integers(1, 12),
    data=st.data(),
)
def test_taps_are_the_inputs_torch_reads(dims, k, s, d, p, n, data) -> None:
    span = d * (k - 1) + 1
    if n + 2 * p < span:
        return
    spec = build_conv(
        dims=dims,
        in_channels=1,
        out_channels=1,
        kernel=str(k),
        stride=str(s),
        padding=str(p),
        dilation=str(d),
        bias=False,
    )
    layer = getattr(torch.nn, f"Conv{dims}d")(1, 1, k, s, p, d, bias=False, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    x = torch.ones((1, 1, *([n] * dims)), dtype=torch.float64, requires_grad=True)
    y = layer(x)
    position = tuple(data.draw(st.integers(0, o - 1)) for o in y.shape[2:])
    (grad,) = torch.autograd.grad(y[(0, 0, *position)], x)
    read = {tuple(int(v) for v in idx) for idx in torch.nonzero(grad[0, 0])}
    left = [a for a, _ in padding_pairs(spec)]
    drawn = {
        tuple(t - a for t, a in zip(tap, left))
        for tap in conv_taps(spec, position)
        if all(0 <= t - a < n for t, a in zip(tap, left))
    }
    assert drawn == read


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, 4),
    s=st.integers(1, 3),
    d=st.integers(1, 2),
    p=st.integers(0, 2),
    n=st.integers(1, 6),
    data=st.data(),
)
def test_transposed_spread_is_what_torch_writes(k, s, d, p, n, data) -> None:
    out_len = (n - 1) * s - 2 * p + d * (k - 1) + 1
    if out_len < 1:
        return
    spec = build_conv(
        dims=1,
        in_channels=1,
        out_channels=1,
        kernel=str(k),
        stride=str(s),
        padding=str(p),
        dilation=str(d),
        bias=False,
        transpose=True,
    )
    layer = torch.nn.ConvTranspose1d(1, 1, k, s, p, dilation=d, bias=False)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    cell = data.draw(st.integers(0, n - 1))
    x = torch.zeros(1, 1, n)
    x[0, 0, cell] = 1.0
    written = {int(i) for i in torch.nonzero(layer(x)[0, 0]).flatten()}
    drawn = {t[0] - p for t in transposed_targets(spec, (cell,)) if 0 <= t[0] - p < out_len}
    assert drawn == written


def test_small_grid_keeps_what_the_stride_drops() -> None:
    # 224 with k3 s2: floor((224-3)/2)+1 = 111 outputs read 0..222, dropping the last row;
    # the drawn size must drop its last row too
    small = drawable_size(224, 3, 2)
    assert small <= 16 and (small - 3) % 2 == (224 - 3) % 2
    picture = conv_picture(
        build_conv(in_channels=1, out_channels=1, kernel="3", stride="2"), (224, 224)
    )
    assert picture.frames[0].input_rows[-1] == "x" * small
    assert "drawn at" in picture.notes[0]


def test_steps_and_at(cli) -> None:
    result = cli("draw", "conv", "-k", "3", "-s", "2", "--size", "7", "--steps", "3", "--no-color")
    assert result.exit_code == 0
    titles = [line for line in result.stdout.splitlines() if line.startswith("output (")]
    assert titles == [
        "output (0, 0): its 9 taps",
        "output (0, 1): its 9 taps",
        "output (0, 2): its 9 taps",
    ]
    at = cli("draw", "conv", "-k", "3", "--size", "5", "--at", "1,2", "--no-color")
    assert "output (1, 2): its 9 taps" in at.stdout


@pytest.mark.parametrize(
    "name, args",
    [
        (
            "draw_dilated.txt",
            ["draw", "conv", "-k", "3", "-d", "2", "-s", "2", "-p", "1", "--size", "7"],
        ),
        (
            "draw_transpose.txt",
            ["draw", "transpose", "-k", "3", "-s", "2", "-p", "1", "--size", "4"],
        ),
        (
            "draw_stack.txt",
            [
                "draw",
                "stack",
                "conv k7 s2 p3; maxpool k3 s2 p1; conv k3 p1",
                "--input",
                "1,3,32,32",
            ],
        ),
        ("draw_dw_1d.txt", ["draw", "dw", "--dims", "1", "--size", "9", "-k", "3", "-s", "2"]),
    ],
)
def test_golden_pictures(cli, golden, name: str, args: list[str]) -> None:
    result = cli(*args, env={"NO_COLOR": "1"})
    assert result.exit_code == 0, result.stderr
    golden(name, result.stdout)


def test_svg_and_html_save_every_frame(cli, tmp_path) -> None:
    svg, html = tmp_path / "pic.svg", tmp_path / "pic.html"
    result = cli(
        "draw",
        "conv",
        "-k",
        "3",
        "-d",
        "2",
        "--size",
        "7",
        "--steps",
        "2",
        "--svg",
        str(svg),
        "--html",
        str(html),
    )
    assert result.exit_code == 0
    root = ElementTree.parse(svg).getroot()  # well-formed XML
    assert root.tag.endswith("svg")
    text = "".join(root.itertext()).replace("\xa0", " ")
    assert "output (0, 0)" in text and "output (0, 1)" in text
    assert (
        "<html" in html.read_text()
        and "output&#160;(0,&#160;1)" in html.read_text()
        or ("output (0, 1)" in html.read_text())
    )


def test_every_kind_of_the_documents_draws(cli) -> None:
    for args in (
        ["conv"],
        ["dw"],
        ["dilated"],
        ["transpose"],
        ["tconv"],
        ["conv", "-g", "2", "--in", "4", "--out", "4"],
    ):
        result = cli("draw", *args, "--no-color")
        assert result.exit_code == 0, (args, result.stderr)
        assert "legend:" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["draw", "conv", "--steps", "0"], "error: --steps 0 must be a positive integer\n"),
        (["draw", "conv", "--at", "1"], "error: --at '1' must be 2 indices, like 0,0\n"),
        (
            ["draw", "conv", "--size", "5", "--at", "9,9"],
            "error: --at 9,9: no such position in this layer\n",
        ),
        (
            ["draw", "conv", "-k", "9", "--size", "5"],
            "error: --kernel 9 with --dilation 1 spans 9, more than the padded input 5 (--size 5 "
            "+ padding 0) (spatial dimension 1)\n",
        ),
    ],
)
def test_draw_errors(cli, args: list[str], message: str) -> None:
    result = cli(*args)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", message)


def test_3d_draws_a_slice(cli) -> None:
    result = cli("draw", "conv", "--dims", "3", "--size", "5", "--no-color")
    assert result.exit_code == 0 and "slice" in result.stdout


def test_legend_characters_are_distinct() -> None:
    from convcalc.core.picture import LEGEND

    assert len(set(LEGEND)) == len(LEGEND) and all(len(c) == 1 for c in LEGEND)
