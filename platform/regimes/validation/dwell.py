"""Dwell times (plan 8.1): how long each state lasts, next to what the transition
matrix implies.

A Gaussian HMM's state k lasts a geometric number of bars with mean 1 / (1 - a_kk).
The empirical dwell is the length of the spells of the decoded states; spells cut by
the window's ends or by UNKNOWN bars are censored and left out of the mean (they would
bias it short), but still counted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def implied_dwell(transmat: np.ndarray) -> np.ndarray:
    """1 / (1 - a_kk) per state (``inf`` for an absorbing state).

    Examples
    --------
    >>> implied_dwell(np.array([[0.9, 0.1], [0.5, 0.5]])).round(3).tolist()
    [10.0, 2.0]
    """
    diagonal = np.diag(np.asarray(transmat, dtype=float))
    with np.errstate(divide="ignore"):
        return 1.0 / (1.0 - diagonal)


def dwell_table(spell_frame: pd.DataFrame, transmat: np.ndarray, min_spells: int) -> pd.DataFrame:
    """Per state: spells, bars, share of bars, empirical dwell (mean, median, p90 of the
    uncensored spells) and the implied dwell, and their ratio.

    Parameters
    ----------
    spell_frame : DataFrame
        From :func:`regimes.validation.spells.spells`.
    transmat : (K, K) array
        The model's transition matrix.
    min_spells : int
        Fewer uncensored spells than this leave the empirical figures NaN ("too little
        data") and ``enough`` False.

    Returns
    -------
    DataFrame indexed by state 0..K-1.
    """
    K = len(transmat)
    implied = implied_dwell(transmat)
    complete = spell_frame[~spell_frame["censored"].astype(bool)]
    by_state = complete.groupby("state")["length"]
    all_by_state = spell_frame.groupby("state")["length"]
    total_bars = max(int(spell_frame["length"].sum()), 1)
    table = pd.DataFrame(index=pd.RangeIndex(K, name="state"))
    table["spells"] = all_by_state.size().reindex(table.index).fillna(0).astype(int)
    table["complete_spells"] = by_state.size().reindex(table.index).fillna(0).astype(int)
    table["bars"] = all_by_state.sum().reindex(table.index).fillna(0).astype(int)
    table["share"] = table["bars"] / total_bars
    table["mean_dwell"] = by_state.mean().reindex(table.index)
    table["median_dwell"] = by_state.median().reindex(table.index)
    table["p90_dwell"] = by_state.quantile(0.9).reindex(table.index)
    table["implied_dwell"] = implied
    table["enough"] = table["complete_spells"] >= min_spells
    for column in ("mean_dwell", "median_dwell", "p90_dwell"):
        table.loc[~table["enough"], column] = np.nan
    table["ratio"] = table["mean_dwell"] / table["implied_dwell"]
    return table


def dwell_histogram(spell_frame: pd.DataFrame, K: int, bins: int = 20) -> dict:
    """Counts of uncensored spell lengths per state on shared log-spaced bins (for the
    chart): ``{"edges": [...], "counts": {state: [...]}}``."""
    complete = spell_frame[~spell_frame["censored"].astype(bool)]
    longest = int(complete["length"].max()) if len(complete) else 1
    edges = np.unique(np.round(np.geomspace(1, max(longest, 2) + 1, bins + 1)).astype(int))
    counts = {
        int(k): np.histogram(complete.loc[complete["state"] == k, "length"], edges)[0].tolist()
        for k in range(K)
    }
    return {"edges": edges.tolist(), "counts": counts}
