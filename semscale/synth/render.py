"""SEM and EDS rendering of a labelled microstructure.

Every random field is drawn whatever phases are present, so the random stream (and the noise) does not
depend on the oxidation time. See :mod:`semscale.synth` for the EDS geometry.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from semscale.synth.fields import gaussian_field
from semscale.synth.microstructure import Micro
from semscale.synth.params import ELEMENTS, PORE, YSZ, SimParams

__all__ = ["render_eds", "render_sem"]


def _lut(values: tuple[float, ...]) -> np.ndarray:
    """Per-phase look-up table (index = label) as float32."""
    return np.asarray(values, dtype=np.float32)


def render_sem(
    truth: np.ndarray,
    micro: Micro,
    *,
    px_um: float,
    origin: tuple[int, int],
    full_shape: tuple[int, int],
    rng: np.random.Generator,
    params: SimParams,
) -> tuple[np.ndarray, dict[str, Any]]:
    """SEM signal with detector noise, in 8-bit grey levels (float32, not yet clipped).

    ``origin`` is the position (px) of ``truth[0, 0]`` in the full image of shape ``full_shape``, the
    frame in which the brightness drift is defined. Returns the image and
    ``{"drift_angle_rad", "drift_offset"}``.
    """
    p = params
    img = _specimen(truth, micro, px_um, rng, p)
    img = ndi.gaussian_filter(img, p.psf_sigma_px)
    angle, offset = _drift(img, px_um, origin, full_shape, rng, p)
    noisy = _detector(img, rng, p)
    return noisy, {"drift_angle_rad": angle, "drift_offset": float(offset)}


def _specimen(
    truth: np.ndarray, micro: Micro, px_um: float, rng: np.random.Generator, p: SimParams
) -> np.ndarray:
    """The noiseless signal of the specimen before the optics (float32 grey levels)."""
    shape = truth.shape
    img = _lut(p.base)[truth]

    # Per-grain (channelling) contrast; NiO gets offsets of its own.
    off = rng.standard_normal((4, micro.n_cells + 1)).astype(np.float32)
    off *= _lut(p.grain_sd)[:, None]
    img += off[truth, micro.cells]
    del off

    # Static specimen texture: fine and medium fields (YSZ fine-grained, NiO porous), Ni nearly smooth.
    for k in range(len(p.texture_sigma_px)):
        tex = gaussian_field(shape, p.texture_sigma_px[k], rng)
        tex *= _lut(tuple(amps[k] for amps in p.texture_amp))[truth]
        img += tex
    del tex

    # Dark YSZ|YSZ grain boundaries (thermal grooves).
    gb = ndi.gaussian_filter(micro.gb_same.astype(np.float32), p.ysz_gb_width_px)
    gb *= truth == YSZ
    img -= np.float32(p.ysz_gb) * gb
    del gb
    _edges(img, truth == PORE, truth, px_um, rng, p)
    return img


def _edges(
    img: np.ndarray, pore: np.ndarray, truth: np.ndarray, px_um: float, rng: np.random.Generator,
    p: SimParams,
) -> None:
    """Edge effects, added to ``img`` in place: bright rims on solids at pore edges, visible side-walls
    and sub-surface glow inside the pores."""
    shape = img.shape
    pf = pore.astype(np.float32)
    near_pore = np.minimum(ndi.gaussian_filter(pf, p.rim_sigma_px), 0.5) * 2.0
    near_pore *= 1.0 + p.rim_mod_amp * gaussian_field(shape, p.rim_mod_um / px_um, rng)
    near_pore *= _lut(p.rim)[truth]
    img += near_pore
    del near_pore
    near_solid = np.minimum(ndi.gaussian_filter(1.0 - pf, p.wall_sigma_px), 0.5) * 2.0
    glow = np.maximum(gaussian_field(shape, p.glow_um / px_um, rng), 0.0)
    img += pf * (np.float32(p.wall) * near_solid**2 + np.float32(p.glow) * glow)


def _drift(
    img: np.ndarray, px_um: float, origin: tuple[int, int], full_shape: tuple[int, int],
    rng: np.random.Generator, p: SimParams,
) -> tuple[float, float]:
    """Brightness drift / depth gradient defined in full-image coordinates, applied to ``img`` in place.

    Returns the ramp angle (rad) and the brightness offset (grey levels)."""
    shape = img.shape
    gain = 1.0 + p.drift_gain_sd * gaussian_field(shape, p.drift_gain_corr_um / px_um, rng)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    yy = (np.arange(shape[0], dtype=np.float32) + origin[0] - full_shape[0] / 2.0) * px_um
    xx = (np.arange(shape[1], dtype=np.float32) + origin[1] - full_shape[1] / 2.0) * px_um
    gain += np.float32(p.drift_ramp_per_um * math.sin(angle)) * yy[:, None]
    gain += np.float32(p.drift_ramp_per_um * math.cos(angle)) * xx[None, :]
    offset = p.drift_offset_sd * rng.standard_normal()
    img *= gain
    img += np.float32(offset)
    return float(angle), float(offset)


def _detector(img: np.ndarray, rng: np.random.Generator, p: SimParams) -> np.ndarray:
    """Poisson-Gaussian detector noise (``img`` is clipped at 0 in place)."""
    np.maximum(img, 0.0, out=img)
    noisy = rng.poisson(img / np.float32(p.noise_gain)).astype(np.float32)
    noisy *= np.float32(p.noise_gain)
    noisy += p.noise_read * rng.standard_normal(img.shape, dtype=np.float32)
    return noisy


def render_eds(
    truth_pad: np.ndarray,
    *,
    pad: int,
    shape: tuple[int, int],
    factor: int,
    shift: tuple[float, float],
    px_um: float,
    rng: np.random.Generator,
    params: SimParams,
) -> dict[str, np.ndarray]:
    """Poisson EDS count maps (uint16) of the ``shape`` core of ``truth_pad`` (``pad`` px each side),
    ``factor`` (``f``) SEM px per EDS px, misregistered by ``shift`` (dy, dx) SEM px.

    See the :mod:`semscale.synth` docstring for the geometry. For speed the broadening runs on 2 × 2
    block means when ``f`` and ``pad`` are even: the block integral over ``f × f`` SEM px equals the
    integral over ``f/2 × f/2`` block means, so the only approximation is a 2-px box pre-filter
    (variance 0.25 px² next to σ² ≈ 60-100 px²).
    """
    p, f = params, factor
    h, w = shape
    he, we = -(-h // f), -(-w // f)
    r = 2 if (f % 2 == 0 and pad % 2 == 0) else 1
    fr, padr = f // r, pad // r
    sy, sx = shift[0] / r, shift[1] / r
    iy, ix = math.floor(sy), math.floor(sx)
    fy, fx = np.float32(sy - iy), np.float32(sx - ix)
    r0, c0 = padr + iy, padr + ix
    maps: dict[str, np.ndarray] = {}
    for e, el in enumerate(ELEMENTS):
        conc = np.asarray(p.eds_conc[e], dtype=np.float32)[truth_pad]
        if r > 1:
            hh, ww = (conc.shape[0] // r) * r, (conc.shape[1] // r) * r
            conc = conc[:hh, :ww].reshape(hh // r, r, ww // r, r).mean(axis=(1, 3))
        b = ndi.gaussian_filter(conc, p.eds_sigma_um[e] / px_um / r, mode="reflect")
        sub = b[r0 : r0 + he * fr + 1, c0 : c0 + we * fr + 1]
        sub = sub[:-1] + (sub[1:] - sub[:-1]) * fy
        sub = sub[:, :-1] + (sub[:, 1:] - sub[:, :-1]) * fx
        block = sub.reshape(he, fr, we, fr).mean(axis=(1, 3))
        lam = p.eds_background[e] + p.eds_rate[e] * np.maximum(block, 0.0)
        maps[el] = np.minimum(rng.poisson(lam), 65535).astype(np.uint16)
    return maps
