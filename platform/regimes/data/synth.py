"""A synthetic market with known regimes, for recovery tests and the demo.

Each symbol's 1-minute log return is

    r_t = beta * m_t + mu_slow(s_t) + mu_fast(f_t) * sigma_t + sigma_t * eps_t,
    sigma_t = sigma_slow(s_t) * volmult_fast(f_t) * season_vol(minute of session)

where ``m_t`` is a shared market factor, ``s_t`` the symbol's *slow* regime (lasting days
to weeks: what 1h/1d models should see), ``f_t`` its *fast* regime (lasting minutes to
hours: what 1m/5m models should see), and ``eps_t`` idiosyncratic noise. Volume follows
the regimes' volume levels and a U-shaped intraday profile. Regimes switch by a
semi-Markov process with geometric durations and carry across the overnight break.
The session is 390 one-minute bars per weekday; a small fraction of bars is dropped as
missing, and now and then a feed outage drops a run of 5 to 30 minutes. Everything is
drawn from ``numpy.random.SeedSequence(seed)``: the same seed gives the same bars, and
symbol ``i`` gets the same data whatever the universe size.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from regimes.config.timeframes import Session
from regimes.data.bars import session_minutes
from regimes.data.calendars import MarketCalendar
from regimes.data.sql import BAR_COLUMNS
from regimes.errors import BadInputError

MINUTES_PER_YEAR = 252 * 390


@dataclass(frozen=True)
class RegimeSpec:
    """One regime's generating parameters."""

    name: str
    drift: float
    """Slow regimes: annualized log drift. Fast regimes: drift in units of sigma_t per bar."""
    vol: float
    """Slow regimes: annualized volatility. Fast regimes: multiplier of sigma_t."""
    volume: float
    """Multiplier of the symbol's base volume."""
    wick: float = 1.0
    """Multiplier of the bars' wicks (high above, low below the body): range beyond the
    move itself."""


SLOW_REGIMES: tuple[RegimeSpec, ...] = (
    RegimeSpec("calm_bull", drift=0.40, vol=0.12, volume=0.8),
    RegimeSpec("neutral", drift=0.0, vol=0.22, volume=1.0),
    RegimeSpec("stress_bear", drift=-0.80, vol=0.50, volume=1.8),
)
FAST_REGIMES: tuple[RegimeSpec, ...] = (
    RegimeSpec("quiet", drift=0.0, vol=0.6, volume=0.7),
    RegimeSpec("trend_up", drift=0.35, vol=1.0, volume=1.3),
    RegimeSpec("trend_down", drift=-0.35, vol=1.0, volume=1.3),
    RegimeSpec("burst", drift=0.0, vol=2.5, volume=2.5),
)


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. Defaults give the issue's 20 symbols x 60 trading days."""

    symbols: int = 20
    days: int = 60
    seed: int = 0
    start: date = date(2024, 1, 2)
    missing_rate: float = 0.002
    outage_rate: float = 0.02
    """Chance per symbol and day of a feed outage: a run of 5 to 30 missing minutes."""
    slow_mean_bars: float = 5 * 390.0
    slow_min_bars: int = 390
    fast_mean_bars: float = 40.0
    fast_min_bars: int = 5
    market_vol: float = 0.10
    symbol_prefix: str = "SYN"
    slow_regimes: tuple[RegimeSpec, ...] = field(default=SLOW_REGIMES)
    fast_regimes: tuple[RegimeSpec, ...] = field(default=FAST_REGIMES)

    def validate(self) -> SynthConfig:
        if not 1 <= self.symbols <= 10_000:
            raise BadInputError(f"--symbols: expected 1..10000, got {self.symbols}")
        if not 1 <= self.days <= 5_000:
            raise BadInputError(f"--days: expected 1..5000, got {self.days}")
        if not 0.0 <= self.missing_rate < 0.5:
            raise BadInputError(
                f"--missing-rate: expected 0 <= rate < 0.5, got {self.missing_rate}"
            )
        if not 0.0 <= self.outage_rate <= 1.0:
            raise BadInputError(f"outage_rate: expected 0 <= rate <= 1, got {self.outage_rate}")
        if self.seed < 0:
            raise BadInputError(f"--seed: expected a non-negative integer, got {self.seed}")
        return self


