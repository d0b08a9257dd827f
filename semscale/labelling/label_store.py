"""The labelling stage over a campaign store: EDS-guided random-forest targets ``labels/target``.

Per image: register the EDS, fit the seeding rules, draw confident seeds (plus scribbles, which override);
one random forest trained on the seeds pooled over the images labels every pixel block by block; the labels
are snapped to the SEM's edges; a second forest, trained on pixels drawn from those labels everywhere,
labels the images again (self-training). Every intermediate result is kept per block in the image's scratch
group with a done marker recording the settings hash it was computed with (:mod:`~semscale.labelling.steps`),
so an interrupted run resumes where it stopped; ``labels/target`` is written, complete, only after the last
round, and the scratch is dropped once every image of the run has its target. Its attrs record how it was
made and, where the image's EDS cannot decide some pixels, the ``unresolved`` band that training ignores
(:func:`~semscale.labelling.rules.unresolved_band`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from semscale._version import __version__
from semscale.config import LabellingConfig
from semscale.errors import InputImageError
from semscale.labelling._common import EDS_SMOOTH_SIGMA
from semscale.labelling.features import feature_names
from semscale.labelling.forest import MAX_SAMPLES, fit_pooled
from semscale.labelling.prepare import (
    PreparedImage,
    image_key,
    load_scribbles,
    prepare_image,
    restore_counts,
    round_one_seeds,
    round_two_seeds,
)
from semscale.labelling.registration import MAX_SHIFT_PX, MIN_QUALITY
from semscale.labelling.rules import MARGIN, unresolved_band
from semscale.labelling.seeds import ERODE_PX
from semscale.labelling.steps import (
    STAGE,
    ForestBlocks,
    ForestRef,
    RefineBlocks,
    Seeds,
    load_seeds,
    meta,
    release_forest,
    save_forest,
    save_seeds,
    scratch_labels,
)
from semscale.store.blockwise import DoneMarkers, Index, run_blocks, settings_hash
from semscale.store.layout import CampaignStore

log = logging.getLogger(__name__)

__all__ = ["BOUNDARY_SEEDS", "TARGET", "label_store"]

TARGET = "target"
"""The label image the stage writes."""
BOUNDARY_SEEDS = False
"""Add SEM-decided seeds near solid|solid boundaries (``boundary_seed_candidates``); off: on simulator
data it cost 0.6 points."""
SCRATCH_VERSION = 1
"""Bumped when the scratch layout or a step's meaning changes, so old scratch is recomputed."""


def _settings(cfg: LabellingConfig, classes: Sequence[str]) -> dict[str, Any]:
    """What the labels depend on besides the images: the config section (``n_jobs`` aside: the forest is
    the same on any number of cores) and the stage's fixed choices."""
    section = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "n_jobs"}
    section["sigmas"] = [float(s) for s in cfg.sigmas]
    return {**section, "margin": MARGIN, "erode_px": ERODE_PX, "min_quality": MIN_QUALITY,
            "max_shift_px": MAX_SHIFT_PX, "eds_sigma": EDS_SMOOTH_SIGMA, "boundary_seeds": BOUNDARY_SEEDS,
            "max_samples": MAX_SAMPLES, "classes": list(classes), "scratch": SCRATCH_VERSION,
            "semscale_version": __version__}


@dataclass
class _Run:
    """One labelling run: its images (in order: the forests pool their seeds in this order) and settings."""

    store: CampaignStore
    cfg: LabellingConfig
    images: list[PreparedImage]
    client: Any
    settings: dict[str, Any]
    run_key: str = ""
    fit_seconds: float = 0.0
    resumed: dict[str, dict[str, int]] = field(default_factory=dict)
    forests: list[ForestRef] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return list(self.store.classes)

    def token(self, p: PreparedImage, step: str, *, pooled: bool = True) -> int:
        """Settings hash of ``step`` of image ``p``; steps after a pooled forest also depend on the run."""
        return settings_hash({"settings": self.settings, "image": p.key, "step": step,
                              "run": self.run_key if pooled else None})

    def blocks(self, process: Callable[[Index], dict[str, Any]], p: PreparedImage, pending: list[Index], *,
               description: str) -> None:
        """Run ``process`` over the ``pending`` blocks of ``p`` (on the client, else on every core here)."""
        t0 = time.perf_counter()
        run_blocks(process, pending, client=self.client, description=description,
                   local_threads=os.cpu_count() or 1)
        self.seconds[p.image_id] = self.seconds.get(p.image_id, 0.0) + time.perf_counter() - t0

    def scratch(self, p: PreparedImage) -> zarr.Group:
        group = self.store.scratch_group(STAGE, p.image_id, create=True)
        assert group is not None
        return group


