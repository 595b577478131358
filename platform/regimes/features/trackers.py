"""Rolling-window trackers of the online feature buffer, grouped by window.

Each tracker holds S series that share a window length and are pushed on the same rows
(every real bar, or the rows where a derived series exists), so one push and one read
update every feature of the group: the series sit on the last axis of the state arrays
(rows, w, S), and the per-row bookkeeping (count, offset in the block) is done once per
group instead of once per series. The arithmetic per value is exactly the batch path's
(:mod:`regimes.features.batch`, block "two stacks" scheme), elementwise, so the online
features stay bit-identical to the batch ones.
"""

from __future__ import annotations

import numpy as np

from regimes.features.batch import _chan_combine, _welford_add


def _at(array: np.ndarray, idx: np.ndarray, slot: np.ndarray) -> np.ndarray:
    """``array[idx, slot]`` of a (rows, w, S) array as (n, S), by one flat index (faster
    than two index arrays)."""
    rows, w, S = array.shape
    return array.reshape(rows * w, S)[idx * w + slot]


def _put(array: np.ndarray, idx: np.ndarray, slot: np.ndarray, values: np.ndarray) -> None:
    rows, w, S = array.shape
    array.reshape(rows * w, S)[idx * w + slot] = values


class _Tracker:
    """Common shape: ``rows`` symbols, S series; ``STATE`` names the per-row arrays."""

    STATE: tuple[str, ...] = ()

    def empty(self, rows: int) -> _Tracker:
        """A tracker of the same structure for ``rows`` new symbols."""
        raise NotImplementedError

    def grow(self, extra: int) -> None:
        template = self.empty(extra)
        for name in self.STATE:
            setattr(self, name, np.concatenate([getattr(self, name), getattr(template, name)]))


