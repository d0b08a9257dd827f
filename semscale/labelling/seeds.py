"""Seed pixels for the labelling forest: where the EDS evidence is unambiguous and the SEM agrees.

Per-pixel rule evidence (:class:`~semscale.labelling.rules.EdsRules`) is packed into uint8 codes and eroded
so that seeds keep away from EDS phase boundaries (:func:`seed_candidates`); optional SEM-decided seeds near
solid|solid boundaries (:func:`boundary_seed_candidates`); a chunk-independent random pick per class
(:func:`select_seeds`); and the merging of seed sets with scribbles. numpy in → numpy out, dask in → dask
out; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from semscale import IGNORE_LABEL
from semscale.errors import InputImageError
from semscale.labelling._common import (
    ELEMENTS,
    PHASES,
    SEM_SMOOTH_SIGMA,
    block_range,
    gauss_halo,
    gaussian,
    map_with_halo,
)
from semscale.labelling.registration import check_eds_shape, sample_eds
from semscale.labelling.rules import MARGIN, UNMIX_PHASES, EdsRules, eds_quantities, unmix

if TYPE_CHECKING:
    import dask.array as da

__all__ = [
    "BOUNDARY_MIN_FRACTION",
    "BOUNDARY_MIN_LOG_RATIO",
    "BOUNDARY_MIN_SEPARATION",
    "ERODE_PX",
    "SOLID_PORE_GAP_PX",
    "boundary_seed_candidates",
    "merge_labelled",
    "merge_points",
    "seed_candidates",
    "select_seeds",
    "sem_class_stats",
]

ERODE_PX: float | None = None
"""Distance (SEM px) a solid seed keeps from other EDS classes; ``None``: 1.5 × the EDS factor."""

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


def _class_index(classes: Sequence[str]) -> dict[str, int]:
    """Label value of each phase the rules know; every one of them must be a class."""
    missing = [c for c in PHASES if c not in classes]
    if missing:
        raise InputImageError(
            f"Expected classes {list(PHASES)} for the EDS seeding rules. Got {list(classes)}. Use scribbles "
            "for other class sets."
        )
    return {c: list(classes).index(c) for c in PHASES}


def seed_candidates(
    sem_norm: np.ndarray | da.Array,
    eds: Mapping[str, np.ndarray],
    rules: EdsRules,
    *,
    factor: int,
    shift: tuple[float, float] = (0.0, 0.0),
    margin: float = MARGIN,
    erode_px: float | None = ERODE_PX,
    pore_erode_px: float = 1.0,
    classes: Sequence[str] = PHASES,
) -> np.ndarray | da.Array:
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

    class_index = _class_index(classes)
    radius = 1.5 * factor if erode_px is None else float(erode_px)
    depth = math.floor(max(radius, pore_erode_px))
    halo = gauss_halo(_SEM_NIO_SIGMA)
    shape = tuple(int(v) for v in sem_norm.shape)
    eds = {el: np.asarray(eds[el], np.float32) for el in ELEMENTS}
    for m in eds.values():
        check_eds_shape(m.shape, shape, factor)
    shift = (float(shift[0]), float(shift[1]))

    def codes(b: np.ndarray, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        b = np.asarray(b, np.float32)
        core = (slice(halo, b.shape[0] - halo), slice(halo, b.shape[1] - halo))
        s1 = gaussian(b, SEM_SMOOTH_SIGMA)[core]
        s2 = gaussian(b, _SEM_NIO_SIGMA)[core]
        ch = {el: sample_eds(m, rows, cols, factor, shift) for el, m in eds.items()}
        return _codes_block(s1, s2, ch, rules, margin=margin, class_index=class_index)

    def seeds(c: np.ndarray) -> np.ndarray:
        return _seeds_from_codes(c, radius=radius, pore_radius=pore_erode_px, class_index=class_index)

    c = map_with_halo(sem_norm, codes, halo=halo, min_chunk=max(halo, depth))
    if isinstance(c, np.ndarray):
        if depth == 0:
            return seeds(c)
        return seeds(np.pad(c, depth, mode="symmetric"))[depth:-depth, depth:-depth]
    if depth == 0:
        return da.map_blocks(seeds, c, dtype=np.uint8, meta=np.empty((0, 0), np.uint8))
    return da.map_overlap(seeds, c, depth=depth, boundary="reflect", dtype=np.uint8,
                          meta=np.empty((0, 0), np.uint8))



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

    s1 = gaussian(np.asarray(b, np.float32), SEM_SMOOTH_SIGMA)
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
    sem_norm: np.ndarray | da.Array, eds: Mapping[str, np.ndarray], rules: EdsRules, *, factor: int,
    stats: Mapping[str, tuple[float, float]], shift: tuple[float, float] = (0.0, 0.0),
    classes: Sequence[str] = PHASES,
) -> np.ndarray | da.Array:
    """Seeds near solid|solid phase boundaries, where the EDS is blurred but the SEM is clear (uint8).

    Where the unmixed EDS fractions (:func:`unmix`) show exactly two solid phases, a pixel (not within
    ``SOLID_PORE_GAP_PX`` of SEM-dark pixels) becomes a seed of the one whose SEM grey-level distribution
    (``stats``: mean, std of the σ = 1 px smoothed SEM per class, from the interior seeds) explains it
    ``BOUNDARY_MIN_LOG_RATIO`` better and typically (|z| ≤ 2.5). The EDS always allows the class (its
    fraction is ≥ ``BOUNDARY_MIN_FRACTION``). Pairs of phases the SEM cannot separate (means closer than
    ``BOUNDARY_MIN_SEPARATION`` standard deviations) get none. Dask in → dask out.
    """
    class_index = {c: list(classes).index(c) for c in PHASES if c in classes}
    halo = gauss_halo(SEM_SMOOTH_SIGMA) + math.ceil(SOLID_PORE_GAP_PX)
    eds = {el: np.asarray(eds[el], np.float32) for el in ELEMENTS}
    shift = (float(shift[0]), float(shift[1]))

    def run(b: np.ndarray, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        ch = {el: sample_eds(m, rows, cols, factor, shift) for el, m in eds.items()}
        return _boundary_block(b, halo, ch, rules, stats, class_index)

    return map_with_halo(sem_norm, run, halo=halo, min_chunk=halo)


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


def select_seeds(cand: np.ndarray | da.Array, *, n_classes: int, max_per_class: int, seed: int = 0) -> Any:
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
            (y0, _), (x0, _) = block_range(cand.chunks, (i, j))
            parts.append(pick(blk, y0, x0, width, n_classes, max_per_class, seed))
    return dask.delayed(merge, pure=True)(parts)



def merge_points(flat: np.ndarray, cls: np.ndarray, add_flat: np.ndarray, add_cls: np.ndarray, *,
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


def merge_labelled(flat: np.ndarray, cls: np.ndarray, scrib: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Add the labelled pixels of ``scrib`` (255 = none) to ``(flat, cls)``; they override, result sorted."""
    if scrib is None:
        return flat, cls
    s_flat = np.flatnonzero(scrib.ravel() != IGNORE_LABEL)
    if s_flat.size == 0:
        return flat, cls
    return merge_points(flat, cls, s_flat, scrib.ravel()[s_flat], override=True)

