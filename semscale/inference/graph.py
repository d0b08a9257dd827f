"""The one dask graph of blockwise inference: the sliding-window / tile U-Net over the blocks of a 2-D image.

:func:`map_tasks` is the graph builder both paths share: :func:`predict` (lazy outputs of a dask array, the
halo by dask ``map_overlap``) and :func:`semscale.inference.predict_to_store` (block tasks that read their
input and halo from the SEM's Zarr array themselves, write their outputs and done marker). The image's
chunks are the *cores*: each is predicted from its own input extent
(:func:`~semscale.kernels.windows.input_extent`), so the result of a core does not depend on its
neighbours. Cores narrower than the halo are grouped with a neighbour into one *task* (dask needs a depth no
larger than any chunk); a task predicts its cores one by one. When the halo exceeds the image, one task
covers the whole image, mirrored by :func:`~semscale.kernels.windows.read_symmetric` instead of dask's
``reflect`` boundary (the same values where both apply).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from semscale.config import InferenceConfig
from semscale.errors import ConfigError
from semscale.inference.members import (
    Member,
    Models,
    input_norm,
    make_geometry,
    member_fns,
    reduced_halo,
    resolve_members,
)
from semscale.kernels.blending import Core, predict_region
from semscale.kernels.windows import Geometry, read_symmetric, required_depth

if TYPE_CHECKING:
    import dask.array as da

__all__ = ["Layout", "TaskFn", "layout_for", "map_tasks", "predict", "region_outputs"]

Index = tuple[int, int]
TaskFn = Callable[[np.ndarray, tuple[int, int], list[tuple[Index, Core]]], np.ndarray]
"""``fn(input, origin, cores)``: raw input whose pixel ``[0, 0]`` sits at global ``origin`` and the task's
cores as ``(core index, core)``; returns the task's output block."""


def _offsets(chunks: Sequence[int]) -> list[int]:
    return [0, *itertools.accumulate(chunks)]


def _group(chunks: Sequence[int], depth: int) -> tuple[int, ...]:
    """Consecutive chunks summed into groups of at least ``depth`` px (a short tail joins the last group)."""
    groups: list[int] = []
    acc = 0
    for c in chunks:
        acc += c
        if acc >= depth:
            groups.append(acc)
            acc = 0
    if acc:
        if groups:
            groups[-1] += acc
        else:
            groups.append(acc)
    return tuple(groups)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Cores (the output blocks), tasks (groups of whole cores) and the halo of one image (px)."""

    cores: tuple[tuple[int, ...], tuple[int, ...]]
    tasks: tuple[tuple[int, ...], tuple[int, ...]]
    depth: tuple[int, int]
    whole: bool
    """One task for the whole image, mirrored by ``read_symmetric`` (the halo exceeds the image)."""

    def task_cores(self, task: Index) -> list[tuple[Index, Core]]:
        """The cores of ``task`` as ``(core index, ((y0, y1), (x0, x1)))``, row-major."""
        per_axis = []
        for axis in range(2):
            t_off, c_off = _offsets(self.tasks[axis]), _offsets(self.cores[axis])
            lo, hi = t_off[task[axis]], t_off[task[axis] + 1]
            per_axis.append([(k, (c_off[k], c_off[k + 1])) for k in range(len(c_off) - 1) if lo <= c_off[k] < hi])
        return [((i, j), (ci, cj)) for i, ci in per_axis[0] for j, cj in per_axis[1]]

    def task_of(self, core: Index) -> Index:
        """The task holding core ``core``."""
        out = []
        for axis in range(2):
            start = _offsets(self.cores[axis])[core[axis]]
            out.append(max(k for k, a in enumerate(_offsets(self.tasks[axis])[:-1]) if a <= start))
        return out[0], out[1]

    def origin(self, task: Index) -> tuple[int, int]:
        """Global position (px) of pixel ``[0, 0]`` of ``task``'s input (its halo included)."""
        y, x = (_offsets(self.tasks[axis])[task[axis]] - self.depth[axis] for axis in range(2))
        return y, x


