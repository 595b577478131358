"""Market calendars: when a market is open, its trading days and where they start.

A :class:`MarketCalendar` turns a :class:`~regimes.config.markets.MarketConfig` into a
*schedule*: one row per trading day (named by its date, a naive midnight) with the UTC
``open`` and ``close``, an optional break (``break_start``/``break_end``) and whether the
day closes early. Everything else derives from the schedule: whether a timestamp is in
session, the 1-minute grid of some days, the open time of the bar a timestamp falls in
and the position in the trading day (``tod``). Wall-clock times are converted per day,
so a New York market opens at 14:30 UTC in winter and 13:30 UTC in summer, and an FX
day across a daylight-saving change lasts 23 or 25 hours.

The default market (calendar ``session``) keeps the code path of
:mod:`regimes.data.bars`; a :class:`MarketCalendar` is only built for other kinds.
"""

from __future__ import annotations

import functools
import json
from datetime import date

import numpy as np
import pandas as pd

from regimes.config.markets import FX_TIMEZONE, MarketConfig
from regimes.errors import BadInputError
from regimes.timeframes import TIMEFRAME_DURATION, check_timeframe

SCHEDULE_COLUMNS = ("open", "close", "break_start", "break_end", "early_close")
_DAY = 1440
_DAY_NS = 86_400 * 10**9
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _empty_schedule() -> pd.DataFrame:
    utc = pd.DatetimeIndex([], tz="UTC")
    frame = pd.DataFrame({c: utc for c in SCHEDULE_COLUMNS[:-1]})
    frame["early_close"] = np.array([], dtype=bool)
    frame.index = pd.DatetimeIndex([], name="day")
    return frame


@functools.lru_cache(maxsize=256)
def _year_schedule(config_json: str, year: int) -> pd.DataFrame:
    """The schedule of the trading days named in ``year`` (cached: pure in its inputs)."""
    config = MarketConfig.model_validate_json(config_json)
    if config.calendar in ("24x5", "24x7", "custom"):
        return _weekly_schedule(config, year)
    return _exchange_schedule(config.calendar, year)


@functools.lru_cache(maxsize=256)
def _open_days(config_json: str, first_year: int, last_year: int) -> tuple[np.ndarray, np.ndarray]:
    """UTC nanoseconds of every trading day's open of the years, and each day's name as
    days since 1970-01-01 (cached: the live path asks once per bar)."""
    frame = pd.concat([_year_schedule(config_json, y) for y in range(first_year, last_year + 1)])
    opens = pd.DatetimeIndex(frame["open"]).as_unit("ns").asi8
    return opens, pd.DatetimeIndex(frame.index).as_unit("ns").asi8 // _DAY_NS


def _weekly_layout(config: MarketConfig) -> tuple[int, int, set[int], list[tuple[int, int]]]:
    """(open offset from the day's local midnight in minutes, may be negative; length in
    wall minutes; weekdays; breaks as offsets from the same midnight)."""
    if config.calendar == "24x5":
        return 17 * 60 - _DAY, _DAY, {0, 1, 2, 3, 4}, []
    if config.calendar == "24x7":
        start = (
            0 if config.day_start is None else config.day_start.hour * 60 + config.day_start.minute
        )
        return (start - _DAY if start else 0), _DAY, set(range(7)), []
    opening = config.open.hour * 60 + config.open.minute
    closing = config.close.hour * 60 + config.close.minute
    offset = opening if closing > opening else opening - _DAY
    breaks = []
    for item in config.breaks:
        start = offset + (item.start.hour * 60 + item.start.minute - opening) % _DAY
        end = offset + (item.end.hour * 60 + item.end.minute - opening) % _DAY
        breaks.append((start, end))
    weekdays = set(config.weekdays) if config.weekdays is not None else {0, 1, 2, 3, 4}
    return offset, config.session_minutes, weekdays, breaks


def _wall_to_utc(days: pd.DatetimeIndex, minutes: int, zone: str) -> pd.DatetimeIndex:
    wall = days + pd.Timedelta(minutes=minutes)
    return wall.tz_localize(zone, ambiguous=False, nonexistent="shift_forward").tz_convert("UTC")


