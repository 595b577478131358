"""From stored features to state vectors z_t: selection -> stationarity -> scaling ->
windows -> encoder, fitted on training rows only (plan 2.4-2.8, phase 3).

:class:`StateVectorPipeline` is the one object training fits and inference loads. It
records the time range each stage was fitted on, and :meth:`StateVectorPipeline.check_fold`
proves (or loudly refutes) that none of them saw a fold's validation or test rows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from regimes.config.loading import PlatformConfig
from regimes.config.spec import FeatureSpec
from regimes.data import sql as db
from regimes.errors import BadInputError
from regimes.features.definitions import warmup_lengths
from regimes.features.selection import selected_features
from regimes.features.store import load_features
from regimes.model.encoders.base import Encoder, make_windows
from regimes.model.encoders.pca import PCAEncoder, WindowPCAEncoder
from regimes.model.scaling import RobustPowerScaler, stationarize
from regimes.model.seasonal import SeasonalAdjuster, bucket_index, minutes_into_day
from regimes.model.selection import CALENDAR_FEATURES, select_features
from regimes.model.splits import FitRange, Fold, check_fold, walk_forward_splits

logger = logging.getLogger(__name__)

ENCODER_KINDS = frozenset({"pca", "window", "vae"})
MINUTE_COLUMN = "minute_of_day"
"""Column of a training frame with each bar's minutes into its market trading day
(:func:`regimes.model.seasonal.minutes_into_day`; :func:`load_training_frame` adds it
from each symbol's market). Without it the pipeline computes it from ``ts``."""
DEFAULT_WINDOW = {"pca": 1, "window": 8, "vae": 8}
MAX_D = 16


def make_encoder(kind: str, latent_dim: int, window_length: int, **params) -> Encoder:
    """An unfitted encoder of ``kind`` (``pca``, ``window`` or ``vae``)."""
    if kind == "pca":
        if window_length != 1:
            raise BadInputError("encoder pca: window_length must be 1 (use 'window')")
        return PCAEncoder(latent_dim=latent_dim, **params)
    if kind == "window":
        return WindowPCAEncoder(latent_dim=latent_dim, window_length=window_length, **params)
    if kind == "vae":
        from regimes.model.encoders.vae import TemporalVAEEncoder  # torch is imported only here

        return TemporalVAEEncoder(latent_dim=latent_dim, window_length=window_length, **params)
    raise BadInputError(f"encoder: unknown kind {kind!r}; expected one of {sorted(ENCODER_KINDS)}")


def load_training_frame(
    engine,
    config: PlatformConfig,
    timeframe: str,
    symbols: Sequence[str] | None = None,
    start: Any = None,
    end: Any = None,
) -> pd.DataFrame:
    """Stored features of a timeframe joined with each bar's close (stationarity needs it)."""
    features = load_features(engine, config, timeframe, symbols, start, end)
    if features.empty:
        raise BadInputError(
            f"no {timeframe} features stored; run `regimes features --timeframe {timeframe}`"
        )
    bars = db.read_bars(engine, timeframe, symbols, start, end)[["symbol", "ts", "close"]]
    frame = features.merge(bars, on=["symbol", "ts"], how="left", validate="one_to_one")
    frame = frame.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)
    frame[MINUTE_COLUMN] = _minutes_by_market(engine, config, frame)
    return frame


def _minutes_by_market(engine, config: PlatformConfig, frame: pd.DataFrame) -> np.ndarray:
    """Each row's minutes into its symbol's market trading day (the calendar its features
    were computed on, as the artifact stores it for the live engine)."""
    from regimes.data.markets import MarketBook

    book = MarketBook(config.markets, config.timeframes.session, db.read_markets(engine))
    ts_ns = pd.DatetimeIndex(frame["ts"]).as_unit("ns").asi8
    symbols = frame["symbol"].to_numpy()
    out = np.empty(len(frame))
    for symbol in pd.unique(symbols):
        rows = np.flatnonzero(symbols == symbol)
        out[rows] = minutes_into_day(ts_ns[rows], book.calendar_of(symbol))
    return out


