"""EDS-guided target labels without a manual step: registration, features, automatic seeds, random forest.

The paper made its training targets with Ilastik (a random-forest pixel classifier on SEM + EDS, about four
hours of semi-manual work per image). This module does the same automatically and blockwise:

1. **Registration.** Each EDS map (``factor`` × coarser than the SEM; EDS pixel ``(i, j)`` covers SEM rows
   ``[i f, (i+1) f)`` and columns ``[j f, (j+1) f)``) is compared with the SEM at EDS resolution: the SEM's
   "solid" (non-pore) fraction in each EDS pixel against the EDS solid signal, by sub-pixel phase correlation.
   The shift (SEM px) and a quality figure (correlation after correction) are recorded; a poor quality is
   logged as a warning. The EDS maps are then sampled onto the SEM grid (bilinear, pixel-area aligned, shift
   applied) block by block.
2. **Features.** Multiscale SEM features (Gaussian, gradient magnitude, Laplacian of Gaussian, Hessian
   eigenvalues, local standard deviation at each σ) plus the registered EDS channels, their ratios and the
   phase fractions unmixed with the image's own phase signatures, computed per block with a halo that
   covers the largest filter, so blockwise = whole-image.
3. **Seeds.** Pixels whose EDS evidence is unambiguous (thresholds found per image from the data by Otsu,
   with a confidence margin), consistent with the SEM (pores dark, solids not), and away from EDS phase
   boundaries (eroded masks), balanced per class. Optional scribbles (255 = unlabelled) add or override.
4. **Classifier.** A scikit-learn random forest trained on the seeds pooled over images, applied to every
   pixel block by block. Nothing is pickled to disk; retraining takes seconds.
5. **Edge snapping.** The forest follows the blurred EDS a few pixels past the sharp SEM edges; every small
   region of an SEM over-segmentation (watershed of the gradient, a few px each) takes its majority label
   → ``labels/target``. On simulator campaigns this lifts accuracy vs truth by about one point.

Pure array functions (numpy in → numpy out, dask in → dask out) come first; :func:`label_store` does I/O.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from semscale import IGNORE_LABEL
from semscale._version import __version__
from semscale.errors import InputImageError, StoreError

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SIGMAS",
    "EdsRules",
    "Registration",
    "Split",
    "block_mean",
    "eds_on_sem_grid",
    "eds_quantities",
    "eds_solid_signal",
    "estimate_eds_shift",
    "feature_names",
    "feature_stack",
    "fit_rules",
    "label_store",
    "load_scribbles",
    "predict_labels",
    "register_image",
    "seed_candidates",
    "select_seeds",
    "sem_features",
    "sem_solid_fraction",
    "shift_native",
    "smooth",
    "smooth_eds",
    "boundary_seed_candidates",
    "refine_labels",
    "superpixels",
    "sem_class_stats",
    "train_classifier",
    "unmix",
]

DEFAULT_SIGMAS: tuple[float, ...] = (0.7, 1.0, 2.0, 4.0, 8.0, 16.0)
"""Scales (SEM px) of the SEM features."""
TRUNCATE = 4.0
"""Gaussian kernels are cut at ``TRUNCATE * sigma`` (scipy's default); the block halo covers that."""
ELEMENTS: tuple[str, ...] = ("Ni", "O", "Zr")
"""EDS channels the seeding rules need (YSZ = ZrO2 contains O; NiO contains Ni and O; Ni only Ni)."""
PHASES: tuple[str, ...] = ("pore", "NiO", "Ni", "YSZ")
EDS_SMOOTH_SIGMA = 1.0
"""σ (EDS px) of the smoothing applied to the native EDS maps before rules and features."""
NIO_SEM_PERCENTILE = 10.0
"""NiO seeds must be darker (SEM smoothed at σ = 2 px) than this percentile of confident-Ni EDS pixels."""
SEM_SMOOTH_SIGMA = 1.0
"""σ (SEM px) of the smoothing applied before the SEM pore threshold."""
MIN_QUALITY = 0.5
"""Registration quality (Pearson r after correction) below which a warning is logged."""
NIO_MIN_RELATIVE_O = 0.1
"""NiO counts as present when the O-richer half (Otsu) of the Ni-bearing pixels holds, in the median, at
least this fraction of YSZ's O beyond what their Zr explains (NiO holds about as much O per volume as
ZrO2, so even thin, EDS-blurred NiO shells exceed it; metallic Ni stays near 0)."""
NI_MAX_OX_SIDE_RATIO = 0.6
"""Metallic Ni counts as present when the O-poorer side's median ``ox`` is below this fraction of the
O-richer side's (a single NiO population split by Otsu gives sides within about ±1 σ, ratio ≈ 0.8)."""


# =====================================================================================================
# Registration and sampling of EDS onto the SEM grid
# =====================================================================================================
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


def _sample(eds: np.ndarray, rows: tuple[int, int], cols: tuple[int, int], factor: int,
            shift: tuple[float, float]) -> np.ndarray:
    """Bilinear sample of the EDS map on SEM rows/cols ranges (float32)."""
    e = np.asarray(eds, dtype=np.float32)
    r0, r1, rw = _axis_weights(e.shape[0], rows[0], rows[1], factor, shift[0])
    c0, c1, cw = _axis_weights(e.shape[1], cols[0], cols[1], factor, shift[1])
    a = e[r0] * (1 - rw)[:, None] + e[r1] * rw[:, None]
    return a[:, c0] * (1 - cw)[None, :] + a[:, c1] * cw[None, :]


def _block_range(chunks: tuple[tuple[int, ...], ...], loc: tuple[int, ...]) -> list[tuple[int, int]]:
    out = []
    for axis_chunks, i in zip(chunks, loc):
        start = int(sum(axis_chunks[:i]))
        out.append((start, start + int(axis_chunks[i])))
    return out


def _check_eds_shape(eds_shape: tuple[int, ...], shape: tuple[int, int], factor: int) -> None:
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
) -> Any:
    """Sample an EDS map (``ceil(H/f) × ceil(W/f)``) onto the SEM grid ``shape`` (float32, bilinear).

    Pixel-area aligned (EDS pixel centres at SEM ``i f + (f-1)/2``), ``shift`` (SEM px) applied as in
    :class:`Registration`, edges clamped. ``chunks=None`` → numpy; otherwise a dask array with those
    chunks whose blocks equal the numpy result exactly.
    """
    eds = np.asarray(eds)
    _check_eds_shape(eds.shape, shape, factor)
    shift = (float(shift[0]), float(shift[1]))
    if chunks is None:
        return _sample(eds, (0, shape[0]), (0, shape[1]), factor, shift)
    import dask.array as da
    from dask.array.core import normalize_chunks

    chunks = normalize_chunks(chunks, shape=shape, dtype=np.float32)

    def block(block_info: Any = None) -> np.ndarray:
        rows, cols = _block_range(chunks, block_info[None]["chunk-location"])
        return _sample(eds, rows, cols, factor, shift)

    return da.map_blocks(block, chunks=chunks, dtype=np.float32, meta=np.empty((0, 0), np.float32))


def _gaussian(x: np.ndarray, sigma: float, order: int | tuple[int, int] = 0) -> np.ndarray:
    from scipy import ndimage

    return ndimage.gaussian_filter(x, sigma, order=order, mode="reflect", truncate=TRUNCATE)


def _halo(sigma: float) -> int:
    """Radius (px) of scipy's Gaussian kernel for ``sigma`` at :data:`TRUNCATE`."""
    return int(TRUNCATE * float(sigma) + 0.5)


def smooth(image: Any, *, sigma: float = SEM_SMOOTH_SIGMA) -> Any:
    """Gaussian smoothing (σ in px, reflect boundary), float32; dask in → dask out (exact blockwise)."""
    import dask.array as da

    if isinstance(image, da.Array):
        return da.map_overlap(
            lambda b: _gaussian(b.astype(np.float32), sigma), image, depth=_halo(sigma),
            boundary="reflect", dtype=np.float32, meta=np.empty((0, 0), np.float32),
        )
    return _gaussian(np.asarray(image, dtype=np.float32), sigma)


