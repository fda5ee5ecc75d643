"""``python -m aliked_ros.engines.compile_child SETTINGS HEIGHT WIDTH TOP_K``: the torch engine's background
compilation of one image size, run in a child process so that it fills torch.compile's on-disk cache without
holding the serving process's GIL (TorchExtractor ``compile_in_subprocess``). The parent then compiles the same
forward from the cache: seconds of Python in its own process instead of the whole compilation.

SETTINGS is the JSON of the TorchExtractor's arguments. The child makes that engine with ``background_compile`` and
runs its worker's own compilation (``_compile_size``), so the graphs, and so the cache entries, are the parent's.
Exit status 0 when compiled; the child ends when its parent does (a stopped node does not wait for it).
:func:`compile_in_child` is the parent's side.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time

_logger = logging.getLogger(__name__)
# A compilation in a child process that takes longer is stopped (a desktop GPU takes under a minute, a Jetson minutes).
COMPILE_CHILD_TIMEOUT_S = 1800


def compile_in_child(settings: dict, height: int, width: int, top_k: int) -> bool:
    """(The parent's worker thread.) One size's compilation in a child process made with the TorchExtractor
    arguments ``settings``, waited for without the GIL; whether it compiled. A child that fails is logged, and the
    worker then compiles in its own process."""
    command = [sys.executable, "-m", __name__, json.dumps(settings), str(height), str(width), str(top_k)]
    start = time.perf_counter()
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=COMPILE_CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _logger.warning("The compilation of %dx%d in a child process took over %d s: stopped; compiling here",
                        width, height, COMPILE_CHILD_TIMEOUT_S)
        return False
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1][:300]
        _logger.warning("The compilation of %dx%d in a child process failed (%s); compiling here", width, height,
                        reason)
        return False
    _logger.info("A child process compiled %dx%d in %.1f s", width, height, time.perf_counter() - start)
    return True


def exit_when_orphaned(poll_s: float = 1.0) -> threading.Thread:
    """A daemon thread that ends this process (status 3) once its parent has gone (it is then re-parented)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                os._exit(3)

    thread = threading.Thread(target=watch, name="orphan-watch", daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> int:
    exit_when_orphaned()
    arguments = sys.argv[1:] if argv is None else argv
    if len(arguments) != 4:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    from aliked_ros.engines.torch_engine import TorchExtractor
    from aliked_ros.errors import AlikedError

    try:
        settings = json.loads(arguments[0])
        height, width, top_k = (int(value) for value in arguments[1:])
        extractor = TorchExtractor(**settings, cuda_graph=True, compile=True, background_compile=True,
                                   compile_in_subprocess=False)
    except (ValueError, TypeError, AlikedError) as error:  # the parent logs this line
        print(f"compile_child: {error}", file=sys.stderr)
        return 1
    if not extractor.background_compile:
        print("compile_child: these settings make no compiled CUDA fast path here "
              f"({extractor.describe()})", file=sys.stderr)
        return 1
    extractor._compile_size(height, width, top_k)
    return 0


if __name__ == "__main__":
    sys.exit(main())
