"""One Triton kernel that reads ALIKED's normalised dense feature map at a batch of positions, straight from the
four backbone levels: the CUDA path of :class:`aliked_ros.model.feature_lookup.FeaturePyramid` on the torch engine's
compiled fast path (``feature_reads`` "auto" there, or "triton"), where it took 0.05 ms off an aliked-t16 frame and
0.31 ms off an aliked-n16rot frame (BENCHMARKS.md, H100).

For each position it computes what the torch formulation computes with ``FeaturePyramid.vectors``,
``sampling.bilinear_taps`` and ``sampling.mix_taps``: the (up to) four neighbours of a real-valued position in the
cropped map (a neighbour outside the map weighs 0), each neighbour's vector ``normalize(cat(level0[pixel], up(level1),
up(level2), up(level3)))`` with ``up`` the aligned-corners bilinear upsampling of a level to the padded full
resolution, and their weighted sum. With ``integer_pixels`` a position is one pixel of weight 1 (the 3×3 patches).

Why a kernel: compiled from the torch formulation, these gathers become several Inductor kernels that read
channels-first levels one channel at a time (one 4-byte read per channel per pixel, uncoalesced), the largest
kernels of the compiled frame. Here one program reads a whole pixel's ``C`` channels as one vector (one contiguous
read for channels-last levels), upsamples, normalises and mixes in registers, in float32, and writes row-major
``(P, dim)`` in the levels' dtype: the layout the descriptor head's next matrix product reads as it is.

The kernel is exposed as the custom operator ``torch.ops.aliked_ros.feature_pyramid_read`` through
``torch.library.triton_op``: it runs eagerly, stays in Inductor's graph under ``torch.compile`` (no graph break: the
operator decomposes into the Triton kernel there), survives ``torch.export`` as a custom operator that AOTInductor
compiles, and allocates only its output, so CUDA graphs capture it. Triton is imported here when it is installed;
without it :data:`AVAILABLE` is False and nothing is registered (the package imports all the same).
"""

from __future__ import annotations

import torch
from torch import Tensor

try:  # Triton is optional: the CPU, ONNX export and CUDA without Triton use the torch formulation
    import triton
    import triton.language as tl
    # Under this name: Inductor's generated kernel modules import it so, and copy user kernels' code into them.
    from triton.language.extra import libdevice
except Exception:  # absent, or broken for this torch (then torch.compile cannot use it either)
    triton = None

AVAILABLE = triton is not None and hasattr(torch.library, "triton_op")  # triton_op: torch >= 2.6
OPERATOR_NAME = "aliked_ros::feature_pyramid_read"
POSITIONS_PER_PROGRAM = 32  # rows of the (P, dim) output one program writes
# Warps per program: enough that each thread holds at most 4 of a (positions, C) tile's values. At 8 (C = 32 on 4
# warps) ptxas for sm_90 needs 255 registers and spills; at 4 about 185 and none (C = 16 and 32 alike).
VALUES_PER_THREAD = 4


def largest_offset(tensor: Tensor) -> int:
    """The offset of a tensor's last element from its first, in elements (what the kernel addresses)."""
    return sum((size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride()))


def level_channels(levels: list[Tensor]) -> int | None:
    """The channel count ``C`` of each level if the kernel reads these levels, else None: four levels of one image
    (``(1, C, h, w)``, the same C, a power of two: tl.arange spans a power of two), each addressed in int32."""
    channels = levels[0].shape[1]
    if len(levels) != 4 or any(level.dim() != 4 or level.shape[0] != 1 or level.shape[1] != channels
                               or largest_offset(level) >= 2**31 for level in levels):
        return None
    return channels if channels > 0 and not channels & (channels - 1) else None


def check_levels(levels: list[Tensor]) -> int:
    """:func:`level_channels`, or a ValueError that says what the kernel needs."""
    channels = level_channels(levels)
    if channels is None:
        raise ValueError("The feature-pyramid kernel reads four levels of shape (1, C, h, w) with the same C, a power "
                         f"of two, below 2**31 elements: got {[tuple(level.shape) for level in levels]}.")
    return channels


