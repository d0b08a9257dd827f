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


class WorkerKiller:
    """Watches from a thread and SIGKILLs one worker process of ``client`` as soon as ``ready()`` is true
    (e.g. some blocks of a stage are done and others not); ``killed`` is the pid it killed, or None."""

    def __init__(self, client: Any, ready: Any, *, timeout_s: float = 300.0) -> None:
        import os
        import threading

        self.pids = sorted(client.run(os.getpid).values())
        self.ready, self.timeout_s = ready, timeout_s
        self.killed: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        import os
        import signal
        import time

        deadline = time.monotonic() + self.timeout_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                ready = self.ready()
            except Exception:  # the store is being written: look again
                ready = False
            if ready:
                os.kill(self.pids[0], signal.SIGKILL)
                self.killed = self.pids[0]
                return
            time.sleep(0.005)

    def __enter__(self) -> WorkerKiller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
