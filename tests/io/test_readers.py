"""Reading image files: any TIFF layout streamed in bands, EDS downsampling factors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from semscale.errors import InputImageError
from semscale.io.readers import infer_eds_factor, iter_bands


def _rand(shape, dtype, seed=0) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.random.default_rng(seed).integers(0, info.max, shape, dtype=dtype, endpoint=True)


@pytest.mark.parametrize("layout", [{"tile": (128, 128)}, {"tile": (96, 160)}, {"rowsperstrip": 7}, {}])
def test_band_streaming_reassembles_any_tiff_layout(tmp_path: Path, layout) -> None:
    img = _rand((1001, 777), np.uint16, seed=1)
    tifffile.imwrite(tmp_path / "x.tif", img, bigtiff=True, compression="zlib" if layout else None, **layout)
    for rows in (100, 256):
        out = np.zeros_like(img)
        seen = []
        for y0, band in iter_bands(tmp_path / "x.tif", rows=rows):
            assert band.shape[0] <= rows
            out[y0:y0 + band.shape[0]] = band
            seen.append(y0)
        assert sorted(seen) == list(range(0, 1001, rows))
        np.testing.assert_array_equal(out, img)


@pytest.mark.parametrize(
    ("sem", "eds", "factor"),
    [((2856, 4096), (714, 1024), 4), ((1001, 777), (251, 195), 4), ((1001, 777), (250, 194), 4),
     ((300, 200), (100, 67), 3), ((64, 64), (64, 64), 1)],
)
def test_eds_factor_inference(sem, eds, factor) -> None:
    assert infer_eds_factor(sem, eds) == factor


def test_eds_factor_errors() -> None:
    with pytest.raises(InputImageError, match=r"integer downsampling .* 1000×1000. Got 300×300"):
        infer_eds_factor((1000, 1000), (300, 300))
    with pytest.raises(InputImageError, match="no larger than the SEM image"):
        infer_eds_factor((100, 100), (200, 50))


