"""Per-epoch validation and checkpoints of one training member (a Keras callback).

After every epoch :class:`TrainingMonitor` scores the held-out tiles (accuracy, mean IoU and per-class IoU
from one confusion matrix, :mod:`semscale.analysis.metrics`), logs one line, saves the last checkpoint
(model + optimiser state), the best weights (by the monitored value) and the history JSON, so an interrupted
run resumes where it stopped. Imports Keras at its top: :mod:`semscale.training.fit` imports it lazily.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
from upath import UPath

from semscale.store.location import StorePath, writing

log = logging.getLogger(__name__)

__all__ = ["MONITORS", "TrainingMonitor", "evaluate_tiles", "write_json"]

MONITORS = {"val_mean_iou": "max", "val_accuracy": "max", "loss": "min"}
"""What may choose the best epoch, and whether larger (``max``) or smaller (``min``) is better."""


def evaluate_tiles(model: Any, x: np.ndarray, y: np.ndarray, *, classes: Sequence[str],
                   batch_size: int = 8) -> dict[str, Any]:
    """Accuracy, mean IoU and per-class IoU of ``model`` on tiles ``x`` (N, P, P, 1) vs labels ``y``."""
    from semscale.analysis.metrics import confusion_matrix, scores_from_confusion

    k = len(classes)
    cm = np.zeros((k, k), np.int64)
    for i in range(0, len(x), batch_size):
        prob = model.predict_on_batch(x[i : i + batch_size])
        pred = np.argmax(keras.ops.convert_to_numpy(prob), axis=-1).astype(np.uint8)
        cm += confusion_matrix(y[i : i + batch_size], pred, n_classes=k)
    return scores_from_confusion(cm, classes=classes)


def write_json(path: StorePath, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (numpy scalars, tuples and paths allowed)."""
    with writing(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=jsonable))


def jsonable(obj: Any) -> Any:
    """``json.dumps`` fallback for numpy scalars, tuples, sets and paths."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple | set):
        return list(obj)
    if isinstance(obj, Path | UPath):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class TrainingMonitor(keras.callbacks.Callback):
    """Per epoch: score the validation tiles, log a line, checkpoint (last + best), write the history.

    ``paths`` are the member's files (:func:`semscale.store.models.member_paths`); ``history`` and ``best``
    continue a resumed run; ``fingerprint`` (the settings) is saved with the state for the resume check.
    """

    def __init__(self, *, paths: dict[str, StorePath], val: tuple[np.ndarray, np.ndarray] | None,
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
        improved = self._improved(row.get(self.monitor))
        if improved:
            self.best = {"epoch": epoch + 1, "value": float(row[self.monitor]), "monitor": self.monitor}
        self._checkpoint(epoch, improved)
        msg = f"{self.label} epoch {epoch + 1}/{self.epochs}: loss {row['loss']:.4f}"
        if "val_accuracy" in row:
            msg += f", val accuracy {row['val_accuracy']:.4f}, val mean IoU {row['val_mean_iou']:.4f}"
        log.info("%s%s (%.1f s)", msg, " *" if improved else "", row["seconds"])

    def _improved(self, value: float | None) -> bool:
        if value is None:
            return False
        if self.best is None:
            return True
        return bool(value > self.best["value"] if self.mode == "max" else value < self.best["value"])

    def _checkpoint(self, epoch: int, improved: bool) -> None:
        """Best weights (when improved), the last model with optimiser state, the history and the state."""
        if improved:
            with writing(self.paths["best"]) as tmp:
                self.model.save_weights(tmp)
        with writing(self.paths["last"]) as tmp:
            self.model.save(tmp)
        write_json(self.paths["history"], self.history)
        write_json(self.paths["state"], {
            "epoch": epoch + 1, "best": self.best, "history": self.history, "fingerprint": self.fingerprint,
        })
