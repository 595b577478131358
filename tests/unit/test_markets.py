"""Markets and calendars: alignment, gaps, resampling, time of day and TTLs per market."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from regimes.config.markets import MarketConfig, MarketsConfig
from regimes.config.timeframes import Session
from regimes.data.bars import align_minutes, resample
from regimes.data.calendars import MarketCalendar
from regimes.data.markets import (
    MarketBook,
    SymbolCalendars,
    calendars_as_dict,
    calendars_from_dict,
)
from regimes.data.synth import SynthConfig, generate
from regimes.errors import BadInputError
from regimes.features.definitions import time_of_day
from regimes.live.sync import TimeframeSynchronizer

EQUITY = Session(open="09:30", close="16:00", weekdays=[0, 1, 2, 3, 4], timezone="America/New_York")


def _calendar(name: str, **config) -> MarketCalendar:
    return MarketCalendar(name, MarketConfig(**config))


def _minute_bars(symbol: str, stamps: pd.DatetimeIndex, drop: np.ndarray | None = None):
    """1m bars at ``stamps`` (minus the positions in ``drop``), price 100, volume 1."""
    keep = np.ones(len(stamps), dtype=bool)
    if drop is not None:
        keep[drop] = False
    stamps = stamps[keep]
    return pd.DataFrame(
        {
            "symbol": symbol,
            "timeframe": "1m",
            "ts": stamps,
            "open": 100.0,
            "high": 101.0,
            "low": 99.0,
            "close": 100.5,
            "volume": 1.0,
            "is_gap": False,
        }
    )


def _ny(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="America/New_York").tz_convert("UTC")


# --------------------------------------------------------------------------- XNYS


@pytest.fixture(scope="module")
def xnys_2024():
    calendar = _calendar("nyse", calendar="XNYS")
    schedule = calendar.schedule("2024-01-01", "2024-12-31")
    minutes = calendar.minutes(schedule.index)
    # Two missing minutes on a normal day and a whole day missing (2024-03-05).
    missing_day = (minutes >= _ny("2024-03-05 09:30")) & (minutes < _ny("2024-03-05 16:00"))
    drop = np.r_[np.flatnonzero(missing_day), [100, 101]]
    return calendar, schedule, minutes, _minute_bars("SPY", minutes, drop)


def test_xnys_year_holidays_and_early_closes(xnys_2024):
    calendar, schedule, minutes, _ = xnys_2024
    days = schedule.index
    assert len(days) == 252
    for holiday in ("2024-01-01", "2024-01-15", "2024-03-29", "2024-07-04", "2024-12-25"):
        assert pd.Timestamp(holiday) not in days
    early = days[schedule["early_close"].to_numpy()]
    assert [d.strftime("%m-%d") for d in early] == ["07-03", "11-29", "12-24"]
    assert schedule.loc["2024-11-29", "close"] == _ny("2024-11-29 13:00")
    assert len(minutes) == 249 * 390 + 3 * 210
    assert not calendar.in_session(pd.DatetimeIndex([_ny("2024-07-04 12:00")]))[0]
    assert not calendar.in_session(pd.DatetimeIndex([_ny("2024-11-29 13:00")]))[0]


def test_xnys_year_aligned_and_resampled(xnys_2024):
    calendar, schedule, minutes, bars = xnys_2024
    aligned, report = align_minutes(bars, calendar)
    assert len(aligned) == len(minutes)
    assert report.gap_rows_added == 390 + 2
    assert report.trading_days == 252
    assert report.short_days == 3  # 07-03, 11-29, 12-24: marked short, not gaps
    gaps = aligned.loc[aligned["is_gap"], "ts"]
    assert calendar.in_session(pd.DatetimeIndex(gaps)).all()

    daily = resample(aligned, "1d", calendar, 0.2)
    assert len(daily) == 252
    assert (pd.DatetimeIndex(daily["ts"]) == pd.DatetimeIndex(schedule["open"])).all()
    by_day = daily.set_index(pd.DatetimeIndex(daily["ts"]).tz_convert("America/New_York").date)
    assert by_day.loc[date(2024, 11, 29), "volume"] == 210.0  # a short day, complete
    assert not by_day.loc[date(2024, 11, 29), "is_gap"]
    assert by_day.loc[date(2024, 3, 5), "is_gap"]
    assert np.isnan(by_day.loc[date(2024, 3, 5), "close"])

    hourly = resample(aligned, "1h", calendar, 0.2)
    half_day = hourly.loc[
        pd.DatetimeIndex(hourly["ts"]).tz_convert("America/New_York").date == date(2024, 11, 29)
    ]
    assert [
        t.strftime("%H:%M") for t in pd.DatetimeIndex(half_day["ts"]).tz_convert("America/New_York")
    ] == ["09:30", "10:30", "11:30", "12:30"]
    assert half_day["volume"].tolist() == [60.0, 60.0, 60.0, 30.0]
    assert len(hourly) == 249 * 7 + 3 * 4


def test_xnys_half_days_are_marked_on_every_bar_of_them(xnys_2024):
    calendar, schedule, _, bars = xnys_2024
    book = MarketBook(
        MarketsConfig(default="nyse", markets={"nyse": MarketConfig(calendar="XNYS")}), EQUITY
    )
    aligned, _ = align_minutes(bars, calendar)
    half_days = {
        "2024-07-03",
        "2024-11-29",
        "2024-12-24",
    }  # July 3rd, after Thanksgiving, Christmas Eve
    for frame in (
        aligned,
        resample(aligned, "1h", calendar, 0.2),
        resample(aligned, "1d", calendar, 0.2),
    ):
        marked = book.mark_short_days(frame)
        local = pd.DatetimeIndex(marked["ts"]).tz_convert("America/New_York").strftime("%Y-%m-%d")
        assert set(local[marked["is_short_day"].to_numpy()]) == half_days
        assert marked.loc[np.isin(local, sorted(half_days)), "is_short_day"].all()
        pd.testing.assert_frame_equal(marked.drop(columns="is_short_day"), frame)
    # The day before Thanksgiving is a full day; on the legacy session nothing is short.
    assert not book.mark_short_days(aligned[aligned["ts"] < _ny("2024-11-28")]).iloc[-1][
        "is_short_day"
    ]
    legacy = MarketBook(MarketsConfig(), EQUITY)
    assert not legacy.mark_short_days(aligned)["is_short_day"].any()


# --------------------------------------------------------------------------- 24x5


def test_24x5_week_from_sunday_open_to_friday_close():
    fx = _calendar("fx", calendar="24x5")
    schedule = fx.schedule("2024-01-06", "2024-01-14")
    assert [d.strftime("%a %d") for d in schedule.index] == [
        "Mon 08",
        "Tue 09",
        "Wed 10",
        "Thu 11",
        "Fri 12",
    ]
    assert schedule["open"].iloc[0] == _ny("2024-01-07 17:00")  # Sunday
    assert schedule["close"].iloc[-1] == _ny("2024-01-12 17:00")  # Friday
    week = fx.minutes(schedule.index)
    assert len(week) == 5 * 1440
    probes = pd.DatetimeIndex(
        [
            _ny(t)
            for t in (
                "2024-01-07 16:59",
                "2024-01-07 17:00",
                "2024-01-12 16:59",
                "2024-01-12 17:00",
                "2024-01-13 12:00",
            )
        ]
    )
    assert fx.in_session(probes).tolist() == [False, True, True, False, False]

    aligned, report = align_minutes(_minute_bars("EURUSD", week, np.array([5])), fx)
    assert report.gap_rows_added == 1  # the weekend is not a gap
    daily = resample(aligned, "1d", fx, 0.2)
    assert [
        t.strftime("%a %H:%M") for t in pd.DatetimeIndex(daily["ts"]).tz_convert("America/New_York")
    ] == ["Sun 17:00", "Mon 17:00", "Tue 17:00", "Wed 17:00", "Thu 17:00"]
    hourly = resample(aligned, "1h", fx, 0.2)
    assert len(hourly) == 5 * 24 and not hourly["is_gap"].any()
    tod = time_of_day(pd.DatetimeIndex([_ny("2024-01-09 05:00")]).asi8, fx)
    assert tod[0] == pytest.approx(0.5)  # 12 hours after the 17:00 New York open


# --------------------------------------------------------------------------- 24x7


def test_24x7_month_across_a_dst_change():
    crypto = _calendar("crypto", calendar="24x7", timezone="America/New_York")
    schedule = crypto.schedule("2024-03-01", "2024-03-31")
    assert len(schedule) == 31
    lengths = (schedule["close"] - schedule["open"]).dt.total_seconds() / 3600
    assert lengths.loc["2024-03-10"] == 23.0
    assert (lengths.drop(pd.Timestamp("2024-03-10")) == 24.0).all()
    month = crypto.minutes(schedule.index)
    assert len(month) == 31 * 1440 - 60
    assert month.is_unique and month.is_monotonic_increasing
    aligned, report = align_minutes(_minute_bars("BTC", month), crypto)
    assert report.gap_rows_added == 0
    daily = resample(aligned, "1d", crypto, 0.0)
    assert len(daily) == 31 and not daily["is_gap"].any()
    assert daily.set_index("ts").loc[_ny("2024-03-10 00:00"), "volume"] == 23 * 60
    five = resample(aligned, "5m", crypto, 0.0)
    assert len(five) == (31 * 1440 - 60) // 5
    # position in the day: noon New York is past half of the 23-hour day of the change
    assert time_of_day(pd.DatetimeIndex([_ny("2024-03-10 12:00")]).asi8, crypto)[0] == (
        pytest.approx(11 / 23)
    )


# --------------------------------------------------------------------------- futures


def test_futures_session_with_a_daily_halt_and_a_break():
    es = _calendar(
        "es",
        calendar="custom",
        timezone="America/Chicago",
        open="17:00",
        close="16:00",
        breaks=[{"start": "08:00", "end": "08:15"}],
    )
    schedule = es.schedule("2024-01-08", "2024-01-09")
    assert schedule["open"].iloc[0] == pd.Timestamp("2024-01-07 17:00", tz="America/Chicago")
    day = es.minutes(schedule.index[:1])
    assert len(day) == 23 * 60 - 15
    halt = pd.Timestamp("2024-01-08 16:30", tz="America/Chicago")
    in_break = pd.Timestamp("2024-01-08 08:05", tz="America/Chicago")
    assert es.in_session(pd.DatetimeIndex([halt, in_break])).tolist() == [False, False]
    two_days = es.minutes(schedule.index)
    aligned, report = align_minutes(_minute_bars("ES", two_days), es)
    assert report.gap_rows_added == 0  # neither the halt nor the break is a gap
    hourly = resample(aligned, "1h", es, 0.2)
    assert len(hourly) == 2 * 23
    eight = hourly.set_index("ts").loc[pd.Timestamp("2024-01-08 08:00", tz="America/Chicago")]
    assert eight["volume"] == 45.0 and not eight["is_gap"]  # the break is not missing data


# --------------------------------------------------------------------------- synth


def test_synth_on_calendars_follows_holidays_weekends_and_short_days():
    nyse = _calendar("nyse", calendar="XNYS")
    market = generate(SynthConfig(symbols=1, days=4, start=date(2024, 7, 2)), nyse)
    days = pd.DatetimeIndex(market.truth["ts"]).tz_convert("America/New_York").normalize()
    per_day = pd.Series(1, index=days).groupby(level=0).size()
    assert [d.strftime("%m-%d") for d in per_day.index] == ["07-02", "07-03", "07-05", "07-08"]
    assert per_day.tolist() == [390, 210, 390, 390]
    assert market.params["market"]["calendar"] == "XNYS"

    crypto = _calendar("crypto", calendar="24x7")
    market = generate(SynthConfig(symbols=1, days=3, start=date(2024, 1, 6)), crypto)
    assert len(market.truth) == 3 * 1440  # Saturday and Sunday included
    assert pd.DatetimeIndex(market.bars["ts"]).min() == pd.Timestamp("2024-01-06", tz="UTC")

    fx = _calendar("fx", calendar="24x5")
    market = generate(SynthConfig(symbols=1, days=5, start=date(2024, 1, 6)), fx)
    stamps = pd.DatetimeIndex(market.truth["ts"])
    assert fx.in_session(stamps).all() and len(stamps) == 5 * 1440
    again = generate(SynthConfig(symbols=1, days=5, start=date(2024, 1, 6)), fx)
    assert again.bars_sha256() == market.bars_sha256()


# --------------------------------------------------------------------------- features, TTL


def test_time_of_day_per_symbol_market_and_legacy_unchanged():
    fx = _calendar("fx", calendar="24x5")
    calendars = SymbolCalendars({"EURUSD": fx, "SPY": EQUITY})
    stamps = pd.DatetimeIndex([_ny("2024-01-09 05:00"), _ny("2024-01-09 12:45")]).asi8
    both = time_of_day(stamps, calendars, ["EURUSD", "SPY"])
    assert both[0] == pytest.approx(0.5)
    assert both[1] == time_of_day(stamps[1:], EQUITY)[0] == pytest.approx(0.5)
    with pytest.raises(BadInputError, match="BTC"):
        time_of_day(stamps[:1], calendars, ["BTC"])
    restored = calendars_from_dict(calendars_as_dict(calendars))
    assert restored == calendars


def test_ttl_counts_market_time_over_weekends_and_holidays():
    fx = _calendar("fx", calendar="24x5")
    nyse = _calendar("nyse", calendar="XNYS")
    sync = TimeframeSynchronizer({"1d": timedelta(hours=6)}, {"EURUSD": fx, "SPY": nyse})
    sync.set_champion("1d", "m")
    answers = pd.DataFrame(
        {
            "symbol": ["EURUSD", "SPY", "WALL"],
            "timeframe": "1d",
            "model_id": "m",
            # EURUSD: Thursday's FX day, final Friday 17:00 New York (the week's close)
            "ts": [_ny("2024-01-11 17:00"), _ny("2024-07-03 09:30"), _ny("2024-07-03 09:30")],
            "state_id": 1,
            "state_prob": 0.9,
            "is_unknown": False,
            "ood_reason": None,
        }
    )
    sync.update(answers)
    monday = sync.composite(["EURUSD"], _ny("2024-01-14 20:00")).iloc[0]
    assert monday["state_1d"] == 1  # 3 hours of market time since Friday's close
    assert monday["age_s_1d"] == pytest.approx((2 * 24 + 3) * 3600)  # wall-clock age
    late = sync.composite(["EURUSD"], _ny("2024-01-15 00:00")).iloc[0]
    assert late["state_1d"] == -1 and "in market time" in late["reason_1d"]
    # SPY: final Thursday 09:30 (Independence Day); Friday 10:00 is half an hour of session
    friday = sync.composite(["SPY", "WALL"], _ny("2024-07-05 10:00")).set_index("symbol")
    assert friday.loc["SPY", "state_1d"] == 1
    assert friday.loc["WALL", "state_1d"] == -1  # no calendar: wall-clock age, stale


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"calendar": "XNYZ"}, "unknown calendar 'XNYZ'"),
        (
            {"calendar": "custom", "open": "09:00", "close": "09:00"},
            "close 09:00:00 equals open",
        ),
        (
            {
                "calendar": "custom",
                "open": "09:00",
                "close": "17:00",
                "breaks": [{"start": "12:00", "end": "13:00"}, {"start": "12:30", "end": "14:00"}],
            },
            r"breaks\[1\].*overlaps",
        ),
        (
            {
                "calendar": "custom",
                "open": "09:00",
                "close": "17:00",
                "breaks": [{"start": "18:00", "end": "18:30"}],
            },
            r"breaks\[0\].*inside the session",
        ),
        ({"calendar": "24x5", "open": "09:00"}, "custom only"),
    ],
)
def test_bad_market_configs_name_the_field(config, message):
    with pytest.raises(ValueError, match=message):
        MarketConfig(**config)


def test_a_symbol_without_a_market_is_refused_when_there_is_no_default():
    config = MarketsConfig(
        default=None,
        markets={"fx": MarketConfig(calendar="24x5"), "crypto": MarketConfig(calendar="24x7")},
        symbols={"EURUSD": "fx"},
    )
    book = MarketBook(config, None, {"BTC": "crypto"})
    assert book.market_of("EURUSD") == "fx" and book.market_of("BTC") == "crypto"
    with pytest.raises(BadInputError, match="symbol SPY: no market"):
        book.market_of("SPY")
    with pytest.raises(BadInputError, match="maps symbol EURUSD to market fx"):
        book.check_assignment("EURUSD", "crypto")
    with pytest.raises(ValueError, match="default: unknown market 'nyse'"):
        MarketsConfig(default="nyse", markets={"fx": MarketConfig(calendar="24x5")})
    with pytest.raises(ValueError, match="symbols.X: unknown market 'nope'"):
        MarketsConfig(symbols={"X": "nope"})


def test_live_features_use_each_symbols_market_like_the_batch():
    from regimes.config.loading import default_config_dir, load_config
    from regimes.features.batch import compute_batch
    from regimes.features.online import OnlineFeatureBuffer

    spec = load_config(default_config_dir()).features
    fx = _calendar("fx", calendar="24x5")
    calendars = SymbolCalendars({"EURUSD": fx, "SPY": EQUITY})
    stamps = {
        "EURUSD": pd.date_range(_ny("2024-01-08 03:00"), periods=3, freq="1h"),
        "SPY": pd.date_range(_ny("2024-01-08 09:30"), periods=3, freq="1h"),
    }
    frames = [_minute_bars(symbol, ts).assign(timeframe="1h") for symbol, ts in stamps.items()]
    bars = pd.concat(frames, ignore_index=True)
    batch = compute_batch(bars, spec, calendars).set_index(["symbol", "ts"])["tod_sin"]
    buffer = OnlineFeatureBuffer(spec, calendars)
    column = buffer.names.index("tod_sin")
    for step in range(3):
        ts = pd.DatetimeIndex([stamps["EURUSD"][step], stamps["SPY"][step]])
        result = buffer.update(
            ["EURUSD", "SPY"],
            ts,
            open=[1, 1],
            high=[1, 1],
            low=[1, 1],
            close=[1, 1],
            volume=[1, 1],
        )
        expected = [batch.loc[("EURUSD", ts[0])], batch.loc[("SPY", ts[1])]]
        assert result.values[:, column] == pytest.approx(expected)
    # 03:00 New York is 10 hours into the FX day (opened 17:00); 09:30 is the equity open
    assert batch.loc[("EURUSD", _ny("2024-01-08 03:00"))] == pytest.approx(
        np.sin(2 * np.pi * 10 / 24)
    )
    assert batch.loc[("SPY", _ny("2024-01-08 09:30"))] == pytest.approx(0.0)
    restored = OnlineFeatureBuffer.restore(buffer.snapshot(), spec, calendars)
    assert restored.symbols == ["EURUSD", "SPY"]


# --------------------------------------------------------------------------- artifacts


def test_a_model_keeps_its_exchange_schedule_when_the_library_changes(tmp_path, monkeypatch):
    import dataclasses
    import json

    from regimes.config.loading import default_config_dir, load_config
    from regimes.data import calendars as calendars_module
    from regimes.data import sql as db
    from regimes.training.train import universe_calendars

    config = load_config(default_config_dir())
    markets = MarketsConfig(
        default="nyse",
        markets={"nyse": MarketConfig(calendar="XNYS"), "fx": config.markets.markets["fx"]},
    )
    config = dataclasses.replace(config, markets=markets)
    engine = db.make_engine(f"sqlite:///{tmp_path / 'regimes.db'}")
    db.create_schema(engine)
    window = (_ny("2024-06-03 09:30"), _ny("2024-08-30 15:59"))
    one = universe_calendars(engine, config, ["SPY"], window)
    db.assign_markets(engine, {"EURUSD": "fx"})
    mixed = universe_calendars(engine, config, ["EURUSD", "QQQ", "SPY"], window)
    assert one["schedule"]["library"].startswith("exchange-calendars ")
    assert one["schedule"]["first"] == "2024-05-27" and one["schedule"]["last"] == "2025-08-31"
    assert "2024-07-04" not in one["schedule"]["days"]  # a holiday: not a trading day
    assert list(mixed["schedules"]) == ["nyse"]  # once per market, not per symbol
    # Never past the days the library covers (they would read as holidays).
    import exchange_calendars

    end = exchange_calendars.get_calendar("XNYS").last_session
    late = MarketCalendar("nyse", MarketConfig(calendar="XNYS")).freeze(end - timedelta(30), end)
    assert late.frozen.last == end and late.frozen.table.index.max() <= end
    assert "schedule" not in mixed["symbols"]["SPY"]
    stored_one, stored_mixed = (
        calendars_from_dict(json.loads(json.dumps(d))) for d in (one, mixed)
    )
    probes = pd.DatetimeIndex(
        [
            _ny("2024-06-19 10:00"),
            _ny("2024-07-03 12:00"),
            _ny("2024-07-03 14:00"),
            _ny("2026-06-19 10:00"),
        ]
    )
    before = (stored_one.in_session(probes), stored_one.time_of_day(probes.asi8))

    # The library "updates": 2024-06-20 and 2026-06-22 become closed days. The installed
    # schedule changes; the stored one does not, inside its span.
    library = calendars_module._exchange_schedule

    def updated(name, year):
        frame = library(name, year)
        return frame.drop(
            [
                d
                for d in (pd.Timestamp("2024-06-20"), pd.Timestamp("2026-06-22"))
                if d in frame.index
            ]
        )

    calendars_module._year_schedule.cache_clear()
    monkeypatch.setattr(calendars_module, "_exchange_schedule", updated)
    try:
        fresh = MarketCalendar("nyse", MarketConfig(calendar="XNYS"))
        changed = pd.DatetimeIndex([_ny("2024-06-20 10:00")])
        assert not fresh.in_session(changed)[0]
        assert stored_one.in_session(changed)[0]
        assert stored_mixed.of("SPY").in_session(changed)[0]
        after = (stored_one.in_session(probes), stored_one.time_of_day(probes.asi8))
        assert (before[0] == after[0]).all() and np.array_equal(before[1], after[1], equal_nan=True)
        # Beyond the stored span the installed library answers (a model loaded afresh).
        reloaded = calendars_from_dict(json.loads(json.dumps(one)))
        assert not reloaded.in_session(pd.DatetimeIndex([_ny("2026-06-22 10:00")]))[0]
    finally:
        calendars_module._year_schedule.cache_clear()


# --------------------------------------------------------------------------- oracle


@pytest.mark.parametrize(
    ("market", "timeframe", "minutes"),
    [(dict(calendar="24x5"), "1h", 60), (dict(calendar="24x7", timezone="Asia/Tokyo"), "15m", 15)],
)
def test_the_oracle_recovers_regimes_on_24x5_and_24x7_markets(market, timeframe, minutes):
    from regimes.data.synth_variants import VARIANTS
    from regimes.model.hmm.evaluation import truth_for_bars
    from regimes.training.oracle import SynthOracle

    calendar = _calendar("m", **market)
    config = VARIANTS["k2-vol"].with_size(2, 10).config
    generated = generate(config, calendar)
    frames = [
        resample(align_minutes(group, calendar)[0], timeframe, calendar, 0.2)
        for _, group in generated.bars.groupby("symbol")
    ]
    bars = pd.concat(frames, ignore_index=True)
    bars = bars[~bars["is_gap"]].reset_index(drop=True)
    posterior = SynthOracle(generated, calendar, minutes).filtered(bars, "slow_regime")
    truth = truth_for_bars(generated.truth, bars["ts"], bars["symbol"], minutes, "slow_regime")
    accuracy = float((posterior.argmax(axis=1) == truth).mean())
    assert accuracy >= 0.9, accuracy
    # Bars off the generated grid are refused, naming the market's hours.
    shifted = bars.assign(ts=bars["ts"] + pd.Timedelta("30s"))
    with pytest.raises(BadInputError, match="do not open on a minute the market was generated"):
        SynthOracle(generated, calendar, minutes).filtered(shifted, "slow_regime")


def test_the_oracle_refuses_a_market_with_breaks():
    from regimes.training.oracle import SynthOracle

    futures = _calendar(
        "futures",
        calendar="custom",
        timezone="America/Chicago",
        open="17:00",
        close="16:00",
        breaks=[{"start": "08:00", "end": "08:30"}],
    )
    generated = generate(SynthConfig(symbols=1, days=2, seed=1), futures)
    with pytest.raises(BadInputError, match="market futures.*has breaks inside the session"):
        SynthOracle(generated, futures, 60)