def block_mean(image: Any, *, factor: int) -> Any:
    """Mean of each ``factor × factor`` block (the area an EDS pixel covers), float32, shape
    ``ceil(H/f) × ceil(W/f)``; partial edge blocks average only their real pixels. Dask in → dask out."""
    import dask.array as da

    h, w = image.shape
    ph, pw = (-h) % factor, (-w) % factor
    lib = da if isinstance(image, da.Array) else np
    x = image.astype(np.float32)
    ones = np.ones((h, w), np.float32) if lib is np else da.ones((h, w), dtype=np.float32, chunks=x.chunks)
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


def sem_solid_fraction(sem_smooth: Any, *, threshold: float, factor: int) -> Any:
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
    max_shift_px: float | None = None,
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


# =====================================================================================================
# Features
# =====================================================================================================
UNMIX_PHASES: tuple[str, ...] = ("NiO", "Ni", "YSZ")
DEFAULT_ENDMEMBERS: dict[str, tuple[float, float, float]] = {
    "NiO": (0.5, 0.8, 0.0), "Ni": (1.0, 0.0, 0.0), "YSZ": (0.0, 0.9, 0.9),
}
"""Scaled (Ni, O, Zr) signatures used when an image provides none (see :func:`unmix`)."""


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


_SEM_FEATURES_PER_SIGMA = ("gauss", "gradmag", "log", "hess_hi", "hess_lo", "std")


def feature_names(sigmas: Sequence[float] = DEFAULT_SIGMAS, *, with_eds: bool = True) -> list[str]:
    """Names of the feature channels, in the order of :func:`feature_stack`."""
    names = ["sem"] + [f"{k}_{s:g}" for s in sigmas for k in _SEM_FEATURES_PER_SIGMA]
    return names + (_eds_feature_names(ELEMENTS) if with_eds else [])


def _eds_feature_names(elements: Sequence[str]) -> list[str]:
    return [f"eds_{el}" for el in ELEMENTS] + ["eds_solid", "eds_zr", "eds_ox"] + [
        f"eds_frac_{c}" for c in UNMIX_PHASES] + ["eds_frac_solid"]


def _sem_features_np(x: np.ndarray, sigmas: Sequence[float]) -> np.ndarray:
    """SEM feature channels of one (haloed) block, float32 ``(h, w, 1 + 6 len(sigmas))``."""
    x = np.asarray(x, dtype=np.float32)
    out = np.empty((*x.shape, 1 + len(_SEM_FEATURES_PER_SIGMA) * len(sigmas)), np.float32)
    out[..., 0] = x
    x2 = x * x
    k = 1
    for s in sigmas:
        g = _gaussian(x, s)
        gy = _gaussian(x, s, (1, 0))
        gx = _gaussian(x, s, (0, 1))
        hyy = _gaussian(x, s, (2, 0))
        hxx = _gaussian(x, s, (0, 2))
        hxy = _gaussian(x, s, (1, 1))
        tr = 0.5 * (hxx + hyy)
        rad = np.sqrt(0.25 * (hxx - hyy) ** 2 + hxy**2)
        var = _gaussian(x2, s) - g * g
        s2 = np.float32(s * s)
        out[..., k] = g
        out[..., k + 1] = np.sqrt(gy * gy + gx * gx) * np.float32(s)
        out[..., k + 2] = (hxx + hyy) * s2
        out[..., k + 3] = (tr + rad) * s2
        out[..., k + 4] = (tr - rad) * s2
        out[..., k + 5] = np.sqrt(np.maximum(var, 0))
        k += len(_SEM_FEATURES_PER_SIGMA)
    return out


def _eds_features_np(channels: Mapping[str, np.ndarray], scales: Mapping[str, float], o_per_zr: float,
                     endmembers: Mapping[str, Sequence[float]]) -> np.ndarray:
    """EDS feature channels from registered EDS maps on the SEM grid (float32 ``(h, w, 10)``): the scaled
    channels, the rule quantities ``solid``, ``zr``, ``ox`` (see :class:`EdsRules`) and the unmixed phase
    fractions (:func:`unmix`)."""
    q = eds_quantities(channels, scales=scales, o_per_zr=o_per_zr)
    f = unmix(q, endmembers)
    feats = [q[el] for el in ELEMENTS] + [q["solid"], q["zr"], q["ox"]] + [f[c] for c in UNMIX_PHASES]
    return np.stack([*feats, f["solid"]], axis=-1).astype(np.float32)


def _features_block(
    sem_block: np.ndarray, *, halo: int, rows: tuple[int, int], cols: tuple[int, int],
    eds: Mapping[str, np.ndarray], factor: int, shift: tuple[float, float], scales: Mapping[str, float],
    o_per_zr: float, endmembers: Mapping[str, Sequence[float]], sigmas: Sequence[float],
) -> np.ndarray:
    f_sem = _sem_features_np(sem_block, sigmas)
    if halo:
        f_sem = f_sem[halo:-halo, halo:-halo]
    if not eds:
        return f_sem
    reg = {el: _sample(m, rows, cols, factor, shift) for el, m in eds.items()}
    return np.concatenate([f_sem, _eds_features_np(reg, scales, o_per_zr, endmembers)], axis=-1)


def sem_features(sem_norm: Any, *, sigmas: Sequence[float] = DEFAULT_SIGMAS) -> Any:
    """Multiscale SEM features ``(H, W, 1 + 6·len(sigmas))`` float32 of a normalised SEM image.

    Per σ (px): Gaussian, gradient magnitude (×σ), Laplacian of Gaussian (×σ²), the two Hessian
    eigenvalues (×σ²), local standard deviation. Reflect boundary. Dask in → dask out, equal to the whole
    image result for any chunking (halo ``ceil(4 σ_max)``).
    """
    return feature_stack(sem_norm, {}, factor=1, sigmas=sigmas)


def feature_stack(
    sem_norm: Any,
    eds: Mapping[str, np.ndarray],
    *,
    factor: int,
    shift: tuple[float, float] = (0.0, 0.0),
    scales: Mapping[str, float] | None = None,
    o_per_zr: float = 0.0,
    endmembers: Mapping[str, Sequence[float]] | None = None,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
) -> Any:
    """SEM features plus registered EDS features: ``(H, W, F)`` float32 (names: :func:`feature_names`).

    ``eds``: native-resolution Ni, O, Zr maps (numpy, small; ``ceil(H/f) × ceil(W/f)``; usually
    :func:`smooth_eds`-ed), sampled onto the SEM grid with ``shift`` (SEM px), divided by ``scales``
    (counts; default 1), plus the rule quantities (``o_per_zr``: see :class:`EdsRules`) and the phase
    fractions unmixed with ``endmembers`` (default ``DEFAULT_ENDMEMBERS``); ``{}`` for SEM
    features only. Dask in → dask out with the SEM's chunks in y/x and all features in one chunk; blocks
    equal the whole-image result exactly.
    """
    import dask.array as da

    shape = tuple(int(v) for v in sem_norm.shape)
    if len(shape) != 2:
        raise InputImageError(f"Expected a 2-D SEM image for `sem_norm`. Got shape {shape}.")
    if eds:
        missing = [el for el in ELEMENTS if el not in eds]
        if missing:
            raise InputImageError(f"Expected EDS maps {list(ELEMENTS)}. Got {sorted(eds)} (missing {missing}).")
        eds = {el: np.asarray(eds[el], np.float32) for el in ELEMENTS}
    for m in eds.values():
        _check_eds_shape(m.shape, shape, factor)
    scales = {el: float((scales or {}).get(el, 1.0)) for el in eds}
    o_per_zr = float(o_per_zr)
    endmembers = {c: tuple(float(v) for v in e) for c, e in (endmembers or DEFAULT_ENDMEMBERS).items()}
    shift = (float(shift[0]), float(shift[1]))
    n_feat = 1 + len(_SEM_FEATURES_PER_SIGMA) * len(sigmas) + (len(_eds_feature_names(ELEMENTS)) if eds else 0)
    if not isinstance(sem_norm, da.Array):
        return _features_block(
            np.asarray(sem_norm, np.float32), halo=0, rows=(0, shape[0]), cols=(0, shape[1]), eds=eds,
            factor=factor, shift=shift, scales=scales, o_per_zr=o_per_zr, endmembers=endmembers, sigmas=sigmas,
        )
    halo = max(_halo(s) for s in sigmas) if sigmas else 0
    sem_norm = _ensure_min_chunk(sem_norm, halo)
    chunks = sem_norm.chunks
    padded = da.overlap.overlap(sem_norm.astype(np.float32), depth={0: halo, 1: halo},
                                boundary={0: "reflect", 1: "reflect"}) if halo else sem_norm

    def block(b: np.ndarray, block_info: Any = None) -> np.ndarray:
        rows, cols = _block_range(chunks, block_info[None]["chunk-location"])
        return _features_block(b, halo=halo, rows=rows, cols=cols, eds=eds, factor=factor, shift=shift,
                               scales=scales, o_per_zr=o_per_zr, endmembers=endmembers, sigmas=sigmas)

    return da.map_blocks(
        block, padded, chunks=(chunks[0], chunks[1], (n_feat,)), new_axis=2, dtype=np.float32,
        meta=np.empty((0, 0, 0), np.float32),
    )


