"""Markets and their calendars (``config/markets.yaml``; ``docs/data.md``).

A market names a calendar (when it is open), a time zone and where its trading day
(and so its 1d bar) starts and ends. A symbol belongs to one market: through the
``symbols`` mapping here, the ``--market`` it was ingested or generated with (the
``symbols`` table), or the ``default`` market. Without a ``markets.yaml`` every symbol
belongs to the default market ``equities``: the session of ``timeframes.yaml``, aligned
exactly as before markets existed.

Calendar kinds (``calendar``):

* ``session`` -- the ``session`` of ``timeframes.yaml`` (trading days from the bars);
* ``24x5`` -- continuous from Sunday 17:00 to Friday 17:00 New York; each trading day
  runs 17:00-17:00 New York and is named after the day it ends (FX);
* ``24x7`` -- always open; the trading day starts at ``day_start`` in ``timezone``;
* ``custom`` -- ``open``/``close`` wall-clock times in ``timezone`` on ``weekdays``
  (a close at or before the open means the session starts the evening before, e.g. a
  futures session 17:00-16:00 Chicago with a daily halt), optional ``breaks`` inside
  the session and ``holidays``;
* any other name -- an exchange calendar of ``exchange-calendars`` (``XNYS``, ``XLON``,
  ``XTKS``, ``CMES``...): holidays, early closes and lunch breaks from the library.
"""

from __future__ import annotations

from datetime import date, time
from typing import Annotated

from pydantic import BaseModel, Field, field_validator, model_validator

from regimes.config.spec import _STRICT
from regimes.paths import check_symbol

CALENDAR_KINDS = frozenset({"session", "24x5", "24x7", "custom"})
"""Calendar kinds built in; any other ``calendar`` value names an exchange calendar."""
DEFAULT_MARKET = "equities"
"""The market of every symbol when no ``markets.yaml`` exists."""
FX_TIMEZONE = "America/New_York"


def exchange_calendar_names() -> frozenset[str]:
    """The calendar names ``exchange-calendars`` knows (offline, shipped with it)."""
    import exchange_calendars

    return frozenset(exchange_calendars.get_calendar_names(include_aliases=True))


def _minutes(value: time) -> int:
    return value.hour * 60 + value.minute


class SessionBreak(BaseModel):
    """A halt inside a custom session, wall-clock ``start`` to ``end``."""

    model_config = _STRICT

    start: time
    end: time


class MarketConfig(BaseModel):
    """One market of ``markets.yaml``."""

    model_config = _STRICT

    calendar: str
    timezone: str | None = None
    """The zone of ``open``/``close``/``day_start``; exchange calendars bring their own,
    ``24x5`` is New York. Default UTC."""
    day_start: time | None = None
    """``24x7`` only: where the trading day (and the 1d bar) starts; default 00:00."""
    open: time | None = None
    close: time | None = None
    weekdays: list[Annotated[int, Field(ge=0, le=6)]] | None = None
    """``custom`` only: the weekdays (0 = Monday) of the trading days, named after the
    day the session closes; default Monday to Friday."""
    breaks: list[SessionBreak] = Field(default_factory=list)
    holidays: list[date] = Field(default_factory=list)

    @field_validator("calendar")
    @classmethod
    def _known_calendar(cls, value: str):
        if value in CALENDAR_KINDS or value in exchange_calendar_names():
            return value
        raise ValueError(
            f"unknown calendar {value!r}; expected one of {sorted(CALENDAR_KINDS)} or an "
            "exchange-calendars name such as XNYS, XLON, XTKS, CMES"
        )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None):
        from regimes.config.timeframes import Session

        if value is not None:
            Session._known_zone(value)
        return value

    @model_validator(mode="after")
    def _fields_of_kind(self):
        custom_only = {
            "open": self.open,
            "close": self.close,
            "weekdays": self.weekdays,
            "breaks": self.breaks or None,
        }
        if self.calendar != "custom":
            misplaced = [name for name, value in custom_only.items() if value is not None]
            if misplaced:
                raise ValueError(f"{misplaced} apply to calendar: custom only")
            if self.holidays and self.calendar not in ("24x5", "24x7"):
                raise ValueError("holidays apply to 24x5, 24x7 and custom calendars only")
        if self.day_start is not None and self.calendar != "24x7":
            raise ValueError("day_start applies to calendar: 24x7 only")
        if self.timezone is not None and self.calendar not in ("24x7", "custom"):
            raise ValueError(
                "timezone applies to 24x7 and custom calendars only (exchange calendars "
                "bring their own, 24x5 runs on New York time)"
            )
        if self.calendar == "custom":
            self._check_custom()
        return self

    def _check_custom(self) -> None:
        if self.open is None or self.close is None:
            raise ValueError("a custom calendar needs open and close")
        for name, value in (("open", self.open), ("close", self.close)):
            if value.second or value.microsecond:
                raise ValueError(f"{name} must be a whole minute, got {value}")
        if self.open == self.close:
            raise ValueError(
                f"close {self.close} equals open {self.open}: a session has no length "
                "(use calendar: 24x5 or 24x7 for a continuous market)"
            )
        length = self.session_minutes
        previous_end = 0
        for position, item in enumerate(self.breaks):
            start = (_minutes(item.start) - _minutes(self.open)) % 1440
            end = (_minutes(item.end) - _minutes(self.open)) % 1440
            if not 0 < start < end < length:
                raise ValueError(
                    f"breaks[{position}]: {item.start}-{item.end} must lie inside the session "
                    f"{self.open}-{self.close} and end after it starts"
                )
            if start < previous_end:
                raise ValueError(
                    f"breaks[{position}]: {item.start}-{item.end} overlaps the break before it"
                )
            previous_end = end

    @property
    def session_minutes(self) -> int:
        """Minutes from a custom session's open to its close (the evening before when
        the close is not after the open)."""
        return (_minutes(self.close) - _minutes(self.open)) % 1440 or 1440


class MarketsConfig(BaseModel):
    """``config/markets.yaml``: the markets, the default one and a symbol mapping."""

    model_config = _STRICT

    default: str | None = DEFAULT_MARKET
    """The market of a symbol not mapped; ``null`` with several markets makes every
    symbol name its market."""
    markets: dict[str, MarketConfig] = Field(
        default_factory=lambda: {DEFAULT_MARKET: MarketConfig(calendar="session")}
    )
    symbols: dict[str, str] = Field(default_factory=dict)

    @field_validator("markets")
    @classmethod
    def _names(cls, value: dict[str, MarketConfig]):
        if not value:
            raise ValueError("at least one market is needed")
        for name in value:
            try:
                check_symbol(name)
            except ValueError as exc:
                raise ValueError(f"market name {name!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _references(self):
        if self.default is not None and self.default not in self.markets:
            raise ValueError(
                f"default: unknown market {self.default!r}; expected one of {sorted(self.markets)}"
            )
        for symbol, market in self.symbols.items():
            if market not in self.markets:
                raise ValueError(
                    f"symbols.{symbol}: unknown market {market!r}; expected one of "
                    f"{sorted(self.markets)}"
                )
        return self

    def check_market(self, name: str, field: str = "--market") -> str:
        """``name`` if it is a configured market, else a clear error."""
        from regimes.errors import ConfigError

        if name not in self.markets:
            raise ConfigError(
                f"{field}: unknown market {name!r}; markets configured: {sorted(self.markets)}"
            )
        return name
