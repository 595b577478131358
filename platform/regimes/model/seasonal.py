"""Seasonal adjustment: the intraday shape of the scaled features, taken out before the
encoder.

Range, volume and realised volatility follow the time of day (busier at the open and the
close); on intraday timeframes that shape explains more of some features' variance than
the regimes do (docs/regime_model.md, "Seasonality"), and a model fed with it spends its
states on the clock. :class:`SeasonalAdjustment` learns, on the training rows only, each
scaled feature's mean and spread per *time-of-day bucket* — the bar's position in its
market's trading day, one bucket per bar of the timeframe — and maps every row to its
bucket's z-score, rescaled by the feature's overall spread so the encoder sees the usual
units. A timeframe with one bar a day (1d) has one bucket: the adjustment is then the
identity and is not fitted at all.
"""

from __future__ import annotations

import numpy as np

from regimes.errors import BadInputError

MIN_BUCKET_ROWS = 20
"""A bucket with fewer training rows keeps the overall mean and spread (no adjustment)."""
TOD_DECIMALS = 6


def bar_step(tod: np.ndarray) -> float | None:
    """The fraction of the trading day one bar spans, read off the training rows'
    positions in the day (``None`` when every bar opens at the same position: 1d)."""
    positions = np.unique(np.round(np.asarray(tod, dtype=float), TOD_DECIMALS))
    positions = positions[np.isfinite(positions)]
    if len(positions) < 2:
        return None
    return float(np.diff(positions).min())


class SeasonalAdjustment:
    """Per time-of-day bucket standardisation of scaled features, fitted on training rows.

    Parameters
    ----------
    step : float
        The fraction of the trading day one bar spans (:func:`bar_step`); a row's bucket
        is ``rint(tod / step)``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> tod = np.tile([0.0, 0.5], 200)
    >>> X = rng.normal(size=(400, 1)) + np.where(tod == 0, 3.0, -3.0)[:, None]
    >>> adjusted = SeasonalAdjustment(0.5).fit(X, tod).transform(X, tod)
    >>> bool(abs(adjusted[tod == 0].mean() - adjusted[tod == 0.5].mean()) < 1e-9)
    True
    """

    def __init__(self, step: float):
        if not 0 < step <= 1:
            raise BadInputError(f"SeasonalAdjustment: step must be in (0, 1], got {step!r}")
        self.step = float(step)

    @property
    def buckets(self) -> int:
        return int(np.rint(1.0 / self.step)) + 1

    def bucket(self, tod: np.ndarray) -> np.ndarray:
        """Each row's time-of-day bucket (positions outside the day fall in the edge ones)."""
        index = np.rint(np.asarray(tod, dtype=float) / self.step)
        return np.clip(np.nan_to_num(index), 0, self.buckets - 1).astype(np.int64)

    def fit(self, X: np.ndarray, tod: np.ndarray) -> SeasonalAdjustment:
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or len(tod) != len(X):
            raise BadInputError(
                f"SeasonalAdjustment.fit: {len(tod)} positions for rows of shape {X.shape}"
            )
        bucket = self.bucket(tod)
        counts = np.bincount(bucket, minlength=self.buckets)
        overall_mean, overall_std = X.mean(axis=0), X.std(axis=0)
        mean = np.tile(overall_mean, (self.buckets, 1))
        std = np.tile(overall_std, (self.buckets, 1))
        for b in np.flatnonzero(counts >= MIN_BUCKET_ROWS):
            rows = X[bucket == b]
            mean[b] = rows.mean(axis=0)
            std[b] = rows.std(axis=0)
        # Spreads: a bucket's own, relative to the overall one (1 where either is 0).
        ratio = np.divide(std, overall_std, out=np.ones_like(std), where=overall_std > 0)
        ratio[~(ratio > 0)] = 1.0
        self.mean_ = mean
        self.spread_ = ratio
        self.rows_ = counts
        return self

    def transform(self, X: np.ndarray, tod: np.ndarray) -> np.ndarray:
        """``(X - mean of the bucket) / (spread of the bucket / overall spread)``."""
        if not hasattr(self, "mean_"):
            raise BadInputError("SeasonalAdjustment: not fitted")
        bucket = self.bucket(tod)
        return (np.asarray(X, dtype=float) - self.mean_[bucket]) / self.spread_[bucket]
