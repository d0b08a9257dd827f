"""The electrode microstructure at t = 0 (grains, YSZ network, pores) and its oxidation into NiO.

Lengths in µm are converted with ``px_um`` (µm per pixel). Every function draws from the generator it
is given in a fixed order, so one seed gives one microstructure; the draws do not depend on the
oxidation time, so the fronts of one seed at several times are nested.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from semscale.synth.fields import distance_to, gaussian_field, quantile
from semscale.synth.params import NI, NIO, PORE, YSZ, SimParams

__all__ = ["Micro", "microstructure", "oxidise", "seeds"]


@dataclass(frozen=True)
class Micro:
    """A microstructure at t = 0 and what the renderer needs of it."""

    cells: np.ndarray  # (h, w) int32 cell id (1..n)
    cell_phase: np.ndarray  # (n + 1,) uint8: PORE / NI / YSZ
    truth0: np.ndarray  # (h, w) uint8 phases at t = 0
    gb_same: np.ndarray  # (h, w) bool, pixels on a same-phase grain boundary (2 px wide)
    n_cells: int


def seeds(
    shape: tuple[int, int], *, d_px: float, hardcore: float, rng: np.random.Generator
) -> np.ndarray:
    """Hard-core Poisson seeds, mean cell equivalent diameter ~``d_px`` (float positions, (n, 2)).

    ``hardcore`` is the minimal spacing in units of ``d_px``.
    """
    area = shape[0] * shape[1]
    n_target = area / (math.pi / 4.0 * d_px**2)
    n = max(int(rng.poisson(n_target * 1.35)), 4)
    pts = rng.random((n, 2)) * np.asarray(shape, dtype=float)
    pairs = cKDTree(pts).query_pairs(hardcore * d_px, output_type="ndarray")
    keep = np.ones(n, dtype=bool)
    if len(pairs):
        keep[pairs[:, 1]] = False
    return pts[keep]


def microstructure(
    shape: tuple[int, int], *, px_um: float, rng: np.random.Generator, params: SimParams
) -> Micro:
    """Grains (additively weighted Voronoi), YSZ network around Ni agglomerates, and pores."""
    d_px = params.grain_d_um / px_um
    pts = seeds(shape, d_px=d_px, hardcore=params.hardcore, rng=rng)
    phase = _cell_phases(shape, pts, d_px, px_um, rng, params)
    cell_phase = np.concatenate([[YSZ], phase]).astype(np.uint8)  # index 0 unused
    cells = _weighted_voronoi(shape, pts, phase, d_px, rng, params)
    pc = cell_phase[cells]
    b_same, b_diff = _grain_boundaries(cells, pc)
    d_same = distance_to(b_same)
    d_diff = distance_to(b_diff)
    del b_diff
    corner = _corners(d_same, d_diff, params.corner_um / px_um)
    phi = _pore_potential(d_same, d_diff, corner | (pc == PORE), d_px, px_um, rng, params)
    del d_same, d_diff, corner
    porosity = float(rng.uniform(*params.porosity_range))
    pore = phi <= quantile(phi, porosity)
    truth0 = np.where(pore, PORE, pc).astype(np.uint8)
    return Micro(cells=cells, cell_phase=cell_phase, truth0=truth0, gb_same=b_same, n_cells=len(pts))


def _cell_phases(
    shape: tuple[int, int], pts: np.ndarray, d_px: float, px_um: float, rng: np.random.Generator,
    p: SimParams,
) -> np.ndarray:
    """Phase (PORE / NI / YSZ, uint8) of each cell.

    Agglomerates: a coarse Voronoi tessellation (cells ~``agglomerate_um``); grains whose seed lies near
    a coarse-cell boundary are YSZ, so the YSZ follows the (connected) network of coarse boundaries and
    forms a connected matrix around Ni agglomerates. A little noise mixes the two.
    """
    n = len(pts)
    coarse = seeds(shape, d_px=p.agglomerate_um / px_um, hardcore=p.hardcore, rng=rng)
    k2 = min(2, len(coarse))
    dist, idx = cKDTree(coarse).query(pts, k=k2)
    if k2 == 2:
        gap = np.linalg.norm(coarse[idx[:, 1]] - coarse[idx[:, 0]], axis=1)
        d_net = (dist[:, 1] ** 2 - dist[:, 0] ** 2) / (2.0 * np.maximum(gap, 1e-9))
    else:
        d_net = dist.reshape(-1)
    score = d_net / d_px + p.mixing * rng.standard_normal(n)
    # Pore cells mostly inside the agglomerates (left by the NiO -> Ni reduction), rarely in the YSZ.
    p_pore = np.where(score > np.median(score), 2.0, 0.0) * p.pore_cell_fraction
    is_pore = rng.random(n) < p_pore
    solid_scores = score[~is_pore]
    q = 1.0 - p.ni_cell_fraction_of_solid
    thr = quantile(solid_scores, q) if solid_scores.size else 0.0
    phase = np.where(score > thr, NI, YSZ).astype(np.uint8)
    phase[is_pore] = PORE
    return phase


def _weighted_voronoi(
    shape: tuple[int, int], pts: np.ndarray, phase: np.ndarray, d_px: float,
    rng: np.random.Generator, p: SimParams,
) -> np.ndarray:
    """Cell id (1..n, int32) per pixel of an additively weighted Voronoi tessellation.

    Paints a disc of radius r_i at each seed (small discs on top), then every pixel takes the label of
    the nearest disc pixel (one feature transform).
    """
    h, w = shape
    n = len(pts)
    iy = np.minimum(pts[:, 0].astype(np.int64), h - 1)
    ix = np.minimum(pts[:, 1].astype(np.int64), w - 1)
    wt = np.asarray(p.weight, dtype=float)[phase]
    radius = np.maximum(wt * d_px * (0.5 + rng.random(n)), 1.0)
    discs = np.zeros(shape, dtype=np.int32)
    for k in np.argsort(-radius, kind="stable"):
        r = radius[k]
        y0, y1 = max(int(pts[k, 0] - r), 0), min(int(pts[k, 0] + r) + 2, h)
        x0, x1 = max(int(pts[k, 1] - r), 0), min(int(pts[k, 1] + r) + 2, w)
        yy = np.arange(y0, y1)[:, None] + 0.5 - pts[k, 0]
        xx = np.arange(x0, x1)[None, :] + 0.5 - pts[k, 1]
        win = discs[y0:y1, x0:x1]
        win[yy * yy + xx * xx <= r * r] = k + 1
        win[iy[k] - y0, ix[k] - x0] = k + 1
    ind = ndi.distance_transform_edt(discs == 0, return_indices=True, return_distances=False)
    return discs[ind[0], ind[1]]


def _grain_boundaries(cells: np.ndarray, pc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grain-boundary pixels (2 px wide), split into same-phase (sintered) and different-phase (open)."""
    shape = cells.shape
    diff_h = cells[:, 1:] != cells[:, :-1]
    same_h = diff_h & (pc[:, 1:] == pc[:, :-1])
    diff_v = cells[1:, :] != cells[:-1, :]
    same_v = diff_v & (pc[1:, :] == pc[:-1, :])
    b_same = np.zeros(shape, dtype=bool)
    b_diff = np.zeros(shape, dtype=bool)
    b_same[:, 1:] |= same_h
    b_same[:, :-1] |= same_h
    b_same[1:, :] |= same_v
    b_same[:-1, :] |= same_v
    diff_h &= ~same_h
    diff_v &= ~same_v
    b_diff[:, 1:] |= diff_h
    b_diff[:, :-1] |= diff_h
    b_diff[1:, :] |= diff_v
    b_diff[:-1, :] |= diff_v
    return b_same, b_diff


