"""``convcalc batch``: many one-layer specs (JSONL or CSV), one result per spec, in order,
streamed. Pure orchestration: the measuring happens in convcalc.engine and convcalc.measure."""

from __future__ import annotations

import contextlib
import csv
import gc
import heapq
import itertools
import json
import os
import re
import signal
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import field
from pathlib import Path
from typing import IO, Any

from convcalc import _runtime
from convcalc._dataclass import dataclass
from convcalc.core.grammar import parse_inline, parse_input, scalar
from convcalc.core.memo import held
from convcalc.errors import ConvcalcError, SpecError

#: keys a batch spec takes beyond a stack layer's: the input
INPUT_KEYS = ("in", "dims", "size", "batch", "input", "dtype")


@dataclass(frozen=True)
class Spec:
    #: the spec's line in its file (CSV: the row's last line); grid specs: index + 1
    line: int
    data: dict[str, Any]
    #: its place among the specs, from 0: stable across shards, what --resume and --merge use
    index: int = -1
    #: the line as written, when it could not be read as a spec (not JSON, not an object):
    #: the error record's ``text``; None otherwise
    text: str | None = None


def read_specs(text: str, source: str) -> list[Spec]:
    """JSONL (an object per line) or CSV (a header of keys, a spec per row), by content; a line
    that is not a spec becomes a spec whose error is reported in its turn. No spec at all (an
    empty or whitespace-only text) is invalid input."""
    specs = list(iter_specs(text.splitlines(keepends=True), source))
    if not specs:
        raise SpecError("batch", no_specs(source))
    return specs


def no_specs(source: str) -> str:
    return f"{source}: no specs: JSONL objects or CSV with a header row"


def iter_specs(lines: Iterable[str], source: str) -> Iterator[Spec]:
    """:func:`read_specs`, streamed: one spec at a time from an iterable of lines (a file), so a
    sweep of millions of specs holds one in memory. Yields nothing for an empty text."""
    lines = iter(lines)
    number = 0
    for line in lines:
        number += 1
        if line.strip():
            break
    else:
        return
    if line.lstrip().startswith("{"):
        yield from _jsonl_specs(itertools.chain([line], lines), number)
    else:
        yield from _csv_specs(itertools.chain([line], lines), number)


def _jsonl_specs(lines: Iterable[str], first: int) -> Iterator[Spec]:
    index = 0
    for number, line in enumerate(lines, start=first):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        text = None
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            data = {"__error__": f"not JSON: {error.msg} (column {error.colno})"}
            text = line.rstrip("\r\n")
        if not isinstance(data, dict):
            data = {"__error__": "each line must be a JSON object"}
            text = line.rstrip("\r\n")
        yield Spec(number, data, index, text)
        index += 1


def _csv_specs(lines: Iterable[str], first: int) -> Iterator[Spec]:
    reader = csv.reader(lines)
    header = [key.strip() for key in next(reader)]
    index = 0
    for row in reader:
        if not any(value.strip() for value in row):
            continue
        line = reader.line_num + first - 1
        if len(row) > len(header):
            data: dict[str, Any] = {
                "__error__": f"the row has {len(row)} fields, the header {len(header)}"
            }
        else:
            data = {
                key: scalar(value.strip())
                for key, value in zip(header, row)
                if key and value.strip() != ""
            }
        yield Spec(line, data, index)
        index += 1


def spec_network(data: dict[str, Any], dtype: str) -> Any:
    """One spec as a one-layer network (a stack of one; `dw` gives its pair)."""
    from convcalc.sources.stack import build_network

    if "__error__" in data:
        raise SpecError("spec", data["__error__"])
    layer = {k: v for k, v in data.items() if k not in INPUT_KEYS}
    layer.setdefault("op", "conv")
    if "input" in data:
        shape = parse_input(data["input"], "input")
        _agrees_with_input(data, shape)
    else:
        if "in" not in data:
            raise SpecError("in", "a spec needs 'in' (input channels) or 'input' (N,C,size...)")
        dims = _whole(data.get("dims", 2), "dims")
        size = data.get("size", 224)
        # a whole number >= 0 as it is (all the pattern of _sizes accepts of an int)
        sizes = [size] if type(size) is int and size >= 0 else _sizes(size)
        if len(sizes) == 1:
            sizes *= dims
        shape = (_whole(data.get("batch", 1), "batch"), _whole(data["in"], "in"), *sizes)
    label = "dtype" if "dtype" in data else "--dtype"  # the spec's own key, or the option
    dtype = str(data.get("dtype", dtype))
    if isinstance(layer.get("layers"), str):  # a whole inline stack in one spec
        layers = parse_inline(layer["layers"])
        return build_network({"layers": layers}, shape, dtype, "spec", label)
    return build_network({"layers": [layer]}, shape, dtype, "spec", label)


def _sizes(size: Any) -> list[int]:
    """A spec's ``size``: a number, or one per dimension like 56x80."""
    text = str(size).replace(",", "x")
    if isinstance(size, bool) or not re.fullmatch(r"\d+(x\d+)*", text):
        raise SpecError(
            "size",
            f"size {size!r} must be a number (an integer, like 1000, not 1e3), or one per "
            "dimension like 56x80",
        )
    return [int(v) for v in text.split("x")]


