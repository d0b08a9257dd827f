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
      predictions/<model>/<id>/               confidence/uncertainty (float16, NGFF images), ...; the labels
                                              (uint8) at images/<id>/labels/<model>
      stats/                                  xarray Dataset (to_zarr)

Every array carries ``attrs["semscale"]`` with provenance; an image group's ``complete`` flag is set only
after all its arrays are written, so an interrupted ingest is detected and redone.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import zarr

from semscale import CLASSES, IGNORE_LABEL
from semscale._version import __version__
from semscale.errors import StoreError
from semscale.store import paths
from semscale.store.location import StorePath, is_remote, store_path, writable, zarr_store
from semscale.store.lock import writer_lock
from semscale.store.ngff import (
    DEFAULT_CHUNK,
    NGFF_VERSION,
    _write_pyramid,
    compressor,
    label_pyramid,
    level_path,
    multiscales_metadata,
    write_dask,
)
from semscale.store.nodes import array_at, attrs_of, group_at, ome_of, set_attrs
from semscale.store.outputs import StoreOutputs

if TYPE_CHECKING:
    import dask.array as da

log = logging.getLogger(__name__)

__all__ = ["LAYOUT", "CampaignStore", "create_store", "open_store"]

LAYOUT = 3
"""Version of the store layout. 2: pyramid levels at ``scale<n>/image`` (one array per group, so xarray
opens the whole store); per-image statistics in ``stats/``, the per-time summary in ``stats/summary``.
3: a model's predicted labels at ``images/<id>/labels/<model>`` (beside the image's own, so viewers open
them with the image); confidence and uncertainty NGFF images; half-pixel translations on pyramid levels."""


