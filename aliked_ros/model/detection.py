"""ALIKED's keypoint detection (DKD) on a score map: NMS, border removal, top-k or threshold, soft-argmax refinement.

Semantics follow the original implementation (Shiaoming/ALIKED, also in LightGlue's port):

- NMS keeps every position equal to the maximum of its ``(2r+1)²`` window (ties included), then runs two more
  rounds: with the windows around the kept maxima zeroed, positions that became the maximum of their window and lie
  outside those windows are kept too.
- Positions closer than ``r`` pixels to the border are dropped.
- Top-k mode takes the ``K`` highest NMS scores. Where the map has fewer than ``K`` maxima the original fills the
  remaining slots with non-maxima; we keep ``K`` slots (static shapes) but give those fillers the score 0, which no
  sigmoid output reaches, so they sort last and any non-negative score threshold drops them.
- Threshold mode keeps the maxima scoring above the threshold (or above the map's mean when the threshold is not
  positive or no maximum clears it), at most ``max_keypoints`` of them, the highest first.
- Each kept position moves by the soft-argmax of its ``(2r+1)²`` window (temperature 0.1, zero outside the map),
  and its score is the score map sampled bilinearly at the moved position.

Everything here runs in float32 whatever the network's dtype: the keypoints are pixel positions up to a few
thousand, which float16 cannot hold to sub-pixel precision. For a fixed map size and ``K``, top-k detection has
static shapes and no data-dependent control flow, so it exports to ONNX as it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from aliked_ros.model.sampling import flatten_channels_first, runs_on_pytorch_cpu_kernels, sample_bilinear

SOFTARGMAX_TEMPERATURE = 0.1


def window_max(values: Tensor, radius: int) -> Tensor:
    """The maximum of each ``(2r+1)²`` window of a ``(B, C, H, W)`` map: ``F.max_pool2d`` with stride 1 and padding
    ``r`` (which never lets the padding win).

    On CUDA and in ONNX export it is ``F.max_pool2d`` (one fused kernel, one ``MaxPool`` node, both fast). Elsewhere
    PyTorch's CPU max pooling is slow, and a row pass and a column pass of ``2r`` element-wise maxima over shifted
    views of the ``-inf``-padded map give the same values in a fraction of its time (BENCHMARKS.md, CPU section).
    """
    if not runs_on_pytorch_cpu_kernels(values):
        return F.max_pool2d(values, kernel_size=2 * radius + 1, stride=1, padding=radius)
    height, width = values.shape[-2:]
    padded = F.pad(values, (radius, radius, radius, radius), value=float("-inf"))
    rows = padded[..., :, 0:width]
    for shift in range(1, 2 * radius + 1):
        rows = torch.maximum(rows, padded[..., :, shift:shift + width])
    result = rows[..., 0:height, :]
    for shift in range(1, 2 * radius + 1):
        result = torch.maximum(result, rows[..., shift:shift + height, :])
    return result


def nms_mask(scores: Tensor, radius: int) -> Tensor:
    """The original ``simple_nms`` as a mask: ``(B, 1, H, W)`` scores → bool mask of the kept positions."""
    keep = scores == window_max(scores, radius)
    for _ in range(2):
        suppressed = window_max(keep.to(scores.dtype), radius) > 0
        remaining = torch.where(suppressed, torch.zeros_like(scores), scores)
        keep = keep | ((remaining == window_max(remaining, radius)) & ~suppressed)
    return keep


def interior_mask(height: int, width: int, radius: int, device: torch.device) -> Tensor:
    """(1, 1, H, W) bool: True at least ``radius`` pixels from every border."""
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    inside_rows = (rows >= radius) & (rows < height - radius)
    inside_cols = (cols >= radius) & (cols < width - radius)
    return (inside_rows.view(-1, 1) & inside_cols.view(1, -1)).view(1, 1, height, width)


def candidate_mask(scores: Tensor, radius: int) -> Tensor:
    """NMS maxima away from the border, (B, 1, H, W) bool."""
    height, width = scores.shape[-2:]
    return nms_mask(scores, radius) & interior_mask(height, width, radius, scores.device)


def refine(scores: Tensor, flat_index: Tensor, radius: int) -> tuple[Tensor, Tensor]:
    """Soft-argmax refinement of pixel positions given as flat indices into one score map.

    Args:
        scores: ``(1, 1, H, W)`` float32 score map of one image.
        flat_index: ``(N,)`` indices ``y * W + x``.

    Returns:
        keypoints ``(N, 2)`` float32 pixels ``(x, y)``, and scores ``(N,)`` sampled bilinearly there.
    """
    height, width = scores.shape[-2:]
    kernel = 2 * radius + 1
    # The window of a position near the border reads zeros outside the map, as the original's zero-padded unfold.
    padded = F.pad(scores, (radius, radius, radius, radius)).reshape(-1)
    padded_width = width + 2 * radius
    x = flat_index % width
    y = torch.div(flat_index, width, rounding_mode="floor")
    steps = torch.arange(kernel, device=scores.device)
    window_rows = (y.view(-1, 1, 1) + steps.view(1, -1, 1)) * padded_width
    window_index = (window_rows + x.view(-1, 1, 1) + steps.view(1, 1, -1)).reshape(-1, kernel * kernel)
    window = padded[window_index]  # (N, kernel²), row-major: dy slow, dx fast
    weights = torch.softmax(window / SOFTARGMAX_TEMPERATURE, dim=1)
    grid = (steps - radius).to(torch.float32)
    dx = (weights.view(-1, kernel, kernel) * grid.view(1, 1, -1)).sum(dim=(1, 2))
    dy = (weights.view(-1, kernel, kernel) * grid.view(1, -1, 1)).sum(dim=(1, 2))
    keypoints = torch.stack((x.to(torch.float32) + dx, y.to(torch.float32) + dy), dim=1)
    sampled = sample_bilinear(
        flatten_channels_first(scores), height, width, keypoints[:, 0].view(1, -1), keypoints[:, 1].view(1, -1)
    )
    return keypoints, sampled.view(-1)


def sort_descending_by_rank(values: Tensor) -> tuple[Tensor, Tensor]:
    """A stable descending sort of a short 1-D tensor by counting: each value's rank is the number of values
    greater than it, plus the equal ones before it. ``K²`` comparisons, but one reduction and one scatter that a
    compiler fuses into two kernels, where ``torch.sort`` on the GPU is a multi-pass radix sort."""
    count = values.shape[0]
    position = torch.arange(count, device=values.device)
    greater = values.view(1, count) > values.view(count, 1)
    equal = values.view(1, count) == values.view(count, 1)
    equal_before = equal & (position.view(1, count) < position.view(count, 1))
    rank = (greater | equal_before).sum(dim=1)
    order = torch.empty_like(position).scatter_(0, rank, position)
    return values[order], order


def detect_top_k(scores: Tensor, top_k: int, radius: int, rank_sort: bool = False,
                 nms_kernel: bool = False) -> tuple[Tensor, Tensor]:
    """Top-k detection on one ``(1, 1, H, W)`` score map; static shapes for a fixed map size and ``top_k``.

    Returns ``top_k`` keypoints ``(K, 2)`` and scores ``(K,)``, sorted by score high → low; slots without a
    maximum (a map with fewer than ``K`` of them) have score 0. ``rank_sort`` orders them with
    :func:`sort_descending_by_rank` instead of ``torch.sort`` (the same order; faster where it is compiled).
    ``nms_kernel``: NMS as the Triton passes of :func:`~aliked_ros.model.nms_kernels.nms_scores` (CUDA).
    """
    # On CUDA, top-k selects among the map's own values: a float16 map (the fp16 network's) takes a 16-bit radix
    # select, half the passes over the map of a float32 one, and its float32 copy holds the same values in the same
    # order. (Elsewhere float32: the CPU and the ONNX export, whose runtimes lack float16 TopK kernels.)
    selected = scores if scores.is_cuda else scores.float()
    scores = scores.float()
    if nms_kernel and selected.dtype == torch.float16:
        from aliked_ros.model.nms_kernels import nms_top_k

        best, flat_index = nms_top_k(selected[0, 0], radius, top_k)  # NMS's 5 passes and 3 top-k kernels
    else:
        if nms_kernel:
            from aliked_ros.model.nms_kernels import nms_scores as kernel_nms_scores

            nms_scores = kernel_nms_scores(selected[0, 0], radius)
        else:
            is_candidate = candidate_mask(scores, radius)
            nms_scores = torch.where(is_candidate, selected, torch.zeros_like(selected)).reshape(-1)
        # The rank count orders the K rows below whatever order they come in, so topk's own sort (a radix sort on
        # the GPU) is skipped then.
        best, flat_index = torch.topk(nms_scores, top_k, sorted=not rank_sort)
    keypoints, keypoint_scores = refine(scores, flat_index, radius)
    keypoint_scores = torch.where(best > 0, keypoint_scores, torch.zeros_like(keypoint_scores))
    # Refinement moves scores a little, so the NMS order is not quite the final order.
    if rank_sort:
        keypoint_scores, order = sort_descending_by_rank(keypoint_scores)
    else:
        keypoint_scores, order = torch.sort(keypoint_scores, descending=True)
    return keypoints[order], keypoint_scores


def detect_threshold(scores: Tensor, score_threshold: float, max_keypoints: int, radius: int) -> tuple[Tensor, Tensor]:
    """Threshold detection on one ``(1, 1, H, W)`` score map (dynamic number of keypoints; PyTorch only).

    Returns keypoints ``(N, 2)`` and scores ``(N,)`` sorted high → low, ``N <= max_keypoints``.
    """
    scores = scores.float()
    is_candidate = candidate_mask(scores, radius).reshape(-1)
    flat_scores = scores.reshape(-1)
    above_mean = is_candidate & (flat_scores > flat_scores.mean())
    keep = above_mean
    if score_threshold > 0:
        above = is_candidate & (flat_scores > score_threshold)
        if bool(above.any()):
            keep = above
    flat_index = torch.nonzero(keep).view(-1)
    if flat_index.numel() > max_keypoints:
        flat_index = flat_index[torch.topk(flat_scores[flat_index], max_keypoints).indices]
    keypoints, keypoint_scores = refine(scores, flat_index, radius)
    keypoint_scores, order = torch.sort(keypoint_scores, descending=True)
    return keypoints[order], keypoint_scores
