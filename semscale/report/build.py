"""The campaign report: gathers what the store holds (scores, statistics, robustness sweep, training and
labelling times), draws the figures (:mod:`semscale.report.figures`) and writes ``report/index.html``
(:mod:`semscale.report.page`) with the PNGs beside it, so the folder opens from disk as it is.

The report is rebuilt only when what it shows changed: a fingerprint of its inputs is kept in the
``report`` group's attrs, and a rerun with the same fingerprint writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semscale._version import __version__
from semscale.config import InferenceConfig, ReportConfig
from semscale.errors import StoreError
from semscale.kernels.windows import central_crop
from semscale.report import figures
from semscale.report.page import Section, render
from semscale.store.location import writing

if TYPE_CHECKING:
    from semscale.store.layout import CampaignStore

log = logging.getLogger(__name__)

__all__ = ["PUBLISHED_MINUTES", "build_report"]

PUBLISHED_MINUTES = {
    "SEM image": 1.33, "EDS maps (Ni, O, Zr)": 20.0, "semi-manual labelling": 240.0,
    "U-Net segmentation, stride 256 (fast)": 0.05, "U-Net segmentation, stride 32 (smooth)": 2.87,
}
"""Minutes per image of the published study (its segmentation on an NVIDIA A100)."""


def _scores(store: CampaignStore, image_id: str, source: str | tuple[str, str], ref: str) -> dict[str, Any] | None:
    """The recorded score of ``source`` against labels ``ref`` (computed now, not written, when missing)."""
    from semscale.analysis.metrics import score

    if not store.has_labels(image_id, ref):
        return None
    recorded = store.recorded_metrics(image_id, source).get(ref)
    if recorded:
        return dict(recorded)
    pred, _ = store.label_source(image_id, source)
    return score(store.labels(image_id, ref), pred, classes=store.classes)


def _fingerprint(store: CampaignStore, cfg: ReportConfig, model: str | None, inference: InferenceConfig,
                 ids: Sequence[str], stats: Any, robustness: Any) -> str:
    """A hash of everything the report shows: label provenance, statistics, sweep, models, settings."""
    import dataclasses

    parts: dict[str, Any] = {"version": __version__, "report": dataclasses.asdict(cfg), "model": model,
                             "inference": dataclasses.asdict(inference), "timings": store.meta.get("timings"),
                             "pixel_size_um": store.pixel_size_um, "images": {}}
    for i in ids:
        sources: list[str | tuple[str, str]] = [n for n in ("target", "truth") if store.has_labels(i, n)]
        if model and store.has_predictions(model, i):
            sources.append(("predictions", model))
        parts["images"][i] = [store.source_token(i, s) for s in sources]
    for name, ds in (("stats", stats), ("robustness", robustness)):
        if ds is not None:
            parts[name] = hashlib.sha256(b"".join(np.ascontiguousarray(ds[v].values).tobytes()
                                                  for v in sorted(ds.data_vars))).hexdigest()
    if model:
        from semscale.training.unet import content_hash

        parts["members"] = [content_hash(p) for p in store.model_members(model)]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _segmentation_times(store: CampaignStore, model: str, inference: InferenceConfig, ids: Sequence[str],
                        edge: int) -> list[dict[str, Any]]:
    """Seconds to segment a central ``edge``² crop of the first image in each mode, after one warm-up, and the
    minutes that makes per image of the campaign's mean size."""
    import dataclasses

    from semscale.inference import segment_array
    from semscale.inference.members import resolve_members

    members = store.model_members(model)
    _, facts = resolve_members(members)
    patch = inference.patch_size or facts.patch_size or 256
    arr = store.sem_array(ids[0])
    crop = np.asarray(arr[central_crop(arr.shape, edge)])
    norm = store.norm(ids[0])
    mean_px = float(np.mean([math.prod(store.sem_array(i).shape) for i in ids]))
    modes = [("tile", dataclasses.replace(inference, mode="tile", tta=False)),
             (f"average, stride {patch} (fast)", dataclasses.replace(inference, mode="average", stride=patch,
                                                                      patch_size=patch, tta=False))]
    if patch > 32:
        modes.append(("average, stride 32 (smooth)", dataclasses.replace(inference, mode="average", stride=32,
                                                                         patch_size=patch, tta=False)))
    out = []
    segment_array(crop[:64, :64] if min(crop.shape) >= 64 else crop, models=members, cfg=modes[0][1], norm=norm)
    for name, cfg in modes:
        t0 = time.perf_counter()
        segment_array(crop, models=members, cfg=cfg, norm=norm)
        seconds = time.perf_counter() - t0
        out.append({"mode": name, "crop_px": list(crop.shape), "seconds": seconds,
                    "minutes_per_image": seconds * mean_px / crop.size / 60.0})
    return out


