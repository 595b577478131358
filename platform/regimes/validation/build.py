"""Every figure of a validation report from a model's stored states and its bars.

:func:`build_report` is pure: data frames and settings in, a
:class:`ValidationReport` out (JSON-ready figures, verdicts, headline). Reading the
store and the database, and writing files, is the application's job
(:mod:`regimes.app.report`); drawing is :mod:`regimes.validation.html`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from regimes.answers import UNKNOWN
from regimes.config.validation import ValidationConfig
from regimes.errors import BadInputError
from regimes.validation import backtest as backtests
from regimes.validation import verdicts as checks
from regimes.validation.confidence import (
    confidence_histogram,
    confidence_over_time,
    confidence_table,
    median_confidence,
)
from regimes.validation.dwell import dwell_histogram, dwell_table
from regimes.validation.ood_rates import ood_over_time, ood_totals
from regimes.validation.returns import ReturnSettings, conditioned_returns, forward_returns
from regimes.validation.spells import spells
from regimes.validation.transitions import empirical_counts, row_rates, transition_table

STATE_COLUMNS = (
    "symbol",
    "ts",
    "state_id",
    "raw_state_id",
    "state_prob",
    "entropy",
    "is_unknown",
    "ood_reason",
)
"""What a report reads from the state store."""


@dataclass(frozen=True)
class ModelFacts:
    """What the report needs to know about the model itself."""

    model_id: str
    timeframe: str
    transmat: np.ndarray = field(repr=False)
    labels: dict[int, str] = field(default_factory=dict)
    training_start: str | None = None
    training_end: str | None = None

    @property
    def K(self) -> int:
        return len(self.transmat)


@dataclass(frozen=True)
class ValidationReport:
    """The figures (JSON-ready), the verdicts and the headline of one report."""

    facts: ModelFacts
    figures: dict[str, Any]
    verdicts: checks.ValidationVerdicts
    headline: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.facts.model_id,
            "timeframe": self.facts.timeframe,
            "K": self.facts.K,
            "labels": {str(k): v for k, v in self.facts.labels.items()},
            "training_window": [self.facts.training_start, self.facts.training_end],
            "headline": self.headline,
            "verdicts": self.verdicts.as_dict(),
            "figures": self.figures,
        }


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain dicts: NaN -> None, timestamps -> ISO strings, numpy -> Python."""
    rows = []
    named = frame.index.name is not None  # a RangeIndex carries nothing worth a column
    for row in (frame.reset_index() if named else frame).to_dict(orient="records"):
        rows.append({str(k): _plain(v) for k, v in row.items()})
    return rows


def _plain(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def join_bars(states: pd.DataFrame, bars: pd.DataFrame) -> pd.DataFrame:
    """States with the close of their bar, (symbol, ts)-sorted; a state without a
    stored bar gets a NaN close (its returns are missing, not invented)."""
    closes = bars[["symbol", "ts", "close"]]
    joined = states.merge(closes, on=["symbol", "ts"], how="left")
    return joined.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)


def per_symbol_table(frame: pd.DataFrame, K: int) -> pd.DataFrame:
    """Per symbol: bars, UNKNOWN share, median max(alpha), switches per 100 bars, and
    the share of bars in each state."""
    rows = []
    for symbol, group in frame.groupby("symbol", sort=True):
        published = group["state_id"].to_numpy()
        switches = int(np.sum((published[1:] != published[:-1]) & (published[1:] != UNKNOWN)))
        row = {
            "symbol": symbol,
            "bars": len(group),
            "unknown_share": float(group["is_unknown"].mean()),
            "median_confidence": float(group["state_prob"].median()),
            "switches_per_100_bars": 100.0 * switches / max(len(group) - 1, 1),
        }
        shares = group["state_id"].value_counts(normalize=True)
        row.update({f"share_{k}": float(shares.get(k, 0.0)) for k in range(K)})
        rows.append(row)
    return pd.DataFrame(rows).set_index("symbol")


