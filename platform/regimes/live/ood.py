"""Out-of-distribution and model-health checks of the live path (plan 6.5).

Per symbol and bar, in this order (the first that fires is the reason):

* ``gap`` — the bar is a data gap (no prices): UNKNOWN by policy;
* ``out_of_range`` — more than ``max_clipped_features`` of the bar's scaled features sit
  at the scaler's clip, i.e. beyond anything seen at training (a regime the model never
  saw can move features the encoder's subspace barely sees, so the likelihood of z_t
  alone would miss it);
* ``loglik`` — the predictive log-likelihood log p(z_t | z_1..t-1) is below the model's
  threshold, calibrated at training (``metadata.ood_threshold``);
* ``entropy_spike`` — the posterior entropy is more than ``entropy_z`` standard
  deviations above its trailing mean over ``window`` bars.

Separately, **occupancy collapse** is a model-health alarm (not a per-bar UNKNOWN): over
the trailing ``window`` bars one state holds at least ``collapse_share`` of a symbol's
raw states. Counters of every reason are kept for a monitor to read. Trailing windows
are ring buffers; the state snapshots and restores exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from regimes.errors import BadInputError

REASONS = ("gap", "out_of_range", "loglik", "entropy_spike")


@dataclass(frozen=True)
class OODSettings:
    loglik_threshold: float
    window: int = 100
    entropy_z: float = 4.0
    collapse_share: float = 0.95
    max_clipped_features: int = 0

    @classmethod
    def from_config(cls, loglik_threshold: float, config) -> OODSettings:
        """Settings of one timeframe: the artifact's calibrated threshold and the
        trailing-window settings of ``config/timeframes.yaml`` (``ood``)."""
        return cls(
            loglik_threshold=float(loglik_threshold),
            window=config.window,
            entropy_z=config.entropy_z,
            collapse_share=config.collapse_share,
            max_clipped_features=config.max_clipped_features,
        )

    def __post_init__(self):
        if self.window < 5:
            raise BadInputError(f"ood window: expected >= 5 bars, got {self.window}")
        if self.max_clipped_features < 0:
            raise BadInputError(
                f"max_clipped_features: expected >= 0, got {self.max_clipped_features}"
            )
        if not 0.5 < self.collapse_share <= 1.0:
            raise BadInputError(f"collapse_share: expected (0.5, 1], got {self.collapse_share}")


@dataclass
class OODState:
    """Trailing windows per symbol (ring buffers) and the counters.

    ``moments`` holds the running sum and sum of squares of each entropy window, so a
    step costs O(1) per symbol instead of O(window); they are recomputed exactly from
    the ring each time a symbol's ring wraps, which bounds floating-point drift.
    """

    entropy: np.ndarray  # (N, window) trailing entropies
    states: np.ndarray  # (N, window) trailing raw states
    seen: np.ndarray  # (N,) bars pushed
    counters: dict[str, int] = field(default_factory=lambda: {r: 0 for r in (*REASONS, "bars")})
    moments: np.ndarray | None = None  # (N, 2): sum and sum of squares of the window

    def __post_init__(self):
        if self.moments is None:
            self.moments = np.stack([self.entropy.sum(axis=1), (self.entropy**2).sum(axis=1)], 1)

    @classmethod
    def empty(cls, n_symbols: int, window: int) -> OODState:
        return cls(
            entropy=np.zeros((n_symbols, window)),
            states=np.full((n_symbols, window), -1, dtype=np.int64),
            seen=np.zeros(n_symbols, dtype=np.int64),
        )

    def extended(self, n_symbols: int) -> OODState:
        """This state with ``n_symbols`` fresh symbols appended (counters shared)."""
        fresh = OODState.empty(n_symbols, self.entropy.shape[1])
        return OODState(
            np.concatenate([self.entropy, fresh.entropy]),
            np.concatenate([self.states, fresh.states]),
            np.concatenate([self.seen, fresh.seen]),
            self.counters,
            np.concatenate([self.moments, fresh.moments]),
        )

    def snapshot(self) -> dict:
        return {
            "entropy": self.entropy.copy(),
            "states": self.states.copy(),
            "seen": self.seen.copy(),
            "moments": self.moments.copy(),
            "counters": dict(self.counters),
        }

    @classmethod
    def restore(cls, state: dict) -> OODState:
        moments = state.get("moments")
        return cls(
            np.asarray(state["entropy"]).copy(),
            np.asarray(state["states"]).copy(),
            np.asarray(state["seen"]).copy(),
            dict(state["counters"]),
            None if moments is None else np.asarray(moments, dtype=np.float64).copy(),
        )


_REASON_NAMES = np.array(["", *REASONS], dtype=object)
_CODE = {name: code for code, name in enumerate(_REASON_NAMES)}


def step(
    state: OODState,
    rows: np.ndarray,
    loglik: np.ndarray,
    entropy: np.ndarray,
    raw_state: np.ndarray,
    is_gap: np.ndarray,
    settings: OODSettings,
    clipped: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Check one bar of ``rows``; returns (is_unknown, reason) arrays for those rows.

    ``clipped`` counts, per row, the bar's scaled features at the scaler's clip. Gap
    bars do not enter the trailing windows (they carry no model output).
    """
    code = step_codes(state, rows, loglik, entropy, raw_state, is_gap, settings, clipped)
    return code != 0, _REASON_NAMES[code]


