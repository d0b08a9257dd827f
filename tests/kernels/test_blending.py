"""semscale.kernels.blending: ensemble statistics, the class argmax, TTA and one region's prediction."""

from __future__ import annotations

import numpy as np
import pytest

from semscale.config import InferenceConfig
from semscale.kernels.blending import argmax_last, combine_members, predict_region, tta_apply
from semscale.kernels.windows import input_extent, read_symmetric
from tests.oracles import PositionNet, geometry, reference_predict


def test_combine_members_matches_numpy_formulas():
    rng = np.random.default_rng(3)
    p = rng.random((3, 5, 6, 4)).astype(np.float32)
    p /= p.sum(-1, keepdims=True)
    out = combine_members(list(p))
    mean = p.mean(0)
    lab = mean.argmax(-1)
    np.testing.assert_allclose(out[..., :4], mean, atol=1e-7)
    np.testing.assert_allclose(out[..., 4], mean.max(-1), atol=1e-7)
    want = np.array([[np.std(p[:, i, j, lab[i, j]]) for j in range(6)] for i in range(5)])
    np.testing.assert_allclose(out[..., 5], want, atol=1e-6)
    one, labels = combine_members(list(p[:1]), with_labels=True)
    np.testing.assert_array_equal(labels, p[0].argmax(-1))
    assert (one[..., 5] == 0).all()


def test_argmax_last_equals_numpy_argmax_with_ties():
    rng = np.random.default_rng(4)
    a = rng.integers(0, 3, (9, 11, 4)).astype(np.float32)  # many ties: the first index must win
    labels, best = argmax_last(a)
    np.testing.assert_array_equal(labels, a.argmax(-1))
    np.testing.assert_array_equal(best, a.max(-1))
    assert labels.dtype == np.uint8


def test_tta_apply_maps_every_view_back():
    x = np.random.default_rng(5).random((2, 12, 12, 1)).astype(np.float32)
    net = PositionNet()
    out = tta_apply(net, x)
    want = np.mean([np.rot90(t, -k, axes=(1, 2)) for k, t in
                    ((k, net(np.ascontiguousarray(np.rot90(x, k, axes=(1, 2))))) for k in range(4))] +
                   [np.rot90(t[:, :, ::-1], -k, axes=(1, 2)) for k, t in
                    ((k, net(np.ascontiguousarray(np.rot90(x, k, axes=(1, 2))[:, :, ::-1]))) for k in range(4))], 0)
    np.testing.assert_allclose(out, want, atol=1e-6)


@pytest.mark.parametrize("mode", ["average", "gaussian"])
def test_predict_region_of_a_crop_equals_the_whole_image_reference(mode):
    image = np.random.default_rng(6).random((60, 50)).astype(np.float32)
    geom = geometry(InferenceConfig(mode=mode, patch_size=16, stride=8, batch_size=3), multiple=4)
    ref = reference_predict(image, predict_fn=PositionNet(), geom=geom)
    core = ((13, 41), (7, 29))
    (lo0, hi0), (lo1, hi1) = input_extent(*core[0], geom), input_extent(*core[1], geom)
    padded = read_symmetric(image, (lo0, hi0), (lo1, hi1))
    out = predict_region(padded, origin=(lo0, lo1), core=core, predict_fns=[PositionNet()], geom=geom)
    np.testing.assert_array_equal(out[..., :4], ref[13:41, 7:29])


def test_predict_region_refuses_too_small_input():
    geom = geometry(InferenceConfig(mode="average", patch_size=16, stride=8), multiple=4)
    with pytest.raises(ValueError, match="covering"):
        predict_region(np.zeros((20, 20), np.float32), origin=(0, 0), core=((0, 20), (0, 20)),
                       predict_fns=[PositionNet()], geom=geom)
