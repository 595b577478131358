"""The seasonal adjuster: per time-of-day bucket standardisation of the scaled features,
fitted on training rows only, identity where a bucket has too few rows, and the bar's
minutes into its market's trading day (session, 24x5, 24x7)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from regimes.config.loading import load_config
from regimes.config.markets import MarketConfig
from regimes.config.timeframes import SeasonalConfig, TimeframesConfig
from regimes.data.calendars import MarketCalendar
from regimes.data.markets import SymbolCalendars
from regimes.errors import BadInputError
from regimes.model.pipeline import StateVectorPipeline
from regimes.model.scaling import stationarize
from regimes.model.seasonal import MIN_SPREAD_RATIO, SeasonalAdjuster, minutes_into_day
from regimes.model.splits import LeakageError, walk_forward_splits
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.unit
CONFIG = load_config(REPO_ROOT / "config")
FX = MarketCalendar("fx", MarketConfig(calendar="24x5"))


def _seasonal_rows(seed: int, days: int = 60, per_day: int = 8, features: int = 3):
    """Rows of ``per_day`` bars a day, 30 minutes apart, each feature shifted and
    spread by the bar's position in the day."""
    rng = np.random.default_rng(seed)
    minutes = np.tile(np.arange(per_day) * 30.0, days)
    position = minutes / 30.0
    X = rng.normal(size=(len(minutes), features)) * (1 + position[:, None] / 4)
    return X + 0.5 * position[:, None], minutes


def test_the_estimator_contract_init_stores_clone_copies_unfitted_use_is_refused():
    adjuster = SeasonalAdjuster(bucket_minutes=60, min_bucket_rows=7)
    assert adjuster.get_params() == {"bucket_minutes": 60, "min_bucket_rows": 7}
    assert clone(adjuster).get_params() == adjuster.get_params()
    assert not hasattr(SeasonalAdjuster(bucket_minutes=-3), "offset_")  # no logic in __init__
    with pytest.raises(NotFittedError):
        adjuster.transform(np.zeros((2, 3)), np.zeros(2))
    with pytest.raises(ValueError, match="bucket_minutes must be >= 1, got 0"):
        SeasonalAdjuster(bucket_minutes=0).fit(np.zeros((4, 1)), np.zeros(4))
    with pytest.raises(ValueError, match="bucket_minutes must be a positive integer"):
        SeasonalAdjuster(bucket_minutes=2.5).fit(np.zeros((4, 1)), np.zeros(4))
    with pytest.raises(ValueError, match="min_bucket_rows must be an integer >= 2"):
        SeasonalAdjuster(min_bucket_rows=1).fit(np.zeros((4, 1)), np.zeros(4))


def test_each_bucket_is_centred_and_rescaled_to_the_overall_spread(seed):
    X, minutes = _seasonal_rows(seed)
    adjuster = SeasonalAdjuster(bucket_minutes=30, min_bucket_rows=50).fit(X, minutes)
    out = adjuster.transform(X, minutes)
    assert adjuster.n_buckets == 8 and adjuster.adjusted_.all()
    for b in range(8):
        rows = minutes == b * 30
        np.testing.assert_allclose(out[rows].mean(axis=0), 0.0, atol=1e-12)
        np.testing.assert_allclose(out[rows].std(axis=0), X.std(axis=0), rtol=1e-12)
    # Wider buckets pool bars: 60 minutes holds two of these bars.
    assert SeasonalAdjuster(60).fit(X, minutes).n_buckets == 4


def test_a_bucket_with_too_few_rows_an_unseen_bucket_and_nan_minutes_are_left_alone(seed):
    X, minutes = _seasonal_rows(seed, days=40)
    keep = (minutes != 90.0) | (np.arange(len(minutes)) < 8 * 10)  # 10 rows at 90 minutes
    adjuster = SeasonalAdjuster(30, min_bucket_rows=20).fit(X[keep], minutes[keep])
    assert adjuster.bucket_rows_[3] == 10 and not adjuster.adjusted_[3]
    assert adjuster.adjusted_.sum() == 7
    probe = np.random.default_rng(seed).normal(size=(4, X.shape[1]))
    at = np.array([90.0, 10_000.0, np.nan, -30.0])  # thin bucket, unseen, closed, before open
    np.testing.assert_array_equal(adjuster.transform(probe, at), probe)  # bit for bit
    assert not np.array_equal(adjuster.transform(probe, np.zeros(4)), probe)


