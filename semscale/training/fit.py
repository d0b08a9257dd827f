"""U-Net training streamed from the store, with checkpoints, resume and deep ensembles on Dask.

:func:`train_model` trains one ensemble member: windows come from :class:`semscale.training.sampler.PatchDataset`
(augmented on the fly, never overlapping a test tile), the loss is sparse categorical cross-entropy that
ignores label 255, the optimiser Adam. After every epoch a callback scores the held-out tiles (accuracy,
mean IoU and per-class IoU from one confusion matrix, :mod:`semscale.analysis.metrics`), logs one line, saves the
last checkpoint (model + optimiser state), the best weights (by ``monitor``) and the history JSON, so an
interrupted run resumes where it stopped. The best weights are finally exported as a float32 model with
:func:`semscale.training.unet.save_model`, with a sidecar holding the split, the settings and the metrics.

Files of member ``k`` of model ``<name>`` inside the store::

    models/<name>/member_k.keras, member_k.json      the trained member + sidecar (read by `predict`)
    models/<name>/history/member_k.json              per-epoch loss and validation metrics
    models/<name>/checkpoints/member_k_last.keras    last epoch, with optimiser state (resume)
    models/<name>/checkpoints/member_k_best.weights.h5, member_k_state.json

:func:`train_ensemble` trains M members as M Dask tasks (``pure=False``): member ``k`` uses seed
``seed + k`` for its initial weights, dropout, window positions and augmentations, while all members share
the split drawn with ``seed``, so the held-out tiles are held out for the whole ensemble.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from semscale import IGNORE_LABEL
from semscale._version import __version__
from semscale.errors import ConfigError, ModelError
from semscale.training.sampler import (
    PAPER_TEST_FRACTION,
    Augment,
    TileSplit,
    load_tiles,
    make_split,
)
from semscale.training.unet import DEFAULT_DROPOUT, DEFAULT_FILTERS

log = logging.getLogger(__name__)

__all__ = [
    "evaluate_tiles", "format_models", "list_models", "member_paths", "on_gpu", "train_ensemble", "train_model",
]

MONITORS = {"val_mean_iou": "max", "val_accuracy": "max", "loss": "min"}


# --- helpers -------------------------------------------------------------------------------------------
def member_paths(store: Any, name: str, member: int) -> dict[str, Path]:
    """Where member ``member`` of model ``name`` and its training files live in the store."""
    store.model_dir(name, create=True)
    return {kind: store.member_file(name, member, kind)
            for kind in ("model", "sidecar", "history", "last", "best", "state")}


def _as_store(store: Any) -> Any:
    if isinstance(store, str | os.PathLike):
        from semscale.store import open_store

        return open_store(store, mode="r+")
    return store


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_jsonable))
    os.replace(tmp, path)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple | set):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


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


def _compile(model: Any, learning_rate: float, jit_compile: bool | str = "auto") -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(ignore_class=IGNORE_LABEL),
        jit_compile=jit_compile,
    )


def _build(filters: Sequence[int], dropout: Sequence[float], n_classes: int, seed: int,
           policy: str) -> Any:
    import keras

    from semscale.training.unet import build_unet

    old = keras.config.dtype_policy().name
    keras.config.set_dtype_policy(policy)
    try:
        return build_unet(n_classes=n_classes, filters=tuple(filters), dropout=tuple(dropout), seed=seed)
    finally:
        keras.config.set_dtype_policy(old)


def evaluate_tiles(model: Any, x: np.ndarray, y: np.ndarray, *, classes: Sequence[str],
                   batch_size: int = 8) -> dict[str, Any]:
    """Accuracy, mean IoU and per-class IoU of ``model`` on tiles ``x`` (N, P, P, 1) vs labels ``y``."""
    import keras

    from semscale.analysis.metrics import confusion_matrix, scores_from_confusion

    k = len(classes)
    cm = np.zeros((k, k), np.int64)
    for i in range(0, len(x), batch_size):
        prob = model.predict_on_batch(x[i : i + batch_size])
        pred = np.argmax(keras.ops.convert_to_numpy(prob), axis=-1).astype(np.uint8)
        cm += confusion_matrix(y[i : i + batch_size], pred, n_classes=k)
    return scores_from_confusion(cm, classes=classes)


def _monitor_callback_class() -> type:
    import keras

    class TrainingMonitor(keras.callbacks.Callback):
        """Per epoch: score the validation tiles, log a line, checkpoint (last + best), write the history."""

        def __init__(self, *, paths: dict[str, Path], val: tuple[np.ndarray, np.ndarray] | None,
                     classes: Sequence[str], monitor: str, history: list[dict[str, Any]],
                     best: dict[str, Any] | None, fingerprint: dict[str, Any], epochs: int, label: str,
                     val_batch_size: int) -> None:
            super().__init__()
            self.paths, self.val, self.classes = paths, val, list(classes)
            self.monitor, self.mode = monitor, MONITORS[monitor]
            self.history, self.best = history, best
            self.fingerprint, self.epochs, self.label = fingerprint, epochs, label
            self.val_batch_size = val_batch_size
            self._t0 = time.perf_counter()

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            logs = logs if logs is not None else {}
            row: dict[str, Any] = {"epoch": epoch + 1, "loss": float(logs.get("loss", math.nan))}
            if self.val is not None:
                s = evaluate_tiles(self.model, *self.val, classes=self.classes, batch_size=self.val_batch_size)
                row["val_accuracy"] = s["accuracy"]
                row["val_mean_iou"] = s["mean_iou"]
                for c in self.classes:
                    row[f"val_iou_{c}"] = s["per_class"][c]["iou"]
                logs.update({k: v for k, v in row.items() if k.startswith("val_")})
            row["seconds"] = round(time.perf_counter() - self._t0, 3)
            self.history.append(row)
            value = row.get(self.monitor)
            improved = value is not None and (
                self.best is None
                or (value > self.best["value"] if self.mode == "max" else value < self.best["value"])
            )
            if improved:
                self.best = {"epoch": epoch + 1, "value": float(value), "monitor": self.monitor}
                self.paths["best"].parent.mkdir(parents=True, exist_ok=True)
                tmp = self.paths["best"].with_name("tmp_" + self.paths["best"].name)
                self.model.save_weights(tmp)
                os.replace(tmp, self.paths["best"])
            tmp = self.paths["last"].with_name("tmp_" + self.paths["last"].name)
            self.model.save(tmp)
            os.replace(tmp, self.paths["last"])
            _write_json(self.paths["history"], self.history)
            _write_json(self.paths["state"], {
                "epoch": epoch + 1, "best": self.best, "history": self.history,
                "fingerprint": self.fingerprint,
            })
            msg = f"{self.label} epoch {epoch + 1}/{self.epochs}: loss {row['loss']:.4f}"
            if "val_accuracy" in row:
                msg += f", val accuracy {row['val_accuracy']:.4f}, val mean IoU {row['val_mean_iou']:.4f}"
            log.info("%s%s (%.1f s)", msg, " *" if improved else "", row["seconds"])

    return TrainingMonitor


# --- one member -----------------------------------------------------------------------------------------
def train_model(
    store: Any,
    *,
    image_ids: Sequence[str] | None = None,
    label_source: str = "target",
    name: str = "unet",
    member: int = 0,
    patch_size: int = 256,
    batch_size: int = 32,
    epochs: int = 250,
    steps_per_epoch: int | None = None,
    learning_rate: float = 1e-3,
    filters: Sequence[int] = DEFAULT_FILTERS,
    dropout: Sequence[float] = DEFAULT_DROPOUT,
    augment: bool | Mapping[str, Any] | Augment = True,
    seed: int = 0,
    split: str = "tiles",
    test_tiles_fraction: float = PAPER_TEST_FRACTION,
    n_test_tiles: int | None = None,
    rare_fraction: float = 0.3,
    ignore_boundary_px: float = 0.0,
    monitor: str = "val_mean_iou",
    mixed_precision: str = "auto",
    resume: bool = True,
    workers: int = 2,
    use_multiprocessing: bool = False,
    threads: int | None = None,
    jit_compile: bool | str = "auto",
    callbacks: Sequence[Any] = (),
    verbose: int = 0,
) -> dict[str, Any]:
    """Train member ``member`` of model ``name`` on the store's training images; return its sidecar.

    ``store`` is a :class:`~semscale.store.CampaignStore` or its path. Defaults follow the paper: 256² px
    patches, batch 32, 250 epochs, Adam 1e-3, 140/1232 test tiles; ``steps_per_epoch=None`` draws 10
    windows per training tile per epoch (the paper's 10 augmented patches per tile). The member's seed is
    ``seed + member``; the split is drawn with ``seed`` (shared by all members). ``split="images"`` holds
    out no tiles and validates on the ``role: test`` images instead. ``mixed_precision`` ``"auto"`` uses
    float16 compute only on a GPU. With ``resume`` a finished member with the same settings is returned
    as it is and an interrupted one continues from its last checkpoint (epoch, weights, optimiser); with
    ``resume=False`` training starts over. ``threads`` caps TensorFlow's CPU threads (for Dask workers); ``jit_compile``
    is Keras' XLA switch (``"auto"``: XLA where the backend supports it; ``False`` starts faster).
    """
    import keras

    _set_threads(threads)
    store = _as_store(store)
    if monitor not in MONITORS:
        raise ConfigError(f"Expected one of {sorted(MONITORS)} for `monitor`. Got {monitor!r}.")
    if mixed_precision not in ("auto", "on", "off"):
        raise ConfigError(f"Expected 'auto', 'on' or 'off' for `mixed_precision`. Got {mixed_precision!r}.")
    depth = len(filters) - 1
    if patch_size % 2**depth:
        raise ConfigError(
            f"Expected a multiple of {2**depth} (2**poolings) for `patch_size`. Got {patch_size}."
        )
    if epochs < 1 or batch_size < 1:
        raise ConfigError(f"Expected `epochs` and `batch_size` >= 1. Got {epochs} and {batch_size}.")
    member_seed = int(seed) + int(member)
    classes = list(store.classes)
    paths = member_paths(store, name, member)
    label = f"{name}/member_{member}"

    tile_split: TileSplit = make_split(
        store, image_ids=image_ids, label_source=label_source, patch_size=patch_size, kind=split,
        test_fraction=test_tiles_fraction, n_test_tiles=n_test_tiles, seed=seed,
    )
    from semscale.training.sampler import PatchDataset

    dataset = PatchDataset(
        store, tile_split, label_source=label_source, batch_size=batch_size,
        steps_per_epoch=steps_per_epoch, augment=augment, seed=member_seed, rare_fraction=rare_fraction,
        ignore_boundary_px=ignore_boundary_px, workers=workers, use_multiprocessing=use_multiprocessing,
    )
    gpu = on_gpu()
    mp = mixed_precision == "on" or (mixed_precision == "auto" and gpu)
    policy = "mixed_float16" if mp else "float32"
    fingerprint = {
        "image_ids": list(tile_split.train_images), "label_source": label_source, "patch_size": patch_size,
        "batch_size": batch_size, "steps_per_epoch": dataset.steps_per_epoch,
        "learning_rate": float(learning_rate), "filters": [int(f) for f in filters],
        "dropout": [float(r) for r in dropout], "augment": dataset.augment.to_dict(), "seed": int(seed),
        "member": int(member), "split": split, "test_tiles": tile_split.to_dict()["test_tiles"],
        "rare_fraction": float(rare_fraction), "ignore_boundary_px": float(ignore_boundary_px),
        "monitor": monitor,
    }
    fingerprint = json.loads(json.dumps(fingerprint, default=_jsonable))

    # Already done?
    if resume and paths["model"].is_file() and paths["sidecar"].is_file():
        side = json.loads(paths["sidecar"].read_text())
        if side.get("fingerprint") == fingerprint and side.get("epochs_trained", 0) >= epochs:
            log.info("%s already trained (%d epochs); skipping", label, side["epochs_trained"])
            return side

    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    initial_epoch = 0
    model = None
    if resume and paths["state"].is_file() and paths["last"].is_file():
        state = json.loads(paths["state"].read_text())
        if state.get("fingerprint") != fingerprint:
            changed = sorted(k for k in fingerprint if state.get("fingerprint", {}).get(k) != fingerprint[k])
            raise ModelError(
                f"Expected the checkpoint of {label} in {paths['last'].parent} to match the requested "
                f"settings. Got differences in {changed}. Train with `resume=False` (CLI: --restart) to "
                "start over, or use another model name."
            )
        if policy == "float32":
            model = keras.saving.load_model(paths["last"], compile=True, safe_mode=True)
            if jit_compile != "auto":
                model.jit_compile = jit_compile
        else:
            # Keras restores a mixed-precision model's optimizer without its loss-scale wrapper; recompile
            # (re-wrapping it) at the cost of restarting Adam's moment estimates.
            model = keras.saving.load_model(paths["last"], compile=False, safe_mode=True)
            _compile(model, learning_rate, jit_compile)
            log.warning("%s: mixed precision resume restarts the optimizer state (weights are restored)", label)
        initial_epoch = int(state["epoch"])
        history = list(state["history"])
        best = state.get("best")
        log.info("%s resumes from epoch %d (checkpoint %s)", label, initial_epoch, paths["last"])
    if model is None:
        for key in ("model", "sidecar", "last", "best", "state", "history"):
            paths[key].unlink(missing_ok=True)
        keras.utils.set_random_seed(member_seed)
        model = _build(filters, dropout, len(classes), member_seed, policy)
        _compile(model, learning_rate, jit_compile)
    else:
        keras.utils.set_random_seed(member_seed + 7919 * initial_epoch)
    dataset.set_epoch(initial_epoch)

    val_tiles = tile_split.val_tiles()
    val = (load_tiles(store, val_tiles, label_source=label_source, patch_size=patch_size)
           if val_tiles else None)
    if val is None and monitor != "loss":
        log.warning("%s: no validation tiles; the best checkpoint is chosen by training loss", label)
        monitor = "loss"
    log.info(
        "%s: %d training images, %d of %d tiles held out, %d steps × %d windows of %d² px per epoch, "
        "epochs %d..%d, %s, %s", label, len(tile_split.train_images), tile_split.n_test_tiles,
        tile_split.n_tiles, dataset.steps_per_epoch, batch_size, patch_size, initial_epoch + 1, epochs,
        "GPU" if gpu else "CPU", policy,
    )
    cb = _monitor_callback_class()(
        paths=paths, val=val, classes=classes, monitor=monitor, history=history, best=best,
        fingerprint=fingerprint, epochs=epochs, label=label, val_batch_size=max(1, min(batch_size, 16)),
    )
    t0 = time.perf_counter()
    if initial_epoch < epochs:
        model.fit(dataset, epochs=epochs, initial_epoch=initial_epoch, verbose=verbose,
                  callbacks=[cb, *callbacks])
    seconds = time.perf_counter() - t0
    best = cb.best

    # Export the best weights as a float32 model (portable to CPU inference) with its sidecar.
    final = _build(filters, dropout, len(classes), member_seed, "float32")
    final.load_weights(paths["best"] if paths["best"].is_file() else paths["last"])
    best_row = next((r for r in history if best and r["epoch"] == best["epoch"]), history[-1])
    metrics = {k: v for k, v in best_row.items() if k.startswith("val_") or k == "loss"}
    from semscale.training.unet import save_model

    sidecar = {
        "name": name,
        "member": int(member),
        "classes": classes,
        "patch_size": int(patch_size),
        "label_source": label_source,
        "seed": int(seed),
        "member_seed": member_seed,
        "training": {
            "batch_size": batch_size, "epochs": epochs, "steps_per_epoch": dataset.steps_per_epoch,
            "learning_rate": float(learning_rate), "optimizer": "adam",
            "loss": "sparse categorical cross-entropy, label 255 ignored", "monitor": monitor,
            "mixed_precision": policy, "device": "GPU" if gpu else "CPU",
            "keras_backend": keras.backend.backend(), "train_seconds_this_run": round(seconds, 1),
            "process": f"{socket.gethostname()}:{os.getpid()}",
        },
        "sampler": dataset.describe(),
        "split": tile_split.to_dict(),
        "metrics": metrics,
        "val_accuracy": metrics.get("val_accuracy"),
        "val_mean_iou": metrics.get("val_mean_iou"),
        "best_epoch": best["epoch"] if best else len(history),
        "epochs_trained": len(history),
        "history": str(paths["history"].relative_to(paths["model"].parent)),
        "fingerprint": fingerprint,
        "semscale_version": __version__,
        "complete": True,
    }
    save_model(final, paths["model"], sidecar=sidecar)
    log.info("%s done: best epoch %s, %s", label, sidecar["best_epoch"],
             ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    return json.loads(paths["sidecar"].read_text())


# --- ensembles ------------------------------------------------------------------------------------------
def _train_member_task(store_path: str, member: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Dask task: open the store by path and train one member (the model is never pickled)."""
    return train_model(store_path, member=member, **kwargs)


def _gpu_resources(client: Any) -> dict[str, float] | None:
    """``{"GPU": 1}`` when the cluster's workers declare a ``GPU`` resource, else None."""
    workers = client.scheduler_info().get("workers", {})
    if any("GPU" in (w.get("resources") or {}) for w in workers.values()):
        return {"GPU": 1}
    return None


def train_ensemble(
    store: Any,
    *,
    members: int = 10,
    client: Any = None,
    name: str = "unet",
    first_member: int = 0,
    threads_per_member: int | None = None,
    retries: int = 1,
    **train_kwargs: Any,
) -> list[dict[str, Any]]:
    """Train ``members`` ensemble members (``member_0..``) and return their sidecars, in member order.

    With a Dask ``client`` each member is one task (``pure=False``), run in parallel on the cluster's
    workers: on a GPU cluster (e.g. ``LocalCUDACluster``, one worker per GPU with one thread) one member per
    GPU — workers that declare a ``GPU`` resource get ``resources={"GPU": 1}``; on CPU use one-thread
    worker processes (``LocalCluster(processes=True, threads_per_worker=1)``), one member per worker.
    A failed task is retried (``retries``) and resumes from its checkpoint. Without a client the members
    train one after another in this process. ``train_kwargs`` go to :func:`train_model`.
    """
    if members < 1:
        raise ConfigError(f"Expected an integer >= 1 for `members`. Got {members}.")
    store = _as_store(store)
    store.model_dir(name, create=True)  # create the group once, before tasks write into it
    _write_models_attrs(store, name, members=members, settings=train_kwargs)
    ids = list(range(first_member, first_member + members))
    if client is None:
        return [train_model(store, name=name, member=k, threads=threads_per_member, **train_kwargs)
                for k in ids]
    resources = _gpu_resources(client)
    kw = {**train_kwargs, "name": name, "threads": threads_per_member}
    futures = [
        client.submit(_train_member_task, str(store.path), k, kw, pure=False, retries=retries,
                      resources=resources, key=f"train-{name}-member_{k}-{os.urandom(4).hex()}")
        for k in ids
    ]
    log.info("submitted %d ensemble members of %s to %s", members, name, client)
    from distributed import as_completed

    from semscale.runtime.progress import progress

    results: dict[int, dict[str, Any]] = {}
    for fut in progress(as_completed(futures), total=len(futures), description=f"training {name}"):
        side = fut.result()
        results[int(side["member"])] = side
        log.info("member %d finished: val accuracy %s, val mean IoU %s", side["member"],
                 side.get("val_accuracy"), side.get("val_mean_iou"))
    return [results[k] for k in ids]


def _write_models_attrs(store: Any, name: str, **values: Any) -> None:
    try:
        g = store.root[f"models/{name}"]
        meta = dict(g.attrs.get("semscale", {}))
        meta.update(json.loads(json.dumps(values, default=_jsonable_loose)))
        g.attrs["semscale"] = meta
    except Exception as exc:  # attrs are informative only
        log.debug("could not write models attrs: %s", exc)


def _jsonable_loose(obj: Any) -> Any:
    try:
        return _jsonable(obj)
    except TypeError:
        return repr(obj)


# --- listing ---------------------------------------------------------------------------------------------
def list_models(store: Any) -> list[dict[str, Any]]:
    """The store's models with their members and metrics (for ``semscale models STORE``).

    One dict per model: ``name``, ``n_members``, mean ``val_accuracy`` / ``val_mean_iou`` over members,
    ``patch_size``, ``label_source``, ``filters``, ``train_images``, ``in_progress`` (members with a
    checkpoint but no exported model yet) and ``members`` (one dict each: ``member``, ``path``,
    ``val_accuracy``, ``val_mean_iou``, ``best_epoch``, ``epochs_trained``, ``seed``).
    """
    from semscale.training.unet import read_sidecar

    if isinstance(store, str | os.PathLike):
        from semscale.store import open_store

        store = open_store(store, mode="r")
    out = []
    for name in store.model_names():
        d = store.path / "models" / name
        members = []
        for f in sorted(d.glob("member_*.keras")):
            stem = f.stem
            if not stem.removeprefix("member_").isdigit():
                continue  # temporary files of a save in progress
            try:
                side = read_sidecar(f)
            except ModelError as exc:
                log.warning("skipping %s: %s", f, exc)
                continue
            members.append({
                "member": int(side.get("member", stem.removeprefix("member_"))),
                "path": str(f),
                "val_accuracy": side.get("val_accuracy"),
                "val_mean_iou": side.get("val_mean_iou"),
                "best_epoch": side.get("best_epoch"),
                "epochs_trained": side.get("epochs_trained"),
                "seed": side.get("member_seed", side.get("seed")),
                "sidecar": side,
            })
        members.sort(key=lambda m: m["member"])
        done = {m["member"] for m in members}
        in_progress = sorted(
            int(p.name.split("_")[1]) for p in (d / "checkpoints").glob("member_*_state.json")
            if p.name.split("_")[1].isdigit() and int(p.name.split("_")[1]) not in done
        ) if (d / "checkpoints").is_dir() else []

        def mean(key: str, members: list[dict[str, Any]] = members) -> float | None:
            vals = [m[key] for m in members if isinstance(m.get(key), int | float)]
            return float(np.mean(vals)) if vals else None

        first = members[0]["sidecar"] if members else {}
        out.append({
            "name": name,
            "n_members": len(members),
            "val_accuracy": mean("val_accuracy"),
            "val_mean_iou": mean("val_mean_iou"),
            "patch_size": first.get("patch_size"),
            "label_source": first.get("label_source"),
            "filters": first.get("filters"),
            "train_images": first.get("split", {}).get("train_images"),
            "in_progress": in_progress,
            "members": [{k: v for k, v in m.items() if k != "sidecar"} for m in members],
        })
    return out


def format_models(models: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table of :func:`list_models` output (one line per member, a summary per model)."""
    if not models:
        return "no models"

    def f(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else ("-" if v is None else str(v))

    lines = [f"{'model':<16} {'member':>6} {'val acc':>8} {'val mIoU':>8} {'best ep':>7} {'epochs':>6}"]
    for m in models:
        for mem in m["members"]:
            lines.append(f"{m['name']:<16} {mem['member']:>6} {f(mem['val_accuracy']):>8} "
                         f"{f(mem['val_mean_iou']):>8} {f(mem['best_epoch']):>7} {f(mem['epochs_trained']):>6}")
        extra = f"  (in progress: {m['in_progress']})" if m["in_progress"] else ""
        lines.append(f"{m['name']:<16} {'mean':>6} {f(m['val_accuracy']):>8} {f(m['val_mean_iou']):>8}"
                     f"   {m['n_members']} member(s), patch {f(m['patch_size'])}, labels "
                     f"{f(m['label_source'])}{extra}")
    return "\n".join(lines)
