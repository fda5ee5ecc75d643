"""The engine cache: an ONNX file and a TensorRT plan for each model, image size, K and precision.

Given those, :func:`cached_onnx` and :func:`cached_tensorrt_plan` find the file in the cache directory or make it
(export: torch and onnx; build: TensorRT), logging each stage, so a node can start on a clean machine from one
parameter change. Names say what a file holds; plans also name the TensorRT version and GPU they were built for,
because a plan runs only there (see ``export.engine_info``)::

    <cache>/aliked-n16rot_640x480_k1000_fp16_g1a2b3c4d.onnx
    <cache>/aliked-n16rot_640x480_k1000_fp16_g1a2b3c4d_trt10.3.0_sm8.7_Orin.engine (+ .json)

``g…`` is the graph revision: a hash of the source files that define the exported graph, so an upgrade of
aliked_ros that changes the graph exports and builds afresh instead of running a stale file. Weights other than the
published ones add ``_w`` and the start of their MD5.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
from pathlib import Path

from aliked_ros.config import Log
from aliked_ros.model.weights import cache_dir

_logger = logging.getLogger(__name__)

_PACKAGE = Path(__file__).resolve().parent.parent
# Every module whose code shapes the exported graph (the network, detection, sampling, the exporter itself).
GRAPH_SOURCES = tuple(sorted((_PACKAGE / "model").glob("*.py"))) + tuple(
    _PACKAGE / "export" / name for name in ("onnx_export.py", "onnx_graph.py", "metadata.py"))


def source_revision(paths) -> str:
    """The first 8 hex digits of a SHA-1 over the files' names and bytes."""
    digest = hashlib.sha1()
    for path in paths:
        path = Path(path)
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:8]


@functools.cache
def graph_revision() -> str:
    return source_revision(GRAPH_SOURCES)


def weights_tag(weights: str | os.PathLike | None) -> str:
    """'' for the published weights (found by name), else ``_w`` and the start of the given file's MD5."""
    if not weights:
        return ""
    path = Path(weights).expanduser()
    if not path.is_file():
        return ""  # export will say that the file is missing
    return "_w" + hashlib.md5(path.read_bytes()).hexdigest()[:8]


def cache_root(directory: str | os.PathLike | None = None) -> Path:
    return Path(directory).expanduser() if directory else cache_dir() / "engines"


def onnx_stem(model: str, height: int, width: int, top_k: int, precision: str,
              weights: str | os.PathLike | None = None, input_format: str = "rgb") -> str:
    layout = "" if input_format == "rgb" else f"_{input_format}"  # rgb files keep the names they always had
    return f"{model}_{width}x{height}_k{top_k}_{precision}{layout}_g{graph_revision()}{weights_tag(weights)}"


def cached_onnx(model: str, height: int, width: int, top_k: int, precision: str, *,
                directory: str | os.PathLike | None = None, weights: str | os.PathLike | None = None,
                log: Log | None = None, input_format: str = "rgb") -> Path:
    log = log or _logger.info
    path = cache_root(directory) / f"{onnx_stem(model, height, width, top_k, precision, weights, input_format)}.onnx"
    if path.is_file():
        log(f"Using the cached ONNX file {path}")
        return path
    from aliked_ros.export.onnx_export import export_onnx

    log(f"Exporting {path.name} (a minute or so; once per model, size, K and precision)")
    path.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(path, model, height, width, top_k, fp16=precision == "fp16", weights=weights,
                progress=lambda stage: log(f"  export: {stage}"), input_format=input_format)
    return path


def tensorrt_tag(tensorrt_version: str, compute_capability: str, gpu_name: str) -> str:
    """What ties a plan or a timing cache to this machine: ``trt10.3.0_sm8.7_Orin``."""
    gpu_slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-")
    return f"trt{tensorrt_version}_sm{compute_capability}_{gpu_slug}"


def timing_cache_path(directory: str | os.PathLike | None, tensorrt_version: str, compute_capability: str,
                      gpu_name: str) -> Path:
    """The engine cache's timing cache for one TensorRT version, compute capability and GPU: TensorRT refuses a
    timing cache made on another device (``set_timing_cache``) and may refuse one of another version
    (``create_timing_cache`` returns None), so one shared file would be refused on every machine but the last to
    write it."""
    return cache_root(directory) / f"timing_{tensorrt_tag(tensorrt_version, compute_capability, gpu_name)}.cache"


def cached_tensorrt_plan(model: str, height: int, width: int, top_k: int, precision: str, *,
                         directory: str | os.PathLike | None = None, weights: str | os.PathLike | None = None,
                         log: Log | None = None, input_format: str = "rgb") -> Path:
    log = log or _logger.info
    from aliked_ros.cuda_runtime import current_gpu
    from aliked_ros.export.engine_info import load_tensorrt, plan_is_current

    trt = load_tensorrt("The tensorrt engine", "deformconv")  # the cache exports DeformConv: refuse before exporting

    gpu_name, capability = current_gpu()
    stem = onnx_stem(model, height, width, top_k, precision, weights, input_format)
    path = cache_root(directory) / f"{stem}_{tensorrt_tag(trt.__version__, capability, gpu_name)}.engine"
    if plan_is_current(path, precision):
        log(f"Using the cached TensorRT engine {path}")
        return path
    onnx_path = cached_onnx(model, height, width, top_k, precision, directory=directory, weights=weights, log=log,
                            input_format=input_format)
    from aliked_ros.export.tensorrt_build import build_engine

    log(f"Building {path.name} (minutes; once per GPU and TensorRT version)")
    build_engine(onnx_path, path, log=log,
                 timing_cache=timing_cache_path(directory, trt.__version__, capability, gpu_name))
    return path
