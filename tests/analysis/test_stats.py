"""Phase fractions: dask counts equal numpy's; the campaign dataset and its files."""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from semscale.analysis.stats import campaign_stats, phase_counts, write_stats
from semscale.store import create_store


def test_phase_counts_blockwise_equal_numpy_and_ignore_255() -> None:
    lab = np.random.default_rng(0).integers(0, 4, (50, 70)).astype(np.uint8)
    lab[:5] = 255
    want = np.bincount(lab[lab != 255].ravel(), minlength=4)
    for chunks in ((50, 70), (16, 23), (7, 70)):
        np.testing.assert_array_equal(phase_counts(da.from_array(lab, chunks=chunks), n_classes=4).compute(), want)


def test_campaign_stats_and_outputs(tmp_path) -> None:
    store = create_store(tmp_path / "c.zarr", name="c", pixel_size_um=0.05)
    rng = np.random.default_rng(3)
    for i, t in enumerate((0.0, 20.0)):
        iid = f"t{i}"
        store.create_image(iid, shape=(32, 32), dtype=np.uint8, chunks=16,
                           attrs={"oxidation_min": t, "sample": "A", "role": "predict"})[:] = 1
        store.finish_image(iid, norm={"lo": 0.0, "hi": 1.0})
        pred = rng.integers(0, 4, (32, 32)).astype(np.uint8)
        g = store.prediction_group("m", iid, create=True)
        g.create_group("labels").create_array("0", shape=(32, 32), dtype="uint8", fill_value=255)[:] = pred
        g.attrs["semscale"] = {"complete": True}
        store.write_labels(iid, "truth", np.full((32, 32), i, np.uint8))
    ds = campaign_stats(store, model="m")
    assert list(ds["image"].values) == ["t0", "t1"]
    np.testing.assert_allclose(ds["fraction"].sum("phase").values, 1.0)
    np.testing.assert_array_equal(ds["fraction_truth"].values[1], [0, 1, 0, 0])
    assert "fraction_target" not in ds and list(ds["oxidation_min"].values) == [0.0, 20.0]
    out = write_stats(store, ds)
    back = xr.open_zarr(out["zarr"].rsplit("/", 1)[0], group="stats", consolidated=False)
    np.testing.assert_allclose(back["fraction"].values, ds["fraction"].values)
    assert (tmp_path / "c.zarr" / "report" / "phase_fractions.png").stat().st_size > 1000
    assert "t1" in (tmp_path / "c.zarr" / "report" / "phase_fractions.csv").read_text()
