"""OHLCV ingest from CSV or Parquet, with row-level validation.

A file is checked whole before anything is written. Bad rows are reported by data row
(and CSV line) number; by default any bad row refuses the whole file and the database is
left untouched. With ``drop_bad=True`` the good rows are written and the dropped ones
reported. Rows out of time order are sorted and reported, not refused.

Timestamps: ISO 8601 text (with or without an offset), another single format given as
``ts_format`` (or inferred from the first value when it fits every row), epoch numbers
(seconds, milliseconds, microseconds or nanoseconds, told apart by magnitude), or native
datetime columns. Text without an offset is wall-clock time in ``tz`` (default UTC).
A file never gets a format per row: day-first and month-first dates are not mixed.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from regimes.config.timeframes import Session
from regimes.data import sql as db
from regimes.data.bars import bin_open_times, session_open_utc
from regimes.data.calendars import MarketCalendar
from regimes.errors import BadInputError
from regimes.paths import check_symbol
from regimes.timeframes import check_timeframe

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS: tuple[str, ...] = ("ts", "open", "high", "low", "close", "volume")
TS_ALIASES: tuple[str, ...] = ("timestamp", "datetime", "date", "time")
MAX_LISTED_PROBLEMS = 10
_HAS_ZONE = re.compile(
    r"\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:[zZ]|UTC|GMT|[+-]\d{2}(?::?\d{2})?)$"
)
_NUMERIC = re.compile(r"^[+-]?\d+(?:\.\d+)?$")


@dataclass(frozen=True)
class RowProblem:
    """A refused row: its 1-based position among the file's data rows and what is wrong."""

    row: int
    reason: str
    line: int | None = None


@dataclass
class IngestReport:
    file: str
    symbol: str
    timeframe: str
    rows_read: int
    rows_written: int = 0
    reordered_rows: int = 0
    moved_to_session_open: int = 0
    dropped: list[RowProblem] = field(default_factory=list)
    first_ts: str | None = None
    last_ts: str | None = None
    market: str | None = None
    """The market recorded for the symbol (``--market``), if one was given."""

    def as_dict(self) -> dict:
        extra = {} if self.market is None else {"market": self.market}
        return {
            **extra,
            "file": self.file,
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "rows_read": self.rows_read,
            "rows_written": self.rows_written,
            "reordered_rows": self.reordered_rows,
            "moved_to_session_open": self.moved_to_session_open,
            "dropped_rows": [
                {"row": p.row, "line": p.line, "reason": p.reason} for p in self.dropped
            ],
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
        }


def _where(problem: RowProblem) -> str:
    if problem.line is not None:
        return f"row {problem.row} (line {problem.line})"
    return f"row {problem.row}"


def describe_problems(problems: Sequence[RowProblem]) -> str:
    listed = "; ".join(f"{_where(p)}: {p.reason}" for p in problems[:MAX_LISTED_PROBLEMS])
    more = len(problems) - MAX_LISTED_PROBLEMS
    return listed + (f"; and {more} more" if more > 0 else "")


@dataclass(frozen=True)
class RawTable:
    """A file's columns as read, with the file line of each data row (CSV only)."""

    frame: pd.DataFrame
    lines: np.ndarray | None


