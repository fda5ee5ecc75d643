"""`aliked-ros images-to-bag`: a TUM RGB-D or KITTI odometry sequence, or any folder of images, as a ROS 2 bag."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from aliked_ros import bags, datasets
from aliked_ros.bag_writer import BagWriter
from aliked_ros.errors import AlikedError
from aliked_ros.progress import Progress


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "images-to-bag", help="write a TUM, KITTI or image-folder sequence as a ROS 2 bag",
        description="Writes sensor_msgs/Image (rgb8 for colour files, mono8 for grey ones: the decoded pixels "
                    "decide, not the file name) stamped with the dataset's times (bag time = header stamp), and "
                    "sensor_msgs/CameraInfo on <topic namespace>/camera_info where the intrinsics are known. "
                    "The bag plays with `ros2 bag play`.")
    parser.add_argument("source", metavar="SRC",
                        help="a TUM sequence (directory with rgb.txt, or a folder of <timestamp>.png), a KITTI "
                             "odometry sequence (sequences/NN with image_0/ and times.txt, or its image_2/ for "
                             "colour) or a folder of images")
    parser.add_argument("--output", "-o", required=True, help="the ROS 2 bag directory to create")
    parser.add_argument("--format", dest="image_format", choices=datasets.FORMATS, default="auto",
                        help="dataset layout (default auto: rgb.txt or timestamp names → tum, image_0/, times.txt "
                             "or 6-digit names → kitti, else folder)")
    parser.add_argument("--topic", default=None,
                        help=f"image topic (default: tum {datasets.TUM_TOPIC}, kitti "
                             f"{datasets.KITTI_TOPICS['image_0']} or {datasets.KITTI_TOPICS['image_2']} for image_2, "
                             f"folder {datasets.FOLDER_TOPIC})")
    parser.add_argument("--frame-id", default=None,
                        help=f"header frame_id (default: tum {datasets.TUM_FRAME_ID}, kitti "
                             f"{datasets.KITTI_FRAME_IDS['image_0']}/{datasets.KITTI_FRAME_IDS['image_2']}, folder "
                             f"{datasets.FOLDER_FRAME_ID})")
    parser.add_argument("--storage", choices=bags.STORAGES, default=bags.DEFAULT_STORAGE,
                        help=f"ROS 2 storage plugin (default {bags.DEFAULT_STORAGE}, ROS 2's default since Iron; "
                             "sqlite3 for older setups)")
    parser.add_argument("--rate", type=float, default=None,
                        help=f"frame rate in Hz of sequences without timestamps: KITTI without times.txt (or to "
                             f"override it) and folders (default {datasets.DEFAULT_RATE_HZ:g})")
    parser.add_argument("--start-time", type=float, default=None,
                        help=f"seconds added to relative times (KITTI, folders; default "
                             f"{datasets.DEFAULT_START_TIME:g}: ROS reads time 0 as unset)")
    parser.add_argument("--camera", choices=datasets.CAMERA_CHOICES, default="auto",
                        help="intrinsics for CameraInfo: auto (KITTI calib.txt; TUM fr1/fr2/fr3 from a "
                             "'freiburgN' in the path, else none), tum-fr1, tum-fr2, tum-fr3 (the TUM RGB-D "
                             "benchmark's published RGB calibration), or none (no CameraInfo)")
    parser.add_argument("--max-frames", type=int, default=None, help="write only the first N frames")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --output if it is a ROS 2 bag or an empty directory (never anything else)")
    parser.set_defaults(run=run)


def write_sequence(sequence: datasets.ImageSequence, writer: BagWriter, topic: str, frame_id: str,
                   progress: Progress) -> None:
    """One Image (and CameraInfo) per frame, bag time = header stamp. A sequence keeps its first frame's encoding and
    size: subscribers (and CameraInfo) expect neither to change on one topic."""
    info_topic = bags.camera_info_topic(topic)
    first = None  # (layout, width, height) of the first frame
    for frame in sequence.frames:
        pixels = datasets.read_frame(frame)
        layout = "grey" if pixels.ndim == 2 else "colour"
        height, width = pixels.shape[:2]
        if first is None:
            first = (layout, width, height)
        elif layout != first[0]:
            raise AlikedError(f"{frame.path} is {layout} but the sequence's first image is {first[0]}; "
                              "convert the images to one kind or write them to separate bags.")
        elif (width, height) != first[1:]:
            raise AlikedError(f"{frame.path} is {width}x{height} but the sequence's first image is "
                              f"{first[1]}x{first[2]}; resize the images to one size or write them to separate bags.")
        header = bags.make_header(frame.stamp_ns, frame_id)
        writer.write(topic, frame.stamp_ns, bags.image_message(pixels, header))
        if sequence.intrinsics is not None:
            writer.write(info_topic, frame.stamp_ns,
                         bags.camera_info_message(sequence.intrinsics, height, width, header))
        progress.advance()


def run(args: argparse.Namespace) -> int:
    # The output first: nothing is read or written before it is known that the bag can be written there.
    output = bags.check_output(args.output, args.overwrite, inputs=(Path(args.source),))
    sequence = datasets.load_sequence(args.source, args.image_format, args.camera, args.rate, args.start_time)
    if args.max_frames is not None:
        if args.max_frames < 1:
            raise AlikedError(f"--max-frames must be at least 1, not {args.max_frames}.")
        sequence = dataclasses.replace(sequence, frames=sequence.frames[:args.max_frames])
    topic = args.topic or sequence.topic
    if not topic.startswith("/") or topic.endswith("/"):
        raise AlikedError(f"--topic must be an absolute topic name such as /camera/image_raw, not {topic!r}.")
    frame_id = sequence.frame_id if args.frame_id is None else args.frame_id
    for note in sequence.notes:
        print(f"images-to-bag: {note}", file=sys.stderr)
    camera = sequence.intrinsics.name if sequence.intrinsics else "no CameraInfo"
    print(f"images-to-bag: {len(sequence.frames)} {sequence.format} frames → {output} ({args.storage}), {topic}, "
          f"frame_id {frame_id!r}, {camera}", file=sys.stderr)
    progress = Progress("images-to-bag", len(sequence.frames))
    # An old output is replaced at the first message; the bag is closed readable on every exit, marked partial
    # where the run was cut short (Ctrl-C, SIGTERM, a bad frame, a full disk), and removed where it holds nothing.
    writer = BagWriter(output, args.storage, replace=args.overwrite)
    try:
        with writer:
            write_sequence(sequence, writer, topic, frame_id, progress)
    except BaseException:
        if writer.partial_reason:
            print(f"images-to-bag: {writer.describe()}", file=sys.stderr)
        raise
    progress.finish()
    counts = ", ".join(f"{count} on {name}" for name, count in writer.counts.items())
    print(f"{output}: {counts}")
    return 0
