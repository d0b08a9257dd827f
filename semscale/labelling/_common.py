"""Constants and block helpers shared by every layer of :mod:`semscale.labelling` (no I/O).

Gaussian filtering with the halo that makes blocks exact, block ranges of dask chunks, and one helper that
maps a function over an image with a mirrored halo (numpy in → numpy out, dask in → dask out).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from semscale import EDS_ELEMENTS

if TYPE_CHECKING:
    import dask.array as da

__all__ = [
    "EDS_SMOOTH_SIGMA",
    "ELEMENTS",
    "PHASES",
    "SEM_SMOOTH_SIGMA",
    "TRUNCATE",
    "block_range",
    "ensure_min_chunk",
    "gaussian",
    "gauss_halo",
    "map_with_halo",
    "smooth",
]

TRUNCATE = 4.0
"""Gaussian kernels are cut at ``TRUNCATE * sigma`` (scipy's default); the block halo covers that."""
ELEMENTS: tuple[str, ...] = EDS_ELEMENTS
"""EDS channels the seeding rules need (YSZ = ZrO2 contains O; NiO contains Ni and O; Ni only Ni)."""
PHASES: tuple[str, ...] = ("pore", "NiO", "Ni", "YSZ")
EDS_SMOOTH_SIGMA = 1.0
"""σ (EDS px) of the smoothing applied to the native EDS maps before rules and features."""
SEM_SMOOTH_SIGMA = 1.0
"""σ (SEM px) of the smoothing applied before the SEM pore threshold."""

Chunks = tuple[tuple[int, ...], ...]


def gaussian(x: np.ndarray, sigma: float, order: int | tuple[int, int] = 0) -> np.ndarray:
    """scipy's Gaussian filter (or derivative ``order``) with reflect boundary, cut at :data:`TRUNCATE`."""
    from scipy import ndimage

    return ndimage.gaussian_filter(x, sigma, order=order, mode="reflect", truncate=TRUNCATE)


def gauss_halo(sigma: float) -> int:
    """Radius (px) of scipy's Gaussian kernel for ``sigma`` at :data:`TRUNCATE`."""
    return int(TRUNCATE * float(sigma) + 0.5)


def smooth(image: np.ndarray | da.Array, *, sigma: float = SEM_SMOOTH_SIGMA) -> np.ndarray | da.Array:
    """Gaussian smoothing (σ in px, reflect boundary), float32; dask in → dask out (exact blockwise)."""
    import dask.array as da

    if isinstance(image, da.Array):
        return da.map_overlap(
            lambda b: gaussian(b.astype(np.float32), sigma), image, depth=gauss_halo(sigma),
            boundary="reflect", dtype=np.float32, meta=np.empty((0, 0), np.float32),
        )
    return gaussian(np.asarray(image, dtype=np.float32), sigma)


def block_range(chunks: Chunks, loc: tuple[int, ...]) -> list[tuple[int, int]]:
    """Global ``(start, stop)`` per axis of the block at chunk location ``loc``."""
    out = []
    for axis_chunks, i in zip(chunks, loc):
        start = int(sum(axis_chunks[:i]))
        out.append((start, start + int(axis_chunks[i])))
    return out


def ensure_min_chunk(x: da.Array, size: int) -> da.Array:
    """Rechunk a 2-D dask array so that no chunk is smaller than ``size`` (the halo of an overlap).

    Every chunk of an axis but the last then has the first one's size; a short last chunk is merged into
    its neighbour (so the last may be larger)."""
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
                last = cs.pop()
                cs[-1] += last
            fixed.append(tuple(cs))
        x = x.rechunk(tuple(fixed))
    return x


def map_with_halo(
    sem_norm: np.ndarray | da.Array,
    fn: Callable[[np.ndarray, tuple[int, int], tuple[int, int]], np.ndarray],
    *,
    halo: int,
    min_chunk: int,
) -> np.ndarray | da.Array:
    """Apply ``fn(padded_block, rows, cols) -> uint8 block`` over an image with a mirrored ``halo`` (px).

    ``rows``/``cols`` are the block's global pixel ranges (without halo). numpy in → numpy out; dask in →
    dask out (chunks of at least ``min_chunk`` px, output chunked like the input).
    """
    import dask.array as da

    if not isinstance(sem_norm, da.Array):
        shape = sem_norm.shape
        return fn(np.pad(np.asarray(sem_norm, np.float32), halo, mode="symmetric"), (0, shape[0]), (0, shape[1]))
    sem_norm = ensure_min_chunk(sem_norm, min_chunk)
    chunks = sem_norm.chunks
    padded = da.overlap.overlap(sem_norm.astype(np.float32), depth={0: halo, 1: halo},
                                boundary={0: "reflect", 1: "reflect"})

    def block(b: np.ndarray, block_info: Any = None) -> np.ndarray:
        rows, cols = block_range(chunks, block_info[None]["chunk-location"])
        return fn(b, rows, cols)

    return da.map_blocks(block, padded, chunks=chunks, dtype=np.uint8, meta=np.empty((0, 0), np.uint8))
