"""semscale.runtime.backend: device detection honours CUDA_VISIBLE_DEVICES, numpy/cupy pick, lazy probes."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

import semscale.runtime.backend as sb
from semscale.errors import DependencyError


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), ("", []), ("0", ["0"]), ("2, 3", ["2", "3"]), ("1,-1,2", ["1"]), ("-1", []),
    ("GPU-5f0a,MIG-1", ["GPU-5f0a", "MIG-1"]),
])
def test_visible_devices(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    assert sb.visible_devices() == expected


def test_detect_gpus(monkeypatch, tmp_path):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: Fake (UUID: a)'\necho 'GPU 1: Fake (UUID: b)'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert sb.detect_gpus() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert sb.detect_gpus() == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert sb.detect_gpus() == 0
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert sb.detect_gpus() == 0


def test_detect_gpus_does_not_change_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    sb.detect_gpus()
    import os

    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"


def test_optional_packages_fall_back_when_absent(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert sb.dask_cuda_available() is False
    assert sb.cupy_available() is False
    assert sb.array_module() is np
    monkeypatch.setitem(sys.modules, "dask_cuda", types.ModuleType("dask_cuda"))
    assert sb.dask_cuda_available() is True


def test_cupy_without_device_is_unavailable(monkeypatch):
    def no_device() -> int:
        raise RuntimeError("cudaErrorNoDevice")

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_device))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert sb.cupy_available() is False
    assert sb.array_module() is np


def test_array_module_cpu_and_mocked_gpu(monkeypatch):
    monkeypatch.setattr(sb, "cupy_available", lambda: False)
    assert sb.array_module() is np
    assert sb.array_module(gpu="off") is np
    with pytest.raises(DependencyError, match="cupy"):
        sb.array_module(gpu="on")
    fake = types.ModuleType("cupy")
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(sb, "cupy_available", lambda: True)
    assert sb.array_module() is fake
    assert sb.array_module(gpu="on") is fake
    assert sb.array_module(gpu="off") is np
    monkeypatch.setenv("SEMSCALE_ARRAY_MODULE", "numpy")
    assert sb.array_module() is np


@pytest.mark.gpu
def test_predict_region_on_cupy_matches_numpy():
    cupy = pytest.importorskip("cupy")
    if not sb.cupy_available():
        pytest.skip("no CUDA device")
    from semscale.config import InferenceConfig
    from semscale.inference import input_extent, make_geometry, predict_region
    from semscale.inference.members import ModelFacts

    def net(x):
        z = np.concatenate([x, 1 - x, 0.5 * x], -1)
        return (z / z.sum(-1, keepdims=True)).astype(np.float32)

    geom = make_geometry(InferenceConfig(mode="gaussian", patch_size=16, stride=8),
                         ModelFacts(n_classes=3, classes=None, multiple=1, halo_px=0, patch_size=None))
    core = ((0, 40), (0, 33))
    (lo0, hi0), (lo1, hi1) = input_extent(0, 40, geom), input_extent(0, 33, geom)
    x = np.random.default_rng(0).random((hi0 - lo0, hi1 - lo1)).astype(np.float32) + 0.1
    a = predict_region(x, origin=(lo0, lo1), core=core, predict_fns=[net], geom=geom, xp=np)
    b = predict_region(x, origin=(lo0, lo1), core=core, predict_fns=[net], geom=geom, xp=cupy)
    np.testing.assert_allclose(cupy.asnumpy(b), a, atol=1e-6)
