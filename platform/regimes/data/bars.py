"""Bar alignment, gap marking and resampling (plan task 2.1).

Policy (also in ``docs/data.md``):

* **Alignment.** 1-minute bars are aligned to the session grid of every trading day on
  which the symbol has at least one bar. A minute of that grid with no bar becomes a
  *gap row*: ``is_gap`` True, NULL open/high/low/close, volume 0. Prices are never
  invented. Bars outside the session are not aggregated and are reported.
* **Resampling.** Higher timeframes are anchored at the session open (1h bars open at
  14:30, 15:30, ...; the last bar of a session may be shorter) and the 1d bar opens at
  the session open. ``open`` is the first present minute's open, ``close`` the last
  present minute's close, ``high``/``low`` the extremes, ``volume`` the sum. A bar
  missing more than ``gaps.max_missing_fraction`` of its minutes (config) has ``is_gap``
  True; with no minute present its prices are NULL too.
* **Forward fill** applies to non-price data only (:func:`forward_fill_non_price`), up to
  a stated number of bars; a price column is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from regimes.config.timeframes import Session
from regimes.data import sql as db
from regimes.data.calendars import MarketCalendar
from regimes.data.sql import BAR_COLUMNS, PRICE_COLUMNS
from regimes.errors import BadInputError
from regimes.timeframes import TIMEFRAME_DURATION, TIMEFRAMES, check_timeframe

logger = logging.getLogger(__name__)

ONE_MINUTE = pd.Timedelta(minutes=1)


@dataclass(frozen=True)
class AlignmentReport:
    """What :func:`align_minutes` did to one symbol's 1-minute bars."""

    bars_in: int
    gap_rows_added: int
    outside_session: int
    trading_days: int
    short_days: int = 0
    """Trading days that close early (a market calendar's half days): short, not gaps."""


def _check_frame(frame: pd.DataFrame, what: str) -> None:
    missing = [c for c in BAR_COLUMNS if c not in frame.columns]
    if missing:
        raise BadInputError(f"{what}: missing column(s) {missing}")
    if len(frame) and str(frame["ts"].dt.tz) != "UTC":
        raise BadInputError(f"{what}: ts must be timezone-aware UTC")


def session_minute_of_day(ts_utc, session: Session | None):
    """Local wall-clock minute of the day (0..1439, fractional) of UTC timestamps.

    ``ts_utc`` is a tz-aware pandas Series or DatetimeIndex; returns a numpy array.
    """
    index = pd.DatetimeIndex(ts_utc)
    if session is not None and session.timezone != "UTC":
        index = index.tz_convert(session.timezone)
    return (index.hour * 60 + index.minute + index.second / 60.0).to_numpy(dtype=float)


def session_local_days(ts_utc, session: Session | None):
    """The local calendar day (naive midnight) of each UTC timestamp, as a DatetimeIndex;
    for a market calendar, the trading day (NaT when closed)."""
    if isinstance(session, MarketCalendar):
        return session.trading_day(ts_utc)
    index = pd.DatetimeIndex(ts_utc)
    if session is not None and session.timezone != "UTC":
        index = index.tz_convert(session.timezone)
    return index.tz_localize(None).normalize()


def session_open_utc(local_days, session: Session | None):
    """The UTC open time of the session on each local day (naive midnights).

    Wall-clock arithmetic: 09:30 New York is 09:30 local on a daylight-saving day too.
    """
    days = pd.DatetimeIndex(local_days)
    if isinstance(session, MarketCalendar):
        opens = session.schedule(days.min(), days.max())["open"] if len(days) else None
        if opens is None:
            return pd.DatetimeIndex([], tz="UTC")
        return pd.DatetimeIndex(opens.reindex(days).to_numpy(), tz="UTC")
    if session is None:
        return days.tz_localize("UTC")
    wall = days + pd.Timedelta(session.open_offset)
    return wall.tz_localize(session.timezone, ambiguous="raise", nonexistent="raise").tz_convert(
        "UTC"
    )


def _in_session(ts: pd.Series, session: Session | MarketCalendar | None) -> np.ndarray:
    if isinstance(session, MarketCalendar):
        return session.in_session(pd.DatetimeIndex(ts))
    if session is None:
        return np.ones(len(ts), dtype=bool)
    index = pd.DatetimeIndex(ts)
    local = index.tz_convert(session.timezone) if session.timezone != "UTC" else index
    minute = (local.hour * 60 + local.minute).to_numpy()
    weekday_ok = np.isin(local.weekday.to_numpy(), session.weekdays)
    return (
        weekday_ok
        & (minute >= session.open_minute)
        & (minute < session.open_minute + session.minutes)
    )


def session_minutes(local_days: pd.DatetimeIndex, session: Session | None) -> pd.DatetimeIndex:
    """Every 1-minute bar open time (UTC) of the sessions on the given local days."""
    if isinstance(session, MarketCalendar):
        return session.minutes(local_days)
    if len(local_days) == 0:
        return pd.DatetimeIndex([], tz="UTC")
    days = pd.DatetimeIndex(local_days).normalize().unique().sort_values()
    count = 24 * 60 if session is None else session.minutes
    opens = session_open_utc(days, session)
    offsets = pd.to_timedelta(np.arange(count), unit="min")
    stamps = opens.values[:, None] + offsets.values[None, :]
    return pd.DatetimeIndex(stamps.ravel(), tz="UTC")


