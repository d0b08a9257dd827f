"""Tests of semscale.training.fit: a tiny U-Net learns, resume continues, the defaults are the config's."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math

import numpy as np
import pytest

from semscale.config import TrainingConfig
from semscale.errors import ConfigError, ModelError
from semscale.store import create_store

P = 32
TINY = {
    "patch_size": P, "batch_size": 8, "filters": (4, 8, 16), "dropout": (0.0, 0.0, 0.0),
    "test_tiles_fraction": 0.2, "workers": 1,
}


def test_tiny_unet_learns_and_exports_member(train_store):
    from semscale.training.fit import train_member
    from semscale.training.unet import load_model

    store = train_store
    cfg = TrainingConfig(name="fit", epochs=12, steps_per_epoch=6, augment=False, learning_rate=1e-2,
                         **{**TINY, "filters": (8, 16, 32)})
    side = train_member(store, cfg, member=0)
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
    assert TrainingConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()}) == cfg
    # its predictions on the validation tiles reproduce the recorded best accuracy
    from semscale.training.monitor import evaluate_tiles
    from semscale.training.sampler import load_tiles
    from semscale.training.splits import TileSplit

    split = TileSplit.from_dict(meta["split"])
    x, y = load_tiles(store, split.val_tiles(), label_source="target", patch_size=P)
    again = evaluate_tiles(model, x, y, classes=store.classes)
    assert again["accuracy"] == pytest.approx(side["val_accuracy"], abs=1e-6)


@pytest.mark.parametrize("precision", ["off", "on"])
def test_resume_continues_from_checkpoint(train_store, precision):
    """Also in mixed precision: ``on`` on a CPU trains in bfloat16 and exports float32 weights."""
    import keras

    from semscale.store.models import member_paths
    from semscale.training.fit import train_member

    store = train_store

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

    cfg = TrainingConfig(**TINY, name=f"res-{precision}", epochs=3, steps_per_epoch=2, mixed_precision=precision)
    stop = Interrupt()
    with pytest.raises(KeyboardInterrupt):
        train_member(store, cfg, member=0, callbacks=[stop])
    paths = member_paths(store, cfg.name, 0)
    assert not paths["model"].exists() and paths["last"].exists()
    first = json.loads(paths["history"].read_text())
    assert [r["epoch"] for r in first] == [1, 2]

    with pytest.raises(ModelError, match="learning_rate"):
        train_member(store, dataclasses.replace(cfg, learning_rate=0.5), member=0)

    watch = Watch()
    side = train_member(store, cfg, member=0, callbacks=[watch])
    assert watch.ends == [3]  # only the missing epoch ran
    for a, b in zip(watch.weights, stop.weights, strict=True):
        np.testing.assert_array_equal(a, b)  # started from the checkpointed weights
    hist = json.loads(paths["history"].read_text())
    assert [r["epoch"] for r in hist] == [1, 2, 3]
    assert hist[:2] == first
    assert side["epochs_trained"] == 3
    assert side["training"]["mixed_precision"] == {"off": "float32", "on": "mixed_bfloat16"}[precision]
    from semscale.training.unet import load_model

    exported, _ = load_model(paths["model"])
    assert {w.dtype for w in exported.get_weights()} == {np.dtype("float32")}
    assert exported.dtype_policy.name == "float32"

    class Fail(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            raise AssertionError("should not train again")

    again = train_member(store, cfg, member=0, callbacks=[Fail()])  # finished: returned as it is
    assert again["fingerprint"] == side["fingerprint"]
    more = train_member(store, dataclasses.replace(cfg, epochs=4), member=0, callbacks=[watch])  # one more
    assert watch.ends == [4] and more["epochs_trained"] == 4


RESUMABLE = """
import json, sys
import keras
from semscale.config import TrainingConfig
from semscale.store import open_store
from semscale.training.fit import train_member

