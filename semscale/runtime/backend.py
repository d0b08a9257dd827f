"""What this process computes on: the visible CUDA devices, the optional GPU packages, numpy or cupy.

Nothing here imports cupy or dask-cuda at module import; each probe imports lazily and answers "absent"
when the package or a device is missing, so every caller has a CPU fall-back. ``CUDA_VISIBLE_DEVICES`` is
read, never written: a user's choice of devices is honoured by :func:`detect_gpus` and
:func:`visible_devices` (and so by the cluster plan built from them).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import numpy as np

from semscale.config import Switch
from semscale.errors import DependencyError

__all__ = ["array_module", "cupy_available", "dask_cuda_available", "describe_hardware", "detect_gpus",
           "visible_devices"]


def visible_devices() -> list[str] | None:
    """The device ids in ``CUDA_VISIBLE_DEVICES`` (indices or ``GPU-``/``MIG-`` UUIDs); None when unset.

    As CUDA does, the list ends at the first ``-1`` (an empty list hides every device).
    """
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    ids: list[str] = []
    for item in (v.strip() for v in value.split(",")):
        if not item or item == "-1":
            break
        ids.append(item)
    return ids


def detect_gpus() -> int:
    """Number of CUDA GPUs visible to this process (``CUDA_VISIBLE_DEVICES`` honoured; 0 when none)."""
    ids = visible_devices()
    if ids is not None and not ids:
        return 0
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
    """dask-cuda importable (``pip install 'semscale[gpu]'``)."""
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
    except Exception:  # cupy raises its own CUDA errors (no driver, no device)
        return False


def array_module(*, gpu: Switch = "auto") -> ModuleType:
    """``cupy`` on a GPU worker (cupy importable and a device visible), else ``numpy``.

    ``gpu="off"`` or ``SEMSCALE_ARRAY_MODULE=numpy`` forces numpy; ``gpu="on"`` without cupy raises
    :class:`~semscale.errors.DependencyError` with the fix.
    """
    if gpu == "off" or os.environ.get("SEMSCALE_ARRAY_MODULE", "").lower() == "numpy":
        return np
    if cupy_available():
        import cupy

        return cupy
    if gpu == "on":
        raise DependencyError(
            "Expected cupy and a CUDA device for `gpu: on`. Got none; install with "
            "`pip install 'semscale[gpu]'` (cupy-cuda12x) or use `gpu: off`."
        )
    return np


def describe_hardware() -> str:
    """This machine in words, for timing tables: CPU model and cores, and the visible GPUs (nvidia-smi)."""
    import platform

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    text = f"{cpu}, {os.cpu_count()} logical cores"
    if shutil.which("nvidia-smi"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            names = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                   text=True, timeout=10, check=True).stdout.split("\n")
            gpus = [n.strip() for n in names if n.strip()]
            if gpus:
                text += ", GPU " + ", ".join(gpus)
    return text
