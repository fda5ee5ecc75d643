"""The Keypoints message without ROS: its definition file, its rosbags type, and building one from Features.

One builder serves rclpy's generated class (the node) and rosbags' dataclass (bag tools). Float arrays go to an
rclpy message as ``array.array('f')``, which rclpy's setter takes without checking each element in Python (a list or
an ndarray makes it check all 2000 × 128 values); a rosbags message takes numpy arrays.
"""

from __future__ import annotations

import array
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from aliked_ros.errors import AlikedError
from aliked_ros.features import Features
from aliked_ros.resources import package_file

M = TypeVar("M")  # a Keypoints class: rclpy's (aliked_ros.msg) or rosbags' dataclass
KEYPOINTS_MSGTYPE = "aliked_ros/msg/Keypoints"


def keypoints_definition_path() -> Path:
    """``Keypoints.msg``: in the checkout, beside a pip install or in a ROS 2 install."""
    return package_file("msg", "Keypoints.msg")


def register_keypoints_type(typestore: Any) -> type:
    """Add aliked_ros/msg/Keypoints to a rosbags typestore (once) and return its message class."""
    from rosbags.typesys import get_types_from_msg

    if KEYPOINTS_MSGTYPE not in typestore.types:
        typestore.register(get_types_from_msg(keypoints_definition_path().read_text(), KEYPOINTS_MSGTYPE))
    return typestore.types[KEYPOINTS_MSGTYPE]


def _is_rclpy_class(message_class: type) -> bool:
    return hasattr(message_class, "get_fields_and_field_types")


def _float_array(values: np.ndarray) -> array.array:
    """A contiguous float32 array as ``array.array('f')``, copied once from its buffer (``values.tobytes()`` would
    copy the 1 MB of 2000 × 128 descriptors twice)."""
    floats = array.array("f")
    floats.frombytes(memoryview(values).cast("B"))
    return floats


def build_keypoints_message(message_class: type[M], header: Any, features: Features, model: str) -> M:
    """A Keypoints message of ``message_class`` (rclpy's or rosbags') holding ``features``; ``header`` is used as
    it is (the source image's)."""
    keypoints = np.ascontiguousarray(features.keypoints, dtype=np.float32).reshape(-1)
    scores = np.ascontiguousarray(features.scores, dtype=np.float32)
    descriptors = np.ascontiguousarray(features.descriptors, dtype=np.float32).reshape(-1)
    if _is_rclpy_class(message_class):
        keypoints, scores, descriptors = (_float_array(values) for values in (keypoints, scores, descriptors))
    return message_class(
        header=header,
        height=features.image_height,
        width=features.image_width,
        model=model,
        descriptor_size=features.descriptor_size,
        keypoints=keypoints,
        scores=scores,
        descriptors=descriptors,
    )


def features_from_message(message: Any) -> Features:
    """The Features a Keypoints message holds (rclpy's or rosbags'), with a sentence where its arrays disagree."""
    scores = np.asarray(message.scores, dtype=np.float32)
    count = len(scores)
    keypoints = np.asarray(message.keypoints, dtype=np.float32)
    descriptors = np.asarray(message.descriptors, dtype=np.float32)
    size = int(message.descriptor_size)
    if keypoints.size != 2 * count or descriptors.size != count * size:
        raise AlikedError(
            f"Inconsistent Keypoints message: {count} scores, {keypoints.size} keypoint values, "
            f"{descriptors.size} descriptor values of size {size}."
        )
    return Features(keypoints.reshape(count, 2), scores, descriptors.reshape(count, size), int(message.height),
                    int(message.width))


__all__ = ["KEYPOINTS_MSGTYPE", "build_keypoints_message", "features_from_message", "keypoints_definition_path",
           "register_keypoints_type"]