def _time_rows(store: CampaignStore, model: str | None, seg: Sequence[dict[str, Any]],
               mean_shape: tuple[int, int]) -> list[list[str]]:
    """Rows of the time table: the published minutes per image beside semscale's here."""
    from semscale.store.models import list_models

    timings = store.meta.get("timings") or {}
    label = timings.get("label")
    lab_here = (f"{label['seconds'] / 60 / max(1, label['images']):.2f} (automatic, {label['images']} images)"
                if label else "not measured (labelled before timings were kept)")
    rows = [["SEM image", f"{PUBLISHED_MINUTES['SEM image']:g}", "(acquisition)"],
            ["EDS maps (Ni, O, Zr)", f"{PUBLISHED_MINUTES['EDS maps (Ni, O, Zr)']:g}", "(acquisition)"],
            ["target labels", f"{PUBLISHED_MINUTES['semi-manual labelling']:g} (semi-manual)", lab_here]]
    for m in list_models(store):
        if m["name"] == model:
            minutes = sum(float(x.get("train_minutes") or 0) for x in m["members"])
            rows.append([f"U-Net training ({m['n_members']} member{'s' if m['n_members'] != 1 else ''}, "
                         "per campaign)", "—", f"{minutes:.1f}"])
    published = {"tile": None, "fast": PUBLISHED_MINUTES["U-Net segmentation, stride 256 (fast)"],
                 "smooth": PUBLISHED_MINUTES["U-Net segmentation, stride 32 (smooth)"]}
    for s in seg:
        key = "fast" if "fast" in s["mode"] else "smooth" if "smooth" in s["mode"] else "tile"
        pub = published[key]
        rows.append([f"segmentation, {s['mode']}", "—" if pub is None else f"{pub:g} (A100, stride "
                     f"{256 if key == 'fast' else 32})",
                     f"{s['minutes_per_image']:.3f} (measured on {s['crop_px'][0]}×{s['crop_px'][1]} px, "
                     f"scaled to {mean_shape[0]}×{mean_shape[1]} px)"])
    return rows


