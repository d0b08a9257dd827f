"""Microstructure counts against constructed images with known answers and independent implementations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import perimeter_crofton

from semscale.kernels.morphometry import (
    CountLayout,
    block_components,
    block_counts,
    bootstrap_interval,
    derived,
    hist_quantiles,
    merge_components,
)

PORE, NIO, NI, YSZ = range(4)
TPB = (NI, YSZ, PORE)


def whole_counts(labels: np.ndarray, *, n_classes: int = 4, tile_px: int = 10**6) -> np.ndarray:
    padded = np.pad(labels, 1, constant_values=255)
    _, counts = block_counts(padded, n_classes=n_classes, tpb_classes=TPB if n_classes == 4 else None,
                             tile_px=tile_px, origin=(0, 0))
    return counts.sum(axis=0)


def interface_lengths(labels: np.ndarray, *, n_classes: int = 4) -> np.ndarray:
    """Interface length (px) per phase pair, from the densities times the labelled area."""
    d = derived(whole_counts(labels, n_classes=n_classes), n_classes=n_classes, pixel_size_um=1.0, oxidation=None)
    return d["interface_density"] * d["labelled_area"]


def disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2).astype(np.uint8)


@pytest.mark.parametrize("radius", [12.5, 40.0, 101.3])
def test_crofton_length_of_a_disc_within_2_percent(radius: float) -> None:
    n = int(2 * radius + 20)
    lab = disc((n, n), (n / 2 + 0.3, n / 2 - 0.2), radius)
    assert interface_lengths(lab, n_classes=2)[0] == pytest.approx(2 * math.pi * radius, rel=0.02)


@pytest.mark.parametrize("degrees", [0, 10, 22.5, 30, 45, 60, 67.5, 80, 90])
def test_crofton_length_of_a_straight_boundary_within_the_estimators_bound(degrees: float) -> None:
    n = 300
    theta = math.radians(degrees)
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    lab = (xx * math.sin(theta) - yy * math.cos(theta) > 0.25).astype(np.uint8)  # boundary along direction θ
    true = n / max(abs(math.cos(theta)), abs(math.sin(theta)))  # chord of the square through its centre
    # a segment at angle θ crosses |sin(θ - α)| / s lines of direction α per unit length, so the estimator's
    # own ratio is (π/8) Σ_α |sin(θ - α)|: 0.948 (axis-aligned) … 1.026 (22.5°)
    ratio = math.pi / 8 * sum(abs(math.sin(theta - math.radians(a))) for a in (0, 90, 45, 135))
    assert abs(ratio - 1) < 0.053
    assert interface_lengths(lab, n_classes=2)[0] == pytest.approx(true * ratio, rel=0.01)


def test_perimeter_of_each_phase_equals_skimage_perimeter_crofton() -> None:
    rng = np.random.default_rng(0)
    lab = ndimage.median_filter(rng.integers(0, 4, (90, 120)), 5).astype(np.uint8)
    lab[[0, -1], :] = YSZ  # skimage counts the image border as a boundary: keep phases 0..2 off it
    lab[:, [0, -1]] = YSZ
    lengths = interface_lengths(lab)
    for k in (PORE, NIO, NI):
        mine = sum(lengths[p] for p, pair in enumerate(CountLayout(4).pairs) if k in pair)
        assert mine == pytest.approx(perimeter_crofton(lab == k, directions=4), rel=1e-12)


def tpb_brute_force(labels: np.ndarray) -> int:
    """2×2 windows inside the image, all labelled, holding Ni, YSZ and pore (python loops)."""
    h, w = labels.shape
    n = 0
    for y, x in itertools.product(range(h - 1), range(w - 1)):
        window = {int(v) for v in labels[y:y + 2, x:x + 2].ravel()}
        n += 255 not in window and {NI, YSZ, PORE} <= window
    return n


def test_tpb_of_a_hand_counted_pattern() -> None:
    P, O, N, Y = PORE, NIO, NI, YSZ  # noqa: E741 - the phases' initials
    lab = np.array([
        [P, P, N, N, N],
        [P, P, N, N, N],
        [Y, Y, Y, P, N],   # corners (1,1): P N / Y Y and (1,2)/(2,2) around the pore pixel
        [Y, Y, Y, O, 255],
    ], np.uint8)
    # windows (top-left): (1,1) P,N,Y ✓; (1,2) N,N,Y,P ✓; (1,3) N,N,P,N ✗ (no YSZ); (2,2) Y,P,Y,O ✗ (no Ni);
    # (2,3) P,N,O,255 ✗ (unlabelled); (0,*) and (2,0),(2,1) hold two phases at most
    assert whole_counts(lab)[CountLayout(4).tpb] == 2 == tpb_brute_force(lab)


def test_tpb_and_counts_against_loops_on_random_labels() -> None:
    rng = np.random.default_rng(1)
    lab = ndimage.median_filter(rng.integers(0, 4, (40, 50)), 3).astype(np.uint8)
    lab[rng.random(lab.shape) < 0.03] = 255
    counts = whole_counts(lab)
    assert counts[CountLayout(4).tpb] == tpb_brute_force(lab) > 0
    np.testing.assert_array_equal(counts[:4], np.bincount(lab[lab != 255], minlength=4))
    trans = CountLayout(4).transitions(counts)
    for d, (dy, dx) in enumerate(((0, 1), (1, 0), (1, 1), (1, -1))):
        want = np.zeros(6, np.int64)
        for y, x in itertools.product(range(40), range(50)):
            y2, x2 = y + dy, x + dx
            if 0 <= y2 < 40 and 0 <= x2 < 50:
                a, b = int(lab[y, x]), int(lab[y2, x2])
                if a != b and 255 not in (a, b):
                    want[CountLayout(4).pairs.index((min(a, b), max(a, b)))] += 1
        np.testing.assert_array_equal(trans[d], want)


def test_tile_counts_add_up_to_the_whole_and_follow_the_global_grid() -> None:
    rng = np.random.default_rng(2)
    lab = rng.integers(0, 4, (37, 53)).astype(np.uint8)
    padded = np.pad(lab, 1, constant_values=255)
    tiles, counts = block_counts(padded, n_classes=4, tpb_classes=TPB, tile_px=16, origin=(0, 0))
    assert sorted(map(tuple, tiles.tolist())) == [(r, c) for r in range(3) for c in range(4)]
    np.testing.assert_array_equal(counts.sum(axis=0), whole_counts(lab))
    first = next(i for i, t in enumerate(tiles.tolist()) if t == [0, 0])
    np.testing.assert_array_equal(counts[first, :4], np.bincount(lab[:16, :16].ravel(), minlength=4))
    # a block of the same image starting at (16, 40): its tiles are numbered in the image's grid
    sub = padded[16:16 + 12 + 2, 40:40 + 13 + 2]
    t2, _ = block_counts(sub, n_classes=4, tpb_classes=TPB, tile_px=16, origin=(16, 40))
    assert sorted(map(tuple, t2.tolist())) == [(1, 2), (1, 3)]


def test_components_merge_across_blocks_like_whole_image_labelling() -> None:
    rng = np.random.default_rng(3)
    lab = ndimage.zoom(rng.integers(0, 4, (12, 15)), 7, order=0).astype(np.uint8)[:80, :101]
    lab[rng.random(lab.shape) < 0.02] = 255
    for step in ((80, 101), (16, 23), (7, 101), (1, 9)):
        blocks = {(r, c): block_components(lab[y:y + step[0], x:x + step[1]], n_classes=4)
                  for r, y in enumerate(range(0, 80, step[0])) for c, x in enumerate(range(0, 101, step[1]))}
        merged = merge_components(blocks, n_classes=4)
        for k in range(4):
            ref, _ = ndimage.label(lab == k)  # scipy's default structure: face connectivity
            areas = np.bincount(ref.ravel())[1:]
            values, counts = np.unique(areas, return_counts=True)
            np.testing.assert_array_equal(merged["areas"][k][0], values)
            np.testing.assert_array_equal(merged["areas"][k][1], counts)
            assert merged["largest"][k] == areas.max()


def test_size_distribution_of_discs_of_known_diameter() -> None:
    lab = np.full((400, 400), YSZ, np.uint8)
    diameters = [20.0, 30.0, 40.0]
    centres = [(50 + 100 * i, 50 + 100 * j) for i in range(4) for j in range(3)]
    for (cy, cx), d in zip(centres, diameters * 4):
        lab[disc(lab.shape, (cy, cx), d / 2) == 1] = NI
    merged = merge_components({(0, 0): block_components(lab, n_classes=4)}, n_classes=4)
    areas, counts = merged["areas"][NI]
    diam = 2 * np.sqrt(areas / math.pi)
    assert counts.sum() == 12
    np.testing.assert_allclose(hist_quantiles(diam, counts, [0.0, 0.5, 1.0]), diameters, rtol=0.03)


def test_hist_quantiles_equal_numpy_on_the_expanded_sample() -> None:
    rng = np.random.default_rng(4)
    values = np.sort(rng.choice(1000, 40, replace=False)).astype(float)
    counts = rng.integers(1, 9, 40)
    q = [0.0, 0.1, 0.25, 0.5, 0.9, 0.999, 1.0]
    np.testing.assert_allclose(hist_quantiles(values, counts, q), np.quantile(np.repeat(values, counts), q),
                               rtol=1e-12)
    assert np.isnan(hist_quantiles(values[:0], counts[:0], [0.5])).all()


def test_bootstrap_interval_is_reproducible_and_brackets_the_estimate() -> None:
    rng = np.random.default_rng(5)
    lab = ndimage.median_filter(rng.integers(0, 4, (200, 200)), 5).astype(np.uint8)
    padded = np.pad(lab, 1, constant_values=255)
    _, tiles = block_counts(padded, n_classes=4, tpb_classes=TPB, tile_px=25, origin=(0, 0))
    kw = {"n_classes": 4, "pixel_size_um": 0.05, "oxidation": (NIO, NI), "draws": 300, "confidence": 0.95}
    a = bootstrap_interval(tiles, seed=0, **kw)
    b = bootstrap_interval(tiles, seed=0, **kw)
    for name, value in derived(tiles.sum(axis=0), n_classes=4, pixel_size_um=0.05, oxidation=(NIO, NI)).items():
        np.testing.assert_array_equal(a[name], b[name])
        if name != "labelled_area":
            assert np.all(a[name][..., 0] <= value) and np.all(value <= a[name][..., 1]), name
    assert (a["fraction"][:, 1] - a["fraction"][:, 0]).max() < 0.1
    assert not np.array_equal(bootstrap_interval(tiles, seed=1, **kw)["fraction"], a["fraction"])
    assert np.isnan(bootstrap_interval(tiles[:1], seed=0, **kw)["fraction"]).all()
