"""The demo's rollout step (plan 9.2, 9.4, 9.5): the 1h shadow rolled out through its
gates on the market it knows, a rollback, then a drifted market (volatility x3 over
its last days) that fails the drift gate with its reasons and fires the retrain
triggers; the report paths."""

from __future__ import annotations

import json

import pandas as pd

from regimes.app import data, rollout
from regimes.app.demo_service import SHADOW_TIMEFRAME as TIMEFRAME
from regimes.app.executors import LocalExecutor
from regimes.app.failures import USER_MISTAKES
from regimes.app.orchestrators import DirectOrchestrator
from regimes.app.progress import Notify
from regimes.app.workspace import Workspace

DRIFT_TIMEFRAME = "15m"
SHOCK_DAYS = 5
SHOCK_FACTOR = 3.0


def run_rollout_step(
    workspace: Workspace,
    shadow: str | None,
    say: Notify,
    timeframe: str = TIMEFRAME,
    drift_timeframe: str = DRIFT_TIMEFRAME,
) -> dict:
    """Rollout of ``shadow`` (its answers replayed over the stored bars first) and a
    rollback on ``timeframe``; the drifted days' drift reports and the monitor's
    triggers on ``drift_timeframe`` (more bars per day than 1h: a few days make a
    window the gate judges)."""
    registry = workspace.registry
    if registry.champion(timeframe) is None:
        say(f"   no {timeframe} champion: nothing to roll out")
        return {}
    out: dict = {"rollout": _rollout(workspace, shadow, say, timeframe)}
    if registry.last_good_champion(timeframe) is not None:
        back = rollout.rollback(
            workspace,
            rollout.RollbackRequest(timeframe, "demo", "the demo shows a rollback"),
        )
        say("")
        say(f"`regimes rollback --timeframe {timeframe}`:")
        for line in back.summary():
            say("   " + line)
        out["rollback"] = back.as_dict()
    say("")
    if registry.champion(drift_timeframe) is None:
        say(f"   no {drift_timeframe} champion: no drift gate to show")
        return out
    out["drift"] = _drifted_days(workspace, say, drift_timeframe)
    say("")
    out["monitor"] = _monitor(workspace, say, drift_timeframe)
    return out


def _rollout(workspace: Workspace, shadow: str | None, say: Notify, timeframe: str) -> dict:
    from regimes.app.monitor import replay_for_shadow
    from regimes.app.rollouts import RolloutRequest, run_rollout

    if shadow is None or workspace.registry.role(timeframe, shadow) != "shadow":
        say(f"   no {timeframe} shadow to roll out")
        return {"outcome": "no shadow"}
    say(
        f"`regimes rollout --timeframe {timeframe} --model-id {shadow}` (its answers replayed "
        "over the stored bars first, so the agreement gate can judge it now):"
    )
    replay_for_shadow(workspace, timeframe, shadow, LocalExecutor(), lambda _: None)
    request = RolloutRequest(timeframe, shadow, actor="demo")
    try:
        result = run_rollout(workspace, request, DirectOrchestrator("demo"), lambda _: None)
    except USER_MISTAKES as exc:
        say(f"   refused: {exc}")
        return {"outcome": f"refused: {exc}"}
    for step in result.steps:
        say(f"   {step['step']}: {step['outcome']}")
    evidence = workspace.registry.current(timeframe).set_index("model_id").loc[shadow, "evidence"]
    for check in json.loads(evidence).get("checks", []) if evidence else []:
        verdict = "pass" if check["passed"] else "FAIL"
        say(f"      {verdict} {check['name']}: {_value(check['value'])}")
    return {"outcome": "champion", "steps": result.steps}


def _value(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _drifted_days(workspace: Workspace, say: Notify, timeframe: str) -> dict:
    """Volatility x3 over the last days of the synthetic 1m bars, 1h resampled again,
    and the champion's drift report on those days against the days before them."""
    from regimes.app.drift import DriftRequest, drift
    from regimes.data import sql as db
    from regimes.data.shocks import scale_volatility

    engine = workspace.engine
    symbols = sorted(s for s in db.list_symbols(engine, "1m") if s.startswith("SYN"))
    times = db.distinct_bar_times(engine, timeframe)
    zone = workspace.config.timeframes.session.timezone
    days = pd.DatetimeIndex(times).tz_convert(zone).normalize().unique()
    shock_start = days[-SHOCK_DAYS].tz_convert("UTC")
    calm_start = days[-2 * SHOCK_DAYS].tz_convert("UTC")
    end = pd.Timestamp(times[-1]) + pd.Timedelta(timeframe)
    bars = db.read_bars(engine, "1m", symbols, shock_start)
    db.upsert_bars(engine, scale_volatility(bars, shock_start, SHOCK_FACTOR))
    data.resample(workspace, data.ResampleRequest(tuple(symbols), (timeframe,)))
    say(
        f"a drifted market: volatility x{SHOCK_FACTOR:g} over the last {SHOCK_DAYS} days of the "
        f"{len(symbols)} synthetic symbols (1m bars from {shock_start}), {timeframe} resampled"
    )
    champion = workspace.registry.champion(timeframe)
    reports = {}
    for name, window in (
        ("calm days before", (calm_start, shock_start)),
        ("drifted days", (shock_start, end)),
    ):
        run = drift(
            workspace,
            DriftRequest(timeframe, champion, current=tuple(t.isoformat() for t in window)),
        )
        say(
            f"drift gate of champion {champion} on the {name} ({window[0]:%Y-%m-%d} .. "
            f"{window[1]:%Y-%m-%d}): {'PASS' if run.passed else 'FAIL'}"
        )
        for check in run.checks:
            say("   " + check.line())
        say(f"   report: {run.report['html']}")
        reports[name] = {
            "passed": run.passed,
            "failed": [c.name for c in run.failed_checks],
            "html": run.report["html"],
            "json": run.report["json"],
        }
    return reports


def _monitor(workspace: Workspace, say: Notify, timeframe: str) -> dict:
    from regimes.app.monitor import MonitorRequest, run_monitor

    say(f"`regimes monitor --timeframe {timeframe}` (retrain triggers of the champion):")
    run = run_monitor(
        workspace,
        MonitorRequest((timeframe,)),
        DirectOrchestrator("demo"),
        LocalExecutor(),
        lambda _: None,
    )
    for line in run.summary()[1:]:
        say(line)
    return run.as_dict()
