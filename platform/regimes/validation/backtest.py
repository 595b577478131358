"""Walk-forward backtest (plan 8.6): always in, state-gated and state-sized, out of
sample only.

The history after its first ``min_train_fraction`` is cut into ``test_windows`` equal
windows of bar times. For each window, every state's mean and volatility of the
next-bar return are estimated on the bars before it (only returns whose bar closed
before the window starts), and fixed for the window:

* ``baseline``: always 1;
* ``gated``: 1 in the states whose estimated mean is positive, else 0;
* ``sized``: proportional to the state's mean / volatility, long only, scaled so the
  average training bar holds 1 and capped at ``size_cap``.

UNKNOWN bars and states with fewer than ``min_bars`` training bars hold 0 in ``gated``
and ``sized``. The position decided on bar t (its state is known when t closes) earns
the return of bar t+1; costs are ``cost_bps`` per unit of turnover. With several
symbols, the portfolio is the equal-weighted mean of their returns per bar time.
States are whatever the caller passes: stored filtered (never smoothed) states.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from regimes.answers import UNKNOWN
from regimes.validation.bootstrap import (
    block_bootstrap_indices,
    block_length,
    percentile_interval,
)
from regimes.validation.returns import max_drawdown

STRATEGIES = ("baseline", "gated", "sized")
EQUITY_POINTS = 400
"""Points of the equity curves kept for the chart."""


@dataclass(frozen=True)
class BacktestSettings:
    """What :func:`walk_forward_positions` and :func:`backtest` need besides data."""

    test_windows: int
    min_train_fraction: float
    size_cap: float
    cost_bps: float
    periods_per_year: float
    min_bars: int
    samples: int
    confidence: float
    seed: int


def test_window_starts(ts: pd.Series, settings: BacktestSettings) -> np.ndarray:
    """The first bar time of each test window (sorted, distinct)."""
    times = np.sort(ts.unique())
    first = int(np.floor(settings.min_train_fraction * len(times)))
    if first >= len(times):
        return times[:0]
    chunks = np.array_split(np.arange(first, len(times)), settings.test_windows)
    return np.array([times[chunk[0]] for chunk in chunks if len(chunk)])


def _state_estimates(train: pd.DataFrame, K: int, min_bars: int) -> pd.DataFrame:
    grouped = train.groupby("state")["next_return"]
    estimates = pd.DataFrame(
        {"bars": grouped.size(), "mean": grouped.mean(), "vol": grouped.std(ddof=1)}
    ).reindex(range(K))
    estimates["enough"] = estimates["bars"].fillna(0) >= min_bars
    return estimates


def _window_positions(
    estimates: pd.DataFrame, train_states: pd.Series, cap: float
) -> dict[str, np.ndarray]:
    """Per state (index 0..K-1): the gated and sized positions of one test window."""
    usable = estimates["enough"].to_numpy() & np.isfinite(estimates["mean"].to_numpy())
    gated = np.where(usable & (estimates["mean"].to_numpy() > 0), 1.0, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.clip(estimates["mean"].to_numpy() / estimates["vol"].to_numpy(), 0, None)
    score = np.where(usable & np.isfinite(score), score, 0.0)
    # Scaled so the average training bar holds one unit, as the baseline does.
    known = train_states[train_states != UNKNOWN].to_numpy()
    average = float(score[known].mean()) if len(known) else 0.0
    sized = np.clip(score / average, 0, cap) if average > 0 else np.zeros_like(score)
    return {"gated": gated, "sized": sized}


def walk_forward_positions(frame: pd.DataFrame, K: int, settings: BacktestSettings) -> pd.DataFrame:
    """Each strategy's position per bar of the test windows.

    Parameters
    ----------
    frame : DataFrame
        (symbol, ts)-sorted with ``state`` and ``next_return``
        (:func:`regimes.validation.returns.forward_returns`).

    Returns
    -------
    DataFrame
        The test bars (``symbol, ts, state, next_return, window``) and one column per
        strategy in :data:`STRATEGIES`.
    """
    next_ts = frame.groupby("symbol", sort=False)["ts"].shift(-1)
    starts = test_window_starts(frame["ts"], settings)
    pieces = []
    for window, start in enumerate(starts):
        end = starts[window + 1] if window + 1 < len(starts) else None
        # Only returns realised (their next bar closed) before the window opens.
        train = frame[(next_ts < start).to_numpy() & frame["next_return"].notna().to_numpy()]
        estimates = _state_estimates(train, K, settings.min_bars)
        by_state = _window_positions(estimates, train["state"], settings.size_cap)
        test = frame[(frame["ts"] >= start) & ((frame["ts"] < end) if end is not None else True)]
        test = test[["symbol", "ts", "state", "next_return"]].assign(window=window, baseline=1.0)
        known = test["state"].to_numpy() != UNKNOWN
        index = np.where(known, test["state"].to_numpy(), 0)
        for name, per_state in by_state.items():
            test[name] = np.where(known, per_state[index], 0.0)
        pieces.append(test)
    if not pieces:
        columns = ["symbol", "ts", "state", "next_return", "window", *STRATEGIES]
        return pd.DataFrame(columns=columns)
    return pd.concat(pieces).sort_values(["symbol", "ts"], kind="stable")


def strategy_returns(positions: pd.DataFrame, cost_bps: float) -> pd.DataFrame:
    """Per bar time, each strategy's portfolio return after costs (simple returns; the
    equal-weighted mean over symbols)."""
    simple = np.expm1(positions["next_return"].fillna(0.0))
    columns = {}
    for name in STRATEGIES:
        held = positions[name]
        previous = held.groupby(positions["symbol"], sort=False).shift(1).fillna(0.0)
        turnover = (held - previous).abs()
        columns[name] = held * simple - cost_bps * 1e-4 * turnover
        columns[f"{name}_turnover"] = turnover
    per_bar = pd.DataFrame(columns).assign(ts=positions["ts"].to_numpy())
    return per_bar.groupby("ts").mean().sort_index()


def _metrics(returns: np.ndarray, turnover: np.ndarray, held: np.ndarray, ppy: float) -> dict:
    std = float(np.std(returns, ddof=1)) if len(returns) > 1 else float("nan")
    mean = float(np.mean(returns)) if len(returns) else float("nan")
    active = held != 0
    return {
        "total_return": float(np.prod(1 + returns) - 1),
        "annual_return": mean * ppy,
        "annual_volatility": std * np.sqrt(ppy),
        "sharpe": mean / std * np.sqrt(ppy) if std > 0 else float("nan"),
        "max_drawdown": max_drawdown(np.log1p(returns)) if len(returns) else float("nan"),
        "annual_turnover": float(np.mean(turnover)) * ppy if len(turnover) else float("nan"),
        "hit_rate": float(np.mean(returns[active] > 0)) if active.any() else float("nan"),
        "time_in_market": float(np.mean(active)) if len(active) else float("nan"),
    }


def _sharpe(returns: np.ndarray) -> np.ndarray:
    std = returns.std(axis=-1, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(std > 0, returns.mean(axis=-1) / std, np.nan)


BOOTSTRAP_CHUNK = 50
"""Resamples drawn at once (bounds memory on long intraday histories)."""


def _sharpe_differences(
    per_bar: pd.DataFrame, base: np.ndarray, settings: BacktestSettings, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Annualised Sharpe of each strategy minus the baseline's, on paired circular-block
    resamples of the bar times."""
    n = len(per_bar)
    block = block_length(n)
    differences: dict[str, list] = {name: [] for name in STRATEGIES[1:]}
    for done in range(0, settings.samples, BOOTSTRAP_CHUNK):
        count = min(BOOTSTRAP_CHUNK, settings.samples - done)
        draws = block_bootstrap_indices(n, block, count, rng)
        base_sharpe = _sharpe(base[draws])
        for name in differences:
            values = per_bar[name].to_numpy()
            differences[name].append(
                (_sharpe(values[draws]) - base_sharpe) * np.sqrt(settings.periods_per_year)
            )
    return {name: np.concatenate(parts) for name, parts in differences.items()}


