"""A campaign store on object storage: a real S3-compatible server (moto's server mode) on 127.0.0.1, and
fsspec's in-memory filesystem. The store code is the same for a folder and a bucket; what differs (the Zarr
store object, files libraries must see on disk, the lock's exclusive create) is tested here for real."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from semscale.cli import main
from semscale.errors import StoreError
from semscale.store import create_store, open_store
from semscale.store.location import create_exclusive, is_remote, list_files, store_path
from semscale.store.lock import lock_holder
from tests.campaigns import assert_same_outputs, campaign_outputs, tiny_campaign
from tests.loopback import LOOPBACK

BUCKET = "semscale-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """``s3://<bucket>`` on a moto S3 server started on 127.0.0.1 for this module; the standard AWS
    environment variables point this process and every process it starts (Dask workers) at it."""
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://{LOOPBACK}:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection((LOOPBACK, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the moto S3 server did not start") from None
                time.sleep(0.2)
        import s3fs

        s3fs.S3FileSystem(use_listings_cache=False).mkdir(BUCKET)
        yield f"s3://{BUCKET}"
    finally:
        server.terminate()
        server.wait(30)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_store_urls_name_a_folder_or_an_object_store(tmp_path: Path) -> None:
    local = store_path(f"file://{tmp_path}/c.zarr")
    assert not is_remote(local) and local == tmp_path / "c.zarr"
    assert store_path("rel.zarr") == Path.cwd() / "rel.zarr"
    remote = store_path(f"s3://{BUCKET}/c.zarr")
    assert is_remote(remote) and str(remote) == f"s3://{BUCKET}/c.zarr"
    assert str(remote / "images") == f"s3://{BUCKET}/c.zarr/images"
    with pytest.raises(StoreError, match="installed fsspec filesystem. Got `nosuchproto://x`.*semscale\\[s3\\]"):
        store_path("nosuchproto://x")


def test_the_lock_is_an_exclusive_put_on_s3(s3: str) -> None:
    """The server honours `If-None-Match: *`: of two creates exactly one wins, so a second writer on a bucket
    is refused, naming the holder, exactly as on disk; `--break-lock` clears a holder known to be gone."""
    lock = store_path(f"{s3}/excl/lockfile")
    assert create_exclusive(lock, b"first")
    assert not create_exclusive(lock, b"second")
    assert lock.read_bytes() == b"first"

    store = create_store(f"{s3}/locked.zarr", name="x", pixel_size_um=0.05)
    holder = {"host": "node17", "pid": 4242, "command": "predict (semscale predict c.yaml)",
              "started": "2026-12-01T10:00:00+00:00"}
    (store.path / ".semscale-lock.json").write_text(json.dumps(holder))
    with pytest.raises(StoreError, match="no other writer on store s3://.*pid 4242 on host node17.*--break-lock"):
        with open_store(store.path).writer("label"):
            pass
    assert main(["info", str(store.path), "--break-lock"]) == 0
    assert lock_holder(store.path) is None
    with open_store(store.path).writer("label"):
        assert lock_holder(store.path) is not None
    assert lock_holder(store.path) is None


def test_a_memory_store_holds_images_labels_and_stats() -> None:
    """fsspec's ``memory://`` (one process): the same store code writes and reads back exactly."""
    import xarray as xr

    url = "memory://semscale-test/m.zarr"
    store = create_store(url, name="m", pixel_size_um=0.1)
    sem = np.arange(70 * 90, dtype=np.uint16).reshape(70, 90)
    with store.writer("ingest"):
        store.create_image("a", shape=sem.shape, dtype=sem.dtype, chunks=32)[:] = sem
        store.finish_image("a", sha256="x")
        store.write_labels("a", "target", (sem % 4).astype(np.uint8))
        store.write_stats(xr.Dataset({"v": ("image", [1.5])}, coords={"image": ["a"]}),
                          xr.Dataset({"w": ("t", [2.0])}))
        store.consolidate()
    again = open_store(url, mode="r")
    assert again.image_ids() == ["a"]
    np.testing.assert_array_equal(again.sem("a").compute(), sem)
    np.testing.assert_array_equal(again.labels("a", "target").compute(), sem % 4)
    assert again.read_stats()["v"].values.tolist() == [1.5]
    assert "images/a/scale0/image/zarr.json" in list_files(again.path)
    assert again.chunks_written(again.sem_array("a")).all()


@pytest.mark.slow
def test_a_whole_campaign_runs_on_s3_and_equals_the_same_campaign_on_disk(
    s3: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_campaign_reference: dict[str, np.ndarray]
) -> None:
    """`semscale run` (ingest, label, train, predict, robustness, evaluate, stats, report) with
    `store: s3://…` on a real cluster whose workers read and write the bucket: every result equals the run
    with the store in a folder, the report's page and figures are in the bucket, the lock is gone
    afterwards, and the read-only commands open the bucket."""
    url = f"{s3}/campaign.zarr"
    on_s3 = tiny_campaign(tmp_path / "s3", store=url)
    assert main(["run", str(on_s3)]) == 0
    capsys.readouterr()

    assert_same_outputs(campaign_outputs(url), tiny_campaign_reference)
    files = list_files(store_path(url))
    assert {"report/stats.csv", "report/phase_fractions.png", "models/unet/member_0.json", "report/index.html",
            "report/robustness.png", "report/overlay_t000_a.png", "robustness/unet/accuracy/zarr.json"} <= files
    assert ".semscale-lock.json" not in files
    assert main(["info", url, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["path"] == url and len(info["images"]) == 3 and info["models"] == ["unet"] and info["stats"]
    assert all(image["complete"] and image["predictions"] == ["unet"] for image in info["images"])
    assert main(["stats", url, "--json"]) == 0  # the store's own recorded config, from the bucket
    again = json.loads(capsys.readouterr().out)
    assert again["changed"] is False and again["measured"] == []
    assert main(["report", url, "--json"]) == 0  # nothing changed: nothing written to the bucket
    assert json.loads(capsys.readouterr().out)["changed"] is False
