"""Ingest into real Zarr stores on disk: formats, bit depths, streaming, EDS factors, labels, idempotence."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
import zarr

from semscale.config import IngestConfig, load_config
from semscale.errors import InputImageError
from semscale.io.ingest import ingest_campaign
from semscale.io.readers import label_lut, read_image
from semscale.store import open_store

PIXEL = 0.04458


def _campaign(tmp_path: Path, images: list[dict], **extra) -> Path:
    cfg = {"name": "t", "store": "c.zarr", "pixel_size_um": PIXEL, "images": images, **extra}
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _rand(shape, dtype, seed=0) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.random.default_rng(seed).integers(0, info.max, shape, dtype=dtype, endpoint=True)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape", [(301, 457), (64, 1000)])
def test_sem_round_trip_with_ngff_metadata(tmp_path: Path, dtype, shape) -> None:
    img = _rand(shape, dtype)
    tifffile.imwrite(tmp_path / "a.tif", img, compression="zlib")
    cfg = load_config(_campaign(tmp_path, [{"id": "a", "sem": "a.tif", "sample": "S1", "oxidation_min": 5}],
                                ingest={"chunk_size": 128}))
    store = ingest_campaign(cfg)

    sem = store.sem("a")  # one call -> dask array
    assert sem.dtype == dtype and sem.shape == shape and sem.chunksize == (min(128, shape[0]), 128)
    np.testing.assert_array_equal(sem.compute(), img)

    group = zarr.open_group(cfg.store / "images" / "a", mode="r")
    ome = group.attrs["ome"]
    ms = ome["multiscales"][0]
    assert [ax["name"] for ax in ms["axes"]] == ["y", "x"]
    assert {ax["unit"] for ax in ms["axes"]} == {"micrometer"}
    scales = [d["coordinateTransformations"][0]["scale"][0] for d in ms["datasets"]]
    assert scales[0] == pytest.approx(PIXEL)
    assert all(b == pytest.approx(2 * a) for a, b in zip(scales, scales[1:]))
    for level, d in enumerate(ms["datasets"]):
        assert group[d["path"]].shape[1] == -(-shape[1] // 2**level)

    attrs = group.attrs["semscale"]
    assert attrs["sample"] == "S1" and attrs["oxidation_min"] == 5 and attrs["complete"]
    assert attrs["source"].endswith("a.tif") and len(attrs["sha256"]) == 64
    lo, hi = np.percentile(img, [0.5, 99.5])
    assert attrs["norm"]["lo"] == pytest.approx(lo, abs=1.0 + 1e-3 * hi)
    assert attrs["norm"]["hi"] == pytest.approx(hi, abs=1.0 + 1e-3 * hi)
    assert len(ms["datasets"]) == (1 if max(shape) <= 512 else 2)
    if len(ms["datasets"]) == 1:
        return
    # the level-1 pyramid is the rounded 2x2 mean
    l1 = np.asarray(group["scale1/image"][:2, :2], dtype=float)
    ref = img[:4, :4].astype(float).reshape(2, 2, 2, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(l1, np.rint(ref))


def test_png_and_npy_inputs(tmp_path: Path) -> None:
    import imageio.v3 as iio

    img = _rand((97, 131), np.uint8, seed=3)
    iio.imwrite(tmp_path / "a.png", img)
    np.save(tmp_path / "b.npy", img.astype(np.uint16) * 200)
    cfg = load_config(_campaign(tmp_path, [{"id": "a", "sem": "a.png"}, {"id": "b", "sem": "b.npy"}]))
    store = ingest_campaign(cfg)
    np.testing.assert_array_equal(store.sem("a").compute(), img)
    np.testing.assert_array_equal(store.sem("b").compute(), img.astype(np.uint16) * 200)


def test_bad_images_give_clear_errors(tmp_path: Path) -> None:
    import imageio.v3 as iio

    rgb = _rand((20, 30, 3), np.uint8)
    iio.imwrite(tmp_path / "rgb.png", rgb)
    np.save(tmp_path / "f.npy", np.zeros((10, 10), np.float32))
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    with pytest.raises(InputImageError, match="Expected a grey image in .*rgb.png.*differing channels"):
        read_image(tmp_path / "rgb.png")
    with pytest.raises(InputImageError, match=r"8- or 16-bit unsigned grey image in .*f.npy. Got dtype float32"):
        read_image(tmp_path / "f.npy")
    with pytest.raises(InputImageError, match="single-channel .* 3 samples per pixel"):
        read_image(tmp_path / "rgb.tif")
    (tmp_path / "x.gif").write_bytes(b"GIF89a")
    with pytest.raises(InputImageError, match="Got suffix '.gif'"):
        read_image(tmp_path / "x.gif")


def test_eds_maps_stored_at_native_resolution(tmp_path: Path) -> None:
    sem = _rand((203, 150), np.uint8)
    maps = {el: _rand((51, 38), np.uint16, seed=i) for i, el in enumerate(("Ni", "O", "Zr"))}
    tifffile.imwrite(tmp_path / "sem.tif", sem)
    for el, m in maps.items():
        tifffile.imwrite(tmp_path / f"{el}.tif", m)
    tifffile.imwrite(tmp_path / "bad.tif", _rand((60, 38), np.uint16))
    images = [{"id": "a", "sem": "sem.tif", "eds": {el: f"{el}.tif" for el in maps}}]
    store = ingest_campaign(load_config(_campaign(tmp_path, images)))
    assert store.eds_factor("a") == 4
    assert store.image_attrs("a")["role"] == "train"
    for el, m in maps.items():
        np.testing.assert_array_equal(store.eds("a")[el].compute(), m)
    images[0]["eds"]["O"] = "bad.tif"
    with pytest.raises(InputImageError, match="share one shape"):
        ingest_campaign(load_config(_campaign(tmp_path, images)))


def test_label_grey_levels_and_indices(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    truth = rng.integers(0, 4, (90, 70)).astype(np.uint8)
    target = truth.copy()
    target[::7] = 255
    sem = _rand((90, 70), np.uint8)
    tifffile.imwrite(tmp_path / "sem.tif", sem)
    tifffile.imwrite(tmp_path / "truth.tif", (truth * 85).astype(np.uint8))  # 0/85/170/255 grey levels
    tifffile.imwrite(tmp_path / "target.tif", target)  # indices with 255 = unlabelled
    tifffile.imwrite(tmp_path / "t16.tif", (truth.astype(np.uint16) * 21845))  # 16-bit grey levels
    images = [{"id": "a", "sem": "sem.tif", "truth": "truth.tif", "target": "target.tif"},
              {"id": "b", "sem": "sem.tif", "truth": "t16.tif"}]
    store = ingest_campaign(load_config(_campaign(tmp_path, images)))
    np.testing.assert_array_equal(store.labels("a", "truth").compute(), truth)
    np.testing.assert_array_equal(store.labels("a", "target").compute(), target)
    np.testing.assert_array_equal(store.labels("b", "truth").compute(), truth)
    lg = zarr.open_group(store.path / "images/a/labels", mode="r")
    assert set(lg.attrs["ome"]["labels"]) == {"truth", "target"}
    colours = lg["truth"].attrs["ome"]["image-label"]["colors"]
    assert [c["label-value"] for c in colours][:4] == [0, 1, 2, 3]


def test_label_errors(tmp_path: Path) -> None:
    counts = np.zeros(256, np.int64)
    counts[[0, 3, 100]] = 5
    with pytest.raises(InputImageError, match=r"Got values \[100\]"):
        label_lut(counts, 4)
    tifffile.imwrite(tmp_path / "sem.tif", _rand((50, 40), np.uint8))
    tifffile.imwrite(tmp_path / "truth.tif", np.zeros((40, 50), np.uint8))
    with pytest.raises(InputImageError, match=r"SEM image's shape \(50, 40\). Got \(40, 50\)"):
        ingest_campaign(load_config(_campaign(tmp_path, [{"id": "a", "sem": "sem.tif", "truth": "truth.tif"}])))


def _chunk_mtimes(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_reingest_unchanged_is_noop_and_changes_are_detected(tmp_path: Path) -> None:
    from semscale.io.ingest import ingest_image

    sem = _rand((130, 90), np.uint8)
    truth = np.random.default_rng(1).integers(0, 4, sem.shape).astype(np.uint8)
    tifffile.imwrite(tmp_path / "sem.tif", sem)
    tifffile.imwrite(tmp_path / "truth.tif", truth)
    cfg = load_config(_campaign(tmp_path, [{"id": "a", "sem": "sem.tif", "truth": "truth.tif"}],
                                ingest={"chunk_size": 64}))
    store = ingest_campaign(cfg)
    # a stale prediction for this image must go when the SEM changes
    store.prediction_group("m", "a", create=True).attrs["semscale"] = {"complete": True}
    before = _chunk_mtimes(cfg.store / "images")

    assert ingest_image(store, cfg.images[0], IngestConfig(chunk_size=64)) == {"sem": "unchanged", "truth": "unchanged"}
    assert _chunk_mtimes(cfg.store / "images") == before

    sem2 = sem.copy()
    sem2[0, 0] ^= 0xFF
    tifffile.imwrite(tmp_path / "sem.tif", sem2)
    os.utime(tmp_path / "sem.tif")
    report = ingest_image(open_store(cfg.store), cfg.images[0], IngestConfig(chunk_size=64))
    assert report["sem"] == "changed" and report["truth"] == "ingested"
    store = open_store(cfg.store)
    np.testing.assert_array_equal(store.sem("a").compute(), sem2)
    np.testing.assert_array_equal(store.labels("a", "truth").compute(), truth)
    assert "a" not in store.root["predictions/m"]


def test_tiled_bigtiff_streams_with_flat_memory(tmp_path: Path) -> None:
    """Peak memory while ingesting a tiled BigTIFF does not grow with the image's height."""
    row = _rand((256, 2048), np.uint8, seed=2)
    peaks = {}
    for n in (2, 4, 16):  # the first run is a warm-up: one-off import costs
        img = np.tile(row, (n, 1))
        tifffile.imwrite(tmp_path / f"h{n}.tif", img, bigtiff=True, tile=(256, 256), compression="zlib")
        cfg = load_config(_campaign(tmp_path, [{"id": f"h{n}", "sem": f"h{n}.tif"}], ingest={"chunk_size": 256}))
        tracemalloc.start()
        store = ingest_campaign(cfg)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        np.testing.assert_array_equal(store.sem_array(f"h{n}")[::37, ::41], img[::37, ::41])
        del img
    grown = peaks[16] - peaks[4]
    size_step = (16 - 4) * row.nbytes
    assert grown < 0.1 * size_step, f"peak grew {grown / 2**20:.1f} MiB for {size_step / 2**20:.0f} MiB more image"
    assert peaks[16] < 16 * row.nbytes


