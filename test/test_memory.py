"""keep_freed_memory: a process that allocates and frees a frame's large arrays stops faulting their pages in."""

import subprocess
import sys

import pytest

FRAMES = 40
# Per "frame": a 1.4 MB frame and 1 MB of descriptors, copied as the node copies them, then freed.
SCRIPT = f"""
import resource, sys
import numpy as np
from aliked_ros.memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
frame, descriptors = np.ones((376, 1241, 3), np.uint8), np.ones((2000, 128), np.float32)
for warm_up in range(3):
    copies = [frame.copy(), descriptors.copy(), descriptors.tobytes()]
    del copies
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range({FRAMES}):
    copies = [frame.copy(), descriptors.copy(), descriptors.tobytes()]
    del copies
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> tuple[str, int]:
    result = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=60,
                            check=True)
    kept, faults = result.stdout.split()
    return kept, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings: Linux only")
def test_kept_memory_is_reused_instead_of_faulted_in_every_frame():
    kept, faults_kept = page_faults("keep")
    if kept != "True":
        pytest.skip("this Linux's C library is not glibc (its malloc took no settings)")
    _, faults_default = page_faults("default")
    pages_per_frame = (376 * 1241 * 3 + 2 * 2000 * 128 * 4) // 4096  # about 840
    # By default glibc maps these arrays afresh (or trims them back) and faults their pages in every frame.
    assert faults_default > FRAMES * pages_per_frame / 2
    assert faults_kept < FRAMES * pages_per_frame / 20  # kept: the same heap pages serve every frame
