"""The Extractor contract through the torch engine: layout, dtypes, sizes, precision and bad input."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from aliked_ros.engines import ExtractorConfig, create_extractor
from aliked_ros.comparison import match_features
from aliked_ros.errors import AlikedError
from aliked_ros.features import Features


@pytest.fixture(scope="module")
def extractor():
    return create_extractor("torch", model="aliked-t16", top_k=500, device="cpu")


def check_contract(features: Features, height: int, width: int, descriptor_size: int, top_k: int):
    assert features.keypoints.dtype == features.scores.dtype == features.descriptors.dtype == np.float32
    assert 0 < len(features) <= top_k
    assert features.descriptors.shape == (len(features), descriptor_size)
    assert np.all(np.diff(features.scores) <= 0) and np.all(features.scores > 0) and np.all(features.scores < 1)
    assert np.allclose(np.linalg.norm(features.descriptors, axis=1), 1, atol=1e-5)
    x, y = features.keypoints.T
    assert x.min() >= 0 and y.min() >= 0 and x.max() <= width - 1 and y.max() <= height - 1
    assert (features.image_height, features.image_width) == (height, width)


def test_contract_on_real_frames(extractor, rgb_frame, gray_frame):
    for image in (rgb_frame, gray_frame):
        check_contract(extractor.extract(image), *image.shape[:2], 64, 500)


def test_grayscale_equals_its_three_channel_copy(extractor, gray_frame):
    gray = extractor.extract(gray_frame[:200, :300])
    rgb = extractor.extract(np.repeat(gray_frame[:200, :300, None], 3, axis=2))
    single = extractor.extract(gray_frame[:200, :300, None])
    for other in (rgb, single):
        assert np.array_equal(gray.keypoints, other.keypoints)
        assert np.array_equal(gray.descriptors, other.descriptors)


def test_padding_moves_no_keypoint(extractor, rgb_frame):
    """Crops that need padding to a multiple of 32 find the same keypoints, shifted by the crop offset."""
    # The reference keeps more keypoints than the crops: a crop's top 500 reach further down the frame's ranking.
    reference = create_extractor("torch", model="aliked-t16", top_k=3000, device="cpu").extract(rgb_frame)
    for top, left, height, width in [(0, 0, 470, 490), (7, 9, 455, 401)]:
        crop = rgb_frame[top:top + height, left:left + width]
        features = extractor.extract(crop)
        check_contract(features, height, width, 64, 500)
        interior = np.all((features.keypoints > 16) & (features.keypoints < [width - 16, height - 16]), axis=1)
        in_frame = features.keypoints[interior] + [left, top]
        nearest = np.linalg.norm(in_frame[:, None] - reference.keypoints[None], axis=2).min(axis=1)
        # A frame off by the padding would put the median at several pixels.
        assert np.median(nearest) < 0.2
        assert np.mean(nearest < 1.0) > 0.8


def test_threshold_mode(rgb_frame):
    extractor = create_extractor("torch", model="aliked-t16", top_k=-1, score_threshold=0.3, max_keypoints=300,
                                 device="cpu")
    features = extractor.extract(rgb_frame)
    assert 0 < len(features) <= 300 and np.all(features.scores > 0.3)
    assert np.all(np.diff(features.scores) <= 0)


def test_above_keeps_the_prefix_over_the_threshold(extractor, rgb_frame):
    features = extractor.extract(rgb_frame)
    threshold = float(np.median(features.scores))
    kept = features.above(threshold)
    assert np.all(kept.scores > threshold) and len(kept) == np.count_nonzero(features.scores > threshold)
    assert np.array_equal(kept.descriptors, features.descriptors[: len(kept)])


def test_fp16_agrees_with_fp32(rgb_frame):
    """float16 on the CPU is slow, so a crop; the bounds are the engine issue's fp16 bounds."""
    crop = rgb_frame[100:228, 200:392]
    results = {}
    for fp16 in (False, True):
        engine = create_extractor("torch", model="aliked-t16", top_k=200, device="cpu",
                                  precision="fp16" if fp16 else "fp32")
        assert engine.precision == ("fp16" if fp16 else "fp32")
        results[fp16] = engine.extract(crop)
    full, half = results[False], results[True]
    matches = match_features(full, half, max_distance=1.0)  # mutual nearest keypoints
    assert matches.matched / len(full) >= 0.9
    cosine = matches.cosines
    assert np.median(cosine) >= 0.99


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (PyTorch sees no GPU here)")
@pytest.mark.parametrize("fp16", [False, True])
def test_cuda_agrees_with_cpu(rgb_frame, fp16):
    cpu = create_extractor("torch", model="aliked-n16rot", top_k=1000, device="cpu")
    gpu = create_extractor("torch", model="aliked-n16rot", top_k=1000, device="cuda",
                           precision="fp16" if fp16 else "fp32", cuda_graph=False)  # eager on both
    reference, result = cpu.extract(rgb_frame), gpu.extract(rgb_frame)
    matches = match_features(reference, result, max_distance=0.5)  # mutual nearest keypoints
    assert matches.matched / len(reference) >= (0.99 if not fp16 else 0.95)
    cosine = matches.cosines
    assert np.quantile(cosine, 0.01) >= (0.999 if not fp16 else 0.99)


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((64, 64, 2), np.uint8), "2 channels"),
        (np.zeros((64, 64, 4), np.uint8), "4 channels"),
        (np.zeros((64, 64, 3), np.float32), "uint8"),
        (np.zeros((16, 100, 3), np.uint8), "at least 32 pixels"),
        (np.zeros((64,), np.uint8), "1 dimensions"),
        # channels first, as torch holds images: not "(3, 240, 320) (320 channels)"
        (np.zeros((3, 240, 320), np.uint8), r"shape \(3, 240, 320\), which looks channels-first \(C, H, W\).*"
                                            r": image\.transpose\(1, 2, 0\)\.$"),
        (np.zeros((1, 64, 64), np.uint8), r"channels-first.*image\.transpose\(1, 2, 0\)"),
        (np.zeros((4, 64, 64), np.uint8), r"channels-first.*image\[:3\]\.transpose\(1, 2, 0\)"),
    ],
)
def test_bad_images_are_refused_with_a_sentence(extractor, image, message):
    with pytest.raises(AlikedError, match=message):
        extractor.extract(image)


