"""Random, augmented training windows streamed from the store (keras-free; see :mod:`.dataset`).

:class:`PatchSampler` slices P×P windows straight out of the Zarr arrays of the SEM image and a label image
(``labels/target`` by default), normalises them with the image's stored normalisation
(:func:`semscale.kernels.norm.apply_norm`, exactly as inference does) and augments them on the fly
(:mod:`semscale.training.augment`). Positions and augmentations depend only on
``(seed, epoch, batch index, slot)``, so a run is reproducible for a seed whatever the number of workers,
and every epoch draws new windows. :class:`semscale.training.dataset.PatchDataset` is the same sampler as a
``keras.utils.PyDataset`` (prefetching workers), the one the training uses.

* **Rare phases:** a share of windows (``rare_fraction``) is centred on a pixel of a rare class (a class
  whose share of the labelled training area is below ``rare_threshold``), found on a coarse level of the
  label pyramid, so thin or scarce phases are present in most batches.
* **Noisy targets:** with ``ignore_boundary_px`` r > 0, target pixels within r px of another class are
  ignored by the loss (automatic targets err mostly at phase boundaries); the network then learns from
  the reliable interiors and places boundaries from the SEM evidence.
* **What the targets cannot tell:** a label image whose attrs name an ``unresolved`` band (the labelling's
  :func:`~semscale.labelling.rules.unresolved_band`: Ni next to pores in an oxidised image whose EDS shows no
  NiO) has that band ignored, in training windows and validation tiles alike.
* **Exact labels alongside:** with ``synthetic_fraction`` f > 0 the last ``round(B·f)`` windows of each
  batch come from domain-randomised simulated images with their exact truth
  (:class:`semscale.training.synthetic.SyntheticWindows`), so the targets' own mistakes are not all the
  network sees.
* **Reading:** decoded chunks are kept in a byte-bounded LRU cache (:class:`ChunkCache`) shared by the
  worker threads, or (``in_memory``) each image is read whole on first use.

Labels are uint8 class indices; 255 (:data:`semscale.IGNORE_LABEL`) marks pixels the loss ignores.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

from semscale import IGNORE_LABEL
from semscale.config import TrainingConfig
from semscale.errors import ConfigError, StoreError
from semscale.kernels.norm import apply_norm
from semscale.store.layout import CampaignStore
from semscale.training.augment import Augment, augment_pair
from semscale.training.splits import TileSplit, window_overlaps_tiles
from semscale.training.synthetic import SyntheticWindows, campaign_levels

log = logging.getLogger(__name__)

__all__ = ["CachedArray", "ChunkCache", "PatchSampler", "load_tiles", "read_labels", "read_window"]

_MAX_CANDIDATES = 20_000
"""At most this many rare-class window centres are kept per class and image."""


def _unresolved_bands(store: CampaignStore, image_ids: Iterable[str], label_source: str
                      ) -> dict[str, tuple[int, int, float]]:
    """``{image_id: (class, next_to, width_px)}``: the band of each label image that its maker could not
    decide (``unresolved`` in its attrs, :func:`semscale.labelling.rules.unresolved_band`); none for most."""
    classes = list(store.classes)
    out = {}
    for image_id in image_ids:
        band = store.label_attrs(image_id, label_source).get("unresolved")
        if not band:
            continue
        missing = [band[k] for k in ("class", "next_to") if band[k] not in classes]
        if missing:
            raise StoreError(
                f"Expected the classes of the unresolved band of labels/{label_source} of {image_id} among the "
                f"store's classes {classes}. Got {missing}; relabel the image with this store's classes."
            )
        out[image_id] = (classes.index(band["class"]), classes.index(band["next_to"]), float(band["width_px"]))
    return out


# --- window reading -------------------------------------------------------------------------------------
def read_window(array: Any, y: int, x: int, size: int, *, fill: str | int = "reflect") -> np.ndarray:
    """Slice the ``size × size`` window at top-left ``(y, x)`` (px) out of a 2-D (Zarr or numpy) array.

    Only that window is read. Parts outside the array are padded by reflection (``fill="reflect"``,
    for images) or a constant value (labels: 255).
    """
    h, w = array.shape
    y1, x1 = min(y + size, h), min(x + size, w)
    block = np.asarray(array[max(y, 0) : y1, max(x, 0) : x1])
    if block.shape == (size, size):
        return block
    pad = ((max(-y, 0), size - block.shape[0] - max(-y, 0)), (max(-x, 0), size - block.shape[1] - max(-x, 0)))
    if fill == "reflect":
        return np.pad(block, pad, mode="symmetric")
    return np.pad(block, pad, mode="constant", constant_values=fill)


def load_tiles(
    store: CampaignStore, tiles: Iterable[tuple[str, int, int]], *, label_source: str, patch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Read validation tiles ``(image_id, y0, x0)``: ``(x float32 (N, P, P, 1), y uint8 (N, P, P))``, 255
    in each label image's unresolved band (as in training, so the best epoch is not chosen on it)."""
    tiles = list(tiles)
    p = patch_size
    bands = _unresolved_bands(store, sorted({i for i, _, _ in tiles}), label_source)
    x = np.empty((len(tiles), p, p, 1), np.float32)
    y = np.empty((len(tiles), p, p), np.uint8)
    for n, (i, y0, x0) in enumerate(tiles):
        x[n, ..., 0] = apply_norm(read_window(store.sem_array(i), y0, x0, p), store.norm(i))
        y[n] = read_labels(store.label_array(i, label_source), y0, x0, p, n_classes=len(store.classes),
                           band=bands.get(i))
    return x, y


