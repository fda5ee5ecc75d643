"""The few CUDA runtime calls the TensorRT engine needs, through cuda-python (no torch, no pycuda).

cuda-python moved its runtime bindings from ``cuda.cudart`` to ``cuda.bindings.runtime`` in 12.6; both are accepted.
Every call's status is checked: a failing call raises with CUDA's own error name.
"""

from __future__ import annotations

import ctypes

import numpy as np

from aliked_ros.dependencies import missing_package


def cudart():
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise missing_package("The tensorrt engine", "cuda") from None
    return runtime


def check(result):
    """Unpack a cuda-python result tuple ``(status, *values)``, raising on a status other than success."""
    runtime = cudart()
    status, *values = result if isinstance(result, tuple) else (result,)
    if status != runtime.cudaError_t.cudaSuccess:
        _, name = runtime.cudaGetErrorName(status)
        raise RuntimeError(f"CUDA error {name.decode() if isinstance(name, bytes) else name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


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
        self.host_pointer = check(runtime.cudaMallocHost(self.nbytes))
        self.device_pointer = check(runtime.cudaMalloc(self.nbytes))
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
        runtime = cudart()
        if self.device_pointer is not None:
            check(runtime.cudaFree(self.device_pointer))
            check(runtime.cudaFreeHost(self.host_pointer))
            self.device_pointer = self.host_pointer = None
            self.host = None
