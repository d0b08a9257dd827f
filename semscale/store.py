"""The campaign store: one Zarr v3 hierarchy that every stage reads and writes.

Layout (documented for other tools in README.md)::

    <store>/                                  root group; attrs["semscale"]: name, classes, pixel_size_um, config
      images/<id>/                            OME-Zarr (NGFF 0.5) multiscale image group
        0, 1, 2, ...                          SEM pyramid (level 0 = full resolution, raw dtype)
        labels/                               NGFF labels group; attrs["ome"]["labels"] = [names]
          target/0, 1, ...                    uint8 0..K-1, 255 = unlabelled; NGFF image-label metadata
          truth/0, 1, ...                     (ground truth, synthetic data only)
      eds/<id>/<element>                      EDS maps at their native (lower) resolution
      models/<name>/                          group (attrs: summary); member_k.keras + member_k.json files
      predictions/<model>/<id>/               labels (uint8), confidence/uncertainty (float16), ...
      stats/                                  xarray Dataset (to_zarr)

Every array carries ``attrs["semscale"]`` with provenance; an image group's ``complete`` flag is set only
after all its arrays are written, so an interrupted ingest is detected and redone.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from semscale import CLASSES, IGNORE_LABEL
from semscale._version import __version__
from semscale.errors import StoreError

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CHUNK",
    "NGFF_VERSION",
    "PHASE_COLORS",
    "CampaignStore",
    "compressor",
    "create_store",
    "label_group_metadata",
    "label_metadata",
    "label_pyramid",
    "multiscales_metadata",
    "open_store",
    "write_dask",
]

NGFF_VERSION = "0.5"
DEFAULT_CHUNK = 1024
PYRAMID_MIN_SIZE = 512
"""Pyramid levels are added (each half the size) until the larger side is at most this many pixels."""
MAX_PYRAMID_LEVELS = 5

PHASE_COLORS: dict[str, tuple[int, int, int, int]] = {
    "pore": (20, 20, 20, 255),
    "NiO": (46, 139, 87, 255),
    "Ni": (70, 130, 230, 255),
    "YSZ": (240, 200, 60, 255),
}
_FALLBACK_COLORS = [(228, 26, 28, 255), (152, 78, 163, 255), (255, 127, 0, 255), (166, 86, 40, 255)]


def compressor() -> Any:
    """The fast lossless codec used for every array: Blosc zstd level 3 with bit-shuffle."""
    return zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")


def _axes() -> list[dict[str, str]]:
    return [
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]


def multiscales_metadata(
    name: str, pixel_size_um: float, n_levels: int, *, kind: str = "mean"
) -> dict[str, Any]:
    """NGFF 0.5 ``multiscales`` entry for a 2-D y/x pyramid with factor-2 levels ``0..n_levels-1``."""
    return {
        "name": name,
        "axes": _axes(),
        "datasets": [
            {
                "path": str(level),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [pixel_size_um * 2**level] * 2},
                ],
            }
            for level in range(n_levels)
        ],
        "type": kind,
        "metadata": {"description": f"factor-2 pyramid ({kind} downsampling), written by semscale"},
    }


def label_metadata(classes: Sequence[str]) -> dict[str, Any]:
    """NGFF ``image-label`` metadata: one colour and one class name per label value."""
    colors = []
    properties = []
    for value, cls in enumerate(classes):
        rgba = PHASE_COLORS.get(cls, _FALLBACK_COLORS[value % len(_FALLBACK_COLORS)])
        colors.append({"label-value": value, "rgba": list(rgba)})
        properties.append({"label-value": value, "class": cls})
    colors.append({"label-value": IGNORE_LABEL, "rgba": [0, 0, 0, 0]})
    properties.append({"label-value": IGNORE_LABEL, "class": "unlabelled"})
    return {"colors": colors, "properties": properties, "source": {"image": "../../"}, "version": NGFF_VERSION}


def _n_levels(shape: Sequence[int]) -> int:
    n, size = 1, max(shape)
    while size > PYRAMID_MIN_SIZE and n < MAX_PYRAMID_LEVELS:
        size = math.ceil(size / 2)
        n += 1
    return n


def _downsample(block: np.ndarray, *, kind: str) -> np.ndarray:
    """Halve a 2-D block: 2×2 mean (rounded, raw dtype) for images, top-left sample for labels."""
    if kind == "nearest":
        return block[::2, ::2]
    h, w = block.shape
    hp, wp = h + (h % 2), w + (w % 2)
    if (hp, wp) != (h, w):
        block = np.pad(block, ((0, hp - h), (0, wp - w)), mode="edge")
    m = block.reshape(hp // 2, 2, wp // 2, 2).astype(np.float32).mean(axis=(1, 3))
    return np.rint(m).astype(block.dtype)


class CampaignStore:
    """Handle on a campaign's Zarr store (a local directory).

    Use :func:`create_store` / :func:`open_store` to get one. Arrays come back as dask arrays, lazily.
    """

    def __init__(self, path: str | Path, root: zarr.Group) -> None:
        self.path = Path(path)
        self.root = root

    # --- campaign-level metadata -------------------------------------------------------------------
    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.root.attrs.get("semscale", {}))

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.meta.get("classes", CLASSES))

    @property
    def pixel_size_um(self) -> float:
        return float(self.meta.get("pixel_size_um", 1.0))

    def update_meta(self, **values: Any) -> None:
        meta = self.meta
        meta.update(values)
        self.root.attrs["semscale"] = meta

    # --- images ------------------------------------------------------------------------------------
    def image_ids(self, *, complete_only: bool = True) -> list[str]:
        if "images" not in self.root:
            return []
        ids = sorted(self.root["images"].group_keys())
        if complete_only:
            ids = [i for i in ids if self.image_attrs(i).get("complete")]
        return ids

    def has_image(self, image_id: str) -> bool:
        return f"images/{image_id}" in self.root and bool(self.image_attrs(image_id).get("complete"))

    def image_group(self, image_id: str) -> zarr.Group:
        try:
            return self.root[f"images/{image_id}"]
        except KeyError:
            known = ", ".join(self.image_ids(complete_only=False)) or "none"
            raise StoreError(
                f"Expected image `{image_id}` in store {self.path}. Got none (images: {known}). "
                "Run `semscale ingest CONFIG` first."
            ) from None

    def image_attrs(self, image_id: str) -> dict[str, Any]:
        return dict(self.image_group(image_id).attrs.get("semscale", {}))

    def set_image_attrs(self, image_id: str, **values: Any) -> None:
        g = self.image_group(image_id)
        meta = dict(g.attrs.get("semscale", {}))
        meta.update(values)
        g.attrs["semscale"] = meta

    def sem_array(self, image_id: str, level: int = 0) -> zarr.Array:
        return self.image_group(image_id)[str(level)]

    def sem(self, image_id: str, level: int = 0) -> Any:
        """The SEM image (raw dtype) as a dask array chunked like the store."""
        import dask.array as da

        return da.from_zarr(self.sem_array(image_id, level))

    def norm(self, image_id: str) -> dict[str, Any]:
        norm = self.image_attrs(image_id).get("norm")
        if not norm:
            raise StoreError(f"Image `{image_id}` in {self.path} has no normalisation attrs; re-ingest it.")
        return norm

    def sem_normalised(self, image_id: str, level: int = 0) -> Any:
        """The SEM image mapped to network input (float32) with the image's stored normalisation."""
        from semscale.norm import apply_norm

        norm = self.norm(image_id)
        return self.sem(image_id, level).map_blocks(
            apply_norm, norm, dtype=np.float32, meta=np.empty((0, 0), np.float32)
        )

    def create_image(
        self,
        image_id: str,
        *,
        shape: tuple[int, int],
        dtype: Any,
        chunks: int | tuple[int, int] = DEFAULT_CHUNK,
        attrs: Mapping[str, Any] | None = None,
    ) -> zarr.Array:
        """(Re)create ``images/<id>`` and return its empty level-0 array for the caller to fill.

        Call :meth:`finish_image` afterwards to build the pyramid and mark the image complete.
        """
        if isinstance(chunks, int):
            chunks = (chunks, chunks)
        chunks = (min(chunks[0], shape[0]), min(chunks[1], shape[1]))
        images = self.root.require_group("images")
        if image_id in images:
            del images[image_id]
        g = images.create_group(image_id)
        g.attrs["semscale"] = {**dict(attrs or {}), "complete": False}
        return g.create_array(
            "0", shape=shape, chunks=chunks, dtype=dtype, compressors=compressor(), fill_value=0,
            dimension_names=("y", "x"),
        )

    def finish_image(self, image_id: str, **attrs: Any) -> None:
        """Build the SEM pyramid, write NGFF metadata and set ``complete``."""
        g = self.image_group(image_id)
        n = _write_pyramid(g, kind="mean")
        ome = dict(g.attrs.get("ome", {}))
        ome.update(
            version=NGFF_VERSION,
            multiscales=[multiscales_metadata(image_id, self.pixel_size_um, n, kind="mean")],
        )
        g.attrs["ome"] = ome
        self.set_image_attrs(image_id, **attrs, n_levels=n, complete=True)

    # --- labels ------------------------------------------------------------------------------------
    def label_names(self, image_id: str) -> list[str]:
        g = self.image_group(image_id)
        if "labels" not in g:
            return []
        names = g["labels"].attrs.get("ome", {}).get("labels", [])
        return [n for n in names if self._label_complete(image_id, n)]

    def _label_complete(self, image_id: str, name: str) -> bool:
        key = f"images/{image_id}/labels/{name}"
        return key in self.root and bool(self.root[key].attrs.get("semscale", {}).get("complete"))

    def has_labels(self, image_id: str, name: str) -> bool:
        return self.has_image(image_id) and self._label_complete(image_id, name)

    def labels(self, image_id: str, name: str, level: int = 0) -> Any:
        """Label image ``name`` (e.g. ``"target"``, ``"truth"``) as a uint8 dask array."""
        import dask.array as da

        if not self.has_labels(image_id, name):
            raise StoreError(
                f"Expected labels `{name}` for image `{image_id}` in {self.path}. Got none "
                f"(present: {', '.join(self.label_names(image_id)) or 'none'})."
            )
        return da.from_zarr(self.root[f"images/{image_id}/labels/{name}/{level}"])

    def label_attrs(self, image_id: str, name: str) -> dict[str, Any]:
        return dict(self.root[f"images/{image_id}/labels/{name}"].attrs.get("semscale", {}))

    def set_label_attrs(self, image_id: str, name: str, **values: Any) -> None:
        g = self.root[f"images/{image_id}/labels/{name}"]
        meta = dict(g.attrs.get("semscale", {}))
        meta.update(values)
        g.attrs["semscale"] = meta

    def create_labels(
        self, image_id: str, name: str, *, attrs: Mapping[str, Any] | None = None
    ) -> zarr.Array:
        """(Re)create ``images/<id>/labels/<name>`` shaped and chunked like the SEM; returns level 0.

        Fill it (e.g. with ``dask.array.to_zarr`` or chunk-wise writes), then call :meth:`finish_labels`.
        """
        g = self.image_group(image_id)
        sem0 = g["0"]
        labels = g.require_group("labels")
        names = list(labels.attrs.get("ome", {}).get("labels", []))
        if name not in names:
            names.append(name)
        labels.attrs["ome"] = {"version": NGFF_VERSION, "labels": names}
        if name in labels:
            del labels[name]
        lg = labels.create_group(name)
        lg.attrs["semscale"] = {**dict(attrs or {}), "complete": False}
        return lg.create_array(
            "0", shape=sem0.shape, chunks=sem0.chunks, dtype="uint8", compressors=compressor(),
            fill_value=IGNORE_LABEL, dimension_names=("y", "x"),
        )

    def finish_labels(self, image_id: str, name: str, **attrs: Any) -> None:
        label_pyramid(self.root[f"images/{image_id}/labels/{name}"], name=name,
                      pixel_size_um=self.pixel_size_um, classes=self.classes)
        self.set_label_attrs(image_id, name, **attrs, complete=True)

    def write_labels(
        self, image_id: str, name: str, labels: Any, *, attrs: Mapping[str, Any] | None = None
    ) -> None:
        """Write a whole label image (numpy or dask, uint8, SEM-shaped) as ``labels/<name>``."""
        import dask.array as da

        arr = self.create_labels(image_id, name, attrs=attrs)
        if tuple(labels.shape) != tuple(arr.shape):
            raise StoreError(
                f"Expected labels `{name}` for `{image_id}` of shape {arr.shape}. Got {tuple(labels.shape)}."
            )
        src = labels if isinstance(labels, da.Array) else da.from_array(np.asarray(labels), chunks=arr.chunks)
        write_dask(src.astype(np.uint8), arr)
        self.finish_labels(image_id, name)

    # --- EDS ---------------------------------------------------------------------------------------
    def eds_elements(self, image_id: str) -> list[str]:
        key = f"eds/{image_id}"
        if key not in self.root:
            return []
        g = self.root[key]
        if not g.attrs.get("semscale", {}).get("complete"):
            return []
        return sorted(g.array_keys())

    def eds(self, image_id: str) -> dict[str, Any]:
        """EDS maps of an image at native resolution, ``{element: dask array}`` (empty if none)."""
        import dask.array as da

        return {el: da.from_zarr(self.root[f"eds/{image_id}/{el}"]) for el in self.eds_elements(image_id)}

    def eds_factor(self, image_id: str) -> int:
        g = self.root[f"eds/{image_id}"]
        return int(g.attrs["semscale"]["factor"])

    def eds_group(self, image_id: str, *, create: bool = False) -> zarr.Group:
        if create:
            eds = self.root.require_group("eds")
            if image_id in eds:
                del eds[image_id]
            return eds.create_group(image_id)
        return self.root[f"eds/{image_id}"]

    def write_eds(
        self, image_id: str, maps: Mapping[str, np.ndarray], *, factor: int, chunks: int = 512,
        attrs: Mapping[str, Any] | None = None,
    ) -> zarr.Group:
        """(Re)write the EDS element maps of ``image_id`` (2-D, ``factor`` × coarser than the SEM) as
        ``eds/<id>/<element>`` and mark the group complete; ``attrs`` are added to its ``semscale`` attrs."""
        g = self.eds_group(image_id, create=True)
        for el, m in maps.items():
            g.create_array(el, shape=m.shape, dtype=m.dtype, chunks=tuple(min(chunks, n) for n in m.shape),
                           compressors=compressor(), fill_value=0, dimension_names=("y", "x"))[:] = m
        g.attrs["semscale"] = {"factor": int(factor), "elements": sorted(maps), "complete": True, **dict(attrs or {})}
        return g

    # --- models and predictions ------------------------------------------------------------------
    def models_dir(self, name: str | None = None) -> Path:
        """Directory holding model files (``models/<name>``), created as a Zarr group so tools see it."""
        g = self.root.require_group("models")
        if name is None:
            return self.path / "models"
        g.require_group(name)
        return self.path / "models" / name

    def model_names(self) -> list[str]:
        return sorted(self.root["models"].group_keys()) if "models" in self.root else []

    def prediction_group(self, model: str, image_id: str, *, create: bool = False) -> zarr.Group:
        key = f"predictions/{model}/{image_id}"
        if create:
            return self.root.require_group(key)
        if key not in self.root:
            raise StoreError(f"Expected predictions `{key}` in {self.path}. Got none; run `semscale predict`.")
        return self.root[key]

    def prediction_labels(self, model: str, image_id: str) -> Any:
        """Predicted labels (uint8 dask array, level 0) of ``model`` for ``image_id``."""
        import dask.array as da

        g = self.prediction_group(model, image_id)
        if "labels" not in g or "0" not in g["labels"]:
            raise StoreError(
                f"Expected labels in predictions/{model}/{image_id} of {self.path}. Got none; run "
                "`semscale predict` for that image."
            )
        return da.from_zarr(g["labels"]["0"])

    def prediction_models(self) -> list[str]:
        return sorted(self.root["predictions"].group_keys()) if "predictions" in self.root else []

    # --- summary -----------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """What the store holds and which stages are complete, per image (used by ``semscale info``)."""
        images = []
        for image_id in self.image_ids(complete_only=False):
            a = self.image_attrs(image_id)
            arr = self.sem_array(image_id)
            preds = [
                m for m in self.prediction_models()
                if f"predictions/{m}/{image_id}" in self.root
                and self.root[f"predictions/{m}/{image_id}"].attrs.get("semscale", {}).get("complete")
            ]
            images.append({
                "id": image_id,
                "shape": list(arr.shape),
                "chunks": list(arr.chunks),
                "dtype": str(arr.dtype),
                "levels": a.get("n_levels", 1),
                "sample": a.get("sample"),
                "oxidation_min": a.get("oxidation_min"),
                "role": a.get("role"),
                "complete": bool(a.get("complete")),
                "eds": self.eds_elements(image_id),
                "labels": self.label_names(image_id) if a.get("complete") else [],
                "predictions": preds,
            })
        return {
            "path": str(self.path),
            **{k: v for k, v in self.meta.items() if k != "config"},
            "images": images,
            "models": self.model_names(),
            "stats": "stats" in self.root,
        }


