"""The ROS 2 package's files, checked without ROS: package.xml, Keypoints.msg, the launch file, and the processing
layer fed with messages of every supported encoding, serialised to CDR and read back."""

import ast
import py_compile
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

# Python modules the node and the layers it uses import, and the package.xml key that provides each.
MODULE_KEYS = {
    "rclpy": "rclpy", "rcl_interfaces": "rcl_interfaces", "sensor_msgs": "sensor_msgs",
    "diagnostic_msgs": "diagnostic_msgs", "diagnostic_updater": "diagnostic_updater", "std_msgs": "std_msgs",
    "nav_msgs": "nav_msgs", "geometry_msgs": "geometry_msgs",
    "launch": "launch", "launch_ros": "launch_ros", "numpy": "python3-numpy", "cv2": "python3-opencv",
    "yaml": "python3-yaml",
}
PIP_ONLY = {"rosbags", "apsw"}  # no rosdep key: `pip install rosbags rosbags-image` (apsw comes with rosbags)
OPTIONAL_ENGINES = {"torch", "torchvision", "onnxruntime", "onnx", "tensorrt", "cuda", "kornia", "skimage", "pynvml",
                    "triton"}  # triton: comes with CUDA builds of PyTorch (torch.compile)


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
    python_files = list((ROOT / "aliked_ros").rglob("*.py")) + [ROOT / "launch" / "aliked.launch.py",
                                                                 ROOT / "scripts" / "aliked_node",
                                                                 ROOT / "scripts" / "vo_node"]
    stdlib = set(__import__("sys").stdlib_module_names)
    third_party = imported_top_level(python_files) - stdlib - {"aliked_ros"}
    unknown = third_party - set(MODULE_KEYS) - PIP_ONLY - OPTIONAL_ENGINES
    assert not unknown, f"modules imported but neither declared nor listed as pip-only/optional: {unknown}"
    for module in third_party & set(MODULE_KEYS):
        assert MODULE_KEYS[module] in declared, f"{module} is imported but {MODULE_KEYS[module]} is not declared"


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

    def extract(self, image):
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
