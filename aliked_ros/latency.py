"""Latency and rate statistics over a sliding window: what the node reports on /diagnostics and process-bag prints."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LatencySummary:
    """Statistics of the last ``window`` published frames (times in milliseconds, rates in Hz).

    ``processing``: from receiving the image to publishing its keypoints. ``end_to_end``: from the image's stamp to
    publishing, on the node's clock (so simulated time during bag replay). A statistic without samples is None.
    """

    frames: int
    processing_p50_ms: float | None
    processing_p95_ms: float | None
    processing_max_ms: float | None
    end_to_end_p50_ms: float | None
    end_to_end_p95_ms: float | None
    end_to_end_max_ms: float | None
    input_rate_hz: float | None
    output_rate_hz: float | None
    received_total: int
    published_total: int
    dropped_total: int
    drop_ratio: float  # dropped / received over the window

    def describe(self) -> str:
        def ms(value):
            return "n/a" if value is None else f"{value:.1f}"

        def hz(value):
            return "n/a" if value is None else f"{value:.1f} Hz"

        return (
            f"processing p50 {ms(self.processing_p50_ms)} / p95 {ms(self.processing_p95_ms)} / max "
            f"{ms(self.processing_max_ms)} ms; end-to-end p50 {ms(self.end_to_end_p50_ms)} / p95 "
            f"{ms(self.end_to_end_p95_ms)} / max {ms(self.end_to_end_max_ms)} ms; in {hz(self.input_rate_hz)}, "
            f"out {hz(self.output_rate_hz)}; {self.published_total} published, {self.dropped_total} dropped"
        )


def health(summary: LatencySummary, *, budget_ms: float, max_drop_ratio: float, ready: bool,
           engine_error: str | None = None, compiling: bool = False) -> tuple[str, str]:
    """The node's diagnostic status: its level ("OK", "WARN" or "ERROR") and message. ``compiling``: the engine
    serves the uncompiled graph while torch.compile runs in the background, which explains a latency over budget."""
    why = " while torch.compile runs in the background (the uncompiled graph serves)" if compiling else ""
    if engine_error:
        return "ERROR", f"engine failed: {engine_error}"
    if not ready:
        return "WARN", "engine loading"
    if summary.end_to_end_p95_ms is not None and summary.end_to_end_p95_ms > budget_ms:
        return "WARN", f"end-to-end p95 {summary.end_to_end_p95_ms:.1f} ms over the {budget_ms:g} ms budget{why}"
    if summary.drop_ratio > max_drop_ratio:
        return "WARN", f"dropping {summary.drop_ratio:.0%} of frames{why}"
    if summary.frames == 0:
        return "OK", "waiting for images"
    return "OK", summary.describe() + ("; torch.compile runs in the background" if compiling else "")


def _rate(times: collections.deque) -> float | None:
    if len(times) < 2 or times[-1] <= times[0]:
        return None
    return (len(times) - 1) / (times[-1] - times[0])


def _percentiles(values: collections.deque) -> tuple[float | None, float | None, float | None]:
    if not values:
        return None, None, None
    array = np.fromiter(values, dtype=np.float64) * 1000
    p50, p95 = np.percentile(array, [50, 95])
    return float(p50), float(p95), float(array.max())


class LatencyMonitor:
    """Counts frames in, out and dropped, and keeps the last ``window`` latencies. Not thread-safe by itself: the
    node calls it from its worker thread, and from the subscription callback under its own lock."""

    def __init__(self, window: int = 100, clock=time.monotonic):
        if window < 2:
            raise ValueError("the latency window needs at least 2 frames")
        self.window = window
        self._clock = clock
        self._processing = collections.deque(maxlen=window)
        self._end_to_end = collections.deque(maxlen=window)
        self._received_times = collections.deque(maxlen=window)
        self._published_times = collections.deque(maxlen=window)
        self._window_events = collections.deque(maxlen=window)  # True for a drop, False for a received frame
        self.received_total = 0
        self.published_total = 0
        self.dropped_total = 0

    def received(self) -> None:
        self.received_total += 1
        self._received_times.append(self._clock())
        self._window_events.append(False)

    def dropped(self, count: int = 1) -> None:
        self.dropped_total += count
        self._window_events.extend([True] * count)

    def published(self, processing_seconds: float, end_to_end_seconds: float | None = None) -> None:
        self.published_total += 1
        self._published_times.append(self._clock())
        self._processing.append(processing_seconds)
        if end_to_end_seconds is not None:
            self._end_to_end.append(end_to_end_seconds)

    def summary(self) -> LatencySummary:
        events = list(self._window_events)
        drops = sum(events)
        received = len(events) - drops
        return LatencySummary(
            len(self._processing),
            *_percentiles(self._processing),
            *_percentiles(self._end_to_end),
            _rate(self._received_times),
            _rate(self._published_times),
            self.received_total,
            self.published_total,
            self.dropped_total,
            drops / received if received else 0.0,
        )