class Kill(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == 2:
            sys.exit(3)  # after epoch 2's checkpoint (the monitor's callback runs first)

kw = json.loads(sys.argv[2])
cfg = TrainingConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()})
train_member(open_store(sys.argv[1]), cfg, member=0, callbacks=[Kill()] if sys.argv[3] == "kill" else [])
"""


@pytest.mark.parametrize("precision", ["off", "on"])
def test_a_resumed_run_ends_bit_identical_to_an_uninterrupted_one(train_store, precision):
    """Defect: resuming gave other weights (max difference 0.011) and other validation scores, because the
    dropout masks after a restart were not those of an uninterrupted run. With dropout on, a run killed
    after epoch 2 and resumed in a new process ends with the same bits as one that ran its 4 epochs in one
    process: checkpoint, exported member, history and validation scores, in float32 and in bfloat16. Each
    run is a fresh process, as a rerun after a kill is (numerics of one long-lived process that has run
    other models before can differ in the last bits)."""
    import os
    import subprocess
    import sys

    import keras

    from semscale.store.models import member_paths

    kw = {**TINY, "dropout": [0.1, 0.2, 0.3], "filters": list(TINY["filters"]), "epochs": 4,
          "steps_per_epoch": 2, "mixed_precision": precision}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def train(name: str, mode: str) -> int:
        args = [sys.executable, "-c", RESUMABLE, str(train_store.path), json.dumps({**kw, "name": name}), mode]
        return subprocess.run(args, env=env, capture_output=True, text=True).returncode

    outputs = {}
    for name, kill in (("whole", False), ("resumed", True)):
        name = f"{name}-{precision}"
        if kill:
            assert train(name, "kill") == 3
            assert not member_paths(train_store, name, 0)["model"].exists()
        assert train(name, "run") == 0
        paths = member_paths(train_store, name, 0)
        last = keras.saving.load_model(paths["last"], compile=False)
        exported = keras.saving.load_model(paths["model"], compile=False)
        history = [{k: v for k, v in r.items() if "second" not in k and "time" not in k}
                   for r in json.loads(paths["history"].read_text())]
        side = json.loads(paths["sidecar"].read_text())
        outputs[name.split("-")[0]] = (last.get_weights(), exported.get_weights(), history, side["val_accuracy"])
    whole, resumed = outputs["whole"], outputs["resumed"]
    assert len(whole[2]) == len(resumed[2]) == 4
    for a, b in zip(whole[0] + whole[1], resumed[0] + resumed[1], strict=True):
        if a.dtype.kind == "f":
            np.testing.assert_array_equal(a, b)
    assert whole[2] == resumed[2] and whole[3] == resumed[3]


def test_class_offsets_are_fitted_on_held_out_simulated_images_and_carried_by_the_member(train_store):
    """``class_offsets: synthetic`` adds the fitted offsets to the exported member's output bias: the member's
    labels on the calibration images have the shares the sidecar records. Switching it on or off for a
    finished member exports again from the best checkpoint (no epoch retrained); off gives back the
    uncalibrated member bit for bit."""
    import keras

    from semscale.kernels.calibration import class_shares
    from semscale.store.models import member_paths
    from semscale.training.fit import train_member
    from semscale.training.synthetic import SyntheticWindows

    base = TrainingConfig(name="calib", epochs=4, steps_per_epoch=4, augment=False, learning_rate=1e-2,
                          synthetic_fraction=0.75, synthetic_images=2, **TINY)
    plain = train_member(train_store, base, member=0)
    assert plain.get("class_offsets") is None
    paths = member_paths(train_store, "calib", 0)
    history = paths["history"].read_text()
    plain_weights = keras.saving.load_model(paths["model"], compile=False).get_weights()

    cfg = dataclasses.replace(base, class_offsets="synthetic", calibration_images=2)
    side = train_member(train_store, cfg, member=0)
    rec = side["class_offsets"]
    assert side["epochs_trained"] == plain["epochs_trained"] and paths["history"].read_text() == history
    assert rec["setting"]["images"] == 2 and rec["setting"]["stream"] == 2 and rec["setting"]["size"] == 4 * P
    model = keras.saving.load_model(paths["model"], compile=False)
    bias, plain_bias = model.get_layer("softmax").bias.numpy(), plain_weights[-1]
    np.testing.assert_allclose(bias - plain_bias, rec["offsets"], atol=1e-5)
    shares = {k: np.asarray(v) for k, v in rec["shares_pct"].items()}
    assert np.abs(rec["offsets"]).max() > 0.05
    assert np.abs(shares["after"] - shares["truth"]).max() < np.abs(shares["before"] - shares["truth"]).max()
    # the calibration images: drawn like the training's simulated windows, none of them a training image
    windows = SyntheticWindows(n_images=2, size=4 * P, seed=base.seed, pixel_size_um=0.04458, stream=2)
    assert not any(np.array_equal(a[0], b[0]) for a in windows.images()
                   for b in SyntheticWindows(n_images=2, size=4 * P, seed=base.seed, stream=1).images())
    labels = [np.argmax(model.predict_on_batch(img[None, :, :, None])[0], -1) for img, _ in windows.images()]
    np.testing.assert_allclose(100 * class_shares(labels, n_classes=4), rec["shares_pct"]["after"], atol=2e-3)
    assert train_member(train_store, cfg, member=0)["class_offsets"] == rec  # finished: kept as it is

    again = train_member(train_store, base, member=0)
    assert again.get("class_offsets") is None and paths["history"].read_text() == history
    for a, b in zip(keras.saving.load_model(paths["model"], compile=False).get_weights(), plain_weights,
                    strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_settings_raise(train_store):
    from semscale.training.fit import train_member

    with pytest.raises(ConfigError, match="multiple of 4"):
        train_member(train_store, TrainingConfig(**{**TINY, "patch_size": 30}), member=0)
    with pytest.raises(ConfigError, match="monitor"):
        train_member(train_store, TrainingConfig(monitor="dice", **TINY), member=0)


def test_monitor_names_are_the_config_choices():
    import typing

    from semscale.training.monitor import MONITORS

    assert set(MONITORS) == set(typing.get_args(typing.get_type_hints(TrainingConfig)["monitor"]))


def test_stage_functions_declare_no_options_of_their_own():
    from semscale.training.ensemble import train_ensemble
    from semscale.training.fit import train_member

    assert list(inspect.signature(train_member).parameters) == [
        "store", "cfg", "member", "image_ids", "resume", "callbacks"]
    assert list(inspect.signature(train_ensemble).parameters) == ["store", "cfg", "image_ids", "client", "resume"]


# --- what train_member does by default is what TrainingConfig() says, option by option ----------------------
def _spy_member(monkeypatch) -> dict:
    """Run train_member(store, TrainingConfig(), member=0) up to model.fit, recording what it does."""
    import keras

    from semscale.training import fit

    seen: dict = {}
    compile_ = keras.Model.compile

    def spy_compile(self, *args, **kw):
        seen["compile"] = kw
        return compile_(self, *args, **kw)

    def spy_fit(self, x, **kw):
        seen.update(model=self, dataset=x, fit=kw)

    monkeypatch.setattr(fit, "_set_threads", lambda threads: seen.update(threads=threads))
    monkeypatch.setattr(keras.Model, "compile", spy_compile)
    monkeypatch.setattr(keras.Model, "fit", spy_fit)
    monkeypatch.setattr(fit, "_export", lambda run, **kw: seen.update(run=run, export=kw) or {})
    return seen


def _observed_member(store, seen: dict) -> dict:
    """The option values that the recorded behaviour of train_member corresponds to."""
    from semscale.training import fit
    from semscale.training.augment import Augment
    from semscale.training.fit import on_gpu
    from semscale.training.splits import PAPER_TEST_FRACTION, split_tiles
    from semscale.training.unet import unet_filters

    run, ds, model, fit_kw = seen["run"], seen["dataset"], seen["model"], seen["fit"]
    split, monitor = run.split, fit_kw["callbacks"][0]
    train_tiles = split.n_tiles - split.n_test_tiles
    paper_tiles = split_tiles(dict(split.shapes), patch_size=split.patch_size, test_fraction=PAPER_TEST_FRACTION,
                              seed=split.seed)
    filters, dropout = unet_filters(model)
    return {
        "name": run.paths["model"].parent.name, "label_source": ds.label_source, "patch_size": ds.patch_size,
        "batch_size": ds.batch_size, "epochs": fit_kw["epochs"],
        "steps_per_epoch": None if ds.steps_per_epoch == math.ceil(10 * train_tiles / ds.batch_size)
        else ds.steps_per_epoch,
        "learning_rate": float(model.optimizer.learning_rate), "filters": filters, "dropout": dropout,
        "augment": {Augment(): True, Augment.none(): False}.get(ds.augment, ds.augment),
        "split": split.kind, "test_tiles_fraction": PAPER_TEST_FRACTION if split.test_tiles == paper_tiles
        else split.test_tiles, "seed": split.seed if ds.seed == split.seed else ds.seed,
        "mixed_precision": "auto" if run.policy == ("mixed_float16" if on_gpu() else "float32") else run.policy,
        "n_test_tiles": None if split.n_test_tiles == round(PAPER_TEST_FRACTION * split.n_tiles)
        else split.n_test_tiles,
        "rare_fraction": ds.rare_fraction,
        "rare_threshold": None if ds.rare_threshold == 0.5 / len(store.classes) else ds.rare_threshold,
        "ignore_boundary_px": ds.ignore_boundary_px, "monitor": monitor.monitor,
        "jit_compile": seen["compile"]["jit_compile"], "threads": seen["threads"], "workers": ds.workers,
        "use_multiprocessing": ds.use_multiprocessing, "max_queue_size": ds.max_queue_size,
        "in_memory": ds.in_memory, "cache_mb": ds._cache.max_bytes / 2**20 if ds._cache else 0.0,
        "verbose": fit_kw["verbose"], **_observed_schedule(fit_kw["callbacks"][1]),
        "synthetic_fraction": ds.n_synthetic / ds.batch_size, "synthetic_images": ds.synthetic.n_images,
        "synthetic_levels": "calibration" if ds.synthetic.levels is None else "campaign",
        "synthetic_zoom": ds.synthetic.zoom,
        "init_weights": None if _he_normal_start(run, model) else "?",
        "class_offsets": "none" if fit._calibration_setting(run) is None else "synthetic",
        "calibration_images": fit._calibration_windows(run).n_images,
    }


def _he_normal_start(run, model) -> bool:
    """Whether ``model`` holds the initial weights of a fresh build with the member's seed."""
    from semscale.training.fit import _build

    fresh = _build(run.cfg, len(run.classes), run.seed, run.policy)
    return all(np.array_equal(a, b) for a, b in zip(model.get_weights(), fresh.get_weights(), strict=True))


