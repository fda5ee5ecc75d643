"""A planned row opened for timing: an engine (torch, onnxruntime, TensorRT) or a reference, behind one callable."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from aliked_ros.bench.images import ImageSet
from aliked_ros.bench.references import KorniaReference
from aliked_ros.bench.specs import PlannedRow
from aliked_ros.features import Features


@dataclass
class Runner:
    """A row ready to time: ``call(rgb)`` → result; ``count`` and ``features`` read a result after timing."""

    call: Callable[[np.ndarray], object]
    count: Callable[[object], int]
    features: Callable[[object], Features | None]
    device: str
    description: str
    torch_memory: bool  # whether torch's allocator holds its device memory
    close: Callable[[], None] = lambda: None


def open_runner(row: PlannedRow, model: str, top_k: int, images: ImageSet, *, cache_dir=None, weights=None,
                log: Callable[[str], None] = print) -> Runner:
    spec = row.spec
    if spec.runtime == "kornia":
        reference = KorniaReference(model, top_k, row.device, spec.compile_mode, weights)
        mode = {None: "eager", "default": "torch.compile", "reduce-overhead": "torch.compile reduce-overhead"}
        return Runner(reference, lambda result: len(result[1]), lambda result: None, row.device,
                      f"kornia ALIKED, {mode[spec.compile_mode]}, {model}, fp32, {row.device}, top-k {top_k}",
                      torch_memory=row.device.startswith("cuda"))
    from aliked_ros.engines import create_extractor

    if spec.runtime == "torch":
        extractor = create_extractor("torch", model=model, top_k=top_k, device=row.device,
                                     fp16=spec.precision == "fp16", cuda_graph=spec.cuda_graph,
                                     compile=spec.compile_mode is not None, weights=weights)
    elif spec.runtime == "onnxruntime":
        from aliked_ros.engines.cache import cached_onnx

        path = cached_onnx(model, images.height, images.width, top_k, spec.precision, directory=cache_dir,
                           weights=weights, log=log)
        extractor = create_extractor("onnxruntime", onnx_path=path, providers=row.provider)
    elif spec.runtime == "tensorrt":
        from aliked_ros.engines.cache import cached_tensorrt_plan

        path = cached_tensorrt_plan(model, images.height, images.width, top_k, spec.precision, directory=cache_dir,
                                    weights=weights, log=log)
        extractor = create_extractor("tensorrt", engine_path=path, log=log)
    else:  # pragma: no cover - the specs name only these runtimes
        raise ValueError(spec.runtime)
    return Runner(extractor.extract, len, lambda features: features, extractor.device, extractor.describe(),
                  torch_memory=spec.runtime == "torch" and row.device.startswith("cuda"), close=extractor.close)
