"""Homography estimation on synthetic warps of real frames: a downstream check of features (fp32 against fp16, one
engine against another), as the mean corner error of the estimated homography against the known one."""

from __future__ import annotations

import numpy as np

from aliked_ros.features import Features
from aliked_ros.matching import mutual_nearest_neighbours

RANSAC_THRESHOLD_PX = 3.0


def synthetic_homographies(width: int, height: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` homographies about the image centre: rotation ±15°, scale 0.8–1.2, mild perspective, shift ±5 %.
    Seeded, so two engines (or two runs) see the same warps."""
    rng = np.random.default_rng(seed)
    centre = np.array([[1, 0, width / 2], [0, 1, height / 2], [0, 0, 1.0]])
    homographies = []
    for _ in range(count):
        angle = np.deg2rad(rng.uniform(-15, 15))
        scale = rng.uniform(0.8, 1.2)
        shift = rng.uniform(-0.05, 0.05, size=2) * (width, height)
        similarity = np.array([[scale * np.cos(angle), -scale * np.sin(angle), shift[0]],
                               [scale * np.sin(angle), scale * np.cos(angle), shift[1]], [0, 0, 1]])
        perspective = np.array([[1, 0, 0], [0, 1, 0], [*rng.uniform(-2e-4, 2e-4, size=2), 1]])
        homographies.append(centre @ perspective @ similarity @ np.linalg.inv(centre))
    return homographies


def warp(image: np.ndarray, homography: np.ndarray) -> np.ndarray:
    import cv2

    height, width = image.shape[:2]
    return np.ascontiguousarray(cv2.warpPerspective(image, homography, (width, height), flags=cv2.INTER_LINEAR))


def corner_error(estimated: np.ndarray, truth: np.ndarray, width: int, height: int) -> float:
    """Mean distance in pixels between the image corners mapped by ``estimated`` and by ``truth``."""
    corners = np.array([[0, 0, 1], [width - 1, 0, 1], [width - 1, height - 1, 1], [0, height - 1, 1]], float).T
    mapped = [matrix @ corners for matrix in (estimated, truth)]
    points = [m[:2] / m[2] for m in mapped]
    return float(np.linalg.norm(points[0] - points[1], axis=0).mean())


def estimate_corner_error(first: Features, second: Features, truth: np.ndarray) -> float | None:
    """Match ``first`` (the frame) with ``second`` (its warp by ``truth``) by mutual nearest neighbours, estimate the
    homography with RANSAC, and return its mean corner error; None where no homography could be estimated."""
    import cv2

    matches = mutual_nearest_neighbours(first, second)
    if len(matches.indices0) < 4:
        return None
    points0, points1 = matches.points(first, second)
    estimated, _ = cv2.findHomography(points0, points1, cv2.RANSAC, RANSAC_THRESHOLD_PX)
    if estimated is None:
        return None
    return corner_error(estimated, truth, first.image_width, first.image_height)
