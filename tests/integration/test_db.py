"""The SQL data layer on SQLite and on PostgreSQL: schema, idempotent upserts, reads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from regimes.config.spec import FIXED_FEATURES
from regimes.data import sql as db
from regimes.data.synth import content_sha256
from regimes.errors import BadInputError, StoreError, UnsafeNameError

pytestmark = pytest.mark.integration


def _bars(symbol="SYN000", timeframe="5m", count=12, start="2024-01-02 14:30", gap_at=()):
    ts = pd.date_range(start, periods=count, freq="5min", tz="UTC")
    close = 50.0 + np.arange(count) * 0.25
    frame = pd.DataFrame(
        {
            "symbol": symbol,
            "timeframe": timeframe,
            "ts": ts,
            "open": close - 0.1,
            "high": close + 0.3,
            "low": close - 0.3,
            "close": close,
            "volume": np.arange(count) * 10.0,
            "is_gap": False,
        }
    )
    for position in gap_at:
        frame.loc[position, ["open", "high", "low", "close"]] = np.nan
        frame.loc[position, ["volume", "is_gap"]] = (0.0, True)
    return frame


def _table(engine, name: str) -> pd.DataFrame:
    return db.read_bars(engine) if name == "bars" else db.read_features(engine)


def test_schema_creation_is_idempotent(engine):
    db.create_schema(engine)
    db.create_schema(engine)
    assert db.count_rows(engine, "bars") == 0
    assert db.count_rows(engine, "current_states") == 0


def test_upserting_the_same_bars_twice_changes_nothing(engine):
    frame = _bars(gap_at=[3])
    assert db.upsert_bars(engine, frame) == 12
    first = db.read_bars(engine)
    db.upsert_bars(engine, frame)
    second = db.read_bars(engine)
    assert len(second) == 12
    pd.testing.assert_frame_equal(first, second)
    pd.testing.assert_frame_equal(second, frame, check_dtype=False)
    assert content_sha256(first, db.BAR_COLUMNS) == content_sha256(second, db.BAR_COLUMNS)


def test_gap_rows_round_trip_as_nan_prices(engine):
    db.upsert_bars(engine, _bars(gap_at=[0, 5]))
    stored = db.read_bars(engine)
    assert stored["is_gap"].tolist().count(True) == 2
    assert stored.loc[stored["is_gap"], ["open", "high", "low", "close"]].isna().all().all()
    assert stored.loc[~stored["is_gap"], "close"].notna().all()


def test_upsert_replaces_changed_rows_and_keeps_the_rest(engine):
    db.upsert_bars(engine, _bars())
    corrected = _bars().iloc[[4]].copy()
    corrected["close"] = corrected["high"]
    db.upsert_bars(engine, corrected)
    stored = db.read_bars(engine)
    assert len(stored) == 12
    assert stored.loc[4, "close"] == corrected["close"].iloc[0]
    assert stored.loc[3, "close"] == _bars().loc[3, "close"]


def test_reads_filter_by_symbol_timeframe_and_half_open_range(engine):
    db.upsert_bars(engine, pd.concat([_bars("AAA"), _bars("BBB"), _bars("AAA", "15m")]))
    window = db.read_bars(engine, "5m", ["AAA"], "2024-01-02T14:40:00Z", "2024-01-02T15:00:00Z")
    assert window["ts"].dt.strftime("%H:%M").tolist() == ["14:40", "14:45", "14:50", "14:55"]
    assert set(window["symbol"]) == {"AAA"} and set(window["timeframe"]) == {"5m"}
    assert str(window["ts"].dt.tz) == "UTC"
    assert db.list_symbols(engine, "5m") == ["AAA", "BBB"]
    assert len(db.read_bars(engine, "15m", "AAA")) == 12
    summary = db.bars_summary(engine)
    assert summary[["symbol", "timeframe", "bars"]].values.tolist() == [
        ["AAA", "15m", 12],
        ["AAA", "5m", 12],
        ["BBB", "5m", 12],
    ]
    with pytest.raises(BadInputError, match="timezone-aware"):
        db.read_bars(engine, "5m", start="2024-01-02 14:40")
    with pytest.raises(UnsafeNameError):
        db.read_bars(engine, "5m", symbols=["../x"])


def test_a_failing_batch_writes_nothing(engine):
    db.upsert_bars(engine, _bars(count=3))
    before = db.read_bars(engine)
    bad = _bars(start="2024-01-03 14:30")
    bad.loc[7, "volume"] = np.nan  # volume is NOT NULL: the database refuses row 8
    with pytest.raises(StoreError, match="nothing was written"):
        db.upsert_bars(engine, bad)
    pd.testing.assert_frame_equal(db.read_bars(engine), before)


def test_naive_timestamps_and_unknown_columns_are_refused(engine):
    naive = _bars()
    naive["ts"] = naive["ts"].dt.tz_localize(None)
    with pytest.raises(BadInputError, match="timezone-aware UTC"):
        db.upsert_bars(engine, naive)
    with pytest.raises(BadInputError, match="missing column"):
        db.upsert_bars(engine, _bars().drop(columns=["volume"]))
    with pytest.raises(BadInputError, match="unknown timeframe"):
        db.upsert_bars(engine, _bars(timeframe="2h"))
    assert db.count_rows(engine, "bars") == 0


def test_features_upsert_and_load(engine):
    keys = _bars()[["symbol", "timeframe", "ts"]]
    frame = keys.assign(
        clv=np.linspace(-1, 1, 12), r5=np.r_[np.nan, np.ones(11)], is_warmup=[True] + [False] * 11
    )
    assert db.upsert_features(engine, frame, feature_spec_version=1) == 12
    db.upsert_features(engine, frame, feature_spec_version=1)
    stored = db.read_features(engine, "5m", "SYN000")
    assert len(stored) == 12 and list(stored.columns[3:24]) == list(FIXED_FEATURES)
    np.testing.assert_allclose(stored["clv"], frame["clv"])
    assert np.isnan(stored.loc[0, "r5"]) and stored.loc[0, "is_warmup"]
    assert stored["rv_60"].isna().all() and (stored["feature_spec_version"] == 1).all()
    only = db.read_features(engine, "5m", features=["clv"])
    assert list(only.columns) == [
        "symbol",
        "timeframe",
        "ts",
        "clv",
        "is_warmup",
        "is_gap",
        "feature_spec_version",
        "feature_spec_sha256",
    ]
    with pytest.raises(BadInputError, match="unknown feature"):
        db.read_features(engine, features=["rsi"])
    with pytest.raises(BadInputError, match="unknown feature column"):
        db.upsert_features(engine, frame.assign(rsi=1.0), feature_spec_version=1)


def test_current_states_keep_the_latest_state(engine):
    ts = pd.date_range("2024-01-02 14:30", periods=3, freq="1min", tz="UTC")
    rows = pd.DataFrame(
        {
            "symbol": "AAA",
            "timeframe": "1m",
            "model_id": "m1",
            "ts": ts,
            "state_id": [0, 1, 2],
            "state_prob": [0.9, 0.8, 0.7],
            "is_unknown": False,
        }
    )
    db.upsert_current_states(engine, rows)
    db.upsert_current_states(engine, rows.iloc[[0]])  # an older row never wins
    state = db.read_current_states(engine)
    assert len(state) == 1 and state.loc[0, "state_id"] == 2
    assert state.loc[0, "ts"] == ts[-1] and str(state["updated_at"].dt.tz) == "UTC"


def test_bad_urls_are_store_errors():
    with pytest.raises(StoreError, match="not a valid SQLAlchemy URL"):
        db.make_engine("not a url")
    with pytest.raises(StoreError, match="cannot use database URL"):
        db.make_engine("nosuchdialect://x/y")


def test_a_batch_repeating_a_key_is_refused(engine):
    frame = pd.concat([_bars(count=3), _bars(count=1)])
    with pytest.raises(BadInputError, match=r"row 4 repeats the key \(symbol=SYN000"):
        db.upsert_bars(engine, frame)
    assert db.count_rows(engine, "bars") == 0


def test_rewrite_replaces_what_a_producer_owns_in_one_transaction(engine):
    db.upsert_bars(
        engine,
        pd.concat(
            [
                _bars("AAA", "5m"),
                _bars("AAA", "1h"),
                _bars("BBB", "1h"),
                _bars("AAA", "1m", gap_at=[2]),
            ]
        ),
    )
    replacement = _bars("AAA", "1h", count=4)
    db.rewrite_bars(engine, replacement, ["AAA"], timeframes=["1h", "5m"], gap_rows_of=["1m"])
    summary = db.bars_summary(engine).set_index(["symbol", "timeframe"])["bars"].to_dict()
    assert summary == {("AAA", "1h"): 4, ("AAA", "1m"): 11, ("BBB", "1h"): 12}
    before = db.read_bars(engine)
    broken = _bars("AAA", "1h", count=2)
    broken.loc[1, "volume"] = np.nan
    with pytest.raises(StoreError):
        db.rewrite_bars(engine, broken, ["AAA"], timeframes=["1h", "1m"])
    pd.testing.assert_frame_equal(db.read_bars(engine), before)  # the deletes rolled back too


def test_current_states_compare_timestamps_inside_the_upsert(engine):
    ts = pd.Timestamp("2024-01-02 15:00", tz="UTC")
    row = pd.DataFrame(
        {
            "symbol": ["AAA"],
            "timeframe": ["1m"],
            "model_id": ["m1"],
            "ts": [ts],
            "state_id": [3],
            "state_prob": [0.9],
            "is_unknown": [False],
        }
    )
    db.upsert_current_states(engine, row)
    older = row.assign(ts=ts - pd.Timedelta(minutes=5), state_id=1)
    db.upsert_current_states(engine, older)
    assert db.read_current_states(engine)["state_id"].tolist() == [3]
    newer = row.assign(ts=ts + pd.Timedelta(minutes=1), state_id=2)
    db.upsert_current_states(engine, newer)
    assert db.read_current_states(engine)["state_id"].tolist() == [2]


def test_passwords_never_appear_in_messages():
    with pytest.raises(StoreError) as info:
        db.make_engine("mysql://user:s3cret@localhost/x")
    assert "s3cret" not in str(info.value) and "***" in str(info.value)
    assert db.mask_url("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
