"""Phase grey levels measured on labelled SEM images, to centre the simulator on one campaign (pure numpy).

Domain randomisation (:mod:`semscale.synth.randomise`) draws the phase grey levels around the calibration,
so where a campaign's NiO or Ni sits elsewhere (a different detector, beam or sample preparation) the
simulated windows teach the network the wrong grey levels. :func:`measure_levels` reads them off the
campaign's own training images and their labels (the EDS-guided targets: what a user has, never the
truth), so that the exact-truth windows mixed into training (``training.synthetic_levels: campaign``) look
like this campaign's phases while everything else stays randomised.

Levels are grey levels above the pore in each phase's interior (``erode_px`` away from any other label, so
the targets' boundary errors and the blur stay out) on the image smoothed with σ = ``smooth_px``, where the
shot noise is averaged away and the per-grain (channelling) contrast remains. :func:`relative_to` divides
them by one phase's level (YSZ, which does not oxidise), image by image, so each image's gain and offset
drop out and the units of the images do not matter. :func:`simulator_levels` turns the difference from
the same measurement on the calibration into simulator inputs (8-bit grey levels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Levels", "PhaseLevels", "measure_levels", "pool_levels", "relative_to", "simulator_levels"]


Levels = tuple[tuple[float, ...], tuple[float, ...]]
"""Simulator inputs ``(base, grain_sd)`` per phase, 8-bit grey levels (what :func:`simulator_levels` gives)."""


@dataclass(frozen=True)
class PhaseLevels:
    """Per-phase grey level above the pore (``base``) and per-grain contrast (``grain_sd``), in the units of
    the image measured (or of an anchor phase's level, :func:`relative_to`), with the interior pixel count of
    each (0: the phase was absent; its values NaN)."""

    base: tuple[float, ...]
    grain_sd: tuple[float, ...]
    pixels: tuple[int, ...]


def measure_levels(image: np.ndarray, labels: np.ndarray, *, n_classes: int, erode_px: int = 3,
                   smooth_px: float = 2.0, min_pixels: int = 200) -> PhaseLevels:
    """Interior grey statistics of each class of ``labels`` (uint8, 0..n_classes-1, other values ignored) on
    ``image`` (the raw SEM, any real dtype).

    ``base[k]``: median smoothed grey level of class k's interior minus class 0's (the pore); ``grain_sd[k]``:
    its standard deviation. A class with fewer than ``min_pixels`` interior pixels is absent (NaN, 0 px).
    ``image`` and ``labels`` have one shape.
    """
    from scipy.ndimage import binary_erosion, gaussian_filter

    if image.shape != labels.shape:
        raise ValueError(f"Expected labels of the image's shape {image.shape}. Got {labels.shape}.")
    smooth = gaussian_filter(np.asarray(image, np.float32), sigma=float(smooth_px), mode="reflect")
    structure = np.ones((3, 3), bool)
    medians, sds, counts = [], [], []
    for k in range(n_classes):
        inside = binary_erosion(labels == k, structure=structure, iterations=int(erode_px), border_value=0)
        values = smooth[inside]
        present = values.size >= min_pixels
        medians.append(float(np.median(values)) if present else np.nan)
        sds.append(float(values.std()) if present else np.nan)
        counts.append(int(values.size) if present else 0)
    pore = medians[0] if counts[0] else 0.0
    return PhaseLevels(base=tuple(m - pore for m in medians), grain_sd=tuple(sds), pixels=tuple(counts))


def relative_to(levels: PhaseLevels, anchor: int) -> PhaseLevels:
    """``levels`` divided by the level of class ``anchor`` (which becomes 1); without that phase (absent, or
    not above the pore) nothing can be related to it, and every class counts as absent."""
    unit = levels.base[anchor]
    if not levels.pixels[anchor] or not unit > 0:
        n = len(levels.base)
        return PhaseLevels(base=(np.nan,) * n, grain_sd=(np.nan,) * n, pixels=(0,) * n)
    return PhaseLevels(base=tuple(b / unit for b in levels.base), grain_sd=tuple(s / unit for s in levels.grain_sd),
                       pixels=levels.pixels)


def pool_levels(levels: Sequence[PhaseLevels]) -> PhaseLevels:
    """Pixel-weighted mean of several images' levels, per class (NaN where no image had the class)."""
    if not levels:
        raise ValueError("Expected the levels of at least one image. Got none.")
    n = len(levels[0].base)
    base: list[float] = []
    sd: list[float] = []
    pixels: list[int] = []
    for k in range(n):
        w = np.array([lv.pixels[k] for lv in levels], float)
        pixels.append(int(w.sum()))
        for out, field in ((base, "base"), (sd, "grain_sd")):
            values = [getattr(lv, field)[k] if lv.pixels[k] else 0.0 for lv in levels]
            out.append(float(np.average(values, weights=w)) if w.sum() else np.nan)
    return PhaseLevels(base=tuple(base), grain_sd=tuple(sd), pixels=tuple(pixels))


def simulator_levels(measured: PhaseLevels, reference: PhaseLevels, *, base: Sequence[float],
                     grain_sd: Sequence[float], unit: float) -> Levels:
    """Simulator inputs ``(base, grain_sd)`` (8-bit grey levels) that reproduce ``measured``: the
    calibration's inputs ``base`` / ``grain_sd`` moved by how far ``measured`` lies from ``reference`` (the
    same measurement on the calibration simulated like the campaign: same times and size, exact truth),
    both relative to one anchor phase whose level is ``unit`` grey levels in the reference.

    A measured level is biased by blur, texture and drift, but alike on both, so the difference carries over:
    ``base + unit·(measured − reference)``; contrasts add in quadrature, ``√(sd² + unit²·(m² − r²))``, kept
    ≥ 0.3·sd. The pore stays 0 (and the anchor where it is); a class absent from either measurement keeps
    the calibration's inputs.
    """
    out_base, out_sd = [], []
    for k, (b, s) in enumerate(zip(base, grain_sd, strict=True)):
        if k == 0 or not (measured.pixels[k] and reference.pixels[k]):
            out_base.append(float(b))
            out_sd.append(float(s))
            continue
        out_base.append(float(b + unit * (measured.base[k] - reference.base[k])))
        var = s * s + unit * unit * (measured.grain_sd[k] ** 2 - reference.grain_sd[k] ** 2)
        out_sd.append(float(max(np.sqrt(max(var, 0.0)), 0.3 * s)))
    return tuple(out_base), tuple(out_sd)
