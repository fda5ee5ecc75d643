"""How long the node takes to serve after it starts: the engine made and warmed up as the node makes it, then a
camera's frames at the camera's pace through the node's frame path (message in, Keypoints message out), until the
compiled graph serves them (where the engine compiles in the background) and some frames after.

ROS-free; ``aliked-ros startup`` is its command line. Run it twice with the same parameters to see a robot's second
start, which reads torch.compile's cache (BENCHMARKS.md, "The node's start with background compilation").
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from aliked_ros.processing import FrameProcessor, extractor_from_parameters, serving_size


@dataclass
class StartupReport:
    """Seconds from the engine's load (the node's ``_load_engine``), and frame latencies in milliseconds."""

    engine: str  # the extractor's describe()
    made_s: float  # the engine made (weights loaded, the engine file read or built)
    warmed_up_s: float  # ... and warmed up at the parameters' image size, as the node does
    first_message_s: float  # ... and the first camera frame's Keypoints message built
    # The first message from the compiled graph, where the engine compiled in the background (None: it compiled in
    # the foreground or not at all, or not within the run)
    compiled_s: float | None
    background: bool  # whether the engine compiled in the background
    frames_while_compiling_ms: list[float] = field(default_factory=list)
    frames_after_ms: list[float] = field(default_factory=list)  # after the compiled graph took over (or the first)

    def lines(self) -> list[str]:
        def seconds(value: float | None) -> str:
            return "-" if value is None else f"{value:.2f} s"

        lines = [f"engine: {self.engine}",
                 f"from the engine's load: made {seconds(self.made_s)}, warmed up {seconds(self.warmed_up_s)}, "
                 f"first Keypoints message {seconds(self.first_message_s)}"]
        if self.background:
            compiled = (seconds(self.compiled_s) if self.compiled_s is not None
                        else "not within the run (raise --duration)")
            lines.append(f"compiled graph serving from {compiled}")
            lines.append(f"frames while compiling: {describe_latencies(self.frames_while_compiling_ms)}")
            lines.append(f"frames after it: {describe_latencies(self.frames_after_ms)}")
        else:
            lines.append(f"frames: {describe_latencies(self.frames_after_ms)}")
        return lines

    def record(self, compiling: bool, took_ms: float, ended_s: float) -> None:
        """One frame: whether the engine was compiling while it was served (before it or after it), its latency,
        and when it ended (seconds from the engine's load)."""
        if not self.first_message_s:
            self.first_message_s = ended_s
        if compiling:
            self.frames_while_compiling_ms.append(took_ms)
        elif self.background and self.compiled_s is None:
            # The first frame since the worker finished (or the first of all, where it finished before any): the
            # compiled graph is captured and serves it.
            self.compiled_s = ended_s
        else:
            self.frames_after_ms.append(took_ms)

    def as_dict(self) -> dict[str, Any]:
        report = asdict(self)
        for key in ("frames_while_compiling_ms", "frames_after_ms"):
            report[key] = latency_summary(report.pop(key))
        return report


def latency_summary(milliseconds: list[float]) -> dict[str, float | int | None]:
    if not milliseconds:
        return {"count": 0, "median": None, "p95": None, "max": None}
    values = np.asarray(milliseconds)
    return {"count": len(values), "median": round(float(np.median(values)), 3),
            "p95": round(float(np.quantile(values, 0.95)), 3), "max": round(float(values.max()), 3)}


def describe_latencies(milliseconds: list[float]) -> str:
    summary = latency_summary(milliseconds)
    if not summary["count"]:
        return "none"
    return (f"{summary['count']}, median {summary['median']:.2f} ms, p95 {summary['p95']:.2f} ms, "
            f"max {summary['max']:.2f} ms")


def measure_startup(values: dict, messages: Sequence, message_class: type, *, rate_hz: float, duration_s: float,
                    frames_after: int, image_size: tuple[int, int] | None = None, first_image: Any = None,
                    log: Callable[[str], None] | None = None) -> StartupReport:
    """The node's start with the parameters ``values`` (``parameters.resolve``), fed ``messages`` (camera image
    messages, cycled) at ``rate_hz`` (0: back to back) for at most ``duration_s`` seconds from the engine's load;
    the run ends ``frames_after`` frames after the compiled graph took over (after the first frame, where nothing
    compiles in the background). ``image_size`` and ``first_image``: as the node makes a static engine (see
    ``processing.extractor_config``)."""
    start = time.perf_counter()
    extractor = extractor_from_parameters(values, log=log, image_size=image_size, first_image=first_image)
    try:
        made = time.perf_counter() - start
        height, width = serving_size(extractor, values, image_size)
        if height and width:
            extractor.warmup(height, width)
        warmed_up = time.perf_counter() - start
        processor = FrameProcessor(extractor, message_class, values["score_threshold"])
        background = bool(getattr(extractor, "background_compile", False))
        report = StartupReport(extractor.describe(), made, warmed_up, 0.0, None, background)
        for message in itertools.cycle(messages):
            began = time.perf_counter()
            if (began - start > duration_s and report.first_message_s) or len(report.frames_after_ms) >= frames_after:
                break
            compiling = extractor.compiling
            processor.process(message)
            ended = time.perf_counter()
            # Compiling before the frame or after it: a size the engine was not warmed up at has its compilation
            # queued by its first frame, which the stand-in serves.
            report.record(compiling or extractor.compiling, (ended - began) * 1e3, ended - start)
            if rate_hz > 0:
                time.sleep(max(0.0, began + 1.0 / rate_hz - time.perf_counter()))
        return report
    finally:
        extractor.close()
