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
