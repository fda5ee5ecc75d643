"""Frame-to-frame monocular visual odometry on ALIKED features, without ROS: the core of `aliked-ros vo` (and of the
VO node to come).

Convention:
    - Intrinsics are a 3×3 camera matrix K of the images the keypoints refer to (pixels, centre of the top-left pixel
      at (0, 0), as OpenCV and the Features convention have it), and optionally OpenCV's distortion coefficients
      (plumb_bob: k1, k2, p1, p2, k3), with which matched keypoints are undistorted before the geometry.
    - Relative motion between two frames (``R``, ``t``) is OpenCV's ``recoverPose`` convention: a point with
      coordinates ``x1`` in camera 1 has ``x2 = R @ x1 + t`` in camera 2; ``t`` is a unit vector (monocular: no
      scale). The camera's own motion, camera 2 seen from camera 1, is the inverse: orientation ``R.T`` and position
      ``-R.T @ t`` (:meth:`RelativePose.camera_rotation`, :meth:`RelativePose.camera_translation`). A camera moving
      forward (a car's, optical axis ahead) has ``camera_translation[2]`` near +1.
    - Camera frames are the optical ones: x right, y down, z forward.
    - A trajectory holds camera-to-world poses ``T_wc`` (4×4), the world being the first camera's frame: the first
      pose is the identity, and ``T_wc[k] = T_wc[ref] @ T_ref,k`` with ``T_ref,k = [[R.T, -s R.T t], [0, 1]]``, ``s``
      the scale of that step (1: unit translation per step, or metres from an external source).
    - Degenerate steps (too few matches, no essential matrix, too few inliers or points in front of both cameras,
      too little parallax) give an invalid :class:`RelativePose` with a reason; the pose is not updated. Too little
      parallax (a car waiting at a light) keeps the reference frame, so the next frames are measured from it; other
      failures move the reference to the new frame (tracking restarts there).
    - Frames come in time order: one whose stamp is not after the previous frame's is skipped and counted. An
      estimated step whose direction reverses the previous one's, or whose rotation rate jumps far above the recent
      steps', is kept but flagged implausible (frames out of order, wrong intrinsics, too little texture).
    - Trajectory files: TUM (``timestamp tx ty tz qx qy qz qw``, seconds, Hamilton quaternion, scalar last) and
      KITTI (the first three rows of ``T_wc``, row-major, one pose a line).
"""

from __future__ import annotations

import collections
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aliked_ros import outputs
from aliked_ros.errors import AlikedError
from aliked_ros.features import Features
from aliked_ros.matching import Matches, MutualNearestNeighbours, as_features


def camera_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


# KITTI odometry sequence 00, grey left camera (calib.txt, P0).
KITTI_00_CAMERA_MATRIX = camera_matrix(718.856, 718.856, 607.1928, 185.2157)


def parse_intrinsics(text: str) -> np.ndarray:
    """``"fx,fy,cx,cy"`` → K."""
    try:
        values = [float(value) for value in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values) or values[0] <= 0 or values[1] <= 0:
        raise AlikedError(f"--intrinsics must be four numbers fx,fy,cx,cy with positive focal lengths, not {text!r}.")
    return camera_matrix(*values)


def check_camera_matrix(matrix) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (3, 3) or not np.all(np.isfinite(matrix)) or matrix[0, 0] <= 0 or matrix[1, 1] <= 0 \
            or not np.allclose(matrix[2], (0.0, 0.0, 1.0)):
        raise AlikedError(f"The camera matrix must be 3x3 [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with positive focal "
                          f"lengths, not {matrix.tolist()}.")
    return matrix


# --- rotations -----------------------------------------------------------------------------------------------------


def rotation_angle_deg(rotation: np.ndarray) -> float:
    """The angle of a rotation matrix, in degrees (0 to 180)."""
    cosine = (np.trace(rotation) - 1.0) / 2.0
    return math.degrees(math.acos(min(1.0, max(-1.0, cosine))))


def rotation_difference_deg(first: np.ndarray, second: np.ndarray) -> float:
    """The angle of ``first.T @ second``: how far apart two rotations are, in degrees."""
    return rotation_angle_deg(first.T @ second)


def vector_angle_deg(first: np.ndarray, second: np.ndarray) -> float:
    cosine = float(np.dot(first, second) / (np.linalg.norm(first) * np.linalg.norm(second)))
    return math.degrees(math.acos(min(1.0, max(-1.0, cosine))))


