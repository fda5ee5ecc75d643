"""The export's parity check: an exported graph's outputs against the float32 PyTorch model, on a real frame.

Parity checks (always run, on a real frame; bounds in :class:`ParityReport`), both against the float32 PyTorch model:

1. The written file itself, through onnxruntime on the CPU. onnxruntime (1.32 here) has a CPU kernel for
   DeformConv, so the DeformConv graph is checked as it is, not through a stand-in. For an fp16 graph this checks the
   graph's structure and its float16 weights and input cast, but not float16 activations: onnxruntime's CPU provider
   has few float16 kernels, casts around the float16 nodes to run float32 ones, and removes the casts between
   neighbouring nodes (seen in its optimised graph), so most activations stay float32 there.
2. The traced module's own outputs (the exporter runs it once, on the parity frame): for fp16 this is PyTorch's
   real float16 arithmetic, every activation rounded to float16 as on a GPU, which is what the graph asks a
   runtime for. Together the two say that the graph is the module and that the module's fp16 arithmetic is within
   the bounds. The numbers TensorRT's fp16 kernels give are for the TensorRT tests on a GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from aliked_ros.comparison import match_features
from aliked_ros.dependencies import require
from aliked_ros.errors import AlikedError
from aliked_ros.export.metadata import INPUT_NAME, OUTPUT_NAMES
from aliked_ros.imaging import as_rgb
from aliked_ros.model.aliked import Aliked, uint8_to_network_input

MATCH_DISTANCE_PX = 0.5
MIN_MATCHED_FRACTION = 0.99
MIN_COSINE = {"fp32": 0.999, "fp16": 0.99}

Triple = tuple[np.ndarray, np.ndarray, np.ndarray]  # keypoints, scores, descriptors of one frame


@dataclass(frozen=True)
class ParityReport:
    """How one run's output on a frame compares with the float32 PyTorch model's (the reference).

    Keypoints are paired by mutual nearest neighbour; a pair within ``MATCH_DISTANCE_PX`` is a match. The check
    passes when matches are at least ``MIN_MATCHED_FRACTION`` of the larger of the two keypoint sets (score-0 slots
    excluded) and the median descriptor cosine over matches is at least ``MIN_COSINE[precision]``. The median, not
    the minimum: the descriptor head reads its offsets from the 3×3 patch at the keypoint's integer pixel, so a
    keypoint that moves by 0.01 px across a pixel boundary gets a legitimately different descriptor. The 1st
    percentile and minimum are reported alongside.
    """

    candidate: str
    precision: str
    reference_count: int
    candidate_count: int
    matched: int
    mean_distance: float
    max_distance: float
    cosine_median: float
    cosine_p1: float
    cosine_min: float

    @property
    def matched_fraction(self) -> float:
        return self.matched / max(self.reference_count, self.candidate_count, 1)

    @property
    def passed(self) -> bool:
        return (self.reference_count > 0 and self.matched_fraction >= MIN_MATCHED_FRACTION
                and self.cosine_median >= MIN_COSINE[self.precision])

    def summary(self) -> str:
        return (f"{self.candidate} vs PyTorch fp32: {self.matched}/{max(self.reference_count, self.candidate_count)} "
                f"keypoints matched within {MATCH_DISTANCE_PX} px ({100 * self.matched_fraction:.2f} %, need "
                f"{100 * MIN_MATCHED_FRACTION:.0f} %; counts {self.candidate_count} vs {self.reference_count}; mean "
                f"{self.mean_distance:.4f} px, max {self.max_distance:.4f} px), descriptor cosine median "
                f"{self.cosine_median:.5f} (need {MIN_COSINE[self.precision]}), 1st percentile {self.cosine_p1:.5f}, "
                f"min {self.cosine_min:.5f}")

    def require(self) -> "ParityReport":
        """``self`` if it passed, else AlikedError with the numbers."""
        if self.passed:
            return self
        if self.reference_count == 0:
            raise AlikedError("The parity frame gave no keypoints, so it checks nothing; pass a textured image.")
        raise AlikedError(f"The export does not reproduce PyTorch on the parity frame ({self.summary()}). "
                          "Please report this with the command line; --deform plain may avoid a faulty kernel.")


def compare_features(reference: Triple, candidate: Triple, precision: str,
                     candidate_name: str = "ONNX") -> ParityReport:
    """Compare two (keypoints, scores, descriptors) triples of one frame; score-0 slots are dropped first.

    The pairing and the statistics are :mod:`aliked_ros.comparison`'s (mutual nearest keypoints within
    ``MATCH_DISTANCE_PX``), the same as ``aliked-ros compare`` reports.
    """
    def valid(features) -> Triple:
        keypoints, scores, descriptors = (np.asarray(array, dtype=np.float32) for array in features)
        keep = scores > 0
        return keypoints[keep], scores[keep], descriptors[keep]

    stats = match_features(valid(reference), valid(candidate), MATCH_DISTANCE_PX).statistics()
    return ParityReport(
        candidate=candidate_name, precision=precision, reference_count=stats.count_a,
        candidate_count=stats.count_b, matched=stats.matched,
        mean_distance=stats.distance_mean, max_distance=stats.distance_max,
        cosine_median=stats.cosine_median, cosine_p1=stats.cosine_p1, cosine_min=stats.cosine_min,
    )


def run_onnxruntime_cpu(onnx_path: str | os.PathLike, pixels: np.ndarray) -> Triple:
    """The graph's three outputs for one frame (in the graph's input format), through onnxruntime's CPU provider."""
    onnxruntime = require("onnxruntime", "The export's parity check")
    try:
        session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's own exception types (NotImplemented, Fail, ...)
        if "DeformConv" not in str(error):
            raise
        raise AlikedError(
            f"onnxruntime {onnxruntime.__version__} has no CPU kernel for DeformConv, so the export cannot be "
            "checked; upgrade onnxruntime (1.32 has it), or export with --deform plain."
        ) from None
    keypoints, scores, descriptors = session.run(list(OUTPUT_NAMES), {INPUT_NAME: pixels})
    return keypoints, scores, descriptors


