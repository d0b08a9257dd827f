"""What the stages write into a campaign store beside its images: models and their member files,
predictions, label sources for scoring, statistics, the report and scratch space for resumable stages.

:class:`StoreOutputs` is the half of :class:`~semscale.store.layout.CampaignStore` that holds these; it
relies on the images half for ``root``, ``path``, the SEM arrays and the label images.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from semscale import IGNORE_LABEL
from semscale.errors import ModelError, StoreError
from semscale.store import paths
from semscale.store.location import StorePath, list_files, remove_tree, zarr_store
from semscale.store.ngff import (
    compressor,
    image_pyramid,
    label_group_metadata,
    label_pyramid,
    level_path,
)
from semscale.store.nodes import array_at, attrs_of, group_at, ome_of, set_attrs

if TYPE_CHECKING:
    import dask.array as da

__all__ = ["StoreOutputs"]

MAPS = ("confidence", "uncertainty", "probabilities", "members")
"""Per-pixel maps of a prediction group, each at ``<name>/scale0/image`` (its own group, like a pyramid
level); ``confidence`` and ``uncertainty`` are NGFF multiscale images (factor-2 mean pyramids)."""
IMAGE_MAPS = ("confidence", "uncertainty")
RESERVED_LABELS = ("target", "truth")
"""Label names a model may not take: its predicted labels live beside these in the image's labels group."""


def _map(name: str) -> str:
    return f"{name}/{level_path(0)}"


