"""Zarr → Zarr segmentation of a store image with per-block resume.

The graph is :func:`semscale.inference.graph.map_tasks` over the SEM's Zarr array, one task per block (a
:class:`~semscale.store.blockwise.BlockGrid` block: a SEM chunk or ``inference.block_size``): each reads its
input and halo straight from the SEM (mirrored at the borders), predicts, writes ``labels/0``,
``confidence``, ``uncertainty`` and ``probabilities`` and then its done marker
(:class:`~semscale.store.blockwise.DoneMarkers`: the settings hash, written last), and returns at once for
blocks already done. Only the tasks of blocks not done are computed
(:func:`~semscale.store.blockwise.compute_blocks`). Tasks read their own halo rather than taking it from
``map_overlap``: the same numbers, but ``map_overlap`` takes 1.3–2× as long on worker processes (halo
exchange between workers, chains of small tasks before each block) and no less in one process
(``benchmarks/bench_infer.py halo``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from semscale.config import InferenceConfig
from semscale.errors import ConfigError, ModelError, StoreError
from semscale.inference.graph import Index, layout_for, map_tasks, normalise, region_outputs
from semscale.inference.members import (
    Member,
    ModelFacts,
    ModelRef,
    input_norm,
    make_geometry,
    reduced_halo,
    resolve_members,
    store_models,
)
from semscale.kernels.blending import Core
from semscale.kernels.windows import Geometry, count_evaluations
from semscale.store.blockwise import BlockGrid, DoneMarkers, compute_blocks, settings_hash
from semscale.store.location import StorePath
from semscale.store.nodes import attrs_of

if TYPE_CHECKING:
    from semscale.store.layout import CampaignStore

log = logging.getLogger(__name__)

__all__ = ["predict_to_store"]

_HALO_READS = True
"""Tasks read their halo from the SEM's Zarr array; ``False``: dask ``map_overlap`` over the SEM instead
(the same numbers, 1.3–2× the time on worker processes; ``benchmarks/bench_infer.py halo`` measures both)."""


@dataclasses.dataclass(frozen=True)
class _BlockTask:
    """Task function: predict, write and mark each not-yet-done block of a task; ``[[[computed, s]]]``.

    It holds the opened Zarr arrays (outputs and done markers; they pickle as store path + metadata), so
    tasks do not reopen the store."""

    members: tuple[Member, ...]
    geom: Geometry
    norm: dict[str, Any] | None
    arrays: dict[str, zarr.Array]
    done: zarr.Array
    token: int

    def __call__(self, raw: np.ndarray, origin: tuple[int, int], cores: list[tuple[Index, Core]]) -> np.ndarray:
        t0 = time.perf_counter()
        markers = DoneMarkers(self.done, self.token)
        todo = [(ix, core) for ix, core in cores if not markers.is_done(ix)]
        if todo:
            x = normalise(raw, self.norm)
            for ix, core in todo:
                self._write(x, origin, core)
                markers.mark(ix)  # last: a block counts as done only after all its outputs are written
        return np.array([[[len(todo), time.perf_counter() - t0]]], np.float64)

    def _write(self, x: np.ndarray, origin: tuple[int, int], core: Core) -> None:
        arrays = self.arrays
        res = region_outputs(x, origin=origin, core=core, members=self.members, geom=self.geom,
                             with_labels=True, with_members="members" in arrays)
        out, labels = res[0], res[1]
        k = out.shape[-1] - 2
        region = (slice(*core[0]), slice(*core[1]))
        arrays["labels"][region] = labels
        if "members" in arrays:
            arrays["members"][(slice(None), *region)] = res[2]
        arrays["confidence"][region] = out[..., k].astype(np.float16)
        if "uncertainty" in arrays:
            arrays["uncertainty"][region] = out[..., k + 1].astype(np.float16)
        if "probabilities" in arrays:
            arrays["probabilities"][(slice(None), *region)] = np.moveaxis(out[..., :k], -1, 0).astype(np.float16)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _block_grid(store: CampaignStore, image_id: str, cfg: InferenceConfig) -> BlockGrid:
    sem = store.sem_array(image_id)
    shape, chunks = (int(sem.shape[0]), int(sem.shape[1])), (int(sem.chunks[0]), int(sem.chunks[1]))
    if cfg.block_size is None:
        return BlockGrid(shape, chunks)
    if any(cfg.block_size % c for c in chunks):
        raise ConfigError(
            f"Expected `inference.block_size` to be a multiple of the SEM chunk {chunks} px. Got {cfg.block_size}."
        )
    return BlockGrid(shape, (cfg.block_size, cfg.block_size))


def _check_classes(store: CampaignStore, facts: ModelFacts, paths: Sequence[StorePath]) -> None:
    if facts.classes and list(facts.classes) != list(store.classes):
        raise ModelError(
            f"Expected a model for the store's classes {list(store.classes)}. Got {list(facts.classes)} from "
            f"{paths[0]}."
        )


def _prepare(
    store: CampaignStore, name: str, image_id: str, params: dict[str, Any], *, grid: BlockGrid,
    facts: ModelFacts, n_members: int, cfg: InferenceConfig, overwrite: bool,
) -> DoneMarkers:
    """The prediction group ready for blocks: outputs (re)created unless they hold these settings."""
    token = settings_hash(params)
    g = store.prediction_group(name, image_id, create=True)
    old = attrs_of(g)
    if overwrite or old.get("params") != params or "labels" not in store.prediction_arrays(name, image_id):
        if old.get("params") not in (None, params) and not overwrite:
            log.warning("settings changed for %s/%s; recomputing all blocks", name, image_id)
        store.create_predictions(name, image_id, n_classes=facts.n_classes, uncertainty=facts.samples > 1,
                                 probabilities=cfg.probabilities, members=n_members if n_members > 1 else 0)
        markers = DoneMarkers.create(g, grid, token)
    else:
        markers = DoneMarkers.require(g, grid, token)
    g.attrs["semscale"] = {"params": params, "complete": False, "classes": list(store.classes),
                           "model": name, "image": image_id}
    return markers


def _up_to_date(store: CampaignStore, name: str, image_id: str, params: dict[str, Any], grid: BlockGrid) -> bool:
    """Whether the predictions of ``image_id`` are complete with ``params`` (then nothing is written)."""
    if not store.has_predictions(name, image_id):
        return False
    g = store.prediction_group(name, image_id)
    old = attrs_of(g)
    if old.get("params") != params or not old.get("complete") or "done" not in g:
        return False
    done = g["done"]
    return (isinstance(done, zarr.Array) and DoneMarkers(done, settings_hash(params)).all_done()
            and bool(_written(store, name, image_id, grid).all()))


def _written(store: CampaignStore, name: str, image_id: str, grid: BlockGrid) -> np.ndarray:
    """Per block of ``grid``: whether every output chunk it covers exists."""
    written = np.ones(grid.grid, bool)
    for arr in store.prediction_arrays(name, image_id).values():
        have = store.chunks_written(arr)
        have = np.asarray(have.all(axis=tuple(range(have.ndim - 2))))  # probabilities, members: a leading axis
        ch = arr.chunks[-2:]
        for ix in grid.indices():
            ry, rx = grid.region(ix)
            written[ix] &= bool(have[ry.start // ch[0] : -(-ry.stop // ch[0]), rx.start // ch[1] : -(-rx.stop // ch[1])].all())
    return written


def _pending(store: CampaignStore, name: str, image_id: str, markers: DoneMarkers, grid: BlockGrid) -> list[Index]:
    """Blocks to compute: marker missing or stale, or an output chunk missing (then the marker is cleared)."""
    written = _written(store, name, image_id, grid)
    pending = markers.pending(grid.indices())
    for ix in grid.indices():
        if not written[ix] and ix not in pending:
            markers.clear(ix)
            pending.append(ix)
    return sorted(pending)


def _settings(
    store: CampaignStore, image_id: str, cfg: InferenceConfig, geom: Geometry, members: Sequence[Member],
    grid: BlockGrid,
) -> dict[str, Any]:
    """What the outputs depend on (hashed into the done markers); model paths left out: stores move."""
    return _jsonable({
        "geometry": dataclasses.asdict(geom) | {"batch_size": None},
        "models": [{"file": m.path.rsplit("/", 1)[-1], "sha256": m.sha256} for m in members if isinstance(m, ModelRef)],
        "norm": store.norm(image_id), "shape": grid.shape, "chunks": grid.block,
        "write_probabilities": cfg.probabilities,
    })


def predict_to_store(
    store: CampaignStore,
    image_id: str,
    cfg: InferenceConfig,
    *,
    models: str | Sequence[str | StorePath],
    model_name: str | None = None,
    overwrite: bool = False,
    client: Any = None,
) -> dict[str, Any]:
    """Segment store image ``image_id`` into ``store.prediction_group(name, image_id)``, block by block.

    ``models``: a model name in the store (predictions are named after it) or ``.keras`` paths (named
    ``model_name``, else ``cfg.model``). Blocks are SEM chunks (or ``cfg.block_size`` px, a multiple of
    them: fewer halo pixels per output pixel in ``tile`` mode). Each block task writes ``labels/0`` (uint8,
    NGFF image-label), ``confidence`` (float16), ``uncertainty`` (float16, ensembles) and, with
    ``cfg.probabilities``, ``probabilities`` (float16 ``(K, H, W)``), then its done marker. A rerun computes
    only blocks not done (or with an output chunk missing) and gives bit-identical results; changed settings
    or ``overwrite=True`` recompute everything. ``client``: a ``distributed.Client`` (default: the current
    one if any, else threads in this process). Returns a summary dict.
    """
    t0 = time.perf_counter()
    paths, name = store_models(store, models, model_name=model_name, cfg=cfg)
    members, facts = resolve_members(paths)
    _check_classes(store, facts, paths)
    geom = make_geometry(cfg, facts)
    grid = _block_grid(store, image_id, cfg)
    params = _settings(store, image_id, cfg, geom, members, grid)
    if not overwrite and _up_to_date(store, name, image_id, params, grid):
        log.info("%s/%s: every block done with these settings", name, image_id)
        return _summary(store, name, image_id, cfg, geom, grid, n_members=facts.samples, computed=0, t0=t0)
    if not store.writable:
        raise store.read_only_error(f"predict {image_id}")
    markers = _prepare(store, name, image_id, params, grid=grid, facts=facts, n_members=len(members), cfg=cfg,
                       overwrite=overwrite)
    pending = _pending(store, name, image_id, markers, grid)
    layout = layout_for(grid.chunks(), geom, reduced_halo=reduced_halo(cfg, facts))
    task = _BlockTask(tuple(members), geom, input_norm(facts, store.norm(image_id)),
                      store.prediction_arrays(name, image_id), markers.array, markers.token)
    sem = store.sem_array(image_id) if _HALO_READS else store.sem(image_id)
    graph = map_tasks(sem, task, layout, channels=2, per_task=True)
    tasks = sorted({layout.task_of(ix) for ix in pending})
    results = compute_blocks(graph, tasks, client=client, retries=cfg.retries,
                             description=f"predict {image_id} ({cfg.mode})")
    if not markers.all_done():
        missing = len(markers.pending(grid.indices()))
        raise StoreError(f"Expected every block of {image_id} done. Got {missing} missing; rerun to finish.")
    computed = int(sum(float(r[..., 0].sum()) for r in results))
    store.finish_predictions(name, image_id, changed=computed > 0)
    return _summary(store, name, image_id, cfg, geom, grid, n_members=facts.samples, computed=computed, t0=t0)


def _summary(
    store: CampaignStore, name: str, image_id: str, cfg: InferenceConfig, geom: Geometry, grid: BlockGrid, *,
    n_members: int, computed: int, t0: float,
) -> dict[str, Any]:
    seconds = time.perf_counter() - t0
    (h, w), n_blocks = grid.shape, len(grid.indices())
    evals = count_evaluations(grid.shape, grid.chunks(), geom)
    summary = {
        "model": name, "image": image_id, "mode": cfg.mode, "blocks": n_blocks, "computed": computed,
        "skipped": n_blocks - computed, "seconds": seconds,
        "evaluations_per_pixel": evals * n_members * (8 if cfg.tta else 1) / (h * w),
        "mpx_per_s": h * w / 1e6 / seconds if computed else None,
    }
    g = store.prediction_group(name, image_id)
    if computed or not attrs_of(g).get("complete"):  # a no-op rerun keeps the summary of the run that computed
        g.attrs["semscale"] = {**attrs_of(g), "complete": True, "summary": _jsonable(summary)}
    log.info("%s/%s: %d of %d blocks computed in %.1f s", name, image_id, computed, n_blocks, seconds)
    return summary