def _image_rows(store: CampaignStore, ids: Sequence[str], model: str | None, stats: Any,
                scores: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    classes = list(store.classes)
    head = ["image", "sample", "time [min]", "role", "U-Net vs target acc / mIoU", "U-Net vs truth acc / mIoU",
            "target vs truth acc / mIoU"] + [f"{c} % (U-Net / target / truth)" for c in classes]
    rows = []

    def pair(r: dict[str, Any] | None) -> str:
        return "—" if not r else f"{r['accuracy']:.2%} / {r['mean_iou']:.2%}"

    for i in ids:
        a = store.image_attrs(i)
        row = [i, str(a.get("sample") or ""), f"{a.get('oxidation_min')}", str(a.get("role") or ""),
               pair(scores.get("model_target", {}).get(i)), pair(scores.get("model_truth", {}).get(i)),
               pair(scores.get("target_truth", {}).get(i))]
        for k, _c in enumerate(classes):
            cells = []
            for sfx in ("", "_target", "_truth"):
                name = f"fraction{sfx}"
                if stats is None or name not in stats or i not in stats["image"].values.tolist():
                    cells.append("—")
                    continue
                v = float(stats[name].sel(image=i).values[k])
                cells.append("—" if not np.isfinite(v) else f"{100 * v:.1f}")
            row.append(" / ".join(cells))
        rows.append(row)
    return head, rows


def build_report(store: CampaignStore, cfg: ReportConfig = ReportConfig(),  # noqa: B008 - frozen
                 *, model: str | None, inference: InferenceConfig = InferenceConfig()) -> dict[str, Any]:  # noqa: B008
    """Write ``report/index.html`` and its figures for ``model``'s predictions (or, with no model or none
    predicted, for the targets alone); returns ``{"path", "files", "changed"}``. Nothing is written when
    the report's inputs are unchanged since the last one, or when the store is read-only."""
    from semscale.analysis.metrics import combine
    from semscale.runtime.backend import describe_hardware

    ids = sorted(store.image_ids(), key=lambda i: (store.image_attrs(i).get("oxidation_min") or 0.0, i))
    if not ids:
        raise StoreError(f"Expected ingested images in {store.path} to report on. Got none; run `semscale ingest`.")
    if model and not any(store.has_predictions(model, i) for i in ids):
        log.info("report: no predictions of `%s` yet; reporting the targets", model)
        model = None
    stats = store.read_stats()
    stats = stats.load() if stats is not None else None
    robustness = store.read_robustness(model) if model else None
    index = store.report_dir() / "index.html"
    key = _fingerprint(store, cfg, model, inference, ids, stats, robustness)
    record = store.report_record()
    if record.get("key") == key and index.exists() and all((index.parent / f).exists() for f in record["files"]):
        log.info("report: unchanged (%s)", index)
        return {"path": str(index), "files": record["files"], "changed": False}
    if not store.writable:
        raise store.read_only_error("report")
    t0 = time.perf_counter()
    pred_src: tuple[str, str] | None = ("predictions", model) if model else None
    scores: dict[str, dict[str, Any]] = {"model_target": {}, "model_truth": {}, "target_truth": {}}
    for i in ids:
        if pred_src and store.has_predictions(model or "", i):
            for ref in ("target", "truth"):
                r = _scores(store, i, pred_src, ref)
                if r is not None:
                    scores[f"model_{ref}"][i] = r
        if store.has_labels(i, "target"):
            r = _scores(store, i, "target", "truth")
            if r is not None:
                scores["target_truth"][i] = r
    trained = {i for i in ids if stats is not None and i in stats["image"].values.tolist()
               and bool(stats["trained"].sel(image=i).values)}
    sections: list[Section] = []
    files: list[str] = []
    with tempfile.TemporaryDirectory(prefix="semscale-report-") as tmp:
        work = Path(tmp)

        def fig(name: str) -> Path:
            files.append(name)
            return work / name

        panels = [(f"U-Net vs target ({len(scores['model_target'])} images)",
                   [r for r in scores["model_target"].values()]),
                  (f"U-Net vs truth, images not trained on ({len([i for i in scores['model_truth'] if i not in trained])})",
                   [r for i, r in scores["model_truth"].items() if i not in trained]),
                  (f"targets vs truth ({len(scores['target_truth'])} images)", list(scores["target_truth"].values()))]
        pooled = [(t, combine(rs)) for t, rs in panels if rs]
        if pooled:
            figures.plot_confusions(pooled, fig("confusion.png"), dpi=cfg.dpi)
            sections.append(Section("Confusion matrices", "Rows: reference class, normalised to 100 %; pixel "
                                    "counts below each share.", images=["confusion.png"]))
        head, rows = _image_rows(store, ids, model, stats, scores)
        sections.append(Section("Per image", "Accuracy and mean IoU against the targets and the ground truth "
                                "(where the image has them); area fractions of each phase.", table=(head, rows)))
        overlays = _overlays(store, ids[: cfg.overlay_images], model, cfg, fig)
        if overlays:
            sections.append(Section("Overlays", f"Central {cfg.overlay_px}² px crops at full resolution; "
                                    "difference: prediction ≠ truth (else target).", images=overlays))
        violins = _violins(store, ids, model, cfg)
        if violins:
            figures.plot_violins(violins, fig("violins.png"), dpi=cfg.dpi)
            sections.append(Section("Grey levels per phase", "Ni and YSZ overlap in grey level: why thresholds "
                                    "fail and context decides.", images=["violins.png"]))
        if stats is not None:
            figures.plot_fractions(stats, fig("phase_fractions.png"), dpi=cfg.dpi)
            figures.plot_densities(stats, fig("densities.png"), dpi=cfg.dpi)
            sections.append(Section("Over oxidation time", "Mean with bootstrap intervals; U-Net (solid), "
                                    "targets (dotted), truth (dashed); white dots mark training images.",
                                    images=["phase_fractions.png", "densities.png"]))
        if robustness is not None:
            figures.plot_robustness(robustness, fig("robustness.png"), dpi=cfg.dpi)
            sections.append(Section("Robustness", "Accuracy as the SEM image is blurred, brightened, made noisy "
                                    "or resampled (each image normalised as ingest would).",
                                    images=["robustness.png"]))
        shapes = [store.sem_array(i).shape for i in ids]
        mean_shape = (round(float(np.mean([s[0] for s in shapes]))), round(float(np.mean([s[1] for s in shapes]))))
        seg = _segmentation_times(store, model, inference, ids, cfg.timing_px) if model else []
        hardware = describe_hardware()
        sections.append(Section(f"Time per image [min] — semscale measured on {hardware}", "Published: the "
                                "Ni/YSZ oxidation study (segmentation on an NVIDIA A100).",
                                table=(["step", "published", "semscale here"],
                                       _time_rows(store, model, seg, mean_shape))))
        title = f"{store.meta.get('name', 'campaign')}: {model or 'targets'}"
        (work / "index.html").write_text(render(title=title, sections=sections, footer=(
            f"semscale {__version__} · {len(ids)} images · pixel size {store.pixel_size_um:g} µm · "
            f"report fingerprint {key}")), encoding="utf-8")
        report = store.report_dir()
        for name in [*files, "index.html"]:
            with writing(report / name) as dst:
                dst.write_bytes((work / name).read_bytes())
    store.set_report_record(key=key, files=files, model=model, segmentation=seg, hardware=hardware)
    log.info("report: %d figures -> %s (%.1f s)", len(files), index, time.perf_counter() - t0)
    return {"path": str(index), "files": files, "changed": True}


def _overlays(store: CampaignStore, ids: Sequence[str], model: str | None, cfg: ReportConfig,
              fig: Any) -> list[str]:
    names = []
    for i in ids:
        arr = store.sem_array(i)
        window = central_crop(arr.shape, cfg.overlay_px)
        sem = np.asarray(arr[window])

        target, truth = (np.asarray(store.label_array(i, n)[window]) if store.has_labels(i, n) else None
                         for n in ("target", "truth"))
        pred = conf = unc = None
        if model and store.has_predictions(model, i):
            out = store.prediction_arrays(model, i)
            pred = np.asarray(out["labels"][window])
            conf = np.asarray(out["confidence"][window]) if "confidence" in out else None
            unc = np.asarray(out["uncertainty"][window]) if "uncertainty" in out else None
        ref = truth if truth is not None else target
        diff = None if pred is None or ref is None else (pred != ref) & (ref != 255)
        a = store.image_attrs(i)
        name = f"overlay_{i}.png"
        figures.plot_overlay(sem=sem, panels=[("target", target), ("truth", truth), ("prediction", pred),
                                              (f"difference vs {'truth' if truth is not None else 'target'}", diff),
                                              ("confidence", conf), ("ensemble uncertainty", unc)],
                             classes=store.classes, pixel_size_um=store.pixel_size_um,
                             title=f"{i} · {a.get('oxidation_min')} min · role {a.get('role')}", path=fig(name),
                             dpi=cfg.dpi)
        names.append(name)
    return names


def _violins(store: CampaignStore, ids: Sequence[str], model: str | None, cfg: ReportConfig) -> dict[str, Any]:
    pooled: dict[str, dict[str, list[np.ndarray]]] = {}
    for n, i in enumerate(ids):
        if not store.has_labels(i, "target"):
            continue
        arr = store.sem_array(i)
        window = central_crop(arr.shape, 4 * cfg.overlay_px)
        sources = {"target": np.asarray(store.label_array(i, "target")[window])}
        if model and store.has_predictions(model, i):
            sources["prediction"] = np.asarray(store.prediction_arrays(model, i)["labels"][window])
        got = figures.violin_samples(sem=np.asarray(arr[window]), sources=sources, classes=store.classes,
                                     n=cfg.violin_pixels, seed=n)
        for phase, by_source in got.items():
            for source, values in by_source.items():
                pooled.setdefault(phase, {}).setdefault(source, []).append(values)
    return {p: {s: np.concatenate(v) for s, v in by.items()} for p, by in pooled.items()}
