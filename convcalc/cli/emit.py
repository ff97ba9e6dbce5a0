"""The output stage every command shares: write the result in the chosen format, print its
warnings on stderr, then let --expect and --strict decide the exit status."""

from __future__ import annotations

import sys
from typing import Any

from convcalc.choices import Format
from convcalc.cli.exits import CheckFailed
from convcalc.cli.options import OutputOptions


def check_output(output: OutputOptions) -> None:
    """Malformed --get or --expect fail before any work (invalid input, exit 2)."""
    from convcalc.errors import SpecError

    for path in output.get:
        if not path.strip():
            raise SpecError("get", "--get needs a path, like total.params")
    if output.get and output.fmt not in (Format.table, Format.json):
        # --get writes the values alone (JSON for anything composite): another format would
        # be ignored, so the combination is refused rather than silently half-honoured
        raise SpecError(
            "get",
            f"--get prints the value alone: it does not go with --format {output.fmt.value} "
            "(give one of them)",
        )
    if output.expect:  # core.query is loaded only when asked for (start-up: docs/benchmarks.md)
        from convcalc.core.query import parse_expectation

        for text in output.expect:
            parse_expectation(text)


def emit(result: Any, output: OutputOptions) -> None:
    """Write ``result`` (any of the library's result types) and decide the exit status. A bad
    --get or --expect path is invalid input: it fails before anything is written."""
    from convcalc.output.formats import write

    if output.conventions:
        result = result.with_conventions()
    failures: list[str] = []
    if output.get or output.expect:  # core.query only then (start-up: docs/benchmarks.md)
        from convcalc.core.query import (
            check_all,
            format_value,
            get_path,
            lower_bound_note,
            parse_expectation,
        )

        data = result.to_dict()
        failures = check_all(data, [parse_expectation(text) for text in output.expect])
        values = [get_path(data, path) for path in output.get]
        if output.get:
            sys.stdout.write("".join(format_value(value) + "\n" for value in values))
            for path in output.get:
                note = lower_bound_note(data, path)
                if note:
                    sys.stderr.write(f"note: {note}\n")
    if not output.get:
        write(result, output.fmt.value, no_color=output.no_color, detail=output.detail)
    sys.stdout.flush()
    if output.fmt != Format.json or output.get:  # JSON carries them in its "warnings" list
        for line in result.warnings:
            sys.stderr.write(f"warning: {line}\n")
    if output.strict and result.agree is False:
        failures.append(
            "measured and formula disagree (--strict): "
            + ", ".join(result.disagreements)
            + _larger_storage(result)
        )
    if output.strict:  # work no rule counts: no disagreement, but a total known to be short
        failures += [f"--strict: {w}" for w in _no_rule(result)]
    if failures:
        raise CheckFailed(failures)


def _no_rule(result: Any) -> list[str]:
    from convcalc.core.report import NO_RULE

    return [w for w in getattr(result, "warnings", ()) if NO_RULE in w]


def _larger_storage(result: Any) -> str:
    """Where a disagreeing peak has its explanation (an op's output held in a larger storage,
    counted whole: torch's CPU kernel for 3-D transposed convolutions)."""
    from convcalc.core.memory import LARGER_STORAGE

    sources = getattr(result, "sources", None)
    if not isinstance(sources, dict) or LARGER_STORAGE not in sources.get(
        "memory_peak_inference", ""
    ):
        return ""
    if not any(str(name).endswith("peak_inference") for name in result.disagreements):
        return ""
    return (
        " (the peak counts an output torch's kernel held in a storage larger than its "
        "elements: sources.memory_peak_inference)"
    )


def read_stdin() -> str:
    """Standard input's text (``-`` for a file argument); not UTF-8 is invalid input, as for a
    file."""
    from convcalc.errors import SpecError

    data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read()
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SpecError("source", f"<stdin>: not UTF-8 text (byte {error.start})") from None
