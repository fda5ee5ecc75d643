"""The cases the fused deformable-convolution kernel (``aliked_ros.model.deform_kernel``) is checked on, against the
layers it replaces (a deformable ResBlock with the tensor formulation, ``deform_conv2d_tensor``).

The ``test_*`` functions here run the kernel in Triton's interpreter on the CPU, in a subprocess of
``test_deform_kernel.py`` with ``TRITON_INTERPRET=1`` (set before Triton is imported); this file's name keeps pytest
from collecting it in the main run. The CUDA tests there use the helpers for the real run.
"""

from __future__ import annotations

import os

import pytest
import torch

from aliked_ros.model.aliked import Aliked

# The fused block (deform_kernel.deformable_block) against ResBlock's own layers: blocks 3 and 4 of aliked-t16
# (16 → 32, 32 → 64) and of the n models (64 → 128), on block 4's and small block 3 sizes.
BLOCK_CASES = [(15, 20, 16, 32), (6, 5, 32, 64), (12, 39, 64, 128)]
BLOCK_CASE_IDS = [f"{h}x{w}-{c}to{o}" for h, w, c, o in BLOCK_CASES]
# float32: the two paths sum the same products in another order (1e-5 of outputs up to ~5). float16 against the
# float32 layers: the offsets, columns and output each rounded to float16 once (2e-2 of outputs up to ~5).
BLOCK_TOLERANCES = {torch.float32: 1e-4, torch.float16: 3e-2}


def random_block(in_channels: int, out_channels: int, seed: int = 0):
    """A deformable ResBlock as the engine runs it, BatchNorm folded (Identity, biases on the convolutions), with
    offsets large enough that taps reach outside small maps, and an input."""
    from torch import nn

    from aliked_ros.model.network import ResBlock

    torch.manual_seed(seed)
    block = ResBlock(in_channels, out_channels, deformable=True).eval()
    block.bn1, block.bn2 = nn.Identity(), nn.Identity()
    with torch.no_grad():
        for conv in (block.conv1, block.conv2):
            conv.regular_conv.bias = nn.Parameter(torch.randn(out_channels) * 0.1)
            conv.offset_conv.weight.mul_(4.0)
    return block


def fused_and_reference(height, width, in_channels, out_channels, dtype, layout="channels_first", device="cpu"):
    from aliked_ros.model.deform_kernel import deformable_block, fused_block_accepted

    block = random_block(in_channels, out_channels)
    x = torch.randn(1, in_channels, height, width)
    with torch.no_grad():
        block.conv1.implementation = block.conv2.implementation = "tensor"
        reference = block(x)  # float32, on the CPU
        block = block.to(device, dtype)
        x = x.to(device, dtype)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        assert fused_block_accepted(x, block)
        return deformable_block(x, block), reference


interpreter = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                 reason="runs in Triton's interpreter (TRITON_INTERPRET=1, see test_deform_kernel.py)")


def check_block(height, width, in_channels, out_channels, dtype, layout="channels_first", device="cpu"):
    result, reference = fused_and_reference(height, width, in_channels, out_channels, dtype, layout, device)
    assert result.shape == reference.shape and result.dtype == dtype
    assert result.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(result.float().cpu(), reference, rtol=0, atol=BLOCK_TOLERANCES[dtype])


@interpreter
@pytest.mark.parametrize("height, width, in_channels, out_channels", BLOCK_CASES, ids=BLOCK_CASE_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float32", "float16"])
def test_fused_block_is_the_blocks_layers(height, width, in_channels, out_channels, dtype):
    check_block(height, width, in_channels, out_channels, dtype, "channels_last" if height == 15 else "channels_first")


@interpreter
def test_the_network_with_the_fused_blocks_gives_the_tensor_formulations_features(monkeypatch):
    from aliked_ros.model import deform_kernel

    fused = []
    monkeypatch.setattr(deform_kernel, "deformable_block",
                        lambda x, block, run=deform_kernel.deformable_block: fused.append(block) or run(x, block))
    torch.manual_seed(0)
    aliked = Aliked("aliked-t16", top_k=50).eval()
    aliked.network.fold_batch_norm()
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        expected = aliked(image)
        assert not fused
        aliked.network.set_deform_implementation("triton")
        result = aliked(image)
    assert fused == [aliked.network.block3, aliked.network.block4]  # both blocks through the kernel
    for got, want in zip(result, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
