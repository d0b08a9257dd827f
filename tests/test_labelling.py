"""Tests of semscale.labelling: EDS registration, blockwise features, automatic seeds, random forest."""

from __future__ import annotations

import logging
import math

import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster
from scipy import ndimage
from scipy.spatial import cKDTree

from semscale import IGNORE_LABEL
from semscale.errors import InputImageError
from semscale.kernels.norm import apply_norm, histogram, norm_from_histogram
from semscale.labelling import _prepare as prepare
from semscale.labelling import (
    eds_on_sem_grid,
    eds_quantities,
    feature_names,
    feature_stack,
    label_store,
    load_scribbles,
    predict_labels,
    refine_labels,
    register_image,
    select_seeds,
    sem_features,
    superpixels,
    train_classifier,
)
from semscale.store import create_store

F = 4
CONC = {"Ni": (0.0, 0.5, 1.0, 0.0), "O": (0.0, 0.5, 0.0, 0.62), "Zr": (0.0, 0.0, 0.0, 0.3)}
GREY = (0.08, 0.42, 0.55, 0.68)


def toy(shape=(192, 224), *, seed=0, shift=(0.0, 0.0), eds_sigma=4.0, rate=80.0, grain=16.0):
    """A tiny Ni/YSZ/NiO/pore image: Voronoi grains, SEM grey levels + texture + noise, EDS maps that
    integrate f×f SEM blocks displaced by ``shift`` (SEM px; as in semscale.synth), Poisson counts."""
    rng = np.random.default_rng(seed)
    h, w = shape
    pad = 24
    hp, wp = h + 2 * pad, w + 2 * pad
    n = int(hp * wp / grain**2)
    pts = rng.uniform(0, (hp, wp), size=(n, 2))
    cls_of = rng.choice(4, size=n, p=(0.3, 0.2, 0.2, 0.3))
    yy, xx = np.mgrid[0:hp, 0:wp]
    _, idx = cKDTree(pts).query(np.c_[yy.ravel(), xx.ravel()])
    truth_p = cls_of[idx].reshape(hp, wp).astype(np.uint8)
    sem = np.asarray(GREY, np.float32)[truth_p] + rng.normal(0, 0.04, (hp, wp)).astype(np.float32)
    sem = ndimage.gaussian_filter(sem, 0.8)
    core = (slice(pad, pad + h), slice(pad, pad + w))
    sem8 = np.clip(sem[core] * 255, 0, 255).astype(np.uint8)
    eds = {}
    he, we = math.ceil(h / F), math.ceil(w / F)
    for el, c in CONC.items():
        b = ndimage.gaussian_filter(np.asarray(c, np.float32)[truth_p], eds_sigma)
        b = ndimage.shift(b, (-shift[0], -shift[1]), order=1, mode="nearest")  # b'(y) = b(y + shift)
        sub = b[pad : pad + he * F, pad : pad + we * F]
        block = sub.reshape(he, F, we, F).mean(axis=(1, 3))
        eds[el] = rng.poisson(1.0 + rate * block).astype(np.uint16)
    return sem8, truth_p[core].copy(), eds


def make_store(path, images, *, chunks=64):
    s = create_store(path, name="t", pixel_size_um=0.04458)
    for image_id, (sem, truth, eds) in images.items():
        a = s.create_image(image_id, shape=sem.shape, dtype=sem.dtype, chunks=chunks)
        a[:] = sem
        s.finish_image(image_id, norm=norm_from_histogram(histogram(sem, nbins=256)))
        s.write_labels(image_id, "truth", truth)
        if eds:
            s.write_eds(image_id, eds, factor=F, chunks=32)
    return s


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as c:
        yield c


