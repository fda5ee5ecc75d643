"""The bench's outputs: the markdown report of a run (how it was measured, one table per model × K × image set, the
profiles, the notes) and the JSON record of every raw number."""

from __future__ import annotations

from dataclasses import asdict
from typing import Sequence

import numpy as np

from aliked_ros import outputs
from aliked_ros.bench.records import BenchResult, Measurement, reference_ratios
from aliked_ros.bench.timing import quarter_medians_ms
from aliked_ros.tables import markdown_table

REPORT_TITLE = "## aliked-ros bench"
JSON_TOOL = "aliked-ros bench"


def _is_bench_json(path) -> bool:
    import json

    try:
        return json.loads(open(path, encoding="utf-8").read()).get("tool") == JSON_TOOL
    except (OSError, ValueError, AttributeError):
        return False


REPORT_OUTPUT = outputs.OutputKind("a report written by aliked-ros bench", outputs.text_starting_with(REPORT_TITLE))
JSON_OUTPUT = outputs.OutputKind("a JSON file written by aliked-ros bench", _is_bench_json)


# --- the report ------------------------------------------------------------------------------------------------------

def _ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.1f}"


def _ratio(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}×" if value < 10 else f"{value:.1f}×"


def _mib(value: float | None, growth: float | None = None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.0f}" + (f" ({growth:+.0f})" if growth is not None else "")


def _peaks(row: float | None, timed: float | None) -> str:
    return "n/a" if row is None else f"{row:.0f} / {timed:.0f}" if timed is not None else f"{row:.0f}"


def group_table(group: Sequence[Measurement], reference_labels: Sequence[str], gpu: bool) -> str:
    """One group's markdown table: its rows, with a ratio column per reference and GPU columns on a GPU run."""
    header = ["row", "device", "median ms", "mean ms", "p95 ms", *[f"vs {label}" for label in reference_labels]]
    if gpu:
        header += ["GPU MiB (NVML, process)", "peak alloc MiB (torch): row / timed"]
    header += ["keypoints", "message ms"]
    rows = []
    for measurement in group:
        row = [measurement.label, measurement.device]
        if measurement.error or measurement.latency is None:
            row += ["failed", "—", "—", *["—" for _ in reference_labels]]
        else:
            latency = measurement.latency
            ratios = dict(reference_ratios(measurement, group))
            row += [_ms(latency.median_ms), _ms(latency.mean_ms), _ms(latency.p95_ms),
                    *[_ratio(ratios.get(label)) for label in reference_labels]]
        if gpu:
            row += [_mib(measurement.gpu_process_mib, measurement.gpu_process_growth_mib),
                    _peaks(measurement.torch_peak_allocated_mib, measurement.torch_timed_peak_allocated_mib)]
        row += ["n/a" if measurement.keypoints_mean is None else f"{measurement.keypoints_mean:.0f}",
                _ms(measurement.message_build_ms)]
        rows.append(row)
    return markdown_table(header, rows)


def profile_table(measurement: Measurement) -> list[str]:
    """The report's lines for one row's profile."""
    profile = measurement.profile
    where = f"{measurement.label}, {measurement.model} K {measurement.top_k} {measurement.image_set}"
    lines = ["", f"Profile of {where}: {profile.clock}, {profile.total_us_per_frame:.1f} µs per frame in "
                 f"{profile.calls_per_frame:.0f} entries per frame ({profile.frames} frames after the timed ones; "
                 f"the {len(profile.top)} largest):", ""]
    columns = ["operation", "µs per frame", "calls per frame", "share"]
    rows = []
    for operation in profile.top:
        name = operation.name.replace("|", "/")
        name = name if len(name) <= 100 else name[:97] + "..."
        share = operation.microseconds_per_frame / profile.total_us_per_frame if profile.total_us_per_frame else 0
        rows.append([f"`{name}`", f"{operation.microseconds_per_frame:.1f}", f"{operation.calls_per_frame:.1f}",
                     f"{share:.0%}"])
    lines.append(markdown_table(columns, rows))
    if profile.by_kind:  # every entry, not only the largest, by the kind its name tells
        lines += ["", "By kind (every entry, told by its name): " + ", ".join(
            f"{kind} {micros:.1f} µs" for kind, micros in profile.by_kind.items()) + "."]
    return lines


def stability_line(measurement: Measurement) -> str | None:
    """``- label: medians of the four quarters of its timed frames, ms; SM clock median (min-max) MHz``."""
    if measurement.error or len(measurement.times_ms) < 4:
        return None
    quarters = " / ".join(f"{value:.3g}" for value in quarter_medians_ms([ms / 1e3 for ms in measurement.times_ms]))
    line = f"- {measurement.label}: {quarters} ms"
    clocks = measurement.sm_clock_mhz
    if clocks:
        line += f"; SM clock {int(np.median(clocks))} MHz ({min(clocks)}-{max(clocks)}, NVML, {len(clocks)} readings)"
    return line


