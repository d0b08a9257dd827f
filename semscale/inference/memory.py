"""Segment one image held in memory (a numpy array): the dask graph of :func:`semscale.inference.predict`
computed here or on a cluster, results as numpy arrays."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from semscale.config import InferenceConfig, IngestConfig
from semscale.errors import ConfigError
from semscale.inference.graph import predict
from semscale.inference.members import Models, as_list

__all__ = ["norm_for_array", "segment_array"]


def norm_for_array(image: np.ndarray) -> dict[str, Any]:
    """Per-image normalisation of a raw array (percentiles 0.5 / 99.5), as stored at ingest."""
    from semscale.kernels.norm import DEFAULT_PERCENTILES, histogram, norm_from_histogram

    image = np.asarray(image)
    if np.issubdtype(image.dtype, np.integer) and image.min() >= 0 and image.max() < 2**16:
        return norm_from_histogram(histogram(image, nbins=int(image.max()) + 1))
    lo, hi = np.percentile(image, DEFAULT_PERCENTILES)
    return {"method": "percentile", "percentiles": list(DEFAULT_PERCENTILES), "lo": float(lo),
            "hi": float(hi) if hi > lo else float(lo) + 1.0}


def segment_array(
    image: np.ndarray,
    *,
    models: Models,
    cfg: InferenceConfig = InferenceConfig(),  # noqa: B008 - frozen, so one shared default is safe
    norm: Mapping[str, Any] | None = None,
    client: Any = None,
) -> dict[str, np.ndarray]:
    """Segment one raw 2-D grey image in memory: ``labels`` uint8, ``confidence`` float16, ``uncertainty``
    float16 (ensembles), ``probabilities`` float16 ``(K, H, W)`` with ``cfg.probabilities``.

    ``models``: ``.keras`` paths. ``norm`` defaults to the image's own robust range. Blocks of
    ``cfg.block_size`` px (default: ``ingest.chunk_size``, as if the image were ingested). Runs on
    ``client`` if given, else in this process (block by block)."""
    import dask
    import dask.array as da

    from semscale.runtime.progress import dask_progress

    image = np.asarray(image)
    if image.ndim != 2:
        raise ConfigError(f"Expected a 2-D grey image. Got shape {image.shape}; convert RGB to grey first.")
    norm = dict(norm) if norm is not None else norm_for_array(image)
    block = cfg.block_size or IngestConfig().chunk_size
    outs = predict(da.from_array(image, chunks=block), models=models, cfg=cfg, norm=norm)
    ensemble = len(as_list(models)) > 1
    arrays = {"labels": outs["labels"], "confidence": outs["confidence"].astype(np.float16)}
    if ensemble:
        arrays["uncertainty"] = outs["uncertainty"].astype(np.float16)
    if cfg.probabilities:
        arrays["probabilities"] = outs["probabilities"].astype(np.float16).transpose(2, 0, 1)
    if client is not None:
        results = client.compute(list(arrays.values()), sync=True)
    else:
        with dask_progress("segmenting"):
            results = dask.compute(*arrays.values(), scheduler="sync")
    return dict(zip(arrays, results))
