"""Leakage-free train/validation splits of a campaign's images (the paper's protocol).

Each training image's area is divided into a grid of P×P tiles (``floor(H/P) × floor(W/P)``, anchored at the
top-left corner); a random share of all tiles (pooled over images; the paper: 140 of 1232) is held out as
*test tiles*. Training windows are drawn at random positions but **never overlap a test tile** (windows that
would are rejected, :func:`window_overlaps_tiles`). Whole images are held out by their ``role``
(``test``/``predict`` images are never read for training). With ``split: images`` no tiles are held out and
the grid tiles of ``role: test`` images validate instead. The split is a small frozen dataclass that
round-trips to a dict, recorded in every model sidecar.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from semscale.config import TrainingConfig
from semscale.errors import ConfigError, StoreError
from semscale.store.layout import CampaignStore

log = logging.getLogger(__name__)

__all__ = [
    "PAPER_TEST_FRACTION", "TileSplit", "make_split", "split_tiles", "training_image_ids",
    "window_overlaps_tiles",
]

PAPER_TEST_FRACTION = 140 / 1232
"""Share of grid tiles held out as test tiles in the published protocol (140 of 1232 tiles)."""

_HELD_OUT_ROLES = ("test", "predict")


# --- splits ---------------------------------------------------------------------------------------
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
    test_fraction: float,
    seed: int,
    n_test: int | None = None,
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


def training_image_ids(store: CampaignStore, *, label_source: str) -> tuple[list[str], list[str]]:
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
    store: CampaignStore, cfg: TrainingConfig, *, image_ids: Sequence[str] | None = None
) -> TileSplit:
    """The train/validation split of a store for training section ``cfg`` (see the module docstring).

    Uses ``cfg.label_source``, ``cfg.patch_size``, ``cfg.split`` (the kind), ``cfg.test_tiles_fraction``,
    ``cfg.n_test_tiles`` and ``cfg.seed``. ``image_ids`` defaults to the images whose role is ``train`` (or
    unset, with labels); all other images are recorded as held out. Every training image must carry
    ``cfg.label_source`` labels.
    """
    label_source = cfg.label_source
    train = _train_images(store, label_source, image_ids)
    held = [i for i in store.image_ids() if i not in train]
    for i in train:
        store.label_array(i, label_source)  # raises a clear error when missing
    val_images: list[str] = []
    if cfg.split == "images":
        val_images = [i for i in held if store.image_attrs(i).get("role") == "test"
                      and store.has_labels(i, label_source)]
    shapes = {i: (int(store.sem_array(i).shape[0]), int(store.sem_array(i).shape[1]))
              for i in [*train, *val_images]}
    tiles = (
        split_tiles({i: shapes[i] for i in train}, patch_size=cfg.patch_size,
                    test_fraction=cfg.test_tiles_fraction, n_test=cfg.n_test_tiles, seed=cfg.seed)
        if cfg.split == "tiles" else {}
    )
    return TileSplit(
        kind=cfg.split, patch_size=int(cfg.patch_size), seed=int(cfg.seed), train_images=tuple(train),
        held_out_images=tuple(held), val_images=tuple(val_images), shapes=shapes, test_tiles=tiles,
    )


def _train_images(store: CampaignStore, label_source: str, image_ids: Sequence[str] | None) -> list[str]:
    """``image_ids`` (warning about held-out roles), or the store's training images by role."""
    if image_ids is None:
        train = training_image_ids(store, label_source=label_source)[0]
    else:
        train = list(image_ids)
        for i in train:
            role = store.image_attrs(i).get("role")
            if role in _HELD_OUT_ROLES:
                log.warning("image %s has role %r but was explicitly chosen for training", i, role)
    if not train:
        raise StoreError(
            f"Expected at least one training image (role `train` with `{label_source}` labels) in "
            f"{store.path}. Got none. Set `role: train` on some images and run `semscale label CONFIG`."
        )
    return train
