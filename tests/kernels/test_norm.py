"""Per-image normalisation: robust percentiles from a histogram, chunk-independent mapping."""

from __future__ import annotations

import numpy as np
import pytest

from semscale.kernels.norm import apply_norm, histogram, norm_from_histogram


def test_histogram_in_steps_equals_bincount() -> None:
    x = np.random.default_rng(1).integers(0, 4096, (123, 77)).astype(np.uint16)
    np.testing.assert_array_equal(histogram(x, nbins=4096, step=1000), np.bincount(x.ravel(), minlength=4096))


def test_percentiles_and_degenerate_images() -> None:
    hist = np.zeros(256, np.int64)
    hist[10:210] = 1  # uniform over 10..209
    norm = norm_from_histogram(hist, percentiles=(1.0, 99.0))
    assert norm["lo"] == 11.0 and norm["hi"] == 207.0
    const = np.zeros(256, np.int64)
    const[7] = 5
    assert norm_from_histogram(const)["hi"] == 8.0
    with pytest.raises(ValueError, match="non-empty histogram"):
        norm_from_histogram(np.zeros(8))


def test_apply_norm_is_pointwise() -> None:
    x = np.random.default_rng(2).integers(0, 255, (64, 64)).astype(np.uint8)
    norm = {"lo": 20.0, "hi": 220.0}
    whole = apply_norm(x, norm)
    assert whole.dtype == np.float32
    np.testing.assert_array_equal(whole[10:30, 5:50], apply_norm(x[10:30, 5:50], norm))
    np.testing.assert_allclose(whole, (x.astype(np.float64) - 20) / 200, rtol=1e-6)
