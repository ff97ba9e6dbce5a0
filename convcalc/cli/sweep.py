"""``convcalc batch``: sweep many specs, streamed: in one process or --jobs, one machine's --shard,
--resume after a kill, --merge of the shards' results, specs from a file or a --grid."""

from __future__ import annotations

import contextlib
import heapq
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
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
    from convcalc.sources.batch import parse_shard

    names = list(sources or [])
    if merge:
        _merge(names, fmt)
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
    specs = _grid_specs(grid, grid_file, base) if generated else _file_specs(names[0])
    first = next(specs, None)
    if first is None:
        where_from = "--grid" if generated else "<stdin>" if names[0] == "-" else names[0]
        raise SpecError("source", f"{where_from}: no specs")
    specs = _chain(first, specs)
    done, failed_before, stream = _resume(resume, fmt) if resume is not None else (set(), 0, None)
    if done:
        specs = (spec for spec in specs if spec.index not in done)
    records = library.sweep(
        specs,
        dtype=dtype,
        measure=measure,
        labels=Labels(CLI_LABELS),
        jobs=workers,
        shard=where,
    )
    with _output(stream) as out:
        _write(
            records,
            out,
            fmt,
            fail_fast,
            header=not done and stream_is_new(stream),
            earlier=(len(done), failed_before),
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
) -> None:
    """Stream the records; ``earlier``: the records --resume found, and how many failed (the
    exit status and the count cover the whole file)."""
    from convcalc.output.formats import batch_footer, batch_header, batch_record

    if header:
        out.write(batch_header(fmt.value))
    failed = written = 0
    with _progress(0) as advance:
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


def _grid_specs(grid: str | None, grid_file: Path | None, base: dict[str, Any]) -> Iterator[Any]:
    from convcalc.sources.batch import parse_grid, read_grid_file

    if grid is not None and grid_file is not None:
        raise SpecError("grid", "give --grid or --grid-file, not both")
    if grid_file is not None:
        axes = read_grid_file(library.read_source(grid_file, str(grid_file)), str(grid_file))
    else:
        axes = parse_grid(grid or "")
    return library.sweep_grid(axes, base)


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


def _resume(path: Path, fmt: BatchFormat) -> tuple[set[int], int, IO[str]]:
    """The indices RESULTS already holds, how many of those are error records, and RESULTS
    open for appending (a truncated last line cut off). Nothing is written to it before it is
    known to be convcalc's output."""
    from convcalc.output.formats import BATCH_COLUMNS
    from convcalc.sources.batch import read_results, results_kind

    done: set[int] = set()
    keep = failed_before = 0
    if path.exists():
        header = ",".join(BATCH_COLUMNS) + "\n"
        consumed = [0]

        def counted(lines: Iterator[str]) -> Iterator[str]:
            for line in lines:
                consumed[0] += len(line.encode("utf-8"))
                yield line

        with _open_results(path) as lines:
            head = next(lines, "")
            if head.strip() and results_kind(head) != fmt.value:
                kind = results_kind(head)
                raise SpecError(
                    "resume", f"{path}: holds {kind} records: resume it with --format {kind}"
                )
            for what, result in read_results(counted(_chain(head, lines)), str(path), header):
                if what == "truncated":
                    break
                if result is not None:
                    done.add(result.index)
                    failed_before += result.failed
                keep = consumed[0]
    try:
        stream = path.open("r+" if path.exists() else "w", encoding="utf-8", newline="")
    except OSError as error:
        raise SpecError("resume", f"{path}: {error.strerror or error}") from None
    stream.seek(keep)
    stream.truncate()
    return done, failed_before, stream


@contextmanager
def _open_results(path: Path) -> Iterator[Iterator[str]]:
    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as error:
        raise SpecError("results", f"{path}: {error.strerror or error}") from None
    with handle:

        def lines() -> Iterator[str]:
            try:
                yield from handle
            except UnicodeDecodeError:
                raise SpecError("results", f"{path}: not convcalc batch output") from None

        yield lines()


@contextmanager
def _output(stream: IO[str] | None) -> Iterator[IO[str]]:
    if stream is None:
        yield sys.stdout
        return
    with stream:
        yield stream


def _merge(names: list[str], fmt: BatchFormat) -> None:
    """Shards' results in input order (each file is in order: a streamed k-way merge)."""
    from convcalc.output.formats import BATCH_COLUMNS

    if not names:
        raise SpecError("merge", "--merge needs the results files")
    header = ",".join(BATCH_COLUMNS) + "\n"
    kinds = set()
    for name in names:
        with _open_results(Path(name)) as lines:
            first = next(lines, "")
        if first.strip():
            kinds.add("jsonl" if first.lstrip().startswith("{") else "csv")
    if len(kinds) > 1:
        raise SpecError("merge", "--merge: the files mix JSONL and CSV")
    kind = kinds.pop() if kinds else "jsonl"
    # a first pass checks every file whole (cut, out of order, a spec twice) before anything
    # is written; the second writes: two streamed k-way merges, memory flat
    for write in (False, True):
        failed = written = 0
        with contextlib.ExitStack() as stack:
            streams = [
                _records(stack.enter_context(_open_results(Path(name))), name, header)
                for name in names
            ]
            if write and kind == "csv":
                sys.stdout.write(header)
            last = -1
            for index, text, bad in heapq.merge(*streams):
                if index == last:
                    raise SpecError("merge", f"--merge: the spec of index {index} appears twice")
                last = index
                if write:
                    sys.stdout.write(text)
                written += 1
                failed += bad
    sys.stdout.flush()
    if failed:
        sys.stderr.write(f"{failed} of {written} specs failed; see their error records\n")
        raise typer.Exit(2)


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


@contextmanager
def _progress(total: int) -> Iterator[Callable[[], None]]:
    """A Rich progress bar on stderr, only on a terminal; elsewhere nothing."""
    if not sys.stderr.isatty() or os.environ.get("CONVCALC_NO_PROGRESS"):
        yield lambda: None
        return
    from convcalc.output.render import progress

    with progress(total or None) as advance:  # type: ignore[arg-type]
        yield advance
