"""Every physical constant of the simulator, in one frozen dataclass (:class:`SimParams`).

The defaults are the calibrated values (see :data:`REAL_PATCH` and ``docs/synth_realism.md``); a later
domain-randomisation step draws other values and passes them to :func:`semscale.synth.simulate`. Lengths
are in µm unless the name ends in ``_px``; grey levels in 8-bit units. Per-phase tuples are indexed by
the label (pore, NiO, Ni, YSZ), per-element tuples by :data:`ELEMENTS` (Ni, O, Zr).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from semscale.errors import ConfigError

__all__ = [
    "DEFAULT_BIT_DEPTH",
    "DEFAULT_EDS_FACTOR",
    "DEFAULT_PARAMS",
    "DEFAULT_PIXEL_SIZE_UM",
    "ELEMENTS",
    "NI",
    "NIO",
    "PHASES",
    "PORE",
    "REAL_PATCH",
    "YSZ",
    "SimParams",
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

DEFAULT_PIXEL_SIZE_UM = 0.04458
"""SEM pixel size (µm) of the real images the simulator is calibrated on."""
DEFAULT_EDS_FACTOR = 4
"""SEM pixels per EDS pixel along each axis."""
DEFAULT_BIT_DEPTH = 8
"""Bit depth of the simulated SEM image (8 or 16)."""

PerPhase = tuple[float, float, float, float]
PerElement = tuple[float, float, float]
PerTexture = tuple[float, float, float]  # fine, medium, smooth texture field


@dataclass(frozen=True)
class SimParams:
    """Physical constants of the microstructure, oxidation, SEM and EDS models (today's calibration).

    Immutable and hashable; build a variant with ``dataclasses.replace(SimParams(), psf_sigma_px=1.0)``.
    """

    # --- microstructure ---
    grain_d_um: float = 2.0  # mean equivalent diameter of a Voronoi cell before weighting
    hardcore: float = 0.5  # minimal seed spacing, in units of the mean cell diameter
    # Additive Voronoi weights (× cell diameter) per phase: Ni grains grow larger than YSZ grains.
    # (NiO cells do not exist at t = 0: its weight is unused.)
    weight: PerPhase = (0.2, 0.0, 0.32, 0.12)
    pore_cell_fraction: float = 0.22  # fraction of the cells that are pores, by cell count ...
    ni_cell_fraction_of_solid: float = 0.33  # ... and of the solid cells that are Ni
    agglomerate_um: float = 6.0  # mean size of the Ni(+pore) agglomerates enclosed by the YSZ network
    mixing: float = 0.15  # noise on the grain -> agglomerate / network assignment (in grain diameters)
    gap_corr: float = 0.35  # correlation σ of the gap-width field, in grain diameters
    open_diff_um: float = 0.2  # pore gaps along Ni|YSZ boundaries: width scale ...
    open_diff_level: float = 0.5  # ... and opening level (a gap opens where the width field exceeds ~this)
    open_same_um: float = 0.25  # Ni|Ni, YSZ|YSZ boundaries: sintered shut unless the width field is ...
    open_same_level: float = 3.0  # ... very high (above ~this)
    speck_um: float = 0.06  # correlation σ of the field whose peaks are sub-µm pore specks ...
    speck_level: float = 2.9  # ... and the level above which a speck opens
    porosity_range: tuple[float, float] = (0.30, 0.36)  # porosity at t = 0, drawn per image
    rounding_um: float = 0.15  # σ of the smoothing of the pore potential: rounds the free surfaces
    corner_um: float = 0.4  # radius of the rounded grain corners

    # --- oxidation ---
    nio_expansion: float = 1.7  # NiO / Ni volume ratio (Pilling-Bedworth)
    nio_internal_porosity: tuple[float, float] = (0.08, 0.06)  # a + b·X: fraction of NiO that is pores
    nio_pore_um: float = 0.075  # correlation σ of the field whose peaks are NiO internal pores
    ox_tau_min: float = 50.0  # X(t) = ox_max (1 - exp(-t / ox_tau_min))
    ox_max: float = 0.9
    front_corr_um: float = 0.5  # correlation σ of the roughness of the oxidation front ...
    front_roughness: float = 0.35  # ... and its strength (log-scale of the distance to the pores)
    knob_corr_um: float = 0.27  # correlation σ of the knobbly outward NiO growth into the pores ...
    knob_roughness: float = 0.3  # ... and its strength
    expansion_reach_um: float = 0.4  # outward NiO growth reaches at most 3 × front depth + this

    # --- SEM rendering (grey levels in 8-bit units, before drift and noise) ---
    base: PerPhase = (0.0, 97.5, 117.5, 147.2)  # mean grey level per phase
    grain_sd: PerPhase = (0.0, 9.0, 13.0, 8.0)  # per-grain (channelling) contrast, std
    texture_sigma_px: PerTexture = (1.0, 2.5, 12.0)  # static texture: fine, medium, smooth
    # Texture amplitude (grey levels) per phase, for each of the three texture fields.
    texture_amp: tuple[PerTexture, PerTexture, PerTexture, PerTexture] = (
        (0.0, 0.0, 0.0),
        (19.0, 5.0, 0.0),
        (0.0, 0.0, 12.0),
        (25.0, 8.0, 0.0),
    )
    rim: PerPhase = (0.0, 12.0, 40.0, 34.0)  # bright rim of solids at pore edges (grey levels)
    rim_sigma_px: float = 1.5
    rim_mod_um: float = 0.5  # correlation σ of the rim-brightness modulation ...
    rim_mod_amp: float = 0.4  # ... and its relative amplitude
    wall: float = 20.0  # visible pore side-walls just inside the pore edge
    wall_sigma_px: float = 2.0
    glow: float = 14.0  # sub-surface material seen at the bottom of some pores
    glow_um: float = 0.8  # correlation σ of the glow field
    ysz_gb: float = 18.0  # dark YSZ|YSZ grain-boundary lines (grooves)
    ysz_gb_width_px: float = 0.8
    psf_sigma_px: float = 0.8
    noise_gain: float = 1.0  # Poisson: variance = gain × signal (grey levels)
    noise_read: float = 2.5  # Gaussian read noise, grey levels
    drift_gain_sd: float = 0.03  # brightness drift: std of the smooth gain field ...
    drift_gain_corr_um: float = 25.0  # ... and its correlation length
    drift_ramp_per_um: float = 6.5e-4  # depth gradient: relative gain change per µm
    drift_offset_sd: float = 2.0  # std of the per-image brightness offset (grey levels)

    # --- EDS ---
    # Element concentration per phase (pore, NiO, Ni, YSZ), atomic-fraction like, for Ni, O, Zr.
    eds_conc: tuple[PerPhase, PerPhase, PerPhase] = (
        (0.0, 0.5, 1.0, 0.0),
        (0.0, 0.5, 0.0, 0.62),
        (0.0, 0.0, 0.0, 0.3),
    )
    eds_sigma_um: PerElement = (0.45, 0.35, 0.40)  # interaction-volume broadening
    eds_rate: PerElement = (40.0, 45.0, 90.0)  # counts per EDS px at concentration 1
    eds_background: PerElement = (1.5, 1.0, 1.5)  # counts per EDS px (bremsstrahlung)
    eds_max_shift: float = 0.6  # max |misregistration| per axis, in EDS px

    def __post_init__(self) -> None:
        for name, (n, row) in _SHAPES.items():
            value = getattr(self, name)
            if len(value) != n or (row and any(len(r) != row for r in value)):
                raise ConfigError(
                    f"Expected {n} values (one per {_MEANING[name]}"
                    + (f", each {row} values" if row else "")
                    + f") for `SimParams.{name}`. Got {value!r}. Give a tuple indexed as documented."
                )
        lo, hi = self.porosity_range
        if not 0.0 <= lo <= hi < 1.0:
            raise ConfigError(
                f"Expected 0 <= low <= high < 1 for `SimParams.porosity_range`. Got {self.porosity_range!r}."
            )

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (tuples become lists)."""
        return {k: _listify(v) for k, v in dataclasses.asdict(self).items()}


def _listify(value: Any) -> Any:
    return [_listify(v) for v in value] if isinstance(value, tuple) else value


_SHAPES: dict[str, tuple[int, int]] = {  # field -> (length, length of each row or 0 if flat)
    "weight": (4, 0), "grain_sd": (4, 0), "base": (4, 0), "rim": (4, 0), "texture_amp": (4, 3),
    "eds_conc": (3, 4), "eds_sigma_um": (3, 0), "eds_rate": (3, 0), "eds_background": (3, 0),
    "texture_sigma_px": (3, 0), "porosity_range": (2, 0), "nio_internal_porosity": (2, 0),
}
_MEANING = {
    **dict.fromkeys(("weight", "grain_sd", "base", "rim", "texture_amp"), "phase"),
    **dict.fromkeys(("eds_conc", "eds_sigma_um", "eds_rate", "eds_background"), "element"),
    "texture_sigma_px": "texture field", "porosity_range": "bound", "nio_internal_porosity": "coefficient",
}

DEFAULT_PARAMS = SimParams()
"""Today's calibration: the simulator's output for these parameters is pinned by the tests."""
