"""`aliked-ros compare` and the comparison math behind it (aliked_ros.comparison, shared with the export's check)."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from aliked_ros.cli import main
from aliked_ros.comparison import (MatchStatistics, markdown_table, match_features, mutual_nearest_points,
                                   table_row)
from aliked_ros.errors import AlikedError
from aliked_ros.tools.compare import homography_markdown, select_frames
from aliked_ros.tools.compare_specs import parse_spec

# --- the math on synthetic features with known answers -------------------------------------------------------------


def synthetic(count: int = 100, descriptor_size: int = 64, seed: int = 0):
    """Keypoints on a 10 px grid with ±2 px jitter (so every neighbour is more than 5 px away), sorted scores,
    L2-normalised descriptors."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(count)))
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side)), axis=-1).reshape(-1, 2)[:count] * 10.0 + 20
    keypoints = grid + rng.uniform(-2, 2, size=grid.shape)
    scores = np.sort(rng.uniform(0.1, 1, size=count))[::-1]
    descriptors = rng.normal(size=(count, descriptor_size))
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    return keypoints, scores, descriptors


def test_identical_features_match_completely():
    features = synthetic()
    stats = match_features(features, features).statistics()
    assert (stats.count_a, stats.count_b, stats.matched, stats.matched_fraction) == (100, 100, 100, 1.0)
    assert stats.distance_max == 0 and stats.score_difference_max == 0
    assert stats.cosine_min == pytest.approx(1.0) and stats.cosine_median == pytest.approx(1.0)


def test_shifted_keypoints_give_the_shift_as_distance():
    keypoints, scores, descriptors = synthetic()
    shifted = (keypoints + np.array([0.3, 0.4]), scores, descriptors)  # 0.5 px
    matches = match_features((keypoints, scores, descriptors), shifted, max_distance=1.0)
    assert matches.matched == 100 and np.array_equal(matches.index_a, matches.index_b)
    assert np.allclose(matches.distances, 0.5)
    stats = matches.statistics()
    assert stats.distance_mean == pytest.approx(0.5) and stats.distance_max == pytest.approx(0.5)
    assert match_features((keypoints, scores, descriptors), shifted, max_distance=0.49).matched == 0


def test_permuted_rows_are_paired_by_position():
    keypoints, scores, descriptors = synthetic()
    permutation = np.random.default_rng(1).permutation(100)
    permuted = (keypoints[permutation], scores[permutation], descriptors[permutation])
    matches = match_features((keypoints, scores, descriptors), permuted)
    assert matches.matched == 100
    assert np.array_equal(matches.index_a, np.arange(100))
    assert np.array_equal(permutation[matches.index_b], matches.index_a)  # row j of B is row permutation[j] of A
    assert np.allclose(matches.cosines, 1.0) and np.all(matches.score_differences == 0)


def test_a_dropped_keypoint_is_unmatched():
    keypoints, scores, descriptors = synthetic()
    kept = np.delete(np.arange(100), 37)
    matches = match_features((keypoints, scores, descriptors), (keypoints[kept], scores[kept], descriptors[kept]))
    stats = matches.statistics()
    assert (stats.count_a, stats.count_b, stats.matched) == (100, 99, 99)
    assert stats.matched_fraction == pytest.approx(0.99)
    assert 37 not in matches.index_a and np.array_equal(kept[matches.index_b], matches.index_a)
    # The other way round: the extra keypoint counts against the fraction just the same.
    assert match_features((keypoints[kept], scores[kept], descriptors[kept]),
                          (keypoints, scores, descriptors)).statistics().matched_fraction == pytest.approx(0.99)


def test_flipped_descriptors_have_cosine_minus_one():
    keypoints, scores, descriptors = synthetic()
    stats = match_features((keypoints, scores, descriptors), (keypoints, scores, -descriptors)).statistics()
    assert stats.matched == 100
    assert stats.cosine_median == pytest.approx(-1) and stats.cosine_min == pytest.approx(-1)
    flipped = descriptors.copy()
    flipped[:10] *= -1  # 10 of 100
    stats = match_features((keypoints, scores, descriptors), (keypoints, scores, flipped)).statistics()
    assert stats.cosine_median == pytest.approx(1) and stats.cosine_min == pytest.approx(-1)
    assert stats.cosine_p1 == pytest.approx(-1)