def step_codes(
    state: OODState,
    rows: np.ndarray,
    loglik: np.ndarray,
    entropy: np.ndarray,
    raw_state: np.ndarray,
    is_gap: np.ndarray,
    settings: OODSettings,
    clipped: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`step` returning reason codes: 0 = none, i = ``REASONS[i - 1]``."""
    W = state.entropy.shape[1]
    if W != settings.window:
        raise BadInputError(f"ood: state has a window of {W}, settings ask for {settings.window}")
    n = len(rows)
    is_gap = np.asarray(is_gap, dtype=bool)
    loglik = np.asarray(loglik, dtype=np.float64)
    entropy = np.asarray(entropy, dtype=np.float64)
    # The first check that fires gives the reason: later ones only fill empty codes.
    code = np.where(is_gap, _CODE["gap"], 0).astype(np.int8)
    if clipped is not None:
        beyond = ~is_gap & (np.asarray(clipped) > settings.max_clipped_features)
        code[beyond & (code == 0)] = _CODE["out_of_range"]
    low = ~is_gap & ~(loglik >= settings.loglik_threshold)  # NaN loglik counts as low
    code[low & (code == 0)] = _CODE["loglik"]
    # Entropy spike against the trailing window before this bar (needs a full window).
    full = state.seen[rows] >= W
    moments = state.moments[rows]
    mean = moments[:, 0] / W
    variance = np.maximum(moments[:, 1] / W - mean * mean, 0.0)
    std = np.sqrt(variance)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (entropy - mean) / np.where(std > 0, std, np.nan)
        # The running moments lose precision when the entropy barely varies: wherever
        # the decision could hang on it, the exact mean and std of the ring decide.
        doubtful = full & (~(z <= 0.5 * settings.entropy_z) | (variance <= 1e-6 * mean * mean))
        if doubtful.any():
            ring = state.entropy[rows[doubtful]]
            exact = ring.std(axis=1)
            z[doubtful] = (entropy[doubtful] - ring.mean(axis=1)) / np.where(
                exact > 0, exact, np.nan
            )
    spike = ~is_gap & full & (z > settings.entropy_z)
    code[spike & (code == 0)] = _CODE["entropy_spike"]
    real = np.flatnonzero(~is_gap)
    if len(real):
        target = rows[real]
        slot = state.seen[target] % W
        evicted = state.entropy[target, slot]
        value = entropy[real]
        state.entropy[target, slot] = value
        state.states[target, slot] = raw_state[real]
        state.seen[target] += 1
        state.moments[target, 0] += value - evicted
        state.moments[target, 1] += value * value - evicted * evicted
        wrapped = target[state.seen[target] % W == 0]
        if len(wrapped):  # exact again once per lap of the ring
            ring = state.entropy[wrapped]
            state.moments[wrapped, 0] = ring.sum(axis=1)
            state.moments[wrapped, 1] = (ring * ring).sum(axis=1)
    state.counters["bars"] += n
    counts = np.bincount(code, minlength=len(_REASON_NAMES))
    for index, name in enumerate(REASONS, start=1):
        state.counters[name] = state.counters.get(name, 0) + int(counts[index])
    return code


def occupancy_collapse(state: OODState, settings: OODSettings) -> np.ndarray:
    """Symbols whose trailing window is (nearly) all one state: a model-health alarm."""
    W = state.states.shape[1]
    full = state.seen >= W
    if state.states.size == 0:
        return np.zeros(0, dtype=bool)
    top = np.zeros(len(state.seen))
    for k in range(int(state.states.max(initial=-1)) + 1):
        top = np.maximum(top, (state.states == k).mean(axis=1))
    return full & (top >= settings.collapse_share)
