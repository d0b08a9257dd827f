"""Tests of semscale.labelling.label_store: targets for a store, rounds, scribbles, defaults from the config,
and a run killed mid-way that resumes to the very labels of an uninterrupted one."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

import semscale
from semscale import IGNORE_LABEL
from semscale.config import LabellingConfig
from semscale.errors import InputImageError
from semscale.labelling import feature_names, label_store
from semscale.labelling.steps import STAGE
from semscale.store import open_store

CFG = dataclasses.replace(LabellingConfig(), sigmas=(0.7, 2.0, 4.0), n_estimators=16, max_seeds_per_class=800,
                          n_jobs=1)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, client, toy_image, store_of):
    images = {
        "a": toy_image((160, 192), seed=7, shift=(1.0, 0.5)),
        "b": toy_image((144, 176), seed=8, shift=(-1.5, 2.0)),
        "noeds": (toy_image((64, 64), seed=9)[0], toy_image((64, 64), seed=9)[1], None),
    }
    s = store_of(tmp_path_factory.mktemp("lab") / "l.zarr", images)
    summary = label_store(s, None, CFG, client=client)
    return s, summary, images


def test_label_store_writes_targets(labelled):
    s, summary, images = labelled
    assert sorted(summary["labelled"]) == ["a", "b"]
    assert summary["skipped"] == ["noeds"]
    for image_id in ("a", "b"):
        target = s.labels(image_id, "target").compute()
        truth = images[image_id][1]
        assert target.dtype == np.uint8 and target.shape == truth.shape
        assert set(np.unique(target)) <= {0, 1, 2, 3}
        assert (target == truth).mean() > 0.85
        attrs = s.label_attrs(image_id, "target")
        assert attrs["complete"] and attrs["method"].startswith("eds-guided random forest")
        assert attrs["seeds_pooled"] == summary["seeds"]
        assert len(attrs["registration"]["shift_px"]) == 2
        ngff = s.root[f"images/{image_id}/labels/target"].attrs["ome"]["image-label"]
        assert [c["class"] for c in ngff["properties"]][:4] == ["pore", "NiO", "Ni", "YSZ"]
        assert s.scratch_group(STAGE, image_id) is None  # intermediate results are gone
        assert summary["resumed"][image_id]["forest1"] == 0  # nothing to resume in a fresh run
    assert not s.has_labels("noeds", "target")
    assert not any((s.path / "scratch" / STAGE).glob("@*"))  # nor the forest files


def test_self_training_round_and_its_switch(labelled, client, tmp_path, store_of):
    s, first, images = labelled
    assert first["images"]["a"]["rounds"] == 2 and s.label_attrs("a", "target")["rounds"] == 2
    drawn = first["samples_round2"]
    assert all(drawn[c] > 0 for c in ("pore", "NiO", "Ni", "YSZ"))
    one = store_of(tmp_path / "one.zarr", {"a": images["a"]})
    single = label_store(one, None, dataclasses.replace(CFG, self_training=False), client=client)
    assert single["images"]["a"]["rounds"] == 1 and "samples_round2" not in single
    t1, t2 = one.labels("a", "target").compute(), s.labels("a", "target").compute()
    truth = images["a"][1]
    assert (t1 == truth).mean() > 0.85 and (t2 == truth).mean() > 0.85
    assert (t1 != t2).any()


def test_rerun_skips_and_empty_scribbles_change_nothing(labelled, client):
    s, first, images = labelled
    again = label_store(s, None, CFG, client=client)
    assert again["labelled"] == [] and sorted(again["skipped"]) == ["a", "b", "noeds"]
    before = {i: s.labels(i, "target").compute() for i in ("a", "b")}
    empty = np.full(images["a"][0].shape, IGNORE_LABEL, np.uint8)
    redo = label_store(s, None, CFG, client=client, overwrite=True, scribbles={"a": empty})
    assert redo["seeds"] == first["seeds"]
    assert redo["images"]["a"]["scribbled"] == {}
    for i in ("a", "b"):
        np.testing.assert_array_equal(s.labels(i, "target").compute(), before[i])


def test_scribbles_add_and_override_seeds(labelled, client):
    s, _, images = labelled
    scrib = np.full(images["a"][0].shape, IGNORE_LABEL, np.uint8)
    scrib[100:140, 20:60] = 3  # paint a block as YSZ, whatever it is
    out = label_store(s, None, CFG, client=client, overwrite=True, scribbles={"a": scrib})
    assert out["images"]["a"]["scribbled"]["YSZ"] == 40 * 40
    painted = s.labels("a", "target")[100:140, 20:60].compute()
    assert (painted == 3).mean() > 0.9  # both rounds' forests learn the scribbles
    assert out["seeds"]["YSZ"] >= 40 * 40
    with pytest.raises(InputImageError, match="only for images being labelled"):
        label_store(s, None, CFG, client=client, overwrite=True, scribbles={"zzz": scrib})


def test_a_run_stopped_between_its_targets_labels_them_all_again(tmp_path, toy_image, store_of):
    images = {"a": toy_image((128, 144), seed=17), "b": toy_image((112, 128), seed=18)}
    s = store_of(tmp_path / "w.zarr", images)
    small = dataclasses.replace(CFG, n_estimators=6, self_training=False)
    label_store(s, None, small)
    want = {i: s.labels(i, "target").compute() for i in images}
    run = s.label_attrs("a", "target")["run"]
    # as if killed after writing a's target but before b's: b has none, both still have their scratch
    s.drop_labels("b", "target")
    for i in images:
        s.scratch_group(STAGE, i, create=True).attrs["semscale"] = {"run": run}
    out = label_store(s, None, small)
    assert out["labelled"] == ["a", "b"]  # a too: its forest was pooled over both
    for i in images:
        np.testing.assert_array_equal(s.labels(i, "target").compute(), want[i])
    # as if stopped while dropping the scratch of a finished run: nothing to label, the scratch goes
    s.scratch_group(STAGE, "a", create=True).attrs["semscale"] = {"run": s.label_attrs("a", "target")["run"]}
    again = label_store(s, None, small)
    assert again["labelled"] == [] and s.scratch_group(STAGE, "a") is None


def test_an_oxidised_image_whose_eds_shows_no_nio_records_its_unresolved_band(tmp_path, toy_image, store_of):
    """The stage reads each image's oxidation time: the Ni-only image said to be oxidised gets the band
    (one EDS pixel wide) in its target's attrs, the one with NiO gets none; the target itself is unchanged."""
    images = {"ni": toy_image((128, 160), seed=3, phases=(0.3, 0.0, 0.4, 0.3)), "nio": toy_image((128, 160), seed=4)}
    s = store_of(tmp_path / "u.zarr", images)
    for image_id in images:
        s.set_image_attrs(image_id, oxidation_min=10.0)
    label_store(s, None, CFG)
    band = s.label_attrs("ni", "target")["unresolved"]
    assert (band["class"], band["next_to"], band["width_px"]) == ("Ni", "pore", 4.0)
    assert s.label_attrs("nio", "target")["unresolved"] is None
    assert s.label_attrs("ni", "target")["rules"]["nio"] == "Ni"


