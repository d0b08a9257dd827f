"""Segmentation metrics, blockwise over dask arrays.

Everything derives from one K×K confusion matrix (rows = reference class, columns = predicted class),
accumulated block by block: ``np.bincount(ref * K + pred)`` per chunk, summed. Pixels whose reference *or*
prediction is ``IGNORE_LABEL`` (255) are left out. From the matrix come overall accuracy, per-class
precision / recall / F1 / IoU (identical to scikit-learn's ``precision_recall_fscore_support`` and
``jaccard_score`` with ``zero_division=0``) and the mean IoU over the classes that occur.

Pure functions (numpy in → numpy out, dask in → dask out) are separated from :func:`evaluate`, which reads
labels from a campaign store, computes, and writes the results as attrs next to the scored labels.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semscale import IGNORE_LABEL
from semscale.errors import InputImageError, StoreError

if TYPE_CHECKING:
    from semscale.store.layout import CampaignStore

log = logging.getLogger(__name__)

__all__ = [
    "band_mask",
    "boundary_mask",
    "combine",
    "confusion_matrix",
    "evaluate",
    "evaluate_store",
    "format_confusion",
    "score",
    "scores_from_confusion",
    "split_confusion",
]

DEFAULT_BOUNDARY_PX = 2
"""Pixels within this distance (px, Euclidean) of another reference phase count as boundary pixels."""


# --- pure array functions ------------------------------------------------------------------------------
def _block_confusion(ref: np.ndarray, pred: np.ndarray, n_classes: int, ignore: int) -> np.ndarray:
    """K×K counts of one block, int64, shaped ``(1, K*K)`` (ready to be stacked by dask)."""
    ref = np.asarray(ref).ravel()
    pred = np.asarray(pred).ravel()
    keep = (ref != ignore) & (pred != ignore)
    r = ref[keep].astype(np.int64)
    p = pred[keep].astype(np.int64)
    if r.size and (r.max() >= n_classes or r.min() < 0 or p.max() >= n_classes or p.min() < 0):
        bad = sorted({int(v) for v in np.unique(np.concatenate([r, p])) if v < 0 or v >= n_classes})
        raise InputImageError(
            f"Expected label values 0..{n_classes - 1} or {ignore} (ignore). Got {bad}. "
            "Check the classes of the store and of the label images."
        )
    counts = np.bincount(r * n_classes + p, minlength=n_classes * n_classes)
    return counts.astype(np.int64).reshape(1, n_classes * n_classes)


def confusion_matrix(ref: Any, pred: Any, *, n_classes: int, ignore: int = IGNORE_LABEL) -> Any:
    """Confusion counts ``C[i, j]`` = pixels of reference class ``i`` predicted as ``j`` (int64, K×K).

    ``ref`` and ``pred`` are same-shaped integer label arrays (numpy, or dask with any chunking; the two
    are rechunked to match). Pixels equal to ``ignore`` in either are not counted. Dask in → lazy dask out.
    """
    import dask.array as da

    if tuple(ref.shape) != tuple(pred.shape):
        raise InputImageError(
            f"Expected `pred` shaped like `ref` {tuple(ref.shape)}. Got {tuple(pred.shape)}."
        )
    k = int(n_classes)
    if not isinstance(ref, da.Array) and not isinstance(pred, da.Array):
        return _block_confusion(ref, pred, k, ignore).reshape(k, k)
    ref = ref if isinstance(ref, da.Array) else da.from_array(np.asarray(ref), chunks=pred.chunks)
    pred = pred if isinstance(pred, da.Array) else da.from_array(np.asarray(pred), chunks=ref.chunks)
    if pred.chunks != ref.chunks:
        pred = pred.rechunk(ref.chunks)
    ref2 = ref.reshape(-1, 1) if ref.ndim == 1 else ref
    pred2 = pred.reshape(-1, 1) if pred.ndim == 1 else pred
    if ref2.ndim != 2:
        raise InputImageError(f"Expected 1-D or 2-D label arrays. Got {ref.ndim}-D.")
    ny, nx = ref2.numblocks
    parts = da.map_blocks(
        _block_confusion, ref2, pred2, k, ignore,
        chunks=((1,) * ny, (k * k,) * nx), dtype=np.int64, meta=np.empty((0, 0), np.int64),
    )
    per_col = parts.sum(axis=0)  # (nx * K*K,)
    return per_col.reshape(nx, k * k).sum(axis=0).reshape(k, k)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den == 0 (scikit-learn's ``zero_division=0``)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return out


def scores_from_confusion(cm: Any, *, classes: Sequence[str] | None = None) -> dict[str, Any]:
    """All scores from a K×K confusion matrix (a JSON-ready dict).

    Keys: ``classes``, ``confusion`` (counts, rows = reference), ``confusion_normalised`` (each row sums to
    1; a row with no reference pixels is all 0), ``per_class`` {name: precision, recall, f1, iou, support,
    predicted}, ``accuracy`` (overall pixel accuracy), ``mean_iou`` (mean over classes present in the
    reference or the prediction), ``macro_f1``, ``n_pixels``. Undefined ratios are 0, as in scikit-learn.
    """
    cm = np.asarray(cm, dtype=np.int64)
    k = cm.shape[0]
    names = list(classes) if classes is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise InputImageError(f"Expected {k} class names for `classes`. Got {len(names)}: {names}.")
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    union = support + predicted - tp
    iou = _ratio(tp, union)
    present = union > 0
    total = int(cm.sum())
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "iou": float(iou[i]),
            "support": int(support[i]),
            "predicted": int(predicted[i]),
        }
        for i, name in enumerate(names)
    }
    return {
        "classes": names,
        "confusion": cm.tolist(),
        "confusion_normalised": _ratio(cm, support[:, None] * np.ones((1, k))).tolist(),
        "per_class": per_class,
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "mean_iou": float(iou[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "n_pixels": total,
    }


def _block_boundary(ref: np.ndarray, radius: float, n_classes: int) -> np.ndarray:
    """True where another valid reference class lies within ``radius`` px (Euclidean) of a valid pixel."""
    from scipy import ndimage

    r = math.floor(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = (yy**2 + xx**2) <= radius**2 + 1e-9
    near = np.zeros(ref.shape, np.uint8)
    for k in range(n_classes):
        m = ref == k
        if m.any():
            near += ndimage.binary_dilation(m, structure=disk).astype(np.uint8)
    return (near >= 2) & (ref < n_classes)


def boundary_mask(
    ref: Any, *, width_px: float = DEFAULT_BOUNDARY_PX, n_classes: int, ignore: int = IGNORE_LABEL
) -> Any:
    """Boolean mask of reference pixels within ``width_px`` (px, Euclidean) of a different reference phase.

    Ignore pixels (and pixels outside 0..K-1) are never boundary pixels and do not make a boundary;
    the image edge is not a boundary. Dask in → dask out (``map_overlap``, exact for any chunking).
    """
    import dask.array as da

    if isinstance(ref, da.Array):
        depth = math.ceil(width_px)
        return da.map_overlap(
            _block_boundary, ref, depth=depth, boundary=ignore, trim=True,
            radius=float(width_px), n_classes=n_classes, dtype=bool, meta=np.empty((0, 0), bool),
        )
    return _block_boundary(np.asarray(ref), float(width_px), n_classes)


def band_mask(ref: np.ndarray, *, cls: int, next_to: int, width_px: float) -> np.ndarray:
    """Boolean mask of the pixels of class ``cls`` within ``width_px`` (px, Euclidean) of a ``next_to`` pixel.

    numpy in → numpy out; outside the array counts as no class (a block needs a ``ceil(width_px)`` margin
    for its mask to equal the whole image's)."""
    from scipy import ndimage

    ref = np.asarray(ref)
    near = ref == next_to
    if not near.any():
        return np.zeros(ref.shape, bool)
    return (ref == cls) & (ndimage.distance_transform_edt(~near) <= width_px + 1e-9)


def split_confusion(
    ref: Any, pred: Any, *, n_classes: int, width_px: float = DEFAULT_BOUNDARY_PX,
    ignore: int = IGNORE_LABEL,
) -> tuple[Any, Any]:
    """Confusion matrices ``(boundary, interior)``: reference pixels within / beyond ``width_px`` of a
    phase boundary of the reference (see :func:`boundary_mask`). Dask in → lazy dask out."""
    import dask.array as da

    mask = boundary_mask(ref, width_px=width_px, n_classes=n_classes, ignore=ignore)
    where = da.where if isinstance(mask, da.Array) else np.where
    ref_b = where(mask, ref, np.uint8(ignore)).astype(np.uint8)
    ref_i = where(mask, np.uint8(ignore), ref).astype(np.uint8)
    return (
        confusion_matrix(ref_b, pred, n_classes=n_classes, ignore=ignore),
        confusion_matrix(ref_i, pred, n_classes=n_classes, ignore=ignore),
    )


def _split_summary(cm_b: np.ndarray, cm_i: np.ndarray, width_px: float) -> dict[str, Any]:
    nb, ni = int(cm_b.sum()), int(cm_i.sum())
    eb = nb - int(np.trace(cm_b))
    ei = ni - int(np.trace(cm_i))
    return {
        "width_px": float(width_px),
        "boundary": {"accuracy": float(np.trace(cm_b) / nb) if nb else 0.0, "n_pixels": nb, "errors": eb},
        "interior": {"accuracy": float(np.trace(cm_i) / ni) if ni else 0.0, "n_pixels": ni, "errors": ei},
        "boundary_area_share": nb / (nb + ni) if nb + ni else 0.0,
        "boundary_error_share": eb / (eb + ei) if eb + ei else 0.0,
    }


def score(
    ref: Any, pred: Any, *, classes: Sequence[str], boundary_px: float | None = DEFAULT_BOUNDARY_PX,
    ignore: int = IGNORE_LABEL,
) -> dict[str, Any]:
    """Compute all scores of ``pred`` against ``ref`` (numpy or dask; computes). See
    :func:`scores_from_confusion`; with ``boundary_px`` also a ``"boundary_split"`` entry (accuracy within
    and beyond ``boundary_px`` px of a reference phase boundary, and the share of errors in that band)."""
    import dask

    k = len(classes)
    cm = confusion_matrix(ref, pred, n_classes=k, ignore=ignore)
    if boundary_px is None:
        (cm,) = dask.compute(cm)
        return scores_from_confusion(cm, classes=classes)
    cm_b, cm_i = split_confusion(ref, pred, n_classes=k, width_px=boundary_px, ignore=ignore)
    cm, cm_b, cm_i = dask.compute(cm, cm_b, cm_i)
    out = scores_from_confusion(cm, classes=classes)
    out["boundary_split"] = _split_summary(np.asarray(cm_b), np.asarray(cm_i), boundary_px)
    return out


def combine(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pool several :func:`score` results (summed confusion matrices, hence pixel-weighted)."""
    if not results:
        raise InputImageError("Expected at least one result to combine. Got none.")
    classes = results[0]["classes"]
    cm = np.sum([np.asarray(r["confusion"], np.int64) for r in results], axis=0)
    out = scores_from_confusion(cm, classes=classes)
    splits = [r["boundary_split"] for r in results if r.get("boundary_split")]
    if len(splits) == len(results):
        width = splits[0]["width_px"]
        nb = sum(s["boundary"]["n_pixels"] for s in splits)
        ni = sum(s["interior"]["n_pixels"] for s in splits)
        eb = sum(s["boundary"]["errors"] for s in splits)
        ei = sum(s["interior"]["errors"] for s in splits)
        out["boundary_split"] = {
            "width_px": width,
            "boundary": {"accuracy": 1 - eb / nb if nb else 0.0, "n_pixels": nb, "errors": eb},
            "interior": {"accuracy": 1 - ei / ni if ni else 0.0, "n_pixels": ni, "errors": ei},
            "boundary_area_share": nb / (nb + ni) if nb + ni else 0.0,
            "boundary_error_share": eb / (eb + ei) if eb + ei else 0.0,
        }
    return out


def format_confusion(result: dict[str, Any], *, title: str | None = None) -> str:
    """A plain-text table of a result: row-normalised confusion (%), per-class scores, totals."""
    names = list(result["classes"])
    cmn = np.asarray(result["confusion_normalised"]) * 100
    w = max(8, *(len(n) + 2 for n in names))
    lines = []
    if title:
        lines.append(title)
    lines.append("reference \\ predicted (% of reference row)")
    lines.append(" " * w + "".join(f"{n:>{w}}" for n in names) + f"{'support':>12}")
    for i, n in enumerate(names):
        row = "".join(f"{v:>{w}.2f}" for v in cmn[i])
        lines.append(f"{n:<{w}}{row}{result['per_class'][n]['support']:>12d}")
    lines.append("")
    lines.append(f"{'class':<{w}}{'precision':>{w + 2}}{'recall':>{w + 2}}{'F1':>{w + 2}}{'IoU':>{w + 2}}")
    for n in names:
        pc = result["per_class"][n]
        lines.append(
            f"{n:<{w}}" + "".join(f"{pc[key]:>{w + 2}.4f}" for key in ("precision", "recall", "f1", "iou"))
        )
    lines.append("")
    lines.append(
        f"overall accuracy {result['accuracy']:.4f}   mean IoU {result['mean_iou']:.4f}   "
        f"pixels {result['n_pixels']}"
    )
    split = result.get("boundary_split")
    if split:
        b, i = split["boundary"], split["interior"]
        lines.append(
            f"within {split['width_px']:g} px of a boundary: accuracy {b['accuracy']:.4f} "
            f"({split['boundary_area_share']:.1%} of pixels, {split['boundary_error_share']:.1%} of errors); "
            f"interior: accuracy {i['accuracy']:.4f}"
        )
    return "\n".join(lines)


# --- store level ---------------------------------------------------------------------------------------
def evaluate(
    store: CampaignStore,
    image_id: str,
    *,
    pred: str | tuple[str, str] = ("labels", "target"),
    ref: str = "truth",
    boundary_px: float | None = DEFAULT_BOUNDARY_PX,
    write: bool = True,
    json_path: str | Path | None = None,
) -> dict[str, Any]:
    """Score one image's labels against a reference label image of the same store.

    ``pred``: ``("labels", name)`` (or just ``name``) or ``("predictions", model)``; ``ref``: a label name
    (``"truth"`` or ``"target"``). With ``write``, the result is stored in the scored group's
    ``attrs["semscale"]["metrics"][ref]``; with ``json_path`` also written there as JSON.
    """
    pred_arr, desc = store.label_source(image_id, pred)
    ref_arr = store.labels(image_id, ref)
    if tuple(ref_arr.shape) != tuple(pred_arr.shape):
        raise StoreError(
            f"Expected {desc} of `{image_id}` shaped like labels/{ref} {tuple(ref_arr.shape)}. "
            f"Got {tuple(pred_arr.shape)}."
        )
    result = score(ref_arr, pred_arr, classes=store.classes, boundary_px=boundary_px)
    result.update(image_id=image_id, pred=desc, ref=f"labels/{ref}")
    if write:
        store.record_metrics(image_id, pred, ref=ref, result=result)
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=1))
    log.info("%s %s vs %s: accuracy %.4f, mean IoU %.4f", image_id, desc, ref, result["accuracy"],
             result["mean_iou"])
    return result


def evaluate_store(
    store: CampaignStore,
    image_ids: Sequence[str] | None = None,
    *,
    pred: str | tuple[str, str] = ("labels", "target"),
    ref: str = "truth",
    boundary_px: float | None = DEFAULT_BOUNDARY_PX,
    write: bool = True,
) -> dict[str, Any]:
    """Evaluate every image that has both label sources; returns ``{"images": {id: result}, "total": pooled}``.

    Images lacking either source are skipped (logged); ``total`` pools the confusion matrices.
    """
    from semscale.runtime.progress import progress

    ids = list(image_ids) if image_ids is not None else store.image_ids()
    usable = []
    for image_id in ids:
        try:
            store.label_source(image_id, pred)
            store.labels(image_id, ref)
        except StoreError as err:
            log.info("skipping %s: %s", image_id, err)
            continue
        usable.append(image_id)
    if not usable:
        raise StoreError(
            f"Expected at least one image with both {pred!r} and labels/{ref} in {store.path}. Got none."
        )
    results = {
        i: evaluate(store, i, pred=pred, ref=ref, boundary_px=boundary_px, write=write)
        for i in progress(usable, total=len(usable), description="evaluate")
    }
    return {"images": results, "total": combine(list(results.values()))}
