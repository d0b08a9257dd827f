"""Tests of semscale.labelling.rules: data-driven splits, rule quantities, which phases are present."""

from __future__ import annotations

import numpy as np
import pytest

from semscale.errors import InputImageError
from semscale.labelling.registration import (
    block_mean,
    sem_histogram,
    sem_solid_fraction,
    smooth_eds,
)
from semscale.labelling.rules import Split, eds_quantities, fit_rules, sem_split, split, unmix

F = 4


def test_split_finds_the_gap_between_two_populations():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(0.2, 0.03, 4000), rng.normal(0.7, 0.05, 2000)])
    s = split(v)
    assert 0.2 + 0.03 < s.threshold < 0.7 - 0.05  # between the populations, beyond one σ of each
    assert s.low == pytest.approx(0.2, abs=0.02) and s.high == pytest.approx(0.7, abs=0.02)
    assert s.is_low(0.2, 0.5) and not s.is_low(s.threshold - 0.01, 0.5) and s.is_high(0.75, 0.5)
    with pytest.raises(InputImageError, match="enough pixels"):
        split(np.zeros(1))
    assert Split(0.5, 0.0, 1.0).is_high(0.8, 0.5) and not Split(0.5, 0.0, 1.0).is_high(0.7, 0.5)


def _fit(sem, eds):
    from semscale.labelling._common import smooth

    x = sem.astype(np.float32) / 255
    xs = smooth(x)
    counts, edges = sem_histogram(xs)
    t = sem_split(counts, edges).threshold
    return fit_rules(smooth_eds(eds), sem_solid=sem_solid_fraction(xs, threshold=t, factor=F),
                     sem_mean=block_mean(xs, factor=F), sem_hist=(counts, edges))


@pytest.mark.parametrize(("phases", "nio"), [((0.3, 0.2, 0.2, 0.3), "both"), ((0.3, 0.0, 0.4, 0.3), "Ni"),
                                             ((0.3, 0.4, 0.0, 0.3), "NiO")])
def test_rules_see_which_ni_phases_are_present(toy_image, phases, nio):
    sem, _, eds = toy_image((256, 256), seed=21, phases=phases)
    rules = _fit(sem, eds)
    assert rules.nio == nio
    assert "YSZ" in rules.endmembers
    # the EDS signatures of the phases found: YSZ carries Zr, Ni-bearing phases do not
    q = eds_quantities({el: np.asarray(m, np.float32) for el, m in smooth_eds(eds).items()},
                       scales=rules.scales, o_per_zr=rules.o_per_zr)
    assert rules.endmembers["YSZ"][2] > 0.5 and all(rules.endmembers[c][2] < 0.3 for c in rules.endmembers
                                                     if c != "YSZ")
    frac = unmix(q, rules.endmembers)
    assert set(frac) == {"NiO", "Ni", "YSZ", "solid"}


def test_rules_need_every_element_and_solid_pixels(toy_image):
    sem, _, eds = toy_image((128, 128), seed=2)
    with pytest.raises(InputImageError, match="missing"):
        _fit(sem, {k: v for k, v in eds.items() if k != "Zr"})
    with pytest.raises(InputImageError, match="fully solid"):
        fit_rules(smooth_eds(eds), sem_solid=np.zeros((32, 32), np.float32),
                  sem_hist=(np.ones(10), np.linspace(0, 1, 11)))


def test_an_oxidised_image_without_eds_nio_leaves_pore_facing_ni_unresolved(toy_image):
    """Ni-only rules after oxidation began: the Ni within one EDS pixel of a pore is unresolved; before
    oxidation (0 min, or no time given) and wherever the EDS finds NiO, the target claims every pixel."""
    from semscale.labelling.rules import unresolved_band

    sem, _, eds = toy_image((256, 256), seed=21, phases=(0.3, 0.0, 0.4, 0.3))
    ni_only = _fit(sem, eds)
    band = unresolved_band(ni_only, factor=F, oxidation_min=10)
    assert band is not None and band["why"]
    assert {k: band[k] for k in ("class", "next_to", "width_px")} == {"class": "Ni", "next_to": "pore",
                                                                       "width_px": float(F)}
    assert unresolved_band(ni_only, factor=F, oxidation_min=0) is None
    assert unresolved_band(ni_only, factor=F, oxidation_min=None) is None
    sem, _, eds = toy_image((256, 256), seed=21)
    assert unresolved_band(_fit(sem, eds), factor=F, oxidation_min=10) is None  # NiO found: nothing hidden
