"""Features one bar at a time for many symbols (the live engine's rolling buffer)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import numpy as np
import pandas as pd

from regimes.config.spec import FIXED_FEATURES, FeatureSpec
from regimes.config.timeframes import Session
from regimes.errors import BadInputError
from regimes.features.batch import (
    _check_names,
    _std_keys,
    _welford_add,
    _welford_suffix,
    _window_moments,
    valid_bars,
)
from regimes.features.definitions import (
    _NEVER,
    SNAPSHOT_VERSION,
    _as_ns,
    _assemble,
    _derived_series,
    blocks_for,
    time_of_day,
    warmup_lengths,
)
from regimes.paths import check_symbol

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
    >>> from regimes.config.loading import load_config
    >>> from regimes.config.loading import default_config_dir
    >>> config = load_config(default_config_dir())
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
