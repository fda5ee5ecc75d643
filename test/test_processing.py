"""The ROS-free processing layer: image messages to RGB, Keypoints messages, latency statistics, FrameProcessor."""

import array

import cv2
import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from aliked_ros.errors import AlikedError
from aliked_ros.features import Features
from aliked_ros.image_messages import SUPPORTED_ENCODINGS, message_to_image
from aliked_ros.latency import LatencyMonitor
from aliked_ros.messages import build_keypoints_message, features_from_message, register_keypoints_type
from aliked_ros.processing import FrameProcessor

TYPES = get_typestore(Stores.ROS2_JAZZY)
Image = TYPES.types["sensor_msgs/msg/Image"]
CompressedImage = TYPES.types["sensor_msgs/msg/CompressedImage"]
Header = TYPES.types["std_msgs/msg/Header"]
Time = TYPES.types["builtin_interfaces/msg/Time"]
Keypoints = register_keypoints_type(TYPES)
HEADER = Header(stamp=Time(sec=1311868169, nanosec=163498000), frame_id="camera_rgb_optical_frame")


def image_message(encoding: str, pixels: np.ndarray, padding: int = 0, big_endian: bool = False) -> Image:
    """An Image message of ``pixels`` with ``padding`` bytes after each row."""
    height, width = pixels.shape[:2]
    if big_endian:
        pixels = pixels.astype(pixels.dtype.newbyteorder(">"))
    rows = pixels.reshape(height, -1).view(np.uint8)
    step = rows.shape[1] + padding
    data = np.zeros((height, step), np.uint8)
    data[:, : rows.shape[1]] = rows
    return Image(header=HEADER, height=height, width=width, encoding=encoding, is_bigendian=int(big_endian),
                 step=step, data=data.reshape(-1))


@pytest.fixture(scope="module")
def rgb():
    return np.random.default_rng(1).integers(0, 256, size=(6, 8, 3), dtype=np.uint8)


@pytest.mark.parametrize("padding", [0, 5])
def test_colour_encodings_become_rgb(rgb, padding):
    alpha = np.full((6, 8, 1), 200, np.uint8)
    cases = {
        "rgb8": rgb,
        "bgr8": rgb[:, :, ::-1],
        "rgba8": np.concatenate([rgb, alpha], axis=2),
        "bgra8": np.concatenate([rgb[:, :, ::-1], alpha], axis=2),
    }
    for encoding, pixels in cases.items():
        result = message_to_image(image_message(encoding, np.ascontiguousarray(pixels), padding))
        assert result.dtype == np.uint8 and np.array_equal(result, rgb), encoding


def test_mono_encodings(rgb):
    gray = rgb[:, :, 0]
    assert np.array_equal(message_to_image(image_message("mono8", gray, padding=3)), gray)
    wide = gray.astype(np.uint16) * 256 + 3  # the high byte is the 8-bit value
    for big_endian in (False, True):
        result = message_to_image(image_message("mono16", wide, padding=2, big_endian=big_endian))
        assert np.array_equal(result, gray)


def test_yuv422_matches_opencv(rgb):
    yuv = np.random.default_rng(2).integers(0, 256, size=(6, 8, 2), dtype=np.uint8)  # UYVY, 2 bytes per pixel
    expected = cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_UYVY)
    assert np.array_equal(message_to_image(image_message("yuv422", yuv, padding=4)), expected)


@pytest.mark.parametrize("extension", [".png", ".jpg"])
def test_compressed_images(rgb, extension):
    big = cv2.resize(rgb, (64, 48), interpolation=cv2.INTER_NEAREST)
    ok, encoded = cv2.imencode(extension, big[:, :, ::-1])
    result = message_to_image(CompressedImage(header=HEADER, format=extension[1:], data=encoded.reshape(-1)))
    assert result.shape == big.shape
    assert np.abs(result.astype(int) - big).mean() < (0.01 if extension == ".png" else 20)


def test_bad_messages_fail_with_a_sentence(rgb):
    with pytest.raises(AlikedError, match="32FC1.*not supported"):
        message_to_image(image_message("32FC1", np.zeros((4, 4), np.float32)))
    short = image_message("rgb8", rgb)
    short.data = short.data[:-10]
    with pytest.raises(AlikedError, match="needs a step"):
        message_to_image(short)
    with pytest.raises(AlikedError, match="could not be decoded"):
        message_to_image(CompressedImage(header=HEADER, format="jpeg", data=np.arange(50, dtype=np.uint8)))
    assert {"mono8", "mono16", "rgb8", "bgr8", "rgba8", "bgra8", "yuv422"} <= set(SUPPORTED_ENCODINGS)


def make_features(count: int, size: int) -> Features:
    rng = np.random.default_rng(count)
    descriptors = rng.normal(size=(count, size)).astype(np.float32)
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    scores = np.sort(rng.uniform(0.01, 0.99, count).astype(np.float32))[::-1].copy()
    keypoints = rng.uniform(0, 400, (count, 2)).astype(np.float32)
    return Features(keypoints, scores, descriptors, 480, 640)


