"""A node's process keeps the memory it frees for its next frame (glibc's malloc settings).

A frame's large host arrays lie above glibc's mmap threshold (128 KiB to start): a KITTI frame made RGB (1.4 MB),
aliked-n16rot's 2000 descriptors (1 MB) in the features, again in the Keypoints message and in its serialisation.
Each is mapped afresh and its pages faulted in one by one, or freed to the top of the heap and trimmed back to the
kernel, every frame. On the project's 2-core development VM the copy of those features out of the engine's buffers,
the message and rclpy's serialisation took 2.4-3.8 ms a frame that way and 0.22 ms with the freed memory kept
(BENCHMARKS.md, twelfth session).
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # the largest glibc takes on 64-bit: every per-frame array from the heap
TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024  # free memory at the heap's top handed back only above this


def keep_freed_memory() -> bool:
    """Allocations up to 32 MiB from the heap, and the heap trimmed only above 64 MiB free, for this whole process.
    True where the C library took both settings (glibc: Linux desktops, Jetson); False elsewhere, nothing changed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # musl's mallopt takes nothing and returns 0.
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD,
                                                                                   TRIM_THRESHOLD_BYTES))
