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

    g = store.prediction_group("unet", "im", create=True)
    g.create_group("labels").create_array("scale0/image", shape=(40, 60), dtype="uint8", fill_value=1)
    assert not store.has_predictions("unet", "im") and store.has_predictions("unet", "im", complete=False)
    with pytest.raises(StoreError, match="unfinished run"):
        store.predictions("unet", "im")
    g.attrs["semscale"] = {"complete": True}
    assert (store.predictions("unet", "im")["labels"].compute() == 1).all()
    assert store.drop_predictions("im") == ["unet"] and not store.has_predictions("unet", "im", complete=False)

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
    assert "ome" in g["labels"].attrs
