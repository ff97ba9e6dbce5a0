"""``convcalc solve``: from the sizes a user needs to the padding (and, where asked, stride,
dilation or output padding) that gives them. Pure search over the size formulas; every answer is
then checked by building the real layer (convcalc.measure) before it is printed."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import field
from typing import Any

from convcalc._dataclass import dataclass
from convcalc._version import __version__
from convcalc.core.formulas import (
    conv_output_length,
    conv_receptive_length,
    conv_transpose_output_length,
    conv_transpose_receptive_length,
)
from convcalc.errors import SpecError

VARIABLES = ("padding", "stride", "dilation", "output_padding")
#: how far "every stride" and "every dilation" is taken when a binary search needs an end: far
#: beyond any size torch accepts (2**31 - 1), so "no answer below it" means no answer at all
_FAR = 2**62
#: the nearest sizes (asked only when nothing reaches the target) are sought among the first
#: this many values of a searched stride or dilation
NEAREST_WINDOW = 64
#: at most this many strides (and, per stride, dilations) are stepped through for one question;
#: the closed form makes this far more than any real question needs
STEP_LIMIT = 200_000


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

    @property
    def span(self) -> int:
        """The dilated kernel's extent, ``d(k-1) + 1``."""
        return self.dilation * (self.kernel - 1) + 1

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


@dataclass(frozen=True)
class Search:
    """What the closed-form search covered for one question, and how many settings it found.

    ``ranges``: per variable (padding, stride, dilation and, for a transposed conv, output
    padding) the lowest and highest value searched; ``None`` as the highest: no upper bound
    (every value, solved in closed form; output padding is further bounded by torch's rule
    ``output_padding < max(stride, dilation)``). ``total``: how many settings reach the target,
    ``None`` when infinitely many do. ``total_exact`` is False when counting stopped after
    ``STEP_LIMIT`` strides: ``total`` is then a lower bound."""

    ranges: tuple[tuple[str, int, int | None], ...]
    total: int | None
    total_exact: bool = True

    @property
    def varied(self) -> tuple[str, ...]:
        """The variables searched over more than one value (padding included)."""
        return tuple(name for name, low, high in self.ranges if high != low)

    def to_dict(self) -> dict[str, Any]:
        return {name: [low, high] for name, low, high in self.ranges}


@dataclass(frozen=True)
class Result:
    """``solve_question``'s answer: the first answers in order, the nearest sizes when none
    reaches the target, and what was searched."""

    answers: list[Answer]
    nearest: list[Answer]
    search: Search


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


