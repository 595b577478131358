"""Retrain triggers and the scheduled ``monitor`` flow (plan 9.5): the triggers stay
quiet on the market the champion was trained on and fire on a volatility shock (and on
the cadence); the deployments of ``infra/prefect.yaml`` are registered on a real Prefect
server and a real worker of a process work pool runs one triggered cycle, monitor ->
train -> rollout, end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from regimes.app.monitor import check_timeframe
from regimes.app.workspace import Workspace
from regimes.data import sql as db
from regimes.data.shocks import scale_volatility
from tests.conftest import REPO_ROOT
from tests.integration.conftest import TWO_MODELS_TF as TF
from tests.integration.conftest import copy_home

pytestmark = pytest.mark.integration
# Drift checks lenient (the synthetic regimes persist for days, so a 10-day window drifts
# from the training one by design); the statistical triggers keep their defaults.
GATES = (
    "defaults: {champion_occupancy_psi: 50, occupancy_psi: 50, loglik_psi: 50,\n"
    "           max_drifted_share: 1.0, shadow_min_bars: 100, shadow_agreement: 0.2}\n"
    "timeframes: {15m: {current_bars: 260}}\n"
)


def _home(two_models_home, tmp_path, shocked: bool):
    source, models = two_models_home
    home = copy_home(source, tmp_path / "home")
    config = home / "config"
    shutil.copytree(REPO_ROOT / "config", config, ignore=shutil.ignore_patterns("*.py"))
    (config / "gates.yaml").write_text(GATES)
    if shocked:
        with Workspace.open(home=home, environ={}) as workspace:
            bars = db.read_bars(workspace.engine, TF)
            days = sorted(bars["ts"].dt.normalize().unique())
            db.upsert_bars(workspace.engine, scale_volatility(bars, days[-5], 3.0))
    return home, models


def _fired(verdict) -> list[str]:
    return [t.name for t in verdict.fired]


def test_triggers_are_quiet_on_the_training_market_and_fire_on_a_shock(two_models_home, tmp_path):
    home, models = _home(two_models_home, tmp_path / "calm", shocked=False)
    with Workspace.open(home=home, environ={}) as workspace:
        verdict = check_timeframe(workspace, TF)
        assert verdict.champion == models[0].model_id
        assert _fired(verdict) == [], [t.line() for t in verdict.triggers]
        names = {t.name for t in verdict.triggers}
        assert {"cadence", "log-likelihood decay", "entropy spikes", "occupancy collapse"} <= names
        # 15m retrains monthly: 31 days after the promotion the cadence fires.
        since = workspace.registry.current(TF).set_index("model_id").loc[models[0].model_id]
        later = (pd.Timestamp(since["since"]) + pd.Timedelta(days=31)).isoformat()
        assert _fired(check_timeframe(workspace, TF, now=later)) == ["cadence"]

    home, _ = _home(two_models_home, tmp_path / "shock", shocked=True)
    with Workspace.open(home=home, environ={}) as workspace:
        verdict = check_timeframe(workspace, TF)
        assert "log-likelihood decay" in _fired(verdict), [t.line() for t in verdict.triggers]
        decay = next(t for t in verdict.triggers if t.name == "log-likelihood decay")
        assert decay.value > decay.limit
        assert verdict.drift_report and verdict.drift_report.startswith(f"drift-{TF}-")


def test_a_worker_runs_the_monitor_deployment_through_train_and_rollout(
    two_models_home, tmp_path, prefect_pool
):
    home, models = _home(two_models_home, tmp_path, shocked=True)
    deployed = prefect_pool.cli(
        "--no-prompt", "deploy", "--all", "--prefect-file", "infra/prefect.yaml"
    )
    assert "monitor/monitor" in deployed.stdout and "train/train-15m" in deployed.stdout
    prefect_pool.start_worker()
    parameters = {
        "home": str(home),
        "db_url": f"sqlite:///{home / 'regimes.db'}",
        "config_dir": str(home / "config"),
        "timeframes": [TF],
        "executor": "local",
        "grid": {"K": [6], "covariance": ["diag"]},
        "seed": 3,
        "replay_shadow": True,
    }
    # The run is started and watched by the prefect CLI in its own process: a Prefect
    # client in this process would outlive the server (its exit hooks start one).
    ran = subprocess.run(
        [sys.executable, "-m", "prefect", "deployment", "run", "monitor/monitor"]
        + ["--params", json.dumps(parameters), "--watch", "--watch-timeout", "600"],
        env=prefect_pool.env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=660,
    )
    assert ran.returncode == 0 and "Completed" in ran.stdout, (
        ran.stdout[-2000:],
        prefect_pool.logs(),
    )

    with Workspace.open(home=home, environ={}) as workspace:
        registry = workspace.registry
        events = registry.events()
        trained = events[(events["operation"] == "register") & (events["actor"] == "flow:train")]
        assert len(trained) == 1, events[["model_id", "operation", "actor"]]
        new_model = trained["model_id"].iloc[0]
        assert registry.champion(TF) == new_model
        assert registry.last_good_champion(TF) == models[0].model_id
        assert events["actor"].iloc[-1] == "monitor"
        reports = sorted((home / "reports" / "monitor").glob("monitor-*.json"))
        assert len(reports) == 1
        [verdict] = json.loads(reports[0].read_text())
        assert "log-likelihood decay" in verdict["fired"]
        assert verdict["action"]["trained"] == new_model
        assert [s["step"] for s in verdict["action"]["steps"]] == [
            "shadow",
            "shadow bars",
            "champion",
        ]


def test_monitor_through_the_cli_reports_and_refuses_bad_input(two_models_home, tmp_path):
    from tests.integration.test_cli import last_json, run

    home, models = _home(two_models_home, tmp_path, shocked=True)
    out = last_json(run("monitor", "--timeframe", TF, "--orchestrator", "direct", home=home))
    [verdict] = out["verdicts"]
    assert verdict["champion"] == models[0].model_id and verdict["action"] is None
    assert "log-likelihood decay" in verdict["fired"]
    assert os.path.isfile(out["report"])
    for args, message in [
        (("--now", "yesterday-ish"), "--now: not a time"),
        (("--wait", "-1"), "--wait: expected >= 0"),
        (("--timeframe", "4h"), "unknown timeframe"),
    ]:
        result = run("monitor", "--orchestrator", "direct", *args, home=home, check=False)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_demo_rollout_step(two_models_home, tmp_path):
    """Demo step 10 on the 15m models: the shadow rolled out, a rollback, the drifted days
    fail the drift gate, the monitor reports its triggers."""
    from regimes.app import rollout
    from regimes.app.demo_rollout import SHOCK_DAYS, run_rollout_step

    home, models = _home(two_models_home, tmp_path, shocked=False)
    # The predictive log-likelihood's PSI keeps its default limit (0.5): a model that
    # still explains the bars passes it, the volatility shock does not.
    (home / "config" / "gates.yaml").write_text(GATES.replace(" loglik_psi: 50,", ""))
    lines: list[str] = []
    with Workspace.open(home=home, environ={}) as workspace:
        shadow = models[1].model_id
        request = rollout.PromoteRequest(TF, shadow, "t", "t", to="shadow", force=True)
        rollout.promote(workspace, request)
        out = run_rollout_step(workspace, shadow, lines.append, timeframe=TF, drift_timeframe=TF)
        assert out["rollout"]["outcome"] == "champion", lines
        assert out["rollback"]["champion"] == models[0].model_id
        assert workspace.registry.champion(TF) == models[0].model_id
        drifted, calm = out["drift"]["drifted days"], out["drift"]["calm days before"]
        assert drifted["failed"] == ["log-likelihood PSI"] and calm["passed"], lines
        assert os.path.isfile(drifted["html"]) and os.path.isfile(drifted["json"])
        [verdict] = out["monitor"]["verdicts"]
        assert verdict["champion"] == models[0].model_id and verdict["fired"], lines
        days = sorted(db.read_bars(workspace.engine, "1m")["ts"].dt.normalize().unique())
        assert len(days) > SHOCK_DAYS
    text = "\n".join(lines)
    assert "rollout" in text and "rollback" in text and "FAIL" in text
