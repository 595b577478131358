"""Seasonal adjustment: the intraday shape of the scaled features, taken out before the
encoder.

Range, volume and realised volatility follow the time of day (busier at the open and
the close); on intraday timeframes that shape explains more of some features' variance
than the regimes do (docs/regime_model.md, "Seasonality"), and a model fed with it
spends its states on the clock. :class:`SeasonalAdjuster` learns, on the training rows
only, each scaled feature's mean and spread per *time-of-day bucket* — ``bucket_minutes``
of the bar's market trading day, counted from that day's open
(:func:`minutes_into_day`) — and maps every row of a bucket to
``(x - bucket mean) / (bucket spread / overall spread)``: centred per bucket, in the
feature's usual units.

The adjuster is fitted by :class:`regimes.model.pipeline.StateVectorPipeline` right
after the scaler, stored in the model artifact (``seasonal.pkl``) and applied by the
training pipeline, the live engine and the replay with the same function on the same
bucket, so live and offline stay equal bit for bit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from regimes.data.calendars import MarketCalendar
from regimes.data.markets import SymbolCalendars
from regimes.errors import BadInputError
from regimes.features.definitions import time_of_day

MIN_SPREAD_RATIO = 0.1
"""A bucket's spread is never taken below 0.1 of the feature's overall spread, so a
bucket where a feature barely moves is not blown up more than 10x."""

_MINUTE_NS = 60_000_000_000
# Minutes computed from a fraction of the day carry rounding (29.999999...); a bar that
# opens on a bucket boundary must fall in the bucket it opens.
_BOUNDARY_SLACK = 1e-6


def minutes_into_day(ts_ns, calendar, symbols=None) -> np.ndarray:
    """Minutes from the open of each bar's market trading day to the bar's open.

    Parameters
    ----------
    ts_ns : array of int64
        Bar open times, UTC nanoseconds.
    calendar : Session, MarketCalendar, SymbolCalendars or None
        What the features' time of day uses (``tod_sin``): a session of
        ``timeframes.yaml`` (minutes since its open), a market calendar (since the
        trading day's open, e.g. 17:00 New York for FX, so a 24x5 market's day is one
        day), per-symbol calendars (each row on its symbol's market) or None (a market
        around the clock: minutes since midnight UTC).
    symbols : array of str, optional
        Each row's symbol; required with :class:`SymbolCalendars`.

    Returns
    -------
    ndarray of float
        NaN where the market is closed (such a row is not adjusted).

    Examples
    --------
    >>> import pandas as pd
    >>> ts = pd.DatetimeIndex(["2024-01-02 14:30", "2024-01-02 15:35"], tz="UTC").asi8
    >>> minutes_into_day(ts, None).tolist()
    [870.0, 935.0]
    """
    ts_ns = np.asarray(ts_ns, dtype=np.int64)
    if len(ts_ns) > 1 and not isinstance(calendar, SymbolCalendars) and (ts_ns == ts_ns[0]).all():
        # The live step: one bar time for every symbol.
        return np.repeat(minutes_into_day(ts_ns[:1], calendar), len(ts_ns))
    if isinstance(calendar, SymbolCalendars):
        if symbols is None or len(symbols) != len(ts_ns):
            raise BadInputError(
                "minutes_into_day: a model over several markets needs each row's symbol"
            )
        symbols = np.asarray(symbols, dtype=object)
        out = np.empty(len(ts_ns))
        for symbol in pd.unique(symbols):
            rows = np.flatnonzero(symbols == symbol)
            out[rows] = minutes_into_day(ts_ns[rows], calendar.of(symbol))
        return out
    if isinstance(calendar, MarketCalendar):
        opens = calendar.session_open(pd.DatetimeIndex(ts_ns, tz="UTC"))
        minutes = (ts_ns - opens.as_unit("ns").asi8) / _MINUTE_NS
        return np.where(opens.isna(), np.nan, minutes)
    day = 1440.0 if calendar is None else float(calendar.minutes)
    return time_of_day(ts_ns, calendar) * day


def bucket_index(minutes, bucket_minutes: int) -> np.ndarray:
    """Each row's time-of-day bucket, ``floor(minutes / bucket_minutes)``; -1 where the
    minute is NaN or before the open."""
    minutes = np.asarray(minutes, dtype=float)
    index = np.floor((minutes + _BOUNDARY_SLACK) / bucket_minutes)
    return np.where(np.isfinite(index) & (index >= 0), np.nan_to_num(index), -1).astype(np.int64)


class SeasonalAdjuster(BaseEstimator):
    """Per time-of-day bucket standardisation of scaled features, fitted on training rows.

    Parameters
    ----------
    bucket_minutes : int
        Width of a bucket, in minutes from the trading day's open; a whole number of
        bars (``timeframes.<tf>.seasonal.bucket_minutes``).
    min_bucket_rows : int
        A bucket with fewer training rows is left unadjusted (identity), as is a bucket
        never seen in training and a row whose minute is NaN.

    Attributes
    ----------
    offset_ : ndarray (n_buckets + 1, n_features)
        Each bucket's training mean (0 in unadjusted buckets); the last row is the
        identity row used for buckets outside the table.
    scale_ : ndarray (n_buckets + 1, n_features)
        Each bucket's spread relative to the feature's overall spread, at least
        :data:`MIN_SPREAD_RATIO` (1 in unadjusted buckets).
    bucket_rows_ : ndarray of int (n_buckets,)
        Training rows per bucket.
    adjusted_ : ndarray of bool (n_buckets,)
        Buckets with at least ``min_bucket_rows`` training rows.
    n_features_in_ : int

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> minutes = np.tile([0.0, 30.0], 200)
    >>> X = rng.normal(size=(400, 1)) + np.where(minutes == 0, 3.0, -3.0)[:, None]
    >>> adjusted = SeasonalAdjuster(30).fit(X, minutes).transform(X, minutes)
    >>> bool(abs(adjusted[minutes == 0].mean() - adjusted[minutes == 30].mean()) < 1e-9)
    True
    """

    def __init__(self, bucket_minutes: int = 30, min_bucket_rows: int = 150):
        self.bucket_minutes = bucket_minutes
        self.min_bucket_rows = min_bucket_rows

    def _bucket_of(self, minutes: np.ndarray, n_buckets: int) -> np.ndarray:
        """Each row's bucket; ``n_buckets`` (the identity row) when NaN or outside."""
        index = bucket_index(minutes, self.bucket_minutes)
        return np.where((index >= 0) & (index < n_buckets), index, n_buckets)

    def fit(self, X, minutes) -> SeasonalAdjuster:
        """Learn each bucket's mean and spread from training rows ``X`` (n, F) at
        ``minutes`` (n,) into their trading day (:func:`minutes_into_day`)."""
        if isinstance(self.bucket_minutes, bool) or not isinstance(
            self.bucket_minutes, int | np.integer
        ):
            raise ValueError(
                f"SeasonalAdjuster: bucket_minutes must be a positive integer, got "
                f"{self.bucket_minutes!r}"
            )
        if self.bucket_minutes < 1:
            raise ValueError(
                f"SeasonalAdjuster: bucket_minutes must be >= 1, got {self.bucket_minutes}"
            )
        if not isinstance(self.min_bucket_rows, int | np.integer) or self.min_bucket_rows < 2:
            raise ValueError(
                f"SeasonalAdjuster: min_bucket_rows must be an integer >= 2, got "
                f"{self.min_bucket_rows!r}"
            )
        X, minutes = _check_rows(X, minutes, "fit")
        if len(X) == 0:
            raise BadInputError("SeasonalAdjuster.fit: no training rows")
        known = np.isfinite(minutes) & (minutes >= 0)
        if not known.any():
            raise BadInputError(
                "SeasonalAdjuster.fit: no training row has a time of day (market closed?)"
            )
        n_buckets = int(bucket_index(minutes[known], self.bucket_minutes).max()) + 1
        bucket = self._bucket_of(minutes, n_buckets)
        counts = np.bincount(bucket, minlength=n_buckets + 1)[:n_buckets]
        overall_std = X.std(axis=0)
        F = X.shape[1]
        offset = np.zeros((n_buckets + 1, F))
        scale = np.ones((n_buckets + 1, F))
        adjusted = counts >= self.min_bucket_rows
        for b in np.flatnonzero(adjusted):
            rows = X[bucket == b]
            offset[b] = rows.mean(axis=0)
            ratio = np.divide(rows.std(axis=0), overall_std, out=np.ones(F), where=overall_std > 0)
            scale[b] = np.maximum(ratio, MIN_SPREAD_RATIO)
        self.offset_ = offset
        self.scale_ = scale
        self.bucket_rows_ = counts
        self.adjusted_ = adjusted
        self.n_features_in_ = F
        return self

    @property
    def n_buckets(self) -> int:
        check_is_fitted(self, "offset_")
        return len(self.bucket_rows_)

    def transform(self, X, minutes) -> np.ndarray:
        """``(X - bucket mean) / (bucket spread / overall spread)`` per row; rows of an
        unadjusted or unknown bucket come back unchanged (bit for bit)."""
        check_is_fitted(self, "offset_")
        X, minutes = _check_rows(X, minutes, "transform")
        if X.shape[1] != self.n_features_in_:
            raise BadInputError(
                f"SeasonalAdjuster.transform: {X.shape[1]} features, fitted on "
                f"{self.n_features_in_}"
            )
        bucket = self._bucket_of(minutes, self.n_buckets)
        return (X - self.offset_[bucket]) / self.scale_[bucket]


def _check_rows(X, minutes, where: str) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=float)
    minutes = np.asarray(minutes, dtype=float).reshape(-1)
    if X.ndim != 2 or len(minutes) != len(X):
        raise BadInputError(
            f"SeasonalAdjuster.{where}: {len(minutes)} minutes for rows of shape {X.shape}"
        )
    if not np.isfinite(X).all():
        row = int(np.flatnonzero(~np.isfinite(X).all(axis=1))[0])
        raise BadInputError(f"SeasonalAdjuster.{where}: NaN/inf in row {row}")
    return X, minutes
