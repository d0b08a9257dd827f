"""Bad input, one case per test, through the command line as a user meets it: exit status 1 and one line
that names the file or key, what was expected, what was found and how to fix it — never "unexpected …",
never a traceback, and nothing half-written left marked complete."""

from __future__ import annotations

import json
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import yaml

from semscale.cli import main

PIXEL = 0.05


def _files(folder: Path) -> dict[str, Any]:
    """A valid one-image campaign's files: SEM 64×64, EDS Ni/O/Zr at 1/4, truth 0..3."""
    rng = np.random.default_rng(0)
    tifffile.imwrite(folder / "sem.tif", rng.integers(0, 255, (64, 64), dtype=np.uint8))
    for el in ("Ni", "O", "Zr"):
        tifffile.imwrite(folder / f"{el}.tif", rng.integers(0, 50, (16, 16), dtype=np.uint16))
    tifffile.imwrite(folder / "truth.tif", (np.arange(64 * 64).reshape(64, 64) % 4).astype(np.uint8))
    return {"id": "a", "sem": "sem.tif", "eds": {el: f"{el}.tif" for el in ("Ni", "O", "Zr")},
            "truth": "truth.tif", "oxidation_min": 0}


def _config(folder: Path, image: dict[str, Any] | None = None, **top: Any) -> Path:
    image = _files(folder) if image is None else image
    data = {"name": "bad", "store": "c.zarr", "pixel_size_um": PIXEL, "images": [image], **top}
    path = folder / "campaign.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _fails(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the CLI; assert exit 1 and a one-line error; return it."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1, err
    line = err[-1]
    assert line.startswith("semscale: error: "), line
    assert "unexpected" not in line and "Traceback" not in "\n".join(err)
    sys.stderr.write(line + "\n")  # `pytest -rP tests/test_bad_inputs.py` lists every message
    return line


def _image_case(capsys: pytest.CaptureFixture[str], tmp_path: Path, change: Callable[[dict, Path], None]) -> str:
    image = _files(tmp_path)
    change(image, tmp_path)
    return _fails(capsys, "ingest", _config(tmp_path, image))


# --- the config file ---------------------------------------------------------------------------------
def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _fails(capsys, "ingest", tmp_path / "nope.yaml")
    assert line == f"semscale: error: Expected a campaign config file at {tmp_path / 'nope.yaml'}. Got no such file."


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: x\nstore: s.zarr\nimages:\n  - id: a\n    sem: [a.tif\n")
    line = _fails(capsys, "ingest", path)
    assert line.startswith(f"semscale: error: {path}:6:1: expected valid YAML. Got ") and "line and column" in line


def test_config_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    assert "expected a UTF-8 text file" in _fails(capsys, "ingest", path)


def test_config_is_a_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("- a\n- b\n")
    assert "expected a mapping" in _fails(capsys, "ingest", path)


def test_unknown_top_level_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _fails(capsys, "ingest", _config(tmp_path, trainig={"epochs": 3}))
    assert "`trainig`: unknown key" in line


def test_unknown_image_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _image_case(capsys, tmp_path, lambda im, _: im.update(oxidation=5))
    assert "`images[0].oxidation`: unknown key" in line


def test_missing_sem_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _image_case(capsys, tmp_path, lambda im, _: im.pop("sem"))
    assert "`images[0].sem`: missing required key" in line


@pytest.mark.parametrize("bad_id", ["..", ".hidden", "a/b"])
def test_image_id_that_is_not_a_plain_name(tmp_path: Path, capsys: pytest.CaptureFixture[str], bad_id: str) -> None:
    line = _image_case(capsys, tmp_path, lambda im, _: im.update(id=bad_id))
    assert f"`images[0].id`: expected only letters, digits, '_', '.', '-', not starting with '.', got {bad_id!r}" in line


def test_duplicate_image_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = _files(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "store": "c.zarr", "pixel_size_um": PIXEL,
                                    "images": [image, dict(image)]}))
    assert "`images[1].id`: duplicate id 'a' (first used by images[0])" in _fails(capsys, "ingest", path)


def test_sem_file_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _image_case(capsys, tmp_path, lambda im, _: im.update(sem="gone.tif"))
    assert "`images[0].sem`: expected an existing file" in line


