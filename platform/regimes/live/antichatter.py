"""Anti-chatter (plan 6.4): the published regime changes only when the evidence holds.

Per symbol, each bar brings the filtered posterior alpha_t. The *raw* state is its argmax
(always visible downstream). The *published* state follows three rules, per timeframe
from ``config/timeframes.yaml`` (``anti_chatter``):

1. **Majority vote** — the candidate is the most frequent raw state among the last
   ``majority_window`` bars (a tie goes to the most recent of the tied states);
2. **Switch threshold** — the published state moves to the candidate only if the
   candidate's posterior probability on this bar is at least ``p_switch``;
3. **Minimum dwell** — and only once the published state has lasted ``min_dwell_bars``.

Before the first switch a symbol has no published state (``-1``; the engine reports it
as UNKNOWN "settling"). All symbols advance together in arrays; the state snapshots to a
dict of arrays and restores exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from regimes.answers import UNKNOWN
from regimes.config.timeframes import AntiChatter
from regimes.errors import BadInputError

NO_STATE = UNKNOWN


FIELDS = ("published", "dwell", "history", "seen", "raw_switches", "published_switches")


@dataclass
class AntiChatterState:
    """Arrays over symbols: published state, bars since it was published, raw history,
    and how often the raw and the published state changed (for monitors)."""

    published: np.ndarray
    dwell: np.ndarray
    history: np.ndarray  # (N, majority_window) raw states, NO_STATE where not yet seen
    seen: np.ndarray
    raw_switches: np.ndarray
    published_switches: np.ndarray

    @classmethod
    def empty(cls, n_symbols: int, window: int) -> AntiChatterState:
        return cls(
            published=np.full(n_symbols, NO_STATE, dtype=np.int64),
            dwell=np.zeros(n_symbols, dtype=np.int64),
            history=np.full((n_symbols, window), NO_STATE, dtype=np.int64),
            seen=np.zeros(n_symbols, dtype=np.int64),
            raw_switches=np.zeros(n_symbols, dtype=np.int64),
            published_switches=np.zeros(n_symbols, dtype=np.int64),
        )

    def extended(self, n_symbols: int) -> AntiChatterState:
        """This state with ``n_symbols`` fresh symbols appended."""
        fresh = AntiChatterState.empty(n_symbols, self.history.shape[1])
        return AntiChatterState(
            *(np.concatenate([getattr(self, f), getattr(fresh, f)]) for f in FIELDS)
        )

    def snapshot(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name).copy() for name in FIELDS}

    @classmethod
    def restore(cls, state: dict[str, np.ndarray]) -> AntiChatterState:
        missing = [name for name in FIELDS if name not in state]
        if missing:
            raise BadInputError(f"anti-chatter snapshot is incomplete: no {missing}")
        return cls(**{name: np.asarray(state[name]).copy() for name in FIELDS})


def majority(history: np.ndarray, seen: np.ndarray, K: int) -> np.ndarray:
    """Most frequent state of each row's filled history; ties go to the most recent."""
    N, W = history.shape
    counts = np.zeros((N, K), dtype=np.int64)
    latest = np.full((N, K), -1, dtype=np.int64)
    filled = np.minimum(seen, W)
    # Oldest to newest: column (seen - filled + i) % W holds the i-th oldest kept state.
    for i in range(W):
        column = (seen - filled + i) % W
        state = history[np.arange(N), column]
        valid = (i < filled) & (state >= 0)
        rows = np.flatnonzero(valid)
        counts[rows, state[rows]] += 1
        latest[rows, state[rows]] = i
    best = counts.max(axis=1, keepdims=True)
    score = np.where(counts == best, latest, -1)  # among the tied, the most recent
    return score.argmax(axis=1)


def step(
    state: AntiChatterState, rows: np.ndarray, posterior: np.ndarray, settings: AntiChatter
) -> tuple[np.ndarray, np.ndarray]:
    """Advance ``rows`` of ``state`` by one bar with their posteriors (len(rows), K).

    Returns (published state, raw state) for those rows; -1 = not yet published.
    """
    posterior = np.asarray(posterior, dtype=np.float64)
    if posterior.ndim != 2 or posterior.shape[0] != len(rows):
        raise BadInputError(
            f"anti-chatter: expected posteriors of shape ({len(rows)}, K), got {posterior.shape}"
        )
    K = posterior.shape[1]
    W = state.history.shape[1]
    if W != settings.majority_window:
        raise BadInputError(
            f"anti-chatter: state has a window of {W}, settings ask for {settings.majority_window}"
        )
    raw = posterior.argmax(axis=1)
    previous = state.history[rows, (state.seen[rows] - 1) % W]
    state.raw_switches[rows] += (state.seen[rows] > 0) & (previous != raw)
    slot = state.seen[rows] % W
    state.history[rows, slot] = raw
    state.seen[rows] += 1
    candidate = majority(state.history[rows], state.seen[rows], K)
    confident = posterior[np.arange(len(rows)), candidate] >= settings.p_switch
    current = state.published[rows]
    dwell = state.dwell[rows] + 1
    first = (current == NO_STATE) & confident
    switch = (
        (current != NO_STATE)
        & (candidate != current)
        & confident
        & (dwell >= settings.min_dwell_bars)
    )
    moved = first | switch
    state.published_switches[rows] += switch
    published = np.where(moved, candidate, current)
    state.published[rows] = published
    state.dwell[rows] = np.where(moved, 0, dwell)
    return published, raw
