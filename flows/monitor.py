"""The scheduled ``monitor`` flow (plan 9.5): per timeframe, the champion's retrain
triggers (a task each, retried once); where one fired, the ``train`` flow and then the
``rollout`` flow run as subflows (``regimes.app.monitor.act_on``). Thin: what fires and
what a response does are the core use case's."""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from regimes.app.executors import executor_named
from regimes.app.failures import FAILURE_KEY, USER_MISTAKES, as_failure
from regimes.app.monitor import MonitorRequest, Verdict, act_on, check_timeframe
from regimes.app.orchestrators import PrefectOrchestrator
from regimes.app.workspace import Workspace
from regimes.flows.recovery import refuse_endless_restarts
from regimes.timeframes import TIMEFRAMES


@task(retries=1, retry_delay_seconds=5, task_run_name="monitor-{timeframe}")
def check(timeframe: str, home: str, db_url: str, config_dir: str, now: str | None) -> dict:
    logger = get_run_logger()
    try:
        with Workspace.open(home, db_url, config_dir) as workspace:
            verdict = check_timeframe(workspace, timeframe, now, logger.info)
    except USER_MISTAKES as exc:
        logger.info("monitor %s: not checked: %s", timeframe, exc)
        return as_failure(exc)
    for trigger in verdict.triggers:
        logger.info("monitor %s: %s", timeframe, trigger.line())
    return verdict.as_dict()


@flow(name="monitor", log_prints=False)
def monitor(
    home: str,
    db_url: str,
    config_dir: str,
    timeframes: list[str] | None = None,
    act: bool = True,
    seed: int = 0,
    grid: dict | None = None,
    executor: str = "local",
    replay_shadow: bool = False,
    shadow_wait_s: float = 0.0,
    now: str | None = None,
) -> dict:
    """Check each timeframe; with ``act``, retrain and roll out where a trigger fired."""
    refuse_endless_restarts()  # a crashed run is rescheduled (recovery.py)
    logger = get_run_logger()
    request = MonitorRequest(
        tuple(timeframes) if timeframes else None,
        act,
        seed,
        grid,
        shadow_wait_s,
        replay_shadow,
        now,
    )
    rows = [check(tf, home, db_url, config_dir, now) for tf in (timeframes or TIMEFRAMES)]
    for row in rows:
        if FAILURE_KEY in row:
            return row  # a user mistake, as data: the caller raises it as one line
    verdicts = [Verdict.from_dict(row) for row in rows]
    with Workspace.open(home, db_url, config_dir) as workspace:
        report = act_on(
            workspace,
            verdicts,
            request,
            PrefectOrchestrator(),
            executor_named(executor),
            logger.info,
        )
    return {"verdicts": [v.as_dict() for v in verdicts], "report": report}