def _agrees_with_input(data: dict[str, Any], shape: tuple[int, ...]) -> None:
    """'input' given with in/size/dims/batch: they must say the same."""
    given = {key: data[key] for key in ("batch", "in", "dims", "size") if key in data}
    implied: dict[str, Any] = {
        "batch": shape[0],
        "in": shape[1],
        "dims": len(shape) - 2,
        "size": "x".join(str(v) for v in shape[2:]),
    }
    for key, value in given.items():
        if key == "size":
            sizes = str(value).replace(",", "x").split("x")
            if len(sizes) == 1:
                sizes *= len(shape) - 2
            same = "x".join(sizes) == implied["size"]
        else:
            same = str(value).strip() == str(implied[key])
        if not same:
            raise SpecError(
                key,
                f"{key} {value!r} conflicts with input {data['input']!r} ({key} {implied[key]})",
            )


def _whole(value: Any, key: str) -> int:
    if type(value) is int:  # what the pattern below accepts of an int: every one
        return value
    if isinstance(value, bool) or not re.fullmatch(r"-?\d+", str(value).strip()):
        raise SpecError(key, f"{key} {value!r} must be a whole number")
    return int(value)


def analyze_spec(spec: Spec, dtype: str, options: Any) -> tuple[Any, str | None]:
    """One spec's report, or its error message."""
    from convcalc import engine

    try:
        with held():  # the builder and the analysis share the figures (core.memo)
            network = spec_network(spec.data, dtype)
            return engine.analyze_network(network, command="batch", options=options), None
    except ConvcalcError as error:
        return None, str(error)
    except (ValueError, TypeError) as error:  # a value of a type nothing expected
        return None, f"invalid spec: {error}"


def run(
    specs: Iterable[Spec], dtype: str, options: Any, jobs: int = 1
) -> Iterator[tuple[Spec, Any, str | None]]:
    """Each spec's report, or its error message, in input order; with ``jobs`` > 1 in that many
    worker processes (each imports torch once), still in input order and streamed: at most a
    few chunks per worker are in flight, so memory stays flat in the number of specs."""
    if jobs <= 1:
        known: dict[Any, Any] = {}
        with sweep_collector():
            for number, spec in enumerate(specs):
                report, problem = _analyze_remembered(spec, dtype, options, known)
                if _runtime.command_line and number % FREEZE_EVERY == 0:
                    _freeze_heap(again=number > 0)
                yield spec, report, problem
        return
    yield from _run_parallel(specs, dtype, options, jobs)


#: reports a sweep keeps for exact repeats of a spec (bounded: flat memory)
REPEATS_MAX = 1024
_PLAIN_TYPES = (str, int, bool, type(None))


def _exact(value: Any) -> Any:
    """A spec's data as a hashable key equal only for data that reads the same in every way
    (types included: 1, 1.0, True, "1", [1] and (1,) differ; a float by its repr, so -0.0 is
    not 0.0); None for anything else (never remembered)."""
    kind = type(value)
    if kind in _PLAIN_TYPES:
        return (kind, value)
    if kind is float:
        return (kind, repr(value))
    if kind in (list, tuple):
        items = [_exact(item) for item in value]
        return None if any(item is None for item in items) else (kind, tuple(items))
    if kind is dict:
        flat = _exact_flat(value)
        if flat is not None:
            return flat
        pairs = [(_exact(k), _exact(v)) for k, v in value.items()]
        if any(k is None or v is None for k, v in pairs):
            return None
        return (kind, tuple(pairs))
    return None


#: the types of a flat spec's values (a JSONL or CSV line without lists or objects) whose repr
#: reads back as exactly that value: str quoted, bool True/False, None, an int's digits, a
#: float's repr (always with ".", "e", "inf" or "nan": never an int's)
_FLAT_TYPES = frozenset((str, int, bool, type(None), float))


def _exact_flat(value: dict[Any, Any]) -> Any:
    """:func:`_exact` of a dict of str keys and plain values (most specs), cheaper: its repr,
    which reads back as exactly that dict (key order and every type kept), so it is equal only
    for the same data. None for any other dict (then :func:`_exact` walks it)."""
    types = _FLAT_TYPES
    for key, item in value.items():
        if type(key) is not str or type(item) not in types:
            return None
    return ("flat dict", repr(value))


def _analyze_remembered(
    spec: Spec, dtype: str, options: Any, known: dict[Any, Any]
) -> tuple[Any, str | None]:
    """:func:`analyze_spec`; for an exact repeat of a spec this sweep analysed already (the same
    data, key order included, and dtype), that spec's report: the same layer, measured the same
    way in this process, gives the same figures (an exact repeat reuses its measurement; a spec
    not seen before is always measured). Not with ``--time``: each spec is timed afresh.
    Errors are not remembered (running out of memory may pass)."""
    key = None if getattr(options, "time", True) else _exact(spec.data)
    if key is None:
        return analyze_spec(spec, dtype, options)
    key = (dtype, key)
    report = known.get(key)
    if report is not None:
        return report, None
    report, problem = analyze_spec(spec, dtype, options)
    if report is not None:
        if len(known) >= REPEATS_MAX:
            known.pop(next(iter(known)))
        known[key] = report
    return report, problem


#: specs per task a worker takes at a time, and tasks in flight per worker
CHUNK = 16
AHEAD = 4


