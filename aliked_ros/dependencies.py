"""Optional packages, imported where a feature needs them, with one sentence when one is missing.

The same sentence reaches the command line, the Python API and the node: "<feature> needs <package>, which is not
installed here: <install command>." Standard library only.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from aliked_ros.errors import MissingPackageError

# TensorRT and cuda-python come as a pair per CUDA major version (README, "Installing TensorRT"): every hint that
# either is missing says this, so that nobody installs the CUDA 13 default on a CUDA 12 driver.
TENSORRT_INSTALL = ("pip install 'aliked-ros[tensorrt-cu12]' for a CUDA 12 driver (cuda-python 12.x) or "
                    "'aliked-ros[tensorrt-cu13]' for a CUDA 13 driver; on JetPack, apt's python3-libnvinfer and "
                    "pip install \"cuda-python==12.6.*\"")

# Top-level module → (the package as users know it, how to install it).
PACKAGES = {
    "torch": ("PyTorch", "pip install 'aliked-ros[torch]'"),
    "onnxruntime": ("onnxruntime", "pip install 'aliked-ros[onnxruntime]' (onnxruntime-gpu for CUDA and TensorRT)"),
    "onnx": ("onnx", "pip install 'aliked-ros[export]'"),
    "tensorrt": ("TensorRT's Python package", TENSORRT_INSTALL),
    "cuda": ("cuda-python", TENSORRT_INSTALL),
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


def require_installed(module: str, feature: str) -> None:
    """:func:`missing_package`'s MissingPackageError where ``module`` is not installed, found without importing it:
    milliseconds, where importing torch takes seconds, so a command can check every runtime it needs first."""
    try:
        found = importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package is absent
        found = False
    except ValueError:  # imported already, by a loader that left no spec
        found = True
    if not found:
        raise missing_package(feature, module)


def require(module: str, feature: str) -> ModuleType:
    """``import module``, or :func:`missing_package`'s MissingPackageError for ``feature``."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise missing_package(feature, module, error) from None
