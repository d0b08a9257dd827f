"""Tests of semscale.synth.microstructure: seeds, grains, YSZ network, pores and oxidation."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from semscale.synth import NI, NIO, PORE, YSZ, SynthImage, simulate
from semscale.synth.microstructure import microstructure, oxidise, seeds
from semscale.synth.params import DEFAULT_PARAMS


def test_seeds_keep_their_hard_core_distance() -> None:
    rng = np.random.default_rng(0)
    d_px = 20.0
    pts = seeds((300, 400), d_px=d_px, hardcore=0.5, rng=rng)
    assert pts.shape[1] == 2 and len(pts) >= 4
    assert np.all((pts >= 0) & (pts < np.array([300, 400])))
    nearest, _ = cKDTree(pts).query(pts, k=2)
    assert nearest[:, 1].min() >= 0.5 * d_px
    # about one seed per disc of diameter d_px (the hard core thins the 1.35× oversampled process)
    expected = 300 * 400 / (np.pi / 4.0 * d_px**2)
    assert 0.6 * expected < len(pts) < 1.35 * expected


def test_microstructure_cells_and_phases() -> None:
    m = microstructure((200, 240), px_um=0.04458, rng=np.random.default_rng(1), params=DEFAULT_PARAMS)
    assert m.cells.shape == m.truth0.shape == m.gb_same.shape == (200, 240)
    assert m.cells.min() >= 1 and m.cells.max() <= m.n_cells
    assert set(np.unique(m.truth0)) == {PORE, NI, YSZ}  # no NiO before oxidation
    solid = m.truth0 != PORE
    # every solid pixel has the phase of its grain
    np.testing.assert_array_equal(m.truth0[solid], m.cell_phase[m.cells][solid])
    porosity = (m.truth0 == PORE).mean()
    assert DEFAULT_PARAMS.porosity_range[0] - 0.01 <= porosity <= DEFAULT_PARAMS.porosity_range[1] + 0.01


def test_oxidise_hits_its_target_and_only_eats_ni_and_pores() -> None:
    m = microstructure((200, 240), px_um=0.04458, rng=np.random.default_rng(2), params=DEFAULT_PARAMS)
    same, info0 = oxidise(m.truth0, x_ox=0.0, px_um=0.04458, rng=np.random.default_rng(3),
                          params=DEFAULT_PARAMS)
    np.testing.assert_array_equal(same, m.truth0)
    assert info0["oxidised_ni_fraction"] == 0.0
    truth, info = oxidise(m.truth0, x_ox=0.4, px_um=0.04458, rng=np.random.default_rng(3),
                          params=DEFAULT_PARAMS)
    assert abs(info["oxidised_ni_fraction"] - 0.4) < 0.02
    assert np.all(np.isin(m.truth0[truth == NIO], [PORE, NI]))
    np.testing.assert_array_equal(truth == YSZ, m.truth0 == YSZ)
    lost_ni = ((m.truth0 == NI) & (truth != NI)).sum() / (m.truth0 == NI).sum()
    assert lost_ni == info["oxidised_ni_fraction"]


def test_ysz_is_a_connected_matrix() -> None:
    largest = []
    for seed in (1, 2, 4):
        ysz = simulate((400, 400), seed=seed, with_eds=False).truth == YSZ
        lab, _ = ndi.label(ysz)
        sizes = np.bincount(lab.ravel())[1:]
        largest.append(sizes.max() / sizes.sum())
    assert np.mean(largest) > 0.5


def test_pores_from_specks_to_voids(series: dict[int, SynthImage]) -> None:
    lab, _ = ndi.label(series[0].truth == PORE)
    sizes = np.bincount(lab.ravel())[1:]
    px_um2 = 0.04458**2
    assert sizes.min() * px_um2 < 0.3  # sub-µm specks
    assert sizes.max() * px_um2 > 4.0  # voids of several µm
