"""Tests of semscale.training.splits: the paper's tile grid, held-out test tiles, splits by role."""

from __future__ import annotations

import numpy as np
import pytest

from semscale.config import TrainingConfig
from semscale.errors import ConfigError, StoreError
from semscale.training.splits import (
    PAPER_TEST_FRACTION,
    TileSplit,
    make_split,
    split_tiles,
    training_image_ids,
    window_overlaps_tiles,
)

P = 32


def cfg(**kw) -> TrainingConfig:
    return TrainingConfig(patch_size=P, **kw)


def test_split_tiles_counts_and_determinism():
    shapes = {"a": (700, 1000), "b": (520, 300)}  # grids 2x3 and 2x1 at P=256 (remainders ignored)
    t = split_tiles(shapes, patch_size=256, test_fraction=PAPER_TEST_FRACTION, n_test=3, seed=5)
    assert sum(len(v) for v in t.values()) == 3
    assert all(0 <= ty < 2 and 0 <= tx < 3 for ty, tx in t["a"])
    assert all(0 <= ty < 2 and tx == 0 for ty, tx in t["b"])
    assert t == split_tiles(shapes, patch_size=256, test_fraction=PAPER_TEST_FRACTION, n_test=3, seed=5)
    draws = {tuple(sorted((k, tile) for k, v in split_tiles(shapes, patch_size=256, test_fraction=0.5, n_test=3,
                                                         seed=s).items()
                          for tile in v)) for s in range(10)}
    assert len(draws) > 1  # the seed matters
    # The paper's share: 140 of 1232 tiles.
    paper = {f"im{i}": (11 * 256 + 40, 16 * 256) for i in range(7)}  # 7 × 176 = 1232 tiles
    assert sum(len(v) for v in split_tiles(paper, patch_size=256, test_fraction=PAPER_TEST_FRACTION,
                                           seed=0).values()) == 140
    with pytest.raises(ConfigError, match="test tiles"):
        split_tiles(shapes, patch_size=256, test_fraction=PAPER_TEST_FRACTION, n_test=9, seed=0)


def test_window_overlap_matches_pixel_truth():
    rng = np.random.default_rng(0)
    p = 8
    mask = rng.random((5, 6)) < 0.3
    h, w = 5 * p + 5, 6 * p + 3  # remainder border beyond the grid
    pix = np.zeros((h, w), bool)
    pix[: 5 * p, : 6 * p] = np.kron(mask, np.ones((p, p), bool))
    for y in range(h - p + 1):
        for x in range(w - p + 1):
            assert window_overlaps_tiles(mask, y, x, p) == pix[y : y + p, x : x + p].any()


def test_make_split_roles_and_roundtrip(data_store):
    store = data_store
    s = make_split(store, cfg(test_tiles_fraction=0.25, seed=3))
    assert s.train_images == ("a", "b")
    assert set(s.held_out_images) == {"p", "q"}
    assert s.n_tiles == (150 // P) * (200 // P) + (130 // P) * (170 // P)
    assert s.n_test_tiles == round(0.25 * s.n_tiles)
    assert TileSplit.from_dict(s.to_dict()) == s
    assert all(i in ("a", "b") for i, _, _ in s.val_tiles())
    si = make_split(store, cfg(split="images"))
    assert si.n_test_tiles == 0 and si.val_images == ("q",)
    assert len(si.val_tiles()) == (96 // P) ** 2
    with pytest.raises(StoreError, match="labels `nope`"):
        make_split(store, cfg(label_source="nope"), image_ids=["a"])
    with pytest.raises(ConfigError, match="split"):
        make_split(store, cfg(split="random"))


def test_paper_fraction_is_the_config_default():
    assert TrainingConfig().test_tiles_fraction == PAPER_TEST_FRACTION


def test_training_image_ids_by_role_and_labels(data_store):
    assert training_image_ids(data_store, label_source="target") == (["a", "b"], ["p", "q"])
    # images without a role count as training images only when they carry the label source
    data_store.set_image_attrs("p", role=None)
    try:
        assert training_image_ids(data_store, label_source="target") == (["a", "b", "p"], ["q"])
        assert training_image_ids(data_store, label_source="nope") == (["a", "b"], ["p", "q"])
    finally:
        data_store.set_image_attrs("p", role="predict")


def test_explicit_image_ids_hold_out_the_rest(data_store):
    s = make_split(data_store, cfg(test_tiles_fraction=0.0), image_ids=["b"])
    assert s.train_images == ("b",) and s.held_out_images == ("a", "p", "q")
    assert s.n_test_tiles == 0 and set(s.shapes) == {"b"}
    with pytest.raises(StoreError, match="at least one training image"):
        make_split(data_store, cfg(), image_ids=[])
