"""images-to-bag and process-bag as a user runs them: TUM, KITTI and plain folders into ROS 2 bags (mcap, sqlite3),
read back with rosbags; Keypoints equal to `aliked-ros extract`'s; ROS 1 input; every bad input; Ctrl-C."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from aliked_ros import bag_writer, datasets
from aliked_ros.cli import main
from aliked_ros.imaging import read_image
from aliked_ros.image_messages import message_to_image
from aliked_ros.messages import features_from_message
from aliked_ros.processing import FrameProcessor
from aliked_ros.sample_data import dataset_frames

STORAGES = ("mcap", "sqlite3")
NETWORK = ("--model", "aliked-t16", "--device", "cpu", "--precision", "fp32", "--top-k", "200")
TUM_STAMPS = ("1305031102.175304", "1305031102.211214", "1305031102.243211")  # as in freiburg1_xyz's rgb.txt
KITTI_TIMES = ("0.000000e+00", "1.036106e-01", "2.072295e-01")
KITTI_P0 = (718.856, 0.0, 607.1928, 0.0, 0.0, 718.856, 185.2157, 0.0, 0.0, 0.0, 1.0, 0.0)
KITTI_P2 = (718.856, 0.0, 607.1928, 45.38225, 0.0, 718.856, 185.2157, -0.1130887, 0.0, 0.0, 1.0, 0.003779761)


def run_tool(*argv) -> int:
    """The tools as `aliked-ros` runs them (AlikedError → exit 2, Ctrl-C → 130)."""
    return main([str(arg) for arg in argv])


def read_bag(path: Path) -> dict[str, list[tuple[int, object]]]:
    """{topic: [(bag time, message)]}, with the bag's own message definitions only (no default typestore): what
    ROS 2 tools see."""
    topics: dict[str, list] = {}
    with AnyReader([path]) as reader:
        for connection, timestamp, raw in reader.messages():
            topics.setdefault(connection.topic, []).append((timestamp, reader.deserialize(raw, connection.msgtype)))
    return topics


def stamp_ns(message) -> int:
    return message.header.stamp.sec * 1_000_000_000 + message.header.stamp.nanosec


def textured(height: int, width: int, seed: int, colour: bool) -> np.ndarray:
    """A smooth random image with corners and blobs: something for ALIKED to detect."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(height // 8, width // 8, 3 if colour else 1), dtype=np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    return image if colour else image.reshape(height, width)


