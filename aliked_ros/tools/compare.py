"""`aliked-ros compare`: two extractors (engines or precisions) on the same frames, as a markdown table.

An extractor is named by a spec, ``ENGINE[:KEY=VALUE,...]``:

- ``torch[:model=M,top_k=K,device=D,precision=fp32|fp16,weights=FILE,cuda_graph=true,compile=true,
  score_threshold=T,max_keypoints=N]`` (``compile`` with ``cuda_graph``: the compiled fast path)
- ``onnxruntime:onnx_path=FILE[,providers=cpu|cuda|tensorrt|auto,threads=N,device_id=I]``
- ``tensorrt:engine_path=FILE``

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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aliked_ros.comparison import MatchStatistics, markdown_table, match_features, table_row
from aliked_ros.errors import AlikedError
from aliked_ros.imaging import as_rgb, list_images, read_image
from aliked_ros import outputs
from aliked_ros.tools.common import add_overwrite_option, output_path

DEFAULT_A = "torch:precision=fp32"
DEFAULT_B = "torch:precision=fp16"
DEFAULT_MATCH_RADIUS = 1.0
DEFAULT_TOP_K = 1000
REPORT_TITLE = "## aliked-ros compare"
REPORT_OUTPUT = outputs.OutputKind("a report written by aliked-ros compare", outputs.text_starting_with(REPORT_TITLE))

_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _boolean(text: str) -> bool:
    try:
        return _BOOLEANS[text.lower()]
    except KeyError:
        raise ValueError("expected true or false") from None


def _precision(text: str) -> str:
    if text not in ("fp32", "fp16"):
        raise ValueError("expected fp32 or fp16")
    return text


# Per engine: each key a spec may set, with its parser; the first key a bare value stands for (None: none).
SPEC_KEYS = {
    "torch": ({"model": str, "top_k": int, "device": str, "precision": _precision, "weights": str,
               "cuda_graph": _boolean, "compile": _boolean, "score_threshold": float,
               "max_keypoints": int}, None),
    "onnxruntime": ({"onnx_path": str, "providers": str, "threads": int, "device_id": int}, "onnx_path"),
    "tensorrt": ({"engine_path": str}, "engine_path"),
}
REQUIRED_KEYS = {"onnxruntime": ("onnx_path",), "tensorrt": ("engine_path",)}
_SUFFIX_ENGINES = {".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt", ".trt": "tensorrt"}


@dataclass(frozen=True)
class ExtractorSpec:
    """An extractor named on the command line: the engine and the options its spec sets."""

    engine: str
    options: dict = field(default_factory=dict)
    text: str = ""


def parse_spec(text: str, flag: str = "spec") -> ExtractorSpec:
    """``ENGINE[:KEY=VALUE,...]`` (see the module docstring) → ExtractorSpec; AlikedError naming what is wrong."""
    def fail(problem: str) -> AlikedError:
        return AlikedError(f"{flag} {text!r}: {problem}. Write ENGINE[:KEY=VALUE,...], e.g. torch:precision=fp16 "
                           "or onnxruntime:onnx_path=model.onnx.")

    stripped = text.strip()
    if not stripped:
        raise fail("empty")
    head, colon, rest = stripped.partition(":")
    suffix = Path(stripped).suffix.lower()
    if head in SPEC_KEYS:
        engine, items_text = head, rest if colon else ""
    elif "=" not in stripped and suffix in _SUFFIX_ENGINES:  # a bare FILE.onnx or FILE.engine
        engine, items_text = _SUFFIX_ENGINES[suffix], stripped
    elif "=" in head:  # options alone: the torch engine
        engine, items_text = "torch", stripped
    else:
        raise fail(f"unknown engine {head!r} (engines: {', '.join(SPEC_KEYS)})")
    keys, bare_key = SPEC_KEYS[engine]
    options: dict = {}
    items = [item.strip() for item in items_text.split(",")] if items_text.strip() else []
    for position, item in enumerate(items):
        if not item:
            raise fail("an empty option (two commas in a row?)")
        key, equals, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not equals:
            if position == 0 and bare_key is not None:
                key, value = bare_key, item
            else:
                raise fail(f"{item!r} is not KEY=VALUE")
        if key not in keys:
            raise fail(f"unknown option {key!r} for the {engine} engine (options: {', '.join(keys)})")
        if key in options:
            raise fail(f"{key} is given twice")
        if not value:
            raise fail(f"{key} has no value")
        try:
            options[key] = keys[key](value)
        except ValueError as error:
            expected = {int: "expected an integer", float: "expected a number"}.get(keys[key], str(error))
            raise fail(f"{key}={value} is not valid ({expected})") from None
    missing = [key for key in REQUIRED_KEYS.get(engine, ()) if key not in options]
    if missing:
        raise fail(f"the {engine} engine needs {', '.join(missing)}")
    return ExtractorSpec(engine, options, text)


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
                    "(fp32 or fp16), weights, cuda_graph, compile, score_threshold, max_keypoints; "
                    "of onnxruntime: onnx_path (required), providers, threads, device_id; of tensorrt: engine_path "
                    "(required). Options alone (precision=fp16) mean torch; a bare FILE.onnx or FILE.engine means "
                    "that engine with that file. "
                    "Images a fixed-size engine does not take are skipped with a note (or use --resize).")
    parser.add_argument("images", nargs="*",
                        help="image files or directories (default: the shared TUM and KITTI frames, else "
                             "scikit-image's samples)")
    parser.add_argument("--a", dest="spec_a", default=DEFAULT_A, metavar="SPEC",
                        help=f"extractor A, the reference (default {DEFAULT_A})")
    parser.add_argument("--b", dest="spec_b", default=DEFAULT_B, metavar="SPEC",
                        help=f"extractor B (default {DEFAULT_B})")
    parser.add_argument("--model", default=None,
                        help="model of torch specs that do not name one (default: the other side's exported file's, "
                             "else aliked-n16rot)")
    parser.add_argument("--top-k", type=int, default=None,
                        help=f"top_k of torch specs that do not set it (default: the other side's exported file's, "
                             f"else {DEFAULT_TOP_K})")
    parser.add_argument("--device", default=None, help="device of torch specs that do not set it (default auto)")
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

def spec_paths(spec: ExtractorSpec) -> list[str]:
    """The files an extractor spec reads (weights, ONNX file, engine)."""
    return [spec.options[key] for key in ("weights", "onnx_path", "engine_path") if key in spec.options]


def fixed_model_and_top_k(spec: ExtractorSpec) -> tuple[str, int] | None:
    """What an exported file was made for, read without opening a session; None for torch."""
    if spec.engine == "onnxruntime":
        from aliked_ros.engines.onnxruntime_engine import read_session_metadata

        metadata = read_session_metadata(spec.options["onnx_path"])
        return metadata.model, metadata.top_k
    if spec.engine == "tensorrt":
        from aliked_ros.export.engine_info import read_sidecar

        metadata = read_sidecar(spec.options["engine_path"]).onnx
        return metadata.model, metadata.top_k
    return None


def extractor_options(spec: ExtractorSpec, args: argparse.Namespace, other: ExtractorSpec) -> dict:
    """The constructor arguments of ``spec``'s extractor, defaults filled in (see the module docstring)."""
    options = dict(spec.options)
    if spec.engine != "torch":
        return options
    inherited = fixed_model_and_top_k(other) if ("model" not in options or "top_k" not in options) else None
    from aliked_ros.model.configs import DEFAULT_MODEL

    options.setdefault("model", args.model or (inherited[0] if inherited else DEFAULT_MODEL))
    options.setdefault("top_k", args.top_k if args.top_k is not None else inherited[1] if inherited else DEFAULT_TOP_K)
    options.setdefault("device", args.device or "auto")
    if args.weights is not None:
        options.setdefault("weights", args.weights)
    options["fp16"] = options.pop("precision", "fp32") == "fp16"
    return options


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


