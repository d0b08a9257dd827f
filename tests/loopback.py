"""Real distributed clusters for tests, every server on loopback (127.0.0.1) only."""

from __future__ import annotations

from typing import Any

LOOPBACK = "127.0.0.1"


def local_cluster(*, processes: bool, **kwargs: Any) -> Any:
    """A ``distributed.LocalCluster`` whose scheduler, workers and dashboard listen on 127.0.0.1 only.

    In-process workers use tcp on loopback: with the default inproc transport their HTTP servers listen on
    every interface."""
    from distributed import LocalCluster

    kwargs.setdefault("dashboard_address", f"{LOOPBACK}:0")
    if not processes:
        kwargs.setdefault("protocol", "tcp://")
    return LocalCluster(processes=processes, host=LOOPBACK, **kwargs)
