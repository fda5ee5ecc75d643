"""ALIKED's dense feature map, read at integer pixels: computed only where the descriptor head asks.

The dense feature map is ``normalize(cat(y1, up(y2), up(y3), up(y4)))`` at full resolution, where ``y_s`` are the
four backbone levels projected to ``dim / 4`` channels and ``up`` is bilinear upsampling with aligned corners. The
descriptor head reads it at a few thousand pixels per frame (3×3 patches and the four neighbours of each deformable
sample), yet the materialised map is ``dim`` channels at full resolution: 123 MB in float16 for a KITTI frame and
aliked-n16rot, written, normalised and read back every frame. :class:`FeaturePyramid` keeps the four small levels
and computes the normalised vector of each pixel asked for, exactly as the dense map holds it (up to rounding; the
tests compare it with the materialised map, ``test/dense_reference.py``).

The lookup answers ``vectors(columns, rows)``: pixel indices of any shape ``S`` inside the (cropped) map, in,
``(dim, *S)`` vectors out, in at least float32. The descriptor head reads through :class:`FeatureLookup`'s
``pixels(columns, rows)`` (integer pixels) and ``sample(x, y)`` (bilinear), which answer ``(*S, dim)`` rows in the
map's dtype: the torch formulation on top of ``vectors``, or, where asked for on CUDA with Triton (the torch engine's
compiled fast path), one kernel (``sampling_kernel``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from aliked_ros.model.sampling import bilinear_taps, mix_taps, runs_on_pytorch_cpu_kernels

NORMALIZE_EPS = 1e-12  # F.normalize's default, which the dense map uses
_kernel_module = None  # aliked_ros.model.sampling_kernel, once load_kernel() has imported it


def load_kernel():
    """The feature-read kernel's module, imported on first use: it brings Triton and torch's compiler stack (about a
    second of imports at every start), which the default reads never need. Call it before torch.compile traces a
    forward that reads with the kernel (the engine does), so that tracing meets no import."""
    global _kernel_module
    if _kernel_module is None:
        from aliked_ros.model import sampling_kernel

        _kernel_module = sampling_kernel
    return _kernel_module


class FeatureLookup:
    """A normalised ``dim``-channel feature map of ``height`` × ``width`` pixels, read where the descriptor head asks.

    Subclasses give ``height``, ``width``, ``dim``, ``dtype`` and ``vectors(columns, rows)``; the reads below are
    built on ``vectors`` (the torch formulation: gathers and arithmetic, which the CPU and the ONNX graph run).
    """

    height: int
    width: int
    dim: int
    dtype: torch.dtype

    def vectors(self, columns: Tensor, rows: Tensor) -> Tensor:
        """``(dim, *S)`` in at least float32: the vectors at integer pixels of shape ``S``."""
        raise NotImplementedError

    def pixels(self, columns: Tensor, rows: Tensor) -> Tensor:
        """``(*S, dim)`` in the map's dtype: the vectors at integer pixels of shape ``S`` inside the map, one row
        per pixel."""
        vectors = self.vectors(columns, rows).to(self.dtype)
        return vectors.view(self.dim, columns.numel()).t().view(*columns.shape, self.dim)

    def sample(self, x: Tensor, y: Tensor) -> Tensor:
        """``(*S, dim)`` in the map's dtype: the map sampled bilinearly at pixel positions ``x``, ``y`` of shape
        ``S`` (float32), neighbours outside the map weighing zero, one row per position."""
        columns, rows, weights = bilinear_taps(self.height, self.width, x, y)  # (4, *S)
        mixed = mix_taps(self.vectors(columns, rows), weights).to(self.dtype)  # (dim, *S)
        return mixed.view(self.dim, x.numel()).t().view(*x.shape, self.dim)


class FeaturePyramid(FeatureLookup):
    """The dense feature map, computed only at the pixels asked for, from its four levels before upsampling.

    Args:
        levels: ``(1, dim/4, h_s, w_s)`` projected levels; the first at the full (padded) resolution.
        top, left: where the cropped map starts in the padded one (the replicate padding to multiples of 32).
        height, width: the cropped map's size, that of the image.

        kernel: read with the Triton kernel of ``sampling_kernel`` where it can (CUDA levels, Triton installed, not
            exporting to ONNX); the torch engine asks for it on its compiled fast path (BENCHMARKS.md, "Issue 17").

    :meth:`pixels` and :meth:`sample` run the kernel where ``use_kernel`` says; the tests set it to run the kernel
    in Triton's interpreter on the CPU.
    """

    def __init__(self, levels: list[Tensor], top: int, left: int, height: int, width: int, kernel: bool = False):
        self.levels = levels
        self.top, self.left = top, left
        self.height, self.width = height, width
        self.dtype = levels[0].dtype
        self.dim = sum(level.shape[1] for level in levels)
        self.full_height, self.full_width = levels[0].shape[-2:]
        # Off CUDA (the CPU, and the ONNX graph, which is traced there), gather whole pixel rows (H*W, C): a
        # pixel's channels are one contiguous read instead of C reads H*W apart (onnxruntime's CPU profile:
        # BENCHMARKS.md). On CUDA, unless the kernel reads (feature_reads="triton"), the channels-first gathers stay:
        # pixel rows did not pay there (BENCHMARKS.md). Both give the same vectors.
        self.pixel_rows = not levels[0].is_cuda
        self._sources = None  # made on the first vectors(): the kernel reads the levels as they are
        self.use_kernel = bool(kernel and levels[0].is_cuda and not torch.onnx.is_in_onnx_export()
                               and load_kernel().AVAILABLE and load_kernel().level_channels(levels) is not None)

    def pixels(self, columns: Tensor, rows: Tensor) -> Tensor:
        if not self.use_kernel:
            return super().pixels(columns, rows)
        return load_kernel().read_feature_pyramid(self.levels, columns, rows, self.top, self.left, self.height,
                                                    self.width, integer_pixels=True)

    def sample(self, x: Tensor, y: Tensor) -> Tensor:
        if not self.use_kernel:
            return super().sample(x, y)
        return load_kernel().read_feature_pyramid(self.levels, x, y, self.top, self.left, self.height,
                                                    self.width, integer_pixels=False)

    def _source(self, level: Tensor) -> Tensor:
        """One level laid out for :meth:`_read`: pixel rows ``(h*w, C)`` or channels-first ``(C, h*w)``."""
        if self.pixel_rows:
            return level[0].permute(1, 2, 0).reshape(-1, level.shape[1])
        return level.reshape(level.shape[1], -1)

    def _read(self, source: Tensor, index: Tensor) -> Tensor:
        """``(C, *index.shape)``: the channels of the level's pixels at flat ``index``."""
        if self.pixel_rows:
            gathered = source[index]  # (*index.shape, C)
            return gathered.permute(index.dim(), *range(index.dim()))  # positive axes: ONNX Transpose wants them
        return source[:, index.reshape(-1)].view(source.shape[0], *index.shape)

    def vectors(self, columns: Tensor, rows: Tensor) -> Tensor:
        compute_dtype = torch.promote_types(self.dtype, torch.float32)
        full_x = (columns + self.left).reshape(-1)
        full_y = (rows + self.top).reshape(-1)
        if self._sources is None:
            self._sources = [self._source(level) for level in self.levels]
        parts = []
        for level, source in zip(self.levels, self._sources):
            level_height, level_width = level.shape[-2:]
            if (level_height, level_width) == (self.full_height, self.full_width):
                parts.append(self._read(source, full_y * level_width + full_x).to(compute_dtype))
            else:
                parts.append(self._upsampled(source, level_height, level_width, full_x, full_y, compute_dtype))
        vectors = torch.cat(parts, dim=0)
        if runs_on_pytorch_cpu_kernels(vectors):  # there a norm over the outer axis is slower (BENCHMARKS.md, CPU)
            norms = (vectors * vectors).sum(dim=0, keepdim=True).sqrt()
        else:
            norms = vectors.norm(dim=0, keepdim=True)
        vectors = vectors / norms.clamp_min(NORMALIZE_EPS)
        return vectors.view(self.dim, *columns.shape)

    def _upsampled(self, source: Tensor, height: int, width: int, full_x: Tensor, full_y: Tensor,
                   compute_dtype: torch.dtype) -> Tensor:
        """Bilinear upsampling with aligned corners (as F.interpolate computes it), at the given full-size pixels."""
        scale_x = (width - 1) / (self.full_width - 1) if self.full_width > 1 else 0.0
        scale_y = (height - 1) / (self.full_height - 1) if self.full_height > 1 else 0.0
        source_x = full_x.to(compute_dtype) * scale_x
        source_y = full_y.to(compute_dtype) * scale_y
        # The sources lie inside the level, so its four neighbours are F.interpolate's; at the last row or column
        # the neighbour beyond has weight zero, where F.interpolate reads the edge pixel twice: the same value.
        columns, rows, weights = bilinear_taps(height, width, source_x, source_y)  # (4, P)
        corners = self._read(source, rows * width + columns).to(compute_dtype)  # (C, 4, P)
        return mix_taps(corners, weights)
