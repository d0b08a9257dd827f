"""Deep ensembles: the members of one model trained as Dask tasks (or one after another).

:func:`train_ensemble` trains members ``cfg.first_member .. cfg.first_member + cfg.ensemble - 1`` of model
``cfg.name`` with :func:`semscale.training.fit.train_member`. Member ``k`` uses seed ``cfg.seed + k``; all
members share the split drawn with ``cfg.seed``, so the held-out tiles are held out for the whole ensemble.
A task carries the store's path and the (small, frozen) training section, never a model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

from semscale.config import TrainingConfig
from semscale.store.layout import CampaignStore
from semscale.training.fit import train_member

log = logging.getLogger(__name__)

__all__ = ["train_ensemble"]


def _train_member_task(store_path: str, cfg: TrainingConfig, member: int, image_ids: list[str] | None,
                       resume: bool) -> dict[str, Any]:
    """Dask task: open the store by path and train one member (the model is never pickled)."""
    from semscale.store import open_store

    return train_member(open_store(store_path, mode="r+"), cfg, member=member, image_ids=image_ids,
                        resume=resume)


def _gpu_resources(client: Any) -> dict[str, float] | None:
    """``{"GPU": 1}`` when the cluster's workers declare a ``GPU`` resource, else None."""
    workers = client.scheduler_info().get("workers", {})
    if any("GPU" in (w.get("resources") or {}) for w in workers.values()):
        return {"GPU": 1}
    return None


def train_ensemble(
    store: CampaignStore,
    cfg: TrainingConfig,
    *,
    image_ids: Sequence[str] | None = None,
    client: Any = None,
    resume: bool = True,
) -> list[dict[str, Any]]:
    """Train the ``cfg.ensemble`` members of model ``cfg.name``; return their sidecars in member order.

    With a Dask ``client`` each member is one task (``pure=False``), run in parallel on the cluster's
    workers: on a GPU cluster (e.g. ``LocalCUDACluster``, one worker per GPU with one thread) one member per
    GPU — workers that declare a ``GPU`` resource get ``resources={"GPU": 1}``; on CPU use one-thread
    worker processes (``LocalCluster(processes=True, threads_per_worker=1)``, ``cfg.threads = 1``), one
    member per worker. A failed task is retried (``cfg.retries``) and resumes from its checkpoint. Without a
    client the members train one after another in this process. ``image_ids`` and ``resume`` are those of
    :func:`~semscale.training.fit.train_member`.
    """
    ids = list(range(cfg.first_member, cfg.first_member + cfg.ensemble))
    train_ids = None if image_ids is None else list(image_ids)
    store.model_dir(cfg.name, create=True)  # create the group once, before tasks write into it
    store.set_model_attrs(cfg.name, members=cfg.ensemble, image_ids=train_ids,
                          training=json.loads(json.dumps(dataclasses.asdict(cfg))))
    if client is None:
        return [train_member(store, cfg, member=k, image_ids=train_ids, resume=resume) for k in ids]
    futures = [
        client.submit(_train_member_task, str(store.path), cfg, k, train_ids, resume, pure=False,
                      retries=cfg.retries, resources=_gpu_resources(client),
                      key=f"train-{cfg.name}-member_{k}-{os.urandom(4).hex()}")
        for k in ids
    ]
    log.info("submitted %d ensemble members of %s to %s", len(ids), cfg.name, client)
    from distributed import as_completed

    from semscale.runtime.progress import progress

    results: dict[int, dict[str, Any]] = {}
    for fut in progress(as_completed(futures), total=len(futures), description=f"training {cfg.name}"):
        side = fut.result()
        results[int(side["member"])] = side
        log.info("member %d finished: val accuracy %s, val mean IoU %s", side["member"],
                 side.get("val_accuracy"), side.get("val_mean_iou"))
    return [results[k] for k in ids]
