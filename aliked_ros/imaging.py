"""Images to the one layout the extractors take: contiguous RGB uint8 (H, W, 3), or grayscale (H, W)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from aliked_ros.errors import AlikedError
from aliked_ros.model.configs import MIN_IMAGE_SIDE

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".webp")


def as_rgb(image: np.ndarray) -> np.ndarray:
    """A validated RGB uint8 ``(H, W, 3)`` view or copy of ``image`` (RGB, or grayscale ``(H, W)``/``(H, W, 1)``).

    Raises AlikedError for another dtype, another number of channels, or an image smaller than the network takes.
    """
    if not isinstance(image, np.ndarray):
        raise AlikedError(f"Expected the image as a numpy array, got {type(image).__name__}.")
    if image.dtype != np.uint8:
        raise AlikedError(f"Expected a uint8 image, got {image.dtype}; scale it to 0..255 first.")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim != 3 or image.shape[2] != 3:
        channels = image.shape[2] if image.ndim == 3 else f"{image.ndim} dimensions"
        raise AlikedError(
            f"Expected an RGB (H, W, 3) or grayscale (H, W) image, got shape {image.shape} ({channels} channels); "
            "convert RGBA or other layouts to RGB first."
        )
    height, width = image.shape[:2]
    if min(height, width) < MIN_IMAGE_SIDE:
        raise AlikedError(
            f"The image is {width}x{height} pixels; ALIKED needs at least {MIN_IMAGE_SIDE} pixels on each side."
        )
    return np.ascontiguousarray(image)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as RGB uint8 ``(H, W, 3)`` or grayscale uint8 ``(H, W)``, as the file stores it.

    16-bit images keep their 8 most significant bits; an alpha channel is dropped. Other channel counts are
    returned as they are, for :func:`as_rgb` to refuse.
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        raise AlikedError(f"The image {path} does not exist.")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise AlikedError(f"{path} could not be read as an image (unknown format or corrupt file).")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise AlikedError(f"{path} holds {image.dtype} pixels; aliked-ros reads 8- and 16-bit images.")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return np.ascontiguousarray(image)


def list_images(inputs: list[str | os.PathLike]) -> list[Path]:
    """Image files named by ``inputs``; a directory stands for the image files in it, in name order."""
    paths: list[Path] = []
    for entry in map(Path, inputs):
        if entry.is_dir():
            found = sorted(p for p in entry.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise AlikedError(f"The directory {entry} holds no image ({', '.join(IMAGE_SUFFIXES)}).")
            paths.extend(found)
        elif entry.is_file():
            paths.append(entry)
        else:
            raise AlikedError(f"The image {entry} does not exist.")
    return paths
