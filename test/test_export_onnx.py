"""ONNX export and the onnxruntime engine: parity with PyTorch, TensorRT-parsable graphs, uint8 in, fp16 inside.

Each (model, size, precision, deform mode) is exported once per module (``exported`` fixture); the export itself
already compares the file with PyTorch through onnxruntime on one frame and raises otherwise, and the tests compare
again, through the onnxruntime engine, on another frame.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

import aliked_ros  # noqa: E402

from aliked_ros.cli import main  # noqa: E402
from aliked_ros.errors import AlikedError  # noqa: E402
from aliked_ros.export.metadata import OnnxMetadata, read_onnx_metadata  # noqa: E402
from aliked_ros.export.onnx_export import OPSET, TENSORRT_TOPK_LIMIT, export_onnx, validate_export_options  # noqa: E402
from aliked_ros.export.parity import MIN_COSINE, compare_features, parity_frame, run_torch  # noqa: E402
from aliked_ros.imaging import as_rgb, read_image  # noqa: E402
from aliked_ros.sample_data import dataset_frames  # noqa: E402

MODELS = ("aliked-t16", "aliked-n16", "aliked-n16rot", "aliked-n32")
SIZES = ((480, 640), (376, 1241))
TOP_K = 1000

# Operators TensorRT's ONNX parser supports, with the data types listed for each: TensorRT 10.1, from
# onnx/onnx-tensorrt docs/operators.md at the 10.1-GA release (commit 96e781103cfc4adf4a6bb557e94bac8e693f6f4c,
# https://github.com/onnx/onnx-tensorrt/blob/10.1-GA/docs/operators.md), rows marked "Y", grouped by type list.
# (The page writes INF64 for ConstantOfShape, read here as INT64.) The same page gives opsets 9 to 20 and, for
# TopK, "sorted must be 1"; NVIDIA's TopK operator page gives k <= 3840.
TENSORRT_VERSION = "10.1"
TENSORRT_MAX_OPSET = 20
_TENSORRT_OPERATORS_BY_TYPES = {
    "FP32 FP16 BF16": (
        "Acos Acosh Asin Asinh Atan Atanh AveragePool BatchNormalization Ceil Celu Clip Conv "
        "ConvTranspose Cos Cosh CumSum Dropout Einsum Elu Erf Exp Floor Gemm GlobalAveragePool "
        "GlobalLpPool GlobalMaxPool GroupNormalization GRU HardSigmoid HardSwish Hardmax ImageScaler "
        "InstanceNormalization IsInf LayerNormalization LeakyRelu Log LogSoftmax LRN LSTM LpNormalization "
        "LpPool MatMul MaxPool MeanVarianceNormalization ParametricSoftplus Pow PRelu QuantizeLinear "
        "RandomNormal RandomNormalLike RandomUniform RandomUniformLike Reciprocal Resize RNN Round "
        "ScaledTanh Scan Selu Sigmoid Sin Sinh Softmax Softplus Softsign Sqrt Tan Tanh ThresholdedRelu "
        "Upsample"
    ),
    "FP32 FP16 BF16 INT32 INT64": (
        "Abs Add ArgMax ArgMin DepthToSpace Div Equal Greater GreaterOrEqual IsNaN Less LessOrEqual Max "
        "Min Mod Mul Neg Pad Range ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean "
        "ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Scatter ScatterElements ScatterND Shrink "
        "Sign SpaceToDepth Sub Sum TopK"
    ),
    "FP32 FP16 BF16 INT32 INT64 BOOL": (
        "Concat Constant ConstantOfShape Expand EyeLike Flatten Gather GatherElements GatherND Identity "
        "If Loop OneHot Reshape ReverseSequence Shape Size Slice Split Squeeze Tile Transpose Trilu "
        "Unsqueeze Where"
    ),
    "FP32 FP16": "DeformConv GridSample Mish NonMaxSuppression NonZero RoiAlign",
    "BOOL": "And Not Or Xor",
    "FP32 FP16 BF16 INT32 INT64 UINT8 BOOL": "Cast CastLike",
    "INT8 FP8 INT4": "DequantizeLinear",
    "FP32 FP16 BF16 INT8 INT32 INT64": "Gelu",
    "FP32 FP16 BF16 FP8 INT32 INT64": "Mean",
}
TENSORRT_OPERATORS = {operator: frozenset(types.split())
                      for types, operators in _TENSORRT_OPERATORS_BY_TYPES.items() for operator in operators.split()}
# The table understates Clip: the parser's Clip importer at the same commit (onnxOpImporters.cpp) turns an INT32 or
# INT64 Clip into elementwise max/min, and the descriptor head clamps its integer patch corners.
TENSORRT_OPERATORS["Clip"] |= {"INT32", "INT64"}
_TYPE_NAMES = {TensorProto.FLOAT: "FP32", TensorProto.FLOAT16: "FP16", TensorProto.BFLOAT16: "BF16",
               TensorProto.INT32: "INT32", TensorProto.INT64: "INT64", TensorProto.UINT8: "UINT8",
               TensorProto.BOOL: "BOOL", TensorProto.INT8: "INT8"}
COMPUTE_OPERATORS = ("Conv", "DeformConv", "MatMul", "Gemm")  # where a network's arithmetic is


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """export(model, height, width, fp16=False, deform='deformconv') → ExportResult, each exported once."""
    directory = tmp_path_factory.mktemp("onnx")
    cache = {}

    def export(model: str, height: int, width: int, fp16: bool = False, deform: str = "deformconv"):
        key = (model, height, width, fp16, deform)
        if key not in cache:
            path = directory / f"{model}_{width}x{height}_{'fp16' if fp16 else 'fp32'}_{deform}.onnx"
            cache[key] = export_onnx(path, model, height, width, TOP_K, fp16=fp16, deform=deform,
                                     allow_download=False)
        return cache[key]

    return export


def second_frame(height: int, width: int) -> np.ndarray:
    """A frame other than the export's parity frame, as the camera gives it (KITTI stays grayscale)."""
    paths = dataset_frames("tum" if width / height < 2 else "kitti")
    if len(paths) > 5:
        image = read_image(paths[5])
        if image.shape[:2] == (height, width):
            return image
        return parity_frame(height, width, paths[5])[1]
    return parity_frame(height, width)[1]  # scikit-image's sample, resized: the same frame as the export's


