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
