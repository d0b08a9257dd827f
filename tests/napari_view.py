"""Open one image group of a store in napari itself (run under an X server, e.g. Xvfb) and write what a user
sees: the layers napari made, each label layer's data, and a screenshot of every label layer shown alone.

``python -m tests.napari_view IMAGE_GROUP OUT_DIR`` → ``OUT_DIR/layers.json``, ``OUT_DIR/<layer>.npy`` and
``OUT_DIR/<layer>.png`` (RGBA canvas, the layer alone at opacity 1 over napari's black canvas).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(group: str, out: Path) -> None:
    import imageio.v3 as iio
    import napari

    viewer = napari.Viewer(show=True)
    viewer.open(group, plugin="napari-ome-zarr")
    layers, labels = [], []
    for layer in viewer.layers:
        kind = type(layer).__name__.lower()
        short = layer.name.rsplit("/", 1)[-1]
        level0 = np.asarray(layer.data[0] if layer.multiscale else layer.data)
        layers.append({"name": layer.name, "short": short, "kind": kind, "scale": [float(s) for s in layer.scale],
                       "shape": list(level0.shape)})
        if kind == "labels":
            np.save(out / f"{short}.npy", level0)
            labels.append((short, layer))
    viewer.reset_view()
    for short, layer in labels:
        for other in viewer.layers:
            other.visible = other is layer
        layer.opacity = 1.0
        iio.imwrite(out / f"{short}.png", viewer.screenshot(canvas_only=True, flash=False))
    (out / "layers.json").write_text(json.dumps(layers))
    viewer.close()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
