"""The tensorrt engine: a prebuilt plan run through TensorRT's Python runtime and cuda-python.

Written against NVIDIA's documentation: "Python API Documentation", the runtime phase
(docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/python-api-docs.html, 10.x and 11.0.0):
``Runtime.deserialize_cuda_engine``, I/O by tensor name (``num_io_tensors``, ``get_tensor_name``,
``get_tensor_mode``, ``get_tensor_shape``, ``get_tensor_dtype``), ``set_tensor_address`` and
``execute_async_v3`` on one CUDA stream; and NVIDIA's TensorRT 10 Python samples (common_runtime.py) for pinned
host buffers with cuda-python. Needs tensorrt, cuda-python and numpy: not torch.

TensorRT cannot be installed on the machines this was written on: the rules (sidecar, compatibility, image size)
live in ROS-free code that is tested everywhere, and this class's own test runs where TensorRT is installed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from aliked_ros import validation
from aliked_ros.cuda_runtime import PinnedBuffer, check, cudart, current_gpu, tensorrt_logger
from aliked_ros.engines.base import Extractor
from aliked_ros.errors import AlikedError
from aliked_ros.export.engine_info import check_runs_here, load_tensorrt, read_sidecar
from aliked_ros.export.metadata import INPUT_NAME, OUTPUT_NAMES, pixels_for_input
from aliked_ros.features import Features


REBUILD = "rebuild it with `aliked-ros build-engine`"


def require_execution_context(context, engine_path):
    """``ICudaEngine.create_execution_context()``'s result, or an AlikedError where it is None.

    The C++ ``createExecutionContext`` is ``noexcept`` and returns a pointer (include/NvInferRuntime.h), which the
    Python binding (python/src/infer/pyCore.cpp) hands back as None on failure; NVIDIA's own samples check it
    (samples/sampleOnnxMNIST/sampleOnnxMNIST.cpp: ``if (!context)``). The usual cause is a GPU without room for the
    plan's activation memory."""
    if context is None:
        raise AlikedError(f"TensorRT could not create an execution context for {engine_path} (its log above says "
                          "why; most often the GPU has no room left for the engine's working memory): close other "
                          "GPU programs, or build an engine for a smaller image size or top_k.")
    return context


def check_tensor_address(accepted, name: str, engine_path) -> None:
    """AlikedError where ``IExecutionContext.set_tensor_address`` returned False (it returns a bool:
    ``bool setTensorAddress(...) noexcept`` in include/NvInferRuntime.h, bound as is in pyCore.cpp)."""
    if not accepted:
        raise AlikedError(f"TensorRT refused the GPU buffer for the tensor {name!r} of {engine_path} "
                          f"(set_tensor_address returned False): the plan does not have the tensors this engine "
                          f"expects; {REBUILD}.")


def release_in_reverse(held: list[tuple[str, Callable[[], None]]]) -> list[str]:
    """Call each release in ``held`` (name, release) from the last acquired to the first, going on past failures;
    ``held`` is left empty. Returns "name: error" for each release that failed.

    The engine acquires the TensorRT runtime, the engine, the execution context, the CUDA stream and the buffers in
    that order, so the buffers go first and the runtime last: NvInferRuntime.h warns that "Destroying the IRuntime
    before destroying all associated ICudaEngine instances results in undefined behavior"."""
    problems = []
    while held:
        name, release = held.pop()
        try:
            release()
        except Exception as error:  # free the rest all the same
            problems.append(f"{name}: {error}")
    return problems


_logger = logging.getLogger(__name__)


