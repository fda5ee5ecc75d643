"""The one path from an image message to a Keypoints message, shared by the ROS node and the bag tools."""

from __future__ import annotations

import math
from dataclasses import dataclass

from aliked_ros.engines import create_extractor
from aliked_ros.engines.base import Extractor
from aliked_ros.errors import AlikedError
from aliked_ros.features import Features
from aliked_ros.imaging import message_to_image
from aliked_ros.messages import build_keypoints_message


def stamp_seconds(stamp) -> float:
    """A builtin_interfaces/Time (rclpy's or rosbags') in seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def validate_score_threshold(value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value < 1.0:
        raise AlikedError(f"score_threshold must be in [0, 1), not {value}: scores are sigmoid outputs.")
    return value


@dataclass(frozen=True)
class ProcessedFrame:
    message: object  # the Keypoints message
    features: Features


class FrameProcessor:
    """Image message in, Keypoints message out.

    Convention:
        - Takes ``sensor_msgs/Image`` (any encoding of :data:`aliked_ros.imaging.SUPPORTED_ENCODINGS`) or
          ``sensor_msgs/CompressedImage`` (JPEG/PNG), rclpy's or rosbags' classes alike.
        - Returns a Keypoints message of ``message_class`` whose header is the image's, holding the extractor's
          features with a score strictly above ``score_threshold`` (sorted high → low), for the image's own size.
        - ``score_threshold`` may change between frames (the node's run-time parameter); it is validated.
        - Errors a user can cause (encoding, size) raise AlikedError; the caller decides whether to go on.
    """

    def __init__(self, extractor: Extractor, message_class, score_threshold: float = 0.0):
        self.extractor = extractor
        self.message_class = message_class
        self._score_threshold = validate_score_threshold(score_threshold)

    @property
    def score_threshold(self) -> float:
        return self._score_threshold

    @score_threshold.setter
    def score_threshold(self, value: float) -> None:
        self._score_threshold = validate_score_threshold(value)

    def process(self, image_message) -> ProcessedFrame:
        image = message_to_image(image_message)
        features = self.extractor.extract(image).above(self._score_threshold)
        message = build_keypoints_message(self.message_class, image_message.header, features, self.extractor.model)
        return ProcessedFrame(message, features)


def extractor_from_parameters(values: dict, log=print) -> Extractor:
    """The extractor that the node's parameters (``aliked_ros.parameters.resolve``) describe.

    ``engine: auto`` takes onnxruntime where an ONNX file is given, else the torch engine. float16 on the CPU is
    slower than float32 there, so the torch engine runs float32 on the CPU whatever ``precision`` says, and logs it.
    """
    engine = values["engine"]
    if engine == "auto":
        engine = "onnxruntime" if values["onnx_path"] else "torch"
    log(f"Loading the {engine} engine for {values['model']} (top_k {values['top_k']}, {values['precision']})")
    if engine == "torch":
        fp16 = values["precision"] == "fp16"
        from aliked_ros.engines.torch_engine import resolve_device

        if fp16 and resolve_device(values["device"]).type == "cpu":
            log("precision fp16 asked for on the CPU, where it is slower: running fp32")
            fp16 = False
        return create_extractor("torch", model=values["model"], top_k=values["top_k"], device=values["device"],
                                fp16=fp16, weights=values["weights_path"] or None)
    if engine == "onnxruntime":
        if not values["onnx_path"]:
            raise AlikedError("engine onnxruntime needs onnx_path (export one with `aliked-ros export-onnx`).")
        return create_extractor("onnxruntime", onnx_path=values["onnx_path"])
    raise AlikedError(f"The {engine} engine is not available in this build; use engine torch or onnxruntime.")
