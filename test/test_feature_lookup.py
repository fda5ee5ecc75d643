"""The fast formulation (score head commuted with upsampling, feature map read only at the pixels asked for) is the
original dense one: same score map, same feature vectors, same descriptors."""

import pytest
import torch
from dense_reference import DenseFeatureMap, channels_first, dense_maps

from aliked_ros.model.aliked import Aliked
from aliked_ros.model.configs import NMS_RADIUS
from aliked_ros.model.detection import detect_top_k
from aliked_ros.model.feature_lookup import FeaturePyramid


def random_network(model: str) -> Aliked:
    torch.manual_seed(0)
    aliked = Aliked(model, top_k=200).double().eval()
    for parameter in aliked.parameters():  # larger weights than the default init: maps with visible structure
        parameter.data.normal_(0, 0.3)
    return aliked


# 70×100 is padded to 96×128 (crop offsets 13 and 14), 64×96 is not padded at all.
@pytest.mark.parametrize("height,width", [(70, 100), (64, 96)])
@pytest.mark.parametrize("model", ["aliked-t16", "aliked-n32"])
def test_fast_maps_equal_the_dense_maps(model, height, width):
    aliked = random_network(model)
    image = torch.rand(1, 3, height, width, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fast_scores, pyramid = aliked.network.score_map_and_features(image)
        dense_scores, feature_map = dense_maps(aliked.network, image)
    assert isinstance(pyramid, FeaturePyramid) and pyramid.dim == aliked.descriptor_size
    assert fast_scores.shape == dense_scores.shape == (1, 1, height, width)
    assert feature_map.shape == (1, aliked.descriptor_size, height, width)
    assert dense_scores.std() > 1e-3  # a map with structure, not a constant
    torch.testing.assert_close(fast_scores, dense_scores, rtol=0, atol=1e-12)

    assert pyramid.pixel_rows  # the CPU's layout
    dense = DenseFeatureMap(feature_map)
    rows, columns = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    torch.testing.assert_close(pyramid.vectors(columns, rows), dense.vectors(columns, rows), rtol=0, atol=1e-12)
    cuda_layout = channels_first(pyramid)  # the layout CUDA gathers from, here on the CPU
    torch.testing.assert_close(cuda_layout.vectors(columns, rows), dense.vectors(columns, rows), rtol=0, atol=1e-12)

    keypoints, _ = detect_top_k(fast_scores, 200, NMS_RADIUS)
    with torch.no_grad():
        fast = aliked.network.desc_head(pyramid, keypoints)
        reference = aliked.network.desc_head(dense, keypoints)
    torch.testing.assert_close(fast, reference, rtol=0, atol=1e-6)  # float32 descriptors


def test_pyramid_vectors_are_unit_length_and_shaped_like_the_indices():
    aliked = random_network("aliked-t16")
    with torch.no_grad():
        _, pyramid = aliked.network.score_map_and_features(torch.rand(1, 3, 40, 50, dtype=torch.float64))
    columns = torch.tensor([[0, 49], [7, 20], [3, 3]])
    rows = torch.tensor([[0, 39], [5, 10], [39, 0]])
    vectors = pyramid.vectors(columns, rows)
    assert vectors.shape == (64, 3, 2)
    torch.testing.assert_close(vectors.norm(dim=0), torch.ones(3, 2, dtype=torch.float64))
