"""Regime recovery on data with known regimes: matched accuracy, purity and dwell times.

Decoded state ids are arbitrary, so they are matched to the truth labels before they are
compared:

* ``hungarian``: a one-to-one matching (:func:`scipy.optimize.linear_sum_assignment` on
  the confusion matrix) that maximises the bars on the diagonal. With more predicted
  states than truth labels, the extra states stay unmatched and their bars count as
  wrong, so the figure never improves by adding states.
* ``purity``: every predicted state takes its majority truth label (many-to-one). It
  is what a user who names states after the fact would see, and it rewards a model
  that splits a true regime into several states; it can only grow with K, so it is
  reported next to ``hungarian`` and is the fair figure only when K_pred > K_true.

With K_pred <= K_true both are reported too; ``hungarian`` is then the headline figure
(:func:`headline_accuracy`). :func:`recovery_report` puts the figures of one model
together: filtered and Viterbi states, an optional static baseline (e.g. k-means on the
same z), the no-information rate and the dwell times.

Dwell times are counted on runs of equal consecutive labels. The first and last run of
every sequence are censored (their true start or end lies outside the data) and are
left out, as their lengths would be biased short.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from regimes.errors import BadInputError

TRUTH_RULES = frozenset({"majority", "last"})


@dataclass(frozen=True)
class MatchedAccuracy:
    """Accuracy of decoded states against truth labels after matching state ids.

    Attributes
    ----------
    hungarian : float
        Share of bars whose state, mapped one-to-one to a truth label, equals the truth.
    purity : float
        Share of bars whose state's majority truth label equals the truth.
    mapping : dict of int to int
        Predicted state -> truth label of the one-to-one matching (unmatched predicted
        states are absent).
    purity_mapping : dict of int to int
        Predicted state -> its majority truth label.
    confusion : numpy.ndarray
        Counts, rows predicted states ``0..K_pred-1``, columns truth labels
        ``0..K_true-1``.
    """

    hungarian: float
    purity: float
    mapping: dict[int, int]
    purity_mapping: dict[int, int]
    confusion: np.ndarray


def _labels(values, what: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise BadInputError(f"{what}: expected a 1-d array of labels, got shape {array.shape}")
    if array.size and (not np.issubdtype(array.dtype, np.integer) or array.min() < 0):
        raise BadInputError(f"{what}: expected non-negative integer labels, got {array.dtype}")
    return array.astype(np.int64, copy=False)


def confusion_matrix(predicted, truth, K_pred: int | None = None, K_true: int | None = None):
    """Counts of (predicted state, truth label) pairs: shape (K_pred, K_true)."""
    predicted = _labels(predicted, "predicted")
    truth = _labels(truth, "truth")
    if predicted.shape != truth.shape:
        raise BadInputError(
            f"predicted and truth: expected the same length, got {len(predicted)} and {len(truth)}"
        )
    K_pred = int(predicted.max(initial=-1)) + 1 if K_pred is None else int(K_pred)
    K_true = int(truth.max(initial=-1)) + 1 if K_true is None else int(K_true)
    counts = np.zeros((K_pred, K_true), dtype=np.int64)
    np.add.at(counts, (predicted, truth), 1)
    return counts


def hungarian_accuracy(
    predicted, truth, K_pred: int | None = None, K_true: int | None = None
) -> tuple[float, dict[int, int]]:
    """One-to-one matched accuracy of predicted states against truth labels.

    Parameters
    ----------
    predicted, truth : array-like of int, shape (n,)
        Decoded state per bar and the true regime label of the same bar.
    K_pred, K_true : int, optional
        Number of predicted states and truth labels (default: largest id seen + 1), so
        states that never occur still take part in the matching.

    Returns
    -------
    accuracy : float
        Share of bars on the matched diagonal. When K_pred > K_true, the bars of
        unmatched states count as wrong (see :func:`matched_accuracy` for purity).
    mapping : dict of int to int
        Predicted state -> matched truth label.

    Examples
    --------
    >>> accuracy, mapping = hungarian_accuracy([1, 1, 0, 0, 2], [0, 0, 1, 1, 1])
    >>> round(accuracy, 2), mapping
    (0.8, {0: 1, 1: 0})
    """
    result = matched_accuracy(predicted, truth, K_pred, K_true)
    return result.hungarian, result.mapping


def matched_accuracy(
    predicted, truth, K_pred: int | None = None, K_true: int | None = None
) -> MatchedAccuracy:
    """Hungarian (one-to-one) and purity (majority, many-to-one) accuracy together.

    Parameters are those of :func:`hungarian_accuracy`.

    Examples
    --------
    >>> result = matched_accuracy([0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 1, 0])
    >>> round(result.hungarian, 3), round(result.purity, 3)
    (0.667, 0.833)
    """
    counts = confusion_matrix(predicted, truth, K_pred, K_true)
    total = counts.sum()
    if total == 0:
        raise BadInputError("matched accuracy: no bars to compare")
    rows, cols = linear_sum_assignment(counts, maximize=True)
    mapping = {int(r): int(c) for r, c in zip(rows, cols, strict=True)}
    hungarian = float(counts[rows, cols].sum() / total)
    majority = counts.argmax(axis=1)
    purity = float(counts.max(axis=1).sum() / total)
    purity_mapping = {
        int(state): int(majority[state]) for state in np.flatnonzero(counts.sum(axis=1))
    }
    return MatchedAccuracy(hungarian, purity, mapping, purity_mapping, counts)


def headline_accuracy(result: MatchedAccuracy) -> float:
    """``hungarian`` when K_pred <= K_true, ``purity`` when the model has more states."""
    K_pred, K_true = result.confusion.shape
    return result.hungarian if K_pred <= K_true else result.purity


@dataclass(frozen=True)
class RecoveryReport:
    """How well decoded states recover known regimes on held-out bars.

    Attributes
    ----------
    K, K_true : int
        States of the model and regimes of the truth.
    filtered, viterbi : MatchedAccuracy
        Argmax of the filtered posterior (causal, what the live path sees) and the
        Viterbi path (uses the whole sequence).
    baseline : MatchedAccuracy or None
        A static clustering of the same z (no temporal model), when given.
    chance : float
        The no-information rate: the share of the most common true regime, and never
        less than 1 / K_true.
    dwell_filtered, dwell_viterbi, dwell_true : float
        Mean uncensored run lengths in bars (:func:`mean_dwell`).
    """

    K: int
    K_true: int
    filtered: MatchedAccuracy
    viterbi: MatchedAccuracy
    baseline: MatchedAccuracy | None
    chance: float
    dwell_filtered: float
    dwell_viterbi: float
    dwell_true: float

    def as_dict(self) -> dict[str, float | int | None]:
        """Headline figures, flat (for printing, tables and metrics)."""
        return {
            "K": self.K,
            "K_true": self.K_true,
            "accuracy_filtered": headline_accuracy(self.filtered),
            "accuracy_viterbi": headline_accuracy(self.viterbi),
            "accuracy_baseline": (
                None if self.baseline is None else headline_accuracy(self.baseline)
            ),
            "hungarian_filtered": self.filtered.hungarian,
            "purity_filtered": self.filtered.purity,
            "hungarian_viterbi": self.viterbi.hungarian,
            "purity_viterbi": self.viterbi.purity,
            "chance": self.chance,
            "dwell_filtered": self.dwell_filtered,
            "dwell_viterbi": self.dwell_viterbi,
            "dwell_true": self.dwell_true,
        }


def recovery_report(
    truth,
    filtered,
    viterbi,
    lengths: Sequence[int] | None,
    K: int,
    K_true: int,
    baseline=None,
) -> RecoveryReport:
    """Matched accuracies, the no-information rate and dwell times of decoded states.

    Parameters
    ----------
    truth : array-like of int, shape (n,)
        True regime of every held-out bar (e.g. from :func:`truth_for_bars`).
    filtered, viterbi : array-like of int, shape (n,)
        Decoded states of the same bars.
    lengths : sequence of int or None
        Bars per sequence (symbol), for the dwell times.
    K, K_true : int
        Model states and truth regimes.
    baseline : array-like of int, shape (n,), optional
        States of a static clustering of the same bars, with K clusters.

    Examples
    --------
    >>> truth = [0, 0, 0, 1, 1, 1, 0, 0]
    >>> report = recovery_report(truth, [1, 1, 0, 0, 0, 0, 1, 1], truth, None, 2, 2)
    >>> report.as_dict()["accuracy_filtered"], report.as_dict()["accuracy_viterbi"]
    (0.875, 1.0)
    """
    truth = _labels(truth, "truth")
    if len(truth) == 0:
        raise BadInputError("recovery report: no bars to compare")
    shares = np.bincount(truth, minlength=K_true) / len(truth)
    return RecoveryReport(
        K=int(K),
        K_true=int(K_true),
        filtered=matched_accuracy(filtered, truth, K, K_true),
        viterbi=matched_accuracy(viterbi, truth, K, K_true),
        baseline=None if baseline is None else matched_accuracy(baseline, truth, K, K_true),
        chance=float(max(shares.max(), 1.0 / K_true)),
        dwell_filtered=mean_dwell(filtered, lengths),
        dwell_viterbi=mean_dwell(viterbi, lengths),
        dwell_true=mean_dwell(truth, lengths),
    )


def _sequence_bounds(n: int, lengths: Sequence[int] | None) -> np.ndarray:
    lengths = [n] if lengths is None else [int(x) for x in lengths]
    if any(length < 0 for length in lengths) or sum(lengths) != n:
        raise BadInputError(f"lengths: expected non-negative lengths summing to {n}")
    return np.cumsum([0, *lengths])


def run_lengths(states, lengths: Sequence[int] | None = None) -> np.ndarray:
    """Lengths of the uncensored runs of equal consecutive labels, in bars.

    Parameters
    ----------
    states : array-like of int, shape (n,)
        Labels of concatenated sequences.
    lengths : sequence of int, optional
        Rows of each sequence (default: one sequence). Runs never cross sequences.

    Returns
    -------
    numpy.ndarray of int
        Every run except the first and last of each sequence (censored), in order.

    Examples
    --------
    >>> run_lengths([0, 0, 1, 1, 1, 2, 0, 0]).tolist()
    [3, 1]
    """
    states = _labels(states, "states")
    bounds = _sequence_bounds(len(states), lengths)
    runs = []
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        sequence = states[start:end]
        if len(sequence) == 0:
            continue
        changes = np.flatnonzero(sequence[1:] != sequence[:-1]) + 1
        edges = np.r_[0, changes, len(sequence)]
        runs.append(np.diff(edges)[1:-1])
    return np.concatenate(runs) if runs else np.empty(0, dtype=np.int64)


def mean_dwell(states, lengths: Sequence[int] | None = None) -> float:
    """Mean uncensored run length in bars (NaN when no run is uncensored)."""
    runs = run_lengths(states, lengths)
    return float(runs.mean()) if len(runs) else float("nan")


def truth_for_bars(
    truth_1m: pd.DataFrame,
    bar_ts,
    symbols,
    timeframe_minutes: int,
    level: str,
    rule: str = "majority",
) -> np.ndarray:
    """The truth label of each higher-timeframe bar from the 1-minute truth.

    A bar opening at ``ts`` covers the minutes ``[ts, ts + timeframe_minutes)`` (bars are
    labelled by their open time). Its label is the most frequent 1-minute label among
    those minutes (``rule="majority"``; ties go to the smaller label) or the label of the
    bar's last minute (``rule="last"``, the regime in force when the bar closes and its
    features are computed). Evaluation only: it reads the whole bar, which is what the
    bar's features see too. Minutes missing from the feed keep their truth: the regime
    exists whether or not a trade printed.

    Parameters
    ----------
    truth_1m : pandas.DataFrame
        Columns ``symbol``, ``ts`` and ``level`` (e.g. the synthetic market's ``truth``).
    bar_ts, symbols : array-like, shape (n,)
        Open time and symbol of each bar to label.
    timeframe_minutes : int
        Bar length in minutes (5 for 5m, 60 for 1h).
    level : str
        Truth column, e.g. ``"fast_regime"`` or ``"slow_regime"``.
    rule : {"majority", "last"}

    Returns
    -------
    numpy.ndarray of int, shape (n,)

    Raises
    ------
    BadInputError
        When a bar has no 1-minute truth in its span.
    """
    if rule not in TRUTH_RULES:
        raise BadInputError(f"rule: expected one of {sorted(TRUTH_RULES)}, got {rule!r}")
    if level not in truth_1m.columns:
        raise BadInputError(f"truth: no column {level!r}; have {list(truth_1m.columns)}")
    if timeframe_minutes < 1:
        raise BadInputError(f"timeframe_minutes: expected >= 1, got {timeframe_minutes}")
    bars = pd.DataFrame({"symbol": np.asarray(symbols), "ts": pd.DatetimeIndex(bar_ts)})
    span = pd.Timedelta(minutes=int(timeframe_minutes))
    out = np.full(len(bars), -1, dtype=np.int64)
    by_symbol = dict(tuple(truth_1m.groupby("symbol", sort=False)))
    for symbol, positions in bars.groupby("symbol", sort=False).indices.items():
        truth = by_symbol.get(symbol)
        if truth is None:
            raise BadInputError(f"truth: no 1-minute truth for symbol {symbol!r}")
        truth = truth.sort_values("ts", kind="stable")
        minute_ts = truth["ts"].to_numpy(dtype="datetime64[ns]")
        labels = truth[level].to_numpy(dtype=np.int64)
        opens = bars["ts"].to_numpy(dtype="datetime64[ns]")[positions]
        first = np.searchsorted(minute_ts, opens, side="left")
        stop = np.searchsorted(minute_ts, opens + span.to_timedelta64(), side="left")
        empty = stop <= first
        if empty.any():
            raise BadInputError(
                f"truth: symbol {symbol!r} has no 1-minute truth in the bar opening at "
                f"{pd.Timestamp(opens[np.flatnonzero(empty)[0]])}"
            )
        if rule == "last":
            out[positions] = labels[stop - 1]
            continue
        n_labels = int(labels.max()) + 1
        # Cumulative counts per label give every bar's counts in O(minutes + bars).
        cumulative = np.zeros((len(labels) + 1, n_labels), dtype=np.int64)
        cumulative[1:] = np.cumsum(np.eye(n_labels, dtype=np.int64)[labels], axis=0)
        out[positions] = np.argmax(cumulative[stop] - cumulative[first], axis=1)
    return out
