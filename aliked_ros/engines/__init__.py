"""Engines behind one :class:`~aliked_ros.engines.base.Extractor` contract.

Each engine's runtime (torch, onnxruntime, tensorrt) is imported inside that engine's module only, and that module
is imported only when the engine is created, so a deployment needs just the runtime it uses.
"""

from __future__ import annotations

from aliked_ros.dependencies import require
from aliked_ros.engines.base import Extractor
from aliked_ros.errors import InvalidValueError

ENGINES = ("torch", "onnxruntime", "tensorrt")


def create_extractor(engine: str = "torch", **options) -> Extractor:
    """An extractor of the named engine; ``options`` are that engine's constructor arguments. A missing runtime
    is a MissingPackageError (an AlikedError and an ImportError) that names what to install."""
    if engine == "torch":
        require("torch", "The torch engine")
        from aliked_ros.engines.torch_engine import TorchExtractor

        return TorchExtractor(**options)
    if engine == "onnxruntime":
        from aliked_ros.engines.onnxruntime_engine import OnnxRuntimeExtractor  # reports a missing onnxruntime

        return OnnxRuntimeExtractor(**options)
    if engine == "tensorrt":
        require("tensorrt", "The tensorrt engine")
        require("cuda", "The tensorrt engine")
        from aliked_ros.engines.tensorrt_engine import TensorRTExtractor

        return TensorRTExtractor(**options)
    raise InvalidValueError(f"Unknown engine {engine!r}: choose one of {', '.join(ENGINES)}.")


__all__ = ["Extractor", "create_extractor", "ENGINES"]