def write_png(path: Path, pixels: np.ndarray) -> None:
    """Any format cv2 writes, by the suffix; RGB pixels are stored as colour, grey ones as grey."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))


@pytest.fixture
def tum_sequence(tmp_path) -> Path:
    """A TUM download in miniature: rgb.txt with its comment lines, rgb/ and depth/ folders, fr1 in the name."""
    root = tmp_path / "rgbd_dataset_freiburg1_xyz"
    lines = ["# color images", "# file: 'rgbd_dataset_freiburg1_xyz.bag'", "# timestamp filename"]
    for index, stamp in enumerate(TUM_STAMPS):
        write_png(root / "rgb" / f"{stamp}.png", textured(96, 128, index, colour=True))
        write_png(root / "depth" / f"{stamp}.png", np.full((96, 128), 5000, np.uint16))
        lines.append(f"{stamp} rgb/{stamp}.png")
    (root / "rgb.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def kitti_sequence(tmp_path) -> Path:
    """A KITTI odometry sequence in miniature: image_0/ (grey), image_2/ (colour), times.txt, calib.txt."""
    root = tmp_path / "sequences" / "05"
    for index in range(len(KITTI_TIMES)):
        write_png(root / "image_0" / f"{index:06d}.png", textured(80, 160, 10 + index, colour=False))
        write_png(root / "image_2" / f"{index:06d}.png", textured(80, 160, 20 + index, colour=True))
    (root / "times.txt").write_text("\n".join(KITTI_TIMES) + "\n")
    rows = {"P0": KITTI_P0, "P1": KITTI_P0, "P2": KITTI_P2, "P3": KITTI_P2, "Tr": KITTI_P0}
    (root / "calib.txt").write_text("".join(f"{key}: {' '.join(f'{v:e}' for v in row)}\n" for key, row in rows.items()))
    return root


def assert_images_match(messages, paths: list[Path], encoding: str) -> None:
    assert len(messages) == len(paths)
    for (_, message), path in zip(messages, paths):
        assert message.encoding == encoding
        assert np.array_equal(message_to_image(message), read_image(path)), path


def assert_stamps(messages, expected_ns: list[int]) -> None:
    stamps = [stamp_ns(message) for _, message in messages]
    assert stamps == expected_ns
    assert stamps == sorted(stamps)
    assert [timestamp for timestamp, _ in messages] == stamps  # bag time = header stamp


# --- images-to-bag -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("storage", STORAGES)
def test_tum_sequence_to_bag(tum_sequence, tmp_path, storage, capsys):
    bag = tmp_path / "tum_bag"
    assert run_tool("images-to-bag", tum_sequence, "--output", bag, "--storage", storage) == 0
    assert (bag / f"tum_bag.{'mcap' if storage == 'mcap' else 'db3'}").is_file()
    topics = read_bag(bag)
    assert set(topics) == {"/camera/rgb/image_color", "/camera/rgb/camera_info"}
    images = topics["/camera/rgb/image_color"]
    assert_images_match(images, [tum_sequence / "rgb" / f"{stamp}.png" for stamp in TUM_STAMPS], "rgb8")
    assert_stamps(images, [int(stamp.replace(".", "")) * 1000 for stamp in TUM_STAMPS])  # exact, no float rounding
    assert images[0][1].header.frame_id == "openni_rgb_optical_frame"
    # freiburg1 in the path: the TUM RGB-D benchmark's published fr1 RGB calibration.
    infos = topics["/camera/rgb/camera_info"]
    assert [timestamp for timestamp, _ in infos] == [timestamp for timestamp, _ in images]
    info = infos[0][1]
    assert (info.height, info.width, info.distortion_model) == (96, 128, "plumb_bob")
    assert info.k.tolist() == [517.3, 0, 318.6, 0, 516.5, 255.3, 0, 0, 1]
    assert info.d.tolist() == [0.2624, -0.9531, -0.0054, 0.0026, 1.1633]
    assert info.p.tolist() == [517.3, 0, 318.6, 0, 0, 516.5, 255.3, 0, 0, 0, 1, 0]
    assert info.r.tolist() == np.eye(3).reshape(-1).tolist()
    assert "camera tum-fr1" in capsys.readouterr().err


@pytest.mark.parametrize("storage", STORAGES)
def test_kitti_sequence_to_bag(kitti_sequence, tmp_path, storage):
    bag = tmp_path / "kitti_bag"
    assert run_tool("images-to-bag", kitti_sequence, "--output", bag, "--storage", storage) == 0
    topics = read_bag(bag)
    images = topics["/kitti/camera_gray_left/image_raw"]
    assert_images_match(images, sorted((kitti_sequence / "image_0").glob("*.png")), "mono8")
    # times.txt holds seconds from the start; the default start time is 1 s (ROS reads 0 as "unset").
    assert_stamps(images, [1_000_000_000, 1_103_610_600, 1_207_229_500])
    assert images[0][1].header.frame_id == "camera_gray_left"
    info = topics["/kitti/camera_gray_left/camera_info"][0][1]
    assert info.p.tolist() == list(KITTI_P0)
    assert info.k.tolist() == [718.856, 0, 607.1928, 0, 718.856, 185.2157, 0, 0, 1]
    assert info.d.tolist() == [0, 0, 0, 0, 0] and (info.height, info.width) == (80, 160)


def test_kitti_colour_camera(kitti_sequence, tmp_path):
    bag = tmp_path / "colour"
    assert run_tool("images-to-bag", kitti_sequence / "image_2", "--output", bag, "--start-time", "100") == 0
    topics = read_bag(bag)
    images = topics["/kitti/camera_color_left/image_raw"]
    assert_images_match(images, sorted((kitti_sequence / "image_2").glob("*.png")), "rgb8")
    assert_stamps(images, [100_000_000_000, 100_103_610_600, 100_207_229_500])
    assert topics["/kitti/camera_color_left/camera_info"][0][1].p.tolist() == list(KITTI_P2)


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("name", ["tum", "kitti"])
def test_shared_data_to_bag(name, storage, tmp_path, capsys):
    paths = dataset_frames(name)
    if not paths:
        pytest.skip(f"../shared/data/{name} is not beside the checkout")
    bag = tmp_path / "bag"
    assert run_tool("images-to-bag", paths[0].parent, "--output", bag, "--storage", storage) == 0
    topics = read_bag(bag)
    assert len(topics) == 1  # no intrinsics known for a bare folder: no CameraInfo
    if name == "tum":
        images = topics["/camera/rgb/image_color"]
        assert_images_match(images, paths, "rgb8")
        assert_stamps(images, [datasets.seconds_to_ns(path.stem) for path in paths])
    else:
        images = topics["/kitti/camera_gray_left/image_raw"]
        assert_images_match(images, paths, "mono8")
        # No times.txt: 10 Hz from the frame numbers (000100.png is 10 s into the sequence), said in the output.
        assert_stamps(images, [1_000_000_000 + int(path.stem) * 100_000_000 for path in paths])
        assert "10 Hz" in capsys.readouterr().err


def test_shared_tum_with_a_chosen_camera(tmp_path):
    paths = dataset_frames("tum")
    if not paths:
        pytest.skip("../shared/data/tum is not beside the checkout")
    bag = tmp_path / "bag"
    assert run_tool("images-to-bag", paths[0].parent, "--output", bag, "--camera", "tum-fr2", "--max-frames", 2) == 0
    info = read_bag(bag)["/camera/rgb/camera_info"]
    assert len(info) == 2 and (info[0][1].height, info[0][1].width) == (480, 640)
    assert info[0][1].k.tolist() == [520.9, 0, 325.1, 0, 521.0, 249.7, 0, 0, 1]
    assert info[0][1].d.tolist() == [0.2312, -0.7849, -0.0033, -0.0001, 0.9172]


def test_folder_of_images(tmp_path):
    folder = tmp_path / "shots"
    for index, name in enumerate(["b.jpg", "a.png", "c.png"]):
        # A grey picture saved as JPEG: the decoded pixels decide the encoding, not the extension.
        write_png(folder / name, textured(64, 64, index, colour=False))
    bag = tmp_path / "bag"
    assert run_tool("images-to-bag", folder, "--output", bag, "--rate", "4", "--start-time", "50",
                    "--topic", "/cam/image", "--frame-id", "cam", "--camera", "none", "--storage", "sqlite3") == 0
    topics = read_bag(bag)
    assert list(topics) == ["/cam/image"]
    images = topics["/cam/image"]
    assert_images_match(images, [folder / "a.png", folder / "b.jpg", folder / "c.png"], "mono8")  # name order
    assert_stamps(images, [50_000_000_000, 50_250_000_000, 50_500_000_000])
    assert images[0][1].header.frame_id == "cam"


def test_format_detection(tum_sequence, kitti_sequence, tmp_path):
    assert datasets.detect_format(tum_sequence)[0] == "tum"
    assert datasets.detect_format(tum_sequence / "rgb")[0] == "tum"  # names are timestamps
    assert datasets.detect_format(kitti_sequence)[0] == "kitti"
    assert datasets.detect_format(kitti_sequence / "image_2")[0] == "kitti"
    assert datasets.tum_camera_from_path(tmp_path / "rgbd_dataset_freiburg3_long_office") == "tum-fr3"
    assert datasets.tum_camera_from_path(tmp_path / "fr2_desk") == "tum-fr2"
    assert datasets.tum_camera_from_path(tmp_path / "frames") is None
    # The rgb/ folder alone: TUM stamps from the names, the camera from the parent's name.
    sequence = datasets.load_sequence(tum_sequence / "rgb")
    assert sequence.format == "tum" and sequence.intrinsics.name == "tum-fr1"


def test_images_to_bag_bad_input(tum_sequence, tmp_path, capsys):
    bag = tmp_path / "bag"
    assert run_tool("images-to-bag", tmp_path / "missing", "--output", bag) == 2
    assert "does not exist" in capsys.readouterr().err
    assert run_tool("images-to-bag", tum_sequence, "--output", bag) == 0
    assert run_tool("images-to-bag", tum_sequence, "--output", bag) == 2  # exists
    assert "--overwrite" in capsys.readouterr().err
    assert run_tool("images-to-bag", tum_sequence, "--output", bag, "--overwrite", "--max-frames", 1) == 0
    assert len(read_bag(bag)["/camera/rgb/image_color"]) == 1
    assert run_tool("images-to-bag", tum_sequence, "--output", tum_sequence, "--overwrite") == 2
    assert "input" in capsys.readouterr().err and (tum_sequence / "rgb.txt").is_file()
    assert run_tool("images-to-bag", tum_sequence, "--output", tmp_path, "--overwrite") == 2  # holds the input
    assert run_tool("images-to-bag", tum_sequence, "--output", tmp_path / "x", "--rate", "5") == 2
    assert "do not apply to TUM" in capsys.readouterr().err
    (tum_sequence / "rgb.txt").write_text("1305031102.3 rgb/gone.png\n")
    assert run_tool("images-to-bag", tum_sequence, "--output", tmp_path / "y") == 2
    assert "missing image" in capsys.readouterr().err
    mixed = tmp_path / "mixed"
    write_png(mixed / "a.png", textured(64, 64, 1, colour=True))
    write_png(mixed / "b.png", textured(64, 64, 2, colour=False))
    assert run_tool("images-to-bag", mixed, "--output", tmp_path / "z") == 2
    assert "first image is colour" in capsys.readouterr().err


# --- process-bag -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference():
    """`extract`'s extractor for the NETWORK settings: what every Keypoints message must hold."""
    from aliked_ros.engines import create_extractor

    extractor = create_extractor("torch", model="aliked-t16", top_k=200, device="cpu")
    return lambda image, threshold=0.0: extractor.extract(image).above(threshold)


