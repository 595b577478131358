"""Use cases of the model lifecycle: ``train`` (grid -> winner -> artifact -> registered
candidate) and ``models`` (the registry).

``train_unit`` is the one training unit every orchestrator runs: called directly, or
inside the Prefect flow ``train``. Promote and rollback join here as use cases of the
same shape (a request dataclass in, a result with ``as_dict()`` out).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from regimes.app.executors import Executor
from regimes.app.output import format_table
from regimes.app.progress import Notify, silent
from regimes.app.workspace import Workspace
from regimes.errors import BadInputError
from regimes.timeframes import TIMEFRAMES

if TYPE_CHECKING:
    from regimes.app.orchestrators import Orchestrator

SUMMARY_COLUMNS = [
    "timeframe",
    "model_id",
    "K",
    "d",
    "covariance",
    "val_loglik_per_bar",
    "val_bic",
    "role",
]


@dataclass(frozen=True)
class TrainRequest:
    """What to train: timeframes (None: all five), the universe, the grid, the seed, and
    the scope (``pooled``: one model per timeframe; ``symbol``: one per symbol)."""

    timeframes: tuple[str, ...] | None = None
    symbols: tuple[str, ...] | None = None
    grid: dict | None = None
    seed: int = 0
    scope: str = "pooled"
    report: bool = True
    """Write the validation report of every trained model (``regimes report``)."""


@dataclass(frozen=True)
class TrainResult:
    models: list[dict]
    registry: str
    seconds: float

    def summary(self) -> list[str]:
        import pandas as pd

        table = pd.DataFrame(self.models)
        lines = [
            f"train: {len(self.models)} model(s) in {self.seconds:.1f}s",
            format_table(table[[c for c in SUMMARY_COLUMNS if c in table.columns]]),
        ]
        lines += [f"  {row['timeframe']}: {row['path']}" for row in self.models]
        lines += [
            f"  {row['timeframe']}: {row['k_note']}" for row in self.models if row.get("k_note")
        ]
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {
            "command": "train",
            "models": self.models,
            "registry": self.registry,
            "seconds": round(self.seconds, 3),
        }


def train(
    workspace: Workspace,
    request: TrainRequest,
    executor: Executor,
    orchestrator: Orchestrator,
    notify: Notify = silent,
) -> TrainResult:
    """Train every unit of ``request`` through ``orchestrator``, grids on ``executor``.

    Every input is checked before the first unit starts: the grid, the scope's symbols,
    and whether each unit's history holds the walk-forward split. So a mistake is one
    line, never a failure inside a flow halfway through.
    """
    from regimes.training.grid import expand_grid
    from regimes.training.units import scope_units

    timeframes = list(request.timeframes or TIMEFRAMES)
    request = TrainRequest(
        tuple(timeframes),
        request.symbols,
        request.grid,
        request.seed,
        request.scope,
        request.report,
    )
    for timeframe in timeframes:
        expand_grid(workspace.config, timeframe, request.grid)
    symbols = list(request.symbols) if request.symbols else None
    units = scope_units(workspace.engine, timeframes, symbols, request.scope)
    for timeframe, unit_symbols in units:
        check_trainable(workspace, timeframe, unit_symbols)
    started = time.perf_counter()
    models = orchestrator.train(workspace, request, units, executor, notify)
    for row in models:
        if row.get("report"):
            notify(f"   {row['model_id']}: validation report {row['report']}")
        elif row.get("report_error"):
            notify(f"   {row['model_id']}: no validation report: {row['report_error']}")
    return TrainResult(
        models=models,
        registry=workspace.registry_root,
        seconds=time.perf_counter() - started,
    )


def _validation_report(workspace: Workspace, row: dict) -> dict:
    """The report of a model just trained and its verdicts (for the promotion gates);
    a report that cannot be written is recorded, not fatal to the training."""
    from regimes.app.report import report_trained
    from regimes.errors import RegimesError

    try:
        written = report_trained(workspace, row["timeframe"], row["model_id"])
    except RegimesError as exc:
        return {"report": None, "report_error": str(exc)}
    return {"report": str(written.html), "verdicts": written.verdicts.as_dict()}


def check_trainable(workspace: Workspace, timeframe: str, symbols: Sequence[str] | None) -> None:
    """Refuse (``BadInputError``) a unit whose stored features cannot hold the
    walk-forward split, with the same message training itself would give."""
    from regimes.data import sql as db
    from regimes.model.splits import walk_forward_splits
    from regimes.training.train import drop_short_symbols

    # Keys and flags only: what the split and the short-symbol rule look at, without the
    # feature columns training loads anyway (on 1m bars that load takes seconds).
    frame = db.read_features(workspace.engine, timeframe, symbols, features=[])
    if frame.empty:
        raise BadInputError(
            f"no {timeframe} features stored; run `regimes features --timeframe {timeframe}`"
        )
    # Training warns about each short symbol itself; saying it twice helps nobody.
    with _quiet("regimes.training.train"):
        frame, _ = drop_short_symbols(frame)
    walk_forward_splits(frame["ts"], workspace.config.timeframes.preprocessing.splits)


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    before = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = before


def train_unit(
    workspace: Workspace,
    timeframe: str,
    *,
    symbols: Sequence[str] | None,
    grid: dict | None,
    seed: int,
    executor: Executor,
    actor: str,
    scope: str = "pooled",
    report: bool = True,
) -> dict:
    """Train one unit (a timeframe, pooled or one symbol), register the winner as a
    candidate of its scope, write its validation report (``report``), return its
    summary row (with ``report`` and ``verdicts``)."""
    from regimes.training.units import train_and_register

    row = train_and_register(
        workspace.engine,
        workspace.config,
        workspace.registry,
        workspace.model_store,
        timeframe,
        symbols=symbols,
        grid=grid,
        seed=seed,
        runner=executor.training_runner(),
        actor=actor,
        scope=scope,
    )
    if report:
        row.update(_validation_report(workspace, row))
    return row


@dataclass(frozen=True)
class ModelsRequest:
    timeframe: str | None = None


@dataclass(frozen=True)
class ModelsResult:
    registry: str
    current: Any  # pandas.DataFrame, one row per model

    def summary(self) -> list[str]:
        if self.current.empty:
            return [f"models: the registry at {self.registry} is empty; run `regimes train`"]
        columns = ("timeframe", "symbol", "model_id", "role", "since", "reason")
        return [format_table(self.current[[c for c in columns if c in self.current.columns]])]

    def as_dict(self) -> dict[str, Any]:
        import json

        current = self.current
        rows = (
            json.loads(current.to_json(orient="records", date_format="iso")) if len(current) else []
        )
        return {"command": "models", "registry": self.registry, "models": rows}


def models(workspace: Workspace, request: ModelsRequest) -> ModelsResult:
    """The registry's current view: one row per model with its role in its scope."""
    registry = workspace.registry
    return ModelsResult(registry=registry.root, current=registry.current(request.timeframe))