def test_a_bucket_that_barely_moves_is_not_blown_up():
    minutes = np.tile([0.0, 30.0], 100)
    X = np.where(minutes == 0, 1e-9, 1.0)[:, None] * np.tile([1.0, -1.0, -1.0, 1.0], 50)[:, None]
    adjuster = SeasonalAdjuster(30, min_bucket_rows=50).fit(X, minutes)
    assert adjuster.scale_[0, 0] == MIN_SPREAD_RATIO
    assert np.abs(adjuster.transform(X, minutes)).max() <= 1.0 / MIN_SPREAD_RATIO


def test_bad_rows_are_refused_naming_the_problem():
    adjuster = SeasonalAdjuster(30).fit(np.ones((60, 2)) * np.arange(60)[:, None], np.zeros(60))
    with pytest.raises(BadInputError, match="NaN/inf in row 1"):
        adjuster.transform(np.array([[0.0, 1.0], [np.nan, 1.0]]), np.zeros(2))
    with pytest.raises(BadInputError, match="3 features, fitted on 2"):
        adjuster.transform(np.zeros((1, 3)), np.zeros(1))
    with pytest.raises(BadInputError, match="2 minutes for rows of shape"):
        adjuster.transform(np.zeros((1, 2)), np.zeros(2))
    with pytest.raises(BadInputError, match="no training row has a time of day"):
        SeasonalAdjuster(30).fit(np.zeros((3, 1)), np.full(3, np.nan))


def test_minutes_count_from_the_trading_days_open_on_a_session_24x5_and_24x7():
    session = CONFIG.timeframes.session  # 09:30-16:00 New York
    winter = pd.DatetimeIndex(
        ["2024-01-02 14:30", "2024-01-02 15:00", "2024-01-02 20:55"], tz="UTC"
    )
    summer = pd.DatetimeIndex(["2024-07-02 13:30", "2024-07-02 14:30"], tz="UTC")
    np.testing.assert_allclose(minutes_into_day(winter.asi8, session), [0, 30, 385], atol=1e-9)
    np.testing.assert_allclose(minutes_into_day(summer.asi8, session), [0, 60], atol=1e-9)
    # FX (24x5) trades from 17:00 New York: Sunday 22:00 UTC in winter is minute 0 of
    # Monday's trading day, Monday 21:55 UTC its last 5m bar; Saturday is closed.
    fx = pd.DatetimeIndex(
        ["2024-01-07 22:00", "2024-01-08 21:55", "2024-07-08 21:00", "2024-01-06 12:00"], tz="UTC"
    )
    out = minutes_into_day(fx.asi8, FX)
    np.testing.assert_array_equal(out[:3], [0.0, 1435.0, 0.0])
    assert np.isnan(out[3])
    # Around the clock without a calendar: minutes since midnight UTC.
    np.testing.assert_array_equal(minutes_into_day(winter.asi8, None), [870.0, 900.0, 1255.0])
    # One bar time for many symbols (the live step) gives the same as row by row.
    same = np.repeat(fx.asi8[:1], 3)
    np.testing.assert_array_equal(minutes_into_day(same, FX), [0.0, 0.0, 0.0])
    # 09:30 New York is 16:30 into FX's day (from 17:00 the evening before).
    mixed = SymbolCalendars({"EURUSD": FX, "SPY": session})
    stamps = pd.DatetimeIndex(["2024-01-02 14:30", "2024-01-02 14:30"], tz="UTC").asi8
    np.testing.assert_allclose(
        minutes_into_day(stamps, mixed, np.array(["EURUSD", "SPY"])), [990.0, 0.0], atol=1e-9
    )
    with pytest.raises(BadInputError, match="needs each row's symbol"):
        minutes_into_day(stamps, mixed)


