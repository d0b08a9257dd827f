"""A real headless Chromium, driven over the DevTools protocol on 127.0.0.1: load a page, gather console
errors, failed loads and the state of every image, take a full-page screenshot.

``python -m tests.browser PAGE.html OUT.png`` saves the screenshot (how ``docs/report.png`` is made).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str:
    for name in CHROMIUM:
        if found := shutil.which(name):
            return found
    raise RuntimeError("Expected Chromium on PATH (Debian: `apt-get install chromium`, as .ci/run does). Got none.")


@dataclass
class PageLoad:
    images: list[dict[str, Any]]
    errors: list[str] = field(default_factory=list)
    title: str = ""
    screenshot: bytes = b""


class _Session:
    def __init__(self, ws_url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))
            self.events.append(msg)

    def wait_for(self, method: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        if any(e.get("method") == method for e in self.events):
            return
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            self.events.append(msg)
            if msg.get("method") == method:
                return
        raise TimeoutError(f"no {method} within {timeout} s")


def load_page(page: Path, *, width: int = 1400, height: int = 1000) -> PageLoad:
    """Open ``page`` (a file) in a fresh headless Chromium and report what a reader would meet."""
    with tempfile.TemporaryDirectory(prefix="semscale-chromium-", ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen(
            [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", f"--user-data-dir={profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            port = _devtools_port(proc)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as r:
                targets = json.loads(r.read())
            target = next(t for t in targets if t.get("type") == "page")
            s = _Session(target["webSocketDebuggerUrl"])
            for domain in ("Page", "Runtime", "Log", "Network"):
                s.call(f"{domain}.enable")
            s.call("Page.navigate", url=page.resolve().as_uri())
            s.wait_for("Page.loadEventFired")
            images = s.call("Runtime.evaluate", returnByValue=True, expression=(
                "Array.from(document.images).map(i => ({src: i.getAttribute('src'), complete: i.complete, "
                "width: i.naturalWidth, height: i.naturalHeight}))"))["result"]["value"]
            title = s.call("Runtime.evaluate", expression="document.title", returnByValue=True)["result"]["value"]
            shot = s.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
            s.ws.close()
            return PageLoad(images=images, errors=_errors(s.events), title=title, screenshot=base64.b64decode(shot))
        finally:  # the browser and its helper processes
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _devtools_port(proc: subprocess.Popen[str]) -> int:
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if m := re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line):
            return int(m.group(1))
        if not line and proc.poll() is not None:
            break
    raise RuntimeError("Chromium did not start its DevTools endpoint")


def _errors(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Runtime.exceptionThrown":
            out.append(f"exception: {p['exceptionDetails'].get('text')}")
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
        elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
            out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        elif method == "Network.loadingFailed":
            out.append(f"load failed: {p.get('errorText')}")
    return out


if __name__ == "__main__":
    result = load_page(Path(sys.argv[1]))
    Path(sys.argv[2]).write_bytes(result.screenshot)
    print(json.dumps({"images": len(result.images), "errors": result.errors}))
