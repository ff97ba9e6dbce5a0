"""``convcalc batch``: sweep many specs in one process, streamed."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from convcalc import library
from convcalc.choices import Dtype, Measure, MeasureOn
from convcalc.cli.emit import read_stdin
from convcalc.cli.options import (
    MEASURE,
    OUTPUT,
    ConvcalcCommand,
    Device,
    DtypeOpt,
    RooflineOptions,
    Time,
    Train,
    progress_line,
    with_groups,
)
from convcalc.core.spec import CLI_LABELS, Labels

app = typer.Typer(rich_markup_mode=None)


class BatchFormat(str, Enum):
    jsonl = "jsonl"
    csv = "csv"
    json = "json"


@app.command(cls=ConvcalcCommand)
@with_groups("roofline")
def batch(
    source: Annotated[
        str,
        typer.Argument(
            metavar="FILE|-",
            help="Specs, one layer each: JSONL objects or CSV rows with a header. Keys: those "
            "of a stack layer (op, out, kernel, stride, padding, ...) and in, size, dims, batch "
            "or input.",
            show_default=False,
        ),
    ],
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
    train: Train = False,
    time: Time = False,
    device: Device = "cpu",
    *,
    roofline: RooflineOptions,
) -> None:
    """Sweep many specs in one process: one result per spec, in input order, each written and
    flushed as soon as it is done. A bad spec gives an error record (its line and message) and
    the others go on; the exit status is then 2.

    Example: convcalc batch sweep.jsonl > results.jsonl
    With --roofline each result carries bytes moved, intensity, bound and the time lower
    bound (CSV columns too): sort a design space by bound time.
    """
    from convcalc.errors import SpecError
    from convcalc.output.formats import batch_footer, batch_header, batch_record

    text = read_stdin() if source == "-" else library.read_source(Path(source), source)
    specs = library.read_sweep(text, source)
    if not specs:
        raise SpecError("source", f"{source}: no specs")
    measure = Measure(
        measure_on,
        train,
        time,
        device,
        roofline=roofline.roofline,
        peak_gflops=roofline.peak_gflops,
        peak_gbps=roofline.peak_gbps,
        recalibrate=roofline.recalibrate,
        progress=progress_line,
    )
    records = library.sweep(specs, dtype=dtype, measure=measure, labels=Labels(CLI_LABELS))
    sys.stdout.write(batch_header(fmt.value))
    failed = written = 0
    with _progress(len(specs)) as advance:
        for record in records:
            sys.stdout.write(batch_record(record, fmt.value, first=written == 0))
            sys.stdout.flush()
            written += 1
            advance()
            if record.error is not None:
                failed += 1
                if fail_fast:
                    break
    sys.stdout.write(batch_footer(fmt.value, written))
    sys.stdout.flush()
    if failed:
        sys.stderr.write(f"{failed} of {len(specs)} specs failed; see their error records\n")
        raise typer.Exit(2)


@contextmanager
def _progress(total: int) -> Iterator[Callable[[], None]]:
    """A Rich progress bar on stderr, only on a terminal; elsewhere nothing."""
    if not sys.stderr.isatty() or total < 2:
        yield lambda: None
        return
    from convcalc.output.render import progress

    with progress(total) as advance:
        yield advance
