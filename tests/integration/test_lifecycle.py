"""Issue 18: the whole lifecycle through one production-shaped stack on this machine.

A Ray cluster (a head that only schedules, two 1-CPU worker nodes) with token auth; a
Prefect server with an auth string, the process work pool ``regimes`` and one worker
running the deployments of ``infra/prefect.yaml``; PostgreSQL reached with a password;
the state store, the registry and the model artifacts on S3 (moto), artifacts signed.
One test drives ingest -> resample -> features (on the cluster) -> train (a deployment
run by the worker, its grid on the cluster) -> promote -> backfill and a second train
(deployments) -> the live service on the cluster, a shard replica SIGKILLed under load
-> rollout (a deployment: drift gate, shadow, agreement gate, champion) -> reload.
Then every log and output of the run is searched for the seven credentials.

Every credential is made up here, so finding one anywhere can only mean it was written.
The test process itself never joins Ray (a session Ray of other tests may live in it):
the cluster, the commands and the probes run in child processes.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa

from regimes.app.workspace import Workspace
from regimes.config.loading import load_config
from regimes.data import sql as db
from regimes.data.bars import resample_symbols
from regimes.data.synth import SynthConfig, generate
from regimes.flows.server import start_prefect_server
from regimes.live.engine import DatabaseHistory, InferenceEngine
from regimes.model.loaded import LoadedModel
from tests.conftest import PG_URL, REPO_ROOT
from tests.integration.conftest import PrefectPool, prefect_api
from tests.integration.test_serve import _body, _same_answers

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.timeout(900)]
CONFIG = load_config(REPO_ROOT / "config")
TF = "15m"
SYMBOLS, DAYS = 3, 31  # the last day is held back: it is what the live service is sent
SERVE_YAML = (
    "shards: {15m: 2}\nflush_interval_s: 0.3\nstore_interval_s: 1.0\n"
    "checkpoint_interval_s: 2.0\nregistry_poll_s: 3600\n"
)
GATES_YAML = (
    "defaults: {champion_occupancy_psi: 50, occupancy_psi: 50, loglik_psi: 50,\n"
    "           max_drifted_share: 1.0, shadow_min_bars: 24, shadow_agreement: 0.2}\n"
)

# A child process that starts the cluster, prints where it is, and stops it when its
# stdin closes (the test never imports a running Ray into its own process).
CLUSTER = """
import json, sys
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
for _ in range(2):
    cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
nodes = [cluster.head_node, *cluster.worker_nodes]
print(json.dumps({"address": cluster.address,
                  "logs": sorted({n.get_logs_dir_path() for n in nodes}),
                  "sessions": sorted({n.get_session_dir_path() for n in nodes})}), flush=True)
sys.stdin.read()
cluster.shutdown()
"""
# Asks the running service (on the cluster) something: a shard replica's pid, or every
# shard to flush what it holds.
PROBE = """
import json, os, sys
import ray
from ray import serve
ray.init(address=os.environ["RAY_ADDRESS"], logging_level="ERROR", log_to_driver=False)
shards = [serve.get_deployment_handle(f"engine-15m-{k}", app_name="regimes") for k in (0, 1)]
if sys.argv[1] == "pid":
    print(shards[0].pid.remote().result(timeout_s=120))
