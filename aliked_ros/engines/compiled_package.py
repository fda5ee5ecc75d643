"""The torch engine's compiled forward kept as an AOTInductor package, so that a restart loads it instead of compiling.

``torch.compile`` compiles inside the process that runs it: every start of the node imports the compiler and traces
the model with Dynamo again (seconds even where Inductor's on-disk caches hold every kernel). AOTInductor compiles
the same Inductor code ahead of time into a package (a shared library with its kernels and the weights) that a later
process loads in milliseconds without importing the compiler (BENCHMARKS.md, "Start-up"). One package per model,
image size, K, precision, weights, graph revision, torch version and GPU, in the engine cache::

    <cache>/aliked-t16_640x480_k1000_fp16_g1a2b3c4d_torch2.11.0-cu130_sm9.0_NVIDIA-H100-80GB-HBM3.pt2

The package computes the top-k forward of :class:`~aliked_ros.model.aliked.Aliked` on the network input
``(1, 3, H, W)``; the camera-layout conversion and the CUDA graph stay the engine's.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Callable

import torch

from aliked_ros.config import Log
from aliked_ros.engines.cache import cache_root, onnx_stem
from aliked_ros.outputs import atomic_path

_logger = logging.getLogger(__name__)
Forward = Callable[[torch.Tensor], "tuple[torch.Tensor, ...]"]


def runtime_tag(device: torch.device) -> str:
    """What ties a package to this machine: torch's version (the package calls its ABI) and, on CUDA, the GPU (the
    kernels are built and tuned for it): ``torch2.11.0-cu130_sm9.0_NVIDIA-H100-80GB-HBM3``, or ``..._cpu``."""
    version = re.sub(r"[^A-Za-z0-9.]+", "-", torch.__version__)
    if device.type != "cuda":
        return f"torch{version}_cpu"
    major, minor = torch.cuda.get_device_capability(device)
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name(device)).strip("-")
    return f"torch{version}_sm{major}.{minor}_{gpu}"


def package_path(model: str, height: int, width: int, top_k: int, precision: str, device: torch.device, *,
                 directory: str | os.PathLike | None = None, weights: str | os.PathLike | None = None) -> Path:
    stem = onnx_stem(model, height, width, top_k, precision, weights)
    return cache_root(directory) / f"{stem}_{runtime_tag(device)}.pt2"


class _TopKForward(torch.nn.Module):
    """The module torch.export traces: the network input in, the top-k outputs out, K fixed."""

    def __init__(self, aliked: torch.nn.Module, top_k: int):
        super().__init__()
        self.aliked, self.top_k = aliked, top_k

    def forward(self, network_input: torch.Tensor):
        return self.aliked(network_input, self.top_k)


def build_package(aliked: torch.nn.Module, network_input: torch.Tensor, top_k: int, path: Path) -> None:
    """Export the top-k forward at ``network_input``'s shape, dtype and device and compile it to ``path``.

    Written beside ``path`` and renamed over it when complete: an interrupted build leaves no package that a later
    start would try to load.
    """
    from torch._inductor import aoti_compile_and_package  # the compiler: imported only where a package is built

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:  # first: a cache that cannot be written fails before a minute's work
        package = temporary.with_name(temporary.name + ".pt2")  # AOTInductor wants the suffix
        try:
            with torch.inference_mode(False), torch.no_grad():  # export cannot trace inference tensors
                example = network_input.clone()
                program = torch.export.export(_TopKForward(aliked, top_k).eval(), (example,))
            aoti_compile_and_package(program, package_path=str(package))
            os.replace(package, temporary)
        finally:
            if package.exists():
                package.unlink()


def load_package(path: Path, device: torch.device) -> Forward:
    """The package's forward: ``network_input → (keypoints, scores, descriptors)``, on the current CUDA stream (so
    the engine's CUDA graph captures it).

    Through torch's C++ loader, which does not import the compiler (about two seconds of Python imports saved at
    each start); where this torch's loader differs, through ``torch._inductor.aoti_load_package``.
    """
    index = device.index if device.type == "cuda" and device.index is not None else (
        torch.cuda.current_device() if device.type == "cuda" else -1)
    try:
        loader = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, index)
    except (AttributeError, TypeError):  # a torch without the five-argument loader
        from torch._inductor import aoti_load_package

        module = aoti_load_package(str(path))
        return lambda network_input: tuple(module(network_input))
    return lambda network_input: tuple(loader.run([network_input]))


def compiled_forward(aliked: torch.nn.Module, network_input: torch.Tensor, top_k: int, path: Path,
                     log: Log | None = None) -> Forward:
    """The package at ``path``, loaded, or built first where there is none or it does not load (a package left by
    another torch build, or a damaged file). Raises what the build raised where it cannot be built."""
    log = log or _logger.info
    if path.is_file():
        try:
            forward = load_package(path, network_input.device)
            log(f"Using the compiled package {path}")
            return forward
        except Exception as error:  # torch's loader raises RuntimeError for anything it cannot read
            log(f"The compiled package {path} does not load ({_first_line(error)}); compiling it again")
    log(f"Compiling {path.name} (AOTInductor: tens of seconds on a desktop GPU, longer on a Jetson; once per model, "
        "image size, K and precision)")
    build_package(aliked, network_input, top_k, path)
    return load_package(path, network_input.device)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:300]
