"""One blockwise runner for every stage: block geometry, the work, and the check, kept apart.

After daisy's process/check split:

* :class:`BlockGrid` is the geometry: a 2-D image cut into blocks on a grid anchored at the origin;
* a *process function* ``process(index) -> dict`` does one block's work and writes its outputs;
* :class:`DoneMarkers` is the check: one integer per block in a Zarr array, written **last** (after every
  output of the block) and equal to the hash of the settings the block was computed with. A block is done
  only when its marker equals the current settings hash, so a run killed at any point, or rerun with other
  settings, recomputes exactly the blocks that are missing or stale;
* :func:`run_blocks` runs the process function over the blocks not yet done, locally (a few threads) or as
  tasks on a ``distributed`` client, with retries and a progress bar, and counts failed blocks apart from
  done ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from semscale.errors import StoreError

log = logging.getLogger(__name__)

__all__ = ["BlockGrid", "DoneMarkers", "Index", "compute_blocks", "run_blocks", "settings_hash"]

Index = tuple[int, int]
LOCAL_THREADS = 2
"""Blocks in flight when no Dask client runs the blocks: one block's I/O overlaps the other's compute."""


@dataclass(frozen=True)
class BlockGrid:
    """A ``shape`` (px) cut into ``block``-sized blocks from the origin; edge blocks are smaller."""

    shape: tuple[int, int]
    block: tuple[int, int]

    def __post_init__(self) -> None:
        if any(b < 1 for b in self.block):
            raise StoreError(f"Expected positive block sizes. Got {self.block}.")

    @property
    def grid(self) -> tuple[int, int]:
        """Blocks per axis."""
        return (math.ceil(self.shape[0] / self.block[0]), math.ceil(self.shape[1] / self.block[1]))

    def indices(self) -> list[Index]:
        """Every block index, row-major."""
        return [(i, j) for i in range(self.grid[0]) for j in range(self.grid[1])]

    def region(self, index: Index) -> tuple[slice, slice]:
        """The pixels of block ``index`` as a pair of slices."""
        return tuple(  # type: ignore[return-value]
            slice(k * b, min(n, (k + 1) * b)) for k, b, n in zip(index, self.block, self.shape)
        )

    def chunks(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The grid as dask ``chunks``."""
        return tuple(  # type: ignore[return-value]
            tuple(min(b, n - a) for a in range(0, n, b)) for b, n in zip(self.block, self.shape)
        )


