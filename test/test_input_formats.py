"""Static engines (ONNX, TensorRT) whose input is the camera's layout (issue 16): `export-onnx --input-format
rgb|bgr|gray` writes it into the graph, the engine cache keys on it, the node and process-bag take it from the
first image where it is left "auto", and a frame of another layout is converted on the host where that gives the
same features (grey into RGB, RGB into BGR) and refused where it would not (colour into grey)."""

from __future__ import annotations

import numpy as np
import pytest

from aliked_ros import bags, parameters
from aliked_ros.config import ExtractorConfig
from aliked_ros.errors import AlikedError
from aliked_ros.export.metadata import OnnxMetadata, pixels_for_input
from aliked_ros.image_messages import input_format_of

onnx_export = pytest.importorskip("aliked_ros.export.onnx_export", reason="needs torch and onnx")
pytest.importorskip("onnxruntime", reason="needs onnxruntime")

HEIGHT, WIDTH, TOP_K = 64, 96, 60


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """An aliked-t16 graph of each input format, exported once (each export checks its parity with PyTorch)."""
    directory = tmp_path_factory.mktemp("formats")
    return {fmt: onnx_export.export_onnx(directory / f"{fmt}.onnx", "aliked-t16", HEIGHT, WIDTH, TOP_K,
                                         input_format=fmt) for fmt in ("rgb", "bgr", "gray")}


@pytest.fixture(scope="module")
def frame(rgb_frame) -> np.ndarray:
    return np.ascontiguousarray(rgb_frame[200:200 + HEIGHT, 300:300 + WIDTH])


def test_the_graph_takes_the_camera_layout(graphs):
    for fmt, result in graphs.items():
        assert result.metadata.input_format == fmt and result.parity.passed
        assert result.metadata.input_shape == ((HEIGHT, WIDTH) if fmt == "gray" else (HEIGHT, WIDTH, 3))
        assert (fmt == "rgb") == ("input" not in result.metadata.describe())


def test_each_layout_gives_the_rgb_graphs_features(graphs, frame):
    import cv2

    from aliked_ros.engines import create_extractor

    engines = {fmt: create_extractor("onnxruntime", onnx_path=str(result.path), device="cpu")
               for fmt, result in graphs.items()}
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    for fmt, pixels, order, reference in (("bgr", frame[:, :, ::-1].copy(), "bgr", frame),
                                          ("gray", grey, "rgb", np.repeat(grey[:, :, None], 3, axis=2))):
        expected = engines["rgb"].extract(reference)
        got = engines[fmt].extract(pixels, order)
        assert len(got) == len(expected) > 0
        assert np.allclose(got.keypoints, expected.keypoints, atol=1e-3), fmt
        assert np.allclose(got.descriptors, expected.descriptors, atol=1e-4), fmt
    # Any layout into an RGB or BGR graph, converted on the host; colour into a grey graph, refused.
    assert len(engines["bgr"].extract(grey)) > 0 and len(engines["rgb"].extract(frame[:, :, ::-1].copy(), "bgr")) > 0
    with pytest.raises(AlikedError, match="exported for grey frames and this frame is colour"):
        engines["gray"].extract(frame)
    engines["gray"].warmup(HEIGHT, WIDTH, iterations=1)  # the warm-up frame has the engine's own layout


def test_files_without_an_input_format_are_rgb():
    props = OnnxMetadata("aliked-t16", 10, 32, 32, "fp32", 64, "deformconv", "0.1.0", "gray").to_props()
    assert OnnxMetadata.from_props(props, "x.onnx").input_format == "gray"
    del props["input_format"]  # written before the field existed
    assert OnnxMetadata.from_props(props, "x.onnx").input_format == "rgb"
    props["input_format"] = "yuv"
    with pytest.raises(AlikedError, match="values we never write"):
        OnnxMetadata.from_props(props, "x.onnx")


def test_host_conversion_rules():
    grey = np.arange(32 * 40, dtype=np.uint8).reshape(32, 40)
    colour = np.dstack([grey, grey // 2, grey // 3])
    assert pixels_for_input(grey, "rgb", "gray", "x") is grey
    assert pixels_for_input(colour, "rgb", "rgb", "x") is colour
    assert np.array_equal(pixels_for_input(colour, "rgb", "bgr", "x"), colour[:, :, ::-1])
    assert np.array_equal(pixels_for_input(grey, "rgb", "bgr", "x")[:, :, 2], grey)


def test_the_cache_and_the_node_key_on_the_layout():
    from aliked_ros.engines.cache import onnx_stem
    from aliked_ros.processing import extractor_config, needs_first_image

    assert onnx_stem("aliked-t16", 376, 1241, 2000, "fp16").count("_gray") == 0  # rgb names are as they were
    assert "_gray_" in onnx_stem("aliked-t16", 376, 1241, 2000, "fp16", input_format="gray")
    message = bags.message_class(bags.IMAGE_MSGTYPE)(
        header=bags.make_header(1, "c"), height=376, width=1241, encoding="mono8", is_bigendian=0, step=1241,
        data=np.zeros(376 * 1241, np.uint8))
    assert [input_format_of(message)] == ["gray"]
    values = parameters.resolve({"engine": "onnxruntime", "image_height": 376, "image_width": 1241})
    assert values["input_format"] == "auto" and needs_first_image(values)  # auto: the camera's, from its image
    assert extractor_config(values, first_image=message).input_format == "gray"
    kitti = parameters.resolve({"engine": "onnxruntime"}, parameters.config_dir() / "kitti.yaml")
    assert kitti["input_format"] == "gray" and not needs_first_image(kitti)  # built at start-up, for mono8
    assert ExtractorConfig(engine="tensorrt", engine_path="x.engine").resolved().input_format == "rgb"
    assert not needs_first_image(parameters.resolve({"engine": "torch"}))  # the torch engine takes any layout
