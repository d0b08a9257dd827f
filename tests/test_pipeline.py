"""Stage order of a campaign: stage names checked, the config recorded in the store, evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import yaml

from semscale.config import InferenceConfig, load_config
from semscale.errors import ConfigError
from semscale.pipeline import (
    STAGES,
    evaluate,
    predict_rate,
    run_campaign,
    segment_file,
    stored_config,
)


@pytest.fixture()
def config(tmp_path):
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, (48, 64)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", (truth * 40 + 20).astype(np.uint8))
    tifffile.imwrite(tmp_path / "a_truth.tif", truth)
    tifffile.imwrite(tmp_path / "a_target.tif", np.where(rng.random(truth.shape) < 0.9, truth, 0).astype(np.uint8))
    data = {"name": "p", "store": "p.zarr", "pixel_size_um": 0.05, "ingest": {"chunk_size": 32},
            "cluster": {"n_workers": 1, "dashboard_address": "127.0.0.1:0"},
            "images": [{"id": "a", "sem": "a.tif", "truth": "a_truth.tif", "target": "a_target.tif"}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    return load_config(tmp_path / "c.yaml")


def test_unknown_stage_is_a_config_error(config) -> None:
    with pytest.raises(ConfigError, match="stages"):
        run_campaign(config, stages=["ingest", "paint"])
    assert STAGES[0] == "ingest" and STAGES[-1] == "report"


def test_ingest_records_the_config_and_evaluate_scores_targets(config) -> None:
    summary = run_campaign(config, stages=["ingest", "evaluate"])
    assert summary["ingest"]["images"] == ["a"]
    from semscale.store import open_store

    store = open_store(config.store)
    assert stored_config(store).images[0].id == "a" and stored_config(store).ingest.chunk_size == 32
    total = evaluate(store, labels="target", ref="truth")["total"]
    truth = tifffile.imread(config.images[0].truth)
    target = tifffile.imread(config.images[0].target)
    assert total["accuracy"] == pytest.approx(float((truth == target).mean()))


def test_segment_file_needs_model_files(config) -> None:
    with pytest.raises(ConfigError, match="--model-file"):
        segment_file(config.images[0].sem, InferenceConfig(), model_files=[])


def test_the_predict_eta_rate_leaves_out_the_first_images_worker_start() -> None:
    assert predict_rate([]) is None
    assert predict_rate([(0.0, 0.0)]) is None
    assert predict_rate([(10e6, 20.0)]) == pytest.approx(0.5e6)  # only the first: its rate, start and all
    # a cold first image (20 s for 10 Mpx) and two warm ones (5 s each): the warm rate, not the mean of all
    assert predict_rate([(10e6, 20.0), (10e6, 5.0), (5e6, 2.5)]) == pytest.approx(2e6)
