"""ROS bags through rosbags, without ROS: output paths, a reader for ROS 1 and ROS 2 bags, image topics, and the
sensor_msgs messages images-to-bag writes. Bags are written by :mod:`aliked_ros.bag_writer`.

Convention:
    - Written bags are ROS 2 bags in rosbag2 format 8, which Humble and Jazzy both read, mcap by default (what
      ``ros2 bag record`` writes since Iron; sqlite3 on request), CDR-serialised with the ROS 2 Jazzy typestore plus
      aliked_ros/msg/Keypoints. Each topic's message definition is stored in the bag, so ROS 2 tools read them.
    - Read bags: a ROS 1 ``.bag`` file, or a ROS 2 bag directory (sqlite3 or mcap; its ``.mcap``/``.db3`` file stands
      for the directory). Messages come as rosbags dataclasses; a ROS 1 header has ``seq``, which
      :func:`ros2_header` drops.
    - Stamps: ``header.stamp`` and bag timestamps are both integer nanoseconds since the epoch here.
    - Every failure a user can cause (missing or corrupt bag, unknown topic, existing output) is an AlikedError.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from aliked_ros import outputs
from aliked_ros.errors import AlikedError
from aliked_ros.outputs import OutputKind

STORAGES = ("mcap", "sqlite3")
DEFAULT_STORAGE = "mcap"
# rosbag2's metadata format 8 (Iron's): Jazzy reads it, and so does Humble, whose reader takes each topic's
# offered_qos_profiles as a string, which format 9 (Jazzy's) writes as a list: Humble's `ros2 bag info` and `play`
# fail on a format 9 bag ("bad conversion").
BAG_VERSION = 8
IMAGE_MSGTYPE = "sensor_msgs/msg/Image"
COMPRESSED_MSGTYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_MSGTYPE = "sensor_msgs/msg/CameraInfo"
IMAGE_MSGTYPES = (IMAGE_MSGTYPE, COMPRESSED_MSGTYPE)


@functools.cache
def typestore():
    """The ROS 2 Jazzy typestore with aliked_ros/msg/Keypoints registered: the types of every bag written here."""
    from rosbags.typesys import Stores, get_typestore

    from aliked_ros.messages import register_keypoints_type

    store = get_typestore(Stores.ROS2_JAZZY)
    register_keypoints_type(store)
    return store


def message_class(msgtype: str):
    return typestore().types[msgtype]


# --- paths -------------------------------------------------------------------------------------------------------


def is_ros2_bag_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "metadata.yaml").is_file() or any(path.glob("*.mcap")) or
                              any(path.glob("*.db3")))


# Beside the files metadata.yaml names: sqlite3's journal files, and the reserve of bag_writer's free-space guard.
BAG_SIDE_FILE_SUFFIXES = ("-wal", "-shm", "-journal")
WRITER_RESERVE_NAME = ".aliked_ros_reserve"


def bag_file_names(path: Path) -> set[str] | None:
    """The names a ROS 2 bag directory consists of: metadata.yaml and the storage files it lists (with sqlite3's
    journals); None where ``path`` has no readable rosbag2 metadata.yaml."""
    import yaml

    try:
        with open(path / "metadata.yaml", encoding="utf-8") as file:
            information = yaml.safe_load(file)["rosbag2_bagfile_information"]
        storage_files = [str(name) for name in information["relative_file_paths"]]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError):
        return None
    names = {"metadata.yaml", WRITER_RESERVE_NAME}
    for name in storage_files:
        if Path(name).name != name:  # a file outside the directory is no part of this bag to delete
            return None
        names.update({name, *(name + suffix for suffix in BAG_SIDE_FILE_SUFFIXES)})
    return names


def _replaceable_bag(path: Path) -> bool:
    """What --overwrite may replace with a new bag: an empty directory, or a ROS 2 bag directory that holds nothing
    but its bag (metadata.yaml and the files it names). A directory with anything else in it (a user's recordings
    with their notes, a bag without metadata.yaml) is never deleted: the user removes it, knowing what it holds."""
    if not path.is_dir() or path.is_symlink():
        return False
    entries = list(path.iterdir())
    if not entries:
        return True
    names = bag_file_names(path)
    return names is not None and all(entry.name in names and entry.is_file() and not entry.is_symlink()
                                      for entry in entries)


BAG_OUTPUT = OutputKind("a ROS 2 bag with nothing else in its directory (or an empty directory)", _replaceable_bag,
                        directory=True)


def check_output(path: str | Path, overwrite: bool, inputs: tuple[Path | str | None, ...] = (),
                 flag: str = "--output") -> Path:
    """``path`` checked for a new ROS 2 bag before any work, by the policy of :mod:`aliked_ros.outputs`: not an input
    nor holding one, its directory writable, an existing path refused unless ``overwrite``, and then only a ROS 2
    bag directory or an empty directory replaced, never a file or another directory."""
    path = Path(path)
    outputs.check_not_an_input(path, inputs, flag, replaces_directory=True)
    if path.suffix in (".bag", ".mcap", ".db3"):  # a ROS 2 bag is a directory; ".bag" would read as ROS 1
        raise AlikedError(f"{flag} {path}: the output is a ROS 2 bag, a directory; name it without {path.suffix}.")
    return outputs.check_output(path, BAG_OUTPUT, flag=flag, overwrite=overwrite, inputs=inputs)


def clear_output(path: Path) -> None:
    """Remove what :func:`check_output` allowed to be replaced."""
    outputs.remove_output(path)


def prepare_output(path: str | Path, overwrite: bool, inputs: tuple[Path | str | None, ...] = ()) -> Path:
    path = check_output(path, overwrite, inputs)
    clear_output(path)
    return path


# --- messages ----------------------------------------------------------------------------------------------------


def stamp_to_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def make_header(stamp_ns: int, frame_id: str):
    Header, Time = message_class("std_msgs/msg/Header"), message_class("builtin_interfaces/msg/Time")
    return Header(stamp=Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000), frame_id=frame_id)


def ros2_header(header):
    """A ROS 2 std_msgs/Header of any bag's header (a ROS 1 header carries ``seq``, which ROS 2 dropped)."""
    return make_header(stamp_to_ns(header.stamp), header.frame_id)


