"""OHLCV ingest: every bad input is refused with the rows named, and nothing is written."""

from __future__ import annotations

import pandas as pd
import pytest

from regimes import db
from regimes.errors import BadInputError, UnsafeNameError
from regimes.ingest import ingest_file

pytestmark = pytest.mark.integration

HEADER = "ts,open,high,low,close,volume\n"
GOOD_ROWS = [
    "2024-01-02T14:30:00Z,10,11,9,10.5,100",
    "2024-01-02T14:31:00Z,10.5,11,10,10.8,120",
    "2024-01-02T14:32:00Z,10.8,11.2,10.6,11,90",
    "2024-01-02T14:33:00Z,11,11.5,10.9,11.4,0",
]


def _csv(tmp_path, rows, header=HEADER, name="bars.csv"):
    path = tmp_path / name
    path.write_text(header + "\n".join(rows) + "\n")
    return path


@pytest.fixture
def seeded(engine):
    """A database that already holds bars: refused ingests must leave them exactly."""
    existing = pd.DataFrame(
        {
            "symbol": "OLD",
            "timeframe": "1m",
            "ts": pd.date_range("2024-01-01 14:30", periods=3, freq="1min", tz="UTC"),
            "open": 5.0,
            "high": 6.0,
            "low": 4.0,
            "close": 5.5,
            "volume": 1.0,
            "is_gap": False,
        }
    )
    db.upsert_bars(engine, existing)
    return engine, db.read_bars(engine)


def _unchanged(engine, before):
    pd.testing.assert_frame_equal(db.read_bars(engine), before)


def test_a_good_csv_is_written(seeded, tmp_path):
    engine, _ = seeded
    report = ingest_file(engine, _csv(tmp_path, GOOD_ROWS), "ABC", "1m")
    assert report.rows_written == 4 and report.dropped == [] and report.reordered_rows == 0
    stored = db.read_bars(engine, "1m", "ABC")
    assert stored["close"].tolist() == [10.5, 10.8, 11.0, 11.4]
    assert str(stored["ts"].dt.tz) == "UTC"
    again = ingest_file(engine, _csv(tmp_path, GOOD_ROWS), "ABC", "1m")
    assert again.rows_written == 4
    pd.testing.assert_frame_equal(db.read_bars(engine, "1m", "ABC"), stored)


@pytest.mark.parametrize(
    "row_index, replacement, expected",
    [
        (1, "not-a-time,10.5,11,10,10.8,120", "row 2 (line 3): unparsable or missing timestamp"),
        (1, ",10.5,11,10,10.8,120", "row 2 (line 3): unparsable or missing timestamp"),
        (
            2,
            "2024-01-02T14:31:00Z,10.8,11.2,10.6,11,90",
            "row 3 (line 4): duplicate timestamp 2024-01-02T14:31:00+00:00 (first at row 2)",
        ),
        (
            0,
            "2024-01-02T14:30:00Z,NaN,11,9,10.5,100",
            "row 1 (line 2): open is missing, not a number",
        ),
        (
            3,
            "2024-01-02T14:33:00Z,11,inf,10.9,11.4,0",
            "row 4 (line 5): high is missing, not a number",
        ),
        (
            3,
            "2024-01-02T14:33:00Z,11,11.5,10.9,abc,0",
            "row 4 (line 5): close is missing, not a number",
        ),
        (2, "2024-01-02T14:32:00Z,10.8,11.2,10.6,11,", "row 3 (line 4): volume is missing"),
        (1, "2024-01-02T14:31:00Z,10.5,11,0,10.8,120", "row 2 (line 3): low must be > 0"),
        (1, "2024-01-02T14:31:00Z,-1,11,10,10.8,120", "row 2 (line 3): open must be > 0"),
        (1, "2024-01-02T14:31:00Z,10.5,9,10,9.5,120", "row 2 (line 3): high < low"),
        (1, "2024-01-02T14:31:00Z,12,11,10,10.8,120", "row 2 (line 3): open outside [low, high]"),
        (1, "2024-01-02T14:31:00Z,10.5,11,10,9.9,120", "row 2 (line 3): close outside [low, high]"),
        (3, "2024-01-02T14:33:00Z,11,11.5,10.9,11.4,-5", "row 4 (line 5): volume must be >= 0"),
        (
            1,
            "2024-01-02T14:31:30Z,10.5,11,10,10.8,120",
            "row 2 (line 3): ts is not on a whole minute",
        ),
    ],
)
def test_bad_rows_refuse_the_file_and_write_nothing(
    seeded, tmp_path, row_index, replacement, expected
):
    engine, before = seeded
    rows = list(GOOD_ROWS)
    rows[row_index] = replacement
    path = _csv(tmp_path, rows)
    with pytest.raises(BadInputError) as info:
        ingest_file(engine, path, "ABC", "1m")
    message = str(info.value)
    assert str(path) in message and "nothing written" in message and expected in message, message
    _unchanged(engine, before)


