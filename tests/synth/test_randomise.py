"""Tests of semscale.synth.randomise: draws stay in their ranges, the evaluation settings never inside them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from semscale.synth.evaluation import EVALUATION_SETTINGS
from semscale.synth.params import DEFAULT_PARAMS
from semscale.synth.randomise import RANGES, outside_ranges, random_params, random_time


def test_draws_lie_in_the_ranges_and_vary():
    rng = np.random.default_rng(3)
    draws = [random_params(rng) for _ in range(50)]
    assert all(outside_ranges(p) == [] for p in draws)
    for name, (lo, hi) in RANGES.items():
        values = [getattr(p, name) for p in draws]
        assert lo <= min(values) < max(values) <= hi, name
    assert len({p.base for p in draws}) == 50
    assert outside_ranges(DEFAULT_PARAMS) == []  # the calibration is inside
    # deterministic for a seed
    assert random_params(np.random.default_rng(3)) == draws[0]
    times = [random_time(rng) for _ in range(400)]
    assert 0.0 in times and max(times) <= 150.0 and 0.05 < np.mean(np.array(times) == 0.0) < 0.3


@pytest.mark.parametrize("name", sorted(EVALUATION_SETTINGS))
def test_no_evaluation_setting_is_ever_drawn(name):
    outside = outside_ranges(EVALUATION_SETTINGS[name])
    assert outside, f"{name} lies inside the randomisation ranges"
    # and the check is not vacuous: moving one randomised field out of its range is detected
    lo, _hi = RANGES["psf_sigma_px"]
    assert outside_ranges(dataclasses.replace(DEFAULT_PARAMS, psf_sigma_px=lo / 2)) == ["psf_sigma_px"]
    assert outside_ranges(dataclasses.replace(DEFAULT_PARAMS, corner_um=1.0)) == ["corner_um"]
    grain = (0.0, 9.0 * 1.1, 13.0 * 0.9, 8.0)
    assert outside_ranges(dataclasses.replace(DEFAULT_PARAMS, grain_sd=grain)) == []
    assert outside_ranges(dataclasses.replace(DEFAULT_PARAMS, grain_sd=(1.0, 9.0, 13.0, 8.0))) == ["grain_sd"]