class StoreOutputs:
    """Models, predictions, scores, stats, report and scratch of a campaign store (mixed into CampaignStore)."""

    path: StorePath
    root: zarr.Group

    if TYPE_CHECKING:  # provided by CampaignStore
        @property
        def classes(self) -> tuple[str, ...]: ...
        @property
        def pixel_size_um(self) -> float: ...
        @property
        def writable(self) -> bool: ...
        def sem_array(self, image_id: str, level: int = 0) -> zarr.Array: ...
        def labels(self, image_id: str, name: str, level: int = 0) -> da.Array: ...
        def label_array(self, image_id: str, name: str, level: int = 0) -> zarr.Array: ...
        def create_labels(self, image_id: str, name: str, *, attrs: Mapping[str, Any] | None = None) -> zarr.Array: ...
        def drop_labels(self, image_id: str, name: str) -> None: ...

    # --- models and predictions ------------------------------------------------------------------
    def model_dir(self, name: str, *, create: bool = False) -> StorePath:
        """Folder of model ``name`` (``models/<name>``); ``create`` makes it a Zarr group so tools see it."""
        if create:
            self.root.require_group(paths.model(name))
        return self.path / paths.model(name)

    def member_file(self, name: str, k: int, kind: str = "model") -> StorePath:
        """File ``kind`` (``model``, ``sidecar``, ``history``, ``last``, ``best``, ``state``) of member ``k``."""
        return self.path / paths.member_file(name, k, kind)

    def model_members(self, name: str) -> list[StorePath]:
        """The exported ``member_k.keras`` files of model ``name`` (sorted by k); raises if there are none."""
        folder = self.model_dir(name)
        found: list[StorePath] = sorted(folder.glob("member_*.keras"), key=lambda p: int(p.stem.split("_")[-1]))
        if not found:
            known = ", ".join(self.model_names()) or "none"
            raise ModelError(
                f"Expected trained members of model `{name}` in {folder}. Got none (models: {known}); run "
                "`semscale train CONFIG` first."
            )
        return found

    def remove_model(self, name: str) -> None:
        """Delete model ``name`` (its folder: members, sidecars, checkpoints); its predictions stay."""
        remove_tree(self.model_dir(name))

    def set_model_attrs(self, name: str, **values: Any) -> None:
        g = self.root.require_group(paths.model(name))
        set_attrs(g, **values)

    def model_attrs(self, name: str) -> dict[str, Any]:
        key = paths.model(name)
        return attrs_of(self.root[key]) if key in self.root else {}

    def model_names(self) -> list[str]:
        return sorted(group_at(self.root, paths.MODELS).group_keys()) if paths.MODELS in self.root else []

    def prediction_group(self, model: str, image_id: str, *, create: bool = False) -> zarr.Group:
        key = paths.prediction(model, image_id)
        if create:
            return self.root.require_group(key)
        if key not in self.root:
            raise StoreError(f"Expected predictions `{key}` in {self.path}. Got none; run `semscale predict`.")
        return group_at(self.root, key)

    def prediction_labels(self, model: str, image_id: str) -> da.Array:
        """Predicted labels (uint8 dask array, level 0) of ``model`` for ``image_id``."""
        import dask.array as da

        key = paths.label_level(image_id, model, 0)
        if paths.prediction(model, image_id) not in self.root or key not in self.root:
            raise StoreError(
                f"Expected labels of predictions/{model}/{image_id} in {self.path} (at {key}). Got none; run "
                "`semscale predict` for that image."
            )
        return da.from_zarr(array_at(self.root, key))

    def prediction_models(self) -> list[str]:
        return sorted(group_at(self.root, paths.PREDICTIONS).group_keys()) if paths.PREDICTIONS in self.root else []

    def has_predictions(self, model: str, image_id: str, *, complete: bool = True) -> bool:
        key = paths.prediction(model, image_id)
        if key not in self.root:
            return False
        return not complete or bool(attrs_of(self.root[key]).get("complete"))

    def predictions(self, model: str, image_id: str) -> dict[str, Any]:
        """Complete prediction outputs as dask arrays (``labels``, ``confidence``, ``uncertainty``, ...)."""
        import dask.array as da

        g = self.prediction_group(model, image_id)
        if not attrs_of(g).get("complete"):
            raise StoreError(
                f"Expected complete predictions {model}/{image_id} in {self.path}. Got an unfinished run; "
                "rerun `semscale predict` to finish it."
            )
        return {name: da.from_zarr(arr) for name, arr in self.prediction_arrays(model, image_id).items()}

    def drop_predictions(self, image_id: str) -> list[str]:
        """Delete every model's predictions of ``image_id`` (maps and labels); returns the models that had some."""
        dropped = []
        for model in self.prediction_models():
            group = group_at(self.root, f"{paths.PREDICTIONS}/{model}")
            if image_id in group:
                del group[image_id]
                dropped.append(model)
            if paths.label(image_id, model) in self.root:
                self.drop_labels(image_id, model)
        return dropped

    def create_predictions(
        self, model: str, image_id: str, *, n_classes: int, uncertainty: bool, probabilities: bool,
        members: int = 0,
    ) -> zarr.Group:
        """(Re)create the outputs of ``model`` for ``image_id``, shaped and chunked like the SEM: ``labels``
        (uint8, 255 = not yet predicted, NGFF image-label), ``confidence``, ``uncertainty`` (ensembles) and
        ``probabilities`` ``(K, H, W)`` (float16, NaN = not yet), and for an ensemble of ``members`` > 1
        each member's own labels ``members`` ``(M, H, W)`` (uint8; the spread of the statistics), each at
        ``<name>/scale0/image``."""
        if model in RESERVED_LABELS:
            raise StoreError(f"Expected a model name other than {' or '.join(RESERVED_LABELS)} (its labels go beside "
                             f"the image's own). Got `{model}`; rename the model.")
        sem = self.sem_array(image_id)
        g = self.prediction_group(model, image_id, create=True)
        for name in list(g.array_keys()) + list(g.group_keys()):
            del g[name]
        self.create_labels(image_id, model, attrs={"prediction_of": model})
        group_at(self.root, paths.label(image_id, model)).attrs["ome"] = label_group_metadata(
            model, self.pixel_size_um, 1, self.classes)
        for name in ["confidence"] + (["uncertainty"] if uncertainty else []):
            g.create_array(_map(name), shape=sem.shape, chunks=sem.chunks, dtype="float16", fill_value=np.nan,
                           compressors=compressor(), dimension_names=("y", "x"))
        if probabilities:
            g.create_array(_map("probabilities"), shape=(n_classes, *sem.shape), chunks=(n_classes, *sem.chunks),
                           dtype="float16", fill_value=np.nan, compressors=compressor(),
                           dimension_names=("c", "y", "x"))
        if members > 1:
            g.create_array(_map("members"), shape=(members, *sem.shape), chunks=(1, *sem.chunks), dtype="uint8",
                           fill_value=IGNORE_LABEL, compressors=compressor(), dimension_names=("member", "y", "x"))
        return g

    def prediction_arrays(self, model: str, image_id: str) -> dict[str, zarr.Array]:
        """The level-0 output arrays of ``model`` for ``image_id`` that exist, by name (``labels``, ...)."""
        g = self.prediction_group(model, image_id)
        key = paths.label_level(image_id, model, 0)
        out = {"labels": array_at(self.root, key)} if key in self.root else {}
        return out | {name: array_at(g, _map(name)) for name in MAPS if _map(name) in g}

    def map_group(self, model: str, image_id: str, name: str) -> zarr.Group | None:
        """The NGFF image group of map ``name`` (``confidence``, ``uncertainty``) of a prediction, or None."""
        g = self.prediction_group(model, image_id)
        return group_at(g, name) if name in IMAGE_MAPS and name in g else None

    def chunks_written(self, array: zarr.Array) -> np.ndarray:
        """Which chunks of ``array`` are stored (bool over its chunk grid); chunks never written read as the
        fill value."""
        have = list_files(self.path / array.path)
        grid = tuple(-(-n // c) for n, c in zip(array.shape, array.chunks))
        out = np.zeros(grid, bool)
        for coords in np.ndindex(*grid):
            out[coords] = array.metadata.encode_chunk_key(coords) in have
        return out

    def finish_predictions(self, model: str, image_id: str, *, changed: bool) -> None:
        """The pyramids for viewers (napari, ome-zarr) — the labels (in the image's labels group, so they open
        with the image) and the confidence and uncertainty images — rebuilt when ``changed`` or missing."""
        labels = group_at(self.root, paths.label(image_id, model))
        if changed or level_path(1) not in labels or "multiscales" not in ome_of(labels):
            label_pyramid(labels, name=model, pixel_size_um=self.pixel_size_um, classes=self.classes)
        if not attrs_of(labels).get("complete"):
            set_attrs(labels, complete=True)
        g = self.prediction_group(model, image_id)
        for name in IMAGE_MAPS:
            if name in g and (changed or "multiscales" not in ome_of(group_at(g, name))):
                image_pyramid(group_at(g, name), name=f"{model} {name}", pixel_size_um=self.pixel_size_um)

    # --- label sources (target/truth labels or a model's predictions) -----------------------------
    def _source_group(self, image_id: str, source: str | tuple[str, str]) -> tuple[zarr.Group, str]:
        kind, name = ("labels", source) if isinstance(source, str) else source
        if kind == "labels":
            self.label_array(image_id, name)  # raises a clear error when missing
            return group_at(self.root, paths.label(image_id, name)), f"labels/{name}"
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
        meta = attrs_of(group)
        meta["metrics"] = {**dict(meta.get("metrics", {})), ref: dict(result)}
        group.attrs["semscale"] = meta

    def recorded_metrics(self, image_id: str, source: str | tuple[str, str]) -> dict[str, Any]:
        """The scores recorded by :meth:`record_metrics` for ``source`` of ``image_id``, by reference name."""
        return dict(attrs_of(self._source_group(image_id, source)[0]).get("metrics", {}))

    def source_token(self, image_id: str, source: str | tuple[str, str]) -> str:
        """A fingerprint of how label ``source`` of ``image_id`` was made (its provenance attrs and the SEM's
        hash): it changes when the labels are rewritten from other inputs or settings, not when they are
        scored."""
        group, _ = self._source_group(image_id, source)
        made = {k: v for k, v in attrs_of(group).items() if k not in ("metrics", "summary")}
        sem = attrs_of(group_at(self.root, paths.image(image_id))).get("sha256")
        text = json.dumps([made, sem], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # --- stats, report, scratch ---------------------------------------------------------------------
    @property
    def stats_group(self) -> str:
        """The Zarr group (relative to the store) of the per-image statistics (an xarray Dataset)."""
        return paths.STATS

    @property
    def stats_summary_group(self) -> str:
        """The Zarr group of the per-(sample, oxidation time) summary (an xarray Dataset)."""
        return paths.STATS_SUMMARY

    def has_stats(self) -> bool:
        return paths.STATS in self.root

    def drop_stats(self) -> bool:
        """Delete ``stats/``, ``robustness/`` and the files in ``report/`` (all derived from every image); True
        if any were there."""
        had = False
        for key in (paths.STATS, paths.ROBUSTNESS):
            if key in self.root:
                del self.root[key]
                had = True
        report = self.path / paths.REPORT
        for f in (report.iterdir() if report.is_dir() else ()):
            if f.name != "zarr.json":
                had = True
                remove_tree(f)
        return had

    def read_stats(self) -> Any:
        """The stored per-image statistics (lazy :class:`xarray.Dataset`), or None when there are none."""
        import xarray as xr

        if not self.has_stats() or "image" not in group_at(self.root, paths.STATS):
            return None
        return xr.open_zarr(zarr_store(self.path, read_only=True), group=paths.STATS, consolidated=False)

    def write_stats(self, images: Any, summary: Any) -> None:
        """Write the per-image Dataset to ``stats/`` and the summary to ``stats/summary`` (Zarr v3, via
        xarray; consolidate the store afterwards)."""
        store = zarr_store(self.path, read_only=False)
        images.to_zarr(store, group=paths.STATS, mode="w", zarr_format=3, consolidated=False)
        summary.to_zarr(store, group=paths.STATS_SUMMARY, mode="w", zarr_format=3, consolidated=False)

    def consolidate(self) -> None:
        """Consolidated metadata of the whole store in its root (what xarray and other readers open in one
        read, without a warning). semscale itself never reads it, and opening a store for writing removes it
        until the next consolidation (``semscale stats`` and ``semscale run`` end with one), so it is never a
        stale snapshot."""
        import warnings

        with warnings.catch_warnings():
            # consolidated metadata is not (yet) in the Zarr v3 spec; zarr-python, xarray and ome-zarr read it.
            # Files beside the arrays (report/, models/) are not Zarr nodes and are left out.
            warnings.simplefilter("ignore", UserWarning)
            zarr.consolidate_metadata(zarr_store(self.path, read_only=False), zarr_format=3)

    def read_robustness(self, model: str) -> Any:
        """The stored robustness sweep of ``model`` (:class:`xarray.Dataset`, loaded), or None."""
        import xarray as xr

        key = paths.robustness(model)
        if key not in self.root or "accuracy" not in group_at(self.root, key):
            return None
        with xr.open_zarr(zarr_store(self.path, read_only=True), group=key, consolidated=False) as ds:
            return ds.load()

    def write_robustness(self, model: str, ds: Any) -> None:
        """Write the robustness sweep of ``model`` to ``robustness/<model>`` (Zarr v3, via xarray)."""
        ds.to_zarr(zarr_store(self.path, read_only=False), group=paths.robustness(model), mode="w", zarr_format=3,
                   consolidated=False)

    def robustness_models(self) -> list[str]:
        return sorted(group_at(self.root, paths.ROBUSTNESS).group_keys()) if paths.ROBUSTNESS in self.root else []

    def report_dir(self) -> StorePath:
        """``report/`` (a Zarr group, so tools see it), created on first use by a handle that may write."""
        if self.writable:
            self.root.require_group(paths.REPORT)
        return self.path / paths.REPORT

    def report_record(self) -> dict[str, Any]:
        """What the last report recorded about itself (``key``: the fingerprint of its inputs, ``files``)."""
        return dict(attrs_of(self.root[paths.REPORT])) if paths.REPORT in self.root else {}

    def set_report_record(self, **values: Any) -> None:
        self.report_dir()
        set_attrs(group_at(self.root, paths.REPORT), **values)

    def scratch_group(self, stage: str, image_id: str, *, create: bool = False) -> zarr.Group | None:
        """Intermediate results of ``stage`` for ``image_id`` (``scratch/<stage>/<id>``); None if absent."""
        key = paths.scratch(stage, image_id)
        if create:
            return self.root.require_group(key)
        return group_at(self.root, key) if key in self.root else None

    def drop_scratch(self, stage: str, image_id: str) -> None:
        key = paths.scratch(stage, image_id)
        if key in self.root:
            del self.root[key]

    def scratch_file(self, stage: str, name: str) -> StorePath:
        """A file ``name`` of ``stage`` shared by its images (e.g. a fitted classifier):
        ``scratch/<stage>/@<name>`` (``@`` cannot occur in an image id)."""
        return self.path / paths.SCRATCH / stage / f"@{name}"

