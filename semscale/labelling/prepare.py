"""Per-image work of the labelling stage at store level: read and register the EDS, fit the rules, build
the lazy seed candidates and features, and draw each round's seed set (with scribbles) and its features.

Reads the store (SEM, EDS, scribble files) and records the registration; the blockwise steps and the
orchestration live in :mod:`~semscale.labelling.steps` and :mod:`~semscale.labelling.label_store`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semscale import IGNORE_LABEL
from semscale.config import LabellingConfig
from semscale.errors import InputImageError, StoreError
from semscale.labelling._common import EDS_SMOOTH_SIGMA, smooth
from semscale.labelling.features import feature_stack
from semscale.labelling.registration import (
    MAX_SHIFT_PX,
    MIN_QUALITY,
    Registration,
    register_arrays,
    shift_native,
    smooth_eds,
)
from semscale.labelling.rules import MARGIN, EdsRules, fit_rules
from semscale.labelling.seeds import (
    ERODE_PX,
    boundary_seed_candidates,
    merge_labelled,
    merge_points,
    seed_candidates,
    select_seeds,
    sem_class_stats,
)
from semscale.labelling.steps import ChunkGrid, FeatureSpec, Seeds, labelling_grid, meta
from semscale.store.layout import CampaignStore

if TYPE_CHECKING:
    import dask.array as da

log = logging.getLogger(__name__)

__all__ = ["PreparedImage", "image_key", "load_scribbles", "prepare_image", "register_image",
           "round_one_seeds", "round_two_seeds"]


def load_scribbles(source: str | Path | np.ndarray, *, shape: tuple[int, ...], n_classes: int) -> np.ndarray:
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


def _read_eds(store: CampaignStore, image_id: str) -> dict[str, np.ndarray]:
    import dask

    eds = {el: np.asarray(a) for el, a in dask.compute(store.eds(image_id))[0].items()}
    if not eds:
        raise StoreError(f"Expected EDS maps for image `{image_id}` in {store.path}. Got none.")
    return eds


def _record_registration(store: CampaignStore, image_id: str, reg: Registration) -> None:
    if store.root.read_only:
        return
    g = store.eds_group(image_id)
    attrs = meta(g)
    attrs["registration"] = reg.to_dict()
    g.attrs["semscale"] = attrs


def register_image(
    store: CampaignStore, image_id: str, *, min_quality: float = MIN_QUALITY,
    max_shift_px: float | None = MAX_SHIFT_PX, eds_sigma: float = EDS_SMOOTH_SIGMA, write: bool = True,
) -> Registration:
    """Estimate the EDS misregistration of one store image (computes; memory ~ the EDS maps) and record it
    in the EDS group's ``attrs["semscale"]["registration"]``. Warns when quality < ``min_quality``."""
    eds_s = smooth_eds(_read_eds(store, image_id), sigma=eds_sigma)
    reg, *_ = register_arrays(smooth(store.sem_normalised(image_id)), eds_s, factor=store.eds_factor(image_id),
                              image_id=image_id, min_quality=min_quality, max_shift_px=max_shift_px)
    if write:
        _record_registration(store, image_id, reg)
    return reg


@dataclass
class PreparedImage:
    """One image ready for labelling: registration, rules, lazy candidates/seed pick/features, block grid."""

    image_id: str
    registration: Registration
    rules: EdsRules
    features: da.Array
    candidates: da.Array
    picked: Any
    sem_norm: da.Array
    eds: dict[str, np.ndarray]
    factor: int
    grid: ChunkGrid
    sigmas: tuple[float, ...]
    scribbles: np.ndarray | None = None
    key: str = ""
    n_boundary: dict[str, int] = field(default_factory=dict)
    n_auto: dict[str, int] = field(default_factory=dict)
    n_scribbled: dict[str, int] = field(default_factory=dict)

    def spec(self) -> FeatureSpec:
        """The feature settings the blockwise steps recompute this image's features with."""
        r = self.rules
        return FeatureSpec(image_key=self.key, factor=self.factor, shift=self.registration.shift_px,
                           scales=r.scales, o_per_zr=r.o_per_zr, endmembers=r.endmembers, sigmas=self.sigmas,
                           eds_sigma=EDS_SMOOTH_SIGMA)


def prepare_image(store: CampaignStore, image_id: str, cfg: LabellingConfig) -> PreparedImage:
    """Registration, rules, lazy seed candidates and lazy features of one image (computes the first two)."""
    import dask.array as da

    eds_s = smooth_eds(_read_eds(store, image_id), sigma=EDS_SMOOTH_SIGMA)
    factor = store.eds_factor(image_id)
    sem_n = store.sem_normalised(image_id)
    sem_s = smooth(sem_n)
    reg, solid_sem, sem_mean, hist = register_arrays(sem_s, eds_s, factor=factor, image_id=image_id)
    _record_registration(store, image_id, reg)
    rules = fit_rules(shift_native(eds_s, shift_px=reg.shift_px, factor=factor), sem_solid=solid_sem,
                      sem_mean=sem_mean, sem_hist=hist, margin=MARGIN)
    log.info("%s: EDS shift (%.2f, %.2f) px (r=%.2f); %s present; thresholds zr %.3f, ox %.3f, solid %.3f, "
             "sem %.3f", image_id, *reg.shift_px, reg.quality, rules.nio, rules.zr.threshold,
             rules.ox.threshold, rules.solid.threshold, rules.sem.threshold)
    cand = seed_candidates(sem_n, eds_s, rules, factor=factor, shift=reg.shift_px, margin=MARGIN,
                           erode_px=ERODE_PX, classes=store.classes)
    feats = feature_stack(sem_n, eds_s, factor=factor, shift=reg.shift_px, scales=rules.scales,
                          o_per_zr=rules.o_per_zr, endmembers=rules.endmembers or None, sigmas=cfg.sigmas)
    picked = select_seeds(cand, n_classes=len(store.classes), max_per_class=cfg.max_seeds_per_class,
                          seed=cfg.seed)
    grid = labelling_grid(store.sem(image_id).chunks, cfg.sigmas)
    assert isinstance(feats, da.Array) and isinstance(cand, da.Array)  # the store's arrays are dask
    return PreparedImage(image_id, reg, rules, feats, cand, picked, sem_norm=sem_n, eds=eds_s, factor=factor,
                         grid=grid, sigmas=tuple(float(s) for s in cfg.sigmas))


