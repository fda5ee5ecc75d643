"""`aliked-ros process-bag`: the node's pipeline over a recorded bag, offline: one Keypoints message per image."""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from aliked_ros import bags, config, parameters
from aliked_ros.bag_writer import BagWriter
from aliked_ros.errors import AlikedError
from aliked_ros.image_messages import message_to_image
from aliked_ros.latency import LatencyMonitor
from aliked_ros.messages import KEYPOINTS_MSGTYPE
from aliked_ros.processing import FrameProcessor, extractor_from_parameters, needs_first_image, serving_size
from aliked_ros.progress import Progress

DEFAULT_OUTPUT_TOPIC = "/keypoints"  # where aliked_node publishes when launched without a namespace


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "process-bag", help="ALIKED keypoints for every image of a ROS 1 or ROS 2 bag, into a ROS 2 bag",
        description="Reads sensor_msgs/Image or CompressedImage from a ROS 1 .bag or a ROS 2 bag (sqlite3, mcap), "
                    "runs the node's processing (same parameters, same YAML files: config/aliked.yaml, then "
                    "--params-file, then the options below) and writes one aliked_ros/msg/Keypoints per image to a "
                    "ROS 2 bag, header copied from the image and at the image's bag time. Ctrl-C stops and keeps "
                    "what was done. Ends with the latency summary the node reports on /diagnostics.")
    parser.add_argument("bag", metavar="BAG", help="a ROS 1 .bag file or a ROS 2 bag directory")
    parser.add_argument("--output", "-o", required=True, help="the ROS 2 bag directory to create")
    parser.add_argument("--topic", default=None, help="image topic (default: the bag's only image topic)")
    parser.add_argument("--output-topic", default=DEFAULT_OUTPUT_TOPIC,
                        help=f"Keypoints topic (default {DEFAULT_OUTPUT_TOPIC}, as the node publishes it without "
                             "a namespace)")
    add_parameter_arguments(parser)
    parser.add_argument("--warmup", type=int, default=3,
                        help="warm-up runs before the first image where image_height and image_width are set, as "
                             "the node does (default 3; 0 skips)")
    parser.add_argument("--max-frames", type=int, default=None, help="process only the first N images")
    parser.add_argument("--storage", choices=bags.STORAGES, default=bags.DEFAULT_STORAGE,
                        help=f"ROS 2 storage plugin of the output (default {bags.DEFAULT_STORAGE})")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --output if it is a ROS 2 bag or an empty directory (never anything else)")
    parser.set_defaults(run=run)


def add_parameter_arguments(parser) -> None:
    """The node parameters a tool takes on its command line, over config/aliked.yaml and --params-file (read back
    by :func:`overrides_from_args`); ``parser`` may be an argument group."""
    parser.add_argument("--params-file", default=None,
                        help="ROS 2 parameters file, e.g. config/tum.yaml or config/kitti.yaml (over aliked.yaml)")
    parser.add_argument("--model", default=None, help="ALIKED variant (parameter model)")
    parser.add_argument("--engine", default=None, choices=parameters.ENGINE_CHOICES,
                        help="parameter engine: auto (tensorrt where installed, else onnxruntime with an ONNX file, "
                             "else torch), tensorrt, onnxruntime or torch")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (parameter device)")
    parser.add_argument("--precision", default=None, choices=config.PRECISIONS,
                        help="parameter precision (auto: fp16 on a GPU, fp32 on the CPU)")
    parser.add_argument("--top-k", type=int, default=None, help="keypoints per image (parameter top_k)")
    parser.add_argument("--score-threshold", type=float, default=None, help="parameter score_threshold")
    parser.add_argument("--weights", default=None, help="ALIKED .pth weights (parameter weights_path)")
    parser.add_argument("--onnx-path", default=None, help="ONNX file of the onnxruntime engine (parameter onnx_path)")


def overrides_from_args(args: argparse.Namespace) -> dict:
    """The node parameters set on the command line (None: not set, the files decide)."""
    return {"model": args.model, "engine": args.engine, "device": args.device, "precision": args.precision,
            "top_k": args.top_k, "score_threshold": args.score_threshold, "weights_path": args.weights,
            "onnx_path": args.onnx_path}


@dataclass
class Outcome:
    written: int = 0
    skipped: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # each distinct image error, reported once

    def skip(self, error: AlikedError) -> None:
        self.skipped += 1
        text = str(error)
        if text not in self.errors:
            log(f"image skipped: {text}")
        self.errors[text] = self.errors.get(text, 0) + 1


def end_to_end_seconds(bag_time_ns: int, stamp_ns: int, processing_seconds: float) -> float | None:
    """As the node would measure it had it received the image when it was recorded: (bag time − stamp) +
    processing. None for an unstamped image, as in the node."""
    if stamp_ns <= 0:
        return None
    return (bag_time_ns - stamp_ns) * 1e-9 + processing_seconds


