"""Getting images into the campaign store.

SEM images are streamed into Zarr band by band (each band one chunk high, written as whole chunks) with the
normalisation histogram gathered on the way; EDS maps are stored at their native resolution with the integer
downsampling factor inferred from the shapes; target / truth label files are mapped to ``0..K-1``.

Re-ingesting an unchanged file is a no-op (SHA-256 of the file, stored in attrs); a changed file is
detected and re-ingested, and everything derived from it is dropped.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from semscale.config import CampaignConfig, ImageEntry, IngestConfig
from semscale.errors import ConfigError, InputImageError
from semscale.io.readers import (
    file_sha256,
    infer_eds_factor,
    iter_bands,
    label_lut,
    read_image,
    read_info,
    tiff_pixel_size_um,
)
from semscale.kernels.norm import histogram, norm_from_histogram
from semscale.runtime.progress import progress
from semscale.store.layout import CampaignStore

log = logging.getLogger(__name__)

__all__ = ["ingest_campaign", "ingest_image"]


# --- store writers --------------------------------------------------------------------------------
def _write_sem(store: CampaignStore, entry: ImageEntry, *, chunk_size: int, sha: str, meta: dict[str, Any]) -> None:
    path = Path(entry.sem)
    info = read_info(path, page=entry.page)
    arr = store.create_image(entry.id, shape=info.shape, dtype=info.dtype, chunks=chunk_size, attrs=meta)
    rows = arr.chunks[0]
    nbins = 256 if info.dtype == np.uint8 else 65536
    hist = np.zeros(nbins, np.int64)
    n_bands = math.ceil(info.shape[0] / rows)
    bands = iter_bands(path, rows=rows, page=entry.page)
    for y0, band in progress(bands, total=n_bands, description=f"ingest {entry.id}"):
        arr[y0:y0 + band.shape[0], :] = band
        hist += histogram(band, nbins=nbins)
    store.finish_image(entry.id, norm=norm_from_histogram(hist), sha256=sha, bit_depth=8 * info.dtype.itemsize)


def _write_label_file(store: CampaignStore, image_id: str, name: str, path: Path, sha: str, *,
                      encoding: str) -> None:
    info = read_info(path)
    sem_shape = tuple(store.sem_array(image_id).shape)
    if info.shape != sem_shape:
        raise InputImageError(
            f"Expected `{name}` labels {path} of the SEM image's shape {sem_shape}. Got {info.shape}."
        )
    nbins = 256 if info.dtype == np.uint8 else 65536
    counts = np.zeros(nbins, np.int64)
    rows = store.sem_array(image_id).chunks[0]
    for _, band in iter_bands(path, rows=rows):
        counts += histogram(band, nbins=nbins)
    lut = label_lut(counts, len(store.classes), encoding=encoding, where=f"`{name}` labels {path}")
    arr = store.create_labels(image_id, name, attrs={"source": str(path), "sha256": sha, "origin": "file"})
    step = max(1, (1 << 20) // max(1, info.shape[1]))  # rows per lookup: bounds the int64 index temporary
    for y0, band in iter_bands(path, rows=rows):
        mapped = np.empty(band.shape, np.uint8)
        for r in range(0, band.shape[0], step):
            mapped[r:r + step] = lut[band[r:r + step]]
        arr[y0:y0 + band.shape[0], :] = mapped
    store.finish_labels(image_id, name)


def _write_eds(store: CampaignStore, entry: ImageEntry, shas: dict[str, str]) -> int:
    sem_shape = tuple(store.sem_array(entry.id).shape)
    maps = {el: read_image(p) for el, p in entry.eds.items()}
    shapes = {el: m.shape for el, m in maps.items()}
    if len(set(shapes.values())) > 1:
        raise InputImageError(f"Expected all EDS maps of `{entry.id}` to share one shape. Got {shapes}.")
    factor = infer_eds_factor(sem_shape, next(iter(shapes.values())), where=f"EDS maps of `{entry.id}`")
    g = store.write_eds(entry.id, maps, factor=factor, attrs={"sha256": shas, "sem_shape": list(sem_shape)})
    for el in maps:
        g[el].attrs["semscale"] = {"source": str(entry.eds[el]), "sha256": shas[el], "element": el}
    return factor


def ingest_image(store: CampaignStore, entry: ImageEntry, cfg: IngestConfig, *, force: bool = False) -> dict[str, str]:
    """Ingest one config image entry (SEM, EDS maps, target/truth labels) into ``store`` (``cfg``: chunking).

    Returns what happened to each part: ``"ingested"``, ``"unchanged"`` or ``"changed"`` (re-ingested).
    """
    chunk_size = cfg.chunk_size
    report: dict[str, str] = {}
    meta: dict[str, Any] = {"sample": entry.sample, "oxidation_min": entry.oxidation_min, "role": entry.role,
            "pixel_size_um": store.pixel_size_um, "source": str(entry.sem)}
    sem_sha = file_sha256(entry.sem)
    have = store.has_image(entry.id)
    old = store.image_attrs(entry.id) if have else {}
    same_chunks = have and store.sem_array(entry.id).chunks[0] == min(chunk_size, store.sem_array(entry.id).shape[0])
    if have and not force and old.get("sha256") == sem_sha and same_chunks:
        report["sem"] = "unchanged"
        changed_meta = {k: v for k, v in meta.items() if old.get(k) != v}
        if changed_meta:
            store.set_image_attrs(entry.id, **changed_meta)
    else:
        report["sem"] = "changed" if have else "ingested"
        if have:
            _invalidate(store, entry.id, f"its SEM {entry.sem} changed", predictions=True, target=True)
        _write_sem(store, entry, chunk_size=chunk_size, sha=sem_sha, meta=meta)

    if entry.eds:
        shas = {el: file_sha256(p) for el, p in entry.eds.items()}
        elements = store.eds_elements(entry.id)
        old_eds = store.eds_attrs(entry.id) if elements else {}
        if elements and not force and old_eds.get("sha256") == shas and \
                old_eds.get("sem_shape") == list(store.sem_array(entry.id).shape):
            report["eds"] = "unchanged"
        else:
            report["eds"] = "changed" if elements else "ingested"
            if elements:
                _invalidate(store, entry.id, "its EDS maps changed", predictions=False, target=True)
            factor = _write_eds(store, entry, shas)
            log.info("%s: EDS %s at 1/%d resolution", entry.id, ", ".join(sorted(entry.eds)), factor)

    for name in ("target", "truth"):
        path = getattr(entry, name)
        if path is None:
            continue
        sha = file_sha256(path)
        if store.has_labels(entry.id, name) and not force and store.label_attrs(entry.id, name).get("sha256") == sha:
            report[name] = "unchanged"
            continue
        report[name] = "changed" if store.has_labels(entry.id, name) else "ingested"
        if report[name] == "changed":
            _invalidate(store, entry.id, f"its {name} file {path} changed", predictions=False, target=False)
        _write_label_file(store, entry.id, name, Path(path), sha, encoding=cfg.label_encoding)
    return report


def _invalidate(store: CampaignStore, image_id: str, why: str, *, predictions: bool, target: bool) -> None:
    """Drop what was derived from an image's old inputs: its predictions, its automatic target (made from
    SEM + EDS) and the campaign's statistics and report (which include every image), each with a warning,
    so no stale result is left looking complete."""
    if predictions:
        for model in store.drop_predictions(image_id):
            log.warning("%s: %s; dropped its predictions by model %s", image_id, why, model)
    if target and store.has_labels(image_id, "target") and \
            store.label_attrs(image_id, "target").get("origin") != "file":
        store.drop_labels(image_id, "target")
        log.warning("%s: %s; dropped its automatic target (rerun `semscale label`)", image_id, why)
    if store.drop_stats():
        log.warning("%s: %s; dropped the campaign's statistics and report (rerun `semscale stats`)", image_id, why)


PIXEL_SIZE_RTOL = 0.01
"""Pixel sizes within 1 % of each other are one pixel size (tags round differently)."""


def campaign_pixel_size(config: CampaignConfig) -> float:
    """µm per pixel of the campaign: the config's ``pixel_size_um``, else the one every SEM TIFF records in its
    tags (FEI, Zeiss, ImageJ, resolution tags). A tag that disagrees with the config is reported (the config
    wins); without the key, an image with no tag or two images that disagree are errors naming the files."""
    found = {e.id: (tiff_pixel_size_um(e.sem, page=e.page), e.sem) for e in config.images}
    if config.pixel_size_um is not None:
        for image_id, (tag, path) in found.items():
            if tag is not None and not math.isclose(tag[0], config.pixel_size_um, rel_tol=PIXEL_SIZE_RTOL):
                log.warning("%s: %s records %.5g µm per pixel (%s); the config's pixel_size_um %.5g is used",
                            image_id, path, tag[0], tag[1], config.pixel_size_um)
        return float(config.pixel_size_um)
    missing = [str(path) for tag, path in found.values() if tag is None]
    if missing:
        raise ConfigError(
            f"Expected `pixel_size_um` in the config, or a pixel size in the tags of every SEM TIFF. Got none in "
            f"{', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}; add `pixel_size_um: <µm per pixel>` "
            "to the config."
        )
    sizes = {image_id: tag for image_id, (tag, _) in found.items() if tag is not None}
    first_id, (first, where) = next(iter(sizes.items()))
    for image_id, (value, source) in sizes.items():
        if not math.isclose(value, first, rel_tol=PIXEL_SIZE_RTOL):
            raise ConfigError(
                f"Expected one pixel size for the campaign's SEM images. Got {first:.5g} µm for `{first_id}` "
                f"({where}) and {value:.5g} µm for `{image_id}` ({source}); images at other magnifications "
                "belong in another campaign, or set `pixel_size_um:` to override the tags."
            )
    log.info("pixel size %.5g µm, from the SEM TIFFs' tags (%s)", first, where)
    return float(first)


def ingest_campaign(config: CampaignConfig, *, force: bool = False,
                    image_ids: Sequence[str] | None = None) -> CampaignStore:
    """Create/open the config's store and ingest every image (or ``image_ids``); returns the store."""
    from semscale.store import create_store

    recorded = config.to_dict()
    if isinstance(recorded.get("cluster"), dict):  # where this run ran, not part of the campaign: a scheduler
        recorded["cluster"].pop("address", None)    # address is gone once its run is over
    store = create_store(config.store, name=config.name, classes=config.classes,
                         pixel_size_um=campaign_pixel_size(config), config=recorded)
    unknown = sorted(set(image_ids or ()) - {e.id for e in config.images})
    if unknown:
        raise ConfigError(f"Expected --image among the config's ids ({', '.join(e.id for e in config.images)}). "
                          f"Got {', '.join(unknown)}.")
    entries = [e for e in config.images if image_ids is None or e.id in image_ids]
    with store.writer("ingest"):
        for entry in entries:
            report = ingest_image(store, entry, config.ingest, force=force)
            log.info("%s: %s", entry.id, ", ".join(f"{k} {v}" for k, v in report.items()))
    return store
