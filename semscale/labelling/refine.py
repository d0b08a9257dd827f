"""Edge snapping: every small region of an SEM over-segmentation takes its majority label.

The forest follows the blurred EDS a few pixels past the sharp SEM edges; a watershed of the SEM's gradient
cuts the image into regions of a few px that never cross a visible edge, and each takes the majority of
the forest's labels inside it. numpy in → numpy out, dask in → dask out; no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from semscale import IGNORE_LABEL
from semscale.labelling._common import ensure_min_chunk, gaussian

if TYPE_CHECKING:
    import dask.array as da

__all__ = ["REFINE_HALO", "refine_block", "refine_labels", "superpixels"]

REFINE_HALO = 24
"""Halo (px) around each block when refining; superpixels are a few px across, so blockwise results equal
whole-image ones except where a superpixel would reach beyond the halo."""


def superpixels(sem_norm: np.ndarray, *, sigma: float) -> np.ndarray:
    """Over-segmentation of the SEM into regions bounded by its edges (int32 ids from 1).

    Watershed of the Sobel gradient magnitude of the SEM (smoothed at ``sigma`` px; 0 = raw) from every
    local minimum: regions are a few pixels in area and never cross a visible grey-level edge.
    """
    from skimage.filters import sobel
    from skimage.segmentation import watershed

    x = np.asarray(sem_norm, np.float32)
    if sigma > 0:
        x = gaussian(x, sigma)
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


def refine_block(sem: np.ndarray, labels: np.ndarray, *, sigma: float, n_classes: int) -> np.ndarray:
    """Majority vote of ``labels`` in the :func:`superpixels` of ``sem`` (one block, context included)."""
    return _vote(superpixels(sem, sigma=sigma), np.asarray(labels, np.uint8), n_classes)


def refine_labels(labels: np.ndarray | da.Array, sem_norm: np.ndarray | da.Array, *, n_classes: int,
                  sigma: float, halo: int = REFINE_HALO) -> np.ndarray | da.Array:
    """Snap class boundaries to the SEM's edges: every :func:`superpixels` region takes its majority label.

    The EDS interaction volume blurs the element maps over several pixels, so a pixel classifier fed with
    them puts boundaries where the EDS changes, up to a few pixels off the sharp SEM edge; within a region
    bounded by SEM edges the majority is almost always right. ``labels`` (uint8, 255 = none) and
    ``sem_norm`` (normalised SEM) have the same shape; numpy in → numpy out, dask in → dask out (blocks with
    a ``halo`` px mirrored overlap, chunked like ``labels``).
    """
    import dask.array as da

    if not isinstance(labels, da.Array) and not isinstance(sem_norm, da.Array):
        return refine_block(np.asarray(sem_norm), np.asarray(labels), sigma=sigma, n_classes=n_classes)
    lab = ensure_min_chunk(da.asarray(labels), halo)
    sem = da.asarray(sem_norm).astype(np.float32).rechunk(lab.chunks)
    return da.map_overlap(refine_block, sem, lab, depth=halo, boundary="reflect", dtype=np.uint8,
                          meta=np.empty((0, 0), np.uint8), sigma=sigma, n_classes=n_classes)

