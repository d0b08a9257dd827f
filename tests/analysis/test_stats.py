"""The campaign's statistics: the Dataset contract, storage that xarray opens as it is, the summary and its
errors, reruns that do nothing, and changed labels that are measured again."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from scipy import ndimage

from semscale.analysis.microstructure import measure
from semscale.analysis.stats import VARIABLES, campaign_stats, summarise, update_stats
from semscale.config import StatsConfig
from semscale.store import create_store, open_store

CFG = StatsConfig(tile_um=2.0, bootstrap=100)
PIXEL = 0.05
TIMES = {"t00": (0.0, "train"), "t10": (10.0, "predict"), "t20": (20.0, "predict")}
SHAPE = (600, 520)  # larger than one pyramid level, several chunks


def labels(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndimage.zoom(rng.integers(0, 4, (SHAPE[0] // 8, SHAPE[1] // 8)), 8, order=0).astype(np.uint8)


def put_prediction(store, image_id: str, lab: np.ndarray, *, tag: str = "a") -> None:
    g = store.create_predictions("m", image_id, n_classes=4, uncertainty=False, probabilities=False)
    store.prediction_arrays("m", image_id)["labels"][:] = lab
    g.attrs["semscale"] = {"params": {"tag": tag}, "complete": True}
    store.finish_predictions("m", image_id, changed=True)


def make_store(tmp_path: Path):
    store = create_store(tmp_path / "c.zarr", name="c", pixel_size_um=PIXEL)
    for k, (image_id, (t, role)) in enumerate(TIMES.items()):
        store.create_image(image_id, shape=SHAPE, dtype=np.uint8, chunks=256,
                           attrs={"oxidation_min": t, "sample": "A", "role": role, "sha256": f"sem{k}"})[:] = 1
        store.finish_image(image_id, norm={"lo": 0.0, "hi": 1.0})
        truth = labels(k)
        store.write_labels(image_id, "truth", truth, attrs={"sha256": f"truth{k}"})
        pred = truth.copy()
        pred[: 40 * (k + 1)] = np.where(pred[: 40 * (k + 1)] == 2, 1, pred[: 40 * (k + 1)])  # Ni read as NiO
        put_prediction(store, image_id, pred)
        if role == "train":
            store.write_labels(image_id, "target", truth, attrs={"method": "test"})
    return store


def test_dataset_contract(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    ds, measured = campaign_stats(store, CFG, model="m")
    assert measured == list(TIMES)
    assert set(ds.dims) == {"image", "phase", "pair", "quantile", "bound"}
    for coord in ("sample", "oxidation_min", "role", "trained"):
        assert ds[coord].dims == ("image",)
    assert ds["trained"].values.tolist() == [True, False, False]
    for name in VARIABLES:
        for suffix in ("", "_target", "_truth"):
            var = ds[name + suffix]
            assert var.dims == ("image", *VARIABLES[name][0])
            assert var.attrs["units"] and var.attrs["long_name"], name + suffix
    for key in ("Conventions", "title", "history", "source"):
        assert ds.attrs[key]
    # the numbers are those of the labels they name
    truth = store.labels("t10", "truth").compute()
    want = measure(truth, cfg=CFG, classes=store.classes, pixel_size_um=PIXEL)
    np.testing.assert_array_equal(ds["pixel_count_truth"].sel(image="t10").values, want["pixel_count"])
    np.testing.assert_allclose(ds["interface_density_ci_truth"].sel(image="t10").values, want["interface_density_ci"])
    assert np.isnan(ds["fraction_target"].sel(image="t10").values).all()  # no target there
    assert ds["pixel_count_target"].sel(image="t10").values.tolist() == [-1] * 4
    assert ds["fraction"].sel(image="t20", phase="NiO") > ds["fraction_truth"].sel(image="t20", phase="NiO")


def test_ensemble_spread_is_the_std_over_the_members_labels(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    g = store.create_predictions("m", "t10", n_classes=4, uncertainty=True, probabilities=False, members=3)
    own = [labels(20 + m) for m in range(3)]
    arrays = store.prediction_arrays("m", "t10")
    arrays["members"][:] = np.stack(own)
    arrays["labels"][:] = own[0]
    g.attrs["semscale"] = {"params": {"tag": "ens"}, "complete": True}
    ds, _ = campaign_stats(store, CFG, model="m")
    per = [measure(o, cfg=CFG, classes=store.classes, pixel_size_um=PIXEL) for o in own]
    for name in ("fraction", "tpb_density", "interface_density", "oxidation_degree"):
        want = np.std([p[name] for p in per], axis=0, ddof=1)
        np.testing.assert_allclose(ds[f"{name}_member_std"].sel(image="t10").values, want, rtol=1e-12)
        assert np.isnan(ds[f"{name}_member_std"].sel(image="t20").values).all()  # a single model there
    assert ds["fraction_member_std"].attrs["units"] == "1"


def test_summary_errors_use_only_the_images_not_trained_on(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    ds, _ = campaign_stats(store, CFG, model="m")
    s = summarise(ds)
    assert s["fraction"].dims == ("sample", "oxidation_min", "phase")
    assert s["oxidation_min"].values.tolist() == [0.0, 10.0, 20.0]
    assert s["trained"].values.tolist() == [[True, False, False]]
    err = 100 * (ds["fraction"] - ds["fraction_truth"]).sel(image=["t10", "t20"]).values
    np.testing.assert_allclose(s["fraction_mae_truth"].values, np.abs(err).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(s["fraction_rmse_truth"].values, np.sqrt((err**2).mean(axis=0)), rtol=1e-12)
    np.testing.assert_allclose(s["fraction_bias_truth"].values, err.mean(axis=0), rtol=1e-12)
    assert s["fraction_bias_truth"].sel(phase="NiO") > 0
    np.testing.assert_allclose(s["fraction_error_truth"].sel(sample="A", oxidation_min=20).values, err[1])
    assert np.isnan(s["fraction_mae_target"].values).all()  # the only target is on the training image
    for name in s.data_vars:
        assert ("long_name" in s[name].attrs and "units" in s[name].attrs) or s[name].dtype == bool, name


def test_stored_statistics_open_in_xarray_as_they_are(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    result = update_stats(store, StatsConfig(tile_um=2.0, bootstrap=100, netcdf=True), model="m")
    store.consolidate()
    ds, _ = campaign_stats(store, CFG, model="m")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = xr.open_zarr(store.path, group="stats")
        summary = xr.open_zarr(store.path, group="stats/summary")
        tree = xr.open_datatree(store.path, engine="zarr")
    for name in ("fraction", "fraction_ci_truth", "size_quantile", "pixel_count", "interface_density"):
        np.testing.assert_array_equal(back[name].values, ds[name].values)
        assert back[name].attrs["units"] == ds[name].attrs["units"]
    assert back["oxidation_min"].attrs["units"] == "min" and back["phase"].values.tolist() == list(store.classes)
    assert float(summary["n_images"].sel(oxidation_min=20, sample="A")) == 1  # lazily opened, then selected
    assert tree["stats"]["fraction"].shape == (3, 4)
    assert tree["images/t00/scale1/image"].shape == (300, 260)
    nc = xr.open_dataset(result["files"]["netcdf"])
    np.testing.assert_allclose(nc["tpb_density_truth"].values, ds["tpb_density_truth"].values)
    rows = list(csv.DictReader(open(result["files"]["csv"], encoding="utf-8")))
    assert len(rows) == 3 * 4 * 2 + 4  # images × phases × (model, truth), and the target of t00
    assert {r["source"] for r in rows} == {"model", "target", "truth"}
    value = next(r["fraction"] for r in rows if "." in r["fraction"])
    assert len(value.replace(".", "").replace("-", "").lstrip("0")) <= 6


def test_rerun_is_a_no_op_and_changed_labels_are_measured_again(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    first = update_stats(store, CFG, model="m")
    assert first["changed"] and first["measured"] == list(TIMES)
    stamp = {p: Path(p).stat().st_mtime_ns for p in (first["files"]["csv"], first["files"]["plot"],
                                                      store.path / "stats" / "zarr.json")}
    again = update_stats(open_store(store.path), CFG, model="m")
    assert not again["changed"] and again["measured"] == []
    assert stamp == {p: Path(p).stat().st_mtime_ns for p in stamp}

    new = labels(7)
    put_prediction(store, "t10", new, tag="b")  # re-predicted with other settings
    third = update_stats(open_store(store.path), CFG, model="m")
    assert third["changed"] and third["measured"] == ["t10"]
    back = xr.open_zarr(store.path, group="stats", consolidated=False)
    np.testing.assert_array_equal(back["pixel_count"].sel(image="t10").values, np.bincount(new.ravel(), minlength=4))
    old = campaign_stats(store, CFG, model="m")[0]
    np.testing.assert_array_equal(back["pixel_count"].sel(image="t20").values,
                                  old["pixel_count"].sel(image="t20").values)
    table = open(third["files"]["csv"], encoding="utf-8").read()
    assert str(int(np.bincount(new.ravel(), minlength=4)[0])) in table

    # other settings: every image again
    assert update_stats(open_store(store.path), StatsConfig(tile_um=3.0, bootstrap=50), model="m")["measured"] == list(TIMES)


@pytest.mark.slow
def test_a_worker_killed_mid_stats_changes_no_number(tmp_path: Path) -> None:
    """The measures run block by block on the cluster's workers; one of two worker processes SIGKILLed while
    they run: the statistics complete on the other and equal those of an undisturbed run, bit for bit."""
    from distributed import Client

    from tests.loopback import WorkerKiller, local_cluster

    (tmp_path / "calm").mkdir()
    (tmp_path / "hit").mkdir()
    calm, hit = make_store(tmp_path / "calm"), make_store(tmp_path / "hit")
    update_stats(calm, CFG, model="m")
    with local_cluster(n_workers=2, threads_per_worker=1, processes=True) as cluster, Client(cluster) as client:
        def measuring() -> bool:
            return any(client.processing().values())

        with WorkerKiller(client, measuring) as killer:
            update_stats(hit, CFG, model="m")
        assert killer.killed is not None, "the statistics ended before a worker could be killed"
        assert len(client.scheduler_info()["workers"]) >= 1
    want, got = calm.read_stats(), hit.read_stats()
    assert sorted(got.data_vars) == sorted(want.data_vars)
    for name in want.data_vars:
        np.testing.assert_array_equal(got[name].values, want[name].values, err_msg=name)
