"""The training schedule of one member: learning rate per epoch, time budget, early stopping, and the
expected training time (measured first steps × what remains).

Pure functions of the training section and the run's history (so a resumed run continues the same schedule),
plus :class:`Schedule`, the Keras callback that applies them (this module imports Keras at its top:
:mod:`semscale.training.fit` imports it lazily). ``history`` rows are those of
:class:`semscale.training.monitor.TrainingMonitor`; their ``seconds`` (wall time of each epoch, validation
included) sum to the elapsed training time the budget counts.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import keras

from semscale.config import TrainingConfig

log = logging.getLogger(__name__)

__all__ = ["LR_FLOOR", "TOO_LONG_S", "Schedule", "TimeEstimate", "elapsed_seconds", "estimate_message",
           "learning_rate", "progress", "stop_reason"]

LR_FLOOR = 0.02
"""The cosine schedule ends at this fraction of ``learning_rate``."""
TOO_LONG_S = 24 * 3600.0
"""A schedule expected to take longer than this on a CPU (per member) gets a warning and a suggestion."""
TIMED_STEPS = 3
"""Steps timed (after the first, which builds the graph) for the first estimate."""


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


def estimate_message(cfg: TrainingConfig, *, step_s: float, steps_per_epoch: int, epochs_left: int,
                     members_left: int, gpu: bool, spent_s: float = 0.0) -> tuple[int, str]:
    """``(log level, line)`` of the expected training time: ``step_s`` (measured s per step) × the steps
    left of this member, capped by ``budget_min``; a warning with a CPU schedule to try when, without a GPU,
    it exceeds :data:`TOO_LONG_S`."""
    schedule_s = step_s * steps_per_epoch * epochs_left
    expected = schedule_s
    capped = cfg.budget_min is not None and spent_s + schedule_s > 60.0 * cfg.budget_min
    if capped:
        assert cfg.budget_min is not None
        expected = max(0.0, 60.0 * cfg.budget_min - spent_s)
    from semscale.runtime.progress import format_duration

    line = (f"{step_s:.2f} s per step of {cfg.batch_size}×{cfg.patch_size}² px: {epochs_left} epochs × "
            f"{steps_per_epoch} steps take about {format_duration(schedule_s)}")
    if capped:
        line += f"; the {cfg.budget_min:g}-min budget stops it after about {format_duration(expected)}"
    if members_left > 1:
        line += f" (per member; {members_left} members in sequence: about {format_duration(expected * members_left)})"
    if not gpu and not capped and schedule_s > TOO_LONG_S:
        return logging.WARNING, (line + ". That is too long for a CPU: set `training: {recipe: cpu, budget_min: 30}`"
                                 " (README, Training on a CPU) or a `budget_min`, or train where a GPU is.")
    return logging.INFO, line


class EpochSeeds(keras.callbacks.Callback):
    """Reseeds every random stream of training at the start of each epoch from (member seed, epoch).

    Keras' global seed (Python, NumPy, backend) and the state of every layer's seed generator (dropout
    masks) are set from ``(seed, epoch)`` alone, so epoch ``e`` draws the same numbers whether the run got
    there uninterrupted or resumed from a checkpoint — Keras does not restore seed-generator states when it
    loads a model. (The windows and their augmentations are already functions of (seed, epoch, batch).)
    """

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = int(seed)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        import numpy as np

        keras.utils.set_random_seed(self.seed + 7919 * int(epoch))
        states = [v for v in self.model.non_trainable_variables if v.path.endswith("seed_generator_state")]
        draws = np.random.default_rng([self.seed, int(epoch), 0x5EED]).integers(1, 2**31 - 1, len(states))
        for var, draw in zip(states, draws, strict=True):
            var.assign(np.array([draw, 0], dtype=var.dtype))


class TimeEstimate(keras.callbacks.Callback):
    """Logs the expected training time after the first few steps of a run, and again (with validation and
    checkpoints included) after its first epoch."""

    def __init__(self, cfg: TrainingConfig, *, label: str, members_left: int, gpu: bool, spent_s: float) -> None:
        super().__init__()
        self.cfg, self.label, self.members_left, self.gpu, self.spent_s = cfg, label, members_left, gpu, spent_s
        self.times: list[float] = []
        self.first_epoch: int | None = None
        self._t = self._epoch_t = 0.0
        self.lines: list[str] = []

    def _log(self, step_s: float, epoch: int, *, note: str = "") -> None:
        steps = int(self.params.get("steps") or 1)
        level, line = estimate_message(self.cfg, step_s=step_s, steps_per_epoch=steps,
                                       epochs_left=self.cfg.epochs - epoch, members_left=self.members_left,
                                       gpu=self.gpu, spent_s=self.spent_s)
        self.lines.append(line)
        log.log(level, "%s: %s%s", self.label, line, note)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.first_epoch is None:
            self.first_epoch = epoch
        self._epoch_t = time.perf_counter()

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.first_epoch is None or len(self.times) > TIMED_STEPS:
            return
        self.times.append(time.perf_counter() - self._t)
        if len(self.times) == TIMED_STEPS + 1:  # the first step traces the graph: not counted
            self._log(float(sorted(self.times[1:])[len(self.times[1:]) // 2]), self.first_epoch)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch == self.first_epoch and self.cfg.epochs - epoch > 1:
            steps = int(self.params.get("steps") or 1)
            self.spent_s += time.perf_counter() - self._epoch_t
            self._log((time.perf_counter() - self._epoch_t) / steps, epoch + 1,
                      note=" (from the first epoch: validation and checkpoints included in the step time)")