# =====================================================================================================
# Seeds from EDS rules
# =====================================================================================================
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


def _split(values: np.ndarray, *, weights: np.ndarray | None = None, nbins: int = 256, classes: int = 2
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


def fit_rules(
    eds: Mapping[str, np.ndarray], *, sem_solid: np.ndarray, sem_hist: tuple[np.ndarray, np.ndarray],
    sem_mean: np.ndarray | None = None, margin: float = 0.5, percentile: float = 99.0, min_pixels: int = 32,
) -> EdsRules:
    """Find the seeding thresholds of one image from its data.

    ``eds``: smoothed EDS maps at native resolution, registered (see :func:`shift_native`);
    ``sem_solid``: the SEM's solid fraction per EDS pixel (:func:`sem_solid_fraction`); ``sem_mean``: the
    smoothed SEM's mean per EDS pixel (:func:`block_mean`; optional); ``sem_hist``: (counts, bin edges)
    of the smoothed normalised SEM. Every threshold is an Otsu split of the relevant
    pixels. Whether NiO and metallic Ni are present is judged from the two sides of the ``ox`` split (see
    ``NIO_MIN_RELATIVE_O`` and ``NI_MAX_OX_SIDE_RATIO``); a missing phase gets no seeds.
    """
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
    scales = {el: max(float(np.percentile(m, percentile)), 1e-6) for el, m in ch.items()}
    pure_solid = sem_solid >= 0.95
    pure_pore = sem_solid <= 0.05
    if pure_solid.sum() < min_pixels:
        raise InputImageError(
            f"Expected at least {min_pixels} EDS pixels that the SEM shows fully solid. Got "
            f"{int(pure_solid.sum())}; the image may be almost all pore or the SEM threshold wrong."
        )
    q = eds_quantities(ch, scales=scales)
    zr = _split(q["zr"][pure_solid])
    ysz = pure_solid & zr.is_high(q["zr"], margin)
    o_per_zr = float(np.median(q["O"][ysz] / np.maximum(q["Zr"][ysz], 1e-3))) if ysz.sum() >= min_pixels else 0.0
    q = eds_quantities(ch, scales=scales, o_per_zr=o_per_zr)
    both = pure_solid | pure_pore
    solid = _split(q["solid"][both] if pure_pore.sum() >= min_pixels else q["solid"])
    nib = pure_solid & zr.is_low(q["zr"], margin)
    diagnostics: dict[str, float] = {"pure_solid_px": int(pure_solid.sum()), "pure_pore_px": int(pure_pore.sum())}
    if nib.sum() >= min_pixels:
        v = q["ox"][nib]
        ox = _split(v)
        o_ysz = float(np.median(q["O"][ysz])) if ysz.any() else 1.0
        o_ex = np.maximum(q["O"] - o_per_zr * q["Zr"], 0)[nib]
        rel_hi = float(np.median(o_ex[v > ox.threshold]) / max(o_ysz, 1e-6)) if (v > ox.threshold).any() else 0.0
        ratio = ox.low / ox.high if ox.high > 0 else 1.0
        diagnostics.update(nio_side_excess_o_relative=rel_hi, ox_side_ratio=float(ratio))
        if rel_hi < NIO_MIN_RELATIVE_O:
            nio = "Ni"  # even the O-richer half of the Ni-bearing pixels holds hardly any O beyond YSZ's
        elif ratio > NI_MAX_OX_SIDE_RATIO:
            nio = "NiO"  # one O-rich population: Otsu merely halved it
        else:
            nio = "both"
    else:
        ox, nio = Split(0.5, 0.0, 1.0), "Ni"
    sem_counts, sem_edges = sem_hist
    sem = _sem_split(sem_counts, sem_edges)
    nio_sem_max = None
    if nio == "both" and sem_mean is not None:
        # NiO is darker than Ni in backscatter; where EDS blur mixes them (thin NiO shells) the SEM decides.
        ni = nib & ox.is_low(q["ox"], margin)
        if ni.sum() >= min_pixels:
            nio_sem_max = float(np.percentile(np.asarray(sem_mean)[ni], NIO_SEM_PERCENTILE))
    # Signatures (scaled Ni, O, Zr) of the pure solid phases, from EDS pixels the rules are sure of.
    members = {"YSZ": ysz}
    if nio == "both":
        members.update(Ni=nib & ox.is_low(q["ox"], margin), NiO=nib & ox.is_high(q["ox"], margin))
    else:
        members[nio] = nib
    endmembers = {
        c: [float(np.median(q[el][m])) for el in ("Ni", "O", "Zr")]
        for c, m in members.items() if m.sum() >= min_pixels
    }
    return EdsRules(scales=scales, o_per_zr=o_per_zr, solid=solid, zr=zr, ox=ox, sem=sem, nio=nio,
                    nio_sem_max=nio_sem_max, endmembers=endmembers, diagnostics=diagnostics)


# Seed-candidate codes: bits 0-3 EDS class (15 = none), bits 4-5 SEM state, bit 6 "EDS not fully solid",
# bit 7 "dark enough for NiO".
_NO_CLASS = 15
_SEM_BRIGHT, _SEM_DARK, _SEM_VERY_DARK = 0, 1, 2
_SEM_NIO_SIGMA = 2.0
SOLID_PORE_GAP_PX = 1.5
"""Solid seeds keep this distance (px) from SEM-dark pixels (blurred pore edges are neither)."""


def _codes_block(sem1: np.ndarray, sem2: np.ndarray, channels: Mapping[str, np.ndarray], rules: EdsRules, *,
                 margin: float, class_index: Mapping[str, int]) -> np.ndarray:
    """Per-pixel rule evidence packed into uint8 codes (see the constants above).

    ``sem1``/``sem2``: normalised SEM smoothed at σ = 1 and 2 px; ``channels``: registered smoothed EDS.
    """
    q = eds_quantities(channels, scales=rules.scales, o_per_zr=rules.o_per_zr)
    cls = np.full(sem1.shape, _NO_CLASS, np.uint8)
    nib = rules.zr.is_low(q["zr"], margin)
    if rules.nio == "both":
        cls[nib & rules.ox.is_low(q["ox"], margin)] = class_index["Ni"]
        cls[nib & rules.ox.is_high(q["ox"], margin)] = class_index["NiO"]
    else:
        cls[nib] = class_index[rules.nio]
    cls[rules.zr.is_high(q["zr"], margin)] = class_index["YSZ"]
    state = np.where(sem1 < rules.sem.threshold, _SEM_DARK, _SEM_BRIGHT).astype(np.uint8)
    state[rules.sem.is_low(sem1, margin)] = _SEM_VERY_DARK
    not_solid = (q["solid"] < rules.solid.high).astype(np.uint8)
    nio_ok = (np.ones(sem1.shape, bool) if rules.nio_sem_max is None else sem2 < rules.nio_sem_max)
    return cls | (state << 4) | (not_solid << 6) | (nio_ok.astype(np.uint8) << 7)


def _disk(radius: float) -> np.ndarray:
    r = math.floor(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy**2 + xx**2) <= radius**2 + 1e-9


def _seeds_from_codes(codes: np.ndarray, *, radius: float, pore_radius: float,
                      class_index: Mapping[str, int]) -> np.ndarray:
    """Seed classes (255 = none) from a (haloed) code block; erosions keep only uniform neighbourhoods.

    Pore: SEM dark, EDS not fully solid, and all pixels within ``pore_radius`` px SEM-dark. Solid
    class c: EDS rules say c, the SEM is not dark within ``SOLID_PORE_GAP_PX`` (and, for NiO, dark
    enough), and every pixel within
    ``radius`` px is EDS class c or SEM-dark (pores do not change EDS ratios, so they make no EDS boundary).
    """
    from scipy import ndimage

    cls = codes & 0x0F
    state = (codes >> 4) & 0x03
    not_solid = (codes >> 6) & 0x01
    nio_ok = (codes >> 7) & 0x01
    dark = state != _SEM_BRIGHT
    out = np.full(codes.shape, IGNORE_LABEL, np.uint8)
    pore = dark & (not_solid == 1)
    if pore_radius > 0:
        pore &= ndimage.binary_erosion(dark, structure=_disk(pore_radius), border_value=1)
    out[pore] = class_index["pore"]
    disk = _disk(radius)
    away = ndimage.binary_erosion(~dark, structure=_disk(SOLID_PORE_GAP_PX), border_value=1)
    for name in ("NiO", "Ni", "YSZ"):
        k = class_index[name]
        mine = cls == k
        if not mine.any():
            continue
        ok = ndimage.binary_erosion(mine | dark, structure=disk, border_value=1) if radius > 0 else mine
        ok &= mine & away
        if name == "NiO":
            ok &= nio_ok == 1
        out[ok] = k
    return out


def seed_candidates(
    sem_norm: Any,
    eds: Mapping[str, np.ndarray],
    rules: EdsRules,
    *,
    factor: int,
    shift: tuple[float, float] = (0.0, 0.0),
    margin: float = 0.5,
    erode_px: float | None = None,
    pore_erode_px: float = 1.0,
    classes: Sequence[str] = PHASES,
) -> Any:
    """Confident seed classes per SEM pixel (uint8; 255 = not a seed) from EDS rules and the SEM.

    ``sem_norm``: normalised SEM; ``eds``: smoothed native EDS maps (sampled onto the SEM grid with
    ``shift``, SEM px). A pixel is a seed of a solid class when its EDS values lie confidently (``margin``,
    see :class:`Split`) on that class's side of the ``zr``/``ox`` thresholds, its SEM (σ = 1 px) is not
    dark, NiO seeds are darker than ``rules.nio_sem_max``, and within ``erode_px`` (SEM px; default
    1.5 × factor) no other EDS class occurs (SEM-dark pixels aside). A pore seed is dark in the SEM
    (σ = 1 px, below the Otsu threshold), its EDS signal is below that of typical solid (``rules.solid.high``), and all pixels within
    ``pore_erode_px`` are dark. Chunk-independent (reflect at the image edge); dask in → dask out.
    """
    import dask.array as da

    missing = [c for c in PHASES if c not in classes]
    if missing:
        raise InputImageError(
            f"Expected classes {list(PHASES)} for the EDS seeding rules. Got {list(classes)}. Use scribbles "
            "for other class sets."
        )
    class_index = {c: list(classes).index(c) for c in PHASES}
    radius = 1.5 * factor if erode_px is None else float(erode_px)
    depth = math.floor(max(radius, pore_erode_px))
    halo = _halo(_SEM_NIO_SIGMA)
    shape = tuple(int(v) for v in sem_norm.shape)
    eds = {el: np.asarray(eds[el], np.float32) for el in ELEMENTS}
    for m in eds.values():
        _check_eds_shape(m.shape, shape, factor)
    shift = (float(shift[0]), float(shift[1]))

    def codes(b: np.ndarray, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        b = np.asarray(b, np.float32)
        core = (slice(halo, b.shape[0] - halo), slice(halo, b.shape[1] - halo))
        s1 = _gaussian(b, SEM_SMOOTH_SIGMA)[core]
        s2 = _gaussian(b, _SEM_NIO_SIGMA)[core]
        ch = {el: _sample(m, rows, cols, factor, shift) for el, m in eds.items()}
        return _codes_block(s1, s2, ch, rules, margin=margin, class_index=class_index)

    def seeds(c: np.ndarray) -> np.ndarray:
        return _seeds_from_codes(c, radius=radius, pore_radius=pore_erode_px, class_index=class_index)

    c = _map_with_halo(sem_norm, codes, halo=halo, min_chunk=max(halo, depth))
    if not isinstance(sem_norm, da.Array):
        if depth == 0:
            return seeds(c)
        return seeds(np.pad(c, depth, mode="symmetric"))[depth:-depth, depth:-depth]
    if depth == 0:
        return c.map_blocks(seeds, dtype=np.uint8, meta=np.empty((0, 0), np.uint8))
    return da.map_overlap(seeds, c, depth=depth, boundary="reflect", dtype=np.uint8,
                          meta=np.empty((0, 0), np.uint8))


def _map_with_halo(
    sem_norm: Any, fn: Callable[[np.ndarray, tuple[int, int], tuple[int, int]], np.ndarray], *, halo: int,
    min_chunk: int,
) -> Any:
    """Apply ``fn(padded_block, rows, cols) -> uint8 block`` over an image with a mirrored ``halo`` (px).

    ``rows``/``cols`` are the block's global pixel ranges (without halo). numpy in → numpy out; dask in →
    dask out (chunks of at least ``min_chunk`` px, output chunked like the input).
    """
    import dask.array as da

    if not isinstance(sem_norm, da.Array):
        shape = sem_norm.shape
        return fn(np.pad(np.asarray(sem_norm, np.float32), halo, mode="symmetric"), (0, shape[0]), (0, shape[1]))
    sem_norm = _ensure_min_chunk(sem_norm, min_chunk)
    chunks = sem_norm.chunks
    padded = da.overlap.overlap(sem_norm.astype(np.float32), depth={0: halo, 1: halo},
                                boundary={0: "reflect", 1: "reflect"})

    def block(b: np.ndarray, block_info: Any = None) -> np.ndarray:
        rows, cols = _block_range(chunks, block_info[None]["chunk-location"])
        return fn(b, rows, cols)

    return da.map_blocks(block, padded, chunks=chunks, dtype=np.uint8, meta=np.empty((0, 0), np.uint8))


def _ensure_min_chunk(x: Any, size: int) -> Any:
    """Rechunk a 2-D dask array so that no chunk is smaller than ``size`` (the halo of an overlap)."""
    if size <= 0 or min(min(c) for c in x.chunks) >= size:
        return x
    new = []
    for axis_chunks, n in zip(x.chunks, x.shape, strict=True):
        target = max(max(axis_chunks), size)
        new.append(min(target, n))
    x = x.rechunk(tuple(new))
    if min(min(c) for c in x.chunks) < size:  # a short last chunk: merge it into its neighbour
        fixed = []
        for axis_chunks in x.chunks:
            cs = list(axis_chunks)
            if len(cs) > 1 and cs[-1] < size:
                cs[-2] += cs.pop()
            fixed.append(tuple(cs))
        x = x.rechunk(tuple(fixed))
    return x


BOUNDARY_MIN_FRACTION = 0.1
"""A solid phase counts as present at a pixel when its unmixed EDS fraction is at least this."""
BOUNDARY_MIN_SEPARATION = 2.0
"""Boundary seeds only between phases whose SEM grey-level means differ by this many standard deviations."""
BOUNDARY_MIN_LOG_RATIO = 3.0
"""SEM log-likelihood margin (e³ ≈ 20×) by which a boundary seed's class must beat the other phase."""


def sem_class_stats(values: np.ndarray, classes_of: np.ndarray, *, classes: Sequence[str],
                    min_count: int = 50) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of the smoothed SEM (σ = 1 px) per class at seed pixels."""
    out = {}
    for k, name in enumerate(classes):
        v = np.asarray(values)[np.asarray(classes_of) == k]
        if v.size >= min_count:
            out[name] = (float(v.mean()), float(max(v.std(), 1e-3)))
    return out


def _boundary_block(b: np.ndarray, halo: int, channels: Mapping[str, np.ndarray], rules: EdsRules,
                    stats: Mapping[str, tuple[float, float]], class_index: Mapping[str, int]) -> np.ndarray:
    from scipy import ndimage

    s1 = _gaussian(np.asarray(b, np.float32), SEM_SMOOTH_SIGMA)
    away = ndimage.binary_erosion(s1 >= rules.sem.threshold, structure=_disk(SOLID_PORE_GAP_PX), border_value=1)
    core = (slice(halo, b.shape[0] - halo), slice(halo, b.shape[1] - halo))
    s1, away = s1[core], away[core]
    q = eds_quantities(channels, scales=rules.scales, o_per_zr=rules.o_per_zr)
    f = unmix(q, rules.endmembers)
    names = [c for c in UNMIX_PHASES if c in rules.endmembers and c in stats]
    present = {c: f[c] >= BOUNDARY_MIN_FRACTION for c in names}
    n_present = np.sum([present[c] for c in names], axis=0) if names else np.zeros(s1.shape)
    ll = {}
    for c in names:
        mu, sd = stats[c]
        z = (s1 - np.float32(mu)) / np.float32(sd)
        ll[c] = (-0.5 * z * z - np.float32(math.log(sd)), np.abs(z))
    out = np.full(s1.shape, IGNORE_LABEL, np.uint8)
    for i, a in enumerate(names):
        for c in names[i + 1 :]:
            (mu_a, sd_a), (mu_c, sd_c) = stats[a], stats[c]
            if abs(mu_a - mu_c) < BOUNDARY_MIN_SEPARATION * max(sd_a, sd_c):
                continue  # the SEM cannot tell these two apart reliably: no boundary seeds
            pair = (n_present == 2) & present[a] & present[c] & away
            for win, lose in ((a, c), (c, a)):
                ok = pair & (ll[win][0] - ll[lose][0] >= BOUNDARY_MIN_LOG_RATIO) & (ll[win][1] <= 2.5)
                out[ok] = class_index[win]
    return out


def boundary_seed_candidates(
    sem_norm: Any, eds: Mapping[str, np.ndarray], rules: EdsRules, *, factor: int,
    stats: Mapping[str, tuple[float, float]], shift: tuple[float, float] = (0.0, 0.0),
    classes: Sequence[str] = PHASES,
) -> Any:
    """Seeds near solid|solid phase boundaries, where the EDS is blurred but the SEM is clear (uint8).

    Where the unmixed EDS fractions (:func:`unmix`) show exactly two solid phases, a pixel (not within
    ``SOLID_PORE_GAP_PX`` of SEM-dark pixels) becomes a seed of the one whose SEM grey-level distribution
    (``stats``: mean, std of the σ = 1 px smoothed SEM per class, from the interior seeds) explains it
    ``BOUNDARY_MIN_LOG_RATIO`` better and typically (|z| ≤ 2.5). The EDS always allows the class (its
    fraction is ≥ ``BOUNDARY_MIN_FRACTION``). Pairs of phases the SEM cannot separate (means closer than
    ``BOUNDARY_MIN_SEPARATION`` standard deviations) get none. Dask in → dask out.
    """
    class_index = {c: list(classes).index(c) for c in PHASES if c in classes}
    halo = _halo(SEM_SMOOTH_SIGMA) + math.ceil(SOLID_PORE_GAP_PX)
    eds = {el: np.asarray(eds[el], np.float32) for el in ELEMENTS}
    shift = (float(shift[0]), float(shift[1]))

    def run(b: np.ndarray, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        ch = {el: _sample(m, rows, cols, factor, shift) for el, m in eds.items()}
        return _boundary_block(b, halo, ch, rules, stats, class_index)

    return _map_with_halo(sem_norm, run, halo=halo, min_chunk=halo)


def _hash_keys(index: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic pseudo-random uint64 key per global pixel index (splitmix64), chunk-independent."""
    with np.errstate(over="ignore"):
        z = index.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15) * np.uint64(seed + 1)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _pick_block(cand: np.ndarray, y0: int, x0: int, width: int, n_classes: int, cap: int,
                seed: int) -> tuple[np.ndarray, ...]:
    """The ``cap`` smallest-key candidates of each class in a block: (keys, flat indices, classes)."""
    ys, xs = np.nonzero(cand < n_classes)
    cls = cand[ys, xs]
    flat = (ys + y0).astype(np.int64) * width + (xs + x0)
    keys = _hash_keys(flat, seed)
    keep = []
    for k in range(n_classes):
        idx = np.flatnonzero(cls == k)
        if idx.size > cap:
            idx = idx[np.argpartition(keys[idx], cap - 1)[:cap]]
        keep.append(idx)
    sel = np.concatenate(keep) if keep else np.zeros(0, np.int64)
    return keys[sel], flat[sel], cls[sel].astype(np.uint8)


def select_seeds(cand: Any, *, n_classes: int, max_per_class: int, seed: int = 0) -> Any:
    """Pick up to ``max_per_class`` seed pixels per class from a candidate map, uniformly at random but
    independent of chunking (per-pixel hash keys). Returns ``(flat_index int64, class uint8)`` sorted by
    index — numpy for numpy input, a ``dask.delayed`` of it for dask input."""
    import dask
    import dask.array as da

    width = int(cand.shape[1])

    def merge(parts: Sequence[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, np.ndarray]:
        keys = np.concatenate([p[0] for p in parts])
        flat = np.concatenate([p[1] for p in parts])
        cls = np.concatenate([p[2] for p in parts])
        keep = []
        for k in range(n_classes):
            idx = np.flatnonzero(cls == k)
            if idx.size > max_per_class:
                idx = idx[np.argsort(keys[idx], kind="stable")[:max_per_class]]
            keep.append(idx)
        sel = np.sort(np.concatenate(keep))
        order = np.argsort(flat[sel], kind="stable")
        return flat[sel][order], cls[sel][order]

    if not isinstance(cand, da.Array):
        return merge([_pick_block(np.asarray(cand), 0, 0, width, n_classes, max_per_class, seed)])
    parts = []
    blocks = cand.to_delayed()
    pick = dask.delayed(_pick_block, pure=True)
    for i, row in enumerate(blocks):
        for j, blk in enumerate(row):
            (y0, _), (x0, _) = _block_range(cand.chunks, (i, j))
            parts.append(pick(blk, y0, x0, width, n_classes, max_per_class, seed))
    return dask.delayed(merge, pure=True)(parts)


# =====================================================================================================
# Classifier
# =====================================================================================================
def train_classifier(
    x: np.ndarray, y: np.ndarray, *, n_estimators: int = 48, max_depth: int | None = 20,
    min_samples_leaf: int = 2, max_features: str | float = "sqrt", max_samples: int | None = 40_000,
    n_jobs: int | None = None, seed: int = 0,
) -> Any:
    """Fit a scikit-learn random forest on seed features ``x`` (n × F) and classes ``y`` (n,).

    Each tree sees a bootstrap sample of at most ``max_samples`` seeds (keeps the fit to seconds);
    classes are balanced (``class_weight="balanced_subsample"``); deterministic for ``seed``.
    """
    from sklearn.ensemble import RandomForestClassifier

    if len(x) == 0 or len(np.unique(y)) < 2:
        raise InputImageError(
            f"Expected seeds of at least two classes to train the classifier. Got {len(x)} seeds of classes "
            f"{np.unique(y).tolist()}. Check the EDS maps, lower `margin`/`erode_px`, or add scribbles."
        )
    rf = RandomForestClassifier(
        n_estimators=n_estimators, max_depth=max_depth, min_samples_leaf=min_samples_leaf,
        max_features=max_features, class_weight="balanced_subsample", n_jobs=n_jobs, random_state=seed,
        max_samples=None if max_samples is None or max_samples >= len(x) else int(max_samples),
    )
    rf.fit(np.asarray(x, np.float32), np.asarray(y))
    return rf


def _predict_block(feats: np.ndarray, model: Any) -> np.ndarray:
    h, w, f = feats.shape
    if h * w == 0:
        return np.zeros((h, w), np.uint8)
    proba = model.predict_proba(feats.reshape(-1, f))
    return model.classes_[np.argmax(proba, axis=1)].astype(np.uint8).reshape(h, w)


def predict_labels(features: Any, model: Any) -> Any:
    """Class of every pixel of a feature stack ``(H, W, F)`` (uint8). Dask in → dask out (map_blocks; the
    model travels once through the graph, not once per block)."""
    import dask
    import dask.array as da

    if not isinstance(features, da.Array):
        return _predict_block(np.asarray(features, np.float32), model)
    if features.numblocks[2] != 1:
        features = features.rechunk({2: -1})
    return da.map_blocks(
        _predict_block, features, dask.delayed(model, pure=False), drop_axis=2, dtype=np.uint8,
        meta=np.empty((0, 0), np.uint8),
    )


# =====================================================================================================
# Edge-snapping refinement
# =====================================================================================================
REFINE_HALO = 24
"""Halo (px) around each block when refining; superpixels are a few px across, so blockwise results equal
whole-image ones except where a superpixel would reach beyond the halo."""


def superpixels(sem_norm: np.ndarray, *, sigma: float = 0.5) -> np.ndarray:
    """Over-segmentation of the SEM into regions bounded by its edges (int32 ids from 1).

    Watershed of the Sobel gradient magnitude of the SEM (smoothed at ``sigma`` px; 0 = raw) from every
    local minimum: regions are a few pixels in area and never cross a visible grey-level edge.
    """
    from skimage.filters import sobel
    from skimage.segmentation import watershed

    x = np.asarray(sem_norm, np.float32)
    if sigma > 0:
        x = _gaussian(x, sigma)
    return watershed(sobel(x), connectivity=1).astype(np.int32)


def _vote(regions: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Majority label of each region (ties → lower class; 255 does not vote; a region without votes → 255)."""
    valid = labels < n_classes
    n_regions = int(regions.max()) + 1
    codes = regions[valid].astype(np.int64) * n_classes + labels[valid]
    counts = np.bincount(codes, minlength=n_regions * n_classes).reshape(n_regions, n_classes)
    best = counts.argmax(1).astype(np.uint8)
    best[counts.sum(1) == 0] = IGNORE_LABEL
    return best[regions]


def _refine_block(sem: np.ndarray, labels: np.ndarray, *, sigma: float, n_classes: int) -> np.ndarray:
    return _vote(superpixels(sem, sigma=sigma), np.asarray(labels, np.uint8), n_classes)


def refine_labels(labels: Any, sem_norm: Any, *, n_classes: int, sigma: float = 0.5,
                  halo: int = REFINE_HALO) -> Any:
    """Snap class boundaries to the SEM's edges: every :func:`superpixels` region takes its majority label.

    The EDS interaction volume blurs the element maps over several pixels, so a pixel classifier fed with
    them puts boundaries where the EDS changes, up to a few pixels off the sharp SEM edge; within a region
    bounded by SEM edges the majority is almost always right. ``labels`` (uint8, 255 = none) and
    ``sem_norm`` (normalised SEM) have the same shape; numpy in → numpy out, dask in → dask out (blocks with
    a ``halo`` px mirrored overlap, chunked like ``labels``).
    """
    import dask.array as da

    if not isinstance(labels, da.Array) and not isinstance(sem_norm, da.Array):
        return _refine_block(np.asarray(sem_norm), np.asarray(labels), sigma=sigma, n_classes=n_classes)
    labels = da.asarray(labels)
    labels = _ensure_min_chunk(labels, halo)
    sem = da.asarray(sem_norm).astype(np.float32).rechunk(labels.chunks)
    return da.map_overlap(_refine_block, sem, labels, depth=halo, boundary="reflect", dtype=np.uint8,
                          meta=np.empty((0, 0), np.uint8), sigma=sigma, n_classes=n_classes)


# =====================================================================================================
# Store level
# =====================================================================================================
def load_scribbles(source: str | Path | np.ndarray, *, shape: tuple[int, int], n_classes: int) -> np.ndarray:
    """Read a scribble label image (TIFF / PNG / .npy or an array): uint8, SEM-shaped, values 0..K-1 or
    255 (unlabelled). Target-style grey codes are not accepted here; convert them first."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise InputImageError(f"Expected a scribble image at {path}. Got no such file.")
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(path)
        else:
            from skimage.io import imread

            arr = imread(path)
    else:
        arr = np.asarray(source)
    if arr.shape != tuple(shape):
        raise InputImageError(f"Expected scribbles of shape {tuple(shape)} (the SEM's). Got {arr.shape}.")
    bad = np.setdiff1d(np.unique(arr), [*range(n_classes), IGNORE_LABEL])
    if bad.size:
        raise InputImageError(
            f"Expected scribble values 0..{n_classes - 1} or {IGNORE_LABEL} (unlabelled). Got {bad.tolist()}."
        )
    return arr.astype(np.uint8)


def _sem_split(counts: np.ndarray, edges: np.ndarray) -> Split:
    """Pore/solid split of the smoothed SEM: the lowest of three multi-Otsu classes. Pores are the darkest
    phase, but NiO can be abundant and dark enough that a two-class Otsu would put it with the pores."""
    return _split(0.5 * (edges[:-1] + edges[1:]), weights=counts, classes=3)


def _sem_histogram(sem_smooth: Any, nbins: int = 512) -> tuple[Any, np.ndarray]:
    import dask.array as da

    edges = np.linspace(-0.5, 1.5, nbins + 1)
    if isinstance(sem_smooth, da.Array):
        counts, _ = da.histogram(sem_smooth, bins=edges)
    else:
        counts, _ = np.histogram(sem_smooth, bins=edges)
    return counts, edges


def _register(
    sem_s: Any, eds_s: Mapping[str, np.ndarray], *, factor: int, image_id: str, min_quality: float,
    max_shift_px: float | None,
) -> tuple[Registration, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Registration of smoothed EDS maps against a smoothed normalised SEM (computes the SEM's histogram,
    solid fraction and mean per EDS pixel; all are returned for the rules)."""
    import dask

    counts, edges = _sem_histogram(sem_s)
    counts = np.asarray(dask.compute(counts)[0])
    threshold = _sem_split(counts, edges).threshold
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


def _read_eds(store: Any, image_id: str) -> dict[str, np.ndarray]:
    import dask

    eds = {el: np.asarray(a) for el, a in dask.compute(store.eds(image_id))[0].items()}
    if not eds:
        raise StoreError(f"Expected EDS maps for image `{image_id}` in {store.path}. Got none.")
    return eds


def _record_registration(store: Any, image_id: str, reg: Registration) -> None:
    if store.root.read_only:
        return
    g = store.eds_group(image_id)
    meta = dict(g.attrs.get("semscale", {}))
    meta["registration"] = reg.to_dict()
    g.attrs["semscale"] = meta


def register_image(
    store: Any, image_id: str, *, min_quality: float = MIN_QUALITY, max_shift_px: float | None = None,
    eds_sigma: float = EDS_SMOOTH_SIGMA, write: bool = True,
) -> Registration:
    """Estimate the EDS misregistration of one store image (computes; memory ~ the EDS maps) and record it
    in the EDS group's ``attrs["semscale"]["registration"]``. Warns when quality < ``min_quality``."""
    eds_s = smooth_eds(_read_eds(store, image_id), sigma=eds_sigma)
    reg, *_ = _register(smooth(store.sem_normalised(image_id)), eds_s, factor=store.eds_factor(image_id),
                          image_id=image_id, min_quality=min_quality, max_shift_px=max_shift_px)
    if write:
        _record_registration(store, image_id, reg)
    return reg


@dataclass
class _Prepared:
    image_id: str
    registration: Registration
    rules: EdsRules
    features: Any
    candidates: Any
    picked: Any
    sem_norm: Any = None
    eds: dict[str, np.ndarray] = field(default_factory=dict)
    factor: int = 1
    n_boundary: dict[str, int] = field(default_factory=dict)
    n_auto: dict[str, int] = field(default_factory=dict)
    n_scribbled: dict[str, int] = field(default_factory=dict)


def _prepare(
    store: Any, image_id: str, *, sigmas: Sequence[float], margin: float, erode_px: float | None,
    max_seeds_per_class: int, seed: int, min_quality: float, max_shift_px: float | None, eds_sigma: float,
) -> _Prepared:
    """Registration, rules, lazy seed candidates and lazy features of one image."""
    eds_s = smooth_eds(_read_eds(store, image_id), sigma=eds_sigma)
    factor = store.eds_factor(image_id)
    sem_n = store.sem_normalised(image_id)
    sem_s = smooth(sem_n)
    reg, solid_sem, sem_mean, hist = _register(sem_s, eds_s, factor=factor, image_id=image_id,
                                               min_quality=min_quality, max_shift_px=max_shift_px)
    _record_registration(store, image_id, reg)
    rules = fit_rules(shift_native(eds_s, shift_px=reg.shift_px, factor=factor), sem_solid=solid_sem,
                      sem_mean=sem_mean, sem_hist=hist, margin=margin)
    log.info("%s: EDS shift (%.2f, %.2f) px (r=%.2f); %s present; thresholds zr %.3f, ox %.3f, solid %.3f, "
             "sem %.3f", image_id, *reg.shift_px, reg.quality, rules.nio, rules.zr.threshold,
             rules.ox.threshold, rules.solid.threshold, rules.sem.threshold)
    cand = seed_candidates(sem_n, eds_s, rules, factor=factor, shift=reg.shift_px, margin=margin,
                           erode_px=erode_px, classes=store.classes)
    feats = feature_stack(sem_n, eds_s, factor=factor, shift=reg.shift_px, scales=rules.scales,
                          o_per_zr=rules.o_per_zr, endmembers=rules.endmembers or None, sigmas=sigmas)
    picked = select_seeds(cand, n_classes=len(store.classes), max_per_class=max_seeds_per_class, seed=seed)
    return _Prepared(image_id, reg, rules, feats, cand, picked, sem_norm=sem_n, eds=eds_s, factor=factor)


def _add_boundary_seeds(p: _Prepared, flat: np.ndarray, cls: np.ndarray, *, classes: Sequence[str],
                        max_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Add SEM-decided seeds near solid|solid boundaries (see :func:`boundary_seed_candidates`)."""
    import dask

    if not p.rules.endmembers or len(flat) == 0:
        return flat, cls
    width = p.sem_norm.shape[1]
    ys, xs = np.divmod(flat, width)
    values = np.asarray(dask.compute(smooth(p.sem_norm).vindex[ys, xs])[0])
    stats = sem_class_stats(values, cls, classes=classes)
    cand = boundary_seed_candidates(p.sem_norm, p.eds, p.rules, factor=p.factor, stats=stats,
                                    shift=p.registration.shift_px, classes=classes)
    b_flat, b_cls = dask.compute(select_seeds(cand, n_classes=len(classes), max_per_class=max_per_class,
                                              seed=seed + 1))[0]
    new = ~np.isin(b_flat, flat)
    p.n_boundary = {c: int((b_cls[new] == k).sum()) for k, c in enumerate(classes)}
    return _merge_points(flat, cls, b_flat, b_cls, override=False)


def _gather(features: Any, flat: np.ndarray) -> Any:
    """Features at flat pixel indices (lazy dask (n, F))."""
    width = features.shape[1]
    ys, xs = np.divmod(flat, width)
    return features.vindex[ys, xs]


def label_store(
    store: Any,
    image_ids: Sequence[str] | None = None,
    *,
    overwrite: bool = False,
    name: str = "target",
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    n_estimators: int = 48,
    max_depth: int | None = 20,
    max_seeds_per_class: int = 10_000,
    margin: float = 0.5,
    erode_px: float | None = None,
    min_quality: float = MIN_QUALITY,
    max_shift_px: float | None = None,
    eds_sigma: float = EDS_SMOOTH_SIGMA,
    boundary_seeds: bool = False,
    refine_sigma: float | None = 0.5,
    self_training: bool = True,
    seed: int = 0,
    scribbles: Mapping[str, str | Path | np.ndarray] | None = None,
    n_jobs: int | None = -1,
    client: Any = None,
) -> dict[str, Any]:
    """Label every image that has EDS maps and no ``labels/<name>`` (all of them with ``overwrite``).

    Per image: register the EDS, fit the seeding rules, pick up to ``max_seeds_per_class`` confident seeds
    per class (plus all ``scribbles`` pixels, which override), compute features; then one random forest is
    trained on the seeds pooled over the images and predicts every pixel blockwise into ``labels/<name>``
    (uint8, NGFF label metadata; attrs: method, parameters, seed counts, registration, thresholds).

    Options: ``sigmas`` SEM feature scales (px); ``n_estimators``/``max_depth`` of the forest;
    ``max_seeds_per_class`` per image; ``margin`` (0..1) how far beyond each data-driven threshold a seed
    must lie; ``erode_px`` (px, default 1.5 × EDS factor) distance a solid seed keeps from other EDS
    classes; ``min_quality`` registration correlation below which a warning is logged; ``max_shift_px``
    larger estimated shifts are not applied; ``eds_sigma`` (EDS px) smoothing of the EDS maps;
    ``boundary_seeds`` adds SEM-decided seeds near solid|solid boundaries
    (:func:`boundary_seed_candidates`; off by default: on simulator data it cost 0.6 points);
    ``refine_sigma`` snaps the forest's labels to the SEM's edges (:func:`refine_labels`, superpixels of
    the SEM smoothed at this σ in px; ``None`` keeps the forest's labels); ``self_training`` adds a
    second round: a new forest trained on up to ``max_seeds_per_class`` pixels per class and image drawn
    from the (snapped) first-round labels everywhere, boundaries included, labels every pixel (on simulator
    data +0.3–0.4 point; it doubles the time); ``seed``
    makes seed choice and forest deterministic; ``scribbles`` ``{image_id: path or array}`` (uint8,
    SEM-shaped, 255 = unlabelled); ``n_jobs`` cores for the forest fit; ``client`` a
    ``distributed.Client`` to compute on (default: the current Dask scheduler).
    Returns ``{"labelled": [...], "skipped": [...], "images": {id: summary}, "seeds": {...},
    "fit_seconds": s, "seconds": s}``.
    """
    import contextlib

    import dask

    from semscale.runtime.progress import progress

    t0 = time.perf_counter()
    classes = list(store.classes)
    ids = list(image_ids) if image_ids is not None else store.image_ids()
    scribbles = dict(scribbles or {})
    unknown = sorted(set(scribbles) - set(ids))
    if unknown:
        raise InputImageError(f"Expected scribbles only for images being labelled {ids}. Got {unknown}.")
    todo, skipped = [], []
    for image_id in ids:
        if not store.eds_elements(image_id):
            log.info("%s: no EDS maps; not labelled", image_id)
            skipped.append(image_id)
        elif store.has_labels(image_id, name) and not overwrite:
            log.info("%s: labels/%s exists; skipped (use overwrite to redo)", image_id, name)
            skipped.append(image_id)
        else:
            todo.append(image_id)
    summary: dict[str, Any] = {"labelled": [], "skipped": skipped, "images": {}, "seeds": {}, "seconds": 0.0}
    if not todo:
        return summary
    ctx = dask.config.set(scheduler=client) if client is not None else contextlib.nullcontext()
    with ctx:
        prepared: list[_Prepared] = []
        scribs: dict[str, np.ndarray | None] = {}
        xs, ys = [], []
        for image_id in progress(todo, total=len(todo), description="seeds"):
            shape = tuple(store.sem_array(image_id).shape)
            scrib = (load_scribbles(scribbles[image_id], shape=shape, n_classes=len(classes))
                     if image_id in scribbles else None)
            p = _prepare(store, image_id, sigmas=sigmas, margin=margin, erode_px=erode_px,
                         max_seeds_per_class=max_seeds_per_class, seed=seed, min_quality=min_quality,
                         max_shift_px=max_shift_px, eds_sigma=eds_sigma)
            flat, cls = dask.compute(p.picked)[0]
            if boundary_seeds:
                flat, cls = _add_boundary_seeds(p, flat, cls, classes=classes,
                                                max_per_class=max_seeds_per_class, seed=seed)
            flat, cls = _apply_scribbles(flat, cls, scrib, p, classes)
            xs.append(_gather_np(p.features, flat))
            ys.append(cls)
            prepared.append(p)
            scribs[image_id] = scrib
        forest = _Forest(n_estimators=n_estimators, max_depth=max_depth, n_jobs=n_jobs, seed=seed,
                         classes=classes)
        model, pooled = forest.fit(xs, ys, what="seeds")
        params = {
            "sigmas": [float(s) for s in sigmas], "n_estimators": n_estimators, "max_depth": max_depth,
            "max_seeds_per_class": max_seeds_per_class, "margin": margin, "erode_px": erode_px,
            "min_quality": min_quality, "eds_sigma": eds_sigma, "boundary_seeds": boundary_seeds,
            "refine_sigma": refine_sigma, "self_training": self_training, "seed": seed,
            "features": feature_names(sigmas),
        }

        def write(p: _Prepared, labels: Any, *, rounds: int, seconds: float) -> None:
            attrs = {
                "method": "eds-guided random forest (semscale.labelling)",
                "semscale_version": __version__,
                "parameters": params,
                "rounds": rounds,
                "training_images": todo,
                "seeds_image": {**p.n_auto, **{f"scribbled_{k}": v for k, v in p.n_scribbled.items()}},
                "seeds_boundary": p.n_boundary,
                "seeds_pooled": pooled,
                "registration": p.registration.to_dict(),
                "rules": p.rules.to_dict(),
            }
            t1 = time.perf_counter()
            store.write_labels(p.image_id, name, labels, attrs=attrs)
            secs = seconds + time.perf_counter() - t1
            store.set_label_attrs(p.image_id, name, predict_seconds=round(secs, 2))
            summary["images"][p.image_id] = {
                "registration": p.registration.to_dict(), "seeds": p.n_auto, "boundary_seeds": p.n_boundary,
                "scribbled": p.n_scribbled, "nio": p.rules.nio, "predict_seconds": secs, "rounds": rounds,
            }

        # round 1: the forest on the EDS seeds, snapped to the SEM edges; written, so nothing is lost
        for p in progress(prepared, total=len(prepared), description="predict"):
            labels = predict_labels(p.features, model)
            if refine_sigma is not None:
                labels = refine_labels(labels, p.sem_norm, n_classes=len(classes), sigma=refine_sigma)
            write(p, labels, rounds=1, seconds=0.0)
        if self_training:
            # round 2: a forest trained on pixels drawn from every part of the round-1 labels (boundaries
            # included, where the seeds never are), scribbles still overriding
            xs, ys = [], []
            for p in progress(prepared, total=len(prepared), description="self-training"):
                first = store.labels(p.image_id, name)
                flat, cls = dask.compute(select_seeds(first, n_classes=len(classes),
                                                      max_per_class=max_seeds_per_class, seed=seed + 1))[0]
                flat, cls = _merge_labelled(flat, cls, scribs[p.image_id])
                xs.append(_gather_np(p.features, flat))
                ys.append(cls)
            model, pooled2 = forest.fit(xs, ys, what="round-1 labels")
            for p in progress(prepared, total=len(prepared), description="predict (round 2)"):
                t1 = time.perf_counter()
                labels = predict_labels(p.features, model)
                write(p, labels, rounds=2, seconds=summary["images"][p.image_id]["predict_seconds"]
                      + time.perf_counter() - t1)
            summary["samples_round2"] = pooled2
        summary["labelled"] = [p.image_id for p in prepared]
    summary["seeds"] = pooled
    summary["fit_seconds"] = forest.seconds
    summary["seconds"] = time.perf_counter() - t0
    return summary


@dataclass
class _Forest:
    """Fits the labelling forest on per-image feature/class lists and keeps the fit time."""

    n_estimators: int
    max_depth: int | None
    n_jobs: int | None
    seed: int
    classes: Sequence[str]
    seconds: float = 0.0

    def fit(self, xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], *, what: str) -> tuple[Any, dict[str, int]]:
        x_all = np.concatenate([x for x in xs if len(x)])
        y_all = np.concatenate(ys)
        t0 = time.perf_counter()
        model = train_classifier(x_all, y_all, n_estimators=self.n_estimators, max_depth=self.max_depth,
                                 n_jobs=self.n_jobs, seed=self.seed)
        secs = time.perf_counter() - t0
        self.seconds += secs
        model.set_params(n_jobs=1)  # blocks run in parallel already
        pooled = {c: int((y_all == k).sum()) for k, c in enumerate(self.classes)}
        log.info("random forest: %d trees on %d %s %s (%.1f s)", self.n_estimators, len(y_all), what, pooled,
                 secs)
        return model, pooled


def _gather_np(features: Any, flat: np.ndarray) -> np.ndarray:
    import dask

    return np.asarray(dask.compute(_gather(features, flat))[0]) if len(flat) else np.zeros((0, 1), np.float32)


def _merge_points(flat: np.ndarray, cls: np.ndarray, add_flat: np.ndarray, add_cls: np.ndarray, *,
                  override: bool) -> tuple[np.ndarray, np.ndarray]:
    """Union of two (flat index, class) sets, sorted by index; where both hold a pixel, the added class
    wins if ``override``, else the existing one."""
    if override:
        flat, cls, add_flat, add_cls = add_flat, add_cls, flat, cls
    keep = ~np.isin(add_flat, flat)
    all_flat = np.concatenate([flat, add_flat[keep]])
    all_cls = np.concatenate([cls, add_cls[keep]]).astype(np.uint8)
    order = np.argsort(all_flat, kind="stable")
    return all_flat[order], all_cls[order]


def _merge_labelled(flat: np.ndarray, cls: np.ndarray, scrib: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Add the labelled pixels of ``scrib`` (255 = none) to ``(flat, cls)``; they override, result sorted."""
    if scrib is None:
        return flat, cls
    s_flat = np.flatnonzero(scrib.ravel() != IGNORE_LABEL)
    if s_flat.size == 0:
        return flat, cls
    return _merge_points(flat, cls, s_flat, scrib.ravel()[s_flat], override=True)


def _apply_scribbles(flat: np.ndarray, cls: np.ndarray, scrib: np.ndarray | None, p: _Prepared,
                     classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Merge automatic seeds with scribbles: scribbled pixels are added and override automatic ones."""
    p.n_auto = {c: int((cls == k).sum()) for k, c in enumerate(classes)}
    if scrib is not None:
        s_cls = scrib.ravel()[scrib.ravel() != IGNORE_LABEL]
        if s_cls.size:
            p.n_scribbled = {c: int((s_cls == k).sum()) for k, c in enumerate(classes)}
    return _merge_labelled(flat, cls, scrib)
