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

from typing import NamedTuple

import numpy as np

from regimes.features.batch import _chan_combine, _welford_add


class Slots(NamedTuple):
    """Per-step bookkeeping of rows ``idx`` pushed together into the trackers of one window
    ``w``, computed once and shared by every tracker of that window that is pushed on the
    same rows and has seen as many values: the feature buffer's plain rolling series, whose
    trackers have all seen as many values as the buffer has real bars, and separately its
    day-anchored ones, whose trackers have all seen the bars since their last reset."""

    idx: np.ndarray  # rows pushed
    count: np.ndarray  # values seen after the push
    j: np.ndarray  # offset of the new value in its block of w
    opening: np.ndarray  # j == 0: the value opens a block
    starting: np.ndarray  # rows whose value opens a block
    spans: np.ndarray  # j + 1 < w: the window spans the previous block's suffix
    cold: np.ndarray  # fewer than w values seen
    slot: np.ndarray  # flat index of the new value in a (w, rows) ring
    following: np.ndarray  # flat index of the previous block's suffix from j + 1


def slots(idx: np.ndarray, count_before: np.ndarray, w: int, rows: int) -> Slots:
    """:class:`Slots` of rows ``idx`` that had seen ``count_before`` values, for trackers
    of window ``w`` with ``rows`` rows of capacity."""
    j = count_before % w
    opening = j == 0
    count = count_before + 1
    following = np.minimum(j + 1, w - 1)
    following *= rows
    following += idx
    return Slots(
        idx, count, j, opening, idx[opening], j + 1 < w, count < w, j * rows + idx, following
    )


_OFFSETS: dict[tuple[int, int], np.ndarray] = {}


