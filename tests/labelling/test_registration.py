"""Tests of semscale.labelling.registration: EDS on the SEM grid, shift estimation, recorded registration."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from semscale.errors import InputImageError
from semscale.labelling import eds_on_sem_grid, register_image

F = 4


def test_upsampling_is_pixel_area_aligned_and_blockwise_exact():
    shape = (45, 38)  # not multiples of F
    he, we = math.ceil(shape[0] / F), math.ceil(shape[1] / F)
    ramp = np.add.outer(np.arange(he, dtype=np.float32), np.zeros(we, np.float32))
    up = eds_on_sem_grid(ramp, factor=F, shape=shape)
    y = np.arange(shape[0])
    want = np.clip((y - (F - 1) / 2) / F, 0, he - 1)  # EDS pixel i's centre is SEM i*F + (F-1)/2
    np.testing.assert_allclose(up[:, 5], want, atol=1e-6)
    shifted = eds_on_sem_grid(ramp, factor=F, shape=shape, shift=(2.0, 0.0))
    np.testing.assert_allclose(shifted[10:30, 3], up[8:28, 3], atol=1e-6)  # registered(y) = up(y - 2)
    rng = np.random.default_rng(0)
    m = rng.random((he, we)).astype(np.float32)
    whole = eds_on_sem_grid(m, factor=F, shape=shape, shift=(0.7, -1.3))
    blocks = eds_on_sem_grid(m, factor=F, shape=shape, shift=(0.7, -1.3), chunks=(13, 17))
    np.testing.assert_array_equal(blocks.compute(), whole)
    with pytest.raises(InputImageError, match="ceil"):
        eds_on_sem_grid(m[:-1], factor=F, shape=shape)


@pytest.mark.parametrize("shift", [(1.7, -2.3), (-0.6, 0.9)])
def test_registration_recovers_known_shift(tmp_path, toy_image, store_of, shift):
    sem, truth, eds = toy_image((256, 256), seed=11, shift=shift)
    s = store_of(tmp_path / "r.zarr", {"im": (sem, truth, eds)})
    reg = register_image(s, "im")
    assert abs(reg.shift_px[0] - shift[0]) < 0.5
    assert abs(reg.shift_px[1] - shift[1]) < 0.5
    assert reg.quality > 0.6
    assert s.root["eds/im"].attrs["semscale"]["registration"]["shift_px"] == pytest.approx(list(reg.shift_px))


def test_poor_registration_warns(tmp_path, caplog, toy_image, store_of):
    sem, truth, _ = toy_image((192, 192), seed=1)
    _, _, other_eds = toy_image((192, 192), seed=2)  # EDS of a different microstructure
    s = store_of(tmp_path / "p.zarr", {"im": (sem, truth, other_eds)})
    with caplog.at_level(logging.WARNING, logger="semscale.labelling"):
        reg = register_image(s, "im")
    assert reg.quality < 0.5
    assert "registration of im is poor" in caplog.text
