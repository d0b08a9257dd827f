"""How a model's accuracy degrades with the SEM image: blur, brightness, noise and magnification.

For every case of a :class:`~semscale.config.RobustnessConfig` and every image, :func:`robustness_sweep`
degrades the SEM blockwise (:mod:`semscale.kernels.perturb`; any image size, never the whole image in
memory), normalises it as ingest would (robust range of its own histogram), segments it with the campaign's
:class:`~semscale.config.InferenceConfig` and scores it against truth where the image has it, else its
target (resampled nearest for the magnification cases). The result is an :class:`xarray.Dataset` with dims
``case`` (coords ``perturbation``, ``value``) and ``image``: ``accuracy`` and ``mean_iou``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from semscale.config import InferenceConfig, RobustnessConfig
from semscale.errors import StoreError
from semscale.kernels import perturb
from semscale.kernels.windows import central_crop, read_symmetric

if TYPE_CHECKING:
    import dask.array as da

    from semscale.store.layout import CampaignStore
    from semscale.store.location import StorePath

log = logging.getLogger(__name__)

__all__ = ["Window", "degraded", "reference_resampled", "robustness_sweep", "sweep_fingerprint"]


class Window:
    """A central crop of a 2-D array (numpy or Zarr) that slices like an array of its own; reads beyond it
    are the caller's to mirror (:func:`~semscale.kernels.windows.read_symmetric`)."""

    def __init__(self, array: Any, edge: int | None) -> None:
        rows, cols = central_crop(array.shape, edge)
        self.array, self.origin = array, (rows.start, cols.start)
        self.shape = (rows.stop - rows.start, cols.stop - cols.start)
        self.dtype = np.dtype(array.dtype)

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        (ys, xs), (y0, x0) = key, self.origin
        return np.asarray(self.array[y0 + ys.start:y0 + ys.stop, x0 + xs.start:x0 + xs.stop])


def _blocks(shape: tuple[int, int], chunks: tuple[int, int], dtype: np.dtype,
            fn: Callable[[tuple[int, int], tuple[int, int], tuple[int, int]], np.ndarray]) -> da.Array:
    """A dask array of ``shape`` whose block at rows/cols spans and chunk index ``fn`` computes."""
    import dask.array as da

    def block(_: np.ndarray, block_info: dict[Any, Any] | None = None) -> np.ndarray:
        info = block_info[None] if block_info else {}
        (r0, r1), (c0, c1) = info["array-location"]
        by, bx = info["chunk-location"]
        return fn((r0, r1), (c0, c1), (by, bx))

    template = da.empty(shape, chunks=chunks, dtype=np.uint8)
    return da.map_blocks(block, template, dtype=dtype, meta=np.empty((0, 0), dtype))


def degraded(src: Any, *, kind: str, value: float, cfg: RobustnessConfig, chunks: tuple[int, int]) -> da.Array:
    """The image ``src`` (2-D, integer grey values; numpy, Zarr or a :class:`Window`) degraded by one case
    ``(kind, value)``, as a lazy array of its dtype chunked by ``chunks``; blockwise equal to the whole."""
    dtype = np.dtype(src.dtype)
    h, w = src.shape
    if kind == "blur_sigma":
        r = perturb.blur_radius(value)

        def fn(rows: tuple[int, int], cols: tuple[int, int], _: tuple[int, int]) -> np.ndarray:
            x = read_symmetric(src, (rows[0] - r, rows[1] + r), (cols[0] - r, cols[1] + r))
            out = perturb.blur(x, sigma=value)
            return perturb.to_grey(out[r:out.shape[0] - r, r:out.shape[1] - r], dtype)
        return _blocks((h, w), chunks, dtype, fn)
    if kind == "brightness":
        return _blocks((h, w), chunks, dtype, lambda rows, cols, _: perturb.to_grey(
            perturb.brighten(read_symmetric(src, rows, cols), factor=value), dtype))
    if kind == "noise_sigma":
        scale = perturb.full_scale(dtype)

        def noisy(rows: tuple[int, int], cols: tuple[int, int], index: tuple[int, int]) -> np.ndarray:
            rng = np.random.default_rng([cfg.seed, *index])
            return perturb.to_grey(perturb.gauss_poisson(read_symmetric(src, rows, cols), sigma=value,
                                                         photons=cfg.photons, scale=scale, rng=rng), dtype)
        return _blocks((h, w), chunks, dtype, noisy)
    if kind == "magnification":
        return _resampled(src, factor=value, order=1, chunks=chunks)
    raise StoreError(f"Expected a perturbation among blur_sigma, brightness, noise_sigma, magnification. Got {kind!r}.")


def _resampled(src: Any, *, factor: float, order: int, chunks: tuple[int, int]) -> da.Array:
    dtype = np.dtype(src.dtype)
    shape = (perturb.resampled_length(src.shape[0], factor), perturb.resampled_length(src.shape[1], factor))

    def fn(rows: tuple[int, int], cols: tuple[int, int], _: tuple[int, int]) -> np.ndarray:
        ry = perturb.resample_span(rows, factor=factor, order=order)
        rx = perturb.resample_span(cols, factor=factor, order=order)
        x = read_symmetric(src, ry, rx)
        out = perturb.resample(x, origin=(ry[0], rx[0]), out_rows=rows, out_cols=cols, factor=factor, order=order)
        return out if order == 0 else perturb.to_grey(out, dtype)
    return _blocks(shape, chunks, dtype, fn)


