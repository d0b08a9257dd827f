"""Intensity normalisation of the network's input (pure functions).

semscale's own networks see ``(x - lo) / (hi - lo)`` with ``lo``/``hi`` robust percentiles of the *whole image*, computed
once at ingest and stored in the image's attrs. A pixel's input therefore never depends on the window or the
Dask chunk that holds it, which keeps blockwise inference independent of chunking and stride.

Models imported from the published study normalise each window instead (:func:`patch_l2`, what
``keras.utils.normalize(x, axis=1)`` does to a batch of windows); inference applies it to every window
just before the network, on raw grey values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["DEFAULT_PERCENTILES", "NORMALISATIONS", "apply_norm", "histogram", "norm_from_histogram", "patch_l2"]

DEFAULT_PERCENTILES: tuple[float, float] = (0.5, 99.5)
NORMALISATIONS: tuple[str, ...] = ("image", "patch-l2")
"""How a model expects its input: ``image`` (the stored per-image percentiles, :func:`apply_norm`) or
``patch-l2`` (each window by its own L2 norms, :func:`patch_l2`, on raw grey values)."""


def histogram(block: np.ndarray, *, nbins: int, step: int = 1 << 20) -> np.ndarray:
    """Counts of each integer grey value ``0..nbins-1`` in ``block`` (int64, shape ``(nbins,)``).

    Counted ``step`` pixels at a time: ``np.bincount`` converts its input to int64, which for a whole
    band of a wide image would cost eight times the band's memory.
    """
    flat = np.asarray(block).reshape(-1)
    counts = np.zeros(nbins, np.int64)
    for start in range(0, flat.size, step):
        counts += np.bincount(flat[start:start + step], minlength=nbins)[:nbins]
    return counts


def norm_from_histogram(
    hist: np.ndarray, *, percentiles: tuple[float, float] = DEFAULT_PERCENTILES
) -> dict[str, Any]:
    """Robust range of an integer image from its grey-value histogram.

    Returns the attrs dict stored per image: ``{"method", "percentiles", "lo", "hi"}``; ``hi > lo`` always
    (a constant image gets ``hi = lo + 1``).
    """
    hist = np.asarray(hist, dtype=np.float64)
    total = hist.sum()
    if total <= 0:
        raise ValueError("Expected a non-empty histogram for `hist`. Got zero counts.")
    cdf = np.cumsum(hist) / total
    p_lo, p_hi = percentiles
    lo = float(np.searchsorted(cdf, p_lo / 100.0, side="left"))
    hi = float(np.searchsorted(cdf, p_hi / 100.0, side="left"))
    if hi <= lo:
        hi = lo + 1.0
    return {"method": "percentile", "percentiles": [float(p_lo), float(p_hi)], "lo": lo, "hi": hi}


def apply_norm(block: Any, norm: dict[str, Any]) -> Any:
    """Map raw grey values to network input, float32: ``(x - lo) / (hi - lo)`` (no clipping).

    Works on numpy and cupy arrays alike (it only uses array arithmetic).
    """
    lo = float(norm["lo"])
    scale = 1.0 / (float(norm["hi"]) - lo)
    return (block.astype("float32") - np.float32(lo)) * np.float32(scale)


def patch_l2(windows: Any, *, axis: int = 1) -> Any:
    """Each window divided by its L2 norm along ``axis`` (1: the rows of an ``(n, h, w, c)`` batch), float32.

    The same numbers as ``keras.utils.normalize(windows, axis=1, order=2)``: a zero norm counts as 1. numpy
    or cupy in, the same out (only array methods are used).
    """
    x = windows.astype("float32")
    norm = (x * x).sum(axis=axis, keepdims=True) ** 0.5
    norm[norm == 0] = 1.0
    return x / norm
