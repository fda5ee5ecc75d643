"""One Triton kernel for the deformable convolutions' bilinear reads (the backbone's blocks 3 and 4, issue 17).

The tensor formulation (:func:`aliked_ros.model.deform_conv.deform_conv2d_tensor`) gathers, for every output pixel
and each of the 9 taps, the four bilinear neighbours of the tap's shifted position, channel by channel from a
channels-first map, and mixes them: compiled, the largest Triton kernels of the frame after the descriptor head's
(``..._index_le_mul_stack_transpose...``: 20 µs for aliked-t16, 57 + 28 µs for aliked-n16rot on an H100). Here a
program takes a block of pixels and one tap, reads each neighbour's ``C`` channels as one vector (one contiguous read
where the input is channels-last), mixes them in float32 and writes row-major columns ``(H·W, taps·C)``: the layout
one matrix product with the kernel's weights turns into the output, channels-last.

Exposed as the custom operator ``torch.ops.aliked_ros.deformable_columns`` through ``torch.library.triton_op``, as
:mod:`~aliked_ros.model.sampling_kernel` is (eager, inside torch.compile, in CUDA graphs); opt-in
(``deform_reads="triton"``) until a bench run shows what it pays end to end.
"""

from __future__ import annotations

import torch
from torch import Tensor

from aliked_ros.model import sampling_kernel

AVAILABLE = sampling_kernel.AVAILABLE
OPERATOR_NAME = "aliked_ros::deformable_columns"
PIXELS_PER_PROGRAM = 32
VALUES_PER_THREAD = 4  # as the feature-read kernel: a (pixels, C) tile spread so that no thread holds more


def input_channels(x: Tensor, offset: Tensor, kernel_size: tuple[int, int]) -> int | None:
    """``C`` if the kernel reads this input, else None: one image ``(1, C, H, W)`` with ``C`` a power of two (the
    width of tl.arange), offsets ``(1, 2·taps, H, W)``, both addressed in int32."""
    if x.dim() != 4 or x.shape[0] != 1 or offset.shape != (1, 2 * kernel_size[0] * kernel_size[1], *x.shape[-2:]):
        return None
    if max(sampling_kernel.largest_offset(x), sampling_kernel.largest_offset(offset),
           x.shape[1] * kernel_size[0] * kernel_size[1] * x.shape[2] * x.shape[3]) >= 2**31:
        return None
    channels = x.shape[1]
    return channels if channels > 0 and not channels & (channels - 1) else None


