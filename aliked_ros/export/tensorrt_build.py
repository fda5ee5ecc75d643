"""ONNX → TensorRT plan through TensorRT's Python API: one code path, right on TensorRT 10.x and 11.x.

Written against NVIDIA's documentation:
- "Python API Documentation", the build phase (docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/
  python-api-docs.html, and its 11.0.0 version): Logger, Builder, ``create_network``, ``OnnxParser``,
  ``create_builder_config``, ``build_serialized_network``, timing caches.
- The Builder reference (…/_static/python-api/infer/Core/Builder.html, 10.x and 11.0.0):
  ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` is opt-in on 10.x and deprecated but still accepted on 11.0,
  where every network is strongly typed; ``BuilderFlag.FP16`` is gone in 11. So we always build strongly typed and
  never set a precision flag: the precision is the ONNX file's (``export-onnx --precision fp16``), on both versions alike.
- ``IParserError`` (…/python-api/parsers/Onnx/pyOnnx.html): ``desc()``, ``node()``, and on 10.x ``node_name()`` and
  ``node_operator()``, read where present.
- ``IProgressMonitor`` (10.x, 11.x) for the progress of a build that takes minutes.
- Timing caches (python/docstrings/infer/pyCoreDoc.h, include/NvInfer.h): ``set_timing_cache`` returns False for a
  cache from another device, ``create_timing_cache`` can return None (a ``noexcept`` pointer, bound as is in
  python/src/infer/pyCore.cpp), and ``get_timing_cache`` returns None where no cache is set. A refused cache is
  replaced by an empty one (:func:`attach_timing_cache`); the cache is saved after the plan and its sidecar, and a
  failure to save it is only logged (:func:`save_timing_cache`).

TensorRT cannot be installed on the machines this was written on: this module is kept thin, the rules it relies on
live in ``engine_info`` (tested everywhere), and its own test runs where TensorRT is installed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

from aliked_ros import outputs
from aliked_ros.config import Log
from aliked_ros.errors import AlikedError
from aliked_ros.export.engine_info import (EngineInfo, allows_tf32, check_top_k_for_tensorrt, format_parser_errors,
                                           load_tensorrt, write_sidecar)
from aliked_ros.export.metadata import read_onnx_metadata

FEATURE = "Building a TensorRT engine"
_logger = logging.getLogger(__name__)


def attach_timing_cache(create, attach, saved: bytes, source, log) -> bool:
    """Give a build its timing cache: the saved one where TensorRT takes it, else an empty one.

    ``create`` is ``IBuilderConfig.create_timing_cache`` (bytes → cache, or None where TensorRT cannot read them: a
    cache of another TensorRT version); ``attach`` is ``lambda cache: config.set_timing_cache(cache, False)`` (False
    where the cache was made on another device). Returns whether a cache is attached; without one TensorRT times
    every layer, as on a first build."""
    if saved:
        cache = create(saved)
        if cache is not None and attach(cache):
            return True
        log(f"TensorRT refused the timing cache {source} (made by another TensorRT version or GPU); starting an empty "
            "one, which replaces it after the build")
    cache = create(b"")
    if cache is not None and attach(cache):
        return True
    log("TensorRT could not set up an empty timing cache; building without one")
    return False


def save_timing_cache(get_cache, path, log) -> bool:
    """Write the build's timing cache to ``path``; on any failure log a line and go on (returns whether it was saved).

    ``get_cache`` is ``IBuilderConfig.get_timing_cache`` (None "if no timing cache is set"). Called after the plan and
    its sidecar are written: a cache only speeds up the next build, so it must never cost the one just made."""
    try:
        cache = get_cache()
        if cache is None:
            log(f"TensorRT returned no timing cache, so {path} is not written; the next build times its layers again")
            return False
        outputs.write_bytes(path, bytes(cache.serialize()))
    except Exception as error:  # a full disk, a read-only directory, a cache TensorRT cannot serialise
        log(f"Could not save the timing cache {path} ({error}); the next build times its layers again")
        return False
    return True


def read_timing_cache(path, log) -> bytes:
    """The saved timing cache at ``path`` (b"" where there is none or it cannot be read)."""
    if path is None or not Path(path).is_file():
        return b""
    try:
        return Path(path).read_bytes()
    except OSError as error:
        log(f"Could not read the timing cache {path} ({error}); starting an empty one")
        return b""


def _progress_monitor(trt, log):
    """A TensorRT progress monitor that logs each build phase as it starts and ends (None where unsupported)."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class PhaseLogger(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.started = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            self.started[phase_name] = time.monotonic()
            if parent_phase is None:
                log(f"  {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name, step):
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            if phase_name in self.started:
                log(f"  {phase_name} done in {time.monotonic() - self.started.pop(phase_name):.1f} s")

    return PhaseLogger()


def build_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, *, workspace_mib: int | None = None,
                 optimization_level: int = 3, timing_cache: str | os.PathLike | None = None,
                 log: Log | None = None) -> EngineInfo:
    """Build ``engine_path`` (and its ``.json`` sidecar) from an aliked-ros ONNX file; returns what was built.

    Progress (the phases of a build that takes minutes) goes to ``log``, by default this module's logger."""
    log = log or _logger.info
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    metadata = read_onnx_metadata(onnx_path)
    check_top_k_for_tensorrt(metadata.top_k)
    if not 0 <= optimization_level <= 5:
        raise AlikedError(f"optimization_level must be 0 to 5, not {optimization_level}.")
    onnx_sha256 = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    from aliked_ros.cuda_runtime import current_gpu, tensorrt_logger

    trt = load_tensorrt(FEATURE, metadata.deform)  # 10.1+, or 10.0 for a graph without DeformConv
    gpu_name, compute_capability = current_gpu()
    log(f"Building a TensorRT {trt.__version__} engine for {gpu_name} (sm {compute_capability}) from {onnx_path}: "
        f"{metadata.describe()}")

    logger = tensorrt_logger(trt)  # one per process; it also registers TensorRT's plugins (DeformConv) once
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = []
        for index in range(parser.num_errors):
            error = parser.get_error(index)
            node_name = error.node_name() if hasattr(error, "node_name") else ""
            operator = error.node_operator() if hasattr(error, "node_operator") else ""
            errors.append((error.desc(), error.node(), node_name, operator))
        raise AlikedError(f"TensorRT's ONNX parser refused {onnx_path}:\n{format_parser_errors(errors)}")

    config = builder.create_builder_config()
    if workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    config.builder_optimization_level = optimization_level
    tf32 = allows_tf32(metadata.precision)
    if not tf32:
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default (NvInfer.h): fp32 means fp32
    cache_path = Path(timing_cache) if timing_cache else None
    cache_attached = False
    if cache_path is not None:
        cache_attached = attach_timing_cache(config.create_timing_cache,
                                             lambda cache: config.set_timing_cache(cache, False),
                                             read_timing_cache(cache_path, log), cache_path, log)
    monitor = _progress_monitor(trt, log)
    if monitor is not None:
        config.progress_monitor = monitor

    start = time.monotonic()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise AlikedError(f"TensorRT could not build an engine from {onnx_path} (its log above says why).")
    info = EngineInfo(
        onnx=metadata,
        onnx_sha256=onnx_sha256,
        tensorrt_version=trt.__version__,
        gpu_name=gpu_name,
        compute_capability=compute_capability,
        builder_optimization_level=optimization_level,
        workspace_mib=workspace_mib,
        tf32=tf32,
    )
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    outputs.write_bytes(engine_path, bytes(plan))
    write_sidecar(engine_path, info)  # right after the plan: a plan without its sidecar is rebuilt on every start
    log(f"Wrote {engine_path} ({engine_path.stat().st_size >> 20} MiB) in {time.monotonic() - start:.0f} s")
    if cache_path is not None and cache_attached:
        save_timing_cache(config.get_timing_cache, cache_path, log)
    return info
