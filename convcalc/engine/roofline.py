"""The roofline (issue 14): bytes moved, intensity, bound and time per layer on the device's
peaks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from convcalc.choices import check_device_name
from convcalc.core.report import LayerReport, Report
from convcalc.core.spec import DTYPE_BYTES, Node
from convcalc.engine.plan import Options
from convcalc.errors import SpecError

#: the top layers of total.roofline, by measured time (or by bound time when not timed)
ROOFLINE_TOP = 5


def _asks_for_peaks(options: Options) -> bool:
    """Anything that asks for the roofline's peaks: --roofline, --time, either peak (a lone one
    is refused by roofline.validate_peaks) or --recalibrate; without any, resolve_peaks is
    None whatever else is set."""
    return bool(
        options.roofline
        or options.time
        or options.recalibrate
        or options.peak_gflops is not None
        or options.peak_gbps is not None
    )


def resolve_peaks(options: Options, dtype: str) -> Any:
    """The device's peaks for the roofline (a :class:`convcalc.core.roofline.Peaks`), or None
    without --roofline, --time, given peaks or --recalibrate (each asks for it): given
    (nothing measured), resolved already, or from the cache (measured there first when absent,
    or with ``recalibrate``)."""
    if not _asks_for_peaks(options):  # the roofline module is not even loaded (start-up)
        return None
    from convcalc.core.roofline import given_peaks, validate_peaks

    given = validate_peaks(options.peak_gflops, options.peak_gbps)
    # giving the peaks, or asking to measure them again, asks for the roofline too
    if not (options.roofline or options.time or given is not None or options.recalibrate):
        return None
    if options.peaks is not None:
        return options.peaks
    device = check_device_name(options.device)
    if given is not None:
        if options.recalibrate:
            raise SpecError(
                "recalibrate",
                "--recalibrate measures the peaks: it does not go with --peak-gflops/--peak-gbps",
            )
        assert options.peak_gflops is not None and options.peak_gbps is not None
        threads = None
        if not options.formula_only:
            from convcalc.measure.timing import cpu_threads  # torch: loaded to measure anyway

            threads = cpu_threads() if device == "cpu" else None
        return given_peaks(options.peak_gflops, options.peak_gbps, device, dtype, threads)
    if options.formula_only and options.recalibrate:  # name what the user gave
        raise SpecError(
            "recalibrate",
            "--recalibrate: measuring the device's peaks needs torch; it cannot run with "
            "--formula-only",
        )
    if options.formula_only:
        raise SpecError(
            "peak_gflops",
            "--roofline with --formula-only needs --peak-gflops and --peak-gbps (measuring "
            "the device's peaks needs torch)",
        )
    from convcalc.measure.calibrate import cached_peaks

    return cached_peaks(device, dtype, recalibrate=options.recalibrate, progress=options.progress)


def with_peaks(options: Options | None, dtype: str) -> Options | None:
    """``options`` with its peaks resolved once (compare and batch: several reports, one
    calibration)."""
    if options is None:
        return None
    peaks = resolve_peaks(options, dtype)
    return options if peaks is None else replace(options, peaks=peaks)


#: the shape kinds whose output is a view of (or is) their input: flatten (torch's flatten of
#: a contiguous tensor is a view) and identity; dropout is not (training mode writes a mask)
VIEW_KINDS = ("flatten", "identity")


def _is_view(layer: LayerReport) -> bool:
    from convcalc.kinds.shape import ShapeSpec

    return isinstance(layer.spec, ShapeSpec) and layer.spec.kind in VIEW_KINDS


def _view_roofline(layer: LayerReport, peaks: Any) -> Any:
    """A view's roofline: 0 bytes moved (``core.roofline.view_roofline``), with the measured
    time's achieved rates where timed."""
    from convcalc.core.roofline import view_roofline, with_time

    roof = view_roofline(layer.flops.formula or 0, peaks)
    if layer.latency_ms is not None and layer.latency_ms > 0:
        roof = with_time(roof, layer.latency_ms * 1e-3)
    return roof


