"""Features: what every engine returns for one image."""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass

import numpy as np

from aliked_ros import outputs
from aliked_ros.errors import AlikedError

NPZ_KEYS = ("keypoints", "scores", "descriptors", "image_size")


@dataclass(frozen=True)
class Features:
    """Keypoints, scores and descriptors of one image.

    Convention:
        - ``keypoints``: float32 ``(N, 2)``, pixel coordinates ``(x, y)`` of the image given to the extractor:
          x to the right, y down, the centre of the top-left pixel at ``(0, 0)``; sub-pixel.
        - ``scores``: float32 ``(N,)`` in ``(0, 1)``, sorted high → low.
        - ``descriptors``: float32 ``(N, D)``, each row L2-normalised; ``D`` is 64 (aliked-t16) or 128.
        - ``image_height``, ``image_width``: the size the keypoints refer to.
        - Rows correspond across the three arrays. ``N`` may be 0.
    """

    keypoints: np.ndarray
    scores: np.ndarray
    descriptors: np.ndarray
    image_height: int
    image_width: int

    def __post_init__(self):
        count = len(self.scores)
        if self.keypoints.shape != (count, 2) or self.descriptors.ndim != 2 or len(self.descriptors) != count:
            raise ValueError(
                f"inconsistent feature arrays: keypoints {self.keypoints.shape}, scores {self.scores.shape}, "
                f"descriptors {self.descriptors.shape}"
            )

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def descriptor_size(self) -> int:
        return self.descriptors.shape[1]

    def above(self, score_threshold: float) -> "Features":
        """The features whose score is strictly above ``score_threshold`` (scores are sorted, so a prefix)."""
        count = int(np.count_nonzero(self.scores > score_threshold))
        return self[:count]

    def __getitem__(self, rows) -> "Features":
        return Features(self.keypoints[rows], self.scores[rows], self.descriptors[rows], self.image_height,
                        self.image_width)

    def save_npz(self, path: str | os.PathLike) -> None:
        """Write ``keypoints``, ``scores``, ``descriptors`` and ``image_size`` (H, W) to ``path`` atomically."""
        with outputs.atomic_file(path) as file:
            np.savez(file, keypoints=self.keypoints, scores=self.scores, descriptors=self.descriptors,
                     image_size=np.array([self.image_height, self.image_width], dtype=np.int64))

    @classmethod
    def load_npz(cls, path: str | os.PathLike) -> "Features":
        try:
            with np.load(path) as data:
                height, width = (int(v) for v in data["image_size"])
                return cls(data["keypoints"], data["scores"], data["descriptors"], height, width)
        except (OSError, KeyError, ValueError) as error:
            raise AlikedError(f"{path} is not a features file written by aliked-ros ({error}).") from None


def is_features_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a features file that :meth:`Features.save_npz` writes (its four arrays, nothing else),
    read from the archive's listing without loading the arrays."""
    try:
        with zipfile.ZipFile(path) as archive:
            return sorted(archive.namelist()) == sorted(f"{key}.npy" for key in NPZ_KEYS)
    except (OSError, zipfile.BadZipFile):
        return False


FEATURES_OUTPUT = outputs.OutputKind("a features file (.npz) written by aliked-ros", is_features_file)


__all__ = ["FEATURES_OUTPUT", "Features", "is_features_file"]
