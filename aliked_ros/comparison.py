"""Two feature sets of one image compared: mutual nearest keypoints, score differences, descriptor cosines.

numpy only (no torch, no ROS): used by ``aliked-ros compare`` (two engines or two precisions on the same frames) and
by the export's parity check (:func:`aliked_ros.export.parity.compare_features`).

Convention:
    - A feature set is a :class:`~aliked_ros.features.Features` or a ``(keypoints, scores, descriptors)`` triple:
      keypoints ``(N, 2)`` pixels, scores ``(N,)``, descriptors ``(N, D)``; rows correspond. Nothing is dropped here
      (callers that hold score-0 slots of a static engine drop them first).
    - Keypoint ``i`` of A and ``j`` of B are a match when each is the other's nearest keypoint (Euclidean distance in
      pixels; ties go to the lower index) and they are at most ``max_distance`` apart. Each keypoint is in at most
      one match.
    - ``matched_fraction`` is matches over the larger of the two counts, so missing and extra keypoints both count
      against it. Pooled over images it is the sum of matches over the sum of those larger counts.
    - Score difference: B's score minus A's, at each match; statistics are of its absolute value.
    - Descriptor cosine: the cosine of the angle between the two descriptors of a match, computed with their norms
      (engines return L2-normalised descriptors, where it is their dot product); a zero descriptor gives 0.
    - Statistics of an empty match set are NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from aliked_ros import tables

# Elements of one block of the distance matrix: (rows of A) x (all of B), float64 → 8 MiB, whatever N is.
DEFAULT_CHUNK_ELEMENTS = 1 << 20


def mutual_nearest_points(points_a: np.ndarray, points_b: np.ndarray, max_distance: float = math.inf, *,
                              chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> tuple[np.ndarray, np.ndarray,
                                                                                       np.ndarray]:
    """Mutual nearest neighbours between two point sets ``(N_A, D)`` and ``(N_B, D)`` within ``max_distance``.

    Returns ``(index_a, index_b, distances)``: int64 row indices into A and B and float64 distances of the pairs,
    in increasing ``index_a``. The exact distance matrix is computed in blocks of rows of A (at most
    ``chunk_elements`` entries at a time), so memory stays bounded for thousands of points and time is O(N_A N_B).
    """
    a = np.asarray(points_a, dtype=np.float64)
    b = np.asarray(points_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"point sets must be (N, D) with the same D, got {a.shape} and {b.shape}")
    count_a, count_b = len(a), len(b)
    if count_a == 0 or count_b == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)

    nearest_b = np.empty(count_a, np.int64)  # for each row of A, its nearest row of B
    nearest_b_squared = np.empty(count_a, np.float64)
    nearest_a = np.zeros(count_b, np.int64)  # for each row of B, its nearest row of A (running over the blocks)
    nearest_a_squared = np.full(count_b, np.inf)
    columns = np.arange(count_b)
    rows_per_block = max(1, chunk_elements // count_b)
    for start in range(0, count_a, rows_per_block):
        block = a[start:start + rows_per_block]
        squared = np.zeros((len(block), count_b))
        for axis in range(a.shape[1]):  # one coordinate at a time: no (rows, N_B, D) temporary
            squared += np.square(block[:, axis:axis + 1] - b[None, :, axis])
        row_best = squared.argmin(axis=1)
        nearest_b[start:start + len(block)] = row_best
        nearest_b_squared[start:start + len(block)] = squared[np.arange(len(block)), row_best]
        column_best = squared.argmin(axis=0)
        column_squared = squared[column_best, columns]
        better = column_squared < nearest_a_squared  # strict: an earlier block keeps a tie, as argmin would
        nearest_a[better] = column_best[better] + start
        nearest_a_squared[better] = column_squared[better]

    index_a = np.arange(count_a)
    distances = np.sqrt(nearest_b_squared)
    keep = (nearest_a[nearest_b] == index_a) & (distances <= max_distance)
    return index_a[keep], nearest_b[keep], distances[keep]


def _arrays(features) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if hasattr(features, "keypoints"):
        keypoints, scores, descriptors = features.keypoints, features.scores, features.descriptors
    else:
        keypoints, scores, descriptors = features
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    descriptors = np.asarray(descriptors, dtype=np.float64)
    if descriptors.ndim != 2 or not len(keypoints) == len(scores) == len(descriptors):
        raise ValueError(f"inconsistent feature arrays: keypoints {keypoints.shape}, scores {scores.shape}, "
                         f"descriptors {descriptors.shape}")
    return keypoints, scores, descriptors


def cosines(descriptors_a: np.ndarray, descriptors_b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two ``(M, D)`` arrays (0 where either row is zero)."""
    a = np.asarray(descriptors_a, dtype=np.float64)
    b = np.asarray(descriptors_b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.sum(a * b, axis=1)
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


@dataclass(frozen=True)
class FeatureMatches:
    """The matches between feature sets A and B of one image (see the module's convention)."""

    count_a: int
    count_b: int
    index_a: np.ndarray  # int64 (M,): rows of A
    index_b: np.ndarray  # int64 (M,): rows of B
    distances: np.ndarray  # float64 (M,): pixels
    score_differences: np.ndarray  # float64 (M,): B − A
    cosines: np.ndarray  # float64 (M,)

    @property
    def matched(self) -> int:
        return len(self.index_a)

    def statistics(self) -> "MatchStatistics":
        return MatchStatistics.from_arrays(self.count_a, self.count_b, max(self.count_a, self.count_b),
                                           self.distances, self.score_differences, self.cosines)


def match_features(features_a, features_b, max_distance: float = 1.0, *,
                   chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> FeatureMatches:
    """Pair two feature sets of one image by mutual nearest keypoints within ``max_distance`` pixels.

    ``features_a`` and ``features_b`` are Features or ``(keypoints, scores, descriptors)`` triples. Descriptors of
    different sizes cannot be compared: ValueError.
    """
    keypoints_a, scores_a, descriptors_a = _arrays(features_a)
    keypoints_b, scores_b, descriptors_b = _arrays(features_b)
    if len(keypoints_a) and len(keypoints_b) and descriptors_a.shape[1] != descriptors_b.shape[1]:
        raise ValueError(f"descriptor sizes differ: {descriptors_a.shape[1]} and {descriptors_b.shape[1]}")
    index_a, index_b, distances = mutual_nearest_points(keypoints_a, keypoints_b, max_distance,
                                                            chunk_elements=chunk_elements)
    return FeatureMatches(
        count_a=len(keypoints_a), count_b=len(keypoints_b), index_a=index_a, index_b=index_b, distances=distances,
        score_differences=scores_b[index_b] - scores_a[index_a],
        cosines=cosines(descriptors_a[index_a], descriptors_b[index_b]),
    )


@dataclass(frozen=True)
class MatchStatistics:
    """Summary numbers of one image's matches, or of several images' pooled (:meth:`pooled`)."""

    count_a: int
    count_b: int
    matched: int
    matched_fraction: float  # matches / larger count (pooled: / sum of the larger counts); NaN with no keypoints
    distance_mean: float
    distance_max: float
    score_difference_mean: float  # of |B − A|
    score_difference_max: float  # of |B − A|
    cosine_median: float
    cosine_p1: float  # 1st percentile (numpy's linear interpolation)
    cosine_min: float

    @classmethod
    def from_arrays(cls, count_a: int, count_b: int, possible: int, distances: np.ndarray,
                    score_differences: np.ndarray, cosine_values: np.ndarray) -> "MatchStatistics":
        matched = len(distances)
        absolute = np.abs(score_differences)

        def stat(function, values) -> float:
            return float(function(values)) if matched else math.nan

        return cls(
            count_a=int(count_a), count_b=int(count_b), matched=matched,
            matched_fraction=matched / possible if possible else math.nan,
            distance_mean=stat(np.mean, distances), distance_max=stat(np.max, distances),
            score_difference_mean=stat(np.mean, absolute), score_difference_max=stat(np.max, absolute),
            cosine_median=stat(np.median, cosine_values), cosine_p1=stat(lambda v: np.percentile(v, 1), cosine_values),
            cosine_min=stat(np.min, cosine_values),
        )

    @classmethod
    def pooled(cls, matches: Iterable[FeatureMatches]) -> "MatchStatistics":
        """All images' matches as one set: counts summed, statistics over every match of every image."""
        matches = list(matches)

        def joined(name: str) -> np.ndarray:
            return np.concatenate([getattr(match, name) for match in matches]) if matches else np.zeros(0)

        return cls.from_arrays(sum(m.count_a for m in matches), sum(m.count_b for m in matches),
                               sum(max(m.count_a, m.count_b) for m in matches), joined("distances"),
                               joined("score_differences"), joined("cosines"))


# --- a markdown table ---------------------------------------------------------------------------------------------

TABLE_COLUMNS = ("image", "size", "A", "B", "matched", "matched %", "dist mean px", "dist max px",
                 "abs Δscore mean", "abs Δscore max", "cos median", "cos p1", "cos min")


def _number(value: float, spec: str) -> str:
    return "–" if value is None or math.isnan(value) else format(value, spec)


def table_row(name: str, size: str, stats: MatchStatistics) -> list[str]:
    return [name, size, str(stats.count_a), str(stats.count_b), str(stats.matched),
            _number(100 * stats.matched_fraction, ".2f"), _number(stats.distance_mean, ".4f"),
            _number(stats.distance_max, ".4f"), _number(stats.score_difference_mean, ".2e"),
            _number(stats.score_difference_max, ".2e"), _number(stats.cosine_median, ".5f"),
            _number(stats.cosine_p1, ".5f"), _number(stats.cosine_min, ".5f")]


def markdown_table(rows: Sequence[Sequence[str]], columns: Sequence[str] = TABLE_COLUMNS) -> str:
    """A GitHub-flavoured markdown table (:func:`aliked_ros.tables.markdown_table`); text columns left-aligned, the
    others right-aligned."""
    return tables.markdown_table(columns, rows, align_numbers=True)
