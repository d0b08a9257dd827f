"""How realistic and how learnable the simulated images are: grey-level statistics next to the real
patch, and the accuracy of Bayes-optimal per-pixel classifiers on the grey level or a context code."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from semscale.errors import ConfigError
from semscale.synth.params import NI, PHASES, REAL_PATCH, YSZ
from semscale.synth.simulate import SynthImage

__all__ = [
    "CONTEXT_BINS",
    "CONTEXT_SIGMA_PX",
    "as_grey8",
    "bayes_accuracy",
    "context_codes",
    "local_features",
    "realism_table",
]

CONTEXT_SIGMA_PX = 2.0
"""Gaussian window (px) of the local mean and std in :func:`context_codes`."""
CONTEXT_BINS = 32
"""Quantisation bins per feature in :func:`context_codes` (``CONTEXT_BINS²`` codes)."""


def as_grey8(sem: np.ndarray) -> np.ndarray:
    """SEM image as integer 8-bit grey levels (16-bit images are divided by 257)."""
    if sem.dtype == np.uint8:
        return sem
    return np.clip(np.rint(sem.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)


def bayes_accuracy(codes: np.ndarray, labels: np.ndarray, *, n_codes: int, n_classes: int) -> float:
    """Accuracy of argmax_k P(k | code) evaluated on the same pixels (an upper bound)."""
    if codes.size == 0:
        return float("nan")
    hist = np.bincount(codes.astype(np.int64) * n_classes + labels, minlength=n_codes * n_classes)
    hist = hist.reshape(n_codes, n_classes)
    return float(hist.max(axis=1).sum() / codes.size)


def local_features(sem8: np.ndarray, *, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Local mean and local std (float32) of the grey levels in a Gaussian window ``sigma`` (px)."""
    x = sem8.astype(np.float32)
    m = ndi.gaussian_filter(x, sigma)
    v = ndi.gaussian_filter(x * x, sigma) - m * m
    return m, np.sqrt(np.maximum(v, 0.0))


def context_codes(
    sem: np.ndarray, *, sigma_px: float = CONTEXT_SIGMA_PX, bins: int = CONTEXT_BINS
) -> np.ndarray:
    """Quantised (local mean, local std) code per pixel, ``bins²`` codes (Gaussian window ``sigma_px``).

    A deliberately simple context feature: per-pixel Bayes on it shows how much texture / neighbourhood
    adds over the grey level alone.
    """
    m, s = local_features(as_grey8(sem), sigma=sigma_px)
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
        raise ConfigError("Expected at least one SynthImage for `images`. Got none; pass a non-empty list.")
    g = np.concatenate([as_grey8(im.sem).ravel() for im in images]).astype(np.int64)
    t = np.concatenate([im.truth.ravel() for im in images]).astype(np.int64)
    c = np.concatenate([context_codes(im.sem).ravel() for im in images])
    two = (t == NI) | (t == YSZ)
    n_ctx = CONTEXT_BINS * CONTEXT_BINS
    return {
        "phases": _phase_rows(g, t),
        "best_grey_level_accuracy": bayes_accuracy(g, t, n_codes=256, n_classes=4),
        "best_grey_level_accuracy_ni_ysz": bayes_accuracy(g[two], t[two], n_codes=256, n_classes=4),
        "context_feature_accuracy": bayes_accuracy(c, t, n_codes=n_ctx, n_classes=4),
        "context_feature_accuracy_ni_ysz": bayes_accuracy(c[two], t[two], n_codes=n_ctx, n_classes=4),
        "n_images": len(images),
        "n_pixels": int(t.size),
    }


def _phase_rows(grey: np.ndarray, truth: np.ndarray) -> dict[str, dict[str, float]]:
    """Per phase: mean, std and area fraction of the pooled pixels next to :data:`REAL_PATCH`."""
    phases: dict[str, dict[str, float]] = {}
    for k, name in enumerate(PHASES):
        sel = truth == k
        vals = grey[sel].astype(np.float64)
        phases[name] = {
            "mean": float(vals.mean()) if vals.size else float("nan"),
            "std": float(vals.std()) if vals.size else float("nan"),
            "fraction": float(sel.mean()),
            "real_mean": REAL_PATCH[name]["mean"],
            "real_std": REAL_PATCH[name]["std"],
            "real_fraction": REAL_PATCH[name]["fraction"],
        }
    return phases
