"""Tests of semscale.training.sampler: window reading, the chunk cache, and the keras-free patch sampler
(alignment, no test-tile leakage, determinism, rare classes, ignored boundaries, padding)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from semscale import IGNORE_LABEL
from semscale.config import TrainingConfig
from semscale.store import create_store
from semscale.training.augment import Augment, dihedral
from semscale.training.sampler import CachedArray, ChunkCache, PatchSampler, load_tiles, read_window
from semscale.training.splits import make_split

P = 32


def cfg(**kw) -> TrainingConfig:
    return TrainingConfig(patch_size=P, **kw)


def make_ds(store, split, *, augment: bool | Augment = True, **kw) -> PatchSampler:
    """A sampler with batches of 8, 4 steps per epoch, unless ``kw`` says otherwise."""
    kw.setdefault("batch_size", 8)
    kw.setdefault("steps_per_epoch", 4)
    explicit = augment if isinstance(augment, Augment) else None
    training = TrainingConfig(patch_size=split.patch_size, augment=bool(augment) if explicit is None else True, **kw)
    return PatchSampler(store, split, training, augment=explicit)


# --- window reading ---------------------------------------------------------------------------------------
def test_load_tiles_reads_exact_tiles(data_store):
    store = data_store
    s = make_split(store, cfg(test_tiles_fraction=0.25, seed=3))
    x, y = load_tiles(store, s.val_tiles(), label_source="target", patch_size=P)
    assert x.shape == (s.n_test_tiles, P, P, 1) and y.shape == (s.n_test_tiles, P, P)
    for n, (i, y0, x0) in enumerate(s.val_tiles()):
        lab = store.labels(i, "target").compute()
        np.testing.assert_array_equal(y[n], lab[y0 : y0 + P, x0 : x0 + P])
        np.testing.assert_array_equal(np.rint(x[n, ..., 0] * 3).astype(np.uint8), y[n])


def test_read_window_pads_outside():
    a = np.arange(20, dtype=np.uint8).reshape(4, 5)
    w = read_window(a, 2, 3, 4)
    np.testing.assert_array_equal(w[:2, :2], a[2:, 3:])
    np.testing.assert_array_equal(w[:2, 2:], a[2:, 3:][:, ::-1])  # symmetric reflection
    lab = read_window(a, 2, 3, 4, fill=IGNORE_LABEL)
    assert (lab[2:] == IGNORE_LABEL).all() and (lab[:, 2:] == IGNORE_LABEL).all()


# --- the sampler ---------------------------------------------------------------------------------------
def test_sampler_batches_aligned_and_valid(data_store):
    store = data_store
    s = make_split(store, cfg(test_tiles_fraction=0.2, seed=1))
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


def test_sampler_never_draws_from_test_tiles(data_store, blobs):
    store = data_store
    """Mark the test tiles in a label image; no batch may ever contain a marked pixel."""
    s = make_split(store, cfg(test_tiles_fraction=0.5, seed=2))  # half the grid held out
    for i in s.train_images:
        h, w = s.shapes[i]
        marker = np.zeros((h, w), np.uint8)
        for ty, tx in s.test_tiles[i]:
            marker[ty * P : (ty + 1) * P, tx * P : (tx + 1) * P] = 1
        # class 3 elsewhere sprinkled sparsely, so rare-class centring is active too
        marker[(blobs.labels((h, w), 11, rare=True) == 2) & (marker == 0)] = 3
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


def test_sampler_reproducible_per_seed_and_picklable(data_store):
    store = data_store
    s = make_split(store, cfg(test_tiles_fraction=0.2, seed=1))
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


def test_in_memory_and_uncached_samplers_equal_cached(data_store):
    store = data_store
    s = make_split(store, cfg(test_tiles_fraction=0.2, seed=1))
    cached = make_ds(store, s, seed=3)
    for other in (make_ds(store, s, seed=3, in_memory=True), make_ds(store, s, seed=3, cache_mb=0)):
        for i in range(len(cached)):
            for a, b in zip(cached[i], other[i], strict=True):
                np.testing.assert_array_equal(a, b)


def test_chunk_cache_slices_and_bound(data_store):
    store = data_store
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


def test_ignore_boundary_band_matches_whole_image(data_store):
    from semscale.analysis.metrics import boundary_mask

    store = data_store
    s = make_split(store, cfg(test_tiles_fraction=0.2, seed=1))
    ds = make_ds(store, s, augment=False, ignore_boundary_px=2)
    full = {i: store.labels(i, "target").compute() for i in s.train_images}
    banded = {i: np.where(boundary_mask(v, width_px=2, n_classes=4), IGNORE_LABEL, v) for i, v in full.items()}
    for i in range(len(ds)):
        _, y = ds.batch(i, 0)
        for j, (image_id, y0, x0) in enumerate(ds.positions(i, 0)):
            ref = banded[image_id][y0 : y0 + P, x0 : x0 + P]
            np.testing.assert_array_equal(y[j], ref)
        assert (y == IGNORE_LABEL).any() and (y != IGNORE_LABEL).any()


def test_an_unresolved_band_is_ignored_in_windows_and_validation_tiles(tmp_path, blobs):
    """A target whose attrs name an unresolved band (Ni within 3 px of pore) has exactly that band ignored,
    on top of the boundary band, in every training window and validation tile, as if masked on the whole
    image; the other image's windows keep every pixel; the sidecar description names it."""
    from semscale.analysis.metrics import band_mask, boundary_mask
    from semscale.errors import StoreError

    store = create_store(tmp_path / "c.zarr", name="t", pixel_size_um=0.04458)
    blobs.add_exact(store, "a", blobs.labels((150, 200), 1))
    blobs.add_exact(store, "b", blobs.labels((130, 170), 2))
    store.set_label_attrs("a", "target", unresolved={"class": "Ni", "next_to": "pore", "width_px": 3.0, "why": "t"})
    s = make_split(store, cfg(test_tiles_fraction=0.2, seed=1))
    ds = make_ds(store, s, augment=False, ignore_boundary_px=1)
    full = {i: store.labels(i, "target").compute() for i in s.train_images}
    band = band_mask(full["a"], cls=2, next_to=0, width_px=3.0)
    assert band.any() and (full["a"][band] == 2).all()
    want = {i: np.where(boundary_mask(v, width_px=1, n_classes=4) | (band if i == "a" else False), IGNORE_LABEL, v)
            for i, v in full.items()}
    hidden = 0
    for i in range(len(ds)):
        _, y = ds.batch(i, 0)
        for j, (image_id, y0, x0) in enumerate(ds.positions(i, 0)):
            np.testing.assert_array_equal(y[j], want[image_id][y0 : y0 + P, x0 : x0 + P])
            if image_id == "a":
                hidden += int((band & ~boundary_mask(full["a"], width_px=1, n_classes=4))[y0 : y0 + P, x0 : x0 + P].sum())
    assert hidden > 0  # the band reaches beyond the boundary band, and some window shows it
    _, yv = load_tiles(store, s.val_tiles(), label_source="target", patch_size=P)
    for n, (i, y0, x0) in enumerate(s.val_tiles()):
        ref = np.where(band, IGNORE_LABEL, full["a"]) if i == "a" else full[i]
        np.testing.assert_array_equal(yv[n], ref[y0 : y0 + P, x0 : x0 + P])
    assert ds.describe()["unresolved"] == {"a": {"class": 2, "next_to": 0, "width_px": 3.0}}

    store.set_label_attrs("b", "target", unresolved={"class": "Nickel", "next_to": "pore", "width_px": 3.0})
    with pytest.raises(StoreError, match=r"labels/target of b.*Got \['Nickel'\]; relabel"):
        make_ds(store, s)


