"""The cases the full-resolution kernels (``aliked_ros.model.dense_kernels``) are checked on, against the layers they
replace: ``F.conv2d`` with its bias and activation, the finest level's projections, ``detection``'s NMS, and the
network end to end.

The ``test_*`` functions here run the kernels in Triton's interpreter on the CPU, in a subprocess of
``test_dense_kernels.py`` with ``TRITON_INTERPRET=1`` (set before Triton is imported); this file's name keeps pytest
from collecting it in the main run. The CUDA tests there use the helpers for the real run.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from aliked_ros.model.aliked import Aliked
from aliked_ros.model.detection import candidate_mask, detect_top_k

ACTIVATIONS = {"none": lambda x: x, "selu": F.selu, "sigmoid": torch.sigmoid}
# Both sides accumulate in float32 (the reference's float16 cuDNN and CPU convolutions too) and round the output
# once: float32 outputs differ by summation order only; float16 ones by up to one float16 step of outputs up to
# about 8 (2 steps allowed).
TOLERANCES = {torch.float32: 2e-5, torch.float16: 1.6e-2}
# The layers' channel counts: block 1 (3 → 8 → 8 for t16, 3 → 16 → 16 for the n models) and the score head.
CONV_CASES = [(3, 8, "selu"), (8, 8, "selu"), (3, 16, "selu"), (16, 16, "selu"), (8, 4, "selu"), (4, 4, "selu"),
              (4, 1, "sigmoid"), (5, 3, "none")]
CONV_IDS = [f"{i}to{o}-{activation}" for i, o, activation in CONV_CASES]


def conv_inputs(in_channels: int, out_channels: int, dtype: torch.dtype, device="cpu", channels_last=False,
                height: int = 13, width: int = 37, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(1, in_channels, height, width, generator=generator) * 2 - 0.5
    weight = torch.randn(out_channels, in_channels, 3, 3, generator=generator) / (3 * in_channels ** 0.5)
    bias = torch.randn(out_channels, generator=generator) * 0.3
    image, weight, bias = (t.to(device, dtype) for t in (image, weight, bias))
    if channels_last:  # the network's input, a permuted uint8 frame, has these strides
        image = image.contiguous(memory_format=torch.channels_last)
    return image, weight, bias


def check_conv(image, weight, bias, activation, channels_last=False):
    from aliked_ros.model.dense_kernels import direct_conv

    result = direct_conv(image, weight, bias, activation, channels_last=channels_last)
    reference = ACTIVATIONS[activation](F.conv2d(image.float(), weight.float(), bias.float(), padding=1))
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert result.shape == reference.shape and result.dtype == image.dtype
    assert result.is_contiguous(memory_format=layout)
    torch.testing.assert_close(result.float(), reference, rtol=0, atol=TOLERANCES[image.dtype])


def finest_inputs(in_channels: int, level_channels: int, dtype: torch.dtype, device="cpu", seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    features = torch.rand(1, in_channels, 24, 40, generator=generator) * 3 - 1
    project = torch.randn(level_channels, in_channels, 1, 1, generator=generator) / in_channels ** 0.5
    head = torch.randn(8, 4 * level_channels, 1, 1, generator=generator) / level_channels ** 0.5
    return tuple(t.to(device, dtype) for t in (features, project, head))


def check_finest(features, project, head):
    from aliked_ros.model.dense_kernels import finest_level

    level_channels = project.shape[0]
    part = head[:, :level_channels]  # a slice of the head's weight, as the network passes it
    level, head_part = finest_level(features, project, part)
    expected_level = F.selu(F.conv2d(features.float(), project.float()))
    # The head's part is computed from the level as stored (rounded to its dtype), as the layer by layer pass does.
    expected_head = F.conv2d(expected_level.to(features.dtype).float(), part.float())
    assert level.is_contiguous(memory_format=torch.channels_last) and head_part.is_contiguous()
    tolerance = TOLERANCES[features.dtype]
    torch.testing.assert_close(level.float(), expected_level, rtol=0, atol=tolerance)
    torch.testing.assert_close(head_part.float(), expected_head, rtol=0, atol=tolerance)


def score_map_with_ties(height: int, width: int, dtype: torch.dtype, device="cpu", seed: int = 0) -> torch.Tensor:
    """A positive map with plateaus and equal neighbours (coarse levels), where NMS's later rounds keep positions."""
    generator = torch.Generator().manual_seed(seed)
    scores = (torch.rand(height, width, generator=generator) * 12).round() / 12 + 0.01
    scores[3:8, 4:9] = 0.95  # a plateau: every position ties
    scores[10, 10], scores[10, 13] = 1.0, 0.99
    return scores.to(device, dtype)


def expected_nms_scores(scores: torch.Tensor, radius: int) -> torch.Tensor:
    as_map = scores[None, None]
    keep = candidate_mask(as_map.float(), radius)
    return torch.where(keep, as_map, torch.zeros_like(as_map)).reshape(-1)


