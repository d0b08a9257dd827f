"""Tests of semscale.synth.render: EDS counts and geometry, SEM noise model."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from semscale.synth import NI, NIO, PORE, YSZ, SynthImage, simulate
from semscale.synth.params import DEFAULT_PARAMS, ELEMENTS
from semscale.synth.render import render_eds


def test_render_eds_of_pure_ysz_counts_rate_and_background() -> None:
    truth = np.full((136, 136), YSZ, np.uint8)
    maps = render_eds(truth, pad=20, shape=(96, 96), factor=4, shift=(0.0, 0.0), px_um=0.04458,
                      rng=np.random.default_rng(0), params=DEFAULT_PARAMS)
    assert list(maps) == list(ELEMENTS)
    for e, el in enumerate(ELEMENTS):
        assert maps[el].shape == (24, 24) and maps[el].dtype == np.uint16
        lam = DEFAULT_PARAMS.eds_background[e] + DEFAULT_PARAMS.eds_rate[e] * DEFAULT_PARAMS.eds_conc[e][YSZ]
        assert abs(maps[el].mean() - lam) < 4 * np.sqrt(lam / maps[el].size) + 1e-9
        assert abs(maps[el].var() - lam) < 0.35 * lam  # Poisson: variance = mean


# -- EDS ----------------------------------------------------------------------------------------------
def _per_phase_counts(im: SynthImage, el: str) -> np.ndarray:
    """Counts per EDS pixel of pure pore, NiO, Ni, YSZ: least squares of the counts on the phase
    fractions of each EDS pixel's (broadened) footprint."""
    f = im.eds_factor
    h, w = im.truth.shape
    he, we = im.eds[el].shape
    cols = []
    for k in range(4):
        frac = ndi.gaussian_filter((im.truth == k).astype(float), 0.4 / 0.04458)
        frac = np.pad(frac, ((0, he * f - h), (0, we * f - w)), mode="edge")
        cols.append(frac.reshape(he, f, we, f).mean(axis=(1, 3))[2:-2, 2:-2].ravel())
    coef, *_ = np.linalg.lstsq(np.stack(cols, 1), im.eds[el][2:-2, 2:-2].ravel().astype(float))
    return coef


def test_eds_consistent_with_truth(series: dict[int, SynthImage]) -> None:
    im = series[30]
    ni, o, zr = (_per_phase_counts(im, el) for el in ("Ni", "O", "Zr"))
    assert zr[YSZ] > 10 * max(abs(zr[NI]), abs(zr[NIO]), abs(zr[PORE]), 1.0)
    assert ni[NI] > 1.4 * ni[NIO] and ni[NIO] > 5 * max(ni[YSZ], ni[PORE], 1.0)
    assert o[NIO] > 3 * max(o[NI], 1.0) and o[YSZ] > 3 * max(o[NI], 1.0)
    assert o[PORE] < 0.2 * o[YSZ] and ni[PORE] < 0.2 * ni[NI]


def test_eds_misregistration_matches_meta() -> None:
    im = simulate((301, 457), oxidation_min=30, seed=5)
    f = im.eds_factor
    h, w = im.truth.shape
    he, we = im.eds["Zr"].shape
    ysz = ndi.gaussian_filter((im.truth == YSZ).astype(float), 0.4 / 0.04458)
    scores = {}
    for sy in range(-3, 4):
        for sx in range(-3, 4):
            # Documented geometry: EDS pixel (i, j) integrates SEM rows [i*f + dy, (i+1)*f + dy).
            moved = ndi.shift(ysz, (-sy, -sx), order=0, mode="nearest")
            moved = np.pad(moved, ((0, he * f - h), (0, we * f - w)), mode="edge")
            pred = moved.reshape(he, f, we, f).mean(axis=(1, 3))[2:-2, 2:-2]
            scores[sy, sx] = np.corrcoef(pred.ravel(), im.eds["Zr"][2:-2, 2:-2].ravel())[0, 1]
    best = max(scores, key=scores.get)
    dy, dx = im.meta["eds_shift_px"]
    assert abs(best[0] - dy) <= 0.75 and abs(best[1] - dx) <= 0.75
    assert scores[best] > 0.8
