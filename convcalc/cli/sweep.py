"""``convcalc batch``: sweep many specs, streamed: in one process or --jobs, one machine's --shard,
--resume after a kill, --merge of the shards' results, specs from a file or a --grid."""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import IO, Annotated

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
    from convcalc.sources.batch import parse_shard

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
    library.check_sweep_measure(measure, Labels(CLI_LABELS))
    axes = library.sweep_axes(grid, grid_file) if generated else None
    specs = library.sweep_grid(axes, base) if axes is not None else library.sweep_file(names[0])
    first = next(specs, None)
    if first is None:
        where_from = "--grid" if generated else "<stdin>" if names[0] == "-" else names[0]
        raise SpecError("source", f"{where_from}: no specs")
    specs = itertools.chain([first], specs)
    found = None
    if resume is not None:
        # the same sweep's, checked before anything is written
        given = fmt.value if _format_given(context) else None
        found = library.held(
            resume,
            specs,
            format=given,
            dtype=dtype,
            measure=measure,
            shard=where,
            labels=Labels(CLI_LABELS),
        )
    done = found.count if found is not None else 0
    total = None
    if _shows_progress():
        total = library.sweep_size(names[0] if names else None, axes, where, done)
    if resume is not None and found is not None:
        appended = library.resume(
            resume, found, dtype=dtype, measure=measure, labels=Labels(CLI_LABELS), jobs=workers
        )
        with contextlib.closing(appended):
            _write(appended, None, fmt, fail_fast, (found.count, found.failed), total)
        return
    records = library.sweep(
        specs,
        dtype=dtype,
        measure=measure,
        labels=Labels(CLI_LABELS),
        jobs=workers,
        shard=where,
    )
    _write(records, sys.stdout, fmt, fail_fast, total=total)


def _write(
    records: Iterable[library.Record],
    out: IO[str] | None,
    fmt: BatchFormat,
    fail_fast: bool,
    earlier: tuple[int, int] = (0, 0),
    total: int | None = None,
) -> None:
    """Stream the records to ``out`` (None: library.resume appends them to its file);
    ``earlier``: the records --resume found, and how many failed (the exit status and the
    count cover the whole file); ``total``: the records to write, when known (the progress
    bar's)."""
    from convcalc.output.formats import batch_footer, batch_header, batch_record

    if out is not None:
        out.write(batch_header(fmt.value))
    failed = written = 0
    with _progress(total or 0) as advance:
        for record in records:
            if out is not None:
                out.write(batch_record(record, fmt.value, first=written == 0))
                out.flush()
            written += 1
            advance()
            if record.error is not None:
                failed += 1
                if fail_fast:
                    break
    if out is not None:
        out.write(batch_footer(fmt.value, written))
        out.flush()
    failed += earlier[1]
    written += earlier[0]
    if failed:
        sys.stderr.write(f"{failed} of {written} specs failed; see their error records\n")
        raise typer.Exit(2)


def _format_given(context: typer.Context) -> bool:
    """Whether --format was given (on the command line, or by an environment variable), not
    left at its default."""
    source = context.get_parameter_source("fmt")
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _merge(names: list[str], fmt: BatchFormat, format_given: bool = False) -> None:
    """Shards' results in input order (library.merge), on stdout."""
    merged = library.merge(names, fmt.value if format_given else None, labels=Labels(CLI_LABELS))
    for text in merged:
        sys.stdout.write(text)
    sys.stdout.flush()
    if merged.failed:
        sys.stderr.write(
            f"{merged.failed} of {merged.count} specs failed; see their error records\n"
        )
        raise typer.Exit(2)


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
