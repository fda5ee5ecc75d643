"""The node's frame path, timed: from a camera message of each encoding to the built and serialised Keypoints
message, through :meth:`aliked_ros.processing.FrameProcessor.process` (the node's own code), with its stages.

Convention:
    - The messages are made from the image set's frames before any timing: grey sets as ``mono8``; colour sets as
      ``rgb8``, ``bgr8``, ``yuv422`` (UYVY), ``bayer_rggb8`` and a JPEG ``CompressedImage`` (quality 90). They are
      rosbags' message classes (the node reads the same fields of rclpy's).
    - Stages, medians over the timed frames, ms: ``decode`` (message to pixels in the camera's layout), ``extract``
      (the engine, conversions on its device included), ``build`` (threshold and Keypoints message, in the bench's
      message class), ``serialize`` (CDR: rosbags' for its class, rclpy's for rclpy's, as a publisher does);
      ``total`` is the median of each frame's sum.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

ENCODINGS = {"grey": ("mono8",), "colour": ("rgb8", "bgr8", "yuv422", "bayer_rggb8", "jpeg")}
JPEG_QUALITY = 90


@dataclass
class FramePathStats:
    """One encoding's frame path: total and per-stage medians (ms), and the total's p95."""

    encoding: str
    total_ms: float
    p95_ms: float
    stage_ms: dict[str, float] = field(default_factory=dict)
    frames: int = 0


def uyvy(rgb: np.ndarray) -> np.ndarray:
    """ROS's ``yuv422`` (UYVY: U Y0 V Y1 per pixel pair, BT.601 as OpenCV writes it) of an RGB frame."""
    import cv2

    yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV)
    packed = np.empty((rgb.shape[0], rgb.shape[1] * 2), np.uint8)
    packed[:, 1::2] = yuv[:, :, 0]
    packed[:, 0::4] = yuv[:, 0::2, 1]
    packed[:, 2::4] = yuv[:, 0::2, 2]
    return packed.reshape(rgb.shape[0], rgb.shape[1], 2)


def bayer_rggb(rgb: np.ndarray) -> np.ndarray:
    """The RGGB Bayer mosaic a colour camera's sensor would have recorded for ``rgb``."""
    mosaic = np.empty(rgb.shape[:2], np.uint8)
    mosaic[0::2, 0::2] = rgb[0::2, 0::2, 0]
    mosaic[0::2, 1::2] = rgb[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = rgb[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = rgb[1::2, 1::2, 2]
    return mosaic


def camera_message(frame: np.ndarray, encoding: str, stamp_ns: int = 1_000_000_000):
    """A rosbags ``sensor_msgs/Image`` (or a JPEG ``CompressedImage`` for "jpeg") of ``frame`` (grey or RGB)."""
    import cv2

    from aliked_ros import bags

    header = bags.make_header(stamp_ns, "camera")
    if encoding == "jpeg":
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:  # pragma: no cover - OpenCV encodes any uint8 frame
            raise ValueError("OpenCV could not encode a JPEG")
        return bags.message_class(bags.COMPRESSED_MSGTYPE)(header=header, format="jpeg",
                                                            data=np.frombuffer(data.tobytes(), np.uint8))
    pixels = {"mono8": lambda: frame, "rgb8": lambda: frame, "bgr8": lambda: frame[:, :, ::-1],
              "yuv422": lambda: uyvy(frame), "bayer_rggb8": lambda: bayer_rggb(frame)}[encoding]()
    pixels = np.ascontiguousarray(pixels)
    height, width = pixels.shape[:2]
    return bags.message_class(bags.IMAGE_MSGTYPE)(
        header=header, height=height, width=width, encoding=encoding, is_bigendian=0,
        step=pixels[0].size, data=pixels.reshape(-1))


def serializer(message_class):
    """The CDR serialisation a publisher of ``message_class`` does: rclpy's for its classes, else rosbags'."""
    if message_class.__module__.startswith("aliked_ros.msg"):
        from aliked_ros.ros.message_classes import serializer as rclpy_serializer

        return rclpy_serializer()
    from aliked_ros import bags
    from aliked_ros.messages import KEYPOINTS_MSGTYPE

    return lambda message: bags.typestore().serialize_cdr(message, KEYPOINTS_MSGTYPE)


def measure_frame_path(extractor, camera_frames, message_class, warmup: int, repeats: int,
                       clock=time.perf_counter) -> list[FramePathStats]:
    """Each applicable encoding's frame path through ``extractor`` over ``camera_frames`` (grey or RGB frames of one
    set): ``warmup`` untimed frames, then ``repeats`` timed ones, cycling through the frames."""
    from aliked_ros.processing import STAGES, FrameProcessor

    processor = FrameProcessor(extractor, message_class, 0.0)
    serialize = serializer(message_class)
    grey = camera_frames[0].ndim == 2
    results = []
    for encoding in ENCODINGS["grey" if grey else "colour"]:
        messages = [camera_message(frame, encoding) for frame in camera_frames]
        for index in range(warmup):  # a new pixel layout captures a new graph: never in a timed frame
            serialize(processor.process(messages[index % len(messages)]).message)
        stages = {name: [] for name in (*STAGES, "serialize")}
        totals = []
        for index in range(warmup, warmup + repeats):
            times: dict[str, float] = {}
            result = processor.process(messages[index % len(messages)], times)
            start = clock()
            serialize(result.message)
            times["serialize"] = clock() - start
            result = None  # released before the next frame, as a node drops a published message
            for name, seconds in times.items():
                stages[name].append(seconds)
            totals.append(sum(times.values()))
        values = np.asarray(totals) * 1e3
        results.append(FramePathStats(encoding, float(np.median(values)), float(np.percentile(values, 95)),
                                      {name: float(np.median(seconds)) * 1e3 for name, seconds in stages.items()},
                                      len(totals)))
    return results
