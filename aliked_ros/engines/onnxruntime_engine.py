"""The onnxruntime engine: an aliked-ros ONNX file run by onnxruntime, on the CPU or through its CUDA or TensorRT
execution providers. onnxruntime is imported here and nowhere else outside the export's parity check."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from aliked_ros import validation
from aliked_ros.dependencies import missing_package
from aliked_ros.engines.base import Extractor
from aliked_ros.errors import AlikedError
from aliked_ros.export.metadata import EXPORT_HINT, INPUT_NAME, OUTPUT_NAMES, OnnxMetadata, pixels_for_input
from aliked_ros.features import Features

try:
    import onnxruntime
except ImportError:  # the message that matters is raised when the engine is created
    onnxruntime = None

PROVIDER_CHOICES = ("auto", "cpu", "cuda", "tensorrt")
_CPU, _CUDA, _TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


def _require_onnxruntime():
    if onnxruntime is None:
        raise missing_package("The onnxruntime engine", "onnxruntime")
    return onnxruntime


def resolve_providers(choice: str, device_id: int = 0, tensorrt_cache: str | os.PathLike | None = None) -> list:
    """The onnxruntime provider list for 'cpu', 'cuda', 'tensorrt' or 'auto' (TensorRT, else CUDA, else CPU).

    Each GPU choice lists the slower providers after it, for the nodes the first one does not take.
    Raises AlikedError when the provider asked for is not in this onnxruntime build.
    """
    if choice not in PROVIDER_CHOICES:
        raise AlikedError(f"Unknown onnxruntime provider {choice!r}: choose one of {', '.join(PROVIDER_CHOICES)}.")
    available = _require_onnxruntime().get_available_providers()
    if choice == "auto":
        choice = "tensorrt" if _TENSORRT in available else "cuda" if _CUDA in available else "cpu"
    wanted = {"cpu": _CPU, "cuda": _CUDA, "tensorrt": _TENSORRT}[choice]
    if wanted not in available:
        raise AlikedError(f"This onnxruntime has no {wanted} (it has {', '.join(available)}); install "
                          "onnxruntime-gpu with CUDA (and TensorRT for 'tensorrt'), or use the 'cpu' provider.")
    cuda = (_CUDA, {"device_id": device_id})
    if choice == "cpu":
        return [_CPU]
    if choice == "cuda":
        return [cuda, _CPU]
    # The precision is in the graph (fp16 graphs are float16 already), so no fp16 flag. TensorRT builds its engine
    # when the session opens (minutes): cache it, by default in aliked_ros's cache directory.
    if tensorrt_cache is None:
        from aliked_ros.model.weights import cache_dir  # plain Python, no torch

        tensorrt_cache = cache_dir() / "onnxruntime_tensorrt"
    Path(tensorrt_cache).mkdir(parents=True, exist_ok=True)
    tensorrt_options = {"device_id": device_id, "trt_engine_cache_enable": True,
                        "trt_engine_cache_path": str(tensorrt_cache)}
    return [(_TENSORRT, tensorrt_options), cuda, _CPU]


def read_session_metadata(onnx_path: str | os.PathLike) -> OnnxMetadata:
    """Our metadata of ``onnx_path`` read through onnxruntime (no onnx package needed); AlikedError if not ours.

    A CPU session without graph optimisation is cheap to open, so a foreign file is refused before a GPU
    provider spends time compiling it.
    """
    runtime = _require_onnxruntime()
    path = Path(onnx_path)
    if not path.is_file():
        raise AlikedError(f"The ONNX file {path} does not exist; {EXPORT_HINT}.")
    options = runtime.SessionOptions()
    options.graph_optimization_level = runtime.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = runtime.InferenceSession(str(path), options, providers=[_CPU])
    except Exception as error:  # onnxruntime's own exception types (InvalidProtobuf, Fail, NotImplemented...)
        if "DeformConv" in str(error):
            raise AlikedError(f"onnxruntime {runtime.__version__} cannot run DeformConv; upgrade onnxruntime "
                              "(1.32 has it), or export the graph with `aliked-ros export-onnx --deform plain`."
                              ) from None
        raise AlikedError(f"{path} is not an ONNX file onnxruntime can load ({str(error).strip()[:200]}); "
                          f"{EXPORT_HINT}.") from None
    metadata = OnnxMetadata.from_props(session.get_modelmeta().custom_metadata_map, path)
    inputs = [(value.name, value.type, list(value.shape)) for value in session.get_inputs()]
    outputs = [(value.name, value.type, list(value.shape)) for value in session.get_outputs()]
    expected_inputs = [(INPUT_NAME, "tensor(uint8)", list(metadata.input_shape))]
    expected_outputs = [(name, "tensor(float)", list(metadata.output_shapes[name])) for name in OUTPUT_NAMES]
    if inputs != expected_inputs or outputs != expected_outputs:
        raise AlikedError(f"{path} says it is an aliked-ros export ({metadata.describe()}) but its inputs or "
                          f"outputs differ from that; {EXPORT_HINT}.")
    return metadata


class OnnxRuntimeExtractor(Extractor):
    """An exported ALIKED graph run by onnxruntime.

    Convention (beyond :class:`Extractor`'s):
        - The graph fixes model, image size, ``top_k`` and precision; they are read from the file's metadata
          (:class:`~aliked_ros.export.metadata.OnnxMetadata`), and a file without it is refused.
        - Images must have the graph's size exactly (RGB or grayscale): another size raises AlikedError rather
          than being resized, since resizing would move every keypoint.
        - Top-k mode only: the slots with score 0 (no maximum found) are dropped, nothing else is thresholded.
        - ``providers``: 'cpu' (default), 'cuda', 'tensorrt' (onnxruntime-gpu builds; TensorRT falls back to CUDA
          and then the CPU for nodes it does not take) or 'auto' (the first of TensorRT, CUDA, CPU that this
          onnxruntime has and that starts). A provider named but not started is an AlikedError, not a quiet CPU
          run. ``device`` names what runs, e.g. 'cpu' or 'cuda:0 (tensorrt)'. TensorRT engines are cached in
          ``tensorrt_cache`` (default: ``onnxruntime_tensorrt`` in aliked_ros's cache directory).
        - ``precision`` is the graph's ('fp32' or 'fp16' arithmetic); outputs are float32 either way.
    """

    engine = "onnxruntime"

    def __init__(self, onnx_path: str | os.PathLike, providers: str = "cpu", *, device_id: int = 0,
                 threads: int = 0, tensorrt_cache: str | os.PathLike | None = None, score_threshold: float = 0.0):
        runtime = _require_onnxruntime()
        self.score_threshold = validation.score_threshold(score_threshold)
        self.onnx_path = Path(onnx_path)
        self.metadata = read_session_metadata(self.onnx_path)
        provider_list = resolve_providers(providers, device_id, tensorrt_cache)
        options = runtime.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
        wanted = provider_list[0] if isinstance(provider_list[0], str) else provider_list[0][0]
        try:
            self.session = runtime.InferenceSession(str(self.onnx_path), options, providers=provider_list)
        except Exception as error:  # the file was read already: this is the provider failing (e.g. TensorRT build)
            raise AlikedError(f"onnxruntime could not open {self.onnx_path.name} with {wanted} "
                              f"({str(error).strip()[:300]}); try another provider, e.g. 'cpu'.") from None
        # onnxruntime quietly falls back along the list when a GPU provider fails to load (missing CUDA or
        # TensorRT libraries): fine for 'auto', an error when a provider was named.
        primary = self.session.get_providers()[0]
        if providers != "auto" and primary != wanted:
            raise AlikedError(f"onnxruntime could not start {wanted} (it runs on {primary}); check the CUDA/TensorRT "
                              "installation, or use the 'cpu' provider.")
        self.input_format = self.metadata.input_format
        self.model = self.metadata.model
        self.top_k = self.metadata.top_k
        self.precision = self.metadata.precision
        self.descriptor_size = self.metadata.descriptor_size
        self.height = self.metadata.height
        self.width = self.metadata.width
        self.image_size = (self.height, self.width)
        self.device = "cpu" if primary == _CPU else f"cuda:{device_id}"
        if primary == _TENSORRT:
            self.device += " (tensorrt)"

    def _extract(self, rgb: np.ndarray) -> Features:
        return self._extract_pixels(rgb, "rgb")

    def _extract_pixels(self, pixels: np.ndarray, channel_order: str) -> Features:
        """The camera's pixels, converted on the host only where the graph's input format differs."""
        height, width = pixels.shape[:2]
        if (height, width) != (self.height, self.width):
            raise AlikedError(
                f"The image is {width}x{height} but {self.onnx_path.name} was exported for "
                f"{self.width}x{self.height}; export a graph for this size (aliked-ros export-onnx --height {height} "
                f"--width {width}) or resize the images before extraction."
            )
        graph_input = pixels_for_input(pixels, channel_order, self.input_format, self.onnx_path.name)
        keypoints, scores, descriptors = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: graph_input})
        valid = int(np.count_nonzero(scores > 0))  # scores are sorted, so the kept slots are a prefix
        return Features(keypoints[:valid], scores[:valid], descriptors[:valid], height, width)

    def close(self) -> None:
        self.session = None
