"""Open a page in headless Chromium (Debian's ``chromium``) over the DevTools protocol
and say what a person would see: console errors, uncaught exceptions, requests that
left the machine, every chart's size, and a full-page screenshot.

Used by the report's browser test and meant for the dashboard's: ``open_page(url,
screenshot)`` returns a :class:`PageCheck`. ``.ci/run`` installs ``chromium`` when it
is missing; without it the caller fails (never skips).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CHART_PROBE = """
Array.from(document.querySelectorAll('svg, canvas, img')).map(e => {
  const box = e.getBoundingClientRect();
  let drawn = 0;
  if (e.tagName.toLowerCase() === 'svg') { drawn = e.querySelectorAll('*').length; }
  else if (e.tagName.toLowerCase() === 'canvas') {
    const blank = document.createElement('canvas');
    blank.width = e.width; blank.height = e.height;
    drawn = e.toDataURL() === blank.toDataURL() ? 0 : 1;
  } else { drawn = (e.complete && e.naturalWidth > 0) ? 1 : 0; }
  const title = e.querySelector ? (e.querySelector('title') || {}).textContent : '';
  return {tag: e.tagName.toLowerCase(), width: box.width, height: box.height,
          drawn: drawn, title: title || e.getAttribute('alt') || ''};
})
"""


@dataclass
class PageCheck:
    """What the page did: ``errors`` (console errors and uncaught exceptions),
    ``requests`` (URLs fetched other than file: and data:), ``charts`` (tag, width,
    height, drawn elements, title) and where the screenshot went."""

    url: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    charts: list[dict] = field(default_factory=list)
    screenshot: Path | None = None


def chromium_binary() -> str:
    """The Chromium executable; AssertionError saying how to get it when missing."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError(
        "chromium not found: `apt-get install chromium` (.ci/run installs it when missing)"
    )


class _DevTools:
    def __init__(self, websocket_url: str):
        from websockets.sync.client import connect

        self.socket = connect(websocket_url, max_size=None, open_timeout=30)
        self.ids = itertools.count(1)
        self.events: list[dict] = []

    def call(self, method: str, params: dict | None = None, session: str | None = None):
        message_id = next(self.ids)
        message = {"id": message_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.socket.send(json.dumps(message))
        while True:
            reply = json.loads(self.socket.recv(timeout=60))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise AssertionError(f"DevTools {method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while time.monotonic() < deadline:
            event = json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            self.events.append(event)
            if event.get("method") == method:
                return event
        raise AssertionError(f"DevTools: no {method} within {timeout}s")

    def close(self) -> None:
        self.socket.close()


def _start(profile: Path) -> tuple[subprocess.Popen, str, threading.Thread]:
    process = subprocess.Popen(
        [
            chromium_binary(),
            "--headless",
            "--no-sandbox",  # root in a container; the page is our own file
            "--disable-gpu",
            "--no-first-run",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "--window-size=1400,1000",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its helper processes go with it (killpg)
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        found = re.search(r"DevTools listening on (ws://\S+)", line)
        if found:
            # Keep reading its log, or a full pipe would block the browser.
            drain = threading.Thread(target=process.stderr.read, daemon=True)
            drain.start()
            return process, found.group(1), drain
        if not line and process.poll() is not None:
            break
    _stop(process, None)
    raise AssertionError("chromium did not start its DevTools endpoint")


def open_page(url: str, screenshot: Path, settle_seconds: float = 0.5) -> PageCheck:
    """Load ``url`` in a fresh headless Chromium, collect what went wrong, measure the
    charts and write a full-page PNG to ``screenshot``."""
    check = PageCheck(url)
    with tempfile.TemporaryDirectory(
        prefix="regimes-chromium-", ignore_cleanup_errors=True
    ) as profile:
        process, endpoint, drain = _start(Path(profile))
        tools = None
        try:
            tools = _DevTools(endpoint)
            target = tools.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            attached = tools.call("Target.attachToTarget", {"targetId": target, "flatten": True})
            session = attached["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                tools.call(f"{domain}.enable", session=session)
            tools.call("Page.navigate", {"url": url}, session=session)
            tools.wait_for("Page.loadEventFired")
            time.sleep(settle_seconds)  # a page that refreshes itself gets one tick
            probe = tools.call(
                "Runtime.evaluate", {"expression": CHART_PROBE, "returnByValue": True}, session
            )
            check.charts = probe["result"]["value"]
            shot = tools.call(
                "Page.captureScreenshot",
                {"format": "png", "captureBeyondViewport": True},
                session,
            )
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            check.screenshot = screenshot
            _collect(tools.events, check)
        finally:
            if tools is not None:
                tools.close()
            _stop(process, drain)
    return check


def _stop(process: subprocess.Popen, drain: threading.Thread | None) -> None:
    """End the browser and every helper process it started (its own session)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)
    if drain is not None:
        drain.join(timeout=30)
    process.stderr.close()


def _collect(events: list[dict], check: PageCheck) -> None:
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            check.errors.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            check.errors.append(f"exception: {details.get('text')} {details.get('exception')}")
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            check.errors.append(f"log: {params['entry'].get('text')} {params['entry'].get('url')}")
        elif method == "Network.requestWillBeSent":
            requested = params["request"]["url"]
            if not requested.startswith(("file:", "data:", "about:")):
                check.requests.append(requested)
