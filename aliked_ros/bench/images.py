"""The image sets the bench times its rows on: frames of one size, made RGB once, before any timing (and kept as the
camera gave them, grey or RGB, for the frame path)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from aliked_ros.errors import AlikedError


@dataclass(frozen=True)
class ImageSet:
    """Frames of one size, RGB uint8 (H, W, 3), contiguous and writeable (torch.from_numpy takes them as they are)."""

    name: str
    frames: tuple[np.ndarray, ...]
    source: str
    camera_frames: tuple[np.ndarray, ...] = ()  # as the files hold them: grey (H, W) or RGB; the frame path's input

    @property
    def height(self) -> int:
        return self.frames[0].shape[0]

    @property
    def width(self) -> int:
        return self.frames[0].shape[1]

    def describe(self) -> str:
        return f"{self.name} {self.width}x{self.height} ({len(self.frames)} frames)"


def image_set(name: str, images: Sequence[tuple[str, np.ndarray]], source: str) -> ImageSet:
    """An ImageSet of (name, image) pairs, RGB or grayscale uint8; AlikedError unless all share one size."""
    from aliked_ros.imaging import as_rgb

    if not images:
        raise AlikedError(f"The image set {name} ({source}) holds no image.")
    frames = [np.array(as_rgb(image), copy=True) for _, image in images]  # RGB once, before any timing
    camera_frames = tuple(np.array(image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image, copy=True)
                          for _, image in images)
    sizes: dict[tuple[int, int], list[str]] = {}
    for (image_name, _), frame in zip(images, frames):
        sizes.setdefault(frame.shape[:2], []).append(image_name)
    if len(sizes) > 1:
        listed = "; ".join(f"{w}x{h}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                           for (h, w), names in sizes.items())
        raise AlikedError(f"The images of {source} have {len(sizes)} sizes ({listed}); a benchmark set needs one "
                          "size: put each size in its own directory.")
    return ImageSet(name, tuple(frames), source, camera_frames)


def directory_image_set(directory: str | os.PathLike) -> ImageSet:
    from aliked_ros.imaging import list_images, read_image

    path = Path(directory)
    if not path.is_dir():
        raise AlikedError(f"--images {path}: not a directory (each --images DIR is one image set).")
    return image_set(path.name or str(path), [(p.name, read_image(p)) for p in list_images([path])], str(path))


def default_image_sets() -> list[ImageSet]:
    """The seed's sets, TUM 640×480 and KITTI 1241×376 from ../shared/data, else scikit-image's samples."""
    from aliked_ros.imaging import read_image
    from aliked_ros.sample_data import dataset_frames, registry_frames

    sets = []
    for name in ("tum", "kitti"):
        paths = dataset_frames(name)
        if paths:
            sets.append(image_set(name, [(p.name, read_image(p)) for p in paths], str(paths[0].parent)))
    if not sets:  # no shared data beside the checkout: scikit-image's two 512×512 samples
        sets.append(image_set("scikit-image", registry_frames(), "scikit-image's sample images"))
    return sets
