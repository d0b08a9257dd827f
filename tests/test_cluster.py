"""semscale.runtime.cluster: the cluster decision logic (GPU detection mocked), real local clients, array module."""

from __future__ import annotations

import logging
import sys
import types

import numpy as np
import pytest

import semscale.runtime.cluster as sc
from semscale.errors import ConfigError, DependencyError


def test_plan_address_wins():
    plan = sc.plan_cluster("tcp://10.0.0.1:8786", n_gpus=4, has_dask_cuda=True)
    assert plan == {"kind": "address", "address": "tcp://10.0.0.1:8786"}


def test_plan_cuda_one_worker_per_gpu():
    plan = sc.plan_cluster(n_gpus=2, has_dask_cuda=True)
    assert plan["kind"] == "cuda" and plan["n_workers"] == 2 and plan["threads_per_worker"] == 1
    assert plan["CUDA_VISIBLE_DEVICES"] == [0, 1]
    assert sc.plan_cluster(n_gpus=4, has_dask_cuda=True, n_workers=3)["n_workers"] == 3


def test_plan_falls_back_to_local(caplog):
    with caplog.at_level(logging.WARNING, logger="semscale.runtime.cluster"):
        plan = sc.plan_cluster(n_gpus=2, has_dask_cuda=False, cpu_count=16)
    assert plan["kind"] == "local" and plan["n_workers"] == 4 and plan["threads_per_worker"] == 1
    assert "dask-cuda is not installed" in caplog.text
    assert sc.plan_cluster(n_gpus=0, has_dask_cuda=True, cpu_count=2)["n_workers"] == 1
    assert sc.plan_cluster(gpu=False, n_gpus=2, has_dask_cuda=True)["kind"] == "local"
    plan = sc.plan_cluster(n_gpus=0, has_dask_cuda=False, n_workers=3, threads_per_worker=2)
    assert (plan["n_workers"], plan["threads_per_worker"]) == (3, 2)


def test_plan_errors():
    with pytest.raises(DependencyError, match="Expected a CUDA GPU"):
        sc.plan_cluster(gpu=True, n_gpus=0, has_dask_cuda=True)
    with pytest.raises(DependencyError, match="pip install"):
        sc.plan_cluster(gpu=True, n_gpus=1, has_dask_cuda=False)
    with pytest.raises(ConfigError, match="cluster.gpu"):
        sc.plan_cluster(gpu="yes", n_gpus=0, has_dask_cuda=False)  # type: ignore[arg-type]


def test_detect_gpus(monkeypatch, tmp_path):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: Fake (UUID: a)'\necho 'GPU 1: Fake (UUID: b)'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert sc.detect_gpus() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert sc.detect_gpus() == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert sc.detect_gpus() == 0
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert sc.detect_gpus() == 0


def test_get_client_uses_plan(monkeypatch):
    """Mocked GPUs without dask-cuda still start a CPU LocalCluster, for real."""
    monkeypatch.setattr(sc, "detect_gpus", lambda: 2)
    monkeypatch.setattr(sc, "dask_cuda_available", lambda: False)
    with sc.get_client(n_workers=2, processes=False, dashboard=False) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        assert client.submit(lambda x: x + 1, 41).result() == 42
    assert client.status == "closed"


def test_get_client_connects_to_address(caplog):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        with caplog.at_level(logging.INFO, logger="semscale.runtime.cluster"), sc.get_client(cluster.scheduler_address) as c:
            assert c.submit(sum, [1, 2]).result() == 3
        assert cluster.scheduler_address in caplog.text
        assert cluster.status.name == "running"  # not closed by get_client: it did not start it


def test_array_module_cpu_and_mocked_gpu(monkeypatch):
    monkeypatch.setattr(sc, "cupy_available", lambda: False)
    assert sc.array_module() is np
    with pytest.raises(DependencyError, match="cupy"):
        sc.array_module(gpu=True)
    fake = types.ModuleType("cupy")
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(sc, "cupy_available", lambda: True)
    assert sc.array_module() is fake
    assert sc.array_module(gpu=False) is np
    monkeypatch.setenv("SEMSCALE_ARRAY_MODULE", "numpy")
    assert sc.array_module() is np


@pytest.mark.gpu
def test_predict_region_on_cupy_matches_numpy():
    cupy = pytest.importorskip("cupy")
    if not sc.cupy_available():
        pytest.skip("no CUDA device")
    from semscale.inference import input_extent, make_geometry, predict_region

    def net(x):
        z = np.concatenate([x, 1 - x, 0.5 * x], -1)
        return (z / z.sum(-1, keepdims=True)).astype(np.float32)

    geom = make_geometry("gaussian", patch_size=16, stride=8, multiple=1)
    core = ((0, 40), (0, 33))
    (lo0, hi0), (lo1, hi1) = input_extent(0, 40, geom), input_extent(0, 33, geom)
    x = np.random.default_rng(0).random((hi0 - lo0, hi1 - lo1)).astype(np.float32) + 0.1
    a = predict_region(x, origin=(lo0, lo1), core=core, predict_fns=[net], geom=geom, xp=np)
    b = predict_region(x, origin=(lo0, lo1), core=core, predict_fns=[net], geom=geom, xp=cupy)
    np.testing.assert_allclose(cupy.asnumpy(b), a, atol=1e-6)
