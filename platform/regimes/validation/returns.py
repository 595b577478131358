"""State-conditioned returns (plan 8.5): per state, the next-N-bar return, the
volatility and the maximum drawdown of the bars that follow it, with spell-bootstrap
intervals and the number of independent spells behind each figure.

Returns are log returns of close prices. The state of bar t is known when bar t
closes, so what a state "predicts" is the return from close t onwards: the next bar's
return ``r_{t+1} = log(c_{t+1} / c_t)`` and the next-N-bar return
``log(c_{t+N} / c_t)``. A gap bar (no price) ends both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from regimes.validation.bootstrap import percentile_interval, spell_bootstrap
from regimes.validation.spells import spell_ids

TOO_LITTLE = "too little data"


def forward_returns(frame: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """Add ``next_return`` (one bar) and ``forward_return`` (``horizon`` bars) to a
    (symbol, ts)-sorted frame with a ``close`` column; NaN where a price is missing
    or the symbol's history ends."""
    out = frame.copy()
    log_close = np.log(out["close"].astype(float))
    grouped = log_close.groupby(out["symbol"], sort=False)
    out["next_return"] = grouped.shift(-1) - log_close
    out["forward_return"] = grouped.shift(-horizon) - log_close
    return out


def max_drawdown(log_returns: np.ndarray) -> float:
    """The largest fall from a peak of the compounded path, as a negative fraction.

    >>> round(max_drawdown(np.log([1.1, 0.5, 1.2])), 3)
    -0.5
    """
    path = np.concatenate([[0.0], np.cumsum(log_returns)])
    return float(np.min(np.exp(path - np.maximum.accumulate(path)) - 1.0))


@dataclass(frozen=True)
class ReturnSettings:
    """What :func:`conditioned_returns` needs besides the data."""

    horizon: int
    periods_per_year: float
    min_spells: int
    min_bars: int
    samples: int
    confidence: float
    seed: int


def conditioned_returns(frame: pd.DataFrame, K: int, settings: ReturnSettings) -> pd.DataFrame:
    """Per state 0..K-1: bars, spells, mean next-N return, annualised volatility and
    max drawdown of the following bars, each with a bootstrap interval (whole spells
    resampled); a state with fewer than ``min_spells`` spells or ``min_bars`` bars has
    NaN figures and ``note`` "too little data".

    Parameters
    ----------
    frame : DataFrame
        (symbol, ts)-sorted with ``state`` (UNKNOWN = -1), ``next_return`` and
        ``forward_return`` (:func:`forward_returns`).
    """
    rng = np.random.default_rng(settings.seed)
    frame = frame.assign(spell=spell_ids(frame["symbol"].to_numpy(), frame["state"].to_numpy()))
    rows = []
    annualise = np.sqrt(settings.periods_per_year)
    for state in range(K):
        in_state = frame[(frame["state"] == state) & frame["next_return"].notna()]
        row: dict = {"state": state, "bars": len(in_state), "spells": in_state["spell"].nunique()}
        if row["spells"] < settings.min_spells or row["bars"] < settings.min_bars:
            note = f"{TOO_LITTLE} ({row['spells']} spells, {row['bars']} bars)"
            rows.append({**row, "note": note})
            continue
        spell = in_state["spell"].to_numpy()
        forward = in_state["forward_return"].to_numpy()
        nxt = in_state["next_return"].to_numpy()
        has_forward = np.isfinite(forward)
        statistics = {
            "mean_forward_return": (forward[has_forward], spell[has_forward], np.mean),
            "volatility": (nxt, spell, lambda x: float(np.std(x, ddof=1)) * annualise),
            "max_drawdown": (nxt, spell, max_drawdown),
        }
        for name, (values, groups, statistic) in statistics.items():
            if len(values) < 2:
                row[name] = np.nan
                continue
            row[name] = float(statistic(values))
            draws = spell_bootstrap(values, groups, statistic, settings.samples, rng)
            row[f"{name}_low"], row[f"{name}_high"] = percentile_interval(
                draws, settings.confidence
            )
        row["note"] = f"{row['spells']} spells" + (" (few)" if row["spells"] < 10 else "")
        rows.append(row)
    return pd.DataFrame(rows).set_index("state")