def _run_chunk(chunk: list[Spec], dtype: str, options: Any) -> list[tuple[Spec, Any, str | None]]:
    with sweep_collector():
        results = [(spec, *analyze_spec(spec, dtype, options)) for spec in chunk]
    _CHUNKS_RUN[0] += 1
    _freeze_heap(again=_CHUNKS_RUN[0] % (FREEZE_EVERY // CHUNK) == 0)
    return results


#: the collector's first threshold while a sweep runs (Python's default is 700)
SWEEP_GC_THRESHOLD = 10_000


@contextlib.contextmanager
def sweep_collector() -> Iterator[None]:
    """While a sweep runs: the garbage collector's youngest generation collected every
    ``SWEEP_GC_THRESHOLD`` net allocations of containers instead of 700 (the older ones as
    before, counted in those collections); the caller's thresholds are put back after. A meta
    spec allocates a few thousand containers (modules, tensors, reports), most freed by
    reference counting; every collection walked the young survivors (the caches' new entries)
    again: 266 collections and ~0.1 ms a spec of bench/batch.py's mix went to the collector,
    ~20 collections and ~0.03 ms with this (docs/benchmarks.md). A spec's cyclic garbage is
    still collected, a little later: memory stays flat."""
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], SWEEP_GC_THRESHOLD), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


_FROZEN: list[bool] = []
_CHUNKS_RUN = [0]
#: specs between two freezes of the heap in a sweep (a worker: its chunks' specs)
FREEZE_EVERY = 256


def _freeze_heap(*, again: bool = False) -> None:
    """Only in convcalc's own processes (its command, or a worker of ``--jobs``): a library
    caller's sweep leaves that caller's objects to its collector (convcalc/_runtime.py), since
    its own cyclic garbage alive at a freeze would never be collected.

    Once per process, after the first spec (torch, the layer kinds and the caches loaded):
    move every object alive then out of the garbage collector's generations (``gc.freeze``).
    torch's import leaves ~200,000 objects that each full collection would walk again: ~86 µs
    a spec of a meta sweep went to the collector, ~19 µs after. Those objects are modules,
    functions and caches that live as long as the process anyway; what was garbage at that
    moment (one spec's cycles at most) stays.

    ``again``: and every FREEZE_EVERY specs of a sweep after that, what the sweep's bounded
    caches (figures, geometries, reports of exact repeats, meta modules) hold by then, which
    every collection of the older generations walked again: ~35 µs a formula-only spec went
    to the collector, ~15 µs with this (gc.callbacks over bench/batch.py's mix). An entry a
    cache drops later is freed by its reference count as before (freezing keeps no
    reference); only cyclic garbage alive at the moment of a freeze would stay, and the
    per-spec path makes none (gc.collect() after 2,000 specs with the collector off found
    0 unreachable objects, meta and --formula-only)."""
    if again or not _FROZEN:
        import gc

        gc.freeze()
        if not _FROZEN:
            _FROZEN.append(True)


#: how often a worker looks whether the process that started it is still there (seconds)
WORKER_WATCH_SECONDS = 0.2


def _worker_start(parent: int) -> None:
    """A worker's start: Ctrl-C is the parent's to handle (one 'interrupted' line), so workers
    ignore it; and a worker leaves as soon as its parent is gone. A parent that stops early
    (Ctrl-C, a closed pipe) leaves by os._exit without waiting for the chunks still running,
    and its workers, blocked on a queue nobody writes any more, would otherwise sleep forever,
    holding the caller's stdout and stderr open (a ``$(convcalc batch ...)`` never ending)."""
    import threading
    import time

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(WORKER_WATCH_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="convcalc-parent-watch", daemon=True).start()


def _run_parallel(
    specs: Iterable[Spec], dtype: str, options: Any, jobs: int
) -> Iterator[tuple[Spec, Any, str | None]]:
    import multiprocessing
    from collections import deque
    from concurrent.futures import Future, ProcessPoolExecutor

    # spawn: a fresh interpreter per worker (forking a process that holds torch's thread pools
    # is unsafe); each worker imports convcalc and torch once, on its first spec. An executor,
    # not multiprocessing.Pool: stopping early (a consumer that closes the generator, Ctrl-C)
    # cancels what has not started instead of Pool.terminate's join, which can hang; a worker
    # that dies raises BrokenProcessPool instead of waiting forever
    executor = ProcessPoolExecutor(
        jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_start,
        initargs=(os.getpid(),),
    )
    specs = iter(specs)
    pending: deque[Future[list[tuple[Spec, Any, str | None]]]] = deque()
    finished = False

    def submit() -> bool:
        chunk = list(itertools.islice(specs, CHUNK))
        if chunk:
            pending.append(executor.submit(_run_chunk, chunk, dtype, options))
        return bool(chunk)

    try:
        while len(pending) < jobs * AHEAD and submit():
            pass
        while pending:
            results = pending.popleft().result()
            submit()
            yield from results
        finished = True
    finally:
        executor.shutdown(wait=finished, cancel_futures=True)


# --- many machines: shards, and merging their results ----------------------------------------


