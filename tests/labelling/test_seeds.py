"""Tests of semscale.labelling.seeds: seeds agree with the EDS evidence, are capped, chunk-independent."""

from __future__ import annotations

import dataclasses

import dask.array as da
import numpy as np
import pytest

from semscale import IGNORE_LABEL
from semscale.config import LabellingConfig
from semscale.labelling import (
    BOUNDARY_MIN_FRACTION,
    boundary_seed_candidates,
    eds_on_sem_grid,
    eds_quantities,
    seed_candidates,
    select_seeds,
    sem_class_stats,
    smooth,
    smooth_eds,
    unmix,
)
from semscale.labelling.prepare import prepare_image
from semscale.labelling.seeds import merge_labelled, merge_points

F = 4


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, toy_image, store_of):
    sem, truth, eds = toy_image((192, 224), seed=5, shift=(1.2, -0.8))
    s = store_of(tmp_path_factory.mktemp("seed") / "s.zarr", {"im": (sem, truth, eds)})
    cfg = dataclasses.replace(LabellingConfig(), sigmas=(1.0, 2.0), max_seeds_per_class=500)
    p = prepare_image(s, "im", cfg)
    return s, p, truth, eds


def test_seeds_never_contradict_eds_evidence(seeded):
    s, p, truth, _ = seeded
    cand = p.candidates.compute()
    r = p.rules
    h, w = cand.shape
    eds_s = smooth_eds({el: np.asarray(a) for el, a in s.eds("im").items()})
    ch = {el: eds_on_sem_grid(m, factor=F, shape=(h, w), shift=p.registration.shift_px) for el, m in eds_s.items()}
    q = eds_quantities(ch, scales=r.scales, o_per_zr=r.o_per_zr)
    sem1 = np.asarray(smooth(s.sem_normalised("im")))
    pore, nio, ni, ysz = (cand == k for k in range(4))
    for k in range(4):
        assert (cand == k).sum() > 50, f"class {k} got too few seeds"
    # YSZ: Zr-rich; Ni and NiO: Zr-poor; NiO: O beyond YSZ's; Ni: without it; pore: dark, not fully solid
    assert np.all(q["zr"][ysz] > r.zr.threshold)
    assert np.all(q["zr"][ni | nio] < r.zr.threshold)
    assert np.all(q["ox"][nio] > r.ox.threshold)
    assert np.all(q["ox"][ni] < r.ox.threshold)
    assert np.all(q["solid"][pore] < r.solid.high)
    assert np.all(sem1[pore] < r.sem.threshold)
    assert np.all(sem1[ni | nio | ysz] > r.sem.threshold)
    # and they are right: seeds agree with the ground truth almost everywhere
    sel = cand != IGNORE_LABEL
    assert (cand[sel] == truth[sel]).mean() > 0.97


def test_boundary_seeds_are_allowed_by_eds_and_mostly_right(seeded):
    s, p, truth, eds = seeded
    cand = p.candidates.compute()
    sem1 = np.asarray(smooth(s.sem_normalised("im")))
    sel = cand != IGNORE_LABEL
    stats = sem_class_stats(sem1[sel], cand[sel], classes=("pore", "NiO", "Ni", "YSZ"))
    eds_s = smooth_eds(eds)
    x = np.asarray(s.sem_normalised("im"))
    b = boundary_seed_candidates(x, eds_s, p.rules, factor=F, stats=stats, shift=p.registration.shift_px)
    lazy = boundary_seed_candidates(da.from_array(x, chunks=(50, 60)), eds_s, p.rules, factor=F, stats=stats,
                                    shift=p.registration.shift_px).compute()
    np.testing.assert_array_equal(lazy, b)
    bsel = b != IGNORE_LABEL
    assert bsel.sum() > 100
    h, w = b.shape
    ch = {el: eds_on_sem_grid(m, factor=F, shape=(h, w), shift=p.registration.shift_px) for el, m in eds_s.items()}
    frac = unmix(eds_quantities(ch, scales=p.rules.scales, o_per_zr=p.rules.o_per_zr), p.rules.endmembers)
    for k, name in ((1, "NiO"), (2, "Ni"), (3, "YSZ")):
        assert np.all(frac[name][b == k] >= BOUNDARY_MIN_FRACTION)
    assert not np.any(b == 0)  # boundary seeds are solid phases only
    assert (b[bsel] == truth[bsel]).mean() > 0.9


def test_seed_selection_is_capped_and_chunk_independent(seeded):
    _, p, _, _ = seeded
    cand = p.candidates.compute()
    flat, cls = select_seeds(cand, n_classes=4, max_per_class=200, seed=3)
    flat2, cls2 = select_seeds(da.from_array(cand, chunks=(50, 70)), n_classes=4, max_per_class=200,
                               seed=3).compute()
    np.testing.assert_array_equal(flat, flat2)
    np.testing.assert_array_equal(cls, cls2)
    counts = np.bincount(cls, minlength=4)
    assert counts.max() <= 200
    assert np.all(counts == np.minimum(200, np.bincount(cand[cand < 4], minlength=4)))
    np.testing.assert_array_equal(cand.ravel()[flat], cls)


def test_candidates_blockwise_equal_whole(seeded):
    s, p, _, eds = seeded
    eds_s = smooth_eds(eds)
    x = np.asarray(s.sem_normalised("im"))
    whole = seed_candidates(x, eds_s, p.rules, factor=F, shift=p.registration.shift_px)
    lazy = seed_candidates(da.from_array(x, chunks=(40, 50)), eds_s, p.rules, factor=F,
                           shift=p.registration.shift_px).compute()
    np.testing.assert_array_equal(lazy, whole)


def test_merging_seed_sets_keeps_order_and_lets_scribbles_win():
    flat, cls = np.array([3, 8, 20]), np.array([0, 1, 2], np.uint8)
    f, c = merge_points(flat, cls, np.array([8, 5]), np.array([3, 3], np.uint8), override=False)
    np.testing.assert_array_equal(f, [3, 5, 8, 20])
    np.testing.assert_array_equal(c, [0, 3, 1, 2])
    scrib = np.full((4, 6), IGNORE_LABEL, np.uint8)
    scrib.ravel()[[8, 21]] = 2
    f, c = merge_labelled(flat, cls, scrib)
    np.testing.assert_array_equal(f, [3, 8, 20, 21])
    np.testing.assert_array_equal(c, [0, 2, 2, 2])
    assert merge_labelled(flat, cls, None)[0] is flat
