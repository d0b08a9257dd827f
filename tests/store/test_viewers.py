"""A store made by `semscale run` as viewers and validators read it: the ome-zarr reader finds each SEM
image with its target, truth and predicted labels as named label images, confidence opens as an image of
its own, and ome-zarr-models validates the label images and the maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from semscale.store import PHASE_COLORS

IMAGES = ("t000_a", "t030_a", "t120_a")


def test_the_ome_zarr_reader_opens_each_image_with_every_label_image(tiny_campaign_store: Path) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    for image_id in IMAGES:
        nodes = list(Reader(parse_url(str(tiny_campaign_store / "images" / image_id)))())
        image = nodes[0]
        assert any(isinstance(s, Multiscales) for s in image.specs) and image.metadata["name"] == image_id
        labels = {n.metadata["name"]: n for n in nodes if any(isinstance(s, Label) for s in n.specs)}
        want = {"truth", "unet"} | ({"target"} if image_id != "t030_a" else set())
        assert set(labels) == want
        prediction = labels["unet"]
        assert prediction.data[0].shape == image.data[0].shape
        stored = zarr.open_group(tiny_campaign_store, mode="r")[f"images/{image_id}/labels/unet/scale0/image"][:]
        np.testing.assert_array_equal(np.asarray(prediction.data[0]), stored)
        colours = prediction.metadata["color"]  # label value -> RGBA (0..1), the store's palette
        np.testing.assert_allclose(colours[0], np.array(PHASE_COLORS["pore"]) / 255)


def test_confidence_is_an_image_that_opens_on_its_own(tiny_campaign_store: Path) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader

    (node, *_) = Reader(parse_url(str(tiny_campaign_store / "predictions" / "unet" / "t000_a" / "confidence")))()
    assert any(isinstance(s, Multiscales) for s in node.specs) and node.metadata["name"] == "unet confidence"
    values = np.asarray(node.data[0], np.float32)
    assert values.shape == (192, 192) and 0.25 <= values.min() and values.max() <= 1.0


def test_label_images_and_maps_validate_with_ome_zarr_models(tiny_campaign_store: Path) -> None:
    from ome_zarr_models.v05 import Image, ImageLabel

    root = zarr.open_group(tiny_campaign_store, mode="r")
    for image_id in IMAGES:
        for name in root[f"images/{image_id}/labels"].attrs["ome"]["labels"]:
            ImageLabel.from_zarr(root[f"images/{image_id}/labels/{name}"])
        Image.from_zarr(root[f"predictions/unet/{image_id}/confidence"])


def test_the_napari_ome_zarr_reader_gives_the_image_and_every_label_layer(tiny_campaign_store: Path) -> None:
    from napari_ome_zarr import napari_get_reader

    root = zarr.open_group(tiny_campaign_store, mode="r")
    for image_id in IMAGES:
        path = str(tiny_campaign_store / "images" / image_id)
        reader = napari_get_reader(path)
        assert reader is not None
        layers = reader(path)
        kinds = [kind for _, _, kind in layers]
        assert kinds[0] == "image" and kinds.count("image") == 1
        names = {kw["name"].rsplit("/", 1)[-1]: data for data, kw, kind in layers if kind == "labels"}
        assert set(names) == {"truth", "unet"} | ({"target"} if image_id != "t030_a" else set())
        np.testing.assert_array_equal(np.asarray(names["unet"][0]),
                                      root[f"images/{image_id}/labels/unet/scale0/image"][:])
        image_kw = layers[0][1]
        assert image_kw["scale"] == [0.04458, 0.04458]  # µm per pixel, as the config says


def test_an_ngff_04_export_opens_in_v2_readers(tiny_campaign_store: Path, tmp_path: Path) -> None:
    """`semscale export STORE OUT --ngff 0.4`: Zarr v2 groups that the ome-zarr and napari-ome-zarr readers
    open with the same pixels, labels and scale as the store."""
    import json

    from napari_ome_zarr import napari_get_reader
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    from semscale.cli import main

    out = tmp_path / "v2"
    assert main(["export", str(tiny_campaign_store), str(out), "--ngff", "0.4"]) == 0
    root = zarr.open_group(tiny_campaign_store, mode="r")
    for image_id in IMAGES:
        group = out / f"{image_id}.ome.zarr"
        zattrs = json.loads((group / ".zattrs").read_text())
        assert zattrs["multiscales"][0]["version"] == "0.4" and zattrs["multiscales"][0]["datasets"][0]["path"] == "0"
        assert json.loads((group / "0" / ".zarray").read_text())["dimension_separator"] == "/"
        nodes = list(Reader(parse_url(str(group)))())
        np.testing.assert_array_equal(np.asarray(nodes[0].data[0]), root[f"images/{image_id}/scale0/image"][:])
        names = {n.metadata.get("name") for n in nodes[2:]}
        assert names == {"truth", "unet"} | ({"target"} if image_id != "t030_a" else set())
        layers = napari_get_reader(str(group))(str(group))
        unet = next(data for data, kw, kind in layers if kind == "labels" and kw["name"].endswith("/unet"))
        np.testing.assert_array_equal(np.asarray(unet[0]), root[f"images/{image_id}/labels/unet/scale0/image"][:])
        assert (out / f"{image_id}_unet_confidence.ome.zarr" / ".zattrs").is_file()
