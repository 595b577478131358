"""A Prefect server with an auth string (issue 18), as the cluster runs it: a client with
the right PREFECT_API_AUTH_STRING runs its flow there; a wrong one, or none, is refused in
one line before any work, and the string is never printed."""

from __future__ import annotations

import os
import secrets
import urllib.error
import urllib.request

import pytest

from regimes.flows.server import start_prefect_server
from tests.integration.conftest import prefect_api
from tests.integration.test_cli import last_json, run
from tests.integration.test_training import fifteen_minute_home

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
# Made up per session, so that finding it in any output can only mean it was printed.
AUTH_STRING = f"regimes:{secrets.token_urlsafe(18)}"
TRAIN = ("train", "--timeframe", "15m", "--grid", '{"K": [6], "covariance": ["diag"]}')


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """One Prefect server started with PREFECT_SERVER_API_AUTH_STRING (this process is
    not pointed at it)."""
    server = start_prefect_server(tmp_path_factory.mktemp("prefect"), auth_string=AUTH_STRING)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def small_home(tmp_path_factory):
    """15m bars and features of 3 symbols x 30 days: enough for one walk-forward split."""
    home = tmp_path_factory.mktemp("auth-home")
    fifteen_minute_home(home).dispose()
    return home


def _client_env(api_url: str, auth_string: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env["PREFECT_API_URL"] = api_url
    if auth_string is not None:
        env["PREFECT_API_AUTH_STRING"] = auth_string
    return env


def _api(api_url: str, path: str, body: dict | None = None):
    """The server's answer to ``path``, asked with the right auth string."""
    return prefect_api(api_url, AUTH_STRING, path, body)


def _flow_runs(api_url: str) -> list[dict]:
    return _api(api_url, "flow_runs/filter", {})


def _assert_secret_not_printed(result) -> None:
    secret = AUTH_STRING.split(":", 1)[1]
    for stream in (result.stdout, result.stderr):
        assert AUTH_STRING not in stream and secret not in stream


def test_the_server_refuses_the_api_without_the_auth_string(auth_server):
    # What the check relies on: /health stays open (probes), the API does not.
    with urllib.request.urlopen(f"{auth_server.api_url}/health", timeout=5) as reply:
        assert reply.status == 200
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{auth_server.api_url}/admin/version", timeout=5)
    refused.value.close()
    assert refused.value.code == 401


@pytest.mark.parametrize(
    "auth_string, message",
    [
        (
            None,
            "requires authentication (GET {url}/admin/version: HTTP 401) and "
            "PREFECT_API_AUTH_STRING is unset; set it to the server's "
            "PREFECT_SERVER_API_AUTH_STRING",
        ),
        (
            "regimes:not-the-password",
            "refused PREFECT_API_AUTH_STRING (GET {url}/admin/version: HTTP 401); set it to "
            "the server's PREFECT_SERVER_API_AUTH_STRING",
        ),
        # The right password of another user is still wrong.
        (
            "admin:" + AUTH_STRING.split(":", 1)[1],
            "refused PREFECT_API_AUTH_STRING (GET {url}/admin/version: HTTP 401)",
        ),
    ],
    ids=["none", "wrong", "wrong-user"],
)
def test_a_wrong_or_missing_auth_string_is_refused_in_one_line_before_any_work(
    auth_server, small_home, auth_string, message
):
    url = auth_server.api_url
    runs_before = len(_flow_runs(url))
    env = _client_env(url, auth_string)
    result = run(*TRAIN, "--executor", "local", home=small_home, env=env, check=False)
    expected = f"regimes train: error: PREFECT_API_URL={url} {message.format(url=url)}"
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr[-2000:]
    assert "Traceback" not in result.stderr and result.stdout == ""
    _assert_secret_not_printed(result)
    if auth_string is not None:
        assert auth_string.split(":", 1)[1] not in result.stderr
    # Nothing ran: no flow run on the server, no model artifact written.
    assert len(_flow_runs(url)) == runs_before
    assert not list(small_home.glob("models/**/metadata.json"))


def test_the_right_auth_string_runs_the_train_flow_on_that_server(auth_server, small_home):
    url = auth_server.api_url
    env = _client_env(url, AUTH_STRING)
    result = run(*TRAIN, "--executor", "local", "--no-report", home=small_home, env=env)
    _assert_secret_not_printed(result)
    model = last_json(result)["models"][0]
    assert model["role"] == "candidate" and model["model_id"].startswith("15m-")
    assert f"Prefect flow 'train' on {url}" in result.stderr
    # The flow ran on the server with the auth string, not on a local one.
    assert not (small_home / "prefect" / "server.log").exists()
    runs = _flow_runs(url)
    assert [r["state_type"] for r in runs] == ["COMPLETED"]
    assert _api(url, f"flows/{runs[0]['flow_id']}")["name"] == "train"
    # Nor does the server's own log hold the string.
    server_log = (auth_server.prefect_home / "server.log").read_text(errors="replace")
    assert AUTH_STRING.split(":", 1)[1] not in server_log


def test_a_url_that_answers_health_but_is_no_prefect_api_is_refused_in_one_line(monkeypatch):
    """Another service at PREFECT_API_URL (its /health answers, nothing else does)."""
    import http.server
    import threading

    from regimes.errors import ConfigError
    from regimes.flows.server import check_prefect_api

    class OnlyHealth(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the handler's API
            self.send_response(200 if self.path.endswith("/health") else 404)
            self.end_headers()

        def log_message(self, *args):  # quiet
            pass

    service = http.server.HTTPServer(("127.0.0.1", 0), OnlyHealth)
    threading.Thread(target=service.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{service.server_port}/api"
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", AUTH_STRING)
    try:
        with pytest.raises(ConfigError) as refused:
            check_prefect_api(url)
    finally:
        service.shutdown()
        service.server_close()
    message = str(refused.value)
    assert message == (
        f"PREFECT_API_URL={url} answers /health but not the API (GET {url}/admin/version: "
        "HTTP 404); check that the URL is a Prefect server's API (it ends in /api)"
    )


def test_the_schedule_server_checks_the_prefect_api_before_serving(auth_server, tmp_path):
    """``python -m regimes.flows.deployments`` (a long-running scheduler) refuses a wrong
    auth string in one line instead of serving schedules nobody can start."""
    import subprocess
    import sys

    url = auth_server.api_url
    env = _client_env(url, "regimes:not-the-password")
    result = subprocess.run(
        [sys.executable, "-m", "regimes.flows.deployments", "--home", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith(
        f"python -m regimes.flows.deployments: error: PREFECT_API_URL={url} refused "
        "PREFECT_API_AUTH_STRING (GET "
    ), result.stderr[-2000:]
    _assert_secret_not_printed(result)
    assert "not-the-password" not in result.stderr
