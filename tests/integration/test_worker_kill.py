"""Issue 18, a dead machine: the Prefect worker and the flow-run process it started are
killed (SIGKILL, the whole process tree) in the middle of a backfill. The recovery
automations (``regimes.flows.recovery``) mark the silent run Crashed once its heartbeats
stop and schedule it again; a new worker runs the same flow run, which resumes the
backfill and completes once: every state row stored, none twice, one flow run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request

import pytest

from regimes.app.workspace import Workspace
from regimes.data import sql as db
from regimes.errors import ConfigError
from regimes.flows.recovery import (
    CRASH,
    FLOWS,
    MAX_RUNS,
    RESCHEDULE,
    recovery_automations,
    refuse_endless_restarts,
)
from regimes.storage.state_store import StateStore
from tests.conftest import REPO_ROOT
from tests.faults import kill_process_tree
from tests.integration.conftest import TWO_MODELS_TF as TF
from tests.integration.conftest import copy_home

pytestmark = pytest.mark.integration
HEARTBEAT_S = 30  # Prefect's minimum; the crash automation waits two heartbeats
KEY = ["symbol", "timeframe", "model_id", "ts"]


def _api(pool, path: str, body: dict | None = None):
    request = urllib.request.Request(
        f"{pool.server.api_url}/{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def _wait(what: str, condition, timeout: float, pool, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"waited {timeout:.0f}s for {what}\n{pool.logs()}", pytrace=False)


def _commits(home) -> int:
    log = home / "states" / "_delta_log"
    return len(list(log.glob("*.json"))) if log.is_dir() else 0


@pytest.mark.timeout(420)
def test_a_flow_run_whose_worker_died_is_run_again_by_a_new_worker_and_completes_once(
    two_models_home, tmp_path, prefect_pool
):
    source, models = two_models_home
    home = copy_home(source, tmp_path / "home")
    model_id = models[0].model_id
    pool = prefect_pool
    # Heartbeats every 30 s from the flow-run processes (started by the workers, so
    # they inherit the variable); the automations must be told the same frequency.
    pool.env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(HEARTBEAT_S)
    pool.env["PREFECT_WORKER_QUERY_SECONDS"] = "2"
    made = subprocess.run(
        [sys.executable, "-m", "regimes.flows.recovery", "--heartbeat-seconds", str(HEARTBEAT_S)],
        env=pool.env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr[-2000:]
    automations = _api(pool, "automations/filter", {})
    assert sorted(a["name"] for a in automations) == sorted([CRASH, RESCHEDULE])
    pool.cli("--no-prompt", "deploy", "--name", "backfill", "--prefect-file", "infra/prefect.yaml")
    pool.start_worker()
    parameters = {
        "timeframe": TF,
        "model_id": model_id,
        "home": str(home),
        "db_url": f"sqlite:///{home / 'regimes.db'}",
        "config_dir": str(REPO_ROOT / "config"),
        "executor": "local",
        # One day per commit (a day is never split): many small commits, so the kill
        # lands between two of them with most of the work still to do.
        "rows_per_commit": 1,
    }
    started = pool.cli("deployment", "run", "backfill/backfill", "--params", json.dumps(parameters))
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", started.stdout).group(1)

    def flow_run() -> dict:
        return _api(pool, f"flow_runs/{run_id}")

    _wait("the flow run to be RUNNING", lambda: flow_run()["state_type"] == "RUNNING", 150, pool)
    heartbeats = {
        "filter": {
            "event": {"name": ["prefect.flow-run.heartbeat"]},
            "any_resource": {"id": [f"prefect.flow-run.{run_id}"]},
        }
    }
    _wait("a heartbeat", lambda: _api(pool, "events/filter", heartbeats)["events"], 60, pool)
    _wait("two backfill commits", lambda: _commits(home) >= 3, 120, pool, interval=0.05)

    killed = kill_process_tree(pool.workers[0].pid)
    pool.workers[0].wait(timeout=30)
    assert len(killed) >= 2, killed  # the worker and the flow-run process it started
    with Workspace.open(home=home, environ={}) as workspace:
        bars = db.read_bars(workspace.engine, TF)
    store = StateStore(str(home / "states"))
    partial = store.read(TF, model_id, columns=KEY)
    assert 0 < len(partial) < len(bars), "the backfill was not cut in the middle"
    # Nobody is left to report the end: the run stays RUNNING until the heartbeats are
    # missed.
    assert flow_run()["state_type"] == "RUNNING"

    pool.start_worker()
    final = _wait(
        "the flow run to complete",
        lambda: (run := flow_run())["state_type"] in {"COMPLETED", "FAILED", "CRASHED"} and run,
        240,
        pool,
        interval=1.0,
    )
    history = [s["name"] for s in _api(pool, f"flow_run_states/?flow_run_id={run_id}")]
    assert final["state_type"] == "COMPLETED", (history, pool.logs())
    crashed = history.index("Crashed")
    assert history[crashed + 1] == "Rescheduled", history
    assert history.count("Completed") == 1 and history[-1] == "Completed", history
    assert final["run_count"] == 2, history
    # One flow run of the deployment: the same run went on, no second one was created ...
    runs = _api(
        pool,
        "flow_runs/filter",
        {"deployments": {"id": {"any_": [final["deployment_id"]]}}},
    )
    assert [r["id"] for r in runs] == [run_id]
    # ... and its last attempt ran in a process of the new worker ("host:pid").
    assert int(final["infrastructure_pid"].rsplit(":", 1)[-1]) not in killed

    stored = store.read(TF, model_id, columns=KEY)
    assert not stored.duplicated(KEY).any()
    assert len(stored) == len(bars)
    keys = ["symbol", "ts"]
    assert stored[keys].sort_values(keys).to_numpy().tolist() == (
        bars[keys].sort_values(keys).to_numpy().tolist()
    )
    # The rows the first attempt committed are all still there.
    kept = partial.merge(stored, on=KEY)
    assert len(kept) == len(partial)


def test_the_automations_wait_for_missed_heartbeats_on_our_flows_only():
    crash, reschedule = recovery_automations(45, miss_factor=3)
    assert crash.trigger.within.total_seconds() == 135
    assert crash.trigger.posture == "Proactive" and reschedule.trigger.posture == "Reactive"
    for automation in (crash, reschedule):
        related = automation.trigger.match_related
        assert related["prefect.resource.role"] == ["flow"]
        assert related["prefect.resource.name"] == list(FLOWS)
    assert [a.actions[0].state.value for a in (crash, reschedule)] == ["CRASHED", "SCHEDULED"]
    with pytest.raises(ConfigError, match="heartbeat_seconds: expected >= 30"):
        recovery_automations(10)
    with pytest.raises(ConfigError, match="miss_factor: expected > 1"):
        recovery_automations(30, miss_factor=1)


def test_a_run_that_keeps_crashing_is_not_started_again(monkeypatch):
    # Prefect's runtime reads a run's values from PREFECT__RUNTIME__* when they are set
    # (its documented way to run code outside a flow run).
    monkeypatch.setenv("PREFECT__RUNTIME__FLOW_RUN__RUN_COUNT", str(MAX_RUNS))
    refuse_endless_restarts()  # the last allowed start
    monkeypatch.setenv("PREFECT__RUNTIME__FLOW_RUN__RUN_COUNT", str(MAX_RUNS + 1))
    with pytest.raises(RuntimeError, match=f"started {MAX_RUNS} times"):
        refuse_endless_restarts()
