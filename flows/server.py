"""One Prefect server for every run (DESIGN: no temporary server per process).

``ensure_prefect_server`` uses the server at ``PREFECT_API_URL`` when it is set (and says
clearly when it does not answer), otherwise starts a local one (SQLite under the
Workspace's Prefect home) on a free port of 127.0.0.1, waits until it is healthy, and
points this process (and so every child) at it. Stopping it first delivers the logs
still queued for its API, so nothing is printed after the run's answer.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from regimes.errors import ConfigError

QUIET = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
}


def _healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PrefectServer:
    """A Prefect server this process uses; stops it on :meth:`stop` if it started it."""

    def __init__(self, api_url: str, process: subprocess.Popen | None, restore: dict | None = None):
        self.api_url = api_url
        self.process = process
        self._restore = restore or {}  # environment before this server was pointed at

    def stop(self) -> None:
        # Prefect sends run logs to the API from a background worker; drained after the
        # server is gone it prints "Error logging to API" after our answer.
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=10)
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        # A server this process started is gone: it must not stay the API of this process
        # (or of children started later).
        for key, value in self._restore.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._restore = {}


def ensure_prefect_server(prefect_home: str | Path, timeout: float = 90.0) -> PrefectServer:
    """The server at ``PREFECT_API_URL``, or a local one with its database and log under
    ``prefect_home`` (stopped by :meth:`PrefectServer.stop`)."""
    for key, value in QUIET.items():
        os.environ.setdefault(key, value)
    url = os.environ.get("PREFECT_API_URL")
    if url:
        if not _healthy(url, timeout=5.0):
            raise ConfigError(
                f"PREFECT_API_URL={url} does not answer (GET {url.rstrip('/')}/health failed); "
                "start that server or unset PREFECT_API_URL to use a local one"
            )
        return PrefectServer(url, None)
    prefect_home = Path(prefect_home)
    prefect_home.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, **QUIET, "PREFECT_HOME": str(prefect_home)}
    with open(prefect_home / "server.log", "ab") as log:  # the child keeps its own copy
        process = _start_server(port, env, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ConfigError(
                f"the local Prefect server exited with code {process.returncode}; see "
                f"{prefect_home / 'server.log'}"
            )
        if _healthy(api_url, timeout=1.0):
            restore = {key: os.environ.get(key) for key in ("PREFECT_API_URL", "PREFECT_HOME")}
            os.environ["PREFECT_API_URL"] = api_url
            os.environ["PREFECT_HOME"] = str(prefect_home)
            return PrefectServer(api_url, process, restore)
        time.sleep(0.5)
    process.terminate()
    raise ConfigError(f"the local Prefect server did not become healthy within {timeout:.0f}s")


def _start_server(port: int, env: dict, log) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-ui",
            "--analytics-off",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
