"""Homography on synthetic warps: the downstream check behind `aliked-ros compare --homography`."""

import numpy as np
import pytest

from aliked_ros.cli import main
from aliked_ros.features import Features
from aliked_ros.homography import corner_error, estimate_corner_error, synthetic_homographies, warp


def test_synthetic_homographies_are_seeded_and_moderate():
    first, second = synthetic_homographies(640, 480, 3), synthetic_homographies(640, 480, 3)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    for homography in first:
        assert corner_error(homography, np.eye(3), 640, 480) < 150  # ±15°, 0.8–1.2 scale: a visible, sane warp
        assert corner_error(homography, homography, 640, 480) == 0


def test_corner_error_measures_pixels():
    shifted = np.array([[1, 0, 3.0], [0, 1, 4.0], [0, 0, 1]])
    assert corner_error(shifted, np.eye(3), 100, 80) == pytest.approx(5.0)


def test_exact_correspondences_recover_the_homography():
    rng = np.random.default_rng(0)
    truth = synthetic_homographies(320, 240, 1, seed=4)[0]
    points = rng.uniform(20, 220, size=(200, 2)).astype(np.float32)
    mapped = np.c_[points, np.ones(len(points))] @ truth.T
    mapped = (mapped[:, :2] / mapped[:, 2:]).astype(np.float32)
    descriptors = rng.normal(size=(200, 64)).astype(np.float32)
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    scores = np.linspace(0.9, 0.1, 200).astype(np.float32)
    first = Features(points, scores, descriptors, 240, 320)
    order = np.arange(200)[::-1]  # the second set lists the same points in reverse: matching must find them
    second = Features(mapped[order], scores, descriptors[order], 240, 320)
    assert estimate_corner_error(first, second, truth) < 0.01
    unrelated = Features(mapped, scores, rng.normal(size=(200, 64)).astype(np.float32), 240, 320)
    error = estimate_corner_error(first, unrelated, truth)
    assert error is None or error > 5  # wrong matches give no homography or a wrong one


def test_compare_reports_homography_errors(tmp_path, rgb_frame, capsys):
    import cv2

    crop = np.ascontiguousarray(rgb_frame[100:292, 150:406])
    path = tmp_path / "crop.png"
    cv2.imwrite(str(path), crop[:, :, ::-1])
    assert warp(crop, np.eye(3)).shape == crop.shape
    code = main(["compare", str(path), "--a", "torch:precision=fp32", "--b", "torch:precision=fp32", "--model",
                 "aliked-t16", "--top-k", "300", "--device", "cpu", "--homography", "2"])
    assert code == 0
    report = capsys.readouterr().out
    table = report[report.index("### Homography on 2 synthetic warps"):]
    row = next(line for line in table.splitlines() if line.startswith("| crop.png"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == cells[4] and float(cells[1]) < 2.0  # the same extractor twice: the same errors, and small
    assert main(["compare", str(path), "--homography", "-1", "--device", "cpu"]) == 2