def _layer_roofline(layer: LayerReport, extra_inputs: int, peaks: Any, calls: int = 1) -> Any:
    """One layer's roofline by formula: FLOPs its formula's, bytes from its formula's shapes
    and parameters at the dtype's width; with a measured latency, the achieved rates. A
    module called ``calls`` times reads its input and writes its output each time, its
    weights once."""
    from convcalc.core.roofline import layer_roofline, with_time

    if layer.flops.formula is None or layer.params.formula is None:
        return None
    if layer.output_shape.formula is None:
        return None
    if _is_view(layer):
        return _view_roofline(layer, peaks)
    width = DTYPE_BYTES.get(peaks.dtype, 4)
    elements = math.prod(layer.input_shape) * calls
    roof = layer_roofline(
        flops=layer.flops.formula,
        input_elements=elements,
        weight_elements=layer.params.formula,
        output_elements=math.prod(layer.output_shape.formula) * calls,
        dtype_bytes=width,
        peaks=peaks,
        extra_input_elements=elements * extra_inputs,
    )
    if layer.latency_ms is not None and layer.latency_ms > 0:
        roof = with_time(roof, layer.latency_ms * 1e-3)
    return roof


def _calls_roofline(layer: LayerReport, peaks: Any) -> Any:
    """A module called more than once, by formula: bytes moved summed over its calls, each
    reading its own input and writing its own output (``call_input_shapes``, the formula's
    ``call_output_shapes``); its weights once, as ``_layer_roofline``'s. None where the row
    has no per-call shapes or no formula (``_layer_roofline`` decides)."""
    from convcalc.core.roofline import layer_roofline, with_time

    outputs = None if layer.call_output_shapes is None else layer.call_output_shapes.formula
    if not layer.call_input_shapes or outputs is None:
        return None
    if layer.flops.formula is None or layer.params.formula is None:
        return None
    roof = layer_roofline(
        flops=layer.flops.formula,
        input_elements=sum(math.prod(shape) for shape in layer.call_input_shapes),
        weight_elements=layer.params.formula,
        output_elements=sum(math.prod(shape) for shape in outputs),
        dtype_bytes=DTYPE_BYTES.get(peaks.dtype, 4),
        peaks=peaks,
    )
    if layer.latency_ms is not None and layer.latency_ms > 0:
        roof = with_time(roof, layer.latency_ms * 1e-3)
    return roof


def roofline_total(layers: Sequence[LayerReport], peaks: Any) -> dict[str, Any]:
    """total.roofline: the bound times summed (each layer alone: the network's bound when
    layers do not overlap), the measured times summed, the fraction reached, and the top
    layers by measured time (by bound time when not timed)."""
    rows = [(layer.name, layer.roofline) for layer in layers if layer.roofline is not None]
    bound = sum(roof.time_lower_bound_s for _, roof in rows)
    timed = bool(rows) and all(roof.time_s is not None for _, roof in rows)
    moved = sum(roof.bytes_moved for _, roof in rows)
    flops = sum(roof.flops for _, roof in rows)
    data: dict[str, Any] = {
        "time_lower_bound_s": bound,
        "bytes_moved": moved,
        "flops": flops,
        # the layers' FLOPs over their bytes: each layer's traffic counted alone (a network
        # that kept activations in cache would move less)
        "intensity": flops / moved if moved and flops else 0.0,
        "layers_compute_bound": sum(1 for _, roof in rows if roof.bound == "compute"),
        "layers_memory_bound": sum(1 for _, roof in rows if roof.bound == "memory"),
        "layers_without_roofline": [layer.name for layer in layers if layer.roofline is None],
        "ridge_flops_per_byte": peaks.ridge,
    }
    key = "time_s" if timed else "time_lower_bound_s"
    if timed:
        time_s = sum(roof.time_s or 0.0 for _, roof in rows)
        data.update(
            time_s=time_s,
            achieved_flops_per_s=flops / time_s if time_s > 0 else None,
            fraction_of_bound=bound / time_s if time_s > 0 else None,
        )
    whole = sum(getattr(roof, key) or 0.0 for _, roof in rows) or 1.0
    top = sorted(rows, key=lambda row: -(getattr(row[1], key) or 0.0))[:ROOFLINE_TOP]
    data["top_layers_by"] = key
    data["top_layers"] = [
        {
            "name": name,
            key: getattr(roof, key),
            "share": (getattr(roof, key) or 0.0) / whole,
            "bound": roof.bound,
            "intensity": roof.intensity,
            **({"fraction_of_bound": roof.fraction_of_bound} if timed else {}),
        }
        for name, roof in top
    ]
    return data


