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
from regimes.data.markets import SymbolCalendars
from regimes.errors import BadInputError
from regimes.features.batch import _check_names, _std_keys, valid_bars
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
from regimes.features.market_days import anchors_reset, trading_day_numbers
from regimes.features.trackers import (
    EMAs,
    Extremes,
    Lags,
    Moments,
    NonZero,
    Slots,
    Sums,
    slots,
)
from regimes.paths import check_symbol

# --------------------------------------------------------------------------- online

# Series pushed only on some rows (r1 needs two closes, rv_inner a full r1^2 window):
# their windows are trackers of their own; every other series is pushed on every real bar
# and shares a tracker with the other series of its window.
_DERIVED = ("r1sq", "rv")
_DAY = "@day"  # suffix of the trackers of day-anchored windows (reset at a day's first bar)
# 2: no day-anchored windows, every feature of the selection computed; 3: selected_from
# recorded, no day-anchored windows (no last_day); 4 (SNAPSHOT_VERSION): both.
_SUPPORTED_SNAPSHOTS = (2, 3, SNAPSHOT_VERSION)


def _time_of_day(ts_ns: np.ndarray, session, symbols=None) -> np.ndarray:
    """:func:`time_of_day`, computed once when every bar of the step has the same time
    (a live step), which saves sorting the timestamps."""
    if isinstance(session, SymbolCalendars):
        return time_of_day(ts_ns, session, symbols)
    if len(ts_ns) > 1 and (ts_ns == ts_ns[0]).all():
        return np.repeat(time_of_day(ts_ns[:1], session), len(ts_ns))
    return time_of_day(ts_ns, session)


