"""NGFF metadata and pyramids: levels halve, labels stay nearest, memory-bounded chunk-wise writes."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from semscale.store import ngff


def test_pyramid_levels_halve_with_mean_and_nearest(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(ngff, "PYRAMID_MIN_SIZE", 16)
    g = zarr.open_group(str(tmp_path / "p.zarr"), mode="w")
    data = np.random.default_rng(0).integers(0, 255, (37, 70)).astype(np.uint8)
    g.create_array("scale0/image", shape=data.shape, chunks=(16, 16), dtype="uint8", fill_value=0)[:] = data
    n = ngff._write_pyramid(g, kind="mean")
    assert n == 4
    lvl1 = np.asarray(g["scale1/image"][...])
    assert lvl1.shape == (19, 35)
    pad = np.pad(data, ((0, 1), (0, 0)), mode="edge").astype(np.float32)
    np.testing.assert_array_equal(lvl1, np.rint(pad.reshape(19, 2, 35, 2).mean(axis=(1, 3))).astype(np.uint8))
    labels = zarr.open_group(str(tmp_path / "l.zarr"), mode="w")
    labels.create_array("scale0/image", shape=data.shape, chunks=(16, 16), dtype="uint8", fill_value=255)[:] = data % 4
    ngff.label_pyramid(labels, name="t", pixel_size_um=0.1, classes=("pore", "NiO", "Ni", "YSZ"))
    np.testing.assert_array_equal(labels["scale1/image"][...], (data % 4)[::2, ::2])
    ms = labels.attrs["ome"]["multiscales"][0]
    assert ms["type"] == "nearest" and [d["path"] for d in ms["datasets"]] == [f"scale{i}/image" for i in range(4)]
    assert ms["datasets"][2]["coordinateTransformations"][0]["scale"] == [0.4, 0.4]
    # a level-n pixel's centre lies (2^n - 1)/2 level-0 pixels in: level 2 at 1.5 px of 0.1 µm
    shifts = [d["coordinateTransformations"][1]["translation"] for d in ms["datasets"]]
    assert shifts == [[0.0, 0.0], [0.05, 0.05], [pytest.approx(0.15)] * 2, [pytest.approx(0.35)] * 2]


def test_float_maps_are_averaged_without_rounding(tmp_path) -> None:
    g = zarr.open_group(str(tmp_path / "m.zarr"), mode="w")
    g.create_array("scale0/image", shape=(1100, 40), chunks=(256, 40), dtype="float16", fill_value=np.nan)[:] = 0.3
    n = ngff.image_pyramid(g, name="conf", pixel_size_um=0.1)
    assert n == 3 and g.attrs["ome"]["multiscales"][0]["name"] == "conf"
    np.testing.assert_allclose(np.asarray(g["scale1/image"][...], np.float32), 0.3, atol=1e-3)


def test_label_colours_cover_every_class_and_unlabelled() -> None:
    meta = ngff.label_metadata(("pore", "NiO", "Ni", "YSZ", "extra"))
    values = [c["label-value"] for c in meta["colors"]]
    assert values == [0, 1, 2, 3, 4, 255]
    assert meta["properties"][1]["class"] == "NiO"