def _run_finished(store: CampaignStore, image_id: str) -> bool:
    """Whether every image of the run that wrote ``image_id``'s target has its target from that run."""
    attrs = store.label_attrs(image_id, TARGET)
    return all(store.has_labels(i, TARGET) and store.label_attrs(i, TARGET).get("run") == attrs.get("run")
               for i in attrs.get("training_images", [image_id]))


def _select(store: CampaignStore, ids: Sequence[str], *, overwrite: bool) -> tuple[list[str], list[str]]:
    """Images to label and images skipped. A complete target with scratch left beside it whose run did
    not write all its targets (interrupted in between) is labelled again with the others."""
    todo, skipped = [], []
    for image_id in ids:
        if not store.eds_elements(image_id):
            log.info("%s: no EDS maps; not labelled", image_id)
            skipped.append(image_id)
        elif overwrite or not store.has_labels(image_id, TARGET):
            todo.append(image_id)
        elif store.scratch_group(STAGE, image_id) is not None and not _run_finished(store, image_id):
            log.info("%s: labels/%s is from an unfinished run; labelled again", image_id, TARGET)
            todo.append(image_id)
        else:
            scratch = store.scratch_group(STAGE, image_id)
            if scratch is not None and meta(scratch).get("run") == store.label_attrs(image_id, TARGET).get("run"):
                store.drop_scratch(STAGE, image_id)  # its run finished but was stopped while cleaning up
            log.info("%s: labels/%s exists; skipped (use overwrite to redo)", image_id, TARGET)
            skipped.append(image_id)
    return todo, skipped


def _start(store: CampaignStore, todo: Sequence[str], cfg: LabellingConfig,
           scribbles: Mapping[str, str | Path | np.ndarray], client: Any) -> _Run:
    """Prepare every image (registration, rules, lazy features) and key the run by their contents."""
    from semscale.runtime.progress import progress

    run = _Run(store, cfg, [], client, _settings(cfg, store.classes))
    for image_id in progress(todo, total=len(todo), description="prepare"):
        p = prepare_image(store, image_id, cfg)
        if image_id in scribbles:
            p.scribbles = load_scribbles(scribbles[image_id], shape=tuple(store.sem_array(image_id).shape),
                                         n_classes=len(run.classes))
        p.key = image_key(store, p)
        run.images.append(p)
    run.run_key = str(settings_hash({"images": [[p.image_id, p.key] for p in run.images]}))
    for p in run.images:
        group = run.scratch(p)
        group.attrs["semscale"] = {**meta(group), "run": run.run_key}
    return run


def _seeds(run: _Run, step: str) -> list[Seeds]:
    """Each image's seed set of ``step`` (``seeds1``: automatic + scribbles; ``seeds2``: drawn from the
    first round's labels), loaded from scratch when it was saved with the same settings."""
    from semscale.runtime.progress import progress

    out = []
    for p in progress(run.images, total=len(run.images), description=step):
        group, token = run.scratch(p), run.token(p, step, pooled=step != "seeds1")
        seeds = load_seeds(group, step, token)
        run.resumed.setdefault(p.image_id, {})[step] = int(seeds is not None)
        if seeds is None:
            if step == "seeds1":
                seeds = round_one_seeds(p, run.cfg, classes=run.classes, boundary_seeds=BOUNDARY_SEEDS)
            else:
                import dask.array as da

                first = da.from_zarr(group["refined1" if run.cfg.refine_sigma is not None else "forest1"])
                seeds = round_two_seeds(p, first, run.cfg, classes=run.classes)
            save_seeds(group, step, seeds, token)
        elif step == "seeds1":
            restore_counts(p, seeds)
        out.append(seeds)
    return out