def _is_derived(series: str) -> bool:
    return series.startswith(_DERIVED)


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

    Parameters
    ----------
    spec : FeatureSpec
        Formulas and windows of the features.
    session : Session or None
        Trading session (or market calendars) of the time-of-day feature.
    symbols : sequence of str
        Symbols to track from the start.
    names : sequence of str
        The features computed (columns of :attr:`OnlineResult.values`).
    selected_from : sequence of str, optional
        The selection ``names`` are part of (default: ``names``). The buffer keeps its
        warm-up length (:attr:`warmup_bars`) and its window arithmetic, so its values and
        warm-up flags equal those of a buffer (or :func:`compute_batch`) of the whole
        selection, while only the windows ``names`` read are kept and advanced (the live
        engine computes only the features its model reads).
    timeframe : str, optional
        The bars' timeframe: day-anchored windows (``anchor: market_day``) reset at each
        symbol's trading day on intraday timeframes and roll on ``1d`` (``None`` counts
        as intraday), as :func:`compute_batch` does from the bars' timeframe.

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
        *,
        selected_from: Sequence[str] | None = None,
        timeframe: str | None = None,
    ):
        _check_names(names)
        selected_from = tuple(names) if selected_from is None else tuple(selected_from)
        _check_names(selected_from)
        if not set(names) <= set(selected_from):
            raise BadInputError(
                f"OnlineFeatureBuffer: features {sorted(set(names) - set(selected_from))} "
                f"are not among selected_from {list(selected_from)}"
            )
        self.spec = spec
        self.session = session
        self.names = tuple(names)
        self.selected_from = selected_from
        self.timeframe = timeframe
        self.blocks = blocks_for(spec, self.names)
        self._resets = anchors_reset(timeframe) and any(b.anchored for b in self.blocks)
        self._warm = warmup_lengths(spec)
        self._longest = max(self._warm[name] for name in selected_from)
        self.symbols: list[str] = []
        self._index: dict[str, int] = {}
        # The last look-up whose symbols were all tracked: (symbols, rows). A tracked
        # symbol's row never changes, so it stays right; a live feed sends the same
        # symbols in the same order bar after bar.
        self._recent: tuple[np.ndarray, np.ndarray] | None = None
        self._rows = 0
        self._trackers: dict[str, object] = {}
        self.last_ts = np.zeros(0, dtype=np.int64)
        self.last_day = np.zeros(0, dtype=np.int64)  # trading day of the last real bar
        self.count = np.zeros(0, dtype=np.int64)
        self._build(0)
        if symbols:
            self.add_symbols(symbols)

    # -- structure

    def _statistics(self):
        """The rolling statistics the blocks need: windows {(series, w, anchored): Sums
        or Moments}, extremes {w: [(series, +1 max / -1 min)]}, nonzero {(w, anchored):
        [series]}, EMAs {series: [span]} and the deepest lag."""
        # The window arithmetic (Welford moments or plain sums) follows the whole selection,
        # so a buffer of some of its features computes them exactly as one of all of them.
        std_keys = _std_keys(blocks_for(self.spec, self.selected_from))

        def window_class(series: str, w: int, anchored: bool = False) -> type:
            return Moments if (series, w, anchored) in std_keys else Sums

        windows: dict[tuple[str, int, bool], type] = {}
        extremes: dict[int, list[tuple[str, float]]] = {}
        nonzero: dict[tuple[int, bool], list[str]] = {}
        emas: dict[str, list[int]] = {}
        lag_depth = 1
        for block in self.blocks:
            series, w, day = block.series, block.window, block.anchored
            if block.kind in ("mean", "std"):
                windows.setdefault((series, w, day), window_class(series, w, day))
            elif block.kind in ("max", "min"):
                extremes.setdefault(w, []).append((series, 1.0 if block.kind == "max" else -1.0))
            elif block.kind == "nonzero":
                nonzero.setdefault((w, day), []).append(series)
            elif block.kind == "ema":
                emas.setdefault(series, []).append(w)
            elif block.kind == "lag":
                lag_depth = max(lag_depth, w)
            if series.startswith("rv"):
                inner = int(series[2:])
                windows.setdefault(("r1sq", inner, False), window_class("r1sq", inner))
        return windows, extremes, nonzero, emas, lag_depth

    def _layout(self) -> None:
        """Group the blocks' rolling statistics into trackers, one per window (and kind),
        and record where each block's value is read: ``self._columns[(kind, series:w)]``
        = (tracker key, column)."""
        windows, extremes, nonzero, emas, lag_depth = self._statistics()
        plain: dict[tuple[type, int, bool], list[str]] = {}
        specs: dict[str, tuple] = {}
        self._columns: dict[tuple[str, str], tuple[str, int]] = {}
        for (series, w, day), cls in windows.items():
            if _is_derived(series):
                key = f"window:{w}:{series}"
                specs[key] = (cls, (w,), (series,))
                self._columns[("window", f"{series}:{w}")] = (key, 0)
            else:
                plain.setdefault((cls, w, day), []).append(series)
        for (cls, w, day), names in plain.items():
            suffix = _DAY if day else ""
            key = f"window:{w}:{'+'.join(names)}{suffix}"
            specs[key] = (cls, (w, len(names), day), tuple(names))
            for column, series in enumerate(names):
                self._columns[("window", f"{series}:{w}{suffix}")] = (key, column)
        for w, members in extremes.items():
            key = f"extreme:{w}:{'+'.join(f'{s}{int(sign)}' for s, sign in members)}"
            signs = np.array([sign for _, sign in members])
            specs[key] = (Extremes, (w, signs), tuple(s for s, _ in members))
            for column, (series, sign) in enumerate(members):
                kind = "max" if sign > 0 else "min"
                self._columns[(kind, f"{series}:{w}")] = (key, column)
        for (w, day), names in nonzero.items():
            suffix = _DAY if day else ""
            key = f"nonzero:{w}:{'+'.join(names)}{suffix}"
            specs[key] = (NonZero, (w, len(names), day), tuple(names))
            for column, series in enumerate(names):
                self._columns[("nonzero", f"{series}:{w}{suffix}")] = (key, column)
        for series, spans in emas.items():
            key = f"ema:{series}:{'+'.join(map(str, spans))}"
            specs[key] = (EMAs, (np.array(spans),), (series,) * len(spans))
            for column, span in enumerate(spans):
                self._columns[("ema", f"{series}:{span}")] = (key, column)
        specs["lags:logc"] = (Lags, (lag_depth,), ("logc",))
        self._specs = specs
        self._day_keys = [key for key in specs if key.endswith(_DAY)]
        self._plan_reads(specs)

    def _plan_reads(self, specs: dict[str, tuple]) -> None:
        """Per step, in order: the lag ring's reads, the derived trackers (r1^2, then rv
        and the r1^2 window it reads), the plain groups, and each block's value."""
        lags = [b for b in self.blocks if b.kind == "lag"]
        self._lag_reads = np.array([1] + [b.window for b in lags], dtype=np.int64)[:, None]
        self._lag_columns = [(b.key, column + 1) for column, b in enumerate(lags)]
        self._block_reads = []
        for block in self.blocks:
            if block.kind != "lag":
                family = "window" if block.kind in ("mean", "std") else block.kind
                suffix = _DAY if block.anchored else ""
                key, column = self._columns[(family, f"{block.series}:{block.window}{suffix}")]
                statistic = block.kind if block.kind in ("mean", "std") else "value"
                self._block_reads.append((block.key, key, statistic, column))
        derived = {k: names[0] for k, (_, _, names) in specs.items() if _is_derived(names[0])}
        self._r1sq_keys = [k for k, name in derived.items() if name == "r1sq"]
        self._rv_keys = [
            (k, self._columns[("window", f"r1sq:{int(name[2:])}")][0])
            for k, name in derived.items()
            if name.startswith("rv")
        ]
        self._plain_keys = [
            (k, names, args[0] if cls is not EMAs else None, k.endswith(_DAY))
            for k, (cls, args, names) in specs.items()
            if not _is_derived(names[0]) and k != "lags:logc"
        ]

    def _build(self, rows: int) -> None:
        self._layout()
        for key, (cls, args, _) in self._specs.items():
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
            tracker.grow(extra)
        self.last_ts = np.concatenate([self.last_ts, np.full(extra, _NEVER)])
        self.last_day = np.concatenate([self.last_day, np.full(extra, _NEVER)])
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
        n = len(symbols)
        cacheable = isinstance(symbols, np.ndarray) and symbols.dtype == object and n > 0
        recent = self._recent
        if cacheable and recent is not None and len(recent[0]) == n:
            # One comparison per symbol (an identity check when the strings are the same
            # objects) costs a third of a dict look-up per symbol.
            if (recent[0] == symbols).all():
                return recent[1].copy()
        get = self._index.get
        rows = np.fromiter(map(get, symbols, repeat(-1, n)), dtype=np.int64, count=n)
        if cacheable and (rows >= 0).all():
            self._recent = (symbols.copy(), rows.copy())
        return rows

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
        screened: bool = False,
    ) -> OnlineResult:
        """Advance each of ``symbols`` by one closed bar; returns their feature rows.

        ``rows``: as for :meth:`last_times` (-1 for a symbol not seen yet).
        ``screened``: the caller has already refused a symbol given twice, a bar not newer
        than the symbol's last one and a malformed bar (the inference engine screens every
        row, :func:`regimes.live.screening.screen`), so those checks are not repeated."""
        symbols = list(symbols)
        m = len(symbols)
        if not screened and len(set(symbols)) != m:
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
        # Every check before any change: a refused step leaves the buffer exactly as it was.
        if not screened:
            self._validate(symbols, self._last_of(known), ts_ns, arrays, gap)
        idx = known
        if (known < 0).any():
            self.add_symbols([s for s, row in zip(symbols, known, strict=True) if row < 0])
            idx = self.rows_of(symbols)

        real = ~gap
        if real.all():  # the usual step: no masked copies
            rows, bar, stamps = idx, dict(arrays), ts_ns
        else:
            rows, bar, stamps = idx[real], {k: v[real] for k, v in arrays.items()}, ts_ns[real]
        if len(rows):
            names = None
            if isinstance(self.session, SymbolCalendars):
                names = [self.symbols[row] for row in rows]
            bar["tod"] = _time_of_day(stamps, self.session, names)
            if self._resets:
                self._reset_new_days(rows, trading_day_numbers(stamps, self.session, names))
            count = self.count[rows] + 1
            self.count[rows] = count
            assembled = _assemble(self.spec, self.names, bar, self._push(rows, bar, count), count)
        if real.all():
            values = assembled
        else:
            values = np.full((m, len(self.names)), np.nan)
            if len(rows):
                values[real] = assembled
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

    def _reset_new_days(self, rows: np.ndarray, days: np.ndarray) -> None:
        """Reset the day-anchored windows of the rows whose bar opens a trading day."""
        opening = rows[days != self.last_day[rows]]
        if len(opening):
            for key in self._day_keys:
                self._trackers[key].reset(opening)
        self.last_day[rows] = days

    def _push(
        self, rows: np.ndarray, bar: dict[str, np.ndarray], count: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Push one bar into every tracker (one push per tracker, all its series at once)
        and read every block's value; ``count`` the rows' real bars including this one."""
        series = _derived_series(bar)
        bar["logc"] = series["logc"]  # the r* formulas read it too
        trackers = self._trackers
        lags: Lags = trackers["lags:logc"]
        lags.push(rows, series["logc"])
        # One read of the log closes: 1 back is the last close before this bar (NaN on a
        # symbol's first bar), then every lag block's depth.
        lagged = lags.back(rows, self._lag_reads)
        has_r1 = count >= 2
        r1sq = (series["logc"] - lagged[0]) ** 2
        read: dict[str, dict[str, np.ndarray]] = {}
        # Derived series first: r1^2 windows feed rv, and rv feeds the vol-of-vol window.
        for key in self._r1sq_keys:
            trackers[key].push(rows[has_r1], r1sq[None, has_r1])
            read[key] = trackers[key].read(rows)
        for key, source in self._rv_keys:
            rv = np.sqrt(np.maximum(read[source]["mean"][0], 0.0))
            ready = np.isfinite(rv)  # exactly when the r1^2 window is full
            trackers[key].push(rows[ready], rv[None, ready])
            read[key] = trackers[key].read(rows)
        # The plain trackers have seen every real bar, as many as the buffer counted before
        # this one: one Slots per window length serves every rolling tracker of that window.
        # The day-anchored ones have seen the bars since their last reset (the same count
        # for all of them): one Slots per window length, from their own count, serves them.
        steps: dict[tuple[int, bool], Slots] = {}
        count_before = count - 1
        capacity = len(self.count)
        for key, names, w, anchored in self._plain_keys:
            x = series[names[0]][None] if len(names) == 1 else np.stack([series[n] for n in names])
            step = None
            if w is not None:
                step = steps.get((w, anchored))
                if step is None:
                    before = trackers[key].count[rows] if anchored else count_before
                    step = steps[(w, anchored)] = slots(rows, before, w, capacity)
            read[key] = trackers[key].advance(rows, x, step)  # push and read in one pass
        out = {block: lagged[column] for block, column in self._lag_columns}
        for block, key, statistic, column in self._block_reads:
            out[block] = read[key][statistic][column]
        return out

    # -- snapshots

    def snapshot(self) -> dict[str, np.ndarray]:
        """The whole state as a dict of arrays (copies)."""
        state: dict[str, np.ndarray] = {
            "__version__": np.array(SNAPSHOT_VERSION),
            "__spec__": np.array(self.spec.fingerprint()),
            "__names__": np.array(self.names),
            "__selected_from__": np.array(self.selected_from),
            "__symbols__": np.array(self.symbols, dtype=object).astype(str)
            if self.symbols
            else np.array([], dtype=str),
            "__session__": np.array(self.session.model_dump_json() if self.session else ""),
            "__timeframe__": np.array(self.timeframe or ""),
            "last_ts": self.last_ts[: self._rows].copy(),
            "last_day": self.last_day[: self._rows].copy(),
            "count": self.count[: self._rows].copy(),
        }
        for key, tracker in self._trackers.items():
            for name in tracker.STATE:
                state[f"{key}|{name}"] = tracker.state(name)[: self._rows].copy()
        return state

    @classmethod
    def restore(
        cls, state: dict[str, np.ndarray], spec: FeatureSpec, session: Session | None
    ) -> OnlineFeatureBuffer:
        """Rebuild a buffer from :meth:`snapshot`; refuses a snapshot of another spec.

        A version-2 snapshot (before day-anchored windows and partial buffers) restores
        into a buffer of its whole selection, and a version-3 one (a partial buffer,
        before day-anchored windows) into one of its ``selected_from``; both are refused
        for a spec with day-anchored windows. Without them every symbol's next bar counts
        as a day's first, which changes nothing."""
        version = int(state["__version__"])
        if version not in _SUPPORTED_SNAPSHOTS:
            raise BadInputError(f"snapshot version {version} is not supported")
        if str(state["__spec__"]) != spec.fingerprint():
            raise BadInputError(
                "snapshot was taken with another feature spec (fingerprint differs); "
                "recompute features instead of restoring"
            )
        session_json = session.model_dump_json() if session else ""
        if str(state["__session__"]) != session_json:
            raise BadInputError("snapshot was taken with another trading session")
        names = [str(name) for name in state["__names__"]]
        selected_from = names  # version 2: every feature computed, as selected
        if version >= 3:
            if "__selected_from__" not in state:
                raise BadInputError("snapshot is incomplete: no '__selected_from__'")
            selected_from = [str(name) for name in state["__selected_from__"]]
        timeframe = str(state.get("__timeframe__", "")) or None
        buffer = cls(
            spec,
            session,
            [str(s) for s in state["__symbols__"]],
            names,
            selected_from=selected_from,
            timeframe=timeframe,
        )
        if version < SNAPSHOT_VERSION and any(b.anchored for b in buffer.blocks):
            raise BadInputError(
                f"snapshot version {version} predates day-anchored windows, which this "
                "feature spec has"
            )
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
        if version >= 4:
            buffer.last_day = stored("last_day", buffer.last_day[:rows])
        else:
            buffer.last_day = buffer.last_day[:rows].copy()
        buffer.count = stored("count", buffer.count[:rows])
        for key, tracker in buffer._trackers.items():
            for name in tracker.STATE:
                tracker.set_state(name, stored(f"{key}|{name}", tracker.state(name)[:rows]))
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
