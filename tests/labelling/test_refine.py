"""Tests of semscale.labelling.refine: superpixels follow SEM edges; snapping moves boundaries back."""

from __future__ import annotations

import dask.array as da
import numpy as np

from semscale import IGNORE_LABEL
from semscale.labelling import refine_labels, superpixels


def blurred_labels(truth, radius=1):
    """Labels whose boundaries are displaced by up to ``radius`` px, as a classifier fed with blurred EDS
    makes them: each pixel takes the truth of a pixel a few px away along a fixed direction."""
    out = truth.copy()
    out[:, radius:] = truth[:, :-radius]
    return out


def test_superpixels_do_not_cross_sem_edges(toy_image):
    sem, truth, _ = toy_image((96, 112), seed=3)
    regions = superpixels(sem.astype(np.float32) / 255, sigma=0.0)
    assert regions.min() >= 1 and regions.dtype == np.int32
    n = regions.max()
    assert regions.size / n < 40  # small regions
    # nearly every region lies within one true phase (the toy image has sharp edges, blurred by 0.8 px)
    counts = np.zeros((n + 1, 4), np.int64)
    np.add.at(counts, (regions.ravel(), truth.ravel()), 1)
    purity = counts.max(1).sum() / counts.sum()
    assert purity > 0.97


def test_refinement_moves_boundaries_back_to_sem_edges(toy_image):
    sem, truth, _ = toy_image((128, 144), seed=4)
    x = sem.astype(np.float32) / 255
    shifted = blurred_labels(truth)
    before = (shifted == truth).mean()
    after = (refine_labels(shifted, x, n_classes=4, sigma=0.0) == truth).mean()
    assert after > before + 0.03 and after > 0.98, (before, after)
    # ignore pixels do not vote; a region with no votes stays ignored
    holes = shifted.copy()
    holes[::2] = IGNORE_LABEL
    out = refine_labels(holes, x, n_classes=4, sigma=0.0)
    assert (out == truth).mean() > before
    assert (refine_labels(np.full_like(truth, IGNORE_LABEL), x, n_classes=4, sigma=0.5) == IGNORE_LABEL).all()


def test_refinement_blockwise_equals_whole_image(toy_image):
    sem, truth, _ = toy_image((150, 170), seed=5)
    x = sem.astype(np.float32) / 255
    shifted = blurred_labels(truth)
    want = refine_labels(shifted, x, n_classes=4, sigma=0.5)
    for chunks in ((64, 64), (50, 90)):
        got = refine_labels(da.from_array(shifted, chunks=chunks), da.from_array(x, chunks=chunks),
                            n_classes=4, sigma=0.5).compute()
        assert (got == want).mean() > 0.999
    assert (got != want).sum() <= 5
