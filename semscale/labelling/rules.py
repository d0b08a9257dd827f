"""The seeding rules of one image, all thresholds found from its data (numpy in → numpy out).

Otsu splits (:class:`Split`) of the EDS rule quantities (:func:`eds_quantities`) on pixels the SEM shows
fully solid or fully pore, the SEM's own pore/solid split, which Ni-bearing phases are present, and the
pure phases' EDS signatures for linear unmixing (:func:`unmix`), gathered in :class:`EdsRules`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from semscale.errors import InputImageError
from semscale.labelling._common import ELEMENTS

__all__ = [
    "DEFAULT_ENDMEMBERS",
    "MARGIN",
    "NIO_MIN_RELATIVE_O",
    "NIO_SEM_PERCENTILE",
    "NI_MAX_OX_SIDE_RATIO",
    "UNMIX_PHASES",
    "EdsRules",
    "Split",
    "eds_quantities",
    "fit_rules",
    "sem_split",
    "split",
    "unmix",
    "unresolved_band",
]

MARGIN = 0.5
"""How far (0..1) beyond each data-driven threshold, towards the side's median, a seed must lie."""
NIO_SEM_PERCENTILE = 10.0
"""NiO seeds must be darker (SEM smoothed at σ = 2 px) than this percentile of confident-Ni EDS pixels."""
NIO_MIN_RELATIVE_O = 0.1
"""NiO counts as present when the O-richer half (Otsu) of the Ni-bearing pixels holds, in the median, at
least this fraction of YSZ's O beyond what their Zr explains (NiO holds about as much O per volume as
ZrO2, so even thin, EDS-blurred NiO shells exceed it; metallic Ni stays near 0)."""
NI_MAX_OX_SIDE_RATIO = 0.6
"""Metallic Ni counts as present when the O-poorer side's median ``ox`` is below this fraction of the
O-richer side's (a single NiO population split by Otsu gives sides within about ±1 σ, ratio ≈ 0.8)."""
UNMIX_PHASES: tuple[str, ...] = ("NiO", "Ni", "YSZ")
DEFAULT_ENDMEMBERS: dict[str, tuple[float, float, float]] = {
    "NiO": (0.5, 0.8, 0.0), "Ni": (1.0, 0.0, 0.0), "YSZ": (0.0, 0.9, 0.9),
}
"""Scaled (Ni, O, Zr) signatures used when an image provides none (see :func:`unmix`)."""


@dataclass(frozen=True)
class Split:
    """A data-driven two-class split of one quantity: Otsu threshold and the median of each side."""

    threshold: float
    low: float
    high: float

    def is_low(self, v: Any, margin: float) -> Any:
        """Confidently below: beyond ``margin`` of the way from the threshold to the low median."""
        return v < self.threshold - margin * (self.threshold - self.low)

    def is_high(self, v: Any, margin: float) -> Any:
        """Confidently above: beyond ``margin`` of the way from the threshold to the high median."""
        return v > self.threshold + margin * (self.high - self.threshold)


def split(values: np.ndarray, *, weights: np.ndarray | None = None, nbins: int = 256, classes: int = 2
          ) -> Split:
    """Otsu split (``classes`` > 2: the lowest multi-Otsu threshold) with each side's median."""
    from skimage.filters import threshold_multiotsu, threshold_otsu

    v = np.asarray(values, np.float64).ravel()
    wts = None if weights is None else np.asarray(weights, np.float64).ravel()
    if v.size < 2 or (wts is not None and wts.sum() <= 0):
        raise InputImageError("Expected enough pixels to find a threshold. Got too few.")
    lo, hi = (np.percentile(v, [0.1, 99.9]) if wts is None
              else (v[wts > 0].min(), v[wts > 0].max()))
    if hi <= lo:
        return Split(float(lo), float(lo), float(hi))
    counts, edges = np.histogram(v, bins=nbins, range=(lo, hi), weights=wts)
    centres = 0.5 * (edges[:-1] + edges[1:])
    if classes > 2:
        t = float(threshold_multiotsu(hist=(counts, centres), classes=classes)[0])
    else:
        t = float(threshold_otsu(hist=(counts, centres)))
    return Split(t, _weighted_median(centres, counts, upper=t, below=True),
                 _weighted_median(centres, counts, upper=t, below=False))