def test_keypoints_message_round_trip_through_rosbags_serialisation():
    features = make_features(2000, 128)
    message = build_keypoints_message(Keypoints, HEADER, features, "aliked-n16rot")
    raw = TYPES.serialize_cdr(message, Keypoints.__msgtype__)
    back = TYPES.deserialize_cdr(raw, Keypoints.__msgtype__)
    assert back.header.frame_id == HEADER.frame_id and back.header.stamp.sec == HEADER.stamp.sec
    assert (back.height, back.width, back.model, back.descriptor_size) == (480, 640, "aliked-n16rot", 128)
    assert back.keypoints[:4].tolist() == features.keypoints[:2].reshape(-1).tolist()  # interleaved x, y
    decoded = features_from_message(back)
    for name in ("keypoints", "scores", "descriptors"):
        assert np.array_equal(getattr(decoded, name), getattr(features, name))


def test_empty_features_make_a_valid_message():
    features = make_features(0, 64)
    message = build_keypoints_message(Keypoints, HEADER, features, "aliked-t16")
    assert len(features_from_message(message)) == 0 and message.descriptor_size == 64


def test_rclpy_messages_get_float_arrays():
    """The fast path for rclpy messages: where rclpy is missing, a class of the same shape stands in to check the
    types the builder hands over (no library is faked: rclpy itself is tested in the ROS tests)."""

    class RclpyStyle:
        @classmethod
        def get_fields_and_field_types(cls):
            return {}

        def __init__(self, **fields):
            self.__dict__.update(fields)

    features = make_features(10, 64)
    message = build_keypoints_message(RclpyStyle, HEADER, features, "aliked-t16")
    assert isinstance(message.keypoints, array.array) and message.keypoints.typecode == "f"
    assert message.keypoints.tolist() == features.keypoints.reshape(-1).tolist()  # interleaved x, y
    assert message.scores.tolist() == features.scores.tolist()
    assert message.descriptors.tolist() == features.descriptors.reshape(-1).tolist()
    empty = build_keypoints_message(RclpyStyle, HEADER, make_features(0, 64), "aliked-t16")
    assert len(empty.keypoints) == len(empty.scores) == len(empty.descriptors) == 0


def test_latency_monitor_statistics():
    now = [0.0]
    monitor = LatencyMonitor(window=10, clock=lambda: now[0])
    for frame in range(20):
        now[0] = frame * 0.1  # 10 Hz in
        monitor.received()
        if frame % 5 == 4:
            monitor.dropped()
            continue
        monitor.published(processing_seconds=0.010 + frame * 0.001, end_to_end_seconds=0.030)
    summary = monitor.summary()
    assert summary.received_total == 20 and summary.dropped_total == 4 and summary.published_total == 16
    assert summary.frames == 10
    assert summary.input_rate_hz == pytest.approx(10.0)
    assert summary.processing_max_ms == pytest.approx(28.0)  # frame 18; frame 19 was dropped
    assert summary.end_to_end_p50_ms == pytest.approx(30.0)
    assert 0 < summary.drop_ratio < 0.5
    assert "dropped" in summary.describe()


def test_the_diagnostic_status_says_why_a_frame_is_late():
    from aliked_ros.latency import health

    now = [0.0]
    monitor = LatencyMonitor(window=10, clock=lambda: now[0])
    assert health(monitor.summary(), budget_ms=50, max_drop_ratio=0.2, ready=False) == ("WARN", "engine loading")
    assert health(monitor.summary(), budget_ms=50, max_drop_ratio=0.2, ready=True) == ("OK", "waiting for images")
    assert health(monitor.summary(), budget_ms=50, max_drop_ratio=0.2, ready=True, engine_error="no CUDA") == (
        "ERROR", "engine failed: no CUDA")
    for frame in range(10):
        now[0] = frame * 0.1
        monitor.received()
        monitor.published(processing_seconds=0.040, end_to_end_seconds=0.080)  # over a 50 ms budget
    late = monitor.summary()
    level, message = health(late, budget_ms=50, max_drop_ratio=0.2, ready=True)
    assert level == "WARN" and message == "end-to-end p95 80.0 ms over the 50 ms budget"
    level, message = health(late, budget_ms=50, max_drop_ratio=0.2, ready=True, compiling=True)
    assert level == "WARN" and message.startswith("end-to-end p95 80.0 ms over the 50 ms budget while torch.compile")
    level, message = health(late, budget_ms=100, max_drop_ratio=0.2, ready=True, compiling=True)
    assert level == "OK" and message.endswith("; torch.compile runs in the background")
    for frame in range(10):
        monitor.received()
        monitor.dropped()
    level, message = health(monitor.summary(), budget_ms=100, max_drop_ratio=0.2, ready=True)
    assert level == "WARN" and message.startswith("dropping")


