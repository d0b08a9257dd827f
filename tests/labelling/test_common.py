"""Tests of semscale.labelling._common: exact halos and the block helpers."""

from __future__ import annotations

import dask.array as da
import numpy as np
from scipy import ndimage

from semscale.labelling._common import (
    block_range,
    ensure_min_chunk,
    gauss_halo,
    map_with_halo,
    smooth,
)


def test_halo_is_scipys_kernel_radius():
    impulse = np.zeros(101, np.float32)
    impulse[50] = 1
    for sigma in (0.7, 1.0, 2.0, 4.0):
        support = np.flatnonzero(ndimage.gaussian_filter1d(impulse, sigma, truncate=4.0))
        assert support.max() - 50 == gauss_halo(sigma)


def test_short_last_chunks_are_merged_and_small_chunks_grown():
    x = da.zeros((200, 130), chunks=(64, 32))
    y = ensure_min_chunk(x, 24)
    assert y.chunks == ((64, 64, 72), (32, 32, 32, 34))
    z = ensure_min_chunk(x, 40)
    assert min(min(c) for c in z.chunks) >= 40 and z.shape == x.shape
    assert ensure_min_chunk(x, 2) is x
    assert block_range(y.chunks, (2, 1)) == [(128, 200), (32, 64)]


def test_map_with_halo_and_smooth_blockwise_equal_whole():
    rng = np.random.default_rng(0)
    x = rng.random((70, 55)).astype(np.float32)

    def fn(b, rows, cols):  # a 3x3 max filter, then the block's core, as uint8 codes
        core = ndimage.maximum_filter(b, 3)[2:-2, 2:-2]
        return (core * 100).astype(np.uint8) + np.uint8(rows[0] % 2)

    whole = map_with_halo(x, fn, halo=2, min_chunk=2)
    lazy = map_with_halo(da.from_array(x, chunks=(20, 16)), fn, halo=2, min_chunk=2)
    got = lazy.compute()
    want_core = (ndimage.maximum_filter(np.pad(x, 2, mode="symmetric"), 3)[2:-2, 2:-2] * 100).astype(np.uint8)
    np.testing.assert_array_equal(whole, want_core)
    assert lazy.chunks[0] == (20, 20, 20, 10)
    parity = np.zeros_like(got)
    for i in range(len(lazy.chunks[0])):
        (r0, r1), _ = block_range(lazy.chunks, (i, 0))
        parity[r0:r1] = r0 % 2  # rows handed to fn are the block's global rows
    np.testing.assert_array_equal(got, want_core + parity)
    np.testing.assert_array_equal(smooth(da.from_array(x, chunks=(20, 16)), sigma=1.5).compute(),
                                  smooth(x, sigma=1.5))
