"""Pixel features for the labelling forest: multiscale SEM filters plus registered EDS channels.

Per σ: Gaussian, gradient magnitude, Laplacian of Gaussian, Hessian eigenvalues and local standard deviation
of the normalised SEM; then the EDS maps sampled onto the SEM grid, the rule quantities and the unmixed
phase fractions. Blocks are computed with a halo that covers the largest filter, so blockwise results equal
whole-image ones exactly. numpy in → numpy out, dask in → dask out; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from semscale.config import LabellingConfig
from semscale.errors import InputImageError
from semscale.labelling._common import ELEMENTS, block_range, ensure_min_chunk, gauss_halo, gaussian
from semscale.labelling.registration import check_eds_shape, sample_eds
from semscale.labelling.rules import DEFAULT_ENDMEMBERS, UNMIX_PHASES, eds_quantities, unmix

if TYPE_CHECKING:
    import dask.array as da

__all__ = [
    "DEFAULT_SIGMAS",
    "FeatureParams",
    "feature_block",
    "feature_halo",
    "feature_names",
    "feature_stack",
    "sem_features",
]

DEFAULT_SIGMAS: tuple[float, ...] = LabellingConfig().sigmas
"""Scales (SEM px) of the SEM features: the labelling config's default."""
_SEM_FEATURES_PER_SIGMA = ("gauss", "gradmag", "log", "hess_hi", "hess_lo", "std")


def feature_names(sigmas: Sequence[float] = DEFAULT_SIGMAS, *, with_eds: bool = True) -> list[str]:
    """Names of the feature channels, in the order of :func:`feature_stack`."""
    names = ["sem"] + [f"{k}_{s:g}" for s in sigmas for k in _SEM_FEATURES_PER_SIGMA]
    return names + (_eds_feature_names() if with_eds else [])


def _eds_feature_names() -> list[str]:
    return [f"eds_{el}" for el in ELEMENTS] + ["eds_solid", "eds_zr", "eds_ox"] + [
        f"eds_frac_{c}" for c in UNMIX_PHASES] + ["eds_frac_solid"]


def feature_halo(sigmas: Sequence[float]) -> int:
    """Halo (px) a block needs so that its features equal the whole image's: the largest kernel radius."""
    return max(gauss_halo(s) for s in sigmas) if sigmas else 0


