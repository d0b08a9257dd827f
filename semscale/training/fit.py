"""Train one U-Net ensemble member, streamed from the store, with checkpoints and resume.

:func:`train_member` takes the training section (:class:`semscale.config.TrainingConfig`) whole. Windows come
from :class:`semscale.training.dataset.PatchDataset` (augmented on the fly, never overlapping a test tile),
the loss is sparse categorical cross-entropy that ignores label 255, the optimiser Adam. After every epoch
:class:`semscale.training.monitor.TrainingMonitor` scores the held-out tiles and checkpoints, so an
interrupted run resumes where it stopped. The best weights are finally exported as a float32 model with
:func:`semscale.training.unet.save_model`, with a sidecar holding the split, the settings and the metrics.

Files of member ``k`` of model ``<name>`` inside the store (:func:`semscale.store.models.member_paths`)::

    models/<name>/member_k.keras, member_k.json      the trained member + sidecar (read by `predict`)
    models/<name>/history/member_k.json              per-epoch loss and validation metrics
    models/<name>/checkpoints/member_k_last.keras    last epoch, with optimiser state (resume)
    models/<name>/checkpoints/member_k_best.weights.h5, member_k_state.json

Member ``k`` uses seed ``cfg.seed + k`` for its initial weights, dropout, window positions and
augmentations; the split is drawn with ``cfg.seed``, so all members share the held-out tiles.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from semscale import IGNORE_LABEL
from semscale._version import __version__
from semscale.config import TrainingConfig
from semscale.errors import ModelError
from semscale.store.layout import CampaignStore
from semscale.store.location import StorePath, local_copy
from semscale.store.models import member_file_name, member_paths
from semscale.training.splits import TileSplit, make_split

log = logging.getLogger(__name__)

__all__ = ["MemberRun", "on_gpu", "plan_member", "train_member"]


@dataclass
class MemberRun:
    """What training member ``member`` with section ``cfg`` will do, decided before any weights exist."""

    store: CampaignStore
    cfg: TrainingConfig
    member: int
    seed: int
    """The member's seed, ``cfg.seed + member``."""
    label: str
    classes: list[str]
    paths: dict[str, StorePath]
    split: TileSplit
    dataset: Any
    """The :class:`~semscale.training.dataset.PatchDataset` (a ``keras.utils.PyDataset``)."""
    gpu: bool
    policy: str
    """Keras dtype policy of the training: ``mixed_float16`` (GPU), ``mixed_bfloat16`` (CPU) or ``float32``."""
    fingerprint: dict[str, Any]
    """The settings a checkpoint or an exported member must match to be resumed or kept."""


@dataclass
class _Start:
    model: Any
    history: list[dict[str, Any]]
    best: dict[str, Any] | None
    epoch: int


# --- backend helpers -------------------------------------------------------------------------------------
def on_gpu() -> bool:
    """Whether the active Keras backend sees a GPU."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            return bool(tf.config.list_physical_devices("GPU"))
        if backend == "jax":
            import jax

            return any(d.platform == "gpu" for d in jax.devices())
        if backend == "torch":
            import torch

            return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover - broken driver set-ups
        return False
    return False


def _set_threads(threads: int | None) -> None:
    """Limit TensorFlow's CPU thread pools (only possible before TF runs its first op in this process)."""
    if not threads:
        return
    import keras

    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(min(2, int(threads)))
    except RuntimeError:
        log.debug("TensorFlow already initialised; thread limits unchanged")


def _compile(model: Any, cfg: TrainingConfig) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=cfg.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(ignore_class=IGNORE_LABEL),
        jit_compile=cfg.jit_compile,
    )


def _build(cfg: TrainingConfig, n_classes: int, seed: int, policy: str) -> Any:
    import keras

    from semscale.training.unet import build_unet

    old = keras.config.dtype_policy().name
    keras.config.set_dtype_policy(policy)
    try:
        return build_unet(n_classes=n_classes, filters=tuple(cfg.filters), dropout=tuple(cfg.dropout), seed=seed)
    finally:
        keras.config.set_dtype_policy(old)


