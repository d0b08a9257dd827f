"""Tests of semscale.synth.evaluation: the evaluation-only simulator settings."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from semscale.errors import ConfigError
from semscale.synth import simulate
from semscale.synth.evaluation import EVALUATION_SETTINGS, evaluation_params
from semscale.synth.params import DEFAULT_PARAMS, NI, NIO, YSZ, SimParams

# The fields each setting documents as changed (its docstring comments) and nothing else.
DOCUMENTED = {
    "coarse-noisy": {"grain_d_um", "agglomerate_um", "open_diff_um", "rounding_um", "corner_um",
                     "noise_gain", "noise_read", "psf_sigma_px", "drift_gain_sd", "drift_ramp_per_um",
                     "drift_offset_sd"},
    "overlap": {"base", "grain_sd", "ox_tau_min", "front_roughness", "knob_roughness",
                "nio_internal_porosity", "nio_pore_um"},
    "fine-slow": {"grain_d_um", "agglomerate_um", "ox_tau_min", "psf_sigma_px", "noise_gain", "noise_read",
                  "base"},
}


def _changed(params: SimParams) -> set[str]:
    return {f.name for f in dataclasses.fields(SimParams)
            if getattr(params, f.name) != getattr(DEFAULT_PARAMS, f.name)}


def test_at_least_two_settings_each_differing_in_exactly_the_documented_fields() -> None:
    assert len(EVALUATION_SETTINGS) >= 2
    assert set(EVALUATION_SETTINGS) == set(DOCUMENTED)
    for name, params in EVALUATION_SETTINGS.items():
        assert isinstance(params, SimParams)
        assert _changed(params) == DOCUMENTED[name], name
        assert evaluation_params(name) is params


def test_the_changes_go_the_documented_way() -> None:
    coarse, overlap = EVALUATION_SETTINGS["coarse-noisy"], EVALUATION_SETTINGS["overlap"]
    d = DEFAULT_PARAMS
    assert coarse.grain_d_um > d.grain_d_um and coarse.agglomerate_um > d.agglomerate_um
    assert coarse.noise_read > d.noise_read and coarse.psf_sigma_px > d.psf_sigma_px
    assert coarse.drift_offset_sd > d.drift_offset_sd
    gap = abs(overlap.base[YSZ] - overlap.base[NI]) + abs(overlap.base[NI] - overlap.base[NIO])
    assert gap < abs(d.base[YSZ] - d.base[NI]) + abs(d.base[NI] - d.base[NIO])
    assert overlap.grain_sd[NI] > d.grain_sd[NI]
    fine = EVALUATION_SETTINGS["fine-slow"]
    assert fine.grain_d_um < d.grain_d_um and fine.ox_tau_min > d.ox_tau_min and fine.psf_sigma_px < d.psf_sigma_px
    assert fine.base[NIO] < d.base[NIO] and fine.base[YSZ] > d.base[YSZ]


@pytest.mark.parametrize("name", sorted(EVALUATION_SETTINGS))
def test_simulate_gives_valid_images(name: str) -> None:
    params = evaluation_params(name)
    im = simulate((192, 224), oxidation_min=10, seed=5, params=params)
    assert im.sem.shape == im.truth.shape == (192, 224)
    assert im.sem.dtype == np.uint8 and im.truth.dtype == np.uint8
    assert set(np.unique(im.truth).tolist()) == {0, 1, 2, 3}
    assert set(im.eds) == {"Ni", "O", "Zr"}
    default = simulate((192, 224), oxidation_min=10, seed=5)
    assert not np.array_equal(im.sem, default.sem)  # the setting reaches the image


def test_overlap_brings_the_rendered_grey_levels_of_ni_and_ysz_closer() -> None:
    im = simulate((256, 256), oxidation_min=0, seed=2, params=evaluation_params("overlap"))
    ref = simulate((256, 256), oxidation_min=0, seed=2)

    def gap(x: np.ndarray, truth: np.ndarray) -> float:
        return float(x[truth == YSZ].mean() - x[truth == NI].mean())

    assert gap(im.sem, im.truth) < 0.75 * gap(ref.sem, ref.truth)


def test_unknown_setting_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="coarse-noisy.*overlap") as info:
        evaluation_params("default")
    assert "'default'" in str(info.value)
