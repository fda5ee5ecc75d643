"""The original's dense formulation of ALIKED's maps, the reference the fast one is tested against.

The package computes the score map with the score head's first 1×1 convolution applied before upsampling, and reads
the feature map only where the descriptor head asks (``aliked_ros.model.feature_lookup.FeaturePyramid``). Here the
full-resolution ``dim``-channel map is built as the original builds it, and read as a plain materialised tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from aliked_ros.model.feature_lookup import NORMALIZE_EPS, FeatureLookup, FeaturePyramid
from aliked_ros.model.network import AlikedNetwork


def dense_maps(network: AlikedNetwork, image: Tensor) -> tuple[Tensor, Tensor]:
    """The score map ``(B, 1, H, W)`` and the materialised normalised feature map ``(B, dim, H, W)``, computed as
    the original does (the reference for ``AlikedNetwork.score_map_and_features``)."""
    height, width = image.shape[-2:]
    levels, (top, left) = network._levels(image)
    full = levels[0].shape[-2:]
    upsampled = [F.interpolate(level, size=full, mode="bilinear", align_corners=True) for level in levels[1:]]
    features = torch.cat([levels[0], *upsampled], dim=1)
    crop = (..., slice(top, top + height), slice(left, left + width))
    score_map = torch.sigmoid(network.score_head(features))
    feature_map = F.normalize(features, p=2.0, dim=1, eps=NORMALIZE_EPS)
    return score_map[crop], feature_map[crop]


class DenseFeatureMap(FeatureLookup):
    """A materialised ``(1, dim, H, W)`` feature map, already L2-normalised, read like a FeaturePyramid."""

    def __init__(self, feature_map: Tensor):
        _, self.dim, self.height, self.width = feature_map.shape
        self.dtype = feature_map.dtype
        self._flat = feature_map.reshape(self.dim, self.height * self.width)

    def vectors(self, columns: Tensor, rows: Tensor) -> Tensor:
        compute_dtype = torch.promote_types(self.dtype, torch.float32)
        return self._flat[:, (rows * self.width + columns).reshape(-1)].view(-1, *columns.shape).to(compute_dtype)


def channels_first(pyramid: FeaturePyramid) -> FeaturePyramid:
    """A copy of ``pyramid`` that gathers from channels-first levels, as it does on CUDA, on any device."""
    copy = FeaturePyramid(pyramid.levels, pyramid.top, pyramid.left, pyramid.height, pyramid.width)
    copy.pixel_rows = False
    copy._sources = [copy._source(level) for level in copy.levels]
    return copy
