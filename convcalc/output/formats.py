"""Every output format, chosen in one place: ``write(report, fmt)``. Machine formats (json, jsonl,
csv, markdown) need only the standard library; ``table`` loads Rich (convcalc.render) on use, and
``json`` is imported where it is written (the table path does not load it: start-up)."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterable
from typing import IO, Any

FORMATS = ("table", "json", "jsonl", "csv", "markdown")

#: CSV columns, in order: stable from this version on (later versions may append)
CSV_COLUMNS = (
    "kind",
    "version",
    "index",
    "name",
    "op",
    "input_shape",
    "output_shape",
    "output_shape_formula",
    "params",
    "params_formula",
    "macs",
    "macs_formula",
    "flops",
    "flops_formula",
    "bias_adds",
    "receptive_field",
    "receptive_field_formula",
    "cumulative_receptive_field",
    "effective_stride",
    "effective_padding",
    "memory_output_bytes",
    "memory_total_bytes",
    "backward_flops",
    "backward_flops_formula",
    "train_flops",
    "latency_ms",
    "gflops_per_s",
    "agree",
    # memory a GPU budget is planned on (appended: the columns above keep their places)
    "saved_for_backward_bytes",
    "saved_for_backward_bytes_formula",
    "peak_inference_bytes",
    "peak_inference_bytes_formula",
    "forward_backward_torchsummary_bytes",
    "training_step_bytes",
    "training_step_bytes_formula",
    "optimizer",
    "fit_memory_limit_bytes",
    "fit_max_batch_training",
    "fit_max_batch_inference",
    # the roofline (--roofline, --time; appended): a total row's are the layers' summed, its
    # bound "compute", "memory" or "mixed", its intensity all FLOPs over all bytes
    "bytes_moved",
    "intensity",
    "bound",
    "time_lower_bound_s",
    "time_s",
    "achieved_flops_per_s",
    "fraction_of_bound",
)


def write(
    report: Any,
    fmt: str,
    file: IO[str] | None = None,
    *,
    no_color: bool = False,
    detail: bool = False,
) -> None:
    """Write a report (or a comparison) to ``file`` (stdout) in ``fmt``."""
    stream = file or sys.stdout
    if fmt == "table":
        from convcalc.output.render import render_table

        render_table(report, stream, no_color=no_color, detail=detail)
        return
    import json

    data = report.to_dict()
    if data.get("command") == "solve":
        _write_solution(data, fmt, stream)
        return
    if fmt == "json":
        stream.write(json.dumps(data, indent=2) + "\n")
    elif fmt == "jsonl":
        for row in jsonl_rows(data):
            stream.write(json.dumps(row) + "\n")
    elif fmt == "csv":
        stream.write(csv_text(flat_rows(data)))
    elif fmt == "markdown":
        stream.write(markdown(data))
    else:
        raise ValueError(f"unknown format {fmt!r}")


def _reports(data: dict[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    """The report dicts in a payload: itself, or each version of a comparison."""
    if "versions" in data:
        for version in data["versions"]:
            yield version["name"], version
    else:
        yield "", data


def _total_source(report: dict[str, Any]) -> dict[str, Any]:
    """The total row's word on what it holds (JSON's ``total_source``, ``total_by_formula``)."""
    return {key: report[key] for key in ("total_source", "total_by_formula") if key in report}


def _device(report: dict[str, Any]) -> dict[str, Any]:
    """The roofline's ``device`` object (JSON's) for the total line, so that the lines carry
    JSON's keys: the peaks every layer line's bound and intensity are set against."""
    return {"device": report["device"]} if report.get("device") else {}


def jsonl_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One object per layer, then the total (per version of a comparison)."""
    rows: list[dict[str, Any]] = []
    for version, report in _reports(data):
        extra = {"version": version} if version else {}
        for index, layer in enumerate(report["layers"]):
            rows.append({"kind": "layer", **extra, "index": index, **layer})
        rows.append({"kind": "total", **extra, **report["total"], "agree": report["agree"]})
        rows[-1].update(_total_source(report))
        rows[-1].update(_device(report))
    return rows


def _shape(value: Any) -> Any:
    if isinstance(value, list) and all(isinstance(v, int | float) for v in value):
        return "x".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return value


def _pair(value: Any, side: str) -> Any:
    return value.get(side) if isinstance(value, dict) else value