def rotation_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """A rotation matrix as a unit quaternion ``(qx, qy, qz, qw)`` with ``qw >= 0``.

    Shepperd's method: it divides by the largest of the four ``4 q_i²`` terms, so it stays accurate near 180°.
    """
    m = np.asarray(rotation, dtype=np.float64)
    trace = np.trace(m)
    candidates = (trace, m[0, 0], m[1, 1], m[2, 2])  # 4qw² - 1 = trace; 4qx² - 1 = 2 m00 - trace; ...
    largest = int(np.argmax(candidates))
    if largest == 0:
        w = math.sqrt(1.0 + trace) / 2.0
        q = np.array([(m[2, 1] - m[1, 2]) / (4 * w), (m[0, 2] - m[2, 0]) / (4 * w), (m[1, 0] - m[0, 1]) / (4 * w), w])
    elif largest == 1:
        x = math.sqrt(max(0.0, 1.0 + 2 * m[0, 0] - trace)) / 2.0
        q = np.array([x, (m[0, 1] + m[1, 0]) / (4 * x), (m[0, 2] + m[2, 0]) / (4 * x), (m[2, 1] - m[1, 2]) / (4 * x)])
    elif largest == 2:
        y = math.sqrt(max(0.0, 1.0 + 2 * m[1, 1] - trace)) / 2.0
        q = np.array([(m[0, 1] + m[1, 0]) / (4 * y), y, (m[1, 2] + m[2, 1]) / (4 * y), (m[0, 2] - m[2, 0]) / (4 * y)])
    else:
        z = math.sqrt(max(0.0, 1.0 + 2 * m[2, 2] - trace)) / 2.0
        q = np.array([(m[0, 2] + m[2, 0]) / (4 * z), (m[1, 2] + m[2, 1]) / (4 * z), z, (m[1, 0] - m[0, 1]) / (4 * z)])
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def quaternion_to_rotation(quaternion) -> np.ndarray:
    """``(qx, qy, qz, qw)`` (normalised here) → 3×3 rotation matrix."""
    x, y, z, w = np.asarray(quaternion, dtype=np.float64) / np.linalg.norm(quaternion)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


# --- relative pose -------------------------------------------------------------------------------------------------


# Robust estimators of cv2.findEssentialMat. usac_accurate is RANSAC with local optimisation (GC-RANSAC): on the
# KITTI frames, reordering the matches moves its estimate 20 times less than plain RANSAC's, at the same cost.
ESTIMATORS = {"usac_accurate": "USAC_ACCURATE", "ransac": "RANSAC", "usac_magsac": "USAC_MAGSAC", "lmeds": "LMEDS"}


@dataclass(frozen=True)
class VOOptions:
    """Thresholds of :func:`estimate_relative_pose`."""

    estimator: str = "usac_accurate"  # a key of ESTIMATORS
    ransac_threshold_px: float = 1.0  # Sampson distance a match may have from its epipolar line, in pixels
    ransac_probability: float = 0.999
    min_matches: int = 20
    min_inliers: int = 15
    # Random matches fit an essential matrix too: about 2.5 % of them within 1 px on KITTI (shuffled descriptors).
    min_inlier_ratio: float = 0.15
    min_parallax_px: float = 1.0  # median keypoint motion of the inliers below this: standing still
    # Plausibility of consecutive estimated steps (flagged, not dropped); aliked-t16, K 500. The 20 KITTI 00 frames
    # in order: the cosine of consecutive directions (world frame) is at least 0.995 (the 20 hand-held TUM frames:
    # 0.60); shuffled (8 orders each), 8-15 of the 19 steps fall below it, most to -0.9 ... -1.0 (a step back).
    reversal_cosine: float = -0.5
    # A step rotating more than rotation_jump_min_deg and faster (degrees per second) than rotation_jump_factor times
    # the median of the last RECENT_STEPS is a jump. In order: at most 1.2 times (KITTI) and 1.3 times (TUM) that
    # median, also every 2nd or 3rd frame; shuffled: up to 55 deg (KITTI) and 16 deg (TUM) a step, 2.5-12 times it
    # (the median grows too, so reversals catch most). Below 5 deg a step is never flagged: a car turning hard at
    # 10 Hz, or a hand-held camera panning at 30 Hz, turns about 3 deg a frame.
    rotation_jump_factor: float = 4.0
    rotation_jump_min_deg: float = 5.0
    # Whatever the recent steps did, a step turning faster than this (and more than rotation_jump_min_deg) is
    # flagged: half a turn a second is beyond a car (the KITTI frames in order: at most about 30 deg/s) and a steady
    # hand-held camera, and catches short shuffled runs whose every step is large (20-36 deg at 10 Hz).
    max_rotation_rate_deg_s: float = 180.0

    def __post_init__(self):
        if self.estimator not in ESTIMATORS:
            raise AlikedError(f"Unknown estimator {self.estimator!r}: choose one of {', '.join(ESTIMATORS)}.")
        if not self.ransac_threshold_px > 0:
            raise AlikedError(f"The RANSAC threshold must be positive, not {self.ransac_threshold_px} px.")
        if not 0 < self.ransac_probability < 1:
            raise AlikedError(f"The RANSAC probability must be in (0, 1), not {self.ransac_probability}.")
        if self.min_matches < 5 or self.min_inliers < 5:
            raise AlikedError("An essential matrix needs at least 5 correspondences: min_matches and min_inliers "
                              "must be at least 5.")
        if not 0 <= self.min_inlier_ratio <= 1:
            raise AlikedError(f"min_inlier_ratio must be in [0, 1], not {self.min_inlier_ratio}.")
        if self.min_parallax_px < 0:
            raise AlikedError(f"min_parallax_px must be at least 0, not {self.min_parallax_px}.")
        if not -1 <= self.reversal_cosine <= 1:
            raise AlikedError(f"reversal_cosine must be in [-1, 1], not {self.reversal_cosine}.")
        if not self.max_rotation_rate_deg_s > 0:
            raise AlikedError(f"max_rotation_rate_deg_s must be positive, not {self.max_rotation_rate_deg_s}.")
        if not (self.rotation_jump_factor > 1 and self.rotation_jump_min_deg >= 0):
            raise AlikedError(f"rotation_jump_factor must be above 1 and rotation_jump_min_deg at least 0, not "
                              f"{self.rotation_jump_factor} and {self.rotation_jump_min_deg}.")


