"""The blockwise runner: grid geometry, done markers keyed by settings, local and distributed runs."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from semscale.errors import StoreError
from semscale.store.blockwise import BlockGrid, DoneMarkers, run_blocks, settings_hash


def test_grid_regions_tile_the_image_exactly() -> None:
    grid = BlockGrid(shape=(70, 45), block=(32, 20))
    assert grid.grid == (3, 3)
    cover = np.zeros(grid.shape, np.int32)
    for ix in grid.indices():
        cover[grid.region(ix)] += 1
    assert (cover == 1).all()
    assert grid.chunks() == ((32, 32, 6), (20, 20, 5))
    with pytest.raises(StoreError, match="positive block sizes"):
        BlockGrid(shape=(4, 4), block=(0, 2))


def test_settings_hash_is_stable_and_order_free() -> None:
    a = settings_hash({"x": 1, "y": [1, 2]})
    assert a == settings_hash({"y": [1, 2], "x": 1})
    assert a != settings_hash({"x": 2, "y": [1, 2]})
    assert 0 < a < 2**62


def test_markers_count_only_blocks_of_the_current_settings(tmp_path) -> None:
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    grid = BlockGrid(shape=(10, 10), block=(5, 5))
    done = DoneMarkers.create(group, grid, settings_hash({"v": 1}))
    assert done.pending(grid.indices()) == grid.indices()
    done.mark((0, 1))
    assert done.is_done((0, 1)) and not done.is_done((1, 1))
    assert done.pending(grid.indices()) == [(0, 0), (1, 0), (1, 1)]
    other = DoneMarkers.require(group, grid, settings_hash({"v": 2}))  # same array, other settings
    assert other.pending(grid.indices()) == grid.indices()
    again = DoneMarkers.require(group, grid, settings_hash({"v": 1}))
    assert again.is_done((0, 1)) and not again.all_done()
    resized = DoneMarkers.require(group, BlockGrid(shape=(10, 10), block=(10, 10)), again.token)
    assert resized.array.shape == (1, 1) and not resized.all_done()


def _square(index: tuple[int, int]) -> dict[str, int]:
    return {"index": index[0] * 10 + index[1]}


def _fails_on_diagonal(index: tuple[int, int]) -> dict[str, int]:
    if index[0] == index[1]:
        raise RuntimeError("boom")
    return {"index": index[0] * 10 + index[1]}


@pytest.mark.parametrize("threads", [1, 2])
def test_local_run_returns_every_block(threads: int) -> None:
    indices = BlockGrid(shape=(9, 9), block=(3, 3)).indices()
    out = run_blocks(_square, indices, client=None, local_threads=threads)
    assert sorted(r["index"] for r in out) == sorted(i * 10 + j for i, j in indices)


def test_distributed_run_keeps_finished_blocks_and_names_the_failures(client) -> None:
    indices = BlockGrid(shape=(6, 6), block=(3, 3)).indices()
    assert sorted(r["index"] for r in run_blocks(_square, indices, client=client)) == [0, 1, 10, 11]
    with pytest.raises(StoreError, match=r"2 of 4 blocks failed .*RuntimeError: boom"):
        run_blocks(_fails_on_diagonal, indices, client=client, retries=0, description="t")
