"""The backbone's deformable convolutions (blocks 3 and 4) as one Triton kernel each (issue 17).

Unfused, a deformable convolution is six kernels or more on the compiled fast path: cuDNN's convolution for the
offsets, their clamp, the bilinear reads of every tap into columns ``(H·W, 9·C)``, a layout copy, the matrix product
with the kernel's weights, then the bias and SELU (and the residual sum at a block's end), each writing what the next
reads. Blocks 3 and 4 run at 1/8 and 1/32 of the image, so each of those kernels is small and the frame spent most
of their time launching them (32 kernels for the two blocks of aliked-t16). Here a program takes a block of pixels
and computes the whole layer: the offsets' 3×3 convolution on tensor cores, kept in float32 in registers, each tap's
four bilinear neighbours read as ``C``-channel vectors (one contiguous read where the input is channels-last) and
mixed, the tap's product with the weights accumulated on tensor cores, then the bias, a residual block's 1×1 shortcut,
the SELU, and one channels-last write (what the next layer reads a pixel's channels from).

Exposed as the custom operator ``torch.ops.aliked_ros.deformable_conv`` through ``torch.library.triton_op``, as
:mod:`~aliked_ros.model.sampling_kernel` is (eager, inside torch.compile, in CUDA graphs); the network calls it per
block (:func:`deformable_block`) where ``set_deform_implementation("triton")`` asks for it and the BatchNorm is
folded. The tensor formulation (:func:`aliked_ros.model.deform_conv.deform_conv2d_tensor`) is the reference.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from aliked_ros.model import sampling_kernel
from aliked_ros.model.dense_kernels import ACTIVATIONS, channels_last_empty

AVAILABLE = sampling_kernel.AVAILABLE
OPERATOR_NAME = "aliked_ros::deformable_conv"
PROGRAMS_WANTED = 132  # an H100's SMs
# Output channels per program: wider layers (the n models' block 4, 128) take a second program per block of pixels,
# which computes the same offsets and reads again; with all 128, a tap's (C, O) weights and the (pixels, O) sums
# need more than ptxas's 255 registers per thread for sm_90 and spill (8 warps too).
OUT_CHANNELS_PER_PROGRAM = 64


if AVAILABLE:
    import triton
    import triton.language as tl
    from torch.library import wrap_triton

    from aliked_ros.model.dense_kernels import _activate, _add_shortcut, _matmul, _pixel_block, _window_tap

    bilinear_neighbour = sampling_kernel.bilinear_neighbour
    bilinear_origin = sampling_kernel.bilinear_origin

    @triton.jit
    def _deformable_conv_kernel(
        output, image, offset_weight, offset_bias, weight, bias, height, width, stride_c, stride_y, stride_x,
        max_offset, shortcut, shortcut_weight, shortcut_bias, shortcut_stride_c, shortcut_stride_y,
        shortcut_stride_x,
        IN_CHANNELS: tl.constexpr, OUT_CHANNELS: tl.constexpr, OUT_BLOCK: tl.constexpr, KERNEL: tl.constexpr,
        OFFSETS_PADDED: tl.constexpr, ACTIVATION: tl.constexpr, IEEE: tl.constexpr,
        SHORTCUT_CHANNELS: tl.constexpr, SHORTCUT_PADDED: tl.constexpr, BLOCK: tl.constexpr,
    ):
        """A whole deformable convolution for a block of pixels and OUT_BLOCK of its output channels: the offsets'
        k×k convolution (plus its bias, kept in float32, clamped to ``max_offset``), every tap's bilinear reads at
        the shifted position, and the kernel's product on tensor cores, tap by tap; then the bias, a residual block's
        1×1 shortcut where SHORTCUT_CHANNELS, the activation, and one channels-last write. Offsets and columns never
        leave the registers. The taps are a loop, not unrolled: unrolled, the wider layers spill (ptxas for sm_90),
        and on an H100 the frame's kernel took as long (aliked-t16) or longer (aliked-n16rot; BENCHMARKS.md)."""
        pixels, valid, row, column = _pixel_block(height, width, BLOCK)
        ins = tl.arange(0, IN_CHANNELS)
        offsets = tl.arange(0, OFFSETS_PADDED)
        offsets_valid = offsets < 2 * KERNEL * KERNEL
        predicted = tl.zeros((BLOCK, OFFSETS_PADDED), dtype=tl.float32)
        for tap in tl.range(0, KERNEL * KERNEL):
            y, x, inside = _window_tap(row, column, valid, height, width, tap, KERNEL)
            values = tl.load(image + (y * stride_y + x * stride_x)[:, None] + ins[None, :] * stride_c,
                             mask=inside[:, None], other=0.0)
            # The tap's offset weights (C, 2·taps), read from the (2·taps, C, k, k) weight as it is.
            weights = tl.load(offset_weight + offsets[None, :] * (IN_CHANNELS * KERNEL * KERNEL)
                              + ins[:, None] * (KERNEL * KERNEL) + tap, mask=offsets_valid[None, :], other=0.0)
            predicted += _matmul(values, weights.to(values.dtype), IEEE)
        predicted += tl.load(offset_bias + offsets, mask=offsets_valid, other=0.0).to(tl.float32)[None, :]
        predicted = tl.minimum(tl.maximum(predicted, -max_offset), max_offset)
        outs = tl.program_id(1) * OUT_BLOCK + tl.arange(0, OUT_BLOCK)  # this program's output channels
        out_valid = outs < OUT_CHANNELS
        result = tl.zeros((BLOCK, OUT_BLOCK), dtype=tl.float32)
        for tap in tl.range(0, KERNEL * KERNEL):
            # The tap's (dy, dx) pair, columns 2·tap and 2·tap + 1 of the offsets (torchvision's layout).
            dy = tl.sum(tl.where(offsets[None, :] == 2 * tap, predicted, 0.0), axis=1)
            dx = tl.sum(tl.where(offsets[None, :] == 2 * tap + 1, predicted, 0.0), axis=1)
            y = (row - KERNEL // 2 + tap // KERNEL).to(tl.float32) + dy
            x = (column - KERNEL // 2 + tap % KERNEL).to(tl.float32) + dx
            x0, y0, fx, fy = bilinear_origin(x, y, width, height)
            mixed = tl.zeros((BLOCK, IN_CHANNELS), dtype=tl.float32)
            for corner in tl.static_range(4):
                neighbour_x, neighbour_y, corner_weight = bilinear_neighbour(x0, y0, fx, fy, corner, width, height)
                values = tl.load(image + (neighbour_y * stride_y + neighbour_x * stride_x)[:, None]
                                 + ins[None, :] * stride_c, mask=valid[:, None], other=0.0)
                mixed += values.to(tl.float32) * corner_weight[:, None]
            # The tap's weights (C, O), read from the (O, C, k, k) weight as it is.
            weights = tl.load(weight + outs[None, :] * (IN_CHANNELS * KERNEL * KERNEL)
                              + ins[:, None] * (KERNEL * KERNEL) + tap, mask=out_valid[None, :], other=0.0)
            # The mixed columns rounded to the image's dtype for the tensor cores (float16 on the fast path).
            result += _matmul(mixed.to(image.dtype.element_ty), weights.to(image.dtype.element_ty), IEEE)
        if SHORTCUT_CHANNELS:
            result = _add_shortcut(result, shortcut, shortcut_weight, shortcut_bias, shortcut_stride_c,
                                   shortcut_stride_y, shortcut_stride_x, row, column, valid, outs, out_valid,
                                   SHORTCUT_CHANNELS, SHORTCUT_PADDED, IEEE)
        result += tl.load(bias + outs, mask=out_valid, other=0.0).to(tl.float32)[None, :]
        result = _activate(result, ACTIVATION)
        # Channels-last (1, O, H, W): a pixel's O channels together, what the next deformable read takes whole.
        tl.store(output + pixels[:, None] * OUT_CHANNELS + outs[None, :], result.to(output.dtype.element_ty),
                 mask=valid[:, None] & out_valid[None, :])

    KERNEL_IS_COMPILED = isinstance(_deformable_conv_kernel, triton.runtime.jit.JITFunction)

    @torch.library.triton_op(OPERATOR_NAME, mutates_args=())
    def _deformable_conv(image: Tensor, offset_weight: Tensor, offset_bias: Tensor, weight: Tensor, bias: Tensor,
                         activation: int, shortcut: Optional[Tensor], shortcut_weight: Optional[Tensor],
                         shortcut_bias: Optional[Tensor]) -> Tensor:
        _, channels, height, width = image.shape
        out_channels, _, kernel_size, _ = weight.shape
        output = channels_last_empty(image, out_channels)
        if height * width:
            source, source_weight, source_bias = ((shortcut, shortcut_weight, shortcut_bias) if shortcut is not None
                                                  else (image, weight, bias))
            shortcut_channels = source.shape[1] if shortcut is not None else 0
            out_block = min(OUT_CHANNELS_PER_PROGRAM, max(16, triton.next_power_of_2(out_channels)))
            block = pixels_per_program(height * width)
            kernel = wrap_triton(_deformable_conv_kernel) if KERNEL_IS_COMPILED else _deformable_conv_kernel
            kernel[(triton.cdiv(height * width, block), triton.cdiv(out_channels, out_block))](
                output, image, offset_weight, offset_bias, weight, bias, height, width, *image.stride()[1:],
                max(height, width) / 4.0, source, source_weight, source_bias, *source.stride()[1:],
                IN_CHANNELS=channels, OUT_CHANNELS=out_channels, OUT_BLOCK=out_block,
                KERNEL=kernel_size, OFFSETS_PADDED=max(16, triton.next_power_of_2(2 * kernel_size * kernel_size)),
                ACTIVATION=activation, IEEE=image.dtype == torch.float32, SHORTCUT_CHANNELS=shortcut_channels,
                SHORTCUT_PADDED=max(16, triton.next_power_of_2(max(shortcut_channels, 1))), BLOCK=block,
                num_warps=4)
        return output

    @_deformable_conv.register_fake
    def _(image: Tensor, offset_weight: Tensor, offset_bias: Tensor, weight: Tensor, bias: Tensor, activation: int,
          shortcut: Optional[Tensor], shortcut_weight: Optional[Tensor], shortcut_bias: Optional[Tensor]) -> Tensor:
        return channels_last_empty(image, weight.shape[0])


def pixels_per_program(pixel_count: int) -> int:
    """Pixels per program of the fused kernel: from 64 down to 16 (tl.dot's least) until the map's programs fill
    the GPU's SMs about once (block 4's 20×15 map would be 5 programs of 64 pixels)."""
    block = 64
    while block > 16 and pixel_count / block < PROGRAMS_WANTED:
        block //= 2
    return block


def deformable_block(x: Tensor, block) -> Tensor:
    """A residual block of two deformable convolutions (``network.ResBlock``, BatchNorm folded), as two kernels:
    ``selu(deform1(x))``, then ``selu(deform2(·) + downsample(x))``, each convolution with its offsets, reads and
    product in one pass. Needs :func:`fused_block_accepted`; the output ``(1, O, H, W)`` is channels-last."""
    if not AVAILABLE:
        raise RuntimeError("The deformable-convolution kernel needs Triton and torch >= 2.6.")
    if not fused_block_accepted(x, block):
        raise ValueError("The fused deformable block takes one image (1, C, H, W) and a block of 3x3 deformable "
                         "convolutions with biases (BatchNorm folded), C and its width powers of two from 16: got "
                         f"{tuple(x.shape)}.")
    selu = ACTIVATIONS["selu"]
    hidden = _fused_layer(x, block.conv1, selu, None, None, None)
    shortcut = block.downsample
    return _fused_layer(hidden, block.conv2, selu, x, shortcut.weight.flatten(1), shortcut.bias)


def _fused_layer(x: Tensor, conv, activation: int, shortcut: Tensor | None, shortcut_weight: Tensor | None,
                 shortcut_bias: Tensor | None) -> Tensor:
    return torch.ops.aliked_ros.deformable_conv(
        x, conv.offset_conv.weight, conv.offset_conv.bias, conv.regular_conv.weight, conv.regular_conv.bias,
        activation, shortcut, shortcut_weight, shortcut_bias)


def fused_block_accepted(x: Tensor, block) -> bool:
    """Whether :func:`deformable_block` computes ``block`` on ``x``: one image ``(1, C, H, W)`` (any strides),
    both convolutions 3×3 with padding 1 and biases (BatchNorm folded), contiguous weights, the input's and the
    block's channels powers of two from 16 (tl.dot's least and tl.arange's sizes), every offset within int32."""
    if x.dim() != 4 or x.shape[0] != 1:
        return False
    widths = (x.shape[1], block.conv1.regular_conv.out_channels)
    if any(width < 16 or width & (width - 1) for width in widths) or block.downsample.bias is None:
        return False
    for conv in (block.conv1, block.conv2):
        regular, offsets = conv.regular_conv, conv.offset_conv
        if regular.bias is None or offsets.bias is None or regular.weight.shape[-2:] != (3, 3) \
                or conv.padding != 1 or not (regular.weight.is_contiguous() and offsets.weight.is_contiguous()):
            return False
    return sampling_kernel.largest_offset(x) < 2**31 and x.shape[2] * x.shape[3] * max(widths) < 2**31
