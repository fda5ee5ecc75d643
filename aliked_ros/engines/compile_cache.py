"""torch.compile's on-disk cache for the torch engine: where it lives, and one directory per version of our sources."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
from pathlib import Path

from aliked_ros.model.weights import cache_dir

COMPILE_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
# Our compile cache's subdirectories, one per version of the package's sources, and how long one unused is kept.
_SOURCES_DIRECTORY = re.compile(r"^sources-[0-9a-f]{16}$")
_LAST_USED_FILE = "last_used"
UNUSED_COMPILE_CACHE_DAYS = 14
_logger = logging.getLogger(__name__)


def package_sources_digest(package: Path | None = None) -> str:
    """16 hex digits of a SHA-256 over the Python sources (their paths and bytes) of ``package``, by default this one.

    torch's caches key a compiled graph by the source of the Triton kernels in it, not by the Python that launches
    them (grids, block sizes, buffer sizes, which kernel a name refers to): a graph compiled by another version of the
    package can come back from the cache with that version's launches (seen in session 10's A/B: five variants, one
    graph). Our cache therefore has one directory per version of the sources.
    """
    package = package or Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _forget_unused_compile_caches(parent: Path, current: Path, max_age_days: float) -> None:
    """Delete the other sources' directories under ``parent`` that no start has used for ``max_age_days`` (each start
    touches its directory's last-used file): an updated package leaves its old compilations behind, tens of MB each.
    Another installation of the package sharing the cache keeps its directory while it runs now and then."""
    now = time.time()
    for directory in parent.iterdir():
        if directory == current or not _SOURCES_DIRECTORY.match(directory.name) or not directory.is_dir():
            continue
        marker = directory / _LAST_USED_FILE
        try:
            last_used = marker.stat().st_mtime if marker.exists() else directory.stat().st_mtime
        except OSError:
            continue
        if now - last_used > max_age_days * 86400:
            _logger.info("Deleting torch.compile's cache of other package sources unused for %d days: %s",
                         max_age_days, directory)
            shutil.rmtree(directory, ignore_errors=True)


def use_persistent_compile_cache() -> str:
    """Point torch.compile's on-disk caches at aliked_ros's cache unless the user chose a place; returns the place.

    Inductor keeps what it compiled (FX graphs, AOTAutograd results, the Triton kernels) under
    ``$TORCHINDUCTOR_CACHE_DIR``, read when it compiles, and by default in ``/tmp/torchinductor_<user>``, which a
    reboot empties on most robots. There a restart compiles again (tens of seconds); from the cache the same model
    and image size start in seconds (BENCHMARKS.md, "Start-up"). Ours is ``torch_compile/sources-<digest>`` in
    aliked_ros's cache, one directory per version of the package's sources (:func:`package_sources_digest`), the
    others deleted after :data:`UNUSED_COMPILE_CACHE_DAYS` days unused. A place the user chose is used as it is.
    Where ours cannot be written, torch's default stays (returns "").
    """
    if not os.environ.get(COMPILE_CACHE_ENV):
        parent = cache_dir() / "torch_compile"
        place = parent / f"sources-{package_sources_digest()}"
        try:
            place.mkdir(parents=True, exist_ok=True)
            writable = os.access(place, os.W_OK | os.X_OK)
            if writable:
                (place / _LAST_USED_FILE).touch()
                _forget_unused_compile_caches(parent, place, UNUSED_COMPILE_CACHE_DAYS)
        except OSError:
            writable = False
        if not writable:  # a read-only home: torch's default still works, only restarts compile again
            _logger.warning("torch.compile's cache cannot be kept in %s (not writable); a restart will compile "
                            "again. Set %s to a writable directory to keep it.", place, COMPILE_CACHE_ENV)
            return ""
        os.environ[COMPILE_CACHE_ENV] = str(place)
    return os.environ[COMPILE_CACHE_ENV]
