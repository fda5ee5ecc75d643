"""Optional packages, imported where a feature needs them, with one sentence when one is missing.

The same sentence reaches the command line, the Python API and the node: "<feature> needs <package>, which is not
installed here: <install command>." Standard library only.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from aliked_ros.errors import MissingPackageError

# Top-level module → (the package as users know it, how to install it).
PACKAGES = {
    "torch": ("PyTorch", "pip install 'aliked-ros[torch]'"),
    "onnxruntime": ("onnxruntime", "pip install 'aliked-ros[onnxruntime]' (onnxruntime-gpu for CUDA and TensorRT)"),
    "onnx": ("onnx", "pip install 'aliked-ros[export]'"),
    "tensorrt": ("TensorRT's Python package",
                 "pip install 'aliked-ros[tensorrt]' (on a Jetson: JetPack's python3-libnvinfer)"),
    "cuda": ("cuda-python", "pip install cuda-python"),
    "kornia": ("kornia", "pip install kornia"),
    "pynvml": ("nvidia-ml-py", "pip install nvidia-ml-py"),
}


def missing_package(feature: str, module: str, error: ImportError | None = None) -> MissingPackageError:
    """The one sentence for ``feature`` lacking ``module`` (a key of :data:`PACKAGES`). An import that failed for
    another reason than absence (a missing shared library, say) says that reason instead of "not installed"."""
    package, install = PACKAGES[module.partition(".")[0]]
    detail = str(error or "").strip()
    if not detail or detail.startswith("No module named"):
        return MissingPackageError(f"{feature} needs {package}, which is not installed here: {install}.")
    return MissingPackageError(f"{feature} needs {package}, which is installed but does not import ({detail}); "
                               f"reinstall it: {install}.")


def require(module: str, feature: str) -> ModuleType:
    """``import module``, or :func:`missing_package`'s MissingPackageError for ``feature``."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise missing_package(feature, module, error) from None
