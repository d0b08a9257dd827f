"""The README's Python walk-through, ``examples/python_api.py``, run as a user runs it: on a copy of a
finished campaign, predicting on a real local cluster, reading the statistics with xarray and opening the
image in napari on a real Xvfb display."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from semscale.store import PHASE_COLORS

ROOT = Path(__file__).parents[1]


def test_the_python_api_example_runs_end_to_end(tiny_campaign_store: Path, tmp_path: Path) -> None:
    import imageio.v3 as iio

    from tests.xserver import xvfb

    campaign = tmp_path / "campaign"
    shutil.copytree(tiny_campaign_store.parent, campaign)
    shot = tmp_path / "napari.png"
    with xvfb() as env:
        done = subprocess.run([sys.executable, str(ROOT / "examples" / "python_api.py"), str(campaign / "campaign.yaml"),
                               "--napari", "--screenshot", str(shot)], capture_output=True, text=True, timeout=900,
                              env={**env, "SEMSCALE_PROGRESS": "0"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["model"] == "unet" and result["image"] == "t120_a"
    assert result["agreement_with_store"] == 1.0  # the cluster's prediction is the campaign's
    nio = result["nio_fraction"]
    assert nio["oxidation_min"] == [0.0, 30.0, 120.0] and len(nio["unet"]) == len(nio["truth"]) == 3
    assert all(lo <= v <= hi for v, (lo, hi) in zip(nio["unet"], nio["unet 95 % interval"]))
    assert "napari layers: t120_a, " in done.stderr and "labels/labels/unet" in done.stderr
    canvas = iio.imread(shot)[..., :3].reshape(-1, 3).astype(np.int32)
    # the prediction is shown at opacity 0.5 over the grey SEM: YSZ (the palette's yellow) tints pixels
    r, g, b = PHASE_COLORS["YSZ"][:3]
    assert r - b > 80 and g - b > 80
    yellowish = (canvas[:, 0] > canvas[:, 2] + 40) & (canvas[:, 1] > canvas[:, 2] + 20)
    assert yellowish.mean() > 0.05
