"""Tests of semscale.analysis.metrics: blockwise confusion matrix and scores against scikit-learn."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from distributed import Client
from scipy import ndimage
from sklearn.metrics import accuracy_score, jaccard_score, precision_recall_fscore_support
from sklearn.metrics import confusion_matrix as sk_confusion

from semscale import IGNORE_LABEL
from semscale.analysis.metrics import (
    boundary_mask,
    combine,
    confusion_matrix,
    evaluate,
    evaluate_store,
    format_confusion,
    score,
    scores_from_confusion,
    split_confusion,
)
from semscale.errors import InputImageError, StoreError
from semscale.kernels.norm import histogram, norm_from_histogram
from semscale.store import create_store
from tests.loopback import local_cluster

CLASSES = ("pore", "NiO", "Ni", "YSZ")


@pytest.fixture(scope="module")
def client():
    with local_cluster(n_workers=2, threads_per_worker=1, processes=False) as cluster, \
            Client(cluster) as c:
        yield c


def _random_labels(shape, k, seed, p_ignore=0.1):
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, k, shape).astype(np.uint8)
    # make the prediction agree often so scores are not all ~1/k
    pred = np.where(rng.random(shape) < 0.6, ref, rng.integers(0, k, shape)).astype(np.uint8)
    ref[rng.random(shape) < p_ignore] = IGNORE_LABEL
    pred[rng.random(shape) < p_ignore] = IGNORE_LABEL
    return ref, pred


def test_confusion_and_scores_equal_sklearn(client):
    k = 4
    ref, pred = _random_labels((203, 157), k, seed=1)
    cm = confusion_matrix(da.from_array(ref, chunks=(50, 40)), da.from_array(pred, chunks=(33, 61)),
                          n_classes=k)
    assert isinstance(cm, da.Array)
    cm = cm.compute()
    keep = (ref != IGNORE_LABEL) & (pred != IGNORE_LABEL)
    r, p = ref[keep], pred[keep]
    labels = list(range(k))
    np.testing.assert_array_equal(cm, sk_confusion(r, p, labels=labels))

    res = scores_from_confusion(cm, classes=CLASSES)
    prec, rec, f1, sup = precision_recall_fscore_support(r, p, labels=labels, zero_division=0)
    iou = jaccard_score(r, p, labels=labels, average=None, zero_division=0)
    for i, name in enumerate(CLASSES):
        pc = res["per_class"][name]
        assert pc["precision"] == pytest.approx(prec[i], abs=1e-12)
        assert pc["recall"] == pytest.approx(rec[i], abs=1e-12)
        assert pc["f1"] == pytest.approx(f1[i], abs=1e-12)
        assert pc["iou"] == pytest.approx(iou[i], abs=1e-12)
        assert pc["support"] == sup[i]
    assert res["accuracy"] == pytest.approx(accuracy_score(r, p), abs=1e-12)
    assert res["mean_iou"] == pytest.approx(jaccard_score(r, p, labels=labels, average="macro"), abs=1e-12)
    assert res["n_pixels"] == keep.sum()
    rows = np.asarray(res["confusion_normalised"])
    np.testing.assert_allclose(rows, sk_confusion(r, p, labels=labels, normalize="true"), atol=1e-12)


def test_absent_class_and_numpy_path():
    k = 4
    ref, pred = _random_labels((64, 48), 3, seed=2)  # class 3 never occurs
    cm = confusion_matrix(ref, pred, n_classes=k)
    assert isinstance(cm, np.ndarray)
    res = scores_from_confusion(cm, classes=CLASSES)
    assert res["per_class"]["YSZ"]["iou"] == 0.0
    keep = (ref != IGNORE_LABEL) & (pred != IGNORE_LABEL)
    want = jaccard_score(ref[keep], pred[keep], labels=[0, 1, 2], average="macro")
    assert res["mean_iou"] == pytest.approx(want, abs=1e-12)
    np.testing.assert_array_equal(cm, confusion_matrix(da.from_array(ref, chunks=20),
                                                       da.from_array(pred, chunks=20), n_classes=k).compute())


def test_bad_values_and_shapes_raise():
    ref = np.zeros((8, 8), np.uint8)
    pred = ref.copy()
    pred[0, 0] = 7
    with pytest.raises(InputImageError, match="Expected label values 0..3"):
        confusion_matrix(ref, pred, n_classes=4)
    with pytest.raises(InputImageError, match="shaped like"):
        confusion_matrix(ref, np.zeros((8, 9), np.uint8), n_classes=4)


def _boundary_reference(ref, width, k):
    """Independent definition: a valid pixel lies within `width` px of a valid pixel of another class."""
    out = np.zeros(ref.shape, bool)
    for c in range(k):
        other = (ref < k) & (ref != c)
        if not other.any():
            continue
        dist = ndimage.distance_transform_edt(~other)
        out |= (ref == c) & (dist <= width)
    return out


@pytest.mark.parametrize("width", [1, 2, 3.5])
def test_boundary_mask_matches_distance_definition_and_chunking(width):
    rng = np.random.default_rng(3)
    ref = ndimage.zoom(rng.integers(0, 4, (12, 10)), 8, order=0)[:91, :77].astype(np.uint8)
    ref[rng.random(ref.shape) < 0.02] = IGNORE_LABEL
    want = _boundary_reference(ref, width, 4)
    got = boundary_mask(ref, width_px=width, n_classes=4)
    np.testing.assert_array_equal(got, want)
    got_da = boundary_mask(da.from_array(ref, chunks=(20, 31)), width_px=width, n_classes=4).compute()
    np.testing.assert_array_equal(got_da, want)


def test_split_confusion_partitions_the_pixels():
    ref, pred = _random_labels((60, 70), 4, seed=4, p_ignore=0.0)
    ref = ndimage.zoom(ref[:12, :14], 5, order=0)
    cm_b, cm_i = split_confusion(da.from_array(ref, chunks=25), da.from_array(pred, chunks=25), n_classes=4)
    total = confusion_matrix(ref, pred, n_classes=4)
    np.testing.assert_array_equal(cm_b.compute() + cm_i.compute(), total)
    res = score(ref, pred, classes=CLASSES, boundary_px=2)
    mask = _boundary_reference(ref, 2, 4)
    assert res["boundary_split"]["boundary"]["n_pixels"] == mask.sum()
    acc_b = (ref[mask] == pred[mask]).mean()
    assert res["boundary_split"]["boundary"]["accuracy"] == pytest.approx(acc_b)
    both = combine([res, res])
    assert both["accuracy"] == pytest.approx(res["accuracy"])
    assert both["n_pixels"] == 2 * res["n_pixels"]
    assert both["boundary_split"]["boundary"]["n_pixels"] == 2 * mask.sum()


def test_evaluate_writes_attrs_and_formats(tmp_path, client):
    rng = np.random.default_rng(5)
    img = rng.integers(0, 255, (70, 90)).astype(np.uint8)
    s = create_store(tmp_path / "c.zarr", name="t", pixel_size_um=0.04458)
    a = s.create_image("im", shape=img.shape, dtype=img.dtype, chunks=32)
    a[:] = img
    s.finish_image("im", norm=norm_from_histogram(histogram(img, nbins=256)))
    truth = ndimage.zoom(rng.integers(0, 4, (7, 9)), 10, order=0).astype(np.uint8)
    target = truth.copy()
    target[:10] = (target[:10] + 1) % 4
    target[-3:] = IGNORE_LABEL
    s.write_labels("im", "truth", truth)
    s.write_labels("im", "target", target)
    res = evaluate(s, "im", pred=("labels", "target"), ref="truth", json_path=tmp_path / "m.json")
    keep = target != IGNORE_LABEL
    assert res["accuracy"] == pytest.approx(accuracy_score(truth[keep], target[keep]))
    stored = s.label_attrs("im", "target")["metrics"]["truth"]
    assert stored["accuracy"] == pytest.approx(res["accuracy"])
    assert (tmp_path / "m.json").exists()
    text = format_confusion(res)
    for name in CLASSES:
        assert name in text
    assert f"{res['accuracy']:.4f}" in text
    allres = evaluate_store(s, pred="target", ref="truth", write=False)
    assert allres["total"]["accuracy"] == pytest.approx(res["accuracy"])
    with pytest.raises(StoreError, match="predictions"):
        evaluate(s, "im", pred=("predictions", "nomodel"), ref="truth")


def test_band_mask_is_the_class_within_a_distance_of_another() -> None:
    """Brute force: a pixel of ``cls`` is in the band iff some ``next_to`` pixel lies within the width."""
    from semscale.analysis.metrics import band_mask

    rng = np.random.default_rng(5)
    ref = rng.choice(4, size=(23, 29), p=[0.05, 0.2, 0.5, 0.25]).astype(np.uint8)
    ys, xs = np.nonzero(ref == 0)
    for width in (1.0, 2.5):
        got = band_mask(ref, cls=2, next_to=0, width_px=width)
        yy, xx = np.mgrid[0:23, 0:29]
        d2 = ((yy[..., None] - ys) ** 2 + (xx[..., None] - xs) ** 2).min(axis=-1)
        np.testing.assert_array_equal(got, (ref == 2) & (d2 <= width**2))
    assert not band_mask(np.full((4, 4), 2, np.uint8), cls=2, next_to=0, width_px=3).any()
