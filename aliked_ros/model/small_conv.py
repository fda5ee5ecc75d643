"""Convolutions with few channels at full resolution, as one direct Triton kernel each (CUDA fast path).

ALIKED's first block (3 → c1 → c1 channels) and its score head (8 → 4 → 4 → 1) run at the full image resolution
with a handful of channels. cuDNN computes them as implicit GEMMs whose tensor-core tiles are mostly padding: on the
H100 these five layers took about 0.2 ms of a 0.68 ms aliked-t16 frame. The work itself is small (an 8 → 8 3×3
layer at 640×480 is 0.18 GFMA and 10 MB of traffic), so a direct kernel that computes every output channel of a
block of pixels from the shifted input taps, with the bias and the activation fused in, is 2–5× faster for the
smallest layers (:data:`DIRECT_KERNEL_MAX_MACS`); cuDNN keeps the others. Inside a compiled frame that saved
3 % of the kernel time on aliked-t16 and nothing on aliked-n16rot, within the noise end to end (BENCHMARKS.md), so
the engine uses it only when asked (``small_conv="triton"``).

:func:`conv2d_activation` is the one entry point: ``implementation="torch"`` computes the same function with
``F.conv2d`` (any device; the reference of the tests), ``"triton"`` launches the kernel, registered as the
``aliked_ros::conv2d_activation`` operator so that ``torch.compile`` keeps it inside the compiled graph and it can be
captured in a CUDA graph. Triton is imported only when the kernel is asked for; with ``TRITON_INTERPRET=1`` it runs on
CPU tensors, which is how the tests check it where there is no GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

ACTIVATIONS = ("none", "selu", "sigmoid")
SMALL_CONV_IMPLEMENTATIONS = ("torch", "triton")
# Multiply-adds per output pixel up to which the direct kernel beat cuDNN on the H100 (measured per layer in
# float16: 3→8 3×3 12 against 56 µs at 640×480, 8→8 28 against 57, 1×1 8→16 8 against 32; but 16→16 3×3 at
# 1248×384 291 against 111): the direct kernel runs on CUDA cores, cuDNN's tiles pay off once there are enough
# channels.
DIRECT_KERNEL_MAX_MACS = 8 * 8 * 9


def direct_kernel_pays(weight: Tensor) -> bool:
    """Whether a layer with this ``(C_out, C_in, k, k)`` weight is small enough for the direct kernel."""
    return weight.numel() <= DIRECT_KERNEL_MAX_MACS


def _activate(x: Tensor, activation: str) -> Tensor:
    if activation == "selu":
        return F.selu(x)
    if activation == "sigmoid":
        return torch.sigmoid(x)
    return x


def conv2d_activation(x: Tensor, weight: Tensor, bias: Tensor | None = None, *, output_activation: str = "none",
                      implementation: str = "torch") -> Tensor:
    """``output_activation(conv2d(x, weight, bias))``, stride 1, zero padding ``k // 2``.

    Args:
        x: ``(B, C_in, H, W)``.
        weight: ``(C_out, C_in, k, k)``, ``k`` odd.
        bias: ``(C_out,)`` or None.
        output_activation: 'none', 'selu' or 'sigmoid'.
        implementation: 'torch' (``F.conv2d``) or 'triton' (the direct kernel, float32 accumulation, for layers
            small enough that it pays, :func:`direct_kernel_pays`; larger ones still take ``F.conv2d``).
    """
    if output_activation not in ACTIVATIONS:
        raise ValueError(f"output_activation is one of {ACTIVATIONS}, not {output_activation!r}")
    kernel_size = weight.shape[-1]
    if weight.shape[-2] != kernel_size or kernel_size % 2 == 0:
        raise ValueError(f"a square kernel of odd size is needed, not {tuple(weight.shape[-2:])}")
    if implementation not in SMALL_CONV_IMPLEMENTATIONS:
        raise ValueError(f"implementation is one of {SMALL_CONV_IMPLEMENTATIONS}, not {implementation!r}")
    if implementation == "torch" or not direct_kernel_pays(weight):
        return _activate(F.conv2d(x, weight, bias, padding=kernel_size // 2), output_activation)
    bias = None if bias is None else bias.contiguous()
    return _triton_operator()(x.contiguous(), weight.contiguous(), bias, ACTIVATIONS.index(output_activation))


def _triton_operator():
    from aliked_ros.model import small_conv_triton  # imports Triton: only where the kernel is asked for

    return small_conv_triton.conv2d_activation_triton
