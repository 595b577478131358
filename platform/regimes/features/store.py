"""The feature store: compute features from stored bars into ``computed_features``, and
load them back (plan 2.2, 2.3).

One unit of work is one (symbol, timeframe): read its bars, compute the timeframe's
selected features with :func:`regimes.features.batch.compute_batch`, and replace that unit's
feature rows in one transaction. A rerun writes the same rows (idempotent); a unit that
fails leaves its earlier rows untouched. The engines layer (``regimes.jobs``) fans the
units out; :func:`run_features` runs them one after the other in this process.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from regimes.config.loading import PlatformConfig
from regimes.data import sql as db
from regimes.errors import BadInputError
from regimes.features.batch import compute_batch
from regimes.features.selection import selected_features
from regimes.paths import check_symbol
from regimes.timeframes import TIMEFRAMES, check_timeframe

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureUnitResult:
    """What one (symbol, timeframe) unit did; ``error`` is set when it failed."""

    symbol: str
    timeframe: str
    bars: int = 0
    rows_written: int = 0
    warmup_rows: int = 0
    gap_rows: int = 0
    seconds: float = 0.0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def features_fingerprint(spec, calendar) -> str:
    """What stored feature rows record as ``feature_spec_sha256``: the spec's fingerprint,
    combined with the market calendar's (name and config) for a symbol not on the
    ``session`` of ``timeframes.yaml`` -- time of day and day-anchored windows follow the
    calendar, so rows computed on another market's calendar must not be trained on."""
    from regimes.data.calendars import MarketCalendar

    if not isinstance(calendar, MarketCalendar):
        return spec.fingerprint()
    joined = f"{spec.fingerprint()}|{calendar.model_dump_json()}"
    return hashlib.sha256(joined.encode()).hexdigest()


def symbol_calendar(engine, config: PlatformConfig, symbol: str):
    """The calendar of ``symbol``'s market (config mapping, recorded market or default)."""
    from regimes.data.markets import MarketBook

    book = MarketBook(config.markets, config.timeframes.session, db.read_markets(engine))
    return book.calendar_of(symbol)


def compute_and_store(
    engine, config: PlatformConfig, symbol: str, timeframe: str
) -> FeatureUnitResult:
    """Compute and store the features of one (symbol, timeframe)."""
    started = time.perf_counter()
    check_symbol(symbol)
    check_timeframe(timeframe)
    names = selected_features(config.features, config.timeframe(timeframe))
    bars = db.read_bars(engine, timeframe, symbol)
    if bars.empty:
        raise BadInputError(f"features: no {timeframe} bars stored for {symbol}")
    calendar = symbol_calendar(engine, config, symbol)
    frame = compute_batch(bars, config.features, calendar, names)
    written = db.rewrite_features(
        engine,
        frame,
        symbol,
        timeframe,
        config.features.version,
        features_fingerprint(config.features, calendar),
    )
    return FeatureUnitResult(
        symbol=symbol,
        timeframe=timeframe,
        bars=len(bars),
        rows_written=written,
        warmup_rows=int(frame["is_warmup"].sum()),
        gap_rows=int(frame["is_gap"].sum()),
        seconds=round(time.perf_counter() - started, 4),
    )


def plan_units(
    engine, timeframes: Sequence[str] | None = None, symbols: Sequence[str] | None = None
) -> list[tuple[str, str]]:
    """The (symbol, timeframe) units to compute: every stored pair, optionally narrowed.

    Raises when a requested symbol has no bars of any requested timeframe.
    """
    chosen_timeframes = [check_timeframe(tf) for tf in (timeframes or TIMEFRAMES)]
    units = []
    seen_symbols: set[str] = set()
    for timeframe in chosen_timeframes:
        stored = db.list_symbols(engine, timeframe)
        wanted = stored if not symbols else [s for s in symbols if s in set(stored)]
        seen_symbols.update(wanted)
        units.extend((symbol, timeframe) for symbol in wanted)
    if symbols:
        unknown = [check_symbol(s) for s in symbols if s not in seen_symbols]
        if unknown:
            raise BadInputError(
                f"features: no bars stored for symbol(s) {unknown} on timeframe(s) "
                f"{', '.join(chosen_timeframes)}"
            )
    for timeframe in chosen_timeframes:
        # Features of a (symbol, timeframe) whose bars are gone would outlive them.
        db.delete_orphan_features(engine, timeframe)
    if not units:
        raise BadInputError(
            "features: no bars stored; run `regimes synth` and `regimes resample` "
            "(or `regimes ingest`) first"
        )
    return units