def test_cosine_uses_the_norms_and_zero_descriptors_give_zero():
    keypoints, scores, descriptors = synthetic(count=4)
    scaled = descriptors * np.array([[2.0], [0.5], [1.0], [0.0]])
    cosines = match_features((keypoints, scores, descriptors), (keypoints, scores, scaled)).cosines
    assert np.allclose(cosines, [1, 1, 1, 0])


def test_score_differences_are_b_minus_a_and_summarised_as_absolute_values():
    keypoints, scores, descriptors = synthetic()
    delta = np.where(np.arange(100) % 2 == 0, 0.01, -0.03)
    matches = match_features((keypoints, scores, descriptors), (keypoints, scores + delta, descriptors))
    assert np.allclose(matches.score_differences, delta)
    stats = matches.statistics()
    assert stats.score_difference_mean == pytest.approx(0.02) and stats.score_difference_max == pytest.approx(0.03)


def test_matches_are_mutual_and_one_to_one():
    # Two keypoints of A near one of B: only the nearer pairs; B's far keypoint stays alone.
    a = np.array([[10.0, 10.0], [10.4, 10.0], [50.0, 50.0]])
    b = np.array([[10.3, 10.0], [80.0, 80.0]])
    index_a, index_b, distances = mutual_nearest_points(a, b, max_distance=1.0)
    assert index_a.tolist() == [1] and index_b.tolist() == [0] and np.allclose(distances, [0.1])


def brute_force(a, b, max_distance):
    distance = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2)
    nearest = distance.argmin(axis=1)
    mutual = distance.argmin(axis=0)[nearest] == np.arange(len(a))
    pair = distance[np.arange(len(a)), nearest]
    keep = mutual & (pair <= max_distance)
    return np.flatnonzero(keep), nearest[keep], pair[keep]


@pytest.mark.parametrize("chunk_elements", [1, 777, 1 << 20])
def test_chunked_search_equals_the_full_distance_matrix(chunk_elements):
    rng = np.random.default_rng(3)
    a = rng.uniform(0, 60, size=(600, 2))  # dense: many near ties and contested neighbours
    b = np.vstack([a[:500] + rng.normal(scale=0.4, size=(500, 2)), rng.uniform(0, 60, size=(150, 2))])
    expected = brute_force(a, b, 1.0)
    found = mutual_nearest_points(a, b, 1.0, chunk_elements=chunk_elements)
    assert len(expected[0]) > 300
    for left, right in zip(found, expected):
        assert np.array_equal(left, right) if left.dtype.kind == "i" else np.allclose(left, right)


def test_thousands_of_keypoints_in_bounded_memory():
    keypoints, scores, descriptors = synthetic(count=4000, descriptor_size=8)
    permutation = np.random.default_rng(2).permutation(4000)
    matches = match_features((keypoints, scores, descriptors),
                             (keypoints[permutation] + 0.1, scores[permutation], descriptors[permutation]),
                             chunk_elements=1 << 16)  # blocks of 16 rows
    assert matches.matched == 4000 and np.array_equal(permutation[matches.index_b], matches.index_a)


def test_empty_sets_and_different_descriptor_sizes():
    features = synthetic(count=5)
    empty = (np.zeros((0, 2)), np.zeros(0), np.zeros((0, 64)))
    stats = match_features(features, empty).statistics()
    assert (stats.count_a, stats.count_b, stats.matched, stats.matched_fraction) == (5, 0, 0, 0.0)
    assert math.isnan(stats.distance_mean) and math.isnan(stats.cosine_median)
    assert math.isnan(match_features(empty, empty).statistics().matched_fraction)
    with pytest.raises(ValueError, match="descriptor sizes"):
        match_features(features, synthetic(count=5, descriptor_size=128))


def test_pooled_statistics_cover_every_match_of_every_image():
    keypoints, scores, descriptors = synthetic()
    first = match_features((keypoints, scores, descriptors), (keypoints, scores, descriptors))
    second = match_features((keypoints, scores, descriptors), (keypoints[:50] + 0.5, scores[:50] + 0.1,
                                                               -descriptors[:50]))
    pooled = MatchStatistics.pooled([first, second])
    assert (pooled.count_a, pooled.count_b, pooled.matched) == (200, 150, 150)
    assert pooled.matched_fraction == pytest.approx(150 / 200)
    assert pooled.distance_max == pytest.approx(0.5 * np.sqrt(2))
    assert pooled.score_difference_mean == pytest.approx(0.1 * 50 / 150)
    assert pooled.cosine_median == pytest.approx(1) and pooled.cosine_min == pytest.approx(-1)


