"""Tests of semscale.training.schedule: cosine learning rate, time budget and patience, on real tiny fits."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest

from semscale.config import TrainingConfig
from semscale.training.schedule import (
    LR_FLOOR,
    TOO_LONG_S,
    elapsed_seconds,
    estimate_message,
    learning_rate,
    progress,
    stop_reason,
)

TINY = {
    "patch_size": 32, "batch_size": 8, "filters": (4, 8, 16), "dropout": (0.0, 0.0, 0.0),
    "test_tiles_fraction": 0.2, "workers": 1, "augment": False,
}


def test_cosine_falls_from_the_rate_to_its_floor_over_epochs_or_budget():
    cfg = TrainingConfig(epochs=10, learning_rate=1e-3, lr_schedule="cosine")
    rates = [learning_rate(cfg, epoch=e, elapsed_s=0.0) for e in range(11)]
    assert rates[0] == pytest.approx(1e-3) and rates[10] == pytest.approx(LR_FLOOR * 1e-3)
    assert rates[5] == pytest.approx(1e-3 * (LR_FLOOR + (1 - LR_FLOOR) / 2))
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))
    # with a budget, time counts too: half the budget spent at epoch 1 is half the schedule
    timed = TrainingConfig(epochs=1000, learning_rate=1e-3, lr_schedule="cosine", budget_min=2.0)
    assert progress(timed, epoch=1, elapsed_s=60.0) == pytest.approx(0.5)
    assert learning_rate(timed, epoch=1, elapsed_s=60.0) == pytest.approx(rates[5])
    assert progress(timed, epoch=1, elapsed_s=1e9) == 1.0
    constant = TrainingConfig(epochs=10, learning_rate=1e-3)
    assert {learning_rate(constant, epoch=e, elapsed_s=100.0 * e) for e in range(10)} == {1e-3}


def test_stop_reasons():
    hist = [{"epoch": e, "seconds": 20.0} for e in range(1, 6)]  # 100 s in 5 epochs of 20 s
    assert elapsed_seconds(hist) == 100.0
    assert stop_reason(TrainingConfig(), history=hist, best_epoch=5) is None
    # the next epoch (20 s) would end at 120 s: stop for a 115 s budget, go on for a 125 s one
    assert stop_reason(TrainingConfig(budget_min=115 / 60), history=hist, best_epoch=5) == "budget"
    assert stop_reason(TrainingConfig(budget_min=125 / 60), history=hist, best_epoch=5) is None
    assert stop_reason(TrainingConfig(patience=3), history=hist, best_epoch=2) == "patience"
    assert stop_reason(TrainingConfig(patience=4), history=hist, best_epoch=2) is None
    assert stop_reason(TrainingConfig(budget_min=1.0), history=[], best_epoch=None) is None


def test_fit_follows_the_schedule_and_stops_by_patience(train_store):
    import keras

    from semscale.training.fit import train_member

    class Rates(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seen: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.seen.append(float(self.model.optimizer.learning_rate))

    cfg = TrainingConfig(name="cos", epochs=6, steps_per_epoch=3, learning_rate=1e-2, lr_schedule="cosine",
                         **TINY)
    rates = Rates()
    side = train_member(train_store, cfg, member=0, callbacks=[rates])
    expected = [learning_rate(cfg, epoch=e, elapsed_s=0.0) for e in range(6)]
    assert rates.seen == pytest.approx(expected, rel=1e-6)
    assert side["stopped"] is None and side["epochs_trained"] == 6
    assert side["training"]["lr_schedule"] == "cosine"

    # patience 1 on a monitor that never improves after epoch 1: training ends after epoch 2
    stale = TrainingConfig(name="pat", epochs=8, steps_per_epoch=2, learning_rate=1e-9, patience=1,
                           monitor="val_accuracy", **TINY)
    side = train_member(train_store, stale, member=0)
    hist = json.loads((train_store.model_dir("pat") / side["history"]).read_text())
    best = max(r["val_accuracy"] for r in hist)
    first_best = next(r["epoch"] for r in hist if r["val_accuracy"] == best)
    assert side["stopped"] == "patience" and side["epochs_trained"] == first_best + 1 < 8


def test_budget_stops_keeps_the_best_and_a_rerun_respects_it(train_store):
    import keras

    from semscale.training.fit import train_member

    class Slow(keras.callbacks.Callback):
        """1 s per batch, so a 15 s budget is spent after a few epochs (counted in the epoch's time)."""

        def on_train_batch_end(self, batch, logs=None):
            time.sleep(1.0)

    cfg = TrainingConfig(name="bud", epochs=30, steps_per_epoch=2, learning_rate=1e-2, budget_min=0.25,
                         **TINY)
    side = train_member(train_store, cfg, member=0, callbacks=[Slow()])
    hist = json.loads((train_store.model_dir("bud") / side["history"]).read_text())
    assert side["stopped"] == "budget" and 1 <= side["epochs_trained"] < 30
    spent, before = elapsed_seconds(hist), elapsed_seconds(hist[:-1])
    assert spent + spent / len(hist) > 15.0  # one more epoch would have run past the budget ...
    assert len(hist) == 1 or before + before / (len(hist) - 1) <= 15.0  # ... and the one before did not
    assert side["training"]["train_minutes"] == pytest.approx(spent / 60, abs=0.01)
    assert side["best_epoch"] == max(hist, key=lambda r: r["val_mean_iou"])["epoch"]
    # a rerun with the same budget is done as it is; a larger one continues from the checkpoint
    again = train_member(train_store, cfg, member=0)
    assert again["epochs_trained"] == side["epochs_trained"]
    assert again["training"]["train_seconds_this_run"] == side["training"]["train_seconds_this_run"]
    more = train_member(train_store, dataclasses.replace(cfg, budget_min=60.0), member=0)
    assert more["epochs_trained"] == 30 and more["stopped"] is None
    hist = json.loads((train_store.model_dir("bud") / more["history"]).read_text())
    assert [r["epoch"] for r in hist] == list(range(1, 31))


def test_expected_time_warns_when_a_cpu_schedule_would_take_days():
    import logging

    paper = TrainingConfig()  # 250 epochs of batch 32 × 256²
    level, line = estimate_message(paper, step_s=12.0, steps_per_epoch=385, epochs_left=250, members_left=1,
                                   gpu=False)
    assert level == logging.WARNING and "13.4 days" in line and "recipe: cpu, budget_min: 30" in line
    level, line = estimate_message(paper, step_s=12.0, steps_per_epoch=385, epochs_left=250, members_left=1,
                                   gpu=True)
    assert level == logging.INFO and "days" in line  # on a GPU it is only said
    budget = dataclasses.replace(paper, budget_min=30)
    level, line = estimate_message(budget, step_s=12.0, steps_per_epoch=385, epochs_left=250, members_left=10,
                                   gpu=False, spent_s=600.0)
    assert level == logging.INFO and "budget stops it after about 20.0 min" in line and "about 3.3 h" in line
    assert 12.0 * 385 * 250 > TOO_LONG_S


def test_fit_logs_the_expected_time_before_the_first_epoch_ends(train_store, caplog):
    import logging

    from semscale.training.fit import train_member

    cfg = TrainingConfig(name="eta", epochs=3, steps_per_epoch=6, **TINY)
    with caplog.at_level(logging.INFO, logger="semscale"):
        train_member(train_store, cfg, member=0)
    lines = [r.getMessage() for r in caplog.records]
    first = next(i for i, m in enumerate(lines) if "s per step of 8×32² px: 3 epochs × 6 steps" in m)
    epoch1 = next(i for i, m in enumerate(lines) if "epoch 1/3" in m)
    assert first < epoch1
    assert any("2 epochs × 6 steps" in m for m in lines[epoch1:])  # refined after the first epoch


def test_eta_log_uses_the_measured_rate():
    from semscale.runtime.progress import EtaLog

    now = [0.0]
    eta = EtaLog("predict a", 10, first_s=10.0, every_s=60.0, clock=lambda: now[0])
    now[0] = 5.0
    assert eta.advance() is None  # too early
    now[0] = 20.0
    assert eta.advance() == "predict a: 2/10 done, about 80 s left"
    now[0] = 30.0
    assert eta.advance() is None  # at most once a minute
    now[0] = 90.0
    assert eta.advance() == "predict a: 4/10 done, about 2.2 min left"
