"""`aliked-ros vo`: frame-to-frame monocular visual odometry over a bag or a folder of images, trajectory in TUM
format."""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from aliked_ros import datasets, outputs, parameters, vo
from aliked_ros.errors import AlikedError
from aliked_ros.features import Features
from aliked_ros.matching import MATCHERS, create_matcher
from aliked_ros.tools.process_bag import add_parameter_arguments, overrides_from_args
from aliked_ros.tools.vo_input import Input, explicit_camera, extract_frames, open_input
from aliked_ros.vo import Camera


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "vo", help="monocular visual odometry from a bag or images: a TUM trajectory",
        description="Matches consecutive frames (mutual nearest neighbours or LightGlue), estimates their motion "
                    "(essential matrix with RANSAC, up to scale) and chains it into a trajectory written in TUM "
                    "format (timestamp tx ty tz qx qy qz qw; camera-to-world, the world being the first camera's "
                    "frame, x right, y down, z forward). INPUT is a ROS 1 or ROS 2 bag holding aliked_ros/msg/"
                    "Keypoints (from process-bag: no network runs) or images (extracted with the node's parameters, "
                    "as process-bag does), or a folder of images (a KITTI or TUM sequence, or any). Each step has "
                    "unit length unless --speed is given. Prints one line per frame and a summary.")
    parser.add_argument("input", metavar="INPUT", help="a bag (Keypoints or images) or a folder of images")
    parser.add_argument("--output", "-o", required=True, help="trajectory file to write (TUM format)")
    parser.add_argument("--kitti-output", default=None,
                        help="also write the poses in KITTI's format (3x4 per line, no stamps), for evo_ape kitti")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace trajectory files that an earlier run wrote (never other files)")
    camera = parser.add_argument_group("intrinsics (default: the bag's CameraInfo, or a KITTI sequence's calib.txt)")
    camera.add_argument("--intrinsics", default=None, metavar="FX,FY,CX,CY", help="pinhole intrinsics in pixels")
    camera.add_argument("--distortion", default=None, metavar="K1,K2,P1,P2[,K3]",
                        help="OpenCV distortion coefficients of unrectified images, with --intrinsics (keypoints are "
                             "undistorted for the geometry)")
    camera.add_argument("--calib", default=None, help="a KITTI odometry calib.txt")
    camera.add_argument("--calib-row", default="P0", choices=tuple(datasets.KITTI_CALIB_ROWS.values()),
                        help="its projection matrix of the camera (default P0: grey left)")
    camera.add_argument("--camera-info-topic", default=None,
                        help="sensor_msgs/CameraInfo topic (default: <image topic namespace>/camera_info, or the "
                             "bag's only CameraInfo topic)")
    parser.add_argument("--topic", default=None,
                        help="Keypoints or image topic (default: the bag's only Keypoints topic, else its only image "
                             "topic)")
    matching = parser.add_argument_group("matching")
    matching.add_argument("--matcher", choices=MATCHERS, default="mnn",
                          help="mnn: mutual nearest neighbours (numpy); lightglue: LightGlue through kornia, for "
                               "128-d descriptors (not aliked-t16) (default mnn)")
    matching.add_argument("--ratio", type=float, default=None, help="mnn: Lowe's ratio test, e.g. 0.9 (default off)")
    matching.add_argument("--min-similarity", type=float, default=None,
                          help="mnn: smallest descriptor cosine similarity of a match (default off)")
    matching.add_argument("--lightglue-weights", default=None,
                          help="lightglue: aliked_lightglue.pth (default: searched as the ALIKED weights are)")
    matching.add_argument("--matcher-device", default="auto", help="lightglue: cpu, cuda, cuda:N or auto")
    geometry = parser.add_argument_group("motion")
    defaults = vo.VOOptions()
    geometry.add_argument("--estimator", choices=tuple(vo.ESTIMATORS), default=defaults.estimator,
                          help=f"robust estimator of cv2.findEssentialMat (default {defaults.estimator}: RANSAC with "
                               "local optimisation, far steadier than plain ransac)")
    geometry.add_argument("--ransac-threshold", type=float, default=defaults.ransac_threshold_px,
                          help=f"RANSAC inlier threshold in pixels (default {defaults.ransac_threshold_px:g})")
    geometry.add_argument("--min-matches", type=int, default=defaults.min_matches,
                          help=f"fewer matches leave the pose unchanged (default {defaults.min_matches})")
    geometry.add_argument("--min-inliers", type=int, default=defaults.min_inliers,
                          help=f"fewer inliers leave the pose unchanged (default {defaults.min_inliers})")
    geometry.add_argument("--min-inlier-ratio", type=float, default=defaults.min_inlier_ratio,
                          help=f"a smaller share of inliers among the matches leaves the pose unchanged (default "
                               f"{defaults.min_inlier_ratio:g})")
    geometry.add_argument("--min-parallax", type=float, default=defaults.min_parallax_px,
                          help=f"median keypoint motion in pixels below which the camera is taken to stand still "
                               f"(default {defaults.min_parallax_px:g})")
    geometry.add_argument("--speed", type=float, default=None,
                          help="metres per second: each step's length is speed x its time (default: unit steps)")
    network = parser.add_argument_group("extraction, for images (node parameters; see process-bag)")
    add_parameter_arguments(network)
    parser.add_argument("--max-frames", type=int, default=None, help="use only the first N frames")
    parser.add_argument("--evaluate", action="store_true",
                        help="also print checks that need no ground truth as markdown: per pair matches, inliers, "
                             "points in front of both cameras, the camera's direction; per triplet of frames the "
                             "rotation consistency (R_ac against R_bc R_ab)")
    parser.add_argument("--compare-fp16", action="store_true",
                        help="images only: extract every frame with the torch engine in fp32 and in fp16 (model, "
                             "top_k, device, weights and torch_compile of the parameters; fp16 on CUDA as the node "
                             "runs it, through a CUDA graph; slow on a CPU) and print both "
                             "evaluations and their differences; the trajectory comes from fp32")
    parser.set_defaults(run=run)


