"""Tests of semscale.kernels.calibration: class offsets that give the labels the truth's class shares."""

from __future__ import annotations

import numpy as np
import pytest

from semscale import IGNORE_LABEL
from semscale.kernels.calibration import SHARE_TOLERANCE, class_shares, offset_labels, share_offsets


def _biased_classifier(seed: int, *, shape=(96, 96), bias=(0.0, -0.8, 0.6, 0.0), k=4):
    """Truth with uneven class shares and the probabilities of a noisy classifier whose log-probabilities
    carry ``bias``: it labels class 1 too rarely and class 2 too often."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(k, size=shape, p=[0.3, 0.15, 0.15, 0.4]).astype(np.uint8)
    logits = 2.0 * np.eye(k)[truth] + rng.normal(0, 1.0, (*shape, k)) + np.asarray(bias)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)).astype(np.float32), truth


def test_offsets_give_the_truths_class_shares_and_undo_a_known_bias():
    pairs = [_biased_classifier(s) for s in range(3)]
    probs, truths = [p for p, _ in pairs], [t for _, t in pairs]
    target = class_shares(truths, n_classes=4)
    before = class_shares([p.argmax(-1) for p in probs], n_classes=4)
    assert before[1] < target[1] - 0.03 and before[2] > target[2] + 0.03  # the bias shows
    b = share_offsets(probs, truths, n_classes=4)
    after = class_shares([offset_labels(p, b) for p in probs], n_classes=4)
    assert np.abs(after - target).max() < 10 * SHARE_TOLERANCE
    assert b.mean() == pytest.approx(0.0, abs=1e-9)
    assert b[1] - b[0] > 0.4 and b[2] - b[0] < -0.3  # the known bias, reversed (up to a common shift)
    acc = lambda labs: np.mean([(lab == t).mean() for lab, t in zip(labs, truths)])  # noqa: E731
    assert acc([offset_labels(p, b) for p in probs]) > acc([p.argmax(-1) for p in probs])


def test_offset_labels_are_the_argmax_of_the_prior_shifted_probabilities():
    p, _ = _biased_classifier(5, shape=(20, 30))
    b = np.array([0.3, -0.2, 0.5, -0.6])
    shifted = p * np.exp(b)
    shifted /= shifted.sum(-1, keepdims=True)
    np.testing.assert_array_equal(offset_labels(p, b), shifted.argmax(-1))
    np.testing.assert_array_equal(offset_labels(p, np.zeros(4)), p.argmax(-1))


def test_unlabelled_pixels_and_absent_classes_are_left_out():
    p, truth = _biased_classifier(7)
    truth = truth.copy()
    truth[truth == 3] = 2  # class 3 absent from the truth: its offset stays 0
    truth[:10] = IGNORE_LABEL
    b = share_offsets([p], [truth], n_classes=4)
    assert b[3] == 0.0
    labels = np.where(truth == IGNORE_LABEL, IGNORE_LABEL, offset_labels(p, b))
    shares, target = class_shares([labels], n_classes=4), class_shares([truth], n_classes=4)
    assert abs(shares[1] - target[1]) < abs(class_shares([np.where(truth == IGNORE_LABEL, IGNORE_LABEL,
                                                                    p.argmax(-1))], n_classes=4)[1] - target[1])


def test_mismatched_inputs_raise():
    p, t = _biased_classifier(1, shape=(8, 8))
    with pytest.raises(ValueError, match="as many probability maps as truths"):
        share_offsets([p, p], [t], n_classes=4)