def layout_for(chunks: Sequence[Sequence[int]], geom: Geometry, *, reduced_halo: bool = False) -> Layout:
    """The :class:`Layout` of an image chunked as ``chunks`` (its cores) under ``geom``.

    ``reduced_halo``: ``inference.halo`` is below the receptive field's. A tile's output then depends on the tile's own extent, so every
    core edge inside the image must lie on the global tile grid (multiples of ``tile_size``): the tiles are
    then the same whatever the chunking, and so is the output."""
    cores = (tuple(chunks[0]), tuple(chunks[1]))
    if reduced_halo and geom.mode == "tile":
        for axis, sizes in zip(("rows", "columns"), cores):
            edges = np.cumsum(sizes)[:-1]
            if (edges % geom.tile_size).any():
                raise ConfigError(
                    f"Expected block edges on multiples of inference.tile_size ({geom.tile_size} px) when "
                    f"inference.halo ({geom.halo} px) is below the network's receptive field. Got block {axis} of {', '.join(map(str, sizes[:4]))}"
                    f"{' ...' if len(sizes) > 4 else ''} px; make inference.block_size (or the chunks) a multiple "
                    "of tile_size, or leave inference.halo null (exact, any blocks).")
    d0, d1 = required_depth(cores, geom)
    tasks = (_group(cores[0], d0), _group(cores[1], d1))
    shape = (sum(cores[0]), sum(cores[1]))
    whole = d0 > shape[0] - 1 or d1 > shape[1] - 1 or (len(tasks[0]) == 1 and len(tasks[1]) == 1)
    if whole:
        tasks = ((shape[0],), (shape[1],))
    return Layout(cores=cores, tasks=tasks, depth=(d0, d1), whole=whole)


@dataclasses.dataclass(frozen=True)
class _Task:
    """A dask block function: finds the task's input origin and cores, then runs ``fn``."""

    fn: TaskFn
    layout: Layout

    def __call__(self, block: np.ndarray, block_info: dict[Any, Any] | None = None) -> np.ndarray:
        assert block_info is not None
        task = tuple(block_info[0]["chunk-location"][:2])
        (d0, d1), origin = self.layout.depth, self.layout.origin((task[0], task[1]))
        if self.layout.whole:
            h, w = block.shape
            block = read_symmetric(block, (-d0, h + d0), (-d1, w + d1))
        return self.fn(block, origin, self.layout.task_cores((task[0], task[1])))


@dataclasses.dataclass(frozen=True)
class _ReadTask:
    """A dask block function without inputs: reads its task's input and halo from ``source`` (Zarr)."""

    fn: TaskFn
    layout: Layout
    source: Any

    def __call__(self, block_info: dict[Any, Any] | None = None) -> np.ndarray:
        assert block_info is not None
        i, j = block_info[None]["chunk-location"][:2]
        (y0, x0), (d0, d1) = self.layout.origin((i, j)), self.layout.depth
        rows = (y0, y0 + self.layout.tasks[0][i] + 2 * d0)
        cols = (x0, x0 + self.layout.tasks[1][j] + 2 * d1)
        return self.fn(read_symmetric(self.source, rows, cols), (y0, x0), self.layout.task_cores((i, j)))


def map_tasks(image: Any, fn: TaskFn, layout: Layout, *, channels: int, per_task: bool = False) -> da.Array:
    """The graph: ``fn`` over the tasks of ``layout``, each given its input with the halo. Output blocks are
    ``(h, w, channels)`` float32 (the task's pixels) or, with ``per_task``, ``(1, 1, channels)`` float64 (a
    small result per task).

    A dask ``image`` gets its halo from dask ``map_overlap`` (boundary ``reflect``). Any other 2-D array
    that slices (a Zarr array, numpy) is read by the tasks themselves, each its own input and halo (mirrored
    at the borders): tasks without inputs and without halo exchange; for a store image on worker processes
    ``map_overlap`` takes 1.3–2× as long for the same numbers (``benchmarks/bench_infer.py halo``)."""
    import dask.array as da

    if per_task:
        out_chunks: tuple[tuple[int, ...], ...] = ((1,) * len(layout.tasks[0]), (1,) * len(layout.tasks[1]))
        dtype: Any = np.float64
    else:
        out_chunks, dtype = layout.tasks, np.float32
    kw = {"chunks": (*out_chunks, (channels,)), "dtype": dtype, "meta": np.empty((0, 0, 0), dtype),
          "token": "semscale-" + type(fn).__name__.strip("_").lower()}  # short keys, not the task's repr
    if not isinstance(image, da.Array):
        return da.map_blocks(_ReadTask(fn, layout, image), **kw)
    image = image.rechunk(layout.tasks)
    task = _Task(fn, layout)
    if layout.whole:
        return da.map_blocks(task, image, new_axis=2, **kw)
    depth = {0: layout.depth[0], 1: layout.depth[1]}
    return da.map_overlap(task, image, depth=depth, boundary="reflect", trim=False, allow_rechunk=False,
                          new_axis=2, **kw)