def _series_offsets(array: np.ndarray) -> np.ndarray:
    """Flat offset of each series' block in an array laid out (S, ..., rows), (S, 1);
    None for one series (no offset to add)."""
    S = array.shape[0]
    if S == 1:
        return None
    key = (S, array.size)
    offsets = _OFFSETS.get(key)
    if offsets is None:
        offsets = _OFFSETS[key] = (np.arange(S) * (array.size // S))[:, None]
    return offsets


def _flat(array: np.ndarray) -> np.ndarray:
    """The 1-D view of a state array (never a copy: a write through a copy would be lost)."""
    if not array.flags.c_contiguous:
        raise RuntimeError("online tracker state must be C-contiguous")
    return array.reshape(-1)


def _set(array: np.ndarray, flat_index: np.ndarray, values: np.ndarray) -> None:
    """``array[:, i] = values`` of an (S, ...) array at the flat positions ``flat_index``
    within each series' block (one flat index over all series)."""
    offsets = _series_offsets(array)
    _flat(array)[flat_index if offsets is None else flat_index + offsets] = values


def _get(array: np.ndarray, flat_index: np.ndarray) -> np.ndarray:
    """``array[:, i]`` of an (S, ...) array at the flat positions ``flat_index`` within
    each series' block, as (S, n) (np.take is several times faster than fancy indexing
    behind a slice)."""
    return array.reshape(array.shape[0], -1).take(flat_index, axis=1)


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

    def slots(self, idx: np.ndarray) -> Slots:
        """The :class:`Slots` of a push to rows ``idx`` from this tracker's own counts."""
        return slots(idx, self.count[idx], self.w, self.count.shape[0])

    def push(self, idx: np.ndarray, x: np.ndarray) -> None:
        """Append one value of each series, (S, n), to rows ``idx`` (distinct)."""
        self._push(self.slots(idx), x)

    def read(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """The statistics of rows ``idx`` over their last ``w`` values, (S, n) each."""
        count = self.count[idx]
        # The slots of the last push: j of the value that came in last.
        last = slots(idx, count - 1, self.w, self.count.shape[0])
        return self._values(last._replace(count=count, cold=count < self.w), None)

    def advance(self, idx: np.ndarray, x: np.ndarray, step: Slots | None = None):
        """:meth:`push` then :meth:`read`, sharing the per-row bookkeeping; ``step`` the
        slots when the caller computed them for several trackers (see :class:`Slots`)."""
        step = self.slots(idx) if step is None else step
        return self._values(step, self._push(step, x))

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

    def _push(self, step: Slots, x):
        idx = step.idx
        starting = step.starting
        if len(starting):
            block = self.ring[:, ::-1, starting]
            self.suffix[:, :, starting] = np.cumsum(block, axis=1)[:, ::-1]
        prefix = np.where(step.opening, x, _get(self.prefix, idx) + x)
        _set(self.prefix, idx, prefix)
        _set(self.ring, step.slot, x)
        self.count[idx] = step.count
        return prefix

    def _values(self, step: Slots, prefix):
        if prefix is None:
            prefix = _get(self.prefix, step.idx)
        total = np.where(step.spans, _get(self.suffix, step.following) + prefix, prefix)
        if self.anchored:  # fewer than w values since the reset: the prefix alone
            return {"mean": np.where(step.cold, prefix / step.count, total / self.w)}
        return {"mean": np.where(step.cold, np.nan, total / self.w)}


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

    def _push(self, step: Slots, x):
        idx = step.idx
        starting = step.starting
        if len(starting):
            self._suffix(starting)
            self.prefix_mean[:, starting] = 0.0
            self.prefix_m2[:, starting] = 0.0
        mean, m2 = _welford_add(
            _get(self.prefix_mean, idx), _get(self.prefix_m2, idx), x, step.j + 1
        )
        _set(self.prefix_mean, idx, mean)
        _set(self.prefix_m2, idx, m2)
        _set(self.ring, step.slot, x)
        self.count[idx] = step.count
        return mean, m2

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

    def _values(self, step: Slots, prefix):
        """Mean and population std of each row's window; NaN before w values."""
        w = self.w
        if prefix is None:
            prefix = _get(self.prefix_mean, step.idx), _get(self.prefix_m2, step.idx)
        prefix_mean, prefix_m2 = prefix
        n_b = step.j + 1
        n_a = w - n_b
        # Chan's combination on every row, kept where the window spans two blocks (the
        # same arithmetic as the batch path on those rows; the prefix alone elsewhere).
        with np.errstate(invalid="ignore", divide="ignore"):
            combined_mean, combined_m2 = _chan_combine(
                _get(self.suffix_mean, step.following),
                _get(self.suffix_m2, step.following),
                n_a,
                prefix_mean,
                prefix_m2,
                n_b,
            )
        spans, cold = step.spans, step.cold
        mean = np.where(spans, combined_mean, prefix_mean)
        m2 = np.where(spans, combined_m2, prefix_m2)
        if self.anchored:  # fewer than w values since the reset: the prefix alone
            mean, m2 = np.where(cold, prefix_mean, mean), np.where(cold, prefix_m2, m2)
            divisor = np.where(cold, step.count, w)
            return {"mean": mean, "std": np.sqrt(np.maximum(m2, 0.0) / divisor)}
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
        self.negates = bool((self.signs < 0).any())
        S = len(self.signs)
        self.ring = np.full((S, w, rows), -np.inf)
        self.suffix = np.full((S, w, rows), -np.inf)
        self.prefix = np.full((S, rows), -np.inf)
        self.count = np.zeros(rows, dtype=np.int64)

    def empty(self, rows: int) -> Extremes:
        return Extremes(rows, self.w, self.signs)

    def _push(self, step: Slots, x):
        if self.negates:
            x = x * self.sign_column
        idx = step.idx
        starting = step.starting
        if len(starting):
            block = self.ring[:, ::-1, starting]
            self.suffix[:, :, starting] = np.maximum.accumulate(block, axis=1)[:, ::-1]
        _set(self.ring, step.slot, x)
        prefix = np.where(step.opening, x, np.maximum(_get(self.prefix, idx), x))
        _set(self.prefix, idx, prefix)
        self.count[idx] = step.count
        return prefix

    def _values(self, step: Slots, prefix):
        if prefix is None:
            prefix = _get(self.prefix, step.idx)
        carried = np.where(step.spans, _get(self.suffix, step.following), prefix)
        value = np.maximum(prefix, carried)
        if self.negates:
            value *= self.sign_column
        return {"value": np.where(step.cold, np.nan, value)}


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

    def _push(self, step: Slots, x):
        idx = step.idx
        flag = (x != 0).astype(np.int8)
        total = _get(self.total, idx) + (flag - _get(self.ring, step.slot))
        _set(self.total, idx, total)
        _set(self.ring, step.slot, flag)
        self.count[idx] = step.count
        return total

    def _values(self, step: Slots, total):
        if total is None:
            total = _get(self.total, step.idx)
        if self.anchored:  # the values since the reset, however few
            return {"value": total.astype(float)}
        return {"value": np.where(step.cold, np.nan, total.astype(float))}


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

    def push(self, idx: np.ndarray, x: np.ndarray) -> None:
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
        self.decay = 1.0 - self.alpha
        self.value = np.zeros((len(self.spans), rows))
        self.count = np.zeros(rows, dtype=np.int64)

    def empty(self, rows: int) -> EMAs:
        return EMAs(rows, self.spans)

    def push(self, idx: np.ndarray, x: np.ndarray) -> None:
        self.advance(idx, x)

    def read(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {"value": _get(self.value, idx)}

    def advance(self, idx: np.ndarray, x: np.ndarray, step: Slots | None = None):
        count = self.count[idx] if step is None else step.count - 1
        previous = _get(self.value, idx)
        value = np.where(count == 0, x, self.alpha * x + self.decay * previous)
        _set(self.value, idx, value)
        self.count[idx] = count + 1
        return {"value": value}
