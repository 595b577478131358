"""A statistical jump model (Nystrup, Lindström & Madsen 2020, "Learning hidden Markov
models with persistent states by penalizing jumps"): k-means on z_t with a penalty
``jump_penalty`` charged at every change of state,

    minimise  sum_t ||z_t - mu_{s_t}||^2  +  jump_penalty * sum_t 1[s_t != s_{t-1}],

by coordinate descent: the state path for fixed centres (dynamic programming, exact), then
the centres for a fixed path (means), until the path stops changing. The penalty sets the
persistence directly instead of through a likelihood with assumed emission densities, so a
misspecified emission model (heavy tails, seasonality left in the features) does not turn
states into per-bar noise the way Baum-Welch does. :class:`~regimes.model.hmm.model.RegimeHMM`
uses the fitted path to estimate a Gaussian HMM (state means, covariances and transition
counts) for the causal filter.

Many sequences are solved together, one time index at a time, like the filter.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.cluster import kmeans_plusplus


def jump_path(
    Z: np.ndarray, lengths: Sequence[int], centres: np.ndarray, jump_penalty: float
) -> tuple[np.ndarray, float]:
    """The state path minimising the penalised loss for fixed ``centres``: (states, loss)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    K = len(centres)
    loss = (Z**2).sum(axis=1)[:, None] - 2.0 * Z @ centres.T + (centres**2).sum(axis=1)[None, :]
    back = np.zeros((len(Z), K), dtype=np.int16)
    value = np.zeros((len(lengths), K))
    for t in range(int(lengths.max(initial=0))):
        active = np.flatnonzero(lengths > t)
        rows = starts[active] + t
        if t == 0:
            value[active] = loss[rows]
            continue
        previous = value[active]
        best = previous.argmin(axis=1)
        switch = previous[np.arange(len(active)), best] + jump_penalty
        stay_better = previous <= switch[:, None]
        back[rows] = np.where(stay_better, np.arange(K)[None, :], best[:, None])
        value[active] = np.minimum(previous, switch[:, None]) + loss[rows]
    states = np.empty(len(Z), dtype=np.int64)
    total = 0.0
    ends = starts + lengths - 1
    for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
        state = int(value[i].argmin())
        total += float(value[i, state])
        for row in range(end, start - 1, -1):
            states[row] = state
            if row > start:
                state = int(back[row, state])
    return states, total


def fit_jump_model(
    Z: np.ndarray,
    lengths: Sequence[int],
    K: int,
    jump_penalty: float,
    seed: int,
    max_iter: int = 20,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Centres (K, d), the state path and the loss of one start (k-means++ centres)."""
    rng = np.random.default_rng(seed)
    centres, _ = kmeans_plusplus(Z, K, random_state=int(rng.integers(2**31 - 1)))
    states, loss = None, np.inf
    for _ in range(max_iter):
        new_states, loss = jump_path(Z, lengths, centres, jump_penalty)
        if states is not None and np.array_equal(new_states, states):
            break
        states = new_states
        for k in range(K):
            members = Z[states == k]
            # An empty state restarts at the row the current centres explain worst.
            if len(members):
                centres[k] = members.mean(axis=0)
            else:
                worst = ((Z - centres[states]) ** 2).sum(axis=1).argmax()
                centres[k] = Z[worst]
    return centres, states, float(loss)
