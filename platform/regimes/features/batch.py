"""Features of whole histories (vectorised per symbol), bit-identical to the online path."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from regimes.config.spec import FIXED_FEATURES, FeatureSpec
from regimes.config.timeframes import Session
from regimes.errors import BadInputError
from regimes.features.definitions import (
    Block,
    _assemble,
    _derived_series,
    _ns,
    blocks_for,
    time_of_day,
    warmup_lengths,
)
from regimes.features.market_days import anchors_reset, day_starts, trading_day_numbers

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


def _std_keys(blocks: Sequence[Block]) -> set[tuple[str, int, bool]]:
    """(series, window, anchored) of the windows that need a variance: those use Welford
    moments, the rest plain block sums (cheaper; same result in batch and online)."""
    return {(b.series, b.window, b.anchored) for b in blocks if b.kind == "std"}


# Day-anchored windows (``anchor: market_day``) hold the last min(w, bars since the
# trading day began) values. They use the same block scheme on a layout where every
# trading day starts a new block of w (the online trackers reset at a day's first bar):
# a window ending at offset k >= w - 1 of its day is computed exactly as a rolling one; a
# shorter one (k < w - 1) is the current block's prefix alone, over k + 1 values.


def _day_layout(days: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(position of each value in the day-blocked layout, its offset within its trading
    day, the layout's length)."""
    n = len(days)
    starts = day_starts(days)
    first = np.flatnonzero(starts)
    day = np.cumsum(starts) - 1
    offset = np.arange(n) - first[day]
    padded = -(-np.diff(np.r_[first, n]) // w) * w
    base = np.r_[0, np.cumsum(padded)[:-1]]
    return base[day] + offset, offset, int(padded.sum())


def _day_blocks(x: np.ndarray, w: int, layout) -> np.ndarray:
    position, _, size = layout
    padded = np.zeros(size)
    padded[position] = x
    return padded.reshape(-1, w)


def _anchored_mean(x: np.ndarray, w: int, layout) -> np.ndarray:
    position, offset, _ = layout
    block = _day_blocks(x, w, layout)
    prefix = np.cumsum(block, axis=1).ravel()[position]
    suffix = np.cumsum(block[:, ::-1], axis=1)[:, ::-1].ravel()
    j = offset % w
    total = np.where(j + 1 < w, suffix[np.clip(position - w + 1, 0, None)] + prefix, prefix)
    return np.where(offset >= w - 1, total / w, prefix / (offset + 1))


def _anchored_moments(x: np.ndarray, w: int, layout) -> tuple[np.ndarray, np.ndarray]:
    position, offset, _ = layout
    block = _day_blocks(x, w, layout)
    prefix_mean, prefix_m2 = (a.ravel()[position] for a in _welford_prefix(block))
    suffix_mean, suffix_m2 = (a.ravel() for a in _welford_suffix(block))
    source = np.clip(position - w + 1, 0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean, m2 = _window_moments(
            prefix_mean, prefix_m2, suffix_mean[source], suffix_m2[source], offset % w, w
        )
    full = offset >= w - 1
    mean, m2 = np.where(full, mean, prefix_mean), np.where(full, m2, prefix_m2)
    return mean, np.sqrt(np.maximum(m2, 0.0) / np.where(full, w, offset + 1))


def _anchored_nonzero(x: np.ndarray, w: int, layout) -> np.ndarray:
    _, offset, _ = layout
    cumulative = np.concatenate([[0], np.cumsum(x != 0)])
    t = np.arange(len(x))
    return (cumulative[t + 1] - cumulative[t - np.minimum(offset, w - 1)]).astype(float)


def _anchored_block(block: Block, series: dict[str, np.ndarray], cache: dict) -> np.ndarray:
    x, w = series[block.series], block.window
    layout = cache.setdefault(("layout", w), _day_layout(cache["days"], w))
    if block.kind == "nonzero":
        return _anchored_nonzero(x, w, layout)
    if (block.series, w, True) not in cache["std_keys"]:
        return _anchored_mean(x, w, layout)
    key = (block.series, w, True)
    if key not in cache:
        cache[key] = _anchored_moments(x, w, layout)
    mean, std = cache[key]
    return mean if block.kind == "mean" else std


def _series_start(series: str) -> int:
    """Real bars before a derived series has its first value: r1 needs two closes,
    rv_inner needs inner + 1."""
    if series == "r1sq":
        return 1
    if series.startswith("rv"):
        return int(series[2:])
    return 0


def _batch_block(block: Block, series: dict[str, np.ndarray], cache: dict) -> np.ndarray:
    if block.anchored:
        return _anchored_block(block, series, cache)
    x = series[block.series]
    if block.kind == "mean" and (block.series, block.window, False) not in cache["std_keys"]:
        start = _series_start(block.series)
        head = np.full(min(start, len(x)), np.nan)
        return np.concatenate([head, _rolling_mean(x[start:], block.window)])
    if block.kind in ("mean", "std"):
        key = (block.series, block.window, False)
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
    """Features of one symbol's real (non-gap) bars, oldest first (``bar["day"]``: their
    trading days, where day-anchored windows reset)."""
    series = _derived_series(bar)
    bar["logc"] = series["logc"]  # the r* formulas read it too
    r1 = np.concatenate([[np.nan], np.diff(series["logc"])])
    series["r1sq"] = r1**2
    blocks = blocks_for(spec, names)
    cache: dict = {"std_keys": _std_keys(blocks), "days": bar.get("day")}
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
    >>> from regimes.config.loading import load_config
    >>> from regimes.config.loading import default_config_dir
    >>> config = load_config(default_config_dir())
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
    tod = time_of_day(ts_ns, session, symbols)  # once for all symbols: zones cost per call
    day = _trading_days(spec, names, ts_ns, session, symbols, ordered["timeframe"].iloc[0])
    values = np.full((len(ordered), len(names)), np.nan)
    count = np.empty(len(ordered), dtype=np.int64)
    for start, end in zip(starts, ends, strict=True):
        real = np.flatnonzero(~gap[start:end]) + start
        bar = {k: v[real] for k, v in fields.items()}
        _check_prices(symbols[start], bar, ordered["ts"].iloc[real])
        bar["tod"] = tod[real]
        bar["day"] = day[real]
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


def _trading_days(spec, names, ts_ns, session, symbols, timeframe: str) -> np.ndarray:
    """Each row's trading day where a day-anchored window needs it; one day (no resets)
    otherwise, and on the 1d timeframe (``regimes.features.market_days``)."""
    if anchors_reset(timeframe) and any(b.anchored for b in blocks_for(spec, names)):
        return trading_day_numbers(ts_ns, session, symbols)
    return np.zeros(len(ts_ns), dtype=np.int64)


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