def write_dask(src: Any, target: zarr.Array) -> None:
    """Compute dask array ``src`` into Zarr array ``target`` chunk-aligned (each task writes whole chunks)."""
    import dask.array as da

    src = src.rechunk(target.chunks) if src.chunksize != tuple(target.chunks) else src
    da.store(src, target, lock=False, compute=True)


def label_group_metadata(name: str, pixel_size_um: float, n_levels: int, classes: Sequence[str]) -> dict[str, Any]:
    """The ``ome`` attrs of an NGFF label group: multiscales (nearest) and image-label colours."""
    return {
        "version": NGFF_VERSION,
        "multiscales": [multiscales_metadata(name, pixel_size_um, n_levels, kind="nearest")],
        "image-label": label_metadata(classes),
    }


def label_pyramid(group: zarr.Group, *, name: str, pixel_size_um: float, classes: Sequence[str]) -> int:
    """Write the factor-2 pyramid (nearest) of a label group from its level ``0`` and its NGFF label
    metadata (:func:`label_group_metadata`); returns the level count."""
    n = _write_pyramid(group, kind="nearest")
    group.attrs["ome"] = label_group_metadata(name, pixel_size_um, n, classes)
    return n


def _write_pyramid(group: zarr.Group, *, kind: str) -> int:
    """Write levels 1.. of ``group`` from level 0; return the level count.

    Works one output chunk at a time (reading the 2×2 chunks of the level above it), so memory is a few
    chunks whatever the image size.
    """
    level0 = group["0"]
    n = _n_levels(level0.shape)
    for name in [k for k in group.array_keys() if k != "0"]:
        del group[name]
    prev = level0
    for level in range(1, n):
        shape = tuple(math.ceil(s / 2) for s in prev.shape)
        arr = group.create_array(
            str(level), shape=shape, chunks=tuple(min(c, s) for c, s in zip(level0.chunks, shape)),
            dtype=level0.dtype, compressors=compressor(), fill_value=level0.fill_value,
            dimension_names=("y", "x"),
        )
        cy, cx = arr.chunks
        for y in range(0, shape[0], cy):
            for x in range(0, shape[1], cx):
                block = prev[2 * y:2 * (y + cy), 2 * x:2 * (x + cx)]
                arr[y:y + cy, x:x + cx] = _downsample(np.asarray(block), kind=kind)
        prev = arr
    return n