def _pending(run: _Run, p: PreparedImage, step: str) -> list[Index]:
    """The blocks of ``step`` of image ``p`` not done with the current settings (scratch arrays ready)."""
    group = run.scratch(p)
    scratch_labels(group, step, p.grid)
    markers = DoneMarkers.require(group, p.grid, run.token(p, step), name=f"{step}_done")
    pending = markers.pending(p.grid.indices())
    run.resumed.setdefault(p.image_id, {})[step] = len(p.grid.indices()) - len(pending)
    return pending


def _forest_round(run: _Run, step: str, seeds: Sequence[Seeds], *, what: str) -> dict[str, int]:
    """Fit the round's forest (only if some block still needs it) and label the pending blocks of every
    image into scratch ``step``; returns the pooled seed counts per class."""
    y_all = np.concatenate([s.cls for s in seeds])
    pooled = {c: int((y_all == k).sum()) for k, c in enumerate(run.classes)}
    pending = {p.image_id: _pending(run, p, step) for p in run.images}
    if not any(pending.values()):
        return pooled
    model, pooled, secs = fit_pooled([s.x for s in seeds], [s.cls for s in seeds], run.cfg,
                                     classes=run.classes, what=what)
    run.fit_seconds += secs
    _record_forest(run, step, model)
    ref = save_forest(model, run.store.scratch_file(STAGE, f"{step}.pkl"))
    run.forests.append(ref)
    for p in run.images:
        if pending[p.image_id]:
            process = ForestBlocks(str(run.store.path), p.image_id, p.grid, p.spec(), ref, step,
                                   run.token(p, step))
            run.blocks(process, p, pending[p.image_id], description=f"{step} {p.image_id}")
    return pooled


def _record_forest(run: _Run, step: str, model: Any) -> None:
    """Keep the fitted forest's settings in every image's scratch attrs (for the target's attrs)."""
    params = {k: model.get_params()[k] for k in ("n_estimators", "max_depth", "random_state")}
    for p in run.images:
        group = run.scratch(p)
        attrs = meta(group)
        attrs["forest"] = {**dict(attrs.get("forest", {})), step: params}
        group.attrs["semscale"] = attrs


def _refine_round(run: _Run) -> None:
    """Snap the first round's forest labels to the SEM's edges, block by block (``refined1``)."""
    sigma = run.cfg.refine_sigma
    assert sigma is not None
    for p in run.images:
        pending = _pending(run, p, "refined1")
        if pending:
            process = RefineBlocks(str(run.store.path), p.image_id, p.grid, float(sigma), len(run.classes),
                                   "forest1", "refined1", run.token(p, "refined1"))
            run.blocks(process, p, pending, description=f"refine {p.image_id}")


def _final_step(cfg: LabellingConfig) -> str:
    if cfg.self_training:
        return "forest2"
    return "refined1" if cfg.refine_sigma is not None else "forest1"


def _unresolved(run: _Run, p: PreparedImage) -> dict[str, Any] | None:
    """The target pixels this image's EDS cannot decide (:func:`~semscale.labelling.rules.unresolved_band`)."""
    band = unresolved_band(p.rules, factor=p.factor,
                           oxidation_min=run.store.image_attrs(p.image_id).get("oxidation_min"))
    if band is not None:
        log.info("%s: %s; its %s within %g px of %s is labelled %s but left out of training", p.image_id,
                 band["why"], band["class"], band["width_px"], band["next_to"], band["class"])
    return band


def _attrs(run: _Run, p: PreparedImage, pooled: Mapping[str, int]) -> dict[str, Any]:
    params = {**dataclasses.asdict(run.cfg), "sigmas": [float(s) for s in run.cfg.sigmas], "margin": MARGIN,
              "erode_px": ERODE_PX, "min_quality": MIN_QUALITY, "eds_sigma": EDS_SMOOTH_SIGMA,
              "boundary_seeds": BOUNDARY_SEEDS, "features": feature_names(run.cfg.sigmas)}
    return {
        "method": "eds-guided random forest (semscale.labelling)",
        "semscale_version": __version__,
        "parameters": params,
        "forest": dict(meta(run.scratch(p)).get("forest", {})),
        "rounds": 2 if run.cfg.self_training else 1,
        "training_images": [q.image_id for q in run.images],
        "run": run.run_key,
        "seeds_image": {**p.n_auto, **{f"scribbled_{k}": v for k, v in p.n_scribbled.items()}},
        "seeds_boundary": p.n_boundary,
        "seeds_pooled": dict(pooled),
        "registration": p.registration.to_dict(),
        "rules": p.rules.to_dict(),
        "unresolved": _unresolved(run, p),
    }


