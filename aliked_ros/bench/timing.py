"""The bench's clock: the timing loop around one call per frame, the latency statistics of its times, and the time
to build one Keypoints message."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from aliked_ros.features import Features


@dataclass(frozen=True)
class LatencyStats:
    """Median, mean and p95 of per-frame latencies, in milliseconds, over ``frames`` timed frames."""

    median_ms: float
    mean_ms: float
    p95_ms: float
    frames: int


def latency_stats(seconds: Sequence[float]) -> LatencyStats:
    """Statistics of per-frame times given in seconds; ValueError for none."""
    if len(seconds) == 0:
        raise ValueError("no timed frames")
    values = np.asarray(seconds, dtype=np.float64) * 1e3
    median, p95 = np.percentile(values, [50, 95])
    return LatencyStats(float(median), float(values.mean()), float(p95), len(values))


def median_ms(seconds: Sequence[float]) -> float:
    return float(np.median(np.asarray(seconds, dtype=np.float64))) * 1e3


def time_calls(call: Callable[[np.ndarray], object], frames: Sequence[np.ndarray], warmup: int, repeats: int,
               summarize: Callable[[object], object] = lambda result: result,
               clock=time.perf_counter,
               between: Callable[[int], None] | None = None) -> tuple[list[float], list[object], object]:
    """``warmup`` untimed calls, then ``repeats`` timed ones, cycling through frames: (seconds, summaries, last).
    ``between`` (if given) is called after each timed frame, outside the clock, with its index among them.

    Only the call is inside the clock. Each result is reduced by ``summarize`` after its clock stops and then
    dropped, except the last one, as a node drops a frame's features once it has published them. Keeping every result
    would hand each frame fresh memory, and time its page faults, which a node in steady state does not pay (measured
    in BENCHMARKS.md, the paragraph "A benchmark fix in this session").
    """
    for index in range(warmup):
        call(frames[index % len(frames)])
    seconds, summaries, result = [], [], None
    for index in range(warmup, warmup + repeats):
        frame = frames[index % len(frames)]
        result = None  # the previous frame's result is released before this frame, not during it
        start = clock()
        result = call(frame)
        seconds.append(clock() - start)
        summaries.append(summarize(result))
        if between is not None:
            between(index - warmup)
    return seconds, summaries, result


def quarter_medians_ms(seconds: Sequence[float]) -> list[float]:
    """The medians of the timed frames' four quarters, in order, in ms: a row that drifts or changes speed midway
    shows it here, where its one median hides it."""
    values = np.asarray(seconds, dtype=np.float64) * 1e3
    return [float(np.median(part)) for part in np.array_split(values, 4) if len(part)]


# --- the message -----------------------------------------------------------------------------------------------------

class MessageBuilder:
    """Builds Keypoints messages of one class (rclpy's or rosbags') with a fixed header, for timing."""

    def __init__(self, message_class, header, label: str):
        self.message_class, self.header, self.label = message_class, header, label

    def build(self, features: Features, model: str):
        from aliked_ros.messages import build_keypoints_message

        return build_keypoints_message(self.message_class, self.header, features, model)


def rosbags_message_builder() -> MessageBuilder:
    from aliked_ros import bags
    from aliked_ros.messages import KEYPOINTS_MSGTYPE

    return MessageBuilder(bags.message_class(KEYPOINTS_MSGTYPE), bags.make_header(0, "camera"),
                          "rosbags (aliked_ros/msg/Keypoints dataclass)")


def time_message_build(builder: MessageBuilder, features: Features, model: str, repeats: int,
                       clock=time.perf_counter) -> float:
    """Median milliseconds to build one message from ``features``."""
    builder.build(features, model)  # the first build imports and caches what it needs
    times = []
    for _ in range(max(1, repeats)):
        start = clock()
        builder.build(features, model)
        times.append(clock() - start)
    return median_ms(times)
