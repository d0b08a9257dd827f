"""Microstructure counts of a label image, block by block (pure numpy in, numpy out).

Everything a statistic needs is an integer count that adds up exactly over blocks, so any chunking of an
image gives the whole image's numbers bit for bit:

* :func:`block_counts` — per bootstrap tile of a global tile grid: pixels of each class, active
  triple-phase-boundary corners and phase-pair transitions along the four directions of the pixel grid.
  It takes the block with a 1-px halo (255 outside the image), because a 2×2 window or a transition that
  starts in the block may end in its neighbour; a window or pair is counted in the block of its first pixel.
* :func:`block_components` / :func:`merge_components` — face-connected (4-neighbour) components of each
  phase; the components that touch a block edge are joined across edges, so a grain cut by chunk borders
  counts once.
* :func:`derived` turns summed counts into fractions, densities and lengths; :func:`bootstrap_interval`
  resamples tiles for their 95 % intervals; :func:`hist_quantiles` gives exact quantiles of a histogram.

Label value ``ignore`` (255) is unlabelled: it belongs to no class, no window containing it is a TPB corner
and no transition touches it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from semscale import IGNORE_LABEL

__all__ = [
    "DIRECTIONS", "LINE_SPACING_PX", "BlockComponents", "CountLayout", "block_components", "block_counts",
    "bootstrap_interval", "derived", "hist_quantiles", "merge_components",
]

DIRECTIONS: tuple[tuple[int, int], ...] = ((0, 1), (1, 0), (1, 1), (1, -1))
"""Pixel steps ``(dy, dx)`` of the four grid directions: 0°, 90°, 45° and 135°."""
LINE_SPACING_PX: tuple[float, ...] = (1.0, 1.0, 1 / math.sqrt(2), 1 / math.sqrt(2))
"""Distance (px) between neighbouring grid lines of each direction (square pixels)."""


@dataclass(frozen=True)
class CountLayout:
    """Columns of a count vector: ``n_classes`` class counts, one TPB count, then ``4 × n_pairs``
    transition counts (direction-major; pairs ``(i, j)``, ``i < j``, in :attr:`pairs` order)."""

    n_classes: int

    @property
    def pairs(self) -> list[tuple[int, int]]:
        k = self.n_classes
        return [(i, j) for i in range(k) for j in range(i + 1, k)]

    @property
    def n_pairs(self) -> int:
        return self.n_classes * (self.n_classes - 1) // 2

    @property
    def tpb(self) -> int:
        return self.n_classes

    @property
    def width(self) -> int:
        return self.n_classes + 1 + len(DIRECTIONS) * self.n_pairs

    def transitions(self, counts: np.ndarray) -> np.ndarray:
        """``(..., 4, n_pairs)`` view of the transition columns of ``counts`` (``(..., width)``)."""
        start = self.n_classes + 1
        return counts[..., start:].reshape(*counts.shape[:-1], len(DIRECTIONS), self.n_pairs)


def _pair_lut(n_classes: int) -> np.ndarray:
    """``lut[a * 256 + b]`` = pair index of classes ``a != b`` (both labelled), else -1 (int16, 65536)."""
    lut = np.full(256 * 256, -1, np.int16)
    for p, (i, j) in enumerate(CountLayout(n_classes).pairs):
        lut[i * 256 + j] = lut[j * 256 + i] = p
    return lut


def _tpb_lut(tpb_classes: Sequence[int] | None, ignore: int) -> np.ndarray:
    """Bit of each label value: 1, 2, 4 for the three TPB classes, 8 for unlabelled, 0 otherwise."""
    lut = np.zeros(256, np.uint8)
    for bit, c in enumerate(tpb_classes or ()):
        lut[c] = 1 << bit
    lut[ignore] = 8
    return lut


def block_counts(
    padded: np.ndarray, *, n_classes: int, tpb_classes: Sequence[int] | None, tile_px: int,
    origin: tuple[int, int], ignore: int = IGNORE_LABEL,
) -> tuple[np.ndarray, np.ndarray]:
    """Counts per bootstrap tile for the core of ``padded`` (a uint8 block with a 1-px halo on each side).

    ``origin``: image coordinates (px) of the core's first pixel; tiles are ``tile_px`` squares of the
    image from (0, 0). Returns ``(tiles, counts)``: ``tiles`` ``(n, 2)`` int64 tile (row, column) of the
    image's tile grid, ``counts`` ``(n, layout.width)`` int64 (:class:`CountLayout`). A TPB corner is a 2×2
    window, top-left pixel in the core, whose four pixels are labelled and hold all three ``tpb_classes``
    (``None``: none counted). A transition is a pair (pixel, pixel + direction) of two different labelled
    classes, counted at its first pixel.
    """
    padded = np.asarray(padded)
    if padded.dtype != np.uint8 or padded.ndim != 2:
        raise ValueError(f"Expected a 2-D uint8 label block. Got {padded.ndim}-D {padded.dtype}.")
    layout = CountLayout(n_classes)
    h, w = padded.shape[0] - 2, padded.shape[1] - 2
    y0, x0 = origin
    ty = (y0 + np.arange(h)) // tile_px
    tx = (x0 + np.arange(w)) // tile_px
    nty, ntx = int(ty[-1] - ty[0] + 1), int(tx[-1] - tx[0] + 1)
    n_cells = nty * ntx
    cell = ((ty - ty[0])[:, None] * ntx + (tx - tx[0])[None, :]).astype(np.int64)
    core = padded[1:1 + h, 1:1 + w]
    out = np.zeros((n_cells, layout.width), np.int64)

    def tally(mask: np.ndarray, code: np.ndarray | None, n_codes: int) -> np.ndarray:
        idx = cell[mask] * n_codes + (code[mask] if code is not None else 0)
        return np.bincount(idx, minlength=n_cells * n_codes).reshape(n_cells, n_codes)

    labelled = core != ignore
    out[:, :n_classes] = tally(labelled & (core < n_classes), core.astype(np.int64), n_classes)
    if tpb_classes is not None:
        lut = _tpb_lut(tpb_classes, ignore)
        bits = lut[padded]
        window = bits[1:1 + h, 1:1 + w] | bits[2:2 + h, 1:1 + w] | bits[1:1 + h, 2:2 + w] | bits[2:2 + h, 2:2 + w]
        out[:, layout.tpb] = tally(window == 7, None, 1)[:, 0]
    pair_lut = _pair_lut(n_classes)
    trans = layout.transitions(out)
    wide = core.astype(np.int32) * 256
    for d, (dy, dx) in enumerate(DIRECTIONS):
        other = padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
        code = pair_lut[wide + other]
        trans[:, d, :] = tally(code >= 0, code.astype(np.int64), layout.n_pairs)
    gy, gx = np.divmod(np.arange(n_cells), ntx)
    tiles = np.stack([gy + ty[0], gx + tx[0]], axis=1).astype(np.int64)
    return tiles, out


# --- derived quantities ---------------------------------------------------------------------------------
def derived(counts: np.ndarray, *, n_classes: int, pixel_size_um: float,
            oxidation: tuple[int, int] | None) -> dict[str, np.ndarray]:
    """Fractions, densities and lengths from summed counts ``(..., width)`` (any leading shape).

    ``fraction`` (``(..., K)``, of labelled pixels), ``labelled_area`` (µm²), ``oxidation_degree``
    (``oxidised / (oxidised + metal)`` for ``oxidation = (oxidised, metal)`` classes), ``tpb_density``
    (corners per µm² of labelled area), ``tpb_length_density`` (``2 · tpb_density``, µm/µm³, the
    stereological estimate for an isotropic structure) and ``interface_density`` (``(..., n_pairs)``, µm of
    interface per µm² of labelled area: Crofton's formula on the four grid directions,
    ``L = (π / 8) · Σ_d s_d · n_d`` with line spacing ``s_d`` and ``n_d`` transitions). NaN where undefined.
    """
    layout = CountLayout(n_classes)
    counts = np.asarray(counts, dtype=np.float64)
    cls = counts[..., :n_classes]
    n = cls.sum(axis=-1)
    area = n * pixel_size_um**2
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {"fraction": cls / n[..., None], "labelled_area": area}
        if oxidation is not None:
            ox, metal = cls[..., oxidation[0]], cls[..., oxidation[1]]
            out["oxidation_degree"] = ox / (ox + metal)
        out["tpb_density"] = counts[..., layout.tpb] / area
        out["tpb_length_density"] = 2.0 * out["tpb_density"]
        trans = layout.transitions(counts)
        spacing = np.asarray(LINE_SPACING_PX)[:, None]
        length_um = (math.pi / 8.0) * (trans * spacing).sum(axis=-2) * pixel_size_um
        out["interface_density"] = length_um / area[..., None]
    return out


def bootstrap_interval(
    tile_counts: np.ndarray, *, n_classes: int, pixel_size_um: float, oxidation: tuple[int, int] | None,
    draws: int, confidence: float, seed: int, batch: int = 100,
) -> dict[str, np.ndarray]:
    """Percentile intervals of :func:`derived` over a block bootstrap of tiles.

    ``tile_counts`` ``(n_tiles, width)``; tiles with no labelled pixel are left out. Each draw resamples the
    tiles with replacement and recomputes every quantity from the resampled sums (ratio of sums). Returns,
    per quantity, an array of its shape plus a last axis ``(lower, upper)``; NaN with fewer than 2 tiles.
    """
    t = np.asarray(tile_counts, dtype=np.int64)
    t = t[t[:, :n_classes].sum(axis=1) > 0]
    n = len(t)
    kw: dict[str, Any] = {"n_classes": n_classes, "pixel_size_um": pixel_size_um, "oxidation": oxidation}
    template = derived(t.sum(axis=0), **kw)
    if n < 2 or draws < 1:
        return {k: np.full((*np.shape(v), 2), np.nan) for k, v in template.items()}
    rng = np.random.default_rng(seed)
    samples: dict[str, list[np.ndarray]] = {k: [] for k in template}
    for start in range(0, draws, batch):
        m = min(batch, draws - start)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=m)  # (m, n): how often each tile is drawn
        for k, v in derived(weights @ t, **kw).items():
            samples[k].append(v)
    alpha = (1.0 - confidence) / 2.0
    out = {}
    for k, parts in samples.items():
        values = np.concatenate(parts, axis=0)
        with np.errstate(invalid="ignore"):
            lo, hi = np.nanquantile(values, [alpha, 1.0 - alpha], axis=0) if np.isfinite(values).any() else (
                np.full(values.shape[1:], np.nan), np.full(values.shape[1:], np.nan))
        out[k] = np.stack([lo, hi], axis=-1)
    return out


# --- connected components ---------------------------------------------------------------------------------
@dataclass
class BlockComponents:
    """The components of one block: interior ones as per-phase area histograms, edge ones for merging.

    ``interior[k]`` = ``(areas, counts)`` (sorted unique areas, px, and how many interior components of
    phase ``k`` have each); ``edge_phase`` / ``edge_area`` per edge component; ``top``, ``bottom``,
    ``left``, ``right``: the edge component index of each pixel on that block edge (-1: none).
    """

    interior: list[tuple[np.ndarray, np.ndarray]]
    edge_phase: np.ndarray
    edge_area: np.ndarray
    top: np.ndarray
    bottom: np.ndarray
    left: np.ndarray
    right: np.ndarray


_FACE = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)


def block_components(block: np.ndarray, *, n_classes: int) -> BlockComponents:
    """Face-connected components of each class ``0..n_classes-1`` in a uint8 block (no halo)."""
    from scipy import ndimage

    block = np.asarray(block)
    ids = np.zeros(block.shape, np.int64)
    phase_of: list[np.ndarray] = [np.zeros(1, np.int64)]
    next_id = 1
    for k in range(n_classes):
        lab, n = ndimage.label(block == k, structure=_FACE)
        if n:
            ids[lab > 0] = lab[lab > 0] + (next_id - 1)
            phase_of.append(np.full(n, k, np.int64))
            next_id += n
    phase = np.concatenate(phase_of)
    area = np.bincount(ids.ravel(), minlength=next_id)
    on_edge = np.zeros(next_id, bool)
    strips = {"top": ids[0], "bottom": ids[-1], "left": ids[:, 0], "right": ids[:, -1]}
    for strip in strips.values():
        on_edge[strip] = True
    on_edge[0] = False
    edge_ids = np.flatnonzero(on_edge)
    compact = np.full(next_id, -1, np.int64)
    compact[edge_ids] = np.arange(len(edge_ids))
    interior_ids = np.flatnonzero(~on_edge[1:]) + 1
    interior = []
    for k in range(n_classes):
        a = area[interior_ids[phase[interior_ids] == k]]
        interior.append(np.unique(a, return_counts=True) if len(a) else (np.zeros(0, np.int64),) * 2)
    return BlockComponents(interior=[(np.asarray(a, np.int64), np.asarray(c, np.int64)) for a, c in interior],
                           edge_phase=phase[edge_ids], edge_area=area[edge_ids].astype(np.int64),
                           **{name: compact[s] for name, s in strips.items()})


def merge_components(blocks: Mapping[tuple[int, int], BlockComponents], *, n_classes: int) -> dict[str, Any]:
    """Join edge components across the edges of neighbouring blocks (keys: block row, column).

    Returns ``areas`` (per class: ``(areas, counts)``, the histogram of all component areas in px) and
    ``largest`` (per class: the largest component's area, px; 0 if the class is absent).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    offsets, start = {}, 0
    for key in sorted(blocks):
        offsets[key] = start
        start += len(blocks[key].edge_area)
    phase = np.concatenate([blocks[k].edge_phase for k in sorted(blocks)] or [np.zeros(0, np.int64)])
    area = np.concatenate([blocks[k].edge_area for k in sorted(blocks)] or [np.zeros(0, np.int64)])
    rows, cols = [], []
    for (r, c), b in blocks.items():
        for nb_key, mine, theirs in (((r + 1, c), b.bottom, "top"), ((r, c + 1), b.right, "left")):
            nb = blocks.get(nb_key)
            if nb is None:
                continue
            other = getattr(nb, theirs)
            both = (mine >= 0) & (other >= 0)
            a, o = mine[both] + offsets[(r, c)], other[both] + offsets[nb_key]
            same = phase[a] == phase[o]
            rows.append(a[same])
            cols.append(o[same])
    n = len(area)
    merged_area = np.zeros(0, np.int64)
    merged_phase = np.zeros(0, np.int64)
    if n:
        r_ = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        c_ = np.concatenate(cols) if cols else np.zeros(0, np.int64)
        graph = coo_matrix((np.ones(len(r_), np.int8), (r_, c_)), shape=(n, n))
        n_comp, comp = connected_components(graph, directed=False)
        merged_area = np.zeros(n_comp, np.int64)
        np.add.at(merged_area, comp, area)
        merged_phase = np.zeros(n_comp, np.int64)
        merged_phase[comp] = phase
    areas, largest = [], []
    for k in range(n_classes):
        parts_a = [merged_area[merged_phase == k]]
        parts_c = [np.ones(len(parts_a[0]), np.int64)]
        for b in blocks.values():
            parts_a.append(b.interior[k][0])
            parts_c.append(b.interior[k][1])
        a_all, c_all = np.concatenate(parts_a), np.concatenate(parts_c)
        values, inverse = np.unique(a_all, return_inverse=True)
        counts = np.zeros(len(values), np.int64)
        np.add.at(counts, inverse, c_all)
        areas.append((values.astype(np.int64), counts))
        largest.append(int(values[-1]) if len(values) else 0)
    return {"areas": areas, "largest": largest}


def hist_quantiles(values: np.ndarray, counts: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """``np.quantile(np.repeat(values, counts), q)`` (linear interpolation) without expanding; ``values``
    sorted ascending. NaN when the histogram is empty."""
    values = np.asarray(values, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    if n == 0:
        return np.full(len(q), np.nan)
    ends = np.cumsum(counts)  # order statistics 0..ends[i]-1 have value values[<= i]
    pos = np.asarray(q, dtype=np.float64) * (n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    v_lo = values[np.searchsorted(ends, lo, side="right")]
    v_hi = values[np.searchsorted(ends, hi, side="right")]
    return v_lo + (pos - lo) * (v_hi - v_lo)