@dataclass(frozen=True)
class RelativePose:
    """The motion between two frames (see the module's convention for R and t).

    ``inliers`` are RANSAC's inliers of the essential matrix; ``in_front`` those of them in front of both cameras
    for the chosen (R, t) (recoverPose's count); ``inlier_mask`` flags ``matches`` rows that are both.
    ``parallax_px`` is the median keypoint motion of the RANSAC inliers. ``valid`` is False for a degenerate pair,
    with ``failure`` (one of FAILURES) and a ``reason`` sentence; R is then the identity and t zero.
    """

    valid: bool
    reason: str
    rotation: np.ndarray
    translation: np.ndarray
    matches: Matches
    inliers: int = 0
    in_front: int = 0
    parallax_px: float = 0.0
    inlier_mask: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    failure: str = ""

    @property
    def match_count(self) -> int:
        return len(self.matches)

    @property
    def inlier_ratio(self) -> float:
        return self.inliers / len(self.matches) if len(self.matches) else 0.0

    @property
    def camera_rotation(self) -> np.ndarray:
        """Orientation of camera 2 in camera 1's frame (R.T)."""
        return self.rotation.T

    @property
    def camera_translation(self) -> np.ndarray:
        """Position of camera 2 in camera 1's frame, unit length (-R.T t); zero for an invalid pair."""
        return -self.rotation.T @ self.translation

    def camera_motion(self, scale: float = 1.0) -> np.ndarray:
        """``T_1,2``: the 4×4 pose of camera 2 in camera 1's frame, translation scaled by ``scale``."""
        motion = np.eye(4)
        motion[:3, :3] = self.camera_rotation
        motion[:3, 3] = scale * self.camera_translation
        return motion


FAR_POINT_BASELINES = 1000.0
FAILURES = ("matches", "estimate", "inliers", "parallax", "cheirality")


def _invalid(failure: str, reason: str, matches: Matches, **counts) -> RelativePose:
    return RelativePose(False, reason, np.eye(3), np.zeros(3), matches, failure=failure, **counts)


def estimate_relative_pose(first, second, camera: np.ndarray, matcher=None, options: VOOptions = VOOptions(),
                           distortion: np.ndarray | None = None) -> RelativePose:
    """Match two frames' features (Features or Keypoints messages) and estimate their relative motion: essential
    matrix with a robust estimator (``cv2.findEssentialMat``, ``options.estimator``: RANSAC with local optimisation
    by default), then the one of its four (R, t) that puts the points in front of both cameras
    (``cv2.recoverPose``). ``matcher`` defaults to plain mutual nearest neighbours. ``distortion``: OpenCV's
    coefficients (k1, k2, p1, p2[, k3 ...]) of unrectified images; the matched keypoints are undistorted for the
    geometry (matching sees them as the image has them)."""
    features0, features1 = as_features(first), as_features(second)
    matcher = matcher or MutualNearestNeighbours()
    return pose_from_matches(features0, features1, matcher.match(features0, features1), camera, options, distortion)


def undistort_points(points: np.ndarray, camera: np.ndarray, distortion: np.ndarray | None) -> np.ndarray:
    """Pixel coordinates an ideal pinhole camera with the same K would see; ``points`` unchanged without distortion."""
    import cv2

    if distortion is None or not np.any(distortion) or len(points) == 0:
        return points
    return cv2.undistortPoints(points.reshape(-1, 1, 2), camera, np.asarray(distortion, np.float64),
                               P=camera).reshape(-1, 2)


