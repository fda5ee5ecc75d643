"""Intrinsics of the frames: camera matrices, distortion, where they came from (--intrinsics, calib.txt,
sensor_msgs/CameraInfo), and keypoints undistorted with them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from aliked_ros.errors import AlikedError
from aliked_ros.features import Features


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


def parse_distortion(text: str | None) -> np.ndarray | None:
    if text is None:
        return None
    try:
        values = np.array([float(value) for value in text.split(",")])
    except ValueError:
        values = np.zeros(0)
    if len(values) not in (4, 5, 8) or not np.all(np.isfinite(values)):
        raise AlikedError(f"--distortion must be 4, 5 or 8 numbers k1,k2,p1,p2[,k3[,k4,k5,k6]], not {text!r}.")
    return values


def check_camera_matrix(matrix) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (3, 3) or not np.all(np.isfinite(matrix)) or matrix[0, 0] <= 0 or matrix[1, 1] <= 0 \
            or not np.allclose(matrix[2], (0.0, 0.0, 1.0)):
        raise AlikedError(f"The camera matrix must be 3x3 [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with positive focal "
                          f"lengths, not {matrix.tolist()}.")
    return matrix


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


def undistort_points(points: np.ndarray, camera: np.ndarray, distortion: np.ndarray | None) -> np.ndarray:
    """Pixel coordinates an ideal pinhole camera with the same K would see; ``points`` unchanged without distortion."""
    import cv2

    if distortion is None or not np.any(distortion) or len(points) == 0:
        return points
    return cv2.undistortPoints(points.reshape(-1, 1, 2), camera, np.asarray(distortion, np.float64),
                               P=camera).reshape(-1, 2)
