"""Reading image files: SEM (TIFF incl. BigTIFF and tiled TIFF, 8/16-bit; PNG/JPEG; ``.npy``), EDS maps and
label images, band by band so memory does not grow with image size.

A TIFF is decoded strip by strip or tile by tile and rows are gathered into bands. Label images are accepted
as values ``0..K-1`` (255 = unlabelled) or as evenly spaced grey levels (``0/85/170/255``) through
:func:`label_lut`. No store here: :mod:`semscale.io.ingest` writes what these functions read.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from semscale import IGNORE_LABEL
from semscale.errors import InputImageError

log = logging.getLogger(__name__)

__all__ = [
    "ImageInfo",
    "file_sha256",
    "infer_eds_factor",
    "iter_bands",
    "label_lut",
    "read_image",
    "read_info",
]

TIFF_SUFFIXES = {".tif", ".tiff", ".btf", ".tf8"}
PLAIN_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
SUPPORTED = TIFF_SUFFIXES | PLAIN_SUFFIXES | {".npy"}
SUPPORTED_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))
READ_BUFFER = 1 << 20
"""Bytes of compressed TIFF segments read from disk at a time (bounds ingest memory)."""


@dataclass(frozen=True)
class ImageInfo:
    shape: tuple[int, int]
    dtype: np.dtype
    kind: str  # "tiff", "npy" or "plain"


def file_sha256(path: str | Path, *, block: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read through one reused 1 MiB buffer."""
    h = hashlib.sha256()
    buf = bytearray(block)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return "tiff"
    if suffix == ".npy":
        return "npy"
    if suffix in PLAIN_SUFFIXES:
        return "plain"
    raise InputImageError(
        f"Expected an image file ({', '.join(sorted(SUPPORTED))}) for {path}. Got suffix {suffix!r}."
    )


def _check_dtype(dtype: np.dtype, path: Path) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in SUPPORTED_DTYPES:
        raise InputImageError(
            f"Expected an 8- or 16-bit unsigned grey image in {path}. Got dtype {dtype}; "
            "convert it to uint8 or uint16 first."
        )
    return dtype


def _tiff_page(tif: Any, path: Path) -> Any:
    page = tif.pages.first if hasattr(tif.pages, "first") else tif.pages[0]
    if page.samplesperpixel != 1 or len(page.shape) != 2:
        raise InputImageError(
            f"Expected a single-channel (grey) 2-D image in {path}. Got shape {page.shape} with "
            f"{page.samplesperpixel} samples per pixel; save the SEM image as grey."
        )
    return page