def _observed_schedule(schedule) -> dict:
    """Budget, learning-rate schedule and patience that the Schedule callback given to fit applies."""
    from semscale.training.schedule import learning_rate, stop_reason

    cfg = schedule.cfg
    day = [{"epoch": 1, "seconds": 86400.0}]  # one epoch of a day: past any budget but "no budget"
    stale = [{"epoch": e, "seconds": 0.0} for e in range(1, 10_001)]  # 10000 epochs, best the first
    mid = learning_rate(cfg, epoch=cfg.epochs // 2, elapsed_s=0.0)
    return {
        "budget_min": None if stop_reason(cfg, history=day, best_epoch=1) is None else cfg.budget_min,
        "lr_schedule": "constant" if mid == cfg.learning_rate else "cosine",
        "patience": None if stop_reason(cfg, history=stale, best_epoch=1) is None else cfg.patience,
    }


def _observed_ensemble(store, client, monkeypatch) -> dict:
    """Members, first member and retries of train_ensemble(store, TrainingConfig(), client=...)."""
    from semscale.training import ensemble

    submitted: list[dict] = []

    class Spy:
        def submit(self, fn, *args, **kw):
            submitted.append(kw)
            return client.submit(fn, *args, **kw)

        def scheduler_info(self):
            return client.scheduler_info()

    monkeypatch.setattr(ensemble, "_train_member_task", lambda path, cfg, k, ids, resume: {"member": k})
    members = [s["member"] for s in ensemble.train_ensemble(store, TrainingConfig(), client=Spy())]
    assert members == list(range(members[0], members[0] + len(members)))
    assert store.model_attrs("unet")["members"] == len(members)
    return {"ensemble": len(members), "first_member": members[0], "retries": submitted[0]["retries"]}


def test_train_member_defaults_are_the_config_defaults(tmp_path, blobs, client, monkeypatch):
    from semscale.training.fit import train_member

    store = create_store(tmp_path / "paper.zarr", name="paper", pixel_size_um=0.04458)
    blobs.add_noisy(store, "big", blobs.labels((1024, 1536), 5), seed=5)
    seen = _spy_member(monkeypatch)
    train_member(store, TrainingConfig(), member=0)
    observed = {**_observed_member(store, seen), **_observed_ensemble(store, client, monkeypatch)}
    default = TrainingConfig()
    expected = {f.name: getattr(default, f.name) for f in dataclasses.fields(TrainingConfig)}
    expected["learning_rate"] = pytest.approx(default.learning_rate, rel=1e-6)  # a float32 variable
    # `recipe` acts when a section is built (named defaults under the keys given), not in train_member.
    assert expected.pop("recipe") == "paper" and TrainingConfig.from_recipe("paper") == default
    assert observed == expected
