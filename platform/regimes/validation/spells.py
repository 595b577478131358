"""Spells: maximal runs of one state in one symbol's sequence of bars.

A spell is the unit of independence of every state-conditioned statistic: bars inside
one spell are not independent draws, so intervals resample whole spells and every
figure says how many spells stand behind it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from regimes.answers import UNKNOWN

SPELL_COLUMNS = ("symbol", "state", "start", "length", "censored")


def spell_ids(symbols: np.ndarray, states: np.ndarray) -> np.ndarray:
    """A spell number per bar: it changes where the symbol or the state changes.

    Parameters
    ----------
    symbols, states : array
        One entry per bar, sorted by (symbol, ts).

    Returns
    -------
    ndarray of int64
        0, 0, 1, ... (consecutive numbers, one per spell).

    Examples
    --------
    >>> spell_ids(np.array(["a", "a", "a", "b"]), np.array([1, 1, 2, 2])).tolist()
    [0, 0, 1, 2]
    """
    symbols, states = np.asarray(symbols), np.asarray(states)
    if len(states) == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.ones(len(states), dtype=bool)
    change[1:] = (symbols[1:] != symbols[:-1]) | (states[1:] != states[:-1])
    return np.cumsum(change) - 1


def spells(symbols: np.ndarray, states: np.ndarray) -> pd.DataFrame:
    """The spells of a (symbol, ts)-sorted sequence of states.

    A spell at either end of its symbol's window, or next to an UNKNOWN bar, is
    ``censored``: its true length is unknown (it may have started before the window or
    been cut by a bar the model did not classify). UNKNOWN runs are not spells.

    Returns
    -------
    DataFrame
        Columns ``symbol, state, start`` (position of its first bar), ``length``,
        ``censored``; one row per spell, in order.

    Examples
    --------
    >>> spells(np.array(["a"] * 5), np.array([0, 0, 1, 1, 0]))[["state", "length", "censored"]]
       state  length  censored
    0      0       2      True
    1      1       2     False
    2      0       1      True
    """
    symbols, states = np.asarray(symbols), np.asarray(states)
    ids = spell_ids(symbols, states)
    if len(ids) == 0:
        return pd.DataFrame({c: [] for c in SPELL_COLUMNS})
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], len(ids)]  # exclusive
    first_of_symbol = np.r_[True, symbols[starts[1:]] != symbols[starts[:-1]]]
    last_of_symbol = np.r_[first_of_symbol[1:], True]
    spell_states = states[starts]
    unknown = spell_states == UNKNOWN
    before_unknown = np.r_[unknown[1:], False] & ~last_of_symbol
    after_unknown = np.r_[False, unknown[:-1]] & ~first_of_symbol
    frame = pd.DataFrame(
        {
            "symbol": symbols[starts],
            "state": spell_states.astype(np.int64),
            "start": starts,
            "length": ends - starts,
            "censored": first_of_symbol | last_of_symbol | before_unknown | after_unknown,
        }
    )
    return frame[~unknown].reset_index(drop=True)
