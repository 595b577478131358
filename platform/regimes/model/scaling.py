"""Stationarity and scaling: raw features -> Gaussian-like inputs of the encoder
(plan 2.4 and the stationarity policy of ``config/features.yaml``).

* :func:`stationarize` applies each feature's stationarity policy, in one place, for
  training and live alike (the live path passes the same columns for one bar, with the
  previous raw value for ``difference`` features).
* :class:`RobustPowerScaler` is robust scaling (median / IQR), then a Yeo-Johnson power
  transform (standardized), then clipping of extremes. It records the time range it was
  fitted on (a leakage guard checks it, see :mod:`regimes.model.splits`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.preprocessing import PowerTransformer, RobustScaler
from sklearn.utils.validation import check_is_fitted

from regimes.config.spec import FeatureSpec
from regimes.errors import BadInputError

STATIONARITY_NEEDS_CLOSE = frozenset({"log_ratio_to_close", "relative_to_close"})


def stationarize(
    frame: pd.DataFrame,
    spec: FeatureSpec,
    names: Sequence[str],
    close: np.ndarray | pd.Series,
    previous: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Apply each feature's stationarity policy; returns the features ``names``.

    ``frame`` holds raw feature values (rows in time order per symbol, with a
    ``symbol`` column when ``difference`` features are present); ``close`` is the bar's
    close for each row. ``difference`` uses the previous row of the same symbol, or
    ``previous`` (last raw values per symbol) for the first row — the live path.
    """
    close = np.asarray(close, dtype=np.float64)
    if close.shape != (len(frame),):
        raise BadInputError(f"stationarize: {close.shape[0]} closes for {len(frame)} rows")
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for name in names:
            policy = spec.features[name].stationarity
            raw = frame[name].to_numpy(dtype=np.float64)
            if policy == "none":
                out[name] = raw
            elif policy == "log_ratio_to_close":
                out[name] = np.log(raw / close)
            elif policy == "relative_to_close":
                out[name] = raw / close
            elif policy == "difference":
                if "symbol" in frame.columns:
                    lagged = frame.groupby("symbol", sort=False)[name].shift(1).to_numpy(float)
                    if previous is not None:
                        first = ~frame["symbol"].duplicated().to_numpy()
                        carried = frame["symbol"].map(previous[name]).to_numpy(float)
                        lagged = np.where(first, carried, lagged)
                else:
                    lagged = np.r_[np.nan, raw[:-1]]
                out[name] = raw - lagged
            else:  # pragma: no cover - the config model admits only the four policies
                raise BadInputError(f"unknown stationarity policy {policy!r} for {name}")
    result = pd.DataFrame(out, index=frame.index, copy=False)
    return result


