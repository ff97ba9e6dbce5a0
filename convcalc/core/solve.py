"""``convcalc solve``: from the sizes a user needs to the padding (and, where asked, stride,
dilation or output padding) that gives them. Pure search over the size formulas; every answer is
then checked by building the real layer (convcalc.measure) before it is printed."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from convcalc._version import __version__
from convcalc.core.formulas import (
    conv_output_length,
    conv_receptive_length,
    conv_transpose_output_length,
    conv_transpose_receptive_length,
)
from convcalc.errors import SpecError

VARIABLES = ("padding", "stride", "dilation", "output_padding")
#: searched strides and dilations go up to this (sizes beyond it make no sense of them)
SEARCH_LIMIT = 64


@dataclass(frozen=True)
class Question:
    """One spatial dimension's question: from ``size`` to ``target``."""

    size: int
    target: int
    kernel: int
    stride: int | None  # None: searched
    padding: int | None
    dilation: int | None
    transposed: bool = False
    output_padding: int | None = 0


@dataclass(frozen=True)
class Answer:
    kernel: int
    stride: int
    padding: int
    dilation: int
    output_padding: int
    output: int
    receptive_field: int
    verified: bool | None = None  # the real layer gave ``output`` (None: not checked yet)

    @property
    def key(self) -> tuple[int, ...]:
        return (self.padding, self.stride, self.dilation, self.output_padding)

    def layer(self, transposed: bool, dims: int) -> str:
        name = f"{'ConvTranspose' if transposed else 'Conv'}{dims}d"
        parts = [f"k={self.kernel}", f"s={self.stride}", f"p={self.padding}"]
        if self.dilation != 1:
            parts.append(f"d={self.dilation}")
        if transposed and self.output_padding:
            parts.append(f"op={self.output_padding}")
        return f"{name}({', '.join(parts)})"

    def to_dict(self, transposed: bool, dims: int) -> dict[str, Any]:
        data = {
            "padding": self.padding,
            "stride": self.stride,
            "dilation": self.dilation,
            "kernel": self.kernel,
            "output_size": self.output,
            "receptive_field": self.receptive_field,
            "layer": self.layer(transposed, dims),
            "verified": self.verified,
        }
        if transposed:
            data["output_padding"] = self.output_padding
        return data


def _output(q: Question, s: int, p: int, d: int, op: int) -> int:
    if q.transposed:
        return conv_transpose_output_length(q.size, q.kernel, s, p, d, op)
    return conv_output_length(q.size, q.kernel, s, p, p, d)


