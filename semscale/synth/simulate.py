"""One simulated SEM image with its truth and EDS maps: :func:`simulate` and :class:`SynthImage`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from semscale._version import __version__
from semscale.errors import ConfigError
from semscale.synth.microstructure import Micro, microstructure, oxidise
from semscale.synth.params import (
    DEFAULT_BIT_DEPTH,
    DEFAULT_EDS_FACTOR,
    DEFAULT_PARAMS,
    DEFAULT_PIXEL_SIZE_UM,
    ELEMENTS,
    NI,
    PHASES,
    SimParams,
)
from semscale.synth.render import render_eds, render_sem

__all__ = ["SynthImage", "oxidised_fraction", "simulate"]


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
    eds_factor: int = DEFAULT_EDS_FACTOR
    meta: dict[str, Any] = field(default_factory=dict)


def oxidised_fraction(oxidation_min: float, *, params: SimParams = DEFAULT_PARAMS) -> float:
    """Fraction of the initial Ni area turned into NiO after ``oxidation_min`` minutes."""
    t = max(float(oxidation_min), 0.0)
    return float(params.ox_max * (1.0 - math.exp(-t / params.ox_tau_min)))


def simulate(
    shape: tuple[int, int] = (1024, 1024),
    *,
    oxidation_min: float = 0.0,
    seed: int = 0,
    pixel_size_um: float = DEFAULT_PIXEL_SIZE_UM,
    eds_factor: int = DEFAULT_EDS_FACTOR,
    with_eds: bool = True,
    bit_depth: int = DEFAULT_BIT_DEPTH,
    params: SimParams = DEFAULT_PARAMS,
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
        params: the physical constants (:class:`SimParams`); the default is the calibrated set.

    Returns:
        A :class:`SynthImage`. ``meta`` keys: ``generator``, ``version``, ``seed``, ``shape``,
        ``oxidation_min``, ``pixel_size_um``, ``bit_depth``, ``classes``, ``fractions`` (area fraction
        per phase name), ``porosity``, ``oxidised_ni_fraction`` (measured), ``oxidised_ni_target``
        (``X(t)``), ``nio_internal_pore_fraction``, ``initial_ni_fraction``, ``n_grains``,
        ``mean_grain_diameter_um``, ``eds_factor``, ``eds_shift_px`` ((dy, dx) in SEM px, see the
        :mod:`semscale.synth` docstring), ``eds_sigma_um``, ``eds_rate_counts``,
        ``eds_background_counts``, ``eds_concentration``, ``psf_sigma_px``, ``noise``, ``drift`` and,
        only when ``params`` differs from the default, ``params`` (:meth:`SimParams.to_dict`).
    """
    h, w = _check_args(shape, oxidation_min, pixel_size_um, eds_factor, bit_depth)
    f, px, p = int(eds_factor), float(pixel_size_um), params
    rng_micro, rng_ox, rng_sem, rng_eds = (
        np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(4)
    )
    pad = _pad_px(px, f, p)
    micro = microstructure((h + 2 * pad, w + 2 * pad), px_um=px, rng=rng_micro, params=p)
    x_ox = oxidised_fraction(oxidation_min, params=p)
    truth_pad, ox_info = oxidise(micro.truth0, x_ox=x_ox, px_um=px, rng=rng_ox, params=p)
    sem_f, sem_info = render_sem(truth_pad, micro, px_um=px, origin=(-pad, -pad), full_shape=(h, w),
                                 rng=rng_sem, params=p)
    core = (slice(pad, pad + h), slice(pad, pad + w))
    truth = np.ascontiguousarray(truth_pad[core])
    sem = _quantise(sem_f[core], bit_depth)
    shift = _eds_shift(rng_eds, p.eds_max_shift * f)
    eds = render_eds(truth_pad, pad=pad, shape=(h, w), factor=f, shift=shift, px_um=px, rng=rng_eds,
                     params=p) if with_eds else {}
    meta = {
        "generator": "semscale.synth", "version": __version__, "seed": int(seed), "shape": [h, w],
        "oxidation_min": float(oxidation_min), "pixel_size_um": px, "bit_depth": int(bit_depth),
        **_measured(truth, micro, core, x_ox, ox_info, px),
        **_settings(f, shift, sem_info, p),
    }
    return SynthImage(sem=sem, truth=truth, eds=eds, eds_factor=f, meta=meta)


