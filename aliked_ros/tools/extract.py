"""`aliked-ros extract`: features of image files to .npz (and pictures with --viz)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from aliked_ros.errors import AlikedError
from aliked_ros.imaging import as_rgb, list_images, read_image
from aliked_ros.model.configs import get_model_config
from aliked_ros.tools.common import add_model_options, create_torch_extractor


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "extract", help="extract ALIKED features from images to .npz files",
        description="Writes OUTPUT/<image stem>.npz with keypoints (N, 2), scores (N,) and descriptors (N, D), "
                    "float32; with --viz also OUTPUT/<image stem>.png. A directory stands for its images.")
    parser.add_argument("images", nargs="+", help="image files or directories")
    parser.add_argument("--output", "-o", required=True, help="output directory (created if missing)")
    add_model_options(parser)
    parser.add_argument("--viz", action="store_true", help="also write a picture of the keypoints")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Everything a user can get wrong is checked before the first file is written.
    get_model_config(args.model)
    if args.top_k == 0 or args.top_k < -1:
        raise AlikedError(f"--top-k must be positive or -1 (threshold mode), not {args.top_k}.")
    paths = list_images(args.images)
    stems = [path.stem for path in paths]
    duplicates = sorted({stem for stem in stems if stems.count(stem) > 1})
    if duplicates:
        raise AlikedError(f"Several inputs share the name {duplicates[0]!r}; their outputs would overwrite each other.")
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise AlikedError(f"--output {output} exists and is not a directory.")
    extractor = create_torch_extractor(args)
    output.mkdir(parents=True, exist_ok=True)
    print(f"{extractor.describe()}: {len(paths)} image(s) → {output}", file=sys.stderr)
    for number, path in enumerate(paths, 1):
        image = read_image(path)
        rgb = as_rgb(image)
        start = time.perf_counter()
        features = extractor.extract(rgb)
        elapsed_ms = (time.perf_counter() - start) * 1000
        if args.top_k > 0:
            features = features.above(args.score_threshold)
        features.save_npz(output / f"{path.stem}.npz")
        if args.viz:
            from aliked_ros.visualize import draw_keypoints, write_image

            write_image(output / f"{path.stem}.png", draw_keypoints(image, features))
        print(f"[{number}/{len(paths)}] {path.name}: {len(features)} keypoints, {elapsed_ms:.1f} ms", file=sys.stderr)
    return 0
