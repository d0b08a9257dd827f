"""What stages write beside the images: models and member files, predictions, scratch (real Zarr on disk)."""

from __future__ import annotations

import numpy as np
import pytest

from semscale.errors import ModelError, StoreError
from semscale.store import create_store


@pytest.fixture()
def store(tmp_path):
    s = create_store(tmp_path / "c.zarr", name="c", pixel_size_um=0.05)
    s.create_image("im", shape=(40, 60), dtype=np.uint8, chunks=16)[:] = 3
    s.finish_image("im", norm={"lo": 0.0, "hi": 250.0})
    return s


def test_models_predictions_and_scratch(store) -> None:
    with pytest.raises(ModelError, match="Expected trained members of model `unet`"):
        store.model_members("unet")
    folder = store.model_dir("unet", create=True)
    for k in (10, 2):
        store.member_file("unet", k).write_bytes(b"x")
    assert [p.name for p in store.model_members("unet")] == ["member_2.keras", "member_10.keras"]
    store.set_model_attrs("unet", summary={"n": 2})
    assert store.model_attrs("unet")["summary"] == {"n": 2} and folder.is_dir()

    g = store.create_predictions("unet", "im", n_classes=4, uncertainty=True, probabilities=False)
    store.prediction_arrays("unet", "im")["labels"][:] = 1
    store.prediction_arrays("unet", "im")["confidence"][:] = 0.75
    assert not store.has_predictions("unet", "im") and store.has_predictions("unet", "im", complete=False)
    with pytest.raises(StoreError, match="unfinished run"):
        store.predictions("unet", "im")
    g.attrs["semscale"] = {"complete": True}
    store.finish_predictions("unet", "im", changed=True)
    assert (store.predictions("unet", "im")["labels"].compute() == 1).all()
    # the predicted labels sit beside the image's own, so viewers open them with the image; they are not
    # one of the image's label sources (target, truth)
    assert store.root["images/im/labels"].attrs["ome"]["labels"][-1] == "unet" and store.label_names("im") == []
    assert store.root["images/im/labels/unet"].attrs["ome"]["multiscales"][0]["name"] == "unet"
    assert "multiscales" in store.root["predictions/unet/im/confidence"].attrs["ome"]
    with pytest.raises(StoreError, match="other than target or truth"):
        store.create_predictions("truth", "im", n_classes=4, uncertainty=False, probabilities=False)
    assert store.drop_predictions("im") == ["unet"] and not store.has_predictions("unet", "im", complete=False)
    assert "unet" not in store.root["images/im/labels"] and store.root["images/im/labels"].attrs["ome"]["labels"] == []

    assert store.scratch_group("labelling", "im") is None
    store.scratch_group("labelling", "im", create=True).create_array("a", shape=(2,), dtype="int8")
    assert "a" in store.scratch_group("labelling", "im")
    store.drop_scratch("labelling", "im")
    assert store.scratch_group("labelling", "im") is None


def test_prediction_outputs_are_shaped_like_the_sem_and_track_written_chunks(store) -> None:
    g = store.create_predictions("m", "im", n_classes=4, uncertainty=True, probabilities=True)
    arrays = store.prediction_arrays("m", "im")
    assert sorted(arrays) == ["confidence", "labels", "probabilities", "uncertainty"]
    assert arrays["labels"].shape == (40, 60) and arrays["probabilities"].shape == (4, 40, 60)
    assert arrays["labels"].chunks == store.sem_array("im").chunks
    assert not store.chunks_written(arrays["labels"]).any()
    arrays["labels"][0:16, 16:32] = 1
    written = store.chunks_written(arrays["labels"])
    assert written.shape == (3, 4) and written.sum() == 1 and written[0, 1]
    store.finish_predictions("m", "im", changed=True)
    assert "image-label" in store.root["images/im/labels/m"].attrs["ome"]
    assert "multiscales" in g["confidence"].attrs["ome"] and "multiscales" in g["uncertainty"].attrs["ome"]
