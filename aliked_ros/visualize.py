"""Pictures of keypoints, for `extract --viz`, the demo and the node's debug image."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from aliked_ros.features import Features


def draw_keypoints(rgb: np.ndarray, features: Features, radius: int = 3) -> np.ndarray:
    """A BGR copy of an RGB or grayscale image with the keypoints drawn, coloured by score (blue low, red high)."""
    import cv2

    canvas = cv2.cvtColor(rgb, cv2.COLOR_GRAY2BGR if rgb.ndim == 2 else cv2.COLOR_RGB2BGR)
    if len(features) == 0:
        return canvas
    scores = features.scores
    span = max(float(scores.max() - scores.min()), 1e-6)
    levels = ((scores - scores.min()) / span * 255).astype(np.uint8)
    colours = cv2.applyColorMap(levels.reshape(-1, 1), cv2.COLORMAP_JET).reshape(-1, 3)
    # Pixel centres are at integers; cv2 draws with a fixed-point shift for sub-pixel placement.
    shift = 4
    centres = np.round(features.keypoints * (1 << shift)).astype(np.int64)
    for (x, y), colour in zip(centres, colours):  # drawing only; extraction itself has no per-keypoint loop
        cv2.circle(canvas, (int(x), int(y)), radius << shift, tuple(int(c) for c in colour), 1, cv2.LINE_AA, shift)
    return canvas


def write_image(path: str | os.PathLike, bgr: np.ndarray) -> None:
    """Write a picture atomically (a complete file or none), format from the suffix."""
    import cv2

    path = Path(path)
    ok, encoded = cv2.imencode(path.suffix or ".png", bgr)
    if not ok:
        raise OSError(f"could not encode {path}")
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(encoded.tobytes())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
