"""``convcalc batch``: sweep many specs, streamed: in one process or --jobs, one machine's --shard,
--resume after a kill, --merge of the shards' results, specs from a file or a --grid."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import IO, Annotated, Any

import typer

from convcalc import library
from convcalc.choices import Dtype, Measure, MeasureOn
from convcalc.cli.options import (
    INPUT,
    MEASURE,
    OUTPUT,
    ConvcalcCommand,
    Device,
    DtypeOpt,
    FormulaOnly,
    RooflineOptions,
    Time,
    Train,
    progress_line,
    with_groups,
)
from convcalc.core.spec import CLI_LABELS, Labels
from convcalc.errors import SpecError

app = typer.Typer(rich_markup_mode=None)

SWEEP = "Sweep"


class BatchFormat(str, Enum):
    jsonl = "jsonl"
    csv = "csv"
    json = "json"


@app.command(cls=ConvcalcCommand)
@with_groups("roofline")
def batch(
    context: typer.Context,
    sources: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="FILE|-",
            help="Specs, one layer each: JSONL objects or CSV rows with a header. Keys: those "
            "of a stack layer (op, out, kernel, stride, padding, ...) and in, size, dims, batch "
            "or input. With --merge: the results files to merge. None with --grid.",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        BatchFormat,
        typer.Option(
            "--format",
            "-f",
            rich_help_panel=OUTPUT,
            case_sensitive=False,
            help="Results: a JSON object per line (streamed), CSV rows (streamed), or one JSON "
            "array.",
        ),
    ] = BatchFormat.jsonl,
    fail_fast: Annotated[
        bool,
        typer.Option("--fail-fast", rich_help_panel=OUTPUT, help="Stop at the first bad spec."),
    ] = False,
    grid: Annotated[
        str | None,
        typer.Option(
            "--grid",
            rich_help_panel=SWEEP,
            show_default=False,
            help='Specs as a Cartesian product: "kernel=1,3,5 stride=1,2 groups=1,in '
            'out=64,128" (the last key varies fastest); a value naming a key (in, out; g=in '
            "writes it out) is that key's value. With --in, --size, --dims, --batch.",
        ),
    ] = None,
    grid_file: Annotated[
        Path | None,
        typer.Option(
            "--grid-file",
            rich_help_panel=SWEEP,
            show_default=False,
            help="The grid as YAML: a list is an axis (groups: [1, in]), anything else fixed.",
        ),
    ] = None,
    in_channels: Annotated[
        int | None,
        typer.Option(
            "--in",
            rich_help_panel=INPUT,
            show_default=False,
            help="--grid: input channels of every spec.",
        ),
    ] = None,
    size: Annotated[
        str | None,
        typer.Option(
            "--size",
            rich_help_panel=INPUT,
            show_default=False,
            help="--grid: the spatial size of every spec (224, or 56x80).",
        ),
    ] = None,
    dims: Annotated[
        int | None,
        typer.Option(
            "--dims",
            rich_help_panel=INPUT,
            show_default=False,
            help="--grid: spatial dimensions of every spec.",
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch",
            rich_help_panel=INPUT,
            show_default=False,
            help="--grid: the batch size of every spec.",
        ),
    ] = None,
    jobs: Annotated[
        str,
        typer.Option(
            "--jobs",
            "-j",
            rich_help_panel=SWEEP,
            help="Worker processes (each imports torch once), or auto: the cores. The output "
            "stays in input order and streams.",
        ),
    ] = "1",
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard",
            rich_help_panel=SWEEP,
            show_default=False,
            metavar="I/N",
            help="Only every N-th spec from the I-th (0 <= I < N): one machine's share of a "
            "sweep (a Slurm array task: --shard $SLURM_ARRAY_TASK_ID/N). --merge joins them.",
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            rich_help_panel=SWEEP,
            show_default=False,
            metavar="RESULTS",
            help="Append to RESULTS (JSONL or CSV, created if missing) instead of stdout, "
            "skipping the specs whose records it holds; a truncated last line is redone. Run "
            "the same command again after a kill.",
        ),
    ] = None,
    merge: Annotated[
        bool,
        typer.Option(
            "--merge",
            rich_help_panel=SWEEP,
            help="The arguments are results files (shards): write their records in input order.",
        ),
    ] = False,
    dtype: DtypeOpt = Dtype.float32,
    measure_on: Annotated[
        MeasureOn,
        typer.Option(
            "--measure-on",
            rich_help_panel=MEASURE,
            case_sensitive=False,
            help="meta: every layer on torch's meta device (shapes, parameters and torch's FLOP "
            "count from torch, fvcore's rules on the shapes it dispatched; no arithmetic run), "
            "fast enough for big sweeps; auto or cpu: run each layer for real as conv does.",
        ),
    ] = MeasureOn.meta,
    formula_only: FormulaOnly = False,
    memory: Annotated[
        bool,
        typer.Option(
            "--memory",
            rich_help_panel=MEASURE,
            help="Also measure saved-for-backward and the inference peak (about half the "
            "rate); without it they are by formula only, and the sources say so.",
        ),
    ] = False,
    train: Train = False,
    time: Time = False,
    device: Device = "cpu",
    *,
    roofline: RooflineOptions,
) -> None:
    """Sweep many specs: one result per spec, in input order, each written and flushed as soon
    as it is done. A bad spec gives an error record (its line, index and message) and the
    others go on; the exit status is then 2. Memory is measured only with --memory.

    Example: convcalc batch sweep.jsonl > results.jsonl
    """
    from convcalc.sources.batch import in_shard, parse_shard

    names = list(sources or [])
    if merge:
        _merge(names, fmt, _format_given(context))
        return
    workers = library.jobs_count(jobs)
    where = parse_shard(shard) if shard is not None else None
    if resume is not None and fmt == BatchFormat.json:
        raise SpecError("resume", "--resume appends records: it needs --format jsonl or csv")
    generated = grid is not None or grid_file is not None
    base = {
        key: value
        for key, value in (
            ("in", in_channels),
            ("size", size),
            ("dims", dims),
            ("batch", batch_size),
        )
        if value is not None
    }
    if generated and names:
        raise SpecError("grid", "--grid makes the specs: give no FILE with it")
    if not generated and base:
        raise SpecError(next(iter(base)), f"--{next(iter(base))} goes with --grid")
    if not generated and len(names) != 1:
        raise SpecError("source", "batch takes one FILE (or -), or --grid")
    measure = Measure(
        "auto" if formula_only else measure_on,
        train,
        time,
        device,
        formula_only=formula_only,
        memory=memory,
        roofline=roofline.roofline,
        peak_gflops=roofline.peak_gflops,
        peak_gbps=roofline.peak_gbps,
        recalibrate=roofline.recalibrate,
        progress=progress_line,
    )
    measure.options(Labels(CLI_LABELS))  # bad combinations fail before anything is written
    axes = _grid_axes(grid, grid_file) if generated else None
    specs = library.sweep_grid(axes, base) if axes is not None else _file_specs(names[0])
    first = next(specs, None)
    if first is None:
        where_from = "--grid" if generated else "<stdin>" if names[0] == "-" else names[0]
        raise SpecError("source", f"{where_from}: no specs")
    specs = in_shard(_chain(first, specs), where)
    earlier, stream = (0, 0), None
    if resume is not None:
        # the same sweep's, checked before anything is written
        held, specs = _held(resume, fmt, _format_given(context), specs, dtype, measure)
        earlier = (held.count, held.failed)
    total = _total(names, axes, where, earlier[0]) if _shows_progress() else None
    records = library.sweep(
        specs,
        dtype=dtype,
        measure=measure,
        labels=Labels(CLI_LABELS),
        jobs=workers,
    )
    if resume is not None:
        exact_on = _plain(measure.measure_on) != "auto"
        records = _checked(records, held.profile, resume, fmt, exact_on)
        stream = _append(resume, held.keep)
    with _output(stream) as out:
        _write(
            records,
            out,
            fmt,
            fail_fast,
            header=not earlier[0] and stream_is_new(stream),
            earlier=earlier,
            total=total,
        )


def stream_is_new(stream: IO[str] | None) -> bool:
    return stream is None or stream.tell() == 0


def _write(
    records: Iterable[library.Record],
    out: IO[str],
    fmt: BatchFormat,
    fail_fast: bool,
    header: bool,
    earlier: tuple[int, int] = (0, 0),
    total: int | None = None,
) -> None:
    """Stream the records; ``earlier``: the records --resume found, and how many failed (the
    exit status and the count cover the whole file); ``total``: the records to write, when
    known (the progress bar's)."""
    from convcalc.output.formats import batch_footer, batch_header, batch_record

    if header:
        out.write(batch_header(fmt.value))
    failed = written = 0
    with _progress(total or 0) as advance:
        for record in records:
            out.write(batch_record(record, fmt.value, first=written == 0))
            out.flush()
            written += 1
            advance()
            if record.error is not None:
                failed += 1
                if fail_fast:
                    break
    out.write(batch_footer(fmt.value, written))
    out.flush()
    failed += earlier[1]
    written += earlier[0]
    if failed:
        sys.stderr.write(f"{failed} of {written} specs failed; see their error records\n")
        raise typer.Exit(2)


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def _file_specs(source: str) -> Iterator[Any]:
    if source == "-":
        return library.iter_sweep(_stdin_lines(), "<stdin>")
    return library.iter_sweep(_file_lines(Path(source), source), source)


def _grid_axes(grid: str | None, grid_file: Path | None) -> dict[str, list[Any]]:
    from convcalc.sources.batch import parse_grid, read_grid_file

    if grid is not None and grid_file is not None:
        raise SpecError("grid", "give --grid or --grid-file, not both")
    if grid_file is not None:
        return read_grid_file(library.read_source(grid_file, str(grid_file)), str(grid_file))
    return parse_grid(grid or "")


def _format_given(context: typer.Context) -> bool:
    """Whether --format was given (on the command line, or by an environment variable), not
    left at its default."""
    source = context.get_parameter_source("fmt")
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _total(
    names: list[str], axes: dict[str, list[Any]] | None, where: tuple[int, int] | None, done: int
) -> int | None:
    """The specs this run will analyse, when known before it starts (a file, a grid), for the
    progress bar; None for stdin (a stream is read once) or an unreadable file."""
    import math

    from convcalc.sources.batch import count_specs, shard_size

    if axes is not None:
        count = math.prod(len(values) for values in axes.values())
    elif names[0] == "-":
        return None
    else:
        try:
            with Path(names[0]).open(encoding="utf-8", newline="") as handle:
                count = count_specs(handle)
        except (OSError, UnicodeDecodeError):
            return None
    return max(shard_size(count, where) - done, 0)


def _file_lines(path: Path, source: str) -> Iterator[str]:
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


def _stdin_lines() -> Iterator[str]:
    stream = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else None
    if stream is None:
        yield from sys.stdin
        return
    for number, raw in enumerate(stream, start=1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SpecError("source", f"<stdin>: line {number} is not UTF-8 text") from None


#: what a results file's name says it holds (a new file named .csv is not given JSONL)
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
NAMES = {"csv": "CSV", "jsonl": "JSONL", "json": "JSON"}


@dataclass(frozen=True)
class Held:
    """What --resume found in RESULTS: its complete records, how many of them are error
    records, and the bytes to keep (a truncated last line is cut off)."""

    count: int
    failed: int
    keep: int
    #: the options its last report says made it (convcalc.sources.batch.record_profile)
    profile: dict[str, Any] | None = None


def _held(
    path: Path,
    fmt: BatchFormat,
    format_given: bool,
    specs: Iterator[Any],
    dtype: Dtype,
    measure: Measure,
) -> tuple[Held, Iterator[Any]]:
    """What RESULTS holds, and this run's specs after those it holds, once RESULTS is known to
    be this sweep's (nothing is written before): convcalc batch output in the format this run
    writes (a new or empty one: a name that does not say another format); its records this
    run's first specs, one by one (index, line, and what is known without measuring: input
    shape, first layer, error); its first and last records what this run makes of those specs
    (every value but the machine's and the clock's: RUN_DEPENDENT). Refused otherwise."""
    from convcalc.output.formats import BATCH_COLUMNS
    from convcalc.sources.batch import (
        held_difference,
        read_results,
        record_profile,
        results_format,
    )

    writes = f"this run writes {NAMES[fmt.value]}" + ("" if format_given else " (the default)")
    header = ",".join(BATCH_COLUMNS) + "\n"
    head = ""
    if path.exists():
        with _open_results(path, "--resume ") as lines:
            head = next(lines, "")
    if not head.strip():
        named = SUFFIXES.get(path.suffix.lower())
        if named is not None and named != fmt.value:
            raise SpecError(
                "resume",
                f"--resume {path}: its name says {NAMES[named]} and {writes}: add --format "
                f"{named}, or give a name ending .{fmt.value}",
            )
        return Held(0, 0, 0), specs
    kind = results_format(head, header)
    if kind is None:
        raise SpecError("resume", f"--resume {path}: not convcalc batch output")
    if kind == "json":
        raise SpecError(
            "resume",
            f"--resume {path}: holds a JSON array (--format json), which records cannot be "
            "appended to: resume a JSONL or CSV file",
        )
    if kind != fmt.value:
        raise SpecError(
            "resume",
            f"--resume {path}: holds {NAMES[kind]} records and {writes}: add --format {kind}",
        )
    other = "the results of another sweep"
    count = failed = keep = consumed = 0
    last: str | None = None

    def counted(lines: Iterator[str]) -> Iterator[str]:
        nonlocal consumed
        for line in lines:
            consumed += len(line.encode("utf-8"))
            yield line

    with _open_results(path, "--resume ") as lines:
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
            difference = held_difference(spec, result, kind, header, plain_dtype(dtype))
            if difference is not None:
                raise SpecError("resume", _not_this_sweep(path, spec, difference))
            if not result.failed:
                last = result.text
            count += 1
            failed += result.failed
    profile = None
    if last is not None:
        profile = record_profile(last, kind, header, _plain(measure.measure_on) != "auto")
    return Held(count, failed, keep, profile), specs


def plain_dtype(dtype: Dtype | str) -> str:
    return _plain(dtype)


def _plain(value: Any) -> str:
    return str(value.value) if isinstance(value, Enum) else str(value)


def _checked(
    records: Iterator[library.Record],
    profile: dict[str, Any] | None,
    path: Path,
    fmt: BatchFormat,
    exact_on: bool,
) -> Iterator[library.Record]:
    """The run's records, once its first report says the options that made RESULTS's last
    report (``profile``): read ahead to that report, before anything is written."""
    from convcalc.output.formats import BATCH_COLUMNS, batch_record
    from convcalc.sources.batch import record_profile, signature_difference

    header = ",".join(BATCH_COLUMNS) + "\n"
    ahead: list[library.Record] = []
    if profile is not None:
        for record in records:
            ahead.append(record)
            made = record_profile(batch_record(record, fmt.value), fmt.value, header, exact_on)
            if made is not None:
                difference = signature_difference(profile, made)
                if difference is not None:
                    raise SpecError(
                        "resume",
                        f"--resume {path}: its records were made with other options than this "
                        f"run's ({difference}): the results of another sweep",
                    )
                break
    return itertools.chain(ahead, records)


def _not_this_sweep(path: Path, spec: Any, difference: str) -> str:
    return (
        f"--resume {path}: its record of spec index {spec.index} is not what this run makes of "
        f"that spec ({difference}): the results of another sweep (other specs, or options such "
        "as --formula-only, --memory, --dtype)"
    )


def _append(path: Path, keep: int) -> IO[str]:
    """RESULTS open for appending, created if missing, cut to ``keep`` bytes (a truncated
    last line goes)."""
    try:
        stream = path.open("r+" if path.exists() else "w", encoding="utf-8", newline="")
    except OSError as error:
        raise SpecError("resume", f"--resume {path}: {error.strerror or error}") from None
    stream.seek(keep)
    stream.truncate()
    return stream


@contextmanager
def _open_results(path: Path, option: str = "") -> Iterator[Iterator[str]]:
    """``option``: how messages name the file's option ("--resume ")."""
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


@contextmanager
def _output(stream: IO[str] | None) -> Iterator[IO[str]]:
    if stream is None:
        yield sys.stdout
        return
    with stream:
        yield stream


def _merge(names: list[str], fmt: BatchFormat, format_given: bool = False) -> None:
    """Shards' results in input order (each file is in order: a streamed k-way merge), in the
    files' format, or --format's when given (JSONL records become CSV rows or a JSON array;
    CSV rows, a spec's total only, cannot become JSONL)."""
    from convcalc.output.formats import BATCH_COLUMNS, batch_footer, batch_header
    from convcalc.sources.batch import results_format

    if not names:
        raise SpecError("merge", "--merge needs the results files")
    header = ",".join(BATCH_COLUMNS) + "\n"
    kinds = set()
    for name in names:
        with _open_results(Path(name)) as lines:
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
    kind = kinds.pop() if kinds else fmt.value if format_given else "jsonl"
    out = fmt.value if format_given else kind
    if kind == "csv" and out != "csv":
        raise SpecError(
            "merge",
            f"--merge --format {out}: the files hold CSV rows (each spec's total only), which "
            f"cannot become {NAMES[out]}: give --format csv",
        )
    # a first pass checks every file whole (cut, out of order, a spec twice, specs missing)
    # before anything is written; the second writes: two streamed k-way merges, memory flat
    for write in (False, True):
        failed = written = 0
        missing: list[int] = []
        missed = 0
        with contextlib.ExitStack() as stack:
            streams = [
                _records(stack.enter_context(_open_results(Path(name))), name, header)
                for name in names
            ]
            if write:
                sys.stdout.write(batch_header(out))
            last = -1
            for index, text, bad in heapq.merge(*streams):
                if index == last:
                    raise SpecError("merge", f"--merge: the spec of index {index} appears twice")
                if index > last + 1:  # a gap: none of the files holds these specs
                    missed += index - last - 1
                    missing.extend(range(last + 1, min(index, last + 1 + 1000 - len(missing))))
                last = index
                if write:
                    sys.stdout.write(_converted(text, kind, out, written == 0))
                written += 1
                failed += bad
            if write:
                sys.stdout.write(batch_footer(out, written))
        if missed:
            raise SpecError("merge", _missing_message(names, header, missing, missed))
    sys.stdout.flush()
    if failed:
        sys.stderr.write(f"{failed} of {written} specs failed; see their error records\n")
        raise typer.Exit(2)


def _converted(text: str, kind: str, out: str, first: bool) -> str:
    """A record line of a ``kind`` file as --merge writes it in ``out``."""
    if out == kind:
        return text
    if out == "json":
        return ("" if first else ",\n") + text.rstrip("\n")
    import json

    from convcalc.output.formats import batch_row_of

    return batch_row_of(json.loads(text))


def _missing_message(names: list[str], header: str, missing: list[int], missed: int) -> str:
    """What --merge says when specs are in none of the files: the first of them, and which
    shard is missing or stops early, when the files look like shards I/N of one N."""
    from convcalc.sources.batch import guess_shard

    listed = ", ".join(str(i) for i in missing[:5]) + (", ..." if missed > 5 else "")
    noun = "index" if missed == 1 else "indices"
    text = f"--merge: no file holds {missed} of the specs ({noun} {listed})"
    firsts: dict[str, int] = {}
    steps = set()
    for name in names:
        with _open_results(Path(name)) as lines:
            indices = [index for index, _, _ in _records(lines, name, header)]
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


def _records(lines: Iterator[str], name: str, header: str) -> Iterator[tuple[int, str, bool]]:
    from convcalc.sources.batch import read_results

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


def _shows_progress() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CONVCALC_NO_PROGRESS")


@contextmanager
def _progress(total: int) -> Iterator[Callable[[], None]]:
    """A Rich progress bar on stderr, only on a terminal; elsewhere nothing. ``total``: the
    specs to analyse, 0 when not known (no total shown)."""
    if not _shows_progress():
        yield lambda: None
        return
    from convcalc.output.render import progress

    with progress(total or None) as advance:  # type: ignore[arg-type]
        yield advance
