"""Rolling-window trackers of the online feature buffer, grouped by window.

Each tracker holds S series that share a window length and are pushed on the same rows
(every real bar, or the rows where a derived series exists), so one push and one read
update every feature of the group, and the per-row bookkeeping (count, offset in the
block, window readiness) is done once per group instead of once per series. The series
axis comes first and the rows axis last in the state arrays ((S, rows) and (S, w, rows)),
so that every operation runs over rows in the innermost loop (numpy is slow on short inner
axes) and the ring slots of symbols that step together are contiguous; snapshots see the
arrays rows first (:meth:`_Tracker.state`). The arithmetic per value is exactly the batch
path's (:mod:`regimes.features.batch`, block "two stacks" scheme), elementwise, so the
online features stay bit-identical to the batch ones.
"""

from __future__ import annotations

import numpy as np

from regimes.features.batch import _chan_combine, _welford_add


def _series_offsets(array: np.ndarray) -> np.ndarray:
    """Flat offset of each series' block in an array laid out (S, ..., rows), (S, 1)."""
    S = array.shape[0]
    return (np.arange(S) * (array.size // S))[:, None]


def _take(array: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``array[:, idx]`` of an (S, rows) array ((S, n); np.take is several times faster
    than fancy indexing behind a slice)."""
    return np.take(array, idx, axis=1)


def _flat(array: np.ndarray) -> np.ndarray:
    """The 1-D view of a state array (never a copy: a write through a copy would be lost)."""
    if not array.flags.c_contiguous:
        raise RuntimeError("online tracker state must be C-contiguous")
    return array.reshape(-1)


def _set(array: np.ndarray, idx: np.ndarray, values: np.ndarray) -> None:
    """``array[:, idx] = values`` of an (S, rows) array, by one flat index."""
    _flat(array)[idx + _series_offsets(array)] = values


def _at(array: np.ndarray, idx: np.ndarray, slot: np.ndarray) -> np.ndarray:
    """``array[:, slot, idx]`` of an (S, w, rows) array as (S, n), by one flat index; rows
    at the same slot (symbols stepping together) are contiguous."""
    S, w, rows = array.shape
    return np.take(array.reshape(S, w * rows), slot * rows + idx, axis=1)


def _put(array: np.ndarray, idx: np.ndarray, slot: np.ndarray, values: np.ndarray) -> None:
    rows = array.shape[2]
    _flat(array)[slot * rows + idx + _series_offsets(array)] = values


class _Tracker:
    """Common shape: ``rows`` symbols, S series. ``STATE`` names the arrays, all with the
    rows on the last axis: ``count`` (rows,), the others (S, rows) or (S, w, rows)."""

    STATE: tuple[str, ...] = ()
    w: int

    def empty(self, rows: int) -> _Tracker:
        """A tracker of the same structure for ``rows`` new symbols."""
        raise NotImplementedError

    def _rows_axis(self, name: str) -> int:
        return -1

    def state(self, name: str) -> np.ndarray:
        """The array ``name`` rows first (a view)."""
        return np.moveaxis(getattr(self, name), self._rows_axis(name), 0)

    def set_state(self, name: str, value: np.ndarray) -> None:
        """Set the array ``name`` from its rows-first form (as :meth:`state` gives it)."""
        setattr(self, name, np.ascontiguousarray(np.moveaxis(value, 0, self._rows_axis(name))))

    def grow(self, extra: int) -> None:
        template = self.empty(extra)
        for name in self.STATE:
            axis = self._rows_axis(name)
            merged = np.concatenate([getattr(self, name), getattr(template, name)], axis=axis)
            setattr(self, name, merged)

    def push(self, idx: np.ndarray, x: np.ndarray) -> None:
        """Append one value of each series, (S, n), to rows ``idx`` (distinct)."""
        self._push(idx, x)

    def read(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """The statistics of rows ``idx`` over their last ``w`` values, (S, n) each."""
        count = self.count[idx]
        return self._values(idx, count, (count - 1) % self.w)

    def advance(self, idx: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`push` then :meth:`read`, sharing the per-row bookkeeping."""
        count, j = self._push(idx, x)
        return self._values(idx, count, j)

    def reset(self, idx: np.ndarray) -> None:
        """Start rows ``idx`` afresh (a day-anchored window at a trading day's first bar):
        the next value opens a block, and until w values the window is that block's
        prefix. The ring's old values are overwritten before they are read again."""
        self.count[idx] = 0


class Sums(_Tracker):
    """Rolling means over ``w`` values of S series from block prefix and suffix sums: the
    same additions, in the same order, as the batch :func:`_rolling_mean`."""

    STATE = ("ring", "suffix", "prefix", "count")

    def __init__(self, rows: int, w: int, S: int = 1, anchored: bool = False):
        self.w, self.S, self.anchored = w, S, anchored
        self.ring = np.zeros((S, w, rows))
        self.suffix = np.zeros((S, w, rows))
        self.prefix = np.zeros((S, rows))
        self.count = np.zeros(rows, dtype=np.int64)

    def empty(self, rows: int) -> Sums:
        return Sums(rows, self.w, self.S, self.anchored)

    def _push(self, idx, x):
        count = self.count[idx]
        j = count % self.w
        opening = j == 0
        starting = idx[opening]
        if len(starting):
            block = self.ring[:, ::-1, starting]
            self.suffix[:, :, starting] = np.cumsum(block, axis=1)[:, ::-1]
        _set(self.prefix, idx, np.where(opening, x, _take(self.prefix, idx) + x))
        _put(self.ring, idx, j, x)
        count += 1
        self.count[idx] = count
        return count, j

    def _values(self, idx, count, j):
        w = self.w
        following = np.minimum(j + 1, w - 1)
        prefix = _take(self.prefix, idx)
        total = np.where(j + 1 < w, _at(self.suffix, idx, following) + prefix, prefix)
        if self.anchored:  # fewer than w values since the reset: the prefix alone
            return {"mean": np.where(count >= w, total / w, prefix / count)}
        return {"mean": np.where(count >= w, total / w, np.nan)}


class Moments(_Tracker):
    """Rolling mean and population std over ``w`` values of S series: O(1) Welford
    additions to the current block's prefix, and the previous block's suffix statistics
    computed once per block."""

    STATE = ("ring", "suffix_mean", "suffix_m2", "prefix_mean", "prefix_m2", "count")

    def __init__(self, rows: int, w: int, S: int = 1, anchored: bool = False):
        self.w, self.S, self.anchored = w, S, anchored
        self.ring = np.zeros((S, w, rows))
        self.suffix_mean = np.zeros((S, w, rows))
        self.suffix_m2 = np.zeros((S, w, rows))
        self.prefix_mean = np.zeros((S, rows))
        self.prefix_m2 = np.zeros((S, rows))
        self.count = np.zeros(rows, dtype=np.int64)

    def empty(self, rows: int) -> Moments:
        return Moments(rows, self.w, self.S, self.anchored)

    def _push(self, idx, x):
        count = self.count[idx]
        j = count % self.w
        starting = idx[j == 0]
        if len(starting):
            self._suffix(starting)
            self.prefix_mean[:, starting] = 0.0
            self.prefix_m2[:, starting] = 0.0
        mean, m2 = _welford_add(_take(self.prefix_mean, idx), _take(self.prefix_m2, idx), x, j + 1)
        _set(self.prefix_mean, idx, mean)
        _set(self.prefix_m2, idx, m2)
        _put(self.ring, idx, j, x)
        count += 1
        self.count[idx] = count
        return count, j

    def _suffix(self, starting: np.ndarray) -> None:
        """Mean and m2 of ``ring[:, j:]`` for every j (as the batch ``_welford_suffix``)."""
        block = self.ring[:, :, starting]
        shape = (self.S, len(starting))
        w = self.w
        means, m2s = np.empty(block.shape), np.empty(block.shape)
        mean, m2 = np.zeros(shape), np.zeros(shape)
        for j in range(w - 1, -1, -1):
            mean, m2 = _welford_add(mean, m2, block[:, j], w - j)
            means[:, j], m2s[:, j] = mean, m2
        self.suffix_mean[:, :, starting], self.suffix_m2[:, :, starting] = means, m2s

    def _values(self, idx, count, j):
        """Mean and population std of each row's window; NaN before w values."""
        w = self.w
        following = np.minimum(j + 1, w - 1)
        prefix_mean, prefix_m2 = _take(self.prefix_mean, idx), _take(self.prefix_m2, idx)
        n_b = j + 1
        n_a = w - n_b
        # Chan's combination on every row, kept where the window spans two blocks (the
        # same arithmetic as the batch path on those rows; the prefix alone elsewhere).
        with np.errstate(invalid="ignore", divide="ignore"):
            combined_mean, combined_m2 = _chan_combine(
                _at(self.suffix_mean, idx, following),
                _at(self.suffix_m2, idx, following),
                n_a,
                prefix_mean,
                prefix_m2,
                n_b,
            )
        spans = n_a > 0
        mean = np.where(spans, combined_mean, prefix_mean)
        m2 = np.where(spans, combined_m2, prefix_m2)
        cold = count < w
        if self.anchored:  # fewer than w values since the reset: the prefix alone
            mean, m2 = np.where(cold, prefix_mean, mean), np.where(cold, prefix_m2, m2)
            return {"mean": mean, "std": np.sqrt(np.maximum(m2, 0.0) / np.where(cold, count, w))}
        std = np.sqrt(np.maximum(m2, 0.0) / w)
        mean[:, cold] = np.nan
        std[:, cold] = np.nan
        return {"mean": mean, "std": std}


class Extremes(_Tracker):
    """Rolling max over ``w`` values of S series in amortized O(1) (van Herk /
    Gil-Werman); a min series is kept negated (-min(x) = max(-x), exactly)."""

    STATE = ("ring", "suffix", "prefix", "count")

    def __init__(self, rows: int, w: int, signs: np.ndarray):
        self.w = w
        self.signs = np.asarray(signs, dtype=float)  # +1 max, -1 min
        self.sign_column = self.signs[:, None]
        S = len(self.signs)
        self.ring = np.full((S, w, rows), -np.inf)
        self.suffix = np.full((S, w, rows), -np.inf)
        self.prefix = np.full((S, rows), -np.inf)
        self.count = np.zeros(rows, dtype=np.int64)

    def empty(self, rows: int) -> Extremes:
        return Extremes(rows, self.w, self.signs)

    def _push(self, idx, x):
        x = x * self.sign_column
        count = self.count[idx]
        j = count % self.w
        opening = j == 0
        starting = idx[opening]
        if len(starting):
            block = self.ring[:, ::-1, starting]
            self.suffix[:, :, starting] = np.maximum.accumulate(block, axis=1)[:, ::-1]
        _put(self.ring, idx, j, x)
        _set(self.prefix, idx, np.where(opening, x, np.maximum(_take(self.prefix, idx), x)))
        count += 1
        self.count[idx] = count
        return count, j

    def _values(self, idx, count, j):
        following = np.minimum(j + 1, self.w - 1)
        prefix = _take(self.prefix, idx)
        carried = np.where(j + 1 < self.w, _at(self.suffix, idx, following), prefix)
        value = np.maximum(prefix, carried)
        value *= self.sign_column
        return {"value": np.where(count >= self.w, value, np.nan)}


class NonZero(_Tracker):
    """Exact integer count of non-zero values among the last ``w`` of S series."""

    STATE = ("ring", "total", "count")

    def __init__(self, rows: int, w: int, S: int = 1, anchored: bool = False):
        self.w, self.S, self.anchored = w, S, anchored
        self.ring = np.zeros((S, w, rows), dtype=np.int8)
        self.total = np.zeros((S, rows), dtype=np.int64)
        self.count = np.zeros(rows, dtype=np.int64)

    def empty(self, rows: int) -> NonZero:
        return NonZero(rows, self.w, self.S, self.anchored)

    def reset(self, idx: np.ndarray) -> None:
        self.count[idx] = 0
        self.total[:, idx] = 0
        self.ring[:, :, idx] = 0

    def _push(self, idx, x):
        count = self.count[idx]
        slot = count % self.w
        flag = (x != 0).astype(np.int8)
        total = _take(self.total, idx) + (flag - _at(self.ring, idx, slot))
        _set(self.total, idx, total)
        _put(self.ring, idx, slot, flag)
        count += 1
        self.count[idx] = count
        return count, total

    def read(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return self._values(idx, self.count[idx], _take(self.total, idx))

    def _values(self, idx, count, total):
        if self.anchored:  # the values since the reset, however few
            return {"value": total.astype(float)}
        return {"value": np.where(count >= self.w, total.astype(float), np.nan)}


class Lags(_Tracker):
    """The last ``depth + 1`` values of one series per row, to read the value k bars back."""

    STATE = ("ring", "count")

    def __init__(self, rows: int, depth: int):
        self.depth = depth
        self.size = depth + 1
        self.ring = np.zeros((rows, self.size))
        self.count = np.zeros(rows, dtype=np.int64)

    def _rows_axis(self, name: str) -> int:
        return 0

    def empty(self, rows: int) -> Lags:
        return Lags(rows, self.depth)

    def _push(self, idx, x):
        self.ring[idx, self.count[idx] % self.size] = x
        self.count[idx] += 1

    def back(self, idx: np.ndarray, ks: np.ndarray) -> np.ndarray:
        """The values ``ks`` (a column, (k, 1)) bars back, (k, n); NaN where fewer were
        seen."""
        count = self.count[idx]
        position = (count - 1 - ks) % self.size
        position += idx * self.size  # one flat index: faster than two
        value = self.ring.reshape(-1)[position]
        return np.where(count > ks, value, np.nan)


class EMAs(_Tracker):
    """Exponential averages of spans ``spans`` of one series each, seeded with the first
    value."""

    STATE = ("value", "count")

    def __init__(self, rows: int, spans: np.ndarray):
        self.spans = np.asarray(spans, dtype=np.int64)
        self.alpha = (2.0 / (self.spans + 1.0))[:, None]
        self.value = np.zeros((len(self.spans), rows))
        self.count = np.zeros(rows, dtype=np.int64)

    def empty(self, rows: int) -> EMAs:
        return EMAs(rows, self.spans)

    def _push(self, idx, x):
        previous = _take(self.value, idx)
        decay = 1.0 - self.alpha
        seeded = self.count[idx] == 0
        value = np.where(seeded, x, self.alpha * x + decay * previous)
        _set(self.value, idx, value)
        self.count[idx] += 1
        return value, None

    def read(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {"value": _take(self.value, idx)}

    def advance(self, idx: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
        return {"value": self._push(idx, x)[0]}
