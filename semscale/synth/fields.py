"""Random fields, bilinear upsampling, distances and quantiles: the numeric building blocks of the
simulator (numpy in → numpy out, float32 where it matters for speed)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["distance_to", "gaussian_field", "quantile", "upsample_linear", "white_noise_std"]


def upsample_linear(
    lo: np.ndarray, shape: tuple[int, ...], step: float, offset: float = 0.0
) -> np.ndarray:
    """Bilinear interpolation onto a (H, W) grid of ``lo``, whose sample k lies at px ``k*step+offset``."""
    out = lo
    for axis, n in enumerate(shape):
        pos = np.maximum((np.arange(n, dtype=np.float32) - offset) / step, 0.0)
        i0 = np.minimum(pos.astype(np.int64), lo.shape[axis] - 2)
        fr = (pos - i0).astype(np.float32)
        a = np.take(out, i0, axis=axis)
        b = np.take(out, i0 + 1, axis=axis)
        fr = fr[:, None] if axis == 0 else fr[None, :]
        out = a + (b - a) * fr
    return out.astype(np.float32, copy=False)


def white_noise_std(sigma: float) -> float:
    """Std of unit white noise after ``scipy.ndimage.gaussian_filter`` with ``sigma`` (2-D, exact)."""
    r = int(4.0 * sigma + 0.5)
    x = np.arange(-r, r + 1, dtype=float)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    return float((k**2).sum())


def gaussian_field(shape: tuple[int, ...], sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian random field, zero mean, unit variance, correlation σ ``sigma_px`` (float32).

    Normalised analytically (not by the sample std), so a field's amplitude does not depend on the
    image size.
    """
    if sigma_px >= 6.0:  # smooth: simulate on a coarse grid and interpolate (much faster)
        step = sigma_px / 3.0
        margin = 13
        lo_shape = (int(shape[0] / step) + 2 + 2 * margin, int(shape[1] / step) + 2 + 2 * margin)
        lo = rng.standard_normal(lo_shape, dtype=np.float32)
        lo = ndi.gaussian_filter(lo, 3.0)[margin:-margin, margin:-margin]
        lo /= np.float32(white_noise_std(3.0))
        return upsample_linear(lo, shape, step)
    f = rng.standard_normal(shape, dtype=np.float32)
    if sigma_px > 0:
        f = ndi.gaussian_filter(f, sigma_px, mode="wrap")
        f /= np.float32(white_noise_std(sigma_px))
    return f


def distance_to(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance (px, float32) to the nearest True pixel, computed on a 2× coarser grid.

    The mask is max-pooled over 2 × 2 blocks (thin features survive), so distances are accurate to about
    one pixel; used only where the result is modulated or smoothed further, for speed.
    """
    h, w = mask.shape
    m = np.pad(mask, ((0, h % 2), (0, w % 2)))
    lo = m.reshape(m.shape[0] // 2, 2, m.shape[1] // 2, 2).any(axis=(1, 3))
    if not lo.any():
        return np.full(mask.shape, np.float32(np.hypot(h, w)))
    d_lo = ndi.distance_transform_edt(~lo).astype(np.float32) * np.float32(2.0)
    d = upsample_linear(np.pad(d_lo, ((0, 1), (0, 1)), mode="edge"), mask.shape, 2.0, 0.5)
    d[mask] = 0.0
    return d


def quantile(values: np.ndarray, q: float) -> float:
    """The ``q`` quantile of ``values`` by partition (q in [0, 1])."""
    v = values.ravel()
    if v.size == 0:
        return 0.0
    k = min(max(round(q * (v.size - 1)), 0), v.size - 1)
    return float(np.partition(v, k)[k])