def process_messages(messages, processor: FrameProcessor, writer: BagWriter, output_topic: str,
                     monitor: LatencyMonitor, progress: Progress, outcome: Outcome) -> None:
    for bag_time, image in messages:
        monitor.received()
        start = time.perf_counter()
        image = bags.with_ros2_header(image)  # the Keypoints message is ROS 2: its header has no seq
        try:
            result = processor.process(image)
        except AlikedError as error:  # the image's fault (encoding, size): the node skips it too
            monitor.dropped()
            outcome.skip(error)
            progress.advance()
            continue
        writer.write(output_topic, bag_time, result.message)
        processing = time.perf_counter() - start
        monitor.published(processing, end_to_end_seconds(bag_time, bags.stamp_to_ns(image.header.stamp), processing))
        outcome.written += 1
        progress.advance()


def log(text: str) -> None:
    print(f"process-bag: {text}", file=sys.stderr)


def load_processor(values: dict, warmup: int, first_image=None) -> FrameProcessor:
    """The node's engine and processor for the resolved parameters, warmed up as the node does; a static engine from
    the cache is made for ``first_image``'s size and layout where the parameters leave them open, as the node
    waits for its first image to do."""
    size = None
    if first_image is not None and not (values["image_height"] and values["image_width"]):
        size = message_to_image(first_image).shape[:2] if hasattr(first_image, "format") else \
            (int(first_image.height), int(first_image.width))
    extractor = extractor_from_parameters(values, log=log, image_size=size, first_image=first_image)
    height, width = serving_size(extractor, values, size)
    if height and width and warmup > 0:
        log(f"warming up for {width}x{height}")
        try:
            extractor.warmup(height, width, iterations=warmup)
        except BaseException:
            extractor.close()
            raise
    return FrameProcessor(extractor, bags.message_class(KEYPOINTS_MSGTYPE), values["score_threshold"])


def run_inputs(args: argparse.Namespace) -> tuple[Path | str | None, ...]:
    """Every path the run reads, none of which it may write: the bag (its directory where its file is named), the
    parameters file, the weights and the ONNX file."""
    source = Path(args.bag)
    bag = source.parent if source.suffix in (".mcap", ".db3") else source
    return (source, bag, args.params_file, args.weights, args.onnx_path)


def run(args: argparse.Namespace) -> int:
    # Everything a user can get wrong is checked before the engine loads and before the output is touched.
    if args.max_frames is not None and args.max_frames < 1:
        raise AlikedError(f"--max-frames must be at least 1, not {args.max_frames}.")
    if not args.output_topic.startswith("/") or args.output_topic.endswith("/"):
        raise AlikedError(f"--output-topic must be an absolute topic name such as /keypoints, "
                          f"not {args.output_topic!r}.")
    values = parameters.resolve(overrides_from_args(args), args.params_file)
    # Offline, every frame from the compiled graph: a bag waits for the compilation, it has no camera to keep up with.
    values["background_compile"] = False
    source = Path(args.bag)
    with bags.open_bag(source) as reader:
        topic = bags.select_image_topic(reader, args.topic)
        total = min(bags.message_count(reader, topic), args.max_frames or sys.maxsize)
        output = bags.check_output(args.output, args.overwrite, inputs=run_inputs(args))
        first_image = None
        if needs_first_image(values):  # a static engine made for the bag's own images
            first_image = next((message for _, message in bags.read_messages(reader, topic, source)), None)
        processor = load_processor(values, args.warmup, first_image)
        monitor = LatencyMonitor(values["latency_window"])
        log(f"{processor.extractor.describe()}: {total} images of {topic} → {args.output_topic} in {output} "
            f"({args.storage})")
        progress = Progress("process-bag", total)
        outcome = Outcome()
        messages = itertools.islice(bags.read_messages(reader, topic, source), args.max_frames)
        # An old output is replaced only at the first Keypoints message, so a run that fails before it (an engine
        # that cannot process these images) leaves it in place; the bag is closed readable on every exit, marked
        # partial where the run was cut short (Ctrl-C, SIGTERM, a full disk).
        writer = BagWriter(output, args.storage, replace=args.overwrite)
        try:
            with writer:
                process_messages(messages, processor, writer, args.output_topic, monitor, progress, outcome)
                if outcome.written == 0 and outcome.skipped:  # raised inside: no empty bag is left
                    raise AlikedError(f"None of the {outcome.skipped} images could be processed: "
                                      f"{next(iter(outcome.errors))}")
        except BaseException as error:
            if writer.partial_reason:
                log(writer.describe())
            if isinstance(error, KeyboardInterrupt):
                log(f"latency: {monitor.summary().describe()}")
            raise
        finally:
            processor.extractor.close()
    progress.finish()
    skipped = f", {outcome.skipped} images skipped" if outcome.skipped else ""
    print(f"{output}: {outcome.written} Keypoints messages on {args.output_topic}{skipped}")
    print(f"latency: {monitor.summary().describe()}")
    return 0
