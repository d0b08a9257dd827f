"""CampaignStore on a real Zarr store on disk: images, labels, EDS, models, predictions, scratch."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from semscale.errors import StoreError
from semscale.store import create_store, open_store


@pytest.fixture()
def store(tmp_path):
    s = create_store(tmp_path / "c.zarr", name="c", pixel_size_um=0.05)
    arr = s.create_image("im", shape=(40, 60), dtype=np.uint8, chunks=16, attrs={"role": "train"})
    arr[:] = np.arange(40 * 60, dtype=np.uint16).reshape(40, 60) % 251
    s.finish_image("im", norm={"lo": 0.0, "hi": 250.0})
    return s


def test_images_round_trip_with_norm(store) -> None:
    assert store.image_ids() == ["im"] and store.has_image("im")
    np.testing.assert_array_equal(store.sem("im").compute()[:, :5], store.sem_array("im")[:, :5])
    x = store.sem_normalised("im").compute()
    assert x.dtype == np.float32 and x.max() == pytest.approx(1.0)
    with pytest.raises(StoreError, match="Expected image `nope`.*images: im"):
        store.image_group("nope")


def test_labels_write_drop_and_sources(store) -> None:
    lab = (np.arange(40 * 60).reshape(40, 60) % 4).astype(np.uint8)
    store.write_labels("im", "target", lab)
    assert store.label_names("im") == ["target"]
    np.testing.assert_array_equal(store.label_array("im", "target")[...], lab)
    arr, desc = store.label_source("im", "target")
    assert desc == "labels/target" and (arr.compute() == lab).all()
    store.record_metrics("im", "target", ref="truth", result={"accuracy": 0.5})
    assert store.label_attrs("im", "target")["metrics"]["truth"]["accuracy"] == 0.5
    store.drop_labels("im", "target")
    assert store.label_names("im") == []
    with pytest.raises(StoreError, match="Expected labels `target`"):
        store.label_array("im", "target")


def test_reopen_checks_campaign_and_mode(store, tmp_path) -> None:
    ro = open_store(store.path, mode="r")
    assert ro.classes == store.classes and ro.pixel_size_um == 0.05
    with pytest.raises(StoreError, match="classes"):
        create_store(store.path, name="c", classes=("a", "b"), pixel_size_um=0.05)
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(StoreError, match="not a semscale store"):
        open_store(tmp_path / "plain.zarr")
    with pytest.raises(StoreError, match="Expected a semscale store"):
        open_store(tmp_path / "missing.zarr")


def test_a_store_of_an_older_layout_is_refused_with_what_to_do(tmp_path) -> None:
    store = create_store(tmp_path / "old.zarr", name="o", pixel_size_um=0.05)
    store.create_image("a", shape=(8, 8), dtype=np.uint8)
    store.update_meta(layout=2)
    with pytest.raises(StoreError, match=r"Expected a semscale store of layout 3 .* Got layout 2 .* new store path"):
        open_store(tmp_path / "old.zarr")
