"""Run a whole campaign from its config: ingest → label → train → predict → evaluate → stats.

Each stage reads and writes the one store and skips what is already complete, so a rerun after an
interruption continues where it stopped and an unchanged campaign is a fast no-op.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semscale import CLASSES
from semscale.config import CampaignConfig, InferenceConfig
from semscale.errors import ConfigError, InputImageError, StoreError

if TYPE_CHECKING:
    from semscale.store.layout import CampaignStore

log = logging.getLogger(__name__)

__all__ = [
    "STAGES", "evaluate", "evaluate_campaign", "export", "label", "models", "predict", "predict_rate", "report", "robustness",
    "run_campaign", "segment_file", "stats", "stored_config", "train",
]

STAGES = ("ingest", "label", "train", "predict", "robustness", "evaluate", "stats", "report")


def label(config: CampaignConfig, store: CampaignStore, *, overwrite: bool = False, client: Any = None) -> dict[str, Any]:
    """EDS-guided target labels for every image with EDS maps and no target (the config's ``labelling``)."""
    from semscale.labelling import label_store

    # images with a ready-made target file keep it; label_store skips those already labelled (unless
    # overwrite) and takes up again those of a run that was interrupted
    ids = [e.id for e in config.images if e.has_eds and e.target is None]
    scribbles = {e.id: e.scribbles for e in config.images if e.scribbles is not None and e.id in ids}
    if not ids:
        log.info("label: every image with EDS maps has a target")
        return {"labelled": [], "skipped": [e.id for e in config.images if e.has_eds]}
    with store.writer("label"):
        return label_store(store, ids, config.labelling, scribbles=scribbles or None, overwrite=overwrite,
                           client=client)


def train(config: CampaignConfig, store: CampaignStore, *, client: Any = None,
          fresh: bool = False) -> list[dict[str, Any]]:
    """Train the config's model (section ``training``, passed whole) on its ``role: train`` images.

    Overrides (CLI ``--epochs``, ``--ensemble``, ``--steps``) are the caller's: it passes a config whose
    ``training`` section was rebuilt with ``dataclasses.replace``. ``fresh`` starts every member over.
    """
    from semscale.training.ensemble import train_ensemble

    tc = config.training
    ids = [e.id for e in config.images if e.role == "train" and store.has_labels(e.id, tc.label_source)]
    if not ids:
        raise StoreError(
            f"Expected `role: train` images with `{tc.label_source}` labels in {store.path}. Got none; run "
            "`semscale label CONFIG` (images with EDS maps) or give `target:` files."
        )
    if tc.split == "images":
        ids += [e.id for e in config.images if e.role == "test" and store.has_labels(e.id, tc.label_source)]
    with store.writer("train"):
        return train_ensemble(store, tc, image_ids=ids, client=client, resume=not fresh)


def predict(config: CampaignConfig, store: CampaignStore, *, image_ids: Sequence[str] | None = None,
            client: Any = None, overwrite: bool = False,
            model_files: Sequence[Path] = ()) -> list[dict[str, Any]]:
    """Segment the campaign's images (default: all complete ones) with its model, as its ``inference``
    section says; override settings with ``dataclasses.replace(config, inference=...)``. ``model_files``:
    ``.keras`` members to use instead of the store's model (predictions are named ``config.model_name``)."""
    from semscale.inference import predict_to_store
    from semscale.runtime.progress import format_duration

    ids = list(image_ids) if image_ids else store.image_ids()
    models: str | Sequence[Path] = list(model_files) or config.model_name
    sizes = {i: math.prod(store.sem_array(i).shape) for i in ids}
    results: list[dict[str, Any]] = []
    measured: list[tuple[float, float]] = []  # (pixels computed, seconds) per image that computed blocks
    for n, i in enumerate(ids):
        with store.writer("predict", optional=True):  # read-only: only images with nothing left to do
            r = predict_to_store(store, i, config.inference, models=models, model_name=config.model_name,
                                 overwrite=overwrite, client=client)
        results.append(r)
        if r["computed"]:
            measured.append((sizes[i] * r["computed"] / r["blocks"], r["seconds"]))
        left = sum(sizes[j] for j in ids[n + 1 :])
        rate = predict_rate(measured)
        if rate and left:  # measured rate × the pixels left (an image whose blocks are done costs less)
            log.info("predict: %d of %d images done; the rest (%.1f Mpx) takes about %s at %.2f Mpx/s", n + 1,
                     len(ids), left / 1e6, format_duration(left / rate), rate / 1e6)
    return results


def predict_rate(measured: Sequence[tuple[float, float]]) -> float | None:
    """Pixels per second of the images that computed blocks, ``[(pixels, seconds), …]`` in run order; the
    first image is left out once others ran, since it also paid the workers' start (framework import, model
    load). ``None`` before any measurement."""
    basis = measured[1:] or measured
    px, seconds = sum(m[0] for m in basis), sum(m[1] for m in basis)
    return px / seconds if px and seconds else None


def evaluate(store: CampaignStore, *, model: str | None = None, labels: str = "target", ref: str = "truth",
             image_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """Score ``model``'s predictions (or, without a model, the label image ``labels``) against ``ref``.

    Returns ``{"images": {id: result}, "total": pooled}`` for the images that have both (metrics are
    recorded in the store when it is writable); raises :class:`~semscale.errors.StoreError` when none has.
    """
    from semscale.analysis.metrics import evaluate_store

    pred: str | tuple[str, str] = ("predictions", model) if model else ("labels", labels)
    with store.writer("evaluate", optional=True):  # a read-only store: scores printed, not recorded
        return evaluate_store(store, list(image_ids) if image_ids else None, pred=pred, ref=ref,
                              write=store.writable)


def evaluate_campaign(config: CampaignConfig, store: CampaignStore) -> dict[str, Any]:
    """The ``evaluate`` stage: targets and predictions against ground truth, predictions against targets."""
    out: dict[str, Any] = {}
    name = config.model_name
    has_truth = any("truth" in store.label_names(i) for i in store.image_ids())
    if has_truth:
        out["target_vs_truth"] = evaluate(store, labels="target", ref="truth")
    if name in store.prediction_models():
        if has_truth:
            out["model_vs_truth"] = evaluate(store, model=name, ref="truth")
        out["model_vs_target"] = evaluate(store, model=name, ref="target")
    return out


def stats(config: CampaignConfig, store: CampaignStore, *, model: str | None = None,
          labels: str | None = None) -> dict[str, Any]:
    """The ``stats`` stage (section ``stats``): microstructure statistics of ``model``'s predictions
    (default the config's model) or, with ``labels``, of that label image; unchanged images are reused."""
    from semscale.analysis.stats import update_stats

    if labels is None and model is None:
        model = config.model_name
    with store.writer("stats", optional=True):
        result = update_stats(store, config.stats, model=model, labels=labels)
        if store.writable:  # opening for writing dropped the consolidated metadata
            store.consolidate()
    return result


def robustness(config: CampaignConfig, store: CampaignStore, *, model: str | None = None) -> dict[str, Any]:
    """The ``robustness`` stage (section ``robustness``): accuracy of ``model`` (default the config's) as the
    images are degraded, stored in ``robustness/<model>``; an unchanged sweep is not run again. Returns the
    mean accuracy per case."""
    from semscale.analysis.robustness import robustness_sweep, sweep_fingerprint

    name = model or config.model_name
    if name not in store.model_names():
        raise StoreError(f"Expected model `{name}` in {store.path} for a robustness sweep. Got models "
                         f"{', '.join(store.model_names()) or 'none'}; train one or pass --model.")
    key = sweep_fingerprint(store, config.robustness, config.inference, model=name)
    ds = store.read_robustness(name)
    changed = ds is None or ds.attrs.get("fingerprint") != key
    if changed:
        with store.writer("robustness", optional=True):  # read-only: computed and printed, not written
            ds = robustness_sweep(store, config.robustness, config.inference, models=name)
            ds.attrs["fingerprint"] = key
            if store.writable:
                store.write_robustness(name, ds)
    else:
        log.info("robustness: unchanged (%s, %d images)", name, ds.sizes["image"])
    mean = ds["accuracy"].mean("image").values.tolist()
    cases = [f"{p}={v:g}" for p, v in zip(ds["perturbation"].values.tolist(), ds["value"].values.tolist())]
    return {"model": name, "images": ds["image"].values.tolist(), "changed": changed,
            "accuracy": dict(zip(cases, mean)), "seconds": ds.attrs.get("seconds")}


def report(config: CampaignConfig, store: CampaignStore, *, model: str | None = None) -> dict[str, Any]:
    """The ``report`` stage (section ``report``): ``report/index.html`` with its figures, for ``model``
    (default the config's); rewritten only when what it shows changed."""
    from semscale.report import build_report

    with store.writer("report", optional=True):
        result = build_report(store, config.report, model=model or config.model_name, inference=config.inference)
        if result["changed"]:  # the report's record is a Zarr attribute: keep the consolidated metadata current
            store.consolidate()
    return result


def models(store: CampaignStore, *, name: str | None = None) -> list[dict[str, Any]]:
    """The store's models (or only ``name``) with their members and metrics."""
    from semscale.store.models import list_models

    return [m for m in list_models(store) if name is None or m["name"] == name]


def stored_config(store: CampaignStore) -> CampaignConfig:
    """The campaign config a store was ingested with (recorded in its attrs; source files not checked)."""
    data = store.meta.get("config")
    if not data:
        raise StoreError(
            f"Expected the campaign config recorded in {store.path} (written by `semscale ingest`). Got "
            "none; give the campaign YAML instead of the store."
        )
    base = store.path.parent if isinstance(store.path, Path) else None  # the recorded paths are absolute
    return CampaignConfig.from_dict(data, base_dir=base, check_files=False)


def segment_file(source: Path, cfg: InferenceConfig, *, model_files: Sequence[Path],
                 output: Path | None = None, pixel_size_um: float | None = None) -> list[Path]:
    """Segment one image file (TIFF/PNG/npy) with the given model files; returns the files written.

    The labels go to ``output`` (default ``<stem>_labels.tif``; ``.ome.tif`` / ``.png`` choose those formats)
    with the class palette, class names and the pixel size (``pixel_size_um``, else the SEM TIFF's own, else
    1 µm with a warning), the confidence beside them, and the class probabilities with
    ``cfg.probabilities``. The model's classes name the labels."""
    from semscale.inference import segment_array
    from semscale.io.export import format_of, write_labels_file
    from semscale.io.readers import read_image, tiff_pixel_size_um
    from semscale.store.models import read_sidecar

    if not model_files:
        raise ConfigError("Expected --model-file MODEL.keras (repeatable) to segment an image file. Got none.")
    target = output or source.with_name(source.stem + "_labels.tif")
    fmt = format_of(target)
    if not target.parent.is_dir():  # found before the compute, not after
        raise ConfigError(f"Expected an existing folder for the output {target}. Got no folder {target.parent}; "
                          "create it or choose another -o.")
    image = read_image(source)  # a damaged file is named here, before anything else
    if pixel_size_um is None:
        found = tiff_pixel_size_um(source)
        if found is None:
            log.warning("%s records no pixel size; the label files say 1 µm per pixel", source)
        else:
            log.info("%s: pixel size %.5g µm (%s)", source, found[0], found[1])
        pixel_size_um = found[0] if found else 1.0
    classes = read_sidecar(model_files[0]).get("classes") or list(CLASSES)
    # with `patch_size: null` (the default) the patch size is the model sidecar's
    out = segment_array(image, models=list(model_files), cfg=cfg)
    return write_labels_file(target, out["labels"], classes=classes, pixel_size_um=pixel_size_um, fmt=fmt,
                             confidence=out["confidence"], probabilities=out.get("probabilities"))


OUTPUT_MARKS = ("_labels", "_confidence", "_probabilities")
"""Stems that end so are semscale's own outputs: a folder segmented twice does not segment them."""


def _stem(path: Path) -> str:
    """The file name without its image suffix (``.ome.tif`` counts as one)."""
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def segment_folder(folder: Path, cfg: InferenceConfig, *, model_files: Sequence[Path], fmt: str,
                   out_dir: Path | None = None) -> list[Path]:
    """Segment every image file in ``folder`` (TIFF/PNG/JPEG/npy, not its subfolders, sorted by name) as
    :func:`segment_file` does, writing ``<stem>_labels`` (format ``fmt``) and the maps beside it into
    ``out_dir`` (default: ``folder``; created). A file that cannot be read is reported by name and the others
    are still segmented; then :class:`InputImageError` lists every refused file."""
    from semscale.io.export import SUFFIXES
    from semscale.io.readers import SUPPORTED

    sources = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED
                     and not _stem(p).endswith(OUTPUT_MARKS))
    if not sources:
        raise InputImageError(f"Expected image files ({', '.join(sorted(SUPPORTED))}) in {folder}. Got none.")
    target_dir = out_dir or folder
    target_dir.mkdir(parents=False, exist_ok=True)
    written: list[Path] = []
    refused: list[str] = []
    for i, source in enumerate(sources, 1):
        stem = _stem(source)
        log.info("[%d/%d] %s", i, len(sources), source.name)
        try:
            written += segment_file(source, cfg, model_files=model_files,
                                    output=target_dir / f"{stem}_labels{SUFFIXES[fmt]}")
        except InputImageError as exc:
            log.error("%s", exc)
            refused.append(f"{source.name}: {exc}")
    if refused:
        raise InputImageError(
            f"Expected every image in {folder} to segment. Got {len(refused)} of {len(sources)} refused (the "
            f"other {len(sources) - len(refused)} were written to {target_dir}): " + " | ".join(refused)
        )
    return written


def export(store: CampaignStore, out_dir: Path, *, model: str, fmt: str, probabilities: bool = False,
           image_ids: Sequence[str] | None = None) -> list[Path]:
    """Write ``model``'s predictions of the store's images (default: all that have them) as ``fmt`` files
    in ``out_dir`` (created): ``<id>_labels`` with palette, class names and pixel size, ``<id>_confidence``
    and, with ``probabilities``, ``<id>_probabilities`` (those must have been predicted with
    ``--probabilities``). Reads the store only."""
    from semscale.io.export import SUFFIXES, write_labels_file

    if model not in store.prediction_models():
        raise StoreError(f"Expected predictions of model `{model}` in {store.path}. Got predictions of: "
                         f"{', '.join(store.prediction_models()) or 'none'}; run `semscale predict` first.")
    ids = list(image_ids) if image_ids else [i for i in store.image_ids() if store.has_predictions(model, i)]
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for image_id in ids:
        arrays = store.predictions(model, image_id)
        if probabilities and "probabilities" not in arrays:
            raise StoreError(f"Expected class probabilities of {model}/{image_id} in {store.path}. Got none; "
                             f"rerun `semscale predict STORE --model {model} --probabilities --overwrite`.")
        px = float(store.image_attrs(image_id).get("pixel_size_um") or store.pixel_size_um)
        written += write_labels_file(
            out_dir / f"{image_id}_labels{SUFFIXES[fmt]}", arrays["labels"].compute(), classes=store.classes,
            pixel_size_um=px, fmt=fmt, confidence=arrays["confidence"].compute(),
            probabilities=arrays["probabilities"].compute() if probabilities else None)
        log.info("export: %s/%s -> %s", model, image_id, out_dir)
    return written


@contextlib.contextmanager
def _maybe_client(config: CampaignConfig, client: Any) -> Iterator[Any]:
    """``client`` when given, else a cluster started from ``config.cluster`` (closed afterwards)."""
    if client is not None:
        yield client
        return
    from semscale.runtime.cluster import get_client

    with get_client(config.cluster) as new_client:
        yield new_client


def run_campaign(
    config: CampaignConfig,
    *,
    stages: Sequence[str] = STAGES,
    client: Any = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run ``stages`` of the campaign in pipeline order; returns a summary of each stage, its wall time in
    ``stage_seconds`` (``cluster``: starting the local cluster) and the total in ``seconds``.

    Options come from ``config`` alone (override them with ``dataclasses.replace`` on its sections);
    without ``client`` a cluster is started from ``config.cluster`` for labelling and prediction.
    """
    from semscale.io.ingest import ingest_campaign

    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"Expected stages among {', '.join(STAGES)}. Got {', '.join(map(str, unknown))}.")
    summary: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    t0 = t_stage = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal t_stage
        now = time.perf_counter()
        seconds[stage], t_stage = now - t_stage, now

    store = ingest_campaign(config) if "ingest" in stages else _open(config)
    summary["ingest"] = {"images": store.image_ids()}
    lap("ingest")
    with _maybe_client(config, client) as dask_client:
        lap("cluster")
        if "label" in stages:
            summary["label"] = label(config, store, overwrite=overwrite, client=dask_client)
            lap("label")
        if "train" in stages:
            # Members train in this process (one after another on CPU) unless the caller passed a cluster,
            # so TensorFlow does not compete with the labelling/prediction workers for the cores.
            sidecars = train(config, store, client=client)
            summary["train"] = [{k: s.get(k) for k in ("member", "val_accuracy", "val_mean_iou", "path")}
                                for s in sidecars]
            lap("train")
        if "predict" in stages:
            summary["predict"] = predict(config, store, client=dask_client, overwrite=overwrite)
            lap("predict")
        if "robustness" in stages and config.robustness.enabled and config.model_name in store.prediction_models():
            summary["robustness"] = robustness(config, store)
            lap("robustness")
    if "evaluate" in stages:
        summary["evaluate"] = evaluate_campaign(config, store)
        lap("evaluate")
    if "stats" in stages and config.model_name in store.prediction_models():
        summary["stats"] = stats(config, store)
        lap("stats")
    else:
        store.consolidate()
    if "report" in stages and config.report.enabled:
        summary["report"] = report(config, store)
        lap("report")
    summary["stage_seconds"] = seconds
    summary["seconds"] = time.perf_counter() - t0
    return summary


def _open(config: CampaignConfig) -> CampaignStore:
    from semscale.store import open_store

    return open_store(config.store)