def parse_shard(text: str) -> tuple[int, int]:
    """``I/N``: every N-th spec starting at I (0 <= I < N)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise SpecError("shard", f"--shard {text!r} must be I/N, like 0/4 (whole numbers)")
    shard, count = int(match[1]), int(match[2])
    if count < 1:
        raise SpecError("shard", f"--shard {text!r}: N must be at least 1")
    if shard >= count:
        raise SpecError("shard", f"--shard {text!r}: I must be from 0 to N-1 ({count - 1})")
    return shard, count


def in_shard(specs: Iterable[Spec], shard: tuple[int, int] | None) -> Iterator[Spec]:
    if shard is None:
        yield from specs
        return
    start, count = shard
    for spec in specs:
        if spec.index % count == start:
            yield spec


@dataclass(frozen=True)
class Result:
    """One record line of a batch results file, as written (its bytes kept for merging)."""

    index: int
    text: str
    failed: bool
    #: the spec's line in its file (the record's ``line``)
    line: int = -1


def results_kind(first: str) -> str:
    return "jsonl" if first.lstrip().startswith("{") else "csv"


def results_format(first: str, header: str) -> str | None:
    """What a batch results file holds, by its first line: "jsonl" (an object), "json" (the
    array --format json writes, which cannot be appended to or merged), "csv" (``header``, or
    the start of it cut short), or None: not convcalc batch output."""
    text = first.lstrip()
    if text.startswith("{"):
        return "jsonl"
    if text.startswith("["):
        return "json"
    row = first.rstrip("\r\n")
    if row == header.rstrip("\n") or (not first.endswith("\n") and header.startswith(row)):
        return "csv"
    return None


def read_results(
    lines: Iterable[str], source: str, header: str
) -> Iterator[tuple[str, Result | None]]:
    """The records of a batch results file (JSONL, or CSV whose first line is ``header``), in
    file order: ``("header", None)`` for a CSV header, ``("record", result)`` for a complete
    record, ``("truncated", None)`` for a last line cut short (no newline, or not whole). A
    file that is not convcalc batch output is invalid input."""
    kind = ""
    index_column = -1
    error_column = -1
    line_column = -1
    for number, line in enumerate(lines, start=1):
        complete = line.endswith("\n")
        if not kind:
            kind = results_kind(line)
            if kind == "csv":
                if line.rstrip("\r\n") != header.rstrip("\n") and complete:
                    raise SpecError(
                        "results", f"{source}: not convcalc batch output (its CSV header differs)"
                    )
                if not complete:
                    yield "truncated", None
                    return
                columns = header.rstrip("\n").split(",")
                index_column = columns.index("spec_index")
                error_column = columns.index("error")
                line_column = columns.index("line")
                yield "header", None
                continue
        if kind == "jsonl":
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                data = None
            if not complete or not isinstance(data, dict):
                if complete:
                    raise SpecError(
                        "results", f"{source}: line {number} is not convcalc batch output"
                    )
                yield "truncated", None
                return
            index = data.get("index")
            if not isinstance(index, int) or not ("error" in data or "total" in data):
                raise SpecError(
                    "results",
                    f"{source}: line {number} is not convcalc batch output (no index and "
                    "total or error)",
                )
            number_in_file = data.get("line")
            yield (
                "record",
                Result(
                    index,
                    line,
                    "error" in data,
                    number_in_file if isinstance(number_in_file, int) else -1,
                ),
            )
        else:
            if not complete:
                yield "truncated", None
                return
            row = next(csv.reader([line]))
            if len(row) <= max(index_column, error_column) or not row[index_column].isdigit():
                raise SpecError("results", f"{source}: line {number} is not convcalc batch output")
            cell = row[line_column] if len(row) > line_column else ""
            yield (
                "record",
                Result(
                    int(row[index_column]),
                    line,
                    bool(row[error_column]),
                    int(cell) if cell.isdigit() else -1,
                ),
            )


def record_profile(text: str, kind: str, header: str, exact_on: bool) -> dict[str, Any] | None:
    """What a record line (JSONL, or a CSV row under ``header``) says of the options that
    made it, the same for every spec of one run: measured or formula only (``exact_on``: on
    which device), --memory, --train, --time, --roofline; None for an error record."""
    if kind == "csv":
        columns = header.rstrip("\n").split(",")
        row = dict(zip(columns, next(csv.reader([text]))))
        if row.get("error"):
            return None
        keys = {
            "agree": "measured",
            "saved_for_backward_bytes": "memory measured (--memory)",
            "train_flops": "train_flops (--train)",
            "latency_ms": "timed (--time)",
            "bytes_moved": "roofline (--roofline)",
        }
        return {name: bool(row.get(key)) for key, name in keys.items()}
    data = json.loads(text)
    if "error" in data:
        return None
    total = data.get("total") or {}
    memory = total.get("memory_bytes")
    on = data.get("measured_on")
    return {
        "measured": on != "none",
        **({"measured_on": on} if exact_on else {}),
        "memory measured (--memory)": isinstance(memory, dict)
        and memory.get("saved_for_backward") is not None,
        "train_flops (--train)": total.get("train_flops") is not None,
        "timing (--time)": data.get("timing") is not None,
        "roofline (--roofline)": total.get("roofline") is not None,
    }


def held_difference(spec: Spec, result: Result, kind: str, header: str, dtype: str) -> str | None:
    """Whether a record --resume found (``result``, of a ``kind`` file) is of ``spec``, by
    what is cheap to know without measuring: its input shape and every layer's spec (JSONL;
    CSV: its input shape, and a chain's parameters and output shape by formula), its error
    when the spec is bad; None when it is, else the first difference as ``key A, not B`` (A
    held, B this run's). Index and line are compared by the caller."""
    try:
        network = spec_network(spec.data, dtype)
        problem = None
    except ConvcalcError as error:
        network, problem = None, str(error)
    except (ValueError, TypeError) as error:
        network, problem = None, f"invalid spec: {error}"
    held: dict[str, Any] = {}
    made: dict[str, Any] = {}
    if kind == "csv":
        columns = header.rstrip("\n").split(",")
        row = dict(zip(columns, next(csv.reader([result.text]))))
        if problem is not None or row.get("error"):
            held["error"], made["error"] = row.get("error", ""), problem or row.get("error", "")
        if network is not None and not row.get("error"):
            held["input_shape"] = row.get("input_shape")
            made["input_shape"] = "x".join(str(v) for v in _input_shape(network))
            formulas = _chain_formulas(network)
            if formulas is not None:
                held["params_formula"], made["params_formula"] = (
                    row.get("params_formula"),
                    formulas[0],
                )
                held["output_shape_formula"] = row.get("output_shape_formula")
                made["output_shape_formula"] = formulas[1]
    else:
        data = json.loads(result.text)
        if "error" in data:
            held["spec"], made["spec"] = data.get("spec"), json.loads(json.dumps(spec.data))
        if problem is not None or "error" in data:
            held["error"], made["error"] = data.get("error"), problem or data.get("error")
        if network is not None and "error" not in data:
            layers = data.get("layers") or [{}]
            held["input_shape"] = data.get("input_shape")
            made["input_shape"] = _input_shape(network)
            held["dtype"], made["dtype"] = data.get("dtype"), network.input.dtype
            # every layer's spec: a depthwise-separable pair of another width has the same
            # first layer, and only its second tells the sweeps apart
            for number in range(max(len(layers), len(network.nodes))):
                key = f"layers[{number}].spec"
                if number < len(layers):
                    held[key] = layers[number].get("spec")
                if number < len(network.nodes):
                    made[key] = json.loads(json.dumps(network.nodes[number].spec.to_dict()))
    return signature_difference(held, made)


def _chain_formulas(network: Any) -> tuple[str, str] | None:
    """A chain's parameters and output shape by formula, as CSV cells; None for a graph, or
    a layer that does not fit (the engine reports that)."""
    from convcalc import kinds

    shape = network.input
    params = 0
    try:
        for number, node in enumerate(network.nodes):
            if node.inputs != (number - 1,):
                return None
            params += kinds.figures(node.spec, shape).params.value
            shape = kinds.output_spec(node.spec, shape)
    except (ConvcalcError, ValueError, TypeError, ZeroDivisionError):
        return None
    return str(params), "x".join(str(v) for v in shape.shape)


def _input_shape(network: Any) -> list[int]:
    return list(network.input.shape)


def signature_difference(held: dict[str, Any], made: dict[str, Any]) -> str | None:
    """The first place two record descriptions differ, as ``key: A in the file, B in this
    run`` (A held, B made; nested dicts by dotted keys), or None when they are the same."""
    for key in [*held, *(k for k in made if k not in held)]:
        if isinstance(held.get(key), dict) and isinstance(made.get(key), dict):
            inner = signature_difference(held[key], made[key])
            if inner is not None:
                return f"{key}.{inner}"
            continue
        if held.get(key, "(none)") != made.get(key, "(none)"):
            held_text, made_text = _short(held.get(key, "(none)")), _short(made.get(key, "(none)"))
            return f"{key}: {held_text} in the file, {made_text} in this run"
    return None


def _short(value: Any) -> str:
    text = value if value == "(none)" else json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def count_specs(lines: Iterable[str]) -> int:
    """How many specs :func:`iter_specs` yields for these lines, without reading them as specs
    (a progress bar's total): JSONL objects, or CSV rows after the header."""
    lines = iter(lines)
    for line in lines:
        if line.strip():
            break
    else:
        return 0
    if line.lstrip().startswith("{"):
        return 1 + sum(1 for rest in lines if rest.strip() and not rest.lstrip().startswith("#"))
    return sum(1 for row in csv.reader(lines) if any(value.strip() for value in row))


def shard_size(count: int, shard: tuple[int, int] | None) -> int:
    """How many of ``count`` specs (indices 0..count-1) are in ``shard``."""
    return count if shard is None else len(range(shard[0], count, shard[1]))


def guess_shard(indices: Iterable[int]) -> tuple[int, int] | None:
    """The shard ``(I, N)`` a results file's indices look like (N the gcd of their steps), or
    None when it holds fewer than two records."""
    import math

    first = step = -1
    last = -1
    for index in indices:
        if first < 0:
            first = index
        else:
            step = math.gcd(max(step, 0), index - last)
        last = index
    if step <= 0:
        return None
    return first % step, step


# --- sweep generation ------------------------------------------------------------------------


#: what a grid may vary: a spec's input keys and every stack-layer key
def grid_keys() -> set[str]:
    from convcalc.sources.stack import KEYS

    return {"op", *INPUT_KEYS, *set().union(*KEYS.values())} - {"input"}


def parse_grid(text: str) -> dict[str, list[Any]]:
    """``"kernel=1,3,5 stride=1,2 groups=1,g=in out=64,128"``: each key's values, in order. A
    value naming a key (``in``, ``out``: ``groups=1,in``; ``g=in`` says the same) is that
    key's value in each spec."""
    axes: dict[str, list[Any]] = {}
    for token in text.split():
        key, equals, values = token.partition("=")
        if not equals or not key:
            raise SpecError("grid", f"--grid {token!r} must be key=value,value,...")
        if key in axes:
            raise SpecError("grid", f"--grid gives {key!r} twice")
        axes[key] = [_grid_value(v, key) for v in values.split(",")] if values else []
    if not axes:
        raise SpecError("grid", "--grid needs key=value,value,... like kernel=1,3 stride=1,2")
    return axes


def _grid_value(text: str, key: str) -> Any:
    if not text.strip():
        raise SpecError("grid", f"--grid {key}: an empty value")
    if "=" in text:  # g=in: a reference written out
        return Ref(text.partition("=")[2])
    value = scalar(text)
    if isinstance(value, str) and value in grid_keys() | {"in"}:
        return Ref(value)
    return value


@dataclass(frozen=True)
class Ref:
    """A grid value that is another key's value in the same spec."""

    key: str


def read_grid_file(text: str, source: str) -> dict[str, list[Any]]:
    """A YAML mapping: a list is an axis, anything else is fixed (``groups: [1, in]``)."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SpecError("grid_file", f"{source}: not YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(data, dict) or not data:
        raise SpecError("grid_file", f"{source}: a grid file is a mapping of keys to values")
    axes: dict[str, list[Any]] = {}
    for key, values in data.items():
        items = values if isinstance(values, list) else [values]
        axes[str(key)] = [_grid_value(str(v), str(key)) if isinstance(v, str) else v for v in items]
    return axes


def expand_grid(axes: dict[str, list[Any]], base: dict[str, Any]) -> Iterator[Spec]:
    """The Cartesian product of the axes (the last varies fastest), each over ``base`` (--in,
    --size, ...), references resolved: the specs, streamed. Invalid axes fail before any."""
    known = grid_keys()
    for key, values in axes.items():
        if key not in known:
            raise SpecError(
                "grid", f"--grid key {key!r} is not a spec key; keys: {', '.join(sorted(known))}"
            )
        if not values:
            raise SpecError("grid", f"--grid {key}: no values")
        if key in base:
            raise SpecError("grid", f"--grid {key} and --{key} both given: give one")
        for value in values:
            if isinstance(value, Ref) and value.key not in axes and value.key not in base:
                raise SpecError(
                    "grid",
                    f"--grid {key}={value.key}: {value.key!r} is neither a grid key nor given",
                )
    keys = list(axes)
    for index, combination in enumerate(itertools.product(*(axes[k] for k in keys))):
        data = {**base, **dict(zip(keys, combination))}
        for key, value in data.items():
            if isinstance(value, Ref):
                target = data[value.key]
                data[key] = target.key if isinstance(target, Ref) else target
        yield Spec(index + 1, data, index)


# --- reading a sweep's specs: a file, standard input, a grid, and how many there are ----------


def file_lines(path: Path, source: str) -> Iterator[str]:
    """A file's lines, streamed; unreadable or not UTF-8 is invalid input."""
    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as error:
        raise SpecError("source", f"{source}: {error.strerror or error}") from None
    with handle:
        try:
            yield from handle
        except UnicodeDecodeError as error:
            raise SpecError("source", f"{source}: not UTF-8 text (byte {error.start})") from None


def stream_lines(stream: IO[str], source: str = "<stdin>") -> Iterator[str]:
    """A text stream's lines (standard input), decoded here from its bytes when it has them:
    a line that is not UTF-8 is invalid input, named by its number."""
    raw = getattr(stream, "buffer", None)
    if raw is None:
        yield from stream
        return
    for number, line in enumerate(raw, start=1):
        try:
            yield line.decode("utf-8")
        except UnicodeDecodeError:
            raise SpecError("source", f"{source}: line {number} is not UTF-8 text") from None


def grid_axes(
    grid: str | None, grid_file: Path | None, read: Callable[[Path, str], str]
) -> dict[str, list[Any]]:
    """The axes of ``--grid`` or ``--grid-file`` (one of them; ``read``: a file's text)."""
    if grid is not None and grid_file is not None:
        raise SpecError("grid", "give --grid or --grid-file, not both")
    if grid_file is not None:
        return read_grid_file(read(grid_file, str(grid_file)), str(grid_file))
    return parse_grid(grid or "")


def planned_count(
    source: str | None,
    axes: dict[str, list[Any]] | None,
    shard: tuple[int, int] | None,
    done: int,
) -> int | None:
    """The specs a run will analyse, when known before it starts (a file, a grid), after the
    ``done`` that --resume found; None for standard input (``-``: a stream is read once) or
    an unreadable file."""
    import math

    if axes is not None:
        count = math.prod(len(values) for values in axes.values())
    elif source is None or source == "-":
        return None
    else:
        try:
            with Path(source).open(encoding="utf-8", newline="") as handle:
                count = count_specs(handle)
        except (OSError, UnicodeDecodeError):
            return None
    return max(shard_size(count, shard) - done, 0)


# --- results files: what --resume finds in one, what --merge joins -----------------------------


#: what a results file's name says it holds (a new file named .csv is not given JSONL)
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
NAMES = {"csv": "CSV", "jsonl": "JSONL", "json": "JSON"}


def _no_specs() -> Iterator[Spec]:
    return iter(())


@dataclass(frozen=True)
class Held:
    """What a results file (--resume's RESULTS) holds of a sweep: its complete records, how
    many of them are error records, and the bytes to keep (a truncated last line is cut
    off)."""

    count: int
    failed: int
    keep: int
    #: the options its last report says made it (:func:`record_profile`)
    profile: dict[str, Any] | None = None
    #: what the file holds and a resumed run appends: "jsonl" or "csv"
    format: str = "jsonl"
    #: the sweep's specs after those the file holds: what is left to run
    rest: Iterator[Spec] = field(default_factory=_no_specs, compare=False, repr=False)
    #: the spec of the file's last report (not an error record) and that record's line: what
    #: a resumed run with nothing left to run analyses again to check its options
    last_spec: Spec | None = None
    last_text: str | None = None


@contextmanager
def open_results(path: Path, option: str = "") -> Iterator[Iterator[str]]:
    """A results file's lines; unreadable or not UTF-8 is invalid input. ``option``: how
    messages name the file's option ("--resume ")."""
    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as error:
        raise SpecError("results", f"{option}{path}: {error.strerror or error}") from None
    with handle:

        def lines() -> Iterator[str]:
            try:
                yield from handle
            except UnicodeDecodeError:
                raise SpecError("results", f"{option}{path}: not convcalc batch output") from None

        yield lines()


def held_records(
    path: Path,
    fmt: str,
    format_given: bool,
    specs: Iterator[Spec],
    dtype: str,
    exact_on: bool,
    header: str,
) -> Held:
    """What ``path`` holds, and this run's specs after those it holds (``Held.rest``), once
    it is known to be this sweep's (nothing is written): convcalc batch output in the format
    this run writes (``fmt``; ``format_given``: chosen, not the default) or new or empty (a
    name that does not say another format); its records this run's first specs, one by one
    (index, line, and what is known without measuring: input shape, first layer, error); its
    last report made with the options that make this run's (checked by :func:`check_made` on
    this run's first report; ``exact_on``: the device counts). Refused (SpecError "resume")
    otherwise. ``header``: the CSV header line."""
    writes = f"this run writes {NAMES[fmt]}" + ("" if format_given else " (the default)")
    head = ""
    if path.exists():
        with open_results(path, "--resume ") as lines:
            head = next(lines, "")
    if not head.strip():
        named = SUFFIXES.get(path.suffix.lower())
        if named is not None and named != fmt:
            raise SpecError(
                "resume",
                f"--resume {path}: its name says {NAMES[named]} and {writes}: add --format "
                f"{named}, or give a name ending .{fmt}",
            )
        return Held(0, 0, 0, None, fmt, specs)
    kind = results_format(head, header)
    if kind is None:
        raise SpecError("resume", f"--resume {path}: not convcalc batch output")
    if kind == "json":
        raise SpecError(
            "resume",
            f"--resume {path}: holds a JSON array (--format json), which records cannot be "
            "appended to: resume a JSONL or CSV file",
        )
    if kind != fmt:
        raise SpecError(
            "resume",
            f"--resume {path}: holds {NAMES[kind]} records and {writes}: add --format {kind}",
        )
    other = "the results of another sweep"
    count = failed = keep = consumed = 0
    last: str | None = None
    last_spec: Spec | None = None

    def counted(lines: Iterator[str]) -> Iterator[str]:
        nonlocal consumed
        for line in lines:
            consumed += len(line.encode("utf-8"))
            yield line

    with open_results(path, "--resume ") as lines:
        for what, result in read_results(counted(lines), f"--resume {path}", header):
            if what == "truncated":
                break
            keep = consumed
            if result is None:
                continue
            spec = next(specs, None)
            if spec is None:
                raise SpecError(
                    "resume",
                    f"--resume {path}: holds more records than this run's {count} specs: "
                    f"{other} (other specs or --shard)",
                )
            if (result.index, result.line) != (spec.index, spec.line):
                raise SpecError(
                    "resume",
                    f"--resume {path}: its record {count + 1} is of spec index {result.index} "
                    f"(line {result.line}), this run's spec {count + 1} is index {spec.index} "
                    f"(line {spec.line}): {other} (other specs or --shard)",
                )
            difference = held_difference(spec, result, kind, header, dtype)
            if difference is not None:
                raise SpecError("resume", _not_this_sweep(path, spec, difference))
            if not result.failed:
                last, last_spec = result.text, spec
            count += 1
            failed += result.failed
    profile = None
    if last is not None:
        profile = record_profile(last, kind, header, exact_on)
    return Held(count, failed, keep, profile, kind, specs, last_spec, last)


def _not_this_sweep(path: Path, spec: Spec, difference: str) -> str:
    return (
        f"--resume {path}: its record of spec index {spec.index} is not what this run makes of "
        f"that spec ({difference}): the results of another sweep (other specs, or options such "
        "as --formula-only, --memory, --dtype)"
    )


def check_made(held: Held, text: str, header: str, exact_on: bool, path: Path) -> bool:
    """Whether this run's record ``text`` (in ``held.format``) tells the options that made it
    (an error record does not): when it does, they must be those of the held records
    (SpecError "resume" otherwise)."""
    if held.profile is None:
        return True
    made = record_profile(text, held.format, header, exact_on)
    if made is None:
        return False
    difference = signature_difference(held.profile, made)
    if difference is not None:
        raise SpecError(
            "resume",
            f"--resume {path}: its records were made with other options than this "
            f"run's ({difference}): the results of another sweep",
        )
    return True


def append_to(path: Path, keep: int) -> IO[str]:
    """A results file open for appending, created if missing, cut to ``keep`` bytes (a
    truncated last line goes)."""
    try:
        stream = path.open("r+" if path.exists() else "w", encoding="utf-8", newline="")
    except OSError as error:
        raise SpecError("resume", f"--resume {path}: {error.strerror or error}") from None
    stream.seek(keep)
    stream.truncate()
    return stream


def merge_formats(names: list[str], fmt: str | None, header: str) -> tuple[str, str]:
    """What the results files hold ("jsonl" or "csv") and what --merge writes: their format,
    or ``fmt`` when given (JSONL records become CSV rows or a JSON array; CSV rows, a spec's
    total only, cannot become JSONL). Refused (SpecError "merge") otherwise."""
    if not names:
        raise SpecError("merge", "--merge needs the results files")
    kinds = set()
    for name in names:
        with open_results(Path(name)) as lines:
            first = next(lines, "")
        if first.strip():
            kind = results_format(first, header)
            if kind is None:
                raise SpecError("merge", f"--merge {name}: not convcalc batch output")
            if kind == "json":
                raise SpecError(
                    "merge",
                    f"--merge {name}: holds a JSON array (--format json): merge the shards' "
                    "JSONL or CSV results",
                )
            kinds.add(kind)
    if len(kinds) > 1:
        raise SpecError("merge", "--merge: the files mix JSONL and CSV")
    kind = kinds.pop() if kinds else fmt if fmt is not None else "jsonl"
    out = fmt if fmt is not None else kind
    if kind == "csv" and out != "csv":
        raise SpecError(
            "merge",
            f"--merge --format {out}: the files hold CSV rows (each spec's total only), which "
            f"cannot become {NAMES[out]}: give --format csv",
        )
    return kind, out


def merged_records(names: list[str], header: str) -> Iterator[tuple[int, str, bool]]:
    """The records of the results files (each in input order) in input order, streamed (a
    k-way merge, memory flat): ``(index, line, failed)``. A file cut short or out of order, a
    spec twice, or specs in none of the files (raised at the end, naming the shard missing or
    stopping early) is refused (SpecError "merge")."""
    missing: list[int] = []
    missed = 0
    with contextlib.ExitStack() as stack:
        streams = [
            results_records(stack.enter_context(open_results(Path(name))), name, header)
            for name in names
        ]
        last = -1
        for index, text, bad in heapq.merge(*streams):
            if index == last:
                raise SpecError("merge", f"--merge: the spec of index {index} appears twice")
            if index > last + 1:  # a gap: none of the files holds these specs
                missed += index - last - 1
                missing.extend(range(last + 1, min(index, last + 1 + 1000 - len(missing))))
            last = index
            yield index, text, bad
    if missed:
        raise SpecError("merge", missing_message(names, header, missing, missed))


def missing_message(names: list[str], header: str, missing: list[int], missed: int) -> str:
    """What --merge says when specs are in none of the files: the first of them, and which
    shard is missing or stops early, when the files look like shards I/N of one N."""
    listed = ", ".join(str(i) for i in missing[:5]) + (", ..." if missed > 5 else "")
    noun = "index" if missed == 1 else "indices"
    text = f"--merge: no file holds {missed} of the specs ({noun} {listed})"
    firsts: dict[str, int] = {}
    steps = set()
    for name in names:
        with open_results(Path(name)) as lines:
            indices = [index for index, _, _ in results_records(lines, name, header)]
        if indices:
            firsts[name] = indices[0]
            guess = guess_shard(indices)
            if guess is not None:
                steps.add(guess[1])
    if len(steps) != 1:
        return f"{text}: a shard's results are missing, or stop early (--resume them)"
    count = steps.pop()
    lacking = {index % count for index in missing}
    absent = sorted(lacking - {first % count for first in firsts.values()})
    short = [f"{n} (shard {f % count}/{count})" for n, f in firsts.items() if f % count in lacking]
    parts = []
    if absent:
        shards = " and ".join(f"{i}/{count}" for i in absent)
        parts.append(
            f"shards {shards} are missing" if len(absent) > 1 else f"shard {shards} is missing"
        )
    parts += [f"{name} stops early (--resume it)" for name in short]
    return f"{text}: " + "; ".join(parts)


def results_records(
    lines: Iterator[str], name: str, header: str
) -> Iterator[tuple[int, str, bool]]:
    """A results file's records to merge, ``(index, line, failed)``: one cut short or out of
    input order is refused."""
    last = -1
    for what, result in read_results(lines, name, header):
        if what == "truncated":
            raise SpecError(
                "merge", f"{name}: its last line is cut short: --resume that shard first"
            )
        if result is None:
            continue
        if result.index <= last:
            raise SpecError("merge", f"{name}: its records are not in input order")
        last = result.index
        yield result.index, result.text, result.failed
