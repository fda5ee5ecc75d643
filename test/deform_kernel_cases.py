"""The cases the deformable-convolution kernel (``aliked_ros.model.deform_kernel``) is checked on, against the tensor
formulation (``deform_conv2d_tensor``).

The ``test_*`` functions here run the kernel in Triton's interpreter on the CPU, in a subprocess of
``test_deform_kernel.py`` with ``TRITON_INTERPRET=1`` (set before Triton is imported); this file's name keeps pytest
from collecting it in the main run. The CUDA tests there use the helpers for the real run.
"""

from __future__ import annotations

import itertools
import os

import pytest
import torch

from aliked_ros.model.aliked import Aliked
from aliked_ros.model.deform_conv import deform_conv2d_tensor

# float32 results differ from the tensor formulation by rounding only (1.4e-6 seen on outputs up to 5.3); float16
# ones by a float16 step of the columns (both round them once) carried through the product: two steps of outputs up
# to 8 (5e-4 seen in the interpreter).
TOLERANCES = {torch.float32: 1e-5, torch.float16: 8e-3}
LAYOUTS = ["channels_first", "channels_last"]
SIZES = [(15, 20), (12, 39), (6, 5)]  # block 3 and 4 sizes of small frames; 6×5: most taps reach outside
CASES = [(*SIZES[index % len(SIZES)], dtype, layout, channels)
         for index, (dtype, layout, channels) in enumerate(itertools.product(
             (torch.float32, torch.float16), LAYOUTS, (16, 64)))]
CASE_IDS = [f"{h}x{w}-{str(dtype).split('.')[-1]}-{layout}-C{channels}" for h, w, dtype, layout, channels in CASES]


def random_inputs(height: int, width: int, channels: int, dtype: torch.dtype, layout: str, device="cpu",
                  seed: int = 0, out_channels: int = 24):
    """An input, offsets (mostly small, some far outside the map, some on exact pixels), weights and a bias."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(1, channels, height, width, generator=generator)
    offset = torch.randn(1, 18, height, width, generator=generator) * 2
    offset[:, :, ::3, ::4] = torch.randint(-2, 3, offset[:, :, ::3, ::4].shape, generator=generator).float()
    offset[:, 4:6, 1::5] = 40.0  # far outside: reads nothing
    weight = torch.randn(out_channels, channels, 3, 3, generator=generator) / (3 * channels ** 0.5)
    bias = torch.randn(out_channels, generator=generator)
    tensors = [t.to(device, dtype) for t in (x, offset, weight, bias)]
    if layout == "channels_last":
        tensors[0] = tensors[0].contiguous(memory_format=torch.channels_last)
        tensors[1] = tensors[1].contiguous(memory_format=torch.channels_last)
    return tensors


def kernel_and_reference(x, offset, weight, bias):
    from aliked_ros.model.deform_kernel import deform_conv2d_triton

    with torch.no_grad():
        return deform_conv2d_triton(x, offset, weight, 1, bias), deform_conv2d_tensor(x, offset, weight, 1, bias)


def check(x, offset, weight, bias):
    result, reference = kernel_and_reference(x, offset, weight, bias)
    assert result.shape == reference.shape and result.dtype == reference.dtype
    assert result.is_contiguous(memory_format=torch.channels_last)  # what the next layers read
    torch.testing.assert_close(result.float(), reference.float(), rtol=0, atol=TOLERANCES[x.dtype])


interpreter = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                 reason="runs in Triton's interpreter (TRITON_INTERPRET=1, see test_deform_kernel.py)")


@interpreter
@pytest.mark.parametrize("height, width, dtype, layout, channels", CASES, ids=CASE_IDS)
def test_kernel_matches_the_tensor_formulation(height, width, dtype, layout, channels):
    check(*random_inputs(height, width, channels, dtype, layout))


@interpreter
def test_the_network_with_the_kernel_gives_the_tensor_formulations_features():
    torch.manual_seed(0)
    aliked = Aliked("aliked-t16", top_k=50).eval()
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        expected = aliked(image)
        aliked.network.set_deform_implementation("triton")
        result = aliked(image)
    for got, want in zip(result, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


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
def test_the_network_with_the_fused_blocks_gives_the_tensor_formulations_features():
    torch.manual_seed(0)
    aliked = Aliked("aliked-t16", top_k=50).eval()
    aliked.network.fold_batch_norm()
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        expected = aliked(image)
        aliked.network.set_deform_implementation("triton")
        assert aliked.network.fused_deformable_blocks
        result = aliked(image)
    for got, want in zip(result, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
