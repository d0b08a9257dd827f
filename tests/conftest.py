"""Shared pytest fixtures: a tiny U-Net (and a 2-member ensemble) saved once per session, a real 2-worker
``distributed.LocalCluster`` client on loopback, and the outputs of the tiny campaign run once undisturbed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TINY_FILTERS = (4, 8, 16)
"""Two poolings: inputs must be multiples of 4 px; receptive field 44 px."""
TINY_PATCH = 32


def _save_tiny(folder: Path, name: str, seed: int) -> Path:
    from semscale.training.unet import build_unet, save_model

    model = build_unet(filters=TINY_FILTERS, seed=seed)
    return save_model(model, folder / f"{name}.keras", sidecar={"patch_size": TINY_PATCH, "seed": seed})


@pytest.fixture(scope="session")
def tiny_unet_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny U-Net (filters 4/8/16, random weights, seed 1) with its JSON sidecar."""
    return _save_tiny(tmp_path_factory.mktemp("models"), "tiny", seed=1)


@pytest.fixture(scope="session")
def tiny_ensemble_paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two saved tiny U-Nets (seeds 11, 12) forming an ensemble."""
    folder = tmp_path_factory.mktemp("ensemble")
    return [_save_tiny(folder, f"member_{k}", seed=11 + k) for k in range(2)]


@pytest.fixture(scope="session")
def client() -> Iterator[object]:
    """A real distributed client: LocalCluster, 2 workers × 1 thread, in-process (processes=False)."""
    from distributed import Client

    from tests.loopback import local_cluster

    with local_cluster(n_workers=2, threads_per_worker=1, processes=False) as cluster, Client(cluster) as c:
        yield c


@contextlib.contextmanager
def _semscale_logger_kept() -> Iterator[None]:
    import logging

    log = logging.getLogger("semscale")
    saved = (log.handlers[:], log.level, log.propagate)
    try:
        yield
    finally:
        log.handlers[:], log.level, log.propagate = saved[0], saved[1], saved[2]


@pytest.fixture(autouse=True)
def _restore_semscale_logger() -> Iterator[None]:
    """The CLI's ``main`` configures the ``semscale`` logger for a terminal (own handler, no propagation);
    every test starts from the library's state instead (no handler, propagating to the root logger, where
    caplog listens), whatever ran before it, and the logger is put back afterwards."""
    import logging

    with _semscale_logger_kept():
        log = logging.getLogger("semscale")
        log.handlers[:], log.propagate = [], True
        log.setLevel(logging.NOTSET)
        yield


@pytest.fixture(scope="session")
def tiny_campaign_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store of :func:`tests.campaigns.tiny_campaign` run once, undisturbed, by ``semscale run`` in a fresh
    process as a user runs it (with its report), so no test that ran before in this process can leave its
    mark on the reference. Tests only read it."""
    import os
    import subprocess
    import sys

    from tests.campaigns import tiny_campaign

    with _semscale_logger_kept():
        cfg_path = tiny_campaign(tmp_path_factory.mktemp("reference"))
    done = subprocess.run([sys.executable, "-m", "semscale.cli", "run", str(cfg_path)], capture_output=True,
                          text=True, env={**os.environ, "SEMSCALE_PROGRESS": "0"})
    assert done.returncode == 0, done.stderr[-3000:]
    return cfg_path.parent / "campaign.zarr"


@pytest.fixture(scope="session")
def tiny_campaign_reference(tiny_campaign_store: Path) -> dict[str, Any]:
    """Every result array of the undisturbed tiny campaign: what killed, resumed and object-store runs of
    the same campaign must equal."""
    from tests.campaigns import campaign_outputs

    return campaign_outputs(tiny_campaign_store)
