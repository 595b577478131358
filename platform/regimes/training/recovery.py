"""Honest regime-recovery figures: decoded states on the walk-forward *test* windows
(never the window that selected the model), raw and as published after anti-chatter,
against known regimes.

* accuracy: Hungarian (one-to-one) when the model has at most as many states as there
  are true regimes, purity (each state takes its majority regime) when it has more;
  always next to the published mean dwell and the true one, so that cutting a regime into
  many short states does not look good;
* published states: the anti-chatter layer of the live engine (:mod:`regimes.live.antichatter`)
  run over the filtered posteriors; a bar before a symbol's first published state takes
  its raw state.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from regimes.config.timeframes import AntiChatter
from regimes.live import antichatter
from regimes.model.hmm.evaluation import headline_accuracy, matched_accuracy, mean_dwell


def sequence_lengths(symbols) -> list[int]:
    """Rows per symbol of rows sorted by symbol (then time)."""
    symbols = np.asarray(symbols)
    if len(symbols) == 0:
        return []
    starts = np.flatnonzero(np.r_[True, symbols[1:] != symbols[:-1]])
    return np.diff(np.r_[starts, len(symbols)]).tolist()


def published_states(
    log_alpha: np.ndarray, lengths: Sequence[int], settings: AntiChatter
) -> np.ndarray:
    """The states the live engine would publish: anti-chatter over each sequence's
    filtered posteriors (concatenated rows, ``lengths`` per symbol), all symbols advanced
    together; a bar before the first published state keeps its raw state."""
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    posterior = np.exp(np.asarray(log_alpha, dtype=np.float64))
    state = antichatter.AntiChatterState.empty(len(lengths), settings.majority_window)
    out = np.empty(len(posterior), dtype=np.int64)
    for t in range(int(lengths.max(initial=0))):
        active = np.flatnonzero(lengths > t)
        rows = starts[active] + t
        published, raw = antichatter.step(state, active, posterior[rows], settings)
        out[rows] = np.where(published >= 0, published, raw)
    return out


def score_states(truth, states, lengths: Sequence[int], K: int, K_true: int, fits=None) -> dict:
    """Accuracy (Hungarian when K <= K_true, else purity) and mean dwell of decoded
    ``states`` against ``truth`` labels of the same bars.

    ``fits`` names, per bar, the fit that decoded it (the walk-forward fold): each fit
    numbers its states in its own way, so each fit's states are matched to the truth on
    its own bars, and the accuracies are pooled weighted by bars."""
    truth, states = np.asarray(truth), np.asarray(states)
    fits = np.zeros(len(states), dtype=np.int64) if fits is None else np.asarray(fits)
    hungarian = purity = headline = 0.0
    for fit in np.unique(fits):
        rows = fits == fit
        result = matched_accuracy(states[rows], truth[rows], K, K_true)
        share = rows.sum() / len(states)
        hungarian += share * result.hungarian
        purity += share * result.purity
        headline += share * headline_accuracy(result)
    return {
        "accuracy": float(headline),
        "measure": "hungarian" if K <= K_true else "purity",
        "hungarian": float(hungarian),
        "purity": float(purity),
        "dwell": mean_dwell(states, lengths),
    }


def recovery_figures(test_states: pd.DataFrame, truth: np.ndarray, K: int, K_true: int) -> dict:
    """Figures of one model's test-window states (columns ``symbol``, ``ts``, ``raw``,
    ``published``, sorted by fold, symbol and time; ``fold`` optional, each fold's states
    matched to the truth on their own) against the true regime of each row: accuracy and
    dwell filtered (raw) and published, the true dwell and chance (the share of the most
    common regime, at least 1/K_true)."""
    keys = ["fold", "symbol"] if "fold" in test_states else ["symbol"]
    runs = test_states[keys].astype(str).agg("/".join, axis=1).to_numpy()
    lengths = sequence_lengths(runs)
    fits = test_states["fold"].to_numpy() if "fold" in test_states else None
    raw = score_states(truth, test_states["raw"].to_numpy(), lengths, K, K_true, fits)
    published = score_states(truth, test_states["published"].to_numpy(), lengths, K, K_true, fits)
    shares = np.bincount(truth, minlength=K_true) / max(len(truth), 1)
    return {
        "bars": int(len(truth)),
        "K": int(K),
        "K_true": int(K_true),
        "measure": raw["measure"],
        "accuracy_filtered": raw["accuracy"],
        "accuracy_published": published["accuracy"],
        "hungarian_filtered": raw["hungarian"],
        "purity_filtered": raw["purity"],
        "dwell_filtered": raw["dwell"],
        "dwell_published": published["dwell"],
        "dwell_true": mean_dwell(truth, lengths),
        "chance": float(max(shares.max(), 1.0 / K_true)),
    }
