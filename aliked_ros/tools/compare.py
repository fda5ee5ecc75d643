"""`aliked-ros compare`: two extractors (engines or precisions) on the same frames, as a markdown table.

An extractor is named by a spec, ``ENGINE[:KEY=VALUE,...]``:

- ``torch[:model=M,top_k=K,device=D,precision=auto|fp32|fp16,weights=FILE,cuda_graph=true|false,
  compile=true|false,score_threshold=T,max_keypoints=N]`` (on CUDA the CUDA graph and, with ``compile``, the compiled
  fast path, as the node runs it, unless ``cuda_graph=false``)
- ``onnxruntime:onnx_path=FILE[,providers=cpu|cuda|tensorrt|auto,device=D,score_threshold=T]``
- ``tensorrt:engine_path=FILE[,score_threshold=T]``

The keys are fields of :class:`aliked_ros.config.ExtractorConfig` (``weights`` is ``weights_path``, ``providers``
``onnxruntime_providers``), parsed by the field's type and checked by its rules.

Shorthands: the engine may be left out for torch (``precision=fp16`` is ``torch:precision=fp16``); for onnxruntime
and tensorrt the path may be given bare (``onnxruntime:x.onnx``), and a bare ``FILE.onnx`` or
``FILE.engine``/``.plan`` is that engine with that file. Torch specs take ``model``, ``top_k``, ``device`` and
``weights`` from ``--model``, ``--top-k``, ``--device`` and ``--weights`` where they do not set them; ``model`` and
``top_k`` otherwise from the other side when that is an exported file (so ``--a torch --b x.onnx`` compares like
with like), else the usual defaults.

Image sizes: onnxruntime and tensorrt engines take one image size only. An image of another size is skipped, with a
note on stderr and under the table (it would otherwise be resized, which moves every keypoint); ``--resize WxH``
resizes every image first (OpenCV area interpolation), so that both extractors see the same resized frame. No image
left to compare is an error.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aliked_ros import outputs, tables, validation
from aliked_ros.comparison import MatchStatistics, markdown_table, match_features, table_row
from aliked_ros.config import ExtractorConfig
from aliked_ros.errors import AlikedError
from aliked_ros.imaging import as_rgb, list_images, read_image
from aliked_ros.tools.common import add_overwrite_option, output_path
from aliked_ros.tools.compare_specs import check_spec_ready, parse_spec, spec_config, spec_paths

DEFAULT_A = "torch:precision=fp32,cuda_graph=false"  # the reference: fp32, eager
DEFAULT_B = "torch:precision=fp16"  # as the node runs fp16 (on CUDA: the compiled CUDA graph)
DEFAULT_MATCH_RADIUS = 1.0
REPORT_TITLE = "## aliked-ros compare"
REPORT_OUTPUT = outputs.OutputKind("a report written by aliked-ros compare", outputs.text_starting_with(REPORT_TITLE))

def _parse_size(text: str) -> tuple[int, int]:
    """'WxH' → (height, width)."""
    width, x, height = text.lower().partition("x")
    try:
        width_value, height_value = int(width), int(height)
    except ValueError:
        raise AlikedError(f"--resize {text!r} is not WIDTHxHEIGHT, e.g. 640x480.") from None
    if not x or min(width_value, height_value) < 1:
        raise AlikedError(f"--resize {text!r} is not WIDTHxHEIGHT, e.g. 640x480.")
    return height_value, width_value


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare", help="compare two engines or precisions on the same frames (keypoints, scores, descriptors)",
        description="Runs extractors A and B on each image and pairs their keypoints by mutual nearest neighbour "
                    "within --match-radius pixels. Prints a markdown table, one row per image and one for all "
                    "images pooled: keypoint counts, matches (and % of the larger count), distance of matched "
                    "keypoints, absolute score difference and descriptor cosine at matched keypoints. "
                    "SPEC is ENGINE[:KEY=VALUE,...] with the keys of torch: model, top_k, device, precision "
                    "(auto, fp32 or fp16), weights, cuda_graph, compile, score_threshold, max_keypoints; "
                    "of onnxruntime: onnx_path (required), providers, device, score_threshold; of tensorrt: "
                    "engine_path (required), score_threshold. Options alone (precision=fp16) mean torch; a bare "
                    "FILE.onnx or FILE.engine means "
                    "that engine with that file. "
                    "Images a fixed-size engine does not take are skipped with a note (or use --resize).")
    parser.add_argument("images", nargs="*",
                        help="image files or directories (default: the shared TUM and KITTI frames, else "
                             "scikit-image's samples)")
    parser.add_argument("--a", dest="spec_a", default=DEFAULT_A, metavar="SPEC",
                        help=f"extractor A, the reference (default {DEFAULT_A})")
    parser.add_argument("--b", dest="spec_b", default=DEFAULT_B, metavar="SPEC",
                        help=f"extractor B (default {DEFAULT_B})")
    defaults = ExtractorConfig()
    parser.add_argument("--model", default=None,
                        help="model of torch specs that do not name one (default: the other side's exported file's, "
                             f"else {defaults.model})")
    parser.add_argument("--top-k", type=int, default=None,
                        help=f"top_k of torch specs that do not set it (default: the other side's exported file's, "
                             f"else {defaults.top_k})")
    parser.add_argument("--device", default=None,
                        help=f"device of torch specs that do not set it (default {defaults.device})")
    parser.add_argument("--weights", default=None, help="a .pth file for torch specs that do not set weights")
    parser.add_argument("--match-radius", type=float, default=DEFAULT_MATCH_RADIUS,
                        help=f"largest distance in pixels of a matched pair (default {DEFAULT_MATCH_RADIUS})")
    parser.add_argument("--resize", default=None, metavar="WxH",
                        help="resize every image to W x H first (both extractors see the resized frame)")
    parser.add_argument("--max-images", type=int, default=None,
                        help="compare at most N images, spread evenly over the list (first and last included)")
    parser.add_argument("--homography", type=int, default=0, metavar="N",
                        help="also estimate homographies between each image and N synthetic warps of it, with A's "
                             "and with B's features, and report the mean corner error (a downstream check)")
    parser.add_argument("--output", "-o", default=None, metavar="FILE.md",
                        help="also write the report (markdown) to this file")
    add_overwrite_option(parser, "a report")
    parser.set_defaults(run=run)


# --- images -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Frame:
    name: str
    source: object  # a Path, or an already decoded image

    def load(self) -> np.ndarray:
        return read_image(self.source) if isinstance(self.source, Path) else self.source


def default_frames() -> list[Frame]:
    """The shared TUM and KITTI frames beside the checkout, else scikit-image's samples."""
    from aliked_ros.sample_data import dataset_frames, registry_frames

    paths = dataset_frames("tum") + dataset_frames("kitti")
    if paths:
        return [Frame(path.name, path) for path in paths]
    return [Frame(name, image) for name, image in registry_frames()]


