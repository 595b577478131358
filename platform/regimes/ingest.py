"""OHLCV ingest from CSV or Parquet, with row-level validation.

A file is checked whole before anything is written. Bad rows are reported by row
number (and CSV line number); by default any bad row refuses the whole file and the
database is left untouched. With ``drop_bad=True`` the good rows are written and the
dropped ones reported. Rows out of time order are sorted and reported, not refused.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from regimes import db
from regimes.errors import BadInputError
from regimes.paths import check_symbol
from regimes.timeframes import check_timeframe

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS: tuple[str, ...] = ("ts", "open", "high", "low", "close", "volume")
TS_ALIASES: tuple[str, ...] = ("timestamp", "datetime", "date", "time")
MAX_LISTED_PROBLEMS = 10


@dataclass(frozen=True)
class RowProblem:
    """A refused row: its 1-based position in the file's data rows and what is wrong."""

    row: int
    reason: str


@dataclass
class IngestReport:
    file: str
    symbol: str
    timeframe: str
    rows_read: int
    rows_written: int = 0
    reordered_rows: int = 0
    dropped: list[RowProblem] = field(default_factory=list)
    first_ts: str | None = None
    last_ts: str | None = None

    def as_dict(self) -> dict:
        return {
            "file": self.file,
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "rows_read": self.rows_read,
            "rows_written": self.rows_written,
            "reordered_rows": self.reordered_rows,
            "dropped_rows": [{"row": p.row, "reason": p.reason} for p in self.dropped],
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
        }


def _where(path: Path, row: int) -> str:
    # CSV line numbers count the header line; Parquet has rows only.
    if path.suffix.lower() == ".csv":
        return f"row {row} (line {row + 1})"
    return f"row {row}"


def describe_problems(path: Path, problems: Sequence[RowProblem]) -> str:
    listed = "; ".join(f"{_where(path, p.row)}: {p.reason}" for p in problems[:MAX_LISTED_PROBLEMS])
    more = len(problems) - MAX_LISTED_PROBLEMS
    return listed + (f"; and {more} more" if more > 0 else "")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file as raw columns (nothing parsed yet)."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
            if frame.index.name and frame.index.name.lower() in ("ts", *TS_ALIASES):
                frame = frame.reset_index()
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
    return frame


def _parse_ts(raw: pd.Series, tz: str) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(raw):
        parsed = raw
    else:
        text = raw.astype(str).str.strip()
        parsed = pd.to_datetime(text, errors="coerce", utc=True, format="mixed")
        naive_text = ~text.str.contains(r"(?:Z|[+-]\d{2}:?\d{2})$", regex=True)
        if naive_text.any() and tz != "UTC":
            # Naive text was read as UTC above; reinterpret those rows in the given zone.
            local = pd.to_datetime(text[naive_text], errors="coerce", format="mixed")
            parsed.loc[naive_text] = local.dt.tz_localize(
                tz, ambiguous="NaT", nonexistent="NaT"
            ).dt.tz_convert("UTC")
        return parsed
    if parsed.dt.tz is None:
        return parsed.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
    return parsed.dt.tz_convert("UTC")


def validate_bars(
    raw: pd.DataFrame, path: str | Path, symbol: str, timeframe: str, tz: str = "UTC"
) -> tuple[pd.DataFrame, list[RowProblem], int]:
    """Check every row of ``raw``.

    Returns the good rows as a ``bars`` frame sorted by ts, the problems found (by
    1-based data row), and how many rows were out of time order.
    """
    path = Path(path)
    check_symbol(symbol)
    check_timeframe(timeframe)
    n = len(raw)
    rows = np.arange(1, n + 1)
    reasons: list[list[str]] = [[] for _ in range(n)]

    def flag(mask: np.ndarray, reason: str) -> None:
        for position in np.flatnonzero(mask):
            reasons[position].append(reason)

    try:
        ts = _parse_ts(raw["ts"], tz)
    except Exception as exc:  # e.g. an unknown --tz
        raise BadInputError(f"{path}: column ts: cannot interpret timestamps ({exc})") from None
    flag(ts.isna().to_numpy(), "unparsable or missing timestamp in column ts")
    if timeframe != "1d":
        offgrid = ts.notna() & ((ts.dt.second != 0) | (ts.dt.microsecond != 0))
        flag(offgrid.to_numpy(), "ts is not on a whole minute (not a bar open time)")

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

    duplicated = ts.notna() & ts.duplicated(keep="first")
    if duplicated.any():
        first_row = pd.Series(rows, index=ts.index).groupby(ts).transform("first")
        for position in np.flatnonzero(duplicated.to_numpy()):
            reasons[position].append(
                f"duplicate timestamp {ts.iloc[position].isoformat()} (first at row "
                f"{int(first_row.iloc[position])})"
            )

    problems = [RowProblem(int(rows[i]), ", ".join(r)) for i, r in enumerate(reasons) if r]
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
    return frame, problems, reordered


def ingest_file(
    engine,
    path: str | Path,
    symbol: str,
    timeframe: str,
    *,
    drop_bad: bool = False,
    tz: str = "UTC",
) -> IngestReport:
    """Validate ``path`` and upsert its bars in one transaction.

    Raises
    ------
    BadInputError
        When any row is bad and ``drop_bad`` is False (nothing is written), or when
        the file itself cannot be used.
    """
    path = Path(path)
    check_symbol(symbol)
    check_timeframe(timeframe)
    raw = read_table(path)
    frame, problems, reordered = validate_bars(raw, path, symbol, timeframe, tz)
    if problems and not drop_bad:
        raise BadInputError(
            f"{path}: {len(problems)} bad row(s), nothing written "
            f"(use --drop-bad to write the good rows): {describe_problems(path, problems)}"
        )
    if frame.empty:
        raise BadInputError(f"{path}: no valid rows to write; {describe_problems(path, problems)}")
    report = IngestReport(
        file=str(path),
        symbol=symbol,
        timeframe=timeframe,
        rows_read=len(raw),
        reordered_rows=reordered,
        dropped=problems,
    )
    db.create_schema(engine)
    report.rows_written = db.upsert_bars(engine, frame)
    report.first_ts = frame["ts"].iloc[0].isoformat()
    report.last_ts = frame["ts"].iloc[-1].isoformat()
    if reordered:
        logger.warning("%s: %d row(s) were out of time order and were sorted", path, reordered)
    return report