def test_missing_element_is_an_error(tmp_path, toy_image, store_of):
    sem, truth, eds = toy_image((96, 96), seed=6)
    del eds["O"]
    s = store_of(tmp_path / "m.zarr", {"im": (sem, truth, eds)})
    with pytest.raises(InputImageError, match="missing"):
        label_store(s)


def test_a_default_call_uses_the_configs_defaults(tmp_path, toy_image, store_of):
    defaults = LabellingConfig()
    s = store_of(tmp_path / "d.zarr", {"im": toy_image((128, 128), seed=16)})
    out = label_store(s)
    attrs = s.label_attrs("im", "target")
    for f in dataclasses.fields(LabellingConfig):
        want = getattr(defaults, f.name)
        assert attrs["parameters"][f.name] == (list(want) if isinstance(want, tuple) else want), f.name
    assert attrs["parameters"]["features"] == feature_names(defaults.sigmas)
    for step in ("forest1", "forest2"):  # what the fitted forests really were
        assert attrs["forest"][step] == {"n_estimators": defaults.n_estimators, "max_depth": defaults.max_depth,
                                         "random_state": defaults.seed}
    assert attrs["rounds"] == (2 if defaults.self_training else 1) == out["images"]["im"]["rounds"]
    assert max(attrs["seeds_image"].values()) <= defaults.max_seeds_per_class


def test_pipeline_passes_the_labelling_section(monkeypatch):
    from semscale import pipeline
    from semscale.labelling import label_store as real

    seen = {}

    def fake(store, ids, cfg, **kw):
        seen.update(store=store, ids=ids, cfg=cfg, **kw)
        return {"labelled": list(ids)}

    monkeypatch.setattr("semscale.labelling.label_store", fake)
    section = dataclasses.replace(LabellingConfig(), n_estimators=7)
    entry = types.SimpleNamespace
    config = types.SimpleNamespace(labelling=section, images=[
        entry(id="x", has_eds=True, target=None, scribbles=None),
        entry(id="y", has_eds=True, target="given.tif", scribbles=None),
        entry(id="z", has_eds=False, target=None, scribbles=None)])
    held = []
    store = types.SimpleNamespace(writer=lambda command: contextlib.nullcontext(held.append(command)))
    pipeline.label(config, store=store, overwrite=True)
    assert seen["cfg"] is section and seen["ids"] == ["x"] and seen["overwrite"] is True
    assert seen["store"] is store and held == ["label"]  # under the store's writer lock
    assert real is not fake


