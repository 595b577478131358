"""The fixed 21-feature set, in batch and online, with exact parity (plan 2.2, 2.3, 6.2).

One place defines every feature: :data:`FEATURE_FORMULAS` names the building blocks each
one uses and :func:`_assemble` turns those blocks into the feature values. The batch path
(:func:`compute_batch`) builds the blocks with vectorized numpy over a symbol's whole
history; the online path (:class:`OnlineFeatureBuffer`) builds the same blocks bar by bar
with running moments, ring buffers and block-wise extremes, for many symbols at once.
Both then call the same :func:`_assemble`, so a formula is written exactly once.

Policies (also in ``docs/features.md``):

* **No look-ahead.** A feature at bar t uses bars up to and including t only.
* **Gaps.** A gap bar (``is_gap``, no prices) does not enter any window: windows count
  real bars. The gap bar's own feature row is NaN and flagged ``is_gap``.
* **Warm-up.** A feature whose window is not yet filled with real bars is NaN; a row with
  any such feature is flagged ``is_warmup``. Values are never filled in.
* **Fallbacks.** ``clv`` is 0 on a flat bar (high == low); ``stoch_k`` is 50 when the
  window's high equals its low; ``vwap_60`` is the mean typical price when the window
  traded no volume; ``relvol_60`` is 1 then; ``vol_z_60`` and ``range_z_60`` are 0 when
  the window's standard deviation is 0. Standard deviations are population (ddof=0).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import repeat
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from regimes.bars import session_minute_of_day
from regimes.config import FIXED_FEATURES, FeatureSpec, Session
from regimes.errors import BadInputError
from regimes.paths import check_symbol
from regimes.timeframes import check_timeframe

SNAPSHOT_VERSION = 1
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
    (exponential average of span ``window``, seeded with the first value).
    """

    series: str
    kind: str
    window: int

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.series}:{self.window}"


