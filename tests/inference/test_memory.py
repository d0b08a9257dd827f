"""semscale.inference.memory: one in-memory image, the same numbers as the lazy dask path."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from semscale.config import InferenceConfig
from semscale.errors import ConfigError
from semscale.inference import norm_for_array, predict, segment_array


def test_segment_array_matches_lazy_path(tiny_unet_path):
    img = np.random.default_rng(5).integers(10, 200, (90, 70), dtype=np.uint8)
    out = segment_array(img, models=tiny_unet_path, cfg=InferenceConfig(mode="tile", block_size=48, probabilities=True))
    assert set(out) == {"labels", "confidence", "probabilities"}
    lazy = predict(da.from_array(img, chunks=90), models=[tiny_unet_path], cfg=InferenceConfig(mode="tile"),
                   norm=norm_for_array(img))
    np.testing.assert_array_equal(out["labels"], lazy["labels"].compute())
    assert out["probabilities"].shape == (4, 90, 70)


def test_segment_array_of_an_ensemble_has_uncertainty(tiny_ensemble_paths):
    img = np.random.default_rng(6).integers(0, 255, (40, 36), dtype=np.uint8)
    out = segment_array(img, models=tiny_ensemble_paths)
    assert set(out) == {"labels", "confidence", "uncertainty"}
    assert out["uncertainty"].dtype == np.float16 and float(out["uncertainty"].max()) > 0
    with pytest.raises(ConfigError, match="2-D"):
        segment_array(np.zeros((3, 8, 8), np.uint8), models=tiny_ensemble_paths)


def test_norm_for_array_maps_the_robust_range_to_the_unit_interval():
    from semscale.kernels.norm import apply_norm

    img = np.random.default_rng(7).normal(100.0, 10.0, (64, 64))
    x = apply_norm(img, norm_for_array(img))
    assert abs(float(np.percentile(x, 0.5))) < 0.02 and abs(float(np.percentile(x, 99.5)) - 1) < 0.02
