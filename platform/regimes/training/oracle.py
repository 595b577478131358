"""The oracle: the forward filter with the synthetic market's *true* parameters, run on
the same bars a model sees. Its accuracy is the ceiling any model of those bars can be
held to; every recovery figure is reported as a share of it.

What the generator knows (:mod:`regimes.data.synth`) is turned into an HMM on the bars
of a timeframe:

* **states**: the (slow, fast) regime pairs. When a fast regime lasts less than two bars
  of the timeframe, the fast regimes are averaged inside each bar instead (their
  stationary mix), and the states are the slow regimes alone.
* **transitions**: per level, stay with probability 1 - (bar minutes / mean regime
  minutes) (at least 1/K), otherwise move to one of the other regimes uniformly, as the
  generator does; the levels switch independently (Kronecker product). The generator's
  durations are geometric above a minimum; the Markov chain keeps the mean, not the
  minimum.
* **emissions**, per bar, given the regimes and the bar's minutes of the session (the
  intraday profiles are known): the bar's log return log(close/open) is Gaussian (sum of
  the minutes' drifts and variances, the market factor's variance included with the
  symbol's beta); log volume is the Fenton-Wilkinson log-normal of the sum of the
  minutes' log-normal volumes around the symbol's base volume; the log of the bar's
  range relative to the bar's sigma is Gaussian with mean and variance taken from a
  seeded simulation of the generator's own path and wick model. The three are treated
  as independent given the regimes (the range and the return's size are not quite: the
  oracle is the true-parameter filter, not an exact likelihood).

Gap bars carry no observation: the filter only predicts through them.

On a market calendar (``regimes synth --market``: 24x5, 24x7, exchange calendars) a
bar's minutes of the session are counted from its trading day's open, as the generator
lays them out (each day's own length: early closes, daylight-saving days), and the
intraday profiles span the longest generated day. Calendars with breaks inside the
session (futures halts, lunch breaks) are refused: a bar across a break would hold
fewer minutes than the oracle assumes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from regimes.config.timeframes import Session
from regimes.data.bars import session_minute_of_day, session_minutes
from regimes.data.calendars import MarketCalendar
from regimes.data.synth import (
    MINUTES_PER_YEAR,
    SynthConfig,
    SynthMarket,
    _day_layout,
    season_profiles,
    trading_days,
)
from regimes.errors import BadInputError
from regimes.model.hmm.filtering import GaussianHMMParams, filter_step

VOLUME_NOISE = 0.3
"""The generator's log-normal volume noise per minute."""
RANGE_SIMULATIONS = 4000


@dataclass(frozen=True)
class OracleStates:
    """The regime pairs the oracle tracks and how they map onto one truth level."""

    slow: np.ndarray
    fast: np.ndarray | None
    """None: fast regimes averaged inside the bar."""

    @property
    def K(self) -> int:
        return len(self.slow)


def _transition(K: int, bar_minutes: float, mean_minutes: float) -> np.ndarray:
    if K == 1:
        return np.ones((1, 1))
    stay = max(1.0 - bar_minutes / mean_minutes, 1.0 / K)
    matrix = np.full((K, K), (1.0 - stay) / (K - 1))
    np.fill_diagonal(matrix, stay)
    return matrix


def _range_calibration(minutes: int, wick: float, seed: int = 0) -> tuple[float, float]:
    """Mean and variance of log(range / bar sigma) of the generator's path over
    ``minutes`` equal minutes with wicks of ``wick`` x 0.5 x the minute's sigma."""
    rng = np.random.default_rng([seed, minutes, int(round(wick * 1000))])
    step = 1.0 / np.sqrt(minutes)
    returns = rng.standard_normal((RANGE_SIMULATIONS, minutes)) * step
    close = np.cumsum(returns, axis=1)
    open_ = close - returns
    up = np.abs(rng.standard_normal((RANGE_SIMULATIONS, minutes))) * 0.5 * step * wick
    down = np.abs(rng.standard_normal((RANGE_SIMULATIONS, minutes))) * 0.5 * step * wick
    high = (np.maximum(open_, close) + up).max(axis=1)
    low = (np.minimum(open_, close) - down).min(axis=1)
    log_range = np.log(high - low)
    return float(log_range.mean()), float(log_range.var())


