"""Where a row's frames spend their time: torch.profiler over frames run after the timed ones, summed per frame."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

PROFILE_TOP = 12
# GPU work by kind, told by the kernel's name (first match wins): where a frame's kernel time goes, in a few numbers.
KERNEL_KINDS = (
    ("copies", ("Memcpy", "Memset")),
    ("top-k and sort (PyTorch)", ("mbtopk", "topk", "radixSort", "sort")),
    ("aliked_ros Triton kernels", ("_feature_pyramid_read_kernel", "_deformable_conv_kernel", "_direct_conv_",
                                   "_finest_level_kernel", "_nms_pass_kernel",
                                   "_top_k_")),
    ("Inductor (Triton)", ("triton_",)),
    ("convolutions and matrix products (cuDNN, cuBLAS, CUTLASS)",
     ("xmma", "cudnn", "gemm", "cutlass", "conv", "Kernel2")),
)
OTHER_KIND = "other"


@dataclass
class ProfiledOperation:
    name: str  # a GPU kernel (or copy) on CUDA, a torch operator on the CPU
    microseconds_per_frame: float
    calls_per_frame: float


@dataclass
class Profile:
    """Where one row's frames spend their time, from torch.profiler over frames run after the timed ones."""

    frames: int
    clock: str  # what was summed: "GPU kernel time" or "CPU operator self time"
    total_us_per_frame: float
    calls_per_frame: float
    top: list[ProfiledOperation]
    by_kind: dict[str, float] | None = None  # µs per frame by KERNEL_KINDS (GPU profiles), largest first


def kernel_kind(name: str) -> str:
    """The KERNEL_KINDS entry a GPU kernel's name belongs to, else "other"."""
    for kind, markers in KERNEL_KINDS:
        if any(marker in name for marker in markers):
            return kind
    return OTHER_KIND


def profile_calls(call: Callable[[np.ndarray], object], frames: Sequence[np.ndarray], count: int, cuda: bool,
                  top: int = PROFILE_TOP) -> Profile:
    """``count`` calls under torch.profiler, frames cycled: GPU kernel time on CUDA, operator self time on the CPU."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as profiler:
        for index in range(count):
            call(frames[index % len(frames)])
        if cuda:
            torch.cuda.synchronize()
    return summarize_profile(profiler.key_averages(), count, cuda, top)


def summarize_profile(events, frames: int, cuda: bool, top: int = PROFILE_TOP) -> Profile:
    """Per-frame totals and the ``top`` largest entries of torch.profiler's ``key_averages()``.

    On CUDA the entries are what ran on the GPU (kernels, copies, memsets, also inside replayed CUDA graphs), timed
    by the GPU; on the CPU they are torch operators with their self time, so nested operators are not counted twice.
    """
    operations = []
    for event in events:
        on_gpu = getattr(event.device_type, "name", str(event.device_type)).upper().endswith("CUDA")
        if on_gpu != cuda:
            continue
        if cuda:
            micros = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0) or 0
        else:
            micros = event.self_cpu_time_total
        if micros > 0:
            operations.append(ProfiledOperation(event.key, micros / frames, event.count / frames))
    operations.sort(key=lambda operation: operation.microseconds_per_frame, reverse=True)
    by_kind = None
    if cuda:
        totals: dict[str, float] = {}
        for operation in operations:
            kind = kernel_kind(operation.name)
            totals[kind] = totals.get(kind, 0.0) + operation.microseconds_per_frame
        by_kind = dict(sorted(totals.items(), key=lambda item: item[1], reverse=True))
    return Profile(frames=frames, clock="GPU kernel time" if cuda else "CPU operator self time",
                   total_us_per_frame=sum(o.microseconds_per_frame for o in operations),
                   calls_per_frame=sum(o.calls_per_frame for o in operations), top=operations[:top], by_kind=by_kind)
