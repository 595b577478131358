"""State history (plan phase 7): recording answers and backfilling a model over history.

* :func:`record_states` writes a batch of engine answers to the Delta state table
  (:class:`regimes.storage.state_store.StateStore`, an idempotent merge) and mirrors the
  newest state per (symbol, timeframe) into the database's ``current_states`` table (plan 7.5).
  ``current_states`` holds champion answers only: per (symbol, timeframe) the champion of
  the symbol's own scope, else the timeframe's pooled champion. A model that is not the
  champion (a candidate, shadow or retired model, or any model while its scope has no
  champion) never writes there; its states go to the state table under its own model_id.
* A **backfill** computes a registered model's states over the stored history of its
  symbols and records them. Work is split into units of a few symbols
  (:func:`plan_backfill`); :func:`backfill_unit` runs one, through the engine's offline
  path (:meth:`regimes.live.engine.InferenceEngine.replay_batch`, equal to stepping the
  bars through a live engine) and commits its rows in time order, whole UTC days per
  commit, up to ``rows_per_commit`` rows (a day is never split; each merge costs ~0.1 s
  however small, so commits are few and large). A unit killed midway leaves whole
  commits behind, and running it again writes only the rows whose key is not stored
  yet: no duplicates (the merge is idempotent anyway) and no gaps. Keys, not the newest
  stored time: rows the live path recorded, or bars ingested late, never hide older
  missing rows.

The Ray fan-out is ``regimes.jobs.backfill``; the Prefect flow ``regimes.flows.backfill``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from regimes.config.loading import PlatformConfig
from regimes.data import sql as db
from regimes.errors import BadInputError
from regimes.live.engine import InferenceEngine
from regimes.model.artifact import verify_artifact
from regimes.model.loaded import LoadedModel
from regimes.model.store import ModelStore
from regimes.paths import check_model_id, check_timeframe_name
from regimes.storage.recording import DEFAULT_ROWS_PER_COMMIT, _mirror, record_states
from regimes.storage.registry import Registry
from regimes.storage.state_store import StateStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackfillUnit:
    """Some symbols of one model's backfill."""

    timeframe: str
    model_id: str
    artifact: str
    symbols: tuple[str, ...]


@dataclass
class BackfillResult:
    timeframe: str
    model_id: str
    symbols: tuple[str, ...]
    bars: int = 0
    rows_written: int = 0
    rows_already_stored: int = 0
    commits: int = 0
    seconds: float = 0.0
    error: str | None = None
    unknown_by_reason: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> BackfillResult:
        """Back from :meth:`as_dict` (after a trip through Ray or Prefect)."""
        return cls(**{**row, "symbols": tuple(row["symbols"])})


def plan_backfill(
    engine,
    registry: Registry,
    models: ModelStore | str | Path,
    timeframe: str,
    model_id: str,
    symbols: Sequence[str] | None = None,
    symbols_per_unit: int = 1,
) -> list[BackfillUnit]:
    """Units of a backfill of ``model_id`` over the stored ``timeframe`` bars.

    A model trained for one symbol (registered with a symbol) is backfilled over that
    symbol when ``symbols`` is None. Refuses (``BadInputError``) a model the registry does
    not know, a missing artifact, an artifact of another timeframe, requested symbols
    without stored bars, and a timeframe without bars.
    """
    timeframe = check_timeframe_name(timeframe)
    model_id = check_model_id(model_id)
    if symbols_per_unit < 1:
        raise BadInputError(f"symbols_per_unit: expected >= 1, got {symbols_per_unit}")
    if registry.role(timeframe, model_id) is None:
        raise BadInputError(
            f"backfill: model {model_id} ({timeframe}) is not in the registry at "
            f"{registry.root}; train or register it first (see `regimes models`)"
        )
    registered = registry.artifact_path(timeframe, model_id)
    try:
        # A remote artifact is downloaded and verified into the cache here; the units
        # load (and verify again) that local copy.
        path = ModelStore.of(models).artifact(timeframe, model_id, registered)
    except BadInputError as exc:
        raise BadInputError(f"backfill: {exc}") from None
    metadata = verify_artifact(path)
    if metadata["timeframe"] != timeframe:
        raise BadInputError(
            f"backfill: model {model_id} is a {metadata['timeframe']} model, not {timeframe}"
        )
    stored = db.list_symbols(engine, timeframe)
    models = registry.current(timeframe)
    trained_for = models.loc[models["model_id"] == model_id, "symbol"].iloc[0]
    if symbols is None and trained_for is not None:
        symbols = [trained_for]
    if symbols is None:
        chosen = sorted(stored)
    else:
        chosen = list(dict.fromkeys(symbols))
        absent = sorted(set(chosen) - set(stored))
        if absent:
            raise BadInputError(f"backfill: no {timeframe} bars stored for symbol(s) {absent}")
    if not chosen:
        raise BadInputError(f"backfill: no {timeframe} bars stored; run `regimes resample`")
    return [
        BackfillUnit(timeframe, model_id, str(path), tuple(chosen[i : i + symbols_per_unit]))
        for i in range(0, len(chosen), symbols_per_unit)
    ]


