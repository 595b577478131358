"""One Prefect server for every run (DESIGN: no temporary server per process).

``ensure_prefect_server`` uses the server at ``PREFECT_API_URL`` when it is set (and says
in one line when it does not answer, or refuses this client's ``PREFECT_API_AUTH_STRING``),
otherwise starts a local one (SQLite under the Workspace's Prefect home) on a free port of
127.0.0.1, waits until it is healthy, and points this process (and so every child) at it.
Stopping it first delivers the logs still queued for its API, so nothing is printed after
the run's answer.

A server started with ``PREFECT_SERVER_API_AUTH_STRING`` (the cluster's, see
infra/README.md) answers ``/health`` to anyone but every other route only to a client
sending the same string (HTTP basic auth, from ``PREFECT_API_AUTH_STRING``). The local
server listens on 127.0.0.1 for this run only and runs without one.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from regimes.errors import ConfigError

QUIET = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
}


AUTH_VARIABLE = "PREFECT_API_AUTH_STRING"
SERVER_AUTH_VARIABLE = "PREFECT_SERVER_API_AUTH_STRING"


def _healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _auth_status(api_url: str, timeout: float) -> int | None:
    """The HTTP status of ``GET /admin/version`` sent as Prefect's client sends it (with
    ``PREFECT_API_AUTH_STRING`` when set), or None when nothing answers."""
    # /health is open even on a server with an auth string; /admin/version is not, and it
    # is the request Prefect's own client starts with.
    request = urllib.request.Request(f"{api_url.rstrip('/')}/admin/version")
    auth_string = os.environ.get(AUTH_VARIABLE)
    if auth_string:
        token = base64.b64encode(auth_string.encode("utf-8")).decode("ascii")
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status
    except urllib.error.HTTPError as error:
        error.close()  # its socket, or the reply is left open
        return error.code
    except (urllib.error.URLError, OSError, ValueError):
        return None


def check_prefect_api(api_url: str, timeout: float = 5.0) -> None:
    """Refuse, in one line naming the variables to check and never their values, a
    Prefect API that does not answer or that does not accept this client.

    Parameters
    ----------
    api_url : str
        The API's URL (``PREFECT_API_URL``, ending in ``/api``).
    timeout : float
        Seconds each request may take.

    Raises
    ------
    ConfigError
        When ``GET /health`` fails, or ``GET /admin/version`` answers anything but 200
        (401: ``PREFECT_API_AUTH_STRING`` unset or not the server's string).
    """
    where = f"PREFECT_API_URL={api_url}"
    if not _healthy(api_url, timeout=timeout):
        raise ConfigError(
            f"{where} does not answer (GET {api_url.rstrip('/')}/health failed); "
            "start that server or unset PREFECT_API_URL to use a local one"
        )
    status = _auth_status(api_url, timeout)
    if status == 200:
        return
    probe = f"GET {api_url.rstrip('/')}/admin/version"
    if status == 401 and not os.environ.get(AUTH_VARIABLE):
        raise ConfigError(
            f"{where} requires authentication ({probe}: HTTP 401) and {AUTH_VARIABLE} is "
            f"unset; set it to the server's {SERVER_AUTH_VARIABLE}"
        )
    if status == 401:
        raise ConfigError(
            f"{where} refused {AUTH_VARIABLE} ({probe}: HTTP 401); set it to the server's "
            f"{SERVER_AUTH_VARIABLE}"
        )
    answer = "no answer" if status is None else f"HTTP {status}"
    raise ConfigError(
        f"{where} answers /health but not the API ({probe}: {answer}); check that the URL "
        "is a Prefect server's API (it ends in /api)"
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PrefectServer:
    """A Prefect server this process uses; stops it on :meth:`stop` if it started it."""

    def __init__(
        self,
        api_url: str,
        process: subprocess.Popen | None,
        prefect_home: Path | None = None,
    ):
        self.api_url = api_url
        self.process = process
        self.prefect_home = prefect_home
        self._restore: dict = {}  # environment before this process was pointed at it
        self._settings = ExitStack()  # this process's Prefect settings while pointed here

    def point_here(self) -> None:
        """Make this server the API of this process and of the children it starts."""
        from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

        self._restore = {key: os.environ.get(key) for key in ("PREFECT_API_URL", "PREFECT_HOME")}
        os.environ["PREFECT_API_URL"] = self.api_url
        updates = {PREFECT_API_URL: self.api_url}
        if self.prefect_home is not None:
            os.environ["PREFECT_HOME"] = str(self.prefect_home)
            updates[PREFECT_HOME] = str(self.prefect_home)
        # Prefect reads the environment into its settings once, when it is first imported.
        # A process that imported it before this server existed (the CLI imports its flows
        # first) would otherwise not see the variable: its flow runs would start a temporary
        # server of their own and be recorded there, not here.
        self._settings.enter_context(temporary_settings(updates=updates))

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
        self._settings.close()
        for key, value in self._restore.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._restore = {}


def ensure_prefect_server(prefect_home: str | Path, timeout: float = 90.0) -> PrefectServer:
    """The server at ``PREFECT_API_URL`` (checked by :func:`check_prefect_api`), or a
    local one with its database and log under ``prefect_home`` that this process and its
    children use until :meth:`PrefectServer.stop`."""
    for key, value in QUIET.items():
        os.environ.setdefault(key, value)
    url = os.environ.get("PREFECT_API_URL")
    if url:
        check_prefect_api(url)
        return PrefectServer(url, None)
    server = start_prefect_server(prefect_home, timeout)
    server.point_here()
    return server


def start_prefect_server(
    prefect_home: str | Path, timeout: float = 90.0, auth_string: str | None = None
) -> PrefectServer:
    """Start a Prefect server on a free port of 127.0.0.1 (SQLite and its log under
    ``prefect_home``) and wait until it is healthy; this process is not pointed at it.

    Parameters
    ----------
    prefect_home : str or Path
        Its ``PREFECT_HOME``.
    timeout : float
        Seconds it may take to answer ``/health``.
    auth_string : str, optional
        Its ``PREFECT_SERVER_API_AUTH_STRING`` ("user:password"); by default it runs
        without one (whatever this process's environment holds).
    """
    prefect_home = Path(prefect_home)
    prefect_home.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, **QUIET, "PREFECT_HOME": str(prefect_home)}
    env.pop(SERVER_AUTH_VARIABLE, None)
    if auth_string is not None:
        env[SERVER_AUTH_VARIABLE] = auth_string
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
            return PrefectServer(api_url, process, prefect_home=prefect_home)
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
