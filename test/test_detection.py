"""Detection semantics of the original on hand-made score maps."""

import torch

import pytest

from aliked_ros.model.detection import (
    candidate_mask, detect_threshold, detect_top_k, nms_mask, refine, sort_descending_by_rank, window_max,
)


def score_map(values) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float32).view(1, 1, *torch.as_tensor(values).shape)


def test_nms_keeps_ties_and_adds_flank_maxima_in_two_rounds():
    scores = torch.full((15, 15), 0.01)
    scores[7, 3] = 0.9  # a peak
    scores[7, 5] = 0.8  # inside the peak's window
    scores[7, 7] = 0.5  # outside the peak's window, but (7, 5) outshines it in its own window
    scores[2, 10] = 0.5
    scores[2, 11] = 0.5  # a tie: both are maxima of their windows (the original keeps ties)
    mask = nms_mask(score_map(scores), radius=2)[0, 0]
    assert mask[7, 3] and mask[2, 10] and mask[2, 11]
    assert not mask[7, 5]
    # Round 2 zeroes the peak's window (columns 1..5), which removes (7, 5): (7, 7) is then the maximum of its window.
    assert mask[7, 7]
    strict = scores > torch.nn.functional.max_pool2d(score_map(scores), 5, 1, 2)[0, 0] - 1e-9
    assert not strict[7, 7]  # a plain local-maximum test would not keep it


@pytest.mark.parametrize("height, width", [(48, 64), (3, 9), (1, 1), (37, 5)])
@pytest.mark.parametrize("radius", [1, 2, 4])
def test_window_max_off_cuda_is_max_pool2d(height, width, radius):
    """The CPU's shifted maxima equal F.max_pool2d exactly: quantised values (many ties), negative values (the padding
    must never win), a 0/1 mask as NMS passes it, maps smaller than the window, batches and channels."""
    generator = torch.Generator().manual_seed(height * 100 + width + radius)
    maps = [torch.randint(-3, 4, (2, 3, height, width), generator=generator).float() / 4,
            -torch.rand(1, 1, height, width, generator=generator),
            (torch.rand(1, 1, height, width, generator=generator) > 0.8).float()]
    for values in maps:
        expected = torch.nn.functional.max_pool2d(values, 2 * radius + 1, stride=1, padding=radius)
        assert torch.equal(window_max(values, radius), expected)


def test_border_is_removed():
    scores = torch.full((12, 12), 0.01)
    scores[1, 6] = 0.9  # closer than the radius to the top border
    scores[6, 10] = 0.9  # closer than the radius to the right border
    scores[6, 5] = 0.7
    mask = candidate_mask(score_map(scores), radius=2)[0, 0]
    assert not mask[1, 6] and not mask[6, 10] and mask[6, 5]


def test_refinement_is_soft_argmax_of_the_window():
    scores = torch.zeros(9, 9)
    scores[4, 4] = 1.0
    scores[4, 5] = 1.0  # two equal values: the soft-argmax lies halfway
    keypoints, sampled = refine(score_map(scores), torch.tensor([4 * 9 + 4]), radius=2)
    weight = torch.exp(torch.tensor(1.0 / 0.1))
    expected_dx = weight / (2 * weight + 23)  # 25 window cells: two at 1.0, the others at 0.0
    assert torch.allclose(keypoints[0], torch.tensor([4 + expected_dx.item(), 4.0]), atol=1e-6)
    # the score is the map sampled bilinearly at the moved position: between two cells of 1.0
    assert torch.allclose(sampled, torch.tensor([1.0]))


def test_top_k_sorts_and_marks_slots_without_a_maximum():
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(1, 1, 40, 50, generator=generator) * 0.1
    peaks = [(10, 10, 0.9), (20, 30, 0.8), (30, 15, 0.95)]
    for y, x, value in peaks:
        scores[0, 0, y, x] = value
    maxima = int(candidate_mask(scores, 2).sum())
    top_k = maxima + 5
    keypoints, values = detect_top_k(scores, top_k, radius=2)
    assert keypoints.shape == (top_k, 2) and values.shape == (top_k,)
    assert torch.all(values[:-1] >= values[1:])
    assert int((values > 0).sum()) == maxima  # the five filler slots score 0
    assert torch.allclose(keypoints[0], torch.tensor([15.0, 30.0]), atol=0.5)


def test_threshold_mode_keeps_maxima_above_the_threshold_up_to_the_cap():
    scores = torch.full((1, 1, 40, 40), 0.05)
    for index, (y, x) in enumerate([(8, 8), (8, 20), (8, 32), (20, 8), (20, 20), (32, 32)]):
        scores[0, 0, y, x] = 0.5 + 0.05 * index
    keypoints, values = detect_threshold(scores, score_threshold=0.58, max_keypoints=100, radius=2)
    assert len(values) == 4 and torch.all(values > 0.58)
    keypoints, values = detect_threshold(scores, score_threshold=0.58, max_keypoints=2, radius=2)
    assert len(values) == 2 and torch.allclose(values, torch.tensor([0.75, 0.7]), atol=0.02)
    # No maximum above the threshold: the original falls back to the maxima above the map's mean.
    keypoints, values = detect_threshold(scores, score_threshold=0.99, max_keypoints=100, radius=2)
    assert len(values) == 6


def test_rank_sort_is_a_stable_descending_sort():
    generator = torch.Generator().manual_seed(3)
    values = torch.randint(0, 50, (400,), generator=generator).float() / 50  # many ties
    values[:30] = 0.0  # fillers of a map with fewer maxima than K
    ordered, order = sort_descending_by_rank(values)
    expected, expected_order = torch.sort(values, descending=True, stable=True)
    assert torch.equal(ordered, expected)
    assert torch.equal(order, expected_order)  # ties keep their input order


def test_rank_sort_gives_top_k_detection_the_same_result():
    generator = torch.Generator().manual_seed(4)
    scores = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 60, 80, generator=generator), 3, 1, 1)
    plain = detect_top_k(scores, 150, radius=2)
    ranked = detect_top_k(scores, 150, radius=2, rank_sort=True)
    assert torch.equal(plain[1], ranked[1])
    assert torch.equal(plain[0], ranked[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (PyTorch sees no GPU here)")
@pytest.mark.parametrize("rank_sort", [False, True])
def test_a_float16_map_on_cuda_selects_what_its_float32_copy_selects(rank_sort):
    """On CUDA top-k selects among the float16 map's own values (a 16-bit radix select): the keypoints and scores of
    its float32 copy, which holds the same values. The map holds 30000 distinct float16 values (every positive
    normal one from 2**-14 up, shuffled), so no tie leaves the choice open; 30000 values take torch.topk's
    multi-block path, the one of a camera-sized map."""
    generator = torch.Generator().manual_seed(5)
    distinct = (torch.arange(30000, dtype=torch.int16) + 0x0400).view(torch.float16)
    half = distinct[torch.randperm(30000, generator=generator)].view(1, 1, 150, 200).cuda()
    from_half = detect_top_k(half, 1000, radius=2, rank_sort=rank_sort)
    from_float = detect_top_k(half.float(), 1000, radius=2, rank_sort=rank_sort)
    assert int((from_float[1] > 0).sum()) == 1000  # K real maxima, no fillers
    assert torch.equal(from_half[1], from_float[1])
    assert torch.equal(from_half[0], from_float[0])
