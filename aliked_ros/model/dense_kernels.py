"""Triton kernels for the full-resolution layers of the compiled CUDA path (issue 17): the first block's two 3×3
convolutions, block 2's (at half resolution, its 1×1 shortcut fused into the second), the finest level with its
part of the score head's first layer, and the head's three 3×3 convolutions. (The detector's NMS and top-k, which
share this module's pixel-block helpers: :mod:`~aliked_ros.model.nms_kernels`.)

Every one of those layers has a handful of channels (3 → 8 → 8 for aliked-t16, 3 → 16 → 16 for the n models; 8 → 4
→ 4 → 1 in the head) at the padded image's full size. cuDNN runs them as implicit GEMMs built for tens of channels,
each followed by a layout copy and an activation pass: on an H100 the frame's largest kernels (BENCHMARKS.md, "The
full-resolution layers as Triton kernels"). Here a program takes a block of pixels and holds all its output
channels in registers: each input value is read once per tap and feeds every output channel (as multiply-adds, or
on tensor cores from 8 input channels), the bias and the activation are applied before the one write, and nothing
is converted between layouts. A convolution writes channels-first or, asked, channels-last (the n models' block 1:
a pixel's 16 channels one read for the layers after it).

Exposed as custom operators through ``torch.library.triton_op``, as :mod:`~aliked_ros.model.sampling_kernel` is
(eager, inside torch.compile, in CUDA graphs). Triton missing, :data:`AVAILABLE` is False and nothing is registered.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from aliked_ros.model import sampling_kernel

AVAILABLE = sampling_kernel.AVAILABLE
ACTIVATIONS = {"none": 0, "selu": 1, "sigmoid": 2}
CONV_PIXELS_PER_PROGRAM = 256
# From this many input channels a convolution runs on tensor cores (_direct_conv_mma_kernel), below it as float32
# multiply-adds (_direct_conv_kernel): the faster of the two for each of the layers' shapes on an H100.
TENSOR_CORES_FROM_CHANNELS = 8
FINEST_PIXELS_PER_PROGRAM = 128
HEAD_CHANNELS = 8  # the score head's first layer: dim → 8


def _power_of_two_at_least(value: int, least: int = 1) -> int:
    size = least
    while size < value:
        size *= 2
    return size


if AVAILABLE:
    import triton
    import triton.language as tl
    from torch.library import wrap_triton

    @triton.jit
    def _activate(x, ACTIVATION: tl.constexpr):
        if ACTIVATION == 1:  # SELU, torch's constants
            x = 1.0507009873554805 * tl.where(x > 0, x, 1.6732632423543772 * (tl.exp(x) - 1.0))
        elif ACTIVATION == 2:
            x = 1.0 / (1.0 + tl.exp(-x))
        return x

    @triton.jit
    def _matmul(a, b, IEEE: tl.constexpr):
        """tl.dot accumulating in float32; IEEE: float32 inputs multiplied exactly (tl.dot rounds them to TF32)."""
        if IEEE:
            product = tl.dot(a, b, input_precision="ieee")
        else:
            product = tl.dot(a, b)
        return product

    @triton.jit
    def _pixel_block(height, width, BLOCK: tl.constexpr):
        """This program's BLOCK pixels of a height × width map, row-major: their indices, which lie inside the map,
        and their rows and columns."""
        pixels = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        return pixels, pixels < height * width, pixels // width, pixels % width

    @triton.jit
    def _window_tap(row, column, valid, height, width, tap, SIZE: tl.constexpr):
        """Tap ``tap`` of a SIZE × SIZE window centred on each pixel, row-major: its row, column, and whether it lies
        inside the map (outside: the zero padding of a convolution, the clipped window of NMS)."""
        y = row + (tap // SIZE - SIZE // 2)
        x = column + (tap % SIZE - SIZE // 2)
        return y, x, valid & (y >= 0) & (y < height) & (x >= 0) & (x < width)

    @triton.jit
    def _finish_conv(output, result, bias, outs, out_valid, pixels, valid, out_stride_c, out_stride_x,
                     HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr):
        """A convolution's (BLOCK, O) float32 sums: plus the bias, activated, written to (1, O, H, W), contiguous or
        channels-last (a pixel's offset is its row-major index times the x stride in both)."""
        if HAS_BIAS:
            result += tl.load(bias + outs, mask=out_valid, other=0.0).to(tl.float32)[None, :]
        result = _activate(result, ACTIVATION)
        target = output + outs[None, :] * out_stride_c + pixels[:, None] * out_stride_x
        tl.store(target, result.to(output.dtype.element_ty), mask=valid[:, None] & out_valid[None, :])

    @triton.jit
    def _add_shortcut(result, shortcut, weight, bias, stride_c, stride_y, stride_x, row, column, valid, outs,
                      out_valid, CHANNELS: tl.constexpr, PADDED: tl.constexpr, IEEE: tl.constexpr):
        """``result`` (pixels, outs) plus a residual block's 1×1 projection of ``shortcut`` (CHANNELS channels, any
        strides) at these pixels: weight (O, CHANNELS), bias (O,)."""
        sources = tl.arange(0, PADDED)
        source_valid = sources < CHANNELS
        values = tl.load(shortcut + (row * stride_y + column * stride_x)[:, None] + sources[None, :] * stride_c,
                         mask=valid[:, None] & source_valid[None, :], other=0.0)
        weights = tl.load(weight + outs[None, :] * CHANNELS + sources[:, None],
                          mask=source_valid[:, None] & out_valid[None, :], other=0.0)
        result += _matmul(values, weights.to(values.dtype), IEEE)
        return result + tl.load(bias + outs, mask=out_valid, other=0.0).to(tl.float32)[None, :]

    @triton.jit
    def _direct_conv_kernel(
        output, image, weight, bias, height, width, stride_c, stride_y, stride_x, out_stride_c, out_stride_x,
        IN_CHANNELS: tl.constexpr, OUT_CHANNELS: tl.constexpr, OUT_PADDED: tl.constexpr, KERNEL: tl.constexpr,
        HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, BLOCK: tl.constexpr,
    ):
        pixels, valid, row, column = _pixel_block(height, width, BLOCK)
        outs = tl.arange(0, OUT_PADDED)
        out_valid = outs < OUT_CHANNELS
        result = tl.zeros((BLOCK, OUT_PADDED), dtype=tl.float32)
        for channel in tl.static_range(IN_CHANNELS):
            for tap in tl.static_range(KERNEL * KERNEL):
                y, x, inside = _window_tap(row, column, valid, height, width, tap, KERNEL)
                values = tl.load(image + channel * stride_c + y * stride_y + x * stride_x, mask=inside, other=0.0)
                weights = tl.load(weight + outs * (IN_CHANNELS * KERNEL * KERNEL) + channel * KERNEL * KERNEL + tap,
                                  mask=out_valid, other=0.0)
                result += values.to(tl.float32)[:, None] * weights.to(tl.float32)[None, :]
        _finish_conv(output, result, bias, outs, out_valid, pixels, valid, out_stride_c, out_stride_x, HAS_BIAS,
                     ACTIVATION)

    @triton.jit
    def _direct_conv_mma_kernel(
        output, image, weight, bias, height, width, stride_c, stride_y, stride_x, out_stride_c, out_stride_x,
        shortcut, shortcut_weight, shortcut_bias, shortcut_stride_c, shortcut_stride_y, shortcut_stride_x,
        IN_CHANNELS: tl.constexpr, IN_PADDED: tl.constexpr, OUT_CHANNELS: tl.constexpr, OUT_PADDED: tl.constexpr,
        KERNEL: tl.constexpr, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, IEEE: tl.constexpr,
        SHORTCUT_CHANNELS: tl.constexpr, SHORTCUT_PADDED: tl.constexpr, BLOCK: tl.constexpr,
    ):
        """_direct_conv_kernel on tensor cores: per tap, (pixels, C) times the tap's (C, O) weights, C and O padded
        with zeros to at least 16 (tl.dot's least size). With SHORTCUT_CHANNELS, a residual block's end: a 1×1
        projection of ``shortcut`` (weight (O, S), bias) is added before the activation."""
        pixels, valid, row, column = _pixel_block(height, width, BLOCK)
        ins = tl.arange(0, IN_PADDED)
        outs = tl.arange(0, OUT_PADDED)
        in_valid = ins < IN_CHANNELS
        out_valid = outs < OUT_CHANNELS
        result = tl.zeros((BLOCK, OUT_PADDED), dtype=tl.float32)
        for tap in tl.static_range(KERNEL * KERNEL):
            y, x, inside = _window_tap(row, column, valid, height, width, tap, KERNEL)
            values = tl.load(image + (y * stride_y + x * stride_x)[:, None] + ins[None, :] * stride_c,
                             mask=inside[:, None] & in_valid[None, :], other=0.0)
            # The tap's weights (C, O), read from the (O, C, k, k) weight as it is.
            weights = tl.load(weight + outs[None, :] * (IN_CHANNELS * KERNEL * KERNEL) + ins[:, None] * KERNEL * KERNEL
                              + tap, mask=in_valid[:, None] & out_valid[None, :], other=0.0)
            result += _matmul(values, weights.to(values.dtype), IEEE)
        if SHORTCUT_CHANNELS:  # added before the bias and activation _finish_conv applies
            result = _add_shortcut(result, shortcut, shortcut_weight, shortcut_bias, shortcut_stride_c,
                                   shortcut_stride_y, shortcut_stride_x, row, column, valid, outs, out_valid,
                                   SHORTCUT_CHANNELS, SHORTCUT_PADDED, IEEE)
        _finish_conv(output, result, bias, outs, out_valid, pixels, valid, out_stride_c, out_stride_x, HAS_BIAS,
                     ACTIVATION)

    @triton.jit
    def _finest_level_kernel(
        level_output, head_output, features, project_weight, head_weight, height, width,
        project_stride, head_stride, features_stride_c, features_stride_y, features_stride_x,
        IN_CHANNELS: tl.constexpr, IN_PADDED: tl.constexpr, LEVEL_CHANNELS: tl.constexpr,
        HEAD_PADDED: tl.constexpr, IEEE: tl.constexpr, BLOCK: tl.constexpr,
    ):
        """The finest level, selu(conv1(block 1's features)), written channels-last; and its part of the score
        head's first layer, (1, 8, H, W): two matrix products per block of pixels, on tensor cores."""
        pixel_count = height * width
        pixels, valid, row, column = _pixel_block(height, width, BLOCK)
        ins = tl.arange(0, IN_PADDED)
        levels = tl.arange(0, LEVEL_CHANNELS)
        heads = tl.arange(0, HEAD_PADDED)
        values = tl.load(features + (row * features_stride_y + column * features_stride_x)[:, None]
                         + ins[None, :] * features_stride_c, mask=valid[:, None] & (ins[None, :] < IN_CHANNELS),
                         other=0.0)
        projection = tl.load(project_weight + levels[None, :] * project_stride + ins[:, None],
                             mask=ins[:, None] < IN_CHANNELS, other=0.0).to(values.dtype)  # (C1, Q)
        head_rows = tl.load(head_weight + heads[None, :] * head_stride + levels[:, None],
                            mask=heads[None, :] < 8, other=0.0).to(values.dtype)  # (Q, HEAD_PADDED)
        level = _matmul(values, projection, IEEE)
        level = _activate(level, 1).to(level_output.dtype.element_ty)
        # Channels-last (H, W, C): the layout the feature-read kernel reads a pixel's channels in.
        tl.store(level_output + pixels[:, None] * LEVEL_CHANNELS + levels[None, :], level, mask=valid[:, None])
        head = _matmul(level, head_rows, IEEE)  # from the rounded level, as the layers' own pass reads it
        target = head_output + heads[None, :] * pixel_count + pixels[:, None]  # (1, 8, H, W), contiguous
        tl.store(target, head.to(head_output.dtype.element_ty), mask=valid[:, None] & (heads[None, :] < 8))

    KERNELS_ARE_COMPILED = isinstance(_direct_conv_kernel, triton.runtime.jit.JITFunction)

    def _launchable(kernel):
        # Named here: torch finds the kernel in this body and hashes its source into the compile cache.
        return wrap_triton(kernel) if KERNELS_ARE_COMPILED else kernel

    def _conv_output(image: Tensor, out_channels: int, channels_last: bool) -> Tensor:
        if channels_last:
            return channels_last_empty(image, out_channels)
        return image.new_empty((1, out_channels, *image.shape[-2:]))

    @torch.library.triton_op("aliked_ros::direct_conv", mutates_args=())
    def _direct_conv(image: Tensor, weight: Tensor, bias: Optional[Tensor], activation: int,
                     channels_last: bool) -> Tensor:
        _, in_channels, height, width = image.shape
        out_channels, _, kernel_size, _ = weight.shape
        output = _conv_output(image, out_channels, channels_last)
        if height * width and in_channels >= TENSOR_CORES_FROM_CHANNELS:
            _mma_conv(output, image, weight, bias, activation)
        elif height * width:
            _launchable(_direct_conv_kernel)[(triton.cdiv(height * width, CONV_PIXELS_PER_PROGRAM),)](
                output, image, weight, bias if bias is not None else weight, height, width, *image.stride()[1:],
                output.stride(1), output.stride(3), IN_CHANNELS=in_channels, OUT_CHANNELS=out_channels,
                OUT_PADDED=_power_of_two_at_least(out_channels),
                KERNEL=kernel_size, HAS_BIAS=bias is not None, ACTIVATION=activation, BLOCK=CONV_PIXELS_PER_PROGRAM,
                num_warps=4)
        return output

    @_direct_conv.register_fake
    def _(image: Tensor, weight: Tensor, bias: Optional[Tensor], activation: int, channels_last: bool) -> Tensor:
        return _conv_output(image, weight.shape[0], channels_last)

    @torch.library.triton_op("aliked_ros::residual_conv", mutates_args=())
    def _residual_conv(image: Tensor, weight: Tensor, bias: Tensor, shortcut: Tensor, shortcut_weight: Tensor,
                       shortcut_bias: Tensor) -> Tensor:
        output = image.new_empty((1, weight.shape[0], *image.shape[-2:]))
        if output.numel():
            _mma_conv(output, image, weight, bias, ACTIVATIONS["selu"], (shortcut, shortcut_weight, shortcut_bias))
        return output

    def _mma_conv(output: Tensor, image: Tensor, weight: Tensor, bias: Optional[Tensor], activation: int,
                  shortcut: tuple[Tensor, Tensor, Tensor] | None = None) -> None:
        """_direct_conv_mma_kernel into ``output``; with ``shortcut`` (input, weight, bias), a residual block's end."""
        _, in_channels, height, width = image.shape
        out_channels, _, kernel_size, _ = weight.shape
        source, source_weight, source_bias = shortcut if shortcut is not None else (image, weight, weight)
        shortcut_channels = source.shape[1] if shortcut is not None else 0
        _launchable(_direct_conv_mma_kernel)[(triton.cdiv(height * width, CONV_PIXELS_PER_PROGRAM),)](
            output, image, weight, bias if bias is not None else weight, height, width, *image.stride()[1:],
            output.stride(1), output.stride(3), source, source_weight, source_bias, *source.stride()[1:],
            IN_CHANNELS=in_channels,
            IN_PADDED=_power_of_two_at_least(in_channels, 16), OUT_CHANNELS=out_channels,
            OUT_PADDED=_power_of_two_at_least(out_channels, 16), KERNEL=kernel_size, HAS_BIAS=bias is not None,
            ACTIVATION=activation, IEEE=image.dtype == torch.float32, SHORTCUT_CHANNELS=shortcut_channels,
            SHORTCUT_PADDED=_power_of_two_at_least(shortcut_channels, 16), BLOCK=CONV_PIXELS_PER_PROGRAM,
            num_warps=4)

    @_residual_conv.register_fake
    def _(image: Tensor, weight: Tensor, bias: Tensor, shortcut: Tensor, shortcut_weight: Tensor,
          shortcut_bias: Tensor) -> Tensor:
        return image.new_empty((1, weight.shape[0], *image.shape[-2:]))

    @torch.library.triton_op("aliked_ros::finest_level", mutates_args=())
    def _finest_level(features: Tensor, project_weight: Tensor, head_weight: Tensor) -> tuple[Tensor, Tensor]:
        _, in_channels, height, width = features.shape
        level_channels = project_weight.shape[0]
        # Channels-last: (1, C, H, W) with strides (H·W·C, 1, W·C, C).
        level = channels_last_empty(features, level_channels)
        head = features.new_empty((1, HEAD_CHANNELS, height, width))
        if height * width:
            grid = (triton.cdiv(height * width, FINEST_PIXELS_PER_PROGRAM),)
            _launchable(_finest_level_kernel)[grid](
                level, head, features, project_weight, head_weight, height, width, project_weight.stride(0),
                head_weight.stride(0), *features.stride()[1:], IN_CHANNELS=in_channels,
                IN_PADDED=_power_of_two_at_least(in_channels, 16), LEVEL_CHANNELS=level_channels, HEAD_PADDED=16,
                IEEE=features.dtype == torch.float32, BLOCK=FINEST_PIXELS_PER_PROGRAM, num_warps=4)
        return level, head

    @_finest_level.register_fake
    def _(features: Tensor, project_weight: Tensor, head_weight: Tensor) -> tuple[Tensor, Tensor]:
        _, _, height, width = features.shape
        head = features.new_empty((1, HEAD_CHANNELS, height, width))
        return channels_last_empty(features, project_weight.shape[0]), head


def channels_last_empty(image: Tensor, channels: int) -> Tensor:
    """An uninitialised ``(1, channels, H, W)`` like ``image`` ``(1, C, H, W)``, channels-last in memory (strides
    ``(H·W·channels, 1, W·channels, channels)``): the layout the feature-read and deformable kernels read a pixel's
    channels in, one contiguous vector."""
    return image.new_empty((1, *image.shape[-2:], channels)).permute(0, 3, 1, 2)


def _require_triton() -> None:
    if not AVAILABLE:
        raise RuntimeError("The full-resolution kernels need Triton and torch >= 2.6.")


def direct_conv(image: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str = "none",
                channels_last: bool = False) -> Tensor:
    """A stride-1 convolution with zero padding ``k // 2`` (nn.Conv2d's ``padding=k // 2``) of one image
    ``(1, C, H, W)``, any strides, by a weight ``(O, C, k, k)`` (k odd), plus ``bias``, then ``activation`` ("none",
    "selu" or "sigmoid"): ``(1, O, H, W)`` in the image's dtype, accumulated in float32, contiguous or (with
    ``channels_last``) channels-last in memory. Meant for few channels (every tap is unrolled, and every input channel
    too below 8): C and O up to 32 here."""
    _require_triton()
    if not _takes_image_and_weight(image, weight):
        raise ValueError(f"direct_conv takes one image (1, C, H, W) and a contiguous weight (O, C, k, k), k odd: got "
                         f"{tuple(image.shape)} and {tuple(weight.shape)}.")
    return torch.ops.aliked_ros.direct_conv(image, weight, bias, ACTIVATIONS[activation], channels_last)


def _takes_image_and_weight(image: Tensor, weight: Tensor) -> bool:
    """One image (1, C, H, W) and a contiguous weight (O, C, k, k) with k odd: what the convolution kernels take."""
    _, in_channels, kernel_height, kernel_width = weight.shape
    return (image.dim() == 4 and image.shape[0] == 1 and image.shape[1] == in_channels
            and kernel_height == kernel_width and kernel_height % 2 == 1 and weight.is_contiguous())


def residual_conv(image: Tensor, weight: Tensor, bias: Tensor, shortcut: Tensor, shortcut_weight: Tensor,
                  shortcut_bias: Tensor) -> Tensor:
    """A residual block's end on tensor cores, ``selu(conv(image) + bias + shortcut_weight · shortcut +
    shortcut_bias)``: a stride-1 k×k convolution as :func:`direct_conv`'s, and the block input's 1×1 projection
    (``shortcut`` ``(1, S, H, W)``, any strides; ``shortcut_weight`` ``(O, S, 1, 1)``), in one pass."""
    _require_triton()
    if not _takes_image_and_weight(image, weight) or shortcut.dim() != 4 or shortcut.shape[0] != 1 \
            or shortcut.shape[-2:] != image.shape[-2:] or not shortcut_weight.is_contiguous() \
            or shortcut_weight.shape[:2] != (weight.shape[0], shortcut.shape[1]):
        raise ValueError(f"residual_conv takes one image (1, C, H, W), a contiguous weight (O, C, k, k), k odd, and a "
                         f"shortcut (1, S, H, W) with a contiguous weight (O, S, 1, 1): got {tuple(image.shape)}, "
                         f"{tuple(weight.shape)}, {tuple(shortcut.shape)} and {tuple(shortcut_weight.shape)}.")
    return torch.ops.aliked_ros.residual_conv(image, weight, bias, shortcut, shortcut_weight, shortcut_bias)


def finest_level(features: Tensor, project_weight: Tensor, head_weight: Tensor) -> tuple[Tensor, Tensor]:
    """The finest level and its part of the score head's first layer, at full resolution, in one pass.

    Args:
        features: block 1's output ``(1, C1, H, W)``, C1 up to 16.
        project_weight: conv1's weight ``(Q, C1, 1, 1)`` (Q = dim / 4, a power of two from 16).
        head_weight: the head's first layer for this level's channels, ``(8, Q, 1, 1)`` (a slice of its weight).

    Returns:
        ``selu(conv1(features))`` ``(1, Q, H, W)``, channels-last in memory, and ``head_weight`` applied to it,
        ``(1, 8, H, W)``.
    """
    _require_triton()
    level_channels = project_weight.shape[0]
    if features.dim() != 4 or features.shape[0] != 1 or not 0 < features.shape[1] <= 16 or level_channels < 16 \
            or level_channels & (level_channels - 1) or project_weight.shape[1] != features.shape[1] \
            or head_weight.shape[:2] != (HEAD_CHANNELS, level_channels):
        raise ValueError("finest_level takes features (1, C, H, W) with C up to 16, a projection (Q, C, 1, 1) with Q a "
                         f"power of two from 16 and the head's weights (8, Q, 1, 1): got {tuple(features.shape)}, "
                         f"{tuple(project_weight.shape)} and {tuple(head_weight.shape)}.")
    return torch.ops.aliked_ros.finest_level(features, project_weight.flatten(1), head_weight.flatten(1))