def homography_markdown(rows, count: int) -> str:
    """The homography table: per image and pooled, the mean and max corner error of each side."""
    lines = ["", f"### Homography on {count} synthetic warps per image", "",
             "Mutual nearest neighbours, RANSAC at 3 px; corner error: mean distance of the four image corners "
             "mapped by the estimated and the true homography (px); failed: warps without an estimate.", "",
             "| image | A mean px | A max px | A failed | B mean px | B max px | B failed |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    pooled = ([], [])

    def cells(errors):
        found = [e for e in errors if e is not None]
        if not found:
            return ["n/a", "n/a", str(len(errors))]
        return [f"{np.mean(found):.3f}", f"{np.max(found):.3f}", str(len(errors) - len(found))]

    for name, errors in rows:
        lines.append("| " + " | ".join([name, *cells(errors[0]), *cells(errors[1])]) + " |")
        pooled[0].extend(errors[0])
        pooled[1].extend(errors[1])
    lines.append("| " + " | ".join([f"**all ({len(rows)})**", *cells(pooled[0]), *cells(pooled[1])]) + " |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    # Everything a user can get wrong is checked before an extractor is created.
    spec_a, spec_b = parse_spec(args.spec_a, "--a"), parse_spec(args.spec_b, "--b")
    if args.homography < 0:
        raise AlikedError(f"--homography must be a number of warps, at least 0, not {args.homography}.")
    if not args.match_radius > 0:
        raise AlikedError(f"--match-radius must be a positive number of pixels, not {args.match_radius}.")
    if args.top_k is not None and (args.top_k == 0 or args.top_k < -1):
        raise AlikedError(f"--top-k must be positive or -1 (threshold mode), not {args.top_k}.")
    resize = _parse_size(args.resize) if args.resize else None
    inputs = [*args.images, args.weights, *spec_paths(spec_a), *spec_paths(spec_b)]
    output = output_path(args.output, "--output", REPORT_OUTPUT, args.overwrite, inputs)
    frames = select_frames(args.images, args.max_images)

    from aliked_ros.engines import create_extractor

    with contextlib.ExitStack() as stack:
        options_a = extractor_options(spec_a, args, spec_b)
        options_b = extractor_options(spec_b, args, spec_a)
        extractor_a = stack.enter_context(create_extractor(spec_a.engine, **options_a))
        extractor_b = stack.enter_context(create_extractor(spec_b.engine, **options_b))
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
