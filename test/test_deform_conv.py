"""The pure-tensor deformable convolution against kornia's independent implementation (torchvision semantics)."""

import pytest
import torch

from aliked_ros.model.deform_conv import DeformableConv2d, deform_conv2d_tensor, torchvision_deform_conv2d

kornia_deform = pytest.importorskip("kornia.feature.aliked.deform_conv2d")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_kornia_reference(seed):
    generator = torch.Generator().manual_seed(seed)
    batch, channels, out_channels, height, width = 2, 5, 7, 9, 11
    x = torch.randn(batch, channels, height, width, generator=generator, dtype=torch.float64)
    weight = torch.randn(out_channels, channels, 3, 3, generator=generator, dtype=torch.float64)
    # Offsets of several pixels: many taps land between pixels and some fall outside the map.
    offset = 3 * torch.randn(batch, 18, height, width, generator=generator, dtype=torch.float64)
    ours = deform_conv2d_tensor(x, offset, weight, padding=1)
    reference = kornia_deform.deform_conv2d(x, offset, weight, padding=(1, 1))
    assert ours.shape == (batch, out_channels, height, width)
    assert torch.allclose(ours, reference, atol=1e-10, rtol=1e-10)


def test_zero_offsets_are_a_plain_convolution():
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 8, 6, generator=generator, dtype=torch.float64)
    weight = torch.randn(3, 4, 3, 3, generator=generator, dtype=torch.float64)
    offset = torch.zeros(1, 18, 8, 6, dtype=torch.float64)
    expected = torch.nn.functional.conv2d(x, weight, padding=1)
    assert torch.allclose(deform_conv2d_tensor(x, offset, weight, padding=1), expected, atol=1e-12)


def test_module_paths_agree_where_torchvision_is_usable():
    if torchvision_deform_conv2d() is None:
        pytest.skip("torchvision is not installed or its compiled ops do not load here")
    torch.manual_seed(0)
    module = DeformableConv2d(6, 8).double()
    x = torch.randn(1, 6, 16, 20, dtype=torch.float64)
    module.implementation = "tensor"
    tensor_out = module(x)
    module.implementation = "torchvision"
    assert torch.allclose(module(x), tensor_out, atol=1e-10)
