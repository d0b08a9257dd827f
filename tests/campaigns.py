"""A tiny campaign for end-to-end tests of the CLI, and every result array it makes, read from any store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml
import zarr

from semscale.cli import main
from semscale.store.location import StorePath, local_copy, store_path, zarr_store


def tiny_campaign(out: Path, *, store: str | None = None) -> Path:
    """A 3-image campaign (EDS on 2) with a tiny U-Net, small enough for several runs in one test; ``store``
    replaces its store path (e.g. an ``s3://`` URL)."""
    main(["synth", str(out), "--images", "3", "--shape", "192", "192", "--eds", "2", "--times", "0", "30", "120",
          "--seed", "3"])
    cfg_path = out / "campaign.yaml"
    data: dict[str, Any] = yaml.safe_load(cfg_path.read_text())
    data["training"] = {"filters": [4, 8], "dropout": [0, 0.1], "patch_size": 32, "batch_size": 4, "epochs": 3,
                        "steps_per_epoch": 4, "test_tiles_fraction": 0.2}
    data["inference"] = {"patch_size": 32}
    data["ingest"] = {"chunk_size": 64}
    data["stats"] = {"bootstrap": 50, "tile_um": 2.0}
    data["robustness"] = {"blur_sigma": [0, 1.5], "brightness": [1.3], "noise_sigma": [0.05],
                          "magnification": [0.5, 2.0]}
    data["report"] = {"overlay_px": 96, "timing_px": 64, "dpi": 60}
    data["cluster"] = {"n_workers": 1, "threads_per_worker": 1, "gpu": "off", "dashboard_address": "127.0.0.1:0"}
    if store is not None:
        data["store"] = store
    cfg_path.write_text(yaml.safe_dump(data, sort_keys=False))
    return cfg_path


def campaign_outputs(store: str | StorePath) -> dict[str, np.ndarray]:
    """Every result array of a finished campaign: targets, predictions, statistics, the robustness sweep and the
    model's weights."""
    import keras
    import xarray as xr

    where = store_path(store)
    root = zarr.open_group(zarr_store(where, read_only=True), mode="r")
    out: dict[str, np.ndarray] = {}
    for image_id in root["images"].group_keys():
        for name in ("target", "truth"):
            key = f"images/{image_id}/labels/{name}/scale0/image"
            if key in root:
                out[key] = root[key][:]
        for key in (f"images/{image_id}/labels/unet/scale0/image", f"predictions/unet/{image_id}/confidence/scale0/image"):
            out[key] = root[key][:]
    with xr.open_zarr(zarr_store(where, read_only=True), group="stats", consolidated=False) as ds:
        for name, var in ds.data_vars.items():
            out[f"stats/{name}"] = var.values
    with xr.open_zarr(zarr_store(where, read_only=True), group="robustness/unet", consolidated=False) as ds:
        out |= {f"robustness/{name}": var.values for name, var in ds.data_vars.items()}
    with local_copy(where / "models" / "unet" / "member_0.keras") as member:
        model = keras.saving.load_model(member, compile=False)
    out |= {f"weights/{k}": w for k, w in enumerate(model.get_weights())}
    return out


def assert_same_outputs(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    """Every result array of ``got`` bit-identical to ``want``'s; on a difference, name every differing array
    (with its share of differing elements), so that a failure shows which stage first went apart (targets,
    the model's weights, its predictions, the robustness sweep, the statistics)."""
    assert sorted(got) == sorted(want)
    differ = {}
    for key, value in want.items():
        a, b = np.asarray(got[key]), np.asarray(value)
        if a.shape != b.shape or not np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
            differ[key] = "shape" if a.shape != b.shape else f"{np.mean(a != b):.1%} of elements"
    assert not differ, f"{len(differ)} of {len(want)} arrays differ: {differ}"
