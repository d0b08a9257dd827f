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
from struct import error as struct_error
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
    "tiff_pixel_size_um",
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


def _tiff_page(tif: Any, path: Path, page: int | None) -> Any:
    """The page to read: the only one, or ``page`` of a multi-page file (never page 0 by default)."""
    n = len(tif.pages)
    if page is None and n > 1:
        shapes = [tuple(tif.pages[i].shape) for i in range(min(n, 4))]
        raise InputImageError(
            f"Expected a single-page TIFF in {path}. Got {n} pages (shapes {shapes}{' …' if n > 4 else ''}); "
            "set `page: N` (0-based) on the image's entry to read page N."
        )
    k = 0 if page is None else page
    if not 0 <= k < n:
        raise InputImageError(f"Expected `page` in 0..{n - 1} for {path}. Got {page}.")
    pg = tif.pages[k]
    if pg.samplesperpixel != 1 or len(pg.shape) != 2:
        raise InputImageError(
            f"Expected a single-channel (grey) 2-D image in {path}. Got shape {pg.shape} with "
            f"{pg.samplesperpixel} samples per pixel; save the SEM image as grey (one 2-D page)."
        )
    _check_size(tuple(pg.shape), path)
    end = max((o + c for o, c in zip(pg.dataoffsets, pg.databytecounts)), default=0)
    size = path.stat().st_size
    if end > size:
        raise InputImageError(
            f"Expected the pixel data of {path} to end within the file. Got a file of {size} bytes whose image "
            f"data reach byte {end}: it is truncated (an unfinished copy?); copy it again."
        )
    return pg


def _check_size(shape: tuple[int, ...], path: Path) -> None:
    if not shape or min(shape) < 1:
        raise InputImageError(f"Expected an image with pixels in {path}. Got shape {'×'.join(map(str, shape))}.")