def _corners(d_same: np.ndarray, d_diff: np.ndarray, rho: float) -> np.ndarray:
    """Rounded-faceted grains: the pixels cut off by opening every cell with a disc of radius ``rho`` (px).

    The morphological opening keeps the straight facets and rounds the corners (radius rho); the cut-off
    corners become cusped pores at the triple junctions, as between sintered particles.
    """
    eroded = np.minimum(d_same, d_diff) >= rho
    corner = distance_to(eroded) > rho + 1.0  # + 1 px: facets (at exactly rho) stay solid
    corner &= d_diff < 2.0 * rho  # not inside sintered YSZ (or Ni) agglomerates
    return corner


def _pore_potential(
    d_same: np.ndarray, d_diff: np.ndarray, forced: np.ndarray, d_px: float, px_um: float,
    rng: np.random.Generator, p: SimParams,
) -> np.ndarray:
    """Pore potential (low = pore), smoothed: gaps of varying width along the grain boundaries (mostly at
    Ni|YSZ interfaces), the ``forced`` pixels (rounded corners, whole pore cells) and sub-µm specks."""
    shape = d_same.shape
    cap = 0.5 * d_px
    g = gaussian_field(shape, p.gap_corr * d_px, rng)
    open_diff = d_diff + p.open_diff_um / px_um * (p.open_diff_level - g)
    open_same = d_same + p.open_same_um / px_um * (p.open_same_level - g)
    phi = np.minimum(np.minimum(open_diff, open_same), cap)
    del open_diff, open_same, g
    phi[forced] = -cap
    speck = gaussian_field(shape, p.speck_um / px_um, rng)
    phi -= np.where(speck > p.speck_level, 0.5 * cap, 0.0).astype(np.float32)
    del speck
    return ndi.gaussian_filter(phi, p.rounding_um / px_um)


