"""End to end: the generalisation protocol (benchmarks/generalisation.py) on a tiny campaign."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import semscale

ROOT = Path(__file__).resolve().parents[1]
TIMES = (0, 5, 20, 120)
EDS_TIMES = (0, 120)
RECIPE_SETS = ("filters=[4, 8, 16]", "dropout=[0, 0, 0]", "patch_size=64", "batch_size=4", "epochs=2",
               "steps_per_epoch=5", "budget_min=5", "synthetic_images=4")
"""The cpu recipe, written into the campaign config as a user would, made tiny."""


@pytest.fixture(scope="module")
def protocol(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("generalisation")
    out = work / "result.json"
    cmd = [sys.executable, "benchmarks/generalisation.py", "--setting", "overlap", "--size", "192",
           "--times", *map(str, TIMES), "--eds-times", *map(str, EDS_TIMES), "--recipe", "cpu",
           *[a for kv in RECIPE_SETS for a in ("--set", kv)],
           "--workdir", str(work / "campaign"), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "(b) U-Net, images never seen" in done.stderr  # the markdown table, on stderr
    return {"result": json.loads(out.read_text()), "work": work}


@pytest.mark.slow
def test_one_row_per_time_with_scores_in_range(protocol: dict[str, Any]) -> None:
    result = protocol["result"]
    assert result["setting"] == "overlap"
    assert [r["time_min"] for r in result["rows"]] == [float(t) for t in TIMES]
    for row in result["rows"]:
        assert (row["targets"] is not None) == (row["time_min"] in EDS_TIMES) == row["eds"]
        for who in ("targets", "unet"):
            s = row[who]
            if s is not None:
                assert 0.0 <= s["accuracy"] <= 1.0 and 0.0 <= s["mean_iou"] <= 1.0
                assert 0.0 <= s["nio_abs_error_pt"] <= 100.0
    for key in ("targets_on_eds", "unet_on_unseen", "unet_on_eds"):
        total = result["totals"][key]
        assert total["n_images"] == 2
        assert 0.0 <= total["accuracy"] <= 1.0 and 0.0 <= total["mean_iou"] <= 1.0


@pytest.mark.slow
def test_nio_mae_matches_the_stored_labels(protocol: dict[str, Any]) -> None:
    result = protocol["result"]
    store = semscale.open_store(result["store"], mode="r")

    def nio(labels: np.ndarray) -> float:
        labelled = labels != semscale.IGNORE_LABEL
        return float((labels[labelled] == 1).sum() / labelled.sum())

    totals = result["totals"]
    errors = {"unet": [], "targets": []}
    for image_id in totals["unseen_ids"]:
        truth = np.asarray(store.labels(image_id, "truth"))
        pred = np.asarray(store.predictions("unet", image_id)["labels"])
        errors["unet"].append(100 * abs(nio(pred) - nio(truth)))
        assert float((pred == truth).mean()) == pytest.approx(
            next(r["unet"]["accuracy"] for r in result["rows"] if r["id"] == image_id))
    for image_id in totals["eds_ids"]:
        truth = np.asarray(store.labels(image_id, "truth"))
        errors["targets"].append(100 * abs(nio(np.asarray(store.labels(image_id, "target"))) - nio(truth)))
    assert totals["unet_on_unseen"]["nio_mae_pt"] == pytest.approx(np.mean(errors["unet"]), abs=1e-9)
    assert totals["targets_on_eds"]["nio_mae_pt"] == pytest.approx(np.mean(errors["targets"]), abs=1e-9)


@pytest.mark.slow
def test_eds_images_and_never_seen_images_are_kept_apart(protocol: dict[str, Any]) -> None:
    result = protocol["result"]
    store = semscale.open_store(result["store"], mode="r")
    unseen, eds = set(result["totals"]["unseen_ids"]), set(result["totals"]["eds_ids"])
    assert len(unseen) == len(TIMES) - len(EDS_TIMES) and len(eds) == len(EDS_TIMES)
    assert not unseen & eds
    for image_id in unseen:
        assert store.eds_elements(image_id) == []  # no EDS map reached the store ...
        assert not store.has_labels(image_id, "target")  # ... so no target to train on
        assert store.image_attrs(image_id)["role"] == "predict"
        assert not list((protocol["work"] / "campaign" / "data").glob(f"{image_id}_Ni.tif"))
    for image_id in eds:
        assert store.eds_elements(image_id) and store.image_attrs(image_id)["role"] == "train"


@pytest.mark.slow
def test_the_recipe_is_written_as_a_user_would_and_compared(protocol: dict[str, Any]) -> None:
    from semscale.config import TrainingConfig

    result = protocol["result"]
    cfg = semscale.load_config(protocol["work"] / "campaign" / "campaign.yaml")
    assert cfg.training.recipe == "cpu" and cfg.training.lr_schedule == "cosine"  # from the recipe
    assert cfg.training == TrainingConfig.from_recipe("cpu", name="unet", seed=0, filters=(4, 8, 16),
                                                      dropout=(0.0, 0.0, 0.0), patch_size=64, batch_size=4,
                                                      epochs=2, steps_per_epoch=5, budget_min=5.0,
                                                      synthetic_images=4)
    assert result["config_training"]["recipe"] == "cpu" and result["config_training"]["budget_min"] == 5
    (member,) = result["members"]
    assert member["epochs_trained"] == 2 and member["stopped"] is None and member["train_minutes"] < 5
    sampler = json.loads(Path(member["path"]).with_suffix(".json").read_text())["sampler"]
    # 0.9 of a batch of 4 rounds to all 4; one window of each batch stays the campaign's
    assert cfg.training.synthetic_levels == "campaign" and sampler["synthetic_per_batch"] == 3
    base = sampler["synthetic_levels"]["base"]  # measured on this campaign's targets: NiO < Ni < YSZ
    assert base[0] == 0.0 and 0.0 < base[1] < base[2] < base[3]
    offsets = json.loads(Path(member["path"]).with_suffix(".json").read_text())["class_offsets"]
    assert offsets["setting"]["levels"][0] == pytest.approx(base, abs=0.01)  # fitted at the same levels
    assert offsets["setting"]["images"] == 16 and len(offsets["offsets"]) == 4
    assert set(result["seconds"]) >= {"label", "train", "predict"}
    table = subprocess.run([sys.executable, "benchmarks/generalisation.py", "compare",
                            str(protocol["work"] / "result.json")], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout
    unseen = result["totals"]["unet_on_unseen"]
    assert f"{100 * unseen['accuracy']:.2f} %" in table and '"recipe":"cpu"' in table