# --- a run killed mid-way -----------------------------------------------------------------------------
RUN = """
import dataclasses, json, sys
from semscale.config import LabellingConfig
from semscale.labelling import label_store
from semscale.store import open_store
cfg = dataclasses.replace(LabellingConfig(), **json.loads(sys.argv[2]))
out = label_store(open_store(sys.argv[1]), None, cfg)
print(json.dumps({"resumed": out["resumed"], "labelled": out["labelled"]}))
"""
RESUME_CFG = {"sigmas": [0.7, 2.0, 4.0], "n_estimators": 12, "max_seeds_per_class": 1000, "n_jobs": 1}


def _labelling(path: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(semscale.__file__).parents[1])}
    cfg = json.dumps(RESUME_CFG)
    return subprocess.Popen([sys.executable, "-c", RUN, str(path), cfg], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _blocks_done(path: Path, image_id: str, step: str) -> tuple[int, int]:
    """(done, total) blocks of ``step`` in the scratch of a store another process is writing."""
    try:
        group = open_store(path, mode="r").scratch_group(STAGE, image_id)
        if group is None or f"{step}_done" not in group:
            return 0, 0
        markers = np.asarray(group[f"{step}_done"][...])
    except Exception:  # caught while being written: look again
        return 0, 0
    return int((markers != 0).sum()), markers.size


@pytest.mark.slow
@pytest.mark.parametrize("step", ["forest1", "forest2"])
def test_killed_run_resumes_to_the_labels_of_an_uninterrupted_one(tmp_path, toy_image, store_of, step):
    images = {"a": toy_image((256, 256), seed=31, shift=(0.7, -1.1)),
              "b": toy_image((192, 256), seed=32, shift=(-1.2, 0.4))}
    whole = store_of(tmp_path / "whole.zarr", images, chunks=32)
    killed = store_of(tmp_path / "killed.zarr", images, chunks=32)
    cfg = dataclasses.replace(LabellingConfig(), **{**RESUME_CFG, "sigmas": tuple(RESUME_CFG["sigmas"])})
    label_store(whole, None, cfg)
    proc = _labelling(killed.path)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        done, total = _blocks_done(killed.path, "a", step)
        if 0 < done < total:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {proc.stderr.read()}"
    again = open_store(killed.path, mode="r")
    assert not again.has_labels("a", "target") and not again.has_labels("b", "target")
    rerun = _labelling(killed.path)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert sorted(summary["labelled"]) == ["a", "b"]
    resumed = summary["resumed"]["a"]
    assert 0 < resumed[step] < 64  # blocks done before the kill were kept ...
    if step == "forest2":  # ... and the whole first round with them
        assert resumed["forest1"] == resumed["refined1"] == 64 and resumed["seeds1"] == 1
    again = open_store(killed.path, mode="r")
    for image_id in images:
        np.testing.assert_array_equal(again.labels(image_id, "target").compute(),
                                      whole.labels(image_id, "target").compute())
        assert again.label_attrs(image_id, "target")["rounds"] == 2
        assert again.scratch_group(STAGE, image_id) is None


@pytest.mark.slow
def test_a_worker_killed_mid_label_changes_no_label(tmp_path, toy_image, store_of):
    """One of two worker processes SIGKILLed while the forest labels blocks: labelling completes on the
    other and the targets equal those of an undisturbed run."""
    from distributed import Client

    from tests.loopback import WorkerKiller, local_cluster

    images = {"a": toy_image((256, 256), seed=41, shift=(0.3, -0.6))}
    calm = store_of(tmp_path / "calm.zarr", images, chunks=32)
    hit = store_of(tmp_path / "hit.zarr", images, chunks=32)
    cfg = dataclasses.replace(LabellingConfig(), **{**RESUME_CFG, "sigmas": tuple(RESUME_CFG["sigmas"])})
    label_store(calm, None, cfg)

    def some_done() -> bool:
        done, total = _blocks_done(hit.path, "a", "forest1")
        return 2 <= done < total // 2

    with local_cluster(n_workers=2, threads_per_worker=1, processes=True) as cluster, Client(cluster) as client:
        with WorkerKiller(client, some_done) as killer:
            label_store(hit, None, cfg, client=client)
    assert killer.killed is not None, "labelling ended before a worker could be killed"
    np.testing.assert_array_equal(hit.labels("a", "target").compute(), calm.labels("a", "target").compute())