def assert_keypoints_equal(message, expected) -> None:
    features = features_from_message(message)
    assert (message.model, message.descriptor_size) == ("aliked-t16", 64)
    assert (features.image_height, features.image_width) == (expected.image_height, expected.image_width)
    for name in ("keypoints", "scores", "descriptors"):
        assert np.array_equal(getattr(features, name), getattr(expected, name)), name


def keypoints_of(bag: Path, topic: str = "/keypoints"):
    topics = read_bag(bag)
    assert list(topics) == [topic]
    return topics[topic]


@pytest.mark.parametrize("storage", STORAGES)
def test_process_bag_matches_the_extractor(tum_sequence, kitti_sequence, tmp_path, storage, reference, capsys):
    for name, source, folder in (("tum", tum_sequence, "rgb"), ("kitti", kitti_sequence, "image_0")):
        bag, output = tmp_path / f"{name}_in", tmp_path / f"{name}_out"
        assert run_tool("images-to-bag", source, "--output", bag, "--storage", storage) == 0
        assert run_tool("process-bag", bag, "--output", output, *NETWORK, "--score-threshold", "0.05",
                        "--storage", storage) == 0  # one image topic: no --topic needed
        images = read_bag(bag)
        image_topic = next(topic for topic in images if topic.endswith(("image_color", "image_raw")))
        results = keypoints_of(output)
        assert len(results) == len(images[image_topic])
        for (time, message), (image_time, image), path in zip(results, images[image_topic],
                                                              sorted((source / folder).glob("*.png"))):
            assert time == image_time and stamp_ns(message) == stamp_ns(image)  # stamps preserved
            assert message.header.frame_id == image.header.frame_id
            expected = reference(read_image(path), 0.05)
            assert 0 < len(expected) < 200  # the threshold did cut
            assert_keypoints_equal(message, expected)
    printed = capsys.readouterr()
    assert "latency: processing p50" in printed.out and "3 published, 0 dropped" in printed.out
    assert "process-bag: 3/3 frames" in printed.err


