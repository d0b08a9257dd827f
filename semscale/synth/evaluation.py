"""Simulator settings kept for evaluation only: no training, pretraining or tuning in the project uses them.

The generalisation protocol (``benchmarks/generalisation.py``, issue 14) simulates a campaign with one of
these settings and scores the EDS-guided targets and the U-Net against the exact truth. Every setting is
:data:`~semscale.synth.params.DEFAULT_PARAMS` with a few documented fields changed
(``dataclasses.replace``), so what differs from the calibration is explicit and tested. A setting used for
training (e.g. a domain-randomisation range) must never include these values on purpose; add a new
setting here rather than edit one, so earlier figures stay comparable.
"""

from __future__ import annotations

import dataclasses

from semscale.errors import ConfigError
from semscale.synth.params import DEFAULT_PARAMS, SimParams

__all__ = ["COARSE_NOISY", "EVALUATION_SETTINGS", "FINE_SLOW", "OVERLAP", "evaluation_params"]

COARSE_NOISY: SimParams = dataclasses.replace(
    DEFAULT_PARAMS,
    # Larger grains (2.0 -> 3.0 µm) and agglomerates (6 -> 9 µm): a coarser, less sintered electrode, so
    # the network sees structures at a scale its 128-256 px windows hold fewer of.
    grain_d_um=3.0,
    agglomerate_um=9.0,
    # Larger pores: wider Ni|YSZ gaps (0.2 -> 0.32 µm), rounder free surfaces and corners.
    open_diff_um=0.32,
    rounding_um=0.25,
    corner_um=0.6,
    # More noise: 2.5× the Poisson gain and twice the read noise (a faster scan / lower beam current).
    noise_gain=2.5,
    noise_read=5.0,
    # More blur: PSF σ 0.8 -> 1.3 px (a less well focused beam), thin NiO rims blur into their neighbours.
    psf_sigma_px=1.3,
    # More drift: twice the smooth gain field, the depth ramp and 2.5× the per-image brightness offset,
    # so the normalisation has to absorb larger brightness changes between and within images.
    drift_gain_sd=0.06,
    drift_ramp_per_um=1.3e-3,
    drift_offset_sd=5.0,
)
"""Coarse microstructure imaged noisily: larger grains, agglomerates and pores, more noise, blur and drift."""

OVERLAP: SimParams = dataclasses.replace(
    DEFAULT_PARAMS,
    # Phase grey levels closer together: NiO 97.5 -> 104, YSZ 147.2 -> 134 (Ni stays 117.5), so
    # NiO|Ni and Ni|YSZ are only ~13-16 grey levels apart instead of ~20-30 ...
    base=(0.0, 104.0, 117.5, 134.0),
    # ... and the per-grain (channelling) contrast is larger, so the grey-level distributions of Ni and
    # YSZ (and NiO and Ni) overlap much more: texture and context have to decide.
    grain_sd=(0.0, 12.0, 16.0, 11.0),
    # NiO morphology different: faster oxidation (τ 50 -> 30 min, thicker NiO at the early times), a
    # rougher oxidation front and knobblier outward growth, and a more porous NiO with larger internal pores.
    ox_tau_min=30.0,
    front_roughness=0.6,
    knob_roughness=0.55,
    nio_internal_porosity=(0.14, 0.08),
    nio_pore_um=0.11,
)
"""Overlapping grey levels and another NiO morphology: Ni closer to NiO and YSZ, rougher, more porous NiO."""

FINE_SLOW: SimParams = dataclasses.replace(
    DEFAULT_PARAMS,
    # Finer microstructure: grains 2.0 -> 1.3 µm and agglomerates 6 -> 3.5 µm, so a window holds more phase
    # boundaries, where labels err most.
    grain_d_um=1.3,
    agglomerate_um=3.5,
    # Slower oxidation (τ 50 -> 110 min): thinner NiO at every time, the rims of the early times hardest.
    ox_tau_min=110.0,
    # Sharper, cleaner imaging: PSF σ 0.8 -> 0.5 px, less than half the Poisson gain and read noise.
    psf_sigma_px=0.5,
    noise_gain=0.45,
    noise_read=1.0,
    # Phase grey levels spread the other way from `overlap`: NiO darker (97.5 -> 90), Ni and YSZ brighter
    # (117.5 -> 123, 147.2 -> 160).
    base=(0.0, 90.0, 123.0, 160.0),
)
"""Fine microstructure oxidising slowly, imaged sharply: small grains, thin NiO, other phase levels. Added
after the levers of issue 14 were chosen on the other two, as a check that no lever was chosen for them."""

EVALUATION_SETTINGS: dict[str, SimParams] = {
    "coarse-noisy": COARSE_NOISY,
    "overlap": OVERLAP,
    "fine-slow": FINE_SLOW,
}
"""The evaluation-only settings by name (``"default"`` is not one of them: it is the calibration)."""


def evaluation_params(name: str) -> SimParams:
    """The simulator constants of the evaluation setting ``name`` (see :data:`EVALUATION_SETTINGS`)."""
    try:
        return EVALUATION_SETTINGS[name]
    except KeyError:
        raise ConfigError(
            f"Expected an evaluation setting among {', '.join(sorted(EVALUATION_SETTINGS))}. Got {name!r}; "
            "pick one of those (or add a new setting to semscale/synth/evaluation.py)."
        ) from None
