"""The TensorRT builder and engine: their rules everywhere, TensorRT itself where it is installed."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from aliked_ros.comparison import match_features
from aliked_ros import cuda_runtime
from aliked_ros.dependencies import missing_package
from aliked_ros.errors import AlikedError
from aliked_ros.export import engine_info
from aliked_ros.export.engine_info import EngineInfo, TENSORRT_TOPK_LIMIT
from aliked_ros.export.metadata import OnnxMetadata

METADATA = OnnxMetadata("aliked-t16", 500, 64, 96, "fp16", 64, "deformconv", "0.1.0")
INFO = EngineInfo(METADATA, "ab" * 32, "10.3.0", "Orin", "8.7", 3, 1024, tf32=True)


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


def test_fp32_plans_are_built_without_tf32_and_the_sidecar_says_so(tmp_path):
    assert engine_info.allows_tf32("fp32") is False  # BuilderFlag.TF32 is on by default: cleared for fp32
    assert engine_info.allows_tf32("fp16") is True
    fp32 = EngineInfo(OnnxMetadata("aliked-t16", 500, 64, 96, "fp32", 64, "deformconv", "0.1.0"), "ab" * 32,
                      "10.3.0", "Orin", "8.7", 3, None, tf32=False)
    engine = tmp_path / "fp32.engine"
    engine.write_bytes(b"plan")
    engine_info.write_sidecar(engine, fp32)
    assert json.loads((tmp_path / "fp32.engine.json").read_text())["tf32"] is False
    assert engine_info.read_sidecar(engine) == fp32 and "no TF32" in fp32.describe()
    assert engine_info.plan_is_current(engine, "fp32")
    # A sidecar written before TF32 was recorded: its fp32 plan ran in TF32, so the engine cache rebuilds it.
    document = json.loads((tmp_path / "fp32.engine.json").read_text())
    del document["tf32"]
    (tmp_path / "fp32.engine.json").write_text(json.dumps(document))
    assert engine_info.read_sidecar(engine).tf32 is None
    assert not engine_info.plan_is_current(engine, "fp32")
    assert not engine_info.plan_is_current(tmp_path / "missing.engine", "fp32")


def test_tensorrt_older_than_10_1_is_refused_with_what_to_do():
    for version in ("10.1.0", "10.3.0.30", "11.0.0.114"):
        engine_info.check_tensorrt_version(version, "deformconv")
    engine_info.check_tensorrt_version("10.0.1", "plain")  # no DeformConv in the graph: 10.0 parses it
    engine_info.check_tensorrt_version("10.0.1")  # running a plan: any 10.x
    with pytest.raises(AlikedError, match=r"no DeformConv.*`aliked-ros export-onnx --deform plain`"):
        engine_info.check_tensorrt_version("10.0.1.6", "deformconv")
    for version, deform in (("8.6.2", "plain"), ("8.6.2", None), ("8.5.2.2", "deformconv")):
        with pytest.raises(AlikedError, match="too old: aliked-ros needs TensorRT 10.1 or newer"):
            engine_info.check_tensorrt_version(version, deform)
    with pytest.raises(AlikedError, match="cannot read"):
        engine_info.check_tensorrt_version("unknown")


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


# --- the timing cache (NVIDIA's docstrings: set_timing_cache returns False for another device's cache,
# create_timing_cache may return None, get_timing_cache returns None where no cache is set) ---------------------


def recorder(created, attached):
    """``create``/``attach`` standing in for IBuilderConfig's bound methods, returning the given values in turn."""
    calls = []
    created, attached = list(created), list(attached)

    def create(data):
        calls.append(("create", data))
        return created.pop(0)

    def attach(cache):
        calls.append(("attach", cache))
        return attached.pop(0)

    return create, attach, calls


