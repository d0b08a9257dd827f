"""NGFF (OME-Zarr 0.5) metadata, factor-2 pyramids and the one compressor every array uses.

Pure helpers over Zarr groups: they know metadata layouts, not store paths.
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from semscale import IGNORE_LABEL
from semscale.store.nodes import array_at

NGFF_VERSION = "0.5"
DEFAULT_CHUNK = 1024
PYRAMID_MIN_SIZE = 512
"""Pyramid levels are added (each half the size) until the larger side is at most this many pixels."""
MAX_PYRAMID_LEVELS = 5
PYRAMID_THREADS = 2
"""Output chunks of one pyramid level written side by side."""

PHASE_COLORS: dict[str, tuple[int, int, int, int]] = {
    "pore": (200, 60, 200, 255),  # magenta: visible over the dark pores of an SEM overlay, unlike black
    "NiO": (46, 139, 87, 255),
    "Ni": (70, 130, 230, 255),
    "YSZ": (240, 200, 60, 255),
}
_FALLBACK_COLORS = [(228, 26, 28, 255), (152, 78, 163, 255), (255, 127, 0, 255), (166, 86, 40, 255)]


def level_path(level: int) -> str:
    """Path of pyramid level ``level`` inside a multiscale group: ``scale<level>/image``. One array per
    group, so xarray opens every level as its own node (NGFF gives all levels the dimension names ``y``,
    ``x``, which one xarray Dataset cannot hold at different sizes)."""
    return f"scale{level}/image"


def compressor() -> BloscCodec:
    """The fast lossless codec used for every array: Blosc zstd level 3 with bit-shuffle."""
    return BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")


def _axes() -> list[dict[str, str]]:
    return [
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]


def multiscales_metadata(
    name: str, pixel_size_um: float, n_levels: int, *, kind: str = "mean"
) -> dict[str, Any]:
    """NGFF 0.5 ``multiscales`` entry for a 2-D y/x pyramid with factor-2 levels ``0..n_levels-1``."""
    return {
        "name": name,
        "axes": _axes(),
        "datasets": [
            {
                "path": level_path(level),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [pixel_size_um * 2**level] * 2},
                    # a level-n pixel covers 2^n level-0 pixels: its centre sits (2^n - 1)/2 of them further
                    {"type": "translation", "translation": [pixel_size_um * (2**level - 1) / 2] * 2},
                ],
            }
            for level in range(n_levels)
        ],
        "type": kind,
        "metadata": {"description": f"factor-2 pyramid ({kind} downsampling), written by semscale"},
    }


def label_metadata(classes: Sequence[str]) -> dict[str, Any]:
    """NGFF ``image-label`` metadata: one colour and one class name per label value."""
    colors = []
    properties = []
    for value, cls in enumerate(classes):
        rgba = PHASE_COLORS.get(cls, _FALLBACK_COLORS[value % len(_FALLBACK_COLORS)])
        colors.append({"label-value": value, "rgba": list(rgba)})
        properties.append({"label-value": value, "class": cls})
    colors.append({"label-value": IGNORE_LABEL, "rgba": [0, 0, 0, 0]})
    properties.append({"label-value": IGNORE_LABEL, "class": "unlabelled"})
    return {"colors": colors, "properties": properties, "source": {"image": "../../"}, "version": NGFF_VERSION}


def _n_levels(shape: Sequence[int]) -> int:
    n, size = 1, max(shape)
    while size > PYRAMID_MIN_SIZE and n < MAX_PYRAMID_LEVELS:
        size = math.ceil(size / 2)
        n += 1
    return n


def _downsample(block: np.ndarray, *, kind: str) -> np.ndarray:
    """Halve a 2-D block: 2×2 mean (rounded, raw dtype) for images, top-left sample for labels."""
    if kind == "nearest":
        return block[::2, ::2]
    h, w = block.shape
    if h % 2 or w % 2:
        block = np.pad(block, ((0, h % 2), (0, w % 2)), mode="edge")
    x = block.astype(np.float32)
    m = x[0::2, 0::2] + x[1::2, 0::2]  # four strided adds: 3× faster than a reshaped mean over two axes
    m += x[0::2, 1::2]
    m += x[1::2, 1::2]
    m *= np.float32(0.25)
    if block.dtype.kind == "f":  # maps (confidence, uncertainty): the mean as it is, NaN (not yet) kept
        return m.astype(block.dtype)
    return np.rint(m).astype(block.dtype)


def write_dask(src: Any, target: zarr.Array) -> None:
    """Compute dask array ``src`` into Zarr array ``target`` chunk-aligned (each task writes whole chunks)."""
    import dask.array as da

    src = src.rechunk(target.chunks) if src.chunksize != tuple(target.chunks) else src
    da.store(src, target, lock=False, compute=True)  # type: ignore[arg-type]  # zarr arrays are array-likes


def label_group_metadata(name: str, pixel_size_um: float, n_levels: int, classes: Sequence[str]) -> dict[str, Any]:
    """The ``ome`` attrs of an NGFF label group: multiscales (nearest) and image-label colours."""
    return {
        "version": NGFF_VERSION,
        "multiscales": [multiscales_metadata(name, pixel_size_um, n_levels, kind="nearest")],
        "image-label": label_metadata(classes),
    }


def image_pyramid(group: zarr.Group, *, name: str, pixel_size_um: float) -> int:
    """Write the factor-2 pyramid (mean) of an image group (a SEM or a float map) from its level ``0`` and
    its NGFF ``multiscales`` metadata, so it opens as an image layer; returns the level count."""
    n = _write_pyramid(group, kind="mean")
    group.attrs["ome"] = {"version": NGFF_VERSION,
                          "multiscales": [multiscales_metadata(name, pixel_size_um, n, kind="mean")]}
    return n


def label_pyramid(group: zarr.Group, *, name: str, pixel_size_um: float, classes: Sequence[str]) -> int:
    """Write the factor-2 pyramid (nearest) of a label group from its level ``0`` and its NGFF label
    metadata (:func:`label_group_metadata`); returns the level count."""
    n = _write_pyramid(group, kind="nearest")
    group.attrs["ome"] = label_group_metadata(name, pixel_size_um, n, classes)
    return n


def _write_pyramid(group: zarr.Group, *, kind: str) -> int:
    """Write levels 1.. of ``group`` from level 0; return the level count.

    Works output chunk by output chunk (each reading the 2×2 chunks of the level above it), on
    :data:`PYRAMID_THREADS` threads, so memory is a few chunks whatever the image size.
    """
    level0 = array_at(group, level_path(0))
    n = _n_levels(level0.shape)
    for name in [k for k in group.group_keys() if re.fullmatch(r"scale\d+", k) and k != "scale0"]:
        del group[name]
    prev: zarr.Array = level0
    for level in range(1, n):
        shape = tuple(math.ceil(s / 2) for s in prev.shape)
        arr = group.create_array(
            level_path(level), shape=shape, chunks=tuple(min(c, s) for c, s in zip(level0.chunks, shape)),
            dtype=level0.dtype, compressors=compressor(), fill_value=level0.fill_value,
            dimension_names=("y", "x"),
        )
        cy, cx = arr.chunks
        starts = [(y, x) for y in range(0, shape[0], cy) for x in range(0, shape[1], cx)]
        with concurrent.futures.ThreadPoolExecutor(PYRAMID_THREADS) as pool:  # codecs and numpy release the GIL
            list(pool.map(functools.partial(_halve_chunk, prev, arr, kind=kind), starts))
        prev = arr
    return n


def _halve_chunk(src: zarr.Array, dst: zarr.Array, start: tuple[int, int], *, kind: str) -> None:
    """Write the chunk of ``dst`` at ``start`` (px) from the 2×2 chunks of ``src`` above it."""
    (y, x), (cy, cx) = start, dst.chunks
    dst[y:y + cy, x:x + cx] = _downsample(np.asarray(src[2 * y:2 * (y + cy), 2 * x:2 * (x + cx)]), kind=kind)