def _check_args(
    shape: Sequence[int], oxidation_min: float, pixel_size_um: float, eds_factor: int, bit_depth: int
) -> tuple[int, int]:
    """Validate the arguments of :func:`simulate`; return (H, W)."""
    h, w = check_shape(shape)
    if not (isinstance(eds_factor, int | np.integer) and eds_factor >= 1):
        raise ConfigError(f"Expected an integer >= 1 for `eds_factor`. Got {eds_factor!r}.")
    if bit_depth not in (8, 16):
        raise ConfigError(f"Expected 8 or 16 for `bit_depth`. Got {bit_depth!r}.")
    if not (np.isfinite(oxidation_min) and oxidation_min >= 0):
        raise ConfigError(
            f"Expected a time >= 0 (minutes) for `oxidation_min`. Got {oxidation_min!r}."
        )
    if not (np.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise ConfigError(
            f"Expected a positive size in µm for `pixel_size_um`. Got {pixel_size_um!r}."
        )
    return h, w


def check_shape(shape: Sequence[int]) -> tuple[int, int]:
    """``shape`` as (H, W) ints, each at least 16 px."""
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ConfigError(f"Expected (H, W) for `shape`. Got {shape!r}.") from None
    if h < 16 or w < 16:
        raise ConfigError(f"Expected at least 16 px per axis for `shape`. Got {shape!r}.")
    return h, w


def _eds_shift(rng: np.random.Generator, limit: float) -> tuple[float, float]:
    """The simulated EDS misregistration (dy, dx), SEM px, uniform in ``[-limit, limit]`` per axis."""
    dy = float(rng.uniform(-limit, limit))
    return dy, float(rng.uniform(-limit, limit))


def _pad_px(px: float, f: int, p: SimParams) -> int:
    """Margin (px, even) simulated around the image so that grains, PSF and EDS broadening see
    material beyond the edges."""
    eds_sigma_max = max(p.eds_sigma_um) / px
    pad = math.ceil(max(p.grain_d_um / px, 4.0 * p.psf_sigma_px + 6, 2 * f + 4, 2 * eds_sigma_max))
    return pad + pad % 2


def _quantise(sem_f: np.ndarray, bit_depth: int) -> np.ndarray:
    """Grey levels (8-bit units, float) rounded to uint8, or scaled by 257 to uint16."""
    if bit_depth == 8:
        return np.clip(np.rint(sem_f), 0, 255).astype(np.uint8)
    return np.clip(np.rint(sem_f * 257.0), 0, 65535).astype(np.uint16)


def _measured(
    truth: np.ndarray, micro: Micro, core: tuple[slice, slice], x_ox: float,
    ox_info: dict[str, float], px: float,
) -> dict[str, Any]:
    """Facts measured on the simulated image (the ``meta`` keys from ``classes`` to ``n_grains``)."""
    h, w = truth.shape
    counts = np.bincount(truth.ravel(), minlength=4)[:4]
    fractions = {name: float(c) / truth.size for name, c in zip(PHASES, counts, strict=True)}
    ni0 = int((micro.truth0[core] == NI).sum())
    n_cells_core = int(np.count_nonzero(np.bincount(micro.cells[core].ravel())))
    return {
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
    }


def _settings(
    f: int, shift: tuple[float, float], sem_info: dict[str, Any], p: SimParams
) -> dict[str, Any]:
    """The EDS and imaging settings (the ``meta`` keys from ``eds_factor`` on)."""
    meta: dict[str, Any] = {
        "eds_factor": f,
        "eds_shift_px": [shift[0], shift[1]],
        "eds_sigma_um": dict(zip(ELEMENTS, p.eds_sigma_um, strict=True)),
        "eds_rate_counts": dict(zip(ELEMENTS, p.eds_rate, strict=True)),
        "eds_background_counts": dict(zip(ELEMENTS, p.eds_background, strict=True)),
        "eds_concentration": {el: list(v) for el, v in zip(ELEMENTS, p.eds_conc, strict=True)},
        "psf_sigma_px": p.psf_sigma_px,
        "noise": {"poisson_gain": p.noise_gain, "read_sd": p.noise_read},
        "drift": {
            "gain_sd": p.drift_gain_sd, "gain_corr_um": p.drift_gain_corr_um,
            "ramp_per_um": p.drift_ramp_per_um, "offset_sd": p.drift_offset_sd, **sem_info,
        },
    }
    if p != DEFAULT_PARAMS:
        meta["params"] = p.to_dict()
    return meta
