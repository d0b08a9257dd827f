"""Synthetic SEM + EDS images of Ni/YSZ(/NiO) electrodes, with pixel-exact ground truth.

Every later stage (EDS-guided target labels, U-Net training, blockwise inference, statistics over an
oxidation series) is built and scored on this simulator, so it aims to be realistic *and* learnable:

* **Microstructure** (all lengths in µm, converted with ``pixel_size_um``): an additively weighted Voronoi
  tessellation of hard-core seeds gives faceted grains of ~1.5-4 µm (Ni grains larger than YSZ grains).
  Grains near the boundaries of a coarse (~6 µm) tessellation are YSZ, so the YSZ follows a connected
  network around agglomerates of Ni grains and pores. Pores fill some whole grains (mostly inside the
  agglomerates), open as gaps along part of the Ni|YSZ interfaces (Ni|Ni and YSZ|YSZ boundaries are
  sintered shut), sit at the rounded corners (triple junctions) and appear as sub-µm specks; the pore
  potential is smoothed before thresholding, which rounds the free surfaces while grain-grain facets stay
  straight. Porosity is drawn in [0.30, 0.36] at t = 0.
* **Oxidation**: NiO grows from the pore-exposed Ni surfaces inwards; the oxidised fraction of the Ni is
  ``X(t) = 0.9 (1 - exp(-t / 50 min))`` (0 at 0 min, ~0.82 at 120 min). The Ni → NiO volume expansion
  (×1.7) grows NiO outwards into the adjacent pores, and the NiO is riddled with small internal pores.
  For one seed the microstructure (grains, YSZ, initial pores) is the same at every time and the
  oxidation front only advances with time.
* **SEM image**: per-phase grey levels calibrated to one display-scaled real patch (pore 13±19,
  NiO 96±21, Ni 117±21, YSZ 146±26, mean±std in 8-bit grey levels); per-grain (channelling) contrast,
  fine high-frequency texture in YSZ, smooth Ni, porous NiO, bright rims at pore edges, faint dark YSZ
  grain boundaries, a Gaussian PSF, a brightness drift / depth gradient across large images and
  Poisson-Gaussian noise. Neighbouring phases overlap by about one standard deviation in grey level, so
  texture, shape and context decide (see :func:`realism_table`).
* **EDS maps** (Ni, O, Zr) at ``1 / eds_factor`` of the SEM resolution: element concentrations broadened
  by the interaction volume (Gaussian, σ 0.35-0.45 µm per element), integrated over ``f × f`` SEM pixels
  displaced by a random sub-pixel misregistration, Poisson counts (uint16).

**EDS geometry** (the invariant the labelling stage relies on): with ``f = eds_factor`` and
``(dy, dx) = meta["eds_shift_px"]`` (SEM px), EDS pixel ``(i, j)`` integrates the broadened signal over
SEM rows ``[i*f + dy, (i+1)*f + dy)`` and columns ``[j*f + dx, (j+1)*f + dx)``; an EDS map upsampled
by ``f`` therefore shows at ``(y, x)`` the material at SEM position ``(y + dy, x + dx)``, and
``scipy.ndimage.shift(eds_upsampled, (dy, dx))`` registers it to the SEM. EDS shape is
``(ceil(H/f), ceil(W/f))``.

Everything is deterministic for a given ``seed`` (independent random streams for the microstructure, the
oxidation, the SEM rendering and the EDS, so e.g. ``with_eds`` never changes the SEM image).
"""

from __future__ import annotations

import json
import math
import pathlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from semscale._version import __version__

__all__ = [
    "ELEMENTS",
    "NI",
    "NIO",
    "PHASES",
    "PORE",
    "REAL_PATCH",
    "YSZ",
    "SynthImage",
    "context_codes",
    "oxidised_fraction",
    "realism_table",
    "simulate",
    "write_campaign",
]

PORE, NIO, NI, YSZ = 0, 1, 2, 3
PHASES: tuple[str, ...] = ("pore", "NiO", "Ni", "YSZ")
"""Phase names; the label value is the index."""
ELEMENTS: tuple[str, ...] = ("Ni", "O", "Zr")
"""EDS elements simulated."""

REAL_PATCH: dict[str, dict[str, float]] = {
    "pore": {"mean": 13.0, "std": 19.0, "fraction": 0.18},
    "NiO": {"mean": 96.0, "std": 21.0, "fraction": 0.30},
    "Ni": {"mean": 117.0, "std": 21.0, "fraction": 0.11},
    "YSZ": {"mean": 146.0, "std": 26.0, "fraction": 0.41},
}
"""Grey levels (8-bit, display-scaled) and area fractions measured on one real patch (256² px,
11.4 µm) of an oxidised Ni/YSZ electrode: the calibration target of the SEM renderer."""


