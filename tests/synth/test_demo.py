"""Tests of semscale.synth.demo: the embedded demo campaign, and that importing it stays light."""

from __future__ import annotations

from pathlib import Path

import yaml

from semscale.synth.demo import DEMO_TRAINING, write_demo_campaign


def test_write_demo_campaign_and_reuse(tmp_path: Path) -> None:
    config = write_demo_campaign(tmp_path / "demo", size=64, seed=2)
    data = yaml.safe_load((tmp_path / "demo" / "campaign.yaml").read_text())
    assert data["name"] == "semscale-demo" and len(data["images"]) == 5
    assert [e["oxidation_min"] for e in data["images"]] == [0, 5, 20, 30, 120]
    assert sum("eds" in e for e in data["images"]) == 3
    assert data["training"] == {"name": "demo-unet", **DEMO_TRAINING, "seed": 2}
    assert config.training.patch_size == DEMO_TRAINING["patch_size"]
    assert config.ingest.chunk_size == 256 and config.inference.mode == "tile"
    sem = tmp_path / "demo" / "data" / "t000_a_sem.tif"
    before = sem.stat().st_mtime_ns
    again = write_demo_campaign(tmp_path / "demo", size=64, seed=2)
    assert sem.stat().st_mtime_ns == before  # reused, not rewritten
    assert [e.id for e in again.images] == [e.id for e in config.images]


def test_demo_lives_in_synth_and_the_pipeline_does_not_load_the_simulator() -> None:
    import subprocess
    import sys

    import semscale.synth

    assert semscale.synth.write_demo_campaign is write_demo_campaign
    code = "import sys, semscale.pipeline; print('semscale.synth' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
