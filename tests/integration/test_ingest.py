"""OHLCV ingest: every bad input is refused with the rows named, and nothing is written."""

from __future__ import annotations

import pandas as pd
import pytest

from regimes.data import sql as db
from regimes.data.ingest import ingest_file
from regimes.errors import BadInputError, UnsafeNameError

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


SESSION = (
    __import__("regimes.config.loading", fromlist=["load_timeframes"])
    .load_timeframes(
        __import__("tests.conftest", fromlist=["REPO_ROOT"]).REPO_ROOT
        / "config"
        / "timeframes.yaml"
    )
    .session
)


def test_day_first_dates_are_never_scrambled(seeded, tmp_path):
    engine, before = seeded
    rows = [
        "12/01/2024 14:30,10,11,9,10.5,1",
        "13/01/2024 14:30,10,11,9,10.5,1",
        "14/01/2024 14:30,10,11,9,10.5,1",
    ]
    path = _csv(tmp_path, rows)
    with pytest.raises(BadInputError, match=r"row 2 \(line 3\): unparsable"):
        ingest_file(engine, path, "ABC", "1m")
    _unchanged(engine, before)
    report = ingest_file(engine, path, "ABC", "1m", ts_format="%d/%m/%Y %H:%M")
    assert report.rows_written == 3 and report.reordered_rows == 0
    assert db.read_bars(engine, "1m", "ABC")["ts"].dt.day.tolist() == [12, 13, 14]


def test_zone_suffixes_win_over_tz_and_naive_text_uses_tz(seeded, tmp_path):
    engine, _ = seeded
    rows = [
        "2024-01-02 14:30:00 UTC,10,11,9,10.5,1",
        "2024-01-02T09:31:00-05:00,10,11,9,10.5,1",
        "2024-01-02 09:32:00,10,11,9,10.5,1",
    ]
    ingest_file(engine, _csv(tmp_path, rows), "ABC", "1m", tz="America/New_York")
    stored = db.read_bars(engine, "1m", "ABC")["ts"].dt.strftime("%H:%M").tolist()
    assert stored == ["14:30", "14:31", "14:32"]
    with pytest.raises(BadInputError, match="--tz: unknown time zone 'Mars/Base'"):
        ingest_file(engine, _csv(tmp_path, rows), "ABC", "1m", tz="Mars/Base")
    gap = ["2024-03-10 02:30:00,10,11,9,10.5,1"]  # skipped by the spring-forward change
    with pytest.raises(BadInputError, match="non-existent local time in America/New_York"):
        ingest_file(engine, _csv(tmp_path, gap), "ABC", "1m", tz="America/New_York")


def test_line_numbers_stay_true_with_blank_lines(seeded, tmp_path):
    engine, before = seeded
    path = tmp_path / "blank.csv"
    path.write_text(HEADER + GOOD_ROWS[0] + "\n\n\n" + "2024-01-02T14:31:00Z,10,9,11,10,1\n\n")
    with pytest.raises(BadInputError, match=r"row 2 \(line 5\): high < low"):
        ingest_file(engine, path, "ABC", "1m")
    _unchanged(engine, before)


def test_a_bad_row_never_knocks_out_a_good_duplicate(seeded, tmp_path):
    engine, _ = seeded
    rows = ["2024-01-02T14:30:00Z,10,11,9,99,1", "2024-01-02T14:30:00Z,10,11,9,10.5,1"]
    report = ingest_file(engine, _csv(tmp_path, rows), "ABC", "1m", drop_bad=True)
    assert report.rows_written == 1
    assert [p.reason for p in report.dropped] == ["close outside [low, high]"]
    assert db.read_bars(engine, "1m", "ABC")["close"].tolist() == [10.5]


@pytest.mark.parametrize("scale", [1, 1_000, 1_000_000, 1_000_000_000])
def test_epoch_timestamps_by_magnitude(seeded, tmp_path, scale):
    engine, _ = seeded
    seconds = int(pd.Timestamp("2024-01-02 14:30", tz="UTC").timestamp())
    rows = [f"{(seconds + 60 * i) * scale},10,11,9,10.5,1" for i in range(2)]
    ingest_file(engine, _csv(tmp_path, rows), "ABC", "1m")
    stored = db.read_bars(engine, "1m", "ABC")["ts"]
    assert stored.tolist() == list(
        pd.date_range("2024-01-02 14:30", periods=2, freq="1min", tz="UTC")
    )