else:
    for shard in shards:
        shard.flush.remote().result(timeout_s=120)
    print("flushed")
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Stack:
    """What the fixture started, and every output file of the run (for the grep)."""

    def __init__(self, root: Path):
        self.root = root
        self.outputs = root / "outputs"
        self.outputs.mkdir()
        self.home = root / "home"
        self.config_dir = self.home / "config"
        self.secrets: dict[str, str] = {}
        self.env: dict[str, str] = {}
        self.pool: PrefectPool | None = None
        self.ray_logs: list[Path] = []
        self._n = 0

    def output(self, name: str) -> Path:
        self._n += 1
        return self.outputs / f"{self._n:02d}-{name}.log"

    def regimes(self, *args, timeout: float = 300) -> dict:
        """``regimes --home HOME --config-dir CONFIG ARGS``; its last JSON line."""
        command = [sys.executable, "-m", "regimes", "--home", str(self.home)]
        command += ["--config-dir", str(self.config_dir), *map(str, args)]
        result = subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        self.output(f"regimes-{args[0]}").write_text(result.stdout + "\n" + result.stderr)
        assert result.returncode == 0, result.stderr[-3000:]
        self.last_stderr = result.stderr
        return json.loads(result.stdout.strip().splitlines()[-1])

    def probe(self, action: str) -> str:
        result = subprocess.run(
            [sys.executable, "-c", PROBE, action],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        self.output(f"probe-{action}").write_text(result.stdout + "\n" + result.stderr)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout.strip().splitlines()[-1]

    # -- Prefect

    def api(self, path: str, body: dict | None = None):
        return prefect_api(self.pool.server.api_url, self.secrets["prefect"], path, body)

    def run_deployment(self, name: str, parameters: dict) -> str:
        started = self.pool.cli("deployment", "run", name, "--params", json.dumps(parameters))
        self.output(f"deployment-run-{name.replace('/', '-')}").write_text(
            started.stdout + started.stderr
        )
        return re.search(r"UUID: ([0-9a-f-]{36})", started.stdout).group(1)

    def wait_run(self, run_id: str, timeout: float = 300) -> dict:
        """The flow run once final; it must have completed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.api(f"flow_runs/{run_id}")
            if run["state_type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
                assert run["state_type"] == "COMPLETED", (run["state"], self.pool.logs())
                return run
            time.sleep(1.0)
        pytest.fail(f"flow run {run_id} not final in {timeout:.0f}s\n{self.pool.logs()}")

    def workspace(self) -> Workspace:
        return Workspace.open(self.home, None, self.config_dir, environ=self.env)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, s3_endpoint):
    """The cluster, the Prefect server + pool + worker, a PostgreSQL role with a
    password and its own schema, a bucket on moto; torn down afterwards."""
    import boto3

    root = tmp_path_factory.mktemp("lifecycle")
    stack = Stack(root)
    stack.home.mkdir()
    stack.config_dir.mkdir()
    for name in ("features.yaml", "timeframes.yaml", "markets.yaml"):
        if (REPO_ROOT / "config" / name).exists():
            (stack.config_dir / name).write_text((REPO_ROOT / "config" / name).read_text())
    (stack.config_dir / "serve.yaml").write_text(SERVE_YAML)
    (stack.config_dir / "gates.yaml").write_text(GATES_YAML)

    stack.secrets = {
        "db password": secrets.token_urlsafe(18),
        "s3 key id": "AKIA" + secrets.token_hex(8).upper(),
        "s3 secret": secrets.token_urlsafe(30),
        "api key": secrets.token_urlsafe(32),
        "artifact key": secrets.token_urlsafe(32),
        "prefect": f"regimes:{secrets.token_urlsafe(18)}",
        "ray token": secrets.token_hex(32),
    }
    s = stack.secrets

    # PostgreSQL: a role with a password, owning a schema of its own.
    role = f"regimes_lc_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_URL)
    try:
        with admin.begin() as connection:
            connection.execute(sa.text(f"CREATE ROLE {role} LOGIN PASSWORD '{s['db password']}'"))
            connection.execute(sa.text(f"CREATE SCHEMA {role} AUTHORIZATION {role}"))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {PG_URL} does not answer ({exc.orig})", pytrace=False)
    url = sa.engine.make_url(PG_URL).set(username=role, password=s["db password"])
    db_url = url.render_as_string(hide_password=False) + f"?options=-csearch_path%3D{role}"

    bucket = f"lifecycle-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=s["s3 key id"],
        aws_secret_access_key=s["s3 secret"],
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=bucket)
    client.close()

    token_file = root / "ray-token"  # a secret file, as a Kubernetes Secret mounts it
    token_file.write_text(s["ray token"])
    token_file.chmod(0o600)
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_API_", "REGIMES_", "AWS_", "RAY_AUTH")) and k != "RAY_ADDRESS"
    }
    node_env = {  # what every node of the cluster has (its Secret / ConfigMap)
        **base,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_file),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_raylet_start_wait_time_s": "120",  # three raylets at once on 2 busy cores
        "REGIMES_DB_URL": db_url,
        "REGIMES_STATES_URI": f"s3://{bucket}/states",
        "REGIMES_REGISTRY_URI": f"s3://{bucket}/registry",
        "REGIMES_MODELS_URI": f"s3://{bucket}/models",
        "REGIMES_ARTIFACT_KEY": s["artifact key"],
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": s["s3 key id"],
        "AWS_SECRET_ACCESS_KEY": s["s3 secret"],
        "AWS_REGION": "us-east-1",
    }
    cluster_log = open(stack.output("cluster"), "w")  # noqa: SIM115 - closed below
    cluster = subprocess.Popen(
        [sys.executable, "-c", CLUSTER],
        env=node_env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=cluster_log,
        text=True,
        start_new_session=True,
    )
    server = None
    try:
        where = json.loads(cluster.stdout.readline() or "null")
        assert where, stack.output("cluster-failed").write_text("") or "the cluster did not start"
        stack.ray_logs = [Path(p) for p in where["sessions"]]
        server = start_prefect_server(root / "prefect", auth_string=s["prefect"])
        stack.env = {
            **node_env,
            "RAY_ADDRESS": where["address"],
            "PREFECT_API_AUTH_STRING": s["prefect"],
            "PREFECT_HOME": str(root / "prefect-client"),
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "REGIMES_API_KEYS": s["api key"],
        }
        stack.pool = PrefectPool(server, stack.outputs, stack.env)
        stack.env = stack.pool.env  # + PREFECT_API_URL
        stack.pool.cli("work-pool", "create", "regimes", "--type", "process")
        names = ("train-15m", "backfill", "rollout")
        deploy = ["--no-prompt", "deploy", "--prefect-file", "infra/prefect.yaml"]
        stack.pool.cli(*deploy, *(x for n in names for x in ("--name", n)))
        stack.pool.start_worker()
        yield stack
    finally:
        if stack.pool is not None:
            stack.pool.close()
        elif server is not None:
            server.stop()
        cluster.stdin.close()
        cluster.stdout.close()
        try:
            cluster.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.pid, signal.SIGKILL)
            cluster.wait(timeout=30)
        cluster_log.close()
        with admin.begin() as connection:
            connection.execute(sa.text(f"DROP SCHEMA IF EXISTS {role} CASCADE"))
            connection.execute(sa.text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()


def _flow_parameters(stack: Stack) -> dict:
    # db_url "": the flow run reads REGIMES_DB_URL from its worker's environment (what
    # Workspace.params() sends for a URL with a password).
    return {"home": str(stack.home), "db_url": "", "config_dir": str(stack.config_dir)}


def _bars_by_time(bars: pd.DataFrame) -> list[pd.DataFrame]:
    return [group for _, group in bars.groupby("ts", sort=True)]


def test_the_whole_lifecycle_on_the_stack(stack):
    s = stack.secrets
    session = CONFIG.timeframes.session
    market = generate(SynthConfig(symbols=SYMBOLS, days=DAYS, seed=5), session)
    cutoff = market.bars["ts"].dt.normalize().max()  # the last day's midnight (UTC)
    # The last day's 15m bars (what a feed would send live), resampled apart.
    scratch = db.make_engine(f"sqlite:///{stack.root / 'scratch.db'}")
    db.create_schema(scratch)
    db.upsert_bars(scratch, market.bars)
    resample_symbols(scratch, session, 0.2, timeframes=[TF])
    live = db.read_bars(scratch, TF)
    scratch.dispose()
    live = live[live["ts"] >= cutoff].reset_index(drop=True)
    stream = _bars_by_time(live)
    assert len(stream) >= 24

    # -- ingest and resample (PostgreSQL with a password), features on the cluster
    with stack.workspace() as workspace:
        assert workspace.db_url.startswith("postgresql") and workspace.params()["db_url"] == ""
        db.upsert_bars(workspace.engine, market.bars[market.bars["ts"] < cutoff])
        resample_symbols(workspace.engine, session, 0.2, timeframes=[TF])
        history = db.read_bars(workspace.engine, TF)
    assert history["ts"].max() < cutoff
    stack.regimes("features", "--timeframe", TF, "--executor", "ray")
    assert f"as Ray tasks on Ray {stack.env['RAY_ADDRESS']} (2 CPUs)" in stack.last_stderr, (
        stack.last_stderr
    )

    # -- train: the deployment, run by the worker, its grid on the cluster
    train = {**_flow_parameters(stack), "timeframes": [TF], "executor": "ray", "report": False}
    first = stack.run_deployment(
        "train/train-15m", {**train, "grid": {"K": [4, 6], "covariance": ["diag"]}, "seed": 1}
    )
    stack.wait_run(first)
    with stack.workspace() as workspace:
        (m1,) = workspace.registry.current(TF)["model_id"].tolist()
        assert workspace.model_store.root.startswith("s3://")
    stack.regimes("promote", "--timeframe", TF, "--model-id", m1, "--reason", "first")

    # -- backfill the champion and train a second model, both deployments at once
    backfill = stack.run_deployment(
        "backfill/backfill",
        {**_flow_parameters(stack), "timeframe": TF, "model_id": m1, "executor": "ray"},
    )
    second = stack.run_deployment(
        "train/train-15m", {**train, "grid": {"K": [5], "covariance": ["diag"]}, "seed": 2}
    )
    stack.wait_run(backfill)
    stack.wait_run(second)
    with stack.workspace() as workspace:
        models = set(workspace.registry.current(TF)["model_id"])
        (m2,) = models - {m1}
        assert workspace.registry.champion(TF) == m1
        backfilled = workspace.state_store.read(TF, m1, columns=["symbol", "ts"])
        assert len(backfilled) == len(history)
        assert not backfilled.duplicated(["symbol", "ts"]).any()
        # The references: each model loaded from S3 (verified), stepping the same bars.
        history_engine = db.make_engine(workspace.db_url)
        reference = {
            m: InferenceEngine(
                LoadedModel.load(workspace.model_path(TF, m)),
                history=DatabaseHistory(history_engine, TF),
            )
            for m in (m1, m2)
        }

    # -- the live service on the cluster
    port = _free_port()
    serve_log = open(stack.output("serve"), "w")  # noqa: SIM115 - closed below
    command = [sys.executable, "-m", "regimes", "--home", str(stack.home)]
    command += ["--config-dir", str(stack.config_dir), "serve", "--timeframe", TF]
    service = subprocess.Popen(
        [*command, "--port", str(port), "--for", "900"],
        env=stack.env,
        stdout=serve_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    auth = {"Authorization": f"Bearer {s['api key']}"}
    given: list[dict] = []  # every answer the service gave
    position = 0
    try:
        deadline = time.monotonic() + 240
        while "live service ready" not in Path(serve_log.name).read_text():
            assert service.poll() is None, Path(serve_log.name).read_text()[-3000:]
            assert time.monotonic() < deadline, Path(serve_log.name).read_text()[-3000:]
            time.sleep(1.0)

        def post(group, retries: int = 0) -> httpx.Response:
            for attempt in range(retries + 1):
                reply = client.post(f"/v1/bars/{TF}", json=_body(group), headers=auth)
                if reply.status_code != 503 or attempt == retries:
                    return reply
                time.sleep(1.0)
            return reply

        def send(n: int, model: str, retries: int = 0) -> list[dict]:
            nonlocal position
            bodies = []
            for _ in range(n):
                group = stream[position]
                position += 1
                reply = post(group, retries)
                assert reply.status_code == 200, reply.text
                body = reply.json()
                assert not body["refused"], body["refused"]
                _same_answers(body["answers"], reference[model].step(group))
                given.extend(body["answers"])
                bodies.append(body)
            return bodies

        assert client.post(f"/v1/bars/{TF}", json=_body(stream[0])).status_code == 401
        send(4, m1)
        # A shard replica SIGKILLed while a request is on its way through it.
        pid = int(stack.probe("pid"))
        group = stream[position]
        position += 1
        replies: list[httpx.Response] = []
        poster = threading.Thread(target=lambda: replies.append(post(group)))
        poster.start()
        time.sleep(0.02)
        os.kill(pid, signal.SIGKILL)
        poster.join(timeout=120)
        reply = replies[0]
        if reply.status_code != 200:  # cut: the client sends the batch again
            assert reply.status_code == 503, reply.text
            reply = post(group, retries=120)
        assert reply.status_code == 200, reply.text
        _same_answers(reply.json()["answers"], reference[m1].step(group))
        given.extend(reply.json()["answers"])
        send(4, m1, retries=120)  # the answers go on exactly
        assert int(stack.probe("pid")) != pid

        # -- rollout: the deployment puts m2 beside the champion as a shadow (drift
        # gate), waits for its bars, then promotes it (agreement gate)
        request = {"timeframe": TF, "model_id": m2, "actor": "lifecycle", "wait_s": 240.0}
        rollout = stack.run_deployment(
            "rollout/rollout", {**_flow_parameters(stack), "request": {**request, "poll_s": 2.0}}
        )
        deadline = time.monotonic() + 240
        while True:
            with stack.workspace() as workspace:
                if workspace.registry.role(TF, m2) == "shadow":
                    break
            assert time.monotonic() < deadline, stack.pool.logs()
            time.sleep(1.0)
        reloaded = client.post("/v1/admin/reload", headers=auth).json()
        assert reloaded["roles"][TF]["shadows"] == [m2], reloaded
        # The shadow answers beside the champion while the flow waits for enough of its
        # bars (shadow_min_bars), then the flow promotes it (its drift replay takes a
        # while: the stream is not spent on it, one bar time is kept for the end).
        while position < len(stream) - 1:
            if stack.api(f"flow_runs/{rollout}")["state_type"] not in {
                "SCHEDULED",
                "PENDING",
                "RUNNING",
            }:
                break
            send(1, m1)
            time.sleep(1.0)
        stack.wait_run(rollout)
        with stack.workspace() as workspace:
            assert workspace.registry.champion(TF) == m2
            assert workspace.registry.last_good_champion(TF) == m1

        # -- reload: the next answers come from m2, warm
        assert client.post("/v1/admin/reload", headers=auth).status_code == 200
        nxt = post(stream[position])
        position += 1
        assert nxt.status_code == 200, nxt.text
        answers = nxt.json()["answers"]
        given.extend(answers)
        assert {a["model_id"] for a in answers} == {m2}
        assert not any(a["reason"] == "warming up" for a in answers), answers
        assert stack.probe("flush") == "flushed"
    finally:
        client.close()
        history_engine.dispose()
        if service.poll() is None:
            os.killpg(service.pid, signal.SIGINT)
            try:
                service.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(service.pid, signal.SIGKILL)
        serve_log.close()
    assert service.returncode == 0, Path(serve_log.name).read_text()[-3000:]

    # -- every bar sent is stored once; every answer given is in the state store, once
    sent = pd.concat(stream[:position])
    with stack.workspace() as workspace:
        stored = db.read_bars(workspace.engine, TF)
        landed = stored[stored["ts"] >= cutoff]
        assert len(landed) == len(sent)
        assert not stored.duplicated(["symbol", "ts"]).any()
        assert set(zip(landed["symbol"], landed["ts"], strict=True)) == set(
            zip(sent["symbol"], sent["ts"], strict=True)
        )
        answered = pd.DataFrame(given)
        for model, rows in answered.groupby("model_id"):
            states = workspace.state_store.read(TF, model, columns=["symbol", "ts"])
            assert not states.duplicated(["symbol", "ts"]).any()
            keys = set(
                zip(
                    states["symbol"],
                    pd.DatetimeIndex(states["ts"]).map(pd.Timestamp.isoformat),
                    strict=True,
                )
            )
            assert set(zip(rows["symbol"], rows["ts"], strict=True)) <= keys, model

    # -- no credential in any log or output of the run
    stack.pool.close()  # the worker's and the server's logs complete
    stack.pool = None
    files = [p for d in stack.ray_logs for p in d.rglob("*") if p.is_file()]
    files += [p for p in (stack.root / "prefect").rglob("*") if p.is_file()]
    files += [p for p in stack.outputs.rglob("*") if p.is_file()]
    # Where Ray writes a replica's runtime_env, and Prefect's database (flow parameters).
    assert any(p.name.startswith("runtime_env_agent") for p in files), files
    assert any(p.name == "prefect.db" for p in files), files
    needles = {name: value.split(":", 1)[-1].encode() for name, value in s.items()}
    found = [
        f"{name} in {path}"
        for path in files
        for name, needle in needles.items()
        if needle in path.read_bytes()
    ]
    print(f"searched {len(files)} files for {len(needles)} credentials")
    assert found == [], found