def log(text: str) -> None:
    print(f"vo: {text}", file=sys.stderr)


# --- the run -------------------------------------------------------------------------------------------------------


def make_matcher(args: argparse.Namespace):
    if args.matcher == "lightglue":
        if args.ratio is not None or args.min_similarity is not None:
            raise AlikedError("--ratio and --min-similarity are options of the mnn matcher, not of lightglue.")
        return create_matcher("lightglue", weights=args.lightglue_weights, device=args.matcher_device)
    return create_matcher("mnn", ratio=args.ratio, min_similarity=args.min_similarity)


def odometry_options(args: argparse.Namespace) -> vo.VOOptions:
    return vo.VOOptions(estimator=args.estimator, ransac_threshold_px=args.ransac_threshold,
                        min_matches=args.min_matches, min_inliers=args.min_inliers,
                        min_inlier_ratio=args.min_inlier_ratio, min_parallax_px=args.min_parallax)


def run_inputs(args: argparse.Namespace) -> tuple[str | None, ...]:
    """Every path the run reads, none of which it may write."""
    source = Path(args.input)
    bag = str(source.parent) if source.suffix in (".mcap", ".db3") else None
    return (args.input, bag, args.calib, args.params_file, args.weights, args.onnx_path, args.lightglue_weights)


def check_args(args: argparse.Namespace) -> None:
    if args.max_frames is not None and args.max_frames < 1:
        raise AlikedError(f"--max-frames must be at least 1, not {args.max_frames}.")
    if args.speed is not None and not args.speed >= 0:
        raise AlikedError(f"--speed must be at least 0 m/s, not {args.speed}.")
    inputs = run_inputs(args)
    outputs.check_output(args.output, vo.TUM_OUTPUT, flag="--output", overwrite=args.overwrite, inputs=inputs)
    if args.kitti_output is not None:
        if outputs.same_path(args.kitti_output, args.output):
            raise AlikedError(f"--kitti-output {args.kitti_output} is also --output: the two trajectories need two "
                              "files.")
        outputs.check_output(args.kitti_output, vo.KITTI_OUTPUT, flag="--kitti-output", overwrite=args.overwrite,
                             inputs=(*inputs, args.output))


def follow(odometry: vo.VisualOdometry, frames: Iterator[tuple[float, Features]], camera: Camera,
           speed: float | None, kept: list[Features] | None) -> None:
    """Feed ``frames`` to ``odometry``, one line per frame, a warning for each frame skipped (stamp out of order)
    and each implausible step; ``kept`` (if a list) collects the features of the frames used, for --evaluate."""
    for stamp, features in frames:
        if odometry.reference_stamp is None:
            camera.check(features)
        # A step spans the reference frame to this one (several frames after the camera stood still).
        scale = None
        if speed is not None and odometry.reference_stamp is not None:
            scale = speed * max(stamp - odometry.reference_stamp, 0.0)  # a frame out of order is skipped anyway
        result = odometry.process(features, stamp, scale)
        print(vo.describe_frame(result), flush=True)
        if result.skipped:
            log(f"warning: frame {result.index} ({stamp:.6f} s) skipped: {result.skipped}.")
            continue
        if result.implausible:
            log(f"warning: implausible step from frame {result.reference_index} ({result.reference_stamp:.3f} s) to "
                f"frame {result.index} ({stamp:.3f} s): {result.implausible}. Likely causes: "
                f"{vo.IMPLAUSIBLE_CAUSES}.")
        if kept is not None:
            kept.append(features)


def write_trajectory(odometry: vo.VisualOdometry, args: argparse.Namespace) -> None:
    vo.write_tum(args.output, odometry.trajectory)
    if args.kitti_output:
        vo.write_kitti(args.kitti_output, odometry.trajectory)