def network_pair(model: str, device="cpu", dtype=torch.float32, seed: int = 0) -> Aliked:
    torch.manual_seed(seed)
    aliked = Aliked(model, top_k=80).eval()
    aliked.network.fold_batch_norm()
    return aliked.to(device, dtype)


def check_network(aliked: Aliked, image: torch.Tensor, tolerance: float):
    """The network with the kernels gives the torch layers' keypoints, scores and descriptors."""
    with torch.no_grad():
        aliked.network.set_dense_layers("torch")
        expected = aliked(image)
        torch_map, _ = aliked.network.score_map_and_features(image)
        aliked.network.set_dense_layers("triton")
        result = aliked(image)
        kernel_map, _ = aliked.network.score_map_and_features(image)
    torch.testing.assert_close(kernel_map.float(), torch_map.float(), rtol=0, atol=tolerance)
    for got, want in zip(result, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=tolerance)


interpreter = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                 reason="runs in Triton's interpreter (TRITON_INTERPRET=1, see test_dense_kernels.py)")


@interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float32", "float16"])
@pytest.mark.parametrize("in_channels, out_channels, activation", CONV_CASES, ids=CONV_IDS)
def test_direct_conv_matches_conv2d(in_channels, out_channels, activation, dtype):
    check_conv(*conv_inputs(in_channels, out_channels, dtype, channels_last=in_channels == 3), activation)


@interpreter
@pytest.mark.parametrize("in_channels, out_channels", [(3, 16), (16, 16)], ids=["direct", "tensor-cores"])
def test_direct_conv_writes_channels_last_where_asked(in_channels, out_channels):
    # Block 1's layers: the first from the frame's channels-last strides, the second from the first's output.
    image, weight, bias = conv_inputs(in_channels, out_channels, torch.float16, channels_last=True)
    check_conv(image, weight, bias, "selu", channels_last=True)


@interpreter
def test_direct_conv_without_a_bias_and_on_a_one_pixel_wide_map():
    image, weight, _ = conv_inputs(4, 4, torch.float32, height=9, width=1)
    check_conv(image, weight, torch.zeros(4), "selu")
    from aliked_ros.model.dense_kernels import direct_conv
    torch.testing.assert_close(direct_conv(image, weight, None, "selu"), F.selu(F.conv2d(image, weight, padding=1)),
                               rtol=0, atol=2e-5)


@interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float32", "float16"])
@pytest.mark.parametrize("in_channels, level_channels", [(8, 16), (16, 32)], ids=["t16", "n16"])
def test_finest_level_matches_its_two_projections(in_channels, level_channels, dtype):
    check_finest(*finest_inputs(in_channels, level_channels, dtype))


@interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float32", "float16"])
@pytest.mark.parametrize("radius", [2, 1])
def test_nms_scores_are_detections_nms_exactly(radius, dtype):
    scores = score_map_with_ties(19, 31, dtype)
    from aliked_ros.model.nms_kernels import nms_scores
    result = nms_scores(scores, radius)
    expected = expected_nms_scores(scores, radius)
    assert result.dtype == dtype and torch.equal(result, expected)
    assert 0 < int((expected > 0).sum()) < scores.numel() // 4  # maxima kept, most positions not


@interpreter
def test_nms_scores_read_a_cropped_map_as_it_is():
    padded = score_map_with_ties(26, 40, torch.float32, seed=1)
    crop = padded[3:22, 2:35]  # rows 40 apart: the network's crop of its padded map
    from aliked_ros.model.nms_kernels import nms_scores
    assert torch.equal(nms_scores(crop, 2), expected_nms_scores(crop.contiguous(), 2))


