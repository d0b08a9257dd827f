"""Tests of semscale.synth.realism: grey levels overlap like the real patch's, context decides."""

from __future__ import annotations

import numpy as np
import pytest

from semscale import synth
from semscale.synth import NI, YSZ, SynthImage, realism_table
from semscale.synth.realism import as_grey8, bayes_accuracy, context_codes


def test_bayes_accuracy_by_hand() -> None:
    codes = np.array([0, 0, 0, 1, 1, 2])
    labels = np.array([1, 1, 0, 0, 1, 1])
    # code 0: majority 1 (2 of 3), code 1: a tie (1 of 2), code 2: 1 of 1 -> 4 of 6 right
    assert bayes_accuracy(codes, labels, n_codes=3, n_classes=2) == pytest.approx(4 / 6)
    assert np.isnan(bayes_accuracy(codes[:0], labels[:0], n_codes=3, n_classes=2))


def test_context_codes_and_grey8() -> None:
    flat = np.full((40, 40), 200, np.uint8)
    codes = context_codes(flat)
    assert np.all(codes == (200 * 32 // 256) * 32)  # mean bin 25, std bin 0
    sixteen = (flat.astype(np.uint16) * 257)
    np.testing.assert_array_equal(as_grey8(sixteen), flat)
    assert context_codes(flat, bins=8).max() < 64


def test_realism_table_needs_images() -> None:
    with pytest.raises(ValueError, match="at least one SynthImage"):
        realism_table([])


# -- SEM realism: grey levels overlap, context decides ---------------------------------------------
def test_grey_level_order_and_calibration(pooled: dict) -> None:
    ph = pooled["phases"]
    means = [ph[name]["mean"] for name in ("pore", "NiO", "Ni", "YSZ")]
    assert means == sorted(means)
    for name, real in synth.REAL_PATCH.items():
        assert ph[name]["mean"] == pytest.approx(real["mean"], abs=8.0), name
        assert ph[name]["std"] == pytest.approx(real["std"], abs=6.0), name


def test_grey_level_alone_is_not_enough_but_context_is(pooled: dict) -> None:
    grey, grey_ni_ysz = (
        pooled["best_grey_level_accuracy"],
        pooled["best_grey_level_accuracy_ni_ysz"],
    )
    assert 0.6 < grey < 0.85
    assert 0.6 < grey_ni_ysz < 0.85  # Ni and YSZ overlap in grey level
    ctx, ctx_ni_ysz = pooled["context_feature_accuracy"], pooled["context_feature_accuracy_ni_ysz"]
    assert ctx > grey + 0.08
    assert ctx_ni_ysz > 0.9 and ctx_ni_ysz > grey_ni_ysz + 0.12


def test_bayes_accuracy_is_an_upper_bound_of_a_threshold(series: dict[int, SynthImage]) -> None:
    im = series[0]
    two = (im.truth == NI) | (im.truth == YSZ)
    g, t = im.sem[two].astype(int), im.truth[two]
    best_threshold = max(((g >= k) == (t == YSZ)).mean() for k in range(0, 256, 4))
    table = realism_table([im])
    assert table["best_grey_level_accuracy_ni_ysz"] >= best_threshold - 1e-12