# --- EDS on the SEM grid and registration ------------------------------------------------------------
def test_upsampling_is_pixel_area_aligned_and_blockwise_exact():
    shape = (45, 38)  # not multiples of F
    he, we = math.ceil(shape[0] / F), math.ceil(shape[1] / F)
    ramp = np.add.outer(np.arange(he, dtype=np.float32), np.zeros(we, np.float32))
    up = eds_on_sem_grid(ramp, factor=F, shape=shape)
    y = np.arange(shape[0])
    want = np.clip((y - (F - 1) / 2) / F, 0, he - 1)  # EDS pixel i's centre is SEM i*F + (F-1)/2
    np.testing.assert_allclose(up[:, 5], want, atol=1e-6)
    shifted = eds_on_sem_grid(ramp, factor=F, shape=shape, shift=(2.0, 0.0))
    np.testing.assert_allclose(shifted[10:30, 3], up[8:28, 3], atol=1e-6)  # registered(y) = up(y - 2)
    rng = np.random.default_rng(0)
    m = rng.random((he, we)).astype(np.float32)
    whole = eds_on_sem_grid(m, factor=F, shape=shape, shift=(0.7, -1.3))
    blocks = eds_on_sem_grid(m, factor=F, shape=shape, shift=(0.7, -1.3), chunks=(13, 17))
    np.testing.assert_array_equal(blocks.compute(), whole)
    with pytest.raises(InputImageError, match="ceil"):
        eds_on_sem_grid(m[:-1], factor=F, shape=shape)


@pytest.mark.parametrize("shift", [(1.7, -2.3), (-0.6, 0.9)])
def test_registration_recovers_known_shift(tmp_path, shift):
    sem, truth, eds = toy((256, 256), seed=11, shift=shift)
    s = make_store(tmp_path / "r.zarr", {"im": (sem, truth, eds)})
    reg = register_image(s, "im")
    assert abs(reg.shift_px[0] - shift[0]) < 0.5
    assert abs(reg.shift_px[1] - shift[1]) < 0.5
    assert reg.quality > 0.6
    assert s.root["eds/im"].attrs["semscale"]["registration"]["shift_px"] == pytest.approx(list(reg.shift_px))


def test_poor_registration_warns(tmp_path, caplog):
    sem, truth, _ = toy((192, 192), seed=1)
    _, _, other_eds = toy((192, 192), seed=2)  # EDS of a different microstructure
    s = make_store(tmp_path / "p.zarr", {"im": (sem, truth, other_eds)})
    with caplog.at_level(logging.WARNING, logger="semscale.labelling"):
        reg = register_image(s, "im")
    assert reg.quality < 0.5
    assert "registration of im is poor" in caplog.text


# --- features ----------------------------------------------------------------------------------------
def test_blockwise_features_equal_whole_image():
    sem, _, eds = toy((101, 77), seed=3)
    norm = norm_from_histogram(histogram(sem, nbins=256))
    x = apply_norm(sem, norm)
    sigmas = (0.7, 1.0, 2.0, 4.0)
    scales = {"Ni": 80.0, "O": 50.0, "Zr": 30.0}
    whole = feature_stack(x, eds, factor=F, shift=(0.6, -1.1), scales=scales, o_per_zr=0.9, sigmas=sigmas)
    assert whole.shape == (101, 77, len(feature_names(sigmas)))
    lazy = feature_stack(da.from_array(x, chunks=(32, 24)), eds, factor=F, shift=(0.6, -1.1), scales=scales,
                         o_per_zr=0.9, sigmas=sigmas)
    assert isinstance(lazy, da.Array)
    np.testing.assert_allclose(lazy.compute(), whole, rtol=1e-6, atol=1e-6)
    # chunks smaller than the halo are rechunked, still exact
    sem_only = sem_features(da.from_array(x, chunks=(9, 11)), sigmas=(1.0, 4.0)).compute()
    np.testing.assert_allclose(sem_only, sem_features(x, sigmas=(1.0, 4.0)), rtol=1e-6, atol=1e-6)
    # the Gaussian channel really is a Gaussian with reflect boundary
    np.testing.assert_allclose(whole[..., 1], ndimage.gaussian_filter(x, 0.7, mode="reflect"), atol=1e-6)


# --- seeds -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    sem, truth, eds = toy((192, 224), seed=5, shift=(1.2, -0.8))
    s = make_store(tmp_path_factory.mktemp("seed") / "s.zarr", {"im": (sem, truth, eds)})
    p = prepare(s, "im", sigmas=(1.0, 2.0), margin=0.5, erode_px=None, max_seeds_per_class=500, seed=0,
                min_quality=0.5, max_shift_px=None, eds_sigma=1.0)
    return s, p, truth, eds


