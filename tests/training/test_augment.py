"""Tests of semscale.training.augment: the dihedral group, geometric ops on image and labels alike,
photometric ops on the image only, Gaussian–Poisson noise statistics."""

from __future__ import annotations

import numpy as np
import pytest

from semscale.errors import ConfigError
from semscale.training.augment import Augment, augment_pair, dihedral

P = 32


def test_dihedral_is_the_group_of_eight():
    a = np.arange(12).reshape(3, 4)
    outs = [dihedral(a, k) for k in range(8)]
    assert len({(o.shape, o.tobytes()) for o in outs}) == 8
    for k in range(8):  # each element has an inverse in the set, and applying it twice stays in the set
        assert any(np.array_equal(dihedral(outs[k], j), a) for j in range(8))


def test_label_shaped_image_survives_every_geometric_augmentation(blobs):
    lab = blobs.labels((P, P), 7)
    img = lab.astype(np.float32) / 3
    seen = set()
    for s in range(64):
        rng = np.random.default_rng(s)
        k = int(np.random.default_rng(s).integers(8))
        seen.add(k)
        ai, al = augment_pair(img, lab, rng, Augment.geometric_only())
        np.testing.assert_array_equal(np.rint(ai * 3).astype(np.uint8), al)
        np.testing.assert_array_equal(al, dihedral(lab, k))
    assert seen == set(range(8))


def test_photometric_ops_change_image_only(blobs):
    lab = blobs.labels((P, P), 8)
    img = lab.astype(np.float32) / 3
    aug = Augment(dihedral=False, blur_prob=1, contrast_prob=1, brightness_prob=1, noise_prob=1)
    ai, al = augment_pair(img, lab, np.random.default_rng(0), aug)
    np.testing.assert_array_equal(al, lab)
    assert ai.dtype == np.float32 and not np.allclose(ai, img)


def test_gaussian_poisson_noise_statistics():
    img = np.full((256, 256), 0.5, np.float32)
    aug = Augment(dihedral=False, blur_prob=0, contrast_prob=0, brightness_prob=0, noise_prob=1,
                  noise_sigma=(0.02, 0.02))
    out, _ = augment_pair(img, np.zeros(img.shape, np.uint8), np.random.default_rng(1), aug)
    expected_var = 0.5 / 255 + 0.02**2  # Var[Poisson(I C)/C] = I/C, plus the Gaussian part
    assert abs(out.mean() - 0.5) < 0.005
    assert out.var() == pytest.approx(expected_var, rel=0.05)


def test_augment_coerce():
    assert Augment.coerce(False) == Augment.none()
    assert Augment.coerce({"blur_prob": 0.0}).blur_prob == 0.0
    assert Augment.coerce(Augment().to_dict()) == Augment()
    with pytest.raises(ConfigError, match="blurr"):
        Augment.coerce({"blurr": 1})
