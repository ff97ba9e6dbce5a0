"""`convcalc solve` and the warnings: answers checked against torch (Hypothesis over random
sizes), and each warning with a case that triggers it and one that does not."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from convcalc.core.solve import Question, solve


def answers(cli, *args: str) -> list[dict]:
    result = cli("solve", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["answers"]


def test_padding_for_a_stride_2_halving(cli) -> None:
    # floor((224 + 2p - 3)/2) + 1 = 112 only for p = 1 (p = 0: 111, p = 2: 113)
    (answer,) = answers(cli, "--size", "224", "--target", "112", "-k", "3", "-s", "2")
    assert (answer["padding"], answer["output_size"], answer["verified"]) == (1, 112, True)
    assert answer["layer"] == "Conv2d(k=3, s=2, p=1)"


def test_padding_that_keeps_the_size_with_dilation(cli) -> None:
    # seed 000's question: a dilated conv keeps the size with padding d(k-1)/2 at stride 1
    result = answers(cli, "--size", "224", "--target", "224", "-k", "3", "-d", "2")
    assert [(a["padding"], a["receptive_field"]) for a in result] == [(2, 5)]


def test_transposed_padding_and_output_padding_for_exactly_2x(cli) -> None:
    result = answers(cli, "--size", "112", "--target", "224", "-k", "3", "-s", "2", "--transpose")
    # (112-1)·2 - 2p + 2 + op + 1 = 224: p = 0 needs op = -1; p = 1 needs op = 1
    assert [(a["padding"], a["output_padding"]) for a in result] == [(1, 1)]
    result = answers(cli, "--size", "112", "--target", "224", "-k", "4", "-s", "2", "--transpose")
    assert [(a["padding"], a["output_padding"]) for a in result] == [(1, 0)]


def test_inverse_of_a_conv(cli) -> None:
    result = cli("solve", "--size", "224", "--inverse-of", "k3 s2 p1", "--json")
    data = json.loads(result.stdout)
    info = data["inverse_of"]["axes"][0]
    assert info["output_size"] == 112 and info["inputs_with_that_output"] == [223, 224]
    assert [(a["padding"], a["output_padding"], a["output_size"]) for a in data["answers"]] == [
        (1, 1, 224)
    ]
    table = cli("solve", "--size", "224", "--inverse-of", "k3 s2 p1").stdout
    assert "maps 224 to 112, and so does 223" in table


def test_no_answer_says_the_nearest_sizes(cli) -> None:
    result = cli("solve", "--size", "224", "--target", "100", "-k", "3", "-s", "2")
    assert result.exit_code == 1
    assert "no setting takes 224 to 100; the nearest sizes reachable: 111 " in result.stdout


def test_vary_stride_lists_smallest_padding_first(cli) -> None:
    result = answers(
        cli, "--size", "224", "--target", "112", "-k", "3", "--vary", "stride", "--limit", "3"
    )
    assert [(a["padding"], a["stride"]) for a in result] == [(1, 2), (56, 3), (57, 3)]


def test_per_dimension_questions(cli) -> None:
    data = json.loads(
        cli(
            "solve", "--size", "224x100", "--target", "112x50", "-k", "3", "-s", "2", "--json"
        ).stdout
    )
    assert [axis["axis"] for axis in data["axes"]] == [0, 1]
    assert [axis["answers"][0]["padding"] for axis in data["axes"]] == [1, 1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--size", "224", "-k", "3"], "error: --target is needed (or --inverse-of)\n"),
        (
            ["--size", "224", "--target", "1", "--vary", "bogus"],
            "error: --vary 'bogus' must be padding, stride, dilation or output_padding\n",
        ),
        (["--size", "224", "--target", "0"], "error: --target 0 must be positive\n"),
        (
            ["--size", "224", "--target", "9", "--output-padding", "1"],
            "error: --output-padding applies only with --transpose\n",
        ),
    ],
)
def test_solve_errors(cli, args: list[str], message: str) -> None:
    result = cli("solve", *args)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", message)


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(1, 300),
    target=st.integers(1, 300),
    kernel=st.integers(1, 7),
    stride=st.integers(1, 4),
    dilation=st.integers(1, 3),
    transposed=st.booleans(),
)
def test_every_answer_really_gives_the_target(
    size, target, kernel, stride, dilation, transposed
) -> None:
    question = Question(
        size, target, kernel, stride, None, dilation, transposed, None if transposed else 0
    )
    found, nearest = solve(question, limit=5)
    for answer in found:
        cls = torch.nn.ConvTranspose1d if transposed else torch.nn.Conv1d
        kwargs = dict(stride=stride, padding=answer.padding, dilation=dilation)
        if transposed:
            kwargs["output_padding"] = answer.output_padding
        out = cls(1, 1, kernel, **kwargs)(torch.zeros(1, 1, size))
        assert out.shape[-1] == target
    if not found:  # then no padding in a generous range reaches it either
        assert nearest and all(a.output != target for a in nearest)


# --- warnings ------------------------------------------------------------------------------------

WARNINGS = [
    # (name, args that trigger it, args that do not, a phrase of the warning)
    (
        "dropped rows",
        ["conv", "--in", "3", "--out", "4", "-s", "2", "--size", "224"],
        ["conv", "--in", "3", "--out", "4", "-s", "2", "-p", "1", "--size", "224"],
        "stride 2 leaves the last 1 input row and column of 224x224 unused",
    ),
    (
        # a 1x1 conv of stride 2 on 56 reads positions 0, 2, ..., 54: 28 of 56 never read (the
        # old warning said "the last 1"); on 55 it said nothing, and 27 are never read
        "rows between windows",
        ["conv", "--in", "4", "--out", "4", "-k", "1", "-s", "2", "--size", "56"],
        ["conv", "--in", "4", "--out", "4", "-k", "2", "-s", "2", "--size", "56"],
        "stride 2, wider than the kernel (1), never reads 28 of the 56 input rows and columns: "
        "no window covers them",
    ),
    (
        "rows between windows, none past the last",
        ["conv", "--in", "4", "--out", "4", "-k", "1", "-s", "2", "--size", "55"],
        ["conv", "--in", "4", "--out", "4", "-k", "1", "-s", "1", "--size", "55"],
        "never reads 27 of the 55 input rows and columns",
    ),
    (
        # k2 s3 on 9: windows [0,1], [3,4], [6,7]; 2, 5 and 8 never read
        "rows between wider windows",
        ["conv", "--in", "4", "--out", "4", "-k", "2", "-s", "3", "--size", "9"],
        ["conv", "--in", "4", "--out", "4", "-k", "3", "-s", "3", "--size", "9"],
        "stride 3, wider than the kernel (2), never reads 3 of the 9 input rows and columns",
    ),
    (
        "asymmetric same",
        ["conv", "--in", "2", "--out", "2", "-k", "4", "-p", "same", "--size", "10"],
        ["conv", "--in", "2", "--out", "2", "-k", "3", "-p", "same", "--size", "10"],
        "torch pads 1 before and 2 after",
    ),
    (
        "not depthwise",
        ["conv", "--in", "64", "--out", "32", "-g", "32", "--size", "8"],
        ["conv", "--in", "32", "--out", "64", "-g", "32", "--size", "8"],
        "not a depthwise layer (its depth multiplier would be 32/64, not an integer)",
    ),
    (
        "1x1 with padding",
        ["conv", "--in", "2", "--out", "2", "-k", "1", "-p", "1", "--size", "8"],
        ["conv", "--in", "2", "--out", "2", "-k", "1", "--size", "8"],
        "a 1x1 convolution with padding 1 only adds a border of bias values",
    ),
    (
        "ambiguous transposed",
        [
            "conv",
            "--in",
            "2",
            "--out",
            "2",
            "-k",
            "3",
            "-s",
            "2",
            "-p",
            "1",
            "--transpose",
            "--size",
            "8",
        ],
        ["conv", "--in", "2", "--out", "2", "-k", "3", "-p", "1", "--transpose", "--size", "8"],
        "output padding picks one: 15 (--output-padding 0), 16",
    ),
    (
        "field larger than the input",
        ["stack", "conv k7 s2 p3; conv k7 s2 p3; conv k7 p3", "--input", "1,1,32,32"],
        ["stack", "conv k3; conv k3", "--input", "1,1,32,32"],
        "is larger than the input (32)",
    ),
]


@pytest.mark.parametrize("name, triggers, quiet, phrase", WARNINGS, ids=[w[0] for w in WARNINGS])
def test_warning(cli, name: str, triggers: list[str], quiet: list[str], phrase: str) -> None:
    loud = cli(*triggers, "--formula-only")
    assert loud.exit_code == 0
    assert phrase in loud.stderr and loud.stderr.startswith("warning: ")
    as_json = json.loads(cli(*triggers, "--formula-only", "--json").stdout)
    assert any(phrase in w for w in as_json["warnings"])
    assert cli(*triggers, "--formula-only", "--json").stderr == ""  # JSON carries them
    calm = cli(*quiet, "--formula-only")
    assert calm.exit_code == 0 and calm.stderr == "", calm.stderr


# --- the closed form against a brute force -------------------------------------------------------


def brute_force(q: Question, reach: int, p_reach: int) -> list[tuple[int, int, int, int]]:
    """Every (padding, stride, dilation, output padding) that gives the target with a searched
    stride or dilation below ``reach`` and a searched padding below ``p_reach``, straight from
    the size formulas (output padding: every value torch allows, below max(s, d)), sorted."""
    from convcalc.core.formulas import conv_output_length, conv_transpose_output_length

    found = []
    for s in [q.stride] if q.stride is not None else range(1, reach):
        for d in [q.dilation] if q.dilation is not None else range(1, reach):
            for p in [q.padding] if q.padding is not None else range(0, p_reach):
                if q.transposed:
                    ops = [q.output_padding] if q.output_padding is not None else range(reach)
                    for op in ops:
                        if op < max(s, d) and (
                            conv_transpose_output_length(q.size, q.kernel, s, p, d, op) == q.target
                        ):
                            found.append((p, s, d, op))
                elif q.size + 2 * p >= d * (q.kernel - 1) + 1 and (
                    conv_output_length(q.size, q.kernel, s, p, p, d) == q.target
                ):
                    found.append((p, s, d, 0))
    return sorted(found)


@st.composite
def questions(draw) -> Question:
    transposed = draw(st.booleans())
    vary = draw(st.sampled_from(["", "s", "d", "sd"]))
    fixed_op = transposed and draw(st.booleans())
    return Question(
        size=draw(st.integers(1, 30)),
        target=draw(st.integers(1, 40)),
        kernel=draw(st.integers(1, 5)),
        stride=None if "s" in vary else draw(st.integers(1, 4)),
        padding=draw(st.integers(0, 6)) if draw(st.booleans()) else None,
        dilation=None if "d" in vary else draw(st.integers(1, 3)),
        transposed=transposed,
        output_padding=(draw(st.integers(0, 3)) if fixed_op else None) if transposed else 0,
    )


REACH = 12


@settings(max_examples=300, deadline=None)
@given(q=questions(), limit=st.integers(1, 5))
def test_closed_form_equals_brute_force(q: Question, limit: int) -> None:
    # The brute force sees strides and dilations below REACH. Both size formulas give a lower
    # bound on 2p that grows with the stride and the dilation (conv: 2p >= (t-1)s + d(k-1) +
    # 1 - n; transposed: 2p = (n-1)s + d(k-1) + 1 - t + op >= that with op = 0), so an answer
    # with a searched stride or dilation >= REACH has a padding >= ceil(far / 2) below; the
    # answers with a padding below `sure` are all in the brute force's box. Answers are listed
    # padding first, so those with a padding below `sure` are a prefix of the full order: the
    # closed form's must be exactly the brute force's first `limit` of them.
    from convcalc.core.solve import solve_question

    result = solve_question(q, limit)
    keys = [a.key for a in result.answers]
    assert keys == sorted(keys) and len(keys) <= limit
    assert all(a.output == q.target for a in result.answers)
    assert all(a.output_padding < max(a.stride, a.dilation) for a in result.answers)
    n, t, c = q.size, q.target, q.kernel - 1
    s1, d1 = q.stride or 1, q.dilation or 1
    lo2 = (
        (lambda s, d: (n - 1) * s + d * c + 1 - t)
        if q.transposed
        else (lambda s, d: (t - 1) * s + d * c + 1 - n)
    )
    fixed = q.stride is not None and q.dilation is not None
    # the brute force's own padding range: with a fixed stride and dilation every answer's
    # 2p <= (t-1)s + s - 1 + d(k-1) + 1 - n (conv) or (n-1)s + d(k-1) + max(s, d) - t
    # (transposed), both below 200 here (40*4 + 3*4 < 200, 29*4 + 3*4 + 4 < 200)
    p_reach = 100 if fixed else REACH * 4
    bounds = [p_reach]
    if q.stride is None:
        bounds.append(-(-lo2(REACH, d1) // 2))
    if q.dilation is None:
        bounds.append(-(-lo2(s1, REACH) // 2))
    sure = min(bounds)
    brute = brute_force(q, REACH, p_reach)
    complete = [k for k in brute if k[0] < sure]
    assert [k for k in keys if k[0] < sure] == complete[:limit]
    if brute:
        assert keys, "the closed form missed an answer the brute force found"
    else:
        assert not [k for k in keys if max(k[1:3]) < REACH and k[0] < p_reach]
    total = result.search.total
    if not keys:
        assert total == 0
    elif fixed:  # nothing but the padding (and output padding) searched: all in the box
        assert total == len(brute)
    elif q.padding is None:
        assert total is None  # a larger stride or dilation with more padding still works


# --- issue items 15, 19 and 20 -------------------------------------------------------------------


@pytest.mark.parametrize(
    "conv, message",
    [
        ("k3 s0", "error: --inverse-of 'k3 s0': stride (s) 0 must be positive\n"),
        ("k0", "error: --inverse-of 'k0': kernel (k) 0 must be positive\n"),
        ("k3 d0", "error: --inverse-of 'k3 d0': dilation (d) 0 must be positive\n"),
    ],
)
def test_inverse_of_refuses_zero(cli, conv: str, message: str) -> None:
    result = cli("solve", "--size", "224", "--inverse-of", conv)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", message)


def test_a_large_dilation_is_found(cli) -> None:
    # 1024 + 2p - 2d - 1 + 1 = 512 at stride 1: d = 256 + p; the smallest padding is p = 0,
    # d = 256 (beyond the old cap of 64)
    data = json.loads(
        cli("solve", "--size", "1024", "--target", "512", "--vary", "dilation", "--json").stdout
    )
    assert [(a["padding"], a["dilation"]) for a in data["answers"][:3]] == [
        (0, 256),
        (1, 257),
        (2, 258),
    ]
    assert data["searched"] == {"padding": [0, None], "stride": [1, 1], "dilation": [1, None]}
    assert data["total"] is None and "infinitely many settings" in data["notes"][0]


def test_a_fixed_padding_counts_every_answer(cli) -> None:
    # p = 0, k3, d1: floor((224 - 3)/s) + 1 = 112 <=> 111s <= 221 < 112s: s = 1 gives 222,
    # s = 2 gives 111: no stride
    data = json.loads(
        cli(
            "solve", "--size", "224", "--target", "112", "-p", "0", "--vary", "stride", "--json"
        ).stdout
    )
    assert data["total"] == 0 and data["solved"] is False
    # p = 1, stride and dilation searched: 111s + 2d - 223 <= 2 <= 112s + 2d - 224, i.e.
    # 111s + 2d <= 225 <= 112s + 2d -> s = 1: 2d = 114, d = 57; s = 2: 2d in [1, 3], d = 1;
    # s >= 3: 111s > 225: none
    data = json.loads(
        cli(
            "solve",
            "--size",
            "224",
            "--target",
            "112",
            "-p",
            "1",
            "--vary",
            "stride,dilation",
            "--json",
        ).stdout
    )
    assert data["total"] == 2 and [(a["stride"], a["dilation"]) for a in data["answers"]] == [
        (1, 57),
        (2, 1),
    ]


def test_stride_and_dilation_at_size_20000_in_well_under_a_second(cli) -> None:
    import time

    from convcalc.core.solve import run_solve

    start = time.perf_counter()
    solution = run_solve(
        size="20000",
        target="10000",
        kernel="3",
        stride=None,
        padding=None,
        dilation=None,
        output_padding=None,
        vary="stride,dilation",
        transpose=False,
        inverse_of=None,
        dims=2,
        limit=10,
    )
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, elapsed  # ~0.01 s here: the bound is 10x-100x the time expected
    # p = 0: s = 1 needs 2d = 10000 (d = 5000); s = 2 needs 2 <= 2d... 2d in [0, 1]: none
    assert (solution.answers[0][0].padding, solution.answers[0][0].dilation) == (0, 5000)
    data = json.loads(
        cli(
            "solve",
            "--size",
            "20000",
            "--target",
            "10000",
            "-k",
            "3",
            "--vary",
            "stride,dilation",
            "--json",
        ).stdout
    )
    assert data["solved"] and data["agree"] and len(data["answers"]) == 10


def test_padding_wider_than_the_kernel_warns(cli) -> None:
    # 16 + 2p - 3 + 1 = 112 -> p = 49 >= span 3; windows [i, i+2] before position 49:
    # i <= 46, 47 outputs; after 49 + 15 = 64: i > 64, i.e. 65..111, 47 outputs
    result = cli("solve", "--size", "16", "--target", "112", "-k", "3")
    assert result.exit_code == 0
    assert result.stderr.startswith("warning: the setting listed pads at least the kernel span")
    assert "its first 47 and last 47 outputs see only zero padding" in result.stderr
    assert "a transposed conv does it without" in result.stderr
    data = json.loads(cli("solve", "--size", "16", "--target", "112", "-k", "3", "--json").stdout)
    assert any("pads at least the kernel span" in w for w in data["warnings"])
    quiet = cli("solve", "--size", "224", "--target", "112", "-k", "3", "-s", "2")
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_no_symmetric_padding_names_same(cli) -> None:
    # k4: 224 + 2p - 4 + 1 = 224 -> 2p = 3: none; torch's 'same' pads 3 as 1 before, 2 after
    result = cli("solve", "--size", "224", "--target", "224", "-k", "4")
    assert result.exit_code == 1
    assert "padding='same' keeps it: Conv2d(k=4, padding='same') pads 1 before and 2 after" in (
        result.stdout.replace("\n", " ")
    )
    odd = cli("solve", "--size", "224", "--target", "225", "-k", "4")  # not the same size
    assert odd.exit_code == 0 and "same" not in odd.stdout


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 60), st.integers(1, 4), st.integers(2, 9), st.integers(0, 6), st.integers(0, 6)
)
def test_positions_never_read_by_a_stride_wider_than_the_kernel(
    n: int, k: int, s: int, left: int, right: int
) -> None:
    # the closed form against the set of real positions the windows read, listed one by one
    from convcalc.kinds.base import _real_reads

    padded = n + left + right
    if s <= k or padded < k:
        return
    out = (padded - k) // s + 1
    read = {o * s + j - left for o in range(out) for j in range(k)} & set(range(n))
    assert _real_reads(n, k, s, left, out) == len(read)
