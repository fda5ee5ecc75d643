"""`aliked-ros extract` and `aliked-ros demo` as a user runs them: outputs, exit codes, messages, nothing half-written."""

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from aliked_ros.cli import main
from aliked_ros.features import Features


@pytest.fixture
def images(tmp_path, rgb_frame, gray_frame) -> Path:
    directory = tmp_path / "images"
    directory.mkdir()
    cv2.imwrite(str(directory / "b_rgb.png"), cv2.cvtColor(rgb_frame, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(directory / "a_gray.png"), gray_frame)
    return directory


def run_cli(*args: str) -> int:
    return main([str(arg) for arg in args])


def test_extract_a_directory_writes_one_npz_per_image(images, tmp_path, capsys):
    output = tmp_path / "out"
    assert run_cli("extract", images, "--output", output, "--model", "aliked-t16", "--top-k", "300",
                   "--device", "cpu", "--viz") == 0
    assert sorted(p.name for p in output.iterdir()) == ["a_gray.npz", "a_gray.png", "b_rgb.npz", "b_rgb.png"]
    progress = capsys.readouterr().err
    assert progress.index("a_gray.png") < progress.index("b_rgb.png")  # name order
    with np.load(output / "b_rgb.npz") as data:
        assert data["keypoints"].shape == (300, 2) and data["keypoints"].dtype == np.float32
        assert data["scores"].shape == (300,) and data["scores"].dtype == np.float32
        assert data["descriptors"].shape == (300, 64) and data["descriptors"].dtype == np.float32
    picture = cv2.imread(str(output / "b_rgb.png"))
    assert picture is not None and picture.shape[:2] == cv2.imread(str(images / "b_rgb.png")).shape[:2]


def test_extract_matches_the_api_and_applies_the_threshold(images, tmp_path, rgb_frame):
    from aliked_ros.engines import create_extractor

    expected = create_extractor("torch", model="aliked-t16", top_k=400, device="cpu").extract(rgb_frame)
    threshold = float(np.round(np.median(expected.scores), 3))
    expected = expected.above(threshold)
    output = tmp_path / "out"
    assert run_cli("extract", images / "b_rgb.png", "-o", output, "--model", "aliked-t16", "--top-k", "400",
                   "--score-threshold", str(threshold), "--device", "cpu") == 0
    saved = Features.load_npz(output / "b_rgb.npz")
    assert np.all(saved.scores > threshold) and len(saved) == len(expected) < 400
    assert np.allclose(saved.keypoints, expected.keypoints) and np.allclose(saved.descriptors, expected.descriptors)


def test_threshold_mode_from_the_command_line(images, tmp_path):
    output = tmp_path / "out"
    assert run_cli("extract", images / "a_gray.png", "-o", output, "--model", "aliked-t16", "--top-k", "-1",
                   "--score-threshold", "0.25", "--max-keypoints", "150", "--device", "cpu") == 0
    saved = Features.load_npz(output / "a_gray.npz")
    assert 0 < len(saved) <= 150 and np.all(saved.scores > 0.25)


def bad_inputs(tmp_path: Path, images: Path) -> dict[str, tuple[list, str]]:
    """Arguments and the expected message of each input that stops the whole run before it starts. (Images that
    cannot be read once the run has started are skipped: see test_a_bad_image_does_not_stop_the_batch.)"""
    (tmp_path / "corrupt.pth").write_bytes(b"\x80\x02garbage")
    image = images / "a_gray.png"
    t16 = ["--model", "aliked-t16"]
    return {
        "missing image": ([tmp_path / "missing.png", *t16], "does not exist"),
        "missing among good ones": ([image, tmp_path / "missing.png", *t16], "does not exist"),
        "unknown model": ([image, "--model", "aliked-x"], "Unknown --model"),
        "corrupt weights": ([image, *t16, "--weights", tmp_path / "corrupt.pth"], "is not valid ALIKED weights"),
        "bad top-k": ([image, *t16, "--top-k", "0"], "--top-k"),
    }


@pytest.mark.parametrize("case", ["missing image", "missing among good ones", "unknown model", "corrupt weights",
                                  "bad top-k"])
def test_bad_input_fails_with_one_message_and_writes_nothing(case, images, tmp_path, capsys):
    args, message = bad_inputs(tmp_path, images)[case]
    output = tmp_path / "out"
    code = run_cli("extract", *args, "-o", output, "--device", "cpu")
    error = capsys.readouterr().err
    assert code != 0
    assert message in error and "Traceback" not in error
    assert len(error.strip().splitlines()) <= 2  # the error line, and at most the engine's description
    assert not output.exists() or not any(output.iterdir())


def test_console_script_and_demo(tmp_path):
    """The installed `aliked-ros` command runs the demo end to end."""
    env = dict(os.environ, ALIKED_ROS_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-m", "aliked_ros.cli", "demo", "--frames", "2", "--model", "aliked-t16", "--device", "cpu",
         "--output", str(tmp_path / "demo")],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "ms/frame" in result.stdout
    pictures = list((tmp_path / "demo").glob("*.png"))
    assert pictures and all(cv2.imread(str(p)) is not None for p in pictures)