class RobustPowerScaler(TransformerMixin, BaseEstimator):
    """Median/IQR scaling, then Yeo-Johnson (standardized), then clipping.

    Parameters
    ----------
    quantile_range : tuple of float
        Percentiles of the robust scale (default the IQR, 25-75).
    clip : float
        Output is clipped to ``[-clip, clip]`` so a single extreme bar cannot dominate
        the encoder or the HMM.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.lognormal(size=(500, 3))
    >>> Z = RobustPowerScaler(clip=4.0).fit(X).transform(X)
    >>> bool(abs(Z.mean()) < 0.1 and np.abs(Z).max() <= 4.0)
    True
    """

    def __init__(self, quantile_range=(25.0, 75.0), clip=5.0):
        self.quantile_range = quantile_range
        self.clip = clip

    def fit(self, X, y=None, feature_names: Sequence[str] | None = None):
        X = _finite_2d(X, "RobustPowerScaler.fit")
        names = (
            list(feature_names)
            if feature_names is not None
            else [f"x{i}" for i in range(X.shape[1])]
        )
        if len(names) != X.shape[1]:
            raise BadInputError(
                f"RobustPowerScaler.fit: {len(names)} names for {X.shape[1]} columns"
            )
        if X.shape[0] < 10:
            raise BadInputError(f"RobustPowerScaler.fit: {X.shape[0]} rows; need at least 10")
        constant = [names[i] for i in np.flatnonzero(np.ptp(X, axis=0) == 0)]
        if constant:
            raise BadInputError(
                f"RobustPowerScaler.fit: constant feature(s) {constant} cannot be scaled; "
                "feature selection drops them first"
            )
        if self.clip is None or not self.clip > 0:
            raise BadInputError(f"clip: expected a positive number, got {self.clip!r}")
        self.robust_ = RobustScaler(quantile_range=tuple(self.quantile_range)).fit(X)
        robust = self.robust_.transform(X)
        with warnings.catch_warnings():
            # Yeo-Johnson's lambda search can overflow in float64 on heavy tails before
            # it settles; the fitted lambdas are checked below instead.
            warnings.simplefilter("ignore", RuntimeWarning)
            self.power_ = PowerTransformer(method="yeo-johnson", standardize=True).fit(robust)
        if not np.all(np.isfinite(self.power_.lambdas_)):
            raise BadInputError("RobustPowerScaler.fit: the power transform did not converge")
        self.feature_names_in_ = np.array(names, dtype=object)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self, "power_")
        X = _finite_2d(X, "RobustPowerScaler.transform")
        if X.shape[1] != self.n_features_in_:
            raise BadInputError(
                f"RobustPowerScaler.transform: {X.shape[1]} columns, fitted on "
                f"{self.n_features_in_}"
            )
        standard = getattr(self.power_, "_scaler", None)  # scikit-learn's, private
        if self.power_.standardize and hasattr(standard, "mean_"):
            Z = _yeo_johnson_standardized(X, self.robust_, self.power_.lambdas_, standard)
        else:  # a scikit-learn that keeps it elsewhere: its own (slower) path
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # overflow -> inf, clipped
                Z = self.power_.transform(self.robust_.transform(X))
        if np.isnan(Z).any():
            row = int(np.flatnonzero(np.isnan(Z).any(axis=1))[0])
            raise BadInputError(f"RobustPowerScaler.transform: NaN produced at row {row}")
        return np.clip(Z, -self.clip, self.clip)  # also maps an overflow's inf to the clip

    def transform_in_place(self, X: np.ndarray) -> np.ndarray:
        """:meth:`transform` of finite float64 rows that the caller owns, computed in ``X``
        itself (no copies: the live step's scaler) and returned; the same values, bit for
        bit. Falls back to :meth:`transform` (and a copy) where that has no fast path."""
        check_is_fitted(self, "power_")
        standard = getattr(self.power_, "_scaler", None)
        fast = self.power_.standardize and hasattr(standard, "mean_")
        if not fast or X.dtype != np.float64 or X.ndim != 2 or X.shape[1] != self.n_features_in_:
            X[...] = self.transform(X)
            return X
        if not np.isfinite(X).all():
            _finite_2d(X, "RobustPowerScaler.transform_in_place")  # names the first bad cell
        Z = _yeo_johnson_standardized(X, self.robust_, self.power_.lambdas_, standard, out=X)
        if np.isnan(Z).any():
            row = int(np.flatnonzero(np.isnan(Z).any(axis=1))[0])
            raise BadInputError(f"RobustPowerScaler.transform: NaN produced at row {row}")
        return np.clip(Z, -self.clip, self.clip, out=Z)

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "power_")
        return self.feature_names_in_


def _finite_2d(X, what: str) -> np.ndarray:
    array = np.asarray(X, dtype=np.float64)
    if array.ndim != 2:
        raise BadInputError(f"{what}: expected a 2-D array, got shape {array.shape}")
    bad = ~np.isfinite(array)
    if bad.any():
        row, column = (int(v[0]) for v in np.nonzero(bad))
        raise BadInputError(
            f"{what}: NaN or inf at row {row}, column {column}; warm-up and gap rows must be "
            "removed first"
        )
    return array


def _yeo_johnson_standardized(X: np.ndarray, robust, lambdas, standard, out=None) -> np.ndarray:
    """``power.transform(robust.transform(X))`` in one pass over the whole matrix.

    The same floating-point operations as scikit-learn (centre, scale) and scipy's
    ``yeojohnson`` (``±expm1(e * log1p(|x|)) / e`` with ``e = λ`` for x >= 0 and
    ``2 - λ`` below, ``log1p`` at λ = 0 or 2), so the result is bit for bit theirs —
    without one scipy call per column, which dominated the live step. ``out=X``
    computes in ``X`` itself.
    """
    Z = np.array(X, dtype=np.float64) if out is None else out  # a copy, or X in place
    Z -= robust.center_
    Z /= robust.scale_
    eps = np.finfo(np.float64).eps
    positive = Z >= 0
    magnitude = np.log1p(np.abs(Z))
    exponent = np.where(positive, lambdas, 2.0 - lambdas)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # inf -> clipped
        Z = np.expm1(exponent * magnitude, out=Z)
        Z /= exponent
    np.negative(Z, out=Z, where=~positive)
    if (np.abs(lambdas) < eps).any():  # log1p where lambda is 0 (>= 0) or 2 (< 0)
        at_zero = positive & (np.abs(lambdas) < eps)
        Z[at_zero] = magnitude[at_zero]
    if (np.abs(lambdas - 2) <= eps).any():
        at_two = ~positive & (np.abs(lambdas - 2) <= eps)
        Z[at_two] = -magnitude[at_two]
    Z -= standard.mean_
    Z /= standard.scale_
    return Z
