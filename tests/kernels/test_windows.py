"""semscale.kernels.windows: window grid, tiles, input extents, halo depth, evaluation counts, Gaussian
weights, mirrored reads, geometry validation."""

from __future__ import annotations

import numpy as np
import pytest

from semscale.config import InferenceConfig
from semscale.errors import ConfigError
from semscale.kernels.windows import (
    count_evaluations,
    gaussian_weights,
    input_extent,
    read_symmetric,
    required_depth,
    tile_spans,
    window_starts,
)
from tests.oracles import geometry


@pytest.mark.parametrize(("p", "s"), [(8, 8), (8, 3), (12, 4), (5, 2)])
def test_window_starts_are_exactly_the_overlapping_grid_windows(p, s):
    for start, stop in [(0, 1), (0, 17), (5, 23), (16, 40), (31, 32)]:
        brute = [k * s for k in range(-50, 50) if k * s < stop and k * s + p > start]
        np.testing.assert_array_equal(window_starts(start, stop, patch_size=p, stride=s), brute)


def test_every_pixel_covered_equally_when_stride_divides_patch():
    counts = np.zeros(60, int)
    for y in window_starts(0, 60, patch_size=16, stride=4):
        counts[max(0, y) : min(60, y + 16)] += 1
    assert (counts == 4).all()


def test_tile_spans_partition_and_alignment():
    for start, stop in [(0, 100), (13, 77), (64, 128)]:
        spans = tile_spans(start, stop, tile_size=32, halo=8, multiple=4)
        cores = [(c0, c1) for c0, c1, _, _ in spans]
        assert cores[0][0] == start and cores[-1][1] == stop
        assert all(a[1] == b[0] for a, b in zip(cores[:-1], cores[1:]))
        for c0, c1, i0, i1 in spans:
            assert i0 % 4 == 0 and i1 % 4 == 0 and c1 - c0 <= 32
            assert i0 <= c0 - 8 and i1 >= c1 + 8


@pytest.mark.parametrize("mode", ["average", "gaussian", "tile"])
def test_required_depth_covers_every_block(mode):
    geom = geometry(InferenceConfig(mode=mode, patch_size=16, stride=6, tile_size=16), multiple=4, halo_px=9)
    chunks = ((30, 30, 17), (25, 25, 25, 2))
    depth = required_depth(chunks, geom)
    for axis, cs in enumerate(chunks):
        a = 0
        for c in cs:
            lo, hi = input_extent(a, a + c, geom)
            assert a - depth[axis] <= lo and hi <= a + c + depth[axis]
            a += c


def test_count_evaluations_counts_window_and_tile_pixels():
    # naive stitching (stride = patch) of 40 × 24 px in one block: 3 × 2 windows of 16²
    geom = geometry(InferenceConfig(mode="average", patch_size=16))
    assert count_evaluations((40, 24), ((40,), (24,)), geom) == 3 * 16 * 2 * 16
    # two blocks along y: windows straddling the cut are evaluated by both blocks
    assert count_evaluations((40, 24), ((20, 20), (24,)), geom) == (2 + 2) * 16 * 2 * 16
    # tiles: one tile per block, the input padded to the multiple plus the halo on both sides
    tiles = geometry(InferenceConfig(mode="tile", tile_size=64), multiple=4, halo_px=6)  # halo 8
    assert count_evaluations((30, 21), ((30,), (21,)), tiles) == (32 + 16) * (24 + 16)


def test_gaussian_weights():
    w = gaussian_weights(32, sigma_fraction=0.125)
    assert w.shape == (32, 32) and w.dtype == np.float32
    np.testing.assert_allclose(w, w.T)
    np.testing.assert_allclose(w, w[::-1, ::-1])
    assert w.max() == pytest.approx(1.0, abs=1e-6) == w[15:17, 15:17].max()
    np.testing.assert_allclose(w[0, 15] / w[15, 15], np.exp(-0.5 * (15.5 / 4) ** 2) / np.exp(-0.5 * (0.5 / 4) ** 2), rtol=1e-5)


def test_read_symmetric_equals_numpy_symmetric_padding():
    a = np.arange(7 * 5).reshape(7, 5)
    padded = np.pad(a, ((9, 11), (6, 4)), mode="symmetric")  # wider than the array: mirrored repeatedly
    np.testing.assert_array_equal(read_symmetric(a, (-9, 7 + 11), (-6, 5 + 4)), padded)
    np.testing.assert_array_equal(read_symmetric(a, (2, 5), (1, 3)), a[2:5, 1:3])


def test_bad_geometry_is_clear():
    with pytest.raises(ConfigError, match="inference.mode"):
        geometry(InferenceConfig(mode="median"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="stride"):
        geometry(InferenceConfig(mode="average", patch_size=32, stride=64))
    with pytest.raises(ConfigError, match="multiple of 4"):
        geometry(InferenceConfig(mode="average", patch_size=30), multiple=4)
    with pytest.raises(ConfigError, match="tile_size"):
        geometry(InferenceConfig(mode="tile", tile_size=30), multiple=4)
    with pytest.raises(ConfigError, match="patch_size"):
        geometry(InferenceConfig(mode="gaussian"))  # no patch size in the config nor from the model
