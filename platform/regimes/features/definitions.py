"""The 21 features: windows, rolling blocks and the one place each formula is written."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from regimes.config.spec import FeatureSpec
from regimes.data.bars import session_minute_of_day
from regimes.data.calendars import MarketCalendar
from regimes.data.markets import SymbolCalendars
from regimes.errors import BadInputError

SNAPSHOT_VERSION = 4  # 2: trackers grouped by window (regimes.features.trackers);
# 4: the buffer may compute some of a selection (``selected_from`` recorded) and its
# day-anchored windows restart at a market day (``last_day``, ``__timeframe__`` recorded)
_NEVER = np.iinfo(np.int64).min  # last_ts of a symbol that has had no bar yet
_ZERO_STD_RELATIVE = 1e-9
_CHUNK_ROWS = 65_536

# --------------------------------------------------------------------------- definitions


def _window(spec: FeatureSpec, name: str, key: str = "n") -> int:
    return int(spec.features[name].windows[key])


def warmup_lengths(spec: FeatureSpec) -> dict[str, int]:
    """Real bars each feature needs before it has a value.

    EMAs are seeded with the first close and count as warm for twice their span.
    """
    key = id(spec)
    cached = _WARMUP_CACHE.get(key)
    if cached is not None and cached[0] is spec:
        return cached[1]
    lengths = _warmup_lengths(spec)
    _WARMUP_CACHE[key] = (spec, lengths)
    return lengths


_WARMUP_CACHE: dict[int, tuple[FeatureSpec, dict[str, int]]] = {}


def _warmup_lengths(spec: FeatureSpec) -> dict[str, int]:
    w = lambda name, key="n": _window(spec, name, key)  # noqa: E731
    return {
        "clv": 1,
        "pullback_depth": w("pullback_depth"),
        "r5": w("r5") + 1,
        "r15": w("r15") + 1,
        "r60": w("r60") + 1,
        "vwap_60": w("vwap_60"),
        "dist_vwap_60": w("dist_vwap_60"),
        "tod_sin": 1,
        "macd": 2 * max(w("macd", "fast"), w("macd", "slow")),
        "stoch_k": w("stoch_k"),
        "sma_20": w("sma_20"),
        "ema_20": 2 * w("ema_20"),
        "vol_of_vol": w("vol_of_vol", "inner") + w("vol_of_vol", "outer"),
        "vol_z_60": w("vol_z_60"),
        "range_1": 1,
        "rv_15": w("rv_15") + 1,
        "rv_60": w("rv_60") + 1,
        "relvol_60": w("relvol_60"),
        "range_z_60": w("range_z_60"),
        "bb_middle": w("bb_middle"),
        "bb_width": w("bb_width"),
    }


@dataclass(frozen=True)
class Block:
    """A building block: a rolling statistic of one input series over one window.

    kind: ``mean`` / ``std`` (rolling moments), ``max`` / ``min`` (extremes), ``nonzero``
    (count of non-zero values), ``lag`` (the series ``window`` real bars back), ``ema``
    (exponential average of span ``window``, seeded with the first value). ``anchored``:
    the window resets where the market's trading day does (``anchor: market_day``) and
    holds the last min(window, bars since the day began) values.
    """

    series: str
    kind: str
    window: int
    anchored: bool = False

    @property
    def key(self) -> str:
        return block_key(self.kind, self.series, self.window, self.anchored)


def block_key(kind: str, series: str, window: int, anchored: bool = False) -> str:
    return f"{kind}:{series}:{window}" + ("@day" if anchored else "")


def day_anchored(spec: FeatureSpec, name: str) -> bool:
    """Whether feature ``name``'s windows reset at the market's trading day."""
    return spec.features[name].anchor == "market_day"


def blocks_for(spec: FeatureSpec, names: Sequence[str]) -> list[Block]:
    """The building blocks the given features need (deduplicated, stable order)."""
    w = lambda name, key="n": _window(spec, name, key)  # noqa: E731
    day = lambda name: day_anchored(spec, name)  # noqa: E731
    needs: dict[str, list[Block]] = {
        "clv": [],
        "pullback_depth": [Block("close", "max", w("pullback_depth"))],
        "r5": [Block("logc", "lag", w("r5"))],
        "r15": [Block("logc", "lag", w("r15"))],
        "r60": [Block("logc", "lag", w("r60"))],
        "vwap_60": _vwap_blocks(w("vwap_60"), day("vwap_60")),
        "dist_vwap_60": _vwap_blocks(w("dist_vwap_60"), day("dist_vwap_60")),
        "tod_sin": [],
        "macd": [
            Block("close", "ema", w("macd", "fast")),
            Block("close", "ema", w("macd", "slow")),
        ],
        "stoch_k": [Block("high", "max", w("stoch_k")), Block("low", "min", w("stoch_k"))],
        "sma_20": [Block("close", "mean", w("sma_20"))],
        "ema_20": [Block("close", "ema", w("ema_20"))],
        "vol_of_vol": [
            Block("r1sq", "mean", w("vol_of_vol", "inner")),
            Block(f"rv{w('vol_of_vol', 'inner')}", "std", w("vol_of_vol", "outer")),
        ],
        "vol_z_60": [
            Block("logv", "mean", w("vol_z_60"), day("vol_z_60")),
            Block("logv", "std", w("vol_z_60"), day("vol_z_60")),
        ],
        "range_1": [],
        "rv_15": [Block("r1sq", "mean", w("rv_15"))],
        "rv_60": [Block("r1sq", "mean", w("rv_60"))],
        "relvol_60": [
            Block("volume", "mean", w("relvol_60"), day("relvol_60")),
            Block("volume", "nonzero", w("relvol_60"), day("relvol_60")),
        ],
        "range_z_60": [
            Block("range", "mean", w("range_z_60")),
            Block("range", "std", w("range_z_60")),
        ],
        "bb_middle": [Block("close", "mean", w("bb_middle"))],
        "bb_width": [Block("close", "mean", w("bb_width")), Block("close", "std", w("bb_width"))],
    }
    seen: dict[str, Block] = {}
    for name in names:
        for block in needs[name]:
            seen.setdefault(block.key, block)
    return list(seen.values())


def _vwap_blocks(n: int, anchored: bool) -> list[Block]:
    return [
        Block("tpv", "mean", n, anchored),
        Block("volume", "mean", n, anchored),
        Block("typical", "mean", n, anchored),
        Block("volume", "nonzero", n, anchored),
    ]


def _zscore(x, mean, std):
    with np.errstate(invalid="ignore", divide="ignore"):
        flat = std <= _ZERO_STD_RELATIVE * np.abs(mean)
        return np.where(flat, 0.0, (x - mean) / np.where(flat, 1.0, std))


# Each formula: (bar fields, block getter, windows of the feature) -> values over rows.
# ``bar`` holds open/high/low/close/volume/tod (and logc when the caller has it), ``b`` reads
# a block value by (kind, series, window, anchored), ``w`` the feature's window by key and
# ``w.anchored`` whether its windows reset at the market's trading day (:func:`day_anchored`).


def _clv(bar, b, w):
    high, low, close = bar["high"], bar["low"], bar["close"]
    span = high - low
    return np.where(span > 0, ((close - low) - (high - close)) / np.where(span > 0, span, 1.0), 0.0)


def _pullback_depth(bar, b, w):
    peak = b("max", "close", w("n"))
    return (peak - bar["close"]) / peak


def _log_return(bar, b, w):
    return _logc(bar) - b("lag", "logc", w("n"))


def _vwap(bar, b, w):
    n, day = w("n"), w.anchored
    traded = b("nonzero", "volume", n, day) > 0
    return np.where(
        traded,
        b("mean", "tpv", n, day) / np.where(traded, b("mean", "volume", n, day), 1.0),
        b("mean", "typical", n, day),
    )


def _dist_vwap(bar, b, w):
    vwap = _vwap(bar, b, w)
    return (bar["close"] - vwap) / vwap


def _tod_sin(bar, b, w):
    return np.sin(2.0 * np.pi * bar["tod"])


def _macd(bar, b, w):
    return b("ema", "close", w("fast")) - b("ema", "close", w("slow"))


def _stoch_k(bar, b, w):
    hh, ll = b("max", "high", w("n")), b("min", "low", w("n"))
    span = hh - ll
    return np.where(span > 0, 100.0 * (bar["close"] - ll) / np.where(span > 0, span, 1.0), 50.0)


def _close_mean(bar, b, w):
    return b("mean", "close", w("n"))


def _ema(bar, b, w):
    return b("ema", "close", w("n"))


def _vol_of_vol(bar, b, w):
    return b("std", f"rv{w('inner')}", w("outer"))


def _vol_z(bar, b, w):
    n, day = w("n"), w.anchored
    return _zscore(np.log1p(bar["volume"]), b("mean", "logv", n, day), b("std", "logv", n, day))


def _range_1(bar, b, w):
    return np.log(bar["high"] / bar["low"])


def _realised_vol(bar, b, w):
    return np.sqrt(np.maximum(b("mean", "r1sq", w("n")), 0.0))


def _relvol(bar, b, w):
    n, day = w("n"), w.anchored
    traded = b("nonzero", "volume", n, day) > 0
    volume = b("mean", "volume", n, day)
    return np.where(traded, bar["volume"] / np.where(traded, volume, 1.0), 1.0)


def _range_z(bar, b, w):
    n = w("n")
    return _zscore(np.log(bar["high"] / bar["low"]), b("mean", "range", n), b("std", "range", n))


def _bb_width(bar, b, w):
    n = w("n")
    k = float(w("k", 2))
    return 2.0 * k * b("std", "close", n) / b("mean", "close", n)


FORMULAS = {
    "clv": _clv,
    "pullback_depth": _pullback_depth,
    "r5": _log_return,
    "r15": _log_return,
    "r60": _log_return,
    "vwap_60": _vwap,
    "dist_vwap_60": _dist_vwap,
    "tod_sin": _tod_sin,
    "macd": _macd,
    "stoch_k": _stoch_k,
    "sma_20": _close_mean,
    "ema_20": _ema,
    "vol_of_vol": _vol_of_vol,
    "vol_z_60": _vol_z,
    "range_1": _range_1,
    "rv_15": _realised_vol,
    "rv_60": _realised_vol,
    "relvol_60": _relvol,
    "range_z_60": _range_z,
    "bb_middle": _close_mean,
    "bb_width": _bb_width,
}
"""The formula of each feature (the one place it is written; batch and online call it)."""


def _logc(bar: dict[str, np.ndarray]) -> np.ndarray:
    """Log closes of the rows (the caller's, when it computed them already)."""
    logc = bar.get("logc")
    return np.log(bar["close"]) if logc is None else logc


class _Windows:
    """A feature's windows for its formula: ``w(key)`` the window (``default`` when the
    spec leaves it out), ``w.anchored`` whether they reset at the market's trading day."""

    __slots__ = ("anchored", "windows")

    def __init__(self, windows: dict, anchored: bool):
        self.windows, self.anchored = windows, anchored

    def __call__(self, key: str, default=None):
        return int(self.windows[key]) if default is None else self.windows.get(key, default)


@dataclass(frozen=True)
class _Plan:
    """What :func:`_assemble` needs per feature, looked up once per (spec, names):
    the formula and its windows, and the warm-up length of every column."""

    formulas: tuple
    warm: np.ndarray  # (F, 1) bars each column needs


def _plan(spec: FeatureSpec, names: tuple[str, ...]) -> _Plan:
    key = (id(spec), names)
    cached = _PLAN_CACHE.get(key)
    if cached is not None and cached[0] is spec:
        return cached[1]
    warm = warmup_lengths(spec)
    formulas = []
    for name in names:
        w = _Windows(dict(spec.features[name].windows), day_anchored(spec, name))
        formulas.append((FORMULAS[name], w))
    plan = _Plan(tuple(formulas), np.array([warm[name] for name in names])[:, None])
    _PLAN_CACHE[key] = (spec, plan)
    return plan


_PLAN_CACHE: dict[tuple[int, tuple[str, ...]], tuple[FeatureSpec, _Plan]] = {}


def _assemble(
    spec: FeatureSpec,
    names: Sequence[str],
    bar: dict[str, np.ndarray],
    blocks: dict[str, np.ndarray],
    count: np.ndarray,
) -> np.ndarray:
    """Feature values from bar fields and block values; NaN where not warmed up.

    ``bar`` holds open/high/low/close/volume/tod (arrays over rows; logc too when the
    caller has it), ``blocks`` the block values by :attr:`Block.key`, ``count`` the real
    bars seen including this one. The batch and the online path both call this, and every
    formula lives in :data:`FORMULAS` once. Each formula writes one row of a preallocated
    (F, rows) array and the warm-up mask is applied to all columns in one operation; the
    result is its (rows, F) transpose.
    """
    plan = _plan(spec, tuple(names))

    def b(kind: str, series: str, window: int, anchored: bool = False) -> np.ndarray:
        return blocks[block_key(kind, series, window, anchored)]

    out = np.empty((len(plan.formulas), len(count)))
    with np.errstate(invalid="ignore", divide="ignore"):
        for column, (formula, w) in enumerate(plan.formulas):
            out[column] = formula(bar, b, w)
    np.copyto(out, np.nan, where=plan.warm > count)
    return out.T


def time_of_day(ts_ns: np.ndarray, session, symbols=None) -> np.ndarray:
    """Fraction of the session elapsed at each bar open (0 at the open), in the
    session's local time; without a session, the fraction of the UTC day.

    ``session`` may also be a market calendar (the position in the market's trading
    day, e.g. from 17:00 New York for FX) or per-symbol calendars of a model over
    several markets (``symbols`` then names each row's symbol)."""
    ts_ns = np.asarray(ts_ns, dtype=np.int64)
    if isinstance(session, MarketCalendar):
        return session.time_of_day(ts_ns)
    if isinstance(session, SymbolCalendars):
        return _time_of_day_per_symbol(ts_ns, session, symbols)
    unique, inverse = np.unique(ts_ns, return_inverse=True)
    if len(unique) <= _FEW_TIMESTAMPS:
        # The live path: one or a few timestamps per step; pandas would cost more than
        # the features themselves.
        zone = ZoneInfo(session.timezone) if session is not None else None
        minutes = np.empty(len(unique))
        for i, value in enumerate(unique.tolist()):
            stamp = datetime.fromtimestamp(value / 1e9, tz=UTC)
            local = stamp.astimezone(zone) if zone is not None else stamp
            minutes[i] = local.hour * 60 + local.minute + local.second / 60.0
        minute = minutes[inverse.reshape(-1)]
    else:
        minute = session_minute_of_day(pd.DatetimeIndex(ts_ns, tz="UTC"), session)
    if session is None:
        return minute / 1440.0
    return (minute - session.open_minute) / float(session.minutes)


_FEW_TIMESTAMPS = 8


def _time_of_day_per_symbol(ts_ns: np.ndarray, calendars: SymbolCalendars, symbols) -> np.ndarray:
    if symbols is None or len(symbols) != len(ts_ns):
        raise BadInputError("time_of_day: a model over several markets needs each row's symbol")
    symbols = np.asarray(symbols, dtype=object)
    out = np.empty(len(ts_ns))
    groups: dict[int, tuple[object, list[int]]] = {}
    for position, symbol in enumerate(symbols):
        calendar = calendars.of(symbol)
        groups.setdefault(id(calendar), (calendar, []))[1].append(position)
    for calendar, positions in groups.values():
        out[positions] = time_of_day(ts_ns[positions], calendar)
    return out


def _derived_series(bar: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-bar input series of the blocks (all but r1sq and rv*, which need history)."""
    high, low, close, volume = bar["high"], bar["low"], bar["close"], bar["volume"]
    typical = (high + low + close) / 3.0
    return {
        "close": close,
        "high": high,
        "low": low,
        "volume": volume,
        "logc": np.log(close),
        "typical": typical,
        "tpv": typical * volume,
        "logv": np.log1p(volume),
        "range": np.log(high / low),
    }


def _ns(ts: pd.Series) -> np.ndarray:
    """UTC nanoseconds since the epoch of a tz-aware timestamp column, without boxing."""
    return pd.DatetimeIndex(ts).as_unit("ns").asi8


def _as_ns(ts, m: int) -> np.ndarray:
    if isinstance(ts, pd.DatetimeIndex):
        stamps = ts
    elif isinstance(ts, np.ndarray) and ts.dtype.kind == "i":
        stamps = None  # already UTC nanoseconds
    else:
        stamps = pd.DatetimeIndex(ts)
    if stamps is None:
        values = ts
    else:
        if stamps.tz is None:
            raise BadInputError("update: ts must be timezone-aware UTC")
        values = stamps.as_unit("ns").asi8
    if len(values) != m:
        raise BadInputError(f"update: ts has {len(values)} values for {m} symbols")
    return values
