"""A real X server for tests that drive a GUI: Xvfb (Debian's ``xvfb``, installed by .ci/run) on a display
number it picks itself, listening on no TCP port, stopped when the block ends; GUI programs run as
subprocesses with the environment it yields."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator


@contextlib.contextmanager
def xvfb(*, screen: str = "1280x1024x24") -> Iterator[dict[str, str]]:
    """Start Xvfb and yield the environment of a Qt program on it (this process's, with ``DISPLAY`` set and
    Qt on its X11 platform)."""
    binary = shutil.which("Xvfb")
    if binary is None:
        raise RuntimeError("Expected Xvfb on PATH (Debian: `apt-get install xvfb`, as .ci/run does). Got none.")
    read, write = os.pipe()
    proc = subprocess.Popen([binary, "-displayfd", str(write), "-screen", "0", screen, "-nolisten", "tcp"],
                            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(write)
    try:
        with os.fdopen(read) as pipe:
            number = pipe.readline().strip()
        if not number:
            raise RuntimeError(f"Xvfb exited without a display: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
        yield {**os.environ, "DISPLAY": f":{number}", "QT_QPA_PLATFORM": "xcb"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