def _candidates(q: Question) -> Iterable[tuple[int, int, int, int]]:
    """Every (stride, padding, dilation, output padding) worth trying, fixed ones as given."""
    n, target, k = q.size, q.target, q.kernel
    reach = min(max(n, target) + 2, SEARCH_LIMIT)
    strides = [q.stride] if q.stride is not None else range(1, reach + 1)
    dilations = [q.dilation] if q.dilation is not None else range(1, max(2, reach) + 1)
    for s, d in itertools.product(strides, dilations):
        span = d * (k - 1) + 1
        if q.transposed:
            top = max(s, d)
            paddings = [q.padding] if q.padding is not None else range(0, (n - 1) * s + span + 1)
            outputs = [q.output_padding] if q.output_padding is not None else range(top)
            for p, op in itertools.product(paddings, outputs):
                if op < s or op < d:
                    yield s, p, d, op
        else:
            top = max(span, ((target - 1) * s + span - n) // 2 + s + 1)
            paddings = [q.padding] if q.padding is not None else range(0, max(top, 0) + 1)
            for p in paddings:
                if n + 2 * p >= span:
                    yield s, p, d, 0


def solve(q: Question, limit: int = 10) -> tuple[list[Answer], list[Answer]]:
    """The settings that reach the target, smallest first (padding, then stride, dilation and
    output padding), and when none does, the nearest sizes reachable."""
    found: list[Answer] = []
    near: dict[int, Answer] = {}
    for s, p, d, op in _candidates(q):
        out = _output(q, s, p, d, op)
        if out < 1:
            continue
        field = (
            conv_transpose_receptive_length(q.kernel, s, d)
            if q.transposed
            else conv_receptive_length(q.kernel, d)
        )
        answer = Answer(q.kernel, s, p, d, op, out, field)
        if out == q.target:
            found.append(answer)
        elif out not in near or answer.key < near[out].key:
            near[out] = answer
    found.sort(key=lambda a: a.key)
    if found:
        return found[:limit], []
    below = [a for out, a in near.items() if out < q.target]
    above = [a for out, a in near.items() if out > q.target]
    nearest = []
    if below:
        nearest.append(max(below, key=lambda a: a.output))
    if above:
        nearest.append(min(above, key=lambda a: a.output))
    return [], nearest


@dataclass
class Solution:
    """What ``convcalc solve`` prints: per distinct spatial dimension, its answers."""

    dims: int
    transposed: bool
    questions: list[Question]
    answers: list[list[Answer]]
    nearest: list[list[Answer]]
    inverse_of: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def solved(self) -> bool:
        return all(self.answers)

    @property
    def same_axes(self) -> bool:
        """Every spatial dimension asks the same question (the usual case): answer it once."""
        return len(set(self.questions)) == 1

    @property
    def agree(self) -> bool:
        """Every printed answer gave, on the real layer, the size promised."""
        return all(a.verified for answers in self.answers for a in answers)

    @property
    def warnings(self) -> tuple[str, ...]:
        return ()

    def to_dict(self) -> dict[str, Any]:
        axes = []
        for axis, (q, answers, nearest) in enumerate(
            zip(self.questions, self.answers, self.nearest)
        ):
            axes.append(
                {
                    "axis": "all" if self.same_axes else axis,
                    "size": q.size,
                    "target": q.target,
                    "answers": [a.to_dict(self.transposed, self.dims) for a in answers],
                    "nearest": [a.to_dict(self.transposed, self.dims) for a in nearest],
                }
            )
            if self.same_axes:
                break
        data: dict[str, Any] = {
            "convcalc_version": __version__,
            "command": "solve",
            "dims": self.dims,
            "transposed": self.transposed,
            "axes": axes,
            "answers": axes[0]["answers"] if len(axes) == 1 else [],
            "agree": self.agree,
            "solved": self.solved,
            "notes": list(self.notes),
        }
        if self.inverse_of is not None:
            data["inverse_of"] = self.inverse_of
        return data


def inverse_question(conv: dict[str, Any], size: int) -> tuple[Question, dict[str, Any]]:
    """The transposed conv that maps a conv's output back to its input ``size``: same kernel,
    stride, padding and dilation; the output padding is what is searched."""
    k = int(conv.get("kernel", 3))
    s = int(conv.get("stride", 1))
    p = int(conv.get("padding", 0))
    d = int(conv.get("dilation", 1))
    span = d * (k - 1) + 1
    if size + 2 * p < span:
        raise SpecError("inverse_of", f"--inverse-of: the conv's kernel does not fit --size {size}")
    out = conv_output_length(size, k, s, p, p, d)
    same = [
        n
        for n in range(max(1, size - s - 1), size + s + 2)
        if n + 2 * p >= span and conv_output_length(n, k, s, p, p, d) == out
    ]
    info = {
        "kernel": k,
        "stride": s,
        "padding": p,
        "dilation": d,
        "input_size": size,
        "output_size": out,
        "inputs_with_that_output": same,
    }
    return Question(out, size, k, s, p, d, transposed=True, output_padding=None), info


def _values(text: str | None, dims: int, name: str) -> tuple[int, ...] | None:
    from convcalc.core.spec import Labels, parse_ints

    if text is None:
        return None
    labels = Labels({name: f"--{name.replace('_', '-')}"})
    values = parse_ints(text, dims, name, labels)
    if min(values) < (0 if name in ("padding", "output_padding") else 1):
        raise SpecError(
            name,
            f"--{name.replace('_', '-')} {text} must be "
            f"{'non-negative' if name in ('padding', 'output_padding') else 'positive'}",
        )
    return values


def run_solve(
    *,
    size: str,
    target: str,
    kernel: str,
    stride: str | None,
    padding: str | None,
    dilation: str | None,
    output_padding: str | None,
    vary: str,
    transpose: bool,
    inverse_of: str | None,
    dims: int,
    limit: int,
) -> Solution:
    """Parse the question, per spatial dimension, and solve it."""
    if dims not in (1, 2, 3):
        raise SpecError("dims", f"--dims {dims} must be 1, 2 or 3")
    if limit < 1:
        raise SpecError("limit", f"--limit {limit} must be a positive integer")
    varied = {v.strip().lower() for v in vary.split(",") if v.strip()}
    unknown = varied - set(VARIABLES)
    if unknown:
        raise SpecError(
            "vary",
            f"--vary {sorted(unknown)[0]!r} must be padding, stride, dilation or output_padding",
        )
    sizes = _values(size, dims, "size")
    assert sizes is not None
    if inverse_of is not None:
        from convcalc.core.grammar import parse_inline

        if target:
            raise SpecError(
                "target",
                "--target does not go with --inverse-of: the target is --size, the conv's input",
            )
        text = inverse_of.strip()
        if not text:
            raise SpecError("inverse_of", "--inverse-of needs a conv, like 'k3 s2 p1'")
        if (
            not text.split()[0][0].isdigit()
            and text.split()[0].lower() != "conv"
            and not (re.match(r"^(k|s|p|d)\d", text.split()[0], re.IGNORECASE))
        ):
            raise SpecError(
                "inverse_of",
                f"--inverse-of {inverse_of!r}: one conv, like "
                "'k3 s2 p1' (a transposed conv is what solve finds)",
            )
        if not text.lower().startswith("conv"):
            text = f"conv {text}"
        try:
            layers = parse_inline(text)
        except SpecError as error:
            raise SpecError("inverse_of", f"--inverse-of {inverse_of!r}: {error}") from None
        unknown = set(layers[0]) - {"op", "kernel", "stride", "padding", "dilation"}
        if len(layers) != 1 or layers[0]["op"] != "conv" or unknown:
            raise SpecError(
                "inverse_of",
                f"--inverse-of {inverse_of!r}: one conv with k, s, p and d only, like 'k3 s2 p1'",
            )
        if any(
            isinstance(layers[0].get(key), str)
            for key in ("kernel", "stride", "padding", "dilation")
        ):
            raise SpecError(
                "inverse_of",
                f"--inverse-of {inverse_of!r}: one number each for "
                "k, s, p and d (the conv's arithmetic is solved per dimension)",
            )
        questions, infos = zip(*(inverse_question(layers[0], n) for n in sizes))
        solution = Solution(
            dims,
            True,
            list(questions),
            [],
            [],
            inverse_of={"conv": inverse_of, "axes": list(infos)},
        )
    else:
        if not target:
            raise SpecError("target", "--target is needed (or --inverse-of)")
        targets = _values(target, dims, "target")
        assert targets is not None
        kernels = _values(kernel, dims, "kernel")
        strides = _values(stride, dims, "stride")
        paddings = _values(padding, dims, "padding")
        dilations = _values(dilation, dims, "dilation")
        out_pads = _values(output_padding, dims, "output_padding")
        assert kernels is not None
        if min(targets) < 1:
            raise SpecError("target", f"--target {target} must be positive")
        if out_pads is not None and not transpose:
            raise SpecError("output_padding", "--output-padding applies only with --transpose")
        questions = []
        for axis in range(dims):
            questions.append(
                Question(
                    size=sizes[axis],
                    target=targets[axis],
                    kernel=kernels[axis],
                    stride=strides[axis] if strides else (None if "stride" in varied else 1),
                    padding=paddings[axis] if paddings else None,
                    dilation=dilations[axis]
                    if dilations
                    else (None if "dilation" in varied else 1),
                    transposed=transpose,
                    output_padding=out_pads[axis] if out_pads else (None if transpose else 0),
                )
            )
        solution = Solution(dims, transpose, questions, [], [])
    cache: dict[Question, tuple[list[Answer], list[Answer]]] = {}
    for q in solution.questions:
        if q not in cache:
            cache[q] = solve(q, limit)
        answers, nearest = cache[q]
        solution.answers.append(answers)
        solution.nearest.append(nearest)
    if not solution.solved:
        solution.notes.append(_none_found(solution))
    return solution


def _none_found(solution: Solution) -> str:
    parts = []
    for axis, (q, answers, nearest) in enumerate(
        zip(solution.questions, solution.answers, solution.nearest)
    ):
        if answers or (solution.same_axes and axis > 0):
            continue
        close = (
            " and ".join(
                f"{a.output} ({a.layer(solution.transposed, solution.dims)})" for a in nearest
            )
            or "none"
        )
        where = (
            f" (spatial dimension {axis + 1})"
            if solution.dims > 1 and not solution.same_axes
            else ""
        )
        parts.append(
            f"no setting takes {q.size} to {q.target}{where}; the nearest sizes reachable: {close}"
        )
    return "; ".join(parts)
