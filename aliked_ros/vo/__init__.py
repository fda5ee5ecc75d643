"""Frame-to-frame monocular visual odometry on ALIKED features, without ROS: the core of `aliked-ros vo` and of
`vo_node`. One module per concern: camera (intrinsics), rotations, relative_pose, trajectory, odometry, evaluation;
this package re-exports their public names.

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

from aliked_ros.vo.camera import (Camera, DISTORTION_MODELS, KITTI_00_CAMERA_MATRIX, camera_from_camera_info,
                                  camera_matrix, check_camera_matrix, parse_distortion, parse_intrinsics,
                                  undistort_points)
from aliked_ros.vo.evaluation import (Evaluation, PairRow, PrecisionRow, TripletRow, compare_evaluations,
                                      describe_summary, evaluate, format_comparison, format_evaluation)
from aliked_ros.vo.odometry import FrameResult, IMPLAUSIBLE_CAUSES, VisualOdometry, describe_frame
from aliked_ros.vo.relative_pose import ESTIMATORS, RelativePose, VOOptions, estimate_relative_pose, pose_from_matches
from aliked_ros.vo.rotations import (quaternion_to_rotation, rotation_angle_deg, rotation_difference_deg,
                                     rotation_to_quaternion, vector_angle_deg)
from aliked_ros.vo.trajectory import KITTI_OUTPUT, TUM_HEADER, TUM_OUTPUT, Trajectory, read_tum, write_kitti, write_tum

__all__ = [
    "Camera", "DISTORTION_MODELS", "ESTIMATORS", "Evaluation", "FrameResult", "IMPLAUSIBLE_CAUSES",
    "KITTI_00_CAMERA_MATRIX", "KITTI_OUTPUT", "PairRow", "PrecisionRow", "RelativePose", "TUM_HEADER", "TUM_OUTPUT",
    "Trajectory", "TripletRow", "VOOptions", "VisualOdometry", "camera_from_camera_info", "camera_matrix",
    "check_camera_matrix", "compare_evaluations", "describe_frame", "describe_summary", "estimate_relative_pose",
    "evaluate", "format_comparison", "format_evaluation", "parse_distortion", "parse_intrinsics", "pose_from_matches",
    "quaternion_to_rotation", "read_tum", "rotation_angle_deg", "rotation_difference_deg", "rotation_to_quaternion",
    "undistort_points", "vector_angle_deg", "write_kitti", "write_tum",
]