def test_epoch_parquet_and_unnamed_datetime_index(seeded, tmp_path):
    engine, _ = seeded
    seconds = int(pd.Timestamp("2024-01-02 14:30", tz="UTC").timestamp())
    frame = pd.DataFrame(
        {
            "ts": [seconds * 1000, (seconds + 60) * 1000],
            "open": 10.0,
            "high": 11.0,
            "low": 9.0,
            "close": 10.0,
            "volume": 5,
        }
    )
    frame.to_parquet(tmp_path / "epoch.parquet")
    assert ingest_file(engine, tmp_path / "epoch.parquet", "EP", "1m").rows_written == 2
    indexed = frame.drop(columns="ts").set_index(
        pd.date_range("2024-01-03 14:30", periods=2, freq="1min", tz="UTC")
    )
    indexed.to_parquet(tmp_path / "indexed.parquet")
    assert ingest_file(engine, tmp_path / "indexed.parquet", "IX", "1m").rows_written == 2


def test_separate_date_and_time_columns_are_combined(seeded, tmp_path):
    engine, _ = seeded
    path = _csv(
        tmp_path,
        ["2024-01-02,14:30,10,11,9,10.5,1", "2024-01-02,14:31,10,11,9,10.5,1"],
        header="date,time,open,high,low,close,volume\n",
    )
    assert ingest_file(engine, path, "ABC", "1m").rows_written == 2
    assert db.read_bars(engine, "1m", "ABC")["ts"].dt.minute.tolist() == [30, 31]


def test_bars_must_sit_on_their_timeframe_grid(seeded, tmp_path):
    engine, before = seeded
    rows = ["2024-01-02T14:30:00Z,10,11,9,10.5,1", "2024-01-02T14:35:00Z,10,11,9,10.5,1"]
    with pytest.raises(
        BadInputError,
        match=r"row 2 \(line 3\): ts is not a 1h bar open time "
        r"\(bars open every 1h from the session open 09:30 America/New_York\)",
    ):
        ingest_file(engine, _csv(tmp_path, rows), "ABC", "1h", session=SESSION)
    nanos = ["2024-01-02 14:30:00.000000001+00:00,10,11,9,10.5,1"]
    with pytest.raises(BadInputError, match="not on a whole minute"):
        ingest_file(engine, _csv(tmp_path, nanos), "ABC", "1m")
    _unchanged(engine, before)
    # 15:30 UTC in January is 10:30 New York: a 1h bar open of the session grid.
    ok = ["2024-01-02T14:30:00Z,10,11,9,10.5,1", "2024-01-02T15:30:00Z,10,11,9,10.5,1"]
    assert ingest_file(engine, _csv(tmp_path, ok), "ABC", "1h", session=SESSION).rows_written == 2


def test_daily_bars_are_placed_at_the_session_open(seeded, tmp_path):
    engine, before = seeded
    rows = [
        "2024-01-02,10,11,9,10.5,1",
        "2024-07-01,10,11,9,10.5,1",
        "2024-07-02 09:30,10,11,9,10.5,1",
    ]
    report = ingest_file(
        engine, _csv(tmp_path, rows), "SPX", "1d", session=SESSION, tz="America/New_York"
    )
    assert report.moved_to_session_open == 2
    stored = db.read_bars(engine, "1d", "SPX")["ts"]
    assert stored.dt.strftime("%m-%d %H:%M").tolist() == [
        "01-02 14:30",
        "07-01 13:30",
        "07-02 13:30",
    ]
    odd = ["2024-01-03 13:17:45,10,11,9,10.5,1"]
    with pytest.raises(BadInputError, match=r"a 1d bar must be stamped with its date"):
        ingest_file(engine, _csv(tmp_path, odd), "SPX", "1d", session=SESSION)
