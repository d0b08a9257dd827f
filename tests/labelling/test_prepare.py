"""Tests of semscale.labelling.prepare: scribble files, the prepared image, the content key of an image."""

from __future__ import annotations

import dataclasses

import dask.array as da
import numpy as np
import pytest

from semscale import IGNORE_LABEL
from semscale.config import LabellingConfig
from semscale.errors import InputImageError
from semscale.labelling import load_scribbles
from semscale.labelling.prepare import image_key, prepare_image, round_one_seeds
from semscale.labelling.steps import labelling_grid

CFG = dataclasses.replace(LabellingConfig(), sigmas=(0.7, 2.0), max_seeds_per_class=200)


def test_scribble_loading_checks(tmp_path):
    arr = np.full((10, 12), IGNORE_LABEL, np.uint8)
    arr[2, 3] = 1
    np.save(tmp_path / "s.npy", arr)
    np.testing.assert_array_equal(load_scribbles(tmp_path / "s.npy", shape=(10, 12), n_classes=4), arr)
    with pytest.raises(InputImageError, match="shape"):
        load_scribbles(arr, shape=(11, 12), n_classes=4)
    bad = arr.copy()
    bad[0, 0] = 9
    with pytest.raises(InputImageError, match=r"Got \[9\]"):
        load_scribbles(bad, shape=(10, 12), n_classes=4)
    with pytest.raises(InputImageError, match="no such file"):
        load_scribbles(tmp_path / "nope.tif", shape=(10, 12), n_classes=4)


def test_prepared_image_and_its_seeds(tmp_path, toy_image, store_of):
    sem, truth, eds = toy_image((130, 150), seed=14)
    s = store_of(tmp_path / "p.zarr", {"im": (sem, truth, eds)}, chunks=48)
    p = prepare_image(s, "im", CFG)
    assert isinstance(p.features, da.Array) and p.features.shape[:2] == sem.shape
    assert p.grid == labelling_grid(s.sem("im").chunks, CFG.sigmas)
    assert "registration" in s.root["eds/im"].attrs["semscale"]
    scrib = np.full(sem.shape, IGNORE_LABEL, np.uint8)
    scrib[:10, :10] = 3
    p.scribbles = scrib
    seeds = round_one_seeds(p, CFG, classes=s.classes, boundary_seeds=False)
    assert seeds.counts["n_scribbled"] == {"pore": 0, "NiO": 0, "Ni": 0, "YSZ": 100}
    assert max(seeds.counts["n_auto"].values()) <= CFG.max_seeds_per_class
    assert np.all(np.diff(seeds.flat) > 0) and seeds.x.shape == (len(seeds.flat), p.features.shape[2])
    np.testing.assert_array_equal(seeds.x, p.features.compute().reshape(-1, p.features.shape[2])[seeds.flat])
    assert np.all(seeds.cls[np.isin(seeds.flat, np.flatnonzero(scrib.ravel() == 3))] == 3)


def test_image_key_follows_the_content(tmp_path, toy_image, store_of):
    sem, truth, eds = toy_image((100, 120), seed=15)
    other = sem.copy()
    other[50, 60] ^= 1
    s = store_of(tmp_path / "k.zarr", {"a": (sem, truth, eds), "b": (other, truth, eds), "c": (sem, truth, eds)})
    keys = {i: image_key(s, prepare_image(s, i, CFG)) for i in ("a", "b", "c")}
    assert keys["a"] == keys["c"] != keys["b"]  # one grey level differs
    p = prepare_image(s, "a", CFG)
    p.scribbles = np.full(sem.shape, IGNORE_LABEL, np.uint8)
    assert image_key(s, p) == keys["a"]  # empty scribbles are no scribbles
    p.scribbles[3, 4] = 0
    assert image_key(s, p) != keys["a"]