def read_table(path: str | Path) -> RawTable:
    """Read a CSV or Parquet file as raw columns (nothing parsed yet)."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: file not found")
    suffix = path.suffix.lower()
    lines = None
    try:
        if suffix == ".csv":
            frame = pd.read_csv(
                path,
                dtype=str,
                keep_default_na=False,
                skipinitialspace=True,
                skip_blank_lines=False,
            )
            # Line numbers count the header as line 1; blank lines are kept by the reader
            # so numbering stays true, then dropped.
            lines = np.arange(len(frame)) + 2
            blank = (frame.apply(lambda column: column.str.strip()) == "").all(axis=1)
            frame, lines = frame.loc[~blank].reset_index(drop=True), lines[~blank.to_numpy()]
            if frame.apply(lambda column: column.str.contains("\n", regex=False)).any().any():
                lines = None  # quoted multi-line fields: line numbers would mislead
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
            if isinstance(frame.index, pd.DatetimeIndex) or (
                frame.index.name and str(frame.index.name).lower() in ("ts", *TS_ALIASES)
            ):
                frame = frame.reset_index(names=frame.index.name or "ts")
        else:
            raise BadInputError(
                f"{path}: unsupported file type {suffix!r}; expected .csv or .parquet"
            )
    except BadInputError:
        raise
    except pd.errors.EmptyDataError:
        raise BadInputError(f"{path}: the file is empty") from None
    except Exception as exc:  # the readers raise many types for a malformed file
        raise BadInputError(f"{path}: cannot read as {suffix[1:]}: {exc}") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    if "ts" not in frame.columns:
        if "date" in frame.columns and "time" in frame.columns:
            frame["ts"] = (
                frame["date"].astype(str).str.strip() + " " + frame["time"].astype(str).str.strip()
            )
        else:
            for alias in TS_ALIASES:
                if alias in frame.columns:
                    frame = frame.rename(columns={alias: "ts"})
                    break
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise BadInputError(
            f"{path}: missing column(s) {missing}; expected columns {list(REQUIRED_COLUMNS)}"
        )
    if frame.empty:
        raise BadInputError(f"{path}: no data rows")
    return RawTable(frame.reset_index(drop=True), lines)


def check_zone(tz: str) -> str:
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadInputError(
            f"--tz: unknown time zone {tz!r}; expected an IANA name such as UTC or America/New_York"
        ) from None
    return tz


@dataclass
class ParsedTimes:
    """UTC instants, plus the wall-clock value as written for rows without an offset."""

    utc: pd.Series
    wall: pd.Series
    reasons: pd.Series


def _localize(wall: pd.Series, tz: str) -> tuple[pd.Series, pd.Series]:
    """Wall-clock naive values in ``tz`` to UTC; DST-ambiguous or skipped times -> NaT."""
    localized = wall.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
    dst = wall.notna() & localized.isna()
    return localized, dst


def _epoch(numbers: pd.Series) -> pd.Series:
    magnitude = float(np.nanmax(np.abs(numbers.to_numpy(dtype=float)))) if len(numbers) else 0.0
    unit = (
        "ns"
        if magnitude >= 1e17
        else "us"
        if magnitude >= 1e14
        else "ms"
        if magnitude >= 1e11
        else "s"
    )
    return pd.to_datetime(numbers, unit=unit, utc=True, errors="coerce")


def parse_timestamps(raw: pd.Series, tz: str = "UTC", ts_format: str | None = None) -> ParsedTimes:
    """Parse a timestamp column with one rule for the whole file (see the module doc)."""
    check_zone(tz)
    n = len(raw)
    reasons = pd.Series([""] * n, index=raw.index, dtype=object)
    unparsable = "unparsable or missing timestamp in column ts"
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        utc = _epoch(raw)
        reasons[utc.isna()] = unparsable
        return ParsedTimes(utc, pd.Series(pd.NaT, index=raw.index), reasons)
    if pd.api.types.is_datetime64_any_dtype(raw):
        if raw.dt.tz is not None:
            return ParsedTimes(
                raw.dt.tz_convert("UTC"), pd.Series(pd.NaT, index=raw.index), reasons
            )
        utc, dst = _localize(raw, tz)
        reasons[raw.isna()] = unparsable
        reasons[dst] = f"ambiguous or non-existent local time in {tz} (daylight-saving change)"
        return ParsedTimes(utc, raw, reasons)

    text = raw.astype(str).str.strip()
    filled = text != ""
    if filled.any() and text[filled].str.match(_NUMERIC).all():
        utc = _epoch(pd.to_numeric(text.where(filled), errors="coerce"))
        reasons[utc.isna()] = unparsable
        return ParsedTimes(utc, pd.Series(pd.NaT, index=raw.index), reasons)

    zoned = text.str.contains(_HAS_ZONE)
    utc = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns, UTC]")
    wall = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns]")

    def parse(values: pd.Series, with_zone: bool) -> pd.Series:
        options = {"errors": "coerce", "utc": with_zone}
        if ts_format:
            return pd.to_datetime(values, format=ts_format, **options)
        iso = pd.to_datetime(values, format="ISO8601", **options)
        if iso.isna().sum() < values.str.len().gt(0).sum():
            with warnings.catch_warnings():
                warnings.simplefilter("error", UserWarning)
                try:
                    # One format, inferred from the first value, applied to every row.
                    inferred = pd.to_datetime(values, **options)
                except (UserWarning, ValueError):
                    return iso
            if inferred.notna().sum() > iso.notna().sum():
                return inferred
        return iso

    if zoned.any():
        # "... UTC", "... GMT" and "...z" name the zero offset: spell it the ISO way.
        spelled = text[zoned].str.replace(r"\s*(?:UTC|GMT|[zZ])$", "+00:00", regex=True)
        utc[zoned] = parse(spelled, with_zone=True)
    naive = ~zoned & filled
    if naive.any():
        parsed = parse(text[naive], with_zone=False)
        if getattr(parsed.dt, "tz", None) is not None:  # a --ts-format with %z
            utc[naive] = parsed.dt.tz_convert("UTC")
        else:
            wall[naive] = parsed
            localized, dst = _localize(parsed, tz)
            utc[naive] = localized
            reasons[naive & dst.reindex(raw.index, fill_value=False)] = (
                f"ambiguous or non-existent local time in {tz} (daylight-saving change)"
            )
    reasons[utc.isna() & (reasons == "")] = unparsable + (
        f" (expected format {ts_format!r})" if ts_format else ""
    )
    return ParsedTimes(utc, wall, reasons)


def _session_text(session: Session | MarketCalendar | None) -> str:
    if isinstance(session, MarketCalendar):
        return f"the trading day's open ({session.hours()})"
    if session is None:
        return "midnight UTC"
    return f"the session open {session.open:%H:%M} {session.timezone}"


def align_daily(parsed: ParsedTimes, session: Session | None) -> tuple[pd.Series, pd.Series, str]:
    """Map 1d rows to their bar open time: the session open of the row's trading day.

    A row may give the date alone (midnight) or the session open; anything else is a
    problem. Returns the new UTC ts, a mask of rows moved from midnight, and a reason
    for the rows that fit neither.
    """
    if isinstance(session, MarketCalendar):
        return _align_daily_market(parsed, session)
    local_wall = parsed.wall.copy()
    aware = local_wall.isna() & parsed.utc.notna()
    if aware.any():
        zone = session.timezone if session is not None else "UTC"
        local_wall[aware] = parsed.utc[aware].dt.tz_convert(zone).dt.tz_localize(None)
    days = local_wall.dt.normalize()
    since_midnight = local_wall - days
    open_offset = pd.Timedelta(session.open_offset) if session is not None else pd.Timedelta(0)
    midnight = since_midnight == pd.Timedelta(0)
    at_open = since_midnight == open_offset
    result = pd.Series(pd.NaT, index=parsed.utc.index, dtype="datetime64[ns, UTC]")
    ok = (midnight | at_open) & days.notna()
    if ok.any():
        result[ok] = session_open_utc(pd.DatetimeIndex(days[ok]), session)
    moved = midnight & ~at_open & ok
    reason = f"a 1d bar must be stamped with its date (midnight) or {_session_text(session)}"
    return result, moved, reason


def _align_daily_market(
    parsed: ParsedTimes, calendar: MarketCalendar
) -> tuple[pd.Series, pd.Series, str]:
    """:func:`align_daily` on a market calendar (:meth:`MarketCalendar.place_daily`)."""
    result, moved = calendar.place_daily(parsed.utc, parsed.wall)
    reason = (
        "a 1d bar must be stamped with its trading day's date (midnight) or that day's "
        f"open ({calendar.hours()})"
    )
    return result, moved, reason


def validate_bars(
    table: RawTable,
    path: str | Path,
    symbol: str,
    timeframe: str,
    session: Session | None,
    tz: str = "UTC",
    ts_format: str | None = None,
) -> tuple[pd.DataFrame, list[RowProblem], int, int]:
    """Check every row of ``table``.

    Returns the good rows as a ``bars`` frame sorted by ts, the problems found, how many
    rows were out of time order and how many 1d rows were moved from midnight to the
    session open.
    """
    check_symbol(symbol)
    check_timeframe(timeframe)
    raw = table.frame
    n = len(raw)
    reasons: list[list[str]] = [[] for _ in range(n)]

    def flag(mask, reason: str) -> None:
        for position in np.flatnonzero(np.asarray(mask, dtype=bool)):
            reasons[position].append(reason)

    try:
        parsed = parse_timestamps(raw["ts"], tz, ts_format)
    except BadInputError:
        raise
    except Exception as exc:  # e.g. a malformed --ts-format
        raise BadInputError(f"{path}: column ts: cannot interpret timestamps ({exc})") from None
    for position, reason in enumerate(parsed.reasons.to_numpy()):
        if reason:
            reasons[position].append(reason)
    ts = parsed.utc
    moved = pd.Series(False, index=ts.index)
    if timeframe == "1d":
        daily, moved, reason = align_daily(parsed, session)
        flag((ts.notna() & daily.isna()).to_numpy(), reason)
        ts = daily
    else:
        valid = ts.notna()
        offgrid = valid & ((ts.dt.second != 0) | (ts.dt.microsecond != 0) | (ts.dt.nanosecond != 0))
        flag(offgrid.to_numpy(), "ts is not on a whole minute (not a bar open time)")
        if isinstance(session, MarketCalendar):
            closed = pd.Series(session.closed_mask(ts), index=ts.index) & ~offgrid
            flag(closed.to_numpy(), f"ts is in closed hours ({session.hours()})")
            offgrid = offgrid | closed
        if timeframe != "1m":
            on_grid = ts.where(valid & ~offgrid)
            anchored = bin_open_times(on_grid.dropna(), timeframe, session)
            misaligned = pd.Series(False, index=ts.index)
            misaligned[anchored.index] = (anchored != on_grid.dropna()).to_numpy()
            flag(
                misaligned.to_numpy(),
                f"ts is not a {timeframe} bar open time (bars open every {timeframe} from "
                f"{_session_text(session)})",
            )

    values = {}
    for column in ("open", "high", "low", "close", "volume"):
        numbers = pd.to_numeric(raw[column], errors="coerce").astype(float).to_numpy()
        values[column] = numbers
        flag(~np.isfinite(numbers), f"{column} is missing, not a number, NaN or inf")
    o, h, lo, c, v = (values[k] for k in ("open", "high", "low", "close", "volume"))
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(o) & np.isfinite(h) & np.isfinite(lo) & np.isfinite(c)
        for column, numbers in (("open", o), ("high", h), ("low", lo), ("close", c)):
            flag(np.isfinite(numbers) & (numbers <= 0), f"{column} must be > 0")
        flag(finite & (h < lo), "high < low")
        flag(finite & (h >= lo) & ((o < lo) | (o > h)), "open outside [low, high]")
        flag(finite & (h >= lo) & ((c < lo) | (c > h)), "close outside [low, high]")
        flag(np.isfinite(v) & (v < 0), "volume must be >= 0")

    # Duplicates among rows that are otherwise fine: a bad row never knocks out a good one.
    rows = np.arange(1, n + 1)
    fine = pd.Series([not r for r in reasons], index=ts.index) & ts.notna()
    candidates = ts[fine]
    duplicated = candidates.duplicated(keep="first")
    if duplicated.any():
        first_row = (
            pd.Series(rows[fine.to_numpy()], index=candidates.index)
            .groupby(candidates)
            .transform("first")
        )
        for label in candidates.index[duplicated.to_numpy()]:
            position = ts.index.get_loc(label)
            reasons[position].append(
                f"duplicate timestamp {ts.iloc[position].isoformat()} (first at row "
                f"{int(first_row.loc[label])})"
            )

    lines = table.lines
    problems = [
        RowProblem(int(rows[i]), ", ".join(r), None if lines is None else int(lines[i]))
        for i, r in enumerate(reasons)
        if r
    ]
    good = np.array([not r for r in reasons], dtype=bool)
    frame = pd.DataFrame(
        {
            "symbol": symbol,
            "timeframe": timeframe,
            "ts": ts,
            "open": o,
            "high": h,
            "low": lo,
            "close": c,
            "volume": v,
            "is_gap": False,
        }
    ).loc[good]
    order = frame["ts"].to_numpy()
    reordered = int((order[1:] < order[:-1]).sum()) if len(order) > 1 else 0
    frame = frame.sort_values("ts", kind="stable").reset_index(drop=True)
    return frame, problems, reordered, int(moved[good].sum())


def ingest_file(
    engine,
    path: str | Path,
    symbol: str,
    timeframe: str,
    *,
    session: Session | MarketCalendar | None = None,
    drop_bad: bool = False,
    tz: str = "UTC",
    ts_format: str | None = None,
    market: str | None = None,
) -> IngestReport:
    """Validate ``path`` and upsert its bars in one transaction.

    ``session`` places 1d bars at the session open and defines the grid intraday bars of
    5m and up must sit on (default: no session, midnight UTC anchors). A market calendar
    also refuses bars in its closed hours. ``market`` (its name) is recorded as the
    symbol's market once the bars are written.

    Raises
    ------
    BadInputError
        When any row is bad and ``drop_bad`` is False (nothing is written), or when
        the file itself cannot be used.
    """
    path = Path(path)
    check_symbol(symbol)
    check_timeframe(timeframe)
    check_zone(tz)
    table = read_table(path)
    frame, problems, reordered, moved = validate_bars(
        table, path, symbol, timeframe, session, tz, ts_format
    )
    if problems and not drop_bad:
        raise BadInputError(
            f"{path}: {len(problems)} bad row(s), nothing written "
            f"(use --drop-bad to write the good rows): {describe_problems(problems)}"
        )
    if frame.empty:
        raise BadInputError(f"{path}: no valid rows to write; {describe_problems(problems)}")
    report = IngestReport(
        file=str(path),
        symbol=symbol,
        timeframe=timeframe,
        rows_read=len(table.frame),
        reordered_rows=reordered,
        moved_to_session_open=moved,
        dropped=problems,
        market=market,
    )
    db.create_schema(engine)
    report.rows_written = db.upsert_bars(engine, frame)
    if market is not None:
        db.assign_markets(engine, {symbol: market})
    report.first_ts = frame["ts"].iloc[0].isoformat()
    report.last_ts = frame["ts"].iloc[-1].isoformat()
    if reordered:
        logger.warning("%s: %d row(s) were out of time order and were sorted", path, reordered)
    return report
