"""The training schedule of one member: learning rate per epoch, time budget and early stopping.

Pure functions of the training section and the run's history (so a resumed run continues the same schedule),
plus :class:`Schedule`, the Keras callback that applies them (this module imports Keras at its top:
:mod:`semscale.training.fit` imports it lazily). ``history`` rows are those of
:class:`semscale.training.monitor.TrainingMonitor`; their ``seconds`` (wall time of each epoch, validation
included) sum to the elapsed training time the budget counts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import keras

from semscale.config import TrainingConfig

log = logging.getLogger(__name__)

__all__ = ["LR_FLOOR", "Schedule", "elapsed_seconds", "learning_rate", "progress", "stop_reason"]

LR_FLOOR = 0.02
"""The cosine schedule ends at this fraction of ``learning_rate``."""


def elapsed_seconds(history: Sequence[dict[str, Any]]) -> float:
    """Training time (s) of the epochs in ``history``."""
    return float(sum(float(r.get("seconds", 0.0)) for r in history))


def progress(cfg: TrainingConfig, *, epoch: int, elapsed_s: float) -> float:
    """Share of the run done before epoch ``epoch`` (0-based): the larger of epochs and budget used, ≤ 1."""
    done = epoch / cfg.epochs
    if cfg.budget_min is not None:
        done = max(done, elapsed_s / (60.0 * cfg.budget_min))
    return min(1.0, done)


def learning_rate(cfg: TrainingConfig, *, epoch: int, elapsed_s: float) -> float:
    """Learning rate of epoch ``epoch`` (0-based) after ``elapsed_s`` seconds of training."""
    if cfg.lr_schedule == "constant":
        return float(cfg.learning_rate)
    p = progress(cfg, epoch=epoch, elapsed_s=elapsed_s)
    return float(cfg.learning_rate * (LR_FLOOR + (1.0 - LR_FLOOR) * 0.5 * (1.0 + math.cos(math.pi * p))))


def stop_reason(cfg: TrainingConfig, *, history: Sequence[dict[str, Any]],
                best_epoch: int | None) -> str | None:
    """``"budget"`` when one more epoch (as long as the mean one so far) would run past ``budget_min``,
    ``"patience"`` after ``patience`` epochs without a better monitored value, else None."""
    if not history:
        return None
    if cfg.budget_min is not None:
        spent = elapsed_seconds(history)
        if spent + spent / len(history) > 60.0 * cfg.budget_min:
            return "budget"
    if cfg.patience is not None and best_epoch is not None and len(history) - best_epoch >= cfg.patience:
        return "patience"
    return None


class Schedule(keras.callbacks.Callback):
    """Sets the optimiser's learning rate before each epoch and stops training by budget or patience.

    Reads the monitor's ``history`` and ``best`` (list after it in ``callbacks``); ``stopped`` holds the
    reason training ended early, or None.
    """

    def __init__(self, cfg: TrainingConfig, monitor: Any, *, label: str) -> None:
        super().__init__()
        self.cfg, self.monitor, self.label = cfg, monitor, label
        self.stopped: str | None = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        lr = learning_rate(self.cfg, epoch=epoch, elapsed_s=elapsed_seconds(self.monitor.history))
        self.model.optimizer.learning_rate = lr

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        best = self.monitor.best["epoch"] if self.monitor.best else None
        reason = stop_reason(self.cfg, history=self.monitor.history, best_epoch=best)
        if reason is not None:
            self.stopped = reason
            self.model.stop_training = True
            log.info("%s stops after epoch %d (%s; %.1f min trained, best epoch %s)", self.label, epoch + 1,
                     reason, elapsed_seconds(self.monitor.history) / 60.0, best)
