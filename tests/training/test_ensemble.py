"""Tests of semscale.training.ensemble: members as Dask tasks on worker processes, or one after another."""

from __future__ import annotations

import os

import numpy as np
import pytest

from semscale.config import TrainingConfig

P = 32
TINY = {
    "patch_size": P, "batch_size": 8, "filters": (4, 8, 16), "dropout": (0.0, 0.0, 0.0),
    "test_tiles_fraction": 0.2, "workers": 1,
}


def test_ensemble_members_are_dask_tasks_on_two_workers(train_store):
    from distributed import Client

    from semscale.store.models import format_models, list_models
    from semscale.training.ensemble import train_ensemble
    from semscale.training.unet import load_model
    from tests.loopback import local_cluster

    store = train_store
    cfg = TrainingConfig(**TINY, name="ens", ensemble=2, epochs=1, steps_per_epoch=1, threads=1)
    with local_cluster(n_workers=2, threads_per_worker=1, processes=True) as cluster, Client(cluster) as client:
        sides = train_ensemble(store, cfg, client=client)
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


def test_without_client_members_train_here_from_first_member(train_store):
    from semscale.training.ensemble import train_ensemble

    cfg = TrainingConfig(**TINY, name="seq", ensemble=2, first_member=3, epochs=1, steps_per_epoch=1, seed=7)
    sides = train_ensemble(train_store, cfg, image_ids=["a"])
    assert [s["member"] for s in sides] == [3, 4]
    assert [s["member_seed"] for s in sides] == [10, 11]
    assert {s["training"]["process"].rsplit(":", 1)[1] for s in sides} == {str(os.getpid())}
    assert all(s["split"]["train_images"] == ["a"] for s in sides)
    assert sorted(p.name for p in train_store.model_dir("seq").glob("member_*.keras")) == [
        "member_3.keras", "member_4.keras"]
    attrs = train_store.model_attrs("seq")
    assert attrs["members"] == 2 and attrs["image_ids"] == ["a"] and attrs["training"]["first_member"] == 3
