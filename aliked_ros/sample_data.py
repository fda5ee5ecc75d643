"""Frames for the demo and the tests, found at run time, never committed.

First the real frames beside the checkout (``../shared/data/tum`` RGB and ``../shared/data/kitti`` grayscale, or the
directory named by ``ALIKED_ROS_DATA``), else the sample images that scikit-image ships.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from aliked_ros.errors import AlikedError

DATA_ENV = "ALIKED_ROS_DATA"


def shared_data_dir() -> Path | None:
    """The ``shared/data`` directory beside the checkout (or ``$ALIKED_ROS_DATA``), if there is one."""
    candidates = []
    if os.environ.get(DATA_ENV):
        candidates.append(Path(os.environ[DATA_ENV]))
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    candidates.append(Path.cwd().parent / "shared" / "data")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


def dataset_frames(name: str) -> list[Path]:
    """The frames of ``tum`` or ``kitti`` beside the checkout in name order, or [] where they are absent."""
    root = shared_data_dir()
    if root is None or not (root / name).is_dir():
        return []
    return sorted((root / name).glob("*.png"))


def registry_frames() -> list[tuple[str, np.ndarray]]:
    """(name, image) pairs that scikit-image ships: an RGB and a grayscale one."""
    try:
        from skimage import data
    except ImportError:
        raise AlikedError(
            "No frames found: ../shared/data is absent and scikit-image is not installed "
            "(pip install 'aliked-ros[demo]')."
        ) from None
    return [("astronaut", data.astronaut()), ("camera", data.camera())]
