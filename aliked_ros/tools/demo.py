"""`aliked-ros demo`: sample frames through the extractor, a picture of the keypoints and a latency line."""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from aliked_ros import outputs
from aliked_ros.errors import InvalidValueError
from aliked_ros.imaging import read_image
from aliked_ros.sample_data import dataset_frames, registry_frames
from aliked_ros.tools.common import add_model_options, add_overwrite_option, config_from_args


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="run ALIKED on sample frames: a picture and a latency line",
        description="Uses ../shared/data (TUM RGB and KITTI grayscale frames) when it is beside the checkout, "
                    "else scikit-image's sample images.")
    parser.add_argument("--output", "-o", default="aliked_demo",
                        help="directory for the pictures (default aliked_demo)")
    parser.add_argument("--frames", type=int, default=5, help="frames per sequence (default 5)")
    add_overwrite_option(parser, "the pictures")
    add_model_options(parser)
    parser.set_defaults(run=run)


def sample_paths(frames: int) -> dict[str, list[Path]]:
    """The shared TUM and KITTI frames used, per set (empty where ../shared/data is absent)."""
    return {name: paths[:frames] for name in ("tum", "kitti") if (paths := dataset_frames(name))}


def load_sequences(paths: dict[str, list[Path]], frames: int) -> dict[str, list]:
    sequences = {name: [read_image(path) for path in files] for name, files in paths.items()}
    if not sequences:
        sequences = {name: [image] * min(frames, 3) for name, image in registry_frames()}
    return sequences


def run(args: argparse.Namespace) -> int:
    from aliked_ros.visualize import PICTURE_OUTPUT, draw_keypoints, write_image

    if args.frames < 1:
        raise InvalidValueError(f"--frames must be at least 1, not {args.frames}.")
    config = config_from_args(args)  # its errors before any file is read
    paths = sample_paths(args.frames)
    inputs = [args.weights, *(files[0].parent for files in paths.values())]
    sequences = load_sequences(paths, args.frames)
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise outputs.OutputError(f"--output {output} is a file; name the directory for the pictures.")
    for name in sequences:  # checked before the network loads (README, "Outputs and failures")
        outputs.check_output(output / f"{name}.png", PICTURE_OUTPUT, flag="--output", overwrite=args.overwrite,
                             inputs=inputs, create_parents=True)
    from aliked_ros.engines import create_extractor

    extractor = create_extractor(config)
    output.mkdir(parents=True, exist_ok=True)
    print(extractor.describe())
    for name, images in sequences.items():
        height, width = images[0].shape[:2]
        extractor.warmup(height, width, iterations=1)
        timings, counts = [], []
        for image in images:
            start = time.perf_counter()
            features = extractor.extract(image)
            timings.append((time.perf_counter() - start) * 1000)
            counts.append(len(features))
        picture = output / f"{name}.png"
        write_image(picture, draw_keypoints(images[-1], features))
        print(f"{name}: {width}x{height}, {len(images)} frames, median {statistics.median(timings):.1f} ms/frame "
              f"(host to host, after warm-up), {statistics.median(counts):.0f} keypoints → {picture}")
    return 0
