"""Parity with an independent implementation: kornia's ALIKED with the same pretrained weights.

Kornia's NMS keeps strict local maxima only (its docstring says so, on purpose), while the original and this
package keep tied maxima and add, in two more rounds, positions that become the maximum of their window once the
windows of the kept maxima are zeroed. So:
- the dense score and feature maps must agree to float32 rounding;
- in threshold mode, kornia's keypoints are a subset of ours, and the keypoints we have beyond them are exactly the
  candidates of our NMS that are not strict maxima;
- in top-k mode, those extra candidates take some of the K slots, which then hold different keypoints; wherever
  both find a keypoint, positions, scores and descriptors agree.
"""

import numpy as np
import pytest
import torch
from dense_reference import dense_maps

from aliked_ros.model.aliked import uint8_to_network_input
from aliked_ros.model.configs import MODEL_CONFIGS, NMS_RADIUS
from aliked_ros.model.detection import candidate_mask
from aliked_ros.model.weights import resolve_weights

kornia_feature = pytest.importorskip("kornia.feature")
from kornia.geometry.subpix import nms2d  # noqa: E402


def kornia_aliked(model: str, **options):
    aliked = kornia_feature.ALIKED(model, **options).eval()
    state = torch.load(resolve_weights(model, allow_download=False), map_location="cpu", weights_only=True)
    missing, unexpected = aliked.load_state_dict(state, strict=False)
    assert missing == ["dkd.hw_grid"] and not unexpected  # kornia's only extra entry is a constant buffer
    return aliked


def mutual_nearest(a: np.ndarray, b: np.ndarray, max_distance: float):
    distances = np.linalg.norm(a[:, None] - b[None], axis=2)
    forward = distances.argmin(1)
    backward = distances.argmin(0)
    rows = np.arange(len(a))
    keep = (backward[forward] == rows) & (distances[rows, forward] <= max_distance)
    return rows[keep], forward[keep]


def network_input(image):
    rgb = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
    return uint8_to_network_input(torch.from_numpy(rgb))


@pytest.mark.parametrize("model", list(MODEL_CONFIGS))
def test_dense_maps_agree(model, rgb_frame, load_pretrained):
    ours = load_pretrained(model)
    theirs = kornia_aliked(model)
    image = network_input(rgb_frame)
    with torch.no_grad():
        our_scores, our_features = dense_maps(ours.network, image)
        their_features, their_scores = theirs.extract_dense_map(image)
    assert our_scores.shape == their_scores.shape
    assert torch.allclose(our_scores, their_scores, atol=2e-5, rtol=0)
    assert torch.allclose(our_features, their_features, atol=2e-5, rtol=0)


@pytest.mark.parametrize("model", ["aliked-t16", "aliked-n16rot"])
@pytest.mark.parametrize("frame", ["rgb_frame", "gray_frame"])
def test_top_k_keypoints_both_find_agree(model, frame, request, load_pretrained):
    image = network_input(request.getfixturevalue(frame))
    ours = load_pretrained(model, 1000)
    theirs = kornia_aliked(model, max_num_keypoints=1000, detection_threshold=-1)
    with torch.no_grad():
        keypoints, scores, descriptors = (t.numpy() for t in ours(image))
        result = theirs(image)[0]
    their_keypoints = result.keypoints.numpy()
    ours_index, theirs_index = mutual_nearest(keypoints, their_keypoints, max_distance=1e-3)
    # Most of the K slots hold the same strict maxima; the rest are the extra candidates described above.
    assert len(ours_index) >= 0.7 * len(keypoints)
    assert np.abs(scores[ours_index] - result.keypoint_scores.numpy()[theirs_index]).max() < 1e-4
    cosine = np.sum(descriptors[ours_index] * result.descriptors.numpy()[theirs_index], axis=1)
    assert cosine.min() >= 0.9999


@pytest.mark.parametrize("frame", ["rgb_frame", "gray_frame"])
def test_threshold_mode_differs_exactly_by_the_non_strict_candidates(frame, request, load_pretrained):
    model, threshold = "aliked-n16", 0.2
    image = network_input(request.getfixturevalue(frame))
    ours = load_pretrained(model)
    theirs = kornia_aliked(model, max_num_keypoints=-1, detection_threshold=threshold)
    with torch.no_grad():
        keypoints, scores, descriptors = (t.numpy() for t in ours.detect_threshold(image, threshold, 20000))
        result = theirs(image)[0]
        score_map, _ = dense_maps(ours.network, image)
    ours_candidates = candidate_mask(score_map, NMS_RADIUS) & (score_map > threshold)
    strict = nms2d(score_map, (2 * NMS_RADIUS + 1,) * 2, mask_only=True)
    extra = int((ours_candidates & ~strict).sum())
    assert len(keypoints) == len(result.keypoints) + extra
    ours_index, theirs_index = mutual_nearest(keypoints, result.keypoints.numpy(), max_distance=1e-3)
    assert len(theirs_index) == len(result.keypoints)  # every kornia keypoint is one of ours
    cosine = np.sum(descriptors[ours_index] * result.descriptors.numpy()[theirs_index], axis=1)
    assert cosine.min() >= 0.9999
