"""The output policy of every tool (README, "Outputs and failures"), tried as a careless or hostile user would:
inputs are never written, one overwrite rule, outputs checked before any compute, atomic files with the umask's
mode, one sentence per failure, batches that go on. Issue 13's defects 1, 2, 5-10 each have a test here."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from aliked_ros import outputs
from aliked_ros.cli import build_parser, main
from aliked_ros.errors import AlikedError, InvalidTypeError, InvalidValueError, MissingPackageError
from aliked_ros.features import Features

T16 = ("--model", "aliked-t16", "--device", "cpu")
INTRINSICS = ("--intrinsics", "500,500,48,32")


def run_cli(*argv) -> int:
    return main([str(arg) for arg in argv])


def textured(height: int, width: int, seed: int, colour: bool = True) -> np.ndarray:
    """A smooth random image: something for ALIKED to detect."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(height // 8, 1), max(width // 8, 1), 3 if colour else 1), dtype=np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    return image if colour else image.reshape(height, width)


def write_picture(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), pixels)
    return path


@pytest.fixture
def frames(tmp_path) -> Path:
    """Three small colour frames in a folder."""
    folder = tmp_path / "frames"
    for index in range(3):
        write_picture(folder / f"{index:06d}.png", textured(64, 96, index))
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@contextlib.contextmanager
def umask(mask: int):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


# --- 1: inputs are sacred ----------------------------------------------------------------------------------------


def test_extract_never_writes_over_its_inputs(frames, capsys):
    before = snapshot(frames)
    # The directory of inputs as the output (defect 1: --viz replaced the PNGs with drawings).
    assert run_cli("extract", frames, "--viz", "-o", frames, *T16, "--top-k", "50") == 2
    assert "is the input" in capsys.readouterr().err
    # One input file named, its directory as the output: the picture would be the input itself.
    assert run_cli("extract", frames / "000000.png", "--viz", "-o", frames, *T16, "--top-k", "50") == 2
    assert "000000.png is the input" in capsys.readouterr().err
    # Even with --overwrite, and through a link to the input directory.
    (frames.parent / "link").symlink_to(frames)
    assert run_cli("extract", frames, "-o", frames.parent / "link", "--overwrite", *T16, "--top-k", "50") == 2
    assert snapshot(frames) == before


def test_outputs_inside_or_around_inputs_are_refused(tmp_path, frames):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    kind = outputs.OutputKind("a thing", lambda path: True)
    for path, inputs, says in ((frames / "x.txt", [frames], "lies inside the input"),
                               (weights, [weights], "is the input"),
                               (tmp_path, [frames / "000000.png"], "holds the input")):
        with pytest.raises(outputs.OutputError, match=says):
            outputs.check_output(path, outputs.OutputKind("a bag", lambda p: True, directory=True), flag="-o",
                                 overwrite=True, inputs=inputs)
    # A file beside an input file is fine; the same check with a file kind does not look for held inputs.
    assert outputs.check_output(frames / "000000.npz", kind, flag="-o", overwrite=False,
                                inputs=[frames / "000000.png"]) == frames / "000000.npz"


# --- 2 and 9: one overwrite rule -------------------------------------------------------------------------------