def test_rare_class_windows_are_favoured(tmp_path, blobs):
    s = create_store(tmp_path / "r.zarr", name="r", pixel_size_um=0.04458)
    lab = blobs.labels((256, 256), 21, rare=True)
    frac = (lab == 2).mean()
    assert 0 < frac < 0.05
    blobs.add_exact(s, "r", lab)
    split = make_split(s, cfg(test_tiles_fraction=0.0))

    def share_with_rare(rf: float) -> float:
        ds = make_ds(s, split, rare_fraction=rf, augment=False, batch_size=32, steps_per_epoch=8)
        ys = np.concatenate([ds.batch(i, 0)[1] for i in range(len(ds))])
        return float(((ys == 2).sum(axis=(1, 2)) > 0).mean())

    assert 2 in make_ds(s, split).rare_classes
    plain, favoured = share_with_rare(0.0), share_with_rare(0.8)
    assert favoured > plain + 0.2
    assert favoured > 0.8


def test_small_image_windows_are_padded(tmp_path, blobs):
    s = create_store(tmp_path / "s.zarr", name="s", pixel_size_um=0.04458)
    blobs.add_exact(s, "tiny", blobs.labels((20, 25), 5))
    split = make_split(s, cfg(test_tiles_fraction=0.0))
    assert split.n_tiles == 0
    x, y = make_ds(s, split, augment=False, steps_per_epoch=1)[0]
    assert (y[:, 20:, :] == IGNORE_LABEL).all() and (y[:, :20, :25] != IGNORE_LABEL).all()
    assert np.isfinite(x).all()