def beaten_note(roof: Any, peaks: Any) -> str | None:
    """Why a measured time beat the time lower bound (fraction of the bound above 1), or None:
    a memory-bound layer's bytes fit in cache while the bandwidth peak is DRAM's; a
    compute-bound one ran above the FLOP/s peak. The numbers are kept: this only names it."""
    from convcalc.core.formulas import human_bytes

    fraction = getattr(roof, "fraction_of_bound", None)
    if fraction is None or fraction <= 1 or roof.time_s is None:
        return None
    head = (
        f"measured {roof.time_s * 1e3:,.4f} ms beats the roofline's bound "
        f"{roof.time_lower_bound_s * 1e3:,.4f} ms ({fraction:.0%} of bound): "
    )
    moved, bandwidth = human_bytes(roof.bytes_moved), f"{peaks.bytes_per_s / 1e9:,.1f} GB/s"
    if roof.bound == "memory" and peaks.measured:
        return head + (
            f"its {moved} moved fit in cache, and the bound assumes DRAM bandwidth (the peak, "
            f"{bandwidth}, is a copy larger than the caches)"
        )
    if roof.bound == "memory":
        return head + (
            f"its {moved} moved may fit in cache (the bound assumes DRAM bandwidth), or the "
            f"peak given, {bandwidth}, is low"
        )
    peak = "torch.mm's best at one size" if peaks.measured else "as given"
    return head + (
        f"it ran at {(roof.achieved_flops_per_s or 0) / 1e9:,.1f} GFLOP/s, above the "
        f"FLOP/s peak ({peaks.flops_per_s / 1e9:,.1f} GFLOP/s, {peak}): the peak is low "
        "for this kernel"
    )


def with_beaten_notes(layer: LayerReport, peaks: Any) -> LayerReport:
    """``layer`` with ``beaten_note``'s note added where its measured time beat the bound."""
    note = None if layer.roofline is None else beaten_note(layer.roofline, peaks)
    return layer if note is None else replace(layer, notes=layer.notes + (note,))


def peaks_notes(peaks: Any) -> tuple[str, ...]:
    """The report's note on its peaks: their caveat (measured under load), if any."""
    caveat = getattr(peaks, "caveat", None)
    return (f"roofline peaks: {caveat}",) if caveat else ()


def with_roofline(
    report: Report, nodes: Sequence[Node], inputs: Sequence[Any], peaks: Any
) -> Report:
    """The report with every layer on the roofline of ``peaks`` (None: the report as it is)."""
    if peaks is None:
        return report
    del inputs  # each layer's input shape is in its row
    layers = tuple(
        replace(layer, roofline=_layer_roofline(layer, len(node.inputs) - 1, peaks))
        for layer, node in zip(report.layers, nodes)
    )
    layers = tuple(with_beaten_notes(layer, peaks) for layer in layers)
    total = replace(report.total, roofline=roofline_total(layers, peaks))
    sources = {
        **report.sources,
        "roofline": (
            "by formula: bytes moved = (input + weights + output elements) x the dtype's "
            "width, each read or written once (the minimum traffic: caches, re-reads and "
            "workspace not counted); intensity = formula FLOPs / bytes; bound = "
            "max(FLOPs / peak FLOP/s, bytes / peak bytes/s); peaks: " + peaks.source
        ),
    }
    return replace(
        report,
        layers=layers,
        total=total,
        sources=sources,
        device=peaks,
        notes=report.notes + peaks_notes(peaks),
    )


def roofline_why(versions: Sequence[tuple[str, Report]]) -> str:
    """compare's one line: each version's layers with their bound and intensity against the
    ridge, its bound time, and (timed) the fraction of that bound its measured time reached."""
    parts = []
    ridge = None
    for name, report in versions:
        roof = report.total.roofline
        if roof is None or report.device is None:
            return ""
        ridge = report.device.ridge
        rows = [(layer.name, layer.roofline) for layer in report.layers if layer.roofline]
        layers = ", ".join(
            ("" if len(rows) == 1 else f"{layer} ") + f"{r.bound}-bound ({r.intensity:,.1f} FLOP/B)"
            for layer, r in rows
        )
        text = (
            f"{name.replace('_', ' ')}: {layers}; bound {roof['time_lower_bound_s'] * 1e3:,.3f} ms"
        )
        if roof.get("time_s"):
            text += (
                f", measured {roof['time_s'] * 1e3:,.3f} ms "
                f"({roof['fraction_of_bound']:.0%} of the roofline)"
            )
        parts.append(text)
    return (
        f"why (ridge {ridge:,.1f} FLOP/B): "
        + "; ".join(parts)
        + ". A memory-bound layer's time is set by its bytes, not its FLOPs: cutting FLOPs "
        "there does not cut time."
    )


