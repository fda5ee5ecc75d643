"""The node's frame path on the camera's own encodings (issue 16): message in, Keypoints out, with the pixels handed to
the engine in their own layout (grey, RGB, BGR) and converted on the engine's device, not on the host. The features
must be those of the RGB path exactly where the arithmetic is the same (the CPU; fp32 CUDA)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from aliked_ros import bags
from aliked_ros.bench.frame_path import bayer_rggb, uyvy
from aliked_ros.engines import create_extractor
from aliked_ros.image_messages import message_to_image, message_to_pixels
from aliked_ros.messages import KEYPOINTS_MSGTYPE
from aliked_ros.processing import STAGES, FrameProcessor

HEADER = bags.make_header(1_000_000_000, "camera")


def image_message(pixels: np.ndarray, encoding: str):
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    height, width = pixels.shape[:2]
    return bags.message_class(bags.IMAGE_MSGTYPE)(
        header=HEADER, height=height, width=width, encoding=encoding, is_bigendian=0,
        step=width * channels * pixels.dtype.itemsize, data=np.ascontiguousarray(pixels).view(np.uint8).reshape(-1))


def messages(rgb: np.ndarray, grey: np.ndarray) -> dict[str, object]:
    """One message of each encoding a camera sends, from the shared frames."""
    alpha = np.full(rgb.shape[:2] + (1,), 255, np.uint8)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    compressed = bags.message_class(bags.COMPRESSED_MSGTYPE)(header=HEADER, format="jpeg",
                                                              data=np.frombuffer(jpeg.tobytes(), np.uint8))
    return {
        "mono8": image_message(grey, "mono8"),
        "mono16": image_message(grey.astype(np.uint16) << 8, "mono16"),
        "rgb8": image_message(rgb, "rgb8"),
        "bgr8": image_message(rgb[:, :, ::-1], "bgr8"),
        "rgba8": image_message(np.concatenate([rgb, alpha], axis=2), "rgba8"),
        "bgra8": image_message(np.concatenate([rgb[:, :, ::-1], alpha], axis=2), "bgra8"),
        "yuv422": image_message(uyvy(rgb), "yuv422"),
        "bayer_rggb8": image_message(bayer_rggb(rgb), "bayer_rggb8"),
        "jpeg": compressed,
    }


@pytest.fixture(scope="module")
def camera_messages(rgb_frame, gray_frame):
    return messages(np.ascontiguousarray(rgb_frame[:240, :320]), np.ascontiguousarray(gray_frame[:200, :400]))


def test_the_engine_gets_the_camera_layout(camera_messages):
    """Grey stays one channel and BGR stays BGR: the host does not convert what the engine can."""
    layouts = {name: (pixels.ndim, order) for name, (pixels, order) in
               ((name, message_to_pixels(message)) for name, message in camera_messages.items())}
    assert layouts["mono8"][0] == 2 and layouts["mono16"][0] == 2
    assert layouts["rgb8"] == (3, "rgb") and layouts["rgba8"] == (3, "rgb")
    assert layouts["bgr8"] == (3, "bgr") and layouts["bgra8"] == (3, "bgr") and layouts["jpeg"] == (3, "bgr")
    assert layouts["yuv422"] == (3, "uyvy") and layouts["bayer_rggb8"] == (2, "bayer_rggb")  # raw, for the engine


@pytest.mark.parametrize("encoding", ["mono8", "mono16", "rgb8", "bgr8", "rgba8", "bgra8", "yuv422",
                                      "bayer_rggb8", "jpeg"])
def test_every_encoding_gives_the_features_of_the_rgb_path(encoding, camera_messages):
    extractor = create_extractor("torch", model="aliked-t16", top_k=300, device="cpu")
    processor = FrameProcessor(extractor, bags.message_class(KEYPOINTS_MSGTYPE), score_threshold=0.05)
    message = camera_messages[encoding]
    stages = {}
    result = processor.process(message, stages)
    expected = extractor.extract(message_to_image(message)).above(0.05)  # RGB (or grey) made on the host
    assert 0 < len(result.features) == len(expected)
    for name in ("keypoints", "scores", "descriptors"):
        assert np.array_equal(getattr(result.features, name), getattr(expected, name)), name
    assert set(stages) == set(STAGES) and all(seconds >= 0 for seconds in stages.values())


def test_static_engines_take_every_layout_through_the_host(camera_messages):
    """Engines without their own conversion (onnxruntime, TensorRT) get RGB made on the host from any layout."""
    from aliked_ros.engines.base import Extractor
    from aliked_ros.features import Features

    seen = []

    class Recording(Extractor):
        engine, model, top_k, device, precision, descriptor_size = "test", "aliked-t16", 10, "cpu", "fp32", 64

        def _extract(self, rgb):
            seen.append(rgb)
            return Features(np.zeros((0, 2), np.float32), np.zeros(0, np.float32), np.zeros((0, 64), np.float32),
                            *rgb.shape[:2])

    for encoding in ("mono8", "bgr8", "rgb8"):
        Recording().extract(*message_to_pixels(camera_messages[encoding]))
    grey, bgr, rgb = seen
    assert grey.shape[2] == 3 and np.array_equal(grey[:, :, 0], grey[:, :, 2])
    assert np.array_equal(bgr, rgb)  # the BGR message, reordered on the host


def test_the_device_conversions_are_opencvs(rgb_frame):
    """YUV 4:2:2 and Bayer frames converted by the engine (torch, inside the CUDA graph on a GPU) as OpenCV converts
    them on the host (what cv_bridge gives), borders included: YUV within one intensity level (OpenCV's fixed-point
    coefficients), Bayer exactly (the same integer rounding)."""
    import torch

    from aliked_ros.imaging import as_rgb
    from aliked_ros.model.camera_layouts import BAYER_PATTERNS, demosaic_bilinear, yuv422_to_rgb

    rgb = np.ascontiguousarray(rgb_frame[:240, :320])
    packed = uyvy(rgb)
    yuyv = np.ascontiguousarray(packed[:, :, ::-1])  # Y0 U Y1 V: the same pairs with luma first
    for order, raw in (("uyvy", packed), ("yuyv", yuyv)):
        difference = yuv422_to_rgb(torch.from_numpy(raw), order).numpy().astype(int) - as_rgb(raw, order)
        assert np.abs(difference).max() <= 1, order
    for order, pattern in BAYER_PATTERNS.items():
        mosaic = np.empty(rgb.shape[:2], np.uint8)
        for dy in range(2):
            for dx in range(2):
                mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, pattern[dy][dx]]
        assert np.array_equal(demosaic_bilinear(torch.from_numpy(mosaic), order).numpy(), as_rgb(mosaic, order)), order


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA (PyTorch sees no GPU here)")
@pytest.mark.parametrize("encoding", ["mono8", "bgr8", "yuv422", "bayer_rggb8"])
def test_cuda_graph_converts_on_the_device(encoding, camera_messages):
    """The fast path's graphs take grey, BGR, YUV 4:2:2 and Bayer bytes and convert inside the graph; RGB and grey
    frames of one size share the compiled network (only a new capture). In fp32 grey and BGR give the RGB path's
    features exactly, and so does Bayer (demosaiced as OpenCV does); YUV, within one level of OpenCV's, within the
    compare bounds."""
    from aliked_ros.comparison import match_features

    extractor = create_extractor("torch", model="aliked-t16", top_k=300, device="cuda", precision="fp32",
                                 compile=False)
    pixels, order = message_to_pixels(camera_messages[encoding])
    converted = extractor.extract(pixels, order)
    reference = extractor.extract(message_to_image(camera_messages[encoding]))
    assert len(converted) == len(reference) > 0
    if encoding in ("mono8", "bgr8", "bayer_rggb8"):
        assert np.array_equal(converted.keypoints, reference.keypoints)
        assert np.allclose(converted.descriptors, reference.descriptors, atol=1e-6)
    else:
        statistics = match_features(converted, reference, 1.0).statistics()
        assert statistics.matched_fraction >= 0.99 and statistics.cosine_median >= 0.999


def test_a_jpeg_goes_to_an_engine_that_decodes_it(camera_messages):
    """Where the engine decodes JPEG on its device (nvJPEG), the processor hands it the compressed bytes and decodes
    nothing on the host; PNG and engines without the decoder go through the host's decoder."""
    from aliked_ros.features import Features

    calls = []

    class DeviceDecoding:
        model, decodes_jpeg = "aliked-t16", True

        def extract_jpeg(self, data):
            calls.append(("jpeg", bytes(data[:3])))
            return Features(np.zeros((1, 2), np.float32), np.ones(1, np.float32), np.ones((1, 64), np.float32), 1, 1)

        def extract(self, pixels, channel_order="rgb"):
            calls.append(("pixels", pixels.shape))
            return Features(np.zeros((1, 2), np.float32), np.ones(1, np.float32), np.ones((1, 64), np.float32),
                            *pixels.shape[:2])

    processor = FrameProcessor(DeviceDecoding(), bags.message_class(KEYPOINTS_MSGTYPE))
    result = processor.process(camera_messages["jpeg"])
    assert calls == [("jpeg", b"\xff\xd8\xff")] and result.image is None
    ok, png = cv2.imencode(".png", np.zeros((40, 48, 3), np.uint8))
    compressed_png = bags.message_class(bags.COMPRESSED_MSGTYPE)(header=HEADER, format="png",
                                                                  data=np.frombuffer(png.tobytes(), np.uint8))
    processor.process(compressed_png)
    assert calls[-1] == ("pixels", (40, 48, 3))


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA (PyTorch sees no GPU here)")
def test_nvjpeg_on_the_device_differs_from_libjpeg_less_than_the_jpeg_from_its_frame(camera_messages, rgb_frame):
    """Two JPEG decoders (nvJPEG, OpenCV's libjpeg) upsample chroma and round differently, so a JPEG's features are
    defined up to its decoder. That difference must stay well under what the compression itself moves: the features
    of nvJPEG's decoding agree with libjpeg's more than libjpeg's agree with the frame before compression."""
    from aliked_ros.comparison import match_features

    extractor = create_extractor("torch", model="aliked-t16", top_k=300, device="cuda", precision="fp32",
                                 compile=False)
    if not extractor.decodes_jpeg:
        pytest.skip("this PyTorch has no CUDA JPEG decoder (torchvision)")
    message = camera_messages["jpeg"]
    on_device = FrameProcessor(extractor, bags.message_class(KEYPOINTS_MSGTYPE)).process(message)
    on_host = extractor.extract(message_to_image(message))
    original = extractor.extract(np.ascontiguousarray(rgb_frame[:240, :320]))
    assert on_device.image is None and len(on_device.features) > 0
    decoders = match_features(on_device.features, on_host, 1.0).statistics()
    compression = match_features(original, on_host, 1.0).statistics()
    assert decoders.matched_fraction > compression.matched_fraction
    assert decoders.cosine_median > compression.cosine_median