def test_many_bad_rows_are_listed_with_a_count(seeded, tmp_path):
    engine, before = seeded
    rows = [f"2024-01-02T15:{m:02d}:00Z,10,9,11,10,1" for m in range(25)]  # all high < low
    with pytest.raises(BadInputError, match=r"25 bad row\(s\).*row 1 \(line 2\).*and 15 more"):
        ingest_file(engine, _csv(tmp_path, rows), "ABC", "1m")
    _unchanged(engine, before)


@pytest.mark.parametrize(
    "header, rows, expected",
    [
        (
            "ts,open,high,low,close\n",
            ["2024-01-02T14:30:00Z,10,11,9,10.5"],
            "missing column(s) ['volume']",
        ),
        ("when,o,h,l,c,v\n", ["2024-01-02T14:30:00Z,10,11,9,10.5,1"], "missing column(s)"),
        (HEADER, [], "no data rows"),
        ("", [], "the file is empty"),
    ],
)
def test_unusable_files_are_refused(seeded, tmp_path, header, rows, expected):
    engine, before = seeded
    path = tmp_path / "bars.csv"
    path.write_text(header + "\n".join(rows))
    with pytest.raises(
        BadInputError,
        match=expected.replace("(", r"\(")
        .replace(")", r"\)")
        .replace("[", r"\[")
        .replace("]", r"\]"),
    ):
        ingest_file(engine, path, "ABC", "1m")
    _unchanged(engine, before)


def test_missing_and_unsupported_files(seeded, tmp_path):
    engine, before = seeded
    with pytest.raises(BadInputError, match="file not found"):
        ingest_file(engine, tmp_path / "absent.csv", "ABC", "1m")
    other = tmp_path / "bars.xlsx"
    other.write_text("x")
    with pytest.raises(BadInputError, match="unsupported file type '.xlsx'"):
        ingest_file(engine, other, "ABC", "1m")
    broken = tmp_path / "bars.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(BadInputError, match="cannot read as parquet"):
        ingest_file(engine, broken, "ABC", "1m")
    _unchanged(engine, before)


@pytest.mark.parametrize("symbol", ["../etc", "A/B", "", "A" * 65, "a\x00b", ".."])
def test_unsafe_symbol_names_are_refused(seeded, tmp_path, symbol):
    engine, before = seeded
    with pytest.raises(UnsafeNameError, match="symbol"):
        ingest_file(engine, _csv(tmp_path, GOOD_ROWS), symbol, "1m")
    _unchanged(engine, before)


@pytest.mark.parametrize("timeframe", ["2h", "1M", "", "../1m"])
def test_unknown_timeframes_are_refused(seeded, tmp_path, timeframe):
    engine, before = seeded
    with pytest.raises(BadInputError, match="unknown timeframe"):
        ingest_file(engine, _csv(tmp_path, GOOD_ROWS), "ABC", timeframe)
    _unchanged(engine, before)


def test_out_of_order_rows_are_sorted_and_reported(seeded, tmp_path):
    engine, _ = seeded
    rows = [GOOD_ROWS[2], GOOD_ROWS[0], GOOD_ROWS[3], GOOD_ROWS[1]]
    report = ingest_file(engine, _csv(tmp_path, rows), "ABC", "1m")
    assert report.reordered_rows == 2 and report.rows_written == 4
    stored = db.read_bars(engine, "1m", "ABC")
    assert stored["ts"].is_monotonic_increasing and len(stored) == 4


def test_drop_bad_writes_the_good_rows_and_reports_the_rest(seeded, tmp_path):
    engine, _ = seeded
    rows = list(GOOD_ROWS) + ["2024-01-02T14:34:00Z,11,10,12,11,5", "garbage,1,1,1,1,1"]
    report = ingest_file(engine, _csv(tmp_path, rows), "ABC", "1m", drop_bad=True)
    assert report.rows_written == 4
    assert [(p.row, p.reason) for p in report.dropped] == [
        (5, "high < low"),
        (6, "unparsable or missing timestamp in column ts"),
    ]
    assert len(db.read_bars(engine, "1m", "ABC")) == 4


def test_parquet_timezones_and_aliases(seeded, tmp_path):
    engine, _ = seeded
    frame = pd.DataFrame(
        {
            "Date": pd.date_range("2024-01-02", periods=3, freq="D"),
            "Open": [10.0, 11.0, 12.0],
            "High": [11.0, 12.0, 13.0],
            "Low": [9.0, 10.0, 11.0],
            "Close": [10.5, 11.5, 12.5],
            "Volume": [1e6, 2e6, 3e6],
        }
    ).set_index("Date")
    path = tmp_path / "daily.parquet"
    frame.to_parquet(path)
    report = ingest_file(engine, path, "^GSPC", "1d")
    assert report.rows_written == 3
    stored = db.read_bars(engine, "1d", "^GSPC")
    assert stored["ts"].iloc[0] == pd.Timestamp("2024-01-02", tz="UTC")
    # Naive text timestamps in another zone are converted to UTC.
    path = _csv(tmp_path, ["2024-07-01 09:30:00,10,11,9,10.5,100"], name="ny.csv")
    ingest_file(engine, path, "NY", "1m", tz="America/New_York")
    assert db.read_bars(engine, "1m", "NY")["ts"].iloc[0] == pd.Timestamp(
        "2024-07-01 13:30", tz="UTC"
    )
