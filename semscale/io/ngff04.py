"""An NGFF 0.4 / Zarr v2 copy of a store's images, for viewers that read only Zarr v2 (older Fiji plugins,
MoBIE, BigDataViewer-based tools, ome-zarr-py < 0.9).

``<id>.ome.zarr`` holds the SEM pyramid (levels at ``0``, ``1``, …, ``/``-separated chunk keys) and, in its
``labels`` group, the image's target and truth and every model's predicted labels, each with its
``image-label`` colours and classes; ``<id>_<model>_<map>.ome.zarr`` holds a prediction's confidence and
uncertainty. Coordinate transformations are those of the store (µm; half-pixel translations on the levels).
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semscale.errors import StoreError
from semscale.store.ngff import label_metadata, level_path, write_dask
from semscale.store.nodes import array_at, ome_of

if TYPE_CHECKING:
    import zarr

    from semscale.store.layout import CampaignStore

log = logging.getLogger(__name__)

__all__ = ["NGFF_04", "export_ngff04"]

NGFF_04 = "0.4"


def _copy_multiscale(src: zarr.Group, dst: zarr.Group) -> dict[str, Any]:
    """Copy every pyramid level of ``src`` (``scale<n>/image``) to ``dst/<n>`` (Zarr v2, ``/`` chunk keys);
    return its multiscales entry rewritten for NGFF 0.4."""
    import dask.array as da

    levels = sorted(int(m.group(1)) for k in src.group_keys() if (m := re.fullmatch(r"scale(\d+)", k)))
    for n in levels:
        a = array_at(src, level_path(n))
        out = dst.create_array(str(n), shape=a.shape, chunks=a.chunks, dtype=a.dtype, fill_value=a.fill_value,
                               chunk_key_encoding={"name": "v2", "separator": "/"})
        write_dask(da.from_zarr(a), out)
    entry = copy.deepcopy(ome_of(src)["multiscales"][0])
    entry["version"] = NGFF_04
    for d in entry["datasets"]:
        d["path"] = str(int(re.fullmatch(r"scale(\d+)/image", d["path"]).group(1)))  # type: ignore[union-attr]
    return entry


def export_ngff04(store: CampaignStore, out_dir: Path, *, image_ids: Sequence[str] | None = None) -> list[Path]:
    """Write ``<id>.ome.zarr`` (and the prediction maps) in NGFF 0.4 / Zarr v2 into ``out_dir`` (created) for
    every complete image (or ``image_ids``); returns the groups written. Reads the store only."""
    import zarr

    ids = list(image_ids) if image_ids else store.image_ids()
    unknown = [i for i in ids if not store.has_image(i)]
    if unknown:
        raise StoreError(f"Expected images of {store.path}. Got unknown ids {', '.join(unknown)} (images: "
                         f"{', '.join(store.image_ids()) or 'none'}).")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    models = store.prediction_models()
    for image_id in ids:
        path = out_dir / f"{image_id}.ome.zarr"
        root = zarr.open_group(str(path), mode="w", zarr_format=2)
        root.attrs["multiscales"] = [_copy_multiscale(store.image_group(image_id), root)]
        names = store.label_names(image_id) + [m for m in models if store.has_predictions(m, image_id)]
        labels = root.create_group("labels")
        labels.attrs["labels"] = names
        for name in names:
            lg = labels.create_group(name)
            lg.attrs["multiscales"] = [_copy_multiscale(store.label_group(image_id, name), lg)]
            lg.attrs["image-label"] = {**label_metadata(store.classes), "version": NGFF_04}
        written.append(path)
        for model in models:
            if not store.has_predictions(model, image_id):
                continue
            for kind in ("confidence", "uncertainty"):
                src = store.map_group(model, image_id, kind)
                if src is None or "multiscales" not in ome_of(src):
                    continue
                map_path = out_dir / f"{image_id}_{model}_{kind}.ome.zarr"
                g = zarr.open_group(str(map_path), mode="w", zarr_format=2)
                g.attrs["multiscales"] = [_copy_multiscale(src, g)]
                written.append(map_path)
        log.info("export: %s -> %s (NGFF 0.4, labels %s)", image_id, path, ", ".join(names) or "none")
    return written
