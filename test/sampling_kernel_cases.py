"""The cases the feature-pyramid kernel (``aliked_ros.model.sampling_kernel``) is checked on, against the torch
formulation (``FeatureLookup.sample`` / ``pixels``: ``FeaturePyramid.vectors``, ``bilinear_taps``, ``mix_taps``).

The ``test_*`` functions here run the kernel in Triton's interpreter on the CPU. The interpreter must be chosen before
Triton is imported, so they run in a subprocess of ``test_sampling_kernel.py`` with ``TRITON_INTERPRET=1``; this
file's name keeps pytest from collecting it in the main run. The CUDA test there uses the helpers for the real run.
"""

from __future__ import annotations

import itertools
import os

import pytest
import torch

from aliked_ros.model.aliked import Aliked
from aliked_ros.model.configs import NMS_RADIUS
from aliked_ros.model.detection import detect_top_k
from aliked_ros.model.feature_lookup import FeaturePyramid
from aliked_ros.model.network import replicate_padding

# 70×100 is padded to 96×128 (crop offsets top 13, left 14); 64×96 is not padded; 37×45 is padded to 64×64 and its
# coarsest level is 2×2.
SIZES = [(70, 100), (64, 96), (37, 45)]
LAYOUTS = ["channels_first", "channels_last", "strided"]
LEVEL_STEPS = (1, 2, 8, 32)  # the backbone's levels: full, 1/2, 1/8, 1/32 of the padded resolution
# float32 results differ from the torch formulation by rounding only; float16 ones by at most one float16 step of a
# value below 1 (both compute in float32 and round once at the end).
TOLERANCES = {torch.float32: 1e-5, torch.float16: 1e-3}
# Every dtype × layout × channel count once, the sizes taking turns (the interpreter takes about a second a case).
CASES = [(*SIZES[index % len(SIZES)], dtype, layout, channels)
         for index, (dtype, layout, channels) in enumerate(itertools.product(
             (torch.float32, torch.float16), LAYOUTS, (16, 32)))]
CASE_IDS = [f"{h}x{w}-{str(dtype).split('.')[-1]}-{layout}-C{channels}" for h, w, dtype, layout, channels in CASES]


