"""`aliked-ros extract`: features of image files to .npz (and pictures with --viz)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from aliked_ros import outputs
from aliked_ros.errors import AlikedError
from aliked_ros.features import FEATURES_OUTPUT
from aliked_ros.imaging import as_rgb, list_images, read_image
from aliked_ros.tools.common import add_model_options, add_overwrite_option, config_from_args
from aliked_ros.visualize import PICTURE_OUTPUT


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "extract", help="extract ALIKED features from images to .npz files",
        description="Writes OUTPUT/<image stem>.npz with keypoints (N, 2), scores (N,) and descriptors (N, D), "
                    "float32; with --viz also OUTPUT/<image stem>.png. A directory stands for its images (hidden "
                    "files left out). An image that cannot be read is skipped with its name and the batch goes on; "
                    "the exit code is then 2. Existing outputs are replaced only with --overwrite.")
    parser.add_argument("images", nargs="+", help="image files or directories")
    parser.add_argument("--output", "-o", required=True, help="output directory (created if missing)")
    add_model_options(parser)
    parser.add_argument("--viz", action="store_true", help="also write a picture of the keypoints")
    add_overwrite_option(parser, ".npz files and pictures")
    parser.set_defaults(run=run)


def planned_outputs(paths: list[Path], output: Path, viz: bool) -> list[tuple[Path, Path | None]]:
    """(features file, picture or None) per image: ``OUTPUT/<stem>.npz`` and ``OUTPUT/<stem>.png``."""
    return [(output / f"{path.stem}.npz", output / f"{path.stem}.png" if viz else None) for path in paths]


def check_outputs(paths: list[Path], output: Path, viz: bool, overwrite: bool,
                  inputs: list[Path]) -> list[tuple[Path, Path | None]]:
    """Every file this run will write, checked before the engine loads (README, "Outputs and failures")."""
    stems = [path.stem for path in paths]
    duplicates = sorted({stem for stem in stems if stems.count(stem) > 1})
    if duplicates:
        raise AlikedError(f"Several inputs share the name {duplicates[0]!r}; their outputs would overwrite each other.")
    if output.exists() and not output.is_dir():
        raise outputs.OutputError(f"--output {output} is a file; name the directory for the .npz files.")
    outputs.check_not_an_input(output, inputs, "--output")
    planned = planned_outputs(paths, output, viz)
    for features_file, picture in planned:
        outputs.check_output(features_file, FEATURES_OUTPUT, flag="--output", overwrite=overwrite, inputs=inputs,
                             create_parents=True)
        if picture is not None:
            outputs.check_output(picture, PICTURE_OUTPUT, flag="--output", overwrite=overwrite, inputs=inputs,
                                 create_parents=True)
    return planned


def run(args: argparse.Namespace) -> int:
    # Everything a user can get wrong is checked before the engine loads and before the first file is written.
    config = config_from_args(args)
    paths = list_images(args.images)
    output = Path(args.output)
    inputs = [*map(Path, args.images), args.weights, args.onnx_path, args.engine_path]
    planned = check_outputs(paths, output, args.viz, args.overwrite, inputs)
    from aliked_ros.engines import create_extractor

    extractor = create_extractor(config, log=lambda text: print(text, file=sys.stderr))
    print(f"{extractor.describe()}: {len(paths)} image(s) → {output}", file=sys.stderr)
    failed: list[str] = []
    for number, (path, (features_file, picture)) in enumerate(zip(paths, planned), 1):
        prefix = f"[{number}/{len(paths)}] {path.name}"
        try:
            image = read_image(path)
            rgb = as_rgb(image)
        except AlikedError as error:  # one bad image does not stop the batch
            failed.append(path.name)
            print(f"{prefix}: skipped: {error}", file=sys.stderr)
            continue
        start = time.perf_counter()
        features = extractor.extract(rgb)
        elapsed_ms = (time.perf_counter() - start) * 1000
        output.mkdir(parents=True, exist_ok=True)  # at the first result: a batch that fails whole leaves no folder
        features.save_npz(features_file)
        if picture is not None:
            from aliked_ros.visualize import draw_keypoints, write_image

            write_image(picture, draw_keypoints(image, features))
        height, width = rgb.shape[:2]
        note = (f" (top-k {config.top_k} is more than its {height * width} pixels: all maxima kept)"
                if config.top_k > height * width else "")
        print(f"{prefix}: {len(features)} keypoints, {elapsed_ms:.1f} ms{note}", file=sys.stderr)
    if failed:
        written = len(paths) - len(failed)
        outcome = ("nothing was written" if written == 0 else
                   f"the other {written} {'was' if written == 1 else 'were'} written to {output}")
        raise AlikedError(f"{len(failed)} of {len(paths)} images could not be processed ({', '.join(failed[:5])}"
                          f"{', ...' if len(failed) > 5 else ''}; reasons above); {outcome}.")
    return 0