def align_minutes(
    frame: pd.DataFrame,
    session: Session | None,
    calendar: pd.DatetimeIndex | None = None,
) -> tuple[pd.DataFrame, AlignmentReport]:
    """Align one symbol's 1-minute bars to the session grid, adding gap rows.

    The symbol's trading days are the local days on which it has a bar, plus the days of
    ``calendar`` (local days on which the market traded, e.g. from all symbols) between
    its first and last day: a day the symbol is missing entirely becomes a day of gaps.
    Returns the aligned frame (columns of ``bars``, sorted by ts) and a report. Bars
    outside the session are dropped from the result and counted.
    """
    _check_frame(frame, "align_minutes")
    if frame["symbol"].nunique() > 1:
        raise BadInputError("align_minutes: expected one symbol at a time")
    if len(frame) and (frame["timeframe"] != "1m").any():
        raise BadInputError("align_minutes: expected 1m bars only")
    frame = frame.loc[~frame["is_gap"].astype(bool)]  # stored gap rows are re-derived
    if frame.empty:
        return frame.loc[:, list(BAR_COLUMNS)].copy(), AlignmentReport(0, 0, 0, 0)
    symbol = frame["symbol"].iloc[0]
    inside = _in_session(frame["ts"], session)
    kept = frame.loc[inside, list(BAR_COLUMNS)]
    days = session_local_days(kept["ts"], session).unique()
    if isinstance(session, MarketCalendar) and len(days):
        # Holidays and weekends come from the market's calendar, not from other symbols.
        days = session.schedule(days.min(), days.max()).index
    elif calendar is not None and len(days):
        market = pd.DatetimeIndex(calendar).normalize()
        market = market[(market >= days.min()) & (market <= days.max())]
        days = days.union(market)
    grid = session_minutes(days, session)
    aligned = kept.set_index("ts").reindex(grid)
    added = aligned["symbol"].isna()
    aligned["symbol"] = symbol
    aligned["timeframe"] = "1m"
    aligned.loc[added, "volume"] = 0.0
    aligned["is_gap"] = aligned["is_gap"].astype("boolean").fillna(True).astype(bool)
    aligned.index.name = "ts"
    result = aligned.reset_index().loc[:, list(BAR_COLUMNS)]
    short = 0
    if isinstance(session, MarketCalendar) and len(days):
        short = int(session.schedule(days.min(), days.max())["early_close"].sum())
    report = AlignmentReport(
        bars_in=len(frame),
        gap_rows_added=int(added.sum()),
        outside_session=int((~inside).sum()),
        trading_days=len(days),
        short_days=short,
    )
    return result, report


