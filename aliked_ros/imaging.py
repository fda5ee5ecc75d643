"""The pixel-array contract of every extractor, and image files.

Convention:
    - Pixels are uint8 in the camera's own layout, so that no host copy is spent on a conversion an engine can do on
      its device: grey ``(H, W)``, colour ``(H, W, 3)`` in a channel order ``"rgb"`` or ``"bgr"``, packed YUV 4:2:2
      ``(H, W, 2)`` as ``"uyvy"`` or ``"yuyv"``, or a Bayer mosaic ``(H, W)`` as ``"bayer_rggb"``, ``"bayer_bggr"``,
      ``"bayer_gbrg"`` or ``"bayer_grbg"``. :func:`as_pixels` checks them; :func:`as_rgb` makes them RGB on the host
      (OpenCV's conversions, as cv_bridge makes them), for engines that need that.
    - Image files are read as RGB or grey by :func:`read_image`; camera messages are decoded to pixels in their own
      channel order by :mod:`aliked_ros.image_messages`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from aliked_ros.errors import AlikedError
from aliked_ros.model.configs import MIN_IMAGE_SIDE

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".webp")


CHANNEL_ORDERS = ("rgb", "bgr")
YUV422_ORDERS = ("uyvy", "yuyv")  # (H, W, 2): U Y0 V Y1 / Y0 U Y1 V per pixel pair
BAYER_ORDERS = ("bayer_rggb", "bayer_bggr", "bayer_gbrg", "bayer_grbg")  # (H, W): the top-left 2×2 of the mosaic
LAYOUTS = CHANNEL_ORDERS + YUV422_ORDERS + BAYER_ORDERS
# OpenCV's conversions to RGB, as rosbags-image (cv_bridge's table) maps the ROS encodings (bayer_rggb8 is BayerBG).
_TO_RGB = {"uyvy": "COLOR_YUV2RGB_UYVY", "yuyv": "COLOR_YUV2RGB_YUYV", "bayer_rggb": "COLOR_BayerBG2RGB",
           "bayer_bggr": "COLOR_BayerRG2RGB", "bayer_gbrg": "COLOR_BayerGR2RGB", "bayer_grbg": "COLOR_BayerGB2RGB"}


def as_rgb(image: np.ndarray, channel_order: str = "rgb") -> np.ndarray:
    """A validated RGB uint8 ``(H, W, 3)`` view or copy of ``image`` (colour in ``channel_order``, or grayscale
    ``(H, W)``/``(H, W, 1)``), made on the host.

    Raises AlikedError for another dtype, another number of channels, or an image smaller than the network takes.
    """
    return to_rgb(*as_pixels(image, channel_order))


def to_rgb(pixels: np.ndarray, channel_order: str) -> np.ndarray:
    """Pixels of a known layout (see the module's Convention) as RGB ``(H, W, 3)``, converted on the host; no check
    (:func:`as_rgb` checks first)."""
    if channel_order in _TO_RGB:
        import cv2

        return np.ascontiguousarray(cv2.cvtColor(pixels, getattr(cv2, _TO_RGB[channel_order])))
    if pixels.ndim == 2:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, ::-1]) if channel_order == "bgr" else pixels


def as_pixels(image: np.ndarray, channel_order: str = "rgb") -> tuple[np.ndarray, str]:
    """``image`` checked as the pixels an extractor takes (see the module's Convention): grey ``(H, W)`` (a
    ``(H, W, 1)`` image becomes one) or colour ``(H, W, 3)`` with ``channel_order`` "rgb" or "bgr", or the raw
    layouts named by ``channel_order`` (YUV 4:2:2, Bayer); returned with that order, unchanged otherwise (no copy
    where the array is contiguous already).

    Raises AlikedError for another dtype, another number of channels, or an image smaller than the network takes.
    """
    if channel_order not in LAYOUTS:
        raise AlikedError(f"channel_order must be one of {', '.join(LAYOUTS)}, not {channel_order!r}.")
    if not isinstance(image, np.ndarray):
        raise AlikedError(f"Expected the image as a numpy array, got {type(image).__name__}.")
    if image.dtype != np.uint8:
        raise AlikedError(f"Expected a uint8 image, got {image.dtype}; scale it to 0..255 first.")
    if channel_order in YUV422_ORDERS or channel_order in BAYER_ORDERS:
        return _raw_layout(image, channel_order), channel_order
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        pass
    elif image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[2] > 4:
        # (C, H, W), as torch and many loaders hold images: its last axis is a width, not a channel count.
        fix = "image[:3].transpose(1, 2, 0)" if image.shape[0] == 4 else "image.transpose(1, 2, 0)"
        raise AlikedError(
            f"The image has shape {image.shape}, which looks channels-first (C, H, W); give it channels-last, "
            f"RGB (H, W, 3) or grayscale (H, W): {fix}."
        )
    elif image.ndim != 3 or image.shape[2] != 3:
        layout = f"{image.shape[2]} channels" if image.ndim == 3 else f"{image.ndim} dimensions"
        raise AlikedError(
            f"Expected an RGB (H, W, 3) or grayscale (H, W) image, got shape {image.shape} ({layout}); "
            "convert RGBA or other layouts to RGB first."
        )
    height, width = image.shape[:2]
    if min(height, width) < MIN_IMAGE_SIDE:
        raise AlikedError(
            f"The image is {width}x{height} pixels; ALIKED needs at least {MIN_IMAGE_SIDE} pixels on each side."
        )
    return np.ascontiguousarray(image), channel_order


def _raw_layout(image: np.ndarray, channel_order: str) -> np.ndarray:
    """A packed YUV 4:2:2 ``(H, W, 2)`` or Bayer ``(H, W)`` frame checked: its shape, even sides, the minimum size."""
    yuv = channel_order in YUV422_ORDERS
    if image.ndim != (3 if yuv else 2) or (yuv and image.shape[2] != 2):
        expected = "(H, W, 2) for YUV 4:2:2" if yuv else "(H, W) for a Bayer mosaic"
        raise AlikedError(f"Expected {expected} ({channel_order}), got shape {image.shape}.")
    height, width = image.shape[:2]
    if width % 2 or (not yuv and height % 2):
        raise AlikedError(f"A {channel_order} frame needs even sides (pixels come in pairs), not {width}x{height}.")
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
    return decoded_to_rgb(image, str(path))


def decoded_to_rgb(image: np.ndarray, source: str) -> np.ndarray:
    """An image as OpenCV decodes it (BGR order, 8 or 16 bits) → RGB or grayscale uint8."""
    import cv2

    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)  # keep the 8 most significant bits
    elif image.dtype != np.uint8:
        raise AlikedError(f"{source} holds {image.dtype} pixels; aliked-ros reads 8- and 16-bit images.")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return np.ascontiguousarray(image)


def is_hidden(path: Path) -> bool:
    """Dot files: macOS's ``._frame.png`` resource forks, editors' temporary files. Never images of a sequence."""
    return path.name.startswith(".")


def list_images(inputs: list[str | os.PathLike]) -> list[Path]:
    """Image files named by ``inputs``; a directory stands for the image files in it, in name order, hidden files
    left out (a file named explicitly is taken whatever its name)."""
    paths: list[Path] = []
    for entry in map(Path, inputs):
        if entry.is_dir():
            found = sorted(p for p in entry.iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not is_hidden(p))
            if not found:
                raise AlikedError(f"The directory {entry} holds no image ({', '.join(IMAGE_SUFFIXES)}).")
            paths.extend(found)
        elif entry.is_file():
            paths.append(entry)
        else:
            raise AlikedError(f"The image {entry} does not exist.")
    return paths