def format_report(result: BenchResult) -> str:
    """The markdown report: how it was measured, one table per model × K × image set, then the notes."""
    machine = result.machine
    gpu = machine.get("gpu") is not None
    config = result.config
    device = f"{machine['gpu']} ({machine['device']})" if gpu else f"{machine['cpu']}"
    software = ", ".join(f"{name} {machine[name]}" for name in ("aliked_ros", "torch", "torchvision", "kornia",
                                                                 "onnxruntime", "tensorrt") if machine.get(name))
    lines = [REPORT_TITLE, "",
             f"- Device: {device}" + (f"; CPU: {machine['cpu']}" if gpu else ""),
             ]
    if gpu:
        lines.append(f"- Driver: {machine.get('driver') or 'n/a (NVML not available)'}; CUDA {machine.get('cuda')} "
                     f"(torch), cuDNN {machine.get('cudnn')}")
    lines += [
        f"- Software: {software}, Python {machine['python']}",
        f"- Date: {machine['date']}",
        f"- Command: `{config.get('command') or 'aliked-ros bench'}`",
        f"- Latency: host to host per frame (uint8 RGB frame in host memory in, features in host memory out), "
        f"time.perf_counter around one call; {_counts_text(result)}; frames cycled. Median, mean and p95 in ms. "
        "Grayscale frames are made RGB before timing, for every row alike.",
        "- vs *reference*: the reference's median / the row's median, same group, same run (above 1: faster).",
    ]
    if gpu:
        lines.append("- GPU MiB (NVML, process): this process's GPU memory as the driver reports it at the end of the "
                     "row (in brackets: growth during the row; the CUDA context and what earlier rows keep, such as "
                     "library workspaces, are in the total). Peak alloc: torch.cuda.max_memory_allocated over the "
                     "whole row (construction, capture or compilation, warm-up, timing) / over the timed frames alone, "
                     "for rows whose memory torch allocates.")
    lines.append(f"- Message ms: median time to build one Keypoints message from the row's last features, "
                 f"message class {result.message_class}.")
    if config.get("frame_path"):
        lines.append("- Frame path (--frame-path): what the node does per frame, FrameProcessor.process from a camera "
                     "message of each encoding (made from the frames before timing; rosbags' classes) to the built "
                     f"Keypoints message ({result.message_class}), then its CDR serialisation; medians per stage and "
                     "of each frame's total, ms; the engine's row (RGB frames prepared) and the difference beside it.")
    references = list(dict.fromkeys(m.label for m in result.measurements if m.kind == "reference"))
    groups: dict[tuple, list[Measurement]] = {}
    for measurement in result.measurements:
        groups.setdefault(measurement.group, []).append(measurement)
    sets = {entry["name"]: entry for entry in config.get("image_sets", [])}
    for (model, top_k, set_name), group in groups.items():
        first = group[0]
        frames = sets.get(set_name, {}).get("frames")
        title = f"### {model}, K {top_k}, {set_name} {first.width}×{first.height}"
        lines += ["", title + (f" ({frames} frames)" if frames else ""), "",
                  group_table(group, references, gpu)]
        stability = [line for line in map(stability_line, group) if line]
        if stability:
            lines += ["", "Over the timed frames, by quarter (a row whose speed changes midway shows it here):", "",
                      *stability]
        if any(measurement.frame_path for measurement in group):
            lines += ["", frame_path_table(group)]
        for measurement in group:
            if measurement.profile is not None:
                lines += profile_table(measurement)
    notes = list(result.notes)
    notes += [f"Skipped {item.name}: {item.reason}." for item in result.skipped]
    row_notes: dict[str, list[str]] = {}  # a note of several rows is listed once, with the rows
    for measurement in result.measurements:
        where = f"{measurement.label}, {measurement.model} K {measurement.top_k} {measurement.image_set}"
        if measurement.error:
            notes.append(f"{where} failed: {measurement.error}")
        for note in measurement.notes:
            if note not in result.notes:  # the planning notes (e.g. a CPU fallback) are listed already
                row_notes.setdefault(note, []).append(where)
    notes += [f"{note} ({'; '.join(wheres)})" for note, wheres in row_notes.items()]
    if result.interrupted:
        notes.append("Interrupted: the tables hold the rows measured before Ctrl-C.")
    if notes:
        lines += ["", "Notes:", "", *[f"- {note}" for note in dict.fromkeys(notes)]]
    return "\n".join(lines) + "\n"


def _counts_text(result: BenchResult) -> str:
    pairs = sorted({(m.warmup, m.repeats) for m in result.measurements})
    if not pairs:
        return "no rows measured"
    return "; ".join(f"{warmup} warm-up then {repeats} timed frames" for warmup, repeats in pairs) + \
        (" (by row: see the JSON)" if len(pairs) > 1 else "")


def result_to_json(result: BenchResult) -> dict:
    """Every raw number of the run (per-frame times included), for BENCHMARKS.md and later analysis."""
    measurements = []
    for measurement in result.measurements:
        record = asdict(measurement)
        record["ratios"] = {label: ratio for label, ratio in reference_ratios(measurement, result.measurements)}
        measurements.append(record)
    return {"tool": JSON_TOOL, "machine": result.machine, "config": result.config,
            "message_class": result.message_class,
            "measurements": measurements, "skipped": [asdict(item) for item in result.skipped],
            "notes": result.notes, "interrupted": result.interrupted}


def frame_path_table(group: Sequence[Measurement]) -> str:
    """Per engine row and encoding: the frame path's total and stages beside the row's engine-only median."""
    rows = []
    for measurement in group:
        for stats in measurement.frame_path:
            engine = measurement.latency.median_ms if measurement.latency else None
            stage = stats.stage_ms
            rows.append([measurement.label, stats.encoding, _ms(stats.total_ms), _ms(stats.p95_ms),
                         _ms(stage.get("decode")), _ms(stage.get("extract")), _ms(stage.get("build")),
                         _ms(stage.get("serialize")), _ms(engine),
                         "n/a" if engine is None else f"{stats.total_ms - engine:+.3f}"])
    return markdown_table(("row", "encoding", "frame path ms", "p95 ms", "decode", "extract", "build", "serialize",
                           "engine row ms", "frame path − engine row"), rows)

