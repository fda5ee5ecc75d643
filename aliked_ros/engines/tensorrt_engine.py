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

import os
from pathlib import Path

import numpy as np

from aliked_ros.dependencies import require
from aliked_ros.engines.base import Extractor
from aliked_ros.engines.cuda_runtime import PinnedBuffer, check, cudart, current_gpu
from aliked_ros.errors import AlikedError
from aliked_ros.export.engine_info import check_runs_here, read_sidecar
from aliked_ros.export.metadata import INPUT_NAME, OUTPUT_NAMES
from aliked_ros.features import Features


class TensorRTExtractor(Extractor):
    """A TensorRT plan built by ``aliked-ros build-engine``.

    Convention (beyond :class:`Extractor`'s):
        - The plan has a fixed image size, ``top_k`` and precision (its sidecar JSON says which); an image of
          another size is refused with a sentence, never resized.
        - A plan built by another TensorRT version or for another compute capability is refused before TensorRT
          tries it; one built on another GPU model of the same capability runs, with a warning in ``warnings``.
        - All memory is allocated once: pinned host and device buffers per I/O tensor, one CUDA stream. A frame is
          one host-to-device copy, one ``execute_async_v3``, three device-to-host copies and one synchronisation.
    """

    engine = "tensorrt"

    def __init__(self, engine_path: str | os.PathLike, *, log=None):
        trt = require("tensorrt", "The tensorrt engine")
        self.engine_path = Path(engine_path)
        info = read_sidecar(self.engine_path)
        gpu_name, compute_capability = current_gpu()
        self.warnings = check_runs_here(info, self.engine_path, trt.__version__, gpu_name, compute_capability)
        for warning in self.warnings:
            (log or print)(warning)
        metadata = info.onnx
        self.model, self.top_k, self.precision = metadata.model, metadata.top_k, metadata.precision
        self.descriptor_size = metadata.descriptor_size
        self.image_size = (metadata.height, metadata.width)
        self.device = f"{gpu_name} (sm {compute_capability})"

        self._logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(self._logger, "")  # plans may hold TensorRT's DeformConv plugin
        self._runtime = trt.Runtime(self._logger)
        try:
            plan = self.engine_path.read_bytes()
        except OSError as error:
            raise AlikedError(f"The engine {self.engine_path} could not be read ({error}).") from None
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise AlikedError(f"TensorRT could not load {self.engine_path}: the file is truncated or corrupt; "
                              "rebuild it with `aliked-ros build-engine`.")
        expected = {INPUT_NAME: ((*self.image_size, 3), np.uint8),
                    **{name: (shape, np.float32) for name, shape in metadata.output_shapes.items()}}
        actual = {}
        for index in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(index)
            actual[name] = (tuple(self._engine.get_tensor_shape(name)), np.dtype(trt.nptype(self._engine.get_tensor_dtype(name))))
        if actual != {name: (shape, np.dtype(dtype)) for name, (shape, dtype) in expected.items()}:
            raise AlikedError(f"{self.engine_path} does not have the inputs and outputs its sidecar describes; "
                              "rebuild it with `aliked-ros build-engine`.")

        self._context = self._engine.create_execution_context()
        self._stream = check(cudart().cudaStreamCreate())
        self._buffers = {name: PinnedBuffer(shape, dtype) for name, (shape, dtype) in expected.items()}
        for name, buffer in self._buffers.items():
            self._context.set_tensor_address(name, int(buffer.device_pointer))

    def _extract(self, rgb: np.ndarray) -> Features:
        if rgb.shape[:2] != self.image_size:
            height, width = self.image_size
            raise AlikedError(f"The engine {self.engine_path.name} takes {width}x{height} images, and this one is "
                              f"{rgb.shape[1]}x{rgb.shape[0]}: build an engine for this size (the engine cache "
                              "does so when image_height/image_width are 0 or match the camera).")
        image = self._buffers[INPUT_NAME]
        np.copyto(image.host, rgb)
        image.to_device(self._stream)
        if not self._context.execute_async_v3(self._stream):
            raise RuntimeError("TensorRT's execute_async_v3 failed")
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
        for buffer in getattr(self, "_buffers", {}).values():
            buffer.free()
        self._buffers = {}
        if getattr(self, "_stream", None) is not None:
            check(cudart().cudaStreamDestroy(self._stream))
            self._stream = None
