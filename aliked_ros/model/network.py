"""The ALIKED network (Zhao et al., "ALIKED: A Lighter Keypoint and Descriptor Extraction Network via Deformable
Transformation", IEEE TIM 2023), written for static shapes and export.

Module and parameter names are those of the published ``.pth`` files, so ``load_state_dict(strict=True)`` takes
them as they are. The backbone is four blocks at 1, 1/2, 1/8 and 1/32 resolution (the last two with deformable
convolutions); their features are projected to ``dim / 4`` channels each, upsampled to full resolution and
concatenated into the dense feature map, from which a small head predicts the score map. The sparse deformable
descriptor head (SDDH) describes given keypoints only.

:meth:`AlikedNetwork.score_map_and_features`, which inference and export use, never builds the full-resolution
``dim``-channel map the original builds: the score head's first 1×1 convolution is applied before upsampling, and the
descriptor head reads the map only at the pixels it needs (``feature_lookup``). The original's dense formulation is
kept in the tests (``test/dense_reference.py``) as the reference both are compared with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aliked_ros.model.configs import ModelConfig
from aliked_ros.model.deform_conv import DeformableConv2d
from aliked_ros.model.feature_lookup import FeatureLookup, FeaturePyramid

PAD_MULTIPLE = 32
# Block 1's convolutions write channels-last from this many channels (a pixel's 16 float16 channels one 32-byte read
# for the next convolution and the finest level): aliked-n16rot 0.817 -> 0.788 ms a frame on an H100, while
# aliked-t16's 8 channels went 0.500 -> 0.541 (BENCHMARKS.md, thirteenth session).
CHANNELS_LAST_FROM_CHANNELS = 16


def _conv(in_channels: int, out_channels: int, deformable: bool) -> nn.Module:
    if deformable:
        return DeformableConv2d(in_channels, out_channels)
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)


class ConvBlock(nn.Module):
    """Two 3×3 conv + BN + SELU layers (the first block)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = _conv(in_channels, out_channels, deformable=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = _conv(out_channels, out_channels, deformable=False)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        x = F.selu(self.bn1(self.conv1(x)))
        return F.selu(self.bn2(self.conv2(x)))


class ResBlock(nn.Module):
    """A residual block of two 3×3 (optionally deformable) convolutions with a 1×1 projection shortcut."""

    def __init__(self, in_channels: int, out_channels: int, deformable: bool):
        super().__init__()
        self.conv1 = _conv(in_channels, out_channels, deformable)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = _conv(out_channels, out_channels, deformable)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        out = F.selu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.selu(out + self.downsample(x))


class SparseDeformableDescriptorHead(nn.Module):
    """SDDH: a descriptor from ``M`` feature samples at learned offsets around each keypoint.

    For each keypoint, a 3×3 patch of the dense feature map (around the integer part of the keypoint) predicts
    ``M`` offsets, clamped to a quarter of the larger map side; the map is sampled bilinearly at keypoint + offset,
    each sample goes through a 1×1 projection and SELU, and a learned per-position matrix aggregates the ``M``
    samples into one descriptor, which is L2-normalised.
    """

    def __init__(self, dim: int, kernel_size: int, positions: int):
        super().__init__()
        self.kernel_size = kernel_size
        self.positions = positions
        offset_channels = 2 * positions
        self.offset_conv = nn.Sequential(
            nn.Conv2d(dim, offset_channels, kernel_size, bias=True),
            nn.SELU(),
            nn.Conv2d(offset_channels, offset_channels, 1, bias=True),
        )
        self.sf_conv = nn.Conv2d(dim, dim, 1, bias=False)
        self.agg_weights = nn.Parameter(torch.empty(positions, dim, dim))
        nn.init.uniform_(self.agg_weights)  # the original's initialisation; pretrained weights replace it

    def forward(self, features: FeatureLookup, keypoints: Tensor) -> Tensor:
        """Descriptors ``(N, dim)`` of ``(N, 2)`` pixel keypoints, reading one image's normalised feature map (a
        :class:`FeatureLookup`, as :class:`FeaturePyramid`)."""
        height, width, size = features.height, features.width, self.kernel_size
        count, dim = keypoints.shape[0], self.sf_conv.in_channels
        # Patch corner as the original computes it: truncate, step back to centre the patch, keep it inside the map.
        pixel = keypoints.to(torch.int64)
        corner = torch.trunc(pixel.to(torch.float32) - size / 2 + 1).to(torch.int64)
        corner_x = corner[:, 0].clamp(0, width - 1 - size)
        corner_y = corner[:, 1].clamp(0, height - 1 - size)
        steps = torch.arange(size, device=keypoints.device)
        patch_columns = (corner_x.view(-1, 1, 1) + steps.view(1, 1, size)).expand(count, size, size)
        patch_rows = (corner_y.view(-1, 1, 1) + steps.view(1, size, 1)).expand(count, size, size)
        patches = features.pixels(patch_columns, patch_rows)  # (N, size, size, dim)
        # Each keypoint's patch in (channel, row, column) order: the layout of the offset conv's flattened kernel.
        patches = patches.permute(0, 3, 1, 2).reshape(count, dim * size * size)

        predict, _, mix = self.offset_conv  # conv, SELU, conv
        hidden = F.selu(F.linear(patches, predict.weight.flatten(1), predict.bias))
        offsets = F.linear(hidden, mix.weight.flatten(1), mix.bias).float()
        max_offset = max(height, width) / 4.0
        offsets = offsets.clamp(-max_offset, max_offset)  # (N, 2M): M x-offsets, then M y-offsets
        sample_x = keypoints[:, 0:1].float() + offsets[:, : self.positions]
        sample_y = keypoints[:, 1:2].float() + offsets[:, self.positions :]
        samples = features.sample(sample_x, sample_y).reshape(count * self.positions, dim)  # keypoint, position
        projected = F.selu(F.linear(samples, self.sf_conv.weight.flatten(1)))  # the 1×1 conv: (N·M, dim)
        # agg_weights[m, c, d]: position m's channel c into descriptor channel d
        descriptors = projected.reshape(count, self.positions * dim) @ self.agg_weights.reshape(
            self.positions * dim, dim)
        return F.normalize(descriptors.float(), p=2.0, dim=1)


def replicate_padding(height: int, width: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) padding that centres the image in a multiple of PAD_MULTIPLE, as the original."""
    pad_h = -height % PAD_MULTIPLE
    pad_w = -width % PAD_MULTIPLE
    return pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2


class AlikedNetwork(nn.Module):
    """Backbone, score head and descriptor head of one ALIKED variant.

    Convention:
        - Input of :meth:`score_map_and_features`: float RGB ``(B, 3, H, W)`` in ``[0, 1]`` (the range of the pretrained
          weights), any ``H`` and ``W``. It is replicate-padded around its centre to multiples of 32 and the maps
          are cropped back, so the padding moves no keypoint.
        - Outputs: the score map ``(B, 1, H, W)`` in ``(0, 1)``, in the network's dtype, and the L2-normalised dense
          feature map ``(B, dim, H, W)`` as a :class:`FeaturePyramid` that computes it where it is read.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c1, c2, c3, c4, dim = config.c1, config.c2, config.c3, config.c4, config.dim
        self.block1 = ConvBlock(3, c1)
        self.block2 = ResBlock(c1, c2, deformable=False)
        self.block3 = ResBlock(c2, c3, deformable=True)
        self.block4 = ResBlock(c3, c4, deformable=True)
        quarter = dim // 4
        self.conv1 = nn.Conv2d(c1, quarter, 1, bias=False)
        self.conv2 = nn.Conv2d(c2, quarter, 1, bias=False)
        self.conv3 = nn.Conv2d(c3, quarter, 1, bias=False)
        self.conv4 = nn.Conv2d(c4, quarter, 1, bias=False)
        self.score_head = nn.Sequential(
            nn.Conv2d(dim, 8, 1, bias=False),
            nn.SELU(),
            nn.Conv2d(8, 4, 3, padding=1, bias=False),
            nn.SELU(),
            nn.Conv2d(4, 4, 3, padding=1, bias=False),
            nn.SELU(),
            nn.Conv2d(4, 1, 3, padding=1, bias=False),
        )
        self.desc_head = SparseDeformableDescriptorHead(dim, config.descriptor_kernel, config.descriptor_positions)
        # "torch" or "triton": how the descriptor head reads the feature pyramid on CUDA (see FeaturePyramid); the
        # torch engine picks the kernel on its compiled fast path (TorchExtractor's feature_reads).
        self.feature_reads = "torch"
        # "torch" or "triton": the full-resolution layers (block 1, the finest level, the score head) as cuDNN
        # convolutions or as the Triton kernels of dense_kernels (TorchExtractor's dense_kernels; BatchNorm folded).
        self.dense_layers = "torch"

    @torch.no_grad()
    def fold_batch_norm(self) -> None:
        """Fold every BatchNorm (eval statistics) into the convolution before it, for inference.

        ``bn(conv(x)) = conv'(x)`` with ``w' = w·γ/σ`` and ``b' = β − μ·γ/σ``, σ = √(var + ε): one pass over the
        activations less per layer, the same function up to rounding. The state dict changes (BN layers become
        Identity, convolutions gain biases), so load the published weights first.
        """
        for block in (self.block1, self.block2, self.block3, self.block4):
            for conv_name, bn_name in (("conv1", "bn1"), ("conv2", "bn2")):
                bn = getattr(block, bn_name)
                if not isinstance(bn, nn.BatchNorm2d):
                    continue
                conv = getattr(block, conv_name)
                conv = conv.regular_conv if isinstance(conv, DeformableConv2d) else conv
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                bias = bn.bias - bn.running_mean * scale
                if conv.bias is not None:
                    bias = bias + conv.bias * scale
                conv.weight.mul_(scale.view(-1, 1, 1, 1))
                conv.bias = nn.Parameter(bias)
                setattr(block, bn_name, nn.Identity())

    def set_deform_implementation(self, implementation: str) -> None:
        """Choose the deformable convolution kernel: 'auto', 'tensor', 'torchvision' or 'triton' (see deform_conv)."""
        if implementation == "triton":
            # Imported now, so that torch.compile's tracing meets no import.
            from aliked_ros.model import deform_kernel  # noqa: F401
        for module in self.modules():
            if isinstance(module, DeformableConv2d):
                module.implementation = implementation

    def set_dense_layers(self, choice: str) -> None:
        """The full-resolution layers: "torch" (cuDNN and torch) or "triton" (dense_kernels; CUDA, BatchNorm folded)."""
        if choice == "triton":
            # Imported now, so that torch.compile's tracing meets no import.
            from aliked_ros.model import dense_kernels, nms_kernels  # noqa: F401
        self.dense_layers = choice

    def score_map_and_features(self, image: Tensor) -> tuple[Tensor, FeaturePyramid]:
        """The score map ``(B, 1, H, W)`` and the feature map as a :class:`FeaturePyramid` (read where needed).

        The score head's first layer is a 1×1 convolution of the concatenated full-resolution levels; bilinear
        upsampling (weights summing to one) commutes with it, so each level is projected to the head's 8 channels at
        its own resolution and only those 8 channels are upsampled: the ``dim``-channel map is never built.
        """
        if self.dense_layers == "triton":
            return self._score_map_and_features_by_kernels(image)
        height, width = image.shape[-2:]
        levels, (top, left) = self._levels(image)
        full = levels[0].shape[-2:]
        head_in = self.score_head[0].weight  # (8, dim, 1, 1)
        quarter = levels[0].shape[1]
        head_input = F.conv2d(levels[0], head_in[:, :quarter])
        for index, level in enumerate(levels[1:], start=1):
            projected = F.conv2d(level, head_in[:, index * quarter:(index + 1) * quarter])
            head_input = head_input + F.interpolate(projected, size=full, mode="bilinear", align_corners=True)
        _, _, head_conv1, _, head_conv2, _, head_conv3 = self.score_head  # SELUs between the convolutions
        x = F.selu(head_conv1(F.selu(head_input)))
        x = F.selu(head_conv2(x))
        score_map = torch.sigmoid(head_conv3(x))
        score_map = score_map[..., top:top + height, left:left + width]
        return score_map, FeaturePyramid(levels, top, left, height, width, kernel=self.feature_reads == "triton")

    def _score_map_and_features_by_kernels(self, image: Tensor) -> tuple[Tensor, FeaturePyramid]:
        """:meth:`score_map_and_features` with the full-resolution layers as Triton kernels (dense_kernels): block 1's
        convolutions, the finest level with the head's input, and the head's convolutions; BatchNorm folded."""
        from aliked_ros.model import dense_kernels

        if not all(isinstance(block.bn1, nn.Identity) and isinstance(block.bn2, nn.Identity)
                   for block in (self.block1, self.block2)):
            raise RuntimeError("The full-resolution kernels need the BatchNorm folded (fold_batch_norm).")
        height, width = image.shape[-2:]
        image, (top, left) = self._padded(image)
        block1 = self.block1
        channels_last = block1.conv1.weight.shape[0] >= CHANNELS_LAST_FROM_CHANNELS
        x1 = dense_kernels.direct_conv(image, block1.conv1.weight, block1.conv1.bias, "selu", channels_last)
        x1 = dense_kernels.direct_conv(x1, block1.conv2.weight, block1.conv2.bias, "selu", channels_last)
        coarse = self._coarse_levels(x1, by_kernels=True)
        quarter = coarse[0].shape[1]
        head_in = self.score_head[0].weight  # (8, dim, 1, 1): each level's part projected at its own resolution
        projections = [F.conv2d(level, head_in[:, index * quarter:(index + 1) * quarter])
                       for index, level in enumerate(coarse, start=1)]
        finest, head_input = dense_kernels.finest_level(x1, self.conv1.weight, head_in[:, :quarter])
        for projected in projections:
            head_input = head_input + F.interpolate(projected, size=finest.shape[-2:], mode="bilinear",
                                                    align_corners=True)
        x = F.selu(head_input)
        _, _, head_conv1, _, head_conv2, _, head_conv3 = self.score_head
        x = dense_kernels.direct_conv(x, head_conv1.weight, None, "selu")
        x = dense_kernels.direct_conv(x, head_conv2.weight, None, "selu")
        score_map = dense_kernels.direct_conv(x, head_conv3.weight, None, "sigmoid")
        score_map = score_map[..., top:top + height, left:left + width]
        levels = [finest, *self._for_reads(coarse)]
        return score_map, FeaturePyramid(levels, top, left, height, width, kernel=self.feature_reads == "triton")

    def _padded(self, image: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """The image replicate-padded to multiples of PAD_MULTIPLE around its centre; and (top, left)."""
        left, right, top, bottom = replicate_padding(*image.shape[-2:])
        if left or right or top or bottom:
            image = F.pad(image, (left, right, top, bottom), mode="replicate")
        return image, (top, left)

    def _coarse_levels(self, x1: Tensor, by_kernels: bool = False) -> list[Tensor]:
        """Blocks 2 to 4 from block 1's output, each projected to ``dim / 4`` channels; block 2 as two dense_kernels
        convolutions where ``by_kernels`` (BatchNorm folded)."""
        if by_kernels:
            from aliked_ros.model import dense_kernels

            block2, x2 = self.block2, F.avg_pool2d(x1, 2)
            hidden = dense_kernels.direct_conv(x2, block2.conv1.weight, block2.conv1.bias, "selu")
            x2 = dense_kernels.residual_conv(hidden, block2.conv2.weight, block2.conv2.bias, x2,
                                             block2.downsample.weight, block2.downsample.bias)
        else:
            x2 = self.block2(F.avg_pool2d(x1, 2))
        x3 = self._deformable_block(self.block3, F.avg_pool2d(x2, 4))
        x4 = self._deformable_block(self.block4, F.avg_pool2d(x3, 4))
        return [F.selu(conv(x)) for conv, x in ((self.conv2, x2), (self.conv3, x3), (self.conv4, x4))]

    def _deformable_block(self, block: ResBlock, x: Tensor) -> Tensor:
        """``block(x)``; where its convolutions take the Triton kernel (``set_deform_implementation("triton")``) and
        the BatchNorm is folded, each deformable convolution as one fused kernel (offsets, reads, product, bias,
        shortcut and activation; :func:`~aliked_ros.model.deform_kernel.deformable_block`)."""
        if block.conv1.implementation == "triton" and isinstance(block.bn1, nn.Identity) \
                and isinstance(block.bn2, nn.Identity):
            from aliked_ros.model import deform_kernel

            x = x.contiguous(memory_format=torch.channels_last)  # a pixel's channels: one contiguous read
            if deform_kernel.fused_block_accepted(x, block):
                return deform_kernel.deformable_block(x, block)
        return block(x)

    def _for_reads(self, levels: list[Tensor]) -> list[Tensor]:
        if self.feature_reads == "triton":  # the kernel reads a pixel's channels as one contiguous vector there
            return [level.contiguous(memory_format=torch.channels_last) for level in levels]
        return levels

    def _levels(self, image: Tensor) -> tuple[list[Tensor], tuple[int, int]]:
        """The backbone's four levels projected to ``dim / 4`` channels, on the padded image; and (top, left)."""
        image, (top, left) = self._padded(image)
        x1 = self.block1(image)
        levels = [F.selu(self.conv1(x1)), *self._coarse_levels(x1)]
        return self._for_reads(levels), (top, left)