def test_cuda_without_a_gpu_is_a_sentence_without_command_line_flags(monkeypatch):
    """The API's message names the value to pass, not a flag of the tools (was "use --device cpu")."""
    import torch

    from aliked_ros.devices import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:1"):
        with pytest.raises(AlikedError) as raised:
            create_extractor("torch", model="aliked-t16", device=device)
        message = str(raised.value)
        assert 'PyTorch sees no CUDA device here; run on the CPU (device "cpu").' in message
        assert "--" not in message and repr(device) in message
    assert resolve_device("auto").type == "cpu"


def test_bad_options_are_refused():
    with pytest.raises(AlikedError, match="Unknown model"):
        create_extractor("torch", model="aliked-x", device="cpu")
    with pytest.raises(AlikedError, match="top_k"):
        create_extractor("torch", model="aliked-t16", top_k=0, device="cpu")
    with pytest.raises(AlikedError, match="Unknown engine"):
        create_extractor("openvino")
    # A K above the pixel count of an image is clamped to it: every maximum there is, no error.
    extractor = create_extractor("torch", model="aliked-t16", top_k=5000, device="cpu")
    features = extractor.extract(np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8))
    assert 0 < len(features) < 40 * 40


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (PyTorch sees no GPU here)")
@pytest.mark.parametrize("fp16", [False, True])
def test_cuda_graph_path_equals_eager(rgb_frame, gray_frame, fp16):
    """The captured graph gives what eager mode gives, frame after frame (a stale replay would repeat a frame)."""
    options = dict(model="aliked-n16rot", top_k=1000, device="cuda", precision="fp16" if fp16 else "fp32",
                   compile=False)
    eager = create_extractor("torch", cuda_graph=False, **options)
    graph = create_extractor("torch", cuda_graph=True, **options)
    assert graph.cuda_graph
    flipped = np.ascontiguousarray(rgb_frame[:, ::-1])
    for image in (rgb_frame, flipped, gray_frame, rgb_frame):
        expected, result = eager.extract(image), graph.extract(image)
        # Rounding differs a little (the graph uses the tensor deformable convolution), which can swap near-tied
        # keypoints at the end of the ranking: compare by mutual nearest keypoints, not row by row.
        matches = match_features(expected, result, max_distance=0.01)  # mutual nearest keypoints
        assert matches.matched / len(expected) >= 0.99
        cosine = matches.cosines
        assert np.quantile(cosine, 0.01) > 0.999


