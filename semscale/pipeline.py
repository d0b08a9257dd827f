"""Run a whole campaign from its config: ingest → label → train → predict → evaluate → stats.

Each stage reads and writes the one store and skips what is already complete, so a rerun after an
interruption continues where it stopped and an unchanged campaign is a fast no-op.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from semscale.config import CampaignConfig
from semscale.errors import StoreError

log = logging.getLogger(__name__)

__all__ = ["STAGES", "label", "predict", "run_campaign", "train", "write_demo_campaign"]

STAGES = ("ingest", "label", "train", "predict", "evaluate", "stats")


def label(config: CampaignConfig, store: Any, *, overwrite: bool = False, client: Any = None) -> dict[str, Any]:
    """EDS-guided target labels for every image with EDS maps and no target (the config's ``labelling``)."""
    from semscale.labelling import label_store

    lc = config.labelling
    # images with a ready-made target file keep it; the others get (or, with overwrite, redo) theirs
    ids = [e.id for e in config.images
           if e.has_eds and e.target is None and (overwrite or not store.has_labels(e.id, "target"))]
    scribbles = {e.id: e.scribbles for e in config.images if e.scribbles is not None and e.id in ids}
    if not ids:
        log.info("label: every image with EDS maps has a target")
        return {"labelled": [], "skipped": [e.id for e in config.images if e.has_eds]}
    return label_store(store, ids, overwrite=overwrite, sigmas=lc.sigmas, n_estimators=lc.n_estimators,
                       max_depth=lc.max_depth, max_seeds_per_class=lc.max_seeds_per_class,
                       refine_sigma=lc.refine_sigma, self_training=lc.self_training, seed=lc.seed,
                       scribbles=scribbles or None, n_jobs=lc.n_jobs, client=client)


def train(config: CampaignConfig, store: Any, *, client: Any = None, ensemble: int | None = None,
          epochs: int | None = None, steps_per_epoch: int | None = None,
          fresh: bool = False) -> list[dict[str, Any]]:
    """Train the config's model (``training``; ``ensemble`` members) on its ``role: train`` images."""
    from semscale.training.fit import train_ensemble

    tc = config.training
    ids = [e.id for e in config.images if e.role == "train" and store.has_labels(e.id, tc.label_source)]
    if not ids:
        raise StoreError(
            f"Expected `role: train` images with `{tc.label_source}` labels in {store.path}. Got none; run "
            "`semscale label CONFIG` (images with EDS maps) or give `target:` files."
        )
    if tc.split == "images":
        ids += [e.id for e in config.images if e.role == "test" and store.has_labels(e.id, tc.label_source)]
    return train_ensemble(
        store, members=ensemble or tc.ensemble, client=client, name=tc.name, image_ids=ids,
        label_source=tc.label_source, patch_size=tc.patch_size, batch_size=tc.batch_size,
        epochs=epochs or tc.epochs, steps_per_epoch=steps_per_epoch or tc.steps_per_epoch,
        learning_rate=tc.learning_rate, filters=tc.filters, dropout=tc.dropout, augment=tc.augment,
        seed=tc.seed, split=tc.split, test_tiles_fraction=tc.test_tiles_fraction,
        mixed_precision=tc.mixed_precision, resume=not fresh,
    )


def predict(config: CampaignConfig, store: Any, *, image_ids: Sequence[str] | None = None, client: Any = None,
            overwrite: bool = False) -> list[dict[str, Any]]:
    """Segment the campaign's images (default: all complete ones) with its model, as its ``inference``
    section says; override settings with ``dataclasses.replace(config, inference=...)``."""
    from semscale.inference import predict_to_store

    ids = list(image_ids) if image_ids else store.image_ids()
    return [predict_to_store(store, i, config.inference, models=config.model_name, overwrite=overwrite,
                             client=client) for i in ids]


def evaluate(config: CampaignConfig, store: Any) -> dict[str, Any]:
    """Score targets and predictions against ground truth (and predictions against targets) where present."""
    from semscale.analysis.metrics import evaluate_store

    out: dict[str, Any] = {}
    name = config.model_name
    has_truth = any("truth" in store.label_names(i) for i in store.image_ids())
    if has_truth:
        out["target_vs_truth"] = evaluate_store(store, pred=("labels", "target"), ref="truth")
    if name in store.prediction_models():
        if has_truth:
            out["model_vs_truth"] = evaluate_store(store, pred=("predictions", name), ref="truth")
        out["model_vs_target"] = evaluate_store(store, pred=("predictions", name), ref="target")
    return out


@contextlib.contextmanager
def _maybe_client(config: CampaignConfig, client: Any, cluster_kwargs: dict[str, Any] | None) -> Iterator[Any]:
    if client is not None:
        yield client
        return
    from semscale.runtime.cluster import get_client

    c = config.cluster
    kwargs = {"address": c.address, "n_workers": c.n_workers, "threads_per_worker": c.threads_per_worker,
              "memory_limit": c.memory_limit, "gpu": c.gpu}
    kwargs.update(cluster_kwargs or {})
    with get_client(**kwargs) as new_client:
        yield new_client


def run_campaign(
    config: CampaignConfig,
    *,
    stages: Sequence[str] = STAGES,
    client: Any = None,
    cluster_kwargs: dict[str, Any] | None = None,
    overwrite: bool = False,
    epochs: int | None = None,
    ensemble: int | None = None,
) -> dict[str, Any]:
    """Run ``stages`` of the campaign in pipeline order; returns a summary of each stage."""
    from semscale.io.ingest import ingest_campaign

    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"Expected stages among {STAGES}. Got {unknown}.")
    summary: dict[str, Any] = {}
    t0 = time.perf_counter()
    store = ingest_campaign(config) if "ingest" in stages else _open(config)
    summary["ingest"] = {"images": store.image_ids()}
    with _maybe_client(config, client, cluster_kwargs) as dask_client:
        if "label" in stages:
            summary["label"] = label(config, store, overwrite=overwrite, client=dask_client)
        if "train" in stages:
            # Members train in this process (one after another on CPU) unless the caller passed a cluster,
            # so TensorFlow does not compete with the labelling/prediction workers for the cores.
            sidecars = train(config, store, client=client, ensemble=ensemble, epochs=epochs)
            summary["train"] = [{k: s.get(k) for k in ("member", "val_accuracy", "val_mean_iou", "path")}
                                for s in sidecars]
        if "predict" in stages:
            summary["predict"] = predict(config, store, client=dask_client, overwrite=overwrite)
    if "evaluate" in stages:
        summary["evaluate"] = evaluate(config, store)
    if "stats" in stages and config.model_name in store.prediction_models():
        from semscale.analysis.stats import campaign_stats, write_stats

        ds = campaign_stats(store, model=config.model_name)
        summary["stats"] = write_stats(store, ds)
    summary["seconds"] = time.perf_counter() - t0
    return summary