class _Arithmetic:
    """The size formula of one question solved for the padding, at a given stride ``s`` and
    dilation ``d``. Everything here is closed form (no loop over paddings)."""

    def __init__(self, q: Question, target: int | None = None) -> None:
        self.q = q
        self.n = q.size
        self.t = q.target if target is None else target
        self.c = q.kernel - 1
        self.p_fixed = q.padding
        self.op_fixed = q.output_padding if q.transposed else 0

    def lo2(self, s: int, d: int) -> int:
        """A lower bound on 2p over every answer at (s, d); nondecreasing in s and d.

        Conv: out = floor((n + 2p - d(k-1) - 1)/s) + 1 = t  <=>  L <= 2p <= L + s - 1 with
        L = (t-1)s + d(k-1) + 1 - n. Transposed: 2p = B + op with B = (n-1)s + d(k-1) + 1 - t."""
        if self.q.transposed:
            base = (self.n - 1) * s + d * self.c + 1 - self.t
            return base + (self.op_fixed if self.op_fixed is not None else 0)
        return (self.t - 1) * s + d * self.c + 1 - self.n

    def hi2(self, s: int, d: int) -> int:
        """An upper bound on 2p over every answer at (s, d) (-1: none at all); nondecreasing in
        s and d. Conv: L + s - 1. Transposed: B + op, op below max(s, d) (torch's rule)."""
        if self.q.transposed:
            base = (self.n - 1) * s + d * self.c + 1 - self.t
            top = max(s, d)
            if self.op_fixed is None:
                return base + top - 1
            return base + self.op_fixed if self.op_fixed < top else -1
        return self.lo2(s, d) + s - 1

    def paddings(self, s: int, d: int) -> tuple[int, int] | None:
        """The paddings (lowest, highest: every one between works) that give the target at
        (s, d), or None. For a transposed conv the output padding is then ``2p - B``."""
        low2, high2 = self.lo2(s, d), self.hi2(s, d)
        if self.q.transposed and self.op_fixed is not None:
            if high2 < 0 or low2 % 2:  # 2p = B + op exactly
                return None
            low, high = low2 // 2, low2 // 2
        elif not self.q.transposed and s == 1 or self.q.transposed and max(s, d) == 1:
            if low2 % 2:  # 2p = L (or B) exactly: it must be even
                return None
            low, high = low2 // 2, high2 // 2
        else:
            low, high = _ceil_div(low2, 2), high2 // 2
        low = max(low, 0)
        if self.p_fixed is not None:
            low, high = max(low, self.p_fixed), min(high, self.p_fixed)
        return (low, high) if low <= high else None

    def answer(self, s: int, p: int, d: int) -> Answer:
        q = self.q
        if q.transposed:
            op = 2 * p - ((self.n - 1) * s + d * self.c + 1 - self.t)
            out = conv_transpose_output_length(self.n, q.kernel, s, p, d, op)
            field_ = conv_transpose_receptive_length(q.kernel, s, d)
        else:
            op = 0
            out = conv_output_length(self.n, q.kernel, s, p, p, d)
            field_ = conv_receptive_length(q.kernel, d)
        return Answer(q.kernel, s, p, d, op, out, field_)

    # --- ranges of stride and dilation -----------------------------------------------------

    @property
    def need2(self) -> int:
        """2p is at least this: 0, or twice the fixed padding."""
        return 2 * (self.p_fixed or 0)

    def feasible(self, s: int, d: int) -> bool:
        """Parity aside, can (s, d) have an answer? hi2 >= need and (fixed p) lo2 <= 2p."""
        if self.hi2(s, d) < self.need2:
            return False
        return self.p_fixed is None or self.lo2(s, d) <= 2 * self.p_fixed


def _first(predicate: Callable[[int], bool], low: int) -> int | None:
    """The smallest x >= low with predicate(x), predicate monotone (False then True); None if
    it holds nowhere below _FAR."""
    if predicate(low):
        return low
    if not predicate(_FAR):
        return None
    bad, good = low, _FAR
    while good - bad > 1:
        mid = (bad + good) // 2
        if predicate(mid):
            good = mid
        else:
            bad = mid
    return good


def _last(predicate: Callable[[int], bool], low: int) -> int | None:
    """The largest x >= low with predicate(x), predicate monotone (True then False); None if it
    still holds at _FAR (no upper bound). Call only when predicate(low) holds."""
    if predicate(_FAR):
        return None
    good, bad = low, _FAR
    while bad - good > 1:
        mid = (good + bad) // 2
        if predicate(mid):
            good = mid
        else:
            bad = mid
    return good


