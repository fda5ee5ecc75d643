"""The one path from an image message to a Keypoints message, shared by the ROS node and the bag tools."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aliked_ros import validation
from aliked_ros.engines import create_extractor
from aliked_ros.engines.base import Extractor
from aliked_ros.errors import AlikedError
from aliked_ros.features import Features
from aliked_ros.image_messages import message_to_image
from aliked_ros.messages import build_keypoints_message

Log = Callable[[str], None]  # where a step's one-line report goes: the node's logger, a tool's stderr
_logger = logging.getLogger(__name__)


def stamp_seconds(stamp) -> float:
    """A builtin_interfaces/Time (rclpy's or rosbags') in seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


@dataclass(frozen=True)
class ProcessedFrame:
    message: object  # the Keypoints message
    features: Features
    image: object  # the decoded frame (RGB or grayscale uint8), for a debug picture without decoding again


class FrameProcessor:
    """Image message in, Keypoints message out.

    Convention:
        - Takes ``sensor_msgs/Image`` (any encoding of :data:`aliked_ros.image_messages.SUPPORTED_ENCODINGS`) or
          ``sensor_msgs/CompressedImage`` (JPEG/PNG), rclpy's or rosbags' classes alike.
        - Returns a Keypoints message of ``message_class`` whose header is the image's, holding the extractor's
          features with a score strictly above ``score_threshold`` (sorted high → low), for the image's own size.
        - ``score_threshold`` may change between frames (the node's run-time parameter); it is validated.
        - Errors a user can cause (encoding, size) raise AlikedError; the caller decides whether to go on.
    """

    def __init__(self, extractor: Extractor, message_class, score_threshold: float = 0.0):
        self.extractor = extractor
        self.message_class = message_class
        self._score_threshold = validation.score_threshold(score_threshold)

    @property
    def score_threshold(self) -> float:
        return self._score_threshold

    @score_threshold.setter
    def score_threshold(self, value: float) -> None:
        self._score_threshold = validation.score_threshold(value)

    def process(self, image_message) -> ProcessedFrame:
        image = message_to_image(image_message)
        features = self.extractor.extract(image).above(self._score_threshold)
        message = build_keypoints_message(self.message_class, image_message.header, features, self.extractor.model)
        return ProcessedFrame(message, features, image)


STATIC_ENGINES = ("tensorrt", "onnxruntime")


def resolve_engine(values: dict) -> str:
    """The engine that ``engine: auto`` means here: TensorRT where it is installed, else onnxruntime where an ONNX
    file is given or onnxruntime has a GPU provider, else torch. Decided without importing any runtime."""
    engine = values["engine"]
    if engine != "auto":
        return engine
    if values["engine_path"] or (importlib.util.find_spec("tensorrt") and values["device"] != "cpu"):
        return "tensorrt"
    if values["onnx_path"]:
        return "onnxruntime"
    return "torch"


def needs_image_size(values: dict) -> bool:
    """Whether the engine must know the image size before it is made (a static engine from the cache)."""
    engine = resolve_engine(values)
    explicit = values["engine_path"] if engine == "tensorrt" else values["onnx_path"]
    return engine in STATIC_ENGINES and not explicit and not (values["image_height"] and values["image_width"])


def torch_compile_enabled(values: dict, log: Log | None = None) -> bool:
    """Whether the torch engine compiles its CUDA graph: ``torch_compile`` is on, the device is CUDA and Triton is
    there (its absence is logged, not an error: the graph then runs uncompiled)."""
    from aliked_ros.devices import has_triton, resolve_device

    log = log or _logger.info
    if not values["torch_compile"] or resolve_device(values["device"]).type != "cuda":
        return False
    if not has_triton():
        log("torch_compile is on but this PyTorch has no Triton: "
            "the CUDA graph runs uncompiled (slower; see BENCHMARKS.md)")
        return False
    log("torch.compile: the first frame of each image size compiles first "
        "(tens of seconds on a desktop GPU, longer on a Jetson)")
    return True


def extractor_from_parameters(values: dict, log: Log | None = None,
                              image_size: tuple[int, int] | None = None) -> Extractor:
    """The extractor that the node's parameters (``aliked_ros.parameters.resolve``) describe.

    Static engines (tensorrt, onnxruntime) come from ``engine_path``/``onnx_path`` or from the engine cache, built
    for ``image_size`` (else ``image_height`` × ``image_width``). float16 on the CPU is slower than float32 there,
    so the torch engine runs float32 on the CPU whatever ``precision`` says, and logs it. On CUDA the torch engine
    captures each image size as a CUDA graph, compiled first where ``torch_compile`` is on and Triton is there.
    """
    log = log or _logger.info
    engine = resolve_engine(values)
    model, top_k, precision = values["model"], values["top_k"], values["precision"]
    height, width = image_size or (values["image_height"], values["image_width"])
    if engine == "torch" and precision == "fp16":
        from aliked_ros.devices import resolve_device

        if resolve_device(values["device"]).type == "cpu":  # decided before the log line, which says what runs
            log("precision fp16 asked for on the CPU, where it is slower: running fp32")
            precision = "fp32"
    log(f"Loading the {engine} engine for {model} (top_k {top_k}, {precision})")
    if engine == "torch":
        return create_extractor("torch", model=model, top_k=top_k, device=values["device"], fp16=precision == "fp16",
                                weights=values["weights_path"] or None, cuda_graph=True,
                                compile=torch_compile_enabled(values, log))
    explicit = values["engine_path"] if engine == "tensorrt" else values["onnx_path"]
    if not explicit and not (height and width):
        raise AlikedError(f"The {engine} engine is built for one image size: set image_height and image_width, "
                          f"or {'engine_path' if engine == 'tensorrt' else 'onnx_path'}.")
    from aliked_ros.engines import cache

    options = dict(directory=values["cache_dir"] or None, weights=values["weights_path"] or None, log=log)
    if engine == "tensorrt":
        path = explicit or cache.cached_tensorrt_plan(model, height, width, top_k, precision, **options)
        return create_extractor("tensorrt", engine_path=path, log=log)
    if engine == "onnxruntime":
        path = explicit or cache.cached_onnx(model, height, width, top_k, precision, **options)
        providers = {"cpu": "cpu", "auto": "auto"}.get(values["device"], "cuda")
        return create_extractor("onnxruntime", onnx_path=path, providers=providers)
    raise AlikedError(f"Unknown engine {engine!r}.")