def run_features(
    engine,
    config: PlatformConfig,
    units: Iterable[tuple[str, str]],
    progress: Callable[[Sequence[Any]], Any] | None = None,
) -> list[FeatureUnitResult]:
    """Run units one after the other; a failed unit is reported and the others go on."""
    results = []
    units = list(units)
    for symbol, timeframe in (progress or (lambda items: items))(units):
        try:
            results.append(compute_and_store(engine, config, symbol, timeframe))
        except Exception as exc:  # one unit's failure must not lose the others' results
            logger.warning("features for %s %s failed: %s", symbol, timeframe, exc)
            results.append(
                FeatureUnitResult(symbol, timeframe, error=f"{type(exc).__name__}: {exc}")
            )
    return results


def summarize(results: Sequence[FeatureUnitResult]) -> pd.DataFrame:
    """One row per timeframe: symbols, bars, rows written, warm-up and gap rows, failures."""
    frame = pd.DataFrame([r.as_dict() for r in results])
    if frame.empty:
        return frame
    frame["failed"] = frame["error"].notna()
    table = frame.groupby("timeframe", sort=False).agg(
        symbols=("symbol", "nunique"),
        bars=("bars", "sum"),
        rows_written=("rows_written", "sum"),
        warmup_rows=("warmup_rows", "sum"),
        gap_rows=("gap_rows", "sum"),
        failed=("failed", "sum"),
    )
    order = [tf for tf in TIMEFRAMES if tf in table.index]
    return table.reindex(order).reset_index()


def _book(engine, config: PlatformConfig):
    from regimes.data.markets import MarketBook

    return MarketBook(config.markets, config.timeframes.session, db.read_markets(engine))


def _expected_fingerprints(engine, config: PlatformConfig, symbols: pd.Series) -> np.ndarray:
    """:func:`features_fingerprint` of each row's symbol on its market today."""
    book = _book(engine, config)
    by_symbol = {
        symbol: features_fingerprint(config.features, book.calendar_of(symbol))
        for symbol in pd.unique(symbols)
    }
    return symbols.map(by_symbol).to_numpy(dtype=object)


def load_features(
    engine,
    config: PlatformConfig,
    timeframe: str,
    symbols: Sequence[str] | str | None = None,
    start: Any = None,
    end: Any = None,
    *,
    drop_unusable: bool = False,
) -> pd.DataFrame:
    """Feature rows of a timeframe's selected features (plan 2.2), ``start <= ts < end``.

    With ``drop_unusable`` the warm-up and gap rows are left out. Refuses rows computed
    under another feature spec (version or fingerprint) or another selection: they would
    not mean what the config says.
    """
    names = selected_features(config.features, config.timeframe(timeframe))
    frame = db.read_features(engine, timeframe, symbols, start, end, features=names)
    stale = frame["feature_spec_version"] != config.features.version
    if stale.any():
        versions = sorted(frame.loc[stale, "feature_spec_version"].unique().tolist())
        raise BadInputError(
            f"features: {int(stale.sum())} stored {timeframe} row(s) were computed under another "
            f"feature spec (version(s) {versions}); the config is version "
            f"{config.features.version}; run `regimes features` again"
        )
    moved = frame["feature_spec_sha256"] != _expected_fingerprints(engine, config, frame["symbol"])
    if moved.any():
        symbols = sorted(frame.loc[moved, "symbol"].unique())
        book = _book(engine, config)
        named = ", ".join(f"{symbol} (market {book.market_of(symbol)})" for symbol in symbols[:10])
        raise BadInputError(
            f"features: {int(moved.sum())} stored {timeframe} row(s) of {named} were computed "
            "under another feature spec (the same version with other formulas or windows) or "
            "on another market calendar than the symbol's market now; run `regimes features "
            f"--timeframe {timeframe} --symbols {' '.join(symbols[:10])}` again"
        )
    usable = ~(frame["is_warmup"] | frame["is_gap"])
    empty = [name for name in names if frame.loc[usable, name].isna().any()]
    if empty:
        raise BadInputError(
            f"features: stored {timeframe} rows lack value(s) for {empty} (the timeframe's "
            "selection changed since they were computed); run `regimes features` again"
        )
    if drop_unusable:
        frame = frame.loc[~(frame["is_warmup"] | frame["is_gap"])].reset_index(drop=True)
    return frame