def test_a_24x5_market_is_adjusted_by_its_own_trading_day(seed):
    """Bars of a 24x5 market whose activity peaks at the London/New York overlap: the
    buckets follow the FX day (from 17:00 New York), not the UTC day."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2024-01-08 00:00", "2024-02-23 21:55", freq="30min", tz="UTC")
    minutes = minutes_into_day(ts.asi8, FX)
    open_ = np.isfinite(minutes)
    ts, minutes = ts[open_], minutes[open_]
    hour_utc = ts.hour.to_numpy()
    X = (
        rng.normal(size=(len(ts), 2))
        + np.where((hour_utc >= 13) & (hour_utc < 16), 3.0, 0.0)[:, None]
    )
    adjuster = SeasonalAdjuster(bucket_minutes=30, min_bucket_rows=20).fit(X, minutes)
    assert adjuster.n_buckets == 48 and adjuster.adjusted_.all()
    out = adjuster.transform(X, minutes)
    peak = (hour_utc >= 13) & (hour_utc < 16)
    assert X[peak].mean() - X[~peak].mean() > 2.5
    assert abs(out[peak].mean() - out[~peak].mean()) < 0.1


def _pipeline_frame(seed: int, days: int = 30) -> pd.DataFrame:
    """A stored-features-like 15m frame (every configured feature) for two symbols, with
    a time-of-day shape in every feature."""
    rng = np.random.default_rng(seed)
    session = CONFIG.timeframes.session
    frames = []
    for symbol in ("A", "B"):
        day_index = pd.bdate_range("2024-03-04", periods=days)
        ts = pd.DatetimeIndex(
            [
                pd.Timestamp(f"{day.date()} 09:30", tz="America/New_York").tz_convert("UTC")
                + pd.Timedelta(minutes=15 * k)
                for day in day_index
                for k in range(26)
            ]
        )
        minutes = minutes_into_day(ts.asi8, session)
        n = len(ts)
        frame = pd.DataFrame({"symbol": symbol, "ts": ts, "close": 100.0})
        base = rng.normal(size=(n, 4))
        for i, name in enumerate(CONFIG.timeframe("15m").selected_features):
            mix = base[:, i % 4] + 0.3 * rng.normal(size=n) + np.sin(minutes / 60.0 + i)
            frame[name] = 100.0 * np.exp(0.01 * mix) if "sma" in name or "ema" in name else mix
        frame["is_warmup"] = False
        frame["is_gap"] = False
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _config_with(seasonal):
    """The repo's config with 15m's seasonal setting replaced."""
    from dataclasses import replace

    timeframes = dict(CONFIG.timeframes.timeframes)
    timeframes["15m"] = timeframes["15m"].model_copy(update={"seasonal": seasonal})
    return replace(
        CONFIG, timeframes=CONFIG.timeframes.model_copy(update={"timeframes": timeframes})
    )


def test_the_pipeline_fits_the_adjustment_on_training_rows_only(seed):
    frame = _pipeline_frame(seed)
    split = CONFIG.timeframes.preprocessing.splits.model_copy(update={"folds": 1})
    fold = walk_forward_splits(frame["ts"], split)[0]
    train = frame.loc[fold.mask(frame["ts"], "train")]
    config = _config_with(SeasonalConfig(bucket_minutes=60, min_bucket_rows=20))
    pipeline = StateVectorPipeline(config, "15m").fit(train)
    pipeline.check_fold(fold)
    assert "tod_sin" not in pipeline.features_
    adjuster = pipeline.seasonal_
    assert adjuster.adjusted_.sum() >= 6
    assert pipeline.fit_ranges()["seasonal"].end < fold.val_start
    # Its statistics are those of the scaled training rows, bucket by bucket.
    stationary = stationarize(train, CONFIG.features, pipeline.features_, train["close"])
    stationary = stationary[pipeline.features_].to_numpy()
    finite = np.isfinite(stationary).all(axis=1)  # the rows the scaler was fitted on
    scaled = pipeline.scaler_.transform(stationary[finite])
    bucket = np.floor(pipeline._minutes(train)[finite] / 60 + 1e-6).astype(int)
    for b in np.flatnonzero(adjuster.adjusted_):
        np.testing.assert_allclose(adjuster.offset_[b], scaled[bucket == b].mean(axis=0))
    # The future does not move them: the same training rows with a changed future fit
    # the same adjuster.
    future = frame.copy()
    later = ~fold.mask(future["ts"], "train")
    future.loc[later, pipeline.features_] *= 5.0
    again = StateVectorPipeline(config, "15m").fit(future.loc[fold.mask(future["ts"], "train")])
    np.testing.assert_array_equal(again.seasonal_.offset_, adjuster.offset_)
    # A fit that reaches one row into validation is caught by the leakage guard.
    leaky = frame.loc[frame["ts"] <= fold.val_start]
    with pytest.raises(LeakageError, match="LEAKAGE"):
        StateVectorPipeline(config, "15m").fit(leaky).check_fold(fold)


def test_off_and_1d_mean_no_adjuster_and_tod_sin_stays_a_candidate(seed):
    frame = _pipeline_frame(seed, days=20)
    pipeline = StateVectorPipeline(_config_with(None), "15m").fit(frame)
    assert pipeline.seasonal_ is None and "seasonal" not in pipeline.fit_ranges()
    assert "tod_sin" in pipeline.selection_.candidates
    # No bucket with enough training rows: nothing to adjust, fitted as with it off.
    thin = SeasonalConfig(bucket_minutes=60, min_bucket_rows=10_000)
    pipeline = StateVectorPipeline(_config_with(thin), "15m").fit(frame)
    assert pipeline.seasonal_ is None and "tod_sin" in pipeline.selection_.candidates
    enough = SeasonalConfig(bucket_minutes=60, min_bucket_rows=20)
    pipeline = StateVectorPipeline(_config_with(enough), "15m").fit(frame)
    assert pipeline.seasonal_ is not None and "tod_sin" not in pipeline.selection_.candidates
    assert CONFIG.timeframe("1d").seasonal is None


@pytest.mark.parametrize(
    ("seasonal", "message"),
    [
        ("off", "timeframes.5m.seasonal: expected 'none' or a mapping"),
        ({"bucket_minutes": 0}, "timeframes.5m.seasonal.bucket_minutes: Input should be greater"),
        ({"bucket_minutes": 32}, r"timeframes.5m.seasonal.bucket_minutes: expected a whole"),
        ({"minutes": 30}, "timeframes.5m.seasonal.minutes: Extra inputs"),
    ],
)
def test_bad_seasonal_settings_are_refused_naming_the_field(seasonal, message):
    from regimes.config.loading import format_validation_error

    document = yaml.safe_load((REPO_ROOT / "config" / "timeframes.yaml").read_text())
    document["timeframes"]["5m"]["seasonal"] = seasonal
    with pytest.raises(ValidationError) as caught:
        TimeframesConfig.model_validate(document)
    lines = format_validation_error("timeframes.yaml", caught.value).splitlines()
    assert any(re.search(message, line) for line in lines), lines
    assert all(".5m.seasonal" in line for line in lines), lines


def test_1d_must_be_none_and_none_parses_to_off():
    document = yaml.safe_load((REPO_ROOT / "config" / "timeframes.yaml").read_text())
    document["timeframes"]["1d"]["seasonal"] = {"bucket_minutes": 60}
    with pytest.raises(ValidationError, match=r"timeframes.1d.seasonal: a 1d bar is a whole"):
        TimeframesConfig.model_validate(document)
    document["timeframes"]["1d"]["seasonal"] = "none"
    document["timeframes"]["5m"]["seasonal"] = "none"
    parsed = TimeframesConfig.model_validate(document)
    assert parsed.timeframes["5m"].seasonal is None
