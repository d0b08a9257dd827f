"""Tests of semscale.synth.fields: random fields, upsampling, distances, quantiles."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from semscale.synth.fields import (
    distance_to,
    gaussian_field,
    quantile,
    upsample_linear,
    white_noise_std,
)


@pytest.mark.parametrize("sigma", [0.0, 1.5, 4.0, 9.0, 30.0])  # 9 and 30: the coarse-grid path
def test_gaussian_field_unit_variance_and_correlation(sigma: float) -> None:
    f = gaussian_field((600, 700), sigma, np.random.default_rng(0))
    assert f.shape == (600, 700) and f.dtype == np.float32
    # analytic normalisation: the std is ~1 up to the sampling error of few correlated blobs
    assert abs(float(f.std()) - 1.0) < (0.05 if sigma < 6 else 0.35)
    if sigma >= 1.5:
        lag = max(int(sigma), 1)
        corr = np.corrcoef(f[:, :-lag].ravel(), f[:, lag:].ravel())[0, 1]
        assert corr == pytest.approx(np.exp(-(lag**2) / (4 * sigma**2)), abs=0.1)


def test_white_noise_std_matches_scipy() -> None:
    noise = np.random.default_rng(1).standard_normal((800, 800))
    assert ndi.gaussian_filter(noise, 2.0, mode="wrap").std() == pytest.approx(
        white_noise_std(2.0), rel=0.03
    )


def test_upsample_linear_reproduces_a_plane() -> None:
    lo = np.add.outer(np.arange(6.0), 2.0 * np.arange(7.0)).astype(np.float32)  # z = y + 2 x
    up = upsample_linear(lo, (20, 24), 4.0)
    yy, xx = np.mgrid[0:20, 0:24] / 4.0
    np.testing.assert_allclose(up, yy + 2.0 * xx, atol=1e-5)


def test_distance_to_within_a_pixel_or_two() -> None:
    mask = np.zeros((121, 140), bool)
    mask[30, 40] = mask[90:95, 100:130] = True
    exact = ndi.distance_transform_edt(~mask)
    d = distance_to(mask)
    assert d.dtype == np.float32 and np.all(d[mask] == 0)
    assert np.abs(d - exact).max() <= 2.0
    assert np.all(distance_to(np.zeros((9, 9), bool)) > 12)


def test_quantile_by_partition() -> None:
    v = np.random.default_rng(2).random(1001)
    for q in (0.0, 0.1, 0.5, 0.99, 1.0):
        assert quantile(v, q) == pytest.approx(np.quantile(v, q, method="nearest"))
    assert quantile(v[:0], 0.5) == 0.0
