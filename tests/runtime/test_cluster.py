"""semscale.runtime.cluster: the plan (GPU presence mocked), real local clients, the dashboard's address."""

from __future__ import annotations

import logging
import sys
import types
from typing import Any

import psutil
import pytest

import semscale.runtime.backend as backend
import semscale.runtime.cluster as sc
from semscale.config import ClusterConfig
from semscale.errors import ConfigError, DependencyError
from tests.loopback import local_cluster

LOOPBACK = "127.0.0.1:0"


def test_plan_address_wins():
    plan = sc.plan_cluster(ClusterConfig(address="tcp://10.0.0.1:8786"), n_gpus=4, has_dask_cuda=True)
    assert plan == sc.ClusterPlan(kind="address", address="tcp://10.0.0.1:8786")


def test_plan_cuda_one_worker_per_gpu(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    plan = sc.plan_cluster(ClusterConfig(), n_gpus=2, has_dask_cuda=True)
    assert plan.kind == "cuda" and plan.n_workers == 2 and plan.threads_per_worker == 1
    assert plan.devices == ("0", "1")
    assert sc.plan_cluster(ClusterConfig(n_workers=3), n_gpus=4, has_dask_cuda=True).n_workers == 3
    assert sc.plan_cluster(ClusterConfig(gpu="on"), n_gpus=1, has_dask_cuda=True).kind == "cuda"


def test_plan_respects_cuda_visible_devices(monkeypatch):
    """The user's device choice is kept (and its order), never replaced by 0..n-1."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    plan = sc.plan_cluster(ClusterConfig(), n_gpus=2, has_dask_cuda=True)
    assert plan.devices == ("3", "1") and plan.n_workers == 2
    assert sc.plan_cluster(ClusterConfig(n_workers=1), n_gpus=2, has_dask_cuda=True).devices == ("3",)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-5f0a,GPU-77b2")
    assert sc.plan_cluster(ClusterConfig(), n_gpus=2, has_dask_cuda=True).devices == ("GPU-5f0a", "GPU-77b2")


def test_plan_falls_back_to_local(caplog):
    with caplog.at_level(logging.WARNING, logger="semscale.runtime.cluster"):
        plan = sc.plan_cluster(ClusterConfig(), n_gpus=2, has_dask_cuda=False, cpu_count=16)
    assert plan.kind == "local" and plan.n_workers == 4 and plan.threads_per_worker == 1
    assert "dask-cuda is not installed" in caplog.text
    assert sc.plan_cluster(ClusterConfig(), n_gpus=0, has_dask_cuda=True, cpu_count=2).n_workers == 1
    off = sc.plan_cluster(ClusterConfig(gpu="off"), n_gpus=2, has_dask_cuda=True)
    assert off.kind == "local" and off.hide_gpus
    assert not sc.plan_cluster(ClusterConfig(), n_gpus=0, has_dask_cuda=False).hide_gpus
    plan = sc.plan_cluster(ClusterConfig(n_workers=3, threads_per_worker=2), n_gpus=0, has_dask_cuda=False)
    assert (plan.n_workers, plan.threads_per_worker) == (3, 2)
    assert plan.dashboard_address == ClusterConfig.dashboard_address == "127.0.0.1:8787"


def test_plan_errors():
    with pytest.raises(DependencyError, match="Expected a CUDA GPU"):
        sc.plan_cluster(ClusterConfig(gpu="on"), n_gpus=0, has_dask_cuda=True)
    with pytest.raises(DependencyError, match="pip install"):
        sc.plan_cluster(ClusterConfig(gpu="on"), n_gpus=1, has_dask_cuda=False)
    with pytest.raises(ConfigError, match="cluster.gpu"):
        ClusterConfig(gpu="yes")  # type: ignore[arg-type]


def test_get_client_uses_plan(monkeypatch):
    """Mocked GPUs without dask-cuda still start a CPU LocalCluster, for real."""
    monkeypatch.setattr(backend, "detect_gpus", lambda: 2)
    monkeypatch.setattr(backend, "dask_cuda_available", lambda: False)
    with sc.get_client(ClusterConfig(n_workers=2, dashboard_address=LOOPBACK), processes=False) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        assert client.submit(lambda x: x + 1, 41).result() == 42
    assert client.status == "closed"


def _listening(port: int) -> set[str]:
    return {c.laddr.ip for c in psutil.Process().net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def test_dashboard_on_loopback_and_gpu_off_workers(monkeypatch, caplog):
    """Worker processes, as the CLI starts them: the dashboard listens only on the address the log prints,
    and `gpu: off` workers start with CUDA_VISIBLE_DEVICES empty while the client process keeps its own."""
    import os
    from urllib.parse import urlparse

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    cfg = ClusterConfig(n_workers=1, gpu="off", dashboard_address=LOOPBACK)
    with caplog.at_level(logging.INFO, logger="semscale.runtime.cluster"), sc.get_client(cfg) as client:
        link = urlparse(client.dashboard_link)
        assert link.hostname == "127.0.0.1" and link.port
        assert _listening(link.port) == {"127.0.0.1"}
        seen = client.submit(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"), pure=False).result()
    assert client.dashboard_link in caplog.text
    assert seen == ""
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"


def test_in_process_cluster_serves_on_loopback_only():
    """Every server of a cluster get_client starts (scheduler, workers, dashboard) listens on 127.0.0.1."""
    with sc.get_client(ClusterConfig(n_workers=2, dashboard_address=LOOPBACK), processes=False) as client:
        assert client.submit(sum, [1, 2]).result() == 3
        listening = {c.laddr.ip for c in psutil.Process().net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN}
    assert listening == {"127.0.0.1"}


def test_dashboard_on_every_interface_only_when_asked():
    assert sc.plan_cluster(ClusterConfig(dashboard_address=":8787")).dashboard_address == ":8787"
    assert sc.plan_cluster(ClusterConfig()).dashboard_address == "127.0.0.1:8787"


def test_get_client_passes_devices_to_local_cuda_cluster(monkeypatch):
    """GPUs and dask-cuda mocked: LocalCUDACluster gets the user's devices and the loopback dashboard."""
    from distributed import LocalCluster

    calls: list[dict[str, Any]] = []

    def fake_cuda_cluster(**kwargs: Any) -> LocalCluster:
        calls.append(kwargs)
        return local_cluster(n_workers=kwargs["n_workers"], threads_per_worker=1, processes=False,
                             dashboard_address=kwargs["dashboard_address"])

    monkeypatch.setitem(sys.modules, "dask_cuda", types.SimpleNamespace(LocalCUDACluster=fake_cuda_cluster))
    monkeypatch.setattr(backend, "detect_gpus", lambda: 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    with sc.get_client(ClusterConfig(dashboard_address=LOOPBACK)) as client:
        assert client.submit(sum, [1, 2]).result() == 3
    assert calls == [{"n_workers": 1, "threads_per_worker": 1, "memory_limit": "auto",
                      "CUDA_VISIBLE_DEVICES": "2", "dashboard_address": LOOPBACK}]


def test_get_client_connects_to_address(caplog):

    with local_cluster(n_workers=1, threads_per_worker=1, processes=False) as cluster:
        with caplog.at_level(logging.INFO, logger="semscale.runtime.cluster"), \
                sc.get_client(ClusterConfig(address=cluster.scheduler_address)) as c:
            assert c.submit(sum, [1, 2]).result() == 3
        assert cluster.scheduler_address in caplog.text
        assert cluster.status.name == "running"  # not closed by get_client: it did not start it