class _Ranges:
    """For a question, the strides worth stepping through and, per stride, the dilations:
    beyond these bounds no padding (>= 0, or the fixed one) reaches the target."""

    def __init__(self, arith: _Arithmetic) -> None:
        q = arith.q
        self.a = arith
        self.d_min = q.dilation if q.dilation is not None else 1
        d_top = q.dilation if q.dilation is not None else _FAR
        need = arith.need2
        if q.stride is not None:
            self.s_low: int | None = q.stride if arith.hi2(q.stride, d_top) >= need else None
            self.s_high: int | None = q.stride
        else:
            self.s_low = _first(lambda s: arith.hi2(s, d_top) >= need, 1)
            self.s_high = None
            if arith.p_fixed is not None and self.s_low is not None:
                p2 = 2 * arith.p_fixed
                if arith.lo2(self.s_low, self.d_min) > p2:
                    self.s_low = None
                else:
                    self.s_high = _last(lambda s: arith.lo2(s, self.d_min) <= p2, self.s_low)

    def dilations(self, s: int) -> tuple[int, int | None] | None:
        """(first, last or None: no bound) dilations that may answer at stride s."""
        q, arith = self.a.q, self.a
        need = arith.need2
        if q.dilation is not None:
            return (q.dilation, q.dilation) if arith.feasible(s, q.dilation) else None
        low = _first(lambda d: arith.hi2(s, d) >= need, 1)
        if low is None:
            return None
        if arith.p_fixed is None:
            return low, None
        p2 = 2 * arith.p_fixed
        if arith.lo2(s, low) > p2:
            return None
        return low, _last(lambda d: arith.lo2(s, d) <= p2, low)

    def p_floor(self, s: int, d: int) -> int:
        """No answer at stride >= s (dilation >= d) has a padding below this."""
        return max(0, _ceil_div(self.a.lo2(s, d), 2), self.a.p_fixed or 0)


def _too_many(q: Question) -> SpecError:
    return SpecError(
        "vary",
        f"--vary: more than {STEP_LIMIT:,} strides or dilations to step through for "
        f"{q.size} -> {q.target}; fix one of them (-s or -d)",
    )


def _first_answers(ranges: _Ranges, limit: int) -> list[tuple[int, int, int]]:
    """The ``limit`` smallest (padding, stride, dilation) that reach the target, in that order,
    over every stride and dilation (none capped). Strides are stepped from the first that can
    answer; each stride's dilations from the first that can; both stop once no later one can
    beat the limit-th answer found (its padding lower bound is monotone)."""
    arith = ranges.a
    found: list[tuple[int, int, int]] = []

    def full_at(p_floor: int) -> bool:
        # a later (stride, dilation) sorts after every answer found at the same padding
        return len(found) >= limit and p_floor >= found[limit - 1][0]

    if ranges.s_low is None:
        return []
    s, empty_strides, steps = ranges.s_low, 0, 0
    while ranges.s_high is None or s <= ranges.s_high:
        if full_at(ranges.p_floor(s, ranges.d_min)):
            break
        steps += 1
        dil = ranges.dilations(s)
        produced = pruned = False
        if dil is not None:
            d, d_high = dil
            empty = 0
            while d_high is None or d <= d_high:
                if full_at(ranges.p_floor(s, d)):
                    pruned = True  # cut short: says nothing about the parity of later strides
                    break
                steps += 1
                if steps > STEP_LIMIT:
                    raise _too_many(arith.q)
                interval = arith.paddings(s, d)
                if interval is None:
                    empty += 1
                    # beyond the first feasible dilation only the parity of 2p can fail, and it
                    # repeats with period 1 or 2: three misses in a row mean none follows
                    # (a fixed output padding op also needs max(s, d) > op: only past it)
                    if d_high is None and empty >= 3 and d > (arith.op_fixed or 0):
                        break
                else:
                    empty, produced = 0, True
                    low, high = interval
                    found.extend((p, s, d) for p in range(low, min(high, low + limit - 1) + 1))
                    found.sort()
                    del found[limit:]
                d += 1
        empty_strides = 0 if produced or pruned else empty_strides + 1
        # the stride no longer matters (a transposed conv of a size-1 input, a conv to size 1:
        # the size formula's bound on 2p leaves it out) and past a fixed output padding it no
        # longer limits it either: every later stride has this one's (padding, dilation)
        # answers, sorting after them
        stride_free = arith.n == 1 if arith.q.transposed else arith.t == 1
        if stride_free and s > (arith.op_fixed or 0) and len(found) >= limit:
            break
        if (
            ranges.s_high is None
            and arith.p_fixed is None
            and empty_strides >= 3
            and s > (arith.op_fixed or 0)
        ):
            break  # the same parity argument, over strides (past a fixed output padding)
        if ranges.s_high is None and arith.p_fixed is not None and not produced:
            # a fixed padding and no last stride: the stride leaves the lower bound on 2p alone
            # (conv to 1, or a transposed conv of a size-1 input) and past s_same no longer
            # limits the upper one either (conv: U = s + d(k-1) - n >= 2p; transposed:
            # op = 2p - B < s), so every later stride answers as this one: not at all
            s_same = 2 * arith.p_fixed + arith.n + arith.t + (arith.op_fixed or 0) + 2
            if s >= s_same:
                break
        if steps > STEP_LIMIT:
            raise _too_many(arith.q)
        s += 1
    return found