def test_patch_size_must_match_the_split(data_store):
    from semscale.errors import ConfigError

    s = make_split(data_store, cfg(test_tiles_fraction=0.2))
    with pytest.raises(ConfigError, match="split's patch size"):
        PatchSampler(data_store, s, TrainingConfig(patch_size=2 * P))


def test_member_offsets_the_seed(data_store):
    s = make_split(data_store, cfg(test_tiles_fraction=0.2, seed=1))
    member = PatchSampler(data_store, s, cfg(seed=4, batch_size=8, steps_per_epoch=2), member=3)
    alone = make_ds(data_store, s, seed=7, steps_per_epoch=2)
    assert member.seed == alone.seed == 7
    assert member.positions(0, 0) == alone.positions(0, 0)


def test_sampler_module_does_not_import_keras():
    import subprocess
    import sys

    code = "import sys, semscale.training.sampler, semscale.training.splits; print('keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_synthetic_windows_fill_the_end_of_each_batch(data_store):
    store = data_store
    s = make_split(store, cfg(test_tiles_fraction=0.2, seed=1))
    plain = make_ds(store, s, seed=4, augment=False)
    mixed = make_ds(store, s, seed=4, augment=False, synthetic_fraction=0.25, synthetic_images=3)
    assert mixed.n_synthetic == 2 and mixed.describe()["synthetic_per_batch"] == 2
    xp, yp = plain[1]
    xm, ym = mixed[1]
    np.testing.assert_array_equal(xm[:6], xp[:6])  # the campaign's windows are the same ones
    np.testing.assert_array_equal(ym[:6], yp[:6])
    images = mixed.synthetic.images()
    assert len(images) == 3 and images[0][0].shape == (4 * P, 4 * P)
    for j in (6, 7):  # each synthetic window is a window of one simulated image and of its exact truth
        found = [(img, lab) for img, lab in images
                 for yy in range(4 * P - P + 1) for xx in range(4 * P - P + 1)
                 if np.array_equal(img[yy:yy + P, xx:xx + P], xm[j, ..., 0])
                 and np.array_equal(lab[yy:yy + P, xx:xx + P], ym[j])]
        assert found
        assert set(np.unique(ym[j])) <= {0, 1, 2, 3}
    again = pickle.loads(pickle.dumps(mixed))  # rebuilt identically where unpickled
    np.testing.assert_array_equal(again[1][0], xm)
    np.testing.assert_array_equal(again[1][1], ym)