def _to_grey(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        rgb = arr[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise InputImageError(
                f"Expected a grey image in {path}. Got colour (RGB) data with differing channels; "
                "convert it to grey first."
            )
        arr = rgb[..., 0]
    if arr.ndim != 2:
        raise InputImageError(f"Expected a 2-D grey image in {path}. Got an array of shape {arr.shape}.")
    return arr


def _read_plain(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    try:
        arr = np.asarray(iio.imread(path))
    except Exception as exc:  # imageio raises many types
        raise InputImageError(f"Could not read image {path}: {exc}") from None
    return _to_grey(arr, path)


def read_info(path: str | Path) -> ImageInfo:
    """Shape and dtype of an image file without reading its pixels (except PNG/JPEG)."""
    path = Path(path)
    kind = _kind(path)
    if not path.is_file():
        raise InputImageError(f"Expected an image file at {path}. Got no such file.")
    if kind == "tiff":
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                page = _tiff_page(tif, path)
                return ImageInfo(tuple(page.shape), _check_dtype(page.dtype, path), kind)
        except tifffile.TiffFileError as exc:
            raise InputImageError(f"Could not read TIFF {path}: {exc}") from None
    if kind == "npy":
        arr = np.load(path, mmap_mode="r")
        if arr.ndim != 2:
            raise InputImageError(f"Expected a 2-D array in {path}. Got shape {arr.shape}.")
        return ImageInfo(tuple(arr.shape), _check_dtype(arr.dtype, path), kind)
    arr = _read_plain(path)
    return ImageInfo(tuple(arr.shape), _check_dtype(arr.dtype, path), kind)


class _BandAssembler:
    """Collects decoded TIFF segments (strips or tiles) into row bands of ``rows`` rows.

    Yields each band as soon as all its pixels have arrived; at most a few bands are held at once
    (a band plus those a tall tile straddles), so memory is O(rows × width), independent of image height.
    """

    def __init__(self, shape: tuple[int, int], dtype: np.dtype, rows: int) -> None:
        self.shape, self.dtype, self.rows = shape, dtype, rows
        self.open: dict[int, list[Any]] = {}

    def _band(self, b: int) -> list[Any]:
        if b not in self.open:
            h = min(self.rows, self.shape[0] - b * self.rows)
            self.open[b] = [np.zeros((h, self.shape[1]), self.dtype), 0]
        return self.open[b]

    def add(self, y: int, x: int, seg: np.ndarray | None, seg_shape: tuple[int, int]) -> Iterator[tuple[int, np.ndarray]]:
        h = min(seg_shape[0], self.shape[0] - y)
        w = min(seg_shape[1], self.shape[1] - x)
        if h <= 0 or w <= 0:
            return
        row = y
        while row < y + h:
            b = row // self.rows
            band = self._band(b)
            b0 = b * self.rows
            stop = min(y + h, b0 + band[0].shape[0])
            if seg is not None:
                band[0][row - b0:stop - b0, x:x + w] = seg[row - y:stop - y, :w]
            band[1] += (stop - row) * w
            if band[1] == band[0].size:
                del self.open[b]
                yield b0, band[0]
            row = stop


def iter_bands(path: str | Path, *, rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(y0, band)`` row bands of a 2-D image file, each ``rows`` high (the last may be lower).

    TIFFs are streamed segment by segment (memory ~ one band), ``.npy`` files memory-mapped; PNG/JPEG are
    read whole (those formats do not allow partial reads, and are small in practice). Bands may arrive out
    of order for unusually laid-out TIFFs; every band arrives exactly once.
    """
    path = Path(path)
    kind = _kind(path)
    if kind == "tiff":
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = _tiff_page(tif, path)
            shape = tuple(page.shape)
            dtype = _check_dtype(page.dtype, path)
            if page.is_memmappable:
                mm = tifffile.memmap(path, page=page.index, mode="r")
                for y0 in range(0, shape[0], rows):
                    yield y0, np.array(mm[y0:y0 + rows])
                del mm
                return
            asm = _BandAssembler(shape, dtype, rows)
            for seg, index, seg_shape in page.segments(maxworkers=1, buffersize=READ_BUFFER):
                data = None if seg is None else seg.reshape(seg_shape)[0, :, :, 0]
                yield from asm.add(index[-3], index[-2], data, seg_shape[1:3])
            for b in sorted(asm.open):  # segments missing in the file read as zeros
                yield b * rows, asm.open.pop(b)[0]
        return
    if kind == "npy":
        arr = np.load(path, mmap_mode="r")
        _check_dtype(arr.dtype, path)
        for y0 in range(0, arr.shape[0], rows):
            yield y0, np.array(arr[y0:y0 + rows])
        return
    arr = _read_plain(path)
    _check_dtype(arr.dtype, path)
    for y0 in range(0, arr.shape[0], rows):
        yield y0, arr[y0:y0 + rows]


def read_image(path: str | Path) -> np.ndarray:
    """Read a whole 2-D image file into memory (for small images: EDS maps, tests)."""
    info = read_info(path)
    out = np.empty(info.shape, info.dtype)
    for y0, band in iter_bands(path, rows=max(1, min(4096, info.shape[0]))):
        out[y0:y0 + band.shape[0]] = band
    return out


def infer_eds_factor(sem_shape: Sequence[int], eds_shape: Sequence[int], *, where: str = "EDS map") -> int:
    """Integer factor ``f`` by which an EDS map is coarser than the SEM image.

    Accepts EDS shapes ``ceil(H/f) × ceil(W/f)`` (the map covers the whole image) or ``floor(H/f) ×
    floor(W/f)`` (trailing partial cells dropped). Raises :class:`InputImageError` when no integer fits.
    """
    (H, W), (h, w) = sem_shape, eds_shape
    if h <= 0 or w <= 0 or h > H or w > W:
        raise InputImageError(f"Expected {where} no larger than the SEM image {H}×{W}. Got {h}×{w}.")
    guess = max(1, round(H / h))
    for f in sorted({guess - 1, guess, guess + 1} - {0}):
        if (math.ceil(H / f), math.ceil(W / f)) == (h, w) or (H // f, W // f) == (h, w):
            return f
    raise InputImageError(
        f"Expected {where} at an integer downsampling of the SEM image {H}×{W}. Got {h}×{w} "
        f"(ratios {H / h:.3f} and {W / w:.3f}); EDS maps must be SEM size divided by an integer."
    )


def label_lut(counts: np.ndarray, n_classes: int, *, where: str = "label image") -> np.ndarray:
    """Lookup table mapping the grey values of a label image to class indices (255 stays 255).

    ``counts[v]`` is how often value ``v`` occurs. Values ``0..K-1`` (and 255) are taken as class indices;
    otherwise evenly spaced grey levels ``round(i * maxval / (K-1))`` (0/85/170/255 for K=4 in 8 bit) map to
    ``i``. Anything else is an error listing the unexpected values.
    """
    present = np.flatnonzero(counts)
    maxval = 255 if counts.size <= 256 else 65535
    lut = np.full(counts.size, IGNORE_LABEL, np.uint8)
    as_index = set(range(n_classes)) | {IGNORE_LABEL}
    if set(present.tolist()) <= as_index:
        lut[:n_classes] = np.arange(n_classes, dtype=np.uint8)
        if IGNORE_LABEL in present and present.max(initial=0) == IGNORE_LABEL and len(present) <= 2:
            log.warning("%s holds only values %s: read as class indices with 255 = unlabelled",
                        where, present.tolist())
        return lut
    levels = np.rint(np.arange(n_classes) * maxval / (n_classes - 1)).astype(np.int64)
    if set(present.tolist()) <= set(levels.tolist()):
        lut[levels] = np.arange(n_classes, dtype=np.uint8)
        return lut
    bad = sorted(set(present.tolist()) - as_index - set(levels.tolist()))
    raise InputImageError(
        f"Expected class indices 0..{n_classes - 1} (255 = unlabelled) or grey levels "
        f"{levels.tolist()} in {where}. Got values {bad[:8]}{' ...' if len(bad) > 8 else ''}."
    )
