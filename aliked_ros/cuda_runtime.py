"""The few CUDA runtime calls the TensorRT builder and engine need, through cuda-python (no torch, no pycuda), and
the process's one TensorRT logger.

cuda-python moved its runtime bindings from ``cuda.cudart`` to ``cuda.bindings.runtime`` in 12.6; both are accepted.
Every call's status is checked: a failing call raises :class:`CudaError` (an AlikedError) with CUDA's own error name
and what to do. Before the first call, the driver's CUDA version is compared with the one the bindings were built
for (:func:`check_driver_supports_bindings`): cuda-bindings 13 on a CUDA 12 driver (JetPack 6) would otherwise fail
its first call with cudaErrorInsufficientDriver.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

from aliked_ros.dependencies import missing_package
from aliked_ros.errors import AlikedError

# The extra that installs TensorRT and cuda-python for each CUDA major version (pyproject.toml).
EXTRAS = {12: "pip install 'aliked-ros[tensorrt-cu12]' (on JetPack 6: pip install 'cuda-python==12.6.*')",
          13: "pip install 'aliked-ros[tensorrt-cu13]'"}


class CudaError(AlikedError, RuntimeError):
    """A CUDA call failed; the message names CUDA's error and says what to do."""


def cuda_version_text(version: int) -> str:
    """CUDA's encoded version (1000 × major + 10 × minor, as cuDriverGetVersion and CUDA_VERSION give it) as text."""
    return f"{version // 1000}.{version % 1000 // 10}"


def check_driver_supports_bindings(driver_version: int | None, bindings_version: int | None) -> None:
    """CudaError unless the NVIDIA driver runs the CUDA major version that cuda-python was built for.

    ``driver_version``: ``cuDriverGetVersion()``'s value (0 where no driver is installed, None where it could not be
    read); ``bindings_version``: ``cuda.bindings.driver.CUDA_VERSION``, the version the bindings were built against
    (None where an old cuda-python lacks it). Only the major versions must agree, as in NVIDIA's own check
    (cuda-python, cuda_bindings/cuda/bindings/utils/_version_check.py): within one major version CUDA's minor
    version compatibility lets newer bindings run on an older driver."""
    if driver_version is None or bindings_version is None:
        return  # unknown: the first CUDA call reports what is wrong
    if driver_version <= 0:
        raise CudaError("No NVIDIA driver was found, and the tensorrt engine needs one: install the NVIDIA driver "
                        "(on a Jetson it comes with JetPack).")
    driver_major, bindings_major = driver_version // 1000, bindings_version // 1000
    if driver_major >= bindings_major:
        return
    found = (f"cuda-python here was built for CUDA {cuda_version_text(bindings_version)}, and the NVIDIA driver runs "
             f"CUDA {cuda_version_text(driver_version)} at most, so every CUDA call would fail")
    if driver_major in EXTRAS:
        raise CudaError(f"{found}: install TensorRT and cuda-python for CUDA {driver_major} instead, "
                        f"{EXTRAS[driver_major]}, or update the driver.")
    raise CudaError(f"{found}: the tensorrt engine needs a driver for CUDA 12 or newer; update the NVIDIA driver "
                    "(on a Jetson, JetPack 6.1 or newer).")


def cuda_error_message(name: str) -> str:
    """The sentence for a failed CUDA call whose status CUDA names ``name`` (cudaGetErrorName)."""
    advice = {
        "cudaErrorInsufficientDriver": "the NVIDIA driver is older than the CUDA that cuda-python was built for: "
                                       "install TensorRT and cuda-python for the driver's CUDA "
                                       "(`aliked-ros[tensorrt-cu12]` for CUDA 12, `aliked-ros[tensorrt-cu13]` for "
                                       "CUDA 13; on JetPack 6 `cuda-python==12.6.*`), or update the driver",
        "cudaErrorCallRequiresNewerDriver": "this call needs a newer NVIDIA driver: update the driver, or install "
                                            "cuda-python for the driver's CUDA (`aliked-ros[tensorrt-cu12]` for "
                                            "CUDA 12; on JetPack 6 `cuda-python==12.6.*`)",
        "cudaErrorNoDevice": "no CUDA GPU is visible: check the driver and CUDA_VISIBLE_DEVICES",
        "cudaErrorMemoryAllocation": "the GPU (or pinned host memory) is full: close other GPU programs, or use a "
                                     "smaller image size or top_k",
    }.get(name, "the tensorrt engine cannot go on; TensorRT's or CUDA's log says more")
    return f"A CUDA call failed with {name}: {advice}."