if AVAILABLE:
    from torch.library import wrap_triton

    @triton.jit
    def bilinear_neighbour(x0, y0, fx, fy, corner: tl.constexpr, width, height):
        """Neighbour ``corner`` of bilinear sampling (top-left, top-right, bottom-left, bottom-right, as
        bilinear_taps): its column and row clamped inside the ``width`` × ``height`` map, and its weight, 0 where the
        neighbour lies outside (so reading the clamped pixel there changes nothing)."""
        column = x0 + (corner % 2)
        row = y0 + (corner // 2)
        weight = (fx if corner % 2 else 1 - fx) * (fy if corner // 2 else 1 - fy)
        inside = (column >= 0) & (column <= width - 1) & (row >= 0) & (row <= height - 1)
        weight = tl.where(inside, weight, 0.0)
        return tl.minimum(tl.maximum(column, 0), width - 1), tl.minimum(tl.maximum(row, 0), height - 1), weight

    @triton.jit
    def bilinear_origin(x, y, width, height):
        """The top-left neighbour of float32 positions ``x``, ``y`` on a ``width`` × ``height`` map, as int32, and the
        positions' fractions ``fx``, ``fy`` past it (bilinear_neighbour's inputs). Clamped before the integer
        conversion (far-off positions would overflow it): from -2 or the size on, both neighbours lie outside the map
        and weigh 0, so nothing read changes."""
        fx = x - tl.floor(x)
        fy = y - tl.floor(y)
        x0 = tl.minimum(tl.maximum(tl.floor(x), -2.0), width + 0.0).to(tl.int32)
        y0 = tl.minimum(tl.maximum(tl.floor(y), -2.0), height + 0.0).to(tl.int32)
        return x0, y0, fx, fy

    KERNEL_IS_COMPILED = isinstance(bilinear_neighbour, triton.runtime.jit.JITFunction)  # not the interpreter
    # Compiled only: the interpreter has no mul_rn, and rounds every operation anyway.
    PRODUCTS_ROUNDED_BY_LIBDEVICE = tl.constexpr(KERNEL_IS_COMPILED)

    @triton.jit
    def rounded_product(a, b):
        """``a * b`` rounded to float32 before whatever adds to it, as torch's eager kernels round it: compiled, Triton
        lets the compiler fuse ``a * b - c`` into one FMA, which skips that rounding; libdevice's ``mul_rn`` is never
        fused."""
        if PRODUCTS_ROUNDED_BY_LIBDEVICE:
            product = libdevice.mul_rn(a, b)
        else:
            product = a * b
        return product

    @triton.jit
    def _bilinear_level(level, stride_c, stride_y, stride_x, level_height, level_width, full_height, full_width,
                        full_x, full_y, channels, BLOCK: tl.constexpr, CHANNELS: tl.constexpr):
        """(BLOCK, C) float32: one level upsampled with aligned corners, at integer full-resolution pixels."""
        # The aligned-corners factor (level - 1) / (full - 1) in float32, correctly rounded, as the torch formulation
        # rounds its Python float when it multiplies float32 positions by it. Computed here, not passed: Inductor
        # passes a Python float to a user kernel as float64. (zero + ...: a tensor even where Triton made a size
        # of 1 a constant.)
        zero = tl.zeros((BLOCK,), dtype=tl.float32)
        scale_x = tl.math.div_rn(zero + (level_width - 1), tl.maximum(zero + (full_width - 1), 1.0))
        scale_y = tl.math.div_rn(zero + (level_height - 1), tl.maximum(zero + (full_height - 1), 1.0))
        # Rounded before the fraction is taken, as torch does: fused, a source position of ~600 moved by up to 3e-5
        # pixel, 2e-4 in a float32 upsampled map (H100).
        source_x = rounded_product(full_x.to(tl.float32), scale_x)
        source_y = rounded_product(full_y.to(tl.float32), scale_y)
        x0 = tl.floor(source_x)
        y0 = tl.floor(source_y)
        fx = source_x - x0
        fy = source_y - y0
        x0 = x0.to(tl.int32)
        y0 = y0.to(tl.int32)
        mixed = tl.zeros((BLOCK, CHANNELS), dtype=tl.float32)
        for corner in tl.static_range(4):
            # Past the last row or column a neighbour weighs 0 (F.interpolate reads the edge twice: the same value).
            column, row, weight = bilinear_neighbour(x0, y0, fx, fy, corner, level_width, level_height)
            pixel = row * stride_y + column * stride_x
            values = tl.load(level + pixel[:, None] + channels[None, :] * stride_c).to(tl.float32)
            mixed += values * weight[:, None]
        return mixed

    @triton.jit
    def _feature_pyramid_read_kernel(
        output, x_positions, y_positions, count,
        level0, level1, level2, level3,
        stride0_c, stride0_y, stride0_x, stride1_c, stride1_y, stride1_x,
        stride2_c, stride2_y, stride2_x, stride3_c, stride3_y, stride3_x,
        height1, width1, height2, width2, height3, width3, full_height, full_width,
        top, left, height, width,
        CHANNELS: tl.constexpr, INTEGER_PIXELS: tl.constexpr, BLOCK: tl.constexpr,
    ):
        rows_out = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        valid = rows_out < count
        channels = tl.arange(0, CHANNELS)
        # Rows past the end read position (0, 0): valid addresses, results not stored.
        x = tl.load(x_positions + rows_out, mask=valid, other=0)
        y = tl.load(y_positions + rows_out, mask=valid, other=0)
        if INTEGER_PIXELS:
            x0 = x.to(tl.int32)
            y0 = y.to(tl.int32)
            fx = tl.zeros((BLOCK,), dtype=tl.float32)
            fy = tl.zeros((BLOCK,), dtype=tl.float32)
        else:
            x0, y0, fx, fy = bilinear_origin(x.to(tl.float32), y.to(tl.float32), width, height)
        part0 = tl.zeros((BLOCK, CHANNELS), dtype=tl.float32)
        part1 = tl.zeros((BLOCK, CHANNELS), dtype=tl.float32)
        part2 = tl.zeros((BLOCK, CHANNELS), dtype=tl.float32)
        part3 = tl.zeros((BLOCK, CHANNELS), dtype=tl.float32)
        for neighbour in tl.static_range(1 if INTEGER_PIXELS else 4):  # bilinear_taps' order
            # Clamped inside the cropped map (a neighbour outside weighs 0), then into the padded full map.
            column, row, weight = bilinear_neighbour(x0, y0, fx, fy, neighbour, width, height)
            full_x = column + left
            full_y = row + top
            pixel0 = full_y * stride0_y + full_x * stride0_x
            vector0 = tl.load(level0 + pixel0[:, None] + channels[None, :] * stride0_c).to(tl.float32)
            vector1 = _bilinear_level(level1, stride1_c, stride1_y, stride1_x, height1, width1, full_height,
                                      full_width, full_x, full_y, channels, BLOCK, CHANNELS)
            vector2 = _bilinear_level(level2, stride2_c, stride2_y, stride2_x, height2, width2, full_height,
                                      full_width, full_x, full_y, channels, BLOCK, CHANNELS)
            vector3 = _bilinear_level(level3, stride3_c, stride3_y, stride3_x, height3, width3, full_height,
                                      full_width, full_x, full_y, channels, BLOCK, CHANNELS)
            squares = (tl.sum(vector0 * vector0, axis=1) + tl.sum(vector1 * vector1, axis=1)
                       + tl.sum(vector2 * vector2, axis=1) + tl.sum(vector3 * vector3, axis=1))
            norm = tl.maximum(tl.sqrt(squares), 1e-12)  # NORMALIZE_EPS, as F.normalize
            if INTEGER_PIXELS:
                part0 = vector0 / norm[:, None]
                part1 = vector1 / norm[:, None]
                part2 = vector2 / norm[:, None]
                part3 = vector3 / norm[:, None]
            else:
                part0 += (vector0 / norm[:, None]) * weight[:, None]
                part1 += (vector1 / norm[:, None]) * weight[:, None]
                part2 += (vector2 / norm[:, None]) * weight[:, None]
                part3 += (vector3 / norm[:, None]) * weight[:, None]
        # Row-major (P, 4C): the levels' channels side by side, as the concatenated map holds them.
        target = output + rows_out[:, None] * (4 * CHANNELS) + channels[None, :]
        keep = valid[:, None]
        tl.store(target, part0.to(output.dtype.element_ty), mask=keep)
        tl.store(target + CHANNELS, part1.to(output.dtype.element_ty), mask=keep)
        tl.store(target + 2 * CHANNELS, part2.to(output.dtype.element_ty), mask=keep)
        tl.store(target + 3 * CHANNELS, part3.to(output.dtype.element_ty), mask=keep)

    def kernel_launch(output: Tensor, levels: list[Tensor], x: Tensor, y: Tensor, top: int, left: int, height: int,
                      width: int, integer_pixels: bool) -> tuple[tuple[int], list, dict]:
        """Grid, arguments and meta-parameters of the kernel that fills ``output`` ``(P, 4C)`` from flat contiguous
        positions ``x``, ``y`` ``(P,)``."""
        channels = check_levels(levels)
        strides = [stride for level in levels for stride in level.stride()[1:]]  # (c, y, x) per level
        sizes = [size for level in (*levels[1:], levels[0]) for size in level.shape[-2:]]  # (h, w), the full last
        count = x.numel()
        arguments = [output, x, y, count, *levels, *strides, *sizes, top, left, height, width]
        warps = max(4, POSITIONS_PER_PROGRAM * channels // (32 * VALUES_PER_THREAD))
        meta = dict(CHANNELS=channels, INTEGER_PIXELS=integer_pixels, BLOCK=POSITIONS_PER_PROGRAM, num_warps=warps)
        return (triton.cdiv(count, POSITIONS_PER_PROGRAM),), arguments, meta

    @torch.library.triton_op(OPERATOR_NAME, mutates_args=())
    def feature_pyramid_read(level0: Tensor, level1: Tensor, level2: Tensor, level3: Tensor, x: Tensor, y: Tensor,
                             top: int, left: int, height: int, width: int, integer_pixels: bool) -> Tensor:
        """``(P, dim)`` normalised feature vectors at ``P`` positions (see the module docstring)."""
        output = level0.new_empty((x.numel(), 4 * level0.shape[1]))
        if x.numel():  # a grid of zero programs is not launched
            grid, arguments, meta = kernel_launch(output, [level0, level1, level2, level3], x.reshape(-1).contiguous(),
                                                  y.reshape(-1).contiguous(), top, left, height, width, integer_pixels)
            # Named here: torch finds the kernel in this body and hashes its source into the compile cache. Triton's
            # interpreter (TRITON_INTERPRET=1, eager only) makes no JITFunction, which older torch cannot wrap.
            kernel = (wrap_triton(_feature_pyramid_read_kernel) if KERNEL_IS_COMPILED
                      else _feature_pyramid_read_kernel)
            kernel[grid](*arguments, **meta)
        return output

    @feature_pyramid_read.register_fake
    def _(level0: Tensor, level1: Tensor, level2: Tensor, level3: Tensor, x: Tensor, y: Tensor,
          top: int, left: int, height: int, width: int, integer_pixels: bool) -> Tensor:
        # Shapes only: triton_op would otherwise trace the launch itself with fake tensors.
        return level0.new_empty((x.numel(), 4 * level0.shape[1]))


def read_feature_pyramid(levels: list[Tensor], x: Tensor, y: Tensor, top: int, left: int, height: int, width: int,
                         integer_pixels: bool) -> Tensor:
    """``(*S, dim)`` in the levels' dtype: the normalised feature vectors at positions ``x``, ``y`` of shape ``S``.

    Args:
        levels: the four ``(1, C, h_s, w_s)`` levels, any strides; the first at the padded full resolution.
        x, y: pixel positions in the cropped map: float32 for bilinear sampling, integer pixels with
            ``integer_pixels`` (clamped into the map).
        top, left: where the cropped map starts in the padded one; height, width: the cropped map's size.
    """
    if not AVAILABLE:
        raise RuntimeError("The feature-pyramid kernel needs Triton and torch >= 2.6.")
    check_levels(levels)
    if not integer_pixels:
        x, y = x.to(torch.float32), y.to(torch.float32)  # positions in float32 whatever the levels' dtype
    vectors = torch.ops.aliked_ros.feature_pyramid_read(*levels, x, y, top, left, height, width, integer_pixels)
    return vectors.view(*x.shape, vectors.shape[-1])
