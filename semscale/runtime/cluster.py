"""Dask clusters for semscale: an existing scheduler, ``LocalCUDACluster`` on GPU machines, else ``LocalCluster``.

The wrapper stays thin over ``distributed``: :func:`plan_cluster` turns a
:class:`~semscale.config.ClusterConfig` into a :class:`ClusterPlan` (pure logic, hardware probes
injectable), and :func:`get_client` is a context manager that starts what the plan says, yields a
``distributed.Client`` and closes what it started. The hardware probes live in
:mod:`semscale.runtime.backend`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from semscale.config import ClusterConfig
from semscale.errors import ConfigError, DependencyError
from semscale.runtime import backend

log = logging.getLogger(__name__)

LOOPBACK_HOST = "127.0.0.1"
"""Where the scheduler and workers of a local cluster listen (the dashboard: ``cluster.dashboard_address``)."""

__all__ = ["ClusterPlan", "get_client", "plan_cluster"]


@dataclass(frozen=True)
class ClusterPlan:
    """What :func:`plan_cluster` decided."""

    kind: Literal["address", "cuda", "local"]
    address: str | None = None
    """Scheduler address (``kind == "address"``)."""
    n_workers: int = 0
    threads_per_worker: int = 1
    memory_limit: str = "auto"
    devices: tuple[str, ...] = ()
    """CUDA devices of the GPU workers, one each (``kind == "cuda"``), as ``CUDA_VISIBLE_DEVICES`` names them."""
    hide_gpus: bool = False
    """CPU workers start with ``CUDA_VISIBLE_DEVICES=""`` (``gpu: off``)."""
    dashboard_address: str | None = None


def plan_cluster(
    cfg: ClusterConfig,
    *,
    n_gpus: int | None = None,
    has_dask_cuda: bool | None = None,
    cpu_count: int | None = None,
) -> ClusterPlan:
    """Decide which cluster to start for ``cfg`` (GPU count, dask-cuda and CPU count injectable for tests).

    - ``cfg.address`` given: connect to that scheduler.
    - GPUs visible (``gpu`` auto or on) and dask-cuda importable: ``LocalCUDACluster``, one single-threaded
      worker per GPU (``n_workers`` caps the count), on the devices ``CUDA_VISIBLE_DEVICES`` lists (in
      its order), else on devices 0..n-1.
    - otherwise ``LocalCluster``: by default ``max(1, cpus // 4)`` worker processes with one thread each
      (each inference task uses the backend's own intra-op threads).
    ``gpu: on`` without GPUs or dask-cuda raises :class:`~semscale.errors.DependencyError` with the fix.
    """
    if cfg.address:
        return ClusterPlan(kind="address", address=cfg.address)
    n_gpus = backend.detect_gpus() if n_gpus is None else n_gpus
    has_dask_cuda = backend.dask_cuda_available() if has_dask_cuda is None else has_dask_cuda
    if cfg.gpu == "on" and n_gpus == 0:
        raise DependencyError(
            "Expected a CUDA GPU for `cluster.gpu: on`. Got none visible (nvidia-smi -L, "
            "CUDA_VISIBLE_DEVICES); use `gpu: auto` or `gpu: off` (`--gpu off`) for CPU workers."
        )
    if cfg.gpu == "on" and not has_dask_cuda:
        raise DependencyError(
            "Expected dask-cuda for `cluster.gpu: on`. Got it not installed; `pip install 'semscale[gpu]'`."
        )
    if cfg.gpu != "off" and n_gpus > 0 and has_dask_cuda:
        n = n_gpus if cfg.n_workers is None else min(cfg.n_workers, n_gpus)
        visible = backend.visible_devices()
        devices = tuple(visible[:n]) if visible else tuple(str(i) for i in range(n))
        return ClusterPlan(kind="cuda", n_workers=len(devices), memory_limit=cfg.memory_limit,
                           devices=devices, dashboard_address=cfg.dashboard_address)
    if cfg.gpu == "auto" and n_gpus > 0:
        log.warning("GPUs found but dask-cuda is not installed; starting a CPU LocalCluster instead.")
    cpus = cpu_count or os.cpu_count() or 1
    return ClusterPlan(
        kind="local",
        n_workers=cfg.n_workers if cfg.n_workers is not None else max(1, cpus // 4),
        threads_per_worker=cfg.threads_per_worker if cfg.threads_per_worker is not None else 1,
        memory_limit=cfg.memory_limit, hide_gpus=cfg.gpu == "off", dashboard_address=cfg.dashboard_address,
    )


SCHEDULER_TIMEOUT_S = 30
"""Seconds a client waits for a scheduler that accepts connections to answer."""


def check_scheduler(address: str, *, timeout_s: float = 5.0) -> None:
    """Fail fast, naming the address, when nothing accepts TCP connections at a scheduler address
    (``tcp://host:port`` or ``host:port``); other protocols are left to ``distributed``."""
    import socket
    from urllib.parse import urlsplit

    where = f"the Dask scheduler address {address!r} (`cluster.address` / --scheduler)"
    url = urlsplit(address if "://" in address else f"tcp://{address}")
    if url.scheme not in ("tcp", "tls"):
        return
    try:
        host, port = url.hostname, url.port
    except ValueError:
        host, port = None, None
    if not host or port is None:
        raise ConfigError(f"Expected {where} as tcp://HOST:PORT. Got no host or port in it.")
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(
            f"Expected a Dask scheduler at {address}. Got {exc.strerror or type(exc).__name__} within "
            f"{timeout_s:g} s; start one (`dask scheduler`), check the address, or drop --scheduler to run a "
            "local cluster."
        ) from None


def _start(plan: ClusterPlan, *, processes: bool) -> Any:
    """Start the local cluster ``plan`` describes (``kind`` cuda or local)."""
    if plan.kind == "cuda":
        from dask_cuda import LocalCUDACluster

        cluster = LocalCUDACluster(
            n_workers=plan.n_workers, threads_per_worker=1, memory_limit=plan.memory_limit,
            CUDA_VISIBLE_DEVICES=",".join(plan.devices), dashboard_address=plan.dashboard_address,
        )
        log.info("started LocalCUDACluster: %d GPU worker(s) on CUDA device(s) %s", plan.n_workers,
                 ",".join(plan.devices))
        return cluster
    from distributed import LocalCluster

    extra: dict[str, Any] = {"env": {"CUDA_VISIBLE_DEVICES": ""}} if plan.hide_gpus and processes else {}
    if not processes:  # in-process workers over tcp on loopback (inproc workers serve HTTP on every interface)
        extra.update(protocol="tcp://")
    cluster = LocalCluster(
        n_workers=plan.n_workers, threads_per_worker=plan.threads_per_worker, memory_limit=plan.memory_limit,
        processes=processes, dashboard_address=plan.dashboard_address, host=LOOPBACK_HOST, **extra,
    )
    log.info("started LocalCluster: %d worker(s) × %d thread(s)", plan.n_workers, plan.threads_per_worker)
    return cluster


def _has_dashboard(client: Any, *, started: bool, plan: ClusterPlan) -> bool:
    """Whether the scheduler serves a dashboard: a local cluster's as planned, an existing scheduler's as it
    reports (one started with ``--no-dashboard`` has none, although the client still makes up a link)."""
    if started:
        return plan.dashboard_address is not None
    try:
        return "dashboard" in client.scheduler_info().get("services", {})
    except Exception:  # an old scheduler without the info: say nothing rather than guess
        return False


@contextlib.contextmanager
def get_client(cfg: ClusterConfig | None = None, *, processes: bool = True) -> Iterator[Any]:
    """Yield a ``distributed.Client`` for the plan of :func:`plan_cluster`; close what was started.

    ``cfg`` is the campaign's ``cluster`` section (default: :class:`ClusterConfig`'s defaults); CLI flags
    and callers build a new section with ``dataclasses.replace``. ``processes=False`` runs local workers
    as threads of this process (tests). The dashboard link is logged (INFO).
    """
    from distributed import Client

    plan = plan_cluster(cfg if cfg is not None else ClusterConfig())
    if plan.kind == "address" and plan.address:
        check_scheduler(plan.address)
    cluster: Any = None if plan.kind == "address" else _start(plan, processes=processes)
    try:
        client = Client(plan.address if cluster is None else cluster, timeout=SCHEDULER_TIMEOUT_S)
        try:
            if cluster is None:
                log.info("connected to Dask scheduler %s", plan.address)
            elif processes and not log.isEnabledFor(logging.DEBUG):
                from semscale.runtime.worker_plugins import QuietFailures

                client.register_plugin(QuietFailures(), name="semscale-quiet-failures")
            if _has_dashboard(client, started=cluster is not None, plan=plan):
                log.info("Dask dashboard: %s", client.dashboard_link)
            yield client
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()