def test_compile_cache_lives_in_our_cache_unless_the_user_chose_a_place(monkeypatch, tmp_path):
    from aliked_ros.engines.compile_cache import COMPILE_CACHE_ENV, package_sources_digest, use_persistent_compile_cache

    ours = tmp_path / "cache" / "torch_compile" / f"sources-{package_sources_digest()}"
    monkeypatch.setenv("ALIKED_ROS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(COMPILE_CACHE_ENV, raising=False)
    assert use_persistent_compile_cache() == str(ours)
    # Inductor reads the variable itself when it compiles: the place must be in the environment, not only returned.
    from torch._inductor.runtime.cache_dir_utils import cache_dir as inductor_cache_dir

    assert inductor_cache_dir() == str(ours)
    monkeypatch.setenv(COMPILE_CACHE_ENV, str(tmp_path / "mine"))
    assert use_persistent_compile_cache() == str(tmp_path / "mine")
    monkeypatch.setenv(COMPILE_CACHE_ENV, "")  # set but empty: as unset
    assert use_persistent_compile_cache() == str(ours)
    # A cache that cannot be made (a file where the directory should be): torch's default stays, with a warning.
    (tmp_path / "blocked").write_text("")
    monkeypatch.setenv("ALIKED_ROS_CACHE_DIR", str(tmp_path / "blocked"))
    monkeypatch.delenv(COMPILE_CACHE_ENV)
    assert use_persistent_compile_cache() == "" and COMPILE_CACHE_ENV not in os.environ


def test_compile_cache_has_a_directory_per_version_of_the_sources(tmp_path):
    """torch's cache keys a graph by its kernels' source only, so a change anywhere in the package's Python (a launch's
    block size, say) must lead to another directory, and the same sources to the same one."""
    from aliked_ros.engines.compile_cache import package_sources_digest

    package = tmp_path / "aliked_ros"
    shutil.copytree(Path(__file__).resolve().parents[1] / "aliked_ros", package,
                    ignore=shutil.ignore_patterns("__pycache__"))
    before = package_sources_digest(package)
    assert before == package_sources_digest(package) and len(before) == 16
    launches = package / "model" / "dense_kernels.py"
    launches.write_text(launches.read_text().replace("CONV_PIXELS_PER_PROGRAM = 256", "CONV_PIXELS_PER_PROGRAM = 128"))
    changed = package_sources_digest(package)
    assert changed != before
    (package / "model" / "notes.txt").write_text("not Python")  # only the sources count
    assert package_sources_digest(package) == changed


def test_compile_caches_of_other_sources_go_after_two_weeks_unused(monkeypatch, tmp_path):
    from aliked_ros.engines.compile_cache import (COMPILE_CACHE_ENV, UNUSED_COMPILE_CACHE_DAYS,
                                                  use_persistent_compile_cache)

    parent = tmp_path / "torch_compile"
    stale, recent = parent / "sources-0123456789abcdef", parent / "sources-fedcba9876543210"
    unknown = parent / "something-else"  # not ours by its name: never deleted
    for directory in (stale, recent, unknown):
        (directory / "fxgraph").mkdir(parents=True)
        (directory / "last_used").touch()
    old = time.time() - (UNUSED_COMPILE_CACHE_DAYS + 1) * 86400
    for path in (stale / "last_used", unknown / "last_used", unknown):
        os.utime(path, (old, old))
    os.utime(recent / "last_used", (time.time() - (UNUSED_COMPILE_CACHE_DAYS - 1) * 86400,) * 2)
    monkeypatch.setenv("ALIKED_ROS_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(COMPILE_CACHE_ENV, raising=False)
    place = Path(use_persistent_compile_cache())
    assert place.parent == parent and place.is_dir() and (place / "last_used").is_file()
    assert not stale.exists() and recent.is_dir() and unknown.is_dir()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (PyTorch sees no GPU here)")
@pytest.mark.parametrize("feature_reads, deform_reads, dense_layers", [
    ("torch", "torch", "torch"), ("triton", "torch", "torch"), ("auto", "auto", "torch"), ("auto", "auto", "auto")])
def test_compiled_fast_path_keeps_the_precision_bounds(rgb_frame, gray_frame, feature_reads, deform_reads,
                                                       dense_layers):
    """torch.compile + CUDA graph + float16 against float32 eager: the issue's bounds, ≥ 99 % of keypoints mutually
    matched within 1 px and median descriptor cosine ≥ 0.999; with the feature-read, deformable-read and
    full-resolution kernels too. And the same frame again gives the same features, bit for bit (a VO run replayed
    from a bag must see the same keypoints: nothing in the frame, top-k's ties included, may depend on the GPU's
    order of work)."""
    if "triton" in (feature_reads, deform_reads) or "auto" in (feature_reads, deform_reads, dense_layers):
        pytest.importorskip("triton")
    options = dict(model="aliked-t16", top_k=1000, device="cuda")
    reference = create_extractor("torch", precision="fp32", cuda_graph=False, **options)
    fast = create_extractor("torch", precision="fp16", cuda_graph=True, compile=True, feature_reads=feature_reads,
                            deform_reads=deform_reads, dense_layers=dense_layers, **options)
    results = []
    for image in (rgb_frame, gray_frame, rgb_frame):
        expected, result = reference.extract(image), fast.extract(image)
        matches = match_features(expected, result, max_distance=1.0)
        assert matches.matched / len(expected) >= 0.99
        assert np.median(matches.cosines) >= 0.999
        results.append(result)
    first, again = results[0], results[2]
    for name in ("keypoints", "scores", "descriptors"):
        assert np.array_equal(getattr(first, name), getattr(again, name)), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (PyTorch sees no GPU here)")
def test_background_compilation_serves_at_once_then_changes_to_the_compiled_graph(rgb_frame):
    """background_compile: the first frames come from the eager CUDA graph while the worker compiles (a grey frame
    of the same size meanwhile through the RGB graph, made RGB on the host); after it, compiled graphs serve both
    layouts, and every result keeps the fast path's precision bounds against float32 eager."""
    pytest.importorskip("triton")
    import cv2

    gray_frame = cv2.cvtColor(rgb_frame, cv2.COLOR_RGB2GRAY)  # one size: one compilation serves both layouts
    options = dict(model="aliked-t16", top_k=1000, device="cuda")
    reference = create_extractor("torch", precision="fp32", cuda_graph=False, **options)
    fast = create_extractor("torch", precision="fp16", cuda_graph=True, compile=True, background_compile=True,
                            **options)
    assert fast.background_compile and "in the background" in fast.describe()
    start = time.perf_counter()
    results = [("rgb", fast.extract(rgb_frame))]
    assert time.perf_counter() - start < 20  # the eager graph: no compilation waited for (which takes 30-40 s)
    (key, stand_in), = fast._graphs.items()
    assert not stand_in.final and fast.compiling  # a compilation takes seconds even from the cache
    results.append(("grey", fast.extract(gray_frame)))  # most likely while the worker compiles
    assert fast.wait_for_compilation(timeout=600) and not fast.compiling
    results.append(("grey", fast.extract(gray_frame)))  # the compiled graph for grey; the RGB stand-in goes
    assert list(fast._graphs) == [(*key[:2], "grey")]
    results.append(("rgb", fast.extract(rgb_frame)))
    assert fast._graphs[key] is not stand_in and len(fast._graphs) == 2
    assert all(graph.final for graph in fast._graphs.values())
    assert (fast.feature_reads, fast.deform_reads, fast.dense_layers) == ("triton", "triton", "triton")
    expected = {"rgb": reference.extract(rgb_frame), "grey": reference.extract(gray_frame)}
    for layout, result in results:
        matches = match_features(expected[layout], result, max_distance=1.0)
        assert matches.matched / len(expected[layout]) >= 0.99, layout
        assert np.median(matches.cosines) >= 0.999, layout
    fast.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (PyTorch sees no GPU here)")
def test_a_child_process_compiles_first_and_the_worker_reads_its_cache(tmp_path):
    """compile_in_subprocess, in a fresh process with an empty cache: the child compiles, the worker's compilation of
    the same forward then finds every FX graph in the cache (no miss), and the compiled graph serves."""
    pytest.importorskip("triton")
    code = """
import json, logging, numpy as np
logging.basicConfig(level=logging.INFO)
from aliked_ros.engines import create_extractor
from torch._dynamo.utils import counters
fast = create_extractor("torch", model="aliked-t16", top_k=1000, device="cuda", precision="fp16", cuda_graph=True,
                        compile=True, background_compile=True, compile_in_subprocess=True)
frame = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
fast.extract(frame)
assert fast.wait_for_compilation(timeout=900)
features = fast.extract(frame)
print(json.dumps({"final": all(graph.final for graph in fast._graphs.values()), "keypoints": len(features),
                  "hit": counters["inductor"]["fxgraph_cache_hit"], "miss": counters["inductor"]["fxgraph_cache_miss"],
                  "describe": fast.describe()}))
"""
    environment = {key: value for key, value in os.environ.items() if key != "TORCHINDUCTOR_CACHE_DIR"}
    environment["ALIKED_ROS_CACHE_DIR"] = str(tmp_path)
    result = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True,
                            timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["final"] and report["keypoints"] > 0 and "first in a child process" in report["describe"]
    assert report["hit"] >= 1 and report["miss"] == 0, report
    assert "A child process compiled 320x240" in result.stderr


def test_compile_modes_with_cuda_graphs_of_their_own_are_refused():
    from aliked_ros.errors import AlikedError

    assert (ExtractorConfig().compile_mode, ExtractorConfig().background_compile) == ("default", False)
    assert ExtractorConfig(compile_mode="max-autotune-no-cudagraphs").compile_mode == "max-autotune-no-cudagraphs"
    for mode in ("reduce-overhead", "max-autotune"):  # they would capture inside the engine's graph
        with pytest.raises(AlikedError, match="compile_mode"):
            ExtractorConfig(compile_mode=mode)
        with pytest.raises(AlikedError, match="compile_mode"):
            create_extractor("torch", model="aliked-t16", device="cpu", compile_mode=mode)


def test_the_feature_read_kernel_is_asked_for_and_refused_where_it_cannot_run():
    from aliked_ros.errors import AlikedError

    assert ExtractorConfig().feature_reads == "auto"
    with pytest.raises(AlikedError, match="feature_reads"):
        ExtractorConfig(feature_reads="cuda")
    for reads in ("feature_reads", "deform_reads", "dense_layers"):
        with pytest.raises(AlikedError, match=f"^{reads}='triton' runs a Triton kernel on CUDA: it needs a CUDA device"):
            create_extractor("torch", model="aliked-t16", device="cpu", **{reads: "triton"})
    with pytest.raises(AlikedError, match="deform_reads"):
        ExtractorConfig(deform_reads="cuda")
    with pytest.raises(AlikedError, match="dense_layers"):
        ExtractorConfig(dense_layers="cudnn")
    # "auto" reads with gathers wherever the engine is not the compiled CUDA fast path: here, the CPU.
    for compiled in (False, True):
        extractor = create_extractor("torch", model="aliked-t16", device="cpu", compile=compiled)
        assert extractor.feature_reads == extractor.aliked.network.feature_reads == "torch"
        assert extractor.deform_reads == "torch"
        assert extractor.dense_layers == extractor.aliked.network.dense_layers == "torch"
        assert "triton" not in {module.implementation for module in extractor.aliked.modules()
                                if hasattr(module, "implementation")}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (PyTorch sees no GPU here)")
def test_the_compiled_engine_keeps_torch_compile_cache_in_ours(tmp_path):
    """The feature-read kernel brings torch's compiler stack, whose cache_dir() writes its /tmp default into
    TORCHINDUCTOR_CACHE_DIR when first asked: the engine must choose its place before that, or a robot's restart
    compiles again after a reboot. In a fresh process, where nothing has imported the compiler yet."""
    pytest.importorskip("triton")
    code = ("import os; from aliked_ros.engines import create_extractor; "
            "create_extractor('torch', model='aliked-t16', device='cuda', precision='fp16', cuda_graph=True, "
            "compile=True); print(os.environ['TORCHINDUCTOR_CACHE_DIR'])")
    environment = {key: value for key, value in os.environ.items() if key != "TORCHINDUCTOR_CACHE_DIR"}
    environment["ALIKED_ROS_CACHE_DIR"] = str(tmp_path)
    result = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert Path(result.stdout.strip().splitlines()[-1]).parent == tmp_path / "torch_compile"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (PyTorch sees no GPU here)")
def test_auto_reads_with_the_kernel_on_the_compiled_fast_path_only():
    pytest.importorskip("triton")
    options = dict(model="aliked-t16", top_k=1000, device="cuda", precision="fp16")
    fast = create_extractor("torch", cuda_graph=True, compile=True, **options)
    assert (fast.feature_reads, fast.deform_reads, fast.dense_layers) == ("triton", "triton", "triton")
    assert fast.aliked.network.dense_layers == "triton" and "full-resolution kernels" in fast.describe()
    assert {module.implementation for module in fast.aliked.modules() if hasattr(module, "implementation")} == {
        "triton"}
    for cuda_graph in (True, False):
        extractor = create_extractor("torch", cuda_graph=cuda_graph, compile=False, **options)
        assert (extractor.feature_reads, extractor.deform_reads, extractor.dense_layers) == ("torch", "torch", "torch")


def test_the_network_gives_the_same_features_with_channels_last_levels():
    """feature_reads="triton" makes the level projections channels-last (the kernel's layout); off CUDA the torch
    formulation reads them, and the features must not change."""
    from aliked_ros.model.aliked import load_aliked

    aliked = load_aliked("aliked-t16", 200)
    image = torch.rand(1, 3, 70, 100, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = aliked(image)
        aliked.network.feature_reads = "triton"
        score_map, pyramid = aliked.network.score_map_and_features(image)
        result = aliked(image)
    assert pyramid.levels[0].is_contiguous(memory_format=torch.channels_last) and not pyramid.use_kernel
    for got, want in zip(result, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_frames_are_read_where_they_lie_read_only_ones_too_without_a_warning():
    import warnings

    from aliked_ros.engines.cuda_graph import shared_tensor

    frame = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    message_buffer = np.frombuffer(frame.tobytes(), dtype=np.uint8).reshape(frame.shape)  # read-only, as rclpy's
    assert not message_buffer.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "not writable" warning would fail here
        for pixels in (frame, message_buffer):
            tensor = shared_tensor(pixels)
            assert tensor.data_ptr() == pixels.ctypes.data  # no copy: the copy into pinned memory is the only one
            assert np.array_equal(tensor.numpy(), frame)


def test_a_replays_features_are_the_rows_above_the_threshold_copied_out_of_the_pinned_buffers():
    from aliked_ros.engines.cuda_graph import THREADED_COPY_FROM_BYTES, features_above

    # The buffers as a replay leaves them: rows sorted by score, the slots without a maximum scoring 0.
    scores = np.array([0.9, 0.5, 0.2, 0.0, 0.0], dtype=np.float32)
    keypoints = np.arange(10, dtype=np.float32).reshape(5, 2)
    # Above THREADED_COPY_FROM_BYTES: copied by torch's threads; the others by numpy.
    descriptors = np.arange(5 * 80000, dtype=np.float32).reshape(5, 80000) / 512
    host_views = (keypoints, scores, descriptors)
    assert descriptors[:2].nbytes >= THREADED_COPY_FROM_BYTES > scores.nbytes  # both ways of copying
    expected_scores = scores[:2].copy()
    features = features_above(host_views, 0.3, 480, 640)
    assert len(features) == 2 and (features.image_height, features.image_width) == (480, 640)
    assert np.array_equal(features.descriptors, descriptors[:2]) and np.array_equal(features.keypoints, keypoints[:2])
    assert all(a.dtype == np.float32 for a in (features.keypoints, features.scores, features.descriptors))
    for view in host_views:  # the next replay overwrites the buffers: the features keep their values
        view[...] = -1
    assert np.array_equal(features.scores, expected_scores) and features.descriptors[1, 0] == 80000 / 512
    assert len(features_above(host_views, 0.0, 480, 640)) == 0
