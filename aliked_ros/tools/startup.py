"""`aliked-ros startup`: how long the node takes, from the engine's load, to serve a camera; run twice for a
robot's second start."""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import sys
import time
from pathlib import Path

from aliked_ros import bags, datasets, parameters
from aliked_ros.errors import AlikedError
from aliked_ros.image_messages import message_to_image
from aliked_ros.messages import KEYPOINTS_MSGTYPE
from aliked_ros.processing import needs_first_image
from aliked_ros.signals import Terminated
from aliked_ros.tools.process_bag import add_parameter_arguments, overrides_from_args
from aliked_ros.tools.vo_input import is_bag

DEFAULT_RATE_HZ = 30.0
DEFAULT_DURATION_S = 180.0
DEFAULT_FRAMES_AFTER = 300
MAX_FRAMES_HELD = 100  # the input's first frames, held as messages and cycled


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "startup", help="the node's start: seconds to the first Keypoints message and to the compiled graph",
        description="Starts the node's engine as the node does (same parameters and YAML files: config/aliked.yaml, "
                    "then --params-file, then the options below; background_compile included), then feeds it the "
                    "frames of INPUT (a bag's images or a folder of images, cycled) at a camera's pace through the "
                    "node's frame path, image message in, Keypoints message out. Prints the seconds from the "
                    "engine's load to the first message and, where the engine compiles in the background, to the "
                    "first message of the compiled graph, and the frames' latencies while it compiled and after. "
                    "Run it twice to time a robot's second start (torch.compile's cache is read then). Writes no "
                    "file.")
    parser.add_argument("input", metavar="INPUT", help="a ROS 1 or ROS 2 bag with images, or a folder of images")
    parser.add_argument("--topic", default=None, help="image topic of a bag (default: its only image topic)")
    add_parameter_arguments(parser)
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE_HZ,
                        help=f"frames per second, a camera's pace (default {DEFAULT_RATE_HZ:g}; 0: back to back)")
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION_S,
                        help="seconds from the engine's load after which the run ends "
                             f"(default {DEFAULT_DURATION_S:g})")
    parser.add_argument("--frames-after", type=int, default=DEFAULT_FRAMES_AFTER,
                        help="frames timed after the compiled graph took over (after the first frame where nothing "
                             f"compiles in the background; default {DEFAULT_FRAMES_AFTER})")
    parser.add_argument("--foreground", action="store_true",
                        help="compile before the first frame (background_compile false), to compare")
    parser.add_argument("--json", action="store_true",
                        help="print the report as one JSON line on stdout (its lines go to stderr then)")
    parser.set_defaults(run=run)


def log(text: str) -> None:
    print(f"startup: {text}", file=sys.stderr)


def input_messages(source: Path, topic: str | None) -> tuple[list, str]:
    """The first MAX_FRAMES_HELD image messages of a bag or a folder, and what they are."""
    if not source.exists():
        raise AlikedError(f"{source} does not exist; give a bag with images or a folder of images.")
    if is_bag(source):
        with bags.open_bag(source) as reader:
            topic = bags.select_image_topic(reader, topic)
            messages = [message for _, message in itertools.islice(bags.read_messages(reader, topic, source),
                                                                   MAX_FRAMES_HELD)]
        what = f"images of {topic} in {source}"
    else:
        if topic is not None:
            raise AlikedError("--topic is for a bag; INPUT is a folder of images.")
        sequence = datasets.load_sequence(source)
        messages = [bags.image_message(datasets.read_frame(frame), bags.make_header(frame.stamp_ns, "camera"))
                    for frame in sequence.frames[:MAX_FRAMES_HELD]]
        what = f"{sequence.format} images in {source}"
    if not messages:
        raise AlikedError(f"{source} holds no image to start with.")
    return messages, what


def run(args: argparse.Namespace) -> int:
    from aliked_ros.engines.background import builds_running, exit_without_waiting_for_builds

    for name, value, least in (("--rate", args.rate, 0.0), ("--duration", args.duration, 1e-9),
                               ("--frames-after", args.frames_after, 1)):
        if not value >= least:  # NaN too
            raise AlikedError(f"{name} must be {'positive' if least else 'at least 0'}, not {value}.")
    values = parameters.resolve(overrides_from_args(args), args.params_file)
    if args.foreground:
        values["background_compile"] = False
    messages, what = input_messages(Path(args.input), args.topic)
    first = messages[0]
    image_size = None
    if needs_first_image(values) and not (values["image_height"] and values["image_width"]):
        # A static engine made for these frames, as the node makes it for its first image.
        image_size = (message_to_image(first).shape[:2] if hasattr(first, "format")
                      else (int(first.height), int(first.width)))
    torch_import_s = None
    if "torch" not in sys.modules:  # the node imports it before it loads the engine: said apart
        started = time.perf_counter()
        import torch  # noqa: F401

        torch_import_s = time.perf_counter() - started
    from aliked_ros.startup import measure_startup

    log(f"{len(messages)} {what}, at {args.rate:g} frames/s" if args.rate else f"{len(messages)} {what}, back to back")
    try:
        report = measure_startup(values, messages, bags.message_class(KEYPOINTS_MSGTYPE), rate_hz=args.rate,
                                 duration_s=args.duration, frames_after=args.frames_after, image_size=image_size,
                                 first_image=first if needs_first_image(values) else None, log=log)
    except KeyboardInterrupt as interrupt:
        if builds_running():  # a compilation under way would hold the interpreter's exit: end now, as the node does
            name = signal.Signals(interrupt.signum).name if isinstance(interrupt, Terminated) else None
            print(f"aliked-ros startup: {'terminated by ' + name if name else 'interrupted'}", file=sys.stderr)
            exit_without_waiting_for_builds(128 + interrupt.signum if name else 130)
        raise
    lines = report.lines()
    if torch_import_s is not None:
        lines.insert(0, f"importing torch (before the engine's load): {torch_import_s:.2f} s")
    for line in lines:  # with --json, stdout holds the JSON line alone
        print(line, file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps({"torch_import_s": torch_import_s, **report.as_dict()}))
    # A compilation still under way (--duration ended first) is not waited for.
    exit_without_waiting_for_builds(0)
    return 0
