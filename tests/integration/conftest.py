"""Fixtures of the integration tier shared by several files: an S3 endpoint (moto)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from contextlib import contextmanager

import pytest


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def moto_server(**environ: str):
    """moto's S3 server on a free local port, in a child process (``environ`` added to its
    environment); yields its endpoint URL.

    Not ``ThreadedMotoServer``: deltalake holds the GIL in some calls that do network
    I/O (``DeltaTable.is_deltatable``, ``history``, its filesystem handler), so an
    in-process server thread could never answer them.
    """
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **environ},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto server on {endpoint} did not start", pytrace=False)
                time.sleep(0.2)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server (:func:`moto_server`), shared by the session."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_environ(s3_endpoint) -> dict[str, str]:
    """AWS variables for the moto endpoint and a fresh, empty bucket; the bucket's URI is
    ``REGIMES_TEST_BUCKET`` (``s3://regimes-<hex>``)."""
    import boto3

    bucket = f"regimes-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=bucket)
    client.close()
    return {
        "REGIMES_TEST_BUCKET": f"s3://{bucket}",
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }


TWO_MODELS_TF = "15m"


@pytest.fixture(scope="session")
def two_models_home(tmp_path_factory):
    """A home trained once per test run (:func:`tests.conftest.built_once`): 15m bars of
    four synthetic symbols (25 days), features, and two registered models — the first
    promoted to champion, the second a candidate. Tests that change it work on a copy
    (:func:`copy_home`)."""
    from regimes.config.loading import load_config
    from regimes.data import sql as db
    from regimes.data.bars import resample_symbols
    from regimes.data.synth import SynthConfig, generate
    from regimes.features.store import plan_units, run_features
    from regimes.storage.registry import Registry
    from regimes.training.train import train_timeframe
    from tests.conftest import REPO_ROOT, built_once

    config = load_config(REPO_ROOT / "config")

    def build(home):
        engine = db.make_engine(f"sqlite:///{home / 'regimes.db'}")
        db.create_schema(engine)
        market = generate(SynthConfig(symbols=4, days=25, seed=8), config.timeframes.session)
        db.upsert_bars(engine, market.bars)
        resample_symbols(engine, config.timeframes.session, 0.2, timeframes=[TWO_MODELS_TF])
        run_features(engine, config, plan_units(engine, [TWO_MODELS_TF]))
        registry = Registry(str(home / "registry"))
        models = []
        for K, seed in ((6, 1), (7, 2)):
            result = train_timeframe(
                engine,
                config,
                TWO_MODELS_TF,
                home / "models",
                grid={"K": [K], "covariance": ["diag"]},
                seed=seed,
            )
            registry.register(
                TWO_MODELS_TF,
                result.model_id,
                artifact_path=str(result.path),
                actor="t",
                reason="t",
            )
            models.append(result)
        registry.promote(TWO_MODELS_TF, models[0].model_id, actor="t", reason="the first champion")
        engine.dispose()
        return home, models

    return built_once(tmp_path_factory, "two-models", build)


def copy_home(source, target):
    """A copy of a home whose artifacts stay where the registry says (their paths are
    absolute); the copy's registry, database and states are its own."""
    import shutil

    shutil.copytree(source, target, ignore=shutil.ignore_patterns("prefect", "serve"))
    return target


def prefect_api(api_url: str, auth_string: str, path: str, body: dict | None = None):
    """A Prefect server's JSON answer to ``path`` (POST with ``body``, else GET), asked
    with basic auth ``auth_string`` ("user:password") as Prefect's own client does."""
    import base64
    import json
    import urllib.request

    token = base64.b64encode(auth_string.encode()).decode()
    request = urllib.request.Request(
        f"{api_url}/{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.load(reply)


class PrefectPool:
    """A real Prefect server (of this test) with the process work pool ``regimes``: the
    ``prefect`` CLI against it (:meth:`cli`) and workers of the pool (:meth:`start_worker`),
    each in a session of its own, logging to ``worker-<n>.log``."""

    def __init__(self, server, directory, extra_env: dict[str, str] | None = None):
        import os

        self.server = server
        self.directory = directory
        self.env = {**os.environ, "PREFECT_API_URL": server.api_url, **(extra_env or {})}
        self.workers: list[subprocess.Popen] = []
        self._logs: list = []

    def cli(self, *args, timeout: float = 240) -> subprocess.CompletedProcess:
        from tests.conftest import REPO_ROOT

        result = subprocess.run(
            [sys.executable, "-m", "prefect", *args],
            env=self.env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        return result

    def start_worker(self) -> subprocess.Popen:
        from tests.conftest import REPO_ROOT

        log = open(self.worker_log(len(self.workers)), "wb")  # noqa: SIM115 - closed at the end
        self._logs.append(log)
        worker = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", "regimes"],
            env=self.env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(worker)
        return worker

    def worker_log(self, n: int):
        return self.directory / f"worker-{n}.log"

    def logs(self) -> str:
        return "\n".join(
            self.worker_log(n).read_text(errors="replace")[-3000:] for n in range(len(self.workers))
        )

    def close(self) -> None:
        import os
        import signal

        try:
            for worker in self.workers:
                if worker.poll() is None:
                    os.killpg(worker.pid, signal.SIGTERM)
            for worker in self.workers:
                try:
                    worker.wait(timeout=30)
                except subprocess.TimeoutExpired:  # a loaded machine: no grace left
                    os.killpg(worker.pid, signal.SIGKILL)
                    worker.wait(timeout=30)
        finally:
            for log in self._logs:
                log.close()
            self.server.stop()


@pytest.fixture
def prefect_pool(tmp_path, monkeypatch):
    """A Prefect server started for this test, the work pool ``regimes`` created on it;
    stopped afterwards with its workers, and ``PREFECT_API_URL`` gone again."""
    import os

    from regimes.flows.server import ensure_prefect_server

    # setenv first so that monkeypatch restores the variable's absence afterwards: the
    # server started here sets PREFECT_API_URL, and later tests must not inherit it.
    monkeypatch.setenv("PREFECT_API_URL", "")
    monkeypatch.delenv("PREFECT_API_URL")
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    pool = PrefectPool(ensure_prefect_server(tmp_path / "prefect"), tmp_path)
    try:
        pool.cli("work-pool", "create", "regimes", "--type", "process")
        yield pool
    finally:
        pool.close()
    # The stopped server is no longer this process's API (nor its later children's).
    assert "PREFECT_API_URL" not in os.environ