# --------------------------------------------------------------------------------------------------
# Parameters (lengths in µm unless the name ends in _px; grey levels in 8-bit units)
# --------------------------------------------------------------------------------------------------
# Microstructure
_GRAIN_D_UM = 2.0  # mean equivalent diameter of a Voronoi cell before weighting
_HARDCORE = 0.5  # minimal seed spacing, in units of the mean cell diameter
# Additive Voronoi weights (× cell diameter): Ni grains grow larger than YSZ grains.
_WEIGHT = {PORE: 0.2, NI: 0.32, YSZ: 0.12}
_CELL_FRACTIONS = {"pore": 0.22, "ni_of_solid": 0.33}  # by cell count
_AGGLOMERATE_UM = 6.0  # mean size of the Ni(+pore) agglomerates enclosed by the YSZ network
_MIXING = 0.15  # noise on the grain -> agglomerate / network assignment (in grain diameters)
_OPEN_DIFF_UM = 0.2  # pore gaps along Ni|YSZ boundaries: width scale ...
_OPEN_DIFF_LEVEL = 0.5  # ... and opening level (a gap opens where the width field exceeds ~this)
_OPEN_SAME_UM = 0.25  # Ni|Ni, YSZ|YSZ boundaries: sintered shut unless the width field is very high
_POROSITY_RANGE = (0.30, 0.36)  # porosity at t = 0, drawn per image
_ROUNDING_UM = 0.15  # σ of the smoothing of the pore potential: rounds the free surfaces
_CORNER_UM = 0.4  # radius of the rounded grain corners
# Oxidation
_NIO_EXPANSION = 1.7  # NiO / Ni volume ratio (Pilling-Bedworth)
_NIO_INTERNAL_POROSITY = (0.08, 0.06)  # a + b·X: fraction of the NiO that is internal pores
_NIO_PORE_UM = 0.075  # correlation σ of the field whose peaks are NiO internal pores
_OX_TAU_MIN = 50.0  # X(t) = _OX_MAX (1 - exp(-t / _OX_TAU_MIN))
_OX_MAX = 0.9

# SEM rendering (grey levels in 8-bit units, before drift and noise)
_BASE = {PORE: 0.0, NIO: 97.5, NI: 117.5, YSZ: 147.2}
_GRAIN_SD = {NIO: 9.0, NI: 13.0, YSZ: 8.0}
_TEXTURE_SIGMA_PX = (1.0, 2.5, 12.0)  # static specimen texture fields: fine, medium, smooth
_TEXTURE_AMP = {YSZ: (25.0, 8.0, 0.0), NIO: (19.0, 5.0, 0.0), NI: (0.0, 0.0, 12.0)}  # grey levels
_RIM = {NIO: 12.0, NI: 40.0, YSZ: 34.0}  # bright rim of solids at pore edges (grey levels)
_RIM_SIGMA_PX = 1.5
_WALL = 20.0  # visible pore side-walls just inside the pore edge
_WALL_SIGMA_PX = 2.0
_GLOW = 14.0  # sub-surface material seen at the bottom of some pores
_YSZ_GB = 18.0  # dark YSZ|YSZ grain-boundary lines (grooves)
_YSZ_GB_WIDTH_PX = 0.8
_PSF_SIGMA_PX = 0.8
_NOISE_GAIN = 1.0  # Poisson: variance = gain × signal (grey levels)
_NOISE_READ = 2.5  # Gaussian read noise, grey levels
_DRIFT = {"gain_sd": 0.03, "gain_corr_um": 25.0, "ramp_per_um": 6.5e-4, "offset_sd": 2.0}

_EDS_CONC = {  # element concentration per phase (pore, NiO, Ni, YSZ), atomic-fraction like
    "Ni": (0.0, 0.5, 1.0, 0.0),
    "O": (0.0, 0.5, 0.0, 0.62),
    "Zr": (0.0, 0.0, 0.0, 0.3),
}
_EDS_SIGMA_UM = {"Ni": 0.45, "O": 0.35, "Zr": 0.40}  # interaction-volume broadening
_EDS_RATE = {"Ni": 40.0, "O": 45.0, "Zr": 90.0}  # counts per EDS px at concentration 1
_EDS_BACKGROUND = {"Ni": 1.5, "O": 1.0, "Zr": 1.5}  # counts per EDS px (bremsstrahlung)
_EDS_MAX_SHIFT = 0.6  # max |misregistration| per axis, in EDS px


@dataclass(frozen=True)
class SynthImage:
    """One simulated SEM image with its truth and (optionally) EDS maps.

    Attributes:
        sem: (H, W) uint8 (or uint16 when ``bit_depth=16``) SEM image.
        truth: (H, W) uint8 phase labels, 0 = pore, 1 = NiO, 2 = Ni, 3 = YSZ.
        eds: ``{"Ni", "O", "Zr"}`` -> (ceil(H/f), ceil(W/f)) uint16 X-ray counts; empty if
            simulated without EDS.
        eds_factor: ``f``, SEM pixels per EDS pixel along each axis.
        meta: simulation parameters and measured facts; see :func:`simulate`.
    """

    sem: np.ndarray
    truth: np.ndarray
    eds: dict[str, np.ndarray] = field(default_factory=dict)
    eds_factor: int = 4
    meta: dict[str, Any] = field(default_factory=dict)


def oxidised_fraction(oxidation_min: float) -> float:
    """Fraction of the initial Ni area turned into NiO after ``oxidation_min`` minutes."""
    return float(_OX_MAX * (1.0 - math.exp(-max(float(oxidation_min), 0.0) / _OX_TAU_MIN)))


# --------------------------------------------------------------------------------------------------
# Random fields
# --------------------------------------------------------------------------------------------------
def _upsample_linear(
    lo: np.ndarray, shape: tuple[int, int], step: float, offset: float = 0.0
) -> np.ndarray:
    """Bilinear interpolation onto a (H, W) grid of ``lo``, whose sample k lies at px ``k*step+offset``."""
    out = lo
    for axis, n in enumerate(shape):
        pos = np.maximum((np.arange(n, dtype=np.float32) - offset) / step, 0.0)
        i0 = np.minimum(pos.astype(np.int64), lo.shape[axis] - 2)
        fr = (pos - i0).astype(np.float32)
        a = np.take(out, i0, axis=axis)
        b = np.take(out, i0 + 1, axis=axis)
        fr = fr[:, None] if axis == 0 else fr[None, :]
        out = a + (b - a) * fr
    return out.astype(np.float32, copy=False)


