"""Triton kernels for the full-resolution layers of the compiled CUDA path (issue 17): the first block's two 3×3
convolutions, block 2's (at half resolution, its 1×1 shortcut fused into the second), the finest level with its
part of the score head's first layer, the head's three 3×3 convolutions, and the detector's NMS with its top-k.

Every one of those layers has a handful of channels (3 → 8 → 8 for aliked-t16, 3 → 16 → 16 for the n models; 8 → 4
→ 4 → 1 in the head) at the padded image's full size. cuDNN runs them as implicit GEMMs built for tens of channels,
each followed by a layout copy and an activation pass: on an H100 the frame's largest kernels (BENCHMARKS.md, "The
full-resolution layers as Triton kernels"). Here a program takes a block of pixels and holds all its output
channels in registers: each input value is read once per tap and feeds every output channel (as multiply-adds, or
on tensor cores from 8 input channels), the bias and the activation are applied before the one write, and nothing
is converted between layouts. NMS is the original's five window passes (``detection.nms_mask``), each one kernel
that reads its ``(2r+1)²`` window straight from memory and writes one byte per pixel; the last pass also counts the
scores in a histogram of their float16 bits, from which top-k is a threshold and one ordered gather (``nms_top_k``)
instead of torch's radix select.

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
NMS_PIXELS_PER_PROGRAM = 512
HEAD_CHANNELS = 8  # the score head's first layer: dim → 8
# The NMS passes (see _nms_pass_kernel): what a pass reads and writes.
NMS_MAXIMA, NMS_SUPPRESSED, NMS_MORE_MAXIMA, NMS_FINAL = 0, 1, 2, 3
# Top-k over the NMS output by the bits of its positive float16 scores: one bin per value below 2 (0x4000; sigmoid
# scores stay below 1), read by one program in chunks.
TOP_K_BINS = 16384
TOP_K_CHUNK = 1024


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
    def _finish_conv(output, result, bias, outs, out_valid, pixels, valid, pixel_count, HAS_BIAS: tl.constexpr,
                     ACTIVATION: tl.constexpr):
        """A convolution's (BLOCK, O) float32 sums: plus the bias, activated, written to (1, O, H, W) contiguous."""
        if HAS_BIAS:
            result += tl.load(bias + outs, mask=out_valid, other=0.0).to(tl.float32)[None, :]
        result = _activate(result, ACTIVATION)
        target = output + outs[None, :] * pixel_count + pixels[:, None]
        tl.store(target, result.to(output.dtype.element_ty), mask=valid[:, None] & out_valid[None, :])

    @triton.jit
    def _direct_conv_kernel(
        output, image, weight, bias, height, width, stride_c, stride_y, stride_x,
        IN_CHANNELS: tl.constexpr, OUT_CHANNELS: tl.constexpr, OUT_PADDED: tl.constexpr, KERNEL: tl.constexpr,
        HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, BLOCK: tl.constexpr,
    ):
        pixel_count = height * width
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
        _finish_conv(output, result, bias, outs, out_valid, pixels, valid, pixel_count, HAS_BIAS, ACTIVATION)

    @triton.jit
    def _direct_conv_mma_kernel(
        output, image, weight, bias, height, width, stride_c, stride_y, stride_x,
        shortcut, shortcut_weight, shortcut_bias, shortcut_stride_c, shortcut_stride_y, shortcut_stride_x,
        IN_CHANNELS: tl.constexpr, IN_PADDED: tl.constexpr, OUT_CHANNELS: tl.constexpr, OUT_PADDED: tl.constexpr,
        KERNEL: tl.constexpr, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, IEEE: tl.constexpr,
        SHORTCUT_CHANNELS: tl.constexpr, SHORTCUT_PADDED: tl.constexpr, BLOCK: tl.constexpr,
    ):
        """_direct_conv_kernel on tensor cores: per tap, (pixels, C) times the tap's (C, O) weights, C and O padded
        with zeros to at least 16 (tl.dot's least size). With SHORTCUT_CHANNELS, a residual block's end: a 1×1
        projection of ``shortcut`` (weight (O, S), bias) is added before the activation."""
        pixel_count = height * width
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
            sources = tl.arange(0, SHORTCUT_PADDED)
            source_valid = sources < SHORTCUT_CHANNELS
            values = tl.load(shortcut + (row * shortcut_stride_y + column * shortcut_stride_x)[:, None]
                             + sources[None, :] * shortcut_stride_c, mask=valid[:, None] & source_valid[None, :],
                             other=0.0)
            weights = tl.load(shortcut_weight + outs[None, :] * SHORTCUT_CHANNELS + sources[:, None],
                              mask=source_valid[:, None] & out_valid[None, :], other=0.0)
            result += _matmul(values, weights.to(values.dtype), IEEE)
            result += tl.load(shortcut_bias + outs, mask=out_valid, other=0.0).to(tl.float32)[None, :]
        _finish_conv(output, result, bias, outs, out_valid, pixels, valid, pixel_count, HAS_BIAS, ACTIVATION)

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

    @triton.jit
    def _nms_pass_kernel(
        output, scores, keep, suppressed, histogram, height, width, stride_y,
        PASS: tl.constexpr, RADIUS: tl.constexpr, HISTOGRAM: tl.constexpr, BLOCK: tl.constexpr,
    ):
        """One of NMS's window passes over a ``height`` × ``width`` map (rows ``stride_y`` apart; masks dense):

        - NMS_MAXIMA: keep = score is its window's maximum.
        - NMS_SUPPRESSED: suppressed = a kept position in the window.
        - NMS_MORE_MAXIMA: keep |= not suppressed and the maximum of its window of the scores with the suppressed
          positions zeroed.
        - NMS_FINAL: as NMS_MORE_MAXIMA, then the score where kept and at least RADIUS from the border, else 0;
          with HISTOGRAM bins, each positive float16 score below them also counts in ``histogram[its bits]`` (for
          top-k; a score past the bins, 2 and up for TOP_K_BINS, would be left out, not written out of bounds).

        The window is clipped at the border (max pooling's -inf padding).
        """
        pixels, valid, row, column = _pixel_block(height, width, BLOCK)
        center = tl.load(scores + row * stride_y + column, mask=valid, other=0.0).to(tl.float32)
        if PASS == 0:
            best = tl.full((BLOCK,), float("-inf"), tl.float32)
        else:
            best = tl.zeros((BLOCK,), dtype=tl.float32)
        for tap in tl.static_range((2 * RADIUS + 1) * (2 * RADIUS + 1)):
            y, x, inside = _window_tap(row, column, valid, height, width, tap, 2 * RADIUS + 1)
            if PASS == 0:
                values = tl.load(scores + y * stride_y + x, mask=inside, other=float("-inf")).to(tl.float32)
            elif PASS == 1:
                values = tl.load(keep + y * width + x, mask=inside, other=0).to(tl.float32)
            else:  # the scores with the suppressed positions zeroed (scores are positive: 0 never wins a window)
                values = tl.load(scores + y * stride_y + x, mask=inside, other=0.0).to(tl.float32)
                gone = tl.load(suppressed + y * width + x, mask=inside, other=1)
                values = tl.where(gone != 0, 0.0, values)
            best = tl.maximum(best, values)
        if PASS == 0:
            result = center == best
        elif PASS == 1:
            result = best > 0
        else:
            kept = tl.load(keep + pixels, mask=valid, other=0) != 0
            free = tl.load(suppressed + pixels, mask=valid, other=1) == 0
            result = kept | (free & (center == best))
        if PASS == 3:
            interior = (row >= RADIUS) & (row < height - RADIUS) & (column >= RADIUS) & (column < width - RADIUS)
            final = tl.where(result & interior, center, 0.0).to(output.dtype.element_ty)
            tl.store(output + pixels, final, mask=valid)
            if HISTOGRAM:  # positive float16 values order as their bits, read as integers
                bits = final.to(tl.int16, bitcast=True).to(tl.int32)
                tl.atomic_add(histogram + bits, 1, mask=valid & (bits > 0) & (bits < HISTOGRAM))
        else:
            tl.store(output + pixels, result.to(tl.uint8), mask=valid)

    @triton.jit
    def _top_k_threshold_kernel(histogram, state, k, BINS: tl.constexpr, CHUNK: tl.constexpr):
        """One program: from the histogram of the positive scores' bits, the bits of the K-th largest score and the
        count of scores above it (state[0], state[1]); where fewer than K are positive, 0 and their count (zeros fill
        the rest). Two dependent steps, not one per chunk: every chunk's total at once, then the bins of the one chunk
        where the count from the top reaches K."""
        chunks = tl.arange(0, BINS // CHUNK)
        steps = tl.arange(0, CHUNK)
        totals = tl.sum(tl.load(histogram + chunks[:, None] * CHUNK + steps[None, :]), axis=1)
        positive = tl.sum(totals, axis=0)
        above_chunk = positive - tl.cumsum(totals, axis=0)  # scores in the chunks above each
        chunk = tl.max(tl.where(above_chunk + totals >= k, chunks, -1), axis=0)  # -1: fewer than K positive
        found = chunk >= 0
        chunk = tl.maximum(chunk, 0)
        counts = tl.load(histogram + chunk * CHUNK + steps)
        at_or_above = (tl.sum(tl.where(chunks == chunk, above_chunk, 0), axis=0) + tl.sum(counts, axis=0)
                       - tl.cumsum(counts, axis=0) + counts)  # scores in the bins at or above each
        last = tl.max(tl.where(at_or_above >= k, steps, -1), axis=0)  # the highest bin where the count reaches K
        bits = tl.where(found, chunk * CHUNK + last, 0)
        above = tl.where(found, tl.sum(tl.where(steps == last, at_or_above - counts, 0), axis=0), positive)
        tl.store(state, bits)
        tl.store(state + 1, above)

    @triton.jit
    def _top_k_count_kernel(block_counts, scores, state, count, BLOCK: tl.constexpr):
        """Per program of BLOCK pixels: how many of its scores lie above the K-th largest (block_counts[2p]) and how
        many equal it (block_counts[2p + 1])."""
        program = tl.program_id(0)
        pixels = program * BLOCK + tl.arange(0, BLOCK)
        valid = pixels < count
        bits = tl.load(scores + pixels, mask=valid, other=0.0).to(tl.int16, bitcast=True).to(tl.int32)
        kth = tl.load(state)
        tl.store(block_counts + 2 * program, tl.sum((valid & (bits > kth)).to(tl.int32), axis=0))
        tl.store(block_counts + 2 * program + 1, tl.sum((valid & (bits == kth)).to(tl.int32), axis=0))

    @triton.jit
    def _top_k_gather_kernel(values_out, indices_out, scores, state, block_counts, count, k, BLOCK: tl.constexpr,
                             CHUNK: tl.constexpr):
        """Every score above the K-th largest, then as many equal to it as K needs, into the K slots, each group in
        pixel order: a program's slots start after the counts of the programs before it (_top_k_count_kernel's), so
        the output is the same on every run. No slot past K is written, whatever the counts say."""
        program = tl.program_id(0)
        steps = tl.arange(0, CHUNK)
        above_before = tl.sum(tl.zeros((CHUNK,), dtype=tl.int32), axis=0)
        equal_before = above_before
        for start in range(0, program, CHUNK):
            earlier = start + steps
            before = earlier < program
            above_before += tl.sum(tl.load(block_counts + 2 * earlier, mask=before, other=0), axis=0)
            equal_before += tl.sum(tl.load(block_counts + 2 * earlier + 1, mask=before, other=0), axis=0)
        pixels = program * BLOCK + tl.arange(0, BLOCK)
        valid = pixels < count
        values = tl.load(scores + pixels, mask=valid, other=0.0)
        bits = values.to(tl.int16, bitcast=True).to(tl.int32)
        kth = tl.load(state)
        above_count = tl.load(state + 1)
        above = valid & (bits > kth)
        slot = above_before + tl.cumsum(above.to(tl.int32), axis=0) - 1
        above = above & (slot < k)
        tl.store(values_out + slot, values, mask=above)
        tl.store(indices_out + slot, pixels.to(tl.int64), mask=above)
        equal = valid & (bits == kth)
        rank = equal_before + tl.cumsum(equal.to(tl.int32), axis=0) - 1
        take = equal & (rank < k - above_count)
        tl.store(values_out + above_count + rank, values, mask=take)
        tl.store(indices_out + above_count + rank, pixels.to(tl.int64), mask=take)

    KERNELS_ARE_COMPILED = isinstance(_direct_conv_kernel, triton.runtime.jit.JITFunction)

    def _launchable(kernel):
        # Named here: torch finds the kernel in this body and hashes its source into the compile cache.
        return wrap_triton(kernel) if KERNELS_ARE_COMPILED else kernel

    @torch.library.triton_op("aliked_ros::direct_conv", mutates_args=())
    def _direct_conv(image: Tensor, weight: Tensor, bias: Optional[Tensor], activation: int) -> Tensor:
        _, in_channels, height, width = image.shape
        out_channels, _, kernel_size, _ = weight.shape
        output = image.new_empty((1, out_channels, height, width))
        if height * width:
            grid = (triton.cdiv(height * width, CONV_PIXELS_PER_PROGRAM),)
            arguments = (output, image, weight, bias if bias is not None else weight, height, width,
                         *image.stride()[1:])
            settings = dict(IN_CHANNELS=in_channels, OUT_CHANNELS=out_channels, KERNEL=kernel_size,
                            HAS_BIAS=bias is not None, ACTIVATION=activation, BLOCK=CONV_PIXELS_PER_PROGRAM,
                            num_warps=4)
            if in_channels >= TENSOR_CORES_FROM_CHANNELS:
                _launchable(_direct_conv_mma_kernel)[grid](
                    *arguments, image, weight, weight, 0, 0, 0, IN_PADDED=_power_of_two_at_least(in_channels, 16),
                    OUT_PADDED=_power_of_two_at_least(out_channels, 16), IEEE=image.dtype == torch.float32,
                    SHORTCUT_CHANNELS=0, SHORTCUT_PADDED=16, **settings)
            else:
                _launchable(_direct_conv_kernel)[grid](
                    *arguments, OUT_PADDED=_power_of_two_at_least(out_channels), **settings)
        return output

    @_direct_conv.register_fake
    def _(image: Tensor, weight: Tensor, bias: Optional[Tensor], activation: int) -> Tensor:
        return image.new_empty((1, weight.shape[0], *image.shape[-2:]))

    @torch.library.triton_op("aliked_ros::residual_conv", mutates_args=())
    def _residual_conv(image: Tensor, weight: Tensor, bias: Tensor, shortcut: Tensor, shortcut_weight: Tensor,
                       shortcut_bias: Tensor) -> Tensor:
        _, in_channels, height, width = image.shape
        out_channels, _, kernel_size, _ = weight.shape
        shortcut_channels = shortcut.shape[1]
        output = image.new_empty((1, out_channels, height, width))
        if height * width:
            grid = (triton.cdiv(height * width, CONV_PIXELS_PER_PROGRAM),)
            _launchable(_direct_conv_mma_kernel)[grid](
                output, image, weight, bias, height, width, *image.stride()[1:], shortcut, shortcut_weight,
                shortcut_bias, *shortcut.stride()[1:], IN_CHANNELS=in_channels,
                IN_PADDED=_power_of_two_at_least(in_channels, 16), OUT_CHANNELS=out_channels,
                OUT_PADDED=_power_of_two_at_least(out_channels, 16), KERNEL=kernel_size, HAS_BIAS=True,
                ACTIVATION=ACTIVATIONS["selu"], IEEE=image.dtype == torch.float32,
                SHORTCUT_CHANNELS=shortcut_channels, SHORTCUT_PADDED=_power_of_two_at_least(shortcut_channels, 16),
                BLOCK=CONV_PIXELS_PER_PROGRAM, num_warps=4)
        return output

    @_residual_conv.register_fake
    def _(image: Tensor, weight: Tensor, bias: Tensor, shortcut: Tensor, shortcut_weight: Tensor,
          shortcut_bias: Tensor) -> Tensor:
        return image.new_empty((1, weight.shape[0], *image.shape[-2:]))

    @torch.library.triton_op("aliked_ros::finest_level", mutates_args=())
    def _finest_level(features: Tensor, project_weight: Tensor, head_weight: Tensor) -> tuple[Tensor, Tensor]:
        _, in_channels, height, width = features.shape
        level_channels = project_weight.shape[0]
        # Channels-last: (1, C, H, W) with strides (H·W·C, 1, W·C, C).
        level = features.new_empty((1, height, width, level_channels)).permute(0, 3, 1, 2)
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
        level = features.new_empty((1, height, width, project_weight.shape[0])).permute(0, 3, 1, 2)
        return level, features.new_empty((1, HEAD_CHANNELS, height, width))

    @torch.library.triton_op("aliked_ros::nms_scores", mutates_args=())
    def _nms_scores(scores: Tensor, radius: int) -> Tensor:
        output = scores.new_empty((scores.shape[0] * scores.shape[1],))
        _nms_passes(scores, radius, output, None)
        return output

    def _nms_passes(scores: Tensor, radius: int, output: Tensor, histogram: Tensor | None) -> None:
        height, width = scores.shape
        if height * width:
            keep = torch.empty((height, width), dtype=torch.uint8, device=scores.device)
            suppressed = torch.empty_like(keep)
            grid = (triton.cdiv(height * width, NMS_PIXELS_PER_PROGRAM),)
            kernel = _launchable(_nms_pass_kernel)
            # (output, pass): maxima; then two rounds of suppression and more maxima, the last writing the scores.
            for target, step in ((keep, NMS_MAXIMA), (suppressed, NMS_SUPPRESSED), (keep, NMS_MORE_MAXIMA),
                                 (suppressed, NMS_SUPPRESSED), (output, NMS_FINAL)):
                kernel[grid](target, scores, keep, suppressed, histogram if histogram is not None else keep, height,
                             width, scores.stride(0), PASS=step, RADIUS=radius,
                             HISTOGRAM=0 if histogram is None else histogram.numel(),
                             BLOCK=NMS_PIXELS_PER_PROGRAM, num_warps=4)

    @_nms_scores.register_fake
    def _(scores: Tensor, radius: int) -> Tensor:
        return scores.new_empty((scores.shape[0] * scores.shape[1],))

    @torch.library.triton_op("aliked_ros::nms_top_k", mutates_args=())
    def _nms_top_k(scores: Tensor, radius: int, k: int) -> tuple[Tensor, Tensor]:
        count = scores.shape[0] * scores.shape[1]
        nms = scores.new_empty((count,))
        # Each its own buffer, not views of one workspace: with those, the compiled network's gather wrote out of
        # bounds on the H100 (Inductor had rebuilt the overlapping views as copies; eager was right).
        histogram = torch.zeros((TOP_K_BINS,), dtype=torch.int32, device=scores.device)
        state = torch.empty((2,), dtype=torch.int32, device=scores.device)  # the K-th largest's bits, count above
        programs = triton.cdiv(count, NMS_PIXELS_PER_PROGRAM)
        block_counts = torch.empty((2 * programs,), dtype=torch.int32, device=scores.device)
        values = scores.new_empty((k,))
        indices = torch.empty((k,), dtype=torch.int64, device=scores.device)
        if count:
            _nms_passes(scores, radius, nms, histogram)
            _launchable(_top_k_threshold_kernel)[(1,)](histogram, state, k, BINS=TOP_K_BINS, CHUNK=TOP_K_CHUNK,
                                                       num_warps=8)
            _launchable(_top_k_count_kernel)[(programs,)](block_counts, nms, state, count,
                                                          BLOCK=NMS_PIXELS_PER_PROGRAM, num_warps=4)
            _launchable(_top_k_gather_kernel)[(programs,)](
                values, indices, nms, state, block_counts, count, k, BLOCK=NMS_PIXELS_PER_PROGRAM,
                CHUNK=TOP_K_CHUNK, num_warps=4)
        return values, indices

    @_nms_top_k.register_fake
    def _(scores: Tensor, radius: int, k: int) -> tuple[Tensor, Tensor]:
        return scores.new_empty((k,)), torch.empty((k,), dtype=torch.int64, device=scores.device)


def _require_triton() -> None:
    if not AVAILABLE:
        raise RuntimeError("The full-resolution kernels need Triton and torch >= 2.6.")


def direct_conv(image: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str = "none") -> Tensor:
    """A stride-1 convolution with zero padding ``k // 2`` (nn.Conv2d's ``padding=k // 2``) of one image
    ``(1, C, H, W)``, any strides, by a weight ``(O, C, k, k)`` (k odd), plus ``bias``, then ``activation`` ("none",
    "selu" or "sigmoid"): ``(1, O, H, W)`` contiguous in the image's dtype, accumulated in float32. Meant for few
    channels (every tap is unrolled, and every input channel too below 8): C and O up to 32 here."""
    _require_triton()
    out_channels, in_channels, kernel_height, kernel_width = weight.shape
    if image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != in_channels or kernel_height != kernel_width \
            or kernel_height % 2 == 0 or not weight.is_contiguous():
        raise ValueError(f"direct_conv takes one image (1, C, H, W) and a contiguous weight (O, C, k, k), k odd: got "
                         f"{tuple(image.shape)} and {tuple(weight.shape)}.")
    return torch.ops.aliked_ros.direct_conv(image, weight, bias, ACTIVATIONS[activation])


def residual_conv(image: Tensor, weight: Tensor, bias: Tensor, shortcut: Tensor, shortcut_weight: Tensor,
                  shortcut_bias: Tensor) -> Tensor:
    """A residual block's end on tensor cores, ``selu(conv(image) + bias + shortcut_weight · shortcut +
    shortcut_bias)``: a stride-1 k×k convolution as :func:`direct_conv`'s, and the block input's 1×1 projection
    (``shortcut`` ``(1, S, H, W)``, any strides; ``shortcut_weight`` ``(O, S, 1, 1)``), in one pass."""
    _require_triton()
    out_channels, in_channels, kernel_height, kernel_width = weight.shape
    if image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != in_channels or kernel_height != kernel_width \
            or kernel_height % 2 == 0 or not weight.is_contiguous() or shortcut.dim() != 4 \
            or shortcut.shape[0] != 1 or shortcut.shape[-2:] != image.shape[-2:] \
            or shortcut_weight.shape[:2] != (out_channels, shortcut.shape[1]) or not shortcut_weight.is_contiguous():
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


def nms_scores(scores: Tensor, radius: int) -> Tensor:
    """The score where ``detection.nms_mask`` keeps a position and it lies at least ``radius`` from the border, else
    0, flattened: ``(H·W,)`` from an ``(H, W)`` map (rows may be strided: a crop), in the map's dtype."""
    _require_triton()
    if scores.dim() != 2 or scores.stride(1) != 1:
        raise ValueError(f"nms_scores takes an (H, W) map with contiguous rows: got {tuple(scores.shape)}, strides "
                         f"{scores.stride()}.")
    return torch.ops.aliked_ros.nms_scores(scores, radius)


def nms_top_k(scores: Tensor, radius: int, k: int) -> tuple[Tensor, Tensor]:
    """``torch.topk(nms_scores(scores, radius), k, sorted=False)`` for a float16 map of scores in (0, 2): the K
    largest of the NMS output and their flat indices, those above the K-th largest value first, then as many equal to
    it as K needs (ties; zeros where fewer than K maxima), each group in pixel order: the same rows on every run,
    whatever order the GPU runs the programs in. A histogram of the scores' bits made by the last NMS
    pass, one program that finds the K-th largest in it, a count per block and one gather: three kernels after the NMS
    passes instead of top-k's radix passes."""
    _require_triton()
    if scores.dim() != 2 or scores.stride(1) != 1 or scores.dtype != torch.float16 \
            or not 0 < k <= scores.shape[0] * scores.shape[1]:
        raise ValueError(f"nms_top_k takes a float16 (H, W) map with contiguous rows and 0 < k <= H·W: got "
                         f"{tuple(scores.shape)} {scores.dtype}, strides {scores.stride()}, k={k}.")
    return torch.ops.aliked_ros.nms_top_k(scores, radius, k)
