"""Deformable convolution (DCNv1, Dai et al. 2017) as ALIKED's backbone uses it.

The semantics are those of ``torchvision.ops.deform_conv2d`` and of ONNX ``DeformConv`` (opset 19): the offsets
have ``2 * kh * kw`` channels, a ``(dy, dx)`` pair per kernel tap in row-major tap order, and a tap reads the input
bilinearly at ``(y - pad + i + dy, x - pad + j + dx)`` with zeros outside. ALIKED uses stride 1, dilation 1, one
offset group and no modulation mask; this module implements exactly that.

Three implementations compute it:
- ``tensor``: gathers and one matrix product, any device, any dtype, exportable as plain ONNX ops.
- ``torchvision``: torchvision's fused kernel, faster where torchvision is installed; never required.
- ``triton``: the network computes the block around the layer as fused Triton kernels, offsets included
  (:func:`aliked_ros.model.deform_kernel.deformable_block`; the compiled CUDA path); the layer called alone, or on an
  input the kernel does not take, takes the tensor path.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from aliked_ros.model.sampling import flatten_channels_first, sample_bilinear

@functools.cache
def torchvision_deform_conv2d():
    """torchvision's ``deform_conv2d``, or None where torchvision is missing or its compiled ops don't load."""
    try:
        from torchvision.ops import deform_conv2d
    except Exception:  # ImportError, or a torchvision built for another torch (its operators fail to register)
        return None
    return deform_conv2d


def deform_conv2d_tensor(x: Tensor, offset: Tensor, weight: Tensor, padding: int, bias: Tensor | None = None) -> Tensor:
    """Stride-1 DCNv1 in plain tensor ops: bilinear gathers of every tap, then one matrix product."""
    batch, channels, height, width = x.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    taps = kernel_h * kernel_w
    # Positions in at least float32: float16 cannot place a tap at pixel 155.3 (its step there is 0.125).
    offset = offset.view(batch, taps, 2, height, width).to(torch.promote_types(offset.dtype, torch.float32))
    tap_y = torch.arange(kernel_h, device=x.device).repeat_interleave(kernel_w).view(1, taps, 1, 1)
    tap_x = torch.arange(kernel_w, device=x.device).repeat(kernel_h).view(1, taps, 1, 1)
    rows = torch.arange(height, device=x.device).view(1, 1, height, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, 1, width)
    sample_y = (rows - padding + tap_y) + offset[:, :, 0]  # (B, taps, H, W)
    sample_x = (cols - padding + tap_x) + offset[:, :, 1]
    columns = sample_bilinear(
        flatten_channels_first(x), height, width, sample_x.reshape(batch, -1), sample_y.reshape(batch, -1)
    )  # (C, B, taps*H*W)
    columns = columns.view(channels, batch, taps, height * width).permute(0, 2, 1, 3)
    out = weight.reshape(out_channels, channels * taps) @ columns.reshape(channels * taps, batch * height * width)
    if bias is not None:
        out = out + bias.view(-1, 1)
    return out.view(out_channels, batch, height, width).transpose(0, 1)


class DeformableConv2d(nn.Module):
    """ALIKED's deformable 3×3 convolution; parameter names match the published state dicts.

    ``offset_conv`` predicts the offsets, which are clamped to a quarter of the larger side of the input map, as the
    original does; ``regular_conv`` holds the kernel (no bias).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.padding = padding
        self.implementation = "auto"
        self.offset_conv = nn.Conv2d(in_channels, 2 * kernel_size * kernel_size, kernel_size, padding=padding, bias=True)
        self.regular_conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        max_offset = max(x.shape[-2], x.shape[-1]) / 4.0
        offset = self.offset_conv(x).clamp(-max_offset, max_offset)
        return self.deform(x, offset)

    def deform(self, x: Tensor, offset: Tensor) -> Tensor:
        weight, bias = self.regular_conv.weight, self.regular_conv.bias  # a bias appears once BN is folded in
        if self.implementation in ("tensor", "triton"):  # triton: see the module's docstring
            return deform_conv2d_tensor(x, offset, weight, self.padding, bias)
        fused = torchvision_deform_conv2d() if self.implementation in ("auto", "torchvision") else None
        # torchvision's kernel is not safe to capture in a CUDA graph: replays gave other outputs than eager runs
        # (H100, torch 2.11, torchvision 0.26). While capturing, 'auto' takes the tensor path, which is.
        if fused is not None and self.implementation == "auto" and x.is_cuda and torch.cuda.is_current_stream_capturing():
            fused = None
        if fused is not None:
            return fused(x, offset, weight, bias, padding=self.padding)
        if self.implementation == "torchvision":
            raise RuntimeError("torchvision's deform_conv2d was asked for but torchvision is not usable here")
        return deform_conv2d_tensor(x, offset, weight, self.padding, bias)
