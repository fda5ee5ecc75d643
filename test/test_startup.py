"""`aliked-ros startup` and ``aliked_ros.startup``: the node's start timed as the node starts, on a folder or a bag."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from test_bag_survival import IMAGE_TOPIC, NETWORK, write_frames

from aliked_ros import bags, parameters
from aliked_ros.cli import main
from aliked_ros.engines.compile_cache import COMPILE_CACHE_ENV
from aliked_ros.imaging import read_image
from aliked_ros.messages import KEYPOINTS_MSGTYPE
from aliked_ros.startup import StartupReport, measure_startup


def report(background: bool) -> StartupReport:
    return StartupReport("engine", made_s=0.5, warmed_up_s=1.0, first_message_s=0.0, compiled_s=None,
                         background=background)


def test_frames_are_told_apart_by_the_compilation_they_came_during():
    started = report(background=True)
    for index, compiling in enumerate((True, True, False, False, False)):
        started.record(compiling, took_ms=10.0 + index, ended_s=2.0 + index)
    assert started.first_message_s == 2.0
    assert started.frames_while_compiling_ms == [10.0, 11.0]
    assert started.compiled_s == 4.0  # the first frame after: the compiled graph's capture, not timed as a frame
    assert started.frames_after_ms == [13.0, 14.0]
    assert "compiled graph serving from 4.00 s" in "\n".join(started.lines())
    # Compiled before the first frame came (a warm cache): the first frame is the compiled graph's.
    warm = report(background=True)
    warm.record(False, 5.0, 1.5)
    assert (warm.compiled_s, warm.first_message_s, warm.frames_after_ms) == (1.5, 1.5, [])
    # Nothing compiling in the background: every frame is timed, the first included.
    plain = report(background=False)
    plain.record(False, 5.0, 1.5)
    assert (plain.compiled_s, plain.frames_after_ms) == (None, [5.0])
    assert not any("compiled graph" in line for line in plain.lines())
    summary = plain.as_dict()["frames_after_ms"]
    assert summary == {"count": 1, "median": 5.0, "p95": 5.0, "max": 5.0}


def test_a_cpu_start_serves_frames_at_the_cameras_pace(tmp_path):
    frames = write_frames(tmp_path / "frames", [(96, 128, True)] * 2)
    messages = [bags.image_message(read_image(path), bags.make_header(index, "camera"))
                for index, path in enumerate(sorted(frames.iterdir()))]
    values = parameters.resolve({"model": "aliked-t16", "device": "cpu", "precision": "fp32", "top_k": 100,
                                 "image_height": 96, "image_width": 128})
    began = time.perf_counter()
    result = measure_startup(values, messages, bags.message_class(KEYPOINTS_MSGTYPE), rate_hz=10.0, duration_s=60.0,
                             frames_after=4)
    elapsed = time.perf_counter() - began
    assert 0 < result.made_s <= result.warmed_up_s < result.first_message_s < elapsed
    assert not result.background and result.compiled_s is None and len(result.frames_after_ms) == 4
    assert elapsed >= 3 * 0.1  # four frames at 10 per second: three periods at least between the first and the last
    assert "cpu" in result.engine


class CompilesFromItsFirstFrame:
    """A CPU extractor that says it compiles in the background from its first frame to its fourth: as the CUDA torch
    engine does for an image size it was not warmed up at (the parameters give none), whose first frame queues the
    size's compilation and is served by the stand-in."""

    background_compile = True

    def __init__(self, extractor):
        self.extractor, self.frames = extractor, 0

    def __getattr__(self, name):
        return getattr(self.extractor, name)

    @property
    def compiling(self) -> bool:
        return 1 <= self.frames <= 3

    def extract(self, *args, **kwargs):
        self.frames += 1
        return self.extractor.extract(*args, **kwargs)


def test_the_frame_that_queues_the_compilation_is_a_frame_while_compiling(tmp_path, monkeypatch):
    from aliked_ros import startup

    frames = write_frames(tmp_path / "frames", [(96, 128, True)] * 2)
    messages = [bags.image_message(read_image(path), bags.make_header(index, "camera"))
                for index, path in enumerate(sorted(frames.iterdir()))]
    real = startup.extractor_from_parameters
    monkeypatch.setattr(startup, "extractor_from_parameters",
                        lambda *args, **kwargs: CompilesFromItsFirstFrame(real(*args, **kwargs)))
    values = parameters.resolve({"model": "aliked-t16", "device": "cpu", "precision": "fp32", "top_k": 100})
    result = measure_startup(values, messages, bags.message_class(KEYPOINTS_MSGTYPE), rate_hz=0.0, duration_s=60.0,
                             frames_after=2)
    assert result.background and len(result.frames_while_compiling_ms) == 4
    assert result.first_message_s < result.compiled_s and len(result.frames_after_ms) == 2


def test_the_command_on_a_folder_and_a_bag(tmp_path, capsys):
    frames = write_frames(tmp_path / "frames", [(96, 128, True)] * 3)
    arguments = ["--rate", "0", "--frames-after", "3", *NETWORK]
    assert main(["startup", str(frames), *arguments, "--json"]) == 0
    out = capsys.readouterr()
    outcome = json.loads(out.out.strip().splitlines()[-1])
    assert outcome["frames_after_ms"]["count"] == 3 and outcome["compiled_s"] is None
    assert "first Keypoints message" in out.err and "3 folder images" in out.err
    bag = tmp_path / "bag"
    assert main(["images-to-bag", str(frames), "--output", str(bag)]) == 0
    capsys.readouterr()
    assert main(["startup", str(bag), "--topic", IMAGE_TOPIC, *arguments]) == 0
    out = capsys.readouterr().out
    assert "frames: 3, median" in out and not out.lstrip().startswith("{")


@pytest.mark.parametrize("extra, message", [
    (["--rate", "-1"], "--rate must be at least 0"),
    (["--rate", "nan"], "--rate must be at least 0"),
    (["--duration", "0"], "--duration must be positive"),
    (["--frames-after", "0"], "--frames-after must be positive"),
    (["--topic", "/camera"], "--topic is for a bag"),
])
def test_wrong_options_are_one_line_each(tmp_path, capsys, extra, message):
    frames = write_frames(tmp_path / "frames", [(64, 64, False)])
    assert main(["startup", str(frames), *NETWORK, *extra]) == 2
    assert message in capsys.readouterr().err


def test_an_input_that_is_not_there_or_holds_no_image(tmp_path, capsys):
    assert main(["startup", str(tmp_path / "missing"), *NETWORK]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["startup", str(tmp_path / "empty"), *NETWORK]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (PyTorch sees no GPU here)")
def test_the_nodes_cuda_start_compiles_in_the_background(tmp_path):
    """config/aliked.yaml's background compilation: the first message long before the compiled graph's."""
    pytest.importorskip("triton")
    frames = write_frames(tmp_path / "frames", [(480, 640, True)] * 3)
    command = [sys.executable, "-m", "aliked_ros.cli", "startup", str(frames), "--model", "aliked-t16", "--device",
               "cuda", "--top-k", "1000", "--rate", "30", "--duration", "600", "--frames-after", "30", "--json"]
    # An empty compile cache: from a warm one (a second start) the compilation the first frame queues may end
    # within that frame, and the compiled graph then serves from the second.
    environment = {**os.environ, COMPILE_CACHE_ENV: str(tmp_path / "compile_cache")}
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["background"] and outcome["compiled_s"] is not None
    assert outcome["first_message_s"] < outcome["compiled_s"]
    assert outcome["frames_after_ms"]["count"] == 30
