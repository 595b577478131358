"""Bootstrap intervals that respect dependence between bars.

Two resampling schemes: whole spells with replacement (state-conditioned statistics:
a spell is the independent unit, bars inside it are not) and circular blocks of
consecutive bars (a backtest's daily returns, where volatility clusters). Intervals
are percentile intervals of the resampled statistic.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def percentile_interval(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    """The two-sided percentile interval of ``draws`` (NaN draws ignored).

    Examples
    --------
    >>> [round(x, 6) for x in percentile_interval(np.arange(101.0), 0.9)]
    [5.0, 95.0]
    """
    draws = np.asarray(draws, dtype=float)
    draws = draws[np.isfinite(draws)]
    if len(draws) == 0:
        return (float("nan"), float("nan"))
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    return (float(low), float(high))


def spell_bootstrap(
    values: np.ndarray,
    spell_of_bar: np.ndarray,
    statistic: Callable[[np.ndarray], float],
    samples: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """``statistic`` of ``samples`` resamples that draw whole spells with replacement.

    Parameters
    ----------
    values : array
        One value per bar of the state (e.g. its next-bar returns), in time order.
    spell_of_bar : array of int
        The spell each value belongs to (any labels; equal label = same spell).
    statistic : callable
        From the concatenated values of the drawn spells (in drawn order) to a number.
    samples : int
    rng : numpy Generator

    Returns
    -------
    ndarray of shape (samples,)
    """
    values = np.asarray(values, dtype=float)
    _, inverse = np.unique(spell_of_bar, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    ordered = values[order]
    lengths = np.bincount(inverse)
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    draws = np.empty(samples)
    for index in range(samples):
        chosen = rng.integers(0, len(lengths), len(lengths))
        draws[index] = statistic(ordered[_runs(starts[chosen], lengths[chosen])])
    return draws


def _runs(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The positions start..start+length-1 of every run, concatenated (vectorised)."""
    total = int(lengths.sum())
    offsets = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + offsets


def block_length(n: int) -> int:
    """A circular-block length for ``n`` dependent observations: about n^(1/3).

    >>> block_length(5000)
    17
    """
    return max(1, int(round(n ** (1 / 3))))


def block_bootstrap_indices(
    n: int, block: int, samples: int, rng: np.random.Generator
) -> np.ndarray:
    """(samples, n) indices of circular-block resamples of 0..n-1: blocks of ``block``
    consecutive positions (wrapping at the end) from random starts, cut to n."""
    blocks = -(-n // block)
    starts = rng.integers(0, n, size=(samples, blocks))
    offsets = np.arange(block)
    return ((starts[:, :, None] + offsets[None, None, :]) % n).reshape(samples, -1)[:, :n]
