"""The motion between two frames from their matched keypoints: essential matrix with a robust estimator,
cheirality, parallax, and a reason wherever a step cannot be estimated."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from aliked_ros.errors import AlikedError
from aliked_ros.features import Features
from aliked_ros.matching import Matches, MutualNearestNeighbours, as_features
from aliked_ros.vo.camera import check_camera_matrix, undistort_points


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