def random_pyramid(height: int, width: int, channels: int, dtype: torch.dtype, layout: str, device="cpu",
                   seed: int = 0) -> FeaturePyramid:
    """A pyramid of random levels for a ``height`` × ``width`` image, padded as the network pads it, with the
    levels in the given memory layout."""
    left, right, top, bottom = replicate_padding(height, width)
    full_height, full_width = height + top + bottom, width + left + right
    generator = torch.Generator().manual_seed(seed)
    levels = []
    for step in LEVEL_STEPS:
        shape = (1, channels, full_height // step, full_width // step)
        level = torch.randn(shape, generator=generator).to(device, dtype)
        if layout == "channels_last":
            level = level.contiguous(memory_format=torch.channels_last)
        elif layout == "strided":  # every other channel of a larger tensor: no unit stride anywhere but x
            wider = torch.zeros((1, 2 * channels, *shape[2:]), device=device, dtype=dtype)
            wider[:, ::2] = level
            level = wider[:, ::2]
        levels.append(level)
    return FeaturePyramid(levels, top, left, height, width, kernel=True)


def sample_positions(height: int, width: int, count: int = 150, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 positions ``(count + 81,)``: random ones inside and a few pixels outside the map, then every pair of
    border values (on the edges, half a pixel off them, one pixel outside, far outside)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(count, generator=generator) * (width + 6) - 3
    y = torch.rand(count, generator=generator) * (height + 6) - 3
    border_x = torch.tensor([0.0, width - 1, -1, width, -0.5, width - 0.5, 0.25, -1e4, 1e4])
    border_y = torch.tensor([0.0, height - 1, -1, height, -0.5, height - 0.5, 0.75, -1e4, 1e4])
    grid_y, grid_x = torch.meshgrid(border_y, border_x, indexing="ij")
    return torch.cat((x, grid_x.reshape(-1))), torch.cat((y, grid_y.reshape(-1)))


def pixel_positions(height: int, width: int, count: int = 150, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 columns and rows ``(count + 4,)`` inside the map, its four corners last."""
    generator = torch.Generator().manual_seed(seed)
    columns = torch.randint(0, width, (count,), generator=generator)
    rows = torch.randint(0, height, (count,), generator=generator)
    return (torch.cat((columns, torch.tensor([0, width - 1, 0, width - 1]))),
            torch.cat((rows, torch.tensor([0, 0, height - 1, height - 1]))))


def kernel_and_reference(pyramid: FeaturePyramid, read: str, x: torch.Tensor, y: torch.Tensor):
    """``pyramid.<read>(x, y)`` through the kernel and through the torch formulation."""
    use_kernel = pyramid.use_kernel
    try:
        pyramid.use_kernel = True
        by_kernel = getattr(pyramid, read)(x, y)
        pyramid.use_kernel = False
        reference = getattr(pyramid, read)(x, y)
    finally:
        pyramid.use_kernel = use_kernel
    return by_kernel, reference


def check_read(pyramid: FeaturePyramid, read: str, x: torch.Tensor, y: torch.Tensor) -> None:
    by_kernel, reference = kernel_and_reference(pyramid, read, x, y)
    assert by_kernel.shape == reference.shape == (*x.shape, pyramid.dim)
    assert by_kernel.dtype == reference.dtype == pyramid.dtype
    assert by_kernel.is_contiguous()  # row-major (P, dim): the next matrix product reads it as it is
    tolerance = TOLERANCES[pyramid.dtype]
    torch.testing.assert_close(by_kernel.float(), reference.float(), rtol=0, atol=tolerance)


def random_aliked(model: str, dtype: torch.dtype, device="cpu", top_k: int = 30) -> Aliked:
    torch.manual_seed(0)
    aliked = Aliked(model, top_k=top_k).eval()
    for parameter in aliked.parameters():  # larger weights than the default init: maps with visible structure
        parameter.data.normal_(0, 0.3)
    return aliked.to(device, dtype)


def head_with_and_without_kernel(aliked: Aliked, height: int, width: int, device="cpu"):
    """Descriptors of the top keypoints of a random image, through the kernel and through the torch formulation."""
    dtype = next(aliked.parameters()).dtype
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(3)).to(device, dtype)
    with torch.no_grad():
        score_map, pyramid = aliked.network.score_map_and_features(image)
        keypoints, _ = detect_top_k(score_map.float(), aliked.top_k, NMS_RADIUS)
        pyramid.use_kernel = True
        by_kernel = aliked.network.desc_head(pyramid, keypoints)
        pyramid.use_kernel = False
        reference = aliked.network.desc_head(pyramid, keypoints)
    return by_kernel, reference


# --- run in Triton's interpreter (see the module docstring) -------------------------------------------------------

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                reason="run by test_sampling_kernel.py in a subprocess with TRITON_INTERPRET=1")


@pytest.mark.parametrize("height, width, dtype, layout, channels", CASES, ids=CASE_IDS)
def test_bilinear_samples_equal_the_torch_formulation(height, width, dtype, layout, channels):
    pyramid = random_pyramid(height, width, channels, dtype, layout)
    check_read(pyramid, "sample", *sample_positions(height, width))


@pytest.mark.parametrize("height, width, dtype, layout, channels", CASES, ids=CASE_IDS)
def test_integer_pixels_equal_the_torch_formulation(height, width, dtype, layout, channels):
    pyramid = random_pyramid(height, width, channels, dtype, layout)
    check_read(pyramid, "pixels", *pixel_positions(height, width))


def test_positions_keep_their_shape_and_none_is_fine():
    pyramid = random_pyramid(70, 100, 16, torch.float32, "channels_last")
    x, y = sample_positions(70, 100, count=19)  # 19 + 81 = 100 positions
    check_read(pyramid, "sample", x.view(4, 25), y.view(4, 25))
    columns, rows = pixel_positions(70, 100, count=14)
    check_read(pyramid, "pixels", columns.view(2, 3, 3), rows.view(2, 3, 3))
    pyramid.use_kernel = True
    assert pyramid.sample(torch.zeros(0, 16), torch.zeros(0, 16)).shape == (0, 16, 64)


def test_the_operator_is_registered_with_its_kernel():
    from aliked_ros.model import sampling_kernel

    assert sampling_kernel.AVAILABLE
    assert hasattr(torch.ops.aliked_ros, "feature_pyramid_read")


@pytest.mark.parametrize("model", ["aliked-t16", "aliked-n32"])  # C = 16, M = 16; C = 32, M = 32
def test_descriptor_head_with_the_kernel_equals_the_torch_formulation(model):
    by_kernel, reference = head_with_and_without_kernel(random_aliked(model, torch.float32), 70, 100)
    assert by_kernel.shape == reference.shape == (30, 128 if model == "aliked-n32" else 64)
    torch.testing.assert_close(by_kernel, reference, rtol=0, atol=1e-5)


def test_torch_export_keeps_the_operator():
    """torch.export records the kernel as one custom operator (AOTInductor compiles it on CUDA)."""
    pyramid = random_pyramid(70, 100, 16, torch.float32, "channels_first")

    class Sampler(torch.nn.Module):
        def forward(self, level0, level1, level2, level3, x, y):
            lookup = FeaturePyramid([level0, level1, level2, level3], pyramid.top, pyramid.left, 70, 100)
            lookup.use_kernel = True
            return lookup.sample(x, y)

    x, y = sample_positions(70, 100)
    exported = torch.export.export(Sampler(), (*pyramid.levels, x, y))
    targets = [str(node.target) for node in exported.graph.nodes if node.op == "call_function"]
    assert "aliked_ros.feature_pyramid_read.default" in targets
    by_kernel, reference = kernel_and_reference(pyramid, "sample", x, y)
    torch.testing.assert_close(exported.module()(*pyramid.levels, x, y), by_kernel, rtol=0, atol=0)
