"""Tests of semscale.labelling.steps: block geometry, windows, seed sets and the forest file, and the
per-block steps equal to the whole-image dask graph bit for bit."""

from __future__ import annotations

import dataclasses
import pickle

import dask.array as da
import numpy as np
import pytest
import zarr

from semscale.config import LabellingConfig
from semscale.errors import StoreError
from semscale.labelling import feature_stack, predict_labels, refine_labels, steps
from semscale.labelling._common import ensure_min_chunk
from semscale.labelling.forest import fit_pooled
from semscale.labelling.prepare import prepare_image, round_one_seeds
from semscale.labelling.refine import REFINE_HALO
from semscale.labelling.steps import (
    STAGE,
    ChunkGrid,
    ForestBlocks,
    ForestRef,
    RefineBlocks,
    Seeds,
    labelling_grid,
    load_seeds,
    read_window,
    save_forest,
    save_seeds,
    scratch_labels,
)
from semscale.store.blockwise import DoneMarkers, run_blocks

CFG = dataclasses.replace(LabellingConfig(), sigmas=(0.7, 2.0, 4.0), n_estimators=6, max_seeds_per_class=300,
                          n_jobs=1)


def test_grid_is_the_chunking_of_the_whole_image_graph():
    sem = da.zeros((200, 230), chunks=(48, 64), dtype=np.float32)
    feats = feature_stack(sem, {}, factor=1, sigmas=CFG.sigmas)
    want = ensure_min_chunk(feats[..., 0], REFINE_HALO).chunks  # what refine_labels maps over
    grid = labelling_grid(sem.chunks, CFG.sigmas)
    assert grid.chunks() == want and grid.grid == (len(want[0]), len(want[1]))
    assert grid.chunks() == ((48, 48, 48, 56), (64, 64, 64, 38))  # a short last chunk merged, a long one kept
    covered = np.zeros(grid.shape, int)
    for ix in grid.indices():
        r, c = grid.region(ix)
        covered[r, c] += 1
        # every block is a union of whole zarr chunks of size grid.block: no two blocks share one
        assert r.start % grid.block[0] == 0 and c.start % grid.block[1] == 0
        assert (r.stop % grid.block[0] == 0 or r.stop == grid.shape[0])
        assert (c.stop % grid.block[1] == 0 or c.stop == grid.shape[1])
    assert (covered == 1).all()
    assert ChunkGrid.from_chunks(((5, 5, 7), (9,))).region((2, 0)) == (slice(10, 17), slice(0, 9))


def test_windows_equal_the_overlap_of_dask(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((90, 70)).astype(np.float32)
    arr = zarr.create_array(str(tmp_path / "x.zarr"), shape=x.shape, chunks=(30, 35), dtype="float32")
    arr[...] = x
    grid = ChunkGrid.from_chunks(((30, 30, 30), (35, 35)))
    for h in (0, 7, 24):
        padded = da.overlap.overlap(da.from_array(x, chunks=grid.chunks()), depth=h, boundary="reflect")
        for ix in grid.indices():
            np.testing.assert_array_equal(read_window(arr, grid.region(ix), h), padded.blocks[ix].compute())


def test_seed_sets_round_trip_only_with_their_token(tmp_path):
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    seeds = Seeds(flat=np.array([4, 9], np.int64), cls=np.array([1, 3], np.uint8),
                  x=np.arange(6, dtype=np.float32).reshape(2, 3), counts={"n_auto": {"pore": 2}})
    assert load_seeds(g, "seeds1", 11) is None
    save_seeds(g, "seeds1", seeds, 11)
    back = load_seeds(g, "seeds1", 11)
    assert back is not None and back.counts == seeds.counts
    for k in ("flat", "cls", "x"):
        np.testing.assert_array_equal(getattr(back, k), getattr(seeds, k))
        assert getattr(back, k).dtype == getattr(seeds, k).dtype
    assert load_seeds(g, "seeds1", 12) is None  # other settings
    empty = Seeds(np.zeros(0, np.int64), np.zeros(0, np.uint8), np.zeros((0, 1), np.float32), {})
    save_seeds(g, "seeds2", empty, 5)
    got = load_seeds(g, "seeds2", 5)
    assert got is not None and got.x.shape == (0, 1) and got.flat.size == 0


def test_forest_file_is_checked_before_it_is_loaded(tmp_path):
    from sklearn.tree import DecisionTreeClassifier

    model = DecisionTreeClassifier(max_depth=2).fit(np.eye(3), [0, 1, 1])
    ref = save_forest(model, tmp_path / "f.pkl")
    assert ref.load() is model  # this process: from the cache, no read
    steps._FORESTS.clear()  # as in a fresh worker process
    again = ref.load()
    np.testing.assert_array_equal(again.predict(np.eye(3)), model.predict(np.eye(3)))
    steps._FORESTS.clear()
    (tmp_path / "f.pkl").write_bytes(pickle.dumps(DecisionTreeClassifier()))
    with pytest.raises(StoreError, match="other content"):
        ForestRef(ref.path, ref.sha256).load()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, toy_image, store_of):
    sem, truth, eds = toy_image((150, 170), seed=12, shift=(0.8, -0.5))
    s = store_of(tmp_path_factory.mktemp("steps") / "s.zarr", {"im": (sem, truth, eds)}, chunks=40)
    p = prepare_image(s, "im", CFG)
    p.key = "test"
    seeds = round_one_seeds(p, CFG, classes=s.classes, boundary_seeds=False)
    model, _, _ = fit_pooled([seeds.x], [seeds.cls], CFG, classes=s.classes, what="seeds")
    return s, p, model


def test_blocks_equal_the_whole_image_graph_and_resume(prepared, client, tmp_path):
    s, p, model = prepared
    group = s.scratch_group(STAGE, "im", create=True)
    ref = save_forest(model, s.scratch_file(STAGE, "test-forest.pkl"))
    for name in ("forest1", "refined1"):
        scratch_labels(group, name, p.grid)
    markers = DoneMarkers.require(group, p.grid, 7, name="forest1_done")
    process = ForestBlocks(str(s.path), "im", p.grid, p.spec(), ref, "forest1", 7)
    blob = pickle.dumps(process)
    assert b"sklearn" not in blob and len(blob) < 5_000  # the forest goes by path, the EDS maps stay behind
    first = p.grid.indices()[::2]
    run_blocks(process, first, client=client)
    assert markers.pending(p.grid.indices()) == p.grid.indices()[1::2]
    run_blocks(process, markers.pending(p.grid.indices()), client=client)
    assert markers.all_done()
    labels = predict_labels(p.features, model)
    np.testing.assert_array_equal(group["forest1"][...], labels.compute())
    DoneMarkers.require(group, p.grid, 8, name="refined1_done")
    refine = RefineBlocks(str(s.path), "im", p.grid, 0.5, 4, "forest1", "refined1", 8)
    run_blocks(refine, p.grid.indices(), client=None, local_threads=2)
    want = refine_labels(labels, p.sem_norm, n_classes=4, sigma=0.5).compute()
    np.testing.assert_array_equal(group["refined1"][...], want)
    s.drop_scratch(STAGE, "im")
