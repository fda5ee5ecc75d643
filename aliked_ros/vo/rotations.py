"""Rotations: angles between them, and quaternions in the TUM convention (x, y, z, w)."""

from __future__ import annotations

import math

import numpy as np


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