def test_a_usable_timing_cache_is_attached_as_it_is():
    from aliked_ros.export.tensorrt_build import attach_timing_cache

    logs = []
    create, attach, calls = recorder(["saved"], [True])
    assert attach_timing_cache(create, attach, b"saved bytes", "t.cache", logs.append)
    assert calls == [("create", b"saved bytes"), ("attach", "saved")] and logs == []


@pytest.mark.parametrize("created, attached", [
    (["saved", "empty"], [False, True]),  # set_timing_cache: a cache from another device
    ([None, "empty"], [True]),  # create_timing_cache: None for another TensorRT version's bytes
])
def test_a_refused_timing_cache_is_replaced_by_an_empty_one(created, attached):
    from aliked_ros.export.tensorrt_build import attach_timing_cache

    logs = []
    create, attach, calls = recorder(created, attached)
    assert attach_timing_cache(create, attach, b"foreign", "timing.cache", logs.append)
    assert calls[-2:] == [("create", b""), ("attach", "empty")]
    assert len(logs) == 1 and "refused the timing cache timing.cache" in logs[0]


def test_a_build_goes_on_without_a_timing_cache_when_tensorrt_makes_none():
    from aliked_ros.export.tensorrt_build import attach_timing_cache

    logs = []
    create, attach, calls = recorder([None], [])
    assert not attach_timing_cache(create, attach, b"", "t.cache", logs.append)
    assert calls == [("create", b"")] and "building without one" in logs[0]
    create, attach, calls = recorder(["empty"], [False])
    assert not attach_timing_cache(create, attach, b"", "t.cache", logs.append)


def test_saving_the_timing_cache_never_fails_the_build(tmp_path):
    from aliked_ros.export.tensorrt_build import save_timing_cache

    logs = []
    path = tmp_path / "t.cache"
    assert not save_timing_cache(lambda: None, path, logs.append)  # get_timing_cache: None, no cache set
    assert not path.exists() and "no timing cache" in logs[-1]

    def broken():
        raise RuntimeError("serialisation failed")

    assert not save_timing_cache(lambda: SimpleNamespace(serialize=broken), path, logs.append)
    assert "serialisation failed" in logs[-1] and not path.exists()
    missing = tmp_path / "no such directory" / "t.cache"
    assert not save_timing_cache(lambda: SimpleNamespace(serialize=lambda: b"x"), missing, logs.append)
    assert save_timing_cache(lambda: SimpleNamespace(serialize=lambda: b"cache"), path, logs.append)
    assert path.read_bytes() == b"cache"


# --- the engine's returns and resources ---------------------------------------------------------------------------


def test_none_from_create_execution_context_and_false_from_set_tensor_address_are_sentences():
    from aliked_ros.engines.tensorrt_engine import check_tensor_address, require_execution_context

    context = object()
    assert require_execution_context(context, "a.engine") is context
    with pytest.raises(AlikedError, match="could not create an execution context for a.engine"):
        require_execution_context(None, "a.engine")
    check_tensor_address(True, "image", "a.engine")
    with pytest.raises(AlikedError, match=r"tensor 'scores' of a.engine \(set_tensor_address returned False\)"):
        check_tensor_address(False, "scores", "a.engine")


def test_release_goes_in_reverse_order_past_failures():
    from aliked_ros.engines.tensorrt_engine import release_in_reverse

    released = []

    def failing():
        released.append("stream")
        raise RuntimeError("cudaErrorInvalidResourceHandle")

    held = [("runtime", lambda: released.append("runtime")), ("engine", lambda: released.append("engine")),
            ("stream", failing), ("buffers", lambda: released.append("buffers"))]
    assert release_in_reverse(held) == ["stream: cudaErrorInvalidResourceHandle"]
    assert released == ["buffers", "stream", "engine", "runtime"] and held == []


class Made:
    """A stand-in for a TensorRT object: destroyed, and recorded in ``destroyed``, when its last reference goes."""

    def __init__(self, name, destroyed):
        self.name, self.destroyed = name, destroyed

    def __del__(self):
        self.destroyed.append(self.name)


