"""Tests of semscale.store.models: member files found by their names, sidecars validated, the model table."""

from __future__ import annotations

import json

import pytest

from semscale.errors import ModelError
from semscale.store import create_store
from semscale.store.models import (
    format_models,
    list_models,
    member_indices,
    member_paths,
    read_sidecar,
    sidecar_path,
)


@pytest.fixture()
def store(tmp_path, tiny_unet_path):
    """Model `m` with members 0 and 2 exported (copies of the tiny U-Net with metrics), member 5 in progress,
    a temporary file of a save in progress and a member whose sidecar is broken."""
    s = create_store(tmp_path / "s.zarr", name="s", pixel_size_um=0.04458)
    base = json.loads(sidecar_path(tiny_unet_path).read_text())
    for k, acc in ((0, 0.8), (2, 0.9)):
        paths = member_paths(s, "m", k)
        paths["model"].write_bytes(tiny_unet_path.read_bytes())
        side = {**base, "member": k, "val_accuracy": acc, "val_mean_iou": acc - 0.2, "best_epoch": 3,
                "epochs_trained": 4, "member_seed": 10 + k, "label_source": "target",
                "split": {"train_images": ["a", "b"]}}
        paths["sidecar"].write_text(json.dumps(side))
    state = member_paths(s, "m", 5)["state"]
    state.parent.mkdir(parents=True)
    state.write_text("{}")
    (s.model_dir("m") / "member_7.tmp.keras").write_bytes(b"partial")
    broken = member_paths(s, "m", 9)
    broken["model"].write_bytes(tiny_unet_path.read_bytes())
    broken["sidecar"].write_text("{not json")
    return s


def test_member_paths_are_the_store_layout(tmp_path):
    s = create_store(tmp_path / "s.zarr", name="s", pixel_size_um=0.04458)
    paths = member_paths(s, "u", 3)
    assert "u" in s.model_names()  # the model group exists, so tools see it
    assert paths["model"] == s.path / "models" / "u" / "member_3.keras"
    assert paths["sidecar"] == sidecar_path(paths["model"]) == s.path / "models" / "u" / "member_3.json"
    assert paths["state"] == s.path / "models" / "u" / "checkpoints" / "member_3_state.json"


def test_member_indices_by_kind(store):
    assert member_indices(store, "m", "model") == [0, 2, 9]  # not the temporary member_7.tmp.keras
    assert member_indices(store, "m", "state") == [5]
    assert member_indices(store, "m", "history") == []  # no history/ folder


def test_list_models_means_members_and_progress(store, caplog):
    (m,) = list_models(store)
    assert "member_9" in caplog.text  # the broken sidecar is skipped with a warning
    assert m["name"] == "m" and m["n_members"] == 2
    assert [r["member"] for r in m["members"]] == [0, 2]
    assert m["val_accuracy"] == pytest.approx(0.85) and m["val_mean_iou"] == pytest.approx(0.65)
    assert m["in_progress"] == [5]
    assert m["patch_size"] == 32 and m["label_source"] == "target" and m["train_images"] == ["a", "b"]
    assert m["members"][1]["seed"] == 12 and "sidecar" not in m["members"][0]
    table = format_models([m]).splitlines()
    assert len(table) == 1 + 2 + 1
    assert table[1].split()[:3] == ["m", "0", "0.8000"]
    assert "2 member(s)" in table[-1] and "in progress: [5]" in table[-1]
    assert format_models([]) == "no models"


def test_read_sidecar_errors(tmp_path, tiny_unet_path):
    with pytest.raises(ModelError, match="Expected a model file"):
        read_sidecar(tmp_path / "none.keras")
    lonely = tmp_path / "lonely.keras"
    lonely.write_bytes(b"x")
    with pytest.raises(ModelError, match="sidecar lonely.json"):
        read_sidecar(lonely)
    sidecar_path(lonely).write_text(json.dumps({"classes": ["a"]}))
    with pytest.raises(ModelError, match="Expected keys"):
        read_sidecar(lonely)
    assert read_sidecar(tiny_unet_path)["filters"] == [4, 8, 16]
