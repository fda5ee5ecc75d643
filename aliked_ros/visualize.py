"""Pictures of keypoints, for `extract --viz`, the demo and the node's debug image."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

from aliked_ros import outputs
from aliked_ros.errors import AlikedError
from aliked_ros.features import Features


def draw_keypoints(rgb: np.ndarray, features: Features, radius: int = 3, channel_order: str = "rgb") -> np.ndarray:
    """A BGR copy of a colour (in ``channel_order``) or grayscale image with the keypoints drawn, coloured by score
    (blue low, red high)."""
    import cv2

    if rgb.ndim == 2:
        canvas = cv2.cvtColor(rgb, cv2.COLOR_GRAY2BGR)
    else:
        canvas = rgb.copy() if channel_order == "bgr" else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
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


# A PNG text chunk that signs our pictures, so that --overwrite can tell them from the user's own (PNG
# specification, 11.3.4.3 tEXt: keyword, a zero byte, Latin-1 text).
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PICTURE_KEYWORD, PICTURE_TEXT = b"Software", b"aliked-ros keypoints"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_chunks(data: bytes):
    """(type, data) of each chunk of a PNG file's bytes; stops at the first truncated chunk."""
    offset = len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if offset + 12 + length > len(data):
            return
        yield kind, data[offset + 8:offset + 8 + length]
        offset += 12 + length


def sign_png(encoded: bytes) -> bytes:
    """``encoded`` PNG bytes with our text chunk inserted before the image data."""
    first_data = encoded.index(b"IDAT") - 4  # chunk length field before its type
    return encoded[:first_data] + _png_chunk(b"tEXt", PICTURE_KEYWORD + b"\0" + PICTURE_TEXT) + encoded[first_data:]


def is_aliked_picture(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a PNG picture that :func:`write_image` wrote (it carries our text chunk)."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return False
    if not data.startswith(PNG_SIGNATURE):
        return False
    return any(kind == b"tEXt" and chunk == PICTURE_KEYWORD + b"\0" + PICTURE_TEXT
               for kind, chunk in _png_chunks(data))


PICTURE_OUTPUT = outputs.OutputKind("a keypoint picture (.png) written by aliked-ros", is_aliked_picture)


def write_image(path: str | os.PathLike, bgr: np.ndarray) -> None:
    """Write a picture atomically (a complete file or none), format from the suffix; a PNG is signed as ours."""
    import cv2

    path = Path(path)
    suffix = path.suffix.lower() or ".png"
    ok, encoded = cv2.imencode(suffix, bgr)
    if not ok:
        raise AlikedError(f"{path}: OpenCV cannot write {suffix} pictures; name a .png file.")
    data = encoded.tobytes()
    outputs.write_bytes(path, sign_png(data) if suffix == ".png" else data)