def backtest(frame: pd.DataFrame, K: int, settings: BacktestSettings) -> dict:
    """Walk-forward metrics of every strategy, and a circular-block bootstrap interval
    of each strategy's Sharpe ratio minus the baseline's (paired resamples).

    Returns
    -------
    dict
        ``windows`` (test window starts), ``bars`` (test bar times), ``strategies``
        (name -> metrics, with ``sharpe_difference`` and its interval for gated and
        sized), and ``equity`` (bar time and compounded value per strategy).
    """
    positions = walk_forward_positions(frame, K, settings)
    per_bar = strategy_returns(positions, settings.cost_bps)
    ppy = settings.periods_per_year
    result: dict = {
        "windows": [pd.Timestamp(t).isoformat() for t in test_window_starts(frame["ts"], settings)],
        "bars": len(per_bar),
        "strategies": {},
    }
    if len(per_bar) < 3:
        return result
    held = positions.groupby("ts")[list(STRATEGIES)].mean().reindex(per_bar.index)
    rng = np.random.default_rng(settings.seed)
    base = per_bar["baseline"].to_numpy()
    differences = _sharpe_differences(per_bar, base, settings, rng)
    for name in STRATEGIES:
        values = per_bar[name].to_numpy()
        turnover = per_bar[f"{name}_turnover"].to_numpy()
        metrics = _metrics(values, turnover, held[name].to_numpy(), ppy)
        if name != "baseline":
            baseline_sharpe = result["strategies"]["baseline"]["sharpe"]
            metrics["sharpe_difference"] = metrics["sharpe"] - baseline_sharpe
            low, high = percentile_interval(differences[name], settings.confidence)
            metrics["sharpe_difference_low"], metrics["sharpe_difference_high"] = low, high
        result["strategies"][name] = metrics
    # The chart (and the JSON of what it shows) keeps at most EQUITY_POINTS points.
    keep = np.unique(np.linspace(0, len(per_bar) - 1, min(len(per_bar), EQUITY_POINTS)).round())
    keep = keep.astype(int)
    result["equity"] = {
        "ts": [per_bar.index[i].isoformat() for i in keep],
        **{name: np.cumprod(1 + per_bar[name].to_numpy())[keep].tolist() for name in STRATEGIES},
    }
    return result
