"""Engines behind one :class:`~aliked_ros.engines.base.Extractor` contract, made by one factory from one
configuration (:class:`~aliked_ros.config.ExtractorConfig`).

Each engine's runtime (torch, onnxruntime, tensorrt) is imported inside that engine's module only, and that module
is imported only when the engine is created, so a deployment needs just the runtime it uses.
"""

from __future__ import annotations

import logging
import re

from aliked_ros.config import ExtractorConfig, Log
from aliked_ros.dependencies import require
from aliked_ros.engines.base import Extractor
from aliked_ros.errors import AlikedError

ENGINES = ("torch", "onnxruntime", "tensorrt")
# The packages each engine needs before it loads anything (checked here, and by tools that check early: compare).
RUNTIME_MODULES = {"torch": ("torch",), "onnxruntime": ("onnxruntime",), "tensorrt": ("tensorrt", "cuda")}
_logger = logging.getLogger(__name__)


def create_extractor(config: ExtractorConfig | str | None = None, /, *, log: Log | None = None,
                     **overrides) -> Extractor:
    """The extractor that ``config`` (default: config/aliked.yaml's) with ``overrides`` describes.

    ``create_extractor("torch", model="aliked-t16", device="cpu")`` is short for
    ``create_extractor(ExtractorConfig(engine="torch", model="aliked-t16", device="cpu"))``. What "auto" means here,
    and the engine cache's exports and builds, are said through ``log`` (default: this module's logger). A missing
    runtime is a MissingPackageError (an AlikedError and an ImportError) that names what to install.
    """
    if isinstance(config, str):
        overrides = {"engine": config, **overrides}
        config = None
    log = log or _logger.info
    config = (config or ExtractorConfig()).replace(**overrides).resolved(log)
    log(f"Loading the {config.describe()}")
    for module in RUNTIME_MODULES[config.engine]:
        require(module, f"The {config.engine} engine")
    if config.engine == "torch":
        from aliked_ros.engines.torch_engine import TorchExtractor

        return TorchExtractor(config.model, config.top_k, device=config.device, precision=config.precision,
                              score_threshold=config.score_threshold, max_keypoints=config.max_keypoints,
                              weights=config.weights_path or None, cuda_graph=config.cuda_graph,
                              compile=config.compile, feature_reads=config.feature_reads,
                              background_compile=config.background_compile, compile_mode=config.compile_mode,
                              deform_reads=config.deform_reads, compile_in_subprocess=config.compile_in_subprocess,
                              dense_layers=config.dense_layers)
    if config.engine == "onnxruntime":
        from aliked_ros.engines.onnxruntime_engine import OnnxRuntimeExtractor

        return OnnxRuntimeExtractor(static_engine_file(config, log), onnxruntime_providers(config),
                                    device_id=device_index(config.device), score_threshold=config.score_threshold)
    from aliked_ros.engines.tensorrt_engine import TensorRTExtractor

    return TensorRTExtractor(static_engine_file(config, log), log=log, score_threshold=config.score_threshold)


def static_engine_file(config: ExtractorConfig, log: Log) -> str:
    """The ONNX file or TensorRT plan of a static engine: the one given, else the engine cache's, found or made for
    ``image_height`` × ``image_width``."""
    tensorrt = config.engine == "tensorrt"
    explicit = config.engine_path if tensorrt else config.onnx_path
    if explicit:
        return explicit
    if not (config.image_height and config.image_width):
        raise AlikedError(f"The {config.engine} engine is built for one image size: set image_height and "
                          f"image_width, or {'engine_path' if tensorrt else 'onnx_path'}.")
    from aliked_ros.engines import cache

    find = cache.cached_tensorrt_plan if tensorrt else cache.cached_onnx
    return str(find(config.model, config.image_height, config.image_width, config.top_k, config.precision,
                    directory=config.cache_dir or None, weights=config.weights_path or None, log=log,
                    input_format=config.input_format))


def onnxruntime_providers(config: ExtractorConfig) -> str:
    """onnxruntime's providers: as set, else by the device (cpu → cpu, cuda[:N] → cuda, auto → the best there)."""
    if config.onnxruntime_providers != "auto":
        return config.onnxruntime_providers
    return {"cpu": "cpu", "auto": "auto"}.get(config.device, "cuda")


def device_index(device: str) -> int:
    match = re.fullmatch(r"cuda:(\d+)", device)
    return int(match.group(1)) if match else 0


__all__ = ["ENGINES", "RUNTIME_MODULES", "Extractor", "ExtractorConfig", "create_extractor"]
