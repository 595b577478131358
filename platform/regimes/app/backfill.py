"""The ``backfill`` use case: a registered model's states over the stored history, into
the Delta state store (and the newest per symbol into ``current_states``).

``run_backfill_units`` is what every orchestrator runs: called directly, or inside the
Prefect flow ``backfill``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from regimes.app.executors import Executor
from regimes.app.progress import Notify, Progress, no_progress, silent
from regimes.app.workspace import Workspace
from regimes.errors import BadInputError

if TYPE_CHECKING:
    from regimes.app.orchestrators import Orchestrator
    from regimes.storage.backfill import BackfillResult, BackfillUnit


@dataclass(frozen=True)
class BackfillRequest:
    timeframe: str
    model_id: str
    symbols: tuple[str, ...] | None = None
    symbols_per_unit: int = 1
    rows_per_commit: int = 50_000

    def check(self) -> None:
        """Refuse a non-positive unit or commit size, naming the flag."""
        for name in ("rows_per_commit", "symbols_per_unit"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise BadInputError(f"{flag}: expected >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class BackfillRun:
    """What a backfill did; ``failed`` holds the units that did not finish (the others'
    commits are kept and a rerun resumes)."""

    timeframe: str
    model_id: str
    store: str
    results: list  # regimes.storage.backfill.BackfillResult, one per unit
    seconds: float

    @property
    def failed(self) -> list:
        return [r for r in self.results if r.error]

    @property
    def rows_written(self) -> int:
        return sum(r.rows_written for r in self.results)

    @property
    def rows_already_stored(self) -> int:
        return sum(r.rows_already_stored for r in self.results)

    def summary(self) -> list[str]:
        lines = [
            f"backfill: {self.rows_written} state rows written to {self.store} in "
            f"{sum(r.commits for r in self.results)} commit(s), {self.rows_already_stored} "
            f"already stored, {self.seconds:.1f}s"
        ]
        lines += [f"  FAILED {', '.join(r.symbols)}: {r.error}" for r in self.failed]
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {
            "command": "backfill",
            "timeframe": self.timeframe,
            "model_id": self.model_id,
            "store": self.store,
            "units": len(self.results),
            "rows_written": self.rows_written,
            "rows_already_stored": self.rows_already_stored,
            "failed": [{"symbols": list(r.symbols), "error": r.error} for r in self.failed],
            "seconds": round(self.seconds, 3),
        }


def plan_units(workspace: Workspace, request: BackfillRequest) -> list[BackfillUnit]:
    """The units of ``request``; refuses an unknown model, a missing artifact, symbols
    without bars."""
    from regimes.storage.backfill import plan_backfill

    request.check()
    return plan_backfill(
        workspace.engine,
        workspace.registry,
        workspace.model_store,
        request.timeframe,
        request.model_id,
        list(request.symbols) if request.symbols else None,
        request.symbols_per_unit,
    )


def run_backfill_units(
    workspace: Workspace,
    units: Sequence[BackfillUnit],
    rows_per_commit: int,
    executor: Executor,
    progress: Progress = no_progress,
) -> list[BackfillResult]:
    """Run the units on ``executor`` into the Workspace's state store."""
    return executor.run_backfill(workspace, units, rows_per_commit, progress)


def backfill(
    workspace: Workspace,
    request: BackfillRequest,
    executor: Executor,
    orchestrator: Orchestrator,
    notify: Notify = silent,
    progress: Progress = no_progress,
) -> BackfillRun:
    """Backfill ``request.model_id``; resumable (a rerun writes only what is missing)."""
    started = time.perf_counter()
    units = plan_units(workspace, request)  # refused here, before any flow starts
    results = orchestrator.backfill(workspace, request, units, executor, notify, progress)
    return BackfillRun(
        timeframe=request.timeframe,
        model_id=request.model_id,
        store=workspace.state_store.root,
        results=results,
        seconds=time.perf_counter() - started,
    )