def backfill_unit(
    engine,
    config: PlatformConfig,
    store: StateStore,
    registry: Registry,
    unit: BackfillUnit,
    rows_per_commit: int = DEFAULT_ROWS_PER_COMMIT,
) -> BackfillResult:
    """Compute and record the states of one unit; writes only the rows not stored yet
    (whatever wrote the stored ones: an earlier run, or the live path), and mirrors the
    newest state per symbol even when nothing was missing."""
    if rows_per_commit < 1:
        raise BadInputError(f"rows_per_commit: expected >= 1, got {rows_per_commit}")
    started = time.perf_counter()
    result = BackfillResult(unit.timeframe, unit.model_id, unit.symbols)
    live = InferenceEngine(LoadedModel.load(unit.artifact))
    bars = db.read_bars(engine, unit.timeframe, list(unit.symbols))
    result.bars = len(bars)
    answers = live.replay_batch(bars)
    reasons = answers["ood_reason"].value_counts()
    result.unknown_by_reason = {str(k): int(v) for k, v in reasons.items()}
    stored = _stored_keys(store, unit)
    if len(stored):
        present = pd.MultiIndex.from_arrays([answers["symbol"], answers["ts"]]).isin(stored)
        result.rows_already_stored = int(present.sum())
        missing = answers[~present]
    else:
        missing = answers
    missing = missing.sort_values(["ts", "symbol"], kind="stable")
    for rows in _whole_days(missing, rows_per_commit):
        result.rows_written += record_states(store, engine, registry, rows, live.pipeline.d, live.K)
        result.commits += 1
    # A run killed between its last merge and the mirror leaves current_states behind.
    _mirror(engine, registry, answers)
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def _whole_days(answers: pd.DataFrame, rows_per_commit: int):
    """Consecutive slices of ``answers`` (sorted by ts) of whole UTC days, each at most
    ``rows_per_commit`` rows unless one day alone is larger."""
    day = answers["ts"].dt.floor("D").to_numpy()
    if not len(day):
        return
    boundaries = np.flatnonzero(np.r_[True, day[1:] != day[:-1]])
    start = 0
    for index, boundary in enumerate([*boundaries[1:], len(day)]):
        next_end = boundaries[index + 2] if index + 2 < len(boundaries) else len(day)
        if boundary == len(day) or next_end - start > rows_per_commit:
            yield answers.iloc[start:boundary]
            start = boundary


def _stored_keys(store: StateStore, unit: BackfillUnit) -> pd.MultiIndex:
    """(symbol, ts) of the unit's rows already in the table."""
    if not store.exists():
        return pd.MultiIndex.from_arrays([[], []])
    stored = store.read(unit.timeframe, unit.model_id, list(unit.symbols), columns=["symbol", "ts"])
    return pd.MultiIndex.from_arrays([stored["symbol"], stored["ts"]])


def run_backfill(
    engine,
    config: PlatformConfig,
    store: StateStore,
    registry: Registry,
    units: Sequence[BackfillUnit],
    rows_per_commit: int = DEFAULT_ROWS_PER_COMMIT,
    progress: Callable[[Sequence[Any]], Any] | None = None,
) -> list[BackfillResult]:
    """Run units one after the other in this process (``regimes.jobs.backfill`` runs
    them on Ray). A unit that fails is reported with its error; the others go on."""
    results = []
    for unit in progress(units) if progress else units:
        try:
            results.append(backfill_unit(engine, config, store, registry, unit, rows_per_commit))
        except Exception as exc:  # reported by unit, never lost silently
            logger.warning("backfill unit %s failed: %s", unit.symbols, exc)
            results.append(
                BackfillResult(
                    unit.timeframe,
                    unit.model_id,
                    unit.symbols,
                    error=f"{type(exc).__name__}: {exc}",
                )
            )
    return results