def _load_npy(path: Path) -> np.ndarray:
    """A memory-mapped ``.npy`` array (numbers only, never pickled objects)."""
    with open(path, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise InputImageError(
                f"Expected a NumPy .npy file of uint8 or uint16 numbers in {path}. Got a file that does not start "
                "with NumPy's .npy header; save it with numpy.save, or give a TIFF."
            )
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputImageError(
            f"Expected a NumPy .npy file of uint8 or uint16 numbers in {path}. Got one NumPy cannot map "
            f"({exc}); save it with numpy.save from a numeric array."
        ) from None


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


def read_info(path: str | Path, *, page: int | None = None) -> ImageInfo:
    """Shape and dtype of an image file without reading its pixels (except PNG/JPEG); ``page``: the page
    of a multi-page TIFF (required there: such files are never read as page 0 silently)."""
    path = Path(path)
    kind = _kind(path)
    if not path.is_file():
        raise InputImageError(f"Expected an image file at {path}. Got no such file.")
    if page is not None and kind != "tiff":
        raise InputImageError(f"Expected a TIFF for `page: {page}`. Got {path}, which has one image.")
    if kind == "tiff":
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                pg = _tiff_page(tif, path, page)
                return ImageInfo(tuple(pg.shape), _check_dtype(pg.dtype, path), kind)
        except InputImageError:
            raise
        except (tifffile.TiffFileError, ValueError, struct_error) as exc:
            raise InputImageError(f"Expected a readable TIFF at {path}. Got {type(exc).__name__}: {exc}; "
                                  "check the file (an unfinished copy?) and copy it again.") from None
    if kind == "npy":
        arr = _load_npy(path)
        if arr.ndim != 2:
            raise InputImageError(f"Expected a 2-D array in {path}. Got shape {arr.shape}.")
        _check_size(tuple(arr.shape), path)
        return ImageInfo(tuple(arr.shape), _check_dtype(arr.dtype, path), kind)
    arr = _read_plain(path)
    _check_size(tuple(arr.shape), path)
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


def iter_bands(path: str | Path, *, rows: int, page: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
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
            pg = _tiff_page(tif, path, page)
            shape = tuple(pg.shape)
            dtype = _check_dtype(pg.dtype, path)
            if pg.is_memmappable:
                mm = tifffile.memmap(path, page=pg.index, mode="r")
                for y0 in range(0, shape[0], rows):
                    yield y0, np.array(mm[y0:y0 + rows])
                del mm
                return
            asm = _BandAssembler(shape, dtype, rows)
            for seg, index, seg_shape in pg.segments(maxworkers=1, buffersize=READ_BUFFER):
                data = None if seg is None else seg.reshape(seg_shape)[0, :, :, 0]
                yield from asm.add(index[-3], index[-2], data, seg_shape[1:3])
            for b in sorted(asm.open):  # segments missing in the file read as zeros
                yield b * rows, asm.open.pop(b)[0]
        return
    if kind == "npy":
        arr = _load_npy(path)
        _check_dtype(arr.dtype, path)
        for y0 in range(0, arr.shape[0], rows):
            yield y0, np.array(arr[y0:y0 + rows])
        return
    arr = _read_plain(path)
    _check_dtype(arr.dtype, path)
    for y0 in range(0, arr.shape[0], rows):
        yield y0, arr[y0:y0 + rows]


def read_image(path: str | Path, *, page: int | None = None) -> np.ndarray:
    """Read a whole 2-D image file into memory (for small images: EDS maps, tests)."""
    info = read_info(path, page=page)
    out = np.empty(info.shape, info.dtype)
    for y0, band in iter_bands(path, rows=max(1, min(4096, info.shape[0])), page=page):
        out[y0:y0 + band.shape[0]] = band
    return out


def tiff_pixel_size_um(path: str | Path, *, page: int | None = None) -> tuple[float, str] | None:
    """The pixel size (µm) a TIFF records, and where it was found: FEI/Thermo Fisher metadata
    (``[Scan] PixelWidth``, m), Zeiss SmartSEM (``ap_image_pixel_size``), ImageJ (``unit`` with the
    resolution tags) or the resolution tags with a centimetre or inch unit. ``None`` when it records none, or
    when the file cannot be parsed (reading the image names that damage)."""
    path = Path(path)
    if _kind(path) != "tiff":
        return None
    try:
        return _tiff_pixel_size_um(path, page)
    except Exception:  # truncated or foreign files: tifffile raises many kinds
        return None


def _tiff_pixel_size_um(path: Path, page: int | None) -> tuple[float, str] | None:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        fei = tif.fei_metadata or {}
        width = (fei.get("Scan") or {}).get("PixelWidth") or (fei.get("EScan") or {}).get("PixelWidth")
        if width:
            return float(width) * 1e6, "FEI/Thermo Fisher [Scan] PixelWidth"
        sem = tif.sem_metadata or {}
        zeiss = sem.get("ap_image_pixel_size") or sem.get("ap_pixel_size")
        if isinstance(zeiss, (tuple, list)) and len(zeiss) >= 3:
            scale = {"pm": 1e-6, "nm": 1e-3, "µm": 1.0, "um": 1.0, "mm": 1e3}.get(str(zeiss[2]).strip())
            if scale is not None:
                return float(zeiss[1]) * scale, "Zeiss SmartSEM ap_image_pixel_size"
        pg = tif.pages[0 if page is None else page]
        tags = getattr(pg, "tags", None)
        if tags is None:
            return None
        if "XResolution" not in tags:
            return None
        num, den = tags["XResolution"].value
        if not num or not den:
            return None
        per_unit = num / den
        unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 1
        ij_unit = (tif.imagej_metadata or {}).get("unit")
        if ij_unit in ("um", "micron", "µm"):
            return 1.0 / per_unit, "ImageJ resolution (µm)"
        if ij_unit == "nm":
            return 1e-3 / per_unit, "ImageJ resolution (nm)"
        if unit == 3:  # centimetre
            return 1e4 / per_unit, "TIFF resolution (pixels per cm)"
        if unit == 2 and per_unit > 10_000:  # inch; ordinary 72-600 dpi is a print setting, not a pixel size
            return 25_400.0 / per_unit, "TIFF resolution (pixels per inch)"
    return None


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


def label_lut(counts: np.ndarray, n_classes: int, *, encoding: str = "auto",
              where: str = "label image") -> np.ndarray:
    """Lookup table mapping the grey values of a label image to class indices (255 stays 255).

    ``counts[v]`` is how often value ``v`` occurs. ``encoding``: ``index`` — values ``0..K-1`` are class
    indices and 255 is unlabelled; ``grey`` — evenly spaced grey levels ``round(i * maxval / (K-1))``
    (0/85/170/255 for K=4 in 8 bit) are class ``i``; ``auto`` — whichever of the two fits the values
    present, and an error when both fit with different meanings (e.g. only 0 and 255: "class 0 and
    unlabelled", or "first and last class"). Values that fit neither are an error listing them.
    """
    present = set(np.flatnonzero(counts).tolist())
    maxval = 255 if counts.size <= 256 else 65535
    levels = np.rint(np.arange(n_classes) * maxval / (n_classes - 1)).astype(np.int64)
    as_index = {v: v for v in range(n_classes)} | {IGNORE_LABEL: IGNORE_LABEL}
    as_grey = {int(v): i for i, v in enumerate(levels)}
    fits = {name: present <= set(m) for name, m in (("index", as_index), ("grey", as_grey))}
    if encoding not in ("auto", "index", "grey"):
        raise InputImageError(f"Expected `ingest.label_encoding` auto, index or grey. Got {encoding!r}.")
    requested = encoding
    if encoding == "auto":
        if fits["index"] and fits["grey"] and any(as_index[v] != as_grey[v] for v in present):
            raise InputImageError(
                f"Expected {where} to say how its values encode classes. Got only the values {sorted(present)}, "
                f"which read as class indices (255 = unlabelled) or as grey levels {levels.tolist()}, with "
                "different classes; set `ingest.label_encoding: index` or `grey` in the config."
            )
        encoding = "index" if fits["index"] else "grey"
    mapping = as_index if encoding == "index" else as_grey
    if not fits[encoding]:
        bad = sorted(present - set(mapping))
        if requested == "auto":  # the values that fit neither form (or, for a mix of both, the other form's)
            bad = sorted(present - set(as_index) - set(as_grey)) or bad
        forms = {"index": f"class indices 0..{n_classes - 1} (255 = unlabelled)",
                 "grey": f"grey levels {levels.tolist()}"}
        expected = " or ".join(forms.values()) if requested == "auto" else forms[requested]
        raise InputImageError(
            f"Expected {expected} in {where}. Got values {bad[:8]}{' ...' if len(bad) > 8 else ''}."
        )
    lut = np.full(counts.size, IGNORE_LABEL, np.uint8)
    for v, cls in mapping.items():
        if v < counts.size:
            lut[v] = cls
    return lut
