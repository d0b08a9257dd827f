"""Image degradations of the robustness sweep, as pure numpy kernels on one block.

Grey values are those of the SEM (any integer dtype); :func:`to_grey` brings a degraded float block back to
that dtype (rounded, clipped), as a detector would record it. Blur and resampling need context around a
block: :func:`blur_radius` and :func:`resample_span` say how much, so a blockwise run equals the
whole-image one exactly.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["blur", "blur_radius", "brighten", "full_scale", "gauss_poisson", "resample", "resample_span",
           "resampled_length", "to_grey"]

TRUNCATE = 4.0
"""Gaussian kernels are cut at this many σ (scipy's default)."""


def full_scale(dtype: np.dtype) -> float:
    """The largest grey value of an integer ``dtype`` (255 for uint8); 1.0 for floats."""
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0


def to_grey(block: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``block`` rounded and clipped to the range of ``dtype`` (an integer SEM dtype), in that dtype."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "ui":
        return block.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.rint(block), info.min, info.max).astype(dtype)


def blur_radius(sigma: float) -> int:
    """Context (px) each side of a block that :func:`blur` with ``sigma`` reads."""
    return int(TRUNCATE * float(sigma) + 0.5)


def blur(block: np.ndarray, *, sigma: float) -> np.ndarray:
    """Gaussian blur (σ in px, mirrored borders; float64). σ = 0 returns the block as float64."""
    from scipy.ndimage import gaussian_filter

    x = block.astype(np.float64)
    return gaussian_filter(x, sigma, mode="reflect", truncate=TRUNCATE) if sigma > 0 else x


def brighten(block: np.ndarray, *, factor: float) -> np.ndarray:
    """Grey values times ``factor`` (float64)."""
    return block.astype(np.float64) * float(factor)


def gauss_poisson(block: np.ndarray, *, sigma: float, photons: float, scale: float,
                  rng: np.random.Generator) -> np.ndarray:
    """``I' = Poisson(I·C)/C + N(0, σ)`` with ``I`` = grey / ``scale`` (0..1) and ``C`` = ``photons`` (0: no
    Poisson part); returned in grey values (float64)."""
    i = np.clip(block.astype(np.float64) / scale, 0.0, None)
    if photons > 0:
        i = rng.poisson(i * photons) / photons
    if sigma > 0:
        i = i + rng.normal(0.0, sigma, size=i.shape)
    return i * scale


def resampled_length(n: int, factor: float) -> int:
    """Length of an axis of ``n`` px resampled by ``factor`` (at least 1)."""
    return max(1, round(n * factor))


def _source(out: np.ndarray, factor: float) -> np.ndarray:
    """Source coordinate of output pixel centres (pixel-area convention: centres map onto centres)."""
    return (out + 0.5) / factor - 0.5


def _prefilter_sigma(factor: float) -> float:
    return max(0.0, (1.0 / factor - 1.0) / 2.0)


def resample_span(out_span: tuple[int, int], *, factor: float, order: int) -> tuple[int, int]:
    """The input span (global px, may reach beyond the image: read it mirrored) that output span
    ``out_span`` of :func:`resample` needs."""
    if order == 0:
        lo = math.floor((out_span[0] + 0.5) / factor)
        hi = math.floor((out_span[1] - 0.5) / factor) + 1
        return lo, hi
    pad = blur_radius(_prefilter_sigma(factor)) + 1
    c = _source(np.array(out_span, np.float64) - np.array([0.0, 1.0]), factor)
    return math.floor(c[0]) - pad, math.ceil(c[1]) + 1 + pad


def resample(src: np.ndarray, *, origin: tuple[int, int], out_rows: tuple[int, int], out_cols: tuple[int, int],
             factor: float, order: int) -> np.ndarray:
    """Output rows/cols (global spans) of the image resampled by ``factor``, from ``src``: the input read
    (mirrored) over :func:`resample_span` of each span, its pixel ``[0, 0]`` at global ``origin``.

    ``order`` 1: bilinear grey values (float64), anti-aliased when shrinking (Gaussian, σ = (1/f − 1)/2
    input px); ``order`` 0: nearest (labels; dtype kept)."""
    if order == 0:
        iy = np.floor((np.arange(*out_rows) + 0.5) / factor).astype(np.int64) - origin[0]
        ix = np.floor((np.arange(*out_cols) + 0.5) / factor).astype(np.int64) - origin[1]
        return src[np.ix_(iy, ix)]
    x = blur(src, sigma=_prefilter_sigma(factor))
    (iy, wy), (ix, wx) = (_linear(out_rows, factor, origin[0]), _linear(out_cols, factor, origin[1]))
    top = x[iy][:, ix] * (1 - wx) + x[iy][:, ix + 1] * wx
    bottom = x[iy + 1][:, ix] * (1 - wx) + x[iy + 1][:, ix + 1] * wx
    return top * (1 - wy)[:, None] + bottom * wy[:, None]


def _linear(span: tuple[int, int], factor: float, origin: int) -> tuple[np.ndarray, np.ndarray]:
    """Local index of the left neighbour and the weight of the right one, for output pixels ``span``; both
    from the global coordinate, so every block computes the same numbers as the whole image."""
    c = _source(np.arange(*span, dtype=np.float64), factor)
    left = np.floor(c)
    return left.astype(np.int64) - origin, c - left