def build_report(
    states: pd.DataFrame,
    bars: pd.DataFrame,
    facts: ModelFacts,
    config: ValidationConfig,
    periods_per_year: float,
) -> ValidationReport:
    """Every figure of the report.

    Parameters
    ----------
    states : DataFrame
        The model's stored states (:data:`STATE_COLUMNS`), any symbols.
    bars : DataFrame
        The bars of the same symbols and window (``symbol, ts, close``).
    facts : ModelFacts
    config : ValidationConfig
    periods_per_year : float
        Bars per year of the timeframe (annualises volatility and Sharpe).

    Raises
    ------
    BadInputError
        ``states`` is empty.
    """
    if states.empty:
        raise BadInputError(f"no stored states of {facts.model_id} in the window")
    K, timeframe = facts.K, facts.timeframe
    frame = join_bars(states, bars)
    symbols = frame["symbol"].to_numpy()
    raw_spells = spells(symbols, frame["raw_state_id"].to_numpy())
    published_spells = spells(symbols, frame["state_id"].to_numpy())
    dwell = dwell_table(raw_spells, facts.transmat, config.min_spells)
    published_dwell = dwell_table(published_spells, facts.transmat, config.min_spells)
    dwell["published_mean_dwell"] = published_dwell["mean_dwell"]
    counts = empirical_counts(symbols, frame["raw_state_id"].to_numpy(), K)
    transitions = transition_table(facts.transmat, counts, config.verdicts.min_diagonal)
    conditioned, backtest = _economics(frame, K, timeframe, config, periods_per_year)
    median = median_confidence(frame)
    verdicts = checks.ValidationVerdicts(
        facts.model_id,
        timeframe,
        (
            checks.dwell_verdict(dwell, config.verdicts),
            checks.diagonal_verdict(transitions, dwell, config.verdicts),
            checks.confidence_verdict(median, config.verdicts),
        ),
    )
    boot = config.bootstrap
    horizon = config.horizon_bars[timeframe]
    figures = {
        "window": {
            "first_ts": frame["ts"].min().isoformat(),
            "last_ts": frame["ts"].max().isoformat(),
            "bars": len(frame),
            "symbols": sorted(frame["symbol"].unique().tolist()),
        },
        "settings": {
            "horizon_bars": horizon,
            "cost_bps": config.cost_bps[timeframe],
            "periods_per_year": periods_per_year,
            "bootstrap": boot.model_dump(),
            "min_spells": config.min_spells,
            "min_bars": config.min_bars,
            "backtest": config.backtest.model_dump(),
            "verdicts": config.verdicts.model_dump(),
        },
        "dwell": _records(dwell),
        "dwell_histogram": dwell_histogram(raw_spells, K),
        "transitions": _records(transitions),
        "transmat": np.asarray(facts.transmat).round(6).tolist(),
        "empirical_transmat": [[_plain(v) for v in row] for row in row_rates(counts).round(6)],
        "transition_counts": counts.tolist(),
        "confidence": _records(confidence_table(frame, K)),
        "confidence_histogram": confidence_histogram(frame, K),
        "confidence_over_time": _records(confidence_over_time(frame)),
        "ood_over_time": _records(ood_over_time(frame)),
        "ood_totals": ood_totals(frame),
        "returns": _records(conditioned),
        "backtest": _plain_tree(backtest),
        "per_symbol": _records(per_symbol_table(frame, K)),
    }
    headline = _headline(facts, dwell, conditioned, backtest, config)
    return ValidationReport(facts, figures, verdicts, headline)


def _economics(
    frame: pd.DataFrame,
    K: int,
    timeframe: str,
    config: ValidationConfig,
    periods_per_year: float,
) -> tuple[pd.DataFrame, dict]:
    """State-conditioned returns and the walk-forward backtest, on the published
    states (what a user of the live answers acts on)."""
    boot = config.bootstrap
    horizon = config.horizon_bars[timeframe]
    returns_frame = forward_returns(frame.assign(state=frame["state_id"]), horizon)
    conditioned = conditioned_returns(
        returns_frame,
        K,
        ReturnSettings(
            horizon,
            periods_per_year,
            config.min_spells,
            config.min_bars,
            boot.samples,
            boot.confidence,
            boot.seed,
        ),
    )
    settings = backtests.BacktestSettings(
        config.backtest.test_windows,
        config.backtest.min_train_fraction,
        config.backtest.size_cap,
        config.cost_bps[timeframe],
        periods_per_year,
        config.min_bars,
        boot.samples,
        boot.confidence,
        boot.seed,
    )
    return conditioned, backtests.backtest(returns_frame, K, settings)


def _plain_tree(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_tree(v) for v in value]
    return _plain(value)


def _headline(
    facts: ModelFacts,
    dwell: pd.DataFrame,
    conditioned: pd.DataFrame,
    backtest: dict,
    config: ValidationConfig,
) -> dict[str, Any]:
    """States ordered by volatility, the highest/lowest volatility ratio, dwell vs
    implied dwell of the states holding >= min_share of bars, Sharpe per strategy."""
    measured = conditioned.dropna(subset=["volatility"]) if "volatility" in conditioned else None
    by_vol = []
    ratio = None
    if measured is not None and len(measured):
        ordered = measured.sort_values("volatility")
        by_vol = [
            {
                "state": int(k),
                "label": facts.labels.get(int(k), f"state {k}"),
                "volatility": round(float(row["volatility"]), 4),
                "share": round(float(dwell.at[k, "share"]), 4),
            }
            for k, row in ordered.iterrows()
        ]
        low = float(ordered["volatility"].iloc[0])
        ratio = round(float(ordered["volatility"].iloc[-1]) / low, 3) if low > 0 else None
    major = dwell[dwell["share"] >= config.verdicts.min_share]
    dwell_rows = [
        {
            "state": int(k),
            "share": round(float(row["share"]), 4),
            "mean_dwell": _plain(round(float(row["mean_dwell"]), 2)),
            "implied_dwell": _plain(round(float(row["implied_dwell"]), 2)),
            "ratio": _plain(round(float(row["ratio"]), 3)),
        }
        for k, row in major.iterrows()
    ]
    sharpe = {
        name: _plain(round(metrics["sharpe"], 3))
        for name, metrics in backtest.get("strategies", {}).items()
    }
    return {
        "states_by_volatility": by_vol,
        "volatility_ratio_high_low": ratio,
        "dwell_vs_implied": dwell_rows,
        "sharpe": sharpe,
    }
