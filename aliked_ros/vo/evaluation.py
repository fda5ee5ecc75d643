"""Checks of the odometry that need no ground truth (pairs, triplets of frames), two runs compared (fp32 and
fp16), and their markdown tables."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from aliked_ros.matching import MutualNearestNeighbours, as_features
from aliked_ros.tables import markdown_table
from aliked_ros.vo.relative_pose import RelativePose, VOOptions, estimate_relative_pose
from aliked_ros.vo.rotations import rotation_angle_deg, rotation_difference_deg, vector_angle_deg


@dataclass(frozen=True)
class PairRow:
    first: int
    second: int
    pose: RelativePose


@dataclass(frozen=True)
class TripletRow:
    """Frames a, b, c: how far R_ac (estimated directly) is from R_bc @ R_ab (through b), and how far t_ac is from
    the plane of R_bc t_ab and t_bc (the three translations of one rigid motion are coplanar)."""

    a: int
    b: int
    c: int
    rotation_error_deg: float
    coplanarity_error_deg: float


@dataclass(frozen=True)
class Evaluation:
    pairs: list[PairRow]
    triplets: list[TripletRow]
    forward_threshold: float

    @property
    def valid_pairs(self) -> list[PairRow]:
        return [row for row in self.pairs if row.pose.valid]

    def summary(self) -> dict[str, float]:
        valid = self.valid_pairs
        forward = [row.pose.camera_translation[2] for row in valid]
        rotation = [row.rotation_error_deg for row in self.triplets]
        coplanarity = [row.coplanarity_error_deg for row in self.triplets]
        nan = float("nan")
        return {
            "pairs": len(self.pairs),
            "valid_pairs": len(valid),
            "median_matches": float(np.median([row.pose.match_count for row in valid])) if valid else nan,
            "median_inliers": float(np.median([row.pose.inliers for row in valid])) if valid else nan,
            "median_inlier_ratio": float(np.median([row.pose.inlier_ratio for row in valid])) if valid else nan,
            "median_in_front_ratio": float(np.median([row.pose.in_front / row.pose.inliers for row in valid]))
            if valid else nan,
            "min_forward": float(np.min(forward)) if forward else nan,
            "forward_pairs": int(sum(value > self.forward_threshold for value in forward)),
            "triplets": len(self.triplets),
            "median_triplet_rotation_deg": float(np.median(rotation)) if rotation else nan,
            "max_triplet_rotation_deg": float(np.max(rotation)) if rotation else nan,
            "median_triplet_coplanarity_deg": float(np.median(coplanarity)) if coplanarity else nan,
        }


def _coplanarity_error_deg(t_ab: np.ndarray, t_bc: np.ndarray, r_bc: np.ndarray, t_ac: np.ndarray) -> float:
    """Angle between t_ac and the plane spanned by R_bc t_ab and t_bc (x_c = R_bc (R_ab x_a + t_ab) + t_bc, so
    t_ac = s_ab R_bc t_ab + s_bc t_bc for the unknown scales)."""
    normal = np.cross(r_bc @ t_ab, t_bc)
    if np.linalg.norm(normal) < 1e-9:  # collinear: any t_ac on that line is consistent
        return vector_angle_deg(np.abs(t_ac), np.abs(t_bc))
    sine = abs(float(np.dot(normal, t_ac))) / (np.linalg.norm(normal) * np.linalg.norm(t_ac))
    return math.degrees(math.asin(min(1.0, sine)))


def evaluate(features: list, camera: np.ndarray, matcher=None, options: VOOptions = VOOptions(),
             forward_threshold: float = 0.9, distortion: np.ndarray | None = None) -> Evaluation:
    """Checks that need no ground truth, over consecutive frames: per pair the matches, inliers and the direction of
    the camera's motion; per triplet (i, i+1, i+2) the consistency of the rotations and translations."""
    frames = [as_features(item) for item in features]
    matcher = matcher or MutualNearestNeighbours()
    pairs = [PairRow(i, i + 1, estimate_relative_pose(frames[i], frames[i + 1], camera, matcher, options,
                                                      distortion)) for i in range(len(frames) - 1)]
    triplets = []
    for a in range(len(frames) - 2):
        ab, bc = pairs[a].pose, pairs[a + 1].pose
        if not (ab.valid and bc.valid):
            continue
        ac = estimate_relative_pose(frames[a], frames[a + 2], camera, matcher, options, distortion)
        if not ac.valid:
            continue
        through_b = bc.rotation @ ab.rotation
        triplets.append(TripletRow(a, a + 1, a + 2, rotation_difference_deg(ac.rotation, through_b),
                                   _coplanarity_error_deg(ab.translation, bc.translation, bc.rotation,
                                                          ac.translation)))
    return Evaluation(pairs, triplets, forward_threshold)


