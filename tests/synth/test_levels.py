"""Tests of semscale.synth.levels and the campaign-centred synthetic windows: phase grey levels measured on
labelled images, carried over to simulator inputs, and the simulator centred there."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from semscale.config import TrainingConfig
from semscale.errors import ConfigError
from semscale.store import create_store
from semscale.synth import simulate
from semscale.synth.campaign import add_to_store
from semscale.synth.levels import (
    PhaseLevels,
    measure_levels,
    pool_levels,
    relative_to,
    simulator_levels,
)
from semscale.synth.params import DEFAULT_PARAMS
from semscale.synth.randomise import LEVELS_JITTER, LEVELS_SD_SCALE, RANGES, random_params
from semscale.training.sampler import PatchSampler
from semscale.training.splits import make_split
from semscale.training.synthetic import campaign_levels


def _grains(shape: tuple[int, int], *, cell: int, sd: float, rng: np.random.Generator) -> np.ndarray:
    """A piecewise-constant field: one N(0, sd) value per ``cell``² square (a grain's own contrast)."""
    coarse = rng.normal(0.0, sd, size=(-(-shape[0] // cell), -(-shape[1] // cell)))
    return np.kron(coarse, np.ones((cell, cell)))[: shape[0], : shape[1]]


def test_measure_levels_reads_interior_levels_above_the_pore():
    rng = np.random.default_rng(0)
    labels = np.zeros((240, 240), np.uint8)
    labels[:, 60:120], labels[:, 120:180], labels[:, 180:] = 1, 2, 3
    level = np.array([20.0, 95.0, 120.0, 150.0])
    contrast = np.array([0.0, 6.0, 10.0, 4.0])
    grains = np.stack([_grains(labels.shape, cell=20, sd=s, rng=rng) for s in contrast])
    sem = level[labels] + np.take_along_axis(grains, labels[None].astype(np.intp), 0)[0]
    sem = np.clip(sem + rng.normal(0.0, 3.0, labels.shape), 0, 255).astype(np.uint8)
    lv = measure_levels(sem, labels, n_classes=4)
    np.testing.assert_allclose(lv.base, level - level[0], atol=3.0)  # medians of smoothed interiors
    assert lv.base[0] == 0.0
    for k in (1, 2, 3):  # the grain contrast survives the smoothing; the per-pixel noise mostly not
        assert contrast[k] * 0.6 < lv.grain_sd[k] < contrast[k] * 1.3 + 1.0, (k, lv.grain_sd[k])
    assert all(p > 0 for p in lv.pixels) and lv.pixels[1] < 60 * 240  # interiors only: eroded
    # relative to an anchor phase: a gain and an offset (and the units) drop out
    rel = relative_to(lv, 3)
    assert rel.base[3] == 1.0 and rel.pixels == lv.pixels
    brighter = relative_to(measure_levels(sem.astype(np.float32) * 1.7 + 9.0, labels, n_classes=4), 3)
    np.testing.assert_allclose(brighter.base, rel.base, atol=1e-3)
    np.testing.assert_allclose(brighter.grain_sd, rel.grain_sd, rtol=1e-3)
    np.testing.assert_allclose(np.array(rel.base) * lv.base[3], lv.base, rtol=1e-5)
    # a class without interior pixels is absent; without the anchor phase nothing is measured
    labels[:, 60:120] = 0
    gone = measure_levels(sem, labels, n_classes=4)
    assert gone.pixels[1] == 0 and np.isnan(gone.base[1]) and np.isnan(gone.grain_sd[1])
    labels[labels == 3] = 2
    assert relative_to(measure_levels(sem, labels, n_classes=4), 3).pixels == (0, 0, 0, 0)
    with pytest.raises(ValueError, match="labels of the image's shape"):
        measure_levels(sem, labels[:10], n_classes=4)


def test_pool_levels_weights_by_interior_pixels():
    a = PhaseLevels(base=(0.0, 90.0, 110.0, 140.0), grain_sd=(1.0, 10.0, 12.0, 8.0), pixels=(10, 300, 100, 0))
    b = PhaseLevels(base=(0.0, 100.0, np.nan, 150.0), grain_sd=(1.0, 20.0, np.nan, 6.0), pixels=(30, 100, 0, 50))
    p = pool_levels([a, b])
    assert p.pixels == (40, 400, 100, 50)
    np.testing.assert_allclose(p.base, (0.0, 92.5, 110.0, 150.0))
    np.testing.assert_allclose(p.grain_sd, (1.0, 12.5, 12.0, 6.0))
    with pytest.raises(ValueError):
        pool_levels([])


def test_simulator_levels_move_the_calibration_by_the_measured_difference():
    ref = PhaseLevels(base=(0.0, 0.64, 0.8, 1.0), grain_sd=(0.04, 0.08, 0.1, 0.1), pixels=(9, 9, 9, 9))
    cal = dict(base=DEFAULT_PARAMS.base, grain_sd=DEFAULT_PARAMS.grain_sd, unit=140.0)
    base, sd = simulator_levels(ref, ref, **cal)
    assert base == DEFAULT_PARAMS.base and sd == DEFAULT_PARAMS.grain_sd  # the calibration reproduces itself
    moved = PhaseLevels(base=(0.0, 0.7, 0.9, 1.0), grain_sd=(0.04, 0.1, 0.02, 0.1), pixels=(9, 9, 0, 9))
    base, sd = simulator_levels(moved, ref, **cal)
    assert base == pytest.approx((0.0, 97.5 + 0.06 * 140, 117.5, 147.2))  # Ni absent: the calibration's
    assert sd[1] == pytest.approx(np.sqrt(9.0**2 + 140.0**2 * (0.1**2 - 0.08**2))) and sd[2:] == (13.0, 8.0)
    low = PhaseLevels(base=(0.0, 0.64, 0.8, 1.0), grain_sd=(0.04, 0.0, 0.1, 0.1), pixels=(9, 9, 9, 9))
    assert simulator_levels(low, ref, **cal)[1][1] == pytest.approx(0.3 * 9.0)  # kept above 0.3·sd


def test_random_params_centred_on_campaign_levels():
    base, sd = (0.0, 104.0, 118.0, 134.0), (0.0, 12.0, 16.0, 11.0)
    rng = np.random.default_rng(5)
    draws = [random_params(rng, levels=(base, sd)) for _ in range(40)]
    b = np.array([p.base for p in draws])
    s = np.array([p.grain_sd for p in draws])
    assert np.all(np.abs(b - base) <= np.array(LEVELS_JITTER) + 1e-9) and b[:, 1].std() > 0.5
    lo, hi = LEVELS_SD_SCALE
    assert np.all((s[:, 1:] >= lo * np.array(sd[1:]) - 1e-9) & (s[:, 1:] <= hi * np.array(sd[1:]) + 1e-9))
    for name, (lo, hi) in RANGES.items():  # every other field keeps its randomisation range
        assert all(lo <= getattr(p, name) <= hi for p in draws), name


SHIFTED = (0.0, 109.5, 117.5, 135.2)


@pytest.fixture(scope="module")
def shifted_store(tmp_path_factory: pytest.TempPathFactory):
    """Three simulated images whose NiO is 12 grey levels brighter and YSZ 12 darker than the calibration's,
    with their exact truth as the training labels."""
    params = dataclasses.replace(DEFAULT_PARAMS, base=SHIFTED)
    store = create_store(tmp_path_factory.mktemp("lv") / "c.zarr", name="lv", pixel_size_um=0.04458)
    for i, t in enumerate((5.0, 20.0, 60.0)):
        add_to_store(store, f"s{i}", simulate((512, 512), oxidation_min=t, seed=40 + i, params=params,
                                             with_eds=False), chunks=256, role="train")
    return store


def test_campaign_levels_recover_a_shifted_campaign(shifted_store):
    base, sd = campaign_levels(shifted_store, ["s0", "s1", "s2"], label_source="truth")
    # relative to YSZ (kept at the calibration's level): NiO 109.5/135.2, Ni 117.5/135.2 of it
    expected = np.array(SHIFTED) / SHIFTED[3] * DEFAULT_PARAMS.base[3]
    assert base[0] == 0.0 and base[3] == DEFAULT_PARAMS.base[3]
    np.testing.assert_allclose(base[1:3], expected[1:3], atol=4.0)
    assert base[1] - DEFAULT_PARAMS.base[1] > 15.0  # the calibration is far: 21.7 grey levels
    assert all(s > 0 for s in sd[1:])


def test_sampler_simulates_around_the_campaign_levels(shifted_store):
    kw = dict(patch_size=32, batch_size=4, steps_per_epoch=2, label_source="truth", synthetic_fraction=0.5,
              synthetic_images=2, test_tiles_fraction=0.2)
    split = make_split(shifted_store, TrainingConfig(**kw))
    plain = PatchSampler(shifted_store, split, TrainingConfig(**kw))
    centred = PatchSampler(shifted_store, split, TrainingConfig(**kw, synthetic_levels="campaign"))
    assert plain.synthetic.levels is None and "synthetic_levels" not in plain.describe()
    levels = centred.describe()["synthetic_levels"]
    assert levels["base"][1] > DEFAULT_PARAMS.base[1] + 15.0

    def nio_minus_ysz(sampler: PatchSampler) -> float:  # normalised grey-level gap of the simulated images
        gaps = [img[lab == 1].mean() - img[lab == 3].mean() for img, lab in sampler.synthetic.images()
                if (lab == 1).sum() > 100]
        return float(np.mean(gaps))

    assert nio_minus_ysz(centred) > nio_minus_ysz(plain) + 0.05  # NiO nearer YSZ, as in the campaign
    x, y = centred[0]
    assert x.shape == (4, 32, 32, 1) and set(np.unique(y)) <= {0, 1, 2, 3}
    with pytest.raises(ConfigError, match="training.synthetic_levels"):
        TrainingConfig(synthetic_levels="truth")  # type: ignore[arg-type]


def test_campaign_levels_without_ysz_fall_back_to_the_calibration(shifted_store, caplog):
    for image_id in ("s0", "s1"):
        truth = shifted_store.label_array(image_id, "truth")[...]
        shifted_store.write_labels(image_id, "no_ysz", np.where(truth == 3, 2, truth).astype(np.uint8))
    with caplog.at_level("WARNING", logger="semscale.training.synthetic"):
        base, sd = campaign_levels(shifted_store, ["s0", "s1"], label_source="no_ysz")
    assert base == DEFAULT_PARAMS.base and sd == DEFAULT_PARAMS.grain_sd
    assert "no interior of YSZ in the no_ysz labels of s0, s1" in caplog.text and "every phase" in caplog.text
