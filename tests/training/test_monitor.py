"""Tests of semscale.training.monitor: validation scores from the model's own outputs; best/last checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest

from semscale.training.monitor import TrainingMonitor, evaluate_tiles, write_json


@pytest.fixture(scope="module")
def tiny_model():
    from semscale.training.unet import build_unet

    return build_unet(filters=(4, 8, 16), seed=3)


def test_evaluate_tiles_equals_scores_of_the_argmax(tiny_model):
    import keras

    rng = np.random.default_rng(0)
    x = rng.random((7, 16, 16, 1)).astype(np.float32)
    y = rng.integers(0, 4, (7, 16, 16)).astype(np.uint8)
    y[0, :4] = 255  # ignored pixels
    pred = np.argmax(keras.ops.convert_to_numpy(tiny_model(x, training=False)), axis=-1)
    keep = y != 255
    s = evaluate_tiles(tiny_model, x, y, classes=("a", "b", "c", "d"), batch_size=3)  # batches of 3, 3, 1
    assert s["accuracy"] == pytest.approx(float((pred[keep] == y[keep]).mean()))
    for k, c in enumerate("abcd"):
        inter = np.sum((pred == k) & (y == k) & keep)
        union = np.sum(((pred == k) | (y == k)) & keep)
        if union:
            assert s["per_class"][c]["iou"] == pytest.approx(inter / union)


def test_monitor_keeps_best_and_last(tiny_model, tmp_path):
    paths = {"best": tmp_path / "ck" / "best.weights.h5", "last": tmp_path / "ck" / "last.keras",
             "history": tmp_path / "history.json", "state": tmp_path / "ck" / "state.json"}
    history: list[dict] = []
    cb = TrainingMonitor(paths=paths, val=None, classes=("a", "b", "c", "d"), monitor="loss", history=history,
                         best=None, fingerprint={"seed": 1}, epochs=3, label="t", val_batch_size=4)
    cb.set_model(tiny_model)
    for epoch, loss in enumerate([0.9, 0.5, 0.7]):
        cb.on_epoch_end(epoch, {"loss": loss})
        if epoch == 1:
            best_file = paths["best"].stat().st_ino  # every save replaces the file (a new inode)
            last_file = paths["last"].stat().st_ino
    assert cb.best == {"epoch": 2, "value": 0.5, "monitor": "loss"}  # the smaller loss; epoch 3 was worse
    assert paths["best"].stat().st_ino == best_file  # not saved again after epoch 2
    assert paths["last"].stat().st_ino != last_file  # the last checkpoint is saved every epoch
    assert [r["epoch"] for r in json.loads(paths["history"].read_text())] == [1, 2, 3]
    state = json.loads(paths["state"].read_text())
    assert state["epoch"] == 3 and state["best"]["epoch"] == 2 and state["fingerprint"] == {"seed": 1}
    assert not list(tmp_path.rglob("tmp_*"))  # written atomically


def test_write_json_numpy_and_tuples(tmp_path):
    write_json(tmp_path / "a" / "x.json", {"n": np.int64(3), "t": (1, 2), "f": np.float32(0.5)})
    assert json.loads((tmp_path / "a" / "x.json").read_text()) == {"n": 3, "t": [1, 2], "f": 0.5}
    with pytest.raises(TypeError, match="not JSON serialisable"):
        write_json(tmp_path / "y.json", {"o": object()})
