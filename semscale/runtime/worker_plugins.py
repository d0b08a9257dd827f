"""Plugins semscale installs on the workers of the local clusters it starts (imported with distributed)."""

from __future__ import annotations

import logging
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["QuietFailures"]


class QuietFailures(WorkerPlugin):
    """Silences a worker's own report of a failed task (``Compute Failed`` and its traceback): the run
    reports every failed block once, in one line, after its retries. Not installed with ``-v``."""

    def setup(self, worker: Any) -> None:
        logging.getLogger("distributed.worker").setLevel(logging.CRITICAL)