def test_eds_without_an_element_the_labelling_needs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Found when the config loads, with the image named, not at `label` after a cluster start."""
    line = _image_case(capsys, tmp_path, lambda im, _: im["eds"].pop("Zr"))
    assert ("`images[0].eds`: expected maps of Ni, O, Zr (the EDS-guided labelling needs all of them), got Ni, O "
            "(missing Zr); add the missing map(s) or give `target:`") in line


def test_negative_oxidation_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _image_case(capsys, tmp_path, lambda im, _: im.update(oxidation_min=-2))
    assert "`images[0].oxidation_min`: expected a number >= 0" in line


def test_unknown_role(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _image_case(capsys, tmp_path, lambda im, _: im.update(role="validation"))
    assert "`images[0].role`" in line and "'train'" in line and "'validation'" in line


def test_negative_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "`images[0].page`: expected an integer >= 0" in _image_case(capsys, tmp_path,
                                                                        lambda im, _: im.update(page=-1))


def test_bad_label_encoding_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _fails(capsys, "ingest", _config(tmp_path, ingest={"label_encoding": "colour"}))
    assert "`ingest.label_encoding`" in line and "'colour'" in line and "'grey'" in line


def test_chunk_size_too_small(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "`ingest.chunk_size`: expected an integer >= 16, got 4" in _fails(
        capsys, "ingest", _config(tmp_path, ingest={"chunk_size": 4}))


# --- image files -------------------------------------------------------------------------------------
def test_truncated_tiff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def cut(im: dict, folder: Path) -> None:
        data = (folder / "sem.tif").read_bytes()
        (folder / "sem.tif").write_bytes(data[: len(data) // 2])

    line = _image_case(capsys, tmp_path, cut)
    assert "sem.tif" in line and "truncated" in line and "copy it again" in line


def test_empty_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def empty(im: dict, folder: Path) -> None:
        np.save(folder / "sem.npy", np.zeros((0, 0), np.uint8))
        im["sem"] = "sem.npy"

    line = _image_case(capsys, tmp_path, empty)
    assert line.endswith(f"Expected an image with pixels in {tmp_path / 'sem.npy'}. Got shape 0×0.")


def test_object_dtype_npy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def objects(im: dict, folder: Path) -> None:
        np.save(folder / "sem.npy", np.array([[1, "a"], [None, 2]], dtype=object), allow_pickle=True)
        im["sem"] = "sem.npy"

    line = _image_case(capsys, tmp_path, objects)
    assert "Expected a NumPy .npy file of uint8 or uint16 numbers in" in line and "numpy.save" in line


def test_npy_that_is_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def text(im: dict, folder: Path) -> None:
        (folder / "sem.npy").write_text("not an array\n")
        im["sem"] = "sem.npy"

    assert "Got a file that does not start with NumPy's .npy header" in _image_case(capsys, tmp_path, text)


def test_multi_page_tiff_is_refused_then_read_by_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stack = [np.full((64, 64), v, np.uint8) for v in (10, 20, 30)]

    def pages(im: dict, folder: Path) -> None:
        with tifffile.TiffWriter(folder / "sem.tif") as tif:
            for page in stack:
                tif.write(page, photometric="minisblack")

    line = _image_case(capsys, tmp_path, pages)
    assert "Expected a single-page TIFF in" in line and "Got 3 pages" in line and "`page: N`" in line
    image = _files(tmp_path)
    pages(image, tmp_path)
    assert main(["ingest", str(_config(tmp_path, {**image, "page": 1})), "--json"]) == 0
    store = Path(json.loads(capsys.readouterr().out)["store"])
    from semscale.store import open_store

    assert np.unique(open_store(store, mode="r").sem("a").compute()).tolist() == [20]


def test_3d_tiff_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def volume(im: dict, folder: Path) -> None:  # five samples per pixel in one page
        tifffile.imwrite(folder / "sem.tif", np.zeros((64, 64, 5), np.uint8), photometric="minisblack",
                         planarconfig="contig", extrasamples=[0, 0, 0, 0])

    line = _image_case(capsys, tmp_path, volume)
    assert "Expected a single-channel (grey) 2-D image in" in line and "one 2-D page" in line


def test_colour_tiff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def rgb(im: dict, folder: Path) -> None:
        tifffile.imwrite(folder / "sem.tif", np.zeros((64, 64, 3), np.uint8), photometric="rgb")

    assert "Expected a single-channel (grey) 2-D image in" in _image_case(capsys, tmp_path, rgb)


def test_float_tiff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def floats(im: dict, folder: Path) -> None:
        tifffile.imwrite(folder / "sem.tif", np.zeros((64, 64), np.float32))

    assert "Expected an 8- or 16-bit unsigned grey image in" in _image_case(capsys, tmp_path, floats)


def test_unsupported_suffix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def gif(im: dict, folder: Path) -> None:
        (folder / "sem.gif").write_bytes(b"GIF89a")
        im["sem"] = "sem.gif"

    assert "Got suffix '.gif'" in _image_case(capsys, tmp_path, gif)


def test_label_file_of_only_0_and_255_is_ambiguous(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Defect: read as "class 0 and unlabelled", silently dropping every 255 pixel of a grey-coded file."""
    two = np.where(np.arange(64 * 64).reshape(64, 64) % 3, 255, 0).astype(np.uint8)

    def grey(im: dict, folder: Path) -> None:
        tifffile.imwrite(folder / "truth.tif", two)

    line = _image_case(capsys, tmp_path, grey)
    assert "Got only the values [0, 255]" in line and "`ingest.label_encoding: index` or `grey`" in line
    image = _files(tmp_path)
    tifffile.imwrite(tmp_path / "truth.tif", two)
    assert main(["ingest", str(_config(tmp_path, image, ingest={"label_encoding": "grey"})), "--json"]) == 0
    from semscale.store import open_store

    store = open_store(Path(json.loads(capsys.readouterr().out)["store"]), mode="r")
    np.testing.assert_array_equal(store.labels("a", "truth").compute(), np.where(two == 255, 3, 0))


