"""Sampling a feature map at real-valued pixel positions, in plain tensor ops (gathers and arithmetic).

Every sampler here works in pixel coordinates with pixel centres at integers, which is what
``F.grid_sample(..., align_corners=True, padding_mode="zeros")`` does after un-normalising its grid: a position is
mixed from its four neighbours, and neighbours outside the map count as zero. Positions and weights are computed in
float32 whatever the map's dtype, so that a float16 map is not sampled at float16-rounded coordinates (float16 holds
no integer above 2048 exactly, and only about three digits of a normalised grid coordinate).

The maps are passed flattened as ``(C, B * H * W)``: one gather along the last axis then reads all channels of
many positions at once (ONNX ``Gather``), with no index tensor the size of the output.
"""

from __future__ import annotations

import torch
from torch import Tensor


def flatten_channels_first(feature_map: Tensor) -> Tensor:
    """(B, C, H, W) → (C, B·H·W), the layout the samplers gather from (a view when B is 1)."""
    batch, channels, height, width = feature_map.shape
    return feature_map.transpose(0, 1).reshape(channels, batch * height * width)


def bilinear_taps(height: int, width: int, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The four neighbours that bilinear sampling at pixel positions ``(x, y)`` mixes.

    Args:
        height, width: the map's size.
        x, y: pixel positions of any shape ``S``, float32 or float64.

    Returns:
        columns and rows ``(4, *S)`` int64, clamped inside the map, and weights ``(4, *S)`` in ``x``'s dtype, zero for
        a neighbour outside the map (so reading the clamped neighbour there changes nothing). Neighbour order:
        top-left, top-right, bottom-left, bottom-right.
    """
    x0 = torch.floor(x)
    y0 = torch.floor(y)
    fx = x - x0
    fy = y - y0
    columns = torch.stack((x0, x0 + 1, x0, x0 + 1))
    rows = torch.stack((y0, y0, y0 + 1, y0 + 1))
    weights = torch.stack(((1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy))
    inside = (columns >= 0) & (columns <= width - 1) & (rows >= 0) & (rows <= height - 1)
    weights = weights * inside.to(weights.dtype)
    return columns.clamp(0, width - 1).long(), rows.clamp(0, height - 1).long(), weights


def runs_on_pytorch_cpu_kernels(tensor: Tensor) -> bool:
    """Whether PyTorch's own CPU kernels compute what is done with ``tensor``: not on CUDA (where the fast path
    compiles the graph) and not while tracing for ONNX export (onnxruntime runs the graph). A few operations have a
    formulation that is much faster there and is not used elsewhere, to keep the GPU and ONNX graphs as measured."""
    return not tensor.is_cuda and not torch.onnx.is_in_onnx_export()


def mix_taps(corners: Tensor, weights: Tensor) -> Tensor:
    """``sum_i corners[:, i] * weights[i]``: ``(C, 4, *S)`` neighbour values and ``(4, *S)`` weights → ``(C, *S)``.

    On the CPU as four products and three sums: a reduction over that short middle axis of a gathered (strided)
    tensor is several times slower there (BENCHMARKS.md, CPU section). On CUDA and in ONNX export it
    stays a product and a reduction: the compiled graph fuses either form, and the ONNX graph keeps its two nodes.
    """
    if not runs_on_pytorch_cpu_kernels(corners):
        return (corners * weights.unsqueeze(0)).sum(dim=1)
    return (corners[:, 0] * weights[0] + corners[:, 1] * weights[1]
            + corners[:, 2] * weights[2] + corners[:, 3] * weights[3])


def sample_bilinear(flat_map: Tensor, height: int, width: int, x: Tensor, y: Tensor) -> Tensor:
    """Bilinear samples of a flattened map at pixel positions ``(x, y)``, zero outside the map.

    Args:
        flat_map: ``(C, B*H*W)`` from :func:`flatten_channels_first`.
        height, width: ``H`` and ``W`` of one map.
        x, y: ``(B, M)`` pixel positions, one row per image of the batch.

    Returns:
        ``(C, B, M)`` in the map's dtype.
    """
    batch = x.shape[0]
    # At least float32 for positions, weights and the mixing; float64 stays float64 (reference computations).
    compute_dtype = torch.promote_types(torch.promote_types(flat_map.dtype, x.dtype), torch.float32)
    columns, rows, weights = bilinear_taps(height, width, x.to(compute_dtype), y.to(compute_dtype))  # (4, B, M)
    image_start = (torch.arange(batch, device=x.device) * (height * width)).view(1, batch, 1)
    index = rows * width + columns + image_start
    gathered = flat_map[:, index.reshape(-1)].view(flat_map.shape[0], 4, batch, -1)
    mixed = mix_taps(gathered.to(compute_dtype), weights)
    return mixed.to(flat_map.dtype)