def select_frames(inputs: list[str], max_images: int | None) -> list[Frame]:
    if max_images is not None and max_images < 1:
        raise AlikedError(f"--max-images must be at least 1, not {max_images}.")
    if inputs:
        paths = list_images(inputs)
        names = [path.name for path in paths]
        frames = [Frame(path.name if names.count(path.name) == 1 else str(path), path) for path in paths]
    else:
        frames = default_frames()
    if max_images is not None and len(frames) > max_images:
        picks = np.unique(np.linspace(0, len(frames) - 1, max_images).round().astype(int))
        frames = [frames[i] for i in picks]
    return frames


# --- extractors ---------------------------------------------------------------------------------------------------

def describe(extractor) -> str:
    path = getattr(extractor, "onnx_path", None) or getattr(extractor, "engine_path", None)
    text = extractor.describe()
    if extractor.image_size is not None:
        height, width = extractor.image_size
        text += f", {width}x{height} only"
    return text + (f" ({Path(path).name})" if path else "")


# --- the comparison -----------------------------------------------------------------------------------------------

def log(text: str) -> None:
    print(f"compare: {text}", file=sys.stderr, flush=True)


def report_markdown(description_a: str, description_b: str, radius: float, rows: list[list[str]],
                    notes: list[str]) -> str:
    lines = [REPORT_TITLE, "",
             f"- A: {description_a}",
             f"- B: {description_b}",
             f"- Keypoints paired by mutual nearest neighbour within {radius:g} px; matched % is of the larger count; "
             "abs Δscore is |score B − score A| and cos the descriptor cosine, at matched keypoints; the last row "
             "pools every image's matches.",
             "", markdown_table(rows)]
    if notes:
        lines += ["", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"


def homography_errors(rgb, features_a, features_b, extractor_a, extractor_b, count: int):
    """Per side, the corner errors of the homographies estimated between the frame and its synthetic warps."""
    from aliked_ros.homography import estimate_corner_error, synthetic_homographies, warp

    height, width = rgb.shape[:2]
    errors = ([], [])
    for truth in synthetic_homographies(width, height, count):
        warped = warp(rgb, truth)
        for side, (features, extractor) in enumerate(((features_a, extractor_a), (features_b, extractor_b))):
            errors[side].append(estimate_corner_error(features, extractor.extract(warped), truth))
    return errors


def _mean_text(errors) -> str:
    found = [e for e in errors if e is not None]
    return f"{np.mean(found):.3f}" if found else "n/a"


HOMOGRAPHY_COLUMNS = ("image", "A mean px", "A max px", "A failed", "B mean px", "B max px", "B failed")


def homography_markdown(rows, count: int) -> str:
    """The homography table: per image and pooled, the mean and max corner error of each side."""
    def cells(errors):
        found = [e for e in errors if e is not None]
        if not found:  # no estimate at all: the placeholder keeps the column's numbers right-aligned
            return [tables.NUMBER_PLACEHOLDER, tables.NUMBER_PLACEHOLDER, str(len(errors))]
        return [f"{np.mean(found):.3f}", f"{np.max(found):.3f}", str(len(errors) - len(found))]

    pooled = ([], [])
    image_rows = []
    for name, errors in rows:
        image_rows.append([name, *cells(errors[0]), *cells(errors[1])])
        pooled[0].extend(errors[0])
        pooled[1].extend(errors[1])
    image_rows.append([f"**all ({len(rows)})**", *cells(pooled[0]), *cells(pooled[1])])
    lines = ["", f"### Homography on {count} synthetic warps per image", "",
             "Mutual nearest neighbours, RANSAC at 3 px; corner error: mean distance of the four image corners "
             "mapped by the estimated and the true homography (px); failed: warps without an estimate.", "",
             tables.markdown_table(HOMOGRAPHY_COLUMNS, image_rows, align_numbers=True)]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    # Everything a user can get wrong is checked before an extractor is created: a B that cannot run must not cost
    # the seconds of loading A first.
    spec_a, spec_b = parse_spec(args.spec_a, "--a"), parse_spec(args.spec_b, "--b")
    check_spec_ready(spec_a, "--a")
    check_spec_ready(spec_b, "--b")
    if args.weights and not Path(args.weights).expanduser().is_file():
        raise AlikedError(f"--weights {args.weights} is not a file; give the model's .pth file.")
    if args.homography < 0:
        raise AlikedError(f"--homography must be a number of warps, at least 0, not {args.homography}.")
    if not args.match_radius > 0:
        raise AlikedError(f"--match-radius must be a positive number of pixels, not {args.match_radius}.")
    if args.top_k is not None:
        validation.top_k(args.top_k, "--top-k")
    config_a, config_b = spec_config(spec_a, args, spec_b), spec_config(spec_b, args, spec_a)
    resize = _parse_size(args.resize) if args.resize else None
    inputs = [*args.images, args.weights, *spec_paths(spec_a), *spec_paths(spec_b)]
    output = output_path(args.output, "--output", REPORT_OUTPUT, args.overwrite, inputs)
    frames = select_frames(args.images, args.max_images)

    from aliked_ros.engines import create_extractor

    with contextlib.ExitStack() as stack:
        extractor_a = stack.enter_context(create_extractor(config_a, log=log))
        extractor_b = stack.enter_context(create_extractor(config_b, log=log))
        description_a, description_b = describe(extractor_a), describe(extractor_b)
        log(f"A: {description_a}")
        log(f"B: {description_b}")
        notes = check_pair(extractor_a, extractor_b, resize)
        for note in notes:
            log(note)

        rows, all_matches, skipped, homography_rows = [], [], [], []
        interrupted = False
        try:
            for number, frame in enumerate(frames, 1):
                prefix = f"[{number}/{len(frames)}] {frame.name}"
                rgb = as_rgb(frame.load())
                if resize is not None and rgb.shape[:2] != resize:
                    import cv2

                    rgb = np.ascontiguousarray(cv2.resize(rgb, resize[::-1], interpolation=cv2.INTER_AREA))
                height, width = rgb.shape[:2]
                refusal = size_refusal(extractor_a, "A", height, width) or size_refusal(extractor_b, "B", height,
                                                                                      width)
                if refusal:
                    skipped.append(f"{frame.name} ({width}x{height})")
                    log(f"{prefix} {width}x{height}: skipped, {refusal}")
                    continue
                start = time.perf_counter()
                features_a = extractor_a.extract(rgb)
                middle = time.perf_counter()
                features_b = extractor_b.extract(rgb)
                end = time.perf_counter()
                matches = match_features(features_a, features_b, args.match_radius)
                stats = matches.statistics()
                all_matches.append(matches)
                rows.append(table_row(frame.name, f"{width}x{height}", stats))
                log(f"{prefix} {width}x{height}: A {stats.count_a} keypoints ({(middle - start) * 1e3:.0f} ms), "
                    f"B {stats.count_b} ({(end - middle) * 1e3:.0f} ms), matched {stats.matched} "
                    f"({100 * stats.matched_fraction:.2f} %), cosine median {stats.cosine_median:.5f}")
                if args.homography > 0:
                    errors = homography_errors(rgb, features_a, features_b, extractor_a, extractor_b,
                                               args.homography)
                    homography_rows.append((frame.name, errors))
                    log(f"{prefix} homography mean corner error over {args.homography} warps: "
                        f"A {_mean_text(errors[0])} px, B {_mean_text(errors[1])} px")
        except KeyboardInterrupt:
            interrupted = True
            log("interrupted: reporting the images done so far")

    if skipped:
        fixed = [(label, e.image_size) for label, e in (("A", extractor_a), ("B", extractor_b)) if e.image_size]
        sizes = ", ".join(f"{label} takes {size[1]}x{size[0]} only" for label, size in fixed)
        notes.append(f"Skipped {len(skipped)} image(s) of another size ({sizes}): {', '.join(skipped)}.")
    if interrupted:
        notes.append(f"Interrupted after {len(rows) + len(skipped)} of {len(frames)} image(s).")
    if not rows:
        if interrupted:
            return 130
        height, width = next(e.image_size for e in (extractor_a, extractor_b) if e.image_size)
        raise AlikedError(f"No image could be compared: every one has a size other than the {width}x{height} the "
                          f"fixed-size engine takes. Pass {width}x{height} images, or --resize {width}x{height}.")
    pooled = MatchStatistics.pooled(all_matches)
    rows.append(table_row(f"**all ({len(all_matches)})**", "", pooled))
    report = report_markdown(description_a, description_b, args.match_radius, rows, notes)
    if homography_rows:
        report += homography_markdown(homography_rows, args.homography)
    print(report, end="")
    if output is not None:
        outputs.write_text(output, report)
        log(f"wrote {output}")
    return 130 if interrupted else 0


def check_pair(extractor_a, extractor_b, resize: tuple[int, int] | None) -> list[str]:
    """AlikedError where A and B cannot be compared at all; notes (for stderr and the report) where they differ."""
    if extractor_a.descriptor_size != extractor_b.descriptor_size:
        raise AlikedError(f"A has {extractor_a.descriptor_size}-dimensional descriptors ({extractor_a.model}) and B "
                          f"{extractor_b.descriptor_size}-dimensional ones ({extractor_b.model}): descriptors of "
                          "different models cannot be compared; use the same model on both sides.")
    sizes = {label: e.image_size for label, e in (("A", extractor_a), ("B", extractor_b)) if e.image_size}
    if len(set(sizes.values())) > 1:
        (_, (ha, wa)), (_, (hb, wb)) = sizes.items()
        raise AlikedError(f"A takes {wa}x{ha} images only and B {wb}x{hb} only: no image fits both; compare "
                          "files made for the same image size.")
    if resize is not None and sizes and resize not in sizes.values():
        height, width = next(iter(sizes.values()))
        raise AlikedError(f"--resize {resize[1]}x{resize[0]} gives images the fixed-size engine refuses; use "
                          f"--resize {width}x{height}.")
    notes = []
    if extractor_a.model != extractor_b.model:
        notes.append(f"A runs {extractor_a.model} and B {extractor_b.model}: different networks, expect differences.")
    if extractor_a.top_k != extractor_b.top_k:
        notes.append(f"A keeps top-k {extractor_a.top_k} and B {extractor_b.top_k}: the counts differ by design, "
                     "and so does the matched %.")
    return notes


def size_refusal(extractor, label: str, height: int, width: int) -> str | None:
    if extractor.image_size is None or extractor.image_size == (height, width):
        return None
    fixed_height, fixed_width = extractor.image_size
    return (f"{label} takes {fixed_width}x{fixed_height} images only (use --resize {fixed_width}x{fixed_height} "
            "to resize every image)")
