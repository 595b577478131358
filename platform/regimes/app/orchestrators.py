"""Who drives a multi-step run: called directly, or as a Prefect flow.

The use cases take an :class:`Orchestrator`; the CLI picks one by its ``--orchestrator``
flag (:func:`orchestrator_named`). Both run the same unit functions
(:func:`regimes.app.training.train_unit`, :func:`regimes.app.backfill.run_backfill_units`);
the Prefect one is the only place that reaches ``regimes.flows``. A flow reports a user
mistake as data (see :mod:`regimes.app.failures`), and it is raised again here, so a
mistake is the same one-line error whichever orchestrator ran it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

from regimes.app.failures import raise_failure
from regimes.app.progress import Notify, Progress, no_progress, silent
from regimes.errors import BadInputError

if TYPE_CHECKING:
    from regimes.app.backfill import BackfillRequest
    from regimes.app.executors import Executor
    from regimes.app.training import TrainRequest
    from regimes.app.workspace import Workspace
    from regimes.storage.backfill import BackfillResult, BackfillUnit

ORCHESTRATORS = frozenset({"direct", "prefect"})


class Orchestrator(Protocol):
    """Runs training and backfill units, directly or through flows."""

    name: str

    def session(self, workspace: Workspace, notify: Notify = silent):
        """A context in which several runs share one start-up (e.g. one Prefect server)."""

    def train(
        self,
        workspace: Workspace,
        request: TrainRequest,
        units: Sequence[tuple[str, list[str] | None]],
        executor: Executor,
        notify: Notify = silent,
    ) -> list[dict]:
        """One summary row per trained unit."""

    def backfill(
        self,
        workspace: Workspace,
        request: BackfillRequest,
        units: Sequence[BackfillUnit],
        executor: Executor,
        notify: Notify = silent,
        progress: Progress = no_progress,
    ) -> list[BackfillResult]:
        """One result per unit; a failed unit carries its error."""


class DirectOrchestrator:
    """The units called in this process, one after the other.

    Parameters
    ----------
    actor : str
        Who the registry records as registering the trained candidates.
    """

    name = "direct"

    def __init__(self, actor: str = "cli:train") -> None:
        self.actor = actor

    @contextmanager
    def session(self, workspace: Workspace, notify: Notify = silent) -> Iterator[None]:
        yield None

    def train(self, workspace, request, units, executor, notify=silent):
        from regimes.app.training import train_unit

        return [
            train_unit(
                workspace,
                timeframe,
                symbols=unit_symbols,
                grid=request.grid,
                seed=request.seed,
                executor=executor,
                actor=self.actor,
                scope=request.scope,
                report=request.report,
            )
            for timeframe, unit_symbols in units
        ]

    def backfill(self, workspace, request, units, executor, notify=silent, progress=no_progress):
        from regimes.app.backfill import run_backfill_units

        notify(f"backfill: {len(units)} unit(s) of {request.model_id} {executor.describe()}")
        return run_backfill_units(workspace, units, request.rows_per_commit, executor, progress)

    def rollout(self, workspace, request, notify=silent):
        from regimes.app.rollouts import STEPS

        return [step(workspace, request, notify) for step in STEPS]

    def monitor(self, workspace, request, executor, notify=silent) -> dict:
        """The monitor's verdicts (and responses) in this process."""
        from regimes.app.monitor import monitor

        run = monitor(workspace, request, self, executor, notify)
        return {"verdicts": [v.as_dict() for v in run.verdicts], "report": run.report}


class PrefectOrchestrator:
    """The ``train`` and ``backfill`` Prefect flows, on the server at ``PREFECT_API_URL``
    or on a local one started for the session (and stopped after it)."""

    name = "prefect"

    def __init__(self) -> None:
        self._server = None

    @contextmanager
    def session(self, workspace: Workspace, notify: Notify = silent) -> Iterator[str]:
        if self._server is not None:  # nested: the outer session owns the server
            yield self._server.api_url
            return
        from regimes.flows.server import ensure_prefect_server

        self._server = ensure_prefect_server(workspace.prefect_home)
        try:
            yield self._server.api_url
        finally:
            server, self._server = self._server, None
            server.stop()

    def train(self, workspace, request, units, executor, notify=silent):
        from regimes.flows.train import train as train_flow

        with self.session(workspace) as api_url:
            notify(f"train: Prefect flow 'train' on {api_url}, grid on {executor.name}")
            rows = train_flow(
                timeframes=list(request.timeframes),
                scope=request.scope,
                symbols=list(request.symbols) if request.symbols else None,
                grid=request.grid,
                seed=request.seed,
                executor=executor.name,
                report=request.report,
                **workspace.params(),
            )
        for row in rows:
            raise_failure(row)
        return rows

    def backfill(self, workspace, request, units, executor, notify=silent, progress=no_progress):
        from regimes.flows.backfill import backfill as backfill_flow
        from regimes.storage.backfill import BackfillResult

        with self.session(workspace) as api_url:
            notify(
                f"backfill: Prefect flow 'backfill' on {api_url}, {len(units)} unit(s) on "
                f"{executor.name}"
            )
            rows = backfill_flow(
                timeframe=request.timeframe,
                model_id=request.model_id,
                symbols=list(request.symbols) if request.symbols else None,
                symbols_per_unit=request.symbols_per_unit,
                rows_per_commit=request.rows_per_commit,
                executor=executor.name,
                **workspace.params(),
            )
        for row in rows:
            raise_failure(row)
        return [BackfillResult.from_dict(row) for row in rows]

    def rollout(self, workspace, request, notify=silent):
        """The ``rollout`` Prefect flow; a gate that failed is raised again here."""
        from dataclasses import asdict

        with self.session(workspace) as api_url:
            from regimes.flows.rollout import rollout as rollout_flow

            notify(f"rollout: Prefect flow 'rollout' on {api_url}")
            steps = rollout_flow(request=asdict(request), **workspace.params())
        for row in steps:
            raise_failure(row)
        return steps

    def monitor(self, workspace, request, executor, notify=silent) -> dict:
        """The ``monitor`` Prefect flow (its train and rollout as subflows)."""
        from dataclasses import asdict

        with self.session(workspace) as api_url:
            from regimes.flows.monitor import monitor as monitor_flow

            notify(f"monitor: Prefect flow 'monitor' on {api_url}")
            fields = asdict(request)
            fields["timeframes"] = list(request.timeframes) if request.timeframes else None
            outcome = monitor_flow(executor=executor.name, **fields, **workspace.params())
        raise_failure(outcome)
        return outcome


def orchestrator_named(name: str) -> Orchestrator:
    """The orchestrator of an ``--orchestrator`` value (``direct`` or ``prefect``)."""
    if name == "direct":
        return DirectOrchestrator()
    if name == "prefect":
        # A server that does not answer, or refuses this client's auth string, is refused
        # here, before any work starts (the use case would otherwise read and check its
        # inputs first).
        from regimes.flows.server import check_prefect_api

        url = os.environ.get("PREFECT_API_URL")
        if url:
            check_prefect_api(url)
        return PrefectOrchestrator()
    raise BadInputError(f"orchestrator: expected one of {sorted(ORCHESTRATORS)}, got {name!r}")
