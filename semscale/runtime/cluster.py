"""Dask clusters for semscale: an existing scheduler, ``LocalCUDACluster`` on GPU machines, else ``LocalCluster``.

The wrapper stays thin over ``distributed``. :func:`get_client` is a context manager that yields a
``distributed.Client`` and closes what it started. :func:`array_module` picks the array library for
accumulators inside tasks: cupy on a GPU worker when cupy is importable, numpy otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from types import ModuleType
from typing import Any, Literal

import numpy as np

from semscale.errors import ConfigError, DependencyError

log = logging.getLogger(__name__)

__all__ = [
    "ClusterPlan",
    "array_module",
    "cupy_available",
    "dask_cuda_available",
    "detect_gpus",
    "get_client",
    "plan_cluster",
]

GpuOption = bool | Literal["auto"]


def detect_gpus() -> int:
    """Number of CUDA GPUs visible to this process (``CUDA_VISIBLE_DEVICES`` honoured; 0 when none)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v for v in visible.split(",") if v.strip() and v.strip() != "-1"]
        if not ids:
            return 0
    else:
        ids = None
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return 0
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return 0
    n = sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
    return min(n, len(ids)) if ids is not None else n


def dask_cuda_available() -> bool:
    try:
        import dask_cuda  # noqa: F401
    except ImportError:
        return False
    return True


def cupy_available() -> bool:
    """cupy importable and a CUDA device usable from this process."""
    try:
        import cupy
    except ImportError:
        return False
    try:
        return bool(cupy.cuda.runtime.getDeviceCount() > 0)
    except Exception:
        return False


def array_module(*, gpu: GpuOption = "auto") -> ModuleType:
    """``cupy`` on a GPU worker (cupy importable and a device visible), else ``numpy``.

    ``SEMSCALE_ARRAY_MODULE=numpy`` forces numpy; ``gpu=False`` too; ``gpu=True`` without cupy raises.
    """
    if gpu is False or os.environ.get("SEMSCALE_ARRAY_MODULE", "").lower() == "numpy":
        return np
    if cupy_available():
        import cupy

        return cupy
    if gpu is True:
        raise DependencyError(
            "Expected cupy and a CUDA device for `gpu=True`. Got none; install with "
            "`pip install 'semscale[gpu]'` (cupy-cuda12x) or use gpu=False."
        )
    return np


class ClusterPlan(dict):  # a plain dict with a readable repr
    """What :func:`plan_cluster` decided: ``kind`` ("address" | "cuda" | "local") and its arguments."""


def plan_cluster(
    address: str | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | int | None = "auto",
    gpu: GpuOption = "auto",
    n_gpus: int | None = None,
    has_dask_cuda: bool | None = None,
    cpu_count: int | None = None,
) -> ClusterPlan:
    """Decide which cluster to start (pure logic; GPU detection injectable for tests).

    - ``address`` given: connect to that scheduler.
    - GPUs present (``gpu`` "auto" or True) and dask-cuda importable: ``LocalCUDACluster``, one worker per
      GPU with one thread (``n_workers`` caps the GPU count).
    - otherwise ``LocalCluster``: by default ``max(1, cpus // 4)`` worker processes with one thread each
      (each inference task uses the backend's own intra-op threads).
    ``gpu=True`` without GPUs or dask-cuda raises :class:`DependencyError` with the fix.
    """
    if gpu not in (True, False, "auto"):
        raise ConfigError(f'Expected true, false or "auto" for `cluster.gpu`. Got {gpu!r}.')
    if address:
        return ClusterPlan(kind="address", address=address)
    n_gpus = detect_gpus() if n_gpus is None else n_gpus
    has_dask_cuda = dask_cuda_available() if has_dask_cuda is None else has_dask_cuda
    if gpu is True and n_gpus == 0:
        raise DependencyError("Expected a CUDA GPU for `gpu=True`. Got none visible (nvidia-smi -L).")
    if gpu is True and not has_dask_cuda:
        raise DependencyError(
            "Expected dask-cuda for `gpu=True`. Got it not installed; `pip install 'semscale[gpu]'`."
        )
    if gpu is not False and n_gpus > 0 and has_dask_cuda:
        n = n_gpus if n_workers is None else min(n_workers, n_gpus)
        return ClusterPlan(
            kind="cuda", n_workers=n, threads_per_worker=1, memory_limit=memory_limit,
            CUDA_VISIBLE_DEVICES=list(range(n)),
        )
    if gpu == "auto" and n_gpus > 0:
        log.warning("GPUs found but dask-cuda is not installed; starting a CPU LocalCluster instead.")
    cpus = cpu_count or os.cpu_count() or 1
    return ClusterPlan(
        kind="local",
        n_workers=n_workers if n_workers is not None else max(1, cpus // 4),
        threads_per_worker=threads_per_worker if threads_per_worker is not None else 1,
        memory_limit=memory_limit,
    )


@contextlib.contextmanager
def get_client(
    address: str | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | int | None = "auto",
    gpu: GpuOption = "auto",
    dashboard: bool = True,
    processes: bool = True,
) -> Iterator[Any]:
    """Yield a ``distributed.Client`` for the plan of :func:`plan_cluster`; close what was started.

    The dashboard link is logged (INFO). ``dashboard=False`` starts local clusters without one.
    """
    from distributed import Client, LocalCluster

    plan = plan_cluster(
        address, n_workers=n_workers, threads_per_worker=threads_per_worker,
        memory_limit=memory_limit, gpu=gpu,
    )
    dash = ":0" if dashboard else None
    cluster: Any = None
    if plan["kind"] == "address":
        client = Client(plan["address"])
        log.info("connected to Dask scheduler %s", plan["address"])
    elif plan["kind"] == "cuda":
        from dask_cuda import LocalCUDACluster

        cluster = LocalCUDACluster(
            n_workers=plan["n_workers"], threads_per_worker=1, memory_limit=plan["memory_limit"],
            CUDA_VISIBLE_DEVICES=plan["CUDA_VISIBLE_DEVICES"], dashboard_address=dash,
        )
        client = Client(cluster)
        log.info("started LocalCUDACluster with %d GPU worker(s)", plan["n_workers"])
    else:
        cluster = LocalCluster(
            n_workers=plan["n_workers"], threads_per_worker=plan["threads_per_worker"],
            memory_limit=plan["memory_limit"], processes=processes, dashboard_address=dash,
        )
        client = Client(cluster)
        log.info(
            "started LocalCluster: %d worker(s) × %d thread(s)", plan["n_workers"], plan["threads_per_worker"]
        )
    if dashboard and getattr(client, "dashboard_link", None):
        log.info("Dask dashboard: %s", client.dashboard_link)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