@dataclass(frozen=True)
class PrecisionRow:
    """One pair estimated from two sets of features of the same frames (fp32 and fp16, say)."""

    first: int
    second: int
    inliers: tuple[int, int]
    rotation_difference_deg: float
    translation_difference_deg: float


def compare_evaluations(reference: Evaluation, other: Evaluation) -> list[PrecisionRow]:
    """Per pair valid in both: the rotation and translation-direction differences of the two estimates."""
    rows = []
    for left, right in zip(reference.pairs, other.pairs):
        if left.pose.valid and right.pose.valid:
            rows.append(PrecisionRow(left.first, left.second, (left.pose.inliers, right.pose.inliers),
                                     rotation_difference_deg(left.pose.rotation, right.pose.rotation),
                                     vector_angle_deg(left.pose.translation, right.pose.translation)))
    return rows


def describe_summary(evaluation: Evaluation) -> str:
    """The evaluation's summary in one sentence."""
    s = evaluation.summary()
    return (f"{s['valid_pairs']}/{s['pairs']} pairs valid; median {s['median_matches']:.0f} matches, "
            f"{s['median_inliers']:.0f} inliers (ratio {s['median_inlier_ratio']:.2f}), "
            f"{100 * s['median_in_front_ratio']:.0f}% of inliers in front of both cameras; forward motion "
            f"(camera z > {evaluation.forward_threshold:g}) in {s['forward_pairs']}/{s['valid_pairs']} pairs "
            f"(smallest z {s['min_forward']:.3f}); triplet rotation error median "
            f"{s['median_triplet_rotation_deg']:.3f} deg, max {s['max_triplet_rotation_deg']:.3f} deg over "
            f"{s['triplets']} triplets; translation coplanarity median {s['median_triplet_coplanarity_deg']:.3f} deg.")


PAIR_COLUMNS = ("pair", "matches", "inliers", "inlier ratio", "in front", "parallax px", "rotation deg",
                "camera motion (x, y, z)", "note")
TRIPLET_COLUMNS = ("triplet", "rotation error deg (R_ac vs R_bc R_ab)", "translation coplanarity error deg")


def format_evaluation(evaluation: Evaluation, title: str = "") -> str:
    """The evaluation as markdown: one row per pair, one per triplet, and the summary."""
    lines = [f"### {title}", ""] if title else []
    pairs = []
    for row in evaluation.pairs:
        pose = row.pose
        motion = ", ".join(f"{v:+.3f}" for v in pose.camera_translation) if pose.valid else "-"
        pairs.append([f"{row.first}-{row.second}", str(pose.match_count), str(pose.inliers),
                      f"{pose.inlier_ratio:.2f}", str(pose.in_front), f"{pose.parallax_px:.1f}",
                      f"{rotation_angle_deg(pose.rotation):.3f}", motion, pose.reason])
    lines.append(markdown_table(PAIR_COLUMNS, pairs, align_numbers=True))
    if evaluation.triplets:
        triplets = [[f"{row.a}-{row.b}-{row.c}", f"{row.rotation_error_deg:.3f}", f"{row.coplanarity_error_deg:.3f}"]
                    for row in evaluation.triplets]
        lines += ["", markdown_table(TRIPLET_COLUMNS, triplets, align_numbers=True)]
    lines += ["", describe_summary(evaluation)]
    return "\n".join(lines)


def format_comparison(rows: list[PrecisionRow], names: tuple[str, str] = ("fp32", "fp16")) -> str:
    """Per-pair differences of two estimates as markdown, and their median and maximum."""
    columns = ("pair", f"inliers {names[0]}", f"inliers {names[1]}", "rotation difference deg",
               "translation direction difference deg")
    lines = [markdown_table(columns, [[f"{row.first}-{row.second}", str(row.inliers[0]), str(row.inliers[1]),
                                       f"{row.rotation_difference_deg:.4f}", f"{row.translation_difference_deg:.3f}"]
                                      for row in rows], align_numbers=True)]
    if rows:
        rotation = [row.rotation_difference_deg for row in rows]
        translation = [row.translation_difference_deg for row in rows]
        lines += ["", (f"{len(rows)} pairs: rotation difference median {np.median(rotation):.4f} deg, max "
                       f"{np.max(rotation):.4f} deg; translation direction difference median "
                       f"{np.median(translation):.3f} deg, max {np.max(translation):.3f} deg.")]
    return "\n".join(lines)