def _weekly_schedule(config: MarketConfig, year: int) -> pd.DataFrame:
    offset, length, weekdays, breaks = _weekly_layout(config)
    zone = FX_TIMEZONE if config.calendar == "24x5" else (config.timezone or "UTC")
    days = pd.date_range(f"{year}-01-01", f"{year}-12-31", freq="D")
    holidays = pd.DatetimeIndex([pd.Timestamp(d) for d in config.holidays])
    days = days[np.isin(days.weekday, sorted(weekdays)) & ~days.isin(holidays)]
    frame = pd.DataFrame(index=pd.DatetimeIndex(days, name="day"))
    frame["open"] = _wall_to_utc(days, offset, zone)
    frame["close"] = _wall_to_utc(days, offset + length, zone)
    nat = pd.DatetimeIndex([pd.NaT] * len(days), tz="UTC")
    frame["break_start"] = _wall_to_utc(days, breaks[0][0], zone) if breaks else nat
    frame["break_end"] = _wall_to_utc(days, breaks[0][1], zone) if breaks else nat
    frame["early_close"] = False
    return frame


def _exchange_schedule(name: str, year: int) -> pd.DataFrame:
    import exchange_calendars

    probe = exchange_calendars.get_calendar(name)
    start = max(pd.Timestamp(f"{year}-01-01"), probe.first_session)
    end = min(pd.Timestamp(f"{year}-12-31"), probe.last_session)
    if start > end:
        return _empty_schedule()
    calendar = exchange_calendars.get_calendar(name, start=start, end=end)
    schedule = calendar.schedule.loc[:, ["open", "close", "break_start", "break_end"]].copy()
    schedule.index = pd.DatetimeIndex(schedule.index.tz_localize(None), name="day")
    for column in ("open", "close", "break_start", "break_end"):
        schedule[column] = pd.DatetimeIndex(schedule[column]).tz_convert("UTC").as_unit("ns")
    early = pd.DatetimeIndex(calendar.early_closes).tz_localize(None)
    schedule["early_close"] = schedule.index.isin(early)
    return schedule


class FrozenSchedule:
    """An exchange calendar's schedule over a span of trading days, as a model stored it.

    Parameters
    ----------
    library : str
        The library and version that computed it, e.g. ``exchange-calendars 4.5.6``.
    first, last : Timestamp
        The span of day names it covers (naive midnights, inclusive): inside it a day
        missing from ``table`` is a holiday.
    table : DataFrame
        The schedule rows (:meth:`MarketCalendar.schedule`'s columns).
    """

    def __init__(self, library: str, first, last, table: pd.DataFrame):
        self.library = library
        self.first, self.last = pd.Timestamp(first), pd.Timestamp(last)
        self.table = table

    def as_dict(self) -> dict:
        """JSON-ready: times as UTC ISO strings, the break columns only when used."""

        def stamps(column: str) -> list:
            return [
                None if pd.isna(t) else t.strftime("%Y-%m-%dT%H:%MZ") for t in self.table[column]
            ]

        data = {
            "library": self.library,
            "first": self.first.strftime("%Y-%m-%d"),
            "last": self.last.strftime("%Y-%m-%d"),
            "days": [d.strftime("%Y-%m-%d") for d in self.table.index],
            "open": stamps("open"),
            "close": stamps("close"),
            "early_close": [bool(v) for v in self.table["early_close"]],
        }
        if self.table["break_start"].notna().any():
            data["break_start"], data["break_end"] = stamps("break_start"), stamps("break_end")
        return data

    @classmethod
    def from_dict(cls, data: dict) -> FrozenSchedule:
        days = pd.DatetimeIndex(pd.to_datetime(data["days"]), name="day")
        table = pd.DataFrame(index=days)
        for column in SCHEDULE_COLUMNS[:-1]:
            values = data.get(column, [None] * len(days))
            table[column] = pd.DatetimeIndex(pd.to_datetime(values, utc=True)).as_unit("ns")
        table["early_close"] = np.asarray(data["early_close"], dtype=bool)
        return cls(data["library"], data["first"], data["last"], table)


