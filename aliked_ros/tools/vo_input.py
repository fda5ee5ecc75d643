"""What `aliked-ros vo` reads: a bag (images or Keypoints, with its CameraInfo) or a folder of images (with its
dataset's intrinsics), as stamped frames and one camera."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aliked_ros import bags, datasets, vo
from aliked_ros.errors import AlikedError
from aliked_ros.features import Features
from aliked_ros.messages import KEYPOINTS_MSGTYPE, features_from_message
from aliked_ros.vo import Camera, camera_from_camera_info

STAMP_SECONDS = 1e-9


# --- intrinsics ----------------------------------------------------------------------------------------------------


def explicit_camera(args: argparse.Namespace) -> Camera | None:
    if args.intrinsics and args.calib:
        raise AlikedError("Give --intrinsics or --calib, not both.")
    if args.distortion and not args.intrinsics:
        raise AlikedError("--distortion goes with --intrinsics.")
    if args.intrinsics:
        return Camera(vo.parse_intrinsics(args.intrinsics), "--intrinsics",
                      distortion=vo.parse_distortion(args.distortion))
    if args.calib:
        path = Path(args.calib)
        if not path.is_file():
            raise AlikedError(f"The calibration file {path} does not exist.")
        intrinsics = datasets.parse_kitti_calib(path, args.calib_row)
        return Camera(intrinsics.camera_matrix(), f"{path} {args.calib_row}")
    return None


def camera_from_bag(reader, topic: str, info_topic: str | None, path: Path) -> Camera:
    """The first CameraInfo of ``info_topic``, else of ``<topic namespace>/camera_info``, else of the bag's only
    CameraInfo topic."""
    infos = sorted(name for name, info in reader.topics.items() if info.msgtype == bags.CAMERA_INFO_MSGTYPE)
    if info_topic is None:
        beside = bags.camera_info_topic(topic)
        info_topic = beside if beside in infos else (infos[0] if len(infos) == 1 else None)
    if info_topic is None or info_topic not in infos:
        found = ", ".join(infos) or "none"
        raise AlikedError(f"No CameraInfo for {topic} in {path} (CameraInfo topics: {found}); give --intrinsics "
                          "fx,fy,cx,cy, --calib calib.txt or --camera-info-topic.")
    for _, info in bags.read_messages(reader, info_topic, path):
        return camera_from_camera_info(info, f"CameraInfo on {info_topic}")
    raise AlikedError(f"The CameraInfo topic {info_topic} of {path} holds no message; give --intrinsics.")


# --- frames --------------------------------------------------------------------------------------------------------


def is_bag(path: Path) -> bool:
    return (path.is_file() and path.suffix in (".bag", ".mcap", ".db3")) or bags.is_ros2_bag_dir(path)


def keypoints_topics(reader) -> list[str]:
    return sorted(name for name, info in reader.topics.items() if info.msgtype == KEYPOINTS_MSGTYPE)


def select_topic(reader, topic: str | None) -> tuple[str, bool]:
    """(topic, whether it holds Keypoints): ``topic`` checked, else the only Keypoints topic with messages, else the
    only image topic with messages; a bag with neither is refused naming its topics and their message counts."""
    counts = {name: bags.message_count(reader, name) for name in reader.topics}
    listing = ", ".join(f"{name} ({info.msgtype.rpartition('/')[2]}, {counts[name]} message"
                        f"{'' if counts[name] == 1 else 's'})" for name, info in sorted(reader.topics.items()))
    if topic is not None and topic in counts and counts[topic] == 0:
        raise AlikedError(f"The topic {topic} of the bag holds no message (its topics: {listing}).")
    # Topics without messages (a bag written by a run that failed before its first frame) are no candidates.
    keypoints = [name for name in keypoints_topics(reader) if counts[name]]
    images = [name for name in bags.image_topics(reader) if counts[name]]
    if topic is None and not keypoints and not images:
        raise AlikedError(f"The bag holds no Keypoints and no image messages (its topics: {listing or 'none'}); give a "
                          "bag with frames in it.")
    if topic is not None and topic in keypoints:
        return topic, True
    if topic is None and len(keypoints) == 1:
        return keypoints[0], True
    if topic is None and len(keypoints) > 1:
        raise AlikedError(f"The bag has {len(keypoints)} Keypoints topics ({', '.join(keypoints)}); choose one "
                          "with --topic.")
    if topic is None and len(images) == 1:
        return images[0], False
    return bags.select_image_topic(reader, topic), False


def extract_frames(extractor, images: Iterator[tuple[float, np.ndarray]],
                   score_threshold: float) -> Iterator[tuple[float, Features]]:
    for stamp, image in images:
        yield stamp, extractor.extract(image).above(score_threshold)


def bag_images(reader, topic: str, path: Path) -> Iterator[tuple[float, np.ndarray]]:
    from aliked_ros.image_messages import message_to_image

    for _, message in bags.read_messages(reader, topic, path):
        yield bags.stamp_to_ns(message.header.stamp) * STAMP_SECONDS, message_to_image(message)


def bag_keypoints(reader, topic: str, path: Path) -> Iterator[tuple[float, Features]]:
    for _, message in bags.read_messages(reader, topic, path):
        yield bags.stamp_to_ns(message.header.stamp) * STAMP_SECONDS, features_from_message(message)


def folder_images(sequence: datasets.ImageSequence) -> Iterator[tuple[float, np.ndarray]]:
    for frame in sequence.frames:
        yield frame.stamp_ns * STAMP_SECONDS, datasets.read_frame(frame)


@dataclass
class Input:
    """What INPUT yields: stamped images (to extract) or stamped Features, and the intrinsics it carries."""

    description: str
    total: int
    images: Iterator[tuple[float, np.ndarray]] | None = None
    features: Iterator[tuple[float, Features]] | None = None
    camera: Camera | None = None


@contextlib.contextmanager
def open_input(args: argparse.Namespace) -> Iterator[Input]:
    source = Path(args.input)
    if not source.exists():
        raise AlikedError(f"{source} does not exist; give a bag or a folder of images.")
    if is_bag(source):
        with bags.open_bag(source) as reader:
            topic, holds_keypoints = select_topic(reader, args.topic)
            camera = explicit_camera(args) or camera_from_bag(reader, topic, args.camera_info_topic, source)
            total = bags.message_count(reader, topic)
            if holds_keypoints:
                yield Input(f"{total} Keypoints messages of {topic}", total,
                            features=bag_keypoints(reader, topic, source), camera=camera)
            else:
                yield Input(f"{total} images of {topic}", total, images=bag_images(reader, topic, source),
                            camera=camera)
        return
    sequence = datasets.load_sequence(source)
    camera = explicit_camera(args)
    if camera is None and sequence.intrinsics is not None:
        distortion = np.asarray(sequence.intrinsics.distortion, dtype=np.float64)
        camera = Camera(sequence.intrinsics.camera_matrix(), f"{sequence.intrinsics.name} of the sequence",
                        distortion=distortion if np.any(distortion) else None)
    if camera is None:
        raise AlikedError(f"No intrinsics for {source}: give --intrinsics fx,fy,cx,cy or --calib calib.txt.")
    yield Input(f"{len(sequence.frames)} {sequence.format} images in {source}", len(sequence.frames),
                images=folder_images(sequence), camera=camera)
