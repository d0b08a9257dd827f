"""Tests of semscale.synth.campaign: the campaign writer (TIFFs + YAML) and add_to_store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from semscale.synth import add_to_store, simulate, write_campaign
from semscale.synth.campaign import eds_indices, image_seed, time_token


def test_time_tokens_and_eds_spread() -> None:
    assert [time_token(t) for t in (0, 5, 120, 2.5, 0.25)] == ["000", "005", "120", "2p5", "0p25"]
    assert eds_indices(5, n_eds=3) == {0, 2, 4}
    assert eds_indices(7, n_eds=None) == {0, 2, 4, 6}
    assert eds_indices(2, n_eds=None) == {0} and eds_indices(3, n_eds=0) == set()
    assert image_seed(0, index=1) != image_seed(0, index=2) != image_seed(1, index=1)


def test_add_to_store_round_trip(tmp_path: Path) -> None:
    from semscale.store.layout import create_store

    store = create_store(tmp_path / "s.zarr", name="t", pixel_size_um=0.04458)
    im = simulate((150, 170), oxidation_min=20, seed=3)
    add_to_store(store, "img", im, chunks=64, eds_chunks=16, role="train", sample="A")
    np.testing.assert_array_equal(np.asarray(store.sem("img")), im.sem)
    np.testing.assert_array_equal(np.asarray(store.labels("img", "truth")), im.truth)
    attrs = store.image_attrs("img")
    assert attrs["role"] == "train" and attrs["sample"] == "A" and attrs["oxidation_min"] == 20.0
    assert store.sem_array("img").chunks == (64, 64)
    eds = store.eds("img")
    assert sorted(eds) == ["Ni", "O", "Zr"] and store.eds_factor("img") == im.eds_factor
    for el, arr in eds.items():
        np.testing.assert_array_equal(np.asarray(arr), im.eds[el])
        assert arr.chunksize == (16, 16)
    assert store.eds_attrs("img")["simulated_shift_px"] == list(im.meta["eds_shift_px"])
    no_eds = simulate((64, 64), seed=1, with_eds=False)
    add_to_store(store, "plain", no_eds)
    assert store.eds_elements("plain") == [] and store.has_labels("plain", "truth")


# -- campaign writer ---------------------------------------------------------------------------------
def test_write_campaign(tmp_path) -> None:
    import tifffile
    import yaml

    path = write_campaign(tmp_path / "camp", n_images=3, shape=(101, 133), seed=11)
    assert path == tmp_path / "camp" / "campaign.yaml"
    text = path.read_text()
    cfg = yaml.safe_load(text)
    assert list(cfg) == ["name", "store", "pixel_size_um", "classes", "images"]
    assert cfg["name"] == "synthetic-oxidation" and cfg["store"] == "campaign.zarr"
    assert cfg["pixel_size_um"] == pytest.approx(0.04458)
    assert cfg["classes"] == ["pore", "NiO", "Ni", "YSZ"]
    images = cfg["images"]
    assert [e["id"] for e in images] == ["t000_a", "t002_a", "t005_a"]
    assert [e["oxidation_min"] for e in images] == [0, 2, 5]
    assert [e["role"] for e in images] == ["train", "predict", "train"]
    for e in images:
        assert e["sample"] == "A"
        keys = ["id", "sem", "sample", "oxidation_min", "eds", "truth", "role"]
        assert list(e) == (keys if e["role"] == "train" else [k for k in keys if k != "eds"])
        sem = tifffile.imread(path.parent / e["sem"])
        truth = tifffile.imread(path.parent / e["truth"])
        assert sem.shape == truth.shape == (101, 133) and sem.dtype == np.uint8
        assert truth.max() <= 3
        assert (path.parent / "data" / f"{e['id']}_meta.json").is_file()
        if e["role"] == "train":
            assert set(e["eds"]) == {"Ni", "O", "Zr"}
            for rel in e["eds"].values():
                assert not rel.startswith("/")
                assert tifffile.imread(path.parent / rel).shape == (26, 34)
    assert not (path.parent / "data" / "t002_a_Ni.tif").exists()
    # Deterministic, and each image has its own seed.
    again = write_campaign(tmp_path / "again", n_images=3, shape=(101, 133), seed=11)
    assert again.read_text() == text
    a = tifffile.imread(path.parent / "data" / "t000_a_sem.tif")
    np.testing.assert_array_equal(a, tifffile.imread(again.parent / "data" / "t000_a_sem.tif"))


def test_write_campaign_cycles_times_and_samples(tmp_path) -> None:
    import yaml

    path = write_campaign(
        tmp_path, n_images=5, shape=(40, 48), times=(0, 120), samples=("A", "b 2"), n_eds=2
    )
    images = yaml.safe_load(path.read_text())["images"]
    assert [e["id"] for e in images] == ["t000_a", "t120_a", "t000_b-2", "t120_b-2", "t000_a_2"]
    assert [e["sample"] for e in images] == ["A", "A", "b 2", "b 2", "A"]
    assert [e["role"] for e in images] == ["train", "predict", "predict", "predict", "train"]
    one = yaml.safe_load(write_campaign(tmp_path / "one", n_images=1, shape=(40, 48)).read_text())
    assert [e["role"] for e in one["images"]] == ["train"]
    with pytest.raises(ValueError, match="n_eds"):
        write_campaign(tmp_path / "bad", n_images=2, shape=(40, 48), n_eds=3)
