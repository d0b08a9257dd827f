"""Tests of semscale.training.sampler: leakage-free splits, window sampling, augmentation, determinism."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from scipy import ndimage

from semscale import IGNORE_LABEL
from semscale.errors import ConfigError, StoreError
from semscale.kernels.norm import histogram, norm_from_histogram
from semscale.store import create_store
from semscale.training.sampler import (
    Augment,
    TileSplit,
    augment_pair,
    dihedral,
    load_tiles,
    make_split,
    read_window,
    split_tiles,
    window_overlaps_tiles,
)

P = 32
LEVELS = np.array([20, 80, 140, 200], np.uint8)  # grey value of each class in "label-shaped" images


def blob_labels(shape: tuple[int, int], seed: int, *, rare: bool = False) -> np.ndarray:
    """Random blob-like 4-class labels; with ``rare`` class 2 is kept to ~1-2 % of the area."""
    rng = np.random.default_rng(seed)
    f = ndimage.gaussian_filter(rng.normal(size=(4, *shape)), sigma=(0, 4, 4))
    if rare:
        f[2] -= 0.2
    return np.argmax(f, axis=0).astype(np.uint8)


def add_image(store, image_id: str, labels: np.ndarray, *, role: str = "train", extra: dict | None = None):
    img = LEVELS[labels]
    a = store.create_image(image_id, shape=img.shape, dtype=img.dtype, chunks=48)
    a[:] = img
    store.finish_image(image_id, role=role, norm=norm_from_histogram(histogram(img, nbins=256)))
    store.write_labels(image_id, "target", labels)
    for name, lab in (extra or {}).items():
        store.write_labels(image_id, name, lab)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = create_store(tmp_path_factory.mktemp("data") / "c.zarr", name="t", pixel_size_um=0.04458)
    add_image(s, "a", blob_labels((150, 200), 1))
    add_image(s, "b", blob_labels((130, 170), 2))
    add_image(s, "p", blob_labels((100, 100), 3), role="predict")
    add_image(s, "q", blob_labels((96, 96), 4), role="test")
    return s


def make_ds(store, split, **kw):
    from semscale.training.sampler import PatchDataset

    kw.setdefault("batch_size", 8)
    kw.setdefault("steps_per_epoch", 4)
    kw.setdefault("workers", 1)
    return PatchDataset(store, split, **kw)


# --- splits ----------------------------------------------------------------------------------------------
def test_split_tiles_counts_and_determinism():
    shapes = {"a": (700, 1000), "b": (520, 300)}  # grids 2x3 and 2x1 at P=256 (remainders ignored)
    t = split_tiles(shapes, patch_size=256, n_test=3, seed=5)
    assert sum(len(v) for v in t.values()) == 3
    assert all(0 <= ty < 2 and 0 <= tx < 3 for ty, tx in t["a"])
    assert all(0 <= ty < 2 and tx == 0 for ty, tx in t["b"])
    assert t == split_tiles(shapes, patch_size=256, n_test=3, seed=5)
    draws = {tuple(sorted((k, tile) for k, v in split_tiles(shapes, patch_size=256, n_test=3, seed=s).items()
                          for tile in v)) for s in range(10)}
    assert len(draws) > 1  # the seed matters
    # The paper's share: 140 of 1232 tiles.
    paper = {f"im{i}": (11 * 256 + 40, 16 * 256) for i in range(7)}  # 7 × 176 = 1232 tiles
    assert sum(len(v) for v in split_tiles(paper, patch_size=256).values()) == 140
    with pytest.raises(ConfigError, match="test tiles"):
        split_tiles(shapes, patch_size=256, n_test=9)


def test_window_overlap_matches_pixel_truth():
    rng = np.random.default_rng(0)
    p = 8
    mask = rng.random((5, 6)) < 0.3
    h, w = 5 * p + 5, 6 * p + 3  # remainder border beyond the grid
    pix = np.zeros((h, w), bool)
    pix[: 5 * p, : 6 * p] = np.kron(mask, np.ones((p, p), bool))
    for y in range(h - p + 1):
        for x in range(w - p + 1):
            assert window_overlaps_tiles(mask, y, x, p) == pix[y : y + p, x : x + p].any()


def test_make_split_roles_and_roundtrip(store):
    s = make_split(store, patch_size=P, test_fraction=0.25, seed=3)
    assert s.train_images == ("a", "b")
    assert set(s.held_out_images) == {"p", "q"}
    assert s.n_tiles == (150 // P) * (200 // P) + (130 // P) * (170 // P)
    assert s.n_test_tiles == round(0.25 * s.n_tiles)
    assert TileSplit.from_dict(s.to_dict()) == s
    assert all(i in ("a", "b") for i, _, _ in s.val_tiles())
    si = make_split(store, patch_size=P, kind="images")
    assert si.n_test_tiles == 0 and si.val_images == ("q",)
    assert len(si.val_tiles()) == (96 // P) ** 2
    with pytest.raises(StoreError, match="labels `nope`"):
        make_split(store, patch_size=P, label_source="nope", image_ids=["a"])
    with pytest.raises(ConfigError, match="split"):
        make_split(store, patch_size=P, kind="random")


def test_load_tiles_reads_exact_tiles(store):
    s = make_split(store, patch_size=P, test_fraction=0.25, seed=3)
    x, y = load_tiles(store, s.val_tiles(), label_source="target", patch_size=P)
    assert x.shape == (s.n_test_tiles, P, P, 1) and y.shape == (s.n_test_tiles, P, P)
    for n, (i, y0, x0) in enumerate(s.val_tiles()):
        lab = store.labels(i, "target").compute()
        np.testing.assert_array_equal(y[n], lab[y0 : y0 + P, x0 : x0 + P])
        np.testing.assert_array_equal(np.rint(x[n, ..., 0] * 3).astype(np.uint8), y[n])


# --- augmentation ------------------------------------------------------------------------------------------
def test_dihedral_is_the_group_of_eight():
    a = np.arange(12).reshape(3, 4)
    outs = [dihedral(a, k) for k in range(8)]
    assert len({(o.shape, o.tobytes()) for o in outs}) == 8
    for k in range(8):  # each element has an inverse in the set, and applying it twice stays in the set
        assert any(np.array_equal(dihedral(outs[k], j), a) for j in range(8))


def test_label_shaped_image_survives_every_geometric_augmentation():
    lab = blob_labels((P, P), 7)
    img = lab.astype(np.float32) / 3
    seen = set()
    for s in range(64):
        rng = np.random.default_rng(s)
        k = int(np.random.default_rng(s).integers(8))
        seen.add(k)
        ai, al = augment_pair(img, lab, rng, Augment.geometric_only())
        np.testing.assert_array_equal(np.rint(ai * 3).astype(np.uint8), al)
        np.testing.assert_array_equal(al, dihedral(lab, k))
    assert seen == set(range(8))


def test_photometric_ops_change_image_only():
    lab = blob_labels((P, P), 8)
    img = lab.astype(np.float32) / 3
    aug = Augment(dihedral=False, blur_prob=1, contrast_prob=1, brightness_prob=1, noise_prob=1)
    ai, al = augment_pair(img, lab, np.random.default_rng(0), aug)
    np.testing.assert_array_equal(al, lab)
    assert ai.dtype == np.float32 and not np.allclose(ai, img)


def test_gaussian_poisson_noise_statistics():
    img = np.full((256, 256), 0.5, np.float32)
    aug = Augment(dihedral=False, blur_prob=0, contrast_prob=0, brightness_prob=0, noise_prob=1,
                  noise_sigma=(0.02, 0.02))
    out, _ = augment_pair(img, np.zeros(img.shape, np.uint8), np.random.default_rng(1), aug)
    expected_var = 0.5 / 255 + 0.02**2  # Var[Poisson(I C)/C] = I/C, plus the Gaussian part
    assert abs(out.mean() - 0.5) < 0.005
    assert out.var() == pytest.approx(expected_var, rel=0.05)


def test_augment_coerce():
    assert Augment.coerce(False) == Augment.none()
    assert Augment.coerce({"blur_prob": 0.0}).blur_prob == 0.0
    assert Augment.coerce(Augment().to_dict()) == Augment()
    with pytest.raises(ConfigError, match="blurr"):
        Augment.coerce({"blurr": 1})


def test_read_window_pads_outside():
    a = np.arange(20, dtype=np.uint8).reshape(4, 5)
    w = read_window(a, 2, 3, 4)
    np.testing.assert_array_equal(w[:2, :2], a[2:, 3:])
    np.testing.assert_array_equal(w[:2, 2:], a[2:, 3:][:, ::-1])  # symmetric reflection
    lab = read_window(a, 2, 3, 4, fill=IGNORE_LABEL)
    assert (lab[2:] == IGNORE_LABEL).all() and (lab[:, 2:] == IGNORE_LABEL).all()


# --- the sampler -----------------------------------------------------------------------------------------
def test_sampler_batches_aligned_and_valid(store):
    s = make_split(store, patch_size=P, test_fraction=0.2, seed=1)
    ds = make_ds(store, s, augment=Augment.geometric_only())
    assert len(ds) == 4
    for _epoch in range(2):
        for i in range(len(ds)):
            x, y = ds[i]
            assert x.shape == (8, P, P, 1) and x.dtype == np.float32
            assert y.shape == (8, P, P)
            np.testing.assert_array_equal(np.rint(x[..., 0] * 3).astype(y.dtype), y)
            # and each pair is a real window of the stored image, transformed identically
            for j, (image_id, y0, x0) in enumerate(ds.positions(i)):
                ref = store.labels(image_id, "target")[y0 : y0 + P, x0 : x0 + P].compute()
                assert any(np.array_equal(dihedral(ref, k), y[j]) for k in range(8))
        ds.on_epoch_end()
    with pytest.raises(IndexError):
        ds[4]


def test_sampler_never_draws_from_test_tiles(store, tmp_path):
    """Mark the test tiles in a label image; no batch may ever contain a marked pixel."""
    s = make_split(store, patch_size=P, test_fraction=0.5, seed=2)  # half the grid held out
    for i in s.train_images:
        h, w = s.shapes[i]
        marker = np.zeros((h, w), np.uint8)
        for ty, tx in s.test_tiles[i]:
            marker[ty * P : (ty + 1) * P, tx * P : (tx + 1) * P] = 1
        # class 3 elsewhere sprinkled sparsely, so rare-class centring is active too
        marker[(blob_labels((h, w), 11, rare=True) == 2) & (marker == 0)] = 3
        store.write_labels(i, "marker", marker)
    ds = make_ds(store, s, label_source="marker", augment=True, steps_per_epoch=10, batch_size=16,
                 rare_fraction=0.5)
    assert 3 in ds.rare_classes
    for e in range(3):
        for i in range(len(ds)):
            _, y = ds.batch(i, e)
            assert not (y == 1).any()
    # positions, checked against the pixel grid directly, over many more draws
    for i in s.train_images:
        pix = np.zeros(s.shapes[i], bool)
        for ty, tx in s.test_tiles[i]:
            pix[ty * P : (ty + 1) * P, tx * P : (tx + 1) * P] = True
        for e in range(20):
            for image_id, y0, x0 in (w for k in range(len(ds)) for w in ds.positions(k, e)):
                if image_id == i:
                    assert not pix[y0 : y0 + P, x0 : x0 + P].any()


def test_sampler_reproducible_per_seed_and_picklable(store):
    s = make_split(store, patch_size=P, test_fraction=0.2, seed=1)
    a, b, c = make_ds(store, s, seed=4), make_ds(store, s, seed=4), make_ds(store, s, seed=5)
    for i in range(2):
        xa, ya = a[i]
        xb, yb = b[i]
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
        assert not np.array_equal(xa, c[i][0])
    x0 = a[0][0]
    a.on_epoch_end()
    assert not np.array_equal(a[0][0], x0)  # new windows each epoch
    a.set_epoch(0)
    np.testing.assert_array_equal(a[0][0], x0)
    clone = pickle.loads(pickle.dumps(a))  # process workers receive a pickled copy
    np.testing.assert_array_equal(clone[0][0], x0)


def test_in_memory_and_uncached_samplers_equal_cached(store):
    s = make_split(store, patch_size=P, test_fraction=0.2, seed=1)
    cached = make_ds(store, s, seed=3)
    for other in (make_ds(store, s, seed=3, in_memory=True), make_ds(store, s, seed=3, cache_mb=0)):
        for i in range(len(cached)):
            for a, b in zip(cached[i], other[i], strict=True):
                np.testing.assert_array_equal(a, b)


def test_chunk_cache_slices_and_bound(store):
    from semscale.training.sampler import CachedArray, ChunkCache

    arr = store.sem_array("a")  # 150 x 200, chunks 48
    ref = np.asarray(arr[...])
    cache = ChunkCache(max_bytes=3 * 48 * 48)  # room for three chunks
    ca = CachedArray(arr, cache, "a")
    rng = np.random.default_rng(0)
    for _ in range(200):
        y0, x0 = int(rng.integers(0, 150)), int(rng.integers(0, 200))
        y1, x1 = int(rng.integers(y0, 151)), int(rng.integers(x0, 201))
        np.testing.assert_array_equal(ca[y0:y1, x0:x1], ref[y0:y1, x0:x1])
        assert cache._bytes <= cache.max_bytes
    assert cache.hits > 0 and cache.misses > 0


def test_ignore_boundary_band_matches_whole_image(store):
    from semscale.analysis.metrics import boundary_mask

    s = make_split(store, patch_size=P, test_fraction=0.2, seed=1)
    ds = make_ds(store, s, augment=False, ignore_boundary_px=2)
    full = {i: store.labels(i, "target").compute() for i in s.train_images}
    banded = {i: np.where(boundary_mask(v, width_px=2, n_classes=4), IGNORE_LABEL, v) for i, v in full.items()}
    for i in range(len(ds)):
        _, y = ds.batch(i, 0)
        for j, (image_id, y0, x0) in enumerate(ds.positions(i, 0)):
            ref = banded[image_id][y0 : y0 + P, x0 : x0 + P]
            np.testing.assert_array_equal(y[j], ref)
        assert (y == IGNORE_LABEL).any() and (y != IGNORE_LABEL).any()


def test_sampler_keras_prefetch_threads_same_batches(store):
    """Batches fetched by Keras' threaded enqueuer equal the direct ones, in order."""
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    s = make_split(store, patch_size=P, test_fraction=0.2, seed=1)
    ds = make_ds(store, s, workers=3, seed=9)
    direct = [ds.batch(i, 0)[1] for i in range(len(ds))]
    adapter = PyDatasetAdapter(ds)
    adapter.on_epoch_begin()
    got = [np.asarray(b[1]) for b in adapter.get_numpy_iterator()]
    adapter.on_epoch_end()
    assert len(got) == len(direct)
    for g, d in zip(got, direct, strict=True):
        np.testing.assert_array_equal(g, d)
    assert ds.epoch == 1