def check_engine_against_torch(result, load_pretrained, precision: str) -> None:
    from aliked_ros.engines import create_extractor

    meta = result.metadata
    image = second_frame(meta.height, meta.width)
    with create_extractor("onnxruntime", onnx_path=result.path) as engine:
        features = engine.extract(image)
    reference = run_torch(load_pretrained(meta.model, meta.top_k), as_rgb(image))
    report = compare_features(reference, (features.keypoints, features.scores, features.descriptors), precision)
    assert report.passed, report.summary()


def tensor_types(model) -> dict[str, int]:
    graph = model.graph
    types = {value.name: value.type.tensor_type.elem_type
             for value in list(graph.input) + list(graph.value_info) + list(graph.output)}
    types.update({initializer.name: initializer.data_type for initializer in graph.initializer})
    for node in graph.node:
        if node.op_type == "Constant":
            types[node.output[0]] = node.attribute[0].t.data_type
    return types


# --- parity with PyTorch ------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("height, width", SIZES, ids=["480x640", "376x1241"])
@pytest.mark.parametrize("model", MODELS)
def test_fp32_export_matches_pytorch(exported, load_pretrained, model, height, width):
    result = exported(model, height, width)
    assert result.parity.passed and result.traced_parity.passed  # export_onnx raises otherwise
    assert result.parity.matched_fraction >= 0.99 and result.parity.cosine_median >= MIN_COSINE["fp32"]
    assert result.parity.reference_count > 100, "the parity frame should give plenty of keypoints"
    check_engine_against_torch(result, load_pretrained, "fp32")


@pytest.mark.slow
@pytest.mark.parametrize("height, width", SIZES, ids=["480x640", "376x1241"])
def test_fp16_export_matches_pytorch(exported, load_pretrained, height, width):
    result = exported("aliked-t16", height, width, fp16=True)
    assert result.metadata.precision == "fp16"
    # Both the file through onnxruntime and the traced module's float16 arithmetic in PyTorch.
    for report in (result.parity, result.traced_parity):
        assert report.matched_fraction >= 0.99 and report.cosine_median >= MIN_COSINE["fp16"], report.summary()
    check_engine_against_torch(result, load_pretrained, "fp16")


@pytest.mark.slow
def test_plain_export_matches_pytorch_without_deformconv(exported, load_pretrained):
    result = exported("aliked-n16rot", 480, 640, deform="plain")
    assert result.metadata.deform == "plain"
    assert "DeformConv" not in {node.op_type for node in onnx.load(result.path).graph.node}
    assert "DeformConv" in {node.op_type for node in onnx.load(exported("aliked-n16rot", 480, 640).path).graph.node}
    check_engine_against_torch(result, load_pretrained, "fp32")