class MarketCalendar:
    """The calendar of one named market (see :mod:`regimes.config.markets`).

    Parameters
    ----------
    name : str
        The market's name in ``markets.yaml``.
    config : MarketConfig
        Its configuration (any calendar kind but ``session``).

    Examples
    --------
    >>> from regimes.config.markets import MarketConfig
    >>> fx = MarketCalendar("fx", MarketConfig(calendar="24x5"))
    >>> fx.schedule("2024-01-08", "2024-01-08")["open"].iloc[0]
    Timestamp('2024-01-07 22:00:00+0000', tz='UTC')
    """

    def __init__(self, name: str, config: MarketConfig, frozen: FrozenSchedule | None = None):
        self.name = name
        self.config = config
        self.frozen = frozen
        """An exchange calendar's schedule as a model stored it (:meth:`freeze`): inside
        its span it replaces what the installed library says."""
        self._years: dict[int, pd.DataFrame] = {}

    def __repr__(self) -> str:
        return f"MarketCalendar({self.name!r}, {self.config.calendar!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, MarketCalendar) and self.as_dict() == other.as_dict()

    def __hash__(self) -> int:
        return hash(json.dumps(self.as_dict(), sort_keys=True))

    def as_dict(self) -> dict:
        """Name and configuration, as JSON-ready data (what an artifact stores)."""
        return {"name": self.name, **self.config.model_dump(mode="json", exclude_defaults=True)}

    def model_dump_json(self) -> str:
        """The JSON of :meth:`as_dict` (a live snapshot compares it)."""
        return json.dumps(self.as_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> MarketCalendar:
        data = dict(data)
        return cls(data.pop("name"), MarketConfig.model_validate(data))

    @property
    def timezone(self) -> str:
        """The zone of the market's wall-clock times."""
        if self.config.calendar == "24x5":
            return FX_TIMEZONE
        if self.config.calendar in ("24x7", "custom"):
            return self.config.timezone or "UTC"
        import exchange_calendars

        return str(exchange_calendars.get_calendar(self.config.calendar).tz)

    def hours(self) -> str:
        """The market's hours in words, for messages."""
        kind = self.config.calendar
        if kind == "24x5":
            return f"market {self.name}: Sunday 17:00 to Friday 17:00 {FX_TIMEZONE}"
        if kind == "24x7":
            return f"market {self.name}: open 24x7"
        if kind == "custom":
            days = ",".join(_WEEKDAYS[d] for d in sorted(_weekly_layout(self.config)[2]))
            halts = "".join(f", break {b.start:%H:%M}-{b.end:%H:%M}" for b in self.config.breaks)
            return (
                f"market {self.name}: {self.config.open:%H:%M}-{self.config.close:%H:%M} "
                f"{self.timezone} ({days}{halts})"
            )
        return (
            f"market {self.name}: exchange calendar {kind} ({self.timezone}, holidays and "
            "early closes)"
        )

    # ------------------------------------------------------------------ schedules

    @property
    def is_exchange(self) -> bool:
        """Whether the schedule comes from ``exchange-calendars`` (and so may change when
        the library does)."""
        return self.config.calendar not in ("24x5", "24x7", "custom")

    def freeze(self, first, last) -> MarketCalendar:
        """This calendar with its exchange schedule of trading days ``first`` - 7 days to
        ``last`` + 366 days stored, with the library's version: what a model artifact
        keeps so that its answers do not change when ``exchange-calendars`` updates
        (holidays, early closes). Other kinds are defined by their config alone and
        come back as they are."""
        if not self.is_exchange:
            return self
        import exchange_calendars

        # Within the days the library covers: beyond them it knows no sessions, which
        # must not be stored as a stretch of holidays.
        library = exchange_calendars.get_calendar(self.config.calendar)
        first = pd.Timestamp(first).tz_localize(None).normalize() - pd.Timedelta(days=7)
        last = pd.Timestamp(last).tz_localize(None).normalize() + pd.Timedelta(days=366)
        first, last = max(first, library.first_session), min(last, library.last_session)
        table = self.schedule(first, last)
        frozen = FrozenSchedule(
            f"exchange-calendars {exchange_calendars.__version__}", first, last, table
        )
        return MarketCalendar(self.name, self.config, frozen)

    def _year(self, year: int) -> pd.DataFrame:
        """The schedule of the days named in ``year``: the library's, with the frozen
        schedule's days where it covers them."""
        frame = _year_schedule(self.config.model_dump_json(), year)
        if self.frozen is None:
            return frame
        if year not in self._years:
            span = self.frozen
            outside = frame.loc[(frame.index < span.first) | (frame.index > span.last)]
            stored = span.table.loc[span.table.index.year == year]
            self._years[year] = pd.concat([outside, stored]).sort_index()
        return self._years[year]

    def schedule(self, first, last) -> pd.DataFrame:
        """Trading days named ``first`` .. ``last`` (dates, inclusive): UTC ``open``,
        ``close``, ``break_start``, ``break_end`` (NaT without a break), ``early_close``."""
        first, last = pd.Timestamp(first).normalize(), pd.Timestamp(last).normalize()
        frames = [self._year(year) for year in range(first.year, last.year + 1)]
        frame = pd.concat(frames) if frames else _empty_schedule()
        return frame.loc[(frame.index >= first) & (frame.index <= last)]

    def _covering(self, index: pd.DatetimeIndex) -> pd.DataFrame:
        start, end = index.min(), index.max()
        return self.schedule(
            (start - pd.Timedelta(days=2)).tz_localize(None),
            (end + pd.Timedelta(days=2)).tz_localize(None),
        )

    def _locate(self, ts) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        """The covering schedule, each timestamp's row in it (the last open at or before
        it; -1 before the first) and whether it is in session."""
        index = pd.DatetimeIndex(ts)
        if len(index) == 0:
            return _empty_schedule(), np.array([], dtype=int), np.array([], dtype=bool)
        schedule = self._covering(index)
        values = index.as_unit("ns").asi8
        opens = pd.DatetimeIndex(schedule["open"]).as_unit("ns").asi8
        closes = pd.DatetimeIndex(schedule["close"]).as_unit("ns").asi8
        row = np.searchsorted(opens, values, side="right") - 1
        safe = np.maximum(row, 0)
        inside = (row >= 0) & (values < closes[safe]) if len(opens) else np.zeros(len(values), bool)
        for start, end in self._breaks(schedule):
            inside &= ~((values >= start[safe]) & (values < end[safe]))
        return schedule, row, inside

    def _breaks(self, schedule: pd.DataFrame) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every break of the schedule's days as (start, end) UTC nanoseconds (0, 0 on a
        day without); the schedule's columns hold the first break only."""
        pairs = [(schedule["break_start"], schedule["break_end"])]
        if self.config.calendar == "custom" and len(self.config.breaks) > 1:
            offsets = _weekly_layout(self.config)[3]
            days = pd.DatetimeIndex(schedule.index)
            pairs = [
                (_wall_to_utc(days, start, self.timezone), _wall_to_utc(days, end, self.timezone))
                for start, end in offsets
            ]
        result = []
        for start, end in pairs:
            start_ns = pd.DatetimeIndex(start).as_unit("ns").asi8.copy()
            end_ns = pd.DatetimeIndex(end).as_unit("ns").asi8.copy()
            missing = pd.isna(pd.DatetimeIndex(start))
            start_ns[missing] = end_ns[missing] = 0
            result.append((start_ns, end_ns))
        return result

    def in_session(self, ts) -> np.ndarray:
        """Whether each UTC timestamp falls inside a trading session (not in a break)."""
        return self._locate(ts)[2]

    def trading_day(self, ts) -> pd.DatetimeIndex:
        """The trading day (naive midnight) of each UTC timestamp; NaT when closed."""
        schedule, row, inside = self._locate(ts)
        days = schedule.index.to_numpy()[np.maximum(row, 0)] if len(schedule) else None
        if days is None:
            return pd.DatetimeIndex([pd.NaT] * len(row))
        return pd.DatetimeIndex(np.where(inside, days, np.datetime64("NaT")))

    def day_numbers(self, ts_ns: np.ndarray) -> np.ndarray:
        """The trading day of each UTC timestamp (nanoseconds) as days since 1970-01-01
        of the day's name: the day whose session opened last at or before it (a bar in a
        break belongs to its day); the UTC date where no session opened in the two days
        before (never for a bar on the calendar)."""
        ts_ns = np.asarray(ts_ns, dtype=np.int64)
        fallback = ts_ns // _DAY_NS
        if not len(ts_ns):
            return fallback
        # Years as UTC sees them, widened by one: a day's name and its UTC open may fall
        # in different years (FX's 2 January opens on 1 January).
        first, last = (pd.Timestamp(int(v), tz="UTC").year for v in (ts_ns.min(), ts_ns.max()))
        if self.frozen is None:
            opens, names = _open_days(self.config.model_dump_json(), first - 1, last + 1)
        else:
            frame = self.schedule(f"{first - 1}-01-01", f"{last + 1}-12-31")
            opens = pd.DatetimeIndex(frame["open"]).as_unit("ns").asi8
            names = pd.DatetimeIndex(frame.index).as_unit("ns").asi8 // _DAY_NS
        row = np.searchsorted(opens, ts_ns, side="right") - 1
        return np.where(row >= 0, names[np.maximum(row, 0)], fallback)

    def short_day(self, ts) -> np.ndarray:
        """Whether the trading day of each UTC timestamp closes early (a half day such as
        XNYS's day after Thanksgiving); False when the market is closed."""
        schedule, row, inside = self._locate(ts)
        if not len(schedule):
            return np.zeros(len(row), dtype=bool)
        return inside & schedule["early_close"].to_numpy(dtype=bool)[np.maximum(row, 0)]

    def session_open(self, ts) -> pd.DatetimeIndex:
        """The UTC open of the trading day of each timestamp (NaT when closed)."""
        schedule, row, inside = self._locate(ts)
        if not len(schedule):
            return pd.DatetimeIndex([pd.NaT] * len(row), tz="UTC")
        opens = pd.DatetimeIndex(schedule["open"]).as_unit("ns").asi8[np.maximum(row, 0)]
        return pd.DatetimeIndex(np.where(inside, opens, np.iinfo(np.int64).min), tz="UTC")

    def trading_days(self, start: date, count: int) -> pd.DatetimeIndex:
        """``count`` consecutive trading days from ``start`` (naive midnights)."""
        first = pd.Timestamp(start)
        days = pd.DatetimeIndex([])
        year = first.year
        while len(days) < count:
            chunk = self.schedule(first, pd.Timestamp(f"{year}-12-31")).index
            days = days.append(chunk)
            year += 1
            first = pd.Timestamp(f"{year}-01-01")
            if year > pd.Timestamp(start).year + 60:
                raise BadInputError(f"{self.hours()}: fewer than {count} trading days ahead")
        return days[:count]

    def minutes(self, days) -> pd.DatetimeIndex:
        """Every 1-minute bar open time (UTC) of the sessions of the given trading days,
        breaks left out."""
        days = pd.DatetimeIndex(days).normalize().unique().sort_values()
        if len(days) == 0:
            return pd.DatetimeIndex([], tz="UTC")
        schedule = self.schedule(days.min(), days.max())
        schedule = schedule.loc[schedule.index.isin(days)]
        opens = pd.DatetimeIndex(schedule["open"]).as_unit("ns").asi8
        closes = pd.DatetimeIndex(schedule["close"]).as_unit("ns").asi8
        minute = 60_000_000_000
        counts = (closes - opens) // minute
        starts = np.repeat(opens, counts)
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        stamps = starts + within * minute
        keep = np.ones(len(stamps), dtype=bool)
        for start, end in self._breaks(schedule):
            keep &= ~((stamps >= np.repeat(start, counts)) & (stamps < np.repeat(end, counts)))
        return pd.DatetimeIndex(stamps[keep], tz="UTC")

    def bin_open_times(self, ts, timeframe: str) -> pd.Series:
        """The open time (UTC) of the ``timeframe`` bar each timestamp falls in: bars
        count from the trading day's open; the 1d bar opens at the day's open."""
        check_timeframe(timeframe)
        series = pd.Series(ts)
        anchor = pd.Series(self.session_open(series), index=series.index)
        if timeframe == "1d":
            return anchor
        step = pd.Timedelta(TIMEFRAME_DURATION[timeframe])
        return anchor + ((series - anchor) // step) * step

    def time_of_day(self, ts_ns: np.ndarray) -> np.ndarray:
        """Position in the trading day (0 at the open, 1 at that day's close) of each
        UTC timestamp (nanoseconds); NaN when the market is closed."""
        ts_ns = np.asarray(ts_ns, dtype=np.int64)
        schedule, row, inside = self._locate(pd.DatetimeIndex(ts_ns, tz="UTC"))
        if not len(schedule):
            return np.full(len(ts_ns), np.nan)
        safe = np.maximum(row, 0)
        opens = pd.DatetimeIndex(schedule["open"]).as_unit("ns").asi8[safe]
        closes = pd.DatetimeIndex(schedule["close"]).as_unit("ns").asi8[safe]
        position = (ts_ns - opens) / (closes - opens).astype(float)
        return np.where(inside, position, np.nan)

    def open_time_between(self, start, end) -> pd.Timedelta:
        """How long the market was open (breaks left out) from ``start`` to ``end``
        (UTC): the age of a state in market time, which a weekend or holiday does not
        add to."""
        start, end = pd.Timestamp(start), pd.Timestamp(end)
        if end <= start:
            return pd.Timedelta(0)
        schedule = self._covering(pd.DatetimeIndex([start, end]))
        lo, hi = start.as_unit("ns").value, end.as_unit("ns").value
        opens = pd.DatetimeIndex(schedule["open"]).as_unit("ns").asi8
        closes = pd.DatetimeIndex(schedule["close"]).as_unit("ns").asi8
        total = np.clip(np.minimum(closes, hi) - np.maximum(opens, lo), 0, None).sum()
        for halt_start, halt_end in self._breaks(schedule):
            total -= np.clip(np.minimum(halt_end, hi) - np.maximum(halt_start, lo), 0, None).sum()
        return pd.Timedelta(int(total), unit="ns")

    def year_shape(self, year: int) -> tuple[int, float]:
        """(trading days, mean open minutes per trading day) of ``year``: what annualises
        a figure on this market (e.g. 252 days of 390 minutes for XNYS, 365 x 1440 24x7)."""
        schedule = self.schedule(f"{year}-01-01", f"{year}-12-31")
        if not len(schedule):
            return 0, 0.0
        first, last = schedule["open"].iloc[0], schedule["close"].iloc[-1]
        return len(schedule), self.open_time_between(first, last).total_seconds() / 60 / len(
            schedule
        )

    def place_daily(self, utc: pd.Series, wall: pd.Series) -> tuple[pd.Series, pd.Series]:
        """The open time of the 1d bar of each row, stamped with its trading day's date
        (midnight, wall clock in the market's zone; ``wall`` holds the wall-clock time of
        rows written without an offset) or that day's open itself (NaT for neither), and
        which rows were moved from midnight."""
        result = pd.Series(pd.NaT, index=utc.index, dtype="datetime64[ns, UTC]")
        moved = pd.Series(False, index=utc.index)
        valid = utc.notna()
        if not valid.any():
            return result, moved
        wall = wall.copy()
        aware = wall.isna() & valid
        wall[aware] = utc[aware].dt.tz_convert(self.timezone).dt.tz_localize(None)
        stamps = pd.DatetimeIndex(utc[valid])
        schedule = self._covering(stamps)
        at_open = utc.isin(pd.DatetimeIndex(schedule["open"])) & valid
        result[at_open] = utc[at_open]
        midnight = valid & ~at_open & (wall == wall.dt.normalize())
        day_open = schedule["open"].reindex(pd.DatetimeIndex(wall[midnight]))
        placed = pd.Series(day_open.to_numpy(), index=wall[midnight].index).dropna()
        result[placed.index] = placed
        moved[placed.index] = True
        return result, moved

    def closed_mask(self, ts: pd.Series) -> np.ndarray:
        """Which timestamps (NaT allowed) fall in closed hours (for per-row refusals)."""
        valid = ts.notna().to_numpy()
        closed = np.zeros(len(ts), dtype=bool)
        if valid.any():
            closed[valid] = ~self.in_session(pd.DatetimeIndex(ts[valid]))
        return closed