# --- planning --------------------------------------------------------------------------------------------
def plan_member(store: CampaignStore, cfg: TrainingConfig, *, member: int,
                image_ids: Sequence[str] | None = None) -> MemberRun:
    """The split, the sampler, the precision and the settings fingerprint of member ``member``; trains nothing."""
    from semscale.training.dataset import PatchDataset

    paths = member_paths(store, cfg.name, member)
    split = make_split(store, cfg, image_ids=image_ids)
    dataset = PatchDataset(store, split, cfg, member=member)
    gpu = on_gpu()
    mixed = cfg.mixed_precision == "on" or (cfg.mixed_precision == "auto" and gpu)
    return MemberRun(
        store=store, cfg=cfg, member=int(member), seed=int(cfg.seed) + int(member),
        label=f"{cfg.name}/member_{member}", classes=list(store.classes), paths=paths, split=split,
        dataset=dataset, gpu=gpu, policy=("mixed_float16" if gpu else "mixed_bfloat16") if mixed else "float32",
        fingerprint=_fingerprint(cfg, member, split, dataset),
    )


def _fingerprint(cfg: TrainingConfig, member: int, split: TileSplit, dataset: Any) -> dict[str, Any]:
    """The settings that change what a member learns (``epochs`` aside: a finished member may be extended)."""
    from semscale.training.monitor import jsonable

    fingerprint = {
        "image_ids": list(split.train_images), "label_source": cfg.label_source, "patch_size": cfg.patch_size,
        "batch_size": cfg.batch_size, "steps_per_epoch": dataset.steps_per_epoch,
        "learning_rate": float(cfg.learning_rate), "filters": [int(f) for f in cfg.filters],
        "dropout": [float(r) for r in cfg.dropout], "augment": dataset.augment.to_dict(), "seed": int(cfg.seed),
        "member": int(member), "split": cfg.split, "test_tiles": split.to_dict()["test_tiles"],
        "rare_fraction": float(cfg.rare_fraction), "ignore_boundary_px": float(cfg.ignore_boundary_px),
        "monitor": cfg.monitor,
    }
    # Options recorded only when set, so members trained before they existed stay valid.
    if cfg.rare_threshold is not None:
        fingerprint["rare_threshold"] = float(cfg.rare_threshold)
    if cfg.lr_schedule != "constant":
        fingerprint["lr_schedule"] = cfg.lr_schedule
    if cfg.synthetic_fraction > 0:
        fingerprint["synthetic"] = {"fraction": float(cfg.synthetic_fraction), "images": int(cfg.synthetic_images),
                                    **({"levels": cfg.synthetic_levels} if cfg.synthetic_levels != "calibration" else {}),
                                    **({"zoom": [float(v) for v in cfg.synthetic_zoom]}
                                       if tuple(cfg.synthetic_zoom) != (1.0, 1.0) else {})}
    if cfg.init_weights is not None:
        from semscale.training.pretrain import init_weights_path
        from semscale.training.unet import content_hash

        fingerprint["init_weights"] = {"name": cfg.init_weights,
                                       "sha256": content_hash(init_weights_path(cfg.init_weights))}
    return dict(json.loads(json.dumps(fingerprint, default=jsonable)))