class TensorRTExtractor(Extractor):
    """A TensorRT plan built by ``aliked-ros build-engine``.

    Convention (beyond :class:`Extractor`'s):
        - The plan has a fixed image size, ``top_k`` and precision (its sidecar JSON says which); an image of
          another size is refused with a sentence, never resized.
        - A plan built by another TensorRT version or for another compute capability is refused before TensorRT
          tries it; one built on another GPU model of the same capability runs, with a warning in ``warnings``.
        - All memory is allocated once: pinned host and device buffers per I/O tensor, one CUDA stream. A frame is
          one host-to-device copy, one ``execute_async_v3``, three device-to-host copies and one synchronisation.
        - ``close()`` (or leaving a ``with`` block) frees the buffers, the stream, the execution context, the engine
          and the runtime, in the reverse order of their creation; a start that fails half-way frees what it made.
    """

    engine = "tensorrt"

    def __init__(self, engine_path: str | os.PathLike, *, log=None, score_threshold: float = 0.0):
        trt = load_tensorrt("The tensorrt engine")
        self.score_threshold = validation.score_threshold(score_threshold)
        self.engine_path = Path(engine_path)
        self._held: list[tuple[str, Callable[[], None]]] = []  # what to release, in the order it was acquired
        self._buffers: dict[str, PinnedBuffer] = {}
        self._stream = self._context = self._engine = self._runtime = None
        info = read_sidecar(self.engine_path)
        gpu_name, compute_capability = current_gpu()
        self.warnings = check_runs_here(info, self.engine_path, trt.__version__, gpu_name, compute_capability)
        for warning in self.warnings:
            (log or _logger.warning)(warning)
        metadata = info.onnx
        self.model, self.top_k, self.precision = metadata.model, metadata.top_k, metadata.precision
        self.descriptor_size = metadata.descriptor_size
        self.input_format = metadata.input_format
        self.image_size = (metadata.height, metadata.width)
        self.device = f"{gpu_name} (sm {compute_capability})"
        try:
            plan = self.engine_path.read_bytes()
        except OSError as error:
            raise AlikedError(f"The engine {self.engine_path} could not be read ({error}).") from None
        self._start_or_release(trt, plan, metadata)

    def _start_or_release(self, trt, plan: bytes, metadata) -> None:
        """:meth:`_start`; where it fails half-way, what it had made is released, the last made first, and its own
        error is raised (not a release's)."""
        try:
            self._start(trt, plan, metadata)
        except BaseException:
            release_in_reverse(self._held)
            raise

    def _hold(self, name: str, attribute: str, value, release: Callable[[], None] | None = None):
        """Keep ``value`` as ``self.<attribute>``, to be released by ``release`` (or by dropping the reference, which
        destroys a TensorRT object) in reverse order."""
        setattr(self, attribute, value)

        def drop():
            try:
                if release is not None:
                    release()
            finally:
                setattr(self, attribute, None)

        self._held.append((name, drop))
        return value

    def _start(self, trt, plan: bytes, metadata) -> None:
        # TensorRT objects live in attributes only (no locals that a traceback would keep alive), so that releasing
        # them destroys them. The bindings keep an engine's runtime and a context's engine alive as well
        # (py::keep_alive<0, 1> on deserialize_cuda_engine and create_execution_context, python/src/infer/pyCore.cpp).
        self._hold("TensorRT runtime", "_runtime", trt.Runtime(tensorrt_logger(trt)))
        if self._hold("TensorRT engine", "_engine", self._runtime.deserialize_cuda_engine(plan)) is None:
            raise AlikedError(f"TensorRT could not load {self.engine_path}: the file is truncated or corrupt; "
                              f"{REBUILD}.")
        expected = {INPUT_NAME: (metadata.input_shape, np.uint8),
                    **{name: (shape, np.float32) for name, shape in metadata.output_shapes.items()}}
        actual = {}
        for index in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(index)
            actual[name] = (tuple(self._engine.get_tensor_shape(name)),
                            np.dtype(trt.nptype(self._engine.get_tensor_dtype(name))))
        if actual != {name: (shape, np.dtype(dtype)) for name, (shape, dtype) in expected.items()}:
            raise AlikedError(f"{self.engine_path} does not have the inputs and outputs its sidecar describes; "
                              f"{REBUILD}.")
        self._hold("execution context", "_context", self._engine.create_execution_context())
        require_execution_context(self._context, self.engine_path)
        stream = check(cudart().cudaStreamCreate())
        self._hold("CUDA stream", "_stream", stream, lambda: check(cudart().cudaStreamDestroy(stream)))
        for name, (shape, dtype) in expected.items():
            self._buffers[name] = PinnedBuffer(shape, dtype)
            self._held.append((f"buffers of {name!r}", lambda name=name: self._buffers.pop(name).free()))
            check_tensor_address(self._context.set_tensor_address(name, int(self._buffers[name].device_pointer)),
                                 name, self.engine_path)

    def _extract(self, rgb: np.ndarray) -> Features:
        return self._extract_pixels(rgb, "rgb")

    def _extract_pixels(self, pixels: np.ndarray, channel_order: str) -> Features:
        """The camera's pixels, converted on the host only where the plan's input format differs."""
        if pixels.shape[:2] != self.image_size:
            height, width = self.image_size
            raise AlikedError(f"The engine {self.engine_path.name} takes {width}x{height} images, and this one is "
                              f"{pixels.shape[1]}x{pixels.shape[0]}: build an engine for this size (the engine cache "
                              "does so when image_height/image_width are 0 or match the camera).")
        rgb = pixels_for_input(pixels, channel_order, self.input_format, self.engine_path.name)
        if self._context is None:
            raise AlikedError(f"The engine {self.engine_path.name} was closed; create a new one.")
        image = self._buffers[INPUT_NAME]
        np.copyto(image.host, rgb)
        image.to_device(self._stream)
        if not self._context.execute_async_v3(self._stream):
            raise AlikedError(f"TensorRT could not run {self.engine_path} (execute_async_v3 returned False; its log "
                              "above says why).")
        for name in OUTPUT_NAMES:
            self._buffers[name].to_host(self._stream)
        check(cudart().cudaStreamSynchronize(self._stream))
        keypoints, scores, descriptors = (self._buffers[name].host for name in OUTPUT_NAMES)
        valid = int(np.count_nonzero(scores > 0))  # empty slots score 0 and sort last
        return Features(keypoints[:valid].copy(), scores[:valid].copy(), descriptors[:valid].copy(), *self.image_size)

    def device_memory(self) -> dict[str, float] | None:
        free, total = check(cudart().cudaMemGetInfo())
        return {"gpu_memory_used_mib": (total - free) / (1 << 20), "gpu_memory_total_mib": total / (1 << 20)}

    def close(self) -> None:
        """Release the buffers, the stream, the execution context, the engine and the runtime, in that order (the
        reverse of their creation); AlikedError naming any that failed, after trying them all."""
        problems = release_in_reverse(getattr(self, "_held", []))
        if problems:
            raise AlikedError(f"Closing the engine {self.engine_path.name} failed for " + "; ".join(problems) + ".")