def read_labels(lab: Any, y: int, x: int, size: int, *, n_classes: int, ignore_boundary_px: float = 0.0,
                band: tuple[int, int, float] | None = None) -> np.ndarray:
    """The ``size``² label window at ``(y, x)`` (:func:`read_window`, 255 outside), 255 also where the loss
    must not look: pixels within ``ignore_boundary_px`` of another class, and the ``band`` ``(class, next_to,
    width_px)`` its labelling left unresolved (:func:`_unresolved_bands`). Equal to masking the whole image."""
    m = math.ceil(max(ignore_boundary_px, band[2] if band else 0.0))  # margin: classes just outside count too
    if m == 0:
        return read_window(lab, y, x, size, fill=IGNORE_LABEL)
    from semscale.analysis.metrics import band_mask, boundary_mask

    big = read_window(lab, y - m, x - m, size + 2 * m, fill=IGNORE_LABEL)
    drop = np.zeros(big.shape, bool)
    if ignore_boundary_px > 0:
        drop |= boundary_mask(big, width_px=ignore_boundary_px, n_classes=n_classes)
    if band:
        drop |= band_mask(big, cls=band[0], next_to=band[1], width_px=band[2])
    return np.where(drop, np.uint8(IGNORE_LABEL), big)[m : m + size, m : m + size]


class ChunkCache:
    """Thread-safe LRU cache of decoded Zarr chunks, bounded in bytes (shared by a sampler's workers).

    Random windows overlap up to four chunks each; decoding every chunk for every window would cost many
    times the window's own size. With the cache, a campaign that fits in ``max_bytes`` is read from disk
    once, and a larger one keeps its most recently used chunks.
    """

    def __init__(self, max_bytes: int) -> None:
        from collections import OrderedDict

        self.max_bytes = int(max_bytes)
        self._data: OrderedDict[tuple[str, int, int], np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: str, array: Any, cy: int, cx: int) -> np.ndarray:
        k = (key, cy, cx)
        with self._lock:
            hit = self._data.get(k)
            if hit is not None:
                self._data.move_to_end(k)
                self.hits += 1
                return hit
            self.misses += 1
        ch, cw = array.chunks
        block = np.asarray(array[cy * ch : (cy + 1) * ch, cx * cw : (cx + 1) * cw])
        with self._lock:
            if k not in self._data and block.nbytes <= self.max_bytes:
                self._data[k] = block
                self._bytes += block.nbytes
                while self._bytes > self.max_bytes:
                    _, old = self._data.popitem(last=False)
                    self._bytes -= old.nbytes
        return block


