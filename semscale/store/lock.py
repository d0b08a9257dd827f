"""One writer per store: a lock file that every writing stage holds while it runs.

The lock is a small JSON file at the store's root (:data:`semscale.store.paths.LOCK`) holding who writes:
host, pid, command and start time (UTC). It is created exclusively and whole (a hard link of a written
temporary file in a folder, a conditional PUT with ``If-None-Match: *`` on S3;
:func:`semscale.store.location.create_exclusive`), so of two runs that start together exactly one gets it, and
a run killed while taking it leaves either no lock or one naming it; the other is refused with a :class:`~semscale.errors.StoreError` naming the
holder. Within one process the lock is re-entrant (``run`` holds it and its stages take it again), and it
is removed when the outermost holder leaves, on success and on error alike.

A run that was killed leaves its lock behind. When the holder ran on this host and its pid is no longer
running, the lock is stale for certain: it is cleared with a warning and taken. A holder on another host
cannot be checked from here; the message says so, and ``--break-lock`` (:func:`break_lock`) clears it.

Worker processes of a Dask cluster write blocks for the run that holds the lock; they never take it.

On object storage the lock is as strong as the store's conditional write: AWS S3 and S3-compatible servers
that honour ``If-None-Match`` (MinIO, moto, Ceph) refuse a second writer exactly as a folder does; a store
without conditional writes would let two starts race, so run one writer per store there. Done markers need
no such support: each is a single object written last (after every chunk it covers), and object PUTs are
atomic, so a marker is either absent or whole.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import shlex
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from semscale.errors import StoreError
from semscale.store import paths
from semscale.store.location import StorePath, create_exclusive, store_path

log = logging.getLogger(__name__)

__all__ = ["Holder", "break_lock", "lock_holder", "writer_lock"]

_DEPTH: dict[str, int] = {}
"""Lock file → how many times this process holds it (re-entrant)."""
_DEPTH_LOCK = threading.Lock()


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a store's writer lock."""

    host: str
    pid: int
    command: str
    started: str
    """ISO 8601, UTC."""

    @classmethod
    def me(cls, command: str) -> Holder:
        argv = shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "python"
        return cls(host=socket.gethostname(), pid=os.getpid(), command=f"{command} ({argv})",
                   started=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    def describe(self) -> str:
        return f"`{self.command}`, pid {self.pid} on host {self.host}, since {self.started}"

    def is_me(self) -> bool:
        return self.host == socket.gethostname() and self.pid == os.getpid()

    def is_dead(self) -> bool:
        """True only when the holder ran on this host and its pid no longer exists."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # a live process of another user
            return False
        return False


def _lock_path(store: str | StorePath) -> StorePath:
    return store_path(store) / paths.LOCK


def lock_holder(store: str | StorePath) -> Holder | None:
    """The holder recorded in the store's lock file, or ``None`` when the store is not locked."""
    path = _lock_path(store)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Holder(host=str(data["host"]), pid=int(data["pid"]), command=str(data["command"]),
                      started=str(data["started"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):  # half-written or foreign content: treat as held by nobody known
        return Holder(host="?", pid=-1, command=f"unreadable lock file {path}", started="?")


def break_lock(store: str | StorePath) -> Holder | None:
    """Remove the store's writer lock, whoever holds it; returns the holder it recorded (``None``: unlocked).

    Only for a lock whose holder is known to be gone (a killed job on another node): a live writer whose lock
    is broken goes on writing next to the new one."""
    holder = lock_holder(store)
    if holder is not None:
        _lock_path(store).unlink(missing_ok=True)
        log.warning("removed the writer lock of %s held by %s", store, holder.describe())
    return holder


def _create(path: StorePath, holder: Holder) -> bool:
    try:
        return create_exclusive(path, json.dumps(asdict(holder)).encode())
    except OSError as exc:
        raise StoreError(
            f"Expected to write the writer lock {path}. Got {exc.strerror or exc}; a read-only store can be "
            "read (`info`, `models`, `evaluate`, `stats --json`) but not written."
        ) from None


def _acquire(path: StorePath, command: str) -> None:
    holder = Holder.me(command)
    for _ in range(2):  # the second try follows the removal of a stale lock
        if _create(path, holder):
            return
        other = lock_holder(path.parent)
        if other is None:  # released between our two calls
            continue
        if other.is_me():  # a lock this process left (its depth count was lost): take it over
            return
        if other.is_dead():
            log.warning("clearing a stale writer lock of %s: %s is no longer running", path.parent,
                        other.describe())
            path.unlink(missing_ok=True)
            continue
        raise StoreError(
            f"Expected no other writer on store {path.parent}. Got one: {other.describe()}. Wait for it to "
            "finish; if it is gone (killed on another node), rerun with --break-lock."
        )
    raise StoreError(f"Expected to take the writer lock {path}. Got it taken again at once; rerun.")


@contextlib.contextmanager
def writer_lock(store: str | StorePath, *, command: str) -> Iterator[None]:
    """Hold the store's writer lock for the ``with`` block (``command``: what writes, for the message)."""
    path = _lock_path(store)
    key = str(path)
    with _DEPTH_LOCK:
        depth = _DEPTH.get(key, 0)
        if depth == 0:
            _acquire(path, command)
        _DEPTH[key] = depth + 1
    try:
        yield
    finally:
        with _DEPTH_LOCK:
            _DEPTH[key] -= 1
            if _DEPTH[key] == 0:
                del _DEPTH[key]
                holder = lock_holder(path.parent)
                if holder is not None and holder.is_me():
                    path.unlink(missing_ok=True)
