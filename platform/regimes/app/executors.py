"""Where fan-out work runs: in this process or as Ray tasks.

The use cases take an :class:`Executor` and never ask which one it is; the CLI picks one
by its ``--executor`` flag (:func:`executor_named`). The Ray one is the only place that
reaches ``regimes.jobs``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from regimes.app.progress import Progress, items_progress, no_progress
from regimes.errors import BadInputError

if TYPE_CHECKING:
    from regimes.app.workspace import Workspace
    from regimes.features.store import FeatureUnitResult
    from regimes.storage.backfill import BackfillResult, BackfillUnit

EXECUTORS = frozenset({"local", "ray"})


class Executor(Protocol):
    """Runs the units of features, training grids and backfills somewhere."""

    name: str

    def describe(self) -> str:
        """Where units run, as a phrase ("in this process", "as Ray tasks on ...");
        starts the engine if it needs one."""

    def run_features(
        self,
        workspace: Workspace,
        units: Sequence[tuple[str, str]],
        progress: Progress = no_progress,
    ) -> list[FeatureUnitResult]:
        """Compute and store every (symbol, timeframe) unit; a failed one is reported."""

    def training_runner(self) -> Callable | None:
        """A grid runner for ``regimes.training.train.train_timeframe`` (None: in-process)."""

    def run_backfill(
        self,
        workspace: Workspace,
        units: Sequence[BackfillUnit],
        rows_per_commit: int,
        progress: Progress = no_progress,
    ) -> list[BackfillResult]:
        """Backfill every unit into the Workspace's state store; a failed one is reported."""


class LocalExecutor:
    """Every unit in this process, one after the other."""

    name = "local"

    def describe(self) -> str:
        return "in this process"

    def run_features(self, workspace, units, progress=no_progress):
        from regimes.features.store import run_features

        return run_features(
            workspace.engine,
            workspace.config,
            units,
            progress=items_progress(progress, "features"),
        )

    def training_runner(self):
        return None

    def run_backfill(self, workspace, units, rows_per_commit, progress=no_progress):
        from regimes.storage.backfill import run_backfill

        return run_backfill(
            workspace.engine,
            workspace.config,
            workspace.state_store,
            workspace.registry,
            units,
            rows_per_commit,
            progress=items_progress(progress, "backfill"),
        )


class RayExecutor:
    """Every unit as a Ray task: a local Ray, or the cluster at ``RAY_ADDRESS``."""

    name = "ray"

    def describe(self) -> str:
        from regimes.jobs.runtime import ensure_ray

        return f"as Ray tasks on {ensure_ray()}"

    def run_features(self, workspace, units, progress=no_progress):
        from regimes.jobs.features import run_features_on_ray

        with progress("features", len(units)) as tick:
            return run_features_on_ray(workspace.settings, workspace.config, units, tick)

    def training_runner(self):
        from regimes.jobs.training import ray_runner

        return ray_runner()

    def run_backfill(self, workspace, units, rows_per_commit, progress=no_progress):
        from regimes.jobs.backfill import run_backfill_on_ray

        with progress("backfill", len(units)) as tick:
            return run_backfill_on_ray(
                workspace.settings, workspace.config, units, rows_per_commit, tick
            )


def executor_named(name: str) -> Executor:
    """The executor of a ``--executor`` value (``local`` or ``ray``)."""
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        # A cluster address nothing answers at is refused here, before any work starts
        # (the use case would otherwise read and check its inputs first).
        from regimes.jobs.runtime import check_ray_address

        address = os.environ.get("RAY_ADDRESS")
        if address:
            check_ray_address(address)
        return RayExecutor()
    raise BadInputError(f"executor: expected one of {sorted(EXECUTORS)}, got {name!r}")