def test_seeds_never_contradict_eds_evidence(seeded):
    s, p, truth, _ = seeded
    cand = p.candidates.compute()
    r = p.rules
    h, w = cand.shape
    from semscale.labelling import smooth, smooth_eds

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
    from semscale.labelling import (
        BOUNDARY_MIN_FRACTION,
        boundary_seed_candidates,
        sem_class_stats,
        smooth,
        smooth_eds,
        unmix,
    )

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
    from semscale.labelling import seed_candidates, smooth_eds

    eds_s = smooth_eds(eds)
    x = np.asarray(s.sem_normalised("im"))
    whole = seed_candidates(x, eds_s, p.rules, factor=F, shift=p.registration.shift_px)
    lazy = seed_candidates(da.from_array(x, chunks=(40, 50)), eds_s, p.rules, factor=F,
                           shift=p.registration.shift_px).compute()
    np.testing.assert_array_equal(lazy, whole)


def test_missing_element_is_an_error(tmp_path):
    sem, truth, eds = toy((96, 96), seed=6)
    del eds["O"]
    s = make_store(tmp_path / "m.zarr", {"im": (sem, truth, eds)})
    with pytest.raises(InputImageError, match="missing"):
        label_store(s)


# --- classifier and campaign level -------------------------------------------------------------------
def test_predict_blockwise_equals_numpy():
    rng = np.random.default_rng(0)
    x = rng.random((600, 5)).astype(np.float32)
    y = (x[:, 0] > 0.5).astype(np.uint8) * 3
    rf = train_classifier(x, y, n_estimators=8, seed=0)
    feats = rng.random((37, 29, 5)).astype(np.float32)
    want = predict_labels(feats, rf)
    got = predict_labels(da.from_array(feats, chunks=(10, 12, 5)), rf).compute()
    np.testing.assert_array_equal(got, want)
    assert set(np.unique(want)) <= {0, 3}
    with pytest.raises(InputImageError, match="two classes"):
        train_classifier(x, np.zeros(600, np.uint8))


# --- edge snapping ----------------------------------------------------------------------------------
def blurred_labels(truth, radius=1):
    """Labels whose boundaries are displaced by up to ``radius`` px, as a classifier fed with blurred EDS
    makes them: each pixel takes the truth of a pixel a few px away along a fixed direction."""
    out = truth.copy()
    out[:, radius:] = truth[:, :-radius]
    return out


def test_superpixels_do_not_cross_sem_edges():
    sem, truth, _ = toy((96, 112), seed=3)
    regions = superpixels(sem.astype(np.float32) / 255, sigma=0.0)
    assert regions.min() >= 1 and regions.dtype == np.int32
    n = regions.max()
    assert regions.size / n < 40  # small regions
    # nearly every region lies within one true phase (the toy image has sharp edges, blurred by 0.8 px)
    counts = np.zeros((n + 1, 4), np.int64)
    np.add.at(counts, (regions.ravel(), truth.ravel()), 1)
    purity = counts.max(1).sum() / counts.sum()
    assert purity > 0.97


def test_refinement_moves_boundaries_back_to_sem_edges():
    sem, truth, _ = toy((128, 144), seed=4)
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
    assert (refine_labels(np.full_like(truth, IGNORE_LABEL), x, n_classes=4) == IGNORE_LABEL).all()


def test_refinement_blockwise_equals_whole_image():
    sem, truth, _ = toy((150, 170), seed=5)
    x = sem.astype(np.float32) / 255
    shifted = blurred_labels(truth)
    want = refine_labels(shifted, x, n_classes=4, sigma=0.5)
    for chunks in ((64, 64), (50, 90)):
        got = refine_labels(da.from_array(shifted, chunks=chunks), da.from_array(x, chunks=chunks),
                            n_classes=4, sigma=0.5).compute()
        assert (got == want).mean() > 0.999
    assert (got != want).sum() <= 5


