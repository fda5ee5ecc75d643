"""The Triton kernel behind ``small_conv.conv2d_activation(..., implementation="triton")`` (see there).

Importing this module imports Triton and registers the ``aliked_ros::conv2d_activation`` operator.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op, wrap_triton

SELU_ALPHA = tl.constexpr(1.6732632423543772)  # F.selu's constants
SELU_SCALE = tl.constexpr(1.0507009873554805)
ACCUMULATORS_PER_PROGRAM = 4096  # output values one program computes (channels × pixels) ...
MAX_PIXELS_PER_PROGRAM = 1024  # ... but enough programs to fill the GPU where there are few output channels


@triton.jit
def _activate(value, ACTIVATION: tl.constexpr):
    # The codes are the positions in small_conv.ACTIVATIONS: 0 none, 1 selu, 2 sigmoid.
    if ACTIVATION == 1:
        value = SELU_SCALE * tl.where(value > 0, value, SELU_ALPHA * (tl.exp(value) - 1.0))
    elif ACTIVATION == 2:
        value = 1.0 / (1.0 + tl.exp(-value))
    return value


@triton.jit
def _conv_kernel(x_ptr, weight_ptr, bias_ptr, out_ptr, height, width,
                 IN_CHANNELS: tl.constexpr, OUT_CHANNELS: tl.constexpr, OUT_BLOCK: tl.constexpr,
                 KERNEL: tl.constexpr, HAS_BIAS: tl.constexpr, OUTPUT_ACTIVATION: tl.constexpr,
                 PIXEL_BLOCK: tl.constexpr):
    # One program: PIXEL_BLOCK consecutive pixels (row-major) of one image, all output channels, accumulated in
    # float32 over the unrolled input channels and kernel taps.
    pixels = height * width
    image = tl.program_id(1)
    index = tl.program_id(0) * PIXEL_BLOCK + tl.arange(0, PIXEL_BLOCK)
    inside = index < pixels
    row = index // width
    column = index % width
    out_channel = tl.arange(0, OUT_BLOCK)
    channel_ok = out_channel < OUT_CHANNELS
    x_image = x_ptr + image * IN_CHANNELS * pixels
    total = tl.zeros((OUT_BLOCK, PIXEL_BLOCK), dtype=tl.float32)
    for in_channel in tl.static_range(IN_CHANNELS):
        for tap_y in tl.static_range(KERNEL):
            source_row = row + (tap_y - KERNEL // 2)
            row_ok = inside & (source_row >= 0) & (source_row < height)
            for tap_x in tl.static_range(KERNEL):
                source_column = column + (tap_x - KERNEL // 2)
                ok = row_ok & (source_column >= 0) & (source_column < width)
                value = tl.load(x_image + in_channel * pixels + source_row * width + source_column,
                                mask=ok, other=0.0).to(tl.float32)  # zero padding
                tap = tl.load(weight_ptr + out_channel * (IN_CHANNELS * KERNEL * KERNEL)
                              + (in_channel * KERNEL + tap_y) * KERNEL + tap_x,
                              mask=channel_ok, other=0.0).to(tl.float32)
                total += tap[:, None] * value[None, :]
    if HAS_BIAS:
        total += tl.load(bias_ptr + out_channel, mask=channel_ok, other=0.0).to(tl.float32)[:, None]
    total = _activate(total, OUTPUT_ACTIVATION)
    out_image = out_ptr + image * OUT_CHANNELS * pixels
    tl.store(out_image + out_channel[:, None] * pixels + index[None, :],
             total.to(out_ptr.dtype.element_ty), mask=channel_ok[:, None] & inside[None, :])


@triton_op("aliked_ros::conv2d_activation", mutates_args=())
def conv2d_activation_triton(x: Tensor, weight: Tensor, bias: Tensor | None, output_activation: int) -> Tensor:
    """Contiguous ``(B, C_in, H, W)`` x, ``(C_out, C_in, k, k)`` weight, ``(C_out,)`` bias or None, activation codes."""
    batch, in_channels, height, width = x.shape
    out_channels, _, kernel_size, _ = weight.shape
    out = torch.empty((batch, out_channels, height, width), dtype=x.dtype, device=x.device)
    out_block = triton.next_power_of_2(out_channels)
    pixel_block = min(MAX_PIXELS_PER_PROGRAM, max(64, ACCUMULATORS_PER_PROGRAM // out_block))
    grid = (triton.cdiv(height * width, pixel_block), batch)
    wrap_triton(_conv_kernel)[grid](
        x, weight, weight if bias is None else bias, out, height, width, IN_CHANNELS=in_channels,
        OUT_CHANNELS=out_channels, OUT_BLOCK=out_block, KERNEL=kernel_size, HAS_BIAS=bias is not None,
        OUTPUT_ACTIVATION=output_activation, PIXEL_BLOCK=pixel_block,
    )
    return out