def test_the_package_logs_go_where_the_node_sends_them():
    import logging

    from aliked_ros.log_forwarding import forward_package_logs

    got = []
    stop = forward_package_logs(lambda level, text: got.append((level, text)))
    logger = logging.getLogger("aliked_ros.engines.torch_engine")
    try:
        logger.info("compiled graph serves")
        logger.debug("not this")
        logger.warning("a frame waits")
    finally:
        stop()
    logger.warning("after: not forwarded")
    assert got == [(logging.INFO, "compiled graph serves"), (logging.WARNING, "a frame waits")]
    package = logging.getLogger("aliked_ros")
    assert package.propagate and not package.handlers  # undone


def test_each_severity_reaches_its_own_method():
    import logging

    from aliked_ros.log_forwarding import write_by_level

    got = []
    write = write_by_level(*(lambda text, name=name: got.append((name, text)) for name in ("error", "warning", "info")))
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO, logging.DEBUG):
        write(level, logging.getLevelName(level))
    assert got == [("error", "CRITICAL"), ("error", "ERROR"), ("warning", "WARNING"), ("info", "INFO"),
                   ("info", "DEBUG")]


class FixedExtractor:
    """A tiny extractor with known features: the processor's logic is under test, not the network."""

    model = "aliked-t16"

    def __init__(self):
        self.seen = []

    def extract(self, image, channel_order="rgb"):
        self.seen.append((image, channel_order))
        height, width = image.shape[:2]
        features = make_features(50, 64)
        return Features(features.keypoints, features.scores, features.descriptors, height, width)


def test_frame_processor_thresholds_and_copies_the_header(rgb):
    extractor = FixedExtractor()
    processor = FrameProcessor(extractor, Keypoints, score_threshold=0.5)
    result = processor.process(image_message("bgr8", np.ascontiguousarray(rgb[:, :, ::-1])))
    pixels, channel_order = extractor.seen[-1]  # the camera's BGR bytes, for the engine to reorder where it runs
    assert channel_order == "bgr" and np.array_equal(pixels[:, :, ::-1], rgb)
    assert result.message.header is HEADER
    assert np.all(result.features.scores > 0.5) and len(result.message.scores) == len(result.features)
    processor.score_threshold = 0.9
    assert len(processor.process(image_message("rgb8", rgb)).features) < len(result.features)
    with pytest.raises(AlikedError, match="score_threshold"):
        processor.score_threshold = 1.5


def test_frame_processor_with_the_network(rgb_frame):
    from aliked_ros.engines import create_extractor

    extractor = create_extractor("torch", model="aliked-t16", top_k=300, device="cpu")
    processor = FrameProcessor(extractor, Keypoints)
    ok, encoded = cv2.imencode(".png", rgb_frame[:, :, ::-1])
    message = processor.process(CompressedImage(header=HEADER, format="png", data=encoded.reshape(-1))).message
    expected = extractor.extract(rgb_frame)
    assert np.array_equal(features_from_message(message).descriptors, expected.descriptors)
    assert (message.height, message.width) == rgb_frame.shape[:2]


def test_node_parameters_give_the_cpu_an_uncompiled_fp32_torch_engine():
    from aliked_ros import parameters
    from aliked_ros.processing import extractor_from_parameters

    logs = []
    values = parameters.resolve({"engine": "torch", "device": "cpu", "model": "aliked-t16", "top_k": 300})
    assert values["precision"] == "auto" and values["torch_compile"]  # the defaults: fp32 and no graph on the CPU
    extractor = extractor_from_parameters(values, log=logs.append)
    assert (extractor.precision, extractor.cuda_graph, extractor.compiled) == ("fp32", False, False)
    # The loading line states what runs (it once said "(top_k 300, fp16)" and then ran fp32).
    assert logs[0] == "Loading the torch engine for aliked-t16 (top_k 300, fp32)", logs
    assert not any("fp16" in line for line in logs)


def test_node_parameters_give_cuda_the_compiled_graph():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA (PyTorch sees no GPU here)")
    import importlib.util

    from aliked_ros import parameters
    from aliked_ros.processing import extractor_from_parameters

    triton = importlib.util.find_spec("triton") is not None
    for torch_compile in (True, False):
        values = parameters.resolve({"engine": "torch", "device": "cuda", "model": "aliked-t16", "top_k": 300,
                                     "torch_compile": torch_compile})
        extractor = extractor_from_parameters(values, log=lambda line: None)
        assert (extractor.precision, extractor.cuda_graph) == ("fp16", True)
        assert extractor.compiled == (torch_compile and triton)
        assert extractor.background_compile == (torch_compile and triton)  # the node's default: in the background
        extractor.close()


def test_the_node_compiles_in_the_background_and_the_library_does_not():
    from aliked_ros import parameters
    from aliked_ros.config import ExtractorConfig
    from aliked_ros.processing import extractor_config

    values = parameters.resolve({"engine": "torch"})
    assert values["background_compile"] is True and extractor_config(values).background_compile is True
    assert extractor_config(dict(values, background_compile=False)).background_compile is False
    assert ExtractorConfig().background_compile is False and ExtractorConfig(compile=True).background_compile is False

