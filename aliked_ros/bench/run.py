"""The bench's run: every planned row of every model × K × image set, measured in turn (the Convention of
:mod:`aliked_ros.bench`); a row that fails is recorded and the others go on, and Ctrl-C keeps what was measured."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from aliked_ros.bench.images import ImageSet
from aliked_ros.bench.machine import describe_machine, probe_environment
from aliked_ros.bench.memory import MIB, GpuMemoryProbe, release_memory
from aliked_ros.bench.profiler import profile_calls
from aliked_ros.bench.records import BenchResult, Measurement, reference_ratios
from aliked_ros.bench.runners import open_runner
from aliked_ros.bench.specs import PlannedRow, RowSpec, plan_rows
from aliked_ros.bench.timing import MessageBuilder, latency_stats, rosbags_message_builder, time_calls, \
    time_message_build
from aliked_ros.errors import AlikedError

Log = Callable[[str], None]

GPU_WARMUP, GPU_REPEATS = 20, 200
SM_CLOCK_EVERY = 50  # timed frames between two readings of the GPU's SM clock (NVML, outside the clock)
CPU_WARMUP, CPU_REPEATS = 2, 10  # a CPU frame takes 0.1 to 1 s: a CPU run stays in minutes


@dataclass
class BenchConfig:
    models: list[str]
    top_ks: list[int]
    image_sets: list[ImageSet]
    engines: list[RowSpec]
    references: list[RowSpec]
    device: str = "auto"
    warmup: int | None = None  # None: GPU_WARMUP on CUDA rows, CPU_WARMUP on CPU rows
    repeats: int | None = None  # likewise
    onnxruntime_provider: str = "auto"
    cache_dir: str | os.PathLike | None = None  # exported ONNX files and TensorRT plans
    command: str = ""  # the command line, for the report
    profile_frames: int = 0  # frames profiled per row after the timed ones (0: none)
    frame_path: bool = False  # also time each engine row's frame path, message in → message out, per encoding


def row_counts(row: PlannedRow, config: BenchConfig) -> tuple[int, int]:
    """(warm-up, timed frames) of a row: the configured ones, else the defaults of where it runs."""
    gpu = row.device.startswith("cuda")
    warmup = config.warmup if config.warmup is not None else GPU_WARMUP if gpu else CPU_WARMUP
    repeats = config.repeats if config.repeats is not None else GPU_REPEATS if gpu else CPU_REPEATS
    return max(warmup, row.spec.min_warmup), repeats


def run_benchmark(config: BenchConfig, message_builder: MessageBuilder | None = None,
                  log: Log | None = None) -> BenchResult:
    """Measure every planned row of every group (see the Convention of :mod:`aliked_ros.bench`); Ctrl-C keeps what
    was measured."""
    import torch

    from aliked_ros.model.configs import get_model_config

    log = log or (lambda text: print(f"bench: {text}", file=sys.stderr, flush=True))
    for model in config.models:
        get_model_config(model)  # an unknown name fails here, before minutes of work
    if not config.top_ks or any(k < 1 for k in config.top_ks):
        raise AlikedError(f"--top-k needs positive numbers of keypoints, not {config.top_ks}.")
    if (config.warmup is not None and config.warmup < 0) or (config.repeats is not None and config.repeats < 1):
        raise AlikedError("--warmup must be 0 or more and --repeats 1 or more.")
    if config.profile_frames < 0:
        raise AlikedError(f"--profile takes a number of frames, 0 or more, not {config.profile_frames}.")
    environment = probe_environment(config.device)
    references, skipped = plan_rows(config.references, environment)
    engines, skipped_engines = plan_rows(config.engines, environment, config.onnxruntime_provider)
    skipped += skipped_engines
    for item in skipped:
        log(f"skipping {item.name}: {item.reason}")
    rows = references + engines  # references first, so each engine's progress line has its ratios
    if not rows:
        raise AlikedError("No engine or reference can run here: " + "; ".join(f"{s.name}: {s.reason}"
                                                                             for s in skipped))
    builder = message_builder or rosbags_message_builder()
    probe = None
    if environment.cuda:
        torch.backends.cudnn.benchmark = True  # as the torch engine sets it: every row gets tuned convolutions
        probe = GpuMemoryProbe(torch.device(environment.device).index)
        if probe.missing:
            log(f"GPU memory by NVML: n/a ({probe.missing})")
    machine = describe_machine(environment, probe)
    notes = [row.note for row in rows if row.note]
    groups = [(model, top_k, images) for model in config.models for top_k in config.top_ks
              for images in config.image_sets]
    total = len(groups) * len(rows)
    measurements: list[Measurement] = []
    interrupted = False
    try:
        for model, top_k, images in groups:
            for row in rows:
                prefix = f"[{len(measurements) + 1}/{total}] {model} K {top_k} {images.name} " \
                         f"{images.width}x{images.height} | {row.spec.name}"
                measurement = measure_row(row, model, top_k, images, config, builder, probe,
                                          lambda text, prefix=prefix: log(f"{prefix}: {text}"))
                measurements.append(measurement)
                log(f"{prefix}: {progress_summary(measurement, measurements)}")
    except KeyboardInterrupt:
        interrupted = True
        log(f"interrupted: reporting the {len(measurements)} of {total} rows measured")
    finally:
        if probe is not None:
            if probe.missing and not any(m.gpu_process_mib is not None for m in measurements):
                notes.append(f"GPU memory by NVML: n/a ({probe.missing}).")
            probe.close()
    config_record = {key: getattr(config, key) for key in ("models", "top_ks", "device", "warmup", "repeats",
                                                            "onnxruntime_provider", "command", "profile_frames",
                                                            "frame_path")}
    config_record["cache_dir"] = None if config.cache_dir is None else str(config.cache_dir)
    config_record["engines"] = [spec.name for spec in config.engines]
    config_record["references"] = [spec.name for spec in config.references]
    config_record["image_sets"] = [{"name": s.name, "width": s.width, "height": s.height, "frames": len(s.frames),
                                    "source": s.source} for s in config.image_sets]
    return BenchResult(machine, config_record, measurements, skipped, notes, builder.label, interrupted)


def measure_row(row: PlannedRow, model: str, top_k: int, images: ImageSet, config: BenchConfig,
                builder: MessageBuilder, probe: GpuMemoryProbe | None, log: Log) -> Measurement:
    import torch

    spec = row.spec
    warmup, repeats = row_counts(row, config)
    measurement = Measurement(model, top_k, images.name, images.width, images.height, spec.name, spec.label,
                              spec.kind, spec.runtime, spec.precision, row.device, warmup=warmup, repeats=repeats)
    if row.note:
        measurement.notes.append(row.note)
    cuda = row.device.startswith("cuda")
    release_memory()
    start_mib = probe.process_mib() if probe is not None else None
    if cuda:
        torch.cuda.reset_peak_memory_stats(row.device)
    counters = _compile_counters() if spec.compile_mode else None
    runner = None
    try:
        start = time.perf_counter()
        runner = open_runner(row, model, top_k, images, cache_dir=config.cache_dir, log=log)
        measurement.setup_s = time.perf_counter() - start
        measurement.device, measurement.description = runner.device, runner.description
        start = time.perf_counter()
        for index in range(warmup):
            runner.call(images.frames[index % len(images.frames)])
        measurement.warmup_s = time.perf_counter() - start
        if cuda and runner.torch_memory:  # the peak of the whole row is kept in torch's counter until now
            whole_row_peak = torch.cuda.max_memory_allocated(row.device)
            torch.cuda.reset_peak_memory_stats(row.device)
        sample_clock = None
        if probe is not None and cuda:
            def sample_clock(index: int) -> None:
                if index % SM_CLOCK_EVERY == 0 and (mhz := probe.sm_clock_mhz()) is not None:
                    measurement.sm_clock_mhz.append(mhz)
        seconds, counts, last_result = time_calls(runner.call, images.frames, 0, repeats, summarize=runner.count,
                                                  between=sample_clock)
        measurement.latency = latency_stats(seconds)
        measurement.times_ms = [value * 1e3 for value in seconds]
        measurement.keypoints_mean = float(np.mean(counts))
        if probe is not None:
            measurement.gpu_process_mib = probe.process_mib()
            if measurement.gpu_process_mib is not None and start_mib is not None:
                measurement.gpu_process_growth_mib = measurement.gpu_process_mib - start_mib
        if cuda and runner.torch_memory:
            timed_peak = torch.cuda.max_memory_allocated(row.device)
            measurement.torch_peak_allocated_mib = max(whole_row_peak, timed_peak) / MIB
            measurement.torch_timed_peak_allocated_mib = timed_peak / MIB
        if config.profile_frames:  # after the timing, so that the profiler's overhead is in no timed frame
            if spec.runtime == "torch" or spec.kind == "reference":
                measurement.profile = profile_calls(runner.call, images.frames, config.profile_frames, cuda)
            else:
                measurement.notes.append(f"not profiled: {spec.runtime} runs outside torch (use its own profiler)")
        features = runner.features(last_result)
        if features is not None:
            measurement.message_build_ms = time_message_build(builder, features, model, max(repeats, 10))
        if config.frame_path and runner.extractor is not None:
            from aliked_ros.bench.frame_path import measure_frame_path

            measurement.frame_path = measure_frame_path(runner.extractor, images.camera_frames or images.frames,
                                                        builder.message_class, warmup, repeats)
        if counters is not None:
            measurement.notes += _compile_notes(counters)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as error:  # a row that cannot run (export refused, compile failed) must not lose the others
        measurement.error = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}" if str(error) \
            else type(error).__name__
        log(f"failed: {measurement.error}")
    finally:
        if runner is not None:
            with contextlib.suppress(Exception):
                runner.close()
        del runner
        if spec.compile_mode:
            import torch._dynamo

            torch._dynamo.reset()  # the next compiled row compiles its own shapes, statically, and frees its graphs
        release_memory()
    return measurement


def _compile_counters():
    """torch._dynamo's counters, cleared, to read the graph breaks and CUDA-graph skips of one compiled row."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:  # pragma: no cover - a private module that may move
        return None
    counters.clear()
    return counters


def _compile_notes(counters) -> list[str]:
    if counters is None:
        return []
    notes = []
    breaks = sum(counters.get("graph_break", {}).values())
    if breaks:
        notes.append(f"torch.compile: {breaks} graph break(s)")
    skips = counters.get("inductor", {}).get("cudagraph_skips", 0)
    if skips:
        notes.append(f"torch.compile: CUDA graphs skipped {skips} time(s)")
    return notes


def progress_summary(measurement: Measurement, measured: Sequence[Measurement]) -> str:
    if measurement.error:
        return f"failed ({measurement.error})"
    latency = measurement.latency
    text = (f"median {latency.median_ms:.3f} ms (mean {latency.mean_ms:.3f}, p95 {latency.p95_ms:.3f}) on "
            f"{measurement.device}")
    for label, ratio in reference_ratios(measurement, measured):
        if ratio is not None and measurement.kind == "engine":
            text += f", {ratio:.2f}x vs {label}"
    return text