def blocks_for(spec: FeatureSpec, names: Sequence[str]) -> list[Block]:
    """The building blocks the given features need (deduplicated, stable order)."""
    w = lambda name, key="n": _window(spec, name, key)  # noqa: E731
    needs: dict[str, list[Block]] = {
        "clv": [],
        "pullback_depth": [Block("close", "max", w("pullback_depth"))],
        "r5": [Block("logc", "lag", w("r5"))],
        "r15": [Block("logc", "lag", w("r15"))],
        "r60": [Block("logc", "lag", w("r60"))],
        "vwap_60": _vwap_blocks(w("vwap_60")),
        "dist_vwap_60": _vwap_blocks(w("dist_vwap_60")),
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
        "vol_z_60": [Block("logv", "mean", w("vol_z_60")), Block("logv", "std", w("vol_z_60"))],
        "range_1": [],
        "rv_15": [Block("r1sq", "mean", w("rv_15"))],
        "rv_60": [Block("r1sq", "mean", w("rv_60"))],
        "relvol_60": [
            Block("volume", "mean", w("relvol_60")),
            Block("volume", "nonzero", w("relvol_60")),
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


def _vwap_blocks(n: int) -> list[Block]:
    return [
        Block("tpv", "mean", n),
        Block("volume", "mean", n),
        Block("typical", "mean", n),
        Block("volume", "nonzero", n),
    ]


def _zscore(x, mean, std):
    with np.errstate(invalid="ignore", divide="ignore"):
        flat = std <= _ZERO_STD_RELATIVE * np.abs(mean)
        return np.where(flat, 0.0, (x - mean) / np.where(flat, 1.0, std))


def _assemble(
    spec: FeatureSpec,
    names: Sequence[str],
    bar: dict[str, np.ndarray],
    blocks: dict[str, np.ndarray],
    count: np.ndarray,
) -> np.ndarray:
    """Feature values from bar fields and block values; NaN where not warmed up.

    ``bar`` holds open/high/low/close/volume/tod (arrays over rows), ``blocks`` the block
    values by :attr:`Block.key`, ``count`` the real bars seen including this one. The
    batch and the online path both call this: every formula lives here once.
    """
    w = lambda name, key="n": _window(spec, name, key)  # noqa: E731
    b = lambda kind, series, window: blocks[f"{kind}:{series}:{window}"]  # noqa: E731
    high, low, close, volume = bar["high"], bar["low"], bar["close"], bar["volume"]
    logc = np.log(close)
    warm = warmup_lengths(spec)
    out = np.full((len(close), len(names)), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        for column, name in enumerate(names):
            if name == "clv":
                span = high - low
                value = np.where(
                    span > 0, ((close - low) - (high - close)) / np.where(span > 0, span, 1.0), 0.0
                )
            elif name == "pullback_depth":
                peak = b("max", "close", w(name))
                value = (peak - close) / peak
            elif name in ("r5", "r15", "r60"):
                value = logc - b("lag", "logc", w(name))
            elif name in ("vwap_60", "dist_vwap_60"):
                n = w(name)
                traded = b("nonzero", "volume", n) > 0
                vwap = np.where(
                    traded,
                    b("mean", "tpv", n) / np.where(traded, b("mean", "volume", n), 1.0),
                    b("mean", "typical", n),
                )
                value = vwap if name == "vwap_60" else (close - vwap) / vwap
            elif name == "tod_sin":
                value = np.sin(2.0 * np.pi * bar["tod"])
            elif name == "macd":
                value = b("ema", "close", w(name, "fast")) - b("ema", "close", w(name, "slow"))
            elif name == "stoch_k":
                hh, ll = b("max", "high", w(name)), b("min", "low", w(name))
                span = hh - ll
                value = np.where(
                    span > 0, 100.0 * (close - ll) / np.where(span > 0, span, 1.0), 50.0
                )
            elif name in ("sma_20", "bb_middle"):
                value = b("mean", "close", w(name))
            elif name == "ema_20":
                value = b("ema", "close", w(name))
            elif name == "vol_of_vol":
                inner, outer = w(name, "inner"), w(name, "outer")
                value = b("std", f"rv{inner}", outer)
            elif name == "vol_z_60":
                n = w(name)
                value = _zscore(np.log1p(volume), b("mean", "logv", n), b("std", "logv", n))
            elif name == "range_1":
                value = np.log(high / low)
            elif name in ("rv_15", "rv_60"):
                value = np.sqrt(np.maximum(b("mean", "r1sq", w(name)), 0.0))
            elif name == "relvol_60":
                n = w(name)
                traded = b("nonzero", "volume", n) > 0
                value = np.where(
                    traded, volume / np.where(traded, b("mean", "volume", n), 1.0), 1.0
                )
            elif name == "range_z_60":
                n = w(name)
                value = _zscore(np.log(high / low), b("mean", "range", n), b("std", "range", n))
            elif name == "bb_width":
                n = w(name)
                k = float(spec.features[name].windows.get("k", 2))
                value = 2.0 * k * b("std", "close", n) / b("mean", "close", n)
            else:  # pragma: no cover - FIXED_FEATURES and this chain are kept in step by tests
                raise KeyError(name)
            out[:, column] = np.where(count >= warm[name], value, np.nan)
    return out


def time_of_day(ts_ns: np.ndarray, session: Session | None) -> np.ndarray:
    """Fraction of the session elapsed at each bar open (0 at the open), in the
    session's local time; without a session, the fraction of the UTC day."""
    ts_ns = np.asarray(ts_ns, dtype=np.int64)
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


# --------------------------------------------------------------------------- batch


# Rolling windows, batch and online, use one block ("two stacks") scheme and the same
# arithmetic, so both paths give bit-identical results and rounding never accumulates
# over a long history. The stream of a series is cut into blocks of w values. A window
# ending at offset j of a block is the suffix j+1.. of the previous block plus the prefix
# ..j of the current one. Prefix statistics grow by Welford additions; the previous
# block's suffix statistics are computed once, when the next block starts (O(w) per w
# values: amortized O(1) per value). Two groups combine by Chan's formula. Nothing is
# ever subtracted out of a running sum, so a window of zeros has exactly zero variance.


def _welford_add(mean, m2, x, k):
    """Add value ``x`` as the ``k``-th value of a group (mean, m2 of the first k-1)."""
    delta = x - mean
    mean = mean + delta / k
    m2 = m2 + delta * (x - mean)
    return mean, m2


def _welford_suffix(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and m2 of ``block[:, j:]`` for every j (rows are independent blocks)."""
    rows, w = block.shape
    means, m2s = np.empty((rows, w)), np.empty((rows, w))
    mean, m2 = np.zeros(rows), np.zeros(rows)
    for j in range(w - 1, -1, -1):
        mean, m2 = _welford_add(mean, m2, block[:, j], w - j)
        means[:, j], m2s[:, j] = mean, m2
    return means, m2s


def _welford_prefix(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and m2 of ``block[:, :j + 1]`` for every j."""
    rows, w = block.shape
    means, m2s = np.empty((rows, w)), np.empty((rows, w))
    mean, m2 = np.zeros(rows), np.zeros(rows)
    for j in range(w):
        mean, m2 = _welford_add(mean, m2, block[:, j], j + 1)
        means[:, j], m2s[:, j] = mean, m2
    return means, m2s


def _chan_combine(mean_a, m2_a, n_a, mean_b, m2_b, n_b):
    """Mean and m2 of the union of two groups (Chan et al.)."""
    n = n_a + n_b
    delta = mean_b - mean_a
    mean = mean_a + delta * (n_b / n)
    m2 = m2_a + m2_b + delta * delta * (n_a * n_b / n)
    return mean, m2


def _window_moments(prefix_mean, prefix_m2, suffix_mean, suffix_m2, j, w):
    """Window mean and m2 from the current block's prefix stats at offset ``j`` and the
    previous block's suffix stats at ``j + 1`` (unused when the prefix is the window)."""
    n_b = j + 1
    n_a = w - n_b
    mean, m2 = prefix_mean.copy(), prefix_m2.copy()
    spans = n_a > 0
    if spans.any():
        mean[spans], m2[spans] = _chan_combine(
            suffix_mean[spans],
            suffix_m2[spans],
            n_a[spans],
            prefix_mean[spans],
            prefix_m2[spans],
            n_b[spans],
        )
    return mean, m2


def _blocks(x: np.ndarray, w: int, fill: float) -> np.ndarray:
    count = -(-len(x) // w)
    padded = np.full(count * w, fill)
    padded[: len(x)] = x
    return padded.reshape(count, w)


def _rolling_moments(x: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Trailing-window mean and population std over ``w`` values (NaN before w)."""
    n = len(x)
    mean_out, std_out = np.full(n, np.nan), np.full(n, np.nan)
    if n < w:
        return mean_out, std_out
    block = _blocks(x, w, 0.0)
    prefix_mean, prefix_m2 = (a.ravel()[:n] for a in _welford_prefix(block))
    suffix_mean, suffix_m2 = (a.ravel() for a in _welford_suffix(block))
    t = np.arange(n)
    j = t % w
    # The previous block's suffix from slot j+1; clipped where unused (j = w-1 or block 0).
    source = np.clip(t - w + 1, 0, None)
    mean, m2 = _window_moments(prefix_mean, prefix_m2, suffix_mean[source], suffix_m2[source], j, w)
    valid = t >= w - 1
    mean_out[valid] = mean[valid]
    std_out[valid] = np.sqrt(np.maximum(m2[valid], 0.0) / w)
    return mean_out, std_out


def _rolling_mean(x: np.ndarray, w: int) -> np.ndarray:
    """Trailing-window mean over ``w`` values from block prefix and suffix sums."""
    n = len(x)
    out = np.full(n, np.nan)
    if n < w:
        return out
    block = _blocks(x, w, 0.0)
    prefix = np.cumsum(block, axis=1).ravel()[:n]
    suffix = np.cumsum(block[:, ::-1], axis=1)[:, ::-1].ravel()
    t = np.arange(n)
    j = t % w
    total = np.where(j + 1 < w, suffix[np.clip(t - w + 1, 0, None)] + prefix, prefix)
    out[w - 1 :] = total[w - 1 :] / w
    return out


def _rolling_extreme(x: np.ndarray, w: int, kind: str) -> np.ndarray:
    n = len(x)
    out = np.full(n, np.nan)
    if n < w:
        return out
    op = np.maximum if kind == "max" else np.minimum
    block = _blocks(x, w, -np.inf if kind == "max" else np.inf)
    prefix = op.accumulate(block, axis=1).ravel()[:n]
    suffix = op.accumulate(block[:, ::-1], axis=1)[:, ::-1].ravel()
    t = np.arange(n)
    j = t % w
    carried = np.where(j + 1 < w, suffix[np.clip(t - w + 1, 0, None)], prefix)
    out[w - 1 :] = op(prefix, carried)[w - 1 :]
    return out


def _rolling_nonzero(x: np.ndarray, w: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    if len(x) < w:
        return out
    cumulative = np.concatenate([[0], np.cumsum(x != 0)])
    out[w - 1 :] = cumulative[w:] - cumulative[:-w]
    return out


def _lagged(x: np.ndarray, k: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    out[k:] = x[:-k] if k else x
    return out


def _ema(x: np.ndarray, span: int) -> np.ndarray:
    from scipy.signal import lfilter

    if len(x) == 0:
        return x.copy()
    alpha = 2.0 / (span + 1.0)
    decay = 1.0 - alpha
    # y_0 = x_0 exactly; then y_t = alpha * x_t + decay * y_{t-1}, as the online path does.
    out = np.empty(len(x))
    out[0] = x[0]
    if len(x) > 1:
        out[1:], _ = lfilter([alpha], [1.0, -decay], x[1:], zi=[decay * x[0]])
    return out


def _std_keys(blocks: Sequence[Block]) -> set[tuple[str, int]]:
    """(series, window) pairs that need a variance: those use Welford moments, the rest
    plain block sums (cheaper; same result in batch and online either way)."""
    return {(b.series, b.window) for b in blocks if b.kind == "std"}


def _series_start(series: str) -> int:
    """Real bars before a derived series has its first value: r1 needs two closes,
    rv_inner needs inner + 1."""
    if series == "r1sq":
        return 1
    if series.startswith("rv"):
        return int(series[2:])
    return 0


def _batch_block(block: Block, series: dict[str, np.ndarray], cache: dict) -> np.ndarray:
    x = series[block.series]
    if block.kind == "mean" and (block.series, block.window) not in cache["std_keys"]:
        start = _series_start(block.series)
        head = np.full(min(start, len(x)), np.nan)
        return np.concatenate([head, _rolling_mean(x[start:], block.window)])
    if block.kind in ("mean", "std"):
        key = (block.series, block.window)
        if key not in cache:
            start = _series_start(block.series)
            mean, std = _rolling_moments(x[start:], block.window)
            head = np.full(min(start, len(x)), np.nan)
            cache[key] = (np.concatenate([head, mean]), np.concatenate([head, std]))
        mean, std = cache[key]
        return mean if block.kind == "mean" else std
    if block.kind in ("max", "min"):
        return _rolling_extreme(x, block.window, block.kind)
    if block.kind == "nonzero":
        return _rolling_nonzero(x, block.window)
    if block.kind == "lag":
        return _lagged(x, block.window)
    if block.kind == "ema":
        return _ema(x, block.window)
    raise KeyError(block.kind)  # pragma: no cover


def _batch_symbol(
    spec: FeatureSpec,
    names: Sequence[str],
    bar: dict[str, np.ndarray],
    session: Session | None,
) -> np.ndarray:
    """Features of one symbol's real (non-gap) bars, oldest first."""
    series = _derived_series(bar)
    r1 = np.concatenate([[np.nan], np.diff(series["logc"])])
    series["r1sq"] = r1**2
    blocks = blocks_for(spec, names)
    cache: dict = {"std_keys": _std_keys(blocks)}
    for block in blocks:
        if block.kind == "std" and block.series.startswith("rv"):
            inner = int(block.series[2:])
            mean_r1sq = _batch_block(Block("r1sq", "mean", inner), series, cache)
            series[block.series] = np.sqrt(np.maximum(mean_r1sq, 0.0))
    values = {block.key: _batch_block(block, series, cache) for block in blocks}
    count = np.arange(1, len(bar["close"]) + 1)
    return _assemble(spec, names, bar, values, count)


def compute_batch(
    bars: pd.DataFrame,
    spec: FeatureSpec,
    session: Session | None,
    names: Sequence[str] = FIXED_FEATURES,
) -> pd.DataFrame:
    """Features of stored bars (one or many symbols, one timeframe), vectorized.

    Returns one row per input bar: ``symbol, timeframe, ts``, one column per feature,
    ``is_warmup`` and ``is_gap``. Gap bars get NaN features and do not enter windows.

    Examples
    --------
    >>> from regimes.config import load_config, PROJECT_CONFIG_DIR
    >>> config = load_config(PROJECT_CONFIG_DIR)
    >>> bars = pd.DataFrame({"symbol": "X", "timeframe": "1d",
    ...     "ts": pd.date_range("2024-01-02 14:30", periods=3, freq="D", tz="UTC"),
    ...     "open": 10.0, "high": 11.0, "low": 9.0, "close": [10.0, 10.5, 10.2],
    ...     "volume": 100.0, "is_gap": False})
    >>> out = compute_batch(bars, config.features, config.timeframes.session)
    >>> out["clv"].round(2).tolist(), out["is_warmup"].all()
    ([0.0, 0.5, 0.2], np.True_)
    """
    _check_names(names)
    missing = [
        c
        for c in ("symbol", "timeframe", "ts", "open", "high", "low", "close", "volume", "is_gap")
        if c not in bars.columns
    ]
    if missing:
        raise BadInputError(f"compute_batch: bars lack column(s) {missing}")
    if bars["timeframe"].nunique() > 1:
        raise BadInputError("compute_batch: expected bars of one timeframe")
    if len(bars) and getattr(bars["ts"].dt, "tz", None) is None:
        raise BadInputError("compute_batch: ts must be timezone-aware UTC")
    longest = max(warmup_lengths(spec)[name] for name in names)
    columns = ["symbol", "timeframe", "ts", *names, "is_warmup", "is_gap"]
    if bars.empty:
        return pd.DataFrame(columns=columns)
    ordered = bars.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)
    symbols = ordered["symbol"].to_numpy()
    ts_ns = _ns(ordered["ts"])
    gap = ordered["is_gap"].to_numpy(dtype=bool)
    starts = np.flatnonzero(np.r_[True, symbols[1:] != symbols[:-1]])
    ends = np.r_[starts[1:], len(ordered)]
    same_symbol = np.r_[False, symbols[1:] == symbols[:-1]]
    duplicated = same_symbol & np.r_[False, ts_ns[1:] == ts_ns[:-1]]
    if duplicated.any():
        first = int(np.flatnonzero(duplicated)[0])
        raise BadInputError(f"compute_batch: duplicate ts for symbol {symbols[first]}")
    fields = {
        k: ordered[k].to_numpy(dtype=float) for k in ("open", "high", "low", "close", "volume")
    }
    tod = time_of_day(ts_ns, session)  # once for all symbols: time zones cost per call
    values = np.full((len(ordered), len(names)), np.nan)
    count = np.empty(len(ordered), dtype=np.int64)
    for start, end in zip(starts, ends, strict=True):
        real = np.flatnonzero(~gap[start:end]) + start
        bar = {k: v[real] for k, v in fields.items()}
        _check_prices(symbols[start], bar, ordered["ts"].iloc[real])
        bar["tod"] = tod[real]
        if len(real):
            values[real] = _batch_symbol(spec, names, bar, session)
        count[start:end] = np.cumsum(~gap[start:end])
    result = pd.DataFrame(values, columns=list(names))
    result.insert(0, "ts", pd.DatetimeIndex(ts_ns, tz="UTC"))
    result.insert(0, "timeframe", ordered["timeframe"].to_numpy())
    result.insert(0, "symbol", symbols)
    result["is_warmup"] = count < longest
    result["is_gap"] = gap
    return result


def valid_bars(o, h, lo, c, v) -> np.ndarray:
    """Rows with finite positive prices, low <= open, close <= high, finite volume >= 0."""
    with np.errstate(invalid="ignore"):
        return (
            np.isfinite(o)
            & np.isfinite(h)
            & np.isfinite(lo)
            & np.isfinite(c)
            & (lo > 0)
            & (h >= lo)
            & (o >= lo)
            & (o <= h)
            & (c >= lo)
            & (c <= h)
            & np.isfinite(v)
            & (v >= 0)
        )


def _check_prices(symbol: str, bar: dict[str, np.ndarray], ts: pd.Series) -> None:
    bad = ~valid_bars(*(bar[k] for k in ("open", "high", "low", "close", "volume")))
    if bad.any():
        first = ts.iloc[int(np.flatnonzero(bad)[0])]
        raise BadInputError(
            f"compute_batch: {symbol}: {int(bad.sum())} bar(s) that are not gaps have missing "
            f"or invalid prices or volume (first at {first.isoformat()})"
        )


def _check_names(names: Sequence[str]) -> None:
    unknown = [name for name in names if name not in FIXED_FEATURES]
    if unknown:
        raise BadInputError(f"unknown feature(s) {unknown}; expected names from the fixed set")
    if not names:
        raise BadInputError("no features selected")


# --------------------------------------------------------------------------- online


class _Moments:
    """Rolling mean and variance over ``w`` values per row, by the block scheme above:
    O(1) Welford additions to the current block's prefix, and the previous block's
    suffix statistics computed once per block."""

    def __init__(self, rows: int, w: int):
        self.w = w
        self.ring = np.zeros((rows, w))
        self.suffix_mean = np.zeros((rows, w))
        self.suffix_m2 = np.zeros((rows, w))
        self.prefix_mean = np.zeros(rows)
        self.prefix_m2 = np.zeros(rows)
        self.count = np.zeros(rows, dtype=np.int64)

    def push(self, idx: np.ndarray, x: np.ndarray) -> None:
        j = self.count[idx] % self.w
        starting = idx[j == 0]
        if len(starting):
            means, m2s = _welford_suffix(self.ring[starting])
            self.suffix_mean[starting], self.suffix_m2[starting] = means, m2s
            self.prefix_mean[starting] = 0.0
            self.prefix_m2[starting] = 0.0
        mean, m2 = _welford_add(self.prefix_mean[idx], self.prefix_m2[idx], x, j + 1)
        self.prefix_mean[idx], self.prefix_m2[idx] = mean, m2
        self.ring[idx, j] = x
        self.count[idx] += 1

    def values(self, idx: np.ndarray, kind: str) -> np.ndarray:
        w = self.w
        j = (self.count[idx] - 1) % w
        following = np.minimum(j + 1, w - 1)
        mean, m2 = _window_moments(
            self.prefix_mean[idx],
            self.prefix_m2[idx],
            self.suffix_mean[idx, following],
            self.suffix_m2[idx, following],
            j,
            w,
        )
        value = mean if kind == "mean" else np.sqrt(np.maximum(m2, 0.0) / w)
        return np.where(self.count[idx] >= w, value, np.nan)


class _Sums:
    """Rolling mean over ``w`` values per row from block prefix and suffix sums: the
    same additions, in the same order, as the batch :func:`_rolling_mean`."""

    def __init__(self, rows: int, w: int):
        self.w = w
        self.ring = np.zeros((rows, w))
        self.suffix = np.zeros((rows, w))
        self.prefix = np.zeros(rows)
        self.count = np.zeros(rows, dtype=np.int64)

    def push(self, idx: np.ndarray, x: np.ndarray) -> None:
        j = self.count[idx] % self.w
        starting = idx[j == 0]
        if len(starting):
            self.suffix[starting] = np.cumsum(self.ring[starting, ::-1], axis=1)[:, ::-1]
        self.prefix[idx] = np.where(j == 0, x, self.prefix[idx] + x)
        self.ring[idx, j] = x
        self.count[idx] += 1

    def values(self, idx: np.ndarray, kind: str = "mean") -> np.ndarray:
        w = self.w
        j = (self.count[idx] - 1) % w
        following = np.minimum(j + 1, w - 1)
        prefix = self.prefix[idx]
        total = np.where(j + 1 < w, self.suffix[idx, following] + prefix, prefix)
        return np.where(self.count[idx] >= w, total / w, np.nan)


class _Extreme:
    """Rolling max or min over ``w`` values per row in amortized O(1): the van Herk /
    Gil-Werman scheme. The stream is cut into blocks of ``w``; at each block start the
    previous block's suffix extremes are computed once; within a block a running prefix
    extreme is kept; the window extreme is the better of the two."""

    def __init__(self, rows: int, w: int, kind: str):
        self.w = w
        self.kind = kind
        self.op = np.maximum if kind == "max" else np.minimum
        fill = -np.inf if kind == "max" else np.inf
        self.ring = np.full((rows, w), fill)
        self.suffix = np.full((rows, w), fill)
        self.prefix = np.full(rows, fill)
        self.count = np.zeros(rows, dtype=np.int64)

    def push(self, idx: np.ndarray, x: np.ndarray) -> None:
        j = self.count[idx] % self.w
        starting = idx[j == 0]
        if len(starting):
            reversed_ring = self.ring[starting, ::-1]
            self.suffix[starting] = self.op.accumulate(reversed_ring, axis=1)[:, ::-1]
        self.ring[idx, j] = x
        self.prefix[idx] = np.where(j == 0, x, self.op(self.prefix[idx], x))
        self.count[idx] += 1

    def values(self, idx: np.ndarray) -> np.ndarray:
        j = (self.count[idx] - 1) % self.w
        following = np.minimum(j + 1, self.w - 1)
        carried = np.where(j + 1 < self.w, self.suffix[idx, following], self.prefix[idx])
        value = self.op(self.prefix[idx], carried)
        return np.where(self.count[idx] >= self.w, value, np.nan)


class _NonZero:
    """Exact integer count of non-zero values among the last ``w`` per row."""

    def __init__(self, rows: int, w: int):
        self.w = w
        self.ring = np.zeros((rows, w), dtype=np.int8)
        self.total = np.zeros(rows, dtype=np.int64)
        self.count = np.zeros(rows, dtype=np.int64)

    def push(self, idx: np.ndarray, x: np.ndarray) -> None:
        slot = self.count[idx] % self.w
        flag = (x != 0).astype(np.int8)
        self.total[idx] += flag - self.ring[idx, slot]
        self.ring[idx, slot] = flag
        self.count[idx] += 1

    def values(self, idx: np.ndarray) -> np.ndarray:
        return np.where(self.count[idx] >= self.w, self.total[idx].astype(float), np.nan)


class _Lags:
    """The last ``depth + 1`` values per row, to read the value k bars back."""

    def __init__(self, rows: int, depth: int):
        self.size = depth + 1
        self.ring = np.zeros((rows, self.size))
        self.count = np.zeros(rows, dtype=np.int64)

    def push(self, idx: np.ndarray, x: np.ndarray) -> None:
        self.ring[idx, self.count[idx] % self.size] = x
        self.count[idx] += 1

    def back(self, idx: np.ndarray, k: int) -> np.ndarray:
        position = (self.count[idx] - 1 - k) % self.size
        value = self.ring[idx, position]
        return np.where(self.count[idx] > k, value, np.nan)


class _EMA:
    def __init__(self, rows: int, span: int):
        self.alpha = 2.0 / (span + 1.0)
        self.value = np.zeros(rows)
        self.count = np.zeros(rows, dtype=np.int64)

    def push(self, idx: np.ndarray, x: np.ndarray) -> None:
        previous = self.value[idx]
        decay = 1.0 - self.alpha
        self.value[idx] = np.where(self.count[idx] == 0, x, self.alpha * x + decay * previous)
        self.count[idx] += 1

    def values(self, idx: np.ndarray) -> np.ndarray:
        return self.value[idx]


_STATE_ARRAYS = {
    _Sums: ("ring", "suffix", "prefix", "count"),
    _Moments: ("ring", "suffix_mean", "suffix_m2", "prefix_mean", "prefix_m2", "count"),
    _Extreme: ("ring", "suffix", "prefix", "count"),
    _NonZero: ("ring", "total", "count"),
    _Lags: ("ring", "count"),
    _EMA: ("value", "count"),
}


@dataclass(frozen=True)
class OnlineResult:
    """Features of one step: one row per symbol given, in the order given."""

    symbols: tuple[str, ...]
    names: tuple[str, ...]
    values: np.ndarray
    is_warmup: np.ndarray
    is_gap: np.ndarray

    def frame(self, ts) -> pd.DataFrame:
        out = pd.DataFrame(self.values, columns=list(self.names))
        out.insert(0, "ts", pd.to_datetime(ts, utc=True))
        out.insert(0, "symbol", list(self.symbols))
        out["is_warmup"] = self.is_warmup
        out["is_gap"] = self.is_gap
        return out


class OnlineFeatureBuffer:
    """Rolling feature state for many symbols, advanced one closed bar at a time.

    Each :meth:`update` takes one bar for each of a batch of symbols (arrays over
    symbols) and costs constant work per symbol and feature: running moments, ring
    buffers and block-wise extremes, never a pass over a whole window. Its output equals
    :func:`compute_batch` on the same bars. A bar that is not newer than the symbol's
    last bar, or a malformed bar, refuses the whole step and leaves the state unchanged.
    The whole state snapshots to a dict of arrays (:meth:`snapshot`, :meth:`save`) and
    restores exactly (:meth:`restore`, :meth:`load`).

    Examples
    --------
    >>> from regimes.config import load_config, PROJECT_CONFIG_DIR
    >>> config = load_config(PROJECT_CONFIG_DIR)
    >>> buffer = OnlineFeatureBuffer(config.features, config.timeframes.session)
    >>> step = buffer.update(["A", "B"], pd.to_datetime(["2024-01-02 14:30"] * 2, utc=True),
    ...                      open=[10, 20], high=[11, 21], low=[9, 19], close=[10.5, 19.5],
    ...                      volume=[100, 0])
    >>> step.values.shape, bool(step.is_warmup.all())
    ((2, 21), True)
    """

    def __init__(
        self,
        spec: FeatureSpec,
        session: Session | None,
        symbols: Sequence[str] = (),
        names: Sequence[str] = FIXED_FEATURES,
    ):
        _check_names(names)
        self.spec = spec
        self.session = session
        self.names = tuple(names)
        self.blocks = blocks_for(spec, self.names)
        self._warm = warmup_lengths(spec)
        self._longest = max(self._warm[name] for name in self.names)
        self.symbols: list[str] = []
        self._index: dict[str, int] = {}
        self._rows = 0
        self._trackers: dict[str, object] = {}
        self.last_ts = np.zeros(0, dtype=np.int64)
        self.count = np.zeros(0, dtype=np.int64)
        self._build(0)
        if symbols:
            self.add_symbols(symbols)

    # -- structure

    def _tracker_specs(self) -> dict[str, tuple]:
        std_keys = _std_keys(self.blocks)

        def window(series: str, w: int) -> tuple[str, tuple]:
            cls = _Moments if (series, w) in std_keys else _Sums
            return f"window:{series}:{w}", (cls, w)

        specs: dict[str, tuple] = {}
        lag_depth = 1
        for block in self.blocks:
            if block.kind in ("mean", "std"):
                key, spec = window(block.series, block.window)
                specs[key] = spec
            elif block.kind in ("max", "min"):
                specs[block.key] = (_Extreme, block.window, block.kind)
            elif block.kind == "nonzero":
                specs[block.key] = (_NonZero, block.window)
            elif block.kind == "ema":
                specs[block.key] = (_EMA, block.window)
            elif block.kind == "lag":
                lag_depth = max(lag_depth, block.window)
            if block.series.startswith("rv"):
                key, spec = window("r1sq", int(block.series[2:]))
                specs[key] = spec
        specs["lags:logc"] = (_Lags, lag_depth)
        return specs

    def _build(self, rows: int) -> None:
        for key, (cls, *args) in self._tracker_specs().items():
            self._trackers[key] = cls(rows, *args)
        self._rows = rows
        self._capacity = rows

    def add_symbols(self, symbols: Sequence[str]) -> None:
        """Register symbols (each starts empty, in warm-up).

        State arrays grow by doubling their capacity, so registering symbols one at a
        time costs amortized O(1) each.
        """
        new = []
        for symbol in symbols:
            check_symbol(symbol)
            if symbol not in self._index and symbol not in new:
                new.append(symbol)
        if not new:
            return
        needed = self._rows + len(new)
        if needed > self._capacity:
            self._grow(max(needed, 2 * self._capacity, 16))
        for symbol in new:
            self._index[symbol] = len(self.symbols)
            self.symbols.append(symbol)
        self._rows = needed

    def _grow(self, capacity: int) -> None:
        extra = capacity - self._capacity
        for tracker in self._trackers.values():
            template = _empty_like_rows(tracker, extra)
            for name in _STATE_ARRAYS[type(tracker)]:
                setattr(tracker, name, np.concatenate([getattr(tracker, name), template[name]]))
        self.last_ts = np.concatenate([self.last_ts, np.full(extra, _NEVER)])
        self.count = np.concatenate([self.count, np.zeros(extra, dtype=np.int64)])
        self._capacity = capacity

    @property
    def warmup_bars(self) -> int:
        """Bars a symbol needs before all of its features are defined."""
        return int(self._longest)

    def last_times(self, symbols: Sequence[str], rows: np.ndarray | None = None) -> np.ndarray:
        """UTC nanoseconds of each symbol's last bar (int64 minimum for an unseen one).

        ``rows``: the symbols' rows when the caller keeps the same symbol order (the
        inference engine does), saving a look-up per symbol."""
        return self._last_of(self.rows_of(symbols) if rows is None else rows)

    def _last_of(self, rows: np.ndarray) -> np.ndarray:
        last = np.full(len(rows), _NEVER)
        seen = rows >= 0
        last[seen] = self.last_ts[rows[seen]]
        return last

    def rows_of(self, symbols: Sequence[str]) -> np.ndarray:
        """Row of each symbol in the state arrays, -1 for an unseen one."""
        get = self._index.get
        n = len(symbols)
        return np.fromiter(map(get, symbols, repeat(-1, n)), dtype=np.int64, count=n)

    # -- the step

    def update(
        self,
        symbols: Sequence[str],
        ts,
        open,
        high,
        low,
        close,
        volume,
        is_gap=None,
        rows: np.ndarray | None = None,
    ) -> OnlineResult:
        """Advance each of ``symbols`` by one closed bar; returns their feature rows.

        ``rows``: as for :meth:`last_times` (-1 for a symbol not seen yet)."""
        symbols = list(symbols)
        m = len(symbols)
        if len(set(symbols)) != m:
            raise BadInputError("update: a symbol appears twice in one step")
        ts_ns = _as_ns(ts, m)
        arrays = {}
        for name, values in (
            ("open", open),
            ("high", high),
            ("low", low),
            ("close", close),
            ("volume", volume),
        ):
            array = np.asarray(values, dtype=float).reshape(-1)
            if array.shape[0] != m:
                raise BadInputError(f"update: {name} has {array.shape[0]} values for {m} symbols")
            arrays[name] = array
        gap = np.zeros(m, dtype=bool) if is_gap is None else np.asarray(is_gap, dtype=bool)
        if gap.shape != (m,):
            raise BadInputError(f"update: is_gap has shape {gap.shape} for {m} symbols")
        known = self.rows_of(symbols) if rows is None else np.asarray(rows, dtype=np.int64)
        last = self._last_of(known)
        # Every check before any change: a refused step leaves the buffer exactly as it was.
        self._validate(symbols, last, ts_ns, arrays, gap)
        idx = known
        if (known < 0).any():
            self.add_symbols([s for s, row in zip(symbols, known, strict=True) if row < 0])
            idx = self.rows_of(symbols)

        values = np.full((m, len(self.names)), np.nan)
        real = ~gap
        if real.any():
            rows = idx[real]
            bar = {k: v[real] for k, v in arrays.items()}
            bar["tod"] = time_of_day(ts_ns[real], self.session)
            self.count[rows] += 1
            values[real] = _assemble(
                self.spec, self.names, bar, self._push(rows, bar), self.count[rows]
            )
        self.last_ts[idx] = ts_ns
        is_warmup = self.count[idx] < self._longest
        return OnlineResult(tuple(symbols), self.names, values, is_warmup, gap)

    def _validate(self, symbols, last_ts, ts_ns, arrays, gap) -> None:
        stale = ts_ns <= last_ts
        if stale.any():
            i = int(np.flatnonzero(stale)[0])
            last = pd.Timestamp(int(last_ts[i]), tz="UTC")
            got = pd.Timestamp(int(ts_ns[i]), tz="UTC")
            what = "twice" if ts_ns[i] == last_ts[i] else "out of order"
            raise BadInputError(
                f"update: bar for {symbols[i]} at {got.isoformat()} arrived {what} (last bar "
                f"{last.isoformat()}); the step was refused and no state changed"
            )
        real = ~gap
        o, h, lo, c, v = (arrays[k] for k in ("open", "high", "low", "close", "volume"))
        bad = real & ~valid_bars(o, h, lo, c, v)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise BadInputError(
                f"update: malformed bar for {symbols[i]} at "
                f"{pd.Timestamp(int(ts_ns[i]), tz='UTC').isoformat()} (open {o[i]}, high {h[i]}, "
                f"low {lo[i]}, close {c[i]}, volume {v[i]}); the step was refused and no "
                "state changed"
            )

    def _push(self, rows: np.ndarray, bar: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        series = _derived_series(bar)
        lags: _Lags = self._trackers["lags:logc"]
        previous = lags.back(rows, 0)  # last log close before this bar (NaN on the first)
        lags.push(rows, series["logc"])
        has_r1 = self.count[rows] >= 2
        series["r1sq"] = (series["logc"] - previous) ** 2
        # Derived series first: r1^2 windows feed rv, and rv feeds the vol-of-vol window.
        for key, tracker in self._trackers.items():
            if key.startswith("window:r1sq:"):
                tracker.push(rows[has_r1], series["r1sq"][has_r1])
        for key, tracker in self._trackers.items():
            if key.startswith("window:rv"):
                inner = int(key.split(":")[1][2:])
                mean_r1sq = self._trackers[f"window:r1sq:{inner}"].values(rows, "mean")
                rv = np.sqrt(np.maximum(mean_r1sq, 0.0))
                ready = np.isfinite(rv)  # exactly when the r1^2 window is full
                tracker.push(rows[ready], rv[ready])
        for key, tracker in self._trackers.items():
            kind, name = key.split(":")[:2]
            if kind == "window" and name != "r1sq" and not name.startswith("rv"):
                tracker.push(rows, series[name])
            elif kind in ("max", "min", "nonzero", "ema"):
                tracker.push(rows, series[name])
        out: dict[str, np.ndarray] = {}
        for block in self.blocks:
            if block.kind in ("mean", "std"):
                tracker = self._trackers[f"window:{block.series}:{block.window}"]
                out[block.key] = tracker.values(rows, block.kind)
            elif block.kind in ("max", "min", "nonzero", "ema"):
                out[block.key] = self._trackers[block.key].values(rows)
            elif block.kind == "lag":
                out[block.key] = lags.back(rows, block.window)
        return out

    # -- snapshots

    def snapshot(self) -> dict[str, np.ndarray]:
        """The whole state as a dict of arrays (copies)."""
        state: dict[str, np.ndarray] = {
            "__version__": np.array(SNAPSHOT_VERSION),
            "__spec__": np.array(self.spec.fingerprint()),
            "__names__": np.array(self.names),
            "__symbols__": np.array(self.symbols, dtype=object).astype(str)
            if self.symbols
            else np.array([], dtype=str),
            "__session__": np.array(self.session.model_dump_json() if self.session else ""),
            "last_ts": self.last_ts[: self._rows].copy(),
            "count": self.count[: self._rows].copy(),
        }
        for key, tracker in self._trackers.items():
            for name in _STATE_ARRAYS[type(tracker)]:
                state[f"{key}|{name}"] = getattr(tracker, name)[: self._rows].copy()
        return state

    @classmethod
    def restore(
        cls, state: dict[str, np.ndarray], spec: FeatureSpec, session: Session | None
    ) -> OnlineFeatureBuffer:
        """Rebuild a buffer from :meth:`snapshot`; refuses a snapshot of another spec."""
        if int(state["__version__"]) != SNAPSHOT_VERSION:
            raise BadInputError(f"snapshot version {int(state['__version__'])} is not supported")
        if str(state["__spec__"]) != spec.fingerprint():
            raise BadInputError(
                "snapshot was taken with another feature spec (fingerprint differs); "
                "recompute features instead of restoring"
            )
        session_json = session.model_dump_json() if session else ""
        if str(state["__session__"]) != session_json:
            raise BadInputError("snapshot was taken with another trading session")
        names = [str(name) for name in state["__names__"]]
        buffer = cls(spec, session, [str(s) for s in state["__symbols__"]], names)
        rows = len(buffer.symbols)
        buffer._capacity = rows

        def stored(key: str, like: np.ndarray) -> np.ndarray:
            if key not in state:
                raise BadInputError(f"snapshot is incomplete: no {key!r}")
            value = np.asarray(state[key])
            expected = (rows, *like.shape[1:])
            if value.shape != expected or value.dtype != like.dtype:
                raise BadInputError(
                    f"snapshot {key!r} has shape {value.shape} {value.dtype}, expected "
                    f"{expected} {like.dtype}"
                )
            return value.copy()

        buffer.last_ts = stored("last_ts", buffer.last_ts[:rows])
        buffer.count = stored("count", buffer.count[:rows])
        for key, tracker in buffer._trackers.items():
            for name in _STATE_ARRAYS[type(tracker)]:
                setattr(tracker, name, stored(f"{key}|{name}", getattr(tracker, name)[:rows]))
        return buffer

    def save(self, path: str | Path) -> Path:
        """Write :meth:`snapshot` to an ``.npz`` file atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        with open(partial, "wb") as handle:
            buffer = io.BytesIO()
            np.savez(buffer, **self.snapshot())
            handle.write(buffer.getvalue())
        partial.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, spec: FeatureSpec, session: Session | None):
        path = Path(path)
        if not path.is_file():
            raise BadInputError(f"{path}: no feature-buffer snapshot here")
        with np.load(path, allow_pickle=False) as data:
            state = {key: data[key] for key in data.files}
        return cls.restore(state, spec, session)


def _empty_like_rows(tracker, rows: int) -> dict[str, np.ndarray]:
    template = type(tracker).__new__(type(tracker))
    if isinstance(tracker, _Moments | _Sums):
        template.__init__(rows, tracker.w)
    elif isinstance(tracker, _Extreme):
        template.__init__(rows, tracker.w, tracker.kind)
    elif isinstance(tracker, _NonZero):
        template.__init__(rows, tracker.w)
    elif isinstance(tracker, _Lags):
        template.__init__(rows, tracker.size - 1)
    elif isinstance(tracker, _EMA):
        template.__init__(rows, int(round(2.0 / tracker.alpha - 1.0)))
    return {name: getattr(template, name) for name in _STATE_ARRAYS[type(tracker)]}


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


# --------------------------------------------------------------------------- selection


def selected_features(spec: FeatureSpec, timeframe_config) -> tuple[str, ...]:
    """The features a timeframe uses (plan 2.3): its configured down-selection of the
    fixed list, in canonical order. Automated pruning within it respects the budget."""
    chosen = timeframe_config.selected_features
    _check_names(chosen)
    return tuple(name for name in spec.names if name in chosen)


def check_timeframe_features(timeframe: str, names: Sequence[str]) -> None:
    check_timeframe(timeframe)
    _check_names(names)