def flat_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows for CSV: measured and formula side by side, shapes as 1x256x224x224."""
    rows: list[dict[str, Any]] = []
    for version, report in _reports(data):
        for index, layer in enumerate(report["layers"]):
            cumulative = layer.get("cumulative", {})
            backward = layer.get("backward_flops")
            rows.append(
                {
                    "kind": "layer",
                    "version": version,
                    "index": index,
                    "name": layer["name"],
                    "op": layer["spec"]["op"],
                    "input_shape": _shape(layer["input_shape"]),
                    "output_shape": _shape(_pair(layer["output_shape"], "measured")),
                    "output_shape_formula": _shape(_pair(layer["output_shape"], "formula")),
                    "params": _pair(layer["params"], "measured"),
                    "params_formula": _pair(layer["params"], "formula"),
                    "macs": _pair(layer["macs"], "measured"),
                    "macs_formula": _pair(layer["macs"], "formula"),
                    "flops": _pair(layer["flops"], "measured"),
                    "flops_formula": _pair(layer["flops"], "formula"),
                    "bias_adds": layer["bias_adds"],
                    "receptive_field": _shape(_pair(layer["receptive_field"], "measured")),
                    "receptive_field_formula": _shape(_pair(layer["receptive_field"], "formula")),
                    "cumulative_receptive_field": _shape(cumulative.get("receptive_field")),
                    "effective_stride": _shape(cumulative.get("effective_stride")),
                    "effective_padding": _shape(cumulative.get("effective_padding")),
                    "memory_output_bytes": (layer["memory_bytes"] or {}).get("output"),
                    "memory_total_bytes": (layer["memory_bytes"] or {}).get("total"),
                    "backward_flops": _pair(backward, "measured"),
                    "backward_flops_formula": _pair(backward, "formula"),
                    "latency_ms": layer.get("latency_ms"),
                    "gflops_per_s": layer.get("gflops_per_s"),
                    "agree": layer["agree"],
                    **_memory_columns(layer.get("memory_bytes"), layer.get("memory_bytes_formula")),
                    **_roofline_columns(layer.get("roofline")),
                }
            )
        total = report["total"]
        formula = total.get("formula", {})
        rows.append(
            {
                "kind": "total",
                "version": version,
                "name": "total",
                "input_shape": _inputs_csv(report) or _shape(report["input_shape"]),
                "output_shape": _shape(total["output_shape"]),
                "output_shape_formula": _shape(formula.get("output_shape")),
                "params": total["params"],
                "params_formula": formula.get("params"),
                "macs": total["macs"],
                "macs_formula": formula.get("macs"),
                "flops": total["flops"],
                "flops_formula": formula.get("flops"),
                "bias_adds": total["bias_adds"],
                "cumulative_receptive_field": _shape(total["receptive_field"]),
                "effective_stride": _shape(total.get("effective_stride")),
                "effective_padding": _shape(total.get("effective_padding")),
                "memory_total_bytes": (total["memory_bytes"] or {}).get("total"),
                "train_flops": total.get("train_flops"),
                "latency_ms": total.get("latency_ms"),
                "gflops_per_s": total.get("gflops_per_s"),
                "agree": report["agree"],
                **_memory_columns(total.get("memory_bytes"), formula.get("memory_bytes")),
                **_fit_columns(total),
                **_roofline_columns(_total_roofline(total.get("roofline"))),
            }
        )
    return rows


def _roofline_columns(roofline: Any) -> dict[str, Any]:
    """A layer's (or the total's) roofline CSV columns; empty without --roofline."""
    roofline = roofline if isinstance(roofline, dict) else {}
    keys = ("bytes_moved", "intensity", "bound", "time_lower_bound_s", "time_s")
    columns = {key: roofline.get(key) for key in keys}
    columns["achieved_flops_per_s"] = roofline.get("achieved_flops_per_s")
    columns["fraction_of_bound"] = roofline.get("fraction_of_bound")
    return columns


def _total_roofline(roofline: Any) -> dict[str, Any] | None:
    if not isinstance(roofline, dict):
        return None
    compute = roofline.get("layers_compute_bound", 0)
    memory = roofline.get("layers_memory_bound", 0)
    bound = "mixed" if compute and memory else "compute" if compute else "memory"
    return {**roofline, "bound": bound if compute or memory else None}


def _memory_columns(measured: Any, formula: Any) -> dict[str, Any]:
    """The memory CSV columns of a layer or total: measured (None where not) and formula."""
    measured = measured if isinstance(measured, dict) else {}
    formula = formula if isinstance(formula, dict) else {}

    def step_total(memory: dict[str, Any]) -> Any:
        step = memory.get("training_step")
        return step.get("total") if isinstance(step, dict) else None

    return {
        "saved_for_backward_bytes": measured.get("saved_for_backward"),
        "saved_for_backward_bytes_formula": formula.get("saved_for_backward"),
        "peak_inference_bytes": measured.get("peak_inference"),
        "peak_inference_bytes_formula": formula.get("peak_inference"),
        "forward_backward_torchsummary_bytes": measured.get(
            "forward_backward_torchsummary", formula.get("forward_backward_torchsummary")
        ),
        "training_step_bytes": step_total(measured),
        "training_step_bytes_formula": step_total(formula),
    }


def _fit_columns(total: dict[str, Any]) -> dict[str, Any]:
    fit = total.get("fit") or {}
    return {
        "optimizer": total.get("optimizer"),
        "fit_memory_limit_bytes": fit.get("memory_limit_bytes"),
        "fit_max_batch_training": fit.get("max_batch_training"),
        "fit_max_batch_inference": fit.get("max_batch_inference"),
    }


def csv_text(
    rows: list[dict[str, Any]], header: bool = True, columns: tuple[str, ...] = CSV_COLUMNS
) -> str:
    import csv  # here, not at import: start-up of the other formats (docs/benchmarks.md)

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(v) for k, v in row.items()})
    return buffer.getvalue()


def _csv_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, list | dict):
        import json

        return json.dumps(value)
    return value


def _md_figure(value: Any) -> str:
    measured, formula = _pair(value, "measured"), _pair(value, "formula")
    if (
        isinstance(value, dict)
        and measured != formula
        and measured is not None
        and (formula is not None)
    ):
        return f"**{_md(measured)} ≠ {_md(formula)}**"
    return _md(measured if measured is not None else formula)


def _md(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "✓" if value else "✗"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list):
        return "×".join(str(v) for v in value)
    return md_escape(str(value))


#: characters that end a Markdown table cell or start a code span or an HTML tag
_MD_SPECIAL = "\\|`<"


def md_escape(text: str) -> str:
    """``text`` as one Markdown table cell, shown as written: a backslash, a pipe, a backtick
    or a ``<`` is backslash-escaped (a bare ``|`` would split the cell), and a line break becomes
    ``<br>`` (a newline would end the row)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    escaped = ["".join("\\" + c if c in _MD_SPECIAL else c for c in line) for line in lines]
    return "<br>".join(escaped)