@dataclass(frozen=True)
class SynthMarket:
    """The generated market: bars (missing ones removed), the truth per bar, parameters."""

    bars: pd.DataFrame
    truth: pd.DataFrame
    params: dict
    config: SynthConfig | None = None
    """What generated it: with ``params`` (each symbol's beta, base volume), the true
    parameters an oracle filter needs (:mod:`regimes.training.oracle`)."""

    def bars_sha256(self) -> str:
        return content_sha256(self.bars, BAR_COLUMNS)


def content_sha256(frame: pd.DataFrame, columns) -> str:
    """A content hash of ``frame[columns]`` that ignores the index and row memory layout."""
    hashed = pd.util.hash_pandas_object(frame.loc[:, list(columns)], index=False)
    return hashlib.sha256(hashed.to_numpy().tobytes()).hexdigest()


def trading_days(
    start: date, count: int, session: Session | MarketCalendar | None
) -> pd.DatetimeIndex:
    """``count`` consecutive local trading days from ``start`` (session weekdays, no
    holidays; a market calendar's own days, holidays left out), as naive midnights."""
    if isinstance(session, MarketCalendar):
        return session.trading_days(start, count)
    weekdays = set(session.weekdays) if session is not None else set(range(7))
    days = []
    current = pd.Timestamp(start)
    while len(days) < count:
        if current.weekday() in weekdays:
            days.append(current)
        current += pd.Timedelta(days=1)
    return pd.DatetimeIndex(days)


def season_profiles(per_day: int) -> tuple[np.ndarray, np.ndarray]:
    """The intraday multipliers of volatility and of volume for each minute of a session
    of ``per_day`` minutes (U-shaped: busier at the open and the close)."""
    minute_of_session = np.arange(per_day)
    u = 2.0 * minute_of_session / max(per_day - 1, 1) - 1.0
    return 0.75 + 0.6 * u**2, 0.55 + 1.3 * u**2


def _regime_path(rng: np.random.Generator, n: int, n_states: int, mean: float, minimum: int):
    """Semi-Markov path: geometric durations (at least ``minimum``), a new state each switch."""
    if n_states == 1:
        return np.zeros(n, dtype=np.int16)
    path = np.empty(n, dtype=np.int16)
    position = 0
    state = int(rng.integers(n_states))
    p = 1.0 / max(mean - minimum, 1.0)
    while position < n:
        length = minimum + int(rng.geometric(p)) - 1
        path[position : position + length] = state
        position += length
        state = (state + 1 + int(rng.integers(n_states - 1))) % n_states
    return path


def _day_layout(grid: pd.DatetimeIndex, days: pd.DatetimeIndex, session) -> tuple:
    """(minute of the session of each grid minute, first minute of each day, minutes of
    each day, whether each minute opens after a closed spell).

    A fixed session has the same number of minutes every day; a market calendar's days
    differ (early closes, daylight-saving changes, breaks)."""
    if not isinstance(session, MarketCalendar):
        per_day = len(grid) // len(days)
        minute_of_session = np.tile(np.arange(per_day), len(days))
        counts = np.full(len(days), per_day)
        return minute_of_session, np.arange(len(days)) * per_day, counts, minute_of_session == 0
    day_of_minute = np.searchsorted(days.to_numpy(), session.trading_day(grid).to_numpy())
    counts = np.bincount(day_of_minute, minlength=len(days))
    starts = np.cumsum(counts) - counts
    minute_of_session = np.arange(len(grid)) - starts[day_of_minute]
    step = np.diff(grid.asi8, prepend=grid.asi8[0] - 60_000_000_000)
    after_closed = step > 60_000_000_000
    return minute_of_session, starts, counts, after_closed


