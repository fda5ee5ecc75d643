"""Files of the package outside its Python modules (msg/, config/): one lookup for a checkout, a pip install and a
ROS 2 install."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from aliked_ros.errors import AlikedError


def package_file(folder: str, name: str) -> Path:
    """``<folder>/<name>`` of aliked_ros: in the checkout, beside a pip install (``share/aliked_ros/<folder>``, from
    pyproject's data-files) or in a ROS 2 install on ``AMENT_PREFIX_PATH`` (the same place)."""
    candidates = [Path(__file__).resolve().parents[1] / folder, Path(sys.prefix) / "share" / "aliked_ros" / folder]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / "aliked_ros" / folder)
    for directory in candidates:
        if (directory / name).is_file():
            return directory / name
    raise AlikedError(f"{folder}/{name} was not found; reinstall aliked-ros (pip install) or source its ROS 2 "
                      "workspace.")
