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
from semscale.errors import ModelError, StoreError
from semscale.store import paths
from semscale.store.ngff import (
    DEFAULT_CHUNK,
    NGFF_VERSION,
    _write_pyramid,
    compressor,
    label_group_metadata,
    label_pyramid,
    multiscales_metadata,
    write_dask,
)

log = logging.getLogger(__name__)

__all__ = ["CampaignStore", "create_store", "open_store"]


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
        if paths.IMAGES not in self.root:
            return []
        ids = sorted(self.root[paths.IMAGES].group_keys())
        if complete_only:
            ids = [i for i in ids if self.image_attrs(i).get("complete")]
        return ids

    def has_image(self, image_id: str) -> bool:
        return paths.image(image_id) in self.root and bool(self.image_attrs(image_id).get("complete"))

    def image_group(self, image_id: str) -> zarr.Group:
        try:
            return self.root[paths.image(image_id)]
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
        from semscale.kernels.norm import apply_norm

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
        images = self.root.require_group(paths.IMAGES)
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
        key = paths.label(image_id, name)
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
        return da.from_zarr(self.label_array(image_id, name, level))

    def label_array(self, image_id: str, name: str, level: int = 0) -> zarr.Array:
        """The Zarr array of label image ``name`` (raises StoreError if missing or incomplete)."""
        if not self.has_labels(image_id, name):
            raise StoreError(
                f"Expected labels `{name}` for image `{image_id}` in {self.path}. Got none "
                f"(present: {', '.join(self.label_names(image_id)) or 'none'}). "
                "Run `semscale label CONFIG` (or choose another label source)."
            )
        return self.root[paths.label_level(image_id, name, level)]

    def drop_labels(self, image_id: str, name: str) -> None:
        """Delete label image ``name`` of ``image_id`` and its entry in the NGFF labels list."""
        labels = self.image_group(image_id)["labels"]
        if name in labels:
            del labels[name]
        ome = dict(labels.attrs.get("ome", {}))
        ome["labels"] = [n for n in ome.get("labels", []) if n != name]
        labels.attrs["ome"] = ome

    def label_attrs(self, image_id: str, name: str) -> dict[str, Any]:
        return dict(self.root[paths.label(image_id, name)].attrs.get("semscale", {}))

    def set_label_attrs(self, image_id: str, name: str, **values: Any) -> None:
        g = self.root[paths.label(image_id, name)]
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
        label_pyramid(self.root[paths.label(image_id, name)], name=name,
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
        key = paths.eds(image_id)
        if key not in self.root:
            return []
        g = self.root[key]
        if not g.attrs.get("semscale", {}).get("complete"):
            return []
        return sorted(g.array_keys())

    def eds(self, image_id: str) -> dict[str, Any]:
        """EDS maps of an image at native resolution, ``{element: dask array}`` (empty if none)."""
        import dask.array as da

        return {el: da.from_zarr(self.root[f"{paths.eds(image_id)}/{el}"]) for el in self.eds_elements(image_id)}

    def eds_attrs(self, image_id: str) -> dict[str, Any]:
        return dict(self.root[paths.eds(image_id)].attrs.get("semscale", {}))

    def eds_factor(self, image_id: str) -> int:
        g = self.root[paths.eds(image_id)]
        return int(g.attrs["semscale"]["factor"])

    def eds_group(self, image_id: str, *, create: bool = False) -> zarr.Group:
        if create:
            eds = self.root.require_group(paths.EDS)
            if image_id in eds:
                del eds[image_id]
            return eds.create_group(image_id)
        return self.root[paths.eds(image_id)]

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
    def model_dir(self, name: str, *, create: bool = False) -> Path:
        """Folder of model ``name`` (``models/<name>``); ``create`` makes it a Zarr group so tools see it."""
        if create:
            self.root.require_group(paths.model(name))
        return self.path / paths.model(name)

    def member_file(self, name: str, k: int, kind: str = "model") -> Path:
        """File ``kind`` (``model``, ``sidecar``, ``history``, ``last``, ``best``, ``state``) of member ``k``."""
        return self.path / paths.member_file(name, k, kind)

    def model_members(self, name: str) -> list[Path]:
        """The exported ``member_k.keras`` files of model ``name`` (sorted by k); raises if there are none."""
        folder = self.model_dir(name)
        found = sorted(folder.glob("member_*.keras"), key=lambda p: int(p.stem.split("_")[-1]))
        if not found:
            known = ", ".join(self.model_names()) or "none"
            raise ModelError(
                f"Expected trained members of model `{name}` in {folder}. Got none (models: {known}); run "
                "`semscale train CONFIG` first."
            )
        return found

    def set_model_attrs(self, name: str, **values: Any) -> None:
        g = self.root.require_group(paths.model(name))
        meta = dict(g.attrs.get("semscale", {}))
        meta.update(values)
        g.attrs["semscale"] = meta

    def model_attrs(self, name: str) -> dict[str, Any]:
        key = paths.model(name)
        return dict(self.root[key].attrs.get("semscale", {})) if key in self.root else {}

    def model_names(self) -> list[str]:
        return sorted(self.root[paths.MODELS].group_keys()) if paths.MODELS in self.root else []

    def prediction_group(self, model: str, image_id: str, *, create: bool = False) -> zarr.Group:
        key = paths.prediction(model, image_id)
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
        return sorted(self.root[paths.PREDICTIONS].group_keys()) if paths.PREDICTIONS in self.root else []

    def has_predictions(self, model: str, image_id: str, *, complete: bool = True) -> bool:
        key = paths.prediction(model, image_id)
        if key not in self.root:
            return False
        return not complete or bool(self.root[key].attrs.get("semscale", {}).get("complete"))

    def predictions(self, model: str, image_id: str) -> dict[str, Any]:
        """Complete prediction outputs as dask arrays (``labels``, ``confidence``, ``uncertainty``, ...)."""
        import dask.array as da

        g = self.prediction_group(model, image_id)
        if not g.attrs.get("semscale", {}).get("complete"):
            raise StoreError(
                f"Expected complete predictions {model}/{image_id} in {self.path}. Got an unfinished run; "
                "rerun `semscale predict` to finish it."
            )
        out = {"labels": da.from_zarr(g["labels/0"])}
        for name in ("confidence", "uncertainty", "probabilities"):
            if name in g:
                out[name] = da.from_zarr(g[name])
        return out

    def drop_predictions(self, image_id: str) -> list[str]:
        """Delete every model's predictions of ``image_id``; returns the models that had some."""
        dropped = []
        for model in self.prediction_models():
            group = self.root[f"{paths.PREDICTIONS}/{model}"]
            if image_id in group:
                del group[image_id]
                dropped.append(model)
        return dropped

    # --- label sources (target/truth labels or a model's predictions) -----------------------------
    def _source_group(self, image_id: str, source: str | tuple[str, str]) -> tuple[zarr.Group, str]:
        kind, name = ("labels", source) if isinstance(source, str) else source
        if kind == "labels":
            self.label_array(image_id, name)  # raises a clear error when missing
            return self.root[paths.label(image_id, name)], f"labels/{name}"
        if kind == "predictions":
            return self.prediction_group(name, image_id), f"predictions/{name}"
        raise StoreError(f"Expected 'labels' or 'predictions' as label source kind. Got {kind!r}.")

    def label_source(self, image_id: str, source: str | tuple[str, str]) -> tuple[Any, str]:
        """(uint8 dask labels, description) of ``name`` / ``("labels", name)`` / ``("predictions", model)``."""
        kind, name = ("labels", source) if isinstance(source, str) else source
        arr = self.prediction_labels(name, image_id) if kind == "predictions" else self.labels(image_id, name)
        return arr, self._source_group(image_id, source)[1]

    def record_metrics(self, image_id: str, source: str | tuple[str, str], *, ref: str,
                       result: Mapping[str, Any]) -> None:
        """Keep ``result`` in the scored group's ``attrs["semscale"]["metrics"][ref]`` (no-op read-only)."""
        if self.root.read_only:
            return
        group = self._source_group(image_id, source)[0]
        meta = dict(group.attrs.get("semscale", {}))
        meta["metrics"] = {**dict(meta.get("metrics", {})), ref: dict(result)}
        group.attrs["semscale"] = meta

    # --- stats, report, scratch ---------------------------------------------------------------------
    @property
    def stats_group(self) -> str:
        """The Zarr group (relative to the store) of the campaign statistics (an xarray Dataset)."""
        return paths.STATS

    def has_stats(self) -> bool:
        return paths.STATS in self.root

    def report_dir(self) -> Path:
        """``report/`` (a Zarr group, so tools see it), created on first use."""
        self.root.require_group(paths.REPORT)
        return self.path / paths.REPORT

    def scratch_group(self, stage: str, image_id: str, *, create: bool = False) -> zarr.Group | None:
        """Intermediate results of ``stage`` for ``image_id`` (``scratch/<stage>/<id>``); None if absent."""
        key = paths.scratch(stage, image_id)
        if create:
            return self.root.require_group(key)
        return self.root[key] if key in self.root else None

    def drop_scratch(self, stage: str, image_id: str) -> None:
        key = paths.scratch(stage, image_id)
        if key in self.root:
            del self.root[key]

    # --- inference (helper) ---
    def create_predictions(
        self, model: str, image_id: str, *, n_classes: int, uncertainty: bool, probabilities: bool
    ) -> zarr.Group:
        """(Re)create the outputs of ``model`` for ``image_id``, shaped and chunked like the SEM: ``labels/0``
        (uint8, 255 = not yet predicted, NGFF image-label), ``confidence``, ``uncertainty`` (ensembles) and
        ``probabilities`` ``(K, H, W)`` (float16, NaN = not yet)."""
        sem = self.sem_array(image_id)
        g = self.prediction_group(model, image_id, create=True)
        for name in list(g.array_keys()) + list(g.group_keys()):
            del g[name]
        common = {"shape": sem.shape, "chunks": sem.chunks, "compressors": compressor(),
                  "dimension_names": ("y", "x")}
        lg = g.create_group("labels")
        lg.create_array("0", dtype="uint8", fill_value=IGNORE_LABEL, **common)
        lg.attrs["ome"] = label_group_metadata(f"{model}/{image_id}", self.pixel_size_um, 1, self.classes)
        for name in ["confidence"] + (["uncertainty"] if uncertainty else []):
            g.create_array(name, dtype="float16", fill_value=np.nan, **common)
        if probabilities:
            g.create_array("probabilities", shape=(n_classes, *sem.shape), chunks=(n_classes, *sem.chunks),
                           dtype="float16", fill_value=np.nan, compressors=compressor(),
                           dimension_names=("c", "y", "x"))
        return g

    def prediction_arrays(self, model: str, image_id: str) -> dict[str, zarr.Array]:
        """The level-0 output arrays of ``model`` for ``image_id`` that exist, by name (``labels``, ...)."""
        g = self.prediction_group(model, image_id)
        out: dict[str, zarr.Array] = {}
        for name, key in (("labels", "labels/0"), ("confidence", "confidence"), ("uncertainty", "uncertainty"),
                          ("probabilities", "probabilities")):
            arr = g.get(key)
            if isinstance(arr, zarr.Array):
                out[name] = arr
        return out

    def chunks_written(self, array: zarr.Array) -> np.ndarray:
        """Which chunks of ``array`` are stored (bool over its chunk grid); chunks never written read as the
        fill value."""
        folder = self.path / array.path
        have = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        grid = tuple(-(-n // c) for n, c in zip(array.shape, array.chunks))
        out = np.zeros(grid, bool)
        for coords in np.ndindex(*grid):
            out[coords] = array.metadata.encode_chunk_key(coords) in have
        return out

    def finish_predictions(self, model: str, image_id: str, *, changed: bool) -> None:
        """The label pyramid for viewers (napari, ome-zarr), rebuilt when labels ``changed`` or it is missing."""
        labels = self.prediction_group(model, image_id)["labels"]
        assert isinstance(labels, zarr.Group)
        if changed or "1" not in labels:
            label_pyramid(labels, name=f"{model}/{image_id}", pixel_size_um=self.pixel_size_um,
                          classes=self.classes)

    # --- summary -----------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """What the store holds and which stages are complete, per image (used by ``semscale info``)."""
        images = []
        for image_id in self.image_ids(complete_only=False):
            a = self.image_attrs(image_id)
            arr = self.sem_array(image_id)
            preds = [m for m in self.prediction_models() if self.has_predictions(m, image_id)]
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
            "stats": self.has_stats(),
        }


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
