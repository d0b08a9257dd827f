"""Tests of semscale.training.fit: a tiny U-Net learns, resume continues, ensembles run as Dask tasks."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from scipy import ndimage

from semscale.errors import ConfigError, ModelError
from semscale.kernels.norm import histogram, norm_from_histogram
from semscale.store import create_store

P = 32
TINY = {
    "patch_size": P, "batch_size": 8, "filters": (4, 8, 16), "dropout": (0.0, 0.0, 0.0),
    "test_tiles_fraction": 0.2, "workers": 1,
}


def blob_labels(shape: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f = ndimage.gaussian_filter(rng.normal(size=(4, *shape)), sigma=(0, 4, 4))
    return np.argmax(f, axis=0).astype(np.uint8)


def add_image(store, image_id: str, labels: np.ndarray, *, role: str = "train", seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    img = np.clip(np.array([30, 90, 150, 210])[labels] + rng.normal(0, 8, labels.shape), 0, 255)
    img = img.astype(np.uint8)
    a = store.create_image(image_id, shape=img.shape, dtype=img.dtype, chunks=64)
    a[:] = img
    store.finish_image(image_id, role=role, norm=norm_from_histogram(histogram(img, nbins=256)))
    store.write_labels(image_id, "target", labels)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = create_store(tmp_path_factory.mktemp("train") / "c.zarr", name="t", pixel_size_um=0.04458)
    add_image(s, "a", blob_labels((128, 160), 1), seed=1)
    add_image(s, "b", blob_labels((128, 128), 2), seed=2)
    add_image(s, "p", blob_labels((64, 64), 3), role="predict", seed=3)
    return s


def test_tiny_unet_learns_and_exports_member(store):
    from semscale.training.fit import train_model
    from semscale.training.unet import load_model

    side = train_model(store, name="fit", epochs=12, steps_per_epoch=6, augment=False, learning_rate=1e-2,
                       **{**TINY, "filters": (8, 16, 32)})
    hist = json.loads((store.model_dir("fit") / side["history"]).read_text())
    loss = [r["loss"] for r in hist]
    assert len(loss) == 12
    assert loss[-1] < 0.5 * loss[0]  # clearly falling
    assert max(r["val_accuracy"] for r in hist) > hist[0]["val_accuracy"] + 0.2
    # the exported member is the best epoch, usable by inference (safe_mode load + sidecar)
    best = max(hist, key=lambda r: r["val_mean_iou"])
    assert side["best_epoch"] == best["epoch"]
    assert side["val_mean_iou"] == pytest.approx(best["val_mean_iou"])
    model, meta = load_model(store.model_dir("fit") / "member_0.keras")
    assert meta["patch_size"] == P and meta["classes"] == list(store.classes)
    assert meta["split"]["train_images"] == ["a", "b"] and "p" in meta["split"]["held_out_images"]
    assert meta["training"]["mixed_precision"] == "float32"  # auto → float32 on CPU
    # its predictions on the validation tiles reproduce the recorded best accuracy
    from semscale.training.fit import evaluate_tiles
    from semscale.training.sampler import TileSplit, load_tiles

    split = TileSplit.from_dict(meta["split"])
    x, y = load_tiles(store, split.val_tiles(), label_source="target", patch_size=P)
    again = evaluate_tiles(model, x, y, classes=store.classes)
    assert again["accuracy"] == pytest.approx(side["val_accuracy"], abs=1e-6)


def test_resume_continues_from_checkpoint(store):
    import keras

    from semscale.training.fit import member_paths, train_model

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == 2:
                self.weights = [w.copy() for w in self.model.get_weights()]
                raise KeyboardInterrupt

    class Watch(keras.callbacks.Callback):
        ends: list[int]

        def on_train_begin(self, logs=None):
            self.weights = [w.copy() for w in self.model.get_weights()]
            self.ends = []

        def on_epoch_end(self, epoch, logs=None):
            self.ends.append(epoch + 1)

    kw = {**TINY, "name": "res", "epochs": 3, "steps_per_epoch": 2}
    stop = Interrupt()
    with pytest.raises(KeyboardInterrupt):
        train_model(store, callbacks=[stop], **kw)
    paths = member_paths(store, "res", 0)
    assert not paths["model"].exists() and paths["last"].exists()
    first = json.loads(paths["history"].read_text())
    assert [r["epoch"] for r in first] == [1, 2]

    with pytest.raises(ModelError, match="learning_rate"):
        train_model(store, **{**kw, "learning_rate": 0.5})

    watch = Watch()
    side = train_model(store, callbacks=[watch], **kw)
    assert watch.ends == [3]  # only the missing epoch ran
    for a, b in zip(watch.weights, stop.weights, strict=True):
        np.testing.assert_array_equal(a, b)  # started from the checkpointed weights
    hist = json.loads(paths["history"].read_text())
    assert [r["epoch"] for r in hist] == [1, 2, 3]
    assert hist[:2] == first
    assert side["epochs_trained"] == 3

    class Fail(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            raise AssertionError("should not train again")

    again = train_model(store, callbacks=[Fail()], **kw)  # finished: returned as it is
    assert again["fingerprint"] == side["fingerprint"]
    more = train_model(store, callbacks=[watch], **{**kw, "epochs": 4})  # extend by one epoch
    assert watch.ends == [4] and more["epochs_trained"] == 4


def test_bad_settings_raise(store):
    from semscale.training.fit import train_model

    with pytest.raises(ConfigError, match="multiple of 4"):
        train_model(store, **{**TINY, "patch_size": 30})
    with pytest.raises(ConfigError, match="monitor"):
        train_model(store, monitor="dice", **TINY)


def test_ensemble_members_are_dask_tasks_on_two_workers(store):
    from distributed import Client, LocalCluster

    from semscale.training.fit import format_models, list_models, train_ensemble
    from semscale.training.unet import load_model

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        sides = train_ensemble(store, members=2, client=client, name="ens", epochs=1, steps_per_epoch=1,
                               threads_per_member=1, **TINY)
        worker_pids = set(client.run(os.getpid).values())
    assert [s["member"] for s in sides] == [0, 1]
    assert sides[0]["member_seed"] != sides[1]["member_seed"]
    assert sides[0]["split"] == sides[1]["split"]  # one split for the whole ensemble
    procs = {s["training"]["process"].rsplit(":", 1)[1] for s in sides}
    assert procs == {str(p) for p in worker_pids}  # one member per worker process, not here
    weights = []
    for k in range(2):
        model, meta = load_model(store.model_dir("ens") / f"member_{k}.keras")
        assert meta["member"] == k
        weights.append(model.get_weights()[0])
    assert not np.array_equal(*weights)  # different seeds → different members
    models = {m["name"]: m for m in list_models(store)}
    assert models["ens"]["n_members"] == 2
    assert models["ens"]["val_accuracy"] == pytest.approx(np.mean([s["val_accuracy"] for s in sides]))
    table = format_models(list_models(store))
    assert "ens" in table and "mean" in table
