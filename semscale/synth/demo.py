"""The embedded demo campaign (``semscale demo``): five small simulated images and a tiny U-Net."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from semscale.synth.campaign import write_campaign

if TYPE_CHECKING:
    from semscale.config import CampaignConfig

__all__ = ["DEMO_TRAINING", "write_demo_campaign"]

DEMO_TRAINING: dict[str, Any] = {
    "filters": [8, 16, 32, 64], "dropout": [0.0, 0.1, 0.1, 0.2], "patch_size": 128, "batch_size": 8,
    "epochs": 16, "steps_per_epoch": 40, "learning_rate": 2e-3, "test_tiles_fraction": 0.1,
}
"""A small U-Net and a short schedule so the demo finishes in minutes on two CPU cores."""


def write_demo_campaign(out: str | Path, *, size: int = 512, seed: int = 0) -> CampaignConfig:
    """Simulate the embedded demo campaign (5 images, 0–120 min, 3 with EDS) and return its config.

    Reuses an existing demo folder (the simulator is deterministic, and every stage skips finished work).
    """
    import yaml

    from semscale.config import load_config

    out = Path(out)
    path = out / "campaign.yaml"
    if not path.is_file():
        path = write_campaign(out, n_images=5, shape=(size, size), times=(0, 5, 20, 30, 120), seed=seed,
                              n_eds=3, name="semscale-demo")
        data = yaml.safe_load(path.read_text())
        data["training"] = {"name": "demo-unet", **DEMO_TRAINING, "seed": seed}
        data["inference"] = {"mode": "tile", "patch_size": 128}
        data["ingest"] = {"chunk_size": 256}
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_config(path)
