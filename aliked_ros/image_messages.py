"""Camera messages to the pixel layout of :mod:`aliked_ros.imaging`: ``sensor_msgs/Image`` and
``sensor_msgs/CompressedImage``, rclpy's classes or rosbags' dataclasses alike (only the fields are read).

Encodings are interpreted by rosbags-image (the encoding table and the colour conversions of cv_bridge, without ROS);
this module adds what it leaves out: row padding (``step``), short buffers and clear errors.
"""

from __future__ import annotations

import sys

import numpy as np

from aliked_ros.errors import AlikedError
from aliked_ros.imaging import YUV422_ORDERS, to_rgb

# Camera encodings taken from Image messages; depth and other non-camera encodings (32FC1, 16UC1 ...) are refused.
SUPPORTED_ENCODINGS = (
    "mono8", "mono16", "rgb8", "bgr8", "rgba8", "bgra8", "rgb16", "bgr16", "rgba16", "bgra16",
    "yuv422", "uyvy", "yuyv", "yuv422_yuy2",
    "bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8",
    "bayer_rggb16", "bayer_bggr16", "bayer_gbrg16", "bayer_grbg16",
)


def message_to_pixels(message) -> tuple[np.ndarray, str]:
    """A ``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage`` as the extractor's pixels in the camera's own
    layout: grey ``(H, W)``, or colour ``(H, W, 3)`` with its channel order "rgb" or "bgr" (see
    :mod:`aliked_ros.imaging`), YUV 4:2:2 and Bayer mosaics raw. Only what no engine takes is converted on the host:
    16 bits to 8, an alpha channel dropped (and YUV or Bayer frames with odd sides, made RGB).

    Raises AlikedError for an unsupported encoding, a buffer shorter than its header says, or undecodable data.
    """
    if hasattr(message, "format"):  # CompressedImage: the format string names the codec, the data says it too
        return decode_compressed_pixels(message.data, message.format)
    return raw_pixels(message.encoding, message.height, message.width, message.step, message.is_bigendian,
                      message.data)


def message_to_image(message) -> np.ndarray:
    """A ``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage`` as RGB uint8 (H, W, 3) or grayscale (H, W)."""
    pixels, channel_order = message_to_pixels(message)
    if pixels.ndim == 2 and channel_order == "rgb":
        return pixels
    return to_rgb(pixels, channel_order)


def decode_compressed_pixels(data, image_format: str = "") -> tuple[np.ndarray, str]:
    """A JPEG or PNG as OpenCV decodes it, in OpenCV's channel order (BGR): grey or BGR uint8 pixels."""
    import cv2

    encoded = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED) if encoded.size else None
    if image is None:
        raise AlikedError(
            f"A CompressedImage ({image_format or 'no format given'}, {encoded.size} bytes) could not be decoded; "
            "JPEG and PNG are supported (compressedDepth is not)."
        )
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)  # as for 16-bit files: the 8 most significant bits
    elif image.dtype != np.uint8:
        raise AlikedError(f"A CompressedImage ({image_format}) holds {image.dtype} pixels; 8 and 16 bits are read.")
    if image.ndim == 3 and image.shape[2] == 4:
        image = np.ascontiguousarray(image[:, :, :3])  # BGRA: the alpha channel is not the camera's
    return image, "bgr"


def decode_compressed(data, image_format: str = "") -> np.ndarray:
    """A JPEG or PNG as RGB or grey uint8 pixels."""
    pixels, channel_order = decode_compressed_pixels(data, image_format)
    return np.ascontiguousarray(pixels[:, :, ::-1]) if pixels.ndim == 3 else pixels


# Colour encodings an engine takes as they are (after 16 to 8 bits, and without alpha), with their channel order.
DIRECT_COLOUR = {"rgb8": "rgb", "bgr8": "bgr", "rgba8": "rgb", "bgra8": "bgr"}
# YUV 4:2:2 and Bayer encodings an engine takes raw (their layouts in aliked_ros.imaging); odd sides are converted here.
RAW_LAYOUTS = {"yuv422": "uyvy", "uyvy": "uyvy", "yuyv": "yuyv", "yuv422_yuy2": "yuyv",
               "bayer_rggb8": "bayer_rggb", "bayer_bggr8": "bayer_bggr", "bayer_gbrg8": "bayer_gbrg",
               "bayer_grbg8": "bayer_grbg"}


def raw_pixels(encoding: str, height: int, width: int, step: int, is_bigendian: bool, data) -> tuple[np.ndarray, str]:
    """The pixels of a ``sensor_msgs/Image`` in the layout :func:`message_to_pixels` gives, honouring ``step`` and
    byte order."""
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
        return pixels, "rgb"
    if encoding in DIRECT_COLOUR:
        if pixels.shape[2] == 4:
            pixels = np.ascontiguousarray(pixels[:, :, :3])
        return pixels, DIRECT_COLOUR[encoding]
    if encoding in RAW_LAYOUTS and width % 2 == 0 and (height % 2 == 0 or RAW_LAYOUTS[encoding] in YUV422_ORDERS):
        return pixels, RAW_LAYOUTS[encoding]  # the engine converts (on its device where it has one)
    return np.ascontiguousarray(convert_color(pixels, encoding, "rgb8")), "rgb"


def raw_image(encoding: str, height: int, width: int, step: int, is_bigendian: bool, data) -> np.ndarray:
    """The pixels of a ``sensor_msgs/Image`` as RGB or grayscale uint8, honouring ``step`` and byte order."""
    pixels, channel_order = raw_pixels(encoding, height, width, step, is_bigendian, data)
    return pixels if pixels.ndim == 2 and channel_order == "rgb" else to_rgb(pixels, channel_order)


def input_format_of(message) -> str:
    """The input format of a static engine that takes this camera's pixels as they come (see
    :func:`message_to_pixels`): "gray" for mono encodings, "bgr" for BGR ones and compressed images (decoded as
    BGR), "rgb" for the rest (RGB, and what is demosaiced or converted to RGB)."""
    if hasattr(message, "format"):
        return "bgr"
    encoding = message.encoding
    if encoding.startswith("mono"):
        return "gray"
    return "bgr" if encoding.startswith("bgr") else "rgb"