@pytest.mark.slow
@pytest.mark.parametrize("name, storage", [("tum", "mcap"), ("kitti", "sqlite3")])
def test_process_shared_data_like_extract(name, storage, tmp_path, capsys):
    """The dataset's own config (config/tum.yaml, config/kitti.yaml) over a bag of the real frames gives what
    `aliked-ros extract` writes for the same files and settings."""
    paths = dataset_frames(name)[:3]
    if not paths:
        pytest.skip(f"../shared/data/{name} is not beside the checkout")
    config = Path(__file__).resolve().parents[1] / "config" / f"{name}.yaml"
    bag, output, npz = tmp_path / "bag", tmp_path / "keypoints", tmp_path / "npz"
    assert run_tool("images-to-bag", paths[0].parent, "--output", bag, "--storage", storage, "--max-frames", 3) == 0
    assert run_tool("process-bag", bag, "--output", output, "--params-file", config, *NETWORK, "--warmup", 0,
                    "--storage", storage) == 0
    assert run_tool("extract", *paths, "--output", npz, "--model", "aliked-t16", "--device", "cpu",
                    "--top-k", 200) == 0
    results = keypoints_of(output)
    assert len(results) == 3
    from aliked_ros.features import Features

    for (_, message), path in zip(results, paths):
        assert_keypoints_equal(message, Features.load_npz(npz / f"{path.stem}.npz"))
    assert "latency:" in capsys.readouterr().out


