"""Triton kernels for the detector's NMS and top-k on the compiled CUDA path (issue 17), beside
:mod:`~aliked_ros.model.dense_kernels`' convolutions (whose pixel-block and window helpers they share).

NMS is the original's five window passes (``detection.nms_mask``), each one kernel that reads its ``(2r+1)²`` window
straight from memory and writes one byte per pixel. Its last pass also counts the scores in a histogram of their
float16 bits, from which top-k is a threshold, a count per block of pixels and one ordered gather
(:func:`nms_top_k`) instead of torch's radix select: the same rows on every run.

Exposed as custom operators through ``torch.library.triton_op`` (eager, inside torch.compile, in CUDA graphs). Triton
missing, :data:`AVAILABLE` is False and nothing is registered.
"""

from __future__ import annotations

import torch
from torch import Tensor

from aliked_ros.model.dense_kernels import AVAILABLE, _require_triton

NMS_PIXELS_PER_PROGRAM = 512
# The NMS passes (see _nms_pass_kernel): what a pass reads and writes.
NMS_MAXIMA, NMS_SUPPRESSED, NMS_MORE_MAXIMA, NMS_FINAL = 0, 1, 2, 3
# Top-k over the NMS output by the bits of its positive float16 scores: one bin per value below 2 (0x4000; sigmoid
# scores stay below 1), read by one program in chunks.
TOP_K_BINS = 16384
TOP_K_CHUNK = 1024


if AVAILABLE:
    import triton
    import triton.language as tl

    # Under their own names: Inductor copies a kernel's helpers into its generated module by their function names.
    from aliked_ros.model.dense_kernels import _launchable, _pixel_block, _window_tap

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