def normalise(raw: np.ndarray, norm: Mapping[str, Any] | None) -> np.ndarray:
    """Network input: ``raw`` mapped with the image's stored normalisation, or as float32 when ``None``."""
    from semscale.kernels.norm import apply_norm

    return apply_norm(raw, dict(norm)) if norm is not None else np.asarray(raw, dtype=np.float32)


def region_outputs(
    x: np.ndarray, *, origin: tuple[int, int], core: Core, members: Sequence[Member], geom: Geometry,
    with_labels: bool = False, with_members: bool = False,
) -> Any:
    """:func:`~semscale.kernels.blending.predict_region` on normalised input with the members loaded from
    the worker cache, on this worker's array module; numpy results (host copies of cupy ones)."""
    from semscale.runtime.backend import array_module

    xp = array_module()
    per_member = member_fns(members)
    res = predict_region(x, origin=origin, core=core, predict_fns=[f for fns in per_member for f in fns],
                         geom=geom, xp=xp, with_labels=with_labels, with_members=with_members,
                         passes=[len(fns) for fns in per_member])

    def host(a: Any) -> np.ndarray:
        return a.get() if hasattr(a, "get") and xp is not np else np.asarray(a)

    return tuple(host(a) for a in res) if with_labels or with_members else host(res)


@dataclasses.dataclass(frozen=True)
class _PredictTask:
    """Task function of :func:`predict`: the stacked outputs ``(h, w, K + 2)`` of the task's pixels."""

    members: tuple[Member, ...]
    geom: Geometry
    norm: dict[str, Any] | None

    def __call__(self, raw: np.ndarray, origin: tuple[int, int], cores: list[tuple[Index, Core]]) -> np.ndarray:
        x = normalise(raw, self.norm)
        parts = [(core, region_outputs(x, origin=origin, core=core, members=self.members, geom=self.geom))
                 for _, core in cores]
        if len(parts) == 1:
            return parts[0][1]
        (y0, _), (x0, _) = parts[0][0]
        (_, y1), (_, x1) = parts[-1][0]
        out = np.empty((y1 - y0, x1 - x0, parts[0][1].shape[-1]), np.float32)
        for ((a0, b0), (a1, b1)), part in parts:
            out[a0 - y0 : b0 - y0, a1 - x0 : b1 - x0] = part
        return out


def check_image(image: da.Array, norm: Mapping[str, Any] | None) -> None:
    """A 2-D image that is normalised float or comes with its ``norm``."""
    if image.ndim != 2:
        raise ConfigError(f"Expected a 2-D (y, x) image for `image`. Got shape {image.shape}.")
    if norm is None and not np.issubdtype(image.dtype, np.floating):
        raise ConfigError(
            f"Expected a normalised float image or `norm` for `image`. Got raw {image.dtype} without `norm`; "
            "pass norm=store.norm(image_id)."
        )


def predict(
    image: da.Array,
    *,
    models: Models,
    cfg: InferenceConfig = InferenceConfig(),  # noqa: B008 - frozen, so one shared default is safe
    norm: Mapping[str, Any] | None = None,
) -> dict[str, da.Array]:
    """Lazy outputs for a 2-D dask image, one shared graph: ``probabilities`` ``(H, W, K)`` float32 (the
    ensemble mean), ``labels`` ``(H, W)`` uint8, ``confidence`` and ``uncertainty`` ``(H, W)`` float32.

    ``image`` is normalised float32, or raw with ``norm`` (the image's stored normalisation,
    ``store.norm(image_id)``; ignored for models that normalise each window, which get raw values). ``models``: ``.keras`` paths with sidecars (or, for tests, callables
    ``(n, h, w, 1) → (n, h, w, K)``). Settings come from ``cfg`` (``patch_size``: the sidecar's by default;
    ``stride``: the patch size). Each chunk of ``image`` is predicted from its own input extent, so the
    window modes give the same numbers for any chunking.
    """
    members, facts = resolve_members(models)
    norm = input_norm(facts, norm)
    if facts.normalisation != "patch-l2":
        check_image(image, norm)
    geom = make_geometry(cfg, facts)
    k = facts.n_classes
    layout = layout_for(image.chunks, geom, reduced_halo=reduced_halo(cfg, facts))
    fn = _PredictTask(tuple(members), geom, norm)
    stacked = map_tasks(image, fn, layout, channels=k + 2)
    probs = stacked[..., :k]
    return {
        "probabilities": probs,
        "labels": probs.argmax(axis=-1).astype(np.uint8),
        "confidence": stacked[..., k],
        "uncertainty": stacked[..., k + 1],
    }
