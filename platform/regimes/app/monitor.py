"""The ``monitor`` use case (plan 9.5): per timeframe, is the champion due for a retrain?
And, with ``act``, retrain and roll the new model out where a trigger fired.

The triggers (:mod:`regimes.drift.triggers`) read the champion's drift report (which
replays it over the stored bars) and the same replay's log-likelihood, entropy and
states; the cadence counts days since the champion's promotion. A fired timeframe
goes ``train`` -> ``rollout`` through the orchestrator (as Prefect subflows inside the
scheduled flow ``monitor``). A timeframe whose rollout is already under way (a model in
the shadow role) resumes that rollout instead of training another model.

Every run writes its verdicts to ``reports/monitor/<stamp>.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from regimes.app.progress import Notify, silent
from regimes.app.workspace import Workspace
from regimes.drift.triggers import (
    Trigger,
    cadence_trigger,
    drift_triggers,
    entropy_trigger,
    loglik_triggers,
    occupancy_trigger,
    window_rows,
)
from regimes.errors import BadInputError
from regimes.paths import check_timeframe_name
from regimes.timeframes import TIMEFRAMES


@dataclass(frozen=True)
class MonitorRequest:
    """Which timeframes (None: every one with a champion), whether to act on a fired
    trigger, and how the retrain and rollout run."""

    timeframes: tuple[str, ...] | None = None
    act: bool = False
    seed: int = 0
    grid: dict | None = None
    shadow_wait_s: float = 0.0
    replay_shadow: bool = False
    """Give a new shadow its answers by replaying the stored bars (a backfill) instead of
    waiting for the live service to feed it: the agreement gate then judges it at once."""
    now: str | None = None
    """The time the cadence is counted to (default: now, UTC)."""


@dataclass
class Verdict:
    """One timeframe's triggers."""

    timeframe: str
    champion: str | None
    triggers: list[Trigger] = field(default_factory=list)
    drift_report: str | None = None
    action: dict | None = None

    @property
    def fired(self) -> list[Trigger]:
        return [t for t in self.triggers if t.fired]

    def as_dict(self) -> dict[str, Any]:
        return {
            "timeframe": self.timeframe,
            "champion": self.champion,
            "fired": [t.name for t in self.fired],
            "triggers": [t.as_dict() for t in self.triggers],
            "drift_report": self.drift_report,
            "action": self.action,
        }

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Verdict:
        triggers = [Trigger(**t) for t in row["triggers"]]
        return cls(row["timeframe"], row["champion"], triggers, row["drift_report"], row["action"])


@dataclass
class MonitorRun:
    verdicts: list[Verdict]
    report: str
    seconds: float

    def summary(self) -> list[str]:
        lines = []
        for v in self.verdicts:
            if v.champion is None:
                lines.append(f"monitor {v.timeframe}: no champion, nothing to watch")
                continue
            state = f"{len(v.fired)} trigger(s) fired" if v.fired else "no trigger fired"
            lines.append(f"monitor {v.timeframe} (champion {v.champion}): {state}")
            lines += ["   " + t.line() for t in v.triggers]
            if v.action:
                lines.append(f"   action: {v.action['outcome']}")
        lines.append(f"   verdicts: {self.report}")
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {
            "command": "monitor",
            "verdicts": [v.as_dict() for v in self.verdicts],
            "report": self.report,
            "seconds": round(self.seconds, 1),
        }


def check_timeframe(
    workspace: Workspace, timeframe: str, now: str | None = None, say: Notify = silent
) -> Verdict:
    """The triggers of ``timeframe``'s champion (none without a champion)."""
    from regimes.app.drift import DriftRequest, drift_with_answers
    from regimes.config.gates import load_gates

    timeframe = check_timeframe_name(timeframe)
    registry = workspace.registry
    champion = registry.champion(timeframe)
    if champion is None:
        return Verdict(timeframe, None)
    gates = load_gates(workspace.config_dir).for_timeframe(timeframe)
    run, answers, windows = drift_with_answers(workspace, DriftRequest(timeframe, champion), say)
    reference, current, trailing = window_rows(answers, windows)
    models = registry.current(timeframe).set_index("model_id")
    since = pd.Timestamp(models.loc[champion, "since"])
    since = since.tz_localize("UTC") if since.tzinfo is None else since
    cadence = workspace.config.timeframes.timeframes[timeframe].retrain_cadence
    window_bars = current["ts"].nunique() or gates.current_bars
    triggers = [
        cadence_trigger(since, _now(now), cadence),
        *loglik_triggers(
            reference,
            current,
            trailing,
            window_bars,
            decay_limit=gates.trigger_loglik_decay,
            z_limit=gates.trigger_loglik_z,
            trailing_windows=gates.trigger_trailing_windows,
            min_rows=gates.min_rows,
        ),
        entropy_trigger(
            reference,
            current,
            gates.trigger_entropy_quantile,
            gates.trigger_entropy_share,
            gates.min_rows,
        ),
        occupancy_trigger(reference, current, gates.trigger_top_state_share, gates.min_rows),
        *drift_triggers(run.checks),
    ]
    return Verdict(timeframe, champion, triggers, run.report["report_id"])