def _sem_features_np(x: np.ndarray, sigmas: Sequence[float]) -> np.ndarray:
    """SEM feature channels of one (haloed) block, float32 ``(h, w, 1 + 6 len(sigmas))``."""
    x = np.asarray(x, dtype=np.float32)
    out = np.empty((*x.shape, 1 + len(_SEM_FEATURES_PER_SIGMA) * len(sigmas)), np.float32)
    out[..., 0] = x
    x2 = x * x
    k = 1
    for s in sigmas:
        g = gaussian(x, s)
        gy = gaussian(x, s, (1, 0))
        gx = gaussian(x, s, (0, 1))
        hyy = gaussian(x, s, (2, 0))
        hxx = gaussian(x, s, (0, 2))
        hxy = gaussian(x, s, (1, 1))
        tr = 0.5 * (hxx + hyy)
        rad = np.sqrt(0.25 * (hxx - hyy) ** 2 + hxy**2)
        var = gaussian(x2, s) - g * g
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
    channels, the rule quantities ``solid``, ``zr``, ``ox`` (see ``EdsRules``) and the unmixed phase
    fractions (``unmix``)."""
    q = eds_quantities(channels, scales=scales, o_per_zr=o_per_zr)
    f = unmix(q, endmembers)
    feats = [q[el] for el in ELEMENTS] + [q["solid"], q["zr"], q["ox"]] + [f[c] for c in UNMIX_PHASES]
    return np.stack([*feats, f["solid"]], axis=-1).astype(np.float32)


class FeatureParams:
    """Everything :func:`feature_block` needs besides the SEM block, checked and normalised once.

    ``eds``: native-resolution Ni, O, Zr maps (float32; ``{}`` for SEM features only); ``factor``: EDS
    factor; ``shift`` (SEM px); ``scales`` (counts; default 1); ``o_per_zr``; ``endmembers`` (default
    ``DEFAULT_ENDMEMBERS``); ``sigmas`` (SEM px).
    """

    def __init__(self, eds: Mapping[str, np.ndarray], *, shape: tuple[int, ...], factor: int,
                 shift: tuple[float, float] = (0.0, 0.0), scales: Mapping[str, float] | None = None,
                 o_per_zr: float = 0.0, endmembers: Mapping[str, Sequence[float]] | None = None,
                 sigmas: Sequence[float] = DEFAULT_SIGMAS) -> None:
        if len(shape) != 2:
            raise InputImageError(f"Expected a 2-D SEM image for `sem_norm`. Got shape {shape}.")
        if eds:
            missing = [el for el in ELEMENTS if el not in eds]
            if missing:
                raise InputImageError(f"Expected EDS maps {list(ELEMENTS)}. Got {sorted(eds)} (missing {missing}).")
            eds = {el: np.asarray(eds[el], np.float32) for el in ELEMENTS}
        for m in eds.values():
            check_eds_shape(m.shape, shape, factor)
        self.eds = dict(eds)
        self.factor = int(factor)
        self.scales = {el: float((scales or {}).get(el, 1.0)) for el in eds}
        self.o_per_zr = float(o_per_zr)
        self.endmembers = {c: tuple(float(v) for v in e) for c, e in (endmembers or DEFAULT_ENDMEMBERS).items()}
        self.shift = (float(shift[0]), float(shift[1]))
        self.sigmas = tuple(float(s) for s in sigmas)

    @property
    def n_features(self) -> int:
        return 1 + len(_SEM_FEATURES_PER_SIGMA) * len(self.sigmas) + (len(_eds_feature_names()) if self.eds else 0)


def feature_block(sem_block: np.ndarray, p: FeatureParams, *, halo: int, rows: tuple[int, int],
                  cols: tuple[int, int]) -> np.ndarray:
    """Features ``(h, w, F)`` of the SEM pixels ``rows × cols`` from ``sem_block``, their normalised SEM
    with ``halo`` px of (mirrored) context on every side."""
    f_sem = _sem_features_np(sem_block, p.sigmas)
    if halo:
        f_sem = f_sem[halo:-halo, halo:-halo]
    if not p.eds:
        return f_sem
    reg = {el: sample_eds(m, rows, cols, p.factor, p.shift) for el, m in p.eds.items()}
    return np.concatenate([f_sem, _eds_features_np(reg, p.scales, p.o_per_zr, p.endmembers)], axis=-1)


def sem_features(sem_norm: np.ndarray | da.Array, *, sigmas: Sequence[float] = DEFAULT_SIGMAS
                 ) -> np.ndarray | da.Array:
    """Multiscale SEM features ``(H, W, 1 + 6·len(sigmas))`` float32 of a normalised SEM image.

    Per σ (px): Gaussian, gradient magnitude (×σ), Laplacian of Gaussian (×σ²), the two Hessian
    eigenvalues (×σ²), local standard deviation. Reflect boundary. Dask in → dask out, equal to the whole
    image result for any chunking (halo ``ceil(4 σ_max)``).
    """
    return feature_stack(sem_norm, {}, factor=1, sigmas=sigmas)


def feature_stack(
    sem_norm: np.ndarray | da.Array,
    eds: Mapping[str, np.ndarray],
    *,
    factor: int,
    shift: tuple[float, float] = (0.0, 0.0),
    scales: Mapping[str, float] | None = None,
    o_per_zr: float = 0.0,
    endmembers: Mapping[str, Sequence[float]] | None = None,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
) -> np.ndarray | da.Array:
    """SEM features plus registered EDS features: ``(H, W, F)`` float32 (names: :func:`feature_names`).

    ``eds``: native-resolution Ni, O, Zr maps (numpy, small; ``ceil(H/f) × ceil(W/f)``; usually
    ``smooth_eds``-ed), sampled onto the SEM grid with ``shift`` (SEM px), divided by ``scales``
    (counts; default 1), plus the rule quantities (``o_per_zr``: see ``EdsRules``) and the phase
    fractions unmixed with ``endmembers`` (default ``DEFAULT_ENDMEMBERS``); ``{}`` for SEM
    features only. Dask in → dask out with the SEM's chunks in y/x (at least the halo) and all features
    in one chunk; blocks equal the whole-image result exactly.
    """
    import dask.array as da

    shape = tuple(int(v) for v in sem_norm.shape)
    p = FeatureParams(eds, shape=shape, factor=factor, shift=shift, scales=scales, o_per_zr=o_per_zr,
                      endmembers=endmembers, sigmas=sigmas)
    if not isinstance(sem_norm, da.Array):
        return feature_block(np.asarray(sem_norm, np.float32), p, halo=0, rows=(0, shape[0]), cols=(0, shape[1]))
    halo = feature_halo(p.sigmas)
    sem_norm = ensure_min_chunk(sem_norm, halo)
    chunks = sem_norm.chunks
    padded = da.overlap.overlap(sem_norm.astype(np.float32), depth={0: halo, 1: halo},
                                boundary={0: "reflect", 1: "reflect"}) if halo else sem_norm

    def block(b: np.ndarray, block_info: Any = None) -> np.ndarray:
        rows, cols = block_range(chunks, block_info[None]["chunk-location"])
        return feature_block(b, p, halo=halo, rows=rows, cols=cols)

    return da.map_blocks(
        block, padded, chunks=(chunks[0], chunks[1], (p.n_features,)), new_axis=2, dtype=np.float32,
        meta=np.empty((0, 0, 0), np.float32),
    )