def md_code(text: str) -> str:
    """``text`` as code in a Markdown table cell (a layer's name). A name a code span cannot hold
    as written (a pipe, backslash, backtick or line break) is shown escaped as plain text
    instead."""
    if any(c in text for c in "|\\`\r\n"):
        return md_escape(text)
    return f"`{text}`"


def _inputs_csv(report: dict[str, Any]) -> str | None:
    """The total row's ``input_shape`` cell of a model whose forward takes several, integer or
    keyword inputs (JSON's ``inputs``): every input, ``;``-separated, each
    ``[name=]shape:dtype``; None (the cell is ``input_shape``) for one input of ``dtype``."""
    entries = report.get("inputs")
    if not entries or (
        len(entries) == 1 and entries[0]["name"] is None and entries[0]["dtype"] == report["dtype"]
    ):
        return None
    return ";".join(
        (f"{e['name']}=" if e["name"] else "") + _shape(e["shape"]) + f":{e['dtype']}"
        for e in entries
    )


def _inputs_shown(report: dict[str, Any], shape: str) -> str:
    """Markdown's header input: every input of a model's forward where it takes several,
    integer or keyword ones (``inputs``), else ``input_shape``."""
    from convcalc.core.modelinput import several_shown

    several = several_shown(report.get("inputs"), report["dtype"])
    return f"inputs {md_escape(several)}" if several is not None else f"input {shape}"


