"""Which market each symbol belongs to, and that market's calendar (``docs/data.md``).

A symbol's market is, in order: its entry in the ``symbols`` mapping of
``markets.yaml``, the market recorded when it was ingested or generated (``--market``;
the ``symbols`` table), or the ``default`` market. A market of calendar ``session`` is
the ``session`` of ``timeframes.yaml`` (a :class:`~regimes.config.timeframes.Session`,
or ``None`` for 24 hours from midnight UTC) and keeps the original alignment code path;
every other market is a :class:`~regimes.data.calendars.MarketCalendar`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from regimes.config.markets import MarketsConfig
from regimes.config.timeframes import Session
from regimes.data.calendars import FrozenSchedule, MarketCalendar
from regimes.errors import BadInputError, ConfigError

Calendar = Session | MarketCalendar | None
"""What alignment, resampling and features take: a legacy session or a market calendar."""


class MarketBook:
    """Markets of a configuration plus the markets recorded per symbol.

    Parameters
    ----------
    config : MarketsConfig
        ``markets.yaml`` (its defaults when the file is absent).
    session : Session or None
        The ``session`` of ``timeframes.yaml``: the calendar of ``session`` markets.
    recorded : mapping of str to str, optional
        Symbol -> market recorded at ingest or synth (the ``symbols`` table).

    Examples
    --------
    >>> from regimes.config.markets import MarketsConfig
    >>> book = MarketBook(MarketsConfig(), None)
    >>> book.market_of("SPY")
    'equities'
    """

    def __init__(
        self,
        config: MarketsConfig,
        session: Session | None,
        recorded: Mapping[str, str] | None = None,
    ):
        self.config = config
        self.session = session
        self.recorded = dict(recorded or {})

    def market_of(self, symbol: str) -> str:
        """The market of ``symbol``; a clear error when it has none."""
        if symbol in self.config.symbols:
            return self.config.symbols[symbol]
        if symbol in self.recorded:
            market = self.recorded[symbol]
            if market not in self.config.markets:
                raise ConfigError(
                    f"symbol {symbol}: recorded in market {market!r}, which markets.yaml no "
                    f"longer defines (markets: {sorted(self.config.markets)})"
                )
            return market
        if self.config.default is None:
            raise BadInputError(
                f"symbol {symbol}: no market; markets.yaml has several markets "
                f"({sorted(self.config.markets)}) and no default: map it under symbols: or "
                "give --market at ingest"
            )
        return self.config.default

    def calendar(self, market: str) -> Calendar:
        """The calendar of the market named ``market``."""
        config = self.config.markets[self.config.check_market(market, "market")]
        if config.calendar == "session":
            return self.session
        return MarketCalendar(market, config)

    def calendar_of(self, symbol: str) -> Calendar:
        return self.calendar(self.market_of(symbol))

    def is_legacy(self, market: str) -> bool:
        """Whether ``market`` is the ``session`` of ``timeframes.yaml``."""
        return self.config.markets[market].calendar == "session"

    def group(self, symbols: Iterable[str]) -> dict[str, list[str]]:
        """Symbols by market name (markets sorted, symbols in the order given)."""
        groups: dict[str, list[str]] = {}
        for symbol in symbols:
            groups.setdefault(self.market_of(symbol), []).append(symbol)
        return dict(sorted(groups.items()))

    def market_calendars(self, symbols: Iterable[str]) -> dict[str, MarketCalendar]:
        """The market calendar of each of ``symbols`` not on the legacy session (what the
        synchroniser needs to count state ages in market time)."""
        found = {}
        for symbol in symbols:
            calendar = self.calendar_of(symbol)
            if isinstance(calendar, MarketCalendar):
                found[symbol] = calendar
        return found

    def mark_short_days(self, bars: pd.DataFrame) -> pd.DataFrame:
        """``bars`` (any symbols and timeframes) with ``is_short_day``: the bar's trading
        day closes early on its symbol's market (an exchange calendar's half days). The
        flag is derived from the calendar where bars are read, not stored: the bars
        table is unchanged, and a calendar without early closes marks none.

        Examples
        --------
        >>> from regimes.config.markets import MarketConfig, MarketsConfig
        >>> nyse = MarketsConfig(default="nyse", markets={"nyse": MarketConfig(calendar="XNYS")})
        >>> stamps = pd.to_datetime(["2024-11-27 15:00", "2024-11-29 15:00"], utc=True)
        >>> bars = pd.DataFrame({"symbol": "SPY", "ts": stamps})
        >>> MarketBook(nyse, None).mark_short_days(bars)["is_short_day"].tolist()
        [False, True]
        """
        out = bars.copy()
        flags = np.zeros(len(out), dtype=bool)
        symbols = out["symbol"].to_numpy()
        for symbol in pd.unique(symbols):
            calendar = self.calendar_of(symbol)
            if isinstance(calendar, MarketCalendar):
                rows = np.flatnonzero(symbols == symbol)
                flags[rows] = calendar.short_day(pd.DatetimeIndex(out["ts"].iloc[rows]))
        out["is_short_day"] = flags
        return out

    def check_assignment(self, symbol: str, market: str) -> str:
        """``market`` for ``symbol`` at ingest, refused when the config maps it elsewhere."""
        self.config.check_market(market)
        mapped = self.config.symbols.get(symbol)
        if mapped is not None and mapped != market:
            raise BadInputError(
                f"--market {market}: markets.yaml maps symbol {symbol} to market {mapped}"
            )
        return market


class SymbolCalendars:
    """The calendar of each symbol of a model trained over several markets.

    Passed where a single calendar goes (features, the live engine): time of day is
    then computed per symbol on its own market's day.
    """

    def __init__(self, calendars: Mapping[str, Calendar]):
        self.calendars = dict(sorted(calendars.items()))

    def __repr__(self) -> str:
        return f"SymbolCalendars({len(self.calendars)} symbols)"

    def __eq__(self, other) -> bool:
        return isinstance(other, SymbolCalendars) and self.as_dict() == other.as_dict()

    def of(self, symbol: str) -> Calendar:
        """The calendar of ``symbol``; refused for a symbol the model was not trained on."""
        if symbol not in self.calendars:
            raise BadInputError(
                f"symbol {symbol}: not in the model's universe of several markets, so its "
                f"market is unknown (known: {sorted(self.calendars)[:10]})"
            )
        return self.calendars[symbol]

    def as_dict(self) -> dict:
        return {symbol: calendar_as_dict(c, False) for symbol, c in self.calendars.items()}

    def frozen_schedules(self) -> dict[str, dict]:
        """The stored exchange schedule of each market that has one, by market name
        (kept once per market, not per symbol)."""
        return {
            c.name: c.frozen.as_dict()
            for c in self.calendars.values()
            if isinstance(c, MarketCalendar) and c.frozen is not None
        }

    def freeze(self, first, last) -> SymbolCalendars:
        """Every exchange calendar frozen over the window (:meth:`MarketCalendar.freeze`),
        once per market."""
        frozen: dict[str, Calendar] = {}
        calendars = {}
        for symbol, calendar in self.calendars.items():
            if isinstance(calendar, MarketCalendar):
                if calendar.name not in frozen:
                    frozen[calendar.name] = calendar.freeze(first, last)
                calendar = frozen[calendar.name]
            calendars[symbol] = calendar
        return SymbolCalendars(calendars)

    def model_dump_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)


def calendar_as_dict(calendar: Calendar, with_schedule: bool = True) -> dict | None:
    """A JSON-ready description of a calendar (what a model artifact stores), with its
    frozen exchange schedule (``schedule``) unless ``with_schedule`` is false."""
    if calendar is None:
        return {"kind": "session", "session": None}
    if isinstance(calendar, Session):
        return {"kind": "session", "session": calendar.model_dump(mode="json")}
    data = {"kind": "market", **calendar.as_dict()}
    if with_schedule and calendar.frozen is not None:
        data["schedule"] = calendar.frozen.as_dict()
    return data


def calendar_from_dict(data: dict, schedules: Mapping[str, dict] | None = None) -> Calendar:
    """The calendar :func:`calendar_as_dict` described (``schedules``: frozen exchange
    schedules by market name, as :func:`calendars_as_dict` keeps them once per market)."""
    data = dict(data)
    kind = data.pop("kind")
    if kind == "session":
        session = data["session"]
        return None if session is None else Session.model_validate(session)
    stored = data.pop("schedule", None) or (schedules or {}).get(data["name"])
    calendar = MarketCalendar.from_dict(data)
    if stored is not None:
        calendar = MarketCalendar(calendar.name, calendar.config, FrozenSchedule.from_dict(stored))
    return calendar


def calendars_from_dict(data: dict) -> Calendar | SymbolCalendars:
    """A single calendar, or per-symbol calendars (``{"symbols": {symbol: calendar}}``,
    with ``schedules`` by market)."""
    if "symbols" in data:
        schedules = data.get("schedules")
        return SymbolCalendars(
            {s: calendar_from_dict(c, schedules) for s, c in data["symbols"].items()}
        )
    return calendar_from_dict(data)


def calendars_as_dict(calendar: Calendar | SymbolCalendars) -> dict:
    """The inverse of :func:`calendars_from_dict`."""
    if isinstance(calendar, SymbolCalendars):
        schedules = calendar.frozen_schedules()
        return {"symbols": calendar.as_dict(), **({"schedules": schedules} if schedules else {})}
    return calendar_as_dict(calendar)


def freeze_calendars(calendar: Calendar | SymbolCalendars, first, last):
    """``calendar`` with every exchange calendar's schedule stored over the window
    ``first`` .. ``last`` (what a model artifact keeps; see :meth:`MarketCalendar.freeze`)."""
    if isinstance(calendar, SymbolCalendars | MarketCalendar):
        return calendar.freeze(first, last)
    return calendar
