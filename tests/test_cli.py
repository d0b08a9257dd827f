"""The command line, run as a user would: synth → ingest → info, errors, and a whole tiny campaign."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from semscale.cli import main
from tests.campaigns import assert_same_outputs, campaign_outputs, tiny_campaign


def test_help_is_instant_without_heavy_imports() -> None:
    code = ("import sys, semscale.cli as c; c.build_parser().format_help(); "
            "heavy = [m for m in ('tensorflow', 'keras', 'dask', 'zarr', 'cupy', 'dask_cuda') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    help_text = subprocess.run([sys.executable, "-m", "semscale.cli", "--help"], capture_output=True,
                               text=True, check=True).stdout
    for command in ("synth", "ingest", "info", "label", "train", "predict", "evaluate", "models", "run", "demo"):
        assert command in help_text


def test_synth_ingest_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c"
    assert main(["synth", str(out), "--images", "3", "--shape", "200", "300", "--seed", "4"]) == 0
    cfg_path = out / "campaign.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    assert len(cfg["images"]) == 3
    assert main(["ingest", str(cfg_path)]) == 0
    store = out / cfg["store"]
    for image in cfg["images"]:
        group = zarr.open_group(store / "images" / image["id"], mode="r")
        assert group.attrs["ome"]["multiscales"][0]["axes"][0]["unit"] == "micrometer"
        assert group["scale0/image"].shape == (200, 300)
    capsys.readouterr()
    assert main(["info", str(store), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [im["id"] for im in summary["images"]] == sorted(im["id"] for im in cfg["images"])
    assert all(im["complete"] and "truth" in im["labels"] for im in summary["images"])
    with_eds = [im for im in summary["images"] if im["eds"]]
    assert with_eds and all(im["eds"] == ["Ni", "O", "Zr"] for im in with_eds)
    assert main(["info", str(store)]) == 0  # stdout is not a terminal here: one block per image
    text = capsys.readouterr().out
    for image in summary["images"]:
        assert image["id"] in text and f"shape: {image['shape'][0]}×{image['shape'][1]}" in text
    assert str(store) in text and "Ni,O,Zr" in text  # nothing cut at 80 columns
    assert main(["info", str(store), "--wide"]) == 0  # one untruncated table row per image
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("t0", "t1"))]
    assert len(rows) == 3 and all("200×300" in row and row.rstrip().endswith(("truth", "-")) for row in rows)


def test_json_output_is_alone_on_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c"
    assert main(["synth", str(out), "--images", "2", "--shape", "64", "64", "--json"]) == 0
    cfg_path = Path(json.loads(capsys.readouterr().out)["config"])
    assert main(["ingest", str(cfg_path), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert len(result["images"]) == 2 and Path(result["store"]).is_dir()
    assert "sem ingested" in captured.err  # the log went to stderr
    assert main(["info", str(cfg_path), "--json"]) == 0  # a config names its store
    assert json.loads(capsys.readouterr().out)["path"] == result["store"]
    assert main(["models", result["store"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_apply_overrides_builds_new_sections(tmp_path: Path) -> None:
    from semscale.cli import apply_overrides, build_parser
    from semscale.config import CampaignConfig, ClusterConfig, InferenceConfig
    from semscale.errors import ConfigError

    cfg = CampaignConfig.from_dict({"name": "x", "store": "s.zarr", "pixel_size_um": 0.1, "images": [
        {"id": "a", "sem": "a.tif"}]}, base_dir=tmp_path, check_files=False)
    parser = build_parser()
    args = parser.parse_args(["predict", "c.yaml", "--mode", "gaussian", "--stride", "64", "--tta", "--gpu",
                              "off", "--workers", "3", "--model", "other", "--dashboard", "127.0.0.1:0"])
    new = apply_overrides(cfg, args)
    assert new.inference == InferenceConfig(mode="gaussian", stride=64, tta=True, model="other")
    assert new.cluster == ClusterConfig(gpu="off", n_workers=3, dashboard_address="127.0.0.1:0")
    assert new.training == cfg.training and new.images == cfg.images and cfg.inference == InferenceConfig()
    assert new.model_name == "other"
    assert apply_overrides(cfg, parser.parse_args(["run", "c.yaml"])) == cfg  # nothing given: unchanged
    args = parser.parse_args(["train", "c.yaml", "--epochs", "3", "--ensemble", "2", "--steps", "5",
                              "--budget-min", "7.5"])
    t = apply_overrides(cfg, args).training
    assert (t.epochs, t.ensemble, t.steps_per_epoch, t.budget_min) == (3, 2, 5, 7.5)
    assert apply_overrides(cfg, parser.parse_args(["run", "c.yaml", "--budget-min", "30"])).training.budget_min == 30
    with pytest.raises(ConfigError, match=r"`training\.budget_min`"):
        apply_overrides(cfg, parser.parse_args(["train", "c.yaml", "--budget-min", "-1"]))
    with pytest.raises(ConfigError, match=r"`inference\.stride`: expected an integer in 1\.\.patch_size"):
        apply_overrides(cfg, parser.parse_args(["predict", "c.yaml", "--stride", "0"]))
    with pytest.raises(SystemExit):  # choices come from the config's Literal types
        parser.parse_args(["predict", "c.yaml", "--gpu", "maybe"])


def test_errors_are_one_line_with_nonzero_exit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", str(tmp_path / "missing.yaml")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("semscale: error: Expected a campaign config file") and "\n" not in err
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "store": "s.zarr", "pixel_size_um": 0.1,
                                   "images": [{"id": "a", "sem": "nope.tif"}]}))
    assert main(["ingest", str(bad)]) == 1
    assert "`images[0].sem`: expected an existing file" in capsys.readouterr().err
    assert main(["info", str(tmp_path)]) == 1
    assert "Expected a semscale store" in capsys.readouterr().err
    with pytest.raises(Exception, match="Expected a campaign config file"):
        main(["--debug", "ingest", str(tmp_path / "missing.yaml")])


@pytest.mark.slow
def test_whole_campaign_runs_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """synth → run (ingest, label, train, predict, evaluate, stats) with a tiny U-Net; a rerun skips work."""
    out = tmp_path / "c"
    main(["synth", str(out), "--images", "3", "--shape", "160", "192", "--eds", "2", "--times", "0", "30", "120"])
    cfg_path = out / "campaign.yaml"
    data = yaml.safe_load(cfg_path.read_text())
    data["training"] = {"filters": [4, 8, 16], "dropout": [0, 0, 0], "patch_size": 64, "batch_size": 4,
                        "epochs": 1, "steps_per_epoch": 3, "test_tiles_fraction": 0.2}
    data["inference"] = {"patch_size": 64}
    data["ingest"] = {"chunk_size": 96}
    data["robustness"] = {"blur_sigma": [1.0], "brightness": [], "noise_sigma": [], "magnification": [0.5]}
    cfg_path.write_text(yaml.safe_dump(data, sort_keys=False)
                        + "cluster:\n  n_workers: 1\n  threads_per_worker: 2\n  gpu: off\n  dashboard_address: 127.0.0.1:0\n")
    assert yaml.safe_load(cfg_path.read_text())["cluster"]["gpu"] is False  # the YAML trap, on purpose

    assert main(["run", str(cfg_path)]) == 0
    text = capsys.readouterr().out
    assert "vs ground truth" in text and "statistics (updated; 3 of 3 images measured now)" in text
    store = out / data["store"]
    root = zarr.open_group(store, mode="r")
    for image in data["images"]:
        labels = root[f"images/{image['id']}/labels/unet/scale0/image"][:]
        assert labels.shape == (160, 192) and labels.max() < 4
    table = (store / "report" / "stats.csv").read_text().splitlines()
    assert len(table) == 1 + 3 * 4 * 2 + 2 * 4  # header + image × phase × (model, truth) + targets of 2 images
    assert (store / "report" / "phase_fractions.png").stat().st_size > 10_000
    assert "robustness (updated): accuracy" in text and "report (updated): " in text
    assert (store / "report" / "index.html").is_file() and (store / "report" / "robustness.png").is_file()

    import warnings

    import xarray as xr

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # consolidated, every array with dimension names
        ds = xr.open_zarr(store, group="stats")
        tree = xr.open_datatree(store, engine="zarr")  # the whole store, scratch and done markers included
    np.testing.assert_allclose(ds["fraction"].sum("phase").values, 1.0, atol=1e-9)
    assert sorted(ds["oxidation_min"].values.tolist()) == [0.0, 30.0, 120.0]
    assert tree[f"images/{data['images'][0]['id']}/labels/unet/scale0/image"].shape == (160, 192)

    before = {p: p.stat().st_mtime_ns for p in (store / "predictions").rglob("*") if p.is_file()
              and p.name != "zarr.json"}
    assert main(["run", str(cfg_path), "--stages", "ingest", "label", "train", "predict", "--json"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert all(r["computed"] == 0 for r in resumed["predict"]) and resumed["label"]["labelled"] == []
    after = {p: p.stat().st_mtime_ns for p in before}
    assert after == before  # nothing recomputed
    report = {p: p.stat().st_mtime_ns for p in (store / "report").iterdir()}
    assert main(["run", str(cfg_path)]) == 0  # all stages again: nothing to do
    text = capsys.readouterr().out
    assert "robustness (unchanged)" in text and "report (unchanged)" in text
    assert {p: p.stat().st_mtime_ns for p in (store / "report").iterdir()} == report

    assert main(["evaluate", str(store), "--model", "unet", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert sorted(scores["images"]) == sorted(im["id"] for im in data["images"])
    piped = subprocess.run(f"{sys.executable} -m semscale.cli evaluate {store} --model unet --json | "
                           f"{sys.executable} -m json.tool", shell=True, capture_output=True, text=True, check=True)
    assert json.loads(piped.stdout)["total"]["classes"] == scores["total"]["classes"]

    first = data["images"][0]["id"]
    labels = root[f"images/{first}/labels/unet/scale0/image"][:]
    assert main(["predict", str(cfg_path), "--gpu", "off", "--image", first, "--overwrite", "--json"]) == 0
    (redo,) = json.loads(capsys.readouterr().out)["images"]
    assert redo["image"] == first and redo["computed"] == redo["blocks"] > 0
    np.testing.assert_array_equal(zarr.open_group(store, mode="r")[f"images/{first}/labels/unet/scale0/image"][:], labels)
    assert main(["predict", str(store), "--gpu", "off", "--workers", "1", "--threads", "1"]) == 0  # a store
    assert f"{first}: 0 of" in capsys.readouterr().out


def _stats_store(tmp_path: Path, *, bootstrap: int = 20):
    """A store with predictions of model ``m`` and the campaign config recorded (tests.analysis.test_stats)."""
    from tests.analysis.test_stats import PIXEL, TIMES, make_store

    store = make_store(tmp_path)
    store.update_meta(config={"name": "c", "store": str(store.path), "pixel_size_um": PIXEL, "images": [
        {"id": i, "sem": "x.tif", "oxidation_min": t, "role": r} for i, (t, r) in TIMES.items()],
        "training": {"name": "m"}, "stats": {"tile_um": 2.0, "bootstrap": bootstrap}})
    return store


def test_stats_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`semscale stats STORE`: JSON with the errors, a no-op rerun, other labels as the primary source."""
    from tests.analysis.test_stats import TIMES

    store = _stats_store(tmp_path, bootstrap=50)
    assert main(["stats", str(store.path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["measured"] == list(TIMES) and out["errors"]["fraction_mae_truth"]["NiO"] > 0
    assert main(["stats", str(store.path)]) == 0
    text = capsys.readouterr().out
    assert "unchanged" in text and "MAE" in text
    assert main(["stats", str(store.path), "--labels", "truth", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["measured"] == list(TIMES)
    assert main(["stats", str(store.path), "--model", "nosuch"]) == 1
    assert "nosuch" in capsys.readouterr().err


def test_models_import_then_predict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`semscale models import STORE FILE --name N --normalisation patch-l2`, then `predict --mode average`;
    tile mode and a junk file are refused with one-line errors."""
    from tests.inference.test_published import published_unet, sem, store_with_image

    h5 = tmp_path / "unet_1.h5"
    published_unet(training_dropout=True).save(h5)
    store = store_with_image(tmp_path, sem((256, 320)))
    store.update_meta(config={"name": "c", "store": str(store.path), "pixel_size_um": 0.05,
                              "images": [{"id": "a", "sem": "x.tif", "role": "predict"}]})
    args = ["models", "import", str(store.path), str(h5), "--name", "pub", "--normalisation", "patch-l2"]
    assert main([*args, "--mc-dropout", "2", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["name"] == "pub" and row["n_members"] == 1
    assert main(["predict", str(store.path), "--model", "pub", "--mode", "average", "--stride", "128",
                 "--probabilities", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "pub" and out["images"][0]["computed"] == out["images"][0]["blocks"]
    arrays = store.prediction_arrays("pub", "a")
    assert {"labels", "confidence", "uncertainty", "probabilities"} <= set(arrays)
    assert main(["predict", str(store.path), "--model", "pub", "--mode", "tile"]) == 1
    assert "--mode average" in capsys.readouterr().err
    junk = tmp_path / "junk.h5"
    junk.write_text("junk")
    assert main(["models", "import", str(store.path), str(junk), "--name", "bad"]) == 1
    err = capsys.readouterr().err
    assert "junk.h5" in err and len(err.strip().splitlines()) == 1
    assert main([*args]) == 1  # the name is taken
    assert "--overwrite" in capsys.readouterr().err
    assert main(["models", str(store.path), "--json"]) == 0
    assert [m["name"] for m in json.loads(capsys.readouterr().out)] == ["pub"]
    again = ["predict", str(store.path), "--model", "pub", "--mode", "average", "--probabilities", "--json",
             "--workers", "1"]
    out = _cli_read_only(store.path, *again, "--stride", "128")  # nothing left to do: works read-only
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["images"][0]["computed"] == 0
    out = _cli_read_only(store.path, *again, "--stride", "64")  # other settings: needs to write, says so
    assert out.returncode == 1 and "Expected a writable store" in out.stderr and "`predict a`" in out.stderr


def _cli_read_only(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``semscale ARGS`` in a fresh process that cannot write ``store``: as root (whom permissions do not
    stop), inside a user and mount namespace where the store is a read-only bind mount; otherwise with the
    store's write permissions removed."""
    import os
    import shlex
    import shutil

    cmd = [sys.executable, "-m", "semscale.cli", *args]
    if os.geteuid() != 0:
        subprocess.run(["chmod", "-R", "a-w", str(store)], check=True)
        try:
            return subprocess.run(cmd, capture_output=True, text=True)
        finally:
            subprocess.run(["chmod", "-R", "u+w", str(store)], check=True)
    unshare = shutil.which("unshare")
    assert unshare, "util-linux `unshare` is needed to test read-only use as root"
    q = shlex.quote(str(store))
    script = f"mount --bind {q} {q} && mount -o remount,bind,ro {q} && exec {shlex.join(cmd)}"
    return subprocess.run([unshare, "-rm", "sh", "-c", script], capture_output=True, text=True)


def test_read_only_store_can_be_read_and_says_why_it_cannot_be_written(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """info, models, evaluate, stats --json on a store this user cannot write; writing is refused clearly."""
    from tests.analysis.test_stats import TIMES

    store = _stats_store(tmp_path)
    assert main(["stats", str(store.path), "--json"]) == 0
    written = json.loads(capsys.readouterr().out)
    before = {p: p.stat().st_mtime_ns for p in store.path.rglob("*")}
    for args in (["info", "--json"], ["models"], ["evaluate", "--model", "m"]):
        out = _cli_read_only(store.path, args[0], str(store.path), *args[1:])
        assert out.returncode == 0, (args, out.stderr)
    assert "t10" in out.stdout and "accuracy" in out.stdout  # evaluate printed its scores
    out = _cli_read_only(store.path, "stats", str(store.path), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["errors"] == written["errors"]
    out = _cli_read_only(store.path, "stats", str(store.path), "--labels", "truth", "--json")
    assert out.returncode == 0, out.stderr  # never measured: computed and printed, not written
    result = json.loads(out.stdout)
    assert result["measured"] == list(TIMES) and not result["written"] and "read-only" in out.stderr
    out = _cli_read_only(store.path, "stats", str(store.path), "--labels", "truth", "--break-lock")
    assert out.returncode == 0, out.stderr
    from tests.inference.test_published import published_unet

    h5 = tmp_path / "unet_1.h5"
    published_unet(training_dropout=False).save(h5)
    before = {p: p.stat().st_mtime_ns for p in store.path.rglob("*")}
    out = _cli_read_only(store.path, "models", "import", str(store.path), str(h5), "--name", "pub")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        f"semscale: error: Expected a writable store at {store.path} for `models import`. Got one that this user "
        "cannot write (permissions or a read-only file system). Read-only use works for `info`, `models`, "
        "`evaluate`, `stats --json` and a `predict` with nothing left to do; to write, run where the store is "
        "writable or copy it.")
    assert {p: p.stat().st_mtime_ns for p in store.path.rglob("*")} == before  # nothing was touched


def test_a_second_writer_is_refused_naming_the_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Defect: two writers on one store. The second is refused with the holder named, its outputs untouched;
    a lock left by a killed run on another node is cleared by --break-lock."""
    from tests.store.test_lock import _hold_in_other_process, _write_lock

    store = _stats_store(tmp_path)
    holder = _hold_in_other_process(store.path)
    try:
        assert main(["stats", str(store.path)]) == 1
        err = capsys.readouterr().err
        assert f"Expected no other writer on store {store.path}" in err and f"pid {holder.pid}" in err
        assert store.read_stats() is None  # nothing written
    finally:
        holder.kill()
        holder.wait()
    _write_lock(store.path, host="node17", pid=99, command="predict (semscale predict c.yaml)")
    assert main(["stats", str(store.path)]) == 1
    assert "host node17" in capsys.readouterr().err
    assert main(["stats", str(store.path), "--break-lock", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["written"] and "removed the writer lock" in captured.err
    assert not (store.path / ".semscale-lock.json").exists()


_PREDICT_PROBE = """
import json, sys
from semscale.cli import main
rc = main(["predict", sys.argv[1], "--scheduler", sys.argv[2], "--overwrite"])
print(json.dumps({"rc": rc, "keras": "keras" in sys.modules, "tensorflow": "tensorflow" in sys.modules}))
"""
"""A fresh client process: `semscale predict STORE --scheduler ADDRESS`, then which frameworks it imported."""
_MODEL_LOADS = "__import__('semscale.training.unet', fromlist=['unet']).LOAD_COUNT"
"""Evaluated on a worker: the models that process has loaded from files so far (its model cache's misses)."""


@pytest.mark.slow
def test_run_on_an_external_scheduler_with_two_workers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`dask scheduler` and two `dask worker` processes on 127.0.0.1, then `semscale run --scheduler`: every
    stage completes there (training as a task on a worker), and the predictions equal a local rerun's. Two
    later `semscale predict` processes on the same workers import no network framework themselves, and the
    second loads no model: a fresh CLI process on running workers pays no cold start."""
    import shutil
    import time

    dask = shutil.which("dask")
    assert dask, "the `dask` command (dask[distributed]) is needed"
    cfg_path = tiny_campaign(tmp_path / "c")
    out, data = cfg_path.parent, yaml.safe_load(cfg_path.read_text())
    capsys.readouterr()
    sched_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address",
                               "127.0.0.1:0", "--scheduler-file", str(sched_file)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for _ in range(600):
            if sched_file.exists() and sched_file.stat().st_size:
                break
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        for _ in range(2):
            procs.append(subprocess.Popen([dask, "worker", "--scheduler-file", str(sched_file), "--host",
                                           "127.0.0.1", "--nthreads", "1", "--nworkers", "1",
                                           "--dashboard-address", "127.0.0.1:0"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(address, timeout=60) as c:
            c.wait_for_workers(2, timeout=120)
        run = subprocess.run([sys.executable, "-m", "semscale.cli", "run", str(cfg_path), "--scheduler", address,
                              "--json"], capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, run.stderr[-3000:]
        assert f"connected to Dask scheduler {address}" in run.stderr
        summary = json.loads(run.stdout)
        assert [r["computed"] == r["blocks"] for r in summary["predict"]] == [True] * len(data["images"])
        assert summary["label"]["labelled"] and summary["train"]
        # Fresh `semscale predict` processes on the running workers: the client never imports the network's
        # framework, and the workers keep their loaded models between client processes (no cold start twice).
        loads = []
        for _ in range(2):
            probe = subprocess.run([sys.executable, "-c", _PREDICT_PROBE, str(out / data["store"]), address],
                                   capture_output=True, text=True, timeout=600)
            assert probe.returncode == 0, probe.stderr[-3000:]
            assert json.loads(probe.stdout.splitlines()[-1]) == {"rc": 0, "keras": False, "tensorflow": False}
            with Client(address, timeout=60) as c:
                loads.append(c.run(eval, _MODEL_LOADS))
        assert sum(loads[0].values()) >= 1 and loads[1] == loads[0], loads
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    store = out / data["store"]
    remote = {im["id"]: zarr.open_group(store, mode="r")[f"images/{im['id']}/labels/unet/scale0/image"][:]
              for im in data["images"]}
    assert main(["predict", str(store), "--overwrite", "--workers", "1", "--gpu", "off", "--dashboard",
                 "127.0.0.1:0"]) == 0
    for image_id, labels in remote.items():
        local = zarr.open_group(store, mode="r")[f"images/{image_id}/labels/unet/scale0/image"][:]
        np.testing.assert_array_equal(local, labels)


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_bits_of_an_undisturbed_one(
    tmp_path: Path, tiny_campaign_reference: dict[str, np.ndarray]
) -> None:
    """`semscale run` SIGKILLed (with its worker processes) during ingest, label, train, predict, robustness and
    stats, one after the other; each rerun resumes (the killed run's stale lock is cleared) and the last one ends with
    outputs bit-identical to an undisturbed run's."""
    import os
    import re
    import signal

    want = tiny_campaign_reference
    cfg_path = tiny_campaign(tmp_path / "killed")
    env = {**os.environ, "SEMSCALE_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "semscale.cli", "run", str(cfg_path)]
    kills = {"ingest": r"t000_a: sem ingested", "label": r"random forest: \d+ trees on \d+ seeds",
             "train": r"epoch 2/3", "predict": r"unet/t000_a: \d+ of \d+ blocks computed",
             "robustness": r"robustness t000_a \(vs", "stats": r"stats: t000_a measured"}
    seen = []
    for stage, pattern in kills.items():
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
                                start_new_session=True)
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if re.search(pattern, line):
                os.killpg(proc.pid, signal.SIGKILL)  # the run and its Dask workers, mid-stage
                break
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, (stage, "".join(lines)[-3000:])
        seen.append("".join(lines))
    assert "clearing a stale writer lock" in "".join(seen[1:])
    assert "resumes from epoch" in seen[3]  # the run killed in `predict` resumed the training killed before
    final = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert final.returncode == 0, final.stderr[-3000:]
    assert "clearing a stale writer lock" in final.stderr
    assert_same_outputs(campaign_outputs(cfg_path.parent / "campaign.zarr"), want)