def test_markdown_table_rows_and_alignment():
    stats = match_features(synthetic(), synthetic()).statistics()
    empty = match_features(synthetic(count=3), (np.zeros((0, 2)), np.zeros(0), np.zeros((0, 64)))).statistics()
    table = markdown_table([table_row("a|b.png", "640x480", stats), table_row("c.png", "640x480", empty)])
    lines = table.splitlines()
    assert len(lines) == 4 and lines[1].startswith("| --- | --- | ---: |")
    assert "a\\|b.png" in lines[2] and "| 100 | 100 | 100 | 100.00 | 0.0000 |" in lines[2]
    assert "| 3 | 0 | 0 | 0.00 | – |" in lines[3]
    # The homography table is the same writer's: a side without any estimate keeps its columns numeric.
    lines = homography_markdown([("a|b.png", ([0.1, 0.2, None], [0.3, 0.5])), ("c.png", ([None, None], [1.0]))],
                                3).splitlines()[-5:]
    assert lines[:2] == ["| image | A mean px | A max px | A failed | B mean px | B max px | B failed |",
                         "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    assert lines[2:] == ["| a\\|b.png | 0.150 | 0.200 | 1 | 0.400 | 0.500 | 0 |",
                         "| c.png | – | – | 2 | 1.000 | 1.000 | 0 |",
                         "| **all (2)** | 0.150 | 0.200 | 3 | 0.600 | 1.000 | 0 |"]


def test_the_export_check_uses_the_same_matching():
    from aliked_ros.export.parity import MATCH_DISTANCE_PX, compare_features

    keypoints, scores, descriptors = synthetic()
    candidate = (keypoints + 0.3, scores, -descriptors)  # 0.42 px: within the export's 0.5 px
    report = compare_features((keypoints, scores, descriptors), candidate, "fp32")
    stats = match_features((keypoints, scores, descriptors), candidate, MATCH_DISTANCE_PX).statistics()
    assert report.matched == stats.matched == 100
    assert report.cosine_median == pytest.approx(-1) and not report.passed


def test_comparison_math_needs_neither_torch_nor_ros():
    code = "import sys, aliked_ros.comparison; print(sorted({'torch', 'rclpy', 'cv2'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --- extractor specs ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, engine, options", [
    ("torch", "torch", {}),
    ("torch:precision=fp16", "torch", {"precision": "fp16"}),
    ("precision=fp16,top_k=500", "torch", {"precision": "fp16", "top_k": 500}),
    ("torch:model=aliked-n16rot,top_k=1000,device=cuda,precision=fp32,cuda_graph=true",
     "torch", {"model": "aliked-n16rot", "top_k": 1000, "device": "cuda", "precision": "fp32", "cuda_graph": True}),
    ("torch:precision=fp16,cuda_graph=true,compile=true",
     "torch", {"precision": "fp16", "cuda_graph": True, "compile": True}),
    ("torch:compile=true,feature_reads=triton", "torch", {"compile": True, "feature_reads": "triton"}),
    ("torch:compile_mode=max-autotune-no-cudagraphs", "torch", {"compile_mode": "max-autotune-no-cudagraphs"}),
    ("torch:deform_reads=triton,compile=true", "torch", {"deform_reads": "triton", "compile": True}),
    ("torch:dense_layers=torch", "torch", {"dense_layers": "torch"}),
    ("onnxruntime:onnx_path=x.onnx,providers=cpu", "onnxruntime", {"onnx_path": "x.onnx", "providers": "cpu"}),
    ("onnxruntime:dir/x.onnx,device=cuda", "onnxruntime", {"onnx_path": "dir/x.onnx", "device": "cuda"}),
    ("x.onnx", "onnxruntime", {"onnx_path": "x.onnx"}),
    ("tensorrt:engine_path=x.engine", "tensorrt", {"engine_path": "x.engine"}),
    ("/data/x.plan", "tensorrt", {"engine_path": "/data/x.plan"}),
])
def test_specs(text, engine, options):
    spec = parse_spec(text)
    assert (spec.engine, spec.options) == (engine, options)


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("cuda:precision=fp16", "unknown engine 'cuda'"),
    ("fp16", "unknown engine 'fp16'"),
    ("torch:foo=1", "unknown option 'foo' for the torch engine"),
    ("torch:precision=fp8", "precision=fp8 is not valid"),
    ("torch:feature_reads=fast", "feature_reads=fast is not valid"),
    ("torch:compile_mode=reduce-overhead", "compile_mode=reduce-overhead is not valid"),
    ("torch:top_k=many", "expected an integer"),
    ("torch:cuda_graph=maybe", "expected true or false"),
    ("torch:top_k=5,top_k=6", "top_k is given twice"),
    ("torch:top_k=", "top_k has no value"),
    ("torch:top_k=5,,device=cpu", "empty option"),
    ("torch:x.onnx", "'x.onnx' is not KEY=VALUE"),
    ("onnxruntime", "needs onnx_path"),
    ("onnxruntime:precision=fp16", "unknown option 'precision' for the onnxruntime engine"),
    ("tensorrt:providers=cpu", "unknown option 'providers'"),
])
def test_bad_specs(text, message):
    with pytest.raises(AlikedError, match=message):
        parse_spec(text, "--b")


