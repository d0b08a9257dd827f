"""Microstructure measures of one label image (numpy or dask, any chunking), computed block by block.

One pass over the chunks: each block, read with a 1-px halo, yields its bootstrap-tile counts and its
components (:mod:`semscale.kernels.morphometry`); the client adds the counts, joins the components across
chunk edges and derives the values, their bootstrap intervals and the size distribution. Counts are
integers, so the result is the same for every chunking (counts bit for bit, floats to rounding); memory
per task is one block, and what comes back per block is its tile counts and edge strips.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from semscale import IGNORE_LABEL
from semscale.config import StatsConfig
from semscale.errors import ConfigError
from semscale.kernels.morphometry import (
    CountLayout,
    block_components,
    block_counts,
    bootstrap_interval,
    derived,
    hist_quantiles,
    merge_components,
)

__all__ = ["class_indices", "measure"]


def class_indices(classes: Sequence[str], names: Sequence[str]) -> tuple[int, ...] | None:
    """Indices of ``names`` among ``classes``; None (the quantity is not defined) if one is missing."""
    if not all(n in classes for n in names):
        return None
    return tuple(list(classes).index(n) for n in names)


def _task(padded: np.ndarray, *, origin: tuple[int, int], n_classes: int, tpb: tuple[int, ...] | None,
          tile_px: int) -> tuple[np.ndarray, np.ndarray, Any]:
    padded = np.ascontiguousarray(padded, dtype=np.uint8)
    tiles, counts = block_counts(padded, n_classes=n_classes, tpb_classes=tpb, tile_px=tile_px, origin=origin)
    return tiles, counts, block_components(padded[1:-1, 1:-1], n_classes=n_classes)


def measure(labels: Any, *, cfg: StatsConfig, classes: Sequence[str], pixel_size_um: float,
            chunks: int = 1024) -> dict[str, Any]:
    """Every measure of one label image (uint8, 0..K-1, 255 unlabelled); a numpy image is cut into
    ``chunks``-px blocks. Returns plain numpy values keyed as the stats Dataset names them (no suffix):
    counts (``pixel_count``, ``tpb_count``), ``fraction``, ``phase_area``, ``labelled_area``,
    ``oxidation_degree``, ``tpb_density``, ``tpb_length_density``, ``interface_density``, ``size_quantile``,
    ``component_count``, ``largest_component_share``, and ``<name>_ci`` ``(..., 2)`` for each derived value.
    """
    import dask
    import dask.array as da

    arr = labels if isinstance(labels, da.Array) else da.from_array(np.asarray(labels), chunks=chunks)
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise ConfigError(f"Expected a 2-D uint8 label image. Got {arr.ndim}-D {arr.dtype}.")
    K = len(classes)
    tpb = class_indices(classes, cfg.tpb_phases)
    ox = class_indices(classes, cfg.oxidation)
    oxidation = (ox[0], ox[1]) if ox is not None else None
    tile_px = cfg.tile_px(pixel_size_um)
    padded = da.overlap.overlap(arr, depth={0: 1, 1: 1}, boundary={0: IGNORE_LABEL, 1: IGNORE_LABEL})
    starts = [np.concatenate([[0], np.cumsum(c)[:-1]]) for c in arr.chunks]
    blocks = padded.to_delayed()
    task = dask.delayed(_task, pure=True)
    keys = list(np.ndindex(*blocks.shape))
    results = dask.compute(*[task(blocks[r, c], origin=(int(starts[0][r]), int(starts[1][c])), n_classes=K,
                                  tpb=tpb, tile_px=tile_px) for r, c in keys])

    layout = CountLayout(K)
    grid = np.zeros((math.ceil(arr.shape[0] / tile_px), math.ceil(arr.shape[1] / tile_px), layout.width),
                    np.int64)
    comps = {}
    for key, (tiles, counts, bc) in zip(keys, results):
        np.add.at(grid, (tiles[:, 0], tiles[:, 1]), counts)
        comps[key] = bc
    total = grid.sum(axis=(0, 1))
    kw: dict[str, Any] = {"n_classes": K, "pixel_size_um": pixel_size_um, "oxidation": oxidation}
    values = derived(total, **kw)
    if tpb is None:
        values["tpb_density"] = values["tpb_length_density"] = np.array(np.nan)
    ci = bootstrap_interval(grid.reshape(-1, layout.width), draws=cfg.bootstrap, confidence=cfg.confidence,
                            seed=cfg.seed, **kw)
    out: dict[str, Any] = {"pixel_count": total[:K].copy(), "tpb_count": np.int64(total[layout.tpb]),
                           "phase_area": total[:K] * pixel_size_um**2}
    for name, v in values.items():
        out[name] = v
        out[f"{name}_ci"] = ci[name] if not (name.startswith("tpb") and tpb is None) else np.full(
            (*np.shape(v), 2), np.nan)
    out.pop("labelled_area_ci")
    if oxidation is None:
        out["oxidation_degree"] = np.array(np.nan)
        out["oxidation_degree_ci"] = np.full(2, np.nan)

    merged = merge_components(comps, n_classes=K)
    sizes = np.full((K, len(cfg.quantiles)), np.nan)
    count = np.zeros(K, np.int64)
    share = np.full(K, np.nan)
    for k, (areas, n) in enumerate(merged["areas"]):
        keep = areas >= cfg.min_component_px
        diam = 2.0 * np.sqrt(areas[keep] * pixel_size_um**2 / math.pi)
        sizes[k] = hist_quantiles(diam, n[keep], cfg.quantiles)
        count[k] = int(n[keep].sum())
        if total[k] > 0:
            share[k] = merged["largest"][k] / total[k]
    out.update(size_quantile=sizes, component_count=count, largest_component_share=share)
    return out
