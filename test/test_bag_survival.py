"""Bags that survive: SIGTERM and SIGHUP (real signals to real processes), full disks (a real small tmpfs), bad frames
and failures before the first message. After each, rosbags reads the bag, its message count is the one the tool
printed, and metadata.yaml says it is partial."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from ruamel.yaml import YAML

from aliked_ros import bag_writer, bags
from aliked_ros.cli import main
from aliked_ros.errors import AlikedError

NETWORK = ("--model", "aliked-t16", "--device", "cpu", "--precision", "fp32", "--top-k", "200")
IMAGE_TOPIC = "/camera/image_raw"  # images-to-bag's topic for a plain folder


def textured(height: int, width: int, seed: int, colour: bool = True) -> np.ndarray:
    """Smooth random pixels: something for ALIKED to detect, and PNGs that stay small."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(height // 8, 2), max(width // 8, 2), 3 if colour else 1), dtype=np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    return image if colour else image.reshape(height, width)


def write_frames(folder: Path, shapes: list[tuple[int, int, bool]]) -> Path:
    """One PNG per (height, width, colour), named in order."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, (height, width, colour) in enumerate(shapes):
        assert cv2.imwrite(str(folder / f"frame_{index:04d}.png"), textured(height, width, index, colour))
    return folder


def bag_counts(bag: Path) -> dict[str, int]:
    """{topic: messages} as rosbags reads them, every message deserialised (the bag's own definitions only)."""
    counts: dict[str, int] = {}
    with AnyReader([bag]) as reader:
        for connection, _, raw in reader.messages():
            reader.deserialize(raw, connection.msgtype)
            counts[connection.topic] = counts.get(connection.topic, 0) + 1
    return counts


def partial_reason(bag: Path) -> str | None:
    info = YAML(typ="safe").load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    return (info.get("custom_data") or {}).get(bag_writer.PARTIAL_KEY)


def printed_count(stderr: str, kind: str) -> tuple[int, str]:
    """(N, reason) of the tool's "<output> holds N <kind> messages (partial: <reason>)" line."""
    found = re.search(rf"holds (\d+) {kind} messages? \(partial: (.*)\)$", stderr, re.MULTILINE)
    assert found, stderr
    return int(found.group(1)), found.group(2)


def cli(*argv) -> list[str]:
    return [sys.executable, "-m", "aliked_ros.cli", *(str(arg) for arg in argv)]


def test_a_closed_standard_output_is_one_line_not_a_traceback(tmp_path):
    """`aliked-ros images-to-bag ... | true`: the pipe's reader is gone. Its report, block-buffered, fails when it is
    flushed at the end: exit 141 (as a tool ended by SIGPIPE) with one line on stderr, and the bag whole."""
    frames = write_frames(tmp_path / "frames", [(120, 160, True)] * 3)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(cli("images-to-bag", frames, "--output", tmp_path / "bag"), stdout=write_end,
                                stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert result.returncode == 141, result.stderr
    assert "standard output was closed" in result.stderr and "Traceback" not in result.stderr
    with AnyReader([tmp_path / "bag"]) as reader:
        assert reader.message_count == 3


# --- SIGTERM and SIGHUP ------------------------------------------------------------------------------------------


@pytest.fixture
def image_bag(tmp_path) -> Path:
    """40 images of 160x120: long enough for the network on a CPU to be stopped half-way."""
    bag = tmp_path / "images"
    frames = write_frames(tmp_path / "frames", [(120, 160, True)] * 40)
    assert main(["images-to-bag", str(frames), "--output", str(bag)]) == 0
    return bag


@pytest.mark.parametrize("signum, storage", [(signal.SIGTERM, "mcap"), (signal.SIGHUP, "sqlite3")])
def test_a_signal_closes_the_bag(image_bag, tmp_path, signum, storage):
    output = tmp_path / "keypoints"
    process = subprocess.Popen(cli("process-bag", image_bag, "--output", output, *NETWORK, "--storage", storage),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in process.stderr:  # the first progress line comes after the first frame
        lines.append(line)
        if re.match(r"process-bag: [1-9]\d*/40 frames", line):
            process.send_signal(signum)
            break
    out, rest = process.communicate(timeout=120)
    stderr = "".join(lines) + rest
    name = signal.Signals(signum).name
    assert process.returncode == 128 + signum, stderr
    count, reason = printed_count(stderr, "Keypoints")
    assert reason == f"interrupted by {name}" and f"terminated by {name}" in stderr
    assert 0 < count < 40
    assert bag_counts(output) == {"/keypoints": count}
    assert partial_reason(output) == reason
    assert not (output / bags.WRITER_RESERVE_NAME).exists()


def test_ctrl_c_while_closing_waits_for_the_close(tmp_path, monkeypatch):
    """A second Ctrl-C while the bag closes acts after the close, not inside it."""
    from rosbags.rosbag2 import Writer

    close = Writer.close

    def interrupted_close(self):
        signal.raise_signal(signal.SIGINT)  # Python's handler raises KeyboardInterrupt at once, unless held back
        close(self)

    monkeypatch.setattr(Writer, "close", interrupted_close)
    String = bags.message_class("std_msgs/msg/String")
    writer = bag_writer.BagWriter(tmp_path / "bag")
    # Python's own handler, also where a shell started the tests in the background (SIGINT ignored there).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with writer:
                writer.write("/text", 1, String(data="kept"))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert bag_counts(tmp_path / "bag") == {"/text": 1}
    assert writer.partial_reason is None  # complete: the interrupt came after the close


# --- full disks --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_filesystems(tmp_path_factory) -> None:
    """Skips unless this user may mount a tmpfs in a user namespace (`unshare -rm`)."""
    probe = tmp_path_factory.mktemp("probe")
    try:
        result = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs '{probe}'"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"unshare cannot run here ({error}): no small file system for the full-disk tests")
    if result.returncode != 0:
        pytest.skip(f"`unshare -rm` + `mount -t tmpfs` is not permitted here ({result.stderr.strip()}): no small "
                    "file system for the full-disk tests")


def run_on_a_small_disk(size: str, argv: list[str], bag_name: str, keep: Path,
                        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``argv`` with a fresh tmpfs of ``size`` at ``keep``/disk (the output goes to disk/<bag_name>); the bag is
    copied out to ``keep``/<bag_name> before the mount goes away with the namespace."""
    disk = keep / "disk"
    disk.mkdir()
    script = ('mount -t tmpfs -o size="$1" tmpfs "$2" || exit 99; shift 4; "$@"; status=$?; '
              'if [ -e "$0/$BAG" ]; then cp -r "$0/$BAG" "$KEEP/"; fi; exit $status')
    return subprocess.run(["unshare", "-rm", "sh", "-c", script, str(disk), size, str(disk), "x", "x", *argv],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "BAG": bag_name, "KEEP": str(keep), **(env or {})})


@pytest.mark.parametrize("storage", bags.STORAGES)
@pytest.mark.parametrize("guard", [True, False], ids=["free-space-check", "write-fails"])
def test_a_full_disk_closes_the_bag(small_filesystems, tmp_path, storage, guard):
    """60 frames of 320x240 RGB (13 MiB of images) onto a 6 MiB disk. With the free-space check the tool stops
    before the disk is full; without it (ALIKED_ROS_NO_SPACE_GUARD=1) a write fails with ENOSPC (mcap) or SQLITE_FULL
    (sqlite3), and the bag is cut back and closed all the same."""
    frames = write_frames(tmp_path / "frames", [(240, 320, True)] * 60)
    env = None if guard else {bag_writer.NO_SPACE_GUARD_ENV: "1"}
    result = run_on_a_small_disk("6m", cli("images-to-bag", frames, "--output", tmp_path / "disk" / "bag",
                                           "--storage", storage), "bag", tmp_path, env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    count, reason = printed_count(result.stderr, "Image")
    assert reason == "the disk holding the bag is full"
    error = result.stderr.strip().splitlines()[-1]
    assert "error: The disk holding" in error and f"closed with {count} message" in error
    assert ("is nearly full" in error) == guard, error  # which of the two ways stopped it
    assert 3 < count < 60
    bag = tmp_path / "bag"
    assert bag_counts(bag) == {IMAGE_TOPIC: count}
    assert partial_reason(bag) == reason
    assert not (bag / bags.WRITER_RESERVE_NAME).exists()


# --- failures before the first message and bad frames ------------------------------------------------------------


def corrupt_png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really" * 10)


def test_a_failure_before_the_first_message_leaves_nothing(tmp_path, capsys):
    frames = tmp_path / "frames"
    corrupt_png(frames / "frame_0000.png")
    write_frames(tmp_path / "more", [(48, 64, True)])
    shutil.copy(tmp_path / "more" / "frame_0000.png", frames / "frame_0001.png")
    output = tmp_path / "bag"
    assert main(["images-to-bag", str(frames), "--output", str(output)]) == 2
    assert not output.exists()
    assert "holds" not in capsys.readouterr().err


def test_overwrite_keeps_the_old_bag_when_the_run_fails_before_its_first_message(tmp_path):
    good = write_frames(tmp_path / "good", [(48, 64, True)] * 3)
    output = tmp_path / "bag"
    assert main(["images-to-bag", str(good), "--output", str(output)]) == 0
    bad = tmp_path / "bad"
    corrupt_png(bad / "frame_0000.png")
    assert main(["images-to-bag", str(bad), "--output", str(output), "--overwrite"]) == 2
    assert bag_counts(output) == {IMAGE_TOPIC: 3}  # the old bag, whole
    assert partial_reason(output) is None


def depth_bag(path: Path) -> Path:
    """A bag of 32FC1 images, which process-bag skips one by one: it fails before its first Keypoints message."""
    with bag_writer.BagWriter(path, "sqlite3") as writer:
        for index in range(2):
            depth = np.ones((48, 64), np.float32).view(np.uint8).reshape(48, -1)
            message = bags.image_message(depth, bags.make_header(1_000_000_000 + index, "depth"))
            message.encoding, message.width = "32FC1", 64
            writer.write("/camera/depth/image", 1_000_000_000 + index, message)
    return path


def test_process_bag_failing_before_its_first_message(tmp_path, capsys):
    frames = write_frames(tmp_path / "frames", [(48, 64, True)] * 2)
    images, output = tmp_path / "images", tmp_path / "keypoints"
    assert main(["images-to-bag", str(frames), "--output", str(images)]) == 0
    depth = depth_bag(tmp_path / "depth")
    assert main(["process-bag", str(depth), "--output", str(output), *NETWORK]) == 2
    assert not output.exists()  # no empty bag that would need --overwrite next time
    assert main(["process-bag", str(images), "--output", str(output), *NETWORK]) == 0
    assert main(["process-bag", str(depth), "--output", str(output), *NETWORK, "--overwrite"]) == 2
    assert "None of the 2 images could be processed" in capsys.readouterr().err
    assert bag_counts(output) == {"/keypoints": 2}  # the old output, whole


@pytest.mark.parametrize("shapes, says", [
    ([(48, 64, True), (48, 64, True), (48, 64, False)], "frame_0002.png is grey but the sequence's first image is "
                                                        "colour"),
    ([(48, 64, True), (48, 64, True), (24, 32, True)], "frame_0002.png is 32x24 but the sequence's first image is "
                                                       "64x48"),
], ids=["layout", "size"])
def test_a_frame_unlike_the_first_stops_with_a_partial_bag(tmp_path, capsys, shapes, says):
    frames = write_frames(tmp_path / "frames", shapes)
    output = tmp_path / "bag"
    assert main(["images-to-bag", str(frames), "--output", str(output)]) == 2
    stderr = capsys.readouterr().err
    count, reason = printed_count(stderr, "Image")
    assert count == 2 and says in reason
    error = stderr.strip().splitlines()[-1]
    assert error.startswith("aliked-ros images-to-bag: error: ") and str(frames / "frame_0002.png") in error
    assert stderr.index("holds 2 Image messages") < stderr.index("error:")  # the count comes first
    assert bag_counts(output) == {IMAGE_TOPIC: 2}
    assert partial_reason(output) == reason


# --- BagWriter ---------------------------------------------------------------------------------------------------


def test_bag_writer_creates_nothing_before_its_first_message(tmp_path):
    String = bags.message_class("std_msgs/msg/String")
    path = tmp_path / "bag"
    with pytest.raises(AlikedError):
        with bag_writer.BagWriter(path):
            assert not path.exists()
            raise AlikedError("stopped")
    assert not path.exists()

    with bag_writer.BagWriter(path, "sqlite3"):  # a clean run that wrote nothing: an empty bag
        pass
    assert bag_counts(path) == {}

    with pytest.raises(KeyboardInterrupt):  # replace: the old bag is removed only at the first message
        with bag_writer.BagWriter(path, replace=True):
            raise KeyboardInterrupt
    assert (path / "metadata.yaml").is_file() and (path / "bag.db3").is_file()

    writer = bag_writer.BagWriter(path, replace=True)
    with pytest.raises(AlikedError, match="bad frame"):
        with writer:
            writer.write("/text", 1, String(data="one"))
            writer.write("/text", 2, String(data="two"))
            raise AlikedError("bad frame")
    assert (writer.message_count, writer.counts) == (2, {"/text": 2})
    assert writer.partial_reason == "stopped by an error: bad frame"
    assert writer.describe() == f"{path} holds 2 String messages (partial: stopped by an error: bad frame)"
    assert bag_counts(path) == {"/text": 2} and partial_reason(path) == writer.partial_reason
    assert not (path / "bag.db3").exists()  # the old sqlite3 bag was replaced by the mcap one


@pytest.mark.parametrize("storage", bags.STORAGES)
def test_recovery_recognises_the_installed_rosbags(tmp_path, storage):
    """Closing after a failed write reaches into rosbags' storage writers (checked against 0.11.9); another rosbags
    turns that recovery off quietly, so this says so loudly where the full-disk tests cannot run."""
    writer = bag_writer.BagWriter(tmp_path / "bag", storage)
    with writer:
        writer.write("/text", 1, bags.message_class("std_msgs/msg/String")(data="x"))
        assert writer._storage.kind == storage and writer._storage.usable
