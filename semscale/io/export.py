"""Label images as files for Fiji, tifffile and batch users: OME-TIFF, ImageJ TIFF or PNG, with the class
palette, the class names and the pixel size in µm, and confidence and class probabilities beside them.

Writers only: arrays come in (uint8 labels 0..K-1 with 255 unlabelled, float confidence / probabilities),
files go out. :mod:`semscale.pipeline` reads the store and calls them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from semscale import IGNORE_LABEL
from semscale.errors import ConfigError

__all__ = ["FORMATS", "SUFFIXES", "format_of", "label_lut_rgb", "write_labels_file"]

Format = Literal["ome-tiff", "tiff", "png"]
FORMATS: tuple[str, ...] = ("ome-tiff", "tiff", "png")
SUFFIXES = {"ome-tiff": ".ome.tif", "tiff": ".tif", "png": ".png"}


def format_of(path: Path) -> str:
    """The format a file name asks for: ``.ome.tif(f)`` OME-TIFF, ``.tif(f)`` ImageJ TIFF, ``.png`` PNG."""
    name = path.name.lower()
    if name.endswith((".ome.tif", ".ome.tiff")):
        return "ome-tiff"
    if name.endswith((".tif", ".tiff")):
        return "tiff"
    if name.endswith(".png"):
        return "png"
    raise ConfigError(f"Expected an output name ending in .ome.tif, .tif or .png. Got {path.name}.")


def label_lut_rgb(classes: Sequence[str]) -> np.ndarray:
    """A (256, 3) uint8 lookup table: the NGFF label colour of each class value, black elsewhere."""
    from semscale.store.ngff import label_metadata

    lut = np.zeros((256, 3), np.uint8)
    for entry in label_metadata(classes)["colors"]:
        lut[int(entry["label-value"])] = entry["rgba"][:3]
    return lut


def write_labels_file(path: Path, labels: np.ndarray, *, classes: Sequence[str], pixel_size_um: float,
                      fmt: str, confidence: np.ndarray | None = None,
                      probabilities: np.ndarray | None = None) -> list[Path]:
    """Write ``labels`` (H, W uint8) as ``fmt`` at ``path``; ``confidence`` (H, W) and ``probabilities``
    (K, H, W) go to ``<stem>_confidence`` / ``<stem>_probabilities`` files beside it (float32). Every file
    carries the pixel size in µm; the label file carries the palette and the class names. Returns the files."""
    if fmt not in FORMATS:
        raise ConfigError(f"Expected --format one of {', '.join(FORMATS)}. Got {fmt!r}.")
    if not path.parent.is_dir():
        raise ConfigError(f"Expected an existing folder for {path}. Got no folder {path.parent}; create it first.")
    labels = np.asarray(labels, np.uint8)
    names = {str(v): c for v, c in enumerate(classes)} | {str(IGNORE_LABEL): "unlabelled"}
    written = [path]
    if fmt == "png":
        from PIL import Image

        img = Image.fromarray(labels, mode="L").convert("P")
        img.putpalette(label_lut_rgb(classes).ravel().tolist())
        dpi = 25400.0 / pixel_size_um
        img.save(path, dpi=(dpi, dpi), pnginfo=_png_text(names, pixel_size_um))
        extras: list[tuple[str, np.ndarray]] = []
    else:
        _write_tiff(path, labels, fmt=fmt, pixel_size_um=pixel_size_um, names=names, lut=label_lut_rgb(classes))
        extras = []
    stem = path.name[: -len(SUFFIXES[fmt])] if path.name.endswith(SUFFIXES[fmt]) else path.stem
    stem = stem[: -len("_labels")] if stem.endswith("_labels") else stem
    if confidence is not None:
        extras.append(("confidence", np.asarray(confidence, np.float32)))
    if probabilities is not None:
        extras.append(("probabilities", np.asarray(probabilities, np.float32)))
    for what, arr in extras:
        tiff_fmt = "ome-tiff" if fmt == "ome-tiff" else "tiff"
        target = path.with_name(f"{stem}_{what}{SUFFIXES[tiff_fmt]}")
        channels = list(classes) if what == "probabilities" else [what]
        _write_tiff(target, arr, fmt=tiff_fmt, pixel_size_um=pixel_size_um, channels=channels)
        written.append(target)
    return written


def _png_text(names: dict[str, str], pixel_size_um: float) -> Any:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("semscale:classes", ", ".join(f"{k}={v}" for k, v in names.items()))
    info.add_text("semscale:pixel_size_um", repr(float(pixel_size_um)))
    return info


def _write_tiff(path: Path, data: np.ndarray, *, fmt: str, pixel_size_um: float,
                names: dict[str, str] | None = None, lut: np.ndarray | None = None,
                channels: Sequence[str] | None = None) -> None:
    import tifffile

    per_cm = 1e4 / pixel_size_um
    if fmt == "ome-tiff":
        axes = "CYX" if data.ndim == 3 else "YX"
        meta: dict[str, object] = {"axes": axes, "PhysicalSizeX": pixel_size_um, "PhysicalSizeXUnit": "µm",
                                   "PhysicalSizeY": pixel_size_um, "PhysicalSizeYUnit": "µm"}
        if channels is not None:
            meta["Channel"] = {"Name": list(channels)}
        if names is not None:
            meta["MapAnnotation"] = {f"class {k}": v for k, v in names.items()}
        tifffile.imwrite(path, data, ome=True, photometric="minisblack", metadata=meta, compression="zlib",
                         resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")
        return
    ij: dict[str, object] = {"unit": "um", "axes": "CYX" if data.ndim == 3 else "YX"}
    if lut is not None:
        ij["LUTs"] = [lut.T.copy()]
    if names is not None:
        ij["Labels"] = [", ".join(f"{k}={v}" for k, v in names.items())]
    if channels is not None and data.ndim == 3:
        ij["Labels"] = list(channels)
    tifffile.imwrite(path, data, imagej=True, resolution=(1.0 / pixel_size_um, 1.0 / pixel_size_um),
                     metadata=ij, compression="zlib")
