"""Engines behind one :class:`~aliked_ros.engines.base.Extractor` contract.

Each engine's runtime (torch, onnxruntime, tensorrt) is imported inside that engine's module only, and that module
is imported only when the engine is created, so a deployment needs just the runtime it uses.
"""

from __future__ import annotations

from aliked_ros.engines.base import Extractor
from aliked_ros.errors import AlikedError

ENGINES = ("torch", "onnxruntime", "tensorrt")


def create_extractor(engine: str = "torch", **options) -> Extractor:
    """An extractor of the named engine; ``options`` are that engine's constructor arguments."""
    if engine == "torch":
        try:
            from aliked_ros.engines.torch_engine import TorchExtractor
        except ImportError as error:
            raise AlikedError(f"The torch engine needs PyTorch ({error}); pip install 'aliked-ros[torch]'.") from None
        return TorchExtractor(**options)
    if engine == "onnxruntime":
        from aliked_ros.engines.onnxruntime_engine import OnnxRuntimeExtractor  # reports a missing onnxruntime

        return OnnxRuntimeExtractor(**options)
    if engine == "tensorrt":
        try:
            from aliked_ros.engines.tensorrt_engine import TensorRTExtractor
        except ImportError as error:
            raise AlikedError(f"The tensorrt engine needs TensorRT's Python package and cuda-python ({error}).") from None
        return TensorRTExtractor(**options)
    raise AlikedError(f"Unknown engine {engine!r}: choose one of {', '.join(ENGINES)}.")


__all__ = ["Extractor", "create_extractor", "ENGINES"]