def _count(ranges: _Ranges, found: bool) -> tuple[int | None, bool]:
    """How many (padding, stride, dilation) reach the target: None when infinitely many.
    Returns (total, exact). With the padding searched and a stride or dilation searched too,
    one answer means infinitely many (a larger stride or dilation with more padding works as
    well: proved in the tests' comments). With the padding fixed every (stride, dilation) in
    the ranges answers exactly once (2p is pinned, and the output padding follows from it)."""
    arith, q = ranges.a, ranges.a.q
    if not found:
        return 0, True
    if arith.p_fixed is None:
        if q.stride is None or q.dilation is None:
            return None, True
        assert q.stride is not None and q.dilation is not None
        interval = arith.paddings(q.stride, q.dilation)
        return (interval[1] - interval[0] + 1 if interval else 0), True
    if ranges.s_high is None or ranges.s_low is None:
        return None, True
    total = 0
    for steps, s in enumerate(range(ranges.s_low, ranges.s_high + 1)):
        if steps >= STEP_LIMIT:
            return total, False
        dil = ranges.dilations(s)
        if dil is None:
            continue
        low, high = dil
        if high is None:
            return None, True
        total += high - low + 1
    return total, True


def _searched(q: Question) -> tuple[tuple[str, int, int | None], ...]:
    ranges: list[tuple[str, int, int | None]] = [
        ("padding", *((q.padding, q.padding) if q.padding is not None else (0, None))),
        ("stride", *((q.stride, q.stride) if q.stride is not None else (1, None))),
        ("dilation", *((q.dilation, q.dilation) if q.dilation is not None else (1, None))),
    ]
    if q.transposed:
        op = q.output_padding
        ranges.append(("output_padding", *((op, op) if op is not None else (0, None))))
    return tuple(ranges)


def _nearest(q: Question) -> list[Answer]:
    """When nothing reaches the target: the nearest size below and the nearest above that a
    setting reaches (each with its smallest setting), among the first NEAREST_WINDOW values
    of a searched stride or dilation and every padding and output padding."""
    strides = [q.stride] if q.stride is not None else range(1, NEAREST_WINDOW + 1)
    dilations = [q.dilation] if q.dilation is not None else range(1, NEAREST_WINDOW + 1)
    best: dict[int, Answer] = {}
    for s in strides:
        for d in dilations:
            for v in _reachable_near(q, s, d):
                arith = _Arithmetic(q, target=v)
                interval = arith.paddings(s, d)
                if interval is None:
                    continue
                answer = arith.answer(s, interval[0], d)
                if answer.output not in best or answer.key < best[answer.output].key:
                    best[answer.output] = answer
    below = [a for out, a in best.items() if out < q.target]
    above = [a for out, a in best.items() if out > q.target]
    nearest = []
    if below:
        nearest.append(max(below, key=lambda a: a.output))
    if above:
        nearest.append(min(above, key=lambda a: a.output))
    return nearest