def generate(config: SynthConfig, session: Session | MarketCalendar | None) -> SynthMarket:
    """Generate the market of ``config`` on the trading ``session`` or market calendar.

    On a market calendar the days are its trading days (holidays skipped, early closes
    short) and the opening jump applies after a closed spell only (not at the midnight
    of a 24x7 market).

    Examples
    --------
    >>> from regimes.config.timeframes import Session
    >>> market = generate(SynthConfig(symbols=2, days=1, seed=1),
    ...                   Session(open="14:30", close="21:00", weekdays=[0, 1, 2, 3, 4]))
    >>> sorted(market.bars["symbol"].unique())
    ['SYN000', 'SYN001']
    """
    config.validate()
    days = trading_days(config.start, config.days, session)
    grid = session_minutes(days, session)
    n = len(grid)
    minute_of_session, day_starts, day_counts, first_of_day = _day_layout(grid, days, session)
    profiles = season_profiles(int(day_counts.max()))
    season_vol, season_volume = (p[minute_of_session] for p in profiles)

    root = np.random.SeedSequence(config.seed)
    market_seed, *symbol_seeds = root.spawn(config.symbols + 1)
    market_rng = np.random.default_rng(market_seed)
    sigma_market = config.market_vol / np.sqrt(MINUTES_PER_YEAR)
    market = market_rng.standard_normal(n) * sigma_market * season_vol

    slow_drift = np.array([r.drift for r in config.slow_regimes]) / MINUTES_PER_YEAR
    slow_sigma = np.array([r.vol for r in config.slow_regimes]) / np.sqrt(MINUTES_PER_YEAR)
    slow_volume = np.array([r.volume for r in config.slow_regimes])
    fast_drift = np.array([r.drift for r in config.fast_regimes])
    fast_vol = np.array([r.vol for r in config.fast_regimes])
    fast_volume = np.array([r.volume for r in config.fast_regimes])
    slow_wick = np.array([r.wick for r in config.slow_regimes])
    fast_wick = np.array([r.wick for r in config.fast_regimes])

    bar_frames, truth_frames, symbol_params = [], [], {}
    width = max(3, len(str(config.symbols - 1)))
    for index, seed in enumerate(symbol_seeds):
        symbol = f"{config.symbol_prefix}{index:0{width}d}"
        rng = np.random.default_rng(seed)
        beta = float(rng.uniform(0.6, 1.4))
        base_price = float(np.exp(rng.uniform(np.log(20.0), np.log(500.0))))
        base_volume = float(np.exp(rng.uniform(np.log(2_000.0), np.log(50_000.0))))
        slow = _regime_path(
            rng, n, len(config.slow_regimes), config.slow_mean_bars, config.slow_min_bars
        )
        fast = _regime_path(
            rng, n, len(config.fast_regimes), config.fast_mean_bars, config.fast_min_bars
        )
        sigma = slow_sigma[slow] * fast_vol[fast] * season_vol
        noise = rng.standard_normal(n)
        returns = beta * market + slow_drift[slow] + fast_drift[fast] * sigma + sigma * noise
        # Overnight: the day's first open jumps from the previous close.
        overnight = np.where(
            first_of_day, rng.standard_normal(n) * slow_sigma[slow] * np.sqrt(60.0), 0.0
        )
        overnight[0] = 0.0
        log_close = np.log(base_price) + np.cumsum(overnight + returns)
        log_open = log_close - returns
        wick = (
            np.abs(rng.standard_normal((2, n))) * 0.5 * sigma * (slow_wick[slow] * fast_wick[fast])
        )
        open_ = np.exp(log_open)
        close = np.exp(log_close)
        high = np.maximum(open_, close) * np.exp(wick[0])
        low = np.minimum(open_, close) * np.exp(-wick[1])
        volume = np.round(
            base_volume
            * slow_volume[slow]
            * fast_volume[fast]
            * season_volume
            * np.exp(rng.normal(0.0, 0.3, n))
        )
        missing = rng.random(n) < config.missing_rate
        for day in np.flatnonzero(rng.random(len(days)) < config.outage_rate):
            length = int(rng.integers(5, 31))
            begin = day_starts[day] + int(rng.integers(0, max(day_counts[day] - length, 1)))
            missing[begin : begin + length] = True
        missing[0] = False  # every symbol's history starts with a real bar
        # Round to ticks; rounding is monotone, so low <= open, close <= high still holds.
        open_, high, low, close = (np.round(a, 4) for a in (open_, high, low, close))
        keep = ~missing
        bar_frames.append(
            pd.DataFrame(
                {
                    "symbol": symbol,
                    "timeframe": "1m",
                    "ts": grid[keep],
                    "open": open_[keep],
                    "high": high[keep],
                    "low": low[keep],
                    "close": close[keep],
                    "volume": volume[keep],
                    "is_gap": False,
                }
            )
        )
        truth_frames.append(
            pd.DataFrame(
                {
                    "symbol": symbol,
                    "ts": grid,
                    "slow_regime": slow.astype(np.int8),
                    "fast_regime": fast.astype(np.int8),
                    "missing": missing,
                }
            )
        )
        symbol_params[symbol] = {
            "beta": beta,
            "base_price": base_price,
            "base_volume": base_volume,
            "missing_bars": int(missing.sum()),
        }

    bars = pd.concat(bar_frames, ignore_index=True)
    truth = pd.concat(truth_frames, ignore_index=True)
    slow_names = [r.name for r in config.slow_regimes]
    fast_names = [r.name for r in config.fast_regimes]
    truth["slow_label"] = pd.Categorical.from_codes(truth["slow_regime"], slow_names)
    truth["fast_label"] = pd.Categorical.from_codes(truth["fast_regime"], fast_names)
    params = {
        "config": {
            **{
                k: v for k, v in asdict(config).items() if k not in ("slow_regimes", "fast_regimes")
            },
            "start": config.start.isoformat(),
        },
        "slow_regimes": [asdict(r) for r in config.slow_regimes],
        "fast_regimes": [asdict(r) for r in config.fast_regimes],
        "units": {
            "slow.drift": "annualized log drift (252 x 390 one-minute bars a year)",
            "slow.vol": "annualized volatility",
            "fast.drift": "drift per bar in units of the bar's sigma",
            "fast.vol": "multiplier of the bar's sigma",
            "volume": "multiplier of the symbol's base volume",
        },
        "session": None
        if session is None or isinstance(session, MarketCalendar)
        else json.loads(session.model_dump_json()),
        "symbols": symbol_params,
    }
    if isinstance(session, MarketCalendar):
        params["market"] = session.as_dict()
    return SynthMarket(bars=bars, truth=truth, params=params, config=config)


def write_truth(market: SynthMarket, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``truth.parquet`` and ``params.json`` into ``out_dir``; returns both paths.

    Files are written beside their final names and renamed into place, so a reader
    never sees a half-written file.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    truth_path, params_path = out / "truth.parquet", out / "params.json"
    partial_truth, partial_params = out / ".truth.parquet.partial", out / ".params.json.partial"
    market.truth.to_parquet(partial_truth, index=False)
    partial_params.write_text(json.dumps(market.params, indent=2, sort_keys=True))
    partial_truth.replace(truth_path)
    partial_params.replace(params_path)
    return truth_path, params_path


def read_truth(synth_dir: str | Path) -> pd.DataFrame:
    """The truth written by :func:`write_truth`."""
    path = Path(synth_dir) / "truth.parquet"
    if not path.is_file():
        raise BadInputError(f"{path}: no synthetic truth here; run `regimes synth` first")
    return pd.read_parquet(path)
