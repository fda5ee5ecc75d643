"""Frame-to-frame odometry: each frame's motion from a reference frame, chained into a trajectory, with frames
out of order skipped and implausible steps flagged."""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass

import numpy as np

from aliked_ros.errors import AlikedError
from aliked_ros.features import Features
from aliked_ros.matching import MutualNearestNeighbours, as_features
from aliked_ros.vo.camera import check_camera_matrix
from aliked_ros.vo.relative_pose import RelativePose, VOOptions, estimate_relative_pose
from aliked_ros.vo.rotations import rotation_angle_deg
from aliked_ros.vo.trajectory import Trajectory


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
