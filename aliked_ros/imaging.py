"""Images to the one layout the extractors take: contiguous RGB uint8 (H, W, 3), or grayscale (H, W).

Three sources come through here, the node's and the tools' alike: image files, ``sensor_msgs/Image`` and
``sensor_msgs/CompressedImage`` messages (rclpy's classes or rosbags' dataclasses: only the fields are read).
Encodings are interpreted by rosbags-image (the encoding table and the colour conversions of cv_bridge, without
ROS); this module adds what it leaves out: row padding (``step``), short buffers and clear errors.
"""

from __future__ import annotations

import os
import sys
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
    return _decoded_to_rgb(image, str(path))


def _decoded_to_rgb(image: np.ndarray, source: str) -> np.ndarray:
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


# Camera encodings taken from Image messages; depth and other non-camera encodings (32FC1, 16UC1 ...) are refused.
SUPPORTED_ENCODINGS = (
    "mono8", "mono16", "rgb8", "bgr8", "rgba8", "bgra8", "rgb16", "bgr16", "rgba16", "bgra16",
    "yuv422", "uyvy", "yuyv", "yuv422_yuy2",
    "bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8",
    "bayer_rggb16", "bayer_bggr16", "bayer_gbrg16", "bayer_grbg16",
)


def message_to_image(message) -> np.ndarray:
    """A ``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage`` as RGB uint8 (H, W, 3) or grayscale (H, W).

    Raises AlikedError for an unsupported encoding, a buffer shorter than its header says, or undecodable data.
    """
    if hasattr(message, "format"):  # CompressedImage: the format string names the codec, the data says it too
        return decode_compressed(message.data, message.format)
    return raw_image(message.encoding, message.height, message.width, message.step, message.is_bigendian,
                     message.data)


def decode_compressed(data, image_format: str = "") -> np.ndarray:
    import cv2

    encoded = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED) if encoded.size else None
    if image is None:
        raise AlikedError(
            f"A CompressedImage ({image_format or 'no format given'}, {encoded.size} bytes) could not be decoded; "
            "JPEG and PNG are supported (compressedDepth is not)."
        )
    return _decoded_to_rgb(image, f"A CompressedImage ({image_format})")


def raw_image(encoding: str, height: int, width: int, step: int, is_bigendian: bool, data) -> np.ndarray:
    """The pixels of a ``sensor_msgs/Image`` as RGB or grayscale uint8, honouring ``step`` and byte order."""
    from rosbags.image.image import Format, ImageFormatError, convert_color, to_cvtype

    if encoding not in SUPPORTED_ENCODINGS:
        raise AlikedError(
            f"Image encoding {encoding!r} is not supported; use one of {', '.join(SUPPORTED_ENCODINGS)} "
            "or a CompressedImage (JPEG/PNG)."
        )
    try:
        depth_bits, colour_format, type_name, channels = to_cvtype(encoding)
    except ImageFormatError as error:  # pragma: no cover - the table above lists only encodings rosbags knows
        raise AlikedError(str(error)) from None
    if min(height, width) <= 0:
        raise AlikedError(f"The Image message is {width}x{height}: empty.")
    dtype = np.dtype(type_name)
    row_bytes = width * channels * dtype.itemsize
    buffer = np.frombuffer(data, dtype=np.uint8)
    needed = step * (height - 1) + row_bytes  # some drivers leave the padding of the last row out
    if step < row_bytes or buffer.size < needed:
        raise AlikedError(
            f"The {encoding} Image message holds {buffer.size} bytes with step {step}; a {width}x{height} image "
            f"needs a step of at least {row_bytes} and {needed} bytes."
        )
    rows = np.lib.stride_tricks.as_strided(buffer, shape=(height, row_bytes), strides=(step, 1), writeable=False)
    pixels = np.ascontiguousarray(rows).view(dtype)
    if dtype.itemsize > 1 and bool(is_bigendian) != (sys.byteorder == "big"):
        pixels = pixels.byteswap()
    pixels = pixels.reshape((height, width, channels) if channels > 1 else (height, width))
    if depth_bits == 16:
        pixels = (pixels >> 8).astype(np.uint8)  # as for 16-bit files: the 8 most significant bits
        encoding = encoding.replace("16", "8")
    if colour_format == Format.GRAY:
        return pixels
    return np.ascontiguousarray(convert_color(pixels, encoding, "rgb8"))


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
