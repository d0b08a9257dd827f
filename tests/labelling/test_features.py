"""Tests of semscale.labelling.features: blockwise features equal whole-image ones."""

from __future__ import annotations

import dask.array as da
import numpy as np
from scipy import ndimage

from semscale.kernels.norm import apply_norm, histogram, norm_from_histogram
from semscale.labelling import feature_names, feature_stack, sem_features
from semscale.labelling.features import FeatureParams, feature_block, feature_halo

F = 4
SCALES = {"Ni": 80.0, "O": 50.0, "Zr": 30.0}


def test_blockwise_features_equal_whole_image(toy_image):
    sem, _, eds = toy_image((101, 77), seed=3)
    norm = norm_from_histogram(histogram(sem, nbins=256))
    x = apply_norm(sem, norm)
    sigmas = (0.7, 1.0, 2.0, 4.0)
    whole = feature_stack(x, eds, factor=F, shift=(0.6, -1.1), scales=SCALES, o_per_zr=0.9, sigmas=sigmas)
    assert whole.shape == (101, 77, len(feature_names(sigmas)))
    lazy = feature_stack(da.from_array(x, chunks=(32, 24)), eds, factor=F, shift=(0.6, -1.1), scales=SCALES,
                         o_per_zr=0.9, sigmas=sigmas)
    assert isinstance(lazy, da.Array)
    np.testing.assert_allclose(lazy.compute(), whole, rtol=1e-6, atol=1e-6)
    # chunks smaller than the halo are rechunked, still exact
    sem_only = sem_features(da.from_array(x, chunks=(9, 11)), sigmas=(1.0, 4.0)).compute()
    np.testing.assert_allclose(sem_only, sem_features(x, sigmas=(1.0, 4.0)), rtol=1e-6, atol=1e-6)
    # the Gaussian channel really is a Gaussian with reflect boundary
    np.testing.assert_allclose(whole[..., 1], ndimage.gaussian_filter(x, 0.7, mode="reflect"), atol=1e-6)


def test_a_haloed_block_gives_exactly_the_whole_images_features(toy_image):
    """What the blockwise labelling steps rely on: any block read with the halo is bit-identical."""
    sem, _, eds = toy_image((90, 110), seed=4)
    x = apply_norm(sem, norm_from_histogram(histogram(sem, nbins=256)))
    sigmas = (0.7, 2.0, 4.0)
    whole = feature_stack(x, eds, factor=F, shift=(1.3, -0.4), scales=SCALES, o_per_zr=0.8, sigmas=sigmas)
    p = FeatureParams(eds, shape=x.shape, factor=F, shift=(1.3, -0.4), scales=SCALES, o_per_zr=0.8,
                      sigmas=sigmas)
    h = feature_halo(sigmas)
    assert h == 16 and p.n_features == whole.shape[2]
    padded = np.pad(x, h, mode="symmetric")
    for r0, r1, c0, c1 in ((0, 30, 0, 41), (30, 90, 41, 110), (17, 60, 5, 99)):
        block = feature_block(padded[r0 : r1 + 2 * h, c0 : c1 + 2 * h], p, halo=h, rows=(r0, r1), cols=(c0, c1))
        np.testing.assert_array_equal(block, whole[r0:r1, c0:c1])