class CampaignStore(StoreOutputs):
    """Handle on a campaign's Zarr store (a local folder or an fsspec URL, :mod:`semscale.store.location`).

    Use :func:`create_store` / :func:`open_store` to get one. Arrays come back as dask arrays, lazily.
    """

    def __init__(self, path: str | StorePath, root: zarr.Group) -> None:
        self.path: StorePath = store_path(path)
        self.root = root

    def __repr__(self) -> str:
        ids = self.image_ids(complete_only=False)
        shown = ", ".join(ids[:4]) + (f", … (+{len(ids) - 4})" if len(ids) > 4 else "")
        mode = "read-only" if self.root.read_only else "writable"
        return (f"<CampaignStore {self.meta.get('name', '?')!r} at {self.path} ({mode}): {len(ids)} images "
                f"[{shown}], models [{', '.join(self.model_names())}], "
                f"predictions [{', '.join(self.prediction_models())}]>")

    # --- campaign-level metadata -------------------------------------------------------------------
    @property
    def meta(self) -> dict[str, Any]:
        return attrs_of(self.root)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.meta.get("classes", CLASSES))

    @property
    def pixel_size_um(self) -> float:
        return float(self.meta.get("pixel_size_um", 1.0))

    def update_meta(self, **values: Any) -> None:
        set_attrs(self.root, **values)

    def writer(self, command: str, *, optional: bool = False) -> contextlib.AbstractContextManager[None]:
        """Hold this store's writer lock for a ``with`` block (:mod:`semscale.store.lock`; re-entrant).

        A store this handle cannot write raises :class:`StoreError` naming ``command``, unless ``optional``:
        then the block runs without the lock (a stage that finds nothing to do writes nothing)."""
        if self.writable:
            return writer_lock(self.path, command=command)
        if optional:
            return contextlib.nullcontext()
        raise self.read_only_error(command)

    def read_only_error(self, command: str) -> StoreError:
        """The error for ``command`` needing to write this store when it cannot."""
        why = "was opened read-only" if self.root.read_only and writable(self.path) else \
            "this user cannot write (permissions or a read-only file system)"
        return StoreError(
            f"Expected a writable store at {self.path} for `{command}`. Got one that {why}. Read-only use "
            "works for `info`, `models`, `evaluate`, `stats --json` and a `predict` with nothing left to do; "
            "to write, run where the store is writable or copy it."
        )

    @property
    def writable(self) -> bool:
        """Whether this handle may write (opened ``r+``, and the store's root folder accepts files)."""
        return not self.root.read_only and writable(self.path)

    # --- images ------------------------------------------------------------------------------------
    def image_ids(self, *, complete_only: bool = True) -> list[str]:
        if paths.IMAGES not in self.root:
            return []
        ids = sorted(group_at(self.root, paths.IMAGES).group_keys())
        if complete_only:
            ids = [i for i in ids if self.image_attrs(i).get("complete")]
        return ids

    def has_image(self, image_id: str) -> bool:
        return paths.image(image_id) in self.root and bool(self.image_attrs(image_id).get("complete"))

    def image_group(self, image_id: str) -> zarr.Group:
        try:
            return group_at(self.root, paths.image(image_id))
        except KeyError:
            known = ", ".join(self.image_ids(complete_only=False)) or "none"
            raise StoreError(
                f"Expected image `{image_id}` in store {self.path}. Got none (images: {known}). "
                "Run `semscale ingest CONFIG` first."
            ) from None

    def image_attrs(self, image_id: str) -> dict[str, Any]:
        return attrs_of(self.image_group(image_id))

    def set_image_attrs(self, image_id: str, **values: Any) -> None:
        g = self.image_group(image_id)
        set_attrs(g, **values)

    def sem_array(self, image_id: str, level: int = 0) -> zarr.Array:
        return array_at(self.image_group(image_id), level_path(level))

    def sem(self, image_id: str, level: int = 0) -> da.Array:
        """The SEM image (raw dtype) as a dask array chunked like the store."""
        import dask.array as da

        return da.from_zarr(self.sem_array(image_id, level))

    def norm(self, image_id: str) -> dict[str, Any]:
        norm = self.image_attrs(image_id).get("norm")
        if not norm:
            raise StoreError(f"Image `{image_id}` in {self.path} has no normalisation attrs; re-ingest it.")
        return norm

    def sem_normalised(self, image_id: str, level: int = 0) -> da.Array:
        """The SEM image mapped to network input (float32) with the image's stored normalisation."""
        import dask.array as da

        from semscale.kernels.norm import apply_norm

        return da.map_blocks(apply_norm, self.sem(image_id, level), self.norm(image_id), dtype=np.float32,
                             meta=np.empty((0, 0), np.float32))

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
            level_path(0), shape=shape, chunks=chunks, dtype=dtype, compressors=compressor(), fill_value=0,
            dimension_names=("y", "x"),
        )

    def finish_image(self, image_id: str, **attrs: Any) -> None:
        """Build the SEM pyramid, write NGFF metadata and set ``complete``."""
        g = self.image_group(image_id)
        n = _write_pyramid(g, kind="mean")
        ome = ome_of(g)
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
        names = ome_of(group_at(g, "labels")).get("labels", [])
        return [n for n in names if self._label_complete(image_id, n)
                and not attrs_of(self.root[paths.label(image_id, n)]).get("prediction_of")]

    def _label_complete(self, image_id: str, name: str) -> bool:
        key = paths.label(image_id, name)
        return key in self.root and bool(attrs_of(self.root[key]).get("complete"))

    def has_labels(self, image_id: str, name: str) -> bool:
        return self.has_image(image_id) and self._label_complete(image_id, name)

    def labels(self, image_id: str, name: str, level: int = 0) -> da.Array:
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
        return array_at(self.root, paths.label_level(image_id, name, level))

    def drop_labels(self, image_id: str, name: str) -> None:
        """Delete label image ``name`` of ``image_id`` and its entry in the NGFF labels list."""
        labels = group_at(self.image_group(image_id), "labels")
        if name in labels:
            del labels[name]
        ome = ome_of(labels)
        ome["labels"] = [n for n in ome.get("labels", []) if n != name]
        labels.attrs["ome"] = ome

    def label_attrs(self, image_id: str, name: str) -> dict[str, Any]:
        return attrs_of(self.root[paths.label(image_id, name)])

    def set_label_attrs(self, image_id: str, name: str, **values: Any) -> None:
        g = group_at(self.root, paths.label(image_id, name))
        set_attrs(g, **values)

    def create_labels(
        self, image_id: str, name: str, *, attrs: Mapping[str, Any] | None = None
    ) -> zarr.Array:
        """(Re)create ``images/<id>/labels/<name>`` shaped and chunked like the SEM; returns level 0.

        Fill it (e.g. with ``dask.array.to_zarr`` or chunk-wise writes), then call :meth:`finish_labels`.
        """
        g = self.image_group(image_id)
        sem0 = array_at(g, level_path(0))
        labels = g.require_group("labels")
        names = list(ome_of(labels).get("labels", []))
        if name not in names:
            names.append(name)
        labels.attrs["ome"] = {"version": NGFF_VERSION, "labels": names}
        if name in labels:
            del labels[name]
        lg = labels.create_group(name)
        lg.attrs["semscale"] = {**dict(attrs or {}), "complete": False}
        return lg.create_array(
            level_path(0), shape=sem0.shape, chunks=sem0.chunks, dtype="uint8", compressors=compressor(),
            fill_value=IGNORE_LABEL, dimension_names=("y", "x"),
        )

    def finish_labels(self, image_id: str, name: str, **attrs: Any) -> None:
        label_pyramid(group_at(self.root, paths.label(image_id, name)), name=name,
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
        g = group_at(self.root, key)
        if not attrs_of(g).get("complete"):
            return []
        return sorted(g.array_keys())

    def eds(self, image_id: str) -> dict[str, Any]:
        """EDS maps of an image at native resolution, ``{element: dask array}`` (empty if none)."""
        import dask.array as da

        return {el: da.from_zarr(array_at(self.root, f"{paths.eds(image_id)}/{el}")) for el in self.eds_elements(image_id)}

    def eds_attrs(self, image_id: str) -> dict[str, Any]:
        return attrs_of(self.root[paths.eds(image_id)])

    def eds_factor(self, image_id: str) -> int:
        return int(self.eds_attrs(image_id)["factor"])

    def eds_group(self, image_id: str, *, create: bool = False) -> zarr.Group:
        if create:
            eds = self.root.require_group(paths.EDS)
            if image_id in eds:
                del eds[image_id]
            return eds.create_group(image_id)
        return group_at(self.root, paths.eds(image_id))

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

    def label_group(self, image_id: str, name: str) -> zarr.Group:
        """The NGFF label group of label image ``name`` (raises StoreError if missing or incomplete)."""
        self.label_array(image_id, name)  # raises a clear error when missing
        return group_at(self.root, paths.label(image_id, name))

    def label_levels(self, image_id: str, name: str) -> int:
        """Number of pyramid levels (``0, 1, ...``) of label image ``name`` of ``image_id``."""
        self.label_array(image_id, name)  # raises a clear error when missing
        group = group_at(self.root, paths.label(image_id, name))
        return len([k for k in group.group_keys() if re.fullmatch(r"scale\d+", k)])


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
    path: str | StorePath,
    *,
    name: str,
    classes: Sequence[str] = CLASSES,
    pixel_size_um: float,
    config: Mapping[str, Any] | None = None,
) -> CampaignStore:
    """Open the campaign store at ``path`` for writing, creating it if needed, and record campaign attrs.

    An existing store keeps its contents; its classes and pixel size must match.
    """
    path = store_path(path)
    if path.exists() and not path.is_dir():
        raise StoreError(f"Expected a folder (or nothing) at the store path {path}. Got a file; point `store:` "
                         "at a new path ending in .zarr, or move the file.")
    if path.is_dir() and not (path / "zarr.json").exists() and any(path.iterdir()):
        raise StoreError(f"Expected an empty folder or a semscale store at {path}. Got a folder with other files "
                         "and no zarr.json; point `store:` at a new path ending in .zarr.")
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
        if not is_remote(path):
            path.parent.mkdir(parents=True, exist_ok=True)
        root = zarr.open_group(zarr_store(path, read_only=False), mode="a", zarr_format=3, use_consolidated=False)
        store = CampaignStore(path, root)
    with store.writer("ingest"):
        store.update_meta(
            name=name, classes=list(classes), pixel_size_um=float(pixel_size_um), semscale_version=__version__,
            layout=LAYOUT, **({"config": dict(config)} if config is not None else {}),
        )
    return store


