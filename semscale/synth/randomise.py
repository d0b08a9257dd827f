"""Domain randomisation: simulator settings drawn around the calibration, for synthetic pretraining.

:func:`random_params` draws a :class:`~semscale.synth.params.SimParams` per image, each field in
:data:`RANGES` uniformly (independently); per-phase tuples are drawn per phase. The ranges are the
calibration ± a modest spread and are chosen **not** to contain the evaluation-only settings of
:mod:`semscale.synth.evaluation` (tested): each of them differs from every randomised draw in at least one
field, so the generalisation protocol measures extrapolation, never recall.

With ``levels`` (the phase grey levels and per-grain contrast measured on one campaign's own training
images and targets, :mod:`semscale.synth.levels`) the draws are centred there instead, with
:data:`LEVELS_JITTER` and :data:`LEVELS_SD_SCALE`; every other field keeps its range above.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from semscale.synth.levels import Levels
from semscale.synth.params import DEFAULT_PARAMS, SimParams

__all__ = ["LEVELS_JITTER", "LEVELS_SD_SCALE", "RANGES", "SCALED", "outside_ranges", "random_params", "random_time"]

RANGES: dict[str, tuple[float, float]] = {
    # microstructure (µm)
    "grain_d_um": (1.6, 2.5),
    "agglomerate_um": (4.5, 7.5),
    "open_diff_um": (0.15, 0.26),
    "rounding_um": (0.1, 0.2),
    # oxidation
    "ox_tau_min": (38.0, 75.0),
    "ox_max": (0.8, 0.95),
    "front_roughness": (0.2, 0.45),
    "knob_roughness": (0.2, 0.4),
    # SEM rendering and noise
    "psf_sigma_px": (0.6, 1.05),
    "noise_gain": (0.6, 1.8),
    "noise_read": (1.5, 3.5),
    "drift_gain_sd": (0.015, 0.045),
    "drift_offset_sd": (1.0, 3.5),
}
"""Uniform range of each randomised scalar field of :class:`SimParams`."""

BASE_JITTER: tuple[float, float, float, float] = (0.0, 5.0, 5.0, 7.0)
"""Per-phase grey level (``base``): the calibration ± this (pore stays 0)."""

SCALED: dict[str, tuple[float, float]] = {
    "grain_sd": (0.7, 1.2),
    "rim": (0.7, 1.3),
    "texture_amp": (0.7, 1.3),
}
"""Per-phase tuples multiplied by one factor per phase drawn from this range."""

LEVELS_JITTER: tuple[float, float, float, float] = (0.0, 2.5, 2.5, 3.5)
"""Per-phase grey level around a campaign's measured ``base``: ± this (half of :data:`BASE_JITTER`)."""

LEVELS_SD_SCALE: tuple[float, float] = (0.85, 1.15)
"""A campaign's measured ``grain_sd`` is multiplied by one factor per phase drawn from this range."""

MAX_TIME_MIN = 150.0
"""Oxidation times are drawn in [0, this] min, denser at early times (see :func:`random_time`)."""


def random_params(
    rng: np.random.Generator, *, levels: Levels | None = None
) -> SimParams:
    """One randomised simulator setting (see :data:`RANGES`, :data:`BASE_JITTER`, :data:`SCALED`).

    ``levels``: simulator inputs ``(base, grain_sd)`` fitted to a campaign
    (:func:`semscale.synth.levels.simulator_levels`), the centre of those two fields instead of the
    calibration's.
    """
    over: dict[str, Any] = {name: float(rng.uniform(lo, hi)) for name, (lo, hi) in RANGES.items()}
    centre, jitter = (DEFAULT_PARAMS.base, BASE_JITTER) if levels is None else (levels[0], LEVELS_JITTER)
    over["base"] = tuple(float(b + rng.uniform(-j, j)) for b, j in zip(centre, jitter, strict=True))
    for name, (lo, hi) in SCALED.items():
        if levels is not None and name == "grain_sd":
            factors = rng.uniform(*LEVELS_SD_SCALE, size=4)
            over[name] = tuple(float(v * f) for v, f in zip(levels[1], factors, strict=True))
            continue
        value = getattr(DEFAULT_PARAMS, name)
        factors = rng.uniform(lo, hi, size=len(value))
        if isinstance(value[0], tuple):
            over[name] = tuple(tuple(float(v * f) for v in row) for row, f in zip(value, factors, strict=True))
        else:
            over[name] = tuple(float(v * f) for v, f in zip(value, factors, strict=True))
    return dataclasses.replace(DEFAULT_PARAMS, **over)


def random_time(rng: np.random.Generator) -> float:
    """An oxidation time (min): 0 with probability 0.15, else log-uniform in [1, :data:`MAX_TIME_MIN`]."""
    if rng.random() < 0.15:
        return 0.0
    return float(np.exp(rng.uniform(0.0, np.log(MAX_TIME_MIN))))


def outside_ranges(params: SimParams) -> list[str]:
    """The fields of ``params`` that no :func:`random_params` draw can take (empty: inside the support)."""
    out = [name for name, (lo, hi) in RANGES.items() if not lo <= getattr(params, name) <= hi]
    base = DEFAULT_PARAMS.base
    if any(abs(v - b) > j for v, b, j in zip(params.base, base, BASE_JITTER, strict=True)):
        out.append("base")
    for name, (lo, hi) in SCALED.items():
        value = np.asarray(getattr(params, name), float).reshape(4, -1)
        default = np.asarray(getattr(DEFAULT_PARAMS, name), float).reshape(4, -1)
        for row, ref in zip(value, default, strict=True):  # one factor per phase (row)
            ratio = row[ref != 0] / ref[ref != 0]
            if np.any(row[ref == 0] != 0) or (ratio.size and (np.ptp(ratio) > 1e-9 or not
                                                               lo - 1e-12 <= ratio[0] <= hi + 1e-12)):
                out.append(name)
                break
    changed = {f.name for f in dataclasses.fields(SimParams)} - set(RANGES) - {"base"} - set(SCALED)
    out += [name for name in sorted(changed) if getattr(params, name) != getattr(DEFAULT_PARAMS, name)]
    return out
