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
    entropy: np.ndarray  # (N, window) trailing entropies
    states: np.ndarray  # (N, window) trailing raw states
    seen: np.ndarray  # (N,) bars pushed
    counters: dict[str, int] = field(default_factory=lambda: {r: 0 for r in (*REASONS, "bars")})

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
        )

    def snapshot(self) -> dict:
        return {
            "entropy": self.entropy.copy(),
            "states": self.states.copy(),
            "seen": self.seen.copy(),
            "counters": dict(self.counters),
        }

    @classmethod
    def restore(cls, state: dict) -> OODState:
        return cls(
            np.asarray(state["entropy"]).copy(),
            np.asarray(state["states"]).copy(),
            np.asarray(state["seen"]).copy(),
            dict(state["counters"]),
        )


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
    W = state.entropy.shape[1]
    if W != settings.window:
        raise BadInputError(f"ood: state has a window of {W}, settings ask for {settings.window}")
    n = len(rows)
    is_gap = np.asarray(is_gap, dtype=bool)
    loglik = np.asarray(loglik, dtype=np.float64)
    entropy = np.asarray(entropy, dtype=np.float64)
    reason = np.full(n, "", dtype=object)
    reason[is_gap] = "gap"
    if clipped is not None:
        beyond = ~is_gap & (np.asarray(clipped) > settings.max_clipped_features)
        reason[beyond & (reason == "")] = "out_of_range"
    low = ~is_gap & ~(loglik >= settings.loglik_threshold)  # NaN loglik counts as low
    reason[low & (reason == "")] = "loglik"
    # Entropy spike against the trailing window before this bar (needs a full window).
    full = state.seen[rows] >= W
    history = state.entropy[rows]
    mean = history.mean(axis=1)
    std = history.std(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (entropy - mean) / np.where(std > 0, std, np.nan)
    spike = ~is_gap & full & (z > settings.entropy_z)
    reason[spike & (reason == "")] = "entropy_spike"
    real = np.flatnonzero(~is_gap)
    if len(real):
        target = rows[real]
        slot = state.seen[target] % W
        state.entropy[target, slot] = entropy[real]
        state.states[target, slot] = raw_state[real]
        state.seen[target] += 1
    state.counters["bars"] += n
    for name in REASONS:
        state.counters[name] = state.counters.get(name, 0) + int((reason == name).sum())
    return reason != "", reason


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
