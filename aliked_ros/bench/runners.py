"""A planned row opened for timing: an engine (torch, onnxruntime, TensorRT) or a reference, behind one callable."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from aliked_ros.bench.images import ImageSet
from aliked_ros.bench.references import KorniaReference, LightGlueReference
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
    extractor: object = None  # an engine row's Extractor (the frame path runs through it); None for a reference


# Reference runtimes: (class, the name its description starts with).
REFERENCES = {"kornia": (KorniaReference, "kornia ALIKED"), "lightglue": (LightGlueReference, "LightGlue ALIKED")}


def open_runner(row: PlannedRow, model: str, top_k: int, images: ImageSet, *, cache_dir=None, weights=None,
                log: Callable[[str], None] = print) -> Runner:
    spec = row.spec
    if spec.runtime in REFERENCES:
        reference_class, name = REFERENCES[spec.runtime]
        reference = reference_class(model, top_k, row.device, spec.compile_mode, weights)
        mode = {None: "eager", "default": "torch.compile", "reduce-overhead": "torch.compile reduce-overhead"}
        return Runner(reference, lambda result: len(result[1]), lambda result: None, row.device,
                      f"{name}, {mode[spec.compile_mode]}, {model}, fp32, {row.device}, top-k {top_k}",
                      torch_memory=row.device.startswith("cuda"))
    from aliked_ros.engines import ExtractorConfig, create_extractor

    # A row is an override of the one configuration; static engines come from the engine cache for the set's size.
    config = ExtractorConfig(engine=spec.runtime, model=model, top_k=top_k, precision=spec.precision,
                             score_threshold=0.0, weights_path=str(weights or ""), cache_dir=str(cache_dir or ""),
                             image_height=images.height, image_width=images.width)
    if spec.runtime == "torch":
        config = config.replace(device=row.device, cuda_graph=spec.cuda_graph, compile=spec.compile_mode is not None,
                                feature_reads=spec.feature_reads, compile_mode=spec.compile_mode or "default",
                                deform_reads=spec.deform_reads, dense_layers=spec.dense_layers)
    elif spec.runtime == "onnxruntime":
        config = config.replace(onnxruntime_providers=row.provider)
    extractor = create_extractor(config, log=log)
    return Runner(extractor.extract, len, lambda features: features, extractor.device, extractor.describe(),
                  torch_memory=spec.runtime == "torch" and row.device.startswith("cuda"), close=extractor.close,
                  extractor=extractor)
