"""The engine cache names files by what made them, so an upgrade or other weights never reuse a stale graph."""

import hashlib

import pytest

from aliked_ros.engines import cache


def test_source_revision_follows_the_bytes(tmp_path):
    files = []
    for name in ("a.py", "b.py"):
        (tmp_path / name).write_text(f"# {name}\nvalue = 1\n")
        files.append(tmp_path / name)
    first = cache.source_revision(files)
    assert first == cache.source_revision(files) and len(first) == 8
    files[1].write_text("# b.py\nvalue = 2\n")
    assert cache.source_revision(files) != first


def test_the_graph_revision_covers_the_network_and_the_exporter():
    names = {path.name for path in cache.GRAPH_SOURCES}
    assert {"network.py", "detection.py", "feature_lookup.py", "deform_conv.py", "onnx_export.py"} <= names
    assert all(path.is_file() for path in cache.GRAPH_SOURCES)
    assert cache.graph_revision() == cache.source_revision(cache.GRAPH_SOURCES)


def test_stem_names_model_size_k_precision_revision_and_other_weights(tmp_path):
    stem = cache.onnx_stem("aliked-t16", 480, 640, 1000, "fp16")
    assert stem == f"aliked-t16_640x480_k1000_fp16_g{cache.graph_revision()}"
    weights = tmp_path / "fine-tuned.pth"
    weights.write_bytes(b"not really a state dict")
    tagged = cache.onnx_stem("aliked-t16", 480, 640, 1000, "fp16", weights)
    assert tagged == stem + "_w" + hashlib.md5(weights.read_bytes()).hexdigest()[:8]


def test_cached_onnx_reuses_its_own_file_and_not_an_old_one(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from aliked_ros.export import onnx_export

    exported = []

    def fake_export(path, *args, **kwargs):  # stands in for the minute-long export: only the file name matters here
        exported.append(path.name)
        path.write_bytes(b"graph")

    monkeypatch.setattr(onnx_export, "export_onnx", fake_export)
    old_name = tmp_path / "aliked-t16_640x480_k1000_fp32.onnx"  # the name before graph revisions
    old_name.write_bytes(b"stale graph")
    logs = []
    path = cache.cached_onnx("aliked-t16", 480, 640, 1000, "fp32", directory=tmp_path, log=logs.append)
    assert path != old_name and exported == [path.name]
    again = cache.cached_onnx("aliked-t16", 480, 640, 1000, "fp32", directory=tmp_path, log=logs.append)
    assert again == path and exported == [path.name]
    assert "Using the cached ONNX file" in logs[-1]


def test_timing_caches_are_kept_per_tensorrt_version_compute_capability_and_gpu(tmp_path):
    """TensorRT refuses a timing cache from another device and may refuse one from another version: one file each."""
    orin = cache.timing_cache_path(tmp_path, "10.3.0", "8.7", "Orin")
    assert orin == tmp_path / "timing_trt10.3.0_sm8.7_Orin.cache"
    others = {cache.timing_cache_path(tmp_path, "10.7.0", "8.7", "Orin"),
              cache.timing_cache_path(tmp_path, "10.3.0", "9.0", "Orin"),
              cache.timing_cache_path(tmp_path, "10.3.0", "8.7", "NVIDIA H100 80GB HBM3")}
    assert orin not in others and len(others) == 3 and tmp_path / "timing.cache" not in others | {orin}
    assert cache.tensorrt_tag("10.3.0", "9.0", "NVIDIA H100 80GB HBM3") == "trt10.3.0_sm9.0_NVIDIA-H100-80GB-HBM3"
