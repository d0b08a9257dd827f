"""semscale from Python: run a campaign, predict an image on a Dask cluster, read the statistics with
xarray, open the image with its labels in napari.

    python examples/python_api.py CAMPAIGN.yaml [--image ID] [--napari [--screenshot PNG]]

``CAMPAIGN.yaml``: e.g. the one ``semscale demo`` or ``semscale synth out/c`` writes. Every stage skips
the work already done, so on a finished campaign this only reads. ``--napari`` opens the image with its
target, truth and predicted labels in napari (needs a display); with ``--screenshot`` it saves the canvas
and closes instead of waiting for the window to be closed. The test suite runs this script.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import semscale


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--image", default=None, help="image id (default: the store's last image)")
    ap.add_argument("--napari", action="store_true")
    ap.add_argument("--screenshot", type=Path, default=None)
    args = ap.parse_args(argv)

    # 1. The campaign: every option comes from the config's sections.
    cfg = semscale.load_config(args.config)
    semscale.run_campaign(cfg)                        # ingest → … → report; done stages are skipped
    store = semscale.open_store(cfg.store)
    model = cfg.inference.model or cfg.training.name
    image_id = args.image or store.image_ids()[-1]

    # 2. Predict one image on a Dask cluster (the config's: local workers on loopback, or an address).
    from semscale.runtime.cluster import get_client

    sem = store.sem(image_id)                         # dask array (raw grey levels), chunked like the store
    with get_client(cfg.cluster) as client:
        out = semscale.predict(sem, norm=store.norm(image_id), models=store.model_members(model),
                               cfg=cfg.inference)     # lazy: map_overlap over the chunks
        labels = client.compute(out["labels"]).result()
    stored = store.predictions(model, image_id)["labels"].compute()
    same = float((labels == stored).mean())           # the campaign's own prediction of that image

    # 3. The statistics as xarray: NiO fraction per image (model, with its 95 % interval) vs truth.
    import xarray as xr

    stats = xr.open_zarr(str(cfg.store), group="stats").sortby("oxidation_min")
    nio = {"oxidation_min": stats["oxidation_min"].values.tolist(),
           model: stats["fraction"].sel(phase="NiO").round(4).values.tolist(),
           f"{model} 95 % interval": stats["fraction_ci"].sel(phase="NiO").round(4).values.tolist()}
    if "fraction_truth" in stats:
        nio["truth"] = stats["fraction_truth"].sel(phase="NiO").round(4).values.tolist()

    result: dict[str, object] = {"image": image_id, "model": model, "agreement_with_store": same,
                                 "nio_fraction": nio}
    print(json.dumps(result, indent=1))

    # 4. napari: the SEM image with its target, truth and predicted labels as named label layers. It runs
    #    in a process of its own: with Qt on Mesa's software OpenGL (Xvfb, no GPU driver), a process that
    #    holds both TensorFlow and a napari viewer crashes, whichever comes first.
    if args.napari:
        group = Path(str(cfg.store)) / "images" / image_id
        shot = ["--screenshot", str(args.screenshot)] if args.screenshot else []
        subprocess.run([sys.executable, __file__, "--view", str(group), model, *shot], check=True,
                       stdout=sys.stderr)  # the viewer's chatter to stderr: stdout holds the result
    return result


def view(group: Path, *, show: str, screenshot: Path | None) -> None:
    """Open an image group of the store in napari (napari-ome-zarr), with label layer ``show`` visible over
    the SEM (the reader adds label layers hidden); with ``screenshot``, save the canvas and close, else
    wait until the window is closed."""
    import napari

    viewer = napari.Viewer()
    viewer.open(str(group), plugin="napari-ome-zarr")
    for layer in viewer.layers:
        if layer.name.rsplit("/", 1)[-1] == show:
            layer.visible, layer.opacity = True, 0.5
    print("napari layers:", ", ".join(layer.name for layer in viewer.layers), file=sys.stderr)
    if screenshot is None:
        napari.run()
        return
    import imageio.v3 as iio

    iio.imwrite(screenshot, viewer.screenshot(canvas_only=True, flash=False))
    viewer.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--view"]:
        view(Path(sys.argv[2]), show=sys.argv[3],
             screenshot=Path(sys.argv[5]) if sys.argv[4:5] == ["--screenshot"] else None)
    else:
        main()