def _open(config: CampaignConfig) -> Any:
    from semscale.store import open_store

    return open_store(config.store)


DEMO_TRAINING = {
    "filters": [8, 16, 32, 64], "dropout": [0.0, 0.1, 0.1, 0.2], "patch_size": 128, "batch_size": 8,
    "epochs": 16, "steps_per_epoch": 40, "learning_rate": 2e-3, "test_tiles_fraction": 0.1,
}
"""A small U-Net and a short schedule so the demo finishes in minutes on two CPU cores."""


def write_demo_campaign(out: str | Path, *, size: int = 512, seed: int = 0) -> CampaignConfig:
    """Simulate the embedded demo campaign (5 images, 0–120 min, 3 with EDS) and return its config.

    Reuses an existing demo folder (the simulator is deterministic, and every stage skips finished work).
    """
    import yaml

    from semscale.config import load_config
    from semscale.synth import write_campaign

    out = Path(out)
    path = out / "campaign.yaml"
    if not path.is_file():
        path = write_campaign(out, n_images=5, shape=(size, size), times=(0, 5, 20, 30, 120), seed=seed,
                              n_eds=3, name="semscale-demo")
        data = yaml.safe_load(path.read_text())
        data["training"] = {"name": "demo-unet", **DEMO_TRAINING, "seed": seed}
        data["inference"] = {"mode": "tile", "patch_size": 128}
        data["ingest"] = {"chunk_size": 256}
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_config(path)
