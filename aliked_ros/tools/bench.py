"""`aliked-ros bench`: latency, GPU memory and message time of every engine beside the reference ALIKEDs (kornia's,
LightGlue's), as markdown.

The measuring is :mod:`aliked_ros.bench` (ROS-free); this module parses the command line, picks the Keypoints
message class (rclpy's where a ROS 2 build of aliked_ros is importable, else rosbags') and writes the report.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from aliked_ros import outputs
from aliked_ros.bench.images import default_image_sets, directory_image_set
from aliked_ros.bench.report import JSON_OUTPUT, REPORT_OUTPUT, format_report, result_to_json
from aliked_ros.bench.run import CPU_REPEATS, CPU_WARMUP, GPU_REPEATS, GPU_WARMUP, BenchConfig, run_benchmark
from aliked_ros.bench.specs import (DEFAULT_ENGINES, DEFAULT_REFERENCES, ENGINE_SPECS, REFERENCE_SPECS, parse_engines,
                                    parse_references)
from aliked_ros.bench.timing import MessageBuilder, rosbags_message_builder
from aliked_ros.errors import AlikedError
from aliked_ros.tools.common import add_overwrite_option, output_path

DEFAULT_MODELS = "aliked-t16,aliked-n16rot"
DEFAULT_TOP_K = "1000,2000"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench", help="time every engine beside kornia's and LightGlue's ALIKED (latency, GPU memory, message time)",
        description="For each model × K × image set, and each engine this machine can run, warms up and then times "
                    "per-frame host-to-host latency (uint8 frame in host memory in, features in host memory out): "
                    "median, mean and p95; GPU memory (the process's, by NVML, and torch's peak allocated); the time "
                    "to build the Keypoints message. kornia's and LightGlue's ALIKED (eager, torch.compile'd, and "
                    "compiled with CUDA graphs; same weights, same K) run in the same process as the references, and "
                    "the table gives each row's speed-up over each reference. Engines this machine cannot run are "
                    "skipped with the reason under the table. Progress on stderr, the markdown report on stdout.")
    parser.add_argument("--models", default=DEFAULT_MODELS,
                        help=f"comma-separated ALIKED variants (default {DEFAULT_MODELS})")
    parser.add_argument("--top-k", default=DEFAULT_TOP_K, metavar="K[,K...]",
                        help=f"comma-separated keypoint counts (default {DEFAULT_TOP_K})")
    parser.add_argument("--images", nargs="+", action="extend", default=None, metavar="DIR",
                        help="image directories, each one set of one image size (default: the TUM 640x480 and KITTI "
                             "1241x376 frames in ../shared/data, else scikit-image's samples)")
    parser.add_argument("--engines", default=DEFAULT_ENGINES,
                        help=f"comma-separated, from {', '.join(ENGINE_SPECS)}; 'onnxruntime' is "
                             "onnxruntime-fp32, 'tensorrt' is tensorrt-fp16, 'all' is every one "
                             f"(default {DEFAULT_ENGINES})")
    parser.add_argument("--reference", default=DEFAULT_REFERENCES,
                        help="kornia, lightglue (each: eager, compiled and compiled+graphs; the compiled ones on CUDA "
                             f"only), all, a comma-separated choice of {', '.join(REFERENCE_SPECS)}, or none "
                             f"(default {DEFAULT_REFERENCES})")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default auto)")
    parser.add_argument("--warmup", type=int, default=None,
                        help=f"untimed frames per row (default {GPU_WARMUP} on CUDA, "
                             f"{CPU_WARMUP} on the CPU; compiled rows take a few more whatever this says)")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"timed frames per row (default {GPU_REPEATS} on CUDA, "
                             f"{CPU_REPEATS} on the CPU)")
    parser.add_argument("--frame-path", action="store_true",
                        help="also time each engine row's frame path as the node runs it: from a camera message of "
                             "each encoding (mono8 for grey sets; rgb8, bgr8, yuv422, bayer_rggb8, JPEG for colour "
                             "ones) to the built and serialised Keypoints message, with its stages")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="after timing, run N more frames of each row that torch runs under torch.profiler and "
                             "add its largest entries to the report: GPU kernel time on CUDA (replayed CUDA graphs "
                             "included), operator self time on the CPU (default 0: no profile)")
    parser.add_argument("--onnxruntime-provider", default="auto", choices=("auto", "cpu", "cuda", "tensorrt"),
                        help="auto: CUDA on a CUDA device (the CPU, with a note, where this onnxruntime has no CUDA "
                             "provider), else the CPU (default auto)")
    parser.add_argument("--cache-dir", default=None,
                        help="where exported ONNX files and TensorRT plans are kept (default: aliked_ros's cache)")
    parser.add_argument("--message-class", default="auto", choices=("auto", "rclpy", "rosbags"),
                        help="Keypoints class the message time is taken with: auto is rclpy's aliked_ros.msg where "
                             "a ROS 2 build of aliked_ros is sourced, else rosbags' (default auto)")
    parser.add_argument("--output", "-o", default=None, metavar="FILE.md", help="also write the report here")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="write every raw number (per-frame times included) as JSON here")
    add_overwrite_option(parser, "a report or JSON file")
    parser.set_defaults(run=run)


def _list(text: str, flag: str, kind=str) -> list:
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise AlikedError(f"{flag} {text!r} has an empty item; write a comma-separated list, e.g. {flag} a,b.")
    try:
        return list(dict.fromkeys(kind(item) for item in items))
    except ValueError:
        raise AlikedError(f"{flag} {text!r}: expected comma-separated whole numbers, e.g. 1000,2000.") from None


def message_builder(choice: str) -> MessageBuilder:
    """rclpy's Keypoints class where asked for or (auto) importable, else rosbags'."""
    if choice in ("auto", "rclpy"):
        try:
            # Generated by a ROS 2 build of this package (colcon); a plain checkout has no aliked_ros.msg, so the
            # import is optional here and the message time is then taken with rosbags' class.
            from aliked_ros.ros.message_classes import keypoints_class

            Keypoints = keypoints_class()
        except ImportError as error:
            if choice == "rclpy":
                raise AlikedError(f"rclpy's aliked_ros.msg.Keypoints does not import ({error}); source the ROS 2 "
                                  "workspace that built aliked_ros, or use --message-class rosbags.") from None
        else:
            return MessageBuilder(Keypoints, Keypoints().header, "rclpy (aliked_ros.msg.Keypoints)")
    return rosbags_message_builder()


def command_line(args: argparse.Namespace) -> str:
    """The command as typed when run as `aliked-ros bench`; else one that repeats this run, every option spelt out."""
    argv = sys.argv
    if argv and Path(argv[0]).name in ("aliked-ros", "cli.py", "__main__.py") and "bench" in argv[1:]:
        return "aliked-ros " + shlex.join(argv[1:])
    parts = ["aliked-ros", "bench", "--models", args.models, "--top-k", args.top_k]
    if args.images:
        parts += ["--images", *args.images]
    parts += ["--engines", args.engines, "--reference", args.reference, "--device", args.device]
    for flag, value in (("--warmup", args.warmup), ("--repeats", args.repeats), ("--cache-dir", args.cache_dir),
                        ("--profile", args.profile or None)):
        if value is not None:
            parts += [flag, str(value)]
    if args.frame_path:
        parts.append("--frame-path")
    if args.onnxruntime_provider != "auto":
        parts += ["--onnxruntime-provider", args.onnxruntime_provider]
    if args.message_class != "auto":
        parts += ["--message-class", args.message_class]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    # Everything a user can get wrong is checked before minutes of measuring (the rest by run_benchmark).
    inputs = [*(args.images or [])]
    output = output_path(args.output, "--output", REPORT_OUTPUT, args.overwrite, inputs)
    json_path = output_path(args.json, "--json", JSON_OUTPUT, args.overwrite, [*inputs, args.output])
    config = BenchConfig(
        models=_list(args.models, "--models"),
        top_ks=_list(args.top_k, "--top-k", int),
        image_sets=[],
        engines=parse_engines(args.engines),
        references=parse_references(args.reference),
        device=args.device,
        warmup=args.warmup,
        repeats=args.repeats,
        onnxruntime_provider=args.onnxruntime_provider,
        cache_dir=args.cache_dir,
        command=command_line(args),
        profile_frames=args.profile,
        frame_path=args.frame_path,
    )
    builder = message_builder(args.message_class)
    if args.images:
        config.image_sets = [directory_image_set(directory) for directory in args.images]
    else:
        config.image_sets = default_image_sets()
    result = run_benchmark(config, builder)
    report = format_report(result)
    print(report, end="")
    if output is not None:
        outputs.write_text(output, report)
        print(f"bench: wrote {output}", file=sys.stderr)
    if json_path is not None:
        outputs.write_text(json_path, json.dumps(result_to_json(result), indent=1) + "\n")
        print(f"bench: wrote {json_path}", file=sys.stderr)
    return 130 if result.interrupted else 0