def _weighted_median(centres: np.ndarray, counts: np.ndarray, *, upper: float, below: bool) -> float:
    sel = centres <= upper if below else centres > upper
    c, n = centres[sel], counts[sel]
    if n.sum() <= 0:
        return float(upper)
    cdf = np.cumsum(n) / n.sum()
    return float(c[np.searchsorted(cdf, 0.5)])


def sem_split(counts: np.ndarray, edges: np.ndarray) -> Split:
    """Pore/solid split of the smoothed SEM: the lowest of three multi-Otsu classes. Pores are the darkest
    phase, but NiO can be abundant and dark enough that a two-class Otsu would put it with the pores."""
    return split(0.5 * (edges[:-1] + edges[1:]), weights=counts, classes=3)


@dataclass(frozen=True)
class EdsRules:
    """Per-image thresholds of the seeding rules, all found from the data.

    Quantities, from smoothed EDS channels divided by ``scales`` (their 99th percentile): ``solid`` =
    the largest channel (pores emit little), ``zr`` = Zr / (Zr + Ni) (YSZ vs Ni-bearing phases), ``ox`` =
    O_excess / (O_excess + Ni) with O_excess = O − ``o_per_zr`` · Zr the oxygen not bound in YSZ (NiO vs
    Ni; YSZ contains O too, and it spills into neighbouring Ni through the interaction volume). ``sem``
    splits the smoothed normalised SEM into dark (pore) and bright (lowest of three multi-Otsu classes,
    so that abundant dark NiO does not join the pores). The EDS splits are fitted on EDS
    pixels that the SEM shows fully solid (or fully pore, for ``solid``). ``nio`` says which Ni-bearing
    phases are present: "both", "Ni" or "NiO"; with both, NiO seeds must be darker in the SEM (σ = 2 px)
    than ``nio_sem_max`` (the ``NIO_SEM_PERCENTILE`` percentile of confident-Ni EDS pixels).
    """

    scales: dict[str, float]
    o_per_zr: float
    solid: Split
    zr: Split
    ox: Split
    sem: Split
    nio: str = "both"
    nio_sem_max: float | None = None
    endmembers: dict[str, list[float]] = field(default_factory=dict)
    diagnostics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def eds_quantities(channels: Mapping[str, Any], *, scales: Mapping[str, float], o_per_zr: float = 0.0
                   ) -> dict[str, Any]:
    """The rule quantities ``solid``, ``zr``, ``ox`` (see :class:`EdsRules`) and the scaled channels."""
    eps = np.float32(0.05)
    ni = channels["Ni"] / np.float32(scales["Ni"])
    o = channels["O"] / np.float32(scales["O"])
    zr = channels["Zr"] / np.float32(scales["Zr"])
    o_ex = np.maximum(o - np.float32(o_per_zr) * zr, np.float32(0))
    solid = np.maximum(np.maximum(ni, zr), o)
    return {"solid": solid, "zr": zr / (zr + ni + eps), "ox": o_ex / (o_ex + ni + eps), "Ni": ni, "O": o,
            "Zr": zr}