def image_key(store: CampaignStore, p: PreparedImage) -> str:
    """sha256 of everything of the image its labels depend on: SEM pixels, EDS maps, normalisation, EDS
    factor, block grid and the scribbled pixels."""
    h = hashlib.sha256()
    arr = store.sem_array(p.image_id)
    step = int(arr.chunks[0])
    for r0 in range(0, arr.shape[0], step):
        h.update(np.ascontiguousarray(arr[r0 : r0 + step]).tobytes())
    for el, m in sorted(_read_eds(store, p.image_id).items()):
        h.update(el.encode())
        h.update(np.ascontiguousarray(m).tobytes())
    meta = {"dtype": str(arr.dtype), "shape": list(arr.shape), "norm": store.norm(p.image_id), "factor": p.factor,
            "grid": p.grid.chunks()}
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    if p.scribbles is not None and (p.scribbles != IGNORE_LABEL).any():
        h.update(b"scribbles")
        h.update(np.ascontiguousarray(p.scribbles).tobytes())
    return h.hexdigest()


def _gather_np(features: da.Array, flat: np.ndarray) -> np.ndarray:
    """Features at flat pixel indices ``(n, F)`` (computes)."""
    import dask

    if not len(flat):
        return np.zeros((0, 1), np.float32)
    ys, xs = np.divmod(flat, features.shape[1])
    return np.asarray(dask.compute(features.vindex[ys, xs])[0])


def _add_boundary_seeds(p: PreparedImage, flat: np.ndarray, cls: np.ndarray, *, classes: Sequence[str],
                        max_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Add SEM-decided seeds near solid|solid boundaries (see ``boundary_seed_candidates``)."""
    import dask
    import dask.array as da

    if not p.rules.endmembers or len(flat) == 0:
        return flat, cls
    ys, xs = np.divmod(flat, p.sem_norm.shape[1])
    sem_s = smooth(p.sem_norm)
    assert isinstance(sem_s, da.Array)
    values = np.asarray(dask.compute(sem_s.vindex[ys, xs])[0])
    stats = sem_class_stats(values, cls, classes=classes)
    cand = boundary_seed_candidates(p.sem_norm, p.eds, p.rules, factor=p.factor, stats=stats,
                                    shift=p.registration.shift_px, classes=classes)
    b_flat, b_cls = dask.compute(select_seeds(cand, n_classes=len(classes), max_per_class=max_per_class,
                                              seed=seed + 1))[0]
    new = ~np.isin(b_flat, flat)
    p.n_boundary = {c: int((b_cls[new] == k).sum()) for k, c in enumerate(classes)}
    return merge_points(flat, cls, b_flat, b_cls, override=False)


def _apply_scribbles(flat: np.ndarray, cls: np.ndarray, p: PreparedImage, classes: Sequence[str]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Merge automatic seeds with scribbles: scribbled pixels are added and override automatic ones."""
    p.n_auto = {c: int((cls == k).sum()) for k, c in enumerate(classes)}
    scrib = p.scribbles
    if scrib is not None:
        s_cls = scrib.ravel()[scrib.ravel() != IGNORE_LABEL]
        if s_cls.size:
            p.n_scribbled = {c: int((s_cls == k).sum()) for k, c in enumerate(classes)}
    return merge_labelled(flat, cls, scrib)


def round_one_seeds(p: PreparedImage, cfg: LabellingConfig, *, classes: Sequence[str],
                    boundary_seeds: bool) -> Seeds:
    """The automatic seeds (plus boundary seeds if asked, plus scribbles) of one image and their features."""
    import dask

    flat, cls = dask.compute(p.picked)[0]
    if boundary_seeds:
        flat, cls = _add_boundary_seeds(p, flat, cls, classes=classes, max_per_class=cfg.max_seeds_per_class,
                                        seed=cfg.seed)
    flat, cls = _apply_scribbles(flat, cls, p, classes)
    counts = {"n_auto": p.n_auto, "n_scribbled": p.n_scribbled, "n_boundary": p.n_boundary}
    return Seeds(flat=flat, cls=cls, x=_gather_np(p.features, flat), counts=counts)


def round_two_seeds(p: PreparedImage, first: da.Array, cfg: LabellingConfig, *, classes: Sequence[str]) -> Seeds:
    """Pixels drawn from every part of the first round's labels ``first`` (boundaries included, where the
    seeds never are), scribbles still overriding, and their features."""
    import dask

    flat, cls = dask.compute(select_seeds(first, n_classes=len(classes), max_per_class=cfg.max_seeds_per_class,
                                          seed=cfg.seed + 1))[0]
    flat, cls = merge_labelled(flat, cls, p.scribbles)
    return Seeds(flat=flat, cls=cls, x=_gather_np(p.features, flat), counts={})


def restore_counts(p: PreparedImage, seeds: Seeds) -> None:
    """Put the seed counts of a saved round-one seed set back on ``p``."""
    p.n_auto = dict(seeds.counts.get("n_auto", {}))
    p.n_scribbled = dict(seeds.counts.get("n_scribbled", {}))
    p.n_boundary = dict(seeds.counts.get("n_boundary", {}))
