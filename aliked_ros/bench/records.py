"""What a bench run records: one Measurement per row of a group, the run's result, and the ratios between rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from aliked_ros.bench.frame_path import FramePathStats
from aliked_ros.bench.profiler import Profile
from aliked_ros.bench.specs import Skipped
from aliked_ros.bench.timing import LatencyStats


@dataclass
class Measurement:
    """Everything measured for one row of one group; ``error`` is set (and the rest mostly None) if it failed."""

    model: str
    top_k: int
    image_set: str
    width: int
    height: int
    name: str  # the row spec's name
    label: str
    kind: str  # "engine" or "reference"
    runtime: str
    precision: str
    device: str
    description: str = ""
    warmup: int = 0
    repeats: int = 0
    latency: LatencyStats | None = None
    times_ms: list[float] = field(default_factory=list)
    keypoints_mean: float | None = None
    gpu_process_mib: float | None = None  # NVML, at the end of the row
    sm_clock_mhz: list[int] = field(default_factory=list)  # NVML, every SM_CLOCK_EVERY-th timed frame
    gpu_process_growth_mib: float | None = None  # NVML, end of the row minus its start
    torch_peak_allocated_mib: float | None = None  # since the row's start: construction, capture, warm-up, timing
    torch_timed_peak_allocated_mib: float | None = None  # over the timed frames alone: the steady state
    message_build_ms: float | None = None
    frame_path: list[FramePathStats] = field(default_factory=list)  # --frame-path: message in → message out
    setup_s: float | None = None  # construction (export or engine build included where it happened)
    warmup_s: float | None = None  # the warm-up calls (torch.compile's compilation happens here)
    profile: Profile | None = None  # with --profile, for rows that torch runs
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def group(self) -> tuple[str, int, str]:
        return self.model, self.top_k, self.image_set


@dataclass
class BenchResult:
    machine: dict
    config: dict
    measurements: list[Measurement]
    skipped: list[Skipped]
    notes: list[str]
    message_class: str
    interrupted: bool = False


def reference_ratios(measurement: Measurement, measured: Sequence[Measurement]) -> list[tuple[str, float | None]]:
    """(reference label, reference median / this row's median) for each reference row of the same group."""
    ratios = []
    for reference in measured:
        if reference.kind != "reference" or reference.group != measurement.group:
            continue
        if reference.latency is None or measurement.latency is None:
            ratios.append((reference.label, None))
        else:
            ratios.append((reference.label, reference.latency.median_ms / measurement.latency.median_ms))
    return ratios