def test_zoomed_synthetic_windows_show_the_truth_at_another_scale():
    """A window at zoom z is a round(P / z)² crop resampled to P²: at z = 0.5 every label is one of the four
    of its 2×2 block of the crop and every grey value lies within its 4×4 neighbourhood's range; at z = 2 a
    16² crop fills the window; zoom (1, 1) draws nothing extra, so unzoomed windows stay the same windows."""
    from semscale.training.synthetic import SyntheticWindows

    plain = SyntheticWindows(n_images=2, size=4 * P, seed=3)
    images = plain.images()
    for z, q in ((0.5, 2 * P), (2.0, P // 2)):
        zoomed = SyntheticWindows(n_images=2, size=4 * P, seed=3, zoom=(z, z))
        zoomed._images = images  # the same simulated images
        img, lab = zoomed.window(np.random.default_rng(11), P)
        rng = np.random.default_rng(11)  # replay the draws: image, then the crop's corner
        src_img, src_lab = images[int(rng.integers(2))]
        y, x = (int(v) for v in rng.integers(0, 4 * P - q + 1, size=2))
        crop_img, crop_lab = src_img[y : y + q, x : x + q], src_lab[y : y + q, x : x + q]
        assert img.shape == lab.shape == (P, P) and img.dtype == np.float32 and lab.dtype == np.uint8
        if z == 0.5:
            blocks = crop_lab.reshape(P, 2, P, 2).transpose(0, 2, 1, 3).reshape(P, P, 4)
            assert (blocks == lab[..., None]).any(axis=-1).all()
            padded = np.pad(crop_img, 1, mode="edge")
            win = np.lib.stride_tricks.sliding_window_view(padded, (4, 4))[::2, ::2]
            assert ((img >= win.min(axis=(-1, -2)) - 1e-6) & (img <= win.max(axis=(-1, -2)) + 1e-6)).all()
        else:
            np.testing.assert_array_equal(lab[::2, ::2], crop_lab)  # nearest: each crop pixel fills 2×2
    a = SyntheticWindows(n_images=2, size=4 * P, seed=3, zoom=(1.0, 1.0))
    a._images = images
    ra, rb = np.random.default_rng(5), np.random.default_rng(5)
    img_a, lab_a = a.window(ra, P)
    i = int(rb.integers(2))
    y, x = (int(v) for v in rb.integers(0, 3 * P + 1, size=2))
    np.testing.assert_array_equal(img_a, images[i][0][y : y + P, x : x + P])
    np.testing.assert_array_equal(lab_a, images[i][1][y : y + P, x : x + P])
    drawn = SyntheticWindows(n_images=2, size=4 * P, seed=3, zoom=(0.7, 1.4))
    drawn._images = images
    assert {drawn.window(np.random.default_rng(k), P)[0].shape for k in range(6)} == {(P, P)}


def test_synthetic_zoom_is_recorded_and_checked(data_store):
    from semscale.errors import ConfigError

    s = make_split(data_store, cfg(test_tiles_fraction=0.2, seed=1))
    ds = make_ds(data_store, s, augment=False, synthetic_fraction=0.25, synthetic_images=2, synthetic_zoom=(0.7, 1.4))
    assert ds.describe()["synthetic_zoom"] == [0.7, 1.4] and ds.synthetic.zoom == (0.7, 1.4)
    assert "synthetic_zoom" not in make_ds(data_store, s, synthetic_fraction=0.25, synthetic_images=2).describe()
    _, y = ds.batch(0, 0)
    assert set(np.unique(y[-2:])) <= {0, 1, 2, 3}
    with pytest.raises(ConfigError, match=r"training.synthetic_zoom.*within \[0.25, 4\].*\[0.1, 1.0\]"):
        TrainingConfig(synthetic_zoom=(0.1, 1.0))