def test_compare_features_detects_differences():
    rng = np.random.default_rng(0)
    keypoints = rng.uniform(0, 500, size=(300, 2)).astype(np.float32)
    scores = np.sort(rng.uniform(0.1, 1, size=300)).astype(np.float32)[::-1]
    descriptors = rng.normal(size=(300, 64)).astype(np.float32)
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    same = (keypoints, scores, descriptors)
    assert compare_features(same, same, "fp32").passed
    padded = (np.vstack([keypoints, np.zeros((50, 2), np.float32)]),
              np.concatenate([scores, np.zeros(50, np.float32)]),
              np.vstack([descriptors, np.zeros((50, 64), np.float32)]))
    assert compare_features(same, padded, "fp32").passed  # score-0 slots do not count
    shifted = (keypoints + np.float32(0.6), scores, descriptors)
    assert compare_features(same, shifted, "fp32").matched == 0
    noisy = descriptors + rng.normal(scale=0.05, size=descriptors.shape).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    report = compare_features(same, (keypoints, scores, noisy), "fp32")
    assert report.matched == 300 and not report.passed  # cosine about 0.92
    assert compare_features(same, (keypoints[:290], scores[:290], descriptors[:290]), "fp32").matched_fraction < 0.99


# --- what the graphs are made of ----------------------------------------------------------------------------------

GRAPH_CASES = [("aliked-t16", 480, 640, False, "deformconv"), ("aliked-n32", 376, 1241, False, "deformconv"),
               ("aliked-t16", 376, 1241, True, "deformconv"), ("aliked-n16rot", 480, 640, False, "plain")]


def case_id(case) -> str:
    model, height, width, fp16, deform = case
    return f"{model}-{width}x{height}-{'fp16' if fp16 else 'fp32'}-{deform}"