def test_overwrite_never_deletes_a_plain_file(frames, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("precious\n")
    assert run_cli("images-to-bag", frames, "-o", notes, "--overwrite") == 2
    assert "is a file, not a ROS 2 bag" in capsys.readouterr().err
    bag = tmp_path / "bag"
    assert run_cli("images-to-bag", frames, "-o", bag) == 0
    assert run_cli("process-bag", bag, "-o", notes, "--overwrite", *T16, "--top-k", "20") == 2
    assert "is a file, not a ROS 2 bag" in capsys.readouterr().err
    assert notes.read_text() == "precious\n"


def test_overwrite_never_deletes_a_directory_that_holds_more_than_a_bag(frames, tmp_path, capsys):
    """--overwrite replaces a bag directory only where it holds nothing but its bag: a user's recordings (mcap files
    without metadata.yaml, notes beside them) and a bag with a file added to its directory are left alone."""
    recordings = tmp_path / "recordings"
    (recordings / "calib").mkdir(parents=True)
    for name, content in (("run1.mcap", b"mcap 1"), ("run2.mcap", b"mcap 2"), ("notes.txt", b"precious\n"),
                          ("calib/cam.yaml", b"fx: 1\n")):
        (recordings / name).write_bytes(content)
    before = snapshot(recordings)
    bag = tmp_path / "bag"
    assert run_cli("images-to-bag", frames, "-o", bag) == 0
    for tool in (["images-to-bag", frames], ["process-bag", bag, *T16, "--top-k", "20"]):
        assert run_cli(*tool, "-o", recordings, "--overwrite") == 2
        assert "is not a ROS 2 bag with nothing else in its directory" in capsys.readouterr().err
        assert snapshot(recordings) == before
    only_mcap = tmp_path / "only_mcap"  # recordings without metadata.yaml (another recorder's, or cut short)
    only_mcap.mkdir()
    (only_mcap / "run.mcap").write_bytes(b"mcap")
    assert run_cli("images-to-bag", frames, "-o", only_mcap, "--overwrite") == 2
    assert (only_mcap / "run.mcap").read_bytes() == b"mcap"
    (bag / "notes.txt").write_text("mine\n")  # a real bag, with the user's file added
    assert run_cli("images-to-bag", frames, "-o", bag, "--overwrite") == 2
    assert (bag / "notes.txt").read_text() == "mine\n"
    (bag / "notes.txt").unlink()  # the bag alone again: replaced
    assert run_cli("images-to-bag", frames, "-o", bag, "--overwrite") == 0


def test_extract_overwrites_only_its_own_files(frames, tmp_path, capsys):
    output = tmp_path / "out"
    assert run_cli("extract", frames / "000001.png", "-o", output, "--viz", *T16, "--top-k", "30") == 0
    first = snapshot(output)
    assert sorted(first) == ["000001.npz", "000001.png"]
    # A second run asks for --overwrite (defect 9: extract overwrote silently) and writes nothing before that.
    assert run_cli("extract", frames / "000001.png", "-o", output, "--viz", *T16, "--top-k", "10") == 2
    assert "exists; choose another --output or add --overwrite" in capsys.readouterr().err
    assert snapshot(output) == first
    assert run_cli("extract", frames / "000001.png", "-o", output, "--viz", *T16, "--top-k", "10", "--overwrite") == 0
    assert len(Features.load_npz(output / "000001.npz")) <= 10
    # Files of the same names that aliked-ros did not write are never replaced, --overwrite or not.
    foreign_picture = cv2.imencode(".png", textured(8, 8, 0))[1]
    for name, content in (("000002.npz", b"my own numbers"), ("000002.png", foreign_picture)):
        foreign = output / name
        foreign.write_bytes(bytes(content))
        assert run_cli("extract", frames / "000002.png", "-o", output, "--viz", *T16, "--top-k", "10",
                       "--overwrite") == 2
        assert f"{name} is not a" in capsys.readouterr().err and foreign.read_bytes() == bytes(content)
        foreign.unlink()


def test_every_file_writing_tool_asks_for_overwrite(frames, tmp_path, capsys):
    """export-onnx overwrote silently (defect 9); now every tool refuses an existing output before it starts."""
    existing = tmp_path / "existing"
    existing.write_text("mine")
    runs = {
        "export-onnx": ["export-onnx", "--height", "64", "--width", "96", "--top-k", "10", "-o", existing],
        "build-engine": ["build-engine", tmp_path / "x.onnx", "-o", existing],
        "vo": ["vo", frames, "-o", existing, *INTRINSICS],
        "vo --kitti-output": ["vo", frames, "-o", tmp_path / "t.txt", "--kitti-output", existing, *INTRINSICS],
        "compare": ["compare", frames, "-o", existing],
        "bench": ["bench", "-o", existing],
        "demo": ["demo", "-o", tmp_path, "--frames", "1"],
    }
    (tmp_path / "tum.png").write_text("mine")
    (tmp_path / "astronaut.png").write_text("mine")
    for name, argv in runs.items():
        assert run_cli(*argv) == 2, name
        error = capsys.readouterr().err
        assert "exists; choose another" in error and "--overwrite" in error, (name, error)
        assert run_cli(*argv, "--overwrite") == 2, name
        error = capsys.readouterr().err
        assert "so --overwrite does not replace it" in error, (name, error)
    assert existing.read_text() == "mine"


def test_recognisers_tell_our_files_from_others(tmp_path):
    from aliked_ros.export.metadata import ONNX_OUTPUT
    from aliked_ros.vo import KITTI_OUTPUT, TUM_OUTPUT, Trajectory, write_kitti, write_tum

    trajectory = Trajectory()
    trajectory.append(1.0, np.eye(4))
    write_tum(tmp_path / "t.txt", trajectory)
    write_kitti(tmp_path / "k.txt", trajectory)
    (tmp_path / "other.txt").write_text("1 2 3\n")
    assert TUM_OUTPUT.recognise(tmp_path / "t.txt") and not TUM_OUTPUT.recognise(tmp_path / "other.txt")
    assert KITTI_OUTPUT.recognise(tmp_path / "k.txt") and not KITTI_OUTPUT.recognise(tmp_path / "other.txt")
    onnx = pytest.importorskip("onnx")
    graph = onnx.helper.make_graph([], "g", [onnx.helper.make_tensor_value_info("image", onnx.TensorProto.UINT8, [1])],
                                   [])
    model = onnx.helper.make_model(graph)
    onnx.save(model, tmp_path / "plain.onnx")
    onnx.helper.set_model_props(model, {"aliked_ros_version": "0", "descriptor_size": "64"})
    onnx.save(model, tmp_path / "ours.onnx")
    assert ONNX_OUTPUT.recognise(tmp_path / "ours.onnx") and not ONNX_OUTPUT.recognise(tmp_path / "plain.onnx")


# --- 6: unwritable outputs are found before any compute ----------------------------------------------------------


@pytest.fixture(scope="session")
def read_only_mounts() -> bool:
    """Whether this machine lets a process mount a read-only tmpfs in its own user namespace (unshare -rm)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o ro,size=64k tmpfs /mnt"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


def tool_runs(frames: Path, bag: Path, out: Path) -> dict[str, list]:
    """Each tool that writes, with its output under ``out``."""
    return {
        "extract": ["extract", frames, "-o", out / "features", *T16],
        "demo": ["demo", "-o", out / "demo", "--frames", "1", *T16],
        "export-onnx": ["export-onnx", "--height", "64", "--width", "96", "--top-k", "10", "-o", out / "x.onnx"],
        "build-engine": ["build-engine", frames / "x.onnx", "-o", out / "x.engine"],
        "images-to-bag": ["images-to-bag", frames, "-o", out / "bag"],
        "process-bag": ["process-bag", bag, "-o", out / "keypoints", *T16],
        "vo": ["vo", frames, "-o", out / "t.txt", *INTRINSICS, *T16],
        "vo --kitti-output": ["vo", frames, "-o", frames.parent / "t.txt", "--kitti-output", out / "k.txt",
                              *INTRINSICS, *T16],
        "compare": ["compare", frames, "-o", out / "r.md", "--model", "aliked-t16", "--device", "cpu"],
        "bench": ["bench", "-o", out / "r.md", "--device", "cpu"],
        "bench --json": ["bench", "--json", out / "r.json", "--device", "cpu"],
    }


@pytest.fixture
def small_bag(frames, tmp_path) -> Path:
    bag = tmp_path / "in_bag"
    assert run_cli("images-to-bag", frames, "-o", bag) == 0
    return bag


def test_a_read_only_output_is_one_sentence_before_any_work(frames, small_bag, tmp_path, read_only_mounts):
    if not read_only_mounts:
        pytest.skip("this machine does not allow unshare -rm with a tmpfs mount (needed for a read-only mount)")
    mount = tmp_path / "read_only"
    mount.mkdir()
    for name, argv in tool_runs(frames, small_bag, mount).items():
        command = (f"mount -t tmpfs -o ro,size=64k tmpfs {shlex.quote(str(mount))} && exec "
                   f"{shlex.quote(sys.executable)} -m aliked_ros.cli {shlex.join(map(str, argv))}")
        result = subprocess.run(["unshare", "-rm", "sh", "-c", command], capture_output=True, text=True, timeout=300,
                                env=dict(os.environ, ALIKED_ROS_OFFLINE="1"))
        assert result.returncode == 2, (name, result.stderr)
        lines = result.stderr.strip().splitlines()
        # One line: no engine was described, loaded or run before the refusal.
        assert len(lines) == 1 and "read-only file system" in lines[0] and "Traceback" not in result.stderr, \
            (name, result.stderr)


def test_outputs_blocked_by_files_or_directories_are_refused_before_work(frames, small_bag, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory is needed")
    for name, argv in tool_runs(frames, small_bag, blocker).items():
        assert run_cli(*argv) == 2, name
        error = capsys.readouterr().err
        assert "blocker is a file, not a directory" in error and len(error.strip().splitlines()) == 1, (name, error)
    # A directory where a file is to be written.
    in_the_way = tmp_path / "dirs"
    for name, argv in tool_runs(frames, small_bag, in_the_way).items():
        if name in ("extract", "demo", "images-to-bag", "process-bag"):
            continue  # their outputs are directories
        target = next(Path(arg) for arg in argv if str(arg).startswith(str(in_the_way)))
        target.mkdir(parents=True, exist_ok=True)
        assert run_cli(*argv) == 2, name
        error = capsys.readouterr().err
        assert "is a directory; name the file to write" in error and len(error.strip().splitlines()) == 1, \
            (name, error)


# --- atomic files ------------------------------------------------------------------------------------------------


def test_files_are_written_atomically_with_the_umask_mode(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), outputs.atomic_file(target) as file:
        file.write(b"half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]
    for mask in (0o022, 0o077, 0o002):
        with umask(mask):
            assert outputs.umask() == mask
            outputs.write_text(target, "new")
        assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask and target.read_text() == "new"


def test_tool_outputs_get_the_umask_mode(frames, tmp_path):
    """.npz and .png came out 0600 whatever the umask (defect 9)."""
    for mask in (0o022, 0o002):
        output = tmp_path / f"out{mask:o}"
        with umask(mask):
            assert run_cli("extract", frames / "000000.png", "-o", output, "--viz", *T16, "--top-k", "20") == 0
        for path in output.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path


def test_a_full_disk_leaves_no_half_file(tmp_path, read_only_mounts):
    if not read_only_mounts:
        pytest.skip("this machine does not allow unshare -rm with a tmpfs mount (needed for a small filesystem)")
    mount = tmp_path / "small"
    mount.mkdir()
    script = ("from aliked_ros import outputs\n"
              "import os, sys\n"
              "target = sys.argv[1] + '/x.bin'\n"
              "open(target, 'wb').write(b'old')\n"
              "try:\n"
              "    outputs.write_bytes(target, bytes(400_000))\n"
              "except outputs.OutputError as error:\n"
              "    print('ERROR', error)\n"
              "print(sorted(os.listdir(sys.argv[1])), open(target, 'rb').read())\n")
    command = (f"mount -t tmpfs -o size=256k tmpfs {shlex.quote(str(mount))} && exec {shlex.quote(sys.executable)} "
               f"-c {shlex.quote(script)} {shlex.quote(str(mount))}")
    result = subprocess.run(["unshare", "-rm", "sh", "-c", command], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "ERROR" in result.stdout and "its disk is full" in result.stdout
    assert result.stdout.strip().endswith("['x.bin'] b'old'")  # the old file, and no temporary file left


# --- 5: a missing optional package is one sentence ---------------------------------------------------------------


def test_a_missing_tensorrt_is_one_sentence(frames, small_bag, tmp_path, capsys):
    if sys.modules.get("tensorrt") or __import__("importlib").util.find_spec("tensorrt"):
        pytest.skip("TensorRT is installed here")
    from aliked_ros import __version__
    from aliked_ros.engines import create_extractor
    from aliked_ros.export.engine_info import EngineInfo, write_sidecar
    from aliked_ros.export.metadata import OnnxMetadata

    with pytest.raises(MissingPackageError, match=r"The tensorrt engine needs TensorRT's Python package, which is "
                                                  r"not installed here: pip install "
                                                  r"'aliked-ros\[tensorrt-cu12\]'") as info:
        create_extractor("tensorrt", engine_path=tmp_path / "x.engine")
    assert isinstance(info.value, ImportError) and isinstance(info.value, AlikedError)
    params = tmp_path / "size.yaml"
    params.write_text("/**:\n  ros__parameters:\n    image_height: 64\n    image_width: 96\n")
    assert run_cli("process-bag", small_bag, "-o", tmp_path / "out", "--engine", "tensorrt", "--params-file", params,
                   "--model", "aliked-t16") == 2
    error = capsys.readouterr().err
    assert "needs TensorRT's Python package" in error and "Traceback" not in error and not (tmp_path / "out").exists()
    engine = tmp_path / "x.engine"
    engine.write_bytes(b"plan")
    metadata = OnnxMetadata("aliked-t16", 100, 64, 96, "fp32", 64, "deformconv", __version__)
    write_sidecar(engine, EngineInfo(metadata, "0" * 64, "10.3", "Orin", "8.7", 3, None))
    assert run_cli("compare", frames, "--a", "torch:device=cpu", "--b", engine) == 2
    assert "needs TensorRT's Python package" in capsys.readouterr().err
    # process-bag and vo offer the tensorrt engine they accept.
    for tool in ("process-bag", "vo"):
        action = next(a for a in build_parser()._subparsers._group_actions[0].choices[tool]._actions
                      if "--engine" in a.option_strings)
        assert "tensorrt" in action.choices


# --- 7: one validation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, says", [
    (("--score-threshold", "2"), "--score-threshold must be between 0 and 0.999"),
    (("--score-threshold", "nan"), "--score-threshold must be a finite number"),
    (("--top-k", "-1", "--score-threshold", "2"), "--score-threshold must be between 0 and 0.999"),
    (("--top-k", "-3"), "--top-k must be positive, or -1"),
    (("--max-keypoints", "0", "--top-k", "-1"), "--max-keypoints must be at least 1"),
    (("--device", "gpu"), "Unknown --device 'gpu'"),
])
def test_extract_refuses_what_process_bag_refuses(argv, says, frames, tmp_path, capsys):
    output = tmp_path / "out"
    assert run_cli("extract", frames, "-o", output, "--model", "aliked-t16", *argv) == 2
    error = capsys.readouterr().err
    assert says in error and len(error.strip().splitlines()) == 1
    assert not output.exists()


def test_the_api_validates_like_the_command_line(rgb_frame):
    from aliked_ros import parameters
    from aliked_ros.engines import create_extractor

    for options, error_type in ((dict(score_threshold="0.5"), TypeError), (dict(top_k=2.5), TypeError),
                                (dict(top_k=0), ValueError), (dict(score_threshold=float("nan")), ValueError),
                                (dict(score_threshold=2.0), ValueError), (dict(compile="yes"), TypeError),
                                (dict(device="gpu"), ValueError), (dict(model="aliked-x"), ValueError)):
        with pytest.raises(error_type) as info:
            create_extractor("torch", **{"model": "aliked-t16", **options})
        assert isinstance(info.value, AlikedError), options
    with pytest.raises(InvalidValueError, match="Unknown engine"):
        create_extractor("torchy")
    # The node's parameters: the same rules and sentences.
    with pytest.raises(InvalidValueError, match="score_threshold must be between 0 and 0.999"):
        parameters.resolve({"score_threshold": 2.0})
    with pytest.raises(InvalidTypeError, match="top_k must be an integer"):
        parameters.resolve({"top_k": 2.5})
    with pytest.raises(InvalidValueError, match="top_k must be at least 1"):
        parameters.resolve({"top_k": -1})  # the node's engines have no threshold mode


def test_the_api_applies_score_threshold_in_top_k_mode(rgb_frame):
    """score_threshold was ignored in top-k mode (defect 7)."""
    from aliked_ros.engines import create_extractor

    every = create_extractor("torch", model="aliked-t16", top_k=300, device="cpu").extract(rgb_frame)
    threshold = float(np.median(every.scores))
    above = create_extractor("torch", model="aliked-t16", top_k=300, device="cpu",
                             score_threshold=threshold).extract(rgb_frame)
    assert 0 < len(above) < len(every) and np.all(above.scores > threshold)
    assert np.array_equal(above.keypoints, every.above(threshold).keypoints)


# --- 8: batches go on --------------------------------------------------------------------------------------------


def test_a_bad_image_does_not_stop_the_batch(frames, tmp_path, capsys):
    (frames / "000001b_broken.png").write_text("not a picture")
    write_picture(frames / "000001c_tiny.png", textured(20, 24, 5))
    write_picture(frames / "._000001.png", textured(64, 96, 9))  # macOS resource fork: not an image of the set
    output = tmp_path / "out"
    assert run_cli("extract", frames, "-o", output, *T16, "--top-k", "20") == 2
    error = capsys.readouterr().err
    assert "000001b_broken.png: skipped:" in error and "could not be read" in error
    assert "000001c_tiny.png: skipped: The image is 24x20 pixels" in error
    assert "2 of 5 images could not be processed" in error and "._000001" not in error
    assert sorted(path.name for path in output.iterdir()) == ["000000.npz", "000001.npz", "000002.npz"]
    assert "the other 3 were written" in error
    # A batch in which every image fails says so and leaves no empty output folder behind.
    assert run_cli("extract", frames / "000001b_broken.png", frames / "000001c_tiny.png", "-o", tmp_path / "none",
                   *T16) == 2
    assert "2 of 2 images could not be processed" in (error := capsys.readouterr().err)
    assert "; nothing was written." in error
    assert not (tmp_path / "none").exists()


def test_top_k_above_the_pixel_count_is_clamped(tmp_path, capsys):
    small = write_picture(tmp_path / "small.png", textured(40, 48, 3))
    big = write_picture(tmp_path / "big.png", textured(64, 96, 4))
    assert run_cli("extract", big, small, "-o", tmp_path / "out", *T16, "--top-k", "2000") == 0
    assert "top-k 2000 is more than its 1920 pixels" in capsys.readouterr().err
    assert 0 < len(Features.load_npz(tmp_path / "out" / "small.npz")) < 1920


# --- 10: images-to-bag's options ---------------------------------------------------------------------------------


def test_images_to_bag_rate_and_kitti_camera(frames, tmp_path, capsys):
    for rate in ("0", "-5", "nan"):
        assert run_cli("images-to-bag", frames, "-o", tmp_path / f"r{rate}", "--rate", rate) == 2
        assert "--rate must be" in capsys.readouterr().err and not (tmp_path / f"r{rate}").exists()
    # Stamps past a ROS 2 header's int32 seconds: one sentence and no bag, not a struct.error with a partial bag.
    for option, value in (("--rate", "1e-12"), ("--start-time", "1e12"), ("--start-time", "2147483648")):
        output = tmp_path / f"far{value}"
        assert run_cli("images-to-bag", frames, "-o", output, option, value) == 2
        assert "past what a ROS 2 stamp holds" in capsys.readouterr().err and not output.exists()
    assert run_cli("images-to-bag", frames, "-o", tmp_path / "late", "--start-time", "2147483000") == 0
    # Colour frames named as KITTI's: the colour camera's topic, not the grey one's (defect 10).
    assert run_cli("images-to-bag", frames, "-o", tmp_path / "colour", "--format", "kitti") == 0
    printed = capsys.readouterr()
    assert "/kitti/camera_color_left/image_raw" in printed.err and "colour frames" in printed.err
    from rosbags.highlevel import AnyReader

    with AnyReader([tmp_path / "colour"]) as reader:
        assert sorted(reader.topics) == ["/kitti/camera_color_left/image_raw"]
    # A folder that says it is the grey camera but holds colour frames.
    grey_camera = tmp_path / "sequence" / "image_0"
    shutil.copytree(frames, grey_camera)
    assert run_cli("images-to-bag", grey_camera.parent, "-o", tmp_path / "wrong", "--format", "kitti") == 2
    assert "is colour, but image_0/ holds KITTI's grey camera" in capsys.readouterr().err


def test_vo_refuses_one_file_for_both_trajectories(frames, tmp_path, capsys):
    same = tmp_path / "same.txt"
    assert run_cli("vo", frames, "-o", same, "--kitti-output", same, *INTRINSICS, *T16) == 2
    error = capsys.readouterr().err
    assert "is also --output: the two trajectories need two files" in error and "is the input" not in error
    assert not same.exists()
