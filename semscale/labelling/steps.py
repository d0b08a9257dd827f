"""Resumable labelling steps: per-block forest prediction and refinement, and per-image seed sets, kept
in the store's scratch group of each image until the stage completes.

Blocks run through the one blockwise runner (:func:`semscale.store.blockwise.run_blocks`): a process
function reads its block (with the halo it needs) from the store, computes, writes its part of a scratch
array and only then its done marker (:class:`~semscale.store.blockwise.DoneMarkers`), whose value is the
hash of everything the result depends on. The fitted forest reaches the workers by file path (verified by
its sha256, loaded once per process), never inside the task graph.

Scratch of image ``id`` (``store.scratch_group("labelling", id)``)::

    seeds1/, seeds2/     flat (int64), cls (uint8), x (float32 n × F), done (1 × 1); attrs: seed counts
    forest1, forest2     uint8 labels of the round's forest; forest1_done, forest2_done (per block)
    refined1             forest1 snapped to the SEM edges; refined1_done
"""

from __future__ import annotations

import hashlib
import pickle
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from semscale import IGNORE_LABEL
from semscale.errors import StoreError
from semscale.kernels.windows import read_symmetric
from semscale.labelling._common import block_range, ensure_min_chunk
from semscale.labelling.features import FeatureParams, feature_block, feature_halo
from semscale.labelling.forest import predict_block
from semscale.labelling.refine import REFINE_HALO, refine_block
from semscale.labelling.registration import smooth_eds
from semscale.store.blockwise import BlockGrid, DoneMarkers, Index
from semscale.store.layout import CampaignStore, open_store
from semscale.store.location import StorePath, store_path, writing
from semscale.store.ngff import compressor
from semscale.store.nodes import attrs_of

__all__ = [
    "ONE_BLOCK",
    "STAGE",
    "ChunkGrid",
    "FeatureSpec",
    "ForestBlocks",
    "ForestRef",
    "RefineBlocks",
    "Seeds",
    "array",
    "labelling_grid",
    "load_seeds",
    "meta",
    "read_window",
    "release_forest",
    "save_forest",
    "save_seeds",
    "scratch_labels",
]

STAGE = "labelling"
"""Stage name of the scratch groups."""


