"""The writer lock: one writer per store, named when refused, stale locks of dead processes cleared."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from semscale.errors import StoreError
from semscale.store import paths
from semscale.store.lock import Holder, break_lock, lock_holder, writer_lock

HOLD = """
import sys, time
from semscale.store.lock import writer_lock
with writer_lock(sys.argv[1], command="predict"):
    print("held", flush=True)
    time.sleep(600)
"""


def _hold_in_other_process(store: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(store)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _write_lock(store: Path, **fields: object) -> None:
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "command": "x", "started": "t"} | fields
    (store / paths.LOCK).write_text(json.dumps(holder))


def test_lock_is_held_reentrant_and_released_on_error(tmp_path: Path) -> None:
    lock = tmp_path / paths.LOCK
    with writer_lock(tmp_path, command="run"):
        holder = lock_holder(tmp_path)
        assert holder is not None and holder.is_me() and holder.command.startswith("run (")
        with writer_lock(tmp_path, command="predict"):  # run's stages take it again
            assert lock_holder(tmp_path) == holder
        assert lock.exists()  # still held by the outer block
    assert not lock.exists()
    with pytest.raises(RuntimeError), writer_lock(tmp_path, command="train"):
        raise RuntimeError("boom")
    assert not lock.exists()


def test_second_writer_is_refused_naming_the_holder_then_a_killed_holder_is_cleared(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    proc = _hold_in_other_process(tmp_path)
    try:
        with pytest.raises(StoreError) as err, writer_lock(tmp_path, command="predict"):
            pass
        msg = str(err.value)
        assert f"pid {proc.pid} on host {socket.gethostname()}" in msg and "`predict (" in msg
        assert "--break-lock" in msg
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert lock_holder(tmp_path) is not None  # a killed run leaves its lock behind
    with caplog.at_level(logging.WARNING, logger="semscale"), writer_lock(tmp_path, command="predict"):
        assert lock_holder(tmp_path).is_me()  # type: ignore[union-attr]
    assert f"stale writer lock of {tmp_path}" in caplog.text and f"pid {proc.pid}" in caplog.text
    assert lock_holder(tmp_path) is None


def test_a_holder_on_another_host_is_refused_until_the_lock_is_broken(tmp_path: Path) -> None:
    _write_lock(tmp_path, host="node17", pid=4242, command="train (semscale train c.yaml)")
    with pytest.raises(StoreError, match=r"`train \(semscale train c\.yaml\)`, pid 4242 on host node17"), \
            writer_lock(tmp_path, command="predict"):
        pass
    assert break_lock(tmp_path) == Holder(host="node17", pid=4242, command="train (semscale train c.yaml)",
                                          started="t")
    assert break_lock(tmp_path) is None
    with writer_lock(tmp_path, command="predict"):
        pass


def test_unreadable_lock_file_is_named(tmp_path: Path) -> None:
    (tmp_path / paths.LOCK).write_text("{half")
    with pytest.raises(StoreError, match="unreadable lock file"), writer_lock(tmp_path, command="stats"):
        pass


def test_two_processes_racing_get_exactly_one_lock(tmp_path: Path) -> None:
    """Start two holders at once: one holds, the other is refused (O_EXCL), never both."""
    code = ("import sys, time\nfrom semscale.store.lock import writer_lock\n"
            "try:\n    with writer_lock(sys.argv[1], command='x'):\n        print('held', flush=True); time.sleep(60)\n"
            "except Exception as e:\n    print('refused', flush=True)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    t0 = time.monotonic()
    outcomes = sorted(p.stdout.readline().strip() for p in procs if p.stdout is not None)
    for p in procs:
        p.kill()
        p.wait()
    assert outcomes == ["held", "refused"], (outcomes, time.monotonic() - t0)


def test_a_writer_killed_while_taking_the_lock_leaves_none(tmp_path: Path) -> None:
    """The lock file appears whole or not at all: a process SIGKILLed halfway through writing what it would
    hold leaves no lock (nothing unreadable that only `--break-lock` could clear), and the next writer takes it."""
    code = ("import pathlib, sys, time\n"
            "def half(self, data):\n"
            "    with open(self, 'wb') as f:\n"
            "        f.write(data[:len(data) // 2]); f.flush()\n"
            "    print('half', flush=True); time.sleep(60)\n"
            "pathlib.Path.write_bytes = half\n"
            "from semscale.store.lock import writer_lock\n"
            "with writer_lock(sys.argv[1], command='x'):\n    pass\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "half"
    finally:
        proc.kill()
        proc.wait()
    assert lock_holder(tmp_path) is None
    with writer_lock(tmp_path, command="predict"):
        assert lock_holder(tmp_path).is_me()  # type: ignore[union-attr]