def test_label_values_that_fit_no_encoding(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def odd(im: dict, folder: Path) -> None:
        tifffile.imwrite(folder / "truth.tif", np.full((64, 64), 7, np.uint8))

    line = _image_case(capsys, tmp_path, odd)
    assert "Expected class indices 0..3 (255 = unlabelled) or grey levels [0, 85, 170, 255]" in line
    assert line.endswith("Got values [7].")


def test_label_file_of_another_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def small(im: dict, folder: Path) -> None:
        tifffile.imwrite(folder / "truth.tif", np.zeros((32, 64), np.uint8))

    assert "of the SEM image's shape (64, 64). Got (32, 64)." in _image_case(capsys, tmp_path, small)


def test_eds_map_not_an_integer_downsampling(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def odd(im: dict, folder: Path) -> None:
        for el in ("Ni", "O", "Zr"):
            tifffile.imwrite(folder / f"{el}.tif", np.zeros((23, 23), np.uint16))

    line = _image_case(capsys, tmp_path, odd)
    assert "at an integer downsampling of the SEM image 64×64. Got 23×23" in line


def test_eds_maps_of_different_shapes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def mixed(im: dict, folder: Path) -> None:
        tifffile.imwrite(folder / "Zr.tif", np.zeros((32, 32), np.uint16))

    assert "Expected all EDS maps of `a` to share one shape" in _image_case(capsys, tmp_path, mixed)


# --- the store ---------------------------------------------------------------------------------------
def test_store_path_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "c.zarr").write_text("x")
    line = _fails(capsys, "ingest", _config(tmp_path))
    assert f"Expected a folder (or nothing) at the store path {tmp_path / 'c.zarr'}. Got a file" in line


def test_store_path_is_a_folder_of_other_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "c.zarr").mkdir()
    (tmp_path / "c.zarr" / "notes.txt").write_text("x")
    assert "Got a folder with other files and no zarr.json" in _fails(capsys, "ingest", _config(tmp_path))


def test_info_on_a_folder_that_is_no_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "Expected a semscale store (Zarr v3 group) at" in _fails(capsys, "info", tmp_path)


def test_ingest_an_image_id_the_config_lacks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _fails(capsys, "ingest", _config(tmp_path), "--image", "nosuch")
    assert line == "semscale: error: Expected --image among the config's ids (a). Got nosuch."