def write_ros1_bag(path: Path, frames: list[np.ndarray]) -> list[int]:
    """A ROS 1 bag (rosbags' writer, ROS 1 serialisation): /cam/image (Image) and /cam/image/compressed (PNG), plus
    /cam/camera_info; returns the stamps."""
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS1_NOETIC)
    types = store.types
    Header, Time = types["std_msgs/msg/Header"], types["builtin_interfaces/msg/Time"]
    stamps = []
    with Writer(path) as writer:
        raw = writer.add_connection("/cam/image", "sensor_msgs/msg/Image", typestore=store)
        compressed = writer.add_connection("/cam/image/compressed", "sensor_msgs/msg/CompressedImage", typestore=store)
        info = writer.add_connection("/cam/camera_info", "sensor_msgs/msg/CameraInfo", typestore=store)
        for index, pixels in enumerate(frames):
            stamp = 1_600_000_000_000_000_000 + index * 50_000_000
            stamps.append(stamp)
            header = Header(seq=index, stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="cam")
            bgr = np.ascontiguousarray(pixels[:, :, ::-1])
            image = types["sensor_msgs/msg/Image"](header=header, height=pixels.shape[0], width=pixels.shape[1],
                                                   encoding="bgr8", is_bigendian=0, step=pixels.shape[1] * 3,
                                                   data=bgr.reshape(-1))
            png = cv2.imencode(".png", bgr)[1].reshape(-1)
            image_c = types["sensor_msgs/msg/CompressedImage"](header=header, format="png", data=png)
            camera = types["sensor_msgs/msg/CameraInfo"](
                header=header, height=pixels.shape[0], width=pixels.shape[1], distortion_model="plumb_bob",
                D=np.zeros(5), K=np.eye(3).reshape(-1), R=np.eye(3).reshape(-1), P=np.zeros(12), binning_x=0,
                binning_y=0, roi=types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0,
                                                                          width=0, do_rectify=False))
            time = stamp + 5_000_000  # recorded 5 ms after the stamp
            writer.write(raw, time, store.serialize_ros1(image, "sensor_msgs/msg/Image"))
            writer.write(compressed, time, store.serialize_ros1(image_c, "sensor_msgs/msg/CompressedImage"))
            writer.write(info, time, store.serialize_ros1(camera, "sensor_msgs/msg/CameraInfo"))
    return stamps


@pytest.fixture
def ros1_bag(tmp_path) -> tuple[Path, list[np.ndarray], list[int]]:
    frames = [textured(72, 96, 30 + index, colour=True) for index in range(2)]
    path = tmp_path / "recording.bag"
    return path, frames, write_ros1_bag(path, frames)


@pytest.mark.parametrize("topic", ["/cam/image", "/cam/image/compressed"])
def test_process_a_ros1_bag(ros1_bag, tmp_path, topic, reference):
    path, frames, stamps = ros1_bag
    output = tmp_path / "out"
    assert run_tool("process-bag", path, "--output", output, "--topic", topic, *NETWORK,
                    "--output-topic", "/cam/keypoints") == 0
    results = keypoints_of(output, "/cam/keypoints")
    assert [time for time, _ in results] == [stamp + 5_000_000 for stamp in stamps]  # the input's bag times
    assert [stamp_ns(message) for _, message in results] == stamps
    for (_, message), pixels in zip(results, frames):
        assert message.header.frame_id == "cam"
        assert_keypoints_equal(message, reference(pixels))


