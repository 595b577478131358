"""PSI and KL divergence on binned shares, in plain numpy: the hand computation a drift
figure is checked against, and the anchor of the drift benchmark.

The definitions are Evidently's (``evidently.legacy.calculations.stattests``) for a
categorical column: shares over the categories present in either window; a share of 0
becomes 0.0001 (or the smallest non-zero share / 10**6 when that is below 0.0001), so a
bin empty in one window gives a large but finite figure;
PSI = sum (ref - cur) * ln(ref / cur); KL = sum p * ln(p / q) with p, q the shares
renormalised to sum 1 (``scipy.stats.entropy(ref, cur)``).

Examples
--------
>>> reference, current = bin_shares(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))
>>> round(psi(reference, current), 4), round(kl_div(reference, current), 4)
(0.2747, 0.1438)
"""

from __future__ import annotations

import numpy as np


def _fill_zeros(shares: np.ndarray) -> np.ndarray:
    shares = shares.astype(float).copy()
    nonzero = shares[shares != 0]
    if nonzero.size and (shares == 0).any():
        smallest = nonzero.min()
        shares[shares == 0] = smallest / 10**6 if smallest <= 0.0001 else 0.0001
    return shares


def bin_shares(reference_codes: np.ndarray, current_codes: np.ndarray):
    """Shares of each category present in either window (zeros filled as Evidently)."""
    reference_codes = np.asarray(reference_codes)
    current_codes = np.asarray(current_codes)
    keys = np.union1d(np.unique(reference_codes), np.unique(current_codes))
    reference = np.searchsorted(keys, reference_codes)
    current = np.searchsorted(keys, current_codes)
    ref = np.bincount(reference, minlength=len(keys)) / max(len(reference_codes), 1)
    cur = np.bincount(current, minlength=len(keys)) / max(len(current_codes), 1)
    return _fill_zeros(ref), _fill_zeros(cur)


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index of two share vectors."""
    return float(np.sum((reference - current) * np.log(reference / current)))


def kl_div(reference: np.ndarray, current: np.ndarray) -> float:
    """KL(reference || current) of two share vectors (each renormalised to sum 1)."""
    p = reference / reference.sum()
    q = current / current.sum()
    return float(np.sum(p * np.log(p / q)))