def _level_arrays(regimes, slow: bool) -> dict[str, np.ndarray]:
    drift = np.array([r.drift for r in regimes], dtype=float)
    vol = np.array([r.vol for r in regimes], dtype=float)
    if slow:
        drift, vol = drift / MINUTES_PER_YEAR, vol / np.sqrt(MINUTES_PER_YEAR)
    return {
        "drift": drift,
        "vol": vol,
        "volume": np.array([r.volume for r in regimes], dtype=float),
        "wick": np.array([r.wick for r in regimes], dtype=float),
    }


class SynthOracle:
    """The true-parameter filter of a synthetic market on bars of one timeframe.

    Parameters
    ----------
    market : SynthMarket
        A generated market (it carries its :class:`SynthConfig` and per-symbol params).
    session : Session, MarketCalendar or None
        The session or market calendar the market was generated on.
    bar_minutes : int
        Minutes per bar of the timeframe (1, 5, 15, 60, or the session's length for 1d).
    """

    def __init__(
        self, market: SynthMarket, session: Session | MarketCalendar | None, bar_minutes: int
    ):
        if market.config is None:
            raise BadInputError("oracle: the market does not carry its generating config")
        self.config: SynthConfig = market.config
        self.symbols = market.params["symbols"]
        self.session = session
        self.bar_minutes = int(bar_minutes)
        if isinstance(session, MarketCalendar):
            self._grid = self._calendar_grid(session)
            self.per_day = int(self._grid[2].max())
        else:
            self._grid = None
            self.per_day = 24 * 60 if session is None else session.minutes
        self.slow = _level_arrays(self.config.slow_regimes, slow=True)
        self.fast = _level_arrays(self.config.fast_regimes, slow=False)
        Ks, Kf = len(self.config.slow_regimes), len(self.config.fast_regimes)
        self.mix_fast = Kf > 1 and self.config.fast_mean_bars < 2 * self.bar_minutes
        if self.mix_fast or Kf == 1:
            self.states = OracleStates(np.arange(Ks), None if self.mix_fast else np.zeros(Ks, int))
            transmat = _transition(Ks, self.bar_minutes, self.config.slow_mean_bars)
        else:
            self.states = OracleStates(np.repeat(np.arange(Ks), Kf), np.tile(np.arange(Kf), Ks))
            transmat = np.kron(
                _transition(Ks, self.bar_minutes, self.config.slow_mean_bars),
                _transition(Kf, self.bar_minutes, self.config.fast_mean_bars),
            )
        K = self.states.K
        self.params = GaussianHMMParams(
            np.full(K, 1.0 / K), transmat, np.zeros((K, 1)), np.ones((K, 1, 1))
        )
        season_vol, season_volume = season_profiles(self.per_day)
        self._cum = {
            name: np.r_[0.0, np.cumsum(values)]
            for name, values in (
                ("vol", season_vol),
                ("vol2", season_vol**2),
                ("volume", season_volume),
                ("volume2", season_volume**2),
            )
        }

    def _calendar_grid(self, calendar: MarketCalendar) -> tuple[np.ndarray, ...]:
        """The generator's minutes (UTC ns), each one's minute of its trading day and its
        day's length in minutes; refused for a calendar with breaks."""
        days = trading_days(self.config.start, self.config.days, calendar)
        schedule = calendar.schedule(days.min(), days.max())
        if calendar.config.breaks or schedule["break_start"].notna().any():
            raise BadInputError(
                f"oracle: {calendar.hours()} has breaks inside the session; the oracle "
                "models sessions without breaks (use a 24x5, 24x7 or break-free market)"
            )
        grid = session_minutes(days, calendar)
        minute_of_day, starts, counts, _ = _day_layout(grid, days, calendar)
        day = np.searchsorted(starts, np.arange(len(grid)), side="right") - 1
        return grid.asi8, minute_of_day, counts[day]

    def _bar_minutes_of_day(self, ts: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """(first, last) minute of the trading day that each bar spans."""
        if self._grid is None:
            first = session_minute_of_day(ts, self.session)
            first = np.rint(first - (0 if self.session is None else self.session.open_minute))
            first = np.clip(first.astype(np.int64), 0, self.per_day - 1)
            return first, np.minimum(first + self.bar_minutes, self.per_day)
        grid, minute_of_day, day_length = self._grid
        stamps = pd.DatetimeIndex(ts).as_unit("ns").asi8
        index = np.clip(np.searchsorted(grid, stamps), 0, len(grid) - 1)
        outside = grid[index] != stamps
        if outside.any():
            first_bad = pd.Timestamp(int(stamps[np.flatnonzero(outside)[0]]), tz="UTC")
            raise BadInputError(
                f"oracle: {int(outside.sum())} bar(s) do not open on a minute the market was "
                f"generated on (first at {first_bad.isoformat()}; {self.session.hours()})"
            )
        first = minute_of_day[index]
        return first, np.minimum(first + self.bar_minutes, day_length[index])

    # -- per-state moments

    def _state_moments(self) -> dict[str, np.ndarray]:
        """Per state: drift per minute, sigma multiplier, its square, volume and wick
        multipliers, and the fast drift in sigma units times the sigma multiplier."""
        s = self.states.slow
        slow, fast = self.slow, self.fast
        if self.states.fast is None:  # fast regimes mixed inside the bar (uniform shares)
            fast_vol2 = float(np.mean(fast["vol"] ** 2))
            fast_drift_vol = float(np.mean(fast["drift"] * fast["vol"]))
            fast_volume = float(np.mean(fast["volume"]))
            fast_wick = float(np.mean(fast["wick"]))
            # How much a bar's mix of fast regimes varies: the variance of a time average
            # over the bar of a process with autocorrelation exp(-t / tau).
            K = len(fast["vol"])
            tau = self.config.fast_mean_bars * (K - 1) / K
            ratio = tau / self.bar_minutes
            shrink = 2 * ratio * (1 - ratio * (1 - np.exp(-1 / ratio)))
            mix_volume = shrink * np.var(fast["volume"]) / fast_volume**2
            mix_var = shrink * np.var(fast["vol"] ** 2) / fast_vol2**2
            K_slow = len(s)
            return {
                "drift": slow["drift"][s],
                "drift_sigma": slow["vol"][s] * fast_drift_vol,
                "var": slow["vol"][s] ** 2 * fast_vol2,
                "volume": slow["volume"][s] * fast_volume,
                "wick": slow["wick"][s] * fast_wick,
                "log_volume_var": np.full(K_slow, np.log1p(mix_volume)),
                "log_sigma_var": np.full(K_slow, 0.25 * np.log1p(mix_var)),
            }
        f = self.states.fast
        return {
            "drift": slow["drift"][s],
            "drift_sigma": slow["vol"][s] * fast["vol"][f] * fast["drift"][f],
            "var": (slow["vol"][s] * fast["vol"][f]) ** 2,
            "volume": slow["volume"][s] * fast["volume"][f],
            "wick": slow["wick"][s] * fast["wick"][f],
            "log_volume_var": np.zeros(len(s)),
            "log_sigma_var": np.zeros(len(s)),
        }

    def log_emissions(self, bars: pd.DataFrame) -> np.ndarray:
        """log p(bar | state) for every bar (rows of one or more symbols) and state:
        (n, K); gap bars get 0 (no observation)."""
        n = len(bars)
        first, last = self._bar_minutes_of_day(bars["ts"])
        minutes = (last - first).astype(float)
        S1 = self._cum["vol"][last] - self._cum["vol"][first]
        S2 = self._cum["vol2"][last] - self._cum["vol2"][first]
        W1 = self._cum["volume"][last] - self._cum["volume"][first]
        W2 = self._cum["volume2"][last] - self._cum["volume2"][first]
        symbols = bars["symbol"].astype(str).to_numpy()
        missing = sorted(set(symbols) - set(self.symbols))
        if missing:
            raise BadInputError(f"oracle: no generating parameters for symbol(s) {missing[:5]}")
        beta = np.array([self.symbols[s]["beta"] for s in symbols])
        base_volume = np.array([self.symbols[s]["base_volume"] for s in symbols])
        moments = self._state_moments()
        market_var = (self.config.market_vol**2 / MINUTES_PER_YEAR) * beta**2 * S2

        # Return over the bar: Gaussian.
        mean_r = minutes[:, None] * moments["drift"] + S1[:, None] * moments["drift_sigma"]
        var_r = S2[:, None] * moments["var"] + market_var[:, None]
        log_return = np.log(bars["close"].to_numpy(float) / bars["open"].to_numpy(float))
        log_p = -0.5 * (np.log(2 * np.pi * var_r) + (log_return[:, None] - mean_r) ** 2 / var_r)

        # Volume: Fenton-Wilkinson log-normal of a sum of log-normal minutes.
        s2 = VOLUME_NOISE**2
        spread = np.log1p(np.expm1(s2) * W2 / np.maximum(W1, 1e-12) ** 2)
        centre = np.log(base_volume * W1) + s2 / 2 - spread / 2
        mean_v = centre[:, None] + np.log(moments["volume"])[None, :]
        var_v = spread[:, None] + moments["log_volume_var"][None, :]
        log_volume = np.log(np.maximum(bars["volume"].to_numpy(float), 1.0))
        log_p += -0.5 * (np.log(2 * np.pi * var_v) + (log_volume[:, None] - mean_v) ** 2 / var_v)

        # Range relative to the bar's sigma: calibrated by simulation per bar length, wick.
        log_range = np.log(
            np.maximum(np.log(bars["high"].to_numpy(float) / bars["low"].to_numpy(float)), 1e-12)
        )
        sigma = np.sqrt(var_r)
        for m in np.unique(minutes.astype(int)):
            rows = minutes.astype(int) == m
            for wick in np.unique(moments["wick"]):
                states = moments["wick"] == wick
                mean_l, var_l = _range_calibration(int(m), float(wick))
                var_l = var_l + moments["log_sigma_var"][states][None, :]
                centred = log_range[rows, None] - np.log(sigma[np.ix_(rows, states)]) - mean_l
                log_p[np.ix_(rows, states)] += -0.5 * (
                    np.log(2 * np.pi * var_l) + centred**2 / var_l
                )

        gap = bars["is_gap"].to_numpy(bool) if "is_gap" in bars else np.zeros(n, bool)
        gap |= ~np.isfinite(log_p).all(axis=1)
        log_p[gap] = 0.0
        return log_p

    def filtered(self, bars: pd.DataFrame, level: str) -> np.ndarray:
        """Filtered posterior over the regimes of ``level`` (``slow_regime`` or
        ``fast_regime``) for every bar, in the order of ``bars`` (n, K_level)."""
        if level not in ("slow_regime", "fast_regime"):
            raise BadInputError(f"oracle: level {level!r}; expected slow_regime or fast_regime")
        if level == "fast_regime" and self.states.fast is None:
            raise BadInputError(
                f"oracle: fast regimes last less than two {self.bar_minutes}-minute bars; "
                "score this timeframe against slow_regime"
            )
        order = np.lexsort((bars["ts"].to_numpy(), bars["symbol"].astype(str).to_numpy()))
        sorted_bars = bars.iloc[order]
        log_b = self.log_emissions(sorted_bars)
        symbols = sorted_bars["symbol"].astype(str).to_numpy()
        starts = np.flatnonzero(np.r_[True, symbols[1:] != symbols[:-1]])
        lengths = np.diff(np.r_[starts, len(symbols)])
        posterior = np.empty_like(log_b)
        state = np.full((len(lengths), self.states.K), np.nan)
        for t in range(int(lengths.max(initial=0))):
            active = np.flatnonzero(lengths > t)
            rows = starts[active] + t
            current, _ = filter_step(state[active], None, self.params, log_emission=log_b[rows])
            state[active] = current
            posterior[rows] = current
        codes = self.states.slow if level == "slow_regime" else self.states.fast
        K_level = int(codes.max()) + 1
        marginal = np.zeros((len(bars), K_level))
        probabilities = np.exp(posterior)
        for k in range(K_level):
            marginal[order, k] = probabilities[:, codes == k].sum(axis=1)
        return marginal