def reference_resampled(labels: Any, *, factor: float, chunks: tuple[int, int]) -> da.Array:
    """Label image ``labels`` resampled by ``factor`` (nearest), lazily, chunked by ``chunks``."""
    return _resampled(labels, factor=factor, order=0, chunks=chunks)


def _score(store: CampaignStore, image: da.Array, ref: da.Array, *, models: Any, inference: InferenceConfig,
           nbins: int) -> tuple[float, float]:
    import dask
    import dask.array as da

    from semscale.analysis.metrics import confusion_matrix, scores_from_confusion
    from semscale.inference import predict
    from semscale.kernels.norm import histogram, norm_from_histogram

    counts = da.map_blocks(lambda b: histogram(b, nbins=nbins)[None, None], image, dtype=np.int64,
                           chunks=(1, 1, nbins), new_axis=2)
    (hist,) = dask.compute(counts.sum(axis=(0, 1)))
    norm = norm_from_histogram(np.asarray(hist))
    labels = predict(image, models=models, cfg=inference, norm=norm)["labels"]
    (cm,) = dask.compute(confusion_matrix(ref, labels, n_classes=len(store.classes)))
    s = scores_from_confusion(np.asarray(cm), classes=store.classes)
    return float(s["accuracy"]), float(s["mean_iou"])


def sweep_fingerprint(store: CampaignStore, cfg: RobustnessConfig, inference: InferenceConfig, *,
                      model: str) -> str:
    """A hash of what a sweep of ``model`` depends on: its settings, the model's files and every image's SEM
    and reference labels; a stored sweep with the same fingerprint is current."""
    import dataclasses
    import hashlib
    import json

    from semscale.training.unet import content_hash

    parts = {"robustness": dataclasses.asdict(cfg), "inference": dataclasses.asdict(inference),
             "members": [content_hash(p) for p in store.model_members(model)],
             "images": {i: [store.image_attrs(i).get("sha256")] + [store.source_token(i, r) for r in ("truth", "target")
                                                                    if store.has_labels(i, r)]
                        for i in store.image_ids()}}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def robustness_sweep(store: CampaignStore, cfg: RobustnessConfig, inference: InferenceConfig, *,
                     models: str | Sequence[str | StorePath], model_name: str | None = None,
                     image_ids: Sequence[str] | None = None) -> Any:
    """Accuracy and mean IoU for every case of ``cfg`` and every image that has truth or a target (default:
    all such images); see the module docstring. ``models``: a model name in the store or ``.keras`` files
    (named ``model_name``). Computes on the current Dask scheduler."""
    import xarray as xr

    from semscale.analysis.stats import text_values
    from semscale.inference.members import store_models
    from semscale.runtime.progress import progress

    candidates = list(image_ids) if image_ids is not None else store.image_ids()
    refs = {i: next((r for r in ("truth", "target") if store.has_labels(i, r)), None) for i in candidates}
    ids = [i for i in candidates if refs[i]]
    if not ids:
        raise StoreError(f"Expected images with truth or target labels in {store.path} to score a robustness "
                         "sweep. Got none; run `semscale label` first or give truth/target files.")
    cases = cfg.cases()
    acc = np.full((len(cases), len(ids)), np.nan)
    iou = np.full_like(acc, np.nan)
    t0 = time.perf_counter()
    members, model = store_models(store, models, model_name=model_name, cfg=inference)
    for n, image_id in enumerate(progress(ids, total=len(ids), description="robustness")):
        sem = Window(store.sem_array(image_id), cfg.crop)
        ref = Window(store.label_array(image_id, str(refs[image_id])), cfg.crop)
        cy, cx = (int(c) for c in store.sem_array(image_id).chunks)
        nbins = int(perturb.full_scale(sem.dtype)) + 1
        for k, (kind, value) in enumerate(cases):
            image = degraded(sem, kind=kind, value=value, cfg=cfg, chunks=(cy, cx))
            factor = value if kind == "magnification" else 1.0
            acc[k, n], iou[k, n] = _score(store, image, reference_resampled(ref, factor=factor, chunks=(cy, cx)),
                                          models=members, inference=inference, nbins=nbins)
        log.info("robustness %s (vs %s): accuracy %.4f .. %.4f over %d cases", image_id, refs[image_id],
                 float(np.nanmin(acc[:, n])), float(np.nanmax(acc[:, n])), len(cases))
    ds = xr.Dataset(
        {"accuracy": (("case", "image"), acc, {"units": "1", "long_name": "pixel accuracy"}),
         "mean_iou": (("case", "image"), iou, {"units": "1", "long_name": "mean intersection over union"})},
        coords={"perturbation": ("case", text_values([c[0] for c in cases])),
                "value": ("case", [c[1] for c in cases]), "image": text_values(ids),
                "reference": ("image", text_values([str(refs[i]) for i in ids]))},
        attrs={"model": model, "crop_px": -1 if cfg.crop is None else cfg.crop, "seed": cfg.seed,
               "photons": cfg.photons, "inference_mode": inference.mode,
               "seconds": round(time.perf_counter() - t0, 3)},
    )
    return ds