@dataclass
class PipelineSummary:
    timeframe: str
    encoder: str
    d: int
    window_length: int
    selected: list[str]
    dropped: list[dict]
    explained_variance: float | None
    train_rows: int
    train_windows: int
    fit_ranges: dict[str, dict] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class StateVectorPipeline:
    """selection -> stationarity -> robust+Yeo-Johnson scaling -> windows -> encoder.

    Parameters
    ----------
    config : PlatformConfig
        Read by :meth:`fit` only; the fitted pipeline keeps the feature spec it used
        (``spec_``), so its transforms never follow a later config.
    timeframe : str
    encoder : {"pca", "window", "vae"}
    latent_dim : int, optional
        d; by default chosen from the explained-variance curve within the timeframe's
        range (``latent_dim_range``).
    window_length : int, optional
        L for windowed encoders (default 1 for pca, 8 otherwise).
    previous_selection : list of str, optional
        The previous model's features: selection prefers them when scores are close.
    encoder_params : dict, optional
        Extra constructor arguments of the encoder.
    variance_target : float
        Explained variance that picks d when ``latent_dim`` is None.
    regime_horizon : float, optional
        Bars a regime of this timeframe lasts: turns on feature selection by regime
        persistence (:func:`regimes.model.selection.excess_persistence`).

    With the timeframe's ``seasonal`` setting on, a
    :class:`~regimes.model.seasonal.SeasonalAdjuster` is fitted on the scaled training
    rows right after the scaler (``seasonal_``; None when off) and ``tod_sin`` is left
    out of the candidates (the adjustment takes the time of day out); when no bucket
    holds ``min_bucket_rows`` training rows there is nothing to adjust and the pipeline
    is fitted as with the setting off. Each row's minutes into its trading day come from
    the frame's ``minute_of_day`` column, else from ``ts`` on the config's session
    (``calendar_``; a loaded model's own calendar, see :meth:`from_parts`).
    """

    def __init__(
        self,
        config: PlatformConfig | None,
        timeframe: str,
        encoder: str = "pca",
        latent_dim: int | None = None,
        window_length: int | None = None,
        previous_selection: Sequence[str] | None = None,
        encoder_params: dict | None = None,
        variance_target: float = 0.9,
        regime_horizon: float | None = None,
    ):
        if encoder not in ENCODER_KINDS:
            raise BadInputError(
                f"encoder: unknown kind {encoder!r}; expected one of {sorted(ENCODER_KINDS)}"
            )
        self.config = config
        self.timeframe = timeframe
        self.encoder_kind = encoder
        self.latent_dim = latent_dim
        self.window_length = window_length or DEFAULT_WINDOW[encoder]
        self.previous_selection = list(previous_selection) if previous_selection else None
        self.encoder_params = dict(encoder_params or {})
        self.variance_target = variance_target
        self.regime_horizon = regime_horizon

    # -- fitting

    def fit(self, train: pd.DataFrame) -> StateVectorPipeline:
        """Fit every stage on ``train`` (rows of the training window only)."""
        spec = self.config.features
        # Transforms use the spec the pipeline was fitted with, never a later config.
        self.spec_ = spec
        tf_config = self.config.timeframe(self.timeframe)
        pre = self.config.timeframes.preprocessing
        candidates = list(selected_features(spec, tf_config))
        _require(train, ["symbol", "ts", "close", "is_warmup", "is_gap", *candidates])
        self.calendar_ = self.config.timeframes.session
        seasonal = tf_config.seasonal if self.timeframe != "1d" else None
        usable = _usable(train)
        if usable.sum() == 0:
            raise BadInputError(
                f"{self.timeframe}: no usable training rows (all warm-up or gap); a longer "
                "history is needed"
            )
        if seasonal is not None and not _any_full_bucket(self._minutes(train)[usable], seasonal):
            # Every bucket would fall back to no adjustment: the model is fitted as
            # without one (and keeps the time-of-day feature).
            seasonal = None
        if seasonal is not None:
            candidates = [name for name in candidates if name not in CALENDAR_FEATURES]
        stationary = stationarize(train, spec, candidates, train["close"])
        stationary_usable = stationary.loc[usable].assign(
            ts=train.loc[usable, "ts"].to_numpy(), symbol=train.loc[usable, "symbol"].to_numpy()
        )
        self.selection_ = select_features(
            stationary_usable,
            candidates,
            min(tf_config.feature_budget, len(candidates)),
            pre.selection,
            self.previous_selection,
            horizon=self.regime_horizon,
            windows=warmup_lengths(spec) if self.regime_horizon is not None else None,
        )
        self.features_ = list(self.selection_.selected)
        X = stationary.loc[usable, self.features_].to_numpy()
        finite = np.isfinite(X).all(axis=1)
        rows = np.flatnonzero(usable)[finite]
        self.scaler_ = RobustPowerScaler(
            quantile_range=pre.scaler.quantile_range, clip=pre.scaler.clip
        ).fit(X[finite], feature_names=self.features_)
        self.scaler_range_ = FitRange.of(train["ts"].to_numpy()[rows])
        self.seasonal_ = None
        if seasonal is not None:
            self.seasonal_ = SeasonalAdjuster(
                seasonal.bucket_minutes, seasonal.min_bucket_rows
            ).fit(self.scaler_.transform(X[finite]), self._minutes(train)[rows])
        windows, ends = self._windows(train, stationary)
        L = self.window_length
        if len(windows) == 0:
            raise BadInputError(
                f"{self.timeframe}: no complete window of {L} usable bars in the training rows"
            )
        low, high = tf_config.latent_dim_range
        if self.latent_dim is None:
            from regimes.model.encoders.latent_dim import pca_curve

            self.latent_curve_, d = pca_curve(windows, (low, high), self.variance_target)
        else:
            d = int(self.latent_dim)
        self.encoder_ = make_encoder(self.encoder_kind, d, L, **self.encoder_params)
        # Time order across symbols: encoders that hold out a validation tail (the VAE)
        # must hold out the most recent period, not the last symbol.
        order = np.argsort(train["ts"].to_numpy()[ends], kind="stable")
        self.encoder_.fit(windows[order], feature_names=self.features_)
        self.encoder_range_ = FitRange.of(train["ts"].to_numpy()[ends])
        return self

    def _windows(self, frame: pd.DataFrame, stationary: pd.DataFrame):
        """Scaled windows per symbol (never across a gap, warm-up row or symbol)."""
        usable = _usable(frame)
        X = stationary[self.features_].to_numpy()
        usable &= np.isfinite(X).all(axis=1)
        scaled = np.full_like(X, np.nan)
        if usable.any():
            scaled[usable] = self.scaler_.transform(X[usable])
            if self.seasonal_ is not None:
                scaled[usable] = self.seasonal_.transform(
                    scaled[usable], self._minutes(frame)[usable]
                )
        symbols = frame["symbol"].to_numpy()
        starts = np.flatnonzero(np.r_[True, symbols[1:] != symbols[:-1]])
        ends = np.r_[starts[1:], len(frame)]
        all_windows, all_rows = [], []
        for start, end in zip(starts, ends, strict=True):
            windows, rows = make_windows(
                np.nan_to_num(scaled[start:end]), self.window_length, usable[start:end]
            )
            all_windows.append(windows)
            all_rows.append(rows + start)
        return np.concatenate(all_windows), np.concatenate(all_rows)

    def _minutes(self, frame: pd.DataFrame) -> np.ndarray:
        """Each row's minutes into its market trading day (see :data:`MINUTE_COLUMN`)."""
        if MINUTE_COLUMN in frame.columns:
            return frame[MINUTE_COLUMN].to_numpy(dtype=float)
        ts_ns = pd.DatetimeIndex(frame["ts"]).as_unit("ns").asi8
        return minutes_into_day(ts_ns, self.calendar_, frame["symbol"].to_numpy())

    # -- storing and rebuilding

    def own_state(self) -> dict[str, Any]:
        """What a fitted pipeline holds besides its scaler and encoder (JSON-ready).

        With ``scaler_``, ``encoder_`` and the feature spec it is all
        :meth:`from_parts` needs to rebuild a pipeline that transforms as this one does.
        """
        self._check_fitted()
        return {
            "timeframe": self.timeframe,
            "encoder": self.encoder_kind,
            "window_length": int(self.window_length),
            "features": list(self.features_),
        }

    @classmethod
    def from_parts(
        cls,
        spec: FeatureSpec,
        own_state: dict[str, Any],
        scaler: RobustPowerScaler,
        encoder,
        seasonal: SeasonalAdjuster | None = None,
        calendar=None,
    ) -> StateVectorPipeline:
        """A fitted pipeline from its stored parts (see :meth:`own_state`): it transforms
        like the one that was fitted; its fit-time diagnostics (selection, fit ranges) are
        not part of it and live in the artifact's metadata. ``seasonal`` is the stored
        adjuster (None: the model has none, e.g. every format-2 artifact); ``calendar``
        the model's session or market calendar(s), for frames without a
        ``minute_of_day`` column."""
        pipeline = cls(
            None,
            own_state["timeframe"],
            own_state["encoder"],
            latent_dim=encoder.d,
            window_length=own_state["window_length"],
        )
        pipeline.spec_ = spec
        pipeline.features_ = list(own_state["features"])
        pipeline.scaler_ = scaler
        pipeline.encoder_ = encoder
        pipeline.seasonal_ = seasonal
        pipeline.calendar_ = calendar
        return pipeline

    # -- transform

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """z_t for every row of ``frame`` with a complete usable window.

        Rows without one (warm-up, gap, too close to either) are not returned: they are
        UNKNOWN downstream. Columns: symbol, ts, z_00..z_{d-1}.
        """
        self._check_fitted()
        _require(frame, ["symbol", "ts", "close", "is_warmup", "is_gap", *self.features_])
        frame = frame.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)
        stationary = stationarize(frame, self.spec_, self.features_, frame["close"])
        windows, rows = self._windows(frame, stationary)
        z = self.encoder_.transform(windows) if len(windows) else np.empty((0, self.d))
        out = pd.DataFrame(z, columns=[f"z_{k:02d}" for k in range(self.d)])
        out.insert(0, "ts", frame["ts"].to_numpy()[rows])
        out.insert(0, "symbol", frame["symbol"].to_numpy()[rows])
        return out

    @property
    def d(self) -> int:
        self._check_fitted()
        return self.encoder_.d

    def _check_fitted(self) -> None:
        if not hasattr(self, "encoder_"):
            raise BadInputError("StateVectorPipeline: not fitted")

    # -- leakage guards

    def fit_ranges(self) -> dict[str, FitRange | None]:
        self._check_fitted()
        ranges = {
            "selection": self.selection_.fit_range,
            "scaler": self.scaler_range_,
            "encoder": self.encoder_range_,
        }
        if self.seasonal_ is not None:  # fitted on the scaler's rows
            ranges["seasonal"] = self.scaler_range_
        return ranges

    def check_fold(self, fold: Fold) -> None:
        """Raise :class:`~regimes.model.splits.LeakageError` if any stage saw the fold's future."""
        check_fold(fold, self.fit_ranges())

    def summary(self) -> PipelineSummary:
        self._check_fitted()
        ratios = getattr(self.encoder_, "explained_variance_ratio_", None)
        return PipelineSummary(
            timeframe=self.timeframe,
            encoder=self.encoder_kind,
            d=self.d,
            window_length=self.window_length,
            selected=self.features_,
            dropped=self.selection_.dropped,
            explained_variance=None if ratios is None else float(np.sum(ratios)),
            train_rows=self.scaler_range_.rows,
            train_windows=self.encoder_range_.rows,
            fit_ranges={
                name: {"start": r.start.isoformat(), "end": r.end.isoformat(), "rows": r.rows}
                for name, r in self.fit_ranges().items()
                if r is not None
            },
        )