def test_default_frames_and_max_images():
    frames = select_frames([], None)
    assert len(frames) >= 2
    picked = select_frames([], 2)
    assert [frame.name for frame in picked] == [frames[0].name, frames[-1].name]
    assert picked[0].load().dtype == np.uint8
    with pytest.raises(AlikedError, match="--max-images"):
        select_frames([], 0)


# --- the command on real frames -----------------------------------------------------------------------------------

@pytest.fixture
def two_threads():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def crop(tmp_path, rgb_frame) -> Path:
    """A textured 192×128 crop of a real frame (keeps the CPU time low)."""
    path = tmp_path / "crop.png"
    cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(rgb_frame[100:228, 200:392]), cv2.COLOR_RGB2BGR))
    return path


def table_rows(text: str) -> dict[str, list[str]]:
    """Table rows by their first cell, each as its cells."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith(("| image", "| ---")):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0]] = cells
    return rows


COLUMN = {name: index for index, name in enumerate(
    ("image", "size", "A", "B", "matched", "matched %", "dist mean", "dist max", "score mean", "score max",
     "cos median", "cos p1", "cos min"))}


def test_identical_extractors_agree_completely(crop, tmp_path, capsys, two_threads):
    report = tmp_path / "same.md"
    assert main(["compare", str(crop), "--model", "aliked-t16", "--top-k", "200", "--device", "cpu",
                 "--a", "torch:precision=fp32", "--b", "torch", "--output", str(report)]) == 0
    printed = capsys.readouterr()
    assert report.read_text() == printed.out
    rows = table_rows(printed.out)
    assert set(rows) == {"crop.png", "**all (1)**"}
    row = rows["crop.png"]
    assert row[COLUMN["size"]] == "192x128"
    assert row[COLUMN["A"]] == row[COLUMN["B"]] == row[COLUMN["matched"]] == "200"
    assert row[COLUMN["matched %"]] == "100.00" and row[COLUMN["dist max"]] == "0.0000"
    assert row[COLUMN["score max"]] == "0.00e+00"
    assert row[COLUMN["cos median"]] == row[COLUMN["cos min"]] == "1.00000"
    assert rows["**all (1)**"][2:] == row[2:]
    assert "[1/1] crop.png 192x128: A 200 keypoints" in printed.err


def test_fp32_against_fp16_on_the_cpu(crop, gray_frame, tmp_path, capsys, two_threads):
    other = tmp_path / "other" / "crop.png"  # the same file name in another directory: shown with its path
    other.parent.mkdir()
    cv2.imwrite(str(other), np.ascontiguousarray(gray_frame[100:228, 300:492]))
    assert main(["compare", str(crop), str(other), "--model", "aliked-t16", "--top-k", "300", "--device", "cpu",
                 "--a", "torch:precision=fp32", "--b", "torch:precision=fp16"]) == 0
    printed = capsys.readouterr()
    assert "- A: torch engine, aliked-t16, fp32, cpu, top-k 300" in printed.out
    assert "- B: torch engine, aliked-t16, fp16, cpu, top-k 300" in printed.out
    rows = table_rows(printed.out)
    assert set(rows) == {str(crop), str(other), "**all (2)**"}
    summary = rows["**all (2)**"]
    assert summary[COLUMN["A"]] == summary[COLUMN["B"]] == "600"
    assert float(summary[COLUMN["matched %"]]) >= 95
    assert float(summary[COLUMN["dist mean"]]) < 0.1
    assert 0 < float(summary[COLUMN["score mean"]]) < 0.01  # fp16 changes the scores a little, not much
    assert float(summary[COLUMN["cos median"]]) >= 0.999 and float(summary[COLUMN["cos p1"]]) >= 0.99


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory) -> Path:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from aliked_ros.export.onnx_export import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "t16_128x192_k200.onnx"
    export_onnx(path, "aliked-t16", 128, 192, 200, allow_download=False)
    return path


def test_torch_against_onnxruntime(small_onnx, crop, gray_frame, tmp_path, capsys, two_threads):
    wide = tmp_path / "wide.png"
    cv2.imwrite(str(wide), gray_frame)
    # The torch side takes model and top_k from the ONNX file; the wrong-size frame is skipped with a note.
    assert main(["compare", str(crop), str(wide), "--device", "cpu", "--a", "torch", "--b", str(small_onnx)]) == 0
    printed = capsys.readouterr()
    assert "- A: torch engine, aliked-t16, fp32, cpu, top-k 200" in printed.out
    assert "- B: onnxruntime engine, aliked-t16, fp32, cpu, top-k 200, 192x128 only (t16_128x192_k200.onnx)" \
        in printed.out
    rows = table_rows(printed.out)
    assert set(rows) == {"crop.png", "**all (1)**"}
    row = rows["crop.png"]
    assert row[COLUMN["matched"]] == "200" and row[COLUMN["matched %"]] == "100.00"
    assert float(row[COLUMN["dist max"]]) < 0.01 and float(row[COLUMN["score max"]]) < 1e-4
    assert float(row[COLUMN["cos min"]]) >= 0.999
    height, width = gray_frame.shape[:2]
    assert f"Skipped 1 image(s) of another size (B takes 192x128 only): wide.png ({width}x{height})" in printed.out
    assert f"wide.png {width}x{height}: skipped, B takes 192x128 images only" in printed.err

    # --resize: every frame resized to the engine's size, both sides see the same pixels.
    assert main(["compare", str(wide), "--device", "cpu", "--a", f"onnxruntime:{small_onnx}", "--b",
                 "torch:precision=fp32", "--resize", "192x128"]) == 0
    row = table_rows(capsys.readouterr().out)["wide.png"]
    assert row[COLUMN["size"]] == "192x128" and float(row[COLUMN["matched %"]]) >= 99

    # Nothing of the engine's size: one error that says what to do.
    assert main(["compare", str(wide), "--device", "cpu", "--b", str(small_onnx)]) == 2
    assert "No image could be compared" in capsys.readouterr().err
    assert main(["compare", str(crop), "--b", str(small_onnx), "--resize", "640x480"]) == 2
    assert "use --resize 192x128" in capsys.readouterr().err


@pytest.mark.parametrize("arguments, message", [
    (["--a", "torch:colour=red"], "unknown option 'colour' for the torch engine"),
    (["--b", "tensorflow:x=1"], "unknown engine 'tensorflow'"),
    (["missing.png"], "does not exist"),
    (["--b", "onnxruntime:missing.onnx"], "missing.onnx does not exist"),
    (["--b", "missing.engine"], "the TensorRT engine missing.engine does not exist"),
    (["--b", "torch:weights=missing.pth"], "the weights file missing.pth does not exist"),
    (["--b", "tensorrt:."], "the TensorRT engine . is a directory"),
    (["--a", "torch:model=aliked-t16,top_k=9", "--b", "plan.engine"], "the tensorrt engine needs TensorRT's"),
    (["--weights", "missing.pth"], "--weights missing.pth is not a file"),
    (["--match-radius", "0"], "--match-radius must be a positive"),
    (["--resize", "big"], "is not WIDTHxHEIGHT"),
    (["--a", "torch:model=aliked-t16", "--b", "torch:model=aliked-n16"], "cannot be compared"),
    (["--output", "no/such/dir/report.md"], "does not exist; create it first"),
])
def test_bad_input_gives_one_clear_error(crop, tmp_path, capsys, monkeypatch, arguments, message):
    images = [str(crop)] if "missing.png" not in arguments else []
    if "cannot be compared" not in message:  # found before A loads: a B that cannot run costs no model load
        import aliked_ros.engines

        monkeypatch.setattr(aliked_ros.engines, "create_extractor", lambda *_, **__: pytest.fail("A was loaded"))
    if "plan.engine" in arguments:  # a plan that exists, on a machine without TensorRT
        if importlib.util.find_spec("tensorrt") is not None:
            pytest.skip("TensorRT is installed here")
        monkeypatch.chdir(tmp_path)
        Path("plan.engine").write_bytes(b"not a plan")
    assert main(["compare", *images, "--device", "cpu", *arguments]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and message in err
