"""Window and tile arithmetic of blockwise inference: pure functions of integers (px), no I/O, no dask.

Geometry, in global image coordinates (px), independent of the Dask chunking:

- ``average``: windows of ``P = patch_size`` px at stride ``s`` on a grid anchored at the image origin and
  extended past the borders (window starts ``k*s`` for every integer ``k`` whose window touches the image),
  so every pixel is covered by the same number of windows; the output is the uniform mean of the softmax.
  ``s = P`` is naive patch stitching.
- ``gaussian``: the same windows, each weighted by a separable Gaussian (``sigma = sigma_fraction * P``,
  peak 1 at the window centre) before normalising by the summed weights.
- ``tile``: the fully convolutional network on tiles of at most ``tile_size`` px (cut at global multiples of
  ``tile_size`` and at block edges) plus a context halo of ``halo`` px on each side, keeping the centre.
  Tile corners sit on the network's pooling grid (multiples of ``multiple = 2**poolings`` px) and the halo
  is at least the receptive field's one-sided extent (rounded up to ``multiple``), so a tile's centre equals
  a single pass over the whole (padded) image: about one network evaluation per pixel.

Outside the image the input is mirrored (edge pixel repeated: numpy ``"symmetric"`` = dask ``"reflect"``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from semscale.errors import ConfigError

__all__ = [
    "MODES",
    "Geometry",
    "align_down",
    "align_up",
    "central_crop",
    "count_evaluations",
    "gaussian_weights",
    "input_extent",
    "read_symmetric",
    "required_depth",
    "symmetric_index",
    "tile_spans",
    "window_starts",
]

MODES: tuple[str, ...] = ("average", "gaussian", "tile")


@dataclasses.dataclass(frozen=True)
class Geometry:
    """How windows / tiles are laid out (all sizes in px); validated against the network's ``multiple``.

    Built from an :class:`~semscale.config.InferenceConfig` and the model's facts by
    :func:`semscale.inference.make_geometry` (the config holds the defaults). ``patch_size`` and ``stride``
    matter in the window modes only, ``tile_size`` and ``halo`` in ``tile`` mode only.
    """

    mode: str
    patch_size: int | None
    stride: int | None
    halo: int
    multiple: int
    tile_size: int
    sigma_fraction: float
    tta: bool
    batch_size: int

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"Expected one of {list(MODES)} for `inference.mode`. Got {self.mode!r}.")
        if self.multiple < 1:
            raise ConfigError(f"Expected a positive network multiple. Got {self.multiple}.")
        if self.batch_size < 1:
            raise ConfigError(f"Expected a positive `inference.batch_size`. Got {self.batch_size}.")
        if self.mode == "tile":
            self._check_tiles()
        else:
            self._check_windows()

    def _check_tiles(self) -> None:
        if self.tile_size < self.multiple or self.tile_size % self.multiple:
            raise ConfigError(
                f"Expected `inference.tile_size` to be a positive multiple of {self.multiple} px (the "
                f"network's pooling factor). Got {self.tile_size}."
            )
        if self.halo < 0 or self.halo % self.multiple:
            raise ConfigError(f"Expected a halo that is a multiple of {self.multiple} px. Got {self.halo}.")

    def _check_windows(self) -> None:
        p = self.patch_size
        if p is None:
            raise ConfigError(
                f"Expected `inference.patch_size` for mode {self.mode!r}. Got none from the config or the "
                "model's sidecar; set `inference.patch_size`."
            )
        if p < 1 or p % self.multiple:
            raise ConfigError(
                f"Expected `inference.patch_size` to be a positive multiple of {self.multiple} px. Got {p}."
            )
        if self.stride is None or not 1 <= self.stride <= p:
            raise ConfigError(f"Expected `inference.stride` in [1, patch_size={p}] px. Got {self.stride}.")
        if not self.sigma_fraction > 0:
            raise ConfigError(f"Expected a positive `sigma_fraction`. Got {self.sigma_fraction}.")

    @property
    def window(self) -> tuple[int, int]:
        """``(patch_size, stride)`` of the window modes."""
        assert self.patch_size is not None and self.stride is not None, "window geometry"
        return self.patch_size, self.stride


def align_down(v: int, m: int) -> int:
    return (v // m) * m


def align_up(v: int, m: int) -> int:
    return -((-v) // m) * m


def window_starts(start: int, stop: int, *, patch_size: int, stride: int) -> np.ndarray:
    """Global start positions (px, int64, ascending) of all windows ``[k*stride, k*stride + patch_size)``
    that overlap ``[start, stop)``; ``k`` runs over all integers, so starts may be negative."""
    k0 = -((patch_size - 1 - start) // stride)  # ceil((start - P + 1) / s)
    k1 = (stop - 1) // stride
    return np.arange(k0, k1 + 1, dtype=np.int64) * stride


def tile_spans(
    start: int, stop: int, *, tile_size: int, halo: int, multiple: int
) -> list[tuple[int, int, int, int]]:
    """Tiles covering ``[start, stop)``: ``(core0, core1, in0, in1)`` in global px; cores are cut at global
    multiples of ``tile_size``; inputs extend to the pooling grid plus ``halo`` on each side."""
    cuts = [start, *range(align_up(start + 1, tile_size), stop, tile_size), stop]
    return [
        (c0, c1, align_down(c0, multiple) - halo, align_up(c1, multiple) + halo)
        for c0, c1 in zip(cuts[:-1], cuts[1:])
    ]


def _tiles(start: int, stop: int, geom: Geometry) -> list[tuple[int, int, int, int]]:
    return tile_spans(start, stop, tile_size=geom.tile_size, halo=geom.halo, multiple=geom.multiple)


def input_extent(start: int, stop: int, geom: Geometry) -> tuple[int, int]:
    """Global input range ``[lo, hi)`` (px) needed to predict the output range ``[start, stop)``."""
    if geom.mode == "tile":
        spans = _tiles(start, stop, geom)
        return spans[0][2], spans[-1][3]
    p, s = geom.window
    starts = window_starts(start, stop, patch_size=p, stride=s)
    return int(starts[0]), int(starts[-1]) + p


def required_depth(chunks: Sequence[Sequence[int]], geom: Geometry) -> tuple[int, ...]:
    """Smallest symmetric halo (px per axis) with which every block of ``chunks`` holds its input extent."""
    depth = []
    for axis_chunks in chunks:
        d, a = 0, 0
        for c in axis_chunks:
            lo, hi = input_extent(a, a + c, geom)
            d = max(d, a - lo, hi - (a + c))
            a += c
        depth.append(d)
    return tuple(depth)


def count_evaluations(shape: Sequence[int], chunks: Sequence[Sequence[int]], geom: Geometry) -> int:
    """Network input pixels evaluated (per model, without TTA) to predict an image of ``shape`` with blocks
    ``chunks`` — divide by ``prod(shape)`` for evaluations per pixel."""
    per_axis: list[list[int]] = []
    for axis_chunks in chunks:
        lengths, a = [], 0
        for c in axis_chunks:
            if geom.mode == "tile":
                lengths.append(sum(t[3] - t[2] for t in _tiles(a, a + c, geom)))
            else:
                p, s = geom.window
                lengths.append(len(window_starts(a, a + c, patch_size=p, stride=s)) * p)
            a += c
        per_axis.append(lengths)
    return int(sum(ly * lx for ly in per_axis[0] for lx in per_axis[1]))


def gaussian_weights(patch_size: int, *, sigma_fraction: float) -> np.ndarray:
    """Separable Gaussian importance map ``(P, P)`` float32, peak 1 at the centre, ``sigma = f * P`` px."""
    c = (patch_size - 1) / 2.0
    g = np.exp(-0.5 * ((np.arange(patch_size) - c) / (sigma_fraction * patch_size)) ** 2)
    w = np.outer(g, g)
    return (w / w.max()).astype(np.float32)


def symmetric_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Map any integer positions into ``[0, n)`` by mirroring with the edge repeated (numpy "symmetric")."""
    r = np.mod(idx, 2 * n)
    return np.where(r < n, r, 2 * n - 1 - r)


def central_crop(shape: Sequence[int], edge: int | None) -> tuple[slice, slice]:
    """Rows and columns of the central crop of at most ``edge`` px per side of a 2-D ``shape`` (all of it
    for ``None``)."""
    h, w = int(shape[0]), int(shape[1])
    eh, ew = (h, w) if edge is None else (min(h, edge), min(w, edge))
    return slice((h - eh) // 2, (h - eh) // 2 + eh), slice((w - ew) // 2, (w - ew) // 2 + ew)


def read_symmetric(array: Any, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """``array[rows[0]:rows[1], cols[0]:cols[1]]`` of a 2-D array (numpy, or anything sliceable such as a
    Zarr array), mirrored outside its bounds; reads only the in-bounds box it needs."""
    h, w = array.shape
    iy = symmetric_index(np.arange(*rows), h)
    ix = symmetric_index(np.arange(*cols), w)
    y0, y1, x0, x1 = int(iy.min()), int(iy.max()) + 1, int(ix.min()), int(ix.max()) + 1
    box = np.asarray(array[y0:y1, x0:x1])
    return box[np.ix_(iy - y0, ix - x0)]