# --- one member ------------------------------------------------------------------------------------------
def train_member(
    store: CampaignStore,
    cfg: TrainingConfig,
    *,
    member: int,
    image_ids: Sequence[str] | None = None,
    resume: bool = True,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """Train member ``member`` of model ``cfg.name`` on the store's training images; return its sidecar.

    Every option comes from ``cfg``; its defaults follow the paper (256² px patches, batch 32, 250 epochs,
    Adam 1e-3, 140/1232 test tiles, 10 windows per training tile per epoch). ``image_ids`` defaults to the
    store's images with role ``train`` (or none, with labels). With ``resume`` a finished member with the
    same settings is returned as it is and an interrupted one continues from its last checkpoint (epoch,
    weights, optimiser); with ``resume=False`` training starts over. ``callbacks`` are extra Keras
    callbacks (e.g. a time budget).
    """

    from semscale.training.schedule import (
        EpochSeeds,
        Schedule,
        TimeEstimate,
        elapsed_seconds,
        stop_reason,
    )

    _set_threads(cfg.threads)
    run = plan_member(store, cfg, member=member, image_ids=image_ids)
    done = _finished(run) if resume else None
    if done is not None:
        return done
    start = _restore(run) if resume else None
    if start is None:
        start = _Start(_fresh_model(run), [], None, 0)
    run.dataset.set_epoch(start.epoch)
    monitor = _monitor(run, start)
    schedule = Schedule(cfg, monitor, label=run.label)
    # A run killed between its last epoch and the export stops where it stopped.
    schedule.stopped = stop_reason(cfg, history=start.history, best_epoch=(start.best or {}).get("epoch"))
    t0 = time.perf_counter()
    if start.epoch < cfg.epochs and schedule.stopped is None:
        estimate = TimeEstimate(cfg, label=run.label, members_left=max(1, cfg.ensemble - member), gpu=on_gpu(),
                                spent_s=elapsed_seconds(start.history))
        start.model.fit(run.dataset, epochs=cfg.epochs, initial_epoch=start.epoch, verbose=cfg.verbose,
                        callbacks=[monitor, schedule, estimate, EpochSeeds(run.seed), *callbacks])
    return _export(run, history=monitor.history, best=monitor.best, monitor=monitor.monitor,
                   seconds=time.perf_counter() - t0, stopped=schedule.stopped)


def _finished(run: MemberRun) -> dict[str, Any] | None:
    """The sidecar of an exported member with the same settings and enough epochs, else None."""
    from semscale.training.schedule import stop_reason

    paths = run.paths
    if paths["model"].is_file() and paths["sidecar"].is_file():
        side = json.loads(paths["sidecar"].read_text())
        if side.get("fingerprint") != run.fingerprint:
            return None
        if (side.get("class_offsets") or {}).get("setting") != _calibration_setting(run):
            return None  # resumed from the checkpoint: exported and calibrated again, not retrained
        done = side.get("epochs_trained", 0) >= run.cfg.epochs
        if not done and side.get("stopped") and paths["history"].is_file():
            # Stopped early (budget, patience): done unless the budget or patience now asks for more.
            history = json.loads(paths["history"].read_text())
            done = stop_reason(run.cfg, history=history, best_epoch=side.get("best_epoch")) is not None
        if done:
            log.info("%s already trained (%d epochs); skipping", run.label, side["epochs_trained"])
            return dict(side)
    return None


def _restore(run: MemberRun) -> _Start | None:
    """Model, history and best epoch from the last checkpoint (None without one); settings must match."""
    import keras

    paths = run.paths
    if not (paths["state"].is_file() and paths["last"].is_file()):
        return None
    state = json.loads(paths["state"].read_text())
    if state.get("fingerprint") != run.fingerprint:
        changed = sorted(k for k in run.fingerprint if state.get("fingerprint", {}).get(k) != run.fingerprint[k])
        raise ModelError(
            f"Expected the checkpoint of {run.label} in {paths['last'].parent} to match the requested "
            f"settings. Got differences in {changed}. Train with `resume=False` (CLI: --fresh) to "
            "start over, or use another model name."
        )
    if run.policy != "mixed_float16":  # float16's loss-scale wrapper is the one thing Keras does not restore
        with local_copy(paths["last"]) as last:
            model = keras.saving.load_model(last, compile=True, safe_mode=True)
        if run.cfg.jit_compile != "auto":
            model.jit_compile = run.cfg.jit_compile
    else:
        # Keras restores a mixed-precision model's optimizer without its loss-scale wrapper; recompile
        # (re-wrapping it) at the cost of restarting Adam's moment estimates.
        with local_copy(paths["last"]) as last:
            model = keras.saving.load_model(last, compile=False, safe_mode=True)
        _compile(model, run.cfg)
        log.warning("%s: mixed precision resume restarts the optimizer state (weights are restored)", run.label)
    start = _Start(model, list(state["history"]), state.get("best"), int(state["epoch"]))
    log.info("%s resumes from epoch %d (checkpoint %s)", run.label, start.epoch, paths["last"])
    return start


def _fresh_model(run: MemberRun) -> Any:
    """Delete the member's old files and build and compile a new network with the member's seed."""
    import keras

    for key in ("model", "sidecar", "last", "best", "state", "history"):
        run.paths[key].unlink(missing_ok=True)
    keras.utils.set_random_seed(run.seed)
    model = _build(run.cfg, len(run.classes), run.seed, run.policy)
    if run.cfg.init_weights is not None:
        from semscale.training.pretrain import load_init_weights

        log.info("%s starts from the weights of %s", run.label, load_init_weights(model, run.cfg.init_weights))
    _compile(model, run.cfg)
    return model


def _monitor(run: MemberRun, start: _Start) -> Any:
    """The per-epoch validation/checkpoint callback (monitoring the loss when there are no validation tiles)."""
    from semscale.training.monitor import TrainingMonitor
    from semscale.training.sampler import load_tiles

    cfg, split = run.cfg, run.split
    val_tiles = split.val_tiles()
    val = (load_tiles(run.store, val_tiles, label_source=cfg.label_source, patch_size=cfg.patch_size)
           if val_tiles else None)
    monitor = cfg.monitor
    if val is None and monitor != "loss":
        log.warning("%s: no validation tiles; the best checkpoint is chosen by training loss", run.label)
        monitor = "loss"
    log.info(
        "%s: %d training images, %d of %d tiles held out, %d steps × %d windows of %d² px per epoch, "
        "epochs %d..%d, %s, %s", run.label, len(split.train_images), split.n_test_tiles, split.n_tiles,
        run.dataset.steps_per_epoch, cfg.batch_size, cfg.patch_size, start.epoch + 1, cfg.epochs,
        "GPU" if run.gpu else "CPU", run.policy,
    )
    return TrainingMonitor(
        paths=run.paths, val=val, classes=run.classes, monitor=monitor, history=start.history, best=start.best,
        fingerprint=run.fingerprint, epochs=cfg.epochs, label=run.label,
        val_batch_size=max(1, min(cfg.batch_size, 16)),
    )


def _export(run: MemberRun, *, history: list[dict[str, Any]], best: dict[str, Any] | None, monitor: str,
            seconds: float, stopped: str | None) -> dict[str, Any]:
    """Save the best weights as a float32 model (portable to CPU inference) with its sidecar; return it."""
    from semscale.training.unet import save_model

    paths = run.paths
    final = _build(run.cfg, len(run.classes), run.seed, "float32")
    with local_copy(paths["best"] if paths["best"].is_file() else paths["last"]) as weights:
        final.load_weights(weights)
    best_row = next((r for r in history if best and r["epoch"] == best["epoch"]), history[-1])
    metrics = {k: v for k, v in best_row.items() if k.startswith("val_") or k == "loss"}
    sidecar = _sidecar(run, history=history, best=best, monitor=monitor, metrics=metrics, seconds=seconds,
                       stopped=stopped)
    if run.cfg.class_offsets == "synthetic":
        from semscale.training.calibrate import calibrate_member

        sidecar["class_offsets"] = calibrate_member(final, _calibration_windows(run), classes=run.classes,
                                                    label=run.label)
    save_model(final, paths["model"], sidecar=sidecar)
    log.info("%s done: best epoch %s, %s", run.label, sidecar["best_epoch"],
             ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    return dict(json.loads(paths["sidecar"].read_text()))


def _calibration_windows(run: MemberRun) -> Any:
    """The held-out simulated images the class offsets are fitted on (drawn like the training's)."""
    return run.dataset.synthetic.held_out(run.cfg.calibration_images)


def _calibration_setting(run: MemberRun) -> dict[str, Any] | None:
    """What the member's class offsets must have been fitted with (None: no offsets)."""
    if run.cfg.class_offsets == "none":
        return None
    from semscale.training.calibrate import calibration_setting

    return calibration_setting(_calibration_windows(run))


def _sidecar(run: MemberRun, *, history: list[dict[str, Any]], best: dict[str, Any] | None, monitor: str,
             metrics: dict[str, Any], seconds: float, stopped: str | None) -> dict[str, Any]:
    import keras

    from semscale.training.schedule import elapsed_seconds

    cfg = run.cfg
    return {
        "name": cfg.name,
        "member": run.member,
        "classes": run.classes,
        "patch_size": int(cfg.patch_size),
        "label_source": cfg.label_source,
        "seed": int(cfg.seed),
        "member_seed": run.seed,
        "training": {
            "batch_size": cfg.batch_size, "epochs": cfg.epochs, "steps_per_epoch": run.dataset.steps_per_epoch,
            "learning_rate": float(cfg.learning_rate), "lr_schedule": cfg.lr_schedule, "optimizer": "adam",
            "budget_min": cfg.budget_min, "patience": cfg.patience,
            "train_minutes": round(elapsed_seconds(history) / 60.0, 2),
            "loss": "sparse categorical cross-entropy, label 255 ignored", "monitor": monitor,
            "mixed_precision": run.policy, "device": "GPU" if run.gpu else "CPU",
            "keras_backend": keras.backend.backend(), "train_seconds_this_run": round(seconds, 1),
            "process": f"{socket.gethostname()}:{os.getpid()}",
        },
        "config": json.loads(json.dumps(dataclasses.asdict(cfg))),
        "sampler": run.dataset.describe(),
        "split": run.split.to_dict(),
        "metrics": metrics,
        "val_accuracy": metrics.get("val_accuracy"),
        "val_mean_iou": metrics.get("val_mean_iou"),
        "best_epoch": best["epoch"] if best else len(history),
        "epochs_trained": len(history),
        "stopped": stopped,
        "history": member_file_name(run.member, "history"),
        "fingerprint": run.fingerprint,
        "semscale_version": __version__,
        "complete": True,
    }
