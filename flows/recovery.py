"""Flow runs whose machine died are run again (issue 18).

A worker killed with its flow-run process (a dead machine, an evicted pod) leaves the
run ``Running`` for ever: nothing is left to report its end, and Prefect 3 does not
retry a crashed flow run by itself (flow ``retries`` apply to ``Failed`` only). Two
automations on the Prefect server close the gap, for the flows of this repository only:

1. ``regimes: crash unresponsive flow runs`` — Prefect's zombie detection: a flow run
   sends a heartbeat event every ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds; when
   none (and no final state) follows within ``miss_factor`` heartbeats, the run is
   marked ``Crashed``.
2. ``regimes: reschedule crashed flow runs`` — a ``Crashed`` run of ours goes back to
   ``Scheduled`` (``Rescheduled``), the same flow run with the same parameters, and the
   next worker of the pool runs it again. This is safe because the flows are
   idempotent: ``backfill`` writes only the keys not yet stored, ``train`` derives its
   model_id from its inputs, ``rollout`` steps check the registry role first.

A run that crashes on every attempt would be rescheduled on every crash; each flow
therefore calls :func:`refuse_endless_restarts` first, which fails (``Failed``, not
``Crashed``, so not rescheduled again) once the run was started ``MAX_RUNS`` times.

``python -m regimes.flows.recovery`` creates (or replaces) both automations on the
server at ``PREFECT_API_URL``; run it once after ``prefect deploy``.
"""

from __future__ import annotations

import argparse
from datetime import timedelta

from prefect.automations import Automation
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification

from regimes.errors import ConfigError

FLOWS = ("train", "backfill", "rollout", "monitor")
CRASH = "regimes: crash unresponsive flow runs"
RESCHEDULE = "regimes: reschedule crashed flow runs"
MAX_RUNS = 3
"""A run started this many times (the first attempt and two restarts) is not started again."""

FINAL = ("Completed", "Failed", "Cancelled", "Crashed")


def _ours() -> ResourceSpecification:
    return ResourceSpecification(
        {"prefect.resource.role": "flow", "prefect.resource.name": list(FLOWS)}
    )


def recovery_automations(heartbeat_seconds: int, miss_factor: float = 2.0) -> list[Automation]:
    """The two automations (not yet created); ``heartbeat_seconds`` must be the flow runs'
    ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``."""
    if heartbeat_seconds < 30:
        raise ConfigError(
            f"heartbeat_seconds: expected >= 30 (Prefect's minimum flow run heartbeat "
            f"frequency), got {heartbeat_seconds}"
        )
    if miss_factor <= 1:
        raise ConfigError(f"miss_factor: expected > 1 heartbeat, got {miss_factor}")
    flow_runs = ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]})
    crash = Automation(
        name=CRASH,
        description="Mark a regimes flow run Crashed when its heartbeats stop.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{s}" for s in FINAL)},
            match=flow_runs,
            match_related=_ours(),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=heartbeat_seconds * miss_factor),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {heartbeat_seconds * miss_factor:.0f}s: "
                "its worker or machine is gone",
            )
        ],
    )
    reschedule = Automation(
        name=RESCHEDULE,
        description="Run a crashed regimes flow run again (the flows are idempotent).",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Crashed"},
            match=flow_runs,
            match_related=_ours(),
            for_each={"prefect.resource.id"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.SCHEDULED,
                name="Rescheduled",
                message="crashed; rescheduled for the next worker",
            )
        ],
    )
    return [crash, reschedule]


def ensure_recovery_automations(heartbeat_seconds: int, miss_factor: float = 2.0) -> list[str]:
    """Create both automations on the current Prefect server, replacing earlier ones of
    the same names (so a new heartbeat frequency takes effect); returns their ids."""
    ids = []
    for automation in recovery_automations(heartbeat_seconds, miss_factor):
        while (old := _named(automation.name)) is not None:
            old.delete()
        ids.append(str(automation.create().id))
    return ids


def _named(name: str) -> Automation | None:
    try:
        return Automation.read(name=name)
    except ValueError:  # Prefect's "Automation with name ... not found"
        return None


def refuse_endless_restarts(max_runs: int = MAX_RUNS) -> None:
    """Fail the current flow run (a plain ``Failed``, which is not rescheduled) when it
    has been started ``max_runs`` times already: a run that crashes every time stops."""
    from prefect.runtime import flow_run

    if flow_run.run_count > max_runs:
        raise RuntimeError(
            f"flow run {flow_run.name} was started {flow_run.run_count - 1} times without "
            f"finishing (crashed and rescheduled, or retried by hand); not starting it "
            f"again (the limit is {max_runs} starts): find why it crashes (worker logs, "
            "memory) and start a new run"
        )


def main() -> None:  # exercised by tests/integration/test_worker_kill.py in a subprocess
    from prefect.settings import get_current_settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--heartbeat-seconds",
        type=int,
        default=get_current_settings().flows.heartbeat_frequency,
        help="the flow runs' PREFECT_FLOWS_HEARTBEAT_FREQUENCY (default: this process's)",
    )
    parser.add_argument("--miss-factor", type=float, default=2.0)
    args = parser.parse_args()
    for automation_id in ensure_recovery_automations(args.heartbeat_seconds, args.miss_factor):
        print(automation_id)


if __name__ == "__main__":
    main()