def bin_open_times(ts: pd.Series, timeframe: str, session: Session | None) -> pd.Series:
    """The open time (UTC) of the ``timeframe`` bar each ``ts`` belongs to, anchored at
    the open of the session of the bar's local day (midnight UTC without a session)."""
    check_timeframe(timeframe)
    if isinstance(session, MarketCalendar):
        return session.bin_open_times(ts, timeframe)
    step = pd.Timedelta(TIMEFRAME_DURATION[timeframe])
    anchor = pd.Series(session_open_utc(session_local_days(ts, session), session), index=ts.index)
    if timeframe == "1d":
        return anchor
    return anchor + ((ts - anchor) // step) * step


def resample(
    aligned: pd.DataFrame,
    timeframe: str,
    session: Session | None,
    max_missing_fraction: float = 0.0,
) -> pd.DataFrame:
    """Resample aligned 1-minute bars (one or many symbols) into ``timeframe`` bars.

    A bar is ``is_gap`` when more than ``max_missing_fraction`` of its minutes are
    missing, and always when none is present (its prices are then NaN).
    """
    _check_frame(aligned, "resample")
    check_timeframe(timeframe)
    if timeframe == "1m":
        return aligned.loc[:, list(BAR_COLUMNS)].copy()
    if aligned.empty:
        return aligned.loc[:, list(BAR_COLUMNS)].copy()
    work = aligned.loc[:, ["symbol", "ts", *PRICE_COLUMNS, "volume", "is_gap"]].copy()
    work["bin"] = bin_open_times(work["ts"], timeframe, session)
    work = work.sort_values(["symbol", "ts"], kind="stable")
    keys = ["symbol", "bin"]
    expected = work.groupby(keys, sort=True).size().rename("expected")
    present = work.loc[~work["is_gap"]]
    aggregated = present.groupby(keys, sort=True).agg(
        open=("open", "first"),
        high=("high", "max"),
        low=("low", "min"),
        close=("close", "last"),
        volume=("volume", "sum"),
        present=("open", "size"),
    )
    out = aggregated.reindex(expected.index)
    out["present"] = out["present"].fillna(0).astype(int)
    out["volume"] = out["volume"].fillna(0.0)
    missing_fraction = 1.0 - out["present"].to_numpy() / expected.to_numpy()
    out["is_gap"] = (missing_fraction > max_missing_fraction) | (out["present"].to_numpy() == 0)
    out = out.reset_index().rename(columns={"bin": "ts"})
    out["timeframe"] = timeframe
    return out.loc[:, list(BAR_COLUMNS)]


def forward_fill_non_price(
    frame: pd.DataFrame, columns: Sequence[str], limit_bars: int
) -> pd.DataFrame:
    """Forward-fill non-price columns per symbol over at most ``limit_bars`` bars.

    Prices are never forward-filled: asking for a price column raises.
    """
    refused = [c for c in columns if c in PRICE_COLUMNS]
    if refused:
        raise BadInputError(
            f"forward fill refused for price column(s) {refused}: gaps in prices stay marked"
        )
    if limit_bars < 1:
        raise BadInputError(f"limit_bars: expected >= 1, got {limit_bars}")
    result = frame.copy()
    result[list(columns)] = result.groupby("symbol")[list(columns)].ffill(limit=limit_bars)
    return result


def _symbol_calendars(engine, session, known, chosen, markets) -> dict:
    """(calendar, trading days of the legacy session or None) of each chosen symbol."""
    if markets is None:
        days = market_calendar(engine, session)
        return {symbol: (session, days) for symbol in chosen}
    result = {}
    for market, members in markets.group(known).items():
        chosen_here = [s for s in members if s in set(chosen)]
        if not chosen_here:
            continue
        calendar = markets.calendar(market)
        days = (
            market_calendar(engine, calendar, members if len(members) < len(known) else None)
            if markets.is_legacy(market)
            else None
        )
        result.update({symbol: (calendar, days) for symbol in chosen_here})
    return result


@dataclass(frozen=True)
class ResampleReport:
    """What :func:`resample_symbols` wrote, per timeframe."""

    symbols: int
    rows_written: dict[str, int]
    gap_rows_added: int
    outside_session: int
    short_days: int = 0
    """Early-close days aligned, summed over symbols."""


def market_calendar(
    engine, session: Session | None, symbols: Sequence[str] | None = None
) -> pd.DatetimeIndex:
    """Local days on which any symbol (of ``symbols``, default all) has an in-session
    1-minute bar."""
    times = db.distinct_bar_times(engine, "1m", symbols)
    inside = times[_in_session(pd.Series(times), session)]
    return session_local_days(inside, session).unique().sort_values()


def resample_symbols(
    engine,
    session: Session | None,
    max_missing_fraction: float,
    symbols: Sequence[str] | None = None,
    timeframes: Sequence[str] = TIMEFRAMES[1:],
    progress=None,
    markets=None,
) -> ResampleReport:
    """Align every symbol's stored 1m bars, then write their gap rows and resampled bars.

    The trading calendar is the union of all symbols' days, so a day one symbol missed
    entirely is marked as gaps. Per symbol, one transaction replaces its 1m gap rows and
    its bars of the target timeframes: a symbol is either fully resampled or untouched,
    and a rerun under other settings leaves nothing stale. ``progress`` wraps the symbol
    iterable (e.g. a progress bar). ``markets`` (a
    :class:`~regimes.data.markets.MarketBook`) gives each symbol its market's calendar;
    without it every symbol is on ``session``. The days of a ``session`` market are the
    union of its symbols' days; a market calendar brings its own (holidays included).
    """
    targets = [check_timeframe(tf) for tf in timeframes if tf != "1m"]
    known = db.list_symbols(engine, "1m")
    chosen = list(symbols) if symbols else known
    if not chosen:
        raise BadInputError(
            "resample: no 1m bars stored; run `regimes synth` or `regimes ingest` first"
        )
    unknown = [s for s in chosen if s not in set(known)]
    if unknown:
        raise BadInputError(f"resample: no 1m bars stored for symbol(s) {unknown}")
    calendars = _symbol_calendars(engine, session, known, chosen, markets)
    written = {"1m": 0, **{tf: 0 for tf in targets}}
    gaps = outside = short = 0
    iterate = progress or (lambda items: items)
    for symbol in iterate(chosen):
        session, calendar = calendars[symbol]
        minutes = db.read_bars(engine, "1m", symbol)
        aligned, report = align_minutes(minutes, session, calendar)
        gaps += report.gap_rows_added
        outside += report.outside_session
        short += report.short_days
        frames = [aligned.loc[aligned["is_gap"]]]  # 1m gap rows; real 1m bars stay as stored
        written["1m"] += int(aligned["is_gap"].sum())
        for timeframe in targets:
            resampled = resample(aligned, timeframe, session, max_missing_fraction)
            written[timeframe] += len(resampled)
            frames.append(resampled)
        db.rewrite_bars(
            engine,
            pd.concat(frames, ignore_index=True),
            [symbol],
            timeframes=targets,
            gap_rows_of=["1m"],
        )
    return ResampleReport(
        symbols=len(chosen),
        rows_written=written,
        gap_rows_added=gaps,
        outside_session=outside,
        short_days=short,
    )