def _finish(run: _Run, pooled: Mapping[str, int], summary: dict[str, Any]) -> None:
    """Write every image's ``labels/target`` (complete) from its last step, then drop the run's scratch."""
    import dask.array as da

    step = _final_step(run.cfg)
    for p in run.images:
        t1 = time.perf_counter()
        final = da.from_zarr(run.scratch(p)[step])
        run.store.write_labels(p.image_id, TARGET, final, attrs=_attrs(run, p, pooled))
        secs = run.seconds.get(p.image_id, 0.0) + time.perf_counter() - t1
        run.store.set_label_attrs(p.image_id, TARGET, predict_seconds=round(secs, 2))
        summary["images"][p.image_id] = {
            "registration": p.registration.to_dict(), "seeds": p.n_auto, "boundary_seeds": p.n_boundary,
            "scribbled": p.n_scribbled, "nio": p.rules.nio, "predict_seconds": secs,
            "rounds": 2 if run.cfg.self_training else 1,
        }
    for p in run.images:
        run.store.drop_scratch(STAGE, p.image_id)
    for ref in run.forests:
        release_forest(ref)


@contextlib.contextmanager
def _scheduler(client: Any) -> Iterator[None]:
    if client is None:
        yield
        return
    import dask

    with dask.config.set(scheduler=client):
        yield


def label_store(
    store: CampaignStore,
    image_ids: Sequence[str] | None = None,
    cfg: LabellingConfig | None = None,
    *,
    scribbles: Mapping[str, str | Path | np.ndarray] | None = None,
    overwrite: bool = False,
    client: Any = None,
) -> dict[str, Any]:
    """Label every image (of ``image_ids``, default all) that has EDS maps and no complete
    ``labels/target`` (all of them with ``overwrite``), with the settings of ``cfg`` (default
    ``LabellingConfig()``).

    ``scribbles`` ``{image_id: path or array}`` (uint8, SEM-shaped, 255 = unlabelled) add seeds that
    override the automatic ones; ``client`` a ``distributed.Client`` to compute on (default: the current
    one, else threads here). An interrupted run resumes block by block when called again with the same
    settings. ``labels/target`` attrs record the method, parameters, seed counts, registration, rules.
    Returns ``{"labelled", "skipped", "images": {id: summary}, "seeds", "fit_seconds", "seconds",
    "resumed": {id: {step: blocks already done}}}`` (plus ``"samples_round2"`` with self-training).
    """
    t0 = time.perf_counter()
    cfg = LabellingConfig() if cfg is None else cfg
    ids = list(image_ids) if image_ids is not None else store.image_ids()
    scribbles = dict(scribbles or {})
    unknown = sorted(set(scribbles) - set(ids))
    if unknown:
        raise InputImageError(f"Expected scribbles only for images being labelled {ids}. Got {unknown}.")
    todo, skipped = _select(store, ids, overwrite=overwrite)
    summary: dict[str, Any] = {"labelled": [], "skipped": skipped, "images": {}, "seeds": {}, "seconds": 0.0}
    if not todo:
        return summary
    with _scheduler(client):
        run = _start(store, todo, cfg, scribbles, client)
        pooled = _forest_round(run, "forest1", _seeds(run, "seeds1"), what="seeds")
        if cfg.refine_sigma is not None:
            _refine_round(run)
        if cfg.self_training:
            summary["samples_round2"] = _forest_round(run, "forest2", _seeds(run, "seeds2"),
                                                      what="round-1 labels")
        _finish(run, pooled, summary)
    summary.update(labelled=[p.image_id for p in run.images], seeds=pooled, fit_seconds=run.fit_seconds,
                   resumed=run.resumed, seconds=time.perf_counter() - t0)
    # what the report's time table shows as labelling minutes per image, measured here
    px = sum(math.prod(store.sem_array(i).shape) for i in summary["labelled"])
    store.update_meta(timings={**dict(store.meta.get("timings") or {}), "label": {
        "seconds": round(float(summary["seconds"]), 2), "images": len(summary["labelled"]),
        "megapixels": round(px / 1e6, 3)}})
    return summary