def _any_full_bucket(minutes: np.ndarray, seasonal) -> bool:
    """Whether some time-of-day bucket holds ``min_bucket_rows`` of these rows."""
    bucket = bucket_index(minutes, seasonal.bucket_minutes)
    counts = np.unique(bucket[bucket >= 0], return_counts=True)[1]
    return bool(len(counts)) and int(counts.max()) >= seasonal.min_bucket_rows


def _usable(frame: pd.DataFrame) -> np.ndarray:
    return ~(frame["is_warmup"].to_numpy(dtype=bool) | frame["is_gap"].to_numpy(dtype=bool))


def _require(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise BadInputError(f"state vectors: missing column(s) {missing}")


def fit_first_fold(
    engine,
    config: PlatformConfig,
    timeframe: str,
    encoder: str = "pca",
    reports_dir: str | Path | None = None,
) -> tuple[StateVectorPipeline, Fold, dict]:
    """Fit the pipeline on the first walk-forward fold's training window of a timeframe,
    prove it saw nothing past that window, and (optionally) write the latent-dimension
    curve. Returns the pipeline, the fold and a report for humans."""
    frame = load_training_frame(engine, config, timeframe)
    folds = walk_forward_splits(frame["ts"], config.timeframes.preprocessing.splits)
    fold = folds[0]
    train = frame.loc[fold.mask(frame["ts"], "train")]
    pipeline = StateVectorPipeline(config, timeframe, encoder).fit(train)
    pipeline.check_fold(fold)
    validation = frame.loc[fold.mask(frame["ts"], "validation")]
    z = pipeline.transform(validation)
    report = pipeline.summary().as_dict()
    report["fold"] = fold.as_dict()
    report["validation_rows"] = int(len(validation))
    report["validation_encoded"] = int(len(z))
    if reports_dir is not None and hasattr(pipeline, "latent_curve_"):
        from regimes.model.encoders.latent_dim import save_curve

        png, csv = save_curve(
            pipeline.latent_curve_,
            "d",
            ["cumulative", "explained_variance"],
            Path(reports_dir) / f"latent_dim_{timeframe}.png",
            f"{timeframe}: explained variance by latent dimension",
            chosen=pipeline.d,
        )
        report["latent_dim_plot"] = str(png)
        report["latent_dim_data"] = str(csv)
    return pipeline, fold, report