def settings_hash(settings: Mapping[str, Any]) -> int:
    """A stable, positive 62-bit integer for JSON-able ``settings`` (key order does not matter)."""
    text = json.dumps(settings, sort_keys=True, default=str, separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 2 or 1


class DoneMarkers:
    """Per-block done markers: a ``(rows, cols)`` int64 Zarr array whose entry is the settings hash."""

    def __init__(self, array: zarr.Array, token: int) -> None:
        self.array = array
        self.token = int(token)

    @classmethod
    def create(cls, group: zarr.Group, grid: BlockGrid, token: int, *, name: str = "done") -> DoneMarkers:
        """(Re)create an all-zero marker array ``name`` in ``group`` (one chunk per block, no codec)."""
        if name in group:
            del group[name]
        arr = group.create_array(name, shape=grid.grid, chunks=(1, 1), dtype="int64", fill_value=0,
                                 compressors=None, dimension_names=("block_y", "block_x"))
        return cls(arr, token)

    @classmethod
    def require(cls, group: zarr.Group, grid: BlockGrid, token: int, *, name: str = "done") -> DoneMarkers:
        """The marker array ``name`` of ``group``, created if absent or shaped for another grid."""
        node = group[name] if name in group else None
        if isinstance(node, zarr.Array) and tuple(node.shape) == grid.grid and node.dtype == np.int64:
            return cls(node, token)
        return cls.create(group, grid, token, name=name)

    def is_done(self, index: Index) -> bool:
        return int(np.asarray(self.array[index])) == self.token

    def mark(self, index: Index) -> None:
        """Mark ``index`` done. Call it only after every output of the block is written."""
        self.array[index] = self.token

    def clear(self, index: Index) -> None:
        """Unmark ``index`` (its outputs were found incomplete): it is computed again."""
        self.array[index] = 0

    def pending(self, indices: Iterable[Index]) -> list[Index]:
        """The blocks of ``indices`` whose marker is missing or from other settings."""
        current = np.asarray(self.array[...]) == self.token
        return [ix for ix in indices if not current[ix]]

    def all_done(self) -> bool:
        return bool((np.asarray(self.array[...]) == self.token).all())


def run_blocks(
    process: Callable[[Index], dict[str, Any]],
    indices: Sequence[Index],
    *,
    client: Any = None,
    retries: int = 2,
    description: str = "blocks",
    local_threads: int = LOCAL_THREADS,
) -> list[dict[str, Any]]:
    """Run ``process(index)`` for each index; returns the results in completion order.

    ``process`` must be picklable when a client runs it (a top-level function, or a frozen dataclass with
    ``__call__``). ``client``: a ``distributed.Client``; ``None`` uses the current client if there is one,
    else ``local_threads`` threads in this process. Distributed tasks are retried ``retries`` times; a block
    that still fails raises after every other block has finished, so finished work is kept.
    """
    from semscale.runtime.progress import progress

    indices = [(int(ix[0]), int(ix[1])) for ix in indices]  # plain ints: msgpack, not pickle, carries them
    if not indices:
        return []
    client = _current_client() if client is None else client
    if client is None:
        if local_threads <= 1 or len(indices) == 1:
            return [process(ix) for ix in progress(indices, total=len(indices), description=description)]
        with ThreadPoolExecutor(local_threads) as pool:
            return list(progress(pool.map(process, indices), total=len(indices), description=description))

    futures = client.map(process, indices, pure=False, retries=retries)
    return _gather(futures, indices, retries=retries, description=description)


def compute_blocks(
    graph: Any,
    indices: Sequence[Index],
    *,
    client: Any = None,
    retries: int = 2,
    description: str = "blocks",
    local_threads: int = LOCAL_THREADS,
) -> list[np.ndarray]:
    """Compute blocks ``indices`` of the dask array ``graph`` whose block tasks do the work themselves (write
    their outputs and markers) and return small arrays; returns those, in completion order.

    Only the tasks these blocks need run (the rest of the graph is culled). Scheduling, retries, failures and
    progress as in :func:`run_blocks`: ``client`` (default: the current one) or ``local_threads`` threads.
    """
    from semscale.runtime.progress import dask_progress

    indices = list(indices)
    if not indices:
        return []
    arrays = [graph.blocks[ix] for ix in indices]
    client = _current_client() if client is None else client
    if client is None:
        import dask

        scheduler = "threads" if local_threads > 1 and len(indices) > 1 else "sync"
        with dask_progress(description):
            return list(dask.compute(*arrays, scheduler=scheduler, num_workers=local_threads))

    return _gather(client.compute(arrays, retries=retries), indices, retries=retries, description=description)


def _gather(futures: list[Any], indices: list[Index], *, retries: int, description: str) -> list[Any]:
    """Results of one future per block as they complete, with progress; a failed block does not stop the
    others (their work is kept), and the failures are raised together at the end."""
    from distributed import as_completed

    from semscale.runtime.progress import progress

    results: list[Any] = []
    failed: list[tuple[Index, BaseException]] = []
    for fut in progress(as_completed(futures), total=len(futures), description=description):
        try:
            results.append(fut.result())
        except Exception as exc:  # keep going: the other blocks' work is kept
            failed.append((indices[futures.index(fut)], exc))
    if failed:
        index, first = failed[0]
        raise StoreError(f"{description}: {len(failed)} of {len(indices)} blocks failed after {retries} "
                         f"retries; first: block {index}: {type(first).__name__}: {first}. Rerun to retry them "
                         "(finished blocks are kept).") from first
    return results


def _current_client() -> Any:
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None