def _now(text: str | None) -> pd.Timestamp:
    if text is None:
        return pd.Timestamp.now(tz="UTC")
    try:
        stamp = pd.Timestamp(text)
    except ValueError:
        raise BadInputError(f"--now: not a time: {text!r}") from None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def respond(
    workspace: Workspace,
    verdict: Verdict,
    request: MonitorRequest,
    orchestrator,
    executor,
    say: Notify = silent,
) -> dict:
    """Retrain and roll out a fired timeframe (or resume the rollout of its shadow); a
    refused gate or a stopped rollout is an outcome, not an error."""
    from regimes.app import training
    from regimes.app.failures import USER_MISTAKES
    from regimes.app.rollouts import RolloutRequest, run_rollout

    timeframe = verdict.timeframe
    shadows = workspace.registry.shadows(timeframe)
    action: dict[str, Any] = {"timeframe": timeframe}
    try:
        if shadows:
            model_id = shadows[-1]
            action["trained"] = None
            say(f"monitor {timeframe}: resuming the rollout of shadow {model_id}")
        else:
            say(f"monitor {timeframe}: retraining ({', '.join(t.name for t in verdict.fired)})")
            train_request = training.TrainRequest((timeframe,), None, request.grid, request.seed)
            [row] = training.train(workspace, train_request, executor, orchestrator, say).models
            model_id = row["model_id"]
            action["trained"] = model_id
        if request.replay_shadow:
            action["replayed"] = replay_for_shadow(workspace, timeframe, model_id, executor, say)
        rollout_request = RolloutRequest(
            timeframe, model_id, actor="monitor", wait_s=request.shadow_wait_s
        )
        result = run_rollout(workspace, rollout_request, orchestrator, say)
        action["steps"] = result.steps
        action["outcome"] = f"{model_id} is the champion of {timeframe}"
    except USER_MISTAKES as exc:
        action["outcome"] = f"stopped: {exc}"
    return action


def replay_for_shadow(workspace, timeframe, model_id, executor, say: Notify = silent) -> int:
    """The model's and the champion's answers over the stored bars (resumable backfills:
    what is stored already is not written again), so a shadow has answers beside the
    champion's without waiting for live bars."""
    from regimes.app.backfill import BackfillRequest, plan_units, run_backfill_units

    rows = 0
    for model in dict.fromkeys([workspace.registry.champion(timeframe), model_id]):
        if model is None:
            continue
        units = plan_units(workspace, BackfillRequest(timeframe, model, symbols_per_unit=8))
        results = run_backfill_units(workspace, units, 50_000, executor)
        failed = [r for r in results if r.error]
        if failed:
            raise BadInputError(f"replay of {model} over the stored bars failed: {failed[0].error}")
        rows += sum(r.rows_written + r.rows_already_stored for r in results)
    say(f"monitor {timeframe}: {model_id} and the champion replayed over the stored bars")
    return rows


def monitor(
    workspace: Workspace,
    request: MonitorRequest,
    orchestrator,
    executor,
    say: Notify = silent,
) -> MonitorRun:
    """Check every requested timeframe; with ``request.act``, respond where one fired."""
    started = time.perf_counter()
    timeframes = [check_timeframe_name(t) for t in (request.timeframes or TIMEFRAMES)]
    verdicts = [check_timeframe(workspace, tf, request.now, say) for tf in timeframes]
    report = act_on(workspace, verdicts, request, orchestrator, executor, say)
    return MonitorRun(verdicts, report, time.perf_counter() - started)


def act_on(
    workspace: Workspace,
    verdicts: list[Verdict],
    request: MonitorRequest,
    orchestrator,
    executor,
    say: Notify = silent,
) -> str:
    """With ``request.act``, respond where a trigger fired (the action is kept on its
    verdict); write the verdicts and return where."""
    for verdict in verdicts:
        if verdict.fired and request.act:
            verdict.action = respond(workspace, verdict, request, orchestrator, executor, say)
            say(f"monitor {verdict.timeframe}: {verdict.action['outcome']}")
    return write_verdicts(workspace, verdicts)


def run_monitor(
    workspace: Workspace,
    request: MonitorRequest,
    orchestrator,
    executor,
    say: Notify = silent,
) -> MonitorRun:
    """:func:`monitor` run by ``orchestrator`` (the Prefect flow ``monitor``, or here)."""
    if request.shadow_wait_s < 0:
        raise BadInputError("--wait: expected >= 0 seconds")
    _now(request.now)  # a bad --now is refused before anything runs
    started = time.perf_counter()
    outcome = orchestrator.monitor(workspace, request, executor, say)
    verdicts = [Verdict.from_dict(row) for row in outcome["verdicts"]]
    return MonitorRun(verdicts, outcome["report"], time.perf_counter() - started)


def write_verdicts(workspace: Workspace, verdicts: list[Verdict]) -> str:
    """The run's verdicts as JSON under ``reports/monitor/`` (written whole, then renamed)."""
    folder = workspace.reports_dir / "monitor"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = folder / f"monitor-{stamp}.json"
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps([v.as_dict() for v in verdicts], indent=1, default=str))
    partial.replace(path)
    return str(path)