def _reachable_near(q: Question, s: int, d: int) -> list[int]:
    """Output sizes to try as the nearest below and above the target at (s, d): the reachable
    sizes form a range (every size, or every other one), so its ends and the sizes next to the
    target cover both nearest ones."""
    n, k, t = q.size, q.kernel, q.target
    span = d * (k - 1) + 1
    if q.transposed:
        top = max(s, d)
        if q.output_padding is not None and q.output_padding >= top:
            return []
        op_low = q.output_padding if q.output_padding is not None else 0
        op_high = q.output_padding if q.output_padding is not None else top - 1
        p_low = q.padding if q.padding is not None else 0
        highest = conv_transpose_output_length(n, k, s, p_low, d, op_high)
        lowest = (
            conv_transpose_output_length(n, k, s, q.padding, d, op_low)
            if q.padding is not None
            else 1
        )
    else:
        p_low = q.padding if q.padding is not None else max(0, _ceil_div(span - n, 2))
        if n + 2 * p_low < span:
            return []
        lowest = conv_output_length(n, k, s, p_low, p_low, d)
        highest = lowest if q.padding is not None else max(lowest + 1, t + 2)
    sizes = {lowest, lowest + 1, highest, highest - 1, t - 1, t - 2, t + 1, t + 2}
    return sorted(v for v in sizes if v >= 1 and lowest <= v <= highest and v != t)


def solve_question(q: Question, limit: int = 10) -> Result:
    """The settings that reach the target, smallest first (padding, then stride, dilation and
    output padding), at most ``limit`` of them, over every stride and dilation searched (no
    cap); how many exist in total; and, when none does, the nearest sizes reachable."""
    arith = _Arithmetic(q)
    ranges = _Ranges(arith)
    keys = _first_answers(ranges, limit)
    answers = [arith.answer(s, p, d) for p, s, d in keys]
    total, exact = _count(ranges, bool(keys))
    search = Search(_searched(q), total, exact)
    return Result(answers, [] if answers else _nearest(q), search)