def test_close_drops_context_engine_and_runtime_after_the_buffers(tmp_path):
    """The extractor's own bookkeeping (``_hold``, ``close``) with stand-ins for what TensorRT and CUDA made."""
    from aliked_ros.engines.tensorrt_engine import TensorRTExtractor

    destroyed = []
    extractor = TensorRTExtractor.__new__(TensorRTExtractor)  # no TensorRT here: only what close() relies on
    extractor.engine_path, extractor._held = tmp_path / "a.engine", []
    for name, attribute in (("runtime", "_runtime"), ("engine", "_engine"), ("context", "_context")):
        extractor._hold(name, attribute, Made(name, destroyed))
    extractor._hold("stream", "_stream", 7, lambda: destroyed.append("stream"))
    extractor._held.append(("buffers", lambda: destroyed.append("buffers")))
    extractor.close()
    assert destroyed == ["buffers", "stream", "context", "engine", "runtime"]
    assert extractor._context is extractor._engine is extractor._runtime is extractor._stream is None
    extractor.close()  # twice is harmless
    assert destroyed == ["buffers", "stream", "context", "engine", "runtime"]


def test_a_start_that_fails_half_way_releases_what_it_made_in_reverse(tmp_path):
    """The real start-or-release step, with a ``_start`` that holds a runtime and an engine (stand-ins) and fails as a
    corrupt plan would: both go, the engine first, and the start's own error is raised even where a release fails."""
    from aliked_ros.engines.tensorrt_engine import TensorRTExtractor

    released = []

    class FailingStart(TensorRTExtractor):
        def _start(self, trt, plan, metadata):
            self._hold("TensorRT runtime", "_runtime", Made("runtime", released))
            self._hold("TensorRT engine", "_engine", Made("engine", released), self.release_engine)
            raise AlikedError("TensorRT could not load a.engine")

        def release_engine(self):
            released.append("engine release")
            if self.release_error:
                raise RuntimeError(self.release_error)

    for release_error in (None, "cudaErrorInvalidResourceHandle"):
        released.clear()
        extractor = object.__new__(FailingStart)  # no TensorRT here: only what the start's bookkeeping uses
        extractor.engine_path, extractor._held, extractor.release_error = tmp_path / "a.engine", [], release_error
        with pytest.raises(AlikedError, match="could not load a.engine"):
            extractor._start_or_release(None, b"", None)
        assert released == ["engine release", "engine", "runtime"] and extractor._held == []
        assert extractor._engine is None and extractor._runtime is None


def test_one_tensorrt_logger_for_the_process(monkeypatch):
    """TensorRT keeps one logger pointer and warns when another is passed: builder and engine share one, made once
    and registered once with the plugin library. ``trt`` here is a namespace with the two names it uses."""
    made, registered = [], []

    class Logger:
        WARNING = "warning"

        def __init__(self, severity):
            made.append(severity)

    trt = SimpleNamespace(Logger=Logger, init_libnvinfer_plugins=lambda logger, namespace: registered.append(logger))
    monkeypatch.setattr(cuda_runtime, "_logger", None)
    first = cuda_runtime.tensorrt_logger(trt)
    assert cuda_runtime.tensorrt_logger(trt) is first and made == ["warning"] and registered == [first]


# --- CUDA: the driver against the bindings, and failed calls ------------------------------------------------------