@interpreter
def test_top_k_detection_with_the_nms_kernel_is_the_same():
    scores = score_map_with_ties(24, 30, torch.float32, seed=2)[None, None]
    expected = detect_top_k(scores, 40, 2)
    result = detect_top_k(scores, 40, 2, nms_kernel=True)
    for got, want in zip(result, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@interpreter
@pytest.mark.parametrize("model", ["aliked-t16", "aliked-n16rot"])
def test_the_network_with_the_kernels_gives_the_torch_layers_features(model):
    # 45 × 50: replicate-padded to 64 × 64 and cropped back, as every size that is no multiple of 32.
    check_network(network_pair(model), torch.rand(1, 3, 45, 50, generator=torch.Generator().manual_seed(3)), 2e-4)


def check_nms_top_k(scores: torch.Tensor, radius: int, k: int):
    """The kernel's K values are topk's over the NMS output, each at its index; its rows are the pixels above the
    K-th largest value in pixel order, then the first of those equal to it (the same rows on every run)."""
    from aliked_ros.model.nms_kernels import nms_top_k

    values, indices = nms_top_k(scores, radius, k)
    nms = expected_nms_scores(scores.contiguous(), radius)
    assert values.shape == indices.shape == (k,) and indices.dtype == torch.int64
    assert torch.equal(torch.sort(values, descending=True).values, torch.topk(nms, k).values)
    kth = torch.topk(nms, k).values[-1]
    above, equal = torch.nonzero(nms > kth)[:, 0], torch.nonzero(nms == kth)[:, 0]
    assert torch.equal(indices, torch.cat([above, equal[:k - len(above)]])) and torch.equal(nms[indices], values)


@interpreter
@pytest.mark.parametrize("k", [5, 60, 400])  # below, near and above the map's count of maxima
def test_nms_top_k_takes_the_k_largest_of_the_nms_output(k):
    scores = score_map_with_ties(21, 33, torch.float16, seed=4)  # ties at most thresholds
    assert 5 < int((expected_nms_scores(scores, 2) > 0).sum()) < 400
    check_nms_top_k(scores, 2, k)


@interpreter
def test_nms_top_k_on_a_cropped_map_and_every_pixel():
    padded = score_map_with_ties(20, 24, torch.float16, seed=5)
    check_nms_top_k(padded[2:18, 3:21], 2, 16 * 18)  # K = H·W: every maximum, then every zero


@interpreter
def test_top_k_detection_with_the_nms_top_k_kernel_finds_the_same_keypoints():
    scores = score_map_with_ties(24, 30, torch.float16, seed=2)[None, None]
    for k in (20, 200):
        expected = detect_top_k(scores, k, 2, rank_sort=True)
        result = detect_top_k(scores, k, 2, rank_sort=True, nms_kernel=True)
        positive = expected[1] > 0
        assert torch.equal(result[1], expected[1])  # the scores, sorted
        # Rows of equal score may come in another order: the keypoints compared as sets.
        assert sorted(map(tuple, result[0][positive].tolist())) == sorted(map(tuple, expected[0][positive].tolist()))


@interpreter
def test_top_k_gather_writes_no_slot_past_k_whatever_the_threshold_says():
    # A threshold from an empty histogram (bits 0, none above it) against a map of many positive scores: every score
    # counts as above it. The K slots sit at the start of larger buffers whose rest must stay untouched.
    from aliked_ros.model.nms_kernels import (NMS_PIXELS_PER_PROGRAM, TOP_K_CHUNK, _top_k_count_kernel,
                                                _top_k_gather_kernel)

    scores = torch.rand(1300, generator=torch.Generator().manual_seed(6)).half() + 0.01
    k = 100
    values, indices = torch.full((4 * k,), -1.0, dtype=torch.float16), torch.full((4 * k,), -1, dtype=torch.int64)
    state = torch.zeros(2, dtype=torch.int32)
    programs = -(-scores.numel() // NMS_PIXELS_PER_PROGRAM)
    block_counts = torch.empty(2 * programs, dtype=torch.int32)
    _top_k_count_kernel[(programs,)](block_counts, scores, state, scores.numel(), BLOCK=NMS_PIXELS_PER_PROGRAM)
    _top_k_gather_kernel[(programs,)](values, indices, scores, state, block_counts, scores.numel(), k,
                                      BLOCK=NMS_PIXELS_PER_PROGRAM, CHUNK=TOP_K_CHUNK)
    assert bool((values[k:] == -1).all()) and bool((indices[k:] == -1).all())
    assert torch.equal(indices[:k], torch.arange(k)) and torch.equal(scores[:k], values[:k])  # pixel order


def residual_inputs(in_channels: int, out_channels: int, dtype: torch.dtype, device="cpu", seed: int = 0):
    """Block 2's end: its hidden map, second convolution, and its input with the 1×1 shortcut (t16: 8 → 16)."""
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.rand(1, out_channels, 30, 41, generator=generator) * 2 - 0.5
    weight = torch.randn(out_channels, out_channels, 3, 3, generator=generator) / (3 * out_channels ** 0.5)
    bias = torch.randn(out_channels, generator=generator) * 0.3
    shortcut = torch.rand(1, in_channels, 30, 41, generator=generator) * 2 - 0.5
    shortcut_weight = torch.randn(out_channels, in_channels, 1, 1, generator=generator) / in_channels ** 0.5
    shortcut_bias = torch.randn(out_channels, generator=generator) * 0.3
    return tuple(t.to(device, dtype) for t in (hidden, weight, bias, shortcut, shortcut_weight, shortcut_bias))


def check_residual(hidden, weight, bias, shortcut, shortcut_weight, shortcut_bias):
    from aliked_ros.model.dense_kernels import residual_conv

    result = residual_conv(hidden, weight, bias, shortcut, shortcut_weight, shortcut_bias)
    expected = F.selu(F.conv2d(hidden.float(), weight.float(), bias.float(), padding=1)
                      + F.conv2d(shortcut.float(), shortcut_weight.float(), shortcut_bias.float()))
    assert result.shape == expected.shape and result.dtype == hidden.dtype and result.is_contiguous()
    torch.testing.assert_close(result.float(), expected, rtol=0, atol=TOLERANCES[hidden.dtype])


@interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float32", "float16"])
@pytest.mark.parametrize("in_channels, out_channels", [(8, 16), (16, 32)], ids=["t16", "n16"])
def test_residual_conv_is_a_residual_blocks_end(in_channels, out_channels, dtype):
    check_residual(*residual_inputs(in_channels, out_channels, dtype))
