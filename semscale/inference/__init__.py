"""Blockwise U-Net inference: a dask ``map_overlap`` graph of the sliding-window / tile U-Net.

- :mod:`~semscale.inference.members`: models as tasks see them (:class:`ModelRef`), their facts, the
  :class:`~semscale.kernels.windows.Geometry` they imply with an :class:`~semscale.config.InferenceConfig`;
- :mod:`~semscale.inference.graph`: the one graph builder and :func:`predict` (lazy outputs of a dask array);
- :mod:`~semscale.inference.to_store`: :func:`predict_to_store` (Zarr → Zarr, block tasks write their outputs
  and done markers; resume);
- :mod:`~semscale.inference.memory`: :func:`segment_array` (one numpy image).

The window arithmetic and the blending are pure kernels: :mod:`semscale.kernels.windows`,
:mod:`semscale.kernels.blending`.
"""

from semscale.inference.graph import Layout, layout_for, map_tasks, predict
from semscale.inference.members import ModelFacts, ModelRef, make_geometry, resolve_members
from semscale.inference.memory import norm_for_array, segment_array
from semscale.inference.to_store import predict_to_store
from semscale.kernels.blending import argmax_last, combine_members, predict_region, tta_apply
from semscale.kernels.windows import (
    MODES,
    Geometry,
    count_evaluations,
    gaussian_weights,
    input_extent,
    read_symmetric,
    required_depth,
    tile_spans,
    window_starts,
)

__all__ = [
    "MODES",
    "Geometry",
    "Layout",
    "ModelFacts",
    "ModelRef",
    "argmax_last",
    "combine_members",
    "count_evaluations",
    "gaussian_weights",
    "input_extent",
    "layout_for",
    "make_geometry",
    "map_tasks",
    "norm_for_array",
    "predict",
    "predict_region",
    "predict_to_store",
    "read_symmetric",
    "required_depth",
    "resolve_members",
    "segment_array",
    "tile_spans",
    "tta_apply",
    "window_starts",
]
