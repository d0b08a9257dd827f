"""The labelling classifier: a scikit-learn random forest on seed features, applied pixel by pixel.

The forest settings (trees, depth, cores, seed) come from the labelling config section; the others, fixed
here, keep a fit to seconds. No I/O: the store level hands fitted forests to the workers by file path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from semscale.config import LabellingConfig
from semscale.errors import InputImageError

if TYPE_CHECKING:
    import dask.array as da

log = logging.getLogger(__name__)

__all__ = ["MAX_SAMPLES", "MIN_SAMPLES_LEAF", "fit_pooled", "predict_block", "predict_labels", "train_classifier"]

MIN_SAMPLES_LEAF = 2
MAX_FEATURES = "sqrt"
MAX_SAMPLES: int | None = 40_000
"""Each tree sees a bootstrap sample of at most this many seeds (``None``: as many as there are)."""


def train_classifier(x: np.ndarray, y: np.ndarray, cfg: LabellingConfig) -> Any:
    """Fit a scikit-learn random forest on seed features ``x`` (n × F) and classes ``y`` (n,).

    ``cfg.n_estimators`` trees of depth ``cfg.max_depth`` fitted on ``cfg.n_jobs`` cores; each tree sees a
    bootstrap sample of at most ``MAX_SAMPLES`` seeds; classes are balanced
    (``class_weight="balanced_subsample"``); deterministic for ``cfg.seed``.
    """
    from sklearn.ensemble import RandomForestClassifier

    if len(x) == 0 or len(np.unique(y)) < 2:
        raise InputImageError(
            f"Expected seeds of at least two classes to train the classifier. Got {len(x)} seeds of classes "
            f"{np.unique(y).tolist()}. Check the EDS maps or add scribbles."
        )
    rf = RandomForestClassifier(
        n_estimators=cfg.n_estimators, max_depth=cfg.max_depth, min_samples_leaf=MIN_SAMPLES_LEAF,
        max_features=MAX_FEATURES, class_weight="balanced_subsample", n_jobs=cfg.n_jobs, random_state=cfg.seed,
        max_samples=None if MAX_SAMPLES is None or MAX_SAMPLES >= len(x) else int(MAX_SAMPLES),
    )
    rf.fit(np.asarray(x, np.float32), np.asarray(y))
    return rf


def fit_pooled(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], cfg: LabellingConfig, *,
               classes: Sequence[str], what: str) -> tuple[Any, dict[str, int], float]:
    """One forest on the seeds of several images, pooled in order: ``(forest, seeds per class, seconds)``.

    The forest comes back with ``n_jobs=1``: blocks already run in parallel.
    """
    x_all = np.concatenate([x for x in xs if len(x)])
    y_all = np.concatenate(ys)
    t0 = time.perf_counter()
    model = train_classifier(x_all, y_all, cfg)
    secs = time.perf_counter() - t0
    model.set_params(n_jobs=1)
    pooled = {c: int((y_all == k).sum()) for k, c in enumerate(classes)}
    log.info("random forest: %d trees on %d %s %s (%.1f s)", cfg.n_estimators, len(y_all), what, pooled, secs)
    return model, pooled, secs


def predict_block(feats: np.ndarray, model: Any) -> np.ndarray:
    """Class (uint8) of every pixel of one feature block ``(h, w, F)``."""
    h, w, f = feats.shape
    if h * w == 0:
        return np.zeros((h, w), np.uint8)
    proba = model.predict_proba(feats.reshape(-1, f))
    return model.classes_[np.argmax(proba, axis=1)].astype(np.uint8).reshape(h, w)


def predict_labels(features: np.ndarray | da.Array, model: Any) -> np.ndarray | da.Array:
    """Class of every pixel of a feature stack ``(H, W, F)`` (uint8). Dask in → dask out (map_blocks; the
    model travels once through the graph, not once per block; :func:`~semscale.labelling.label_store` sends
    it to the workers by file path instead)."""
    import dask
    import dask.array as da

    if not isinstance(features, da.Array):
        return predict_block(np.asarray(features, np.float32), model)
    if features.numblocks[2] != 1:
        features = features.rechunk({2: -1})
    return da.map_blocks(
        predict_block, features, dask.delayed(model, pure=False), drop_axis=2, dtype=np.uint8,
        meta=np.empty((0, 0), np.uint8),
    )
