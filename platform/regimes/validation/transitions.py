"""Transition diagnostics (plan 8.2): diagonal dominance, empirical vs model
transition rates, states never entered or never left."""

from __future__ import annotations

import numpy as np
import pandas as pd

from regimes.answers import UNKNOWN


def empirical_counts(symbols: np.ndarray, states: np.ndarray, K: int) -> np.ndarray:
    """(K, K) counts of bar-to-bar moves i -> j within each symbol; pairs with an
    UNKNOWN bar on either side are skipped (the move between them is not observed).

    Examples
    --------
    >>> empirical_counts(np.array(["a"] * 4 + ["b"]), np.array([0, 0, 1, -1, 1]), 2).tolist()
    [[1, 1], [0, 0]]
    """
    symbols, states = np.asarray(symbols), np.asarray(states)
    same = symbols[1:] == symbols[:-1]
    origin, target = states[:-1], states[1:]
    keep = same & (origin != UNKNOWN) & (target != UNKNOWN)
    counts = np.zeros((K, K), dtype=np.int64)
    np.add.at(counts, (origin[keep], target[keep]), 1)
    return counts


def row_rates(counts: np.ndarray) -> np.ndarray:
    """Counts normalised per row; NaN rows for states never left nor stayed in."""
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / np.where(totals > 0, totals, 1), np.nan)


def transition_table(transmat: np.ndarray, counts: np.ndarray, min_diagonal: float) -> pd.DataFrame:
    """Per state: a_kk, the empirical stay rate, the largest off-diagonal a_kj, whether
    the row is diagonally dominant (a_kk >= ``min_diagonal`` and a_kk above every
    a_kj), and whether the state was ever entered from another state or ever left.
    """
    transmat = np.asarray(transmat, dtype=float)
    K = len(transmat)
    empirical = row_rates(counts)
    off = transmat.copy()
    np.fill_diagonal(off, -np.inf)
    moves_out = counts.sum(axis=1) - np.diag(counts)
    moves_in = counts.sum(axis=0) - np.diag(counts)
    table = pd.DataFrame(index=pd.RangeIndex(K, name="state"))
    table["model_stay"] = np.diag(transmat)
    table["empirical_stay"] = np.diag(empirical)
    table["largest_off_diagonal"] = off.max(axis=1) if K > 1 else 0.0
    table["diagonally_dominant"] = (table["model_stay"] >= min_diagonal) & (
        table["model_stay"] > table["largest_off_diagonal"]
    )
    table["observed_moves"] = counts.sum(axis=1)
    table["never_entered"] = moves_in == 0
    table["never_left"] = moves_out == 0
    return table