class CachedArray:
    """A 2-D Zarr array read through a :class:`ChunkCache`; supports ``a[y0:y1, x0:x1]`` and ``.shape``."""

    def __init__(self, array: Any, cache: ChunkCache, key: str) -> None:
        self.array, self.cache, self.key = array, cache, key
        self.shape = tuple(array.shape)
        self.chunks = tuple(array.chunks)
        self.dtype = array.dtype

    def __getitem__(self, index: tuple[slice, slice]) -> np.ndarray:
        ys, xs = index
        y0, y1, _ = ys.indices(self.shape[0])
        x0, x1, _ = xs.indices(self.shape[1])
        ch, cw = self.chunks
        out = np.empty((max(y1 - y0, 0), max(x1 - x0, 0)), self.dtype)
        for cy in range(y0 // ch, (y1 - 1) // ch + 1 if y1 > y0 else y0 // ch):
            for cx in range(x0 // cw, (x1 - 1) // cw + 1 if x1 > x0 else x0 // cw):
                block = self.cache.get(self.key, self.array, cy, cx)
                by0, bx0 = cy * ch, cx * cw
                sy0, sy1 = max(y0, by0), min(y1, by0 + ch)
                sx0, sx1 = max(x0, bx0), min(x1, bx0 + cw)
                out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = block[sy0 - by0 : sy1 - by0, sx0 - bx0 : sx1 - bx0]
        return out


class _WindowSource:
    """Per-image sampling state: test-tile mask, rare-class candidate centres (px), sampling weight."""

    def __init__(self, image_id: str, shape: tuple[int, int], mask: np.ndarray) -> None:
        self.image_id = image_id
        self.shape = shape
        self.mask = mask
        self.rare: dict[int, np.ndarray] = {}

# --- the sampler ----------------------------------------------------------------------------------------
class PatchSampler:
    """Random, augmented P×P training windows of split ``split``, with the options of training section ``cfg``.

    Batch ``i`` of epoch ``e`` is ``(x float32 (B, P, P, 1), y int32 (B, P, P))`` with 255 = ignore; it
    depends only on ``(cfg.seed + member, e, i)``. Windows never intersect the split's test tiles. Read from
    ``cfg``: ``label_source``, ``batch_size``, ``steps_per_epoch`` (None: 10 windows per training tile, the
    paper's 10 augmented patches per tile), ``augment`` (``augment`` overrides it with explicit settings),
    ``rare_fraction``, ``rare_threshold``, ``ignore_boundary_px``, ``in_memory``, ``cache_mb`` and
    ``synthetic_fraction`` / ``synthetic_images`` (the last ``round(B × fraction)`` windows of every batch
    come from simulated images with exact truth).
    """

    def __init__(self, store: CampaignStore, split: TileSplit, cfg: TrainingConfig, *, member: int = 0,
                 augment: Augment | None = None) -> None:
        if cfg.patch_size != split.patch_size:
            raise ConfigError(
                f"Expected the split's patch size ({split.patch_size} px) for `training.patch_size`. Got "
                f"{cfg.patch_size}; build the split with the same training section."
            )
        self.store_path = str(store.path)
        self._store: CampaignStore | None = store
        self.split = split
        self.label_source = cfg.label_source
        self.patch_size = split.patch_size
        self.batch_size = int(cfg.batch_size)
        self.augment = Augment.coerce(cfg.augment) if augment is None else augment
        self.seed = int(cfg.seed) + int(member)
        self.epoch = 0
        self.in_memory = bool(cfg.in_memory)
        self.ignore_boundary_px = float(cfg.ignore_boundary_px)
        self.cache_mb = float(cfg.cache_mb)
        # At least one window of each batch is the campaign's whenever the fraction is below 1.
        self.n_synthetic = min(round(self.batch_size * float(cfg.synthetic_fraction)), self.batch_size - 1)
        # Lazy: images are simulated on the first synthetic window, i.e. never when n_synthetic is 0; the
        # class offsets are fitted on further images drawn the same way (SyntheticWindows.held_out).
        levels = None
        simulated = self.n_synthetic or cfg.class_offsets == "synthetic"
        if simulated and cfg.synthetic_levels == "campaign":
            levels = campaign_levels(store, split.train_images, label_source=cfg.label_source, seed=self.seed)
            log.info("synthetic windows centred on the campaign's phase levels: base %s, grain contrast %s",
                     np.round(levels[0], 1).tolist(), np.round(levels[1], 1).tolist())
        self.synthetic = SyntheticWindows(n_images=cfg.synthetic_images, size=4 * split.patch_size, seed=self.seed,
                                          levels=levels, pixel_size_um=store.meta.get("pixel_size_um"),
                                          zoom=cfg.synthetic_zoom)
        self._reset_handles()
        self.rare_fraction = float(cfg.rare_fraction)
        self.n_classes = len(store.classes)
        self.rare_threshold = 0.5 / self.n_classes if cfg.rare_threshold is None else float(cfg.rare_threshold)
        self.norms = {i: store.norm(i) for i in split.train_images}
        self.sources = [_WindowSource(i, split.shapes[i], split.test_mask(i)) for i in split.train_images]
        self.unresolved = _unresolved_bands(store, split.train_images, cfg.label_source)
        for image_id, (c, n, w) in self.unresolved.items():
            log.info("%s: labels/%s leave %s within %g px of %s unresolved; training ignores them", image_id,
                     cfg.label_source, store.classes[c], w, store.classes[n])
        self._image_p = self._image_weights()
        self.class_fractions = self._scan_classes()
        self.rare_classes = [c for c, f in enumerate(self.class_fractions) if 0 < f < self.rare_threshold]
        if cfg.steps_per_epoch is None:
            # The paper: 10 augmented patches per training tile (10,920 patches from 1,092 tiles).
            n_train_tiles = max(split.n_tiles - split.n_test_tiles, 1)
            self.steps_per_epoch = math.ceil(10 * n_train_tiles / self.batch_size)
        else:
            self.steps_per_epoch = int(cfg.steps_per_epoch)
        log.debug("sampler: %d images, class fractions %s, rare classes %s, %d steps/epoch",
                  len(self.sources), np.round(self.class_fractions, 3).tolist(), self.rare_classes,
                  self.steps_per_epoch)

    def _reset_handles(self) -> None:
        """Fresh per-process state: thread-local arrays, the in-memory images and the chunk cache."""
        self._local = threading.local()
        self._memory: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._memory_lock = threading.Lock()
        self._cache = ChunkCache(int(self.cache_mb * 2**20)) if self.cache_mb > 0 else None

    def _image_weights(self) -> np.ndarray:
        """Probability of drawing from each image: its training area outside the test tiles."""
        area = np.array([self._train_area(s) for s in self.sources], float)
        if area.sum() <= 0:
            raise ConfigError(
                "Expected some training area outside the test tiles. Got none: every window would overlap "
                "a test tile. Lower `test_tiles_fraction` or add training images."
            )
        return area / area.sum()

    # -- pickling (process workers): drop open handles, reopen lazily --
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_store"] = None
        state["_local"] = None
        state["_memory"] = {}
        state["_memory_lock"] = None
        state["_cache"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_handles()

    @property
    def store(self) -> CampaignStore:
        if self._store is None:
            from semscale.store import open_store

            self._store = open_store(self.store_path, mode="r")
        return self._store

    def _arrays(self, image_id: str) -> tuple[Any, Any]:
        if self.in_memory:
            with self._memory_lock:
                if image_id not in self._memory:
                    self._memory[image_id] = (
                        np.asarray(self.store.sem_array(image_id)[...]),
                        np.asarray(self.store.label_array(image_id, self.label_source)[...]),
                    )
                return self._memory[image_id]
        cache = getattr(self._local, "arrays", None)
        if cache is None:
            cache = self._local.arrays = {}
        if image_id not in cache:
            sem: Any = self.store.sem_array(image_id)
            lab: Any = self.store.label_array(image_id, self.label_source)
            if self._cache is not None:
                sem = CachedArray(sem, self._cache, f"{image_id}/sem")
                lab = CachedArray(lab, self._cache, f"{image_id}/labels")
            cache[image_id] = (sem, lab)
        return cache[image_id]

    def _train_area(self, src: _WindowSource) -> float:
        h, w = src.shape
        return float(h * w - src.mask.sum() * self.patch_size**2)

    def _scan_classes(self) -> np.ndarray:
        """Class shares over the training area and rare-class candidate centres, from a coarse label level."""
        p = self.patch_size
        counts = np.zeros(self.n_classes, np.int64)
        for src in self.sources:
            n_levels = self.store.label_levels(src.image_id, self.label_source)
            level = max(0, min(n_levels - 1, int(math.log2(max(p // 16, 1)))))
            f = 2**level
            lab = np.asarray(self.store.label_array(src.image_id, self.label_source, level)[...])
            yy, xx = np.nonzero(lab != IGNORE_LABEL)
            ys, xs = yy * f, xx * f  # nearest pyramid: coarse pixel (i, j) = level-0 pixel (i*f, j*f)
            grid_y, grid_x = ys // p, xs // p
            inside = (grid_y < src.mask.shape[0]) & (grid_x < src.mask.shape[1])
            in_test = np.zeros(ys.shape, bool)
            in_test[inside] = src.mask[grid_y[inside], grid_x[inside]]
            keep = ~in_test
            vals = lab[yy[keep], xx[keep]]
            counts += np.bincount(vals[vals < self.n_classes], minlength=self.n_classes)[: self.n_classes]
            rng = np.random.default_rng([self.seed, 0xC1A55])
            for c in range(self.n_classes):
                sel = np.flatnonzero(vals == c)
                if len(sel) > _MAX_CANDIDATES:  # bound memory (and pickles for process workers)
                    sel = np.sort(rng.choice(sel, _MAX_CANDIDATES, replace=False))
                src.rare[c] = np.stack([ys[keep][sel], xs[keep][sel]], axis=1).astype(np.int32)
        total = counts.sum()
        return counts / total if total else np.zeros(self.n_classes)

    # -- PyDataset interface --
    def __len__(self) -> int:
        return self.steps_per_epoch

    def on_epoch_end(self) -> None:
        self.epoch += 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def window_position(self, rng: np.random.Generator) -> tuple[int, int, int]:
        """Draw one training window ``(source index, y, x)`` (top-left, px) that avoids every test tile."""
        p = self.patch_size
        centred = bool(self.rare_classes) and rng.random() < self.rare_fraction
        for attempt in range(1000):
            s = int(rng.choice(len(self.sources), p=self._image_p))
            src = self.sources[s]
            h, w = src.shape
            if centred and attempt < 50:
                c = self.rare_classes[int(rng.integers(len(self.rare_classes)))]
                cand = src.rare.get(c)
                if cand is None or len(cand) == 0:
                    continue
                cy, cx = cand[int(rng.integers(len(cand)))]
                jitter = rng.integers(-(p // 4), p // 4 + 1, size=2)
                y = int(np.clip(cy - p // 2 + jitter[0], 0, max(h - p, 0)))
                x = int(np.clip(cx - p // 2 + jitter[1], 0, max(w - p, 0)))
            else:
                y = int(rng.integers(0, max(h - p, 0) + 1))
                x = int(rng.integers(0, max(w - p, 0) + 1))
            if not window_overlaps_tiles(src.mask, y, x, p):
                return s, y, x
        raise StoreError(  # pragma: no cover - needs an almost fully held-out grid
            "Could not draw a training window outside the test tiles in 1000 tries; lower "
            "`test_tiles_fraction`."
        )

    def positions(self, index: int, epoch: int | None = None) -> list[tuple[str, int, int]]:
        """The windows ``(image_id, y, x)`` of batch ``index`` of ``epoch`` (default: the current epoch)."""
        e = self.epoch if epoch is None else epoch
        out = []
        for j in range(self.batch_size):
            rng = np.random.default_rng([self.seed, e, index, j, 0])
            s, y, x = self.window_position(rng)
            out.append((self.sources[s].image_id, y, x))
        return out

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index < 0 or index >= len(self):
            raise IndexError(f"batch {index} out of range 0..{len(self) - 1}")
        return self.batch(index)

    def batch(self, index: int, epoch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``index`` of ``epoch``: ``(x float32 (B, P, P, 1), y int32 (B, P, P))``."""
        e = self.epoch if epoch is None else epoch
        p = self.patch_size
        x = np.empty((self.batch_size, p, p, 1), np.float32)
        y = np.empty((self.batch_size, p, p), np.int32)
        n_campaign = self.batch_size - self.n_synthetic
        for j, (image_id, y0, x0) in enumerate(self.positions(index, e)[:n_campaign]):
            sem, lab = self._arrays(image_id)
            img = apply_norm(read_window(sem, y0, x0, p), self.norms[image_id])
            labels = self._read_labels(image_id, lab, y0, x0)
            rng = np.random.default_rng([self.seed, e, index, j, 1])
            x[j, ..., 0], y[j] = augment_pair(img, labels, rng, self.augment)
        for j in range(n_campaign, self.batch_size):  # exact-truth windows of simulated images
            rng = np.random.default_rng([self.seed, e, index, j, 2])
            img, labels = self.synthetic.window(rng, p)
            x[j, ..., 0], y[j] = augment_pair(img, labels, rng, self.augment)
        return x, y

    def _read_labels(self, image_id: str, lab: Any, y0: int, x0: int) -> np.ndarray:
        return read_labels(lab, y0, x0, self.patch_size, n_classes=self.n_classes,
                           ignore_boundary_px=self.ignore_boundary_px, band=self.unresolved.get(image_id))

    def describe(self) -> dict[str, Any]:
        """Sampler settings for the model sidecar."""
        return {
            "label_source": self.label_source,
            "patch_size": self.patch_size,
            "batch_size": self.batch_size,
            "steps_per_epoch": self.steps_per_epoch,
            "augment": self.augment.to_dict(),
            "seed": self.seed,
            "rare_fraction": self.rare_fraction,
            "ignore_boundary_px": self.ignore_boundary_px,
            "unresolved": {i: {"class": int(c), "next_to": int(n), "width_px": w}
                           for i, (c, n, w) in self.unresolved.items()},
            "synthetic_per_batch": self.n_synthetic,
            **({"synthetic_zoom": list(self.synthetic.zoom)} if self.synthetic.zoom != (1.0, 1.0) else {}),
            **({"synthetic_levels": {"base": [round(v, 2) for v in self.synthetic.levels[0]],
                                     "grain_sd": [round(v, 2) for v in self.synthetic.levels[1]]}}
               if self.synthetic.levels is not None else {}),
            "rare_threshold": self.rare_threshold,
            "rare_classes": [int(c) for c in self.rare_classes],
            "class_fractions": [float(f) for f in self.class_fractions],
        }