def summary(odometry: vo.VisualOdometry, unit: str) -> str:
    trajectory = odometry.trajectory
    text = f"{len(trajectory)} frames, {odometry.valid_steps} of {max(len(trajectory) - 1, 0)} steps estimated"
    if odometry.implausible_steps:  # never "5 of 5 steps estimated" alone when they do not fit together
        text += (f", {odometry.implausible_steps} of them implausible (direction reversed or rotation jump: frames "
                 "out of order, wrong intrinsics or too little texture?)")
    if odometry.out_of_order_frames:
        skipped = odometry.out_of_order_frames
        text += f", {skipped} frame{'s' if skipped > 1 else ''} skipped (stamps not after the previous frame's)"
    return f"{text}; path length {trajectory.path_length():.2f} {unit}"


def compare_fp16(values: dict, images: list[tuple[float, np.ndarray]], camera: Camera,
                 matcher, options: vo.VOOptions) -> list[Features]:
    """Extract ``images`` with the torch engine in fp32 and fp16, print both evaluations and their differences;
    returns the fp32 features."""
    from aliked_ros.engines import create_extractor
    from aliked_ros.processing import extractor_config

    evaluations = {}
    features32: list[Features] = []
    for precision in ("fp32", "fp16"):
        # fp32 eager, the reference; fp16 as the node runs it (on CUDA its compiled CUDA graph)
        config = extractor_config(values).replace(engine="torch", precision=precision)
        extractor = create_extractor(config.replace(cuda_graph=False) if precision == "fp32" else config, log=log)
        if precision == "fp16" and extractor.device == "cpu":
            log("fp16 on the CPU is emulated and several times slower than fp32")
        log(f"{extractor.describe()}: extracting {len(images)} frames")
        try:
            features = [extractor.extract(image).above(values["score_threshold"]) for _, image in images]
        finally:
            extractor.close()
        if precision == "fp32":
            features32 = features
        evaluations[precision] = vo.evaluate(features, camera.matrix, matcher, options, distortion=camera.distortion)
        print(vo.format_evaluation(evaluations[precision], f"{values['model']}, top_k {values['top_k']}, "
                                                           f"{precision}, {extractor.device}"), end="\n\n")
    print("### fp32 against fp16\n")
    print(vo.format_comparison(vo.compare_evaluations(evaluations["fp32"], evaluations["fp16"])), end="\n\n")
    return features32


def frames_of(source: Input, args: argparse.Namespace, values: dict, matcher, options: vo.VOOptions):
    """(stamped Features of INPUT, the extractor to close or None)."""
    if source.features is not None:
        if args.compare_fp16:
            raise AlikedError("--compare-fp16 extracts features itself: give images (a folder or an image bag), "
                              "not Keypoints.")
        return source.features, None
    if args.compare_fp16:
        images = list(itertools.islice(source.images, args.max_frames))
        features = compare_fp16(values, images, source.camera, matcher, options)
        return iter(zip([stamp for stamp, _ in images], features, strict=True)), None
    from aliked_ros.processing import extractor_from_parameters

    extractor = extractor_from_parameters(values, log=log)
    log(extractor.describe())
    return extract_frames(extractor, source.images, values["score_threshold"]), extractor


def run(args: argparse.Namespace) -> int:
    check_args(args)
    options = odometry_options(args)
    explicit_camera(args)  # its errors before any work
    values = parameters.resolve(overrides_from_args(args), args.params_file)
    # Offline, every frame from the compiled graph: a bag waits for the compilation, it has no camera to keep up with.
    values["background_compile"] = False
    kept: list[Features] | None = [] if args.evaluate and not args.compare_fp16 else None
    with open_input(args) as source:
        first = f" (the first {args.max_frames} used)" if args.max_frames and args.max_frames < source.total else ""
        log(f"{source.description}{first}; intrinsics from {source.camera.source}")
        matcher = make_matcher(args)
        log(f"matching with {matcher.describe()}")
        odometry = vo.VisualOdometry(source.camera.matrix, matcher, options, source.camera.distortion)
        if source.camera.distortion is not None:
            log(f"undistorting keypoints with {source.camera.distortion.tolist()}")
        frames, extractor = frames_of(source, args, values, matcher, options)
        try:
            follow(odometry, itertools.islice(frames, args.max_frames), source.camera, args.speed, kept)
        except KeyboardInterrupt:
            if len(odometry.trajectory):
                write_trajectory(odometry, args)
                log(f"interrupted: {args.output} holds the {len(odometry.trajectory)} poses so far")
            raise
        finally:
            if extractor is not None:
                extractor.close()
    if len(odometry.trajectory) == 0:
        raise AlikedError(f"{args.input} holds no frame.")
    write_trajectory(odometry, args)
    if kept is not None:
        if len(kept) < 3:
            log("--evaluate needs at least 3 frames; skipped")
        else:
            evaluation = vo.evaluate(kept, source.camera.matrix, matcher, options,
                                     distortion=source.camera.distortion)
            print(f"\n{vo.format_evaluation(evaluation, 'evaluation')}\n")
    unit = "m" if args.speed is not None else "steps (unit length each)"
    print(f"{args.output}: {summary(odometry, unit)}")
    return 0
