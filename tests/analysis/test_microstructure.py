"""One label image's measures: identical for every chunking, on a real cluster too, and correct."""

from __future__ import annotations

import math

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage

from semscale.analysis.microstructure import measure
from semscale.config import StatsConfig

CLASSES = ("pore", "NiO", "Ni", "YSZ")
CFG = StatsConfig(tile_um=1.6, bootstrap=200)
PIXEL = 0.05


def grains(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Blocky four-phase labels with grains crossing every chunk edge, a snake of Ni and unlabelled specks."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 4, (shape[0] // 6 + 1, shape[1] // 6 + 1))
    lab = ndimage.zoom(coarse, 6, order=0)[: shape[0], : shape[1]].astype(np.uint8)
    lab[rng.random(shape) < 0.01] = 255
    lab[5::20, :] = 2  # long Ni lines joined by a column: one component across all chunks
    lab[:, 3] = 2
    return lab


def assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k, v in want.items():
        g = got[k]
        if (isinstance(v, np.ndarray) and v.dtype.kind in "iu") or isinstance(v, (int, np.integer)):
            np.testing.assert_array_equal(g, v, err_msg=k)  # counts: bit for bit
        else:
            np.testing.assert_allclose(g, v, rtol=1e-12, atol=0, equal_nan=True, err_msg=k)


def test_every_chunking_gives_the_whole_images_numbers() -> None:
    lab = grains((131, 187), seed=0)
    whole = measure(lab, cfg=CFG, classes=CLASSES, pixel_size_um=PIXEL, chunks=4096)
    for chunks in ((131, 187), (32, 32), (1, 187), (131, 1), (17, 40), (64, 100)):
        assert_same(measure(da.from_array(lab, chunks=chunks), cfg=CFG, classes=CLASSES, pixel_size_um=PIXEL), whole)


def test_the_values_follow_from_the_labels() -> None:
    lab = grains((96, 120), seed=1)
    m = measure(lab, cfg=CFG, classes=CLASSES, pixel_size_um=PIXEL)
    counts = np.bincount(lab[lab != 255], minlength=4)
    np.testing.assert_array_equal(m["pixel_count"], counts)
    np.testing.assert_allclose(m["fraction"], counts / counts.sum(), rtol=1e-12)
    assert m["labelled_area"] == pytest.approx(counts.sum() * PIXEL**2, rel=1e-12)
    assert m["oxidation_degree"] == pytest.approx(counts[1] / (counts[1] + counts[2]), rel=1e-12)
    assert m["tpb_length_density"] == pytest.approx(2 * m["tpb_density"], rel=1e-12)
    assert m["tpb_density"] == pytest.approx(m["tpb_count"] / m["labelled_area"], rel=1e-12)
    for k in range(4):
        ref, _ = ndimage.label(lab == k)
        areas = np.bincount(ref.ravel())[1:]
        assert m["largest_component_share"][k] == pytest.approx(areas.max() / counts[k], rel=1e-12)
        assert m["component_count"][k] == (areas >= CFG.min_component_px).sum()
        d = 2 * np.sqrt(areas[areas >= CFG.min_component_px] * PIXEL**2 / math.pi)
        np.testing.assert_allclose(m["size_quantile"][k], np.quantile(d, CFG.quantiles), rtol=1e-12)
    for name in ("fraction", "tpb_density", "interface_density", "oxidation_degree"):
        lo, hi = m[f"{name}_ci"][..., 0], m[f"{name}_ci"][..., 1]
        assert np.all(lo <= m[name]) and np.all(m[name] <= hi), name
    assert m["largest_component_share"][2] > 0.5  # the Ni lines and their column are one component


def test_missing_phases_leave_tpb_and_oxidation_undefined() -> None:
    lab = grains((40, 40), seed=2)
    m = measure(np.minimum(lab, 1), cfg=CFG, classes=("pore", "solid"), pixel_size_um=PIXEL)
    assert np.isnan(m["tpb_density"]) and np.isnan(m["oxidation_degree"]) and np.isnan(m["tpb_density_ci"]).all()
    assert m["fraction"].shape == (2,) and m["interface_density"].shape == (1,)


def test_on_a_distributed_cluster_the_numbers_are_the_same(client: object) -> None:
    lab = grains((150, 110), seed=3)
    local = measure(lab, cfg=CFG, classes=CLASSES, pixel_size_um=PIXEL)
    remote = measure(da.from_array(lab, chunks=(40, 50)), cfg=CFG, classes=CLASSES, pixel_size_um=PIXEL)
    assert_same(remote, local)