def test_scribble_loading_checks(tmp_path):
    arr = np.full((10, 12), IGNORE_LABEL, np.uint8)
    arr[2, 3] = 1
    np.save(tmp_path / "s.npy", arr)
    np.testing.assert_array_equal(load_scribbles(tmp_path / "s.npy", shape=(10, 12), n_classes=4), arr)
    with pytest.raises(InputImageError, match="shape"):
        load_scribbles(arr, shape=(11, 12), n_classes=4)
    bad = arr.copy()
    bad[0, 0] = 9
    with pytest.raises(InputImageError, match=r"Got \[9\]"):
        load_scribbles(bad, shape=(10, 12), n_classes=4)
    with pytest.raises(InputImageError, match="no such file"):
        load_scribbles(tmp_path / "nope.tif", shape=(10, 12), n_classes=4)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, client):
    images = {
        "a": toy((160, 192), seed=7, shift=(1.0, 0.5)),
        "b": toy((144, 176), seed=8, shift=(-1.5, 2.0)),
        "noeds": (toy((64, 64), seed=9)[0], toy((64, 64), seed=9)[1], None),
    }
    s = make_store(tmp_path_factory.mktemp("lab") / "l.zarr", images)
    kw = {"sigmas": (0.7, 2.0, 4.0), "n_estimators": 16, "max_seeds_per_class": 800, "n_jobs": 1}
    summary = label_store(s, client=client, **kw)
    return s, summary, kw, images


def test_label_store_writes_targets(labelled):
    s, summary, _, images = labelled
    assert sorted(summary["labelled"]) == ["a", "b"]
    assert summary["skipped"] == ["noeds"]
    for image_id in ("a", "b"):
        target = s.labels(image_id, "target").compute()
        truth = images[image_id][1]
        assert target.dtype == np.uint8 and target.shape == truth.shape
        assert set(np.unique(target)) <= {0, 1, 2, 3}
        assert (target == truth).mean() > 0.85
        attrs = s.label_attrs(image_id, "target")
        assert attrs["complete"] and attrs["method"].startswith("eds-guided random forest")
        assert attrs["seeds_pooled"] == summary["seeds"]
        assert len(attrs["registration"]["shift_px"]) == 2
        ngff = s.root[f"images/{image_id}/labels/target"].attrs["ome"]["image-label"]
        assert [c["class"] for c in ngff["properties"]][:4] == ["pore", "NiO", "Ni", "YSZ"]
    assert not s.has_labels("noeds", "target")


def test_self_training_round_and_its_switch(labelled, client, tmp_path):
    s, first, kw, images = labelled
    assert first["images"]["a"]["rounds"] == 2 and s.label_attrs("a", "target")["rounds"] == 2
    drawn = first["samples_round2"]
    assert all(drawn[c] > 0 for c in ("pore", "NiO", "Ni", "YSZ"))
    one = make_store(tmp_path / "one.zarr", {"a": images["a"]})
    single = label_store(one, client=client, self_training=False, **kw)
    assert single["images"]["a"]["rounds"] == 1 and "samples_round2" not in single
    t1, t2 = one.labels("a", "target").compute(), s.labels("a", "target").compute()
    truth = images["a"][1]
    assert (t1 == truth).mean() > 0.85 and (t2 == truth).mean() > 0.85
    assert (t1 != t2).any()


def test_rerun_skips_and_empty_scribbles_change_nothing(labelled, client):
    s, first, kw, images = labelled
    again = label_store(s, client=client, **kw)
    assert again["labelled"] == [] and sorted(again["skipped"]) == ["a", "b", "noeds"]
    before = {i: s.labels(i, "target").compute() for i in ("a", "b")}
    empty = np.full(images["a"][0].shape, IGNORE_LABEL, np.uint8)
    redo = label_store(s, client=client, overwrite=True, scribbles={"a": empty}, **kw)
    assert redo["seeds"] == first["seeds"]
    assert redo["images"]["a"]["scribbled"] == {}
    for i in ("a", "b"):
        np.testing.assert_array_equal(s.labels(i, "target").compute(), before[i])


def test_scribbles_add_and_override_seeds(labelled, client):
    s, _, kw, images = labelled
    scrib = np.full(images["a"][0].shape, IGNORE_LABEL, np.uint8)
    scrib[100:140, 20:60] = 3  # paint a block as YSZ, whatever it is
    out = label_store(s, client=client, overwrite=True, scribbles={"a": scrib}, **kw)
    assert out["images"]["a"]["scribbled"]["YSZ"] == 40 * 40
    painted = s.labels("a", "target")[100:140, 20:60].compute()
    assert (painted == 3).mean() > 0.9  # both rounds' forests learn the scribbles
    assert out["seeds"]["YSZ"] >= 40 * 40
    with pytest.raises(InputImageError, match="only for images being labelled"):
        label_store(s, client=client, overwrite=True, scribbles={"zzz": scrib}, **kw)
