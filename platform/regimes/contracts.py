"""Data contracts shared by every layer (plan task 1.5).

Frozen dataclasses: once built, a record cannot change. Array fields are copied into
read-only float64 arrays, so a caller's later writes to its own buffer never reach a
record that was already handed on. Timestamps are timezone-aware UTC bar open times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from regimes.answers import UNKNOWN
from regimes.errors import BadInputError
from regimes.timeframes import TIMEFRAME_DURATION, check_timeframe


def _utc(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise BadInputError(f"{what}: expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() != timedelta(0):
        raise BadInputError(f"{what}: expected a timezone-aware UTC timestamp, got {value!r}")
    return value


def _frozen_vector(values, what: str, *, allow_nan: bool = False) -> np.ndarray:
    array = np.array(values, dtype=np.float64, copy=True)
    if array.ndim != 1:
        raise BadInputError(f"{what}: expected a 1-D vector, got shape {array.shape}")
    if not allow_nan and not np.all(np.isfinite(array)):
        raise BadInputError(f"{what}: contains NaN or inf")
    array.setflags(write=False)
    return array


@dataclass(frozen=True, slots=True)
class Bar:
    """One OHLCV bar.

    A gap bar (``is_gap``) is too incomplete to use: either it has no prices at all (all
    four NaN: nothing traded in the data we have) or it is a resampled bar built from too
    few of its minutes, whose prices are valid but partial (see ``docs/data.md``).
    """

    symbol: str
    timeframe: str
    ts: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    is_gap: bool = False

    def __post_init__(self):
        check_timeframe(self.timeframe)
        _utc(self.ts, "Bar.ts")
        prices = (self.open, self.high, self.low, self.close)
        if self.is_gap and all(math.isnan(price) for price in prices):
            return
        if not all(math.isfinite(price) and price > 0 for price in prices):
            raise BadInputError(f"Bar {self.symbol} {self.ts}: prices must be finite and > 0")
        if self.high < self.low:
            raise BadInputError(f"Bar {self.symbol} {self.ts}: high < low")
        if not (self.low <= self.open <= self.high and self.low <= self.close <= self.high):
            raise BadInputError(f"Bar {self.symbol} {self.ts}: open/close outside [low, high]")
        if not math.isfinite(self.volume) or self.volume < 0:
            raise BadInputError(f"Bar {self.symbol} {self.ts}: volume must be finite and >= 0")

    @property
    def final_at(self) -> datetime:
        """When the bar is closed and may be used: ``ts + timeframe``."""
        return self.ts + TIMEFRAME_DURATION[self.timeframe]


@dataclass(frozen=True, slots=True)
class FeatureVector:
    """The feature values of one bar, in the order of ``names``."""

    symbol: str
    timeframe: str
    ts: datetime
    names: tuple[str, ...]
    values: np.ndarray
    is_warmup: bool = False

    def __post_init__(self):
        check_timeframe(self.timeframe)
        _utc(self.ts, "FeatureVector.ts")
        object.__setattr__(self, "names", tuple(self.names))
        # Warm-up rows legitimately hold NaN for features whose window is not filled.
        values = _frozen_vector(self.values, "FeatureVector.values", allow_nan=self.is_warmup)
        if values.shape[0] != len(self.names):
            raise BadInputError(
                f"FeatureVector: {values.shape[0]} values for {len(self.names)} names"
            )
        object.__setattr__(self, "values", values)

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.names, self.values.tolist(), strict=True))


@dataclass(frozen=True, slots=True)
class LatentStateVector:
    """z_t: the encoder's output for one bar (d values)."""

    symbol: str
    timeframe: str
    ts: datetime
    model_id: str
    z: np.ndarray

    def __post_init__(self):
        check_timeframe(self.timeframe)
        _utc(self.ts, "LatentStateVector.ts")
        object.__setattr__(self, "z", _frozen_vector(self.z, "LatentStateVector.z"))

    @property
    def d(self) -> int:
        return int(self.z.shape[0])


@dataclass(frozen=True, slots=True)
class HMMOutput:
    """The regime answer for one bar: what the engine emits and the state store keeps.

    ``posterior`` is the filtered posterior alpha_t (K values summing to 1);
    ``raw_state_id`` is its argmax before anti-chatter; ``state_id`` is the published
    state after anti-chatter, or :data:`regimes.answers.UNKNOWN` with ``ood_reason`` set.
    """

    symbol: str
    timeframe: str
    ts: datetime
    model_id: str
    z: np.ndarray
    posterior: np.ndarray
    state_id: int
    raw_state_id: int
    state_prob: float
    loglik: float
    entropy: float
    is_unknown: bool
    ood_reason: str | None = None

    def __post_init__(self):
        check_timeframe(self.timeframe)
        _utc(self.ts, "HMMOutput.ts")
        object.__setattr__(self, "z", _frozen_vector(self.z, "HMMOutput.z"))
        posterior = _frozen_vector(self.posterior, "HMMOutput.posterior")
        if posterior.size < 2 or abs(posterior.sum() - 1.0) > 1e-6 or posterior.min() < 0:
            raise BadInputError("HMMOutput.posterior: expected K >= 2 probabilities summing to 1")
        object.__setattr__(self, "posterior", posterior)
        K = posterior.shape[0]
        if not 0 <= self.raw_state_id < K:
            raise BadInputError(f"HMMOutput.raw_state_id {self.raw_state_id} outside 0..{K - 1}")
        if self.is_unknown != (self.state_id == UNKNOWN):
            raise BadInputError(
                f"HMMOutput: is_unknown must hold exactly when state_id == {UNKNOWN}"
            )
        if not self.is_unknown and not 0 <= self.state_id < K:
            raise BadInputError(f"HMMOutput.state_id {self.state_id} outside 0..{K - 1}")
        if self.is_unknown and not self.ood_reason:
            raise BadInputError("HMMOutput: an UNKNOWN state needs an ood_reason")
        if not 0.0 <= self.state_prob <= 1.0 + 1e-12:
            raise BadInputError(f"HMMOutput.state_prob {self.state_prob} outside [0, 1]")

    @property
    def K(self) -> int:
        return int(self.posterior.shape[0])

    @property
    def d(self) -> int:
        return int(self.z.shape[0])