def test_process_bag_bad_input(ros1_bag, tum_sequence, tmp_path, capsys):
    path, _, _ = ros1_bag
    output = tmp_path / "out"

    def fails(*argv, says: str) -> None:
        assert run_tool("process-bag", *argv) == 2
        error = capsys.readouterr().err
        assert says in error, error
        assert error.count("error:") == 1 and "Traceback" not in error

    fails(tmp_path / "missing.bag", "--output", output, says="does not exist")
    fails(tmp_path, "--output", output, says="not a ROS 2 bag")
    fails(path, "--output", output, says="has 2 image topics: /cam/image (Image), /cam/image/compressed")
    fails(path, "--output", output, "--topic", "/nope", says="no topic /nope; its image topics: /cam/image (Image)")
    fails(path, "--output", output, "--topic", "/cam/camera_info", says="holds sensor_msgs/msg/CameraInfo")
    fails(path, "--output", output, "--topic", "/cam/image", "--model", "aliked-x", says="Unknown model 'aliked-x'")
    fails(path, "--output", path, "--topic", "/cam/image", "--overwrite", says="is the input")
    fails(path, "--output", tmp_path / "out.bag", "--topic", "/cam/image", says="name it without .bag")
    assert not output.exists()  # nothing written on any of these

    # Truncated bags of each kind: ROS 1, and ROS 2 in both storages.
    truncated = tmp_path / "truncated.bag"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    fails(truncated, "--output", output, says="corrupt or truncated")
    for storage in STORAGES:
        bag = tmp_path / f"tum_{storage}"
        assert run_tool("images-to-bag", tum_sequence, "--output", bag, "--storage", storage) == 0
        data = next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
        fails(bag, "--output", output, says="corrupt or truncated")
        fails(data, "--output", output, says="corrupt or truncated")  # the bag's file stands for the bag
        (bag / "metadata.yaml").unlink()
        fails(bag, "--output", output, says="ros2 bag reindex")

    # An existing output: refused, then replaced with --overwrite; a directory that is not a bag never is.
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    fails(path, "--output", output, "--topic", "/cam/image", says="exists; choose another --output or add --overwrite")
    fails(path, "--output", output, "--topic", "/cam/image", "--overwrite", says="not a ROS 2 bag")
    assert (output / "notes.txt").read_text() == "mine"


def test_overwrite_replaces_a_bag(ros1_bag, tmp_path):
    path, _, _ = ros1_bag
    output = tmp_path / "out"
    assert run_tool("process-bag", path, "--output", output, "--topic", "/cam/image", *NETWORK,
                    "--max-frames", 1) == 0
    assert run_tool("process-bag", path, "--output", output, "--topic", "/cam/image", *NETWORK) == 2
    assert run_tool("process-bag", path, "--output", output, "--topic", "/cam/image", *NETWORK, "--overwrite") == 0
    assert len(keypoints_of(output)) == 2


def test_ctrl_c_leaves_a_readable_bag(tum_sequence, tmp_path, monkeypatch, capsys):
    bag, output = tmp_path / "in", tmp_path / "out"
    assert run_tool("images-to-bag", tum_sequence, "--output", bag) == 0
    original = FrameProcessor.process
    calls = []

    def interrupted_after_two(self, message):
        calls.append(message)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return original(self, message)

    monkeypatch.setattr(FrameProcessor, "process", interrupted_after_two)
    assert run_tool("process-bag", bag, "--output", output, *NETWORK) == 130
    results = keypoints_of(output)  # metadata.yaml and the mcap summary were written
    assert len(results) == 2
    assert [stamp_ns(message) for _, message in results] == [int(s.replace(".", "")) * 1000 for s in TUM_STAMPS[:2]]
    assert "holds 2 Keypoints messages (partial: interrupted by Ctrl-C (SIGINT))" in capsys.readouterr().err


def test_images_that_cannot_be_processed(tmp_path, capsys):
    """A depth camera's Image topic (32FC1): every image is skipped with the reason, once, then a clear error."""
    from aliked_ros import bags

    bag = tmp_path / "depth"
    with bag_writer.BagWriter(bags.prepare_output(bag, overwrite=False), "sqlite3") as writer:
        for index in range(3):
            stamp = 1_000_000_000 + index
            depth = np.ones((48, 64), np.float32).view(np.uint8).reshape(48, -1)
            message = bags.image_message(depth, bags.make_header(stamp, "depth"))
            message.encoding, message.width = "32FC1", 64
            writer.write("/camera/depth/image", stamp, message)
    assert run_tool("process-bag", bag, "--output", tmp_path / "out", *NETWORK) == 2
    error = capsys.readouterr().err
    assert error.count("image skipped: Image encoding '32FC1' is not supported") == 1
    assert "None of the 3 images could be processed" in error