def open_store(path: str | StorePath, *, mode: Literal["r", "r+"] = "r+") -> CampaignStore:
    """Open an existing campaign store (``mode`` ``"r"`` read-only or ``"r+"``) at a path or URL."""
    path = store_path(path)
    if not (path / "zarr.json").exists():
        raise StoreError(
            f"Expected a semscale store (Zarr v3 group) at {path}. Got no zarr.json there. "
            "Create one with `semscale ingest CONFIG`."
        )
    if mode != "r" and not writable(path):
        mode = "r"  # a store this user cannot write opens read-only; writers say so (CampaignStore.writer)
    if mode != "r":
        _drop_consolidated(path)
    # the hierarchy itself, never a consolidated snapshot of it: stages see what the others wrote
    root = zarr.open_group(zarr_store(path, read_only=mode == "r"), mode=mode, zarr_format=3,
                           use_consolidated=False)
    if "semscale" not in root.attrs:
        raise StoreError(f"{path} is a Zarr group but not a semscale store (no `semscale` attrs).")
    store = CampaignStore(path, root)
    made = store.meta.get("layout", 1)
    if made != LAYOUT and store.image_ids(complete_only=False):
        raise StoreError(
            f"Expected a semscale store of layout {LAYOUT} at {path}. Got layout {made} (written by semscale "
            f"{store.meta.get('semscale_version', '< 0.2')}), whose layout this version cannot read; "
            "ingest the campaign into a new store path (or delete the store and rerun `semscale run`)."
        )
    return store


def _drop_consolidated(path: StorePath) -> None:
    """Remove the root's consolidated metadata before anything writes, so no reader is served a snapshot
    that misses what this run writes; :meth:`CampaignStore.consolidate` makes a new one at the end."""
    import json

    meta = path / "zarr.json"
    doc = json.loads(meta.read_text(encoding="utf-8"))
    if doc.pop("consolidated_metadata", None) is not None:
        meta.write_text(json.dumps(doc, indent=2), encoding="utf-8")