@dataclass(frozen=True)
class ChunkGrid(BlockGrid):
    """A :class:`BlockGrid` whose blocks are given dask chunks: every block of an axis has the first
    block's size except the last, which may be smaller or (a short remainder merged into it) larger."""

    rows: tuple[int, ...] = ()
    cols: tuple[int, ...] = ()

    @classmethod
    def from_chunks(cls, chunks: Sequence[Sequence[int]]) -> ChunkGrid:
        rows, cols = (tuple(int(c) for c in axis) for axis in chunks)
        return cls(shape=(sum(rows), sum(cols)), block=(rows[0], cols[0]), rows=rows, cols=cols)

    @property
    def grid(self) -> tuple[int, int]:
        return (len(self.rows), len(self.cols))

    def region(self, index: Index) -> tuple[slice, slice]:
        (r0, r1), (c0, c1) = block_range((self.rows, self.cols), index)
        return slice(r0, r1), slice(c0, c1)

    def chunks(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (self.rows, self.cols)


ONE_BLOCK = BlockGrid(shape=(1, 1), block=(1, 1))
"""The grid of a step done per image at once (its done marker is one entry)."""


def labelling_grid(sem_chunks: Sequence[Sequence[int]], sigmas: Sequence[float]) -> ChunkGrid:
    """The blocks of an image's forest and refinement steps: the SEM's chunks, enlarged as the features'
    halo and then the refinement's require (the chunks the whole-image dask graph would use)."""
    import dask.array as da

    shape = tuple(sum(int(c) for c in axis) for axis in sem_chunks)
    x = da.zeros(shape, chunks=tuple(tuple(axis) for axis in sem_chunks), dtype=np.float32)
    x = ensure_min_chunk(ensure_min_chunk(x, feature_halo(sigmas)), REFINE_HALO)
    return ChunkGrid.from_chunks(x.chunks)


def read_window(array: zarr.Array, region: tuple[slice, slice], halo: int) -> np.ndarray:
    """``array[region]`` with ``halo`` px of context on each side, mirrored beyond the image edge (numpy
    ``symmetric`` padding, as dask's ``reflect`` boundary)."""
    rows, cols = ((s.start - halo, s.stop + halo) for s in region)
    return read_symmetric(array, rows, cols)


def array(group: zarr.Group, name: str) -> zarr.Array:
    """Array ``name`` of ``group`` (raises StoreError if it is missing or a group)."""
    node = group.get(name)
    if not isinstance(node, zarr.Array):
        raise StoreError(f"Expected array `{name}` in {group.store_path}. Got {type(node).__name__}; rerun to "
                         "recompute the labelling scratch.")
    return node


meta = attrs_of
"""A copy of the ``semscale`` attrs of a Zarr node (empty if none)."""


def open_scratch(store_path: str, image_id: str) -> tuple[CampaignStore, zarr.Group]:
    """(store, labelling scratch group of ``image_id``) for a block task; StoreError if the scratch is gone."""
    store = open_store(store_path)
    group = store.scratch_group(STAGE, image_id)
    if group is None:
        raise StoreError(f"Expected scratch of `{image_id}` in {store_path}. Got none; rerun.")
    return store, group


def _subgroup(group: zarr.Group, name: str) -> zarr.Group | None:
    node = group.get(name)
    return node if isinstance(node, zarr.Group) else None


def scratch_labels(group: zarr.Group, name: str, grid: ChunkGrid) -> zarr.Array:
    """The uint8 scratch label array ``name`` (255 = not yet computed), (re)created if shaped otherwise.

    Zarr chunks are the grid's first block, so no two blocks of the grid share a chunk."""
    arr = group.get(name)
    if isinstance(arr, zarr.Array) and arr.shape == grid.shape and arr.chunks == grid.block:
        return arr
    return group.create_array(name, shape=grid.shape, chunks=grid.block, dtype="uint8", fill_value=IGNORE_LABEL,
                              compressors=compressor(), overwrite=True, dimension_names=("y", "x"))


# --- per-image seed sets -------------------------------------------------------------------------
@dataclass
class Seeds:
    """Seed pixels of one image and round: flat indices (sorted), classes, features, counts for attrs."""

    flat: np.ndarray
    cls: np.ndarray
    x: np.ndarray
    counts: dict[str, dict[str, int]]


def save_seeds(group: zarr.Group, name: str, seeds: Seeds, token: int) -> None:
    """Write ``seeds`` as ``group/name`` and then its done marker."""
    g = group.require_group(name)
    for key, arr in (("flat", seeds.flat), ("cls", seeds.cls), ("x", seeds.x)):
        arr = np.ascontiguousarray(arr)
        chunks = tuple(max(n, 1) for n in arr.shape)
        g.create_array(key, shape=arr.shape, chunks=chunks, dtype=arr.dtype, compressors=compressor(),
                       overwrite=True, dimension_names=("seed", "feature")[:arr.ndim])
        if arr.size:
            array(g, key)[...] = arr
    g.attrs["semscale"] = {"counts": seeds.counts}
    DoneMarkers.require(g, ONE_BLOCK, token).mark((0, 0))


def load_seeds(group: zarr.Group, name: str, token: int) -> Seeds | None:
    """The seeds saved as ``group/name`` with ``token``; ``None`` if absent or made with other settings."""
    g = _subgroup(group, name)
    if g is None or "done" not in g or not DoneMarkers(array(g, "done"), token).is_done((0, 0)):
        return None
    return Seeds(flat=np.asarray(array(g, "flat")[...]), cls=np.asarray(array(g, "cls")[...]),
                 x=np.asarray(array(g, "x")[...]), counts={k: dict(v) for k, v in meta(g)["counts"].items()})


# --- the forest, by file path --------------------------------------------------------------------
_FORESTS: dict[str, Any] = {}
_FORESTS_LOCK = threading.Lock()
_FORESTS_KEPT = 2


@dataclass(frozen=True)
class ForestRef:
    """A fitted forest as a file path and the sha256 of its bytes; :meth:`load` reads it once per process."""

    path: str
    sha256: str

    def load(self) -> Any:
        with _FORESTS_LOCK:
            model = _FORESTS.get(self.sha256)
            if model is None:
                data = store_path(self.path).read_bytes()
                if hashlib.sha256(data).hexdigest() != self.sha256:
                    raise StoreError(
                        f"Expected the labelling forest {self.path} with sha256 {self.sha256[:12]}…. Got other "
                        "content; another run may have replaced it. Rerun `semscale label`."
                    )
                model = pickle.loads(data)  # written by save_forest in this run, checked above
                _remember(self.sha256, model)
        return model


def _remember(sha: str, model: Any) -> None:
    _FORESTS[sha] = model
    while len(_FORESTS) > _FORESTS_KEPT:
        _FORESTS.pop(next(iter(_FORESTS)))


def release_forest(ref: ForestRef) -> None:
    """Delete the forest's file and drop it from this process's cache."""
    store_path(ref.path).unlink(missing_ok=True)
    with _FORESTS_LOCK:
        _FORESTS.pop(ref.sha256, None)


def save_forest(model: Any, path: StorePath) -> ForestRef:
    """Pickle ``model`` to ``path`` (atomically) and keep it in this process's cache."""
    data = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    sha = hashlib.sha256(data).hexdigest()
    with writing(path) as tmp:
        tmp.write_bytes(data)
    with _FORESTS_LOCK:
        _remember(sha, model)
    return ForestRef(str(path), sha)


# --- block process functions ----------------------------------------------------------------------
_EDS: dict[tuple[str, str, float, str], dict[str, np.ndarray]] = {}
_EDS_LOCK = threading.Lock()


@dataclass(frozen=True)
class FeatureSpec:
    """The feature settings of one image (small; the EDS maps are read by each worker process once)."""

    image_key: str
    factor: int
    shift: tuple[float, float]
    scales: Mapping[str, float]
    o_per_zr: float
    endmembers: Mapping[str, Sequence[float]]
    sigmas: tuple[float, ...]
    eds_sigma: float

    def params(self, store: CampaignStore, image_id: str) -> FeatureParams:
        key = (str(store.path), image_id, self.eds_sigma, self.image_key)
        with _EDS_LOCK:
            eds = _EDS.get(key)
            if eds is None:
                group = store.eds_group(image_id)
                eds = smooth_eds({el: np.asarray(array(group, el)[...]) for el in store.eds_elements(image_id)},
                                 sigma=self.eds_sigma)
                _EDS.clear()  # one image at a time: blocks run image after image
                _EDS[key] = eds
        return FeatureParams(eds, shape=store.sem_array(image_id).shape, factor=self.factor, shift=self.shift,
                             scales=self.scales, o_per_zr=self.o_per_zr, endmembers=self.endmembers or None,
                             sigmas=self.sigmas)


def _sem_window(store: CampaignStore, image_id: str, region: tuple[slice, slice], halo: int) -> np.ndarray:
    from semscale.kernels.norm import apply_norm

    return np.asarray(apply_norm(read_window(store.sem_array(image_id), region, halo), store.norm(image_id)))


@dataclass(frozen=True)
class ForestBlocks:
    """Process function: the forest's labels of one block into scratch array ``out``, then its marker."""

    store_path: str
    image_id: str
    grid: ChunkGrid
    spec: FeatureSpec
    forest: ForestRef
    out: str
    token: int

    def __call__(self, index: Index) -> dict[str, Any]:
        store, group = open_scratch(self.store_path, self.image_id)
        region = self.grid.region(index)
        halo = feature_halo(self.spec.sigmas)
        feats = feature_block(_sem_window(store, self.image_id, region, halo),
                              self.spec.params(store, self.image_id), halo=halo,
                              rows=(region[0].start, region[0].stop), cols=(region[1].start, region[1].stop))
        array(group, self.out)[region] = predict_block(feats, self.forest.load())
        DoneMarkers(array(group, f"{self.out}_done"), self.token).mark(index)
        return {"index": index}


@dataclass(frozen=True)
class RefineBlocks:
    """Process function: scratch labels ``source`` of one block snapped to the SEM's edges into ``out``."""

    store_path: str
    image_id: str
    grid: ChunkGrid
    sigma: float
    n_classes: int
    source: str
    out: str
    token: int

    def __call__(self, index: Index) -> dict[str, Any]:
        store, group = open_scratch(self.store_path, self.image_id)
        region = self.grid.region(index)
        h = REFINE_HALO
        sem = _sem_window(store, self.image_id, region, h)
        labels = read_window(array(group, self.source), region, h)
        out = refine_block(sem, labels, sigma=self.sigma, n_classes=self.n_classes)
        array(group, self.out)[region] = out[h : out.shape[0] - h, h : out.shape[1] - h]
        DoneMarkers(array(group, f"{self.out}_done"), self.token).mark(index)
        return {"index": index}