def unmix(q: Mapping[str, Any], endmembers: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """Solid phase fractions per pixel by linear unmixing of the scaled (Ni, O, Zr) signal.

    The EDS signal is (to first order) the area-weighted sum of the pure phases' signatures
    (``endmembers``: scaled Ni, O, Zr of each solid phase; pores emit nothing), so least squares gives each
    phase's fraction of the interaction volume. Unlike channel ratios, a fraction of 0.5 marks the middle
    of a blurred phase boundary whatever the phases' count rates. Phases missing from ``endmembers`` get 0.
    """
    names = [c for c in UNMIX_PHASES if c in endmembers]
    m = np.asarray([endmembers[c] for c in names], np.float64).T  # 3 × k
    pinv = np.linalg.pinv(m).astype(np.float32)  # k × 3
    v = [q["Ni"], q["O"], q["Zr"]]
    out: dict[str, Any] = {}
    for c in UNMIX_PHASES:
        if c in names:
            i = names.index(c)
            out[c] = pinv[i, 0] * v[0] + pinv[i, 1] * v[1] + pinv[i, 2] * v[2]
        else:
            out[c] = np.zeros_like(v[0])
    out["solid"] = out["NiO"] + out["Ni"] + out["YSZ"]
    return out


@dataclass(frozen=True)
class _Masks:
    """EDS pixels the rules are fitted on: fully solid / fully pore in the SEM, confident YSZ, Ni-bearing."""

    pure_solid: np.ndarray
    pure_pore: np.ndarray
    ysz: np.ndarray
    nib: np.ndarray


def _channels(eds: Mapping[str, np.ndarray], sem_solid: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    missing = [el for el in ELEMENTS if el not in eds]
    if missing:
        raise InputImageError(
            f"Expected EDS maps {list(ELEMENTS)} for automatic seeds. Got {sorted(eds)} (missing {missing}). "
            "Add the missing maps to the image's `eds:` entry or label with scribbles only."
        )
    ch = {el: np.asarray(eds[el], np.float32) for el in ELEMENTS}
    sem_solid = np.asarray(sem_solid, np.float32)
    if sem_solid.shape != ch["Ni"].shape:
        raise InputImageError(f"Expected `sem_solid` of shape {ch['Ni'].shape}. Got {sem_solid.shape}.")
    return ch, sem_solid


def _zr_and_masks(ch: Mapping[str, np.ndarray], sem_solid: np.ndarray, *, scales: Mapping[str, float],
                  margin: float, min_pixels: int) -> tuple[Split, float, _Masks]:
    """The Zr split, the O per Zr of confident YSZ, and the pixel masks the other splits use."""
    pure_solid = sem_solid >= 0.95
    pure_pore = sem_solid <= 0.05
    if pure_solid.sum() < min_pixels:
        raise InputImageError(
            f"Expected at least {min_pixels} EDS pixels that the SEM shows fully solid. Got "
            f"{int(pure_solid.sum())}; the image may be almost all pore or the SEM threshold wrong."
        )
    q = eds_quantities(ch, scales=scales)
    zr = split(q["zr"][pure_solid])
    ysz = pure_solid & zr.is_high(q["zr"], margin)
    o_per_zr = float(np.median(q["O"][ysz] / np.maximum(q["Zr"][ysz], 1e-3))) if ysz.sum() >= min_pixels else 0.0
    nib = pure_solid & zr.is_low(q["zr"], margin)  # zr does not depend on o_per_zr
    return zr, o_per_zr, _Masks(pure_solid, pure_pore, ysz, nib)


def _ox_and_nio(q: Mapping[str, np.ndarray], m: _Masks, *, o_per_zr: float, min_pixels: int,
                diagnostics: dict[str, float]) -> tuple[Split, str]:
    """The NiO/Ni split of the Ni-bearing pixels and which of the two phases are present."""
    if m.nib.sum() < min_pixels:
        return Split(0.5, 0.0, 1.0), "Ni"
    v = q["ox"][m.nib]
    ox = split(v)
    o_ysz = float(np.median(q["O"][m.ysz])) if m.ysz.any() else 1.0
    o_ex = np.maximum(q["O"] - o_per_zr * q["Zr"], 0)[m.nib]
    rel_hi = float(np.median(o_ex[v > ox.threshold]) / max(o_ysz, 1e-6)) if (v > ox.threshold).any() else 0.0
    ratio = ox.low / ox.high if ox.high > 0 else 1.0
    diagnostics.update(nio_side_excess_o_relative=rel_hi, ox_side_ratio=float(ratio))
    if rel_hi < NIO_MIN_RELATIVE_O:
        return ox, "Ni"  # even the O-richer half of the Ni-bearing pixels holds hardly any O beyond YSZ's
    if ratio > NI_MAX_OX_SIDE_RATIO:
        return ox, "NiO"  # one O-rich population: Otsu merely halved it
    return ox, "both"


def _endmembers(q: Mapping[str, np.ndarray], m: _Masks, ox: Split, nio: str, *, margin: float,
                min_pixels: int) -> dict[str, list[float]]:
    """Signatures (scaled Ni, O, Zr) of the pure solid phases, from EDS pixels the rules are sure of."""
    members = {"YSZ": m.ysz}
    if nio == "both":
        members.update(Ni=m.nib & ox.is_low(q["ox"], margin), NiO=m.nib & ox.is_high(q["ox"], margin))
    else:
        members[nio] = m.nib
    return {
        c: [float(np.median(q[el][mask])) for el in ("Ni", "O", "Zr")]
        for c, mask in members.items() if mask.sum() >= min_pixels
    }


def fit_rules(
    eds: Mapping[str, np.ndarray], *, sem_solid: np.ndarray, sem_hist: tuple[np.ndarray, np.ndarray],
    sem_mean: np.ndarray | None = None, margin: float = MARGIN, percentile: float = 99.0, min_pixels: int = 32,
) -> EdsRules:
    """Find the seeding thresholds of one image from its data.

    ``eds``: smoothed EDS maps at native resolution, registered (see ``shift_native``);
    ``sem_solid``: the SEM's solid fraction per EDS pixel (``sem_solid_fraction``); ``sem_mean``: the
    smoothed SEM's mean per EDS pixel (``block_mean``; optional); ``sem_hist``: (counts, bin edges)
    of the smoothed normalised SEM. Every threshold is an Otsu split of the relevant
    pixels. Whether NiO and metallic Ni are present is judged from the two sides of the ``ox`` split (see
    ``NIO_MIN_RELATIVE_O`` and ``NI_MAX_OX_SIDE_RATIO``); a missing phase gets no seeds.
    """
    ch, sem_solid = _channels(eds, sem_solid)
    scales = {el: max(float(np.percentile(m, percentile)), 1e-6) for el, m in ch.items()}
    zr, o_per_zr, m = _zr_and_masks(ch, sem_solid, scales=scales, margin=margin, min_pixels=min_pixels)
    q = eds_quantities(ch, scales=scales, o_per_zr=o_per_zr)
    solid = split(q["solid"][m.pure_solid | m.pure_pore] if m.pure_pore.sum() >= min_pixels else q["solid"])
    diagnostics: dict[str, float] = {"pure_solid_px": int(m.pure_solid.sum()), "pure_pore_px": int(m.pure_pore.sum())}
    ox, nio = _ox_and_nio(q, m, o_per_zr=o_per_zr, min_pixels=min_pixels, diagnostics=diagnostics)
    sem = sem_split(*sem_hist)
    nio_sem_max = None
    if nio == "both" and sem_mean is not None:
        # NiO is darker than Ni in backscatter; where EDS blur mixes them (thin NiO shells) the SEM decides.
        ni = m.nib & ox.is_low(q["ox"], margin)
        if ni.sum() >= min_pixels:
            nio_sem_max = float(np.percentile(np.asarray(sem_mean)[ni], NIO_SEM_PERCENTILE))
    return EdsRules(scales=scales, o_per_zr=o_per_zr, solid=solid, zr=zr, ox=ox, sem=sem, nio=nio,
                    nio_sem_max=nio_sem_max,
                    endmembers=_endmembers(q, m, ox, nio, margin=margin, min_pixels=min_pixels),
                    diagnostics=diagnostics)


def unresolved_band(rules: EdsRules, *, factor: int, oxidation_min: float | None) -> dict[str, Any] | None:
    """The target pixels an image's EDS cannot decide, as ``{"class", "next_to", "width_px", "why"}``, or None.

    Oxidation starts on the Ni surfaces that face pores. A NiO layer thinner than one EDS pixel (``factor``
    SEM px) leaves too little excess O in any EDS pixel to be found, so an image taken after oxidation
    began (``oxidation_min`` > 0) whose rules find only metallic Ni may still hold such a layer: its target
    calls it Ni. The Ni pixels within ``factor`` px of a pore are then unresolved: the target keeps them
    (for scores and statistics), training ignores them (:class:`semscale.training.sampler.PatchSampler`).
    """
    if rules.nio != "Ni" or oxidation_min is None or float(oxidation_min) <= 0:
        return None
    return {"class": "Ni", "next_to": "pore", "width_px": float(factor),
            "why": f"EDS finds no NiO after {float(oxidation_min):g} min of oxidation; a NiO layer thinner "
                   f"than one EDS pixel ({factor} SEM px) on pore-facing Ni would look like this"}
