"""The one path from an image message to a Keypoints message, shared by the ROS node and the bag tools."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aliked_ros import validation
from aliked_ros.config import ExtractorConfig, Log
from aliked_ros.engines import create_extractor
from aliked_ros.engines.base import Extractor
from aliked_ros.features import Features
from aliked_ros.image_messages import input_format_of, message_to_pixels
from aliked_ros.messages import build_keypoints_message

_logger = logging.getLogger(__name__)


def stamp_seconds(stamp: Any) -> float:
    """A builtin_interfaces/Time (rclpy's or rosbags') in seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


@dataclass(frozen=True)
class ProcessedFrame:
    message: object  # the Keypoints message
    features: Features
    image: object  # the decoded pixels (grey, or colour in channel_order) for a debug picture; None where the engine
    # decoded the frame on its device
    channel_order: str = "rgb"


STAGES = ("decode", "extract", "build")  # what FrameProcessor.process times when asked to


class FrameProcessor:
    """Image message in, Keypoints message out.

    Convention:
        - Takes ``sensor_msgs/Image`` (any encoding of :data:`aliked_ros.image_messages.SUPPORTED_ENCODINGS`) or
          ``sensor_msgs/CompressedImage`` (JPEG/PNG), rclpy's or rosbags' classes alike, and hands the extractor
          the camera's pixels in their own layout (grey, RGB or BGR): no host conversion an engine can do itself.
        - Returns a Keypoints message of ``message_class`` whose header is the image's, holding the extractor's
          features with a score strictly above ``score_threshold`` (sorted high → low), for the image's own size.
        - ``score_threshold`` may change between frames (the node's run-time parameter); it is validated.
        - Errors a user can cause (encoding, size) raise AlikedError; the caller decides whether to go on.
    """

    def __init__(self, extractor: Extractor, message_class: type, score_threshold: float = 0.0):
        self.extractor = extractor
        self.message_class = message_class
        self._score_threshold = validation.score_threshold(score_threshold)

    @property
    def score_threshold(self) -> float:
        return self._score_threshold

    @score_threshold.setter
    def score_threshold(self, value: float) -> None:
        self._score_threshold = validation.score_threshold(value)

    def process(self, image_message: Any, stage_seconds: dict[str, float] | None = None) -> ProcessedFrame:
        """The Keypoints message of one image message; ``stage_seconds`` (if given) receives the seconds of each of
        :data:`STAGES`: decoding the message to pixels in the camera's layout, extracting (the engine converts grey
        and BGR where it runs), and thresholding + building the message."""
        start = time.perf_counter()
        if self._decoded_by_engine(image_message):  # nvJPEG: only the compressed bytes leave the host
            pixels, channel_order = None, "rgb"
            decoded = time.perf_counter()
            features = self.extractor.extract_jpeg(image_message.data)
        else:
            pixels, channel_order = message_to_pixels(image_message)
            decoded = time.perf_counter()
            features = self.extractor.extract(pixels, channel_order)
        extracted = time.perf_counter()
        features = features.above(self._score_threshold)
        message = build_keypoints_message(self.message_class, image_message.header, features, self.extractor.model)
        if stage_seconds is not None:
            stage_seconds.update(decode=decoded - start, extract=extracted - decoded,
                                 build=time.perf_counter() - extracted)
        return ProcessedFrame(message, features, pixels, channel_order)

    def _decoded_by_engine(self, image_message: Any) -> bool:
        """A JPEG CompressedImage, and an engine that decodes JPEG on its device."""
        return (hasattr(image_message, "format") and self.extractor.decodes_jpeg
                and bytes(image_message.data[:3]) == b"\xff\xd8\xff")


def extractor_config(values: Mapping[str, Any], image_size: tuple[int, int] | None = None,
                     first_image: Any = None) -> ExtractorConfig:
    """The extractor the node's parameters (``aliked_ros.parameters.resolve``) describe, for ``image_size`` where
    given (else ``image_height`` × ``image_width``), and for the layout of ``first_image`` (a camera message) where
    ``input_format`` is auto. Its score_threshold is 0: the :class:`FrameProcessor` thresholds each frame, since the
    node's threshold changes at run time."""
    overrides: dict[str, Any] = dict(image_height=image_size[0], image_width=image_size[1]) if image_size else {}
    if "background_compile" in values:  # the node's parameter; the library's default is off (see ExtractorConfig)
        overrides["background_compile"] = values["background_compile"]
    if first_image is not None and values.get("input_format", "auto") == "auto":
        overrides["input_format"] = input_format_of(first_image)
    return ExtractorConfig.from_parameters(values, score_threshold=0.0, **overrides)


def needs_image_size(values: Mapping[str, Any]) -> bool:
    """Whether the engine must know the image size before it is made (a static engine from the cache)."""
    return extractor_config(values).needs_image_size()


def needs_first_image(values: Mapping[str, Any]) -> bool:
    """Whether the engine is made from the first image: its size, or its layout (input_format auto), are needed."""
    return extractor_config(values).needs_first_image()


def serving_size(extractor: Extractor, values: Mapping[str, Any],
                 image_size: tuple[int, int] | None = None) -> tuple[int, int]:
    """The (height, width) the node warms an engine up at before its first frame: the engine's own (a static
    engine's), else ``image_size`` (its first image's, where the parameters leave the size open), else the parameters'
    ``image_height`` × ``image_width``; zeros where none is known yet (warm-up then waits for a camera)."""
    return extractor.image_size or image_size or (values["image_height"], values["image_width"])


def extractor_from_parameters(values: Mapping[str, Any], log: Log | None = None,
                              image_size: tuple[int, int] | None = None, first_image: Any = None) -> Extractor:
    """The node's extractor (see :func:`extractor_config`), made by the one factory; what "auto" means here and
    what the engine cache does are said through ``log``."""
    return create_extractor(extractor_config(values, image_size, first_image), log=log or _logger.info)
