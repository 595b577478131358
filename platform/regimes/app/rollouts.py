"""The ``rollout`` use case (plan 9.4): a candidate goes drift gate -> shadow -> (the
shadow answers beside the champion until it has ``shadow_min_bars`` bars) -> agreement
gate -> champion. Each step is a function the Prefect flow ``rollout`` runs as a task
(:mod:`regimes.flows.rollout`) and the direct orchestrator calls in turn; a failing gate
stops the rollout with its reasons and leaves the model where it was.

One rollout per timeframe at a time: a lock file under ``<home>/locks/`` taken with
``O_EXCL`` refuses a second one (a lock left by a process that died is taken over).
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from regimes.app import rollout
from regimes.app.progress import Notify, silent
from regimes.app.workspace import Workspace
from regimes.errors import BadInputError


@dataclass(frozen=True)
class RolloutRequest:
    timeframe: str
    model_id: str
    actor: str = "rollout"
    wait_s: float = 0.0  # how long to wait for the shadow's bars (0: look once)
    poll_s: float = 5.0


@dataclass
class RolloutResult:
    timeframe: str
    model_id: str
    steps: list[dict] = field(default_factory=list)

    def summary(self) -> list[str]:
        lines = [f"rollout of {self.model_id} ({self.timeframe}):"]
        lines += [f"   {s['step']}: {s['outcome']}" for s in self.steps]
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {
            "command": "rollout",
            "timeframe": self.timeframe,
            "model_id": self.model_id,
            "steps": self.steps,
        }


def to_shadow(workspace: Workspace, request: RolloutRequest, say: Notify = silent) -> dict:
    """Step 1: the drift gate, then shadow (a model already a shadow goes on)."""
    role = workspace.registry.role(request.timeframe, request.model_id)
    if role == "shadow":
        return {"step": "shadow", "outcome": "already a shadow"}
    promoted = rollout.promote(
        workspace,
        rollout.PromoteRequest(
            request.timeframe,
            request.model_id,
            request.actor,
            "rollout: drift gate passed",
            to="shadow",
        ),
        say,
    )
    evidence = promoted.transition.evidence or {}
    return {"step": "shadow", "outcome": "passed", "drift_report": evidence.get("drift_report")}


def wait_for_shadow(workspace: Workspace, request: RolloutRequest, say: Notify = silent) -> dict:
    """Step 2: until the shadow has answered ``shadow_min_bars`` bars beside the champion
    (their stored answers), or ``wait_s`` has passed."""
    from regimes.app.drift import shadow_comparison
    from regimes.config.gates import load_gates

    gates = load_gates(workspace.config_dir).for_timeframe(request.timeframe)
    deadline = time.monotonic() + request.wait_s
    while True:
        comparison = shadow_comparison(
            workspace, request.timeframe, request.model_id, 10 * gates.shadow_min_bars
        )
        bars = comparison["bars_compared"] if comparison else 0
        if bars >= gates.shadow_min_bars:
            return {"step": "shadow bars", "outcome": f"{bars} bars", "bars": bars}
        if time.monotonic() >= deadline:
            raise BadInputError(
                f"rollout of {request.model_id}: the shadow has answered {bars} bar(s) beside "
                f"the champion, {gates.shadow_min_bars} needed (waited {request.wait_s:.0f}s); "
                "it stays a shadow — run the rollout again later"
            )
        say(f"rollout: shadow at {bars}/{gates.shadow_min_bars} bars, waiting")
        time.sleep(request.poll_s)


def to_champion(workspace: Workspace, request: RolloutRequest, say: Notify = silent) -> dict:
    """Step 3: the drift and agreement gates, then champion."""
    promoted = rollout.promote(
        workspace,
        rollout.PromoteRequest(
            request.timeframe,
            request.model_id,
            request.actor,
            "rollout: drift and agreement gates passed",
        ),
        say,
    )
    return {
        "step": "champion",
        "outcome": f"passed (replacing {promoted.previous_champion})",
        "previous": promoted.previous_champion,
    }


STEPS = (to_shadow, wait_for_shadow, to_champion)


def run_rollout(
    workspace: Workspace, request: RolloutRequest, orchestrator, say: Notify = silent
) -> RolloutResult:
    """The three steps under the timeframe's rollout lock, run by ``orchestrator``
    (the Prefect flow ``rollout``, or in this process)."""
    if request.wait_s < 0 or request.poll_s <= 0:
        raise BadInputError("--wait: expected >= 0 seconds (and a positive poll interval)")
    with rollout_lock(workspace, request.timeframe):
        steps = orchestrator.rollout(workspace, request, say)
    return RolloutResult(request.timeframe, request.model_id, steps)


@contextmanager
def rollout_lock(workspace: Workspace, timeframe: str):
    """Refuse a second rollout of ``timeframe`` while one runs (this machine's home)."""
    folder = workspace.home / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"rollout-{timeframe}.lock"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            holder = _holder(path)
            if holder is not None and _alive(holder):
                raise BadInputError(
                    f"a rollout of {timeframe} is already running (pid {holder}, lock {path}); "
                    "one rollout per timeframe at a time"
                ) from None
            path.unlink(missing_ok=True)  # left by a process that died: take it over
    else:
        raise BadInputError(f"could not take the rollout lock {path}")
    try:
        os.write(fd, json.dumps({"pid": os.getpid()}).encode())
        os.close(fd)
        yield
    finally:
        path.unlink(missing_ok=True)


def _holder(path) -> int | None:
    try:
        return int(json.loads(path.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
