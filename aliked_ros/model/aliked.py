"""ALIKED end to end: image in, keypoints, scores and descriptors out."""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from aliked_ros.errors import AlikedError
from aliked_ros.model.camera_layouts import BAYER_PATTERNS, demosaic_bilinear, yuv422_to_rgb
from aliked_ros.model.configs import NMS_RADIUS, get_model_config
from aliked_ros.model.detection import detect_threshold, detect_top_k
from aliked_ros.model.network import AlikedNetwork
from aliked_ros.model.weights import load_state_dict, resolve_weights


def uint8_to_network_input(image: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """(H, W, 3) uint8 RGB → (1, 3, H, W) in [0, 1]: the layout change and scaling the pretrained weights expect."""
    return (image.permute(2, 0, 1).unsqueeze(0).to(dtype) / 255).to(dtype)


def pixels_to_network_input(pixels: Tensor, channel_order: str = "rgb", dtype: torch.dtype = torch.float32) -> Tensor:
    """Camera pixels where they are (the device), grey (H, W), colour (H, W, 3) in ``channel_order``, YUV 4:2:2 or a
    Bayer mosaic (see :mod:`aliked_ros.imaging`) → the network's (1, 3, H, W) RGB input: grey is given as three
    equal channels, BGR reordered, YUV and Bayer converted (:mod:`~aliked_ros.model.camera_layouts`) here, on the
    device, so the host copies and uploads the camera's own bytes only. The same numbers as converting on the host first, and the
    same memory layout as an RGB frame's input, so that a compiled network takes every layout without recompiling."""
    if channel_order in ("uyvy", "yuyv"):
        pixels = yuv422_to_rgb(pixels, channel_order)
    elif channel_order in BAYER_PATTERNS:
        pixels = demosaic_bilinear(pixels, channel_order)
    elif pixels.dim() == 2:
        pixels = pixels.unsqueeze(-1).expand(*pixels.shape, 3).contiguous()
    elif channel_order == "bgr":
        pixels = pixels.flip(-1)  # a contiguous copy, as the grey one
    return uint8_to_network_input(pixels, dtype)


class Aliked(nn.Module):
    """One ALIKED variant with its detector.

    Convention:
        - Input: float RGB ``(1, 3, H, W)`` in ``[0, 1]``, in the network's dtype (see
          :func:`uint8_to_network_input`). A grayscale image is given as three equal channels.
        - Keypoints: float32 ``(N, 2)`` pixels ``(x, y)``, x right, y down, pixel centres at integers, whatever the
          network's dtype. Scores: float32 ``(N,)``, sorted high → low. Descriptors: float32 ``(N, D)``,
          L2-normalised.
        - :meth:`forward` is top-k mode with the ``top_k`` given at construction: exactly ``K`` rows, static shapes
          for a fixed image size (the mode engines export); rows without a maximum score 0 (see ``detection``).
          :meth:`detect_threshold` is threshold mode, PyTorch only.
        - Detection and descriptor sampling run in float32, the dense network in its own dtype (float16 works).
    """

    def __init__(self, model: str, top_k: int = 1000):
        super().__init__()
        self.config = get_model_config(model)
        self.top_k = top_k
        self.rank_sort = False  # see detect_top_k; the compiled CUDA path turns it on
        self.network = AlikedNetwork(self.config)

    @property
    def descriptor_size(self) -> int:
        return self.config.descriptor_size

    def forward(self, image: Tensor, top_k: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Top-k mode; ``top_k`` (a Python int, at most the pixel count) overrides the K of construction."""
        score_map, features = self.network.score_map_and_features(image)
        keypoints, scores = detect_top_k(score_map, top_k or self.top_k, NMS_RADIUS, self.rank_sort,
                                         nms_kernel=self.network.dense_layers == "triton")
        return keypoints, scores, self.network.desc_head(features, keypoints)

    @torch.no_grad()
    def detect_threshold(self, image: Tensor, score_threshold: float, max_keypoints: int) -> tuple[Tensor, Tensor, Tensor]:
        score_map, features = self.network.score_map_and_features(image)
        keypoints, scores = detect_threshold(score_map, score_threshold, max_keypoints, NMS_RADIUS)
        return keypoints, scores, self.network.desc_head(features, keypoints)


def load_aliked(model: str, top_k: int = 1000, weights: str | os.PathLike | None = None, *,
                allow_download: bool = True) -> Aliked:
    """A pretrained :class:`Aliked` on the CPU in float32 and eval mode; weights found as ``weights`` describes."""
    aliked = Aliked(model, top_k)
    path = resolve_weights(model, weights, allow_download=allow_download)
    state = load_state_dict(path)
    try:
        aliked.network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0]
        raise AlikedError(
            f"{path} does not hold {model} weights ({first_line}). Pass the file made for {model}, or choose the "
            "model these weights belong to."
        ) from None
    return aliked.eval()
