"""A trajectory of camera-to-world poses, and its files: TUM (with stamps) and KITTI (poses only)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aliked_ros import outputs
from aliked_ros.errors import AlikedError
from aliked_ros.vo.rotations import quaternion_to_rotation, rotation_to_quaternion


@dataclass
class Trajectory:
    """Stamped camera-to-world poses (see the module's convention)."""

    stamps: list[float] = field(default_factory=list)
    poses: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.stamps)

    def append(self, stamp: float, pose: np.ndarray) -> None:
        if self.stamps and stamp <= self.stamps[-1]:
            raise AlikedError(f"Trajectory stamps must increase: {stamp} after {self.stamps[-1]}.")
        self.stamps.append(float(stamp))
        self.poses.append(np.asarray(pose, dtype=np.float64))

    def positions(self) -> np.ndarray:
        return np.array([pose[:3, 3] for pose in self.poses]).reshape(-1, 3)

    def path_length(self) -> float:
        return float(np.linalg.norm(np.diff(self.positions(), axis=0), axis=1).sum()) if len(self) > 1 else 0.0


def _write_atomically(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    if not path.parent.is_dir():
        raise AlikedError(f"The directory {path.parent} of {path} does not exist; create it first.")
    outputs.write_text(path, text)


TUM_HEADER = "# timestamp tx ty tz qx qy qz qw (camera-to-world, world = first camera; aliked-ros vo)"


def _is_kitti_poses(path: Path) -> bool:
    """A KITTI poses file (12 numbers a line, nothing else), as :func:`write_kitti` writes it."""
    try:
        lines = path.read_text().split("\n")
        return all(len([float(value) for value in line.split()]) == 12 for line in lines if line.strip())
    except (OSError, UnicodeDecodeError, ValueError):
        return False


TUM_OUTPUT = outputs.OutputKind("a trajectory written by aliked-ros vo", outputs.text_starting_with(TUM_HEADER))
KITTI_OUTPUT = outputs.OutputKind("a KITTI poses file (12 numbers a line)", _is_kitti_poses)


def write_tum(path: str | os.PathLike, trajectory: Trajectory) -> None:
    """``timestamp tx ty tz qx qy qz qw`` per pose, as the TUM RGB-D tools and evo read it."""
    lines = [TUM_HEADER]
    for stamp, pose in zip(trajectory.stamps, trajectory.poses):
        values = (*pose[:3, 3], *rotation_to_quaternion(pose[:3, :3]))
        lines.append(f"{stamp:.9f} " + " ".join(f"{value:.9g}" for value in values))
    _write_atomically(path, "\n".join(lines) + "\n")


def read_tum(path: str | os.PathLike) -> Trajectory:
    trajectory = Trajectory()
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            stamp, tx, ty, tz, qx, qy, qz, qw = (float(value) for value in line.split())
        except ValueError:
            raise AlikedError(f"{path}:{number} is not 'timestamp tx ty tz qx qy qz qw': {line!r}.") from None
        pose = np.eye(4)
        pose[:3, :3] = quaternion_to_rotation((qx, qy, qz, qw))
        pose[:3, 3] = (tx, ty, tz)
        trajectory.append(stamp, pose)
    return trajectory


def write_kitti(path: str | os.PathLike, trajectory: Trajectory) -> None:
    """The first three rows of each pose, row-major, one a line: KITTI's poses/NN.txt format (no stamps)."""
    lines = [" ".join(f"{value:.9g}" for value in pose[:3].reshape(-1)) for pose in trajectory.poses]
    _write_atomically(path, "\n".join(lines) + "\n")