def pose_from_matches(features0: Features, features1: Features, matches: Matches, camera: np.ndarray,
                      options: VOOptions = VOOptions(), distortion: np.ndarray | None = None) -> RelativePose:
    """The relative motion of two frames from their matches (see :func:`estimate_relative_pose`)."""
    import cv2

    camera = check_camera_matrix(camera)
    if len(matches) < options.min_matches:
        return _invalid("matches", f"only {len(matches)} matches (at least {options.min_matches} needed)", matches)
    points0, points1 = (undistort_points(points, camera, distortion) for points in matches.points(features0,
                                                                                                  features1))
    method = getattr(cv2, ESTIMATORS[options.estimator])
    essential, ransac_mask = cv2.findEssentialMat(points0, points1, camera, method=method,
                                                  prob=options.ransac_probability,
                                                  threshold=options.ransac_threshold_px)
    if essential is None or ransac_mask is None:
        return _invalid("estimate", f"{options.estimator} found no essential matrix", matches)
    essential = essential[:3]  # a minimal sample can give several solutions stacked; RANSAC's best comes first
    ransac_inliers = ransac_mask.ravel().astype(bool)
    inliers = int(ransac_inliers.sum())
    if inliers < max(options.min_inliers, options.min_inlier_ratio * len(matches)):
        return _invalid("inliers", f"only {inliers} of {len(matches)} matches fit one essential matrix (at least "
                        f"{options.min_inliers} and {100 * options.min_inlier_ratio:g}% needed): wrong matches or "
                        "no rigid motion", matches, inliers=inliers)
    parallax = float(np.median(np.linalg.norm(points1[ransac_inliers] - points0[ransac_inliers], axis=1)))
    if parallax < options.min_parallax_px:
        return _invalid("parallax", f"too little parallax ({parallax:.2f} px median motion, at least "
                        f"{options.min_parallax_px:g} needed): the camera may be standing still", matches,
                        inliers=inliers, parallax_px=parallax)
    # recoverPose's default cuts points farther than 50 baselines, so a third of a road scene would not count as
    # "in front"; beyond 1000 baselines a point's depth sign is noise.
    in_front, rotation, translation, pose_mask, _ = cv2.recoverPose(
        essential, points0, points1, camera, distanceThresh=FAR_POINT_BASELINES, mask=ransac_mask.copy())
    in_front = int(in_front)
    if in_front < options.min_inliers:
        return _invalid("cheirality", f"only {in_front} of the {inliers} inliers lie in front of both cameras "
                        f"(at least {options.min_inliers} needed)", matches, inliers=inliers, in_front=in_front,
                        parallax_px=parallax)
    translation = translation.ravel() / np.linalg.norm(translation)
    return RelativePose(True, "", rotation, translation, matches, inliers, in_front, parallax,
                        pose_mask.ravel().astype(bool))


# --- trajectory ----------------------------------------------------------------------------------------------------


@dataclass
class Trajectory:
    """Stamped camera-to-world poses (see the module's convention)."""

    stamps: list[float] = field(default_factory=list)
    poses: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.stamps)

    def append(self, stamp: float, pose: np.ndarray) -> None:
        if self.stamps and stamp <= self.stamps[-1]:
            raise AlikedError(f"Trajectory stamps must increase: {stamp} after {self.stamps[-1]}.")
        self.stamps.append(float(stamp))
        self.poses.append(np.asarray(pose, dtype=np.float64))

    def positions(self) -> np.ndarray:
        return np.array([pose[:3, 3] for pose in self.poses]).reshape(-1, 3)

    def path_length(self) -> float:
        return float(np.linalg.norm(np.diff(self.positions(), axis=0), axis=1).sum()) if len(self) > 1 else 0.0


