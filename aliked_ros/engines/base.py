"""The Extractor contract shared by every engine (torch, onnxruntime, tensorrt)."""

from __future__ import annotations

import abc
import time

import numpy as np

from aliked_ros.features import Features
from aliked_ros.imaging import as_pixels, as_rgb


class Extractor(abc.ABC):
    """Turns one image into :class:`~aliked_ros.features.Features`.

    Convention:
        - :meth:`extract` takes uint8 pixels in the camera's layout: grey ``(H, W)`` or colour ``(H, W, 3)`` with
          its channel order ("rgb", the default, or "bgr"); anything else raises AlikedError with what to do. The
          result follows the Features convention: keypoints in pixels of that image, scores high → low,
          L2-normalised float32 descriptors.
        - In top-k mode (``top_k > 0``) an engine returns at most ``top_k`` features, those scoring above
          ``score_threshold`` (0 keeps every maximum; the slots of a static engine that hold none score 0 and are
          dropped). The node keeps it at 0 and thresholds each frame itself, since its threshold changes at run
          time. Threshold mode (``top_k`` = -1) is the torch engine's alone.
        - ``engine``, ``model``, ``device`` and ``precision`` describe the extractor for logs and diagnostics.
        - ``image_size`` is the (height, width) a static engine was built for (other sizes are refused), or None.
    """

    engine: str = "?"
    model: str
    top_k: int
    device: str
    precision: str
    descriptor_size: int
    score_threshold: float = 0.0
    image_size: tuple[int, int] | None = None  # (height, width) of a static engine; None: any size
    decodes_jpeg: bool = False  # whether extract_jpeg decodes on the engine's device (the torch engine on CUDA)
    input_format: str = "rgb"  # a static engine's input layout (rgb, bgr or gray); the torch engine takes any

    def extract_jpeg(self, data) -> Features:
        """Features of JPEG bytes decoded on the engine's device, where :attr:`decodes_jpeg` says it can."""
        raise NotImplementedError(f"The {self.engine} engine decodes no JPEG itself; decode on the host.")

    def extract(self, image: np.ndarray, channel_order: str = "rgb") -> Features:
        """Features of the camera's pixels as they come: grey ``(H, W)``, or colour ``(H, W, 3)`` in
        ``channel_order`` ("rgb" or "bgr"; see :mod:`aliked_ros.imaging`)."""
        pixels, channel_order = as_pixels(image, channel_order)
        features = self._extract_pixels(pixels, channel_order)
        return features.above(self.score_threshold) if self.top_k > 0 else features

    def _extract_pixels(self, pixels: np.ndarray, channel_order: str) -> Features:
        """Features of validated, contiguous pixels. This default makes them RGB on the host; an engine that can
        convert on its device (the torch engine) overrides it and uploads the camera's bytes as they are."""
        return self._extract(as_rgb(pixels, channel_order))

    @abc.abstractmethod
    def _extract(self, rgb: np.ndarray) -> Features:
        """Features of a validated, contiguous RGB uint8 (H, W, 3) image."""

    def warmup(self, height: int, width: int, iterations: int = 3) -> float:
        """Run ``iterations`` extractions on a synthetic image of the given size; the seconds the last one took.

        Kernels are chosen, memory is allocated and caches are filled here, not on the first camera frame. The image
        has the layout of :attr:`input_format` (a static engine's input; RGB where the engine takes any).
        """
        rng = np.random.default_rng(0)
        shape = (height, width) if self.input_format == "gray" else (height, width, 3)
        image = rng.integers(0, 256, size=shape, dtype=np.uint8)
        elapsed = 0.0
        for _ in range(max(1, iterations)):
            start = time.perf_counter()
            self.extract(image)
            elapsed = time.perf_counter() - start
        return elapsed

    def describe(self) -> str:
        """One line for logs: engine, model, precision, device, K."""
        mode = f"top-k {self.top_k}" if self.top_k > 0 else "threshold mode"
        return f"{self.engine} engine, {self.model}, {self.precision}, {self.device}, {mode}"

    def device_memory(self) -> dict[str, float] | None:
        """Device memory in MiB where the engine can read it (for diagnostics), else None."""
        return None

    @property
    def compiling(self) -> bool:
        """Whether a compilation runs in the background meanwhile (frames are then served by a slower stand-in)."""
        return False

    def close(self) -> None:
        """Release device resources; the extractor is unusable afterwards."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