@pytest.mark.parametrize("case", GRAPH_CASES, ids=case_id)
def test_graph_is_one_tensorrt_parses(exported, case):
    """Operators, the data type each is applied to, opset and TopK as TensorRT's ONNX parser documents them."""
    model = onnx.load(exported(*case[:3], fp16=case[3], deform=case[4]).path)
    assert [entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")] == [OPSET]
    assert OPSET <= TENSORRT_MAX_OPSET
    used = {node.op_type for node in model.graph.node}
    unsupported = used - set(TENSORRT_OPERATORS)
    assert not unsupported, f"not in TensorRT {TENSORRT_VERSION}'s parser: {unsupported}"
    assert not used & {"Shape", "Range"}, "image-size arithmetic should be folded away"
    types = tensor_types(model)
    for node in model.graph.node:
        if node.op_type == "Constant" or not node.input:
            continue
        data_type = _TYPE_NAMES.get(types.get(node.input[0]), types.get(node.input[0]))
        assert data_type in TENSORRT_OPERATORS[node.op_type], f"{node.name} ({node.op_type}) on {data_type}"
        if node.op_type == "TopK":
            k = next(n for n in model.graph.node if node.input[1] in n.output)
            assert int(onnx.numpy_helper.to_array(k.attribute[0].t).reshape(-1)[0]) <= TENSORRT_TOPK_LIMIT
            assert all(attribute.i == 1 for attribute in node.attribute if attribute.name == "sorted")


def test_input_is_uint8_and_only_cast(exported):
    import onnxruntime

    result = exported("aliked-t16", 480, 640)
    model = onnx.load(result.path)
    (image,) = [value for value in model.graph.input]
    assert image.name == "image" and image.type.tensor_type.elem_type == TensorProto.UINT8
    assert [dim.dim_value for dim in image.type.tensor_type.shape.dim] == [480, 640, 3]
    # TensorRT takes UINT8 only as a network input or output and into a Cast.
    consumers = [node for node in model.graph.node if "image" in node.input]
    assert [node.op_type for node in consumers] == ["Cast"]
    assert helper.get_attribute_value(consumers[0].attribute[0]) == TensorProto.FLOAT
    outputs = {value.name: value.type.tensor_type.elem_type for value in model.graph.output}
    assert outputs == {"keypoints": TensorProto.FLOAT, "scores": TensorProto.FLOAT, "descriptors": TensorProto.FLOAT}
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(uint8)"
    with pytest.raises(Exception, match="(?i)type"):  # onnxruntime refuses float pixels
        session.run(None, {"image": np.zeros((480, 640, 3), np.float32)})


def test_fp16_graph_computes_in_fp16(exported):
    fp16 = onnx.load(exported("aliked-t16", 376, 1241, fp16=True).path)
    types = tensor_types(fp16)
    compute = [node for node in fp16.graph.node if node.op_type in COMPUTE_OPERATORS]
    assert {node.op_type for node in compute} >= {"Conv", "DeformConv"}
    for node in compute:  # data, weights and bias of every convolution and matrix product
        assert {types[name] for name in node.input if name} == {TensorProto.FLOAT16}, node.name
    weights = [init for init in fp16.graph.initializer if len(init.dims) == 4]
    assert weights and all(init.data_type == TensorProto.FLOAT16 for init in weights)
    cast = next(node for node in fp16.graph.node if "image" in node.input)
    assert helper.get_attribute_value(cast.attribute[0]) == TensorProto.FLOAT16  # uint8 straight to float16
    assert all(value.type.tensor_type.elem_type == TensorProto.FLOAT for value in fp16.graph.output)

    fp32 = onnx.load(exported("aliked-t16", 480, 640).path)
    assert TensorProto.FLOAT16 not in set(tensor_types(fp32).values())


def test_metadata_round_trip(exported):
    result = exported("aliked-n32", 376, 1241)
    metadata = read_onnx_metadata(result.path)
    assert metadata == result.metadata
    assert (metadata.model, metadata.top_k, metadata.height, metadata.width) == ("aliked-n32", TOP_K, 376, 1241)
    assert (metadata.precision, metadata.descriptor_size, metadata.deform) == ("fp32", 128, "deformconv")
    props = {prop.key for prop in onnx.load(result.path).metadata_props}
    assert props == {"model", "top_k", "height", "width", "precision", "descriptor_size", "deform",
                     "aliked_ros_version", "input_format"}


# --- the command line ---------------------------------------------------------------------------------------------

def test_cli_export_shows_stages_and_writes_atomically(tmp_path, capsys):
    output = tmp_path / "small.onnx"
    code = main(["export-onnx", "--model", "aliked-t16", "--height", "96", "--width", "128", "--top-k", "200",
                 "--output", str(output)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    for stage in ("loading", "tracing", "checking the graph", "onnxruntime", "parity", "wrote"):
        assert stage in captured.err
    metadata = read_onnx_metadata(output)
    assert (metadata.model, metadata.top_k, metadata.height, metadata.width) == ("aliked-t16", 200, 96, 128)
    assert (metadata.precision, metadata.descriptor_size, metadata.deform) == ("fp32", 64, "deformconv")
    assert metadata.aliked_ros_version == aliked_ros.__version__
    assert [path.name for path in tmp_path.iterdir()] == ["small.onnx"]  # no temporary left behind


def test_failed_check_leaves_no_file(tmp_path, monkeypatch):
    from aliked_ros.export import onnx_export

    def failing_check(*args, **kwargs):
        raise AlikedError("parity failed")

    monkeypatch.setattr(onnx_export, "check_parity", failing_check)
    with pytest.raises(AlikedError, match="parity failed"):
        export_onnx(tmp_path / "bad.onnx", "aliked-t16", 64, 96, 100, allow_download=False)
    assert list(tmp_path.iterdir()) == []


# --- bad input ----------------------------------------------------------------------------------------------------

def test_top_k_beyond_tensorrt_or_pixels_is_refused(capsys, tmp_path):
    with pytest.raises(AlikedError, match=f"larger than {TENSORRT_TOPK_LIMIT}.*TopK"):
        validate_export_options("aliked-n16rot", 480, 640, TENSORRT_TOPK_LIMIT + 1)
    validate_export_options("aliked-n16rot", 480, 640, TENSORRT_TOPK_LIMIT)  # the limit itself is fine
    with pytest.raises(AlikedError, match="larger than the 1024 pixels"):
        validate_export_options("aliked-n16rot", 32, 32, 1025)
    with pytest.raises(AlikedError, match="Unknown deform mode"):
        validate_export_options("aliked-n16rot", 480, 640, 1000, "dcn")
    # The engine cache checks the node's top_k here too: the message names the parameter, not export-onnx's flag.
    with pytest.raises(AlikedError, match=r"^top_k must be at least 1 for an exported graph, not -1\.$"):
        validate_export_options("aliked-n16rot", 480, 640, -1)
    code = main(["export-onnx", "--height", "480", "--width", "640", "--top-k", "5000",
                 "-o", str(tmp_path / "x.onnx")])
    assert code == 2 and "TopK" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def foreign_onnx(path, props: dict[str, str] | None = None) -> None:
    """A valid ONNX file that aliked-ros did not write: one Identity node on a uint8 image."""
    value = helper.make_tensor_value_info("image", TensorProto.UINT8, [480, 640, 3])
    output = helper.make_tensor_value_info("out", TensorProto.UINT8, [480, 640, 3])
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["out"])], "foreign", [value], [output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    if props:
        helper.set_model_props(model, props)
    onnx.save(model, path)


def test_onnx_file_that_is_not_ours_is_refused(tmp_path):
    from aliked_ros.engines import create_extractor

    foreign_onnx(tmp_path / "foreign.onnx")
    (tmp_path / "garbage.onnx").write_bytes(b"\x00not an onnx file\xff" * 10)
    lying = OnnxMetadata("aliked-n16rot", 1000, 480, 640, "fp32", 128, "deformconv", "0.1.0")
    foreign_onnx(tmp_path / "lying.onnx", lying.to_props())  # our metadata, someone else's graph

    for name, message in (("foreign", "not exported by aliked-ros"), ("lying", "inputs or outputs differ"),
                          ("missing", "does not exist")):
        with pytest.raises(AlikedError, match=message) as error:
            read_onnx_metadata(tmp_path / f"{name}.onnx")
        assert "aliked-ros export-onnx" in str(error.value)
        with pytest.raises(AlikedError, match=message):
            create_extractor("onnxruntime", onnx_path=tmp_path / f"{name}.onnx")
    with pytest.raises(AlikedError, match="export-onnx"):
        read_onnx_metadata(tmp_path / "garbage.onnx")
    with pytest.raises(AlikedError, match="not an ONNX file"):
        create_extractor("onnxruntime", onnx_path=tmp_path / "garbage.onnx")


def test_engine_refuses_an_image_of_another_size(exported, rgb_frame, gray_frame):
    from aliked_ros.engines import create_extractor

    result = exported("aliked-t16", 376, 1241)
    with create_extractor("onnxruntime", onnx_path=result.path) as engine:
        assert (engine.model, engine.top_k, engine.precision, engine.device) == ("aliked-t16", TOP_K, "fp32", "cpu")
        with pytest.raises(AlikedError, match=r"exported for 1241x376.*--height 480 --width 640"):
            engine.extract(parity_frame(480, 640)[1])
        with pytest.raises(AlikedError, match="exported for 1241x376"):
            engine.extract(np.zeros((376, 1240, 3), np.uint8))


def test_engine_providers(exported):
    import onnxruntime

    from aliked_ros.engines import create_extractor
    from aliked_ros.engines.onnxruntime_engine import resolve_providers

    assert resolve_providers("cpu") == ["CPUExecutionProvider"]
    assert resolve_providers("auto")[-1] == "CPUExecutionProvider"  # the CPU is always the last resort
    with pytest.raises(AlikedError, match="Unknown onnxruntime provider"):
        resolve_providers("gpu")
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(AlikedError, match="no CUDAExecutionProvider.*'cpu' provider"):
            create_extractor("onnxruntime", onnx_path=exported("aliked-t16", 480, 640).path,
                             onnxruntime_providers="cuda")


def test_engine_drops_empty_slots(tmp_path, load_pretrained):
    """More slots than maxima: the graph pads with score 0, the engine returns the maxima only, as torch does."""
    from aliked_ros.engines import create_extractor

    result = export_onnx(tmp_path / "sparse.onnx", "aliked-t16", 64, 96, 3000, allow_download=False)
    _, rgb = parity_frame(64, 96)
    raw_scores = run_torch(load_pretrained("aliked-t16", 3000), rgb)[1]
    with create_extractor("onnxruntime", onnx_path=result.path) as engine:
        features = engine.extract(rgb)
    assert 0 < len(features) < 3000 and (raw_scores == 0).sum() > 0
    assert len(features) == int((raw_scores > 0).sum())
    assert np.all(features.scores > 0) and np.all(np.diff(features.scores) <= 0)


def test_onnxruntime_engine_needs_neither_torch_nor_onnx():
    """A deployment running an exported file needs onnxruntime and numpy only (DESIGN.md's layers)."""
    import subprocess
    import sys

    code = ("import sys, aliked_ros.engines.onnxruntime_engine, aliked_ros.export; "
            "print(sorted({'torch', 'onnx'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
