"""Progress bars and logging set-up shared by all stages.

``progress(iterable, ...)`` wraps a loop in a rich progress bar when the output is a terminal (or when forced
with ``SEMSCALE_PROGRESS=1``) and is silent otherwise, so logs of batch jobs stay clean. ``dask_progress``
follows a Dask computation (futures or a local compute) the same way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["dask_progress", "progress", "progress_enabled", "setup_logging"]


def progress_enabled() -> bool:
    env = os.environ.get("SEMSCALE_PROGRESS")
    if env is not None:
        return env not in ("0", "false", "no", "")
    return sys.stderr.isatty()


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
    )


def progress(
    iterable: Iterable[T], *, total: int | None = None, description: str = "working"
) -> Iterator[T]:
    """Iterate with a progress bar (rich) when enabled; otherwise plain iteration."""
    if not progress_enabled():
        yield from iterable
        return
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    with _make_progress() as bar:
        task = bar.add_task(description, total=total)
        for item in iterable:
            yield item
            bar.advance(task)


@contextlib.contextmanager
def dask_progress(description: str = "computing") -> Iterator[None]:
    """Context manager showing a progress bar for local (non-distributed) dask computations."""
    if not progress_enabled():
        yield
        return
    from dask.callbacks import Callback

    bar = _make_progress()

    class _Cb(Callback):
        def _start_state(self, dsk: Any, state: Any) -> None:
            self._task = bar.add_task(description, total=len(state["ready"]) + len(state["waiting"]))

        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            bar.advance(self._task)

    with bar, _Cb():
        yield


def setup_logging(verbose: int = 0) -> None:
    """Configure semscale's logger for the CLI (INFO by default, DEBUG with -v)."""
    level = logging.DEBUG if verbose > 0 else logging.INFO
    handler: logging.Handler
    try:
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, show_time=False, markup=False)
        fmt = "%(message)s"
    except ImportError:  # pragma: no cover - rich is a dependency
        handler = logging.StreamHandler()
        fmt = "%(levelname)s %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    log = logging.getLogger("semscale")
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