def _write_atomically(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    if not path.parent.is_dir():
        raise AlikedError(f"The directory {path.parent} of {path} does not exist; create it first.")
    outputs.write_text(path, text)


TUM_HEADER = "# timestamp tx ty tz qx qy qz qw (camera-to-world, world = first camera; aliked-ros vo)"


def _is_kitti_poses(path: Path) -> bool:
    """A KITTI poses file (12 numbers a line, nothing else), as :func:`write_kitti` writes it."""
    try:
        lines = path.read_text().split("\n")
        return all(len([float(value) for value in line.split()]) == 12 for line in lines if line.strip())
    except (OSError, UnicodeDecodeError, ValueError):
        return False


TUM_OUTPUT = outputs.OutputKind("a trajectory written by aliked-ros vo", outputs.text_starting_with(TUM_HEADER))
KITTI_OUTPUT = outputs.OutputKind("a KITTI poses file (12 numbers a line)", _is_kitti_poses)


def write_tum(path: str | os.PathLike, trajectory: Trajectory) -> None:
    """``timestamp tx ty tz qx qy qz qw`` per pose, as the TUM RGB-D tools and evo read it."""
    lines = [TUM_HEADER]
    for stamp, pose in zip(trajectory.stamps, trajectory.poses):
        values = (*pose[:3, 3], *rotation_to_quaternion(pose[:3, :3]))
        lines.append(f"{stamp:.9f} " + " ".join(f"{value:.9g}" for value in values))
    _write_atomically(path, "\n".join(lines) + "\n")


def read_tum(path: str | os.PathLike) -> Trajectory:
    trajectory = Trajectory()
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            stamp, tx, ty, tz, qx, qy, qz, qw = (float(value) for value in line.split())
        except ValueError:
            raise AlikedError(f"{path}:{number} is not 'timestamp tx ty tz qx qy qz qw': {line!r}.") from None
        pose = np.eye(4)
        pose[:3, :3] = quaternion_to_rotation((qx, qy, qz, qw))
        pose[:3, 3] = (tx, ty, tz)
        trajectory.append(stamp, pose)
    return trajectory


def write_kitti(path: str | os.PathLike, trajectory: Trajectory) -> None:
    """The first three rows of each pose, row-major, one a line: KITTI's poses/NN.txt format (no stamps)."""
    lines = [" ".join(f"{value:.9g}" for value in pose[:3].reshape(-1)) for pose in trajectory.poses]
    _write_atomically(path, "\n".join(lines) + "\n")


# --- the odometry --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameResult:
    """What :meth:`VisualOdometry.process` made of one frame. ``relative`` is None for the first frame; the motion
    it holds is from the reference frame (``reference_index``, stamp ``reference_stamp``) to this one.

    ``index`` is the frame's place among the frames given to :meth:`VisualOdometry.process` (0-based), skipped ones
    included. ``skipped`` is a reason where the frame was left out (its stamp is not after the previous frame's): it
    is not in the trajectory and ``relative`` is None. ``implausible`` is a reason where the step was estimated but
    does not fit the steps before it (see :meth:`VisualOdometry.check_step`); the pose is updated all the same.
    """

    index: int
    stamp: float
    pose: np.ndarray  # camera-to-world after this frame
    relative: RelativePose | None
    reference_stamp: float | None
    scale: float = 1.0
    reference_index: int | None = None
    skipped: str = ""
    implausible: str = ""

    @property
    def valid(self) -> bool:
        return self.relative is not None and self.relative.valid


# Where a step does not fit the ones before it, these are what usually went wrong.
IMPLAUSIBLE_CAUSES = ("frames out of order or missing (names or stamps that do not follow the recording), wrong "
                      "intrinsics, or a scene without enough texture")
RECENT_STEPS = 10  # the steps whose median rotation rate is the typical one


class VisualOdometry:
    """Frame-to-frame odometry: feed each frame's features in time order; the trajectory grows by one pose a frame.

    ``scale`` of :meth:`process` sets the length of that step's translation (metres from wheel odometry, a speed
    times the time step, ground truth); None takes 1 (unit translation per step: the trajectory is up to scale).
    A frame whose stamp is not after the previous one's is skipped (counted in ``out_of_order_frames``); an
    estimated step whose direction reverses or whose rotation jumps is kept but flagged (``implausible_steps``).
    """

    def __init__(self, camera: np.ndarray, matcher=None, options: VOOptions = VOOptions(),
                 distortion: np.ndarray | None = None):
        self.camera = check_camera_matrix(camera)
        self.distortion = distortion
        self.matcher = matcher or MutualNearestNeighbours()
        self.options = options
        self.trajectory = Trajectory()
        # counters, not a list of results: a node runs for hours
        self.valid_steps = 0
        self.out_of_order_frames = 0
        self.implausible_steps = 0
        self._frames = 0
        self._reference: tuple[Features, float, np.ndarray, int] | None = None  # features, stamp, pose, index
        self._last_direction: np.ndarray | None = None  # world frame, unit length
        self._rotation_rates: collections.deque[float] = collections.deque(maxlen=RECENT_STEPS)  # deg/s

    @property
    def reference_stamp(self) -> float | None:
        """The stamp of the frame the next one is measured from (None before the first frame)."""
        return None if self._reference is None else self._reference[1]

    def process(self, features, stamp: float, scale: float | None = None) -> FrameResult:
        features = as_features(features)
        index, self._frames = self._frames, self._frames + 1
        if len(self.trajectory) and not stamp > self.trajectory.stamps[-1]:
            # A bag whose stamps go back, a listing out of order: this frame's motion cannot be placed in time.
            self.out_of_order_frames += 1
            reason = (f"its stamp {stamp:.6f} s is not after the previous frame's ({self.trajectory.stamps[-1]:.6f} "
                      "s): frames out of order")
            return FrameResult(index, float(stamp), self.trajectory.poses[-1], None, None, skipped=reason)
        if scale is not None and not (math.isfinite(scale) and scale >= 0):
            raise AlikedError(f"The scale of a step must be a finite number at least 0, not {scale}.")
        if self._reference is None:
            pose = np.eye(4)
            self.trajectory.append(stamp, pose)
            self._reference = (features, float(stamp), pose, index)
            return FrameResult(index, float(stamp), pose, None, None)
        reference, reference_stamp, reference_pose, reference_index = self._reference
        relative = estimate_relative_pose(reference, features, self.camera, self.matcher, self.options,
                                          self.distortion)
        step = 1.0 if scale is None else float(scale)
        implausible = ""
        if relative.valid:
            pose = reference_pose @ relative.camera_motion(step)
            self._reference = (features, float(stamp), pose, index)
            self.valid_steps += 1
            implausible = self.check_step(relative, reference_pose, float(stamp) - reference_stamp)
            self.implausible_steps += bool(implausible)
        else:
            pose = self.trajectory.poses[-1]  # not updated
            if relative.failure != "parallax":
                self._reference = (features, float(stamp), pose, index)  # lost: restart from this frame
        self.trajectory.append(stamp, pose)
        return FrameResult(index, float(stamp), pose, relative, reference_stamp, step, reference_index,
                           implausible=implausible)

    def check_step(self, relative: RelativePose, reference_pose: np.ndarray, seconds: float) -> str:
        """Why an estimated step does not fit the ones before it ("" when it does), and remember it: its direction
        reversing that of the previous step, or a rotation rate far above the recent steps' median."""
        options, reasons = self.options, []
        direction = reference_pose[:3, :3] @ relative.camera_translation  # in the world frame: steps compare
        if self._last_direction is not None:
            cosine = float(np.dot(direction, self._last_direction))
            if cosine < options.reversal_cosine:
                reasons.append(f"the direction of motion reverses (cosine {cosine:+.2f} with the previous step's)")
        angle = rotation_angle_deg(relative.rotation)
        rate = angle / seconds
        if angle > options.rotation_jump_min_deg and rate > options.max_rotation_rate_deg_s:
            reasons.append(f"it rotates {angle:.1f} deg in {seconds:.3g} s ({rate:.0f} deg/s, faster than a vehicle "
                           "or a steady hand turns a camera)")
        elif len(self._rotation_rates) >= 3:  # a median of fewer steps is no typical step
            typical = float(np.median(self._rotation_rates))
            if angle > options.rotation_jump_min_deg and rate > options.rotation_jump_factor * typical:
                reasons.append(f"it rotates {angle:.1f} deg, {rate / max(typical, 1e-9):.0f} times the recent "
                               f"steps' median rate ({typical * seconds:.1f} deg over as long)")
        self._last_direction = direction
        self._rotation_rates.append(rate)
        return "; ".join(reasons)


def describe_frame(result: FrameResult) -> str:
    """One line per frame for logs: matches, inliers, the camera's motion or why there is none."""
    relative = result.relative
    if result.skipped:
        return f"frame {result.index} ({result.stamp:.3f} s): skipped: {result.skipped}"
    if relative is None:
        return f"frame {result.index} ({result.stamp:.3f} s): first frame, pose = identity"
    counts = (f"{relative.match_count} matches, {relative.inliers} inliers ({100 * relative.inlier_ratio:.0f}%), "
              f"{relative.in_front} in front")
    if not relative.valid:
        return f"frame {result.index} ({result.stamp:.3f} s): {counts}; not updated: {relative.reason}"
    direction = " ".join(f"{v:+.3f}" for v in relative.camera_translation)
    return (f"frame {result.index} ({result.stamp:.3f} s): {counts}, parallax {relative.parallax_px:.1f} px, "
            f"rotation {rotation_angle_deg(relative.rotation):.2f} deg, direction [{direction}]"
            + (f"; implausible: {result.implausible}" if result.implausible else ""))


# --- evaluation without ground truth -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairRow:
    first: int
    second: int
    pose: RelativePose


@dataclass(frozen=True)
class TripletRow:
    """Frames a, b, c: how far R_ac (estimated directly) is from R_bc @ R_ab (through b), and how far t_ac is from
    the plane of R_bc t_ab and t_bc (the three translations of one rigid motion are coplanar)."""

    a: int
    b: int
    c: int
    rotation_error_deg: float
    coplanarity_error_deg: float


@dataclass(frozen=True)
class Evaluation:
    pairs: list[PairRow]
    triplets: list[TripletRow]
    forward_threshold: float

    @property
    def valid_pairs(self) -> list[PairRow]:
        return [row for row in self.pairs if row.pose.valid]

    def summary(self) -> dict[str, float]:
        valid = self.valid_pairs
        forward = [row.pose.camera_translation[2] for row in valid]
        rotation = [row.rotation_error_deg for row in self.triplets]
        coplanarity = [row.coplanarity_error_deg for row in self.triplets]
        nan = float("nan")
        return {
            "pairs": len(self.pairs),
            "valid_pairs": len(valid),
            "median_matches": float(np.median([row.pose.match_count for row in valid])) if valid else nan,
            "median_inliers": float(np.median([row.pose.inliers for row in valid])) if valid else nan,
            "median_inlier_ratio": float(np.median([row.pose.inlier_ratio for row in valid])) if valid else nan,
            "median_in_front_ratio": float(np.median([row.pose.in_front / row.pose.inliers for row in valid]))
            if valid else nan,
            "min_forward": float(np.min(forward)) if forward else nan,
            "forward_pairs": int(sum(value > self.forward_threshold for value in forward)),
            "triplets": len(self.triplets),
            "median_triplet_rotation_deg": float(np.median(rotation)) if rotation else nan,
            "max_triplet_rotation_deg": float(np.max(rotation)) if rotation else nan,
            "median_triplet_coplanarity_deg": float(np.median(coplanarity)) if coplanarity else nan,
        }


def _coplanarity_error_deg(t_ab: np.ndarray, t_bc: np.ndarray, r_bc: np.ndarray, t_ac: np.ndarray) -> float:
    """Angle between t_ac and the plane spanned by R_bc t_ab and t_bc (x_c = R_bc (R_ab x_a + t_ab) + t_bc, so
    t_ac = s_ab R_bc t_ab + s_bc t_bc for the unknown scales)."""
    normal = np.cross(r_bc @ t_ab, t_bc)
    if np.linalg.norm(normal) < 1e-9:  # collinear: any t_ac on that line is consistent
        return vector_angle_deg(np.abs(t_ac), np.abs(t_bc))
    sine = abs(float(np.dot(normal, t_ac))) / (np.linalg.norm(normal) * np.linalg.norm(t_ac))
    return math.degrees(math.asin(min(1.0, sine)))


def evaluate(features: list, camera: np.ndarray, matcher=None, options: VOOptions = VOOptions(),
             forward_threshold: float = 0.9, distortion: np.ndarray | None = None) -> Evaluation:
    """Checks that need no ground truth, over consecutive frames: per pair the matches, inliers and the direction of
    the camera's motion; per triplet (i, i+1, i+2) the consistency of the rotations and translations."""
    frames = [as_features(item) for item in features]
    matcher = matcher or MutualNearestNeighbours()
    pairs = [PairRow(i, i + 1, estimate_relative_pose(frames[i], frames[i + 1], camera, matcher, options,
                                                      distortion)) for i in range(len(frames) - 1)]
    triplets = []
    for a in range(len(frames) - 2):
        ab, bc = pairs[a].pose, pairs[a + 1].pose
        if not (ab.valid and bc.valid):
            continue
        ac = estimate_relative_pose(frames[a], frames[a + 2], camera, matcher, options, distortion)
        if not ac.valid:
            continue
        through_b = bc.rotation @ ab.rotation
        triplets.append(TripletRow(a, a + 1, a + 2, rotation_difference_deg(ac.rotation, through_b),
                                   _coplanarity_error_deg(ab.translation, bc.translation, bc.rotation,
                                                          ac.translation)))
    return Evaluation(pairs, triplets, forward_threshold)


@dataclass(frozen=True)
class PrecisionRow:
    """One pair estimated from two sets of features of the same frames (fp32 and fp16, say)."""

    first: int
    second: int
    inliers: tuple[int, int]
    rotation_difference_deg: float
    translation_difference_deg: float


def compare_evaluations(reference: Evaluation, other: Evaluation) -> list[PrecisionRow]:
    """Per pair valid in both: the rotation and translation-direction differences of the two estimates."""
    rows = []
    for left, right in zip(reference.pairs, other.pairs):
        if left.pose.valid and right.pose.valid:
            rows.append(PrecisionRow(left.first, left.second, (left.pose.inliers, right.pose.inliers),
                                     rotation_difference_deg(left.pose.rotation, right.pose.rotation),
                                     vector_angle_deg(left.pose.translation, right.pose.translation)))
    return rows


def describe_summary(evaluation: Evaluation) -> str:
    """The evaluation's summary in one sentence."""
    s = evaluation.summary()
    return (f"{s['valid_pairs']}/{s['pairs']} pairs valid; median {s['median_matches']:.0f} matches, "
            f"{s['median_inliers']:.0f} inliers (ratio {s['median_inlier_ratio']:.2f}), "
            f"{100 * s['median_in_front_ratio']:.0f}% of inliers in front of both cameras; forward motion "
            f"(camera z > {evaluation.forward_threshold:g}) in {s['forward_pairs']}/{s['valid_pairs']} pairs "
            f"(smallest z {s['min_forward']:.3f}); triplet rotation error median "
            f"{s['median_triplet_rotation_deg']:.3f} deg, max {s['max_triplet_rotation_deg']:.3f} deg over "
            f"{s['triplets']} triplets; translation coplanarity median {s['median_triplet_coplanarity_deg']:.3f} deg.")


PAIR_HEADER = ("| pair | matches | inliers | inlier ratio | in front | parallax px | rotation deg "
               "| camera motion (x, y, z) | note |")
TRIPLET_HEADER = "| triplet | rotation error deg (R_ac vs R_bc R_ab) | translation coplanarity error deg |"


def format_evaluation(evaluation: Evaluation, title: str = "") -> str:
    """The evaluation as markdown: one row per pair, one per triplet, and the summary."""
    lines = [f"### {title}", ""] if title else []
    lines += [PAIR_HEADER, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for row in evaluation.pairs:
        pose = row.pose
        motion = ", ".join(f"{v:+.3f}" for v in pose.camera_translation) if pose.valid else "-"
        lines.append(f"| {row.first}-{row.second} | {pose.match_count} | {pose.inliers} | {pose.inlier_ratio:.2f} | "
                     f"{pose.in_front} | {pose.parallax_px:.1f} | {rotation_angle_deg(pose.rotation):.3f} | "
                     f"{motion} | {pose.reason} |")
    if evaluation.triplets:
        lines += ["", TRIPLET_HEADER, "| --- | ---: | ---: |"]
        lines += [f"| {row.a}-{row.b}-{row.c} | {row.rotation_error_deg:.3f} | {row.coplanarity_error_deg:.3f} |"
                  for row in evaluation.triplets]
    lines += ["", describe_summary(evaluation)]
    return "\n".join(lines)


def format_comparison(rows: list[PrecisionRow], names: tuple[str, str] = ("fp32", "fp16")) -> str:
    """Per-pair differences of two estimates as markdown, and their median and maximum."""
    header = (f"| pair | inliers {names[0]} | inliers {names[1]} | rotation difference deg "
              "| translation direction difference deg |")
    lines = [header, "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {row.first}-{row.second} | {row.inliers[0]} | {row.inliers[1]} | "
              f"{row.rotation_difference_deg:.4f} | {row.translation_difference_deg:.3f} |" for row in rows]
    if rows:
        rotation = [row.rotation_difference_deg for row in rows]
        translation = [row.translation_difference_deg for row in rows]
        lines += ["", (f"{len(rows)} pairs: rotation difference median {np.median(rotation):.4f} deg, max "
                       f"{np.max(rotation):.4f} deg; translation direction difference median "
                       f"{np.median(translation):.3f} deg, max {np.max(translation):.3f} deg.")]
    return "\n".join(lines)


# --- intrinsics ----------------------------------------------------------------------------------------------------

DISTORTION_MODELS = ("plumb_bob", "rational_polynomial")  # OpenCV's coefficient order, as CameraInfo holds them


@dataclass(frozen=True)
class Camera:
    """Intrinsics of the frames, where they came from, and their distortion."""

    matrix: np.ndarray
    source: str
    size: tuple[int, int] | None = None  # (height, width) the intrinsics are for, where known
    distortion: np.ndarray | None = None  # OpenCV's coefficients; None: rectified images

    def check(self, features: Features) -> None:
        """Refuse intrinsics that cannot belong to the images: another size, or the principal point outside."""
        height, width = features.image_height, features.image_width
        if self.size is not None and self.size != (height, width) and all(self.size):
            raise AlikedError(f"The intrinsics ({self.source}) are for {self.size[1]}x{self.size[0]} images, the "
                              f"frames are {width}x{height}; give the intrinsics of this size.")
        cx, cy = self.matrix[0, 2], self.matrix[1, 2]
        if not (0 <= cx <= width and 0 <= cy <= height):
            raise AlikedError(f"The intrinsics ({self.source}) put the principal point at ({cx:g}, {cy:g}), outside "
                              f"the {width}x{height} frames: are they for another camera or resolution?")



def camera_from_camera_info(info, source: str) -> Camera:
    """A sensor_msgs/CameraInfo (rclpy's or rosbags') as a Camera; AlikedError for an uncalibrated one or a
    distortion model OpenCV's undistortion does not take."""
    matrix = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
    if matrix[0, 0] <= 0:
        raise AlikedError(f"The {source} is uncalibrated (K is zero); give the intrinsics explicitly.")
    distortion = np.asarray(info.d, dtype=np.float64)
    if np.any(distortion) and info.distortion_model not in DISTORTION_MODELS:
        raise AlikedError(f"The {source} has the {info.distortion_model} distortion model; visual odometry "
                          f"undistorts {' and '.join(DISTORTION_MODELS)}: rectify the images or give the intrinsics "
                          "of rectified ones.")
    return Camera(check_camera_matrix(matrix), source, (int(info.height), int(info.width)),
                  distortion if np.any(distortion) else None)