class Sums(_Tracker):
    """Rolling means over ``w`` values of S series from block prefix and suffix sums: the
    same additions, in the same order, as the batch :func:`_rolling_mean`."""

    STATE = ("ring", "suffix", "prefix", "count")

    def __init__(self, rows: int, w: int, S: int = 1):
        self.w, self.S = w, S
        self.ring = np.zeros((rows, w, S))
        self.suffix = np.zeros((rows, w, S))
        self.prefix = np.zeros((rows, S))
        self.count = np.zeros(rows, dtype=np.int64)

    def empty(self, rows: int) -> Sums:
        return Sums(rows, self.w, self.S)

    def push(self, idx: np.ndarray, x: np.ndarray) -> None:
        j = self.count[idx] % self.w
        opening = j == 0
        starting = idx[opening]
        if len(starting):
            self.suffix[starting] = np.cumsum(self.ring[starting, ::-1], axis=1)[:, ::-1]
        self.prefix[idx] = np.where(opening[:, None], x, self.prefix[idx] + x)
        _put(self.ring, idx, j, x)
        self.count[idx] += 1

    def read(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {"mean": self.means(idx)}

    def means(self, idx: np.ndarray) -> np.ndarray:
        w = self.w
        count = self.count[idx]
        j = (count - 1) % w
        following = np.minimum(j + 1, w - 1)
        prefix = self.prefix[idx]
        total = np.where((j + 1 < w)[:, None], _at(self.suffix, idx, following) + prefix, prefix)
        return np.where((count >= w)[:, None], total / w, np.nan)


class Moments(_Tracker):
    """Rolling mean and population std over ``w`` values of S series: O(1) Welford
    additions to the current block's prefix, and the previous block's suffix statistics
    computed once per block."""

    STATE = ("ring", "suffix_mean", "suffix_m2", "prefix_mean", "prefix_m2", "count")

    def __init__(self, rows: int, w: int, S: int = 1):
        self.w, self.S = w, S
        self.ring = np.zeros((rows, w, S))
        self.suffix_mean = np.zeros((rows, w, S))
        self.suffix_m2 = np.zeros((rows, w, S))
        self.prefix_mean = np.zeros((rows, S))
        self.prefix_m2 = np.zeros((rows, S))
        self.count = np.zeros(rows, dtype=np.int64)

    def empty(self, rows: int) -> Moments:
        return Moments(rows, self.w, self.S)

    def push(self, idx: np.ndarray, x: np.ndarray) -> None:
        j = self.count[idx] % self.w
        starting = idx[j == 0]
        if len(starting):
            self._suffix(starting)
            self.prefix_mean[starting] = 0.0
            self.prefix_m2[starting] = 0.0
        mean, m2 = _welford_add(self.prefix_mean[idx], self.prefix_m2[idx], x, (j + 1)[:, None])
        self.prefix_mean[idx], self.prefix_m2[idx] = mean, m2
        _put(self.ring, idx, j, x)
        self.count[idx] += 1

    def _suffix(self, starting: np.ndarray) -> None:
        """Mean and m2 of ``ring[:, j:]`` for every j (as the batch ``_welford_suffix``)."""
        block = self.ring[starting]
        n, w = len(starting), self.w
        means, m2s = np.empty((n, w, self.S)), np.empty((n, w, self.S))
        mean, m2 = np.zeros((n, self.S)), np.zeros((n, self.S))
        for j in range(w - 1, -1, -1):
            mean, m2 = _welford_add(mean, m2, block[:, j], w - j)
            means[:, j], m2s[:, j] = mean, m2
        self.suffix_mean[starting], self.suffix_m2[starting] = means, m2s

    def read(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        mean, std = self.moments(idx)
        return {"mean": mean, "std": std}

    def moments(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, population std) of each row's window, (n, S) each; NaN before w values."""
        w = self.w
        count = self.count[idx]
        j = (count - 1) % w
        following = np.minimum(j + 1, w - 1)
        prefix_mean, prefix_m2 = self.prefix_mean[idx], self.prefix_m2[idx]
        n_b = (j + 1)[:, None]
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
        std = np.sqrt(np.maximum(m2, 0.0) / w)
        mean[cold] = np.nan
        std[cold] = np.nan
        return mean, std


class Extremes(_Tracker):
    """Rolling max over ``w`` values of S series in amortized O(1) (van Herk /
    Gil-Werman); a min series is kept negated (-min(x) = max(-x), exactly)."""

    STATE = ("ring", "suffix", "prefix", "count")

    def __init__(self, rows: int, w: int, signs: np.ndarray):
        self.w = w
        self.signs = np.asarray(signs, dtype=float)  # +1 max, -1 min
        S = len(self.signs)
        self.ring = np.full((rows, w, S), -np.inf)
        self.suffix = np.full((rows, w, S), -np.inf)
        self.prefix = np.full((rows, S), -np.inf)
        self.count = np.zeros(rows, dtype=np.int64)

    def empty(self, rows: int) -> Extremes:
        return Extremes(rows, self.w, self.signs)

    def push(self, idx: np.ndarray, x: np.ndarray) -> None:
        x = x * self.signs
        j = self.count[idx] % self.w
        opening = j == 0
        starting = idx[opening]
        if len(starting):
            reversed_ring = self.ring[starting, ::-1]
            self.suffix[starting] = np.maximum.accumulate(reversed_ring, axis=1)[:, ::-1]
        _put(self.ring, idx, j, x)
        self.prefix[idx] = np.where(opening[:, None], x, np.maximum(self.prefix[idx], x))
        self.count[idx] += 1

    def read(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        count = self.count[idx]
        j = (count - 1) % self.w
        following = np.minimum(j + 1, self.w - 1)
        prefix = self.prefix[idx]
        carried = np.where((j + 1 < self.w)[:, None], _at(self.suffix, idx, following), prefix)
        value = np.maximum(prefix, carried) * self.signs
        return {"value": np.where((count >= self.w)[:, None], value, np.nan)}


class NonZero(_Tracker):
    """Exact integer count of non-zero values among the last ``w`` of S series."""

    STATE = ("ring", "total", "count")

    def __init__(self, rows: int, w: int, S: int = 1):
        self.w, self.S = w, S
        self.ring = np.zeros((rows, w, S), dtype=np.int8)
        self.total = np.zeros((rows, S), dtype=np.int64)
        self.count = np.zeros(rows, dtype=np.int64)

    def empty(self, rows: int) -> NonZero:
        return NonZero(rows, self.w, self.S)

    def push(self, idx: np.ndarray, x: np.ndarray) -> None:
        slot = self.count[idx] % self.w
        flag = (x != 0).astype(np.int8)
        self.total[idx] += flag - _at(self.ring, idx, slot)
        _put(self.ring, idx, slot, flag)
        self.count[idx] += 1

    def read(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        ready = (self.count[idx] >= self.w)[:, None]
        return {"value": np.where(ready, self.total[idx].astype(float), np.nan)}


class Lags(_Tracker):
    """The last ``depth + 1`` values of one series per row, to read the value k bars back."""

    STATE = ("ring", "count")

    def __init__(self, rows: int, depth: int):
        self.depth = depth
        self.size = depth + 1
        self.ring = np.zeros((rows, self.size))
        self.count = np.zeros(rows, dtype=np.int64)

    def empty(self, rows: int) -> Lags:
        return Lags(rows, self.depth)

    def push(self, idx: np.ndarray, x: np.ndarray) -> None:
        self.ring[idx, self.count[idx] % self.size] = x
        self.count[idx] += 1

    def back(self, idx: np.ndarray, ks: np.ndarray) -> np.ndarray:
        """The values ``ks`` bars back, (n, len(ks)); NaN where fewer were seen."""
        count = self.count[idx][:, None]
        position = (count - 1 - ks) % self.size
        position += (idx * self.size)[:, None]  # one flat index: faster than two
        value = self.ring.reshape(-1)[position]
        return np.where(count > ks, value, np.nan)


class EMAs(_Tracker):
    """Exponential averages of spans ``spans`` of one series each, seeded with the first
    value."""

    STATE = ("value", "count")

    def __init__(self, rows: int, spans: np.ndarray):
        self.spans = np.asarray(spans, dtype=np.int64)
        self.alpha = 2.0 / (self.spans + 1.0)
        self.value = np.zeros((rows, len(self.spans)))
        self.count = np.zeros(rows, dtype=np.int64)

    def empty(self, rows: int) -> EMAs:
        return EMAs(rows, self.spans)

    def push(self, idx: np.ndarray, x: np.ndarray) -> None:
        previous = self.value[idx]
        decay = 1.0 - self.alpha
        seeded = (self.count[idx] == 0)[:, None]
        self.value[idx] = np.where(seeded, x, self.alpha * x + decay * previous)
        self.count[idx] += 1

    def read(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {"value": self.value[idx]}