def test_rare_class_windows_are_favoured(tmp_path):
    s = create_store(tmp_path / "r.zarr", name="r", pixel_size_um=0.04458)
    lab = blob_labels((256, 256), 21, rare=True)
    frac = (lab == 2).mean()
    assert 0 < frac < 0.05
    add_image(s, "r", lab)
    split = make_split(s, patch_size=P, test_fraction=0.0)

    def share_with_rare(rf: float) -> float:
        ds = make_ds(s, split, rare_fraction=rf, augment=False, batch_size=32, steps_per_epoch=8)
        ys = np.concatenate([ds.batch(i, 0)[1] for i in range(len(ds))])
        return float(((ys == 2).sum(axis=(1, 2)) > 0).mean())

    assert 2 in make_ds(s, split).rare_classes
    plain, favoured = share_with_rare(0.0), share_with_rare(0.8)
    assert favoured > plain + 0.2
    assert favoured > 0.8


def test_small_image_windows_are_padded(tmp_path):
    s = create_store(tmp_path / "s.zarr", name="s", pixel_size_um=0.04458)
    add_image(s, "tiny", blob_labels((20, 25), 5))
    split = make_split(s, patch_size=P, test_fraction=0.0)
    assert split.n_tiles == 0
    x, y = make_ds(s, split, augment=False, steps_per_epoch=1)[0]
    assert (y[:, 20:, :] == IGNORE_LABEL).all() and (y[:, :20, :25] != IGNORE_LABEL).all()
    assert np.isfinite(x).all()