def _model_inputs(report: Report) -> Any:
    """A model's inputs as the report holds them (JSON's ``inputs``), for --time's root row."""
    from convcalc.core.modelinput import ModelInput

    given = report.extra.get("inputs")
    if not given:
        return None
    return tuple(ModelInput(tuple(i["shape"]), i["dtype"], i["name"]) for i in given)


def _model_total_latency(layers: Sequence[LayerReport]) -> tuple[float | None, str | None]:
    """A timed model's total latency and what it is. The root's row ``(model)`` is timed as
    the whole forward on all the model's inputs, so it contains every other row's time: where
    it was timed the total is that whole-forward time (adding the rows would count the children
    twice); without a root row, the rows' times summed (each module alone). None (and why)
    where a row the total needs was not timed."""
    root = next((x for x in layers if x.name == "(model)"), None)
    if root is not None:
        if root.latency_ms is None:
            return None, (
                "no total latency: the root's row (model) (the whole forward) was not timed, "
                "and the other rows' sum would leave out its own work"
            )
        return root.latency_ms, (
            "total latency is the (model) row's: the whole forward timed at once on all the "
            "model's inputs; it contains the other rows (each also timed alone), so they are "
            "not added to it (the roofline total's time sums the rows with a roofline)"
        )
    latencies = [x.latency_ms for x in layers]
    if not latencies or any(x is None for x in latencies):
        return None, None
    return sum(x for x in latencies if x is not None), (
        "total latency is the rows' times summed (each module timed alone)"
    )


def with_model_roofline(report: Report, model: Any, options: Options) -> Report:
    """A user's model on the roofline: every row with a formula (FLOPs, parameters, output
    shape), by formula; with --time each row's module timed alone on its real input shape."""
    import re

    peaks = resolve_peaks(options, report.input.dtype)
    if peaks is None:
        return report
    layers = list(report.layers)
    timing = report.timing
    notes = list(report.notes)
    if options.time:
        from convcalc.measure.calibrate import load_average, timing_caveat
        from convcalc.measure.model_run import time_modules

        started = __import__("time").perf_counter()
        load_before = load_average()
        times, timing_notes, settings = time_modules(
            model,
            [
                (layer.name, layer.positional_input_shapes or (tuple(layer.input_shape),))
                for layer in layers
            ],
            options.device,
            options.min_run_time,
            _model_inputs(report),
        )
        layers = [
            replace(
                layer,
                latency_ms=None if timed is None else timed[0] * 1e3,
                timed_runs=None if timed is None else timed[1],
                latency_iqr_ms=None if timed is None else timed[2] * 1e3,
                timing_requested=True,
            )
            for layer, timed in zip(layers, times)
        ]
        notes += [f"timing: {note}" for note in timing_notes]
        if not settings:  # no module could be timed alone: the notes say why, per module
            settings = {"skipped": "no module with a row could be timed alone (see the notes)"}
        timing = {
            **settings,
            "seconds": round(__import__("time").perf_counter() - started, 3),
            "scope": "each module with a row, alone on zeros of its real input shape; "
            "container modules are not timed (their children are)",
        }
        caveat = timing_caveat([load_before, load_average()])
        if caveat and options.device == "cpu" and "skipped" not in timing:
            timing["load_caveat"] = caveat
    roofed = []
    for layer in layers:
        match = re.fullmatch(r".* \(×(\d+)\)", layer.name)
        roof = _calls_roofline(layer, peaks)
        if roof is None:
            roof = _layer_roofline(layer, 0, peaks, int(match.group(1)) if match else 1)
        roofed.append(with_beaten_notes(replace(layer, roofline=roof), peaks))
    notes += peaks_notes(peaks)
    latency, latency_note = _model_total_latency(roofed) if options.time else (None, None)
    if latency_note:
        notes.append(f"timing: {latency_note}")
        timing = {**(timing or {}), "total_latency": latency_note}
    total = replace(
        report.total,
        roofline=roofline_total(roofed, peaks),
        latency_ms=latency,
        timing_requested=options.time,
    )
    sources = {
        **report.sources,
        "roofline": "by formula, for each row with one (FLOPs, parameters, output shape): "
        "bytes moved = (input + weights + output elements) x the dtype's width; peaks: "
        + peaks.source,
    }
    return replace(
        report,
        layers=tuple(roofed),
        total=total,
        sources=sources,
        device=peaks,
        timing=timing,
        notes=tuple(notes),
    )
