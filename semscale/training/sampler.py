"""Training data streamed from the store: leakage-free splits, window sampling, augmentation.

* **Splits** (:func:`make_split`): the paper's protocol. Each training image's area is divided into a grid
  of P×P tiles (``floor(H/P) × floor(W/P)``, anchored at the top-left corner); a random share of all tiles
  (pooled over images; the paper: 140 of 1232) is held out as *test tiles*. Training windows are drawn at
  random positions but **never overlap a test tile** (windows that would are rejected). Whole images are
  held out by their ``role`` (``test``/``predict`` images are never read for training). With
  ``kind="images"`` no tiles are held out and the grid tiles of ``role: test`` images validate instead.
  The split is a small frozen dataclass that round-trips to a dict, recorded in every model sidecar.
* **Sampling** (:class:`PatchDataset`): a ``keras.utils.PyDataset`` (backend-agnostic; thread or process
  workers prefetch batches while the model trains) that slices P×P windows straight out of the Zarr arrays
  of the SEM image and a label image (``labels/target`` by default), normalises them with the image's stored
  normalisation (:func:`semscale.kernels.norm.apply_norm`, exactly as inference does) and augments them on the fly.
  Positions and augmentations depend only on ``(seed, epoch, batch index, slot)``, so a run is reproducible
  for a seed whatever the number of workers, and every epoch draws new windows.
* **Rare phases:** a share of windows (``rare_fraction``) is centred on a pixel of a rare class (a class
  whose share of the labelled training area is below ``rare_threshold``), found on a coarse level of the
  label pyramid, so thin or scarce phases are present in most batches.
* **Noisy targets:** with ``ignore_boundary_px`` r > 0, target pixels within r px of another class are
  ignored by the loss (automatic targets err mostly at phase boundaries); the network then learns from
  the reliable interiors and places boundaries from the SEM evidence.
* **Augmentation** (:func:`augment_pair`, pure numpy): the 8 dihedral flips/rotations applied identically
  to image and labels; Gaussian blur, contrast, brightness and Gaussian–Poisson noise
  ``I' = Poisson(I·C)/C + N(0, σ)`` (C = 255) on the image only.

Labels are uint8 class indices; 255 (:data:`semscale.IGNORE_LABEL`) marks pixels the loss ignores.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from semscale import IGNORE_LABEL
from semscale.errors import ConfigError, StoreError
from semscale.kernels.norm import apply_norm

log = logging.getLogger(__name__)

__all__ = [
    "PAPER_TEST_FRACTION",
    "Augment",
    "CachedArray",
    "ChunkCache",
    "PatchDataset",  # noqa: F822 - built lazily by __getattr__ (imports Keras)
    "TileSplit",
    "augment_pair",
    "dihedral",
    "load_tiles",
    "make_split",
    "read_window",
    "split_tiles",
    "training_image_ids",
    "window_overlaps_tiles",
]

PAPER_TEST_FRACTION = 140 / 1232
"""Share of grid tiles held out as test tiles in the published protocol (140 of 1232 tiles)."""

_HELD_OUT_ROLES = ("test", "predict")
_MAX_CANDIDATES = 20_000
"""At most this many rare-class window centres are kept per class and image."""


# --- splits --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TileSplit:
    """Which image areas may train and which validate (all coordinates in level-0 SEM pixels).

    ``test_tiles[id]`` lists grid tiles ``(ty, tx)`` covering rows ``[ty*P, (ty+1)*P)`` and columns
    ``[tx*P, (tx+1)*P)`` of training image ``id``; no training window intersects any of them.
    """

    kind: str
    """``"tiles"`` (tiles held out inside training images) or ``"images"`` (whole images only)."""
    patch_size: int
    seed: int
    train_images: tuple[str, ...]
    held_out_images: tuple[str, ...]
    """Images excluded from training by role (``test``/``predict``) or by the caller."""
    val_images: tuple[str, ...]
    """With ``kind="images"``: images whose grid tiles validate (role ``test``)."""
    shapes: Mapping[str, tuple[int, int]]
    test_tiles: Mapping[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)

    @property
    def n_tiles(self) -> int:
        """Number of grid tiles over the training images."""
        p = self.patch_size
        return sum((h // p) * (w // p) for i, (h, w) in self.shapes.items() if i in self.train_images)

    @property
    def n_test_tiles(self) -> int:
        return sum(len(t) for t in self.test_tiles.values())

    def test_mask(self, image_id: str) -> np.ndarray:
        """Boolean ``(floor(H/P), floor(W/P))`` grid, True on test tiles."""
        h, w = self.shapes[image_id]
        mask = np.zeros((h // self.patch_size, w // self.patch_size), bool)
        for ty, tx in self.test_tiles.get(image_id, ()):
            mask[ty, tx] = True
        return mask

    def val_tiles(self) -> list[tuple[str, int, int]]:
        """Validation tiles as ``(image_id, y0, x0)`` (top-left corner, px), in a fixed order."""
        p = self.patch_size
        out = [(i, ty * p, tx * p) for i in sorted(self.test_tiles) for ty, tx in self.test_tiles[i]]
        for i in self.val_images:
            h, w = self.shapes[i]
            out += [(i, ty * p, tx * p) for ty in range(h // p) for tx in range(w // p)]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "patch_size": self.patch_size,
            "seed": self.seed,
            "train_images": list(self.train_images),
            "held_out_images": list(self.held_out_images),
            "val_images": list(self.val_images),
            "shapes": {k: list(v) for k, v in self.shapes.items()},
            "test_tiles": {k: [list(t) for t in v] for k, v in self.test_tiles.items()},
            "n_tiles": self.n_tiles,
            "n_test_tiles": self.n_test_tiles,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TileSplit:
        return cls(
            kind=str(data["kind"]),
            patch_size=int(data["patch_size"]),
            seed=int(data["seed"]),
            train_images=tuple(data["train_images"]),
            held_out_images=tuple(data.get("held_out_images", ())),
            val_images=tuple(data.get("val_images", ())),
            shapes={k: (int(v[0]), int(v[1])) for k, v in data["shapes"].items()},
            test_tiles={k: tuple((int(t[0]), int(t[1])) for t in v) for k, v in data["test_tiles"].items()},
        )


def split_tiles(
    shapes: Mapping[str, tuple[int, int]],
    *,
    patch_size: int,
    test_fraction: float = PAPER_TEST_FRACTION,
    n_test: int | None = None,
    seed: int = 0,
) -> dict[str, tuple[tuple[int, int], ...]]:
    """Pick test tiles at random from the pooled P×P grids of images of the given ``(H, W)`` shapes (px).

    ``n_test`` (or ``round(test_fraction * n_tiles)``) tiles are drawn without replacement; the result
    maps each image id to its sorted test tiles ``(ty, tx)``. Pure and deterministic for a seed.
    """
    p = int(patch_size)
    ids = sorted(shapes)
    all_tiles = [(i, ty, tx) for i in ids for ty in range(shapes[i][0] // p) for tx in range(shapes[i][1] // p)]
    if n_test is None:
        n_test = round(test_fraction * len(all_tiles))
    if not 0 <= n_test <= len(all_tiles):
        raise ConfigError(
            f"Expected at most {len(all_tiles)} test tiles (the {p}×{p} grid of the training images) for "
            f"`n_test`. Got {n_test}. Lower `test_tiles_fraction` or the patch size."
        )
    rng = np.random.default_rng([int(seed), 0x5EED])
    pick = rng.choice(len(all_tiles), size=n_test, replace=False) if n_test else np.empty(0, int)
    out: dict[str, list[tuple[int, int]]] = {i: [] for i in ids}
    for k in pick:
        i, ty, tx = all_tiles[int(k)]
        out[i].append((ty, tx))
    return {i: tuple(sorted(v)) for i, v in out.items()}


def window_overlaps_tiles(mask: np.ndarray, y: int, x: int, patch_size: int) -> bool:
    """Whether the P×P window with top-left ``(y, x)`` (px) intersects a True tile of grid ``mask``.

    A window overlaps at most 2×2 grid tiles; tiles beyond the grid (the image's remainder border) are
    never test tiles.
    """
    p = patch_size
    ty0, tx0 = y // p, x // p
    ty1, tx1 = (y + p - 1) // p, (x + p - 1) // p
    return bool(mask[ty0 : ty1 + 1, tx0 : tx1 + 1].any())


def training_image_ids(store: Any, *, label_source: str = "target") -> tuple[list[str], list[str]]:
    """Split the store's complete images by role: ``(train, held_out)``.

    Images with role ``test`` or ``predict`` are held out; images without a role count as training images
    when they carry ``label_source`` labels.
    """
    train, held = [], []
    for i in store.image_ids():
        role = store.image_attrs(i).get("role")
        if role in _HELD_OUT_ROLES or (role is None and not store.has_labels(i, label_source)):
            held.append(i)
        else:
            train.append(i)
    return train, held


def make_split(
    store: Any,
    *,
    image_ids: Sequence[str] | None = None,
    label_source: str = "target",
    patch_size: int = 256,
    kind: str = "tiles",
    test_fraction: float = PAPER_TEST_FRACTION,
    n_test_tiles: int | None = None,
    seed: int = 0,
) -> TileSplit:
    """Build the train/validation split of a store (see the module docstring).

    ``image_ids`` defaults to the images whose role is ``train`` (or unset, with labels); all other images
    are recorded as held out. Every training image must carry ``label_source`` labels.
    """
    if kind not in ("tiles", "images"):
        raise ConfigError(f"Expected 'tiles' or 'images' for `split`. Got {kind!r}.")
    train_default, held = training_image_ids(store, label_source=label_source)
    if image_ids is None:
        train = train_default
    else:
        train = list(image_ids)
        for i in train:
            if store.image_attrs(i).get("role") in _HELD_OUT_ROLES:
                log.warning("image %s has role %r but was explicitly chosen for training",
                            i, store.image_attrs(i).get("role"))
        held = [i for i in store.image_ids() if i not in train]
    if not train:
        raise StoreError(
            f"Expected at least one training image (role `train` with `{label_source}` labels) in "
            f"{store.path}. Got none. Set `role: train` on some images and run `semscale label CONFIG`."
        )
    for i in train:
        store.label_array(i, label_source)  # raises a clear error when missing
    val_images: list[str] = []
    if kind == "images":
        val_images = [i for i in held if store.image_attrs(i).get("role") == "test"
                      and store.has_labels(i, label_source)]
    shapes = {i: tuple(int(s) for s in store.sem_array(i).shape) for i in [*train, *val_images]}
    tiles = (
        split_tiles({i: shapes[i] for i in train}, patch_size=patch_size, test_fraction=test_fraction,
                    n_test=n_test_tiles, seed=seed)
        if kind == "tiles" else {}
    )
    return TileSplit(
        kind=kind, patch_size=int(patch_size), seed=int(seed), train_images=tuple(train),
        held_out_images=tuple(held), val_images=tuple(val_images), shapes=shapes,  # type: ignore[arg-type]
        test_tiles=tiles,
    )


# --- augmentation (pure numpy) ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Augment:
    """On-the-fly augmentation settings; intensities in normalised units (image range ≈ 0..1)."""

    dihedral: bool = True
    """Random one of the 8 flips/rotations, identical on image and labels."""
    blur_prob: float = 0.3
    blur_sigma: tuple[float, float] = (0.5, 1.5)
    """Gaussian blur σ range (px)."""
    contrast_prob: float = 0.5
    contrast: tuple[float, float] = (0.8, 1.25)
    """Contrast factor range, applied about the patch mean."""
    brightness_prob: float = 0.5
    brightness: tuple[float, float] = (-0.1, 0.1)
    """Additive brightness range."""
    noise_prob: float = 0.5
    noise_sigma: tuple[float, float] = (0.0, 0.03)
    """Gaussian σ range of the Gaussian–Poisson noise."""
    poisson_scale: float = 255.0
    """C in ``I' = Poisson(I·C)/C + N(0, σ)``."""

    @classmethod
    def none(cls) -> Augment:
        return cls(dihedral=False, blur_prob=0.0, contrast_prob=0.0, brightness_prob=0.0, noise_prob=0.0)

    @classmethod
    def geometric_only(cls) -> Augment:
        return cls(blur_prob=0.0, contrast_prob=0.0, brightness_prob=0.0, noise_prob=0.0)

    @classmethod
    def coerce(cls, value: bool | Mapping[str, Any] | Augment | None) -> Augment:
        """``True`` → defaults, ``False``/``None`` → none, a dict → defaults updated by its keys."""
        if isinstance(value, Augment):
            return value
        if value is None or value is False:
            return cls.none()
        if value is True:
            return cls()
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ConfigError(f"Expected augmentation keys among {sorted(names)} for `augment`. Got {unknown}.")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def dihedral(a: np.ndarray, k: int) -> np.ndarray:
    """Element ``k`` (0..7) of the dihedral group on the last two axes: ``rot90^(k%4)``, then a flip if k≥4."""
    out = np.rot90(a, k % 4, axes=(-2, -1))
    if k >= 4:
        out = out[..., ::-1]
    return np.ascontiguousarray(out)


def augment_pair(
    image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, augment: Augment
) -> tuple[np.ndarray, np.ndarray]:
    """Augment one (image float32 (P, P), labels uint8 (P, P)) pair; geometric ops act on both alike.

    Photometric ops (blur, contrast, brightness, noise) change the image only; labels never change
    except by the same flip/rotation as the image.
    """
    if augment.dihedral:
        k = int(rng.integers(8))
        image, labels = dihedral(image, k), dihedral(labels, k)
    img = image.astype(np.float32, copy=True)
    if augment.blur_prob and rng.random() < augment.blur_prob:
        from scipy.ndimage import gaussian_filter

        img = gaussian_filter(img, sigma=float(rng.uniform(*augment.blur_sigma)), mode="reflect")
    if augment.contrast_prob and rng.random() < augment.contrast_prob:
        m = np.float32(img.mean())
        img = (img - m) * np.float32(rng.uniform(*augment.contrast)) + m
    if augment.brightness_prob and rng.random() < augment.brightness_prob:
        img = img + np.float32(rng.uniform(*augment.brightness))
    if augment.noise_prob and rng.random() < augment.noise_prob:
        c = augment.poisson_scale
        img = rng.poisson(np.clip(img, 0.0, None) * c).astype(np.float32) / np.float32(c)
        sigma = float(rng.uniform(*augment.noise_sigma))
        if sigma > 0:
            img = img + rng.normal(0.0, sigma, img.shape).astype(np.float32)
    return img.astype(np.float32, copy=False), labels


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
    store: Any, tiles: Iterable[tuple[str, int, int]], *, label_source: str, patch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Read validation tiles ``(image_id, y0, x0)``: ``(x float32 (N, P, P, 1), y uint8 (N, P, P))``."""
    tiles = list(tiles)
    p = patch_size
    x = np.empty((len(tiles), p, p, 1), np.float32)
    y = np.empty((len(tiles), p, p), np.uint8)
    for n, (i, y0, x0) in enumerate(tiles):
        x[n, ..., 0] = apply_norm(read_window(store.sem_array(i), y0, x0, p), store.norm(i))
        y[n] = read_window(store.label_array(i, label_source), y0, x0, p, fill=IGNORE_LABEL)
    return x, y


# --- the sampler ----------------------------------------------------------------------------------------
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


class _PatchSampler:
    """Random, augmented P×P training windows streamed from a campaign store (a ``keras.utils.PyDataset``).

    Batch ``i`` of epoch ``e`` is ``(x float32 (B, P, P, 1), y int32 (B, P, P))`` with 255 = ignore; it
    depends only on ``(seed, e, i)``. Windows never intersect the split's test tiles. ``workers`` /
    ``use_multiprocessing`` / ``max_queue_size`` are the PyDataset's prefetching options (threads by
    default: Zarr decompression releases the GIL). ``in_memory=True`` reads each image (and its labels)
    whole into memory on first use instead of slicing windows out of Zarr (small campaigns); otherwise
    decoded chunks are kept in an LRU cache of ``cache_mb`` MiB (0: none) shared by the worker threads. Keras is imported only when the class is first used
    (``semscale.training.sampler.PatchDataset`` is built on first access).
    """

    def __init__(
        self,
        store: Any,
        split: TileSplit,
        *,
        label_source: str = "target",
        batch_size: int = 32,
        steps_per_epoch: int | None = None,
        augment: bool | Mapping[str, Any] | Augment = True,
        seed: int = 0,
        rare_fraction: float = 0.3,
        rare_threshold: float | None = None,
        initial_epoch: int = 0,
        ignore_boundary_px: float = 0.0,
        in_memory: bool = False,
        cache_mb: float = 512,
        workers: int = 2,
        use_multiprocessing: bool = False,
        max_queue_size: int = 8,
    ) -> None:
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing,
                         max_queue_size=max_queue_size)
        self.store_path = str(store.path)
        self._store = store
        self.split = split
        self.label_source = label_source
        self.patch_size = split.patch_size
        self.batch_size = int(batch_size)
        self.augment = Augment.coerce(augment)
        self.seed = int(seed)
        self.epoch = int(initial_epoch)
        self.in_memory = bool(in_memory)
        self.ignore_boundary_px = float(ignore_boundary_px)
        self.cache_mb = float(cache_mb)
        self._cache = ChunkCache(int(self.cache_mb * 2**20)) if self.cache_mb > 0 else None
        self._memory: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._memory_lock = threading.Lock()
        self.rare_fraction = float(rare_fraction)
        self.n_classes = len(store.classes)
        self.rare_threshold = 0.5 / self.n_classes if rare_threshold is None else float(rare_threshold)
        self._local = threading.local()
        self.norms = {i: store.norm(i) for i in split.train_images}
        self.sources = [
            _WindowSource(i, split.shapes[i], split.test_mask(i)) for i in split.train_images
        ]
        self._area = np.array([self._train_area(s) for s in self.sources], float)
        if self._area.sum() <= 0:
            raise ConfigError(
                "Expected some training area outside the test tiles. Got none: every window would overlap "
                "a test tile. Lower `test_tiles_fraction` or add training images."
            )
        self._image_p = self._area / self._area.sum()
        self.class_fractions = self._scan_classes()
        self.rare_classes = [
            c for c, f in enumerate(self.class_fractions) if 0 < f < self.rare_threshold
        ]
        if steps_per_epoch is None:
            # The paper: 10 augmented patches per training tile (10,920 patches from 1,092 tiles).
            n_train_tiles = max(split.n_tiles - split.n_test_tiles, 1)
            steps_per_epoch = math.ceil(10 * n_train_tiles / self.batch_size)
        self.steps_per_epoch = int(steps_per_epoch)
        log.debug("sampler: %d images, class fractions %s, rare classes %s, %d steps/epoch",
                  len(self.sources), np.round(self.class_fractions, 3).tolist(), self.rare_classes,
                  self.steps_per_epoch)

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
        self._local = threading.local()
        self._memory_lock = threading.Lock()
        self._cache = ChunkCache(int(self.cache_mb * 2**20)) if self.cache_mb > 0 else None

    @property
    def store(self) -> Any:
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
            sem = self.store.sem_array(image_id)
            lab = self.store.label_array(image_id, self.label_source)
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
            attrs_levels = self.store.root[f"images/{src.image_id}/labels/{self.label_source}"]
            n_levels = sum(1 for k in attrs_levels.array_keys() if k.isdigit())
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
        for j, (image_id, y0, x0) in enumerate(self.positions(index, e)):
            sem, lab = self._arrays(image_id)
            img = apply_norm(read_window(sem, y0, x0, p), self.norms[image_id])
            labels = self._read_labels(lab, y0, x0)
            rng = np.random.default_rng([self.seed, e, index, j, 1])
            img, labels = augment_pair(img, labels, rng, self.augment)
            x[j, ..., 0] = img
            y[j] = labels
        return x, y

    def _read_labels(self, lab: Any, y0: int, x0: int) -> np.ndarray:
        """The label window; with ``ignore_boundary_px`` pixels that close to another class become 255."""
        p, r = self.patch_size, self.ignore_boundary_px
        if r <= 0:
            return read_window(lab, y0, x0, p, fill=IGNORE_LABEL)
        from semscale.analysis.metrics import boundary_mask

        m = math.ceil(r)  # margin, so boundaries just outside the window count too
        big = read_window(lab, y0 - m, x0 - m, p + 2 * m, fill=IGNORE_LABEL)
        band = boundary_mask(big, width_px=r, n_classes=self.n_classes)
        return np.where(band, np.uint8(IGNORE_LABEL), big)[m : m + p, m : m + p]

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
            "rare_threshold": self.rare_threshold,
            "rare_classes": [int(c) for c in self.rare_classes],
            "class_fractions": [float(f) for f in self.class_fractions],
        }


def __getattr__(name: str) -> Any:
    # PatchDataset subclasses keras.utils.PyDataset; build it on first access so importing
    # semscale.training.sampler does not import Keras/TensorFlow.
    if name == "PatchDataset":
        import keras

        cls = type("PatchDataset", (_PatchSampler, keras.utils.PyDataset), {
            "__module__": __name__, "__doc__": _PatchSampler.__doc__, "__qualname__": "PatchDataset",
        })
        globals()["PatchDataset"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