def create_store(
    path: str | Path,
    *,
    name: str,
    classes: Sequence[str] = CLASSES,
    pixel_size_um: float,
    config: Mapping[str, Any] | None = None,
) -> CampaignStore:
    """Open the campaign store at ``path`` for writing, creating it if needed, and record campaign attrs.

    An existing store keeps its contents; its classes and pixel size must match.
    """
    path = Path(path)
    if (path / "zarr.json").exists():
        store = open_store(path, mode="r+")
        meta = store.meta
        if meta.get("classes") and list(meta["classes"]) != list(classes):
            raise StoreError(
                f"Store {path} was made for classes {meta['classes']}; the config says {list(classes)}. "
                "Use a new store path or fix `classes`."
            )
        if meta.get("pixel_size_um") and not math.isclose(meta["pixel_size_um"], pixel_size_um):
            raise StoreError(
                f"Store {path} has pixel_size_um={meta['pixel_size_um']}; the config says {pixel_size_um}."
            )
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        store = CampaignStore(path, zarr.open_group(str(path), mode="a", zarr_format=3))
    store.update_meta(
        name=name, classes=list(classes), pixel_size_um=float(pixel_size_um),
        semscale_version=__version__, **({"config": dict(config)} if config is not None else {}),
    )
    return store


def open_store(path: str | Path, *, mode: str = "r+") -> CampaignStore:
    """Open an existing campaign store (``mode`` ``"r"`` read-only or ``"r+"``)."""
    path = Path(path)
    if not (path / "zarr.json").exists():
        raise StoreError(
            f"Expected a semscale store (Zarr v3 group) at {path}. Got no zarr.json there. "
            "Create one with `semscale ingest CONFIG`."
        )
    root = zarr.open_group(str(path), mode=mode, zarr_format=3)
    if "semscale" not in root.attrs:
        raise StoreError(f"{path} is a Zarr group but not a semscale store (no `semscale` attrs).")
    return CampaignStore(path, root)