def test_a_driver_older_than_the_bindings_names_the_extra_to_install():
    check = cuda_runtime.check_driver_supports_bindings
    check(12060, 12060)
    check(12020, 12090)  # minor version compatibility within CUDA 12
    check(13000, 12060)  # a newer driver runs older bindings
    check(None, 13000)  # the driver's version could not be read: the first call will say what is wrong
    with pytest.raises(AlikedError, match=r"built for CUDA 13.0, and the NVIDIA driver runs CUDA 12.6 at most.*"
                                          r"aliked-ros\[tensorrt-cu12\].*cuda-python==12.6"):
        check(12060, 13000)  # JetPack 6 with cuda-python 13
    with pytest.raises(cuda_runtime.CudaError, match="needs a driver for CUDA 12 or newer"):
        check(11080, 12000)
    with pytest.raises(AlikedError, match="No NVIDIA driver was found"):
        check(0, 12060)
    assert issubclass(cuda_runtime.CudaError, RuntimeError)


def test_failed_cuda_calls_say_what_to_do():
    assert "tensorrt-cu12" in cuda_runtime.cuda_error_message("cudaErrorInsufficientDriver")
    assert "smaller image size" in cuda_runtime.cuda_error_message("cudaErrorMemoryAllocation")
    assert cuda_runtime.cuda_error_message("cudaErrorUnknown").startswith("A CUDA call failed with cudaErrorUnknown")


def test_missing_tensorrt_or_cuda_python_is_one_sentence():
    for module in ("tensorrt", "cuda"):  # the pair for each CUDA major, as README's "Installing TensorRT" says
        sentence = str(missing_package("The tensorrt engine", module))
        assert "pip install 'aliked-ros[tensorrt-cu12]' for a CUDA 12 driver (cuda-python 12.x)" in sentence
        assert "'aliked-ros[tensorrt-cu13]' for a CUDA 13 driver" in sentence and "python3-libnvinfer" in sentence
        assert 'pip install "cuda-python==12.6.*"' in sentence
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(AlikedError, match="needs TensorRT's Python package, which is not installed here"):
            engine_info.load_tensorrt("The tensorrt engine")
    try:
        import cuda.bindings.runtime  # noqa: F401
    except ImportError:
        with pytest.raises(AlikedError, match="needs cuda-python"):
            cuda_runtime.cudart()


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


def test_build_engine_command_refuses_an_existing_output_and_shows_progress(tmp_path, capsys, monkeypatch):
    from aliked_ros.cli import main
    from aliked_ros.export import tensorrt_build

    (tmp_path / "exists.engine").write_bytes(b"")
    assert main(["build-engine", str(tmp_path / "x.onnx"), "-o", str(tmp_path / "exists.engine")]) == 2
    assert "add --overwrite" in capsys.readouterr().err
    # The library logs a build's phases to its logger; the command passes its own log, so they show on stderr.
    monkeypatch.setattr(tensorrt_build, "build_engine", lambda onnx, engine, *, log, **options: log("  phase 1"))
    assert main(["build-engine", str(tmp_path / "x.onnx"), "-o", str(tmp_path / "new.engine")]) == 0
    assert "  phase 1\n" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tensorrt_engine(tmp_path_factory):
    pytest.importorskip("tensorrt", reason="needs TensorRT (not installable on this machine)")
    # cuda-python's runtime bindings, not just a `cuda` namespace (which cuda-pathfinder alone provides)
    pytest.importorskip("cuda.bindings.runtime", reason="needs cuda-python 12.6 or newer")
    from aliked_ros.export.onnx_export import export_onnx
    from aliked_ros.export.tensorrt_build import build_engine

    directory = tmp_path_factory.mktemp("trt")
    export_onnx(directory / "t16.onnx", "aliked-t16", 480, 640, 1000, fp16=True)
    build_engine(directory / "t16.onnx", directory / "t16.engine")
    return directory / "t16.engine"


def test_tensorrt_engine_matches_torch(tensorrt_engine, rgb_frame):
    from aliked_ros.engines import create_extractor

    frame = rgb_frame
    if frame.shape[:2] != (480, 640):  # scikit-image's 512x512 astronaut where the TUM frames are absent
        import cv2

        frame = cv2.resize(frame, (640, 480), interpolation=cv2.INTER_AREA)
    frame = np.ascontiguousarray(frame)
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