# --- models, outputs, the cluster ---------------------------------------------------------------------
def test_model_file_without_sidecar_is_refused_before_anything_runs(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Defect: `predict CONFIG --model-file X` used the store's model and exited 0."""
    junk = tmp_path / "junk.keras"
    junk.write_text("junk")
    line = _fails(capsys, "predict", _config(tmp_path), "--model-file", junk)
    assert line == (f"semscale: error: Expected the sidecar junk.json next to model {junk}. Got none; save models "
                    "with semscale.training.unet.save_model.")
    assert not (tmp_path / "c.zarr").exists()  # refused before ingest or a cluster start


def test_missing_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _fails(capsys, "predict", _config(tmp_path), "--model-file", tmp_path / "nosuch.keras")
    assert f"Expected a model file at `{tmp_path / 'nosuch.keras'}`" in line


def test_output_into_a_missing_folder_is_refused_before_the_compute(tiny_unet_path: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    _files(tmp_path)
    out = tmp_path / "nofolder" / "labels.tif"
    line = _fails(capsys, "predict", tmp_path / "sem.tif", "--model-file", tiny_unet_path, "-o", out)
    assert line.endswith(f"Expected an existing folder for the output {out}. Got no folder {out.parent}; create "
                         "it or choose another -o.")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_scheduler_address_where_nothing_listens(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Defect: a 30 s wait and then `Timed out`; now at once, with the address."""
    import time

    port = _closed_port()
    t0 = time.monotonic()
    line = _fails(capsys, "label", _config(tmp_path), "--scheduler", f"tcp://127.0.0.1:{port}")
    assert f"Expected a Dask scheduler at tcp://127.0.0.1:{port}. Got Connection refused" in line
    assert "drop --scheduler" in line and time.monotonic() - t0 < 25


def test_scheduler_address_without_a_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _fails(capsys, "label", _config(tmp_path), "--scheduler", "tcp://127.0.0.1")
    assert "as tcp://HOST:PORT. Got no host or port in it." in line


def test_disk_full_is_a_clean_error_and_resumes_once_space_is_freed(tmp_path: Path) -> None:
    """A store on a small tmpfs (in a user + mount namespace): ingest fails with the file named and
    `No space left on device`, the image is not marked complete; with the space grown, a rerun completes."""
    unshare = shutil.which("unshare")
    assert unshare, "util-linux `unshare` is needed for the disk-full test"
    folder = tmp_path / "c"
    folder.mkdir()
    image = _files(folder)
    rng = np.random.default_rng(1)
    tifffile.imwrite(folder / "sem.tif", rng.integers(0, 255, (512, 512), dtype=np.uint8))
    for el in ("Ni", "O", "Zr"):
        tifffile.imwrite(folder / f"{el}.tif", rng.integers(0, 50, (128, 128), dtype=np.uint16))
    tifffile.imwrite(folder / "truth.tif", rng.integers(0, 4, (512, 512), dtype=np.uint8))
    (tmp_path / "disk").mkdir()
    cfg = _config(folder, image, store=str(tmp_path / "disk" / "c.zarr"), ingest={"chunk_size": 128})
    cli = shlex.join([sys.executable, "-m", "semscale.cli"])
    disk = shlex.quote(str(tmp_path / "disk"))
    ingest, info = f"{cli} ingest {shlex.quote(str(cfg))} --json", f"{cli} info {disk}/c.zarr --json"
    script = (f"mount -t tmpfs -o size=300k tmpfs {disk} || exit 99; {ingest}; echo @@$?; {info}; echo @@; "
              f"mount -o remount,size=64m {disk}; {ingest} >/dev/null; echo @@$?; {info}")
    out = subprocess.run([unshare, "-rm", "sh", "-c", script], capture_output=True, text=True)
    assert out.returncode != 99, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("semscale:")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "finished blocks are kept" in errors[0]
    assert "unexpected" not in out.stderr
    full, first_info, _, second = out.stdout.split("@@")
    assert not full.strip() and first_info.startswith("1")  # no result, exit 1
    if first_info[1:].strip():  # the store's root may exist: the image must not be complete there
        assert not any(im["complete"] for im in json.loads(first_info[1:])["images"])
    assert second.startswith("0")
    final = json.loads(second[1:])
    assert [im["id"] for im in final["images"]] == ["a"] and final["images"][0]["complete"]


def test_a_corrupt_store_chunk_fails_once_in_one_line_without_worker_tracebacks(tiny_unet_path: Path,
                                                                               tmp_path: Path) -> None:
    """Defect: worker tracebacks (`Compute Failed` …) printed without --debug. Now: one line naming the
    image, the block and the cause, after the retries; nothing is marked complete."""
    cfg = _config(tmp_path)
    assert main(["ingest", str(cfg)]) == 0
    store = tmp_path / "c.zarr"
    chunk = next(p for p in (store / "images" / "a" / "scale0" / "image" / "c").rglob("*") if p.is_file())
    chunk.write_bytes(b"junk")
    out = subprocess.run([sys.executable, "-m", "semscale.cli", "predict", str(store), "--model-file",
                          str(tiny_unet_path), "--model", "tiny", "--workers", "1", "--dashboard", "127.0.0.1:0"],
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert "Compute Failed" not in out.stderr and "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if "error" in line.lower()]
    assert errors == [line for line in out.stderr.splitlines() if line.startswith("semscale: error: ")], out.stderr
    assert len(errors) == 1 and "predict a (tile): 1 of 1 blocks failed after 2 retries; first: block (0, 0)" in \
        errors[0] and "Rerun to retry them" in errors[0]
    from semscale.store import open_store

    assert not open_store(store, mode="r").has_predictions("tiny", "a")
