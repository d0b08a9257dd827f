"""Progress bars and logging, all on stderr, so stdout carries only a command's result.

``progress(iterable, ...)`` wraps a loop in a rich progress bar when stderr is a terminal (or when forced
with ``SEMSCALE_PROGRESS=1``); otherwise it logs a line now and then with the share done and the time
left (the measured rate × what remains, :class:`EtaLog`), so batch logs stay short but long work is never
silent. ``dask_progress`` follows a local Dask computation the same way. :func:`setup_logging` configures the ``semscale`` logger
for the CLI and, unless verbose, quiets third-party start-up chatter: it must run before TensorFlow or
``distributed`` are imported, because both read their log settings at import (worker processes inherit
them through the environment). :func:`filter_native_stderr` drops the absl-formatted lines TensorFlow's
C++ core writes before its logging is initialised, which no setting hides.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO, TypeVar

T = TypeVar("T")

__all__ = ["EtaLog", "console", "dask_progress", "format_duration", "filter_native_stderr", "progress", "progress_enabled",
           "quiet_third_party", "setup_logging"]

QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # TensorFlow/XLA C++ INFO, WARNING and ERROR lines after log init
    "DASK_LOGGING__DISTRIBUTED": "warning",  # distributed reads it at import, in workers too
}
"""Environment set (unless already set) by :func:`quiet_third_party`."""

QUIET_LOGGERS = {"distributed": logging.WARNING, "tornado": logging.CRITICAL, "bokeh": logging.ERROR,
                 "tensorflow": logging.ERROR, "absl": logging.ERROR, "jax": logging.WARNING}
"""Python loggers of third-party packages and the level :func:`quiet_third_party` gives them."""

NATIVE_NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w./-]+:\d+\] .*)$"
)
"""Lines dropped by :func:`filter_native_stderr`: absl's banner and its INFO/WARNING records."""


def progress_enabled() -> bool:
    env = os.environ.get("SEMSCALE_PROGRESS")
    if env is not None:
        return env not in ("0", "false", "no", "")
    return sys.stderr.isatty()


def console() -> Any:
    """A rich console on (the current) ``sys.stderr``: logs and progress bars share it."""
    from rich.console import Console

    return Console(stderr=True)


def _make_progress() -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
        console=console(),
    )


def format_duration(seconds: float) -> str:
    """``42 s``, ``12.5 min``, ``3.2 h`` or ``4.1 days``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


class EtaLog:
    """Logs ``description: k/total done, ~T left`` (the mean time per item so far × the items left): first
    after ``first_s`` seconds, then at most every ``every_s`` seconds, and not for work done by then."""

    def __init__(self, description: str, total: int | None, *, first_s: float = 10.0, every_s: float = 60.0,
                 clock: Any = time.monotonic) -> None:
        self.description, self.total, self.first_s, self.every_s, self.clock = (
            description, total, first_s, every_s, clock)
        self.t0 = self.last = clock()
        self.done = 0
        self.logged = False

    def advance(self, n: int = 1) -> str | None:
        """Count ``n`` more items done; returns the line logged, if any."""
        self.done += n
        now = self.clock()
        if not self.total or self.done >= self.total:
            return None
        wait = self.every_s if self.logged else self.first_s
        if now - (self.last if self.logged else self.t0) < wait:
            return None
        left = (now - self.t0) / self.done * (self.total - self.done)
        line = f"{self.description}: {self.done}/{self.total} done, about {format_duration(left)} left"
        logging.getLogger("semscale.progress").info("%s", line)
        self.last, self.logged = now, True
        return line


def progress(
    iterable: Iterable[T], *, total: int | None = None, description: str = "working"
) -> Iterator[T]:
    """Iterate with a progress bar (rich, on stderr) when enabled; otherwise with :class:`EtaLog` lines."""
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    if not progress_enabled():
        eta = EtaLog(description, total)
        for item in iterable:
            yield item
            eta.advance()
        return
    with _make_progress() as bar:
        task = bar.add_task(description, total=total)
        for item in iterable:
            yield item
            bar.advance(task)


@contextlib.contextmanager
def dask_progress(description: str = "computing") -> Iterator[None]:
    """Context manager showing a progress bar (stderr) for local (non-distributed) dask computations (when
    progress bars are off: :class:`EtaLog` lines per finished task)."""
    from dask.callbacks import Callback

    if not progress_enabled():
        class _Eta(Callback):
            def _start_state(self, dsk: Any, state: Any) -> None:
                self._eta = EtaLog(description, len(state["ready"]) + len(state["waiting"]))

            def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
                self._eta.advance()

        with _Eta():
            yield
        return
    bar = _make_progress()

    class _Cb(Callback):
        def _start_state(self, dsk: Any, state: Any) -> None:
            self._task = bar.add_task(description, total=len(state["ready"]) + len(state["waiting"]))

        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            bar.advance(self._task)

    with bar, _Cb():
        yield


def quiet_third_party(verbose: int = 0) -> None:
    """Hide TensorFlow/CUDA and ``distributed`` start-up chatter unless ``verbose`` (user settings win)."""
    if verbose > 0:
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (as logging's last-resort handler)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def setup_logging(verbose: int = 0) -> None:
    """Configure semscale's logger for the CLI (INFO by default, DEBUG with -v), on stderr.

    A terminal gets rich's layout; a file or pipe gets plain ``LEVEL message`` lines, never wrapped.
    """
    quiet_third_party(verbose)
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(console=console(), show_path=False, show_time=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)-7s %(message)s"))
    log = logging.getLogger("semscale")
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose > 0 else logging.INFO)
    log.propagate = False


def _pump(read_fd: int, write_fd: int) -> None:
    """Copy lines from ``read_fd`` to ``write_fd`` until end of file, dropping :data:`NATIVE_NOISE`."""
    pending = b""
    while chunk := os.read(read_fd, 65536):
        *lines, pending = (pending + chunk).split(b"\n")
        _write_all(write_fd, b"".join(line + b"\n" for line in lines if not NATIVE_NOISE.match(line)))
    if not NATIVE_NOISE.match(pending):
        _write_all(write_fd, pending)
    os.close(read_fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


@contextlib.contextmanager
def filter_native_stderr() -> Iterator[None]:
    """Route file descriptor 2 (C/C++ code, child processes) through a filter dropping absl noise.

    Python's ``sys.stderr`` keeps writing straight to the original stream (so progress bars stay live);
    lines from native code and from worker processes started inside the block pass through a pipe and a
    thread that drops :data:`NATIVE_NOISE` and forwards everything else.
    """
    sys.stderr.flush()
    try:
        original = os.dup(2)
    except OSError:  # no file descriptor 2 (a detached process): nothing to filter
        yield
        return
    read_fd, write_fd = os.pipe()
    pump = threading.Thread(target=_pump, args=(read_fd, original), name="semscale-stderr", daemon=True)
    pump.start()
    saved: TextIO = sys.stderr
    python_on_fd2 = _fileno(saved) == 2
    if python_on_fd2:
        # left open afterwards: handlers created inside the block may hold it (it is the original stream)
        sys.stderr = open(os.dup(original), "w", buffering=1, encoding=saved.encoding or "utf-8",
                          errors="backslashreplace")
    os.dup2(write_fd, 2)
    os.close(write_fd)
    try:
        yield
    finally:
        if python_on_fd2:
            sys.stderr.flush()
            sys.stderr = saved
        os.dup2(original, 2)  # closes the pipe's last write end held by this process
        pump.join(timeout=2.0)  # children still alive keep the pipe open; the thread is a daemon
        if not pump.is_alive():
            os.close(original)


def _fileno(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