def markdown(data: dict[str, Any]) -> str:
    """A Markdown table per report (per version of a comparison), fit for a README or a PR."""
    parts: list[str] = []
    for version, report in _reports(data):
        title = f"convcalc {report['command']}"
        if version:
            title += f" — {version}"
        shape = "×".join(map(str, report["input_shape"]))
        parts.append(f"**{title}** on {_inputs_shown(report, shape)} ({report['dtype']})\n")
        head = [
            "layer",
            "op",
            "output shape",
            "params",
            "MACs",
            "FLOPs",
            "receptive field",
            "cumulative RF",
            "agree",
        ]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for layer in report["layers"]:
            cumulative = layer.get("cumulative", {})
            cells = [
                md_code(layer["name"]),
                _md(layer["spec"]["op"]),
                _md_figure(layer["output_shape"]),
                _md_figure(layer["params"]),
                _md_figure(layer["macs"]),
                _md_figure(layer["flops"]),
                _md_figure(layer["receptive_field"]),
                _md(cumulative.get("receptive_field")),
                _md(layer["agree"]),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        total = report["total"]
        cells = [
            "**total**",
            "",
            _md(total["output_shape"]),
            _md(total["params"]),
            _md(total["macs"]),
            _md(total["flops"]),
            "",
            ("≥ " if report.get("receptive_field_at_least") else "")
            + _md(total["receptive_field"]),
            _md(report["agree"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
        parts.append("\n".join(lines) + "\n")
        memory_line = _md_memory(total)
        if memory_line:
            parts.append(memory_line)
        if report.get("device"):
            parts.append(_md_roofline(report))
        parts.append(
            "MACs: fvcore's count (1 per multiply-add); FLOPs: torch's (2 per "
            "multiply-add); neither counts bias.\n"
        )
    return "\n".join(parts)


def _md_roofline(report: dict[str, Any]) -> str:
    """The roofline: the device's peaks, then a row per layer and the total."""
    device = report["device"]
    head = "Roofline on {} {} ({}): peak {:,.1f} GFLOP/s, {:,.1f} GB/s, ridge {:,.2f} FLOP/B.\n"
    head = head.format(
        device["name"],
        device["dtype"],
        "measured" if device["measured"] else "given",
        device["peak_flops_per_s"] / 1e9,
        device["peak_bytes_per_s"] / 1e9,
        device["ridge_flops_per_byte"],
    )
    columns = ["layer", "bytes moved", "FLOP/B", "bound", "bound ms", "time ms", "of bound"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]

    def ms(value: Any) -> str:
        return "—" if value is None else f"{value * 1e3:,.4f}"

    def cells(name: str, roof: dict[str, Any]) -> str:
        fraction = roof.get("fraction_of_bound")
        intensity = roof.get("intensity")
        values = [
            name,
            _md(roof.get("bytes_moved")),
            "—" if intensity is None else f"{intensity:,.2f}",
            _md(roof.get("bound")),
            ms(roof.get("time_lower_bound_s")),
            ms(roof.get("time_s")),
            "—" if fraction is None else f"{fraction:.0%}",
        ]
        return "| " + " | ".join(values) + " |"

    for layer in report["layers"]:
        lines.append(cells(f"`{layer['name']}`", layer.get("roofline") or {}))
    total = _total_roofline(report["total"].get("roofline")) or {}
    lines.append(cells("**total**", total))
    return head + "\n".join(lines) + "\n"


def _md_memory(total: dict[str, Any]) -> str:
    """The network's memory, measured (≠ formula, in bold, where they differ), one line."""
    measured = total.get("memory_bytes") or {}
    formula = (total.get("formula") or {}).get("memory_bytes") or {}
    if "saved_for_backward" not in measured:
        return ""

    def figure(key: str) -> str:
        return _md_figure({"measured": measured.get(key), "formula": formula.get(key)})

    def step(memory: dict[str, Any]) -> Any:
        value = memory.get("training_step")
        return value.get("total") if isinstance(value, dict) else None

    parts = [
        f"saved for backward {figure('saved_for_backward')} B",
        f"peak inference {figure('peak_inference')} B",
        f"training step ({total.get('optimizer', '')}) "
        + (f"{_md(step(measured))} B measured, " if step(measured) is not None else "")
        + f"{_md(step(formula))} B by formula (an upper bound)",
        f"torchsummary's forward/backward {_md(measured.get('forward_backward_torchsummary'))} B",
    ]
    if step(measured) is None and step(formula) is None:  # a user's model without --train
        parts[2] = "training step not measured"
    fit = total.get("fit")
    if fit:
        parts.append(
            f"fits {fit['memory_limit']} ({fit['dtype']}): batch "
            f"{_md(fit['max_batch_training'])} training, {_md(fit['max_batch_inference'])} "
            "inference"
        )
    return "Memory: " + "; ".join(parts) + ".\n"


def solution_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """``convcalc solve``: a row per answer (per spatial dimension when they differ)."""
    rows = []
    for axis in data["axes"]:
        for rank, answer in enumerate(axis["answers"], start=1):
            rows.append(
                {
                    "axis": axis["axis"],
                    "rank": rank,
                    "size": axis["size"],
                    "target": axis["target"],
                    **answer,
                }
            )
    return rows


SOLUTION_COLUMNS = (
    "axis",
    "rank",
    "size",
    "target",
    "padding",
    "stride",
    "dilation",
    "output_padding",
    "kernel",
    "output_size",
    "receptive_field",
    "layer",
    "verified",
)


def _write_solution(data: dict[str, Any], fmt: str, stream: IO[str]) -> None:
    import json

    rows = solution_rows(data)
    if fmt == "json":
        stream.write(json.dumps(data, indent=2) + "\n")
    elif fmt == "jsonl":
        for row in rows:
            stream.write(json.dumps(row) + "\n")
    elif fmt == "csv":
        stream.write(csv_text(rows, columns=SOLUTION_COLUMNS))
    else:  # markdown
        head = [
            "axis",
            "padding",
            "stride",
            "dilation",
            "output size",
            "receptive field",
            "layer",
            "verified",
        ]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in rows:
            lines.append(
                "| "
                + " | ".join(
                    _md(row.get(k))
                    for k in (
                        "axis",
                        "padding",
                        "stride",
                        "dilation",
                        "output_size",
                        "receptive_field",
                        "layer",
                        "verified",
                    )
                )
                + " |"
            )
        stream.write("\n".join(lines) + "\n")
        for note in data["notes"]:
            stream.write(f"\n{note}\n")


# --- sweep records (convcalc batch) -------------------------------------------------------------

#: batch's CSV columns: the spec's line, its index (JSONL's "index": from 0, stable across
#: shards, what --resume and --merge go by; "index" in CSV is a layer's) and its error, then a
#: report's total row
BATCH_COLUMNS = ("line", "spec_index", "error", *CSV_COLUMNS)


def batch_header(fmt: str) -> str:
    """What a batch output starts with (CSV: the header; JSON: the array's opening)."""
    if fmt == "csv":
        return csv_text([], header=True, columns=BATCH_COLUMNS)
    return "[\n" if fmt == "json" else ""


#: json.dumps's own settings without its check for circular references (a record is a tree
#: of fresh dicts and lists): the same bytes, ~10 % less time a record (docs/benchmarks.md);
#: made at the first record (json is imported where JSON is written)
_RECORD_JSON: list[Callable[[Any], str]] = []


def batch_record(record: Any, fmt: str, first: bool = True) -> str:
    """One sweep record (convcalc.library.Record) as a JSONL line, a CSV row (the report's total
    row), or an element of a JSON array."""
    if not _RECORD_JSON:
        import json

        _RECORD_JSON.append(json.JSONEncoder(check_circular=False).encode)
    encode = _RECORD_JSON[0]
    data = record.to_dict()
    if fmt == "jsonl":
        return encode(data) + "\n"
    if fmt == "json":
        return ("" if first else ",\n") + encode(data)
    if record.report is None:
        return csv_text([{**data, "spec_index": record.index}], header=False, columns=BATCH_COLUMNS)
    total = flat_rows(data)[-1]
    row = {**total, "line": record.line, "spec_index": record.index}
    return csv_text([row], header=False, columns=BATCH_COLUMNS)


def batch_row_of(data: dict[str, Any]) -> str:
    """A JSONL batch record, read back (its dict), as the CSV row ``batch --format csv`` writes
    for the same spec (``batch --merge --format csv``)."""
    if "error" in data:
        return csv_text(
            [{**data, "spec_index": data["index"]}], header=False, columns=BATCH_COLUMNS
        )
    row = {**flat_rows(data)[-1], "line": data["line"], "spec_index": data["index"]}
    return csv_text([row], header=False, columns=BATCH_COLUMNS)


def batch_footer(fmt: str, count: int) -> str:
    return ("\n]\n" if count else "]\n") if fmt == "json" else ""