def _white_noise_std(sigma: float) -> float:
    """Std of unit white noise after ``scipy.ndimage.gaussian_filter`` with ``sigma`` (2-D, exact)."""
    r = int(4.0 * sigma + 0.5)
    x = np.arange(-r, r + 1, dtype=float)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    return float((k**2).sum())


def _field(shape: tuple[int, int], sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian random field, zero mean, unit variance, correlation σ ``sigma_px`` (float32).

    Normalised analytically (not by the sample std), so a field's amplitude does not depend on the
    image size.
    """
    if sigma_px >= 6.0:  # smooth: simulate on a coarse grid and interpolate (much faster)
        step = sigma_px / 3.0
        margin = 13
        lo_shape = (int(shape[0] / step) + 2 + 2 * margin, int(shape[1] / step) + 2 + 2 * margin)
        lo = rng.standard_normal(lo_shape, dtype=np.float32)
        lo = ndi.gaussian_filter(lo, 3.0)[margin:-margin, margin:-margin]
        lo /= np.float32(_white_noise_std(3.0))
        return _upsample_linear(lo, shape, step)
    f = rng.standard_normal(shape, dtype=np.float32)
    if sigma_px > 0:
        f = ndi.gaussian_filter(f, sigma_px, mode="wrap")
        f /= np.float32(_white_noise_std(sigma_px))
    return f


def _distance_to(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance (px, float32) to the nearest True pixel, computed on a 2× coarser grid.

    The mask is max-pooled over 2 × 2 blocks (thin features survive), so distances are accurate to about
    one pixel; used only where the result is modulated or smoothed further, for speed.
    """
    h, w = mask.shape
    m = np.pad(mask, ((0, h % 2), (0, w % 2)))
    lo = m.reshape(m.shape[0] // 2, 2, m.shape[1] // 2, 2).any(axis=(1, 3))
    if not lo.any():
        return np.full(mask.shape, np.float32(np.hypot(h, w)))
    d_lo = ndi.distance_transform_edt(~lo).astype(np.float32) * np.float32(2.0)
    d = _upsample_linear(np.pad(d_lo, ((0, 1), (0, 1)), mode="edge"), mask.shape, 2.0, 0.5)
    d[mask] = 0.0
    return d


def _quantile(values: np.ndarray, q: float) -> float:
    """The ``q`` quantile of ``values`` by partition (q in [0, 1])."""
    v = values.ravel()
    if v.size == 0:
        return 0.0
    k = min(max(round(q * (v.size - 1)), 0), v.size - 1)
    return float(np.partition(v, k)[k])


# --------------------------------------------------------------------------------------------------
# Microstructure
# --------------------------------------------------------------------------------------------------
@dataclass
class _Micro:
    cells: np.ndarray  # (h, w) int32 cell id (1..n)
    cell_phase: np.ndarray  # (n + 1,) uint8: PORE / NI / YSZ
    truth0: np.ndarray  # (h, w) uint8 phases at t = 0
    gb_same: np.ndarray  # (h, w) bool, pixels on a same-phase grain boundary (2 px wide)
    n_cells: int


def _seeds(shape: tuple[int, int], d_px: float, rng: np.random.Generator) -> np.ndarray:
    """Hard-core Poisson seeds, mean cell equivalent diameter ~``d_px`` (float positions)."""
    area = shape[0] * shape[1]
    n_target = area / (math.pi / 4.0 * d_px**2)
    n = max(int(rng.poisson(n_target * 1.35)), 4)
    pts = rng.random((n, 2)) * np.asarray(shape, dtype=float)
    pairs = cKDTree(pts).query_pairs(_HARDCORE * d_px, output_type="ndarray")
    keep = np.ones(n, dtype=bool)
    if len(pairs):
        keep[pairs[:, 1]] = False
    return pts[keep]


def _microstructure(shape: tuple[int, int], px_um: float, rng: np.random.Generator) -> _Micro:
    h, w = shape
    d_px = _GRAIN_D_UM / px_um
    pts = _seeds(shape, d_px, rng)
    n = len(pts)
    iy = np.minimum(pts[:, 0].astype(np.int64), h - 1)
    ix = np.minimum(pts[:, 1].astype(np.int64), w - 1)

    # Phase of each cell. Agglomerates: a coarse Voronoi tessellation (cells ~_AGGLOMERATE_UM); grains
    # whose seed lies near a coarse-cell boundary are YSZ, so the YSZ follows the (connected) network of
    # coarse boundaries and forms a connected matrix around Ni agglomerates. A little noise mixes the two.
    coarse = _seeds(shape, _AGGLOMERATE_UM / px_um, rng)
    k2 = min(2, len(coarse))
    dist, idx = cKDTree(coarse).query(pts, k=k2)
    if k2 == 2:
        gap = np.linalg.norm(coarse[idx[:, 1]] - coarse[idx[:, 0]], axis=1)
        d_net = (dist[:, 1] ** 2 - dist[:, 0] ** 2) / (2.0 * np.maximum(gap, 1e-9))
    else:
        d_net = dist.reshape(-1)
    score = d_net / d_px + _MIXING * rng.standard_normal(n)
    # Pore cells mostly inside the agglomerates (left by the NiO -> Ni reduction), rarely in the YSZ.
    p_pore = np.where(score > np.median(score), 2.0, 0.0) * _CELL_FRACTIONS["pore"]
    is_pore = rng.random(n) < p_pore
    solid_scores = score[~is_pore]
    q = 1.0 - _CELL_FRACTIONS["ni_of_solid"]
    thr = _quantile(solid_scores, q) if solid_scores.size else 0.0
    phase = np.where(score > thr, NI, YSZ).astype(np.uint8)
    phase[is_pore] = PORE
    cell_phase = np.concatenate([[YSZ], phase]).astype(np.uint8)  # index 0 unused

    # Additively weighted Voronoi: paint a disc of radius r_i at each seed (small discs on top), then
    # every pixel takes the label of the nearest disc pixel (one feature transform).
    wt = np.array([_WEIGHT[PORE], 0.0, _WEIGHT[NI], _WEIGHT[YSZ]])[phase]
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
    cells = discs[ind[0], ind[1]]
    del ind, discs
    pc = cell_phase[cells]

    # Grain boundaries, split into same-phase (sintered) and different-phase (open) ones.
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
    del diff_h, same_h, diff_v, same_v
    d_same = _distance_to(b_same)
    d_diff = _distance_to(b_diff)
    del b_diff

    # Rounded-faceted grains: the morphological opening of every cell by a disc of radius rho keeps the
    # straight facets and rounds the corners (radius rho); the cut-off corners become cusped pores at
    # the triple junctions, as between sintered particles.
    rho = _CORNER_UM / px_um
    eroded = np.minimum(d_same, d_diff) >= rho
    corner = _distance_to(eroded) > rho + 1.0  # + 1 px: facets (at exactly rho) stay solid
    corner &= d_diff < 2.0 * rho  # not inside sintered YSZ (or Ni) agglomerates
    del eroded

    # Pore potential (low = pore): gaps of varying width along the grain boundaries (mostly at Ni|YSZ
    # interfaces), rounded corners, whole pore cells and sub-µm specks.
    cap = 0.5 * d_px
    g = _field(shape, 0.35 * d_px, rng)
    open_diff = d_diff + _OPEN_DIFF_UM / px_um * (_OPEN_DIFF_LEVEL - g)
    open_same = d_same + _OPEN_SAME_UM / px_um * (3.0 - g)
    phi = np.minimum(np.minimum(open_diff, open_same), cap)
    del d_diff, open_diff, open_same, d_same
    phi[corner | (pc == PORE)] = -cap
    del corner
    speck = _field(shape, 0.06 / px_um, rng)
    phi -= np.where(speck > 2.9, 0.5 * cap, 0.0).astype(np.float32)
    del speck, g
    phi = ndi.gaussian_filter(phi, _ROUNDING_UM / px_um)
    porosity = float(rng.uniform(*_POROSITY_RANGE))
    pore = phi <= _quantile(phi, porosity)
    truth0 = np.where(pore, PORE, pc).astype(np.uint8)
    return _Micro(cells=cells, cell_phase=cell_phase, truth0=truth0, gb_same=b_same, n_cells=n)


def _oxidise(
    truth0: np.ndarray, x_ox: float, px_um: float, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, float]]:
    """Turn a fraction ``x_ox`` of the Ni into NiO growing from the pore surfaces."""
    shape = truth0.shape
    # Draw every field whatever x_ox so that fronts at different times are nested for one seed.
    g_front = _field(shape, 0.5 / px_um, rng)
    g_knob = _field(shape, 0.27 / px_um, rng)
    g_int = _field(shape, _NIO_PORE_UM / px_um, rng)
    truth = truth0.copy()
    info = {"oxidised_ni_fraction": 0.0, "nio_internal_pore_fraction": 0.0}
    ni = truth0 == NI
    n_ni = int(ni.sum())
    if x_ox <= 0 or n_ni == 0:
        return truth, info
    pore = truth0 == PORE
    d_pore = _distance_to(pore)
    s = d_pore * np.exp(-0.35 * g_front)
    thr = _quantile(s[ni], x_ox)
    inside = ni & (s <= thr)
    del s, d_pore
    a_in = int(inside.sum())
    # Volume expansion: the NiO grows outwards into the nearest pore space.
    d_ox = _distance_to(inside)
    score = d_ox * np.exp(0.3 * g_knob)
    cand = pore & (d_ox <= 3.0 * thr + 0.4 / px_um)
    n_out = min(round((_NIO_EXPANSION - 1.0) * a_in), int(cand.sum()))
    nio = inside.copy()
    if n_out > 0:
        thr_out = _quantile(score[cand], n_out / max(int(cand.sum()), 1))
        nio |= cand & (score <= thr_out)
    truth[nio] = NIO
    # NiO is porous: small internal pores.
    frac_int = _NIO_INTERNAL_POROSITY[0] + _NIO_INTERNAL_POROSITY[1] * x_ox
    thr_int = _quantile(g_int[nio], 1.0 - frac_int)
    truth[nio & (g_int > thr_int)] = PORE
    info["oxidised_ni_fraction"] = a_in / n_ni
    info["nio_internal_pore_fraction"] = frac_int
    return truth, info


# --------------------------------------------------------------------------------------------------
# SEM rendering
# --------------------------------------------------------------------------------------------------
def _lut(values: dict[int, float], default: float = 0.0) -> np.ndarray:
    """Per-phase look-up table (index = label) as float32."""
    return np.array([values.get(k, default) for k in range(4)], dtype=np.float32)


def _render_sem(
    truth: np.ndarray,
    micro: _Micro,
    px_um: float,
    origin: tuple[int, int],
    full_shape: tuple[int, int],
    rng: np.random.Generator,
) -> tuple[np.ndarray, dict[str, Any]]:
    """SEM signal with detector noise, in 8-bit grey levels (float32, not yet clipped).

    Every random field is drawn whatever phases are present, so the random stream (and the noise) does
    not depend on the oxidation time.
    """
    shape = truth.shape
    pore = truth == PORE
    img = _lut(_BASE)[truth]

    # Per-grain (channelling) contrast; NiO gets offsets of its own.
    off = rng.standard_normal((4, micro.n_cells + 1)).astype(np.float32)
    off *= _lut(_GRAIN_SD)[:, None]
    img += off[truth, micro.cells]
    del off

    # Static specimen texture: fine and medium fields (YSZ fine-grained, NiO porous), Ni nearly smooth.
    for k in range(len(_TEXTURE_SIGMA_PX)):
        tex = _field(shape, _TEXTURE_SIGMA_PX[k], rng)
        tex *= _lut({ph: amps[k] for ph, amps in _TEXTURE_AMP.items()})[truth]
        img += tex
    del tex

    # Dark YSZ|YSZ grain boundaries (thermal grooves).
    gb = ndi.gaussian_filter(micro.gb_same.astype(np.float32), _YSZ_GB_WIDTH_PX)
    gb *= truth == YSZ
    img -= np.float32(_YSZ_GB) * gb
    del gb

    # Edge effects: bright rims on solids at pore edges, visible side-walls inside the pores.
    pf = pore.astype(np.float32)
    near_pore = np.minimum(ndi.gaussian_filter(pf, _RIM_SIGMA_PX), 0.5) * 2.0
    near_pore *= 1.0 + 0.4 * _field(shape, 0.5 / px_um, rng)
    near_pore *= _lut(_RIM)[truth]
    img += near_pore
    near_solid = np.minimum(ndi.gaussian_filter(1.0 - pf, _WALL_SIGMA_PX), 0.5) * 2.0
    glow = np.maximum(_field(shape, 0.8 / px_um, rng), 0.0)
    img += pf * (np.float32(_WALL) * near_solid**2 + np.float32(_GLOW) * glow)
    del near_pore, near_solid, glow, pf

    # Optics: PSF, then brightness drift / depth gradient defined in full-image coordinates.
    img = ndi.gaussian_filter(img, _PSF_SIGMA_PX)
    gain = 1.0 + _DRIFT["gain_sd"] * _field(shape, _DRIFT["gain_corr_um"] / px_um, rng)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    yy = (np.arange(shape[0], dtype=np.float32) + origin[0] - full_shape[0] / 2.0) * px_um
    xx = (np.arange(shape[1], dtype=np.float32) + origin[1] - full_shape[1] / 2.0) * px_um
    gain += np.float32(_DRIFT["ramp_per_um"] * math.sin(angle)) * yy[:, None]
    gain += np.float32(_DRIFT["ramp_per_um"] * math.cos(angle)) * xx[None, :]
    offset = _DRIFT["offset_sd"] * rng.standard_normal()
    img *= gain
    img += np.float32(offset)
    del gain

    # Detector: Poisson-Gaussian noise.
    np.maximum(img, 0.0, out=img)
    noisy = rng.poisson(img / np.float32(_NOISE_GAIN)).astype(np.float32)
    noisy *= np.float32(_NOISE_GAIN)
    noisy += _NOISE_READ * rng.standard_normal(shape, dtype=np.float32)
    info = {"drift_angle_rad": angle, "drift_offset": float(offset)}
    return noisy, info


# --------------------------------------------------------------------------------------------------
# EDS
# --------------------------------------------------------------------------------------------------
def _render_eds(
    truth_pad: np.ndarray,
    pad: int,
    shape: tuple[int, int],
    f: int,
    shift: tuple[float, float],
    px_um: float,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Poisson EDS count maps; see the module docstring for the geometry.

    For speed the broadening runs on 2 × 2 block means when ``f`` and ``pad`` are even: the block
    integral over ``f × f`` SEM px equals the integral over ``f/2 × f/2`` block means, so the only
    approximation is a 2-px box pre-filter (variance 0.25 px² next to σ² ≈ 60-100 px²).
    """
    h, w = shape
    he, we = -(-h // f), -(-w // f)
    r = 2 if (f % 2 == 0 and pad % 2 == 0) else 1
    fr, padr = f // r, pad // r
    sy, sx = shift[0] / r, shift[1] / r
    iy, ix = math.floor(sy), math.floor(sx)
    fy, fx = np.float32(sy - iy), np.float32(sx - ix)
    r0, c0 = padr + iy, padr + ix
    maps: dict[str, np.ndarray] = {}
    for el in ELEMENTS:
        conc = np.asarray(_EDS_CONC[el], dtype=np.float32)[truth_pad]
        if r > 1:
            hh, ww = (conc.shape[0] // r) * r, (conc.shape[1] // r) * r
            conc = conc[:hh, :ww].reshape(hh // r, r, ww // r, r).mean(axis=(1, 3))
        b = ndi.gaussian_filter(conc, _EDS_SIGMA_UM[el] / px_um / r, mode="reflect")
        sub = b[r0 : r0 + he * fr + 1, c0 : c0 + we * fr + 1]
        sub = sub[:-1] + (sub[1:] - sub[:-1]) * fy
        sub = sub[:, :-1] + (sub[:, 1:] - sub[:, :-1]) * fx
        block = sub.reshape(he, fr, we, fr).mean(axis=(1, 3))
        lam = _EDS_BACKGROUND[el] + _EDS_RATE[el] * np.maximum(block, 0.0)
        maps[el] = np.minimum(rng.poisson(lam), 65535).astype(np.uint16)
    return maps


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------
def simulate(
    shape: tuple[int, int] = (1024, 1024),
    *,
    oxidation_min: float = 0.0,
    seed: int = 0,
    pixel_size_um: float = 0.04458,
    eds_factor: int = 4,
    with_eds: bool = True,
    bit_depth: int = 8,
) -> SynthImage:
    """Simulate one SEM image of a Ni/YSZ electrode after ``oxidation_min`` minutes of oxidation.

    Args:
        shape: (H, W) in SEM pixels, any size ≥ 16 px per axis.
        oxidation_min: oxidation time in minutes (≥ 0); the NiO fraction rises monotonically with it.
        seed: seed of ``numpy.random.default_rng``; the microstructure depends on the seed only (not on
            the time), so one seed at several times gives a consistent oxidation series.
        pixel_size_um: SEM pixel size in µm; all physical lengths scale with it.
        eds_factor: SEM pixels per EDS pixel along each axis (integer ≥ 1).
        with_eds: simulate the Ni, O and Zr maps.
        bit_depth: 8 (uint8) or 16 (uint16, the same image scaled by 257 without 8-bit rounding).

    Returns:
        A :class:`SynthImage`. ``meta`` keys: ``generator``, ``version``, ``seed``, ``shape``,
        ``oxidation_min``, ``pixel_size_um``, ``bit_depth``, ``classes``, ``fractions`` (area fraction
        per phase name), ``porosity``, ``oxidised_ni_fraction`` (measured), ``oxidised_ni_target``
        (``X(t)``), ``nio_internal_pore_fraction``, ``n_grains``, ``mean_grain_diameter_um``,
        ``eds_factor``, ``eds_shift_px`` ((dy, dx) in SEM px, see the module docstring),
        ``eds_sigma_um``, ``eds_rate_counts``, ``eds_background_counts``, ``eds_concentration``,
        ``psf_sigma_px``, ``noise`` and ``drift``.
    """
    h, w = _check_shape(shape)
    if not (isinstance(eds_factor, int | np.integer) and eds_factor >= 1):
        raise ValueError(f"Expected an integer >= 1 for `eds_factor`. Got {eds_factor!r}.")
    if bit_depth not in (8, 16):
        raise ValueError(f"Expected 8 or 16 for `bit_depth`. Got {bit_depth!r}.")
    if not (np.isfinite(oxidation_min) and oxidation_min >= 0):
        raise ValueError(
            f"Expected a time >= 0 (minutes) for `oxidation_min`. Got {oxidation_min!r}."
        )
    if not (np.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise ValueError(
            f"Expected a positive size in µm for `pixel_size_um`. Got {pixel_size_um!r}."
        )
    f = int(eds_factor)
    px = float(pixel_size_um)

    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(4)]
    rng_micro, rng_ox, rng_sem, rng_eds = streams

    eds_sigma_max = max(_EDS_SIGMA_UM.values()) / px
    pad = math.ceil(max(_GRAIN_D_UM / px, 4.0 * _PSF_SIGMA_PX + 6, 2 * f + 4, 2 * eds_sigma_max))
    pad += pad % 2
    pshape = (h + 2 * pad, w + 2 * pad)

    micro = _microstructure(pshape, px, rng_micro)
    x_ox = oxidised_fraction(oxidation_min)
    truth_pad, ox_info = _oxidise(micro.truth0, x_ox, px, rng_ox)
    sem_f, sem_info = _render_sem(truth_pad, micro, px, (-pad, -pad), (h, w), rng_sem)
    core = (slice(pad, pad + h), slice(pad, pad + w))
    truth = np.ascontiguousarray(truth_pad[core])
    sem_f = sem_f[core]
    if bit_depth == 8:
        sem = np.clip(np.rint(sem_f), 0, 255).astype(np.uint8)
    else:
        sem = np.clip(np.rint(sem_f * 257.0), 0, 65535).astype(np.uint16)

    shift_lim = _EDS_MAX_SHIFT * f
    shift = (
        float(rng_eds.uniform(-shift_lim, shift_lim)),
        float(rng_eds.uniform(-shift_lim, shift_lim)),
    )
    eds: dict[str, np.ndarray] = {}
    if with_eds:
        eds = _render_eds(truth_pad, pad, (h, w), f, shift, px, rng_eds)

    counts = np.bincount(truth.ravel(), minlength=4)[:4]
    fractions = {name: float(c) / truth.size for name, c in zip(PHASES, counts, strict=True)}
    ni0 = int((micro.truth0[core] == NI).sum())
    n_cells_core = int(np.count_nonzero(np.bincount(micro.cells[core].ravel())))
    meta: dict[str, Any] = {
        "generator": "semscale.synth",
        "version": __version__,
        "seed": int(seed),
        "shape": [h, w],
        "oxidation_min": float(oxidation_min),
        "pixel_size_um": px,
        "bit_depth": int(bit_depth),
        "classes": list(PHASES),
        "fractions": fractions,
        "porosity": fractions["pore"],
        "oxidised_ni_fraction": float(ox_info["oxidised_ni_fraction"]),
        "oxidised_ni_target": x_ox,
        "nio_internal_pore_fraction": float(ox_info["nio_internal_pore_fraction"]),
        "initial_ni_fraction": ni0 / truth.size,
        "n_grains": int(n_cells_core),
        "mean_grain_diameter_um": float(
            2.0 * math.sqrt(h * w / max(n_cells_core, 1) / math.pi) * px
        ),
        "eds_factor": f,
        "eds_shift_px": [shift[0], shift[1]],
        "eds_sigma_um": dict(_EDS_SIGMA_UM),
        "eds_rate_counts": dict(_EDS_RATE),
        "eds_background_counts": dict(_EDS_BACKGROUND),
        "eds_concentration": {el: list(v) for el, v in _EDS_CONC.items()},
        "psf_sigma_px": _PSF_SIGMA_PX,
        "noise": {"poisson_gain": _NOISE_GAIN, "read_sd": _NOISE_READ},
        "drift": {**_DRIFT, **sem_info},
    }
    return SynthImage(sem=sem, truth=truth, eds=eds, eds_factor=f, meta=meta)


def add_to_store(store: Any, image_id: str, sim: SynthImage, *, chunks: int = 1024,
                 eds_chunks: int = 512, **image_attrs: Any) -> None:
    """Put one simulated image into a campaign store as ingest would: the SEM (normalisation from its
    full histogram, pyramid), ``labels/truth`` and, if simulated, the EDS maps (attrs record the simulated
    misregistration). ``image_attrs`` (e.g. ``role``, ``sample``) go to the image's attrs with its
    ``oxidation_min``."""
    from semscale.kernels.norm import histogram, norm_from_histogram

    arr = store.create_image(image_id, shape=sim.sem.shape, dtype=sim.sem.dtype, chunks=chunks)
    arr[:] = sim.sem
    nbins = int(np.iinfo(sim.sem.dtype).max) + 1
    store.finish_image(image_id, norm=norm_from_histogram(histogram(sim.sem, nbins=nbins)),
                       oxidation_min=sim.meta.get("oxidation_min"), **image_attrs)
    store.write_labels(image_id, "truth", sim.truth)
    if sim.eds:
        store.write_eds(image_id, sim.eds, factor=sim.eds_factor, chunks=eds_chunks,
                        attrs={"simulated_shift_px": list(sim.meta["eds_shift_px"])})


def _check_shape(shape: Sequence[int]) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"Expected (H, W) for `shape`. Got {shape!r}.") from None
    if h < 16 or w < 16:
        raise ValueError(f"Expected at least 16 px per axis for `shape`. Got {shape!r}.")
    return h, w


def _as_grey8(sem: np.ndarray) -> np.ndarray:
    """SEM image as integer 8-bit grey levels (16-bit images are divided by 257)."""
    if sem.dtype == np.uint8:
        return sem
    return np.clip(np.rint(sem.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)


def _bayes_accuracy(codes: np.ndarray, labels: np.ndarray, n_codes: int, n_classes: int) -> float:
    """Accuracy of argmax_k P(k | code) evaluated on the same pixels (an upper bound)."""
    if codes.size == 0:
        return float("nan")
    hist = np.bincount(codes.astype(np.int64) * n_classes + labels, minlength=n_codes * n_classes)
    hist = hist.reshape(n_codes, n_classes)
    return float(hist.max(axis=1).sum() / codes.size)


def _local_features(sem8: np.ndarray, sigma: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    x = sem8.astype(np.float32)
    m = ndi.gaussian_filter(x, sigma)
    v = ndi.gaussian_filter(x * x, sigma) - m * m
    return m, np.sqrt(np.maximum(v, 0.0))


def context_codes(sem: np.ndarray, *, sigma_px: float = 2.0, bins: int = 32) -> np.ndarray:
    """Quantised (local mean, local std) code per pixel, ``bins²`` codes (Gaussian window ``sigma_px``).

    A deliberately simple context feature: per-pixel Bayes on it shows how much texture / neighbourhood
    adds over the grey level alone.
    """
    m, s = _local_features(_as_grey8(sem), sigma_px)
    qm = np.clip((m * (bins / 256.0)).astype(np.int64), 0, bins - 1)
    qs = np.clip((s * (bins / 64.0)).astype(np.int64), 0, bins - 1)
    return qm * bins + qs


def realism_table(images: Sequence[SynthImage]) -> dict[str, Any]:
    """Grey-level statistics of simulated images next to the real patch (:data:`REAL_PATCH`).

    Pixels of all images are pooled. Grey levels are 8-bit (16-bit images divided by 257).

    Returns:
        ``{"phases": {name: {"mean", "std", "fraction", "real_mean", "real_std", "real_fraction"}},
        "best_grey_level_accuracy", "best_grey_level_accuracy_ni_ysz",
        "context_feature_accuracy", "context_feature_accuracy_ni_ysz", "n_images", "n_pixels"}``.
        ``best_grey_level_accuracy`` is the accuracy of the Bayes-optimal per-pixel grey-level classifier
        (argmax over classes of the joint histogram grey value × truth, scored on the same pixels: an
        upper bound for any per-pixel grey classifier); ``*_ni_ysz`` restricts it to Ni and YSZ pixels
        (two classes). ``context_feature_accuracy`` does the same with :func:`context_codes` (local mean
        and std in a σ = 2 px window) instead of the grey level.
    """
    if not images:
        raise ValueError("Expected at least one SynthImage for `images`. Got none.")
    greys, truths, ctx = [], [], []
    for im in images:
        greys.append(_as_grey8(im.sem).ravel())
        truths.append(im.truth.ravel())
        ctx.append(context_codes(im.sem).ravel())
    g = np.concatenate(greys).astype(np.int64)
    t = np.concatenate(truths).astype(np.int64)
    c = np.concatenate(ctx)
    phases: dict[str, dict[str, float]] = {}
    for k, name in enumerate(PHASES):
        sel = t == k
        vals = g[sel].astype(np.float64)
        phases[name] = {
            "mean": float(vals.mean()) if vals.size else float("nan"),
            "std": float(vals.std()) if vals.size else float("nan"),
            "fraction": float(sel.mean()),
            "real_mean": REAL_PATCH[name]["mean"],
            "real_std": REAL_PATCH[name]["std"],
            "real_fraction": REAL_PATCH[name]["fraction"],
        }
    two = (t == NI) | (t == YSZ)
    return {
        "phases": phases,
        "best_grey_level_accuracy": _bayes_accuracy(g, t, 256, 4),
        "best_grey_level_accuracy_ni_ysz": _bayes_accuracy(g[two], t[two], 256, 4),
        "context_feature_accuracy": _bayes_accuracy(c, t, 32 * 32, 4),
        "context_feature_accuracy_ni_ysz": _bayes_accuracy(c[two], t[two], 32 * 32, 4),
        "n_images": len(images),
        "n_pixels": int(t.size),
    }


# --------------------------------------------------------------------------------------------------
# Campaign writer
# --------------------------------------------------------------------------------------------------
_ID_BAD = re.compile(r"[^A-Za-z0-9_.-]")


def _time_token(t: float) -> str:
    return f"{int(t):03d}" if float(t).is_integer() else f"{t:g}".replace(".", "p")


def _eds_indices(n_images: int, n_eds: int | None) -> set[int]:
    if n_eds is None:
        n_eds = 1 if n_images == 1 else max(1, min(n_images - 1, (n_images + 1) // 2))
    if not 0 <= n_eds <= n_images:
        raise ValueError(f"Expected 0 <= `n_eds` <= n_images ({n_images}). Got {n_eds!r}.")
    if n_eds == 0:
        return set()
    if n_eds == 1:
        return {0}
    pos = np.floor(np.linspace(0, n_images - 1, n_eds) + 0.5).astype(int)
    return {int(p) for p in pos}


def write_campaign(
    out_dir: str | pathlib.Path,
    *,
    n_images: int = 3,
    shape: tuple[int, int] = (1024, 1024),
    times: Sequence[float] = (0, 2, 5, 10, 20, 30, 120),
    seed: int = 0,
    n_eds: int | None = None,
    name: str = "synthetic-oxidation",
    samples: Sequence[str] = ("A",),
    pixel_size_um: float = 0.04458,
    eds_factor: int = 4,
    bit_depth: int = 8,
) -> pathlib.Path:
    """Simulate an oxidation campaign and write it as TIFFs plus a ``campaign.yaml``.

    Image ``k`` has time ``times[k % len(times)]`` and sample ``samples[(k // len(times)) %
    len(samples)]``, id ``t{time:03d}_{sample.lower()}`` (``_2``, ``_3``... appended when repeated) and
    its own seed derived from ``seed`` and ``k``. ``n_eds`` images (default: about half, at least one,
    and at least one without EDS when ``n_images >= 2``), spread evenly over the list (first and last
    included), get EDS maps and ``role: train``; the others ``role: predict``.

    Files, under ``out_dir``: ``data/<id>_sem.tif``, ``data/<id>_{Ni,O,Zr}.tif`` (EDS images only),
    ``data/<id>_truth.tif`` (every image), ``data/<id>_meta.json`` (the :func:`simulate` metadata,
    incl. the true ``eds_shift_px``) and ``campaign.yaml`` (paths relative to it; store
    ``campaign.zarr``).

    Returns:
        Path of the written ``campaign.yaml``.
    """
    import tifffile
    import yaml

    if n_images < 1:
        raise ValueError(f"Expected n_images >= 1 for `n_images`. Got {n_images!r}.")
    if not times:
        raise ValueError("Expected at least one time for `times`. Got none.")
    if not samples:
        raise ValueError("Expected at least one sample name for `samples`. Got none.")
    out = pathlib.Path(out_dir)
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    with_eds = _eds_indices(n_images, n_eds)

    entries: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for k in range(n_images):
        t = float(times[k % len(times)])
        sample = str(samples[(k // len(times)) % len(samples)])
        base = f"t{_time_token(t)}_{_ID_BAD.sub('-', sample.lower())}"
        seen[base] = seen.get(base, 0) + 1
        image_id = base if seen[base] == 1 else f"{base}_{seen[base]}"
        image_seed = int(np.random.SeedSequence([int(seed), k]).generate_state(1)[0])
        im = simulate(
            shape,
            oxidation_min=t,
            seed=image_seed,
            pixel_size_um=pixel_size_um,
            eds_factor=eds_factor,
            with_eds=k in with_eds,
            bit_depth=bit_depth,
        )
        rel = {"sem": f"data/{image_id}_sem.tif", "truth": f"data/{image_id}_truth.tif"}
        tifffile.imwrite(out / rel["sem"], im.sem, photometric="minisblack")
        tifffile.imwrite(out / rel["truth"], im.truth, photometric="minisblack")
        eds_rel = {}
        for el, arr in im.eds.items():
            eds_rel[el] = f"data/{image_id}_{el}.tif"
            tifffile.imwrite(out / eds_rel[el], arr, photometric="minisblack")
        meta = {**im.meta, "id": image_id, "sample": sample, "campaign_seed": int(seed), "index": k}
        (data / f"{image_id}_meta.json").write_text(json.dumps(meta, indent=1))
        entry: dict[str, Any] = {
            "id": image_id,
            "sem": rel["sem"],
            "sample": sample,
            "oxidation_min": int(t) if t.is_integer() else t,
        }
        if eds_rel:
            entry["eds"] = eds_rel
        entry["truth"] = rel["truth"]
        entry["role"] = "train" if eds_rel else "predict"
        entries.append(entry)

    config = {
        "name": name,
        "store": "campaign.zarr",
        "pixel_size_um": float(pixel_size_um),
        "classes": list(PHASES),
        "images": entries,
    }
    path = out / "campaign.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
