"""``python -m aliked_ros.engines.compile_child SETTINGS HEIGHT WIDTH TOP_K``: the torch engine's background
compilation of one image size, run in a child process so that it fills torch.compile's on-disk cache without
holding the serving process's GIL (TorchExtractor ``compile_in_subprocess``). The parent then compiles the same
forward from the cache: seconds of Python in its own process instead of the whole compilation.

SETTINGS is the JSON of the TorchExtractor's arguments. The child makes that engine with ``background_compile`` and
runs its worker's own compilation (``_compile_size``), so the graphs, and so the cache entries, are the parent's.
Exit status 0 when compiled; the child ends when its parent does (a stopped node does not wait for it).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time


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