def test_a_changed_input_drops_everything_derived_from_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Defect: a changed SEM dropped its predictions, but `stats/` and the report kept the old numbers. Now
    the image's predictions, its automatic target and the campaign's statistics and report all go, each
    with a warning, and what is left is consistent with the new inputs."""
    import logging

    from semscale.analysis.stats import update_stats
    from tests.analysis.test_stats import CFG, put_prediction

    sem = _rand((96, 80), np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", sem)
    tifffile.imwrite(tmp_path / "b.tif", _rand((96, 80), np.uint8, seed=1))
    tifffile.imwrite(tmp_path / "b_truth.tif", (np.arange(96 * 80).reshape(96, 80) % 4).astype(np.uint8))
    cfg = load_config(_campaign(tmp_path, [{"id": "a", "sem": "a.tif", "oxidation_min": 0},
                                           {"id": "b", "sem": "b.tif", "truth": "b_truth.tif", "oxidation_min": 5}]))
    store = ingest_campaign(cfg)
    labels = (np.arange(96 * 80).reshape(96, 80) % 4).astype(np.uint8)
    for image_id in ("a", "b"):
        put_prediction(store, image_id, labels)
    store.write_labels("a", "target", labels, attrs={"origin": "labelling"})
    update_stats(store, CFG, model="m")
    assert store.read_stats() is not None and (store.path / "report" / "stats.csv").exists()

    tifffile.imwrite(tmp_path / "b_truth.tif", np.zeros((96, 80), np.uint8))  # a label file changes
    with caplog.at_level(logging.WARNING, logger="semscale"):
        ingest_campaign(cfg)
    assert "b: its truth file" in caplog.text and "dropped the campaign's statistics and report" in caplog.text
    assert not store.has_stats() and sorted(p.name for p in (store.path / "report").iterdir()) == ["zarr.json"]
    assert store.has_predictions("m", "b") and store.has_labels("a", "target")  # not derived from the truth
    update_stats(store, CFG, model="m")

    sem[:10] = 0  # the SEM changes
    tifffile.imwrite(tmp_path / "a.tif", sem)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="semscale"):
        ingest_campaign(cfg)
    assert "a: its SEM" in caplog.text and "dropped its predictions by model m" in caplog.text
    assert "dropped its automatic target" in caplog.text
    assert not store.has_predictions("m", "a") and not store.has_labels("a", "target")
    assert store.has_predictions("m", "b") and not store.has_stats()
    np.testing.assert_array_equal(store.sem("a").compute(), sem)


def _tagged_sem(path: Path, um: float | None, seed: int = 0) -> str:
    """A SEM TIFF whose ImageJ tags record ``um`` µm per pixel (none when ``um`` is None)."""
    sem = _rand((48, 40), np.uint8, seed)
    if um is None:
        tifffile.imwrite(path, sem)
    else:
        tifffile.imwrite(path, sem, imagej=True, resolution=(1 / um, 1 / um), metadata={"unit": "um"})
    return str(path)


def test_the_pixel_size_comes_from_the_sem_tags_when_the_config_gives_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images = [{"id": f"i{k}", "sem": _tagged_sem(tmp_path / f"i{k}.tif", um, seed=k)}
              for k, um in enumerate((0.0375, 0.03751))]  # within the tags' rounding
    cfg = yaml.safe_load(_campaign(tmp_path, images).read_text())
    del cfg["pixel_size_um"]
    (tmp_path / "campaign.yaml").write_text(yaml.safe_dump(cfg))
    store = ingest_campaign(load_config(tmp_path / "campaign.yaml"))
    assert store.pixel_size_um == pytest.approx(0.0375, rel=1e-6)
    assert store.image_group("i0").attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0][
        "scale"] == pytest.approx([0.0375, 0.0375], rel=1e-6)

    # given in the config, it wins; a tag that disagrees is reported by image and file
    caplog.set_level("WARNING", logger="semscale")
    (tmp_path / "given").mkdir()
    other = [{"id": "far", "sem": _tagged_sem(tmp_path / "far.tif", 0.075)}]
    ingest_campaign(load_config(_campaign(tmp_path / "given", other)))
    assert "far: " in caplog.text and "far.tif records 0.075 µm per pixel" in caplog.text
    assert "pixel_size_um 0.04458 is used" in caplog.text


@pytest.mark.parametrize("sizes, message", [
    ((0.0375, 0.075), r"Expected one pixel size for the campaign's SEM images\. Got 0\.0375 µm for `i0` "
                      r"\(ImageJ resolution \(µm\)\) and 0\.075 µm for `i1`.*set `pixel_size_um:`"),
    ((0.0375, None), r"Expected `pixel_size_um` in the config, or a pixel size in the tags of every SEM TIFF\. "
                     r"Got none in .*i1\.tif; add `pixel_size_um: <µm per pixel>`"),
])
def test_sem_tags_without_one_pixel_size_are_refused_by_name(tmp_path: Path, sizes, message) -> None:
    from semscale.errors import ConfigError

    images = [{"id": f"i{k}", "sem": _tagged_sem(tmp_path / f"i{k}.tif", um, seed=k)} for k, um in enumerate(sizes)]
    cfg = yaml.safe_load(_campaign(tmp_path, images).read_text())
    del cfg["pixel_size_um"]
    (tmp_path / "campaign.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=message):
        ingest_campaign(load_config(tmp_path / "campaign.yaml"))
    assert not (tmp_path / "c.zarr").exists()  # refused before the store is made