def oxidise(
    truth0: np.ndarray, *, x_ox: float, px_um: float, rng: np.random.Generator, params: SimParams
) -> tuple[np.ndarray, dict[str, float]]:
    """Turn a fraction ``x_ox`` of the Ni into NiO growing from the pore surfaces.

    Returns the new labels and ``{"oxidised_ni_fraction", "nio_internal_pore_fraction"}``.
    """
    p = params
    shape = truth0.shape
    # Draw every field whatever x_ox so that fronts at different times are nested for one seed.
    g_front = gaussian_field(shape, p.front_corr_um / px_um, rng)
    g_knob = gaussian_field(shape, p.knob_corr_um / px_um, rng)
    g_int = gaussian_field(shape, p.nio_pore_um / px_um, rng)
    truth = truth0.copy()
    info = {"oxidised_ni_fraction": 0.0, "nio_internal_pore_fraction": 0.0}
    ni = truth0 == NI
    n_ni = int(ni.sum())
    if x_ox <= 0 or n_ni == 0:
        return truth, info
    pore = truth0 == PORE
    s = distance_to(pore) * np.exp(-p.front_roughness * g_front)
    thr = quantile(s[ni], x_ox)
    inside = ni & (s <= thr)
    del s
    a_in = int(inside.sum())
    # Volume expansion: the NiO grows outwards into the nearest pore space.
    d_ox = distance_to(inside)
    score = d_ox * np.exp(p.knob_roughness * g_knob)
    cand = pore & (d_ox <= 3.0 * thr + p.expansion_reach_um / px_um)
    n_out = min(round((p.nio_expansion - 1.0) * a_in), int(cand.sum()))
    nio = inside.copy()
    if n_out > 0:
        thr_out = quantile(score[cand], n_out / max(int(cand.sum()), 1))
        nio |= cand & (score <= thr_out)
    truth[nio] = NIO
    # NiO is porous: small internal pores.
    frac_int = p.nio_internal_porosity[0] + p.nio_internal_porosity[1] * x_ox
    thr_int = quantile(g_int[nio], 1.0 - frac_int)
    truth[nio & (g_int > thr_int)] = PORE
    info["oxidised_ni_fraction"] = a_in / n_ni
    info["nio_internal_pore_fraction"] = frac_int
    return truth, info
