"""Alignment to the session grid, gap marking and resampling (plan task 2.1)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from regimes.config.loading import load_timeframes
from regimes.data.bars import align_minutes, bin_open_times, forward_fill_non_price, resample
from regimes.data.synth import SynthConfig, generate
from regimes.errors import BadInputError
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.unit
SESSION = load_timeframes(REPO_ROOT / "config" / "timeframes.yaml").session


def _minutes(start: str, count: int, symbol: str = "X") -> pd.DataFrame:
    ts = pd.date_range(start, periods=count, freq="1min", tz="UTC")
    close = 100.0 + np.arange(count, dtype=float)
    return pd.DataFrame(
        {
            "symbol": symbol,
            "timeframe": "1m",
            "ts": ts,
            "open": close - 0.5,
            "high": close + 1.0,
            "low": close - 1.0,
            "close": close,
            "volume": np.full(count, 10.0),
            "is_gap": False,
        }
    )


def test_alignment_marks_missing_minutes_as_gap_rows_without_prices():
    frame = _minutes("2024-01-02 14:30", 390).drop(index=[0, 100, 101, 389])
    aligned, report = align_minutes(frame, SESSION)
    assert len(aligned) == 390 and report.gap_rows_added == 4 and report.trading_days == 1
    gaps = aligned[aligned["is_gap"]]
    assert gaps["ts"].dt.strftime("%H:%M").tolist() == ["14:30", "16:10", "16:11", "20:59"]
    assert gaps[["open", "high", "low", "close"]].isna().all().all()
    assert (gaps["volume"] == 0).all()
    real = aligned[~aligned["is_gap"]]
    pd.testing.assert_frame_equal(
        real.reset_index(drop=True), frame.reset_index(drop=True), check_dtype=False
    )


def test_bars_outside_the_session_are_reported_and_not_aggregated():
    inside = _minutes("2024-01-02 14:30", 390)
    outside = _minutes("2024-01-02 13:00", 5)
    weekend = _minutes("2024-01-06 15:00", 5)  # a Saturday
    aligned, report = align_minutes(pd.concat([outside, inside, weekend]), SESSION)
    assert report.outside_session == 10 and len(aligned) == 390


def test_higher_timeframes_are_anchored_at_the_session_open():
    ts = pd.Series(
        pd.to_datetime(
            ["2024-01-02 14:30", "2024-01-02 15:29", "2024-01-02 15:30", "2024-01-02 20:59"],
            utc=True,
        )
    )
    assert bin_open_times(ts, "1h", SESSION).dt.strftime("%H:%M").tolist() == [
        "14:30",
        "14:30",
        "15:30",
        "20:30",
    ]
    assert bin_open_times(ts, "15m", SESSION).dt.strftime("%H:%M").tolist() == [
        "14:30",
        "15:15",
        "15:30",
        "20:45",
    ]
    assert bin_open_times(ts, "1d", SESSION).dt.strftime("%H:%M").unique().tolist() == ["14:30"]
    assert bin_open_times(ts, "1h", None).dt.strftime("%H:%M").tolist() == [
        "14:00",
        "15:00",
        "15:00",
        "20:00",
    ]


def _naive_resample(aligned: pd.DataFrame, minutes: int) -> list[tuple]:
    """An independent loop: chunk each session into runs of ``minutes`` from the open."""
    rows = []
    for _, day in aligned.groupby(aligned["ts"].dt.date):
        day = day.sort_values("ts").reset_index(drop=True)
        for start in range(0, len(day), minutes):
            chunk = day.iloc[start : start + minutes]
            present = chunk[~chunk["is_gap"]]
            if present.empty:
                rows.append((chunk["ts"].iloc[0], np.nan, np.nan, np.nan, np.nan, 0.0))
                continue
            rows.append(
                (
                    chunk["ts"].iloc[0],
                    present["open"].iloc[0],
                    present["high"].max(),
                    present["low"].min(),
                    present["close"].iloc[-1],
                    present["volume"].sum(),
                )
            )
    return rows


@pytest.mark.parametrize("timeframe, minutes", [("5m", 5), ("15m", 15), ("1h", 60), ("1d", 390)])
def test_resample_matches_an_independent_loop(timeframe, minutes, seed):
    market = generate(SynthConfig(symbols=1, days=3, seed=seed, missing_rate=0.05), SESSION)
    aligned, _ = align_minutes(market.bars, SESSION)
    fast = resample(aligned, timeframe, SESSION)
    expected = pd.DataFrame(
        _naive_resample(aligned, minutes), columns=["ts", "open", "high", "low", "close", "volume"]
    )
    pd.testing.assert_frame_equal(
        fast[["ts", "open", "high", "low", "close", "volume"]].reset_index(drop=True),
        expected,
        check_dtype=False,
    )
    assert (fast["timeframe"] == timeframe).all()


def test_gap_policy_for_partial_and_empty_bars():
    frame = _minutes("2024-01-02 14:30", 390)
    frame = frame[
        ~frame["ts"].dt.strftime("%H:%M").isin(["14:31"] + [f"14:{m}" for m in range(35, 40)])
    ]
    aligned, _ = align_minutes(frame, SESSION)
    strict = resample(aligned, "5m", SESSION, max_missing_fraction=0.0)
    lenient = resample(aligned, "5m", SESSION, max_missing_fraction=0.2)
    first, second = strict.iloc[0], strict.iloc[1]
    assert first["is_gap"] and not lenient.iloc[0]["is_gap"]  # 1 of 5 minutes missing
    assert first["open"] == 99.5 and first["close"] == 104.0  # from the minutes present
    assert second["is_gap"] and lenient.iloc[1]["is_gap"]  # no minute present
    assert np.isnan(second[["open", "high", "low", "close"]].astype(float)).all()
    assert second["volume"] == 0
    assert not strict.iloc[2:]["is_gap"].any()


def test_forward_fill_only_for_non_price_data():
    frame = _minutes("2024-01-02 14:30", 6)
    frame["vendor_flag"] = [1.0, np.nan, np.nan, np.nan, 2.0, np.nan]
    filled = forward_fill_non_price(frame, ["vendor_flag"], limit_bars=2)
    assert filled["vendor_flag"].iloc[:3].tolist() == [1.0, 1.0, 1.0]
    assert np.isnan(filled["vendor_flag"].iloc[3])  # past the two-bar limit
    assert filled["vendor_flag"].iloc[5] == 2.0
    with pytest.raises(BadInputError, match="price column"):
        forward_fill_non_price(frame, ["close"], limit_bars=2)


def test_the_session_follows_daylight_saving():
    winter = _minutes("2024-01-02 14:30", 390)
    summer = _minutes("2024-07-01 13:30", 390)
    for frame, first_hour in ((winter, "14:30"), (summer, "13:30")):
        aligned, report = align_minutes(frame, SESSION)
        assert report.gap_rows_added == 0 and report.outside_session == 0
        hours = resample(aligned, "1h", SESSION)
        assert hours["ts"].dt.strftime("%H:%M").iloc[0] == first_hour
        assert len(hours) == 7 and not hours["is_gap"].any()
        assert resample(aligned, "1d", SESSION)["ts"].dt.strftime("%H:%M").tolist() == [first_hour]
    market = generate(
        SynthConfig(symbols=1, days=10, seed=1, start=pd.Timestamp("2024-03-05")), SESSION
    )  # spans the change on 2024-03-10
    per_day = market.truth.groupby(market.truth["ts"].dt.date)["ts"].agg(["size", "min"])
    assert (per_day["size"] == 390).all()
    assert set(per_day["min"].dt.strftime("%H:%M")) == {"14:30", "13:30"}


def test_a_day_missing_entirely_becomes_gaps_via_the_market_calendar():
    a = pd.concat(
        [
            _minutes("2024-01-02 14:30", 390, "A"),
            _minutes("2024-01-03 14:30", 390, "A"),
            _minutes("2024-01-04 14:30", 390, "A"),
        ]
    )
    b = pd.concat([_minutes("2024-01-02 14:30", 390, "B"), _minutes("2024-01-04 14:30", 390, "B")])
    calendar = pd.DatetimeIndex(["2024-01-02", "2024-01-03", "2024-01-04"])
    aligned, report = align_minutes(b, SESSION, calendar)
    assert report.trading_days == 3 and report.gap_rows_added == 390
    days = resample(aligned, "1d", SESSION)
    assert days["is_gap"].tolist() == [False, True, False]
    assert days["close"].isna().tolist() == [False, True, False]
    # Days before the symbol's first bar are not its gaps (it did not trade yet).
    late, _ = align_minutes(b.iloc[390:], SESSION, calendar)
    assert len(late) == 390
    assert len(align_minutes(a, SESSION, calendar)[0]) == 3 * 390
