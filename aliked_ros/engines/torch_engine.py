"""The torch engine: the ALIKED network run directly by PyTorch, on the CPU or CUDA, in float32 or float16."""

from __future__ import annotations

import os

import numpy as np
import torch

from aliked_ros.engines.base import Extractor
from aliked_ros.errors import AlikedError
from aliked_ros.features import Features
from aliked_ros.model.aliked import load_aliked, uint8_to_network_input

DEFAULT_MAX_KEYPOINTS = 20000  # threshold mode's cap, as the original's n_limit


def resolve_device(device: str) -> torch.device:
    """'cpu', 'cuda', 'cuda:N' or 'auto' (CUDA when available) → a usable torch.device, or AlikedError."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise AlikedError(f"Unknown device {device!r}: use cpu, cuda, cuda:N or auto.") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise AlikedError("CUDA was asked for but PyTorch sees no CUDA device here; use --device cpu.")
    if resolved.type not in ("cpu", "cuda"):
        raise AlikedError(f"Unsupported device {device!r}: use cpu, cuda, cuda:N or auto.")
    return resolved


class TorchExtractor(Extractor):
    """ALIKED in PyTorch eager mode.

    Convention (beyond :class:`Extractor`'s):
        - ``top_k > 0``: top-k mode. ``top_k == -1``: threshold mode, the maxima above ``score_threshold`` (or
          above the map's mean when it is not positive), at most ``max_keypoints`` of them.
        - ``fp16`` runs the network in float16 (CUDA; on the CPU it works but is slow); detection and descriptor
          sampling stay float32.
        - Images of any size at least 32×32 work; each size is computed as it comes.
    """

    engine = "torch"

    def __init__(self, model: str = "aliked-n16rot", top_k: int = 1000, *, device: str = "auto", fp16: bool = False,
                 score_threshold: float = 0.0, max_keypoints: int = DEFAULT_MAX_KEYPOINTS,
                 weights: str | os.PathLike | None = None, allow_download: bool = True):
        if top_k == 0 or top_k < -1:
            raise AlikedError(f"top_k must be positive (top-k mode) or -1 (threshold mode), not {top_k}.")
        if top_k == -1 and max_keypoints < 1:
            raise AlikedError(f"max_keypoints must be at least 1, not {max_keypoints}.")
        self.torch_device = resolve_device(device)
        self.dtype = torch.float16 if fp16 else torch.float32
        self.aliked = load_aliked(model, max(top_k, 1), weights, allow_download=allow_download)
        self.aliked.to(self.torch_device, self.dtype)
        self.model = model
        self.top_k = top_k
        self.score_threshold = score_threshold
        self.max_keypoints = max_keypoints
        self.device = str(self.torch_device)
        self.precision = "fp16" if fp16 else "fp32"
        self.descriptor_size = self.aliked.descriptor_size

    def device_memory(self) -> dict[str, float] | None:
        if self.torch_device.type != "cuda":
            return None
        mib = 1 << 20
        return {
            "gpu_memory_allocated_mib": torch.cuda.memory_allocated(self.torch_device) / mib,
            "gpu_memory_peak_allocated_mib": torch.cuda.max_memory_allocated(self.torch_device) / mib,
            "gpu_memory_reserved_mib": torch.cuda.memory_reserved(self.torch_device) / mib,
        }

    @torch.inference_mode()
    def _extract(self, rgb: np.ndarray) -> Features:
        height, width = rgb.shape[:2]
        if 0 < self.top_k and self.top_k > height * width:
            raise AlikedError(f"top_k {self.top_k} exceeds the {height * width} pixels of a {width}x{height} image.")
        image = torch.from_numpy(rgb).to(self.torch_device, non_blocking=True)
        network_input = uint8_to_network_input(image, self.dtype)
        if self.top_k > 0:
            keypoints, scores, descriptors = self.aliked(network_input)
            valid = int((scores > 0).sum())  # one host sync; the slots without a maximum sort last
            keypoints, scores, descriptors = keypoints[:valid], scores[:valid], descriptors[:valid]
        else:
            keypoints, scores, descriptors = self.aliked.detect_threshold(
                network_input, self.score_threshold, self.max_keypoints)
        return Features(
            keypoints.float().cpu().numpy(),
            scores.float().cpu().numpy(),
            descriptors.float().cpu().numpy(),
            height,
            width,
        )