@torch.no_grad()
def run_torch(aliked: Aliked, rgb: np.ndarray) -> Triple:
    """``aliked``'s own outputs (its top-k) for one frame, as float32 numpy arrays."""
    parameter = next(aliked.parameters())
    image = uint8_to_network_input(torch.from_numpy(rgb), parameter.dtype)
    return tuple(output.float().cpu().numpy() for output in aliked(image.to(parameter.device)))


def check_parity(onnx_path: str | os.PathLike, reference: Aliked | Triple, rgb: np.ndarray,
                 precision: str, input_format: str = "rgb") -> ParityReport:
    """The exported file (onnxruntime, CPU) against the float32 PyTorch model on ``rgb``; AlikedError if they differ.

    ``reference`` is the float32 :class:`Aliked`, or its outputs on ``rgb`` already computed; the file gets the
    same frame in its ``input_format`` (for "gray", ``rgb`` must be a grey frame's three equal channels).
    """
    if isinstance(reference, Aliked):
        reference = run_torch(reference, rgb)
    candidate = run_onnxruntime_cpu(onnx_path, frame_in_format(rgb, input_format))
    return compare_features(reference, candidate, precision, "onnxruntime (CPU)").require()


def parity_frame(height: int, width: int, path: str | os.PathLike | None = None) -> tuple[str, np.ndarray]:
    """A real RGB frame of exactly ``height × width`` for the parity check, and where it came from.

    ``path`` if given, else the shared TUM/KITTI frame whose aspect ratio is closest, else scikit-image's sample;
    resized (area interpolation) when its size differs.
    """
    import cv2

    from aliked_ros.imaging import read_image
    from aliked_ros.sample_data import dataset_frames, registry_frames

    if path is not None:
        name, image = str(path), read_image(path)
    else:
        candidates = [(str(frames[0]), read_image(frames[0]))
                      for frames in map(dataset_frames, ("tum", "kitti")) if frames]
        if not candidates:
            candidates = registry_frames()[:1]

        def aspect_mismatch(item) -> float:
            rows, cols = item[1].shape[:2]
            return abs(np.log((cols / rows) / (width / height)))

        name, image = min(candidates, key=aspect_mismatch)
    rgb = as_rgb(image)
    if rgb.shape[:2] != (height, width):
        rgb = np.ascontiguousarray(cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA))
        name = f"{name} resized to {width}x{height}"
    return name, rgb


def frame_in_format(rgb: np.ndarray, input_format: str) -> np.ndarray:
    """An RGB frame as a graph of ``input_format`` takes it: itself, reordered to BGR, or its first channel (grey
    frames are given as three equal channels, see :func:`grey_parity_frame`)."""
    if input_format == "gray":
        return np.ascontiguousarray(rgb[:, :, 0])
    return np.ascontiguousarray(rgb[:, :, ::-1]) if input_format == "bgr" else rgb


def grey_parity_frame(rgb: np.ndarray) -> np.ndarray:
    """The parity frame of a grey graph: the frame made grey (OpenCV's weights), as three equal channels."""
    import cv2

    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return np.repeat(grey[:, :, None], 3, axis=2)