def solve(q: Question, limit: int = 10) -> tuple[list[Answer], list[Answer]]:
    """The settings that reach the target, smallest first (padding, then stride, dilation and
    output padding), and when none does, the nearest sizes reachable."""
    result = solve_question(q, limit)
    return result.answers, result.nearest


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
    #: per spatial dimension, what was searched and how many settings reach the target
    searches: list[Search] = field(default_factory=list)
    #: absurd answers named (padding wider than the kernel span): stderr / JSON "warnings"
    warning_list: list[str] = field(default_factory=list)

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
        return tuple(self.warning_list)

    @property
    def disagreements(self) -> list[str]:
        """The answers torch did not confirm: the real layer gave another size."""
        return [
            f"torch gave another size than the formula for {a.layer(self.transposed, self.dims)}"
            for answers in self.answers
            for a in answers
            if a.verified is False
        ]

    def to_dict(self) -> dict[str, Any]:
        axes: list[dict[str, Any]] = []
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
            if axis < len(self.searches):
                search = self.searches[axis]
                axes[-1]["searched"] = search.to_dict()
                axes[-1]["total"] = search.total  # null: infinitely many
                axes[-1]["total_exact"] = search.total_exact
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
            "warnings": list(self.warnings),
        }
        if len(axes) == 1 and "searched" in axes[0]:
            data["searched"] = axes[0]["searched"]
            data["total"] = axes[0]["total"]
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
        names = {"kernel": "k", "stride": "s", "padding": "p", "dilation": "d"}
        for key, letter in names.items():
            value = layers[0].get(key)
            if value is None:
                continue
            low = 0 if key == "padding" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SpecError(
                    "inverse_of",
                    f"--inverse-of {inverse_of!r}: {key} ({letter}) {value} must be "
                    f"{'non-negative' if low == 0 else 'positive'}",
                )
            if value > 2**31 - 1:
                raise SpecError(
                    "inverse_of",
                    f"--inverse-of {inverse_of!r}: {key} ({letter}) {value} is too large "
                    "(at most 2**31 - 1)",
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
    cache: dict[Question, Result] = {}
    for q in solution.questions:
        if q not in cache:
            cache[q] = solve_question(q, limit)
        result = cache[q]
        solution.answers.append(result.answers)
        solution.nearest.append(result.nearest)
        solution.searches.append(result.search)
    if not solution.solved:
        solution.notes.append(_none_found(solution))
    solution.notes.extend(_search_notes(solution))
    solution.warning_list.extend(_padding_warnings(solution))
    return solution


def _axes(solution: Solution) -> list[tuple[str, Question, list[Answer], Search]]:
    """(where, question, answers, search) per distinct spatial dimension."""
    found = []
    for axis, (q, answers, search) in enumerate(
        zip(solution.questions, solution.answers, solution.searches)
    ):
        if solution.same_axes and axis > 0:
            break
        where = (
            f" (spatial dimension {axis + 1})"
            if solution.dims > 1 and not solution.same_axes
            else ""
        )
        found.append((where, q, answers, search))
    return found


def _search_notes(solution: Solution) -> list[str]:
    """What was searched and how many settings exist, when a stride or dilation was searched
    or more settings exist than are listed."""
    notes = []
    for where, q, answers, search in _axes(solution):
        searched_more = q.stride is None or q.dilation is None
        if not answers or (not searched_more and (search.total or 0) <= len(answers)):
            continue
        ranges = ", ".join(
            f"{name.replace('_', ' ')} {low}"
            if high == low
            else f"{name.replace('_', ' ')} {low} and up"
            if high is None
            else f"{name.replace('_', ' ')} {low} to {high}"
            for name, low, high in search.ranges
        )
        if search.total is None:
            count = "infinitely many settings"
            if searched_more and q.padding is None:
                count += " (a larger stride or dilation with more padding keeps working)"
        else:
            count = f"{'at least ' if not search.total_exact else ''}{search.total} settings"
        notes.append(
            f"searched{where} {ranges} (closed form, no cap): {count} take {q.size} to "
            f"{q.target}; listed the {len(answers)} with the smallest padding"
        )
    return notes


def _padding_warnings(solution: Solution) -> list[str]:
    """A conv answer whose padding is as wide as its kernel span or wider: its outermost
    outputs see nothing but zeros. Upsampling that way is better done by a transposed conv."""
    if solution.transposed:
        return []
    warnings = []
    for where, q, answers, _ in _axes(solution):
        wide = [a for a in answers if a.padding >= a.span]
        if not wide:
            continue
        first = wide[0]
        # output i's window covers padded positions [i*s, i*s + span - 1]; the input occupies
        # [p, p + n - 1]: windows wholly before it, and wholly after it
        before = -(-(first.padding - first.span + 1) // first.stride)
        after = max(0, first.output - 1 - (first.padding + q.size - 1) // first.stride)
        which = (
            "the setting listed pads"
            if len(answers) == 1
            else f"{len(wide)} of the {len(answers)} settings listed pad"
        )
        message = (
            f"{which}{where} at least the kernel span (first: "
            f"{first.layer(False, solution.dims)}, padding {first.padding} >= span "
            f"{first.span}): its first {before} and last {after} outputs see only zero padding"
        )
        if q.target > q.size:
            message += (
                f"; to upsample {q.size} to {q.target}, a transposed conv does it without "
                f"(convcalc solve --size {q.size} --target {q.target} -k {q.kernel} "
                "--transpose --vary stride)"
            )
        warnings.append(message)
    return warnings


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
            + _same_hint(q, solution.dims)
        )
    return "; ".join(parts)


def _same_hint(q: Question, dims: int) -> str:
    """When no symmetric padding keeps the size of a stride-1 conv (an even kernel span),
    padding='same' still does, padding unequally as torch does (the extra one after)."""
    if q.transposed or q.target != q.size or q.stride not in (None, 1) or q.padding is not None:
        return ""
    d = q.dilation if q.dilation is not None else 1
    total = d * (q.kernel - 1)
    left, right = total // 2, total - total // 2
    dilated = f", dilation={d}" if d != 1 else ""
    return (
        f"; padding='same' keeps it: Conv{dims}d(k={q.kernel}{dilated}, padding='same') pads "
        f"{left} before and {right} after (its kernel span {total + 1} is even, so no symmetric "
        "padding can)"
    )