def with_ros2_header(message):
    """``message`` with its header replaced by :func:`ros2_header`'s, so it can go into a ROS 2 message."""
    return dataclasses.replace(message, header=ros2_header(message.header))


def image_message(pixels: np.ndarray, header):
    """sensor_msgs/Image of grey (H, W) → mono8 or RGB (H, W, 3) → rgb8 uint8 pixels, rows unpadded."""
    if pixels.dtype != np.uint8 or not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 3)):
        raise AlikedError(f"Expected grey (H, W) or RGB (H, W, 3) uint8 pixels, got {pixels.dtype} {pixels.shape}.")
    height, width = pixels.shape[:2]
    encoding = "mono8" if pixels.ndim == 2 else "rgb8"
    return message_class(IMAGE_MSGTYPE)(
        header=header, height=height, width=width, encoding=encoding, is_bigendian=0,
        step=pixels[0].size, data=np.ascontiguousarray(pixels).reshape(-1))


def camera_info_message(intrinsics, height: int, width: int, header):
    """sensor_msgs/CameraInfo of :class:`aliked_ros.datasets.Intrinsics` for an image of ``height`` × ``width``."""
    RegionOfInterest = message_class("sensor_msgs/msg/RegionOfInterest")
    return message_class(CAMERA_INFO_MSGTYPE)(
        header=header, height=height, width=width, distortion_model="plumb_bob",
        d=np.array(intrinsics.distortion, dtype=np.float64),
        k=intrinsics.camera_matrix().reshape(-1),
        r=np.eye(3).reshape(-1),
        p=intrinsics.projection_matrix().reshape(-1),
        binning_x=0, binning_y=0,
        roi=RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def camera_info_topic(image_topic: str) -> str:
    """``/camera/rgb/image_color`` → ``/camera/rgb/camera_info``: image_transport's convention."""
    namespace = image_topic.rstrip("/").rpartition("/")[0]
    return f"{namespace}/camera_info"


# --- reading -----------------------------------------------------------------------------------------------------

def _read_errors() -> tuple[type[BaseException], ...]:
    """What rosbags and its storage back ends raise on a damaged file: they share no base class. Deserialising
    damaged bytes fails inside numpy and struct (ValueError, IndexError, struct.error)."""
    import apsw  # rosbags' sqlite3 back end
    from rosbags.highlevel import AnyReaderError
    from rosbags.rosbag1 import ReaderError as Ros1ReaderError
    from rosbags.rosbag2 import ReaderError as Ros2ReaderError
    from rosbags.serde import SerdeError

    return (AnyReaderError, Ros1ReaderError, Ros2ReaderError, SerdeError, apsw.Error, sqlite3.Error, struct.error,
            EOFError, ValueError, IndexError)


def _bag_root(path: Path) -> Path:
    """The path rosbags opens: a ROS 1 .bag file, or the directory of a ROS 2 bag (also when given its file)."""
    if not path.exists():
        raise AlikedError(f"The bag {path} does not exist.")
    if path.is_file() and path.suffix in (".mcap", ".db3"):
        if (path.parent / "metadata.yaml").is_file():
            return path.parent
        raise AlikedError(f"{path} has no metadata.yaml beside it; run `ros2 bag reindex {path.parent}` first, or "
                          "give the bag directory.")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        if is_ros2_bag_dir(path):
            raise AlikedError(f"The ROS 2 bag {path} has no metadata.yaml (was its recording cut short?); run "
                              f"`ros2 bag reindex {path}` to restore it.")
        raise AlikedError(f"{path} is a directory but not a ROS 2 bag (no metadata.yaml); give a ROS 2 bag "
                          "directory or a ROS 1 .bag file.")
    if path.is_file() and path.suffix != ".bag":
        raise AlikedError(f"{path} is not a bag: give a ROS 1 .bag file or a ROS 2 bag directory.")
    return path


def describe_read_error(path: Path, error: BaseException) -> AlikedError:
    detail = str(error).strip() or type(error).__name__
    return AlikedError(f"The bag {path} could not be read: it is corrupt or truncated ({detail}). Copy it again (an "
                       "interrupted download or recording cuts a bag short), or repair it: `rosbag reindex` for a "
                       "ROS 1 bag, `mcap recover` for an mcap file.")


@contextlib.contextmanager
def open_bag(path: str | Path):
    """An open rosbags AnyReader for a ROS 1 or ROS 2 bag; a missing, foreign or damaged bag is an AlikedError."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    path = Path(path)
    root = _bag_root(path)
    try:
        # The default typestore serves ROS 2 bags that carry no message definitions (sqlite3 bags before Iron).
        reader = AnyReader([root], default_typestore=get_typestore(Stores.ROS2_JAZZY))
        reader.open()
    except _read_errors() as error:
        raise describe_read_error(path, error) from None
    try:
        yield reader
    finally:
        with contextlib.suppress(Exception):
            reader.close()


def image_topics(reader) -> dict[str, str]:
    """{topic: msgtype} of the bag's Image and CompressedImage topics."""
    return {name: info.msgtype for name, info in sorted(reader.topics.items()) if info.msgtype in IMAGE_MSGTYPES}


def _topic_list(topics: dict[str, str]) -> str:
    return ", ".join(f"{name} ({msgtype.rpartition('/')[2]})" for name, msgtype in topics.items()) or "none"


def select_image_topic(reader, topic: str | None) -> str:
    """``topic`` checked against the bag, or its only image topic where ``topic`` is None."""
    images = image_topics(reader)
    if topic is None:
        if len(images) == 1:
            return next(iter(images))
        if not images:
            others = ", ".join(sorted(reader.topics)) or "none"
            raise AlikedError(f"The bag has no sensor_msgs/Image or CompressedImage topic (its topics: {others}).")
        raise AlikedError(f"The bag has {len(images)} image topics: {_topic_list(images)}; choose one with --topic.")
    if topic not in reader.topics:
        raise AlikedError(f"The bag has no topic {topic}; its image topics: {_topic_list(images)}.")
    if topic not in images:
        msgtype = reader.topics[topic].msgtype
        raise AlikedError(f"The topic {topic} holds {msgtype}, not sensor_msgs/Image or CompressedImage; its image "
                          f"topics: {_topic_list(images)}.")
    return topic


def message_count(reader, topic: str) -> int:
    return reader.topics[topic].msgcount


def read_messages(reader, topic: str, path: Path | None = None) -> Iterator[tuple[int, object]]:
    """(bag timestamp in ns, deserialised message) of ``topic`` in bag-time order; damage found on the way is an
    AlikedError."""
    connections = [connection for connection in reader.connections if connection.topic == topic]
    messages = reader.messages(connections=connections)
    errors = _read_errors()
    while True:
        try:
            connection, timestamp, raw = next(messages)
            message = reader.deserialize(raw, connection.msgtype)
        except StopIteration:
            return
        except errors as error:
            raise describe_read_error(path or Path(str(reader.paths[0])), error) from None
        yield timestamp, message


__all__ = ["BAG_OUTPUT", "DEFAULT_STORAGE", "IMAGE_MSGTYPES", "STORAGES", "camera_info_message", "camera_info_topic",
           "check_output", "image_message", "image_topics", "make_header", "message_class", "message_count", "open_bag",
           "read_messages", "select_image_topic", "stamp_to_ns", "typestore", "with_ros2_header"]
