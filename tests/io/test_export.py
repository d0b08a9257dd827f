"""Label files for Fiji, tifffile and batch users: palette, class names and pixel size survive a round trip
through the readers those users have (tifffile for OME-TIFF and ImageJ TIFF, Pillow for PNG)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import tifffile

from semscale.io.export import SUFFIXES, format_of, label_lut_rgb, write_labels_file
from semscale.io.readers import tiff_pixel_size_um
from semscale.store.ngff import label_metadata

CLASSES = ["pore", "NiO", "Ni", "YSZ"]


def _labels() -> np.ndarray:
    lab = (np.arange(48 * 56).reshape(48, 56) % 4).astype(np.uint8)
    lab[0, :7] = 255
    return lab


def _ome(path: Path) -> ET.Element:
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        return ET.fromstring(tif.ome_metadata)


def test_ome_tiff_holds_pixel_size_class_names_confidence_and_probabilities(tmp_path: Path) -> None:
    lab = _labels()
    conf = np.linspace(0.25, 1, lab.size, dtype=np.float32).reshape(lab.shape)
    prob = np.stack([conf / 4] * 4)
    files = write_labels_file(tmp_path / "a_labels.ome.tif", lab, classes=CLASSES, pixel_size_um=0.04458,
                              fmt="ome-tiff", confidence=conf, probabilities=prob)
    assert [f.name for f in files] == ["a_labels.ome.tif", "a_confidence.ome.tif", "a_probabilities.ome.tif"]
    np.testing.assert_array_equal(tifffile.imread(files[0]), lab)
    ns = {"ome": "http://www.openmicroscopy.org/Schemas/OME/2016-06"}
    pixels = _ome(files[0]).find(".//ome:Pixels", ns)
    assert pixels is not None and float(pixels.get("PhysicalSizeX")) == pytest.approx(0.04458)
    assert pixels.get("PhysicalSizeXUnit") == "µm" and float(pixels.get("PhysicalSizeY")) == pytest.approx(0.04458)
    names = {m.get("K"): m.text for m in _ome(files[0]).iter(f"{{{ns['ome']}}}M")}
    assert names == {"class 0": "pore", "class 1": "NiO", "class 2": "Ni", "class 3": "YSZ",
                     "class 255": "unlabelled"}
    np.testing.assert_array_equal(tifffile.imread(files[1]), conf)
    assert tifffile.imread(files[2]).shape == (4, 48, 56)
    channels = [c.get("Name") for c in _ome(files[2]).iter(f"{{{ns['ome']}}}Channel")]
    assert channels == CLASSES
    assert tiff_pixel_size_um(files[0]) == (pytest.approx(0.04458), "TIFF resolution (pixels per cm)")


def test_imagej_tiff_has_the_palette_and_the_scale_fiji_shows(tmp_path: Path) -> None:
    lab = _labels()
    (path,) = write_labels_file(tmp_path / "a_labels.tif", lab, classes=CLASSES, pixel_size_um=0.05, fmt="tiff")
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej and tif.imagej_metadata["unit"] == "um"
        num, den = tif.pages[0].tags["XResolution"].value
        assert num / den == pytest.approx(20.0)  # pixels per µm
        lut = np.asarray(tif.imagej_metadata["LUTs"]).reshape(-1, 3, 256)[0]  # one LUT comes back unlisted
        np.testing.assert_array_equal(tif.asarray(), lab)
    want = label_lut_rgb(CLASSES)
    np.testing.assert_array_equal(lut.T, want)
    assert [[*want[v].tolist(), 255] for v in range(4)] == [c["rgba"] for c in label_metadata(CLASSES)["colors"][:4]]
    assert tiff_pixel_size_um(path) == (pytest.approx(0.05), "ImageJ resolution (µm)")


def test_png_is_a_palette_image_with_its_pixel_size(tmp_path: Path) -> None:
    from PIL import Image

    lab = _labels()
    (path,) = write_labels_file(tmp_path / "a_labels.png", lab, classes=CLASSES, pixel_size_um=0.05, fmt="png")
    with Image.open(path) as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(np.asarray(im), lab)
        assert im.info["dpi"][0] == pytest.approx(25400 / 0.05, rel=1e-3)
        assert im.info["semscale:classes"] == "0=pore, 1=NiO, 2=Ni, 3=YSZ, 255=unlabelled"
        assert im.getpalette()[3:6] == list(label_lut_rgb(CLASSES)[1])


def test_names_formats_and_pixel_sizes_a_file_does_not_record(tmp_path: Path) -> None:
    from semscale.errors import ConfigError

    assert [format_of(Path(f"x{s}")) for s in SUFFIXES.values()] == list(SUFFIXES)
    with pytest.raises(ConfigError, match=r"ending in \.ome\.tif, \.tif or \.png\. Got x\.jpg"):
        format_of(Path("x.jpg"))
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((8, 8), np.uint8))  # no resolution tags
    assert tiff_pixel_size_um(tmp_path / "plain.tif") is None
    tifffile.imwrite(tmp_path / "print.tif", np.zeros((8, 8), np.uint8), resolution=(300, 300),
                     resolutionunit="INCH")  # a print setting, not a pixel size
    assert tiff_pixel_size_um(tmp_path / "print.tif") is None


def test_cli_export_and_predict_an_image_file(tmp_path: Path, tiny_unet_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`semscale export STORE OUT` (the store's model by default) and `semscale predict IMAGE.tif -o
    X.ome.tif`, whose pixel size comes from the SEM TIFF's ImageJ tags."""
    from semscale.cli import main
    from tests.analysis.test_stats import PIXEL, TIMES, make_store

    store = make_store(tmp_path)
    store.update_meta(config={"name": "c", "store": str(store.path), "pixel_size_um": PIXEL, "images": [],
                              "training": {"name": "m"}})
    assert main(["export", str(store.path), str(tmp_path / "out"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "m" and len(result["files"]) == 2 * len(TIMES)
    first = tmp_path / "out" / f"{next(iter(TIMES))}_labels.ome.tif"
    np.testing.assert_array_equal(tifffile.imread(first), store.predictions("m", next(iter(TIMES)))["labels"])
    assert tiff_pixel_size_um(first)[0] == pytest.approx(PIXEL)
    assert main(["export", str(store.path), str(tmp_path / "out"), "--probabilities"]) == 1
    assert "--probabilities --overwrite" in capsys.readouterr().err

    sem = np.random.default_rng(0).integers(0, 255, (96, 80), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "sem.tif", sem, imagej=True, resolution=(1 / 0.0375, 1 / 0.0375),
                     metadata={"unit": "um"})
    assert main(["predict", str(tmp_path / "sem.tif"), "--model-file", str(tiny_unet_path), "-o",
                 str(tmp_path / "sem_labels.ome.tif"), "--probabilities", "--json"]) == 0
    files = [Path(f) for f in json.loads(capsys.readouterr().out)["files"]]
    assert [f.name for f in files] == ["sem_labels.ome.tif", "sem_confidence.ome.tif", "sem_probabilities.ome.tif"]
    assert tiff_pixel_size_um(files[0])[0] == pytest.approx(0.0375)
    assert tifffile.imread(files[0]).shape == (96, 80) and tifffile.imread(files[2]).shape[0] == 4


def test_predict_a_folder_segments_every_image_and_names_the_ones_it_refuses(
    tmp_path: Path, tiny_unet_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`semscale predict FOLDER/ -o OUT/ --format png`: every image of the folder (semscale's own outputs
    skipped), each exactly as `predict IMAGE` alone would label it; a broken file is named and the rest are
    still written."""
    from semscale.cli import main

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(3)
    for name in ("b.tif", "a.ome.tif"):
        tifffile.imwrite(images / name, rng.integers(0, 255, (64, 72), dtype=np.uint8))
    np.save(images / "c.npy", rng.integers(0, 255, (40, 48), dtype=np.uint8))
    (images / "notes.txt").write_text("not an image")
    tifffile.imwrite(images / "old_labels.tif", np.zeros((8, 8), np.uint8))  # an earlier run's output

    assert main(["predict", str(images), "--model-file", str(tiny_unet_path), "-o", str(tmp_path / "out"),
                 "--format", "png", "--json"]) == 0
    files = sorted(Path(f).name for f in json.loads(capsys.readouterr().out)["files"])
    # float maps cannot be PNGs: the confidence goes beside the labels as a TIFF
    assert files == sorted([f"{s}_labels.png" for s in "abc"] + [f"{s}_confidence.tif" for s in "abc"])
    assert main(["predict", str(images / "b.tif"), "--model-file", str(tiny_unet_path), "-o",
                 str(tmp_path / "alone.png")]) == 0
    from PIL import Image

    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "b_labels.png")),
                                  np.asarray(Image.open(tmp_path / "alone.png")))

    (images / "d.tif").write_bytes(b"II*\x00broken")
    capsys.readouterr()
    assert main(["predict", str(images), "--model-file", str(tiny_unet_path)]) == 1
    err = capsys.readouterr().err
    assert "Expected every image in" in err and "Got 1 of 4 refused (the other 3 were written to" in err
    assert "d.tif:" in err
    assert (images / "c_labels.tif").is_file() and not (images / "d_labels.tif").exists()
    assert main(["predict", str(images / "b.tif"), "--model-file", str(tiny_unet_path), "--format", "png"]) == 1
    assert "--format only with a FOLDER" in capsys.readouterr().err