if AVAILABLE:
    import triton
    import triton.language as tl
    from torch.library import wrap_triton

    bilinear_neighbour = sampling_kernel.bilinear_neighbour

    @triton.jit
    def _deformable_columns_kernel(
        output, image, offset, pixel_count, height, width,
        stride_c, stride_y, stride_x, offset_stride_c, offset_stride_y, offset_stride_x,
        PADDING: tl.constexpr, KERNEL_WIDTH: tl.constexpr, TAPS: tl.constexpr, CHANNELS: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        pixels = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tap = tl.program_id(1)
        valid = pixels < pixel_count
        safe = tl.where(valid, pixels, 0)  # rows past the end read pixel 0: valid addresses, nothing stored
        row = safe // width
        column = safe % width
        channels = tl.arange(0, CHANNELS)
        # Offsets: a (dy, dx) pair per tap, in tap order (torchvision's and ONNX DeformConv's layout).
        offsets_at = offset + row * offset_stride_y + column * offset_stride_x
        dy = tl.load(offsets_at + (2 * tap) * offset_stride_c).to(tl.float32)
        dx = tl.load(offsets_at + (2 * tap + 1) * offset_stride_c).to(tl.float32)
        # The tap's position in float32, as the tensor formulation computes it.
        y = (row - PADDING + tap // KERNEL_WIDTH).to(tl.float32) + dy
        x = (column - PADDING + tap % KERNEL_WIDTH).to(tl.float32) + dx
        fx = x - tl.floor(x)
        fy = y - tl.floor(y)
        # Clamped before the integer conversion (offsets are clamped to a quarter of the map, but NaN-free far
        # values must not overflow it): from -2 or the size on, both neighbours lie outside and weigh 0.
        x0 = tl.minimum(tl.maximum(tl.floor(x), -2.0), width + 0.0).to(tl.int32)
        y0 = tl.minimum(tl.maximum(tl.floor(y), -2.0), height + 0.0).to(tl.int32)
        mixed = tl.zeros((BLOCK, CHANNELS), dtype=tl.float32)
        for corner in tl.static_range(4):  # bilinear_taps' order; a neighbour outside the map weighs 0
            neighbour_x, neighbour_y, weight = bilinear_neighbour(x0, y0, fx, fy, corner, width, height)
            pixel = neighbour_y * stride_y + neighbour_x * stride_x
            values = tl.load(image + pixel[:, None] + channels[None, :] * stride_c).to(tl.float32)
            mixed += values * weight[:, None]
        # Row-major (H·W, taps·C): pixel p's taps side by side, each tap's C channels together.
        target = output + pixels[:, None] * (TAPS * CHANNELS) + tap * CHANNELS + channels[None, :]
        tl.store(target, mixed.to(output.dtype.element_ty), mask=valid[:, None])

    KERNEL_IS_COMPILED = isinstance(_deformable_columns_kernel, triton.runtime.jit.JITFunction)

    @torch.library.triton_op(OPERATOR_NAME, mutates_args=())
    def deformable_columns(image: Tensor, offset: Tensor, padding: int, kernel_height: int,
                           kernel_width: int) -> Tensor:
        """``(H·W, taps·C)`` bilinear samples of ``image`` ``(1, C, H, W)`` at each pixel's shifted taps."""
        _, channels, height, width = image.shape
        taps = kernel_height * kernel_width
        output = image.new_empty((height * width, taps * channels))
        if height * width:
            grid = (triton.cdiv(height * width, PIXELS_PER_PROGRAM), taps)
            warps = max(4, PIXELS_PER_PROGRAM * channels // (32 * VALUES_PER_THREAD))
            # Named here: torch finds the kernel in this body and hashes its source into the compile cache.
            kernel = wrap_triton(_deformable_columns_kernel) if KERNEL_IS_COMPILED else _deformable_columns_kernel
            kernel[grid](output, image, offset, height * width, height, width, *image.stride()[1:],
                         *offset.stride()[1:], PADDING=padding, KERNEL_WIDTH=kernel_width, TAPS=taps,
                         CHANNELS=channels, BLOCK=PIXELS_PER_PROGRAM, num_warps=warps)
        return output

    @deformable_columns.register_fake
    def _(image: Tensor, offset: Tensor, padding: int, kernel_height: int, kernel_width: int) -> Tensor:
        _, channels, height, width = image.shape
        return image.new_empty((height * width, kernel_height * kernel_width * channels))


def deform_conv2d_triton(x: Tensor, offset: Tensor, weight: Tensor, padding: int, bias: Tensor | None = None) -> Tensor:
    """Stride-1 DCNv1 as :func:`~aliked_ros.model.deform_conv.deform_conv2d_tensor` computes it: the kernel's columns,
    then one matrix product. The output ``(1, O, H, W)`` is channels-last in memory (the next layers take it as it is).
    Needs :func:`input_channels` to accept the input; raises a RuntimeError without Triton."""
    if not AVAILABLE:
        raise RuntimeError("The deformable-convolution kernel needs Triton and torch >= 2.6.")
    out_channels, channels, kernel_height, kernel_width = weight.shape
    if input_channels(x, offset, (kernel_height, kernel_width)) is None:
        raise ValueError("The deformable-convolution kernel reads one image (1, C, H, W) with C a power of two and "
                         f"offsets (1, {2 * kernel_height * kernel_width}, H, W): got {tuple(x.shape)} and "
                         f"{tuple(offset.shape)}.")
    height, width = x.shape[-2:]
    columns = torch.ops.aliked_ros.deformable_columns(x, offset, padding, kernel_height, kernel_width)
    # Rows of the weights in the columns' order: tap-major, then input channel.
    weight_rows = weight.permute(2, 3, 1, 0).reshape(kernel_height * kernel_width * channels, out_channels)
    out = columns @ weight_rows.to(columns.dtype)
    if bias is not None:
        out = out + bias.to(out.dtype)
    return out.view(1, height, width, out_channels).permute(0, 3, 1, 2)
