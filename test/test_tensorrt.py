"""The TensorRT builder and engine: their rules everywhere, TensorRT itself where it is installed."""

import numpy as np
import pytest

from aliked_ros.comparison import match_features
from aliked_ros.errors import AlikedError
from aliked_ros.export import engine_info
from aliked_ros.export.engine_info import EngineInfo, TENSORRT_TOPK_LIMIT
from aliked_ros.export.metadata import OnnxMetadata

METADATA = OnnxMetadata("aliked-t16", 500, 64, 96, "fp16", 64, "deformconv", "0.1.0")
INFO = EngineInfo(METADATA, "ab" * 32, "10.3.0", "Orin", "8.7", 3, 1024)


def test_sidecar_round_trip_and_refusals(tmp_path):
    engine = tmp_path / "a.engine"
    engine_info.write_sidecar(engine, INFO)
    assert engine_info.read_sidecar(engine) == INFO
    with pytest.raises(AlikedError, match="has no b.engine.json"):
        engine_info.read_sidecar(tmp_path / "b.engine")
    (tmp_path / "c.engine.json").write_text("{not json")
    with pytest.raises(AlikedError, match="unreadable"):
        engine_info.read_sidecar(tmp_path / "c.engine")
    (tmp_path / "d.engine.json").write_text('{"format": "something else"}')
    with pytest.raises(AlikedError, match="not an aliked-ros engine description"):
        engine_info.read_sidecar(tmp_path / "d.engine")


def test_a_plan_runs_only_where_it_was_built_for():
    assert engine_info.check_runs_here(INFO, "a.engine", "10.3.0", "Orin", "8.7") == []
    with pytest.raises(AlikedError, match="built by TensorRT 10.3.0, and this is TensorRT 10.7.0"):
        engine_info.check_runs_here(INFO, "a.engine", "10.7.0", "Orin", "8.7")
    with pytest.raises(AlikedError, match=r"compute capability 8.7\), and this GPU is NVIDIA H100 80GB HBM3 \(9.0\)"):
        engine_info.check_runs_here(INFO, "a.engine", "10.3.0", "NVIDIA H100 80GB HBM3", "9.0")
    warnings = engine_info.check_runs_here(INFO, "a.engine", "10.3.0", "Orin NX", "8.7")
    assert len(warnings) == 1 and "rebuild for the best speed" in warnings[0]


def test_top_k_limit_and_parser_error_lines():
    engine_info.check_top_k_for_tensorrt(TENSORRT_TOPK_LIMIT)
    with pytest.raises(AlikedError, match="exceeds TensorRT's TopK limit of 3840"):
        engine_info.check_top_k_for_tensorrt(TENSORRT_TOPK_LIMIT + 1)
    text = engine_info.format_parser_errors([("unsupported operator", 12, "/block3/DeformConv", "DeformConv"),
                                            ("bad weights", -1, "", "")])
    assert text.splitlines() == ["  node 12 '/block3/DeformConv' (DeformConv): unsupported operator",
                                 "  the graph: bad weights"]


def tiny_onnx(path, metadata: OnnxMetadata):
    """An ONNX file with our signature and metadata but no network: enough for the checks made before TensorRT."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    outputs = []
    nodes = []
    for name, shape in metadata.output_shapes.items():
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
        nodes.append(helper.make_node("ConstantOfShape", [f"{name}_shape"], [name],
                                      value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])))
    initializers = [helper.make_tensor(f"{name}_shape", TensorProto.INT64, [len(shape)], list(shape))
                    for name, shape in metadata.output_shapes.items()]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info(
        "image", TensorProto.UINT8, (metadata.height, metadata.width, 3))], outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    for key, value in metadata.to_props().items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def test_build_engine_refuses_before_needing_tensorrt(tmp_path):
    from aliked_ros.export.tensorrt_build import build_engine

    too_many = OnnxMetadata("aliked-t16", 4000, 64, 96, "fp32", 64, "deformconv", "0.1.0")
    with pytest.raises(AlikedError, match="TopK limit"):
        build_engine(tiny_onnx(tmp_path / "k.onnx", too_many), tmp_path / "k.engine")
    (tmp_path / "foreign.onnx").write_bytes(b"\x08\x07 not onnx")
    with pytest.raises(AlikedError, match="not an ONNX file|not exported by aliked-ros"):
        build_engine(tmp_path / "foreign.onnx", tmp_path / "f.engine")


def test_build_engine_command_refuses_an_existing_output(tmp_path, capsys):
    from aliked_ros.cli import main

    (tmp_path / "exists.engine").write_bytes(b"")
    assert main(["build-engine", str(tmp_path / "x.onnx"), "-o", str(tmp_path / "exists.engine")]) == 2
    assert "add --overwrite" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tensorrt_engine(tmp_path_factory):
    pytest.importorskip("tensorrt", reason="needs TensorRT (not installable on this machine)")
    pytest.importorskip("cuda", reason="needs cuda-python")
    from aliked_ros.export.onnx_export import export_onnx
    from aliked_ros.export.tensorrt_build import build_engine

    directory = tmp_path_factory.mktemp("trt")
    export_onnx(directory / "t16.onnx", "aliked-t16", 480, 640, 1000, fp16=True)
    build_engine(directory / "t16.onnx", directory / "t16.engine")
    return directory / "t16.engine"


def test_tensorrt_engine_matches_torch(tensorrt_engine, rgb_frame):
    from aliked_ros.engines import create_extractor

    frame = np.ascontiguousarray(rgb_frame[:480, :640])
    with create_extractor("tensorrt", engine_path=tensorrt_engine) as engine:
        result = engine.extract(frame)
        with pytest.raises(AlikedError, match="takes 640x480 images"):
            engine.extract(frame[:240])
    reference = create_extractor("torch", model="aliked-t16", top_k=1000, device="cpu").extract(frame)
    matches = match_features(reference, result, max_distance=1.0)  # mutual nearest keypoints
    assert matches.matched / len(reference) >= 0.99
    cosine = matches.cosines
    assert np.median(cosine) >= 0.999


def test_truncated_engine_is_refused(tensorrt_engine, tmp_path):
    from aliked_ros.engines import create_extractor

    truncated = tmp_path / "truncated.engine"
    truncated.write_bytes(tensorrt_engine.read_bytes()[:4096])
    engine_info.write_sidecar(truncated, engine_info.read_sidecar(tensorrt_engine))
    with pytest.raises(AlikedError, match="truncated or corrupt"):
        create_extractor("tensorrt", engine_path=truncated)
