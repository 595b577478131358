"""The ``rollout`` flow (plan 9.4): drift gate -> shadow -> shadow bars -> agreement
gate -> champion, one task per step with retries for what is transient; a failing gate
stops the flow with its reasons (returned as data, not retried) and leaves the model
where it was. The steps are the core use case's (``regimes.app.rollouts``)."""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from regimes.app.failures import USER_MISTAKES, as_failure
from regimes.app.rollouts import STEPS, RolloutRequest
from regimes.app.workspace import Workspace
from regimes.flows.recovery import refuse_endless_restarts


@task(retries=2, retry_delay_seconds=5, task_run_name="rollout-{step_name}")
def rollout_step(step_name: str, request: dict, home: str, db_url: str, config_dir: str) -> dict:
    logger = get_run_logger()
    step = {s.__name__: s for s in STEPS}[step_name]
    try:
        with Workspace.open(home, db_url, config_dir) as workspace:
            outcome = step(workspace, RolloutRequest(**request), logger.info)
    except USER_MISTAKES as exc:
        logger.info("rollout %s stopped: %s", step_name, exc)
        return as_failure(exc)
    logger.info("rollout %s: %s", step_name, outcome["outcome"])
    return outcome


@flow(name="rollout", log_prints=False)
def rollout(request: dict, home: str, db_url: str, config_dir: str) -> list[dict]:
    """The steps in order; stops at the first that fails."""
    refuse_endless_restarts()  # a crashed run is rescheduled (recovery.py)
    outcomes = []
    for step in STEPS:
        outcome = rollout_step(step.__name__, request, home, db_url, config_dir)
        outcomes.append(outcome)
        if "expected_error" in outcome:
            break
    return outcomes
