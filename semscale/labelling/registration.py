"""Registration of an image's EDS maps against its SEM, and sampling of EDS onto the SEM grid.

Each EDS map is ``factor`` × coarser than the SEM (EDS pixel ``(i, j)`` covers SEM rows ``[i f, (i+1) f)``
and columns ``[j f, (j+1) f)``). It is compared with the SEM at EDS resolution: the SEM's "solid"
(non-pore) fraction in each EDS pixel against the EDS solid signal, by sub-pixel phase correlation. The
shift (SEM px) and a quality figure (correlation after correction) form a :class:`Registration`; the maps
are then sampled onto the SEM grid (bilinear, pixel-area aligned, shift applied). No I/O.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from semscale.errors import InputImageError
from semscale.labelling._common import EDS_SMOOTH_SIGMA, block_range
from semscale.labelling.rules import sem_split

if TYPE_CHECKING:
    import dask.array as da

log = logging.getLogger(__name__)

__all__ = [
    "MAX_SHIFT_PX",
    "MIN_QUALITY",
    "Registration",
    "block_mean",
    "check_eds_shape",
    "eds_on_sem_grid",
    "eds_solid_signal",
    "estimate_eds_shift",
    "register_arrays",
    "sample_eds",
    "sem_histogram",
    "sem_solid_fraction",
    "shift_native",
    "smooth_eds",
]

MIN_QUALITY = 0.5
"""Registration quality (Pearson r after correction) below which a warning is logged."""
MAX_SHIFT_PX: float | None = None
"""Estimated shifts larger than this (SEM px) are not applied; ``None``: every shift is applied."""


@dataclass(frozen=True)
class Registration:
    """Misregistration of an EDS map set against its SEM image.

    ``shift_px`` (dy, dx) in SEM px is applied to the EDS maps: registered(y, x) = upsampled(y - dy, x - dx).
    ``quality`` is the Pearson correlation (at EDS resolution) between the SEM solid fraction and the
    corrected EDS solid signal; ``quality_before`` the same without correction.
    """

    shift_px: tuple[float, float]
    quality: float
    quality_before: float
    factor: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shift_px"] = [float(v) for v in self.shift_px]
        return d


def _axis_weights(n_src: int, start: int, stop: int, factor: int, shift: float) -> tuple[np.ndarray, ...]:
    """Linear-interpolation indices/weights mapping SEM coordinates ``start..stop-1`` to an EDS axis.

    SEM pixel centre ``y`` lies at EDS coordinate ``(y - shift - (f - 1) / 2) / f`` (EDS pixel ``i``
    covers SEM ``[i f, (i+1) f)``, so its centre is at SEM ``i f + (f - 1) / 2``); edges are clamped.
    """
    y = np.arange(start, stop, dtype=np.float64)
    u = (y - shift - (factor - 1) / 2.0) / factor
    u = np.clip(u, 0.0, n_src - 1.0)
    i0 = np.floor(u).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_src - 1)
    w = (u - i0).astype(np.float32)
    return i0, i1, w


def sample_eds(eds: np.ndarray, rows: tuple[int, int], cols: tuple[int, int], factor: int,
               shift: tuple[float, float]) -> np.ndarray:
    """Bilinear sample of the EDS map on SEM rows/cols ranges (float32)."""
    e = np.asarray(eds, dtype=np.float32)
    r0, r1, rw = _axis_weights(e.shape[0], rows[0], rows[1], factor, shift[0])
    c0, c1, cw = _axis_weights(e.shape[1], cols[0], cols[1], factor, shift[1])
    a = e[r0] * (1 - rw)[:, None] + e[r1] * rw[:, None]
    return a[:, c0] * (1 - cw)[None, :] + a[:, c1] * cw[None, :]


def check_eds_shape(eds_shape: tuple[int, ...], shape: tuple[int, ...], factor: int) -> None:
    want = (math.ceil(shape[0] / factor), math.ceil(shape[1] / factor))
    if tuple(eds_shape) != want:
        raise InputImageError(
            f"Expected an EDS map of shape {want} (ceil(SEM shape / {factor})) for SEM shape {tuple(shape)}. "
            f"Got {tuple(eds_shape)}. Check the EDS factor of the image."
        )


def eds_on_sem_grid(
    eds: np.ndarray,
    *,
    factor: int,
    shape: tuple[int, int],
    shift: tuple[float, float] = (0.0, 0.0),
    chunks: Any = None,
) -> np.ndarray | da.Array:
    """Sample an EDS map (``ceil(H/f) × ceil(W/f)``) onto the SEM grid ``shape`` (float32, bilinear).

    Pixel-area aligned (EDS pixel centres at SEM ``i f + (f-1)/2``), ``shift`` (SEM px) applied as in
    :class:`Registration`, edges clamped. ``chunks=None`` → numpy; otherwise a dask array with those
    chunks whose blocks equal the numpy result exactly.
    """
    eds = np.asarray(eds)
    check_eds_shape(eds.shape, shape, factor)
    shift = (float(shift[0]), float(shift[1]))
    if chunks is None:
        return sample_eds(eds, (0, shape[0]), (0, shape[1]), factor, shift)
    import dask.array as da
    from dask.array.core import normalize_chunks

    chunks = normalize_chunks(chunks, shape=shape, dtype=np.float32)

    def block(block_info: Any = None) -> np.ndarray:
        rows, cols = block_range(chunks, block_info[None]["chunk-location"])
        return sample_eds(eds, rows, cols, factor, shift)

    return da.map_blocks(block, chunks=chunks, dtype=np.float32, meta=np.empty((0, 0), np.float32))


def block_mean(image: np.ndarray | da.Array, *, factor: int) -> np.ndarray | da.Array:
    """Mean of each ``factor × factor`` block (the area an EDS pixel covers), float32, shape
    ``ceil(H/f) × ceil(W/f)``; partial edge blocks average only their real pixels. Dask in → dask out."""
    import dask.array as da

    h, w = image.shape
    ph, pw = (-h) % factor, (-w) % factor
    lib: Any = da if isinstance(image, da.Array) else np
    x: Any = image.astype(np.float32)
    ones: Any = np.ones((h, w), np.float32) if lib is np else da.ones((h, w), dtype=np.float32, chunks=x.chunks)
    if ph or pw:
        x = lib.pad(x, ((0, ph), (0, pw)))
        ones = lib.pad(ones, ((0, ph), (0, pw)))
    if lib is da:
        chunks = tuple(max(factor, c - c % factor) for c in x.chunksize)
        x, ones = x.rechunk(chunks), ones.rechunk(chunks)
        s = da.coarsen(np.sum, x, {0: factor, 1: factor})
        n = da.coarsen(np.sum, ones, {0: factor, 1: factor})
    else:
        hh, ww = x.shape
        s = x.reshape(hh // factor, factor, ww // factor, factor).sum(axis=(1, 3))
        n = ones.reshape(hh // factor, factor, ww // factor, factor).sum(axis=(1, 3))
    return (s / n).astype(np.float32)


def sem_solid_fraction(sem_smooth: np.ndarray | da.Array, *, threshold: float, factor: int
                       ) -> np.ndarray | da.Array:
    """Fraction of each EDS pixel's ``factor × factor`` SEM block that is solid (smoothed SEM > threshold),
    float32, EDS-shaped. Dask in → dask out."""
    return block_mean(sem_smooth > threshold, factor=factor)


def eds_solid_signal(eds: Mapping[str, np.ndarray], *, scales: Mapping[str, float]) -> np.ndarray:
    """EDS evidence of solid matter at EDS resolution: the largest of the channels, each divided by its
    scale (float32). Pores emit (almost) nothing; every solid phase emits at least one element strongly,
    so all solid phases score about 1 (a sum would rank them by their number of elements)."""
    return np.max([np.asarray(m, np.float32) / np.float32(scales[el]) for el, m in eds.items()], axis=0)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a.ravel().astype(np.float64)
    b = b.ravel().astype(np.float64)
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


def estimate_eds_shift(
    sem_solid: np.ndarray, eds_solid: np.ndarray, *, factor: int, upsample_factor: int = 50,
    max_shift_px: float | None = MAX_SHIFT_PX,
) -> Registration:
    """Sub-pixel shift (SEM px) that registers ``eds_solid`` onto ``sem_solid`` (both at EDS resolution).

    Cross-correlation (phase correlation without whitening, which is more robust to Poisson noise) of
    mean-free, Tukey-windowed maps, refined by upsampled DFT (``upsample_factor`` per EDS px). The shift is
    scaled by ``factor`` to SEM px. Quality = Pearson r of the two maps after correction (border excluded).
    """
    from scipy import ndimage
    from scipy.signal.windows import tukey
    from skimage.registration import phase_cross_correlation

    ref = np.asarray(sem_solid, np.float64)
    mov = np.asarray(eds_solid, np.float64)
    if ref.shape != mov.shape:
        raise InputImageError(f"Expected `eds_solid` shaped like `sem_solid` {ref.shape}. Got {mov.shape}.")
    win = np.outer(tukey(ref.shape[0], 0.25), tukey(ref.shape[1], 0.25))
    r = (ref - ref.mean()) * win
    m = (mov - mov.mean()) * win
    shift_e, _, _ = phase_cross_correlation(
        r, m, upsample_factor=upsample_factor, normalization=None, disambiguate=False
    )
    shift_e = np.asarray(shift_e, dtype=np.float64)
    if max_shift_px is not None and np.any(np.abs(shift_e * factor) > max_shift_px):
        log.warning("EDS shift %s SEM px exceeds max_shift_px=%s; not corrected.", shift_e * factor,
                    max_shift_px)
        shift_e = np.zeros(2)
    b = math.ceil(np.abs(shift_e).max()) + 2
    inner = (slice(b, -b), slice(b, -b)) if min(ref.shape) > 4 * b else (slice(None), slice(None))
    moved = ndimage.shift(mov, shift_e, order=1, mode="nearest")
    q_after = _pearson(ref[inner], moved[inner])
    q_before = _pearson(ref[inner], mov[inner])
    return Registration(
        shift_px=(float(shift_e[0] * factor), float(shift_e[1] * factor)),
        quality=q_after, quality_before=q_before, factor=int(factor),
    )


def smooth_eds(eds: Mapping[str, np.ndarray], *, sigma: float = EDS_SMOOTH_SIGMA) -> dict[str, np.ndarray]:
    """Gaussian-smoothed EDS maps at their native resolution (σ in EDS px; float32; edges 'nearest').

    EDS counts are Poisson-noisy (tens of counts per pixel) while the interaction volume already blurs
    them over several EDS pixels, so a σ of about one EDS pixel removes most noise and little detail.
    """
    from scipy import ndimage

    if sigma <= 0:
        return {el: np.asarray(m, np.float32) for el, m in eds.items()}
    return {el: ndimage.gaussian_filter(np.asarray(m, np.float32), sigma, mode="nearest")
            for el, m in eds.items()}


def shift_native(eds: Mapping[str, np.ndarray], *, shift_px: tuple[float, float], factor: int
                 ) -> dict[str, np.ndarray]:
    """EDS maps shifted at their own resolution by a shift given in SEM px (bilinear, edges 'nearest')."""
    from scipy import ndimage

    s = (shift_px[0] / factor, shift_px[1] / factor)
    return {el: ndimage.shift(np.asarray(m, np.float32), s, order=1, mode="nearest") for el, m in eds.items()}


def sem_histogram(sem_smooth: np.ndarray | da.Array, nbins: int = 512) -> tuple[Any, np.ndarray]:
    """Counts (numpy, or lazy for dask input) and bin edges of the smoothed normalised SEM on [-0.5, 1.5]."""
    import dask.array as da

    edges = np.linspace(-0.5, 1.5, nbins + 1)
    if isinstance(sem_smooth, da.Array):
        counts, _ = da.histogram(sem_smooth, bins=edges)
    else:
        counts, _ = np.histogram(sem_smooth, bins=edges)
    return counts, edges


def register_arrays(
    sem_s: np.ndarray | da.Array, eds_s: Mapping[str, np.ndarray], *, factor: int, image_id: str,
    min_quality: float = MIN_QUALITY, max_shift_px: float | None = MAX_SHIFT_PX,
) -> tuple[Registration, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Registration of smoothed EDS maps against a smoothed normalised SEM (computes the SEM's histogram,
    solid fraction and mean per EDS pixel; all are returned for the rules). Warns when the quality is
    below ``min_quality``."""
    import dask

    counts, edges = sem_histogram(sem_s)
    counts = np.asarray(dask.compute(counts)[0])
    threshold = sem_split(counts, edges).threshold
    solid_sem, sem_mean = (np.asarray(v) for v in dask.compute(
        sem_solid_fraction(sem_s, threshold=threshold, factor=factor), block_mean(sem_s, factor=factor)))
    scales = {el: max(float(np.percentile(m, 99.0)), 1e-6) for el, m in eds_s.items()}
    reg = estimate_eds_shift(solid_sem, eds_solid_signal(eds_s, scales=scales), factor=factor,
                             max_shift_px=max_shift_px)
    if reg.quality < min_quality:
        log.warning(
            "EDS registration of %s is poor: correlation %.2f after correction (%.2f before), shift %s px. "
            "Check that the EDS maps belong to this image and their factor (%d).",
            image_id, reg.quality, reg.quality_before, tuple(round(v, 2) for v in reg.shift_px), factor,
        )
    return reg, solid_sem, sem_mean, (counts, edges)