_bindings = None  # (runtime, driver) once imported and checked
_lock = threading.Lock()


def _import_bindings():
    try:
        from cuda.bindings import driver, runtime
    except ImportError as error:
        try:
            from cuda import cuda as driver, cudart as runtime  # cuda-python before 12.6
        except ImportError:
            raise missing_package("The tensorrt engine", "cuda", error) from None
    return runtime, driver


def _driver_version(driver) -> int | None:
    try:
        status, version = driver.cuDriverGetVersion()  # needs no cuInit
    except Exception:  # a driver library that cannot be loaded: the first runtime call says so
        return None
    return int(version) if status == driver.CUresult.CUDA_SUCCESS else None


def cudart():
    """cuda-python's runtime module, after checking once that the driver runs the bindings' CUDA."""
    global _bindings
    if _bindings is None:
        with _lock:
            if _bindings is None:
                runtime, driver = _import_bindings()
                bindings_version = getattr(driver, "CUDA_VERSION", None)
                check_driver_supports_bindings(_driver_version(driver),
                                               None if bindings_version is None else int(bindings_version))
                _bindings = runtime, driver
    return _bindings[0]


def check(result):
    """Unpack a cuda-python result tuple ``(status, *values)``, raising CudaError on a status other than success."""
    runtime = cudart()
    status, *values = result if isinstance(result, tuple) else (result,)
    if status != runtime.cudaError_t.cudaSuccess:
        _, name = runtime.cudaGetErrorName(status)
        raise CudaError(cuda_error_message(name.decode() if isinstance(name, bytes) else str(name)))
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


_logger = None


def tensorrt_logger(trt):
    """The process's one TensorRT logger, with TensorRT's plugin library registered once.

    TensorRT keeps a single logger pointer for all builders, runtimes and refitters: a second logger is ignored with
    the warning "The logger passed into createInferRuntime differs from one already provided ... TensorRT maintains
    only a single logger pointer at any given time" (NVIDIA/TensorRT issue 1475). ``init_libnvinfer_plugins`` "should
    be called once" (python/docstrings/infer/pyPluginDoc.h) and keeps the logger it was given, so that logger lives
    as long as the process."""
    global _logger
    with _lock:
        if _logger is None:
            logger = trt.Logger(trt.Logger.WARNING)
            if hasattr(trt, "init_libnvinfer_plugins"):  # the parser may map DeformConv to TensorRT's plugin
                trt.init_libnvinfer_plugins(logger, "")
            _logger = logger
    return _logger


def current_gpu() -> tuple[str, str]:
    """(name, compute capability "major.minor") of the current CUDA device."""
    runtime = cudart()
    device = check(runtime.cudaGetDevice())
    properties = check(runtime.cudaGetDeviceProperties(device))
    name = properties.name
    name = name.decode(errors="replace") if isinstance(name, (bytes, bytearray)) else str(name)
    return name.rstrip("\x00").strip(), f"{properties.major}.{properties.minor}"


class PinnedBuffer:
    """Page-locked host memory with a numpy view, and device memory of the same size."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype):
        runtime = cudart()
        self.nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        self.device_pointer = None
        self.host_pointer = check(runtime.cudaMallocHost(self.nbytes))
        try:
            self.device_pointer = check(runtime.cudaMalloc(self.nbytes))
        except BaseException:
            self.free()  # the pinned host memory, already allocated
            raise
        raw = (ctypes.c_uint8 * self.nbytes).from_address(int(self.host_pointer))
        self.host = np.frombuffer(raw, dtype=np.uint8).view(dtype).reshape(shape)

    def to_device(self, stream) -> None:
        runtime = cudart()
        check(runtime.cudaMemcpyAsync(self.device_pointer, self.host_pointer, self.nbytes,
                                      runtime.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))

    def to_host(self, stream) -> None:
        runtime = cudart()
        check(runtime.cudaMemcpyAsync(self.host_pointer, self.device_pointer, self.nbytes,
                                      runtime.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))

    def free(self) -> None:
        """Free the device memory, then the host memory (each once, the second even if the first fails)."""
        runtime = cudart()
        self.host = None  # the numpy view must not outlive the memory it shows
        device, host = self.device_pointer, self.host_pointer
        self.device_pointer = self.host_pointer = None
        try:
            if device is not None:
                check(runtime.cudaFree(device))
        finally:
            if host is not None:
                check(runtime.cudaFreeHost(host))
