"""OOD checks: gaps, low predictive log-likelihood, entropy spikes, occupancy collapse."""

from __future__ import annotations

import numpy as np
import pytest

from regimes.errors import BadInputError
from regimes.live.ood import OODSettings, OODState, occupancy_collapse, step

pytestmark = pytest.mark.unit


def test_reasons_in_order_and_counters():
    settings = OODSettings(loglik_threshold=-20.0, window=10, entropy_z=3.0)
    state = OODState.empty(3, 10)
    rng = np.random.default_rng(0)
    rows = np.arange(3)
    for _ in range(10):  # fill the trailing windows with calm bars
        unknown, _ = step(
            state,
            rows,
            np.full(3, -5.0),
            0.1 + 0.01 * rng.random(3),
            np.zeros(3, dtype=int),
            np.zeros(3, dtype=bool),
            settings,
        )
        assert not unknown.any()
    state = OODState.empty(4, 10)
    rows = np.arange(4)
    for _ in range(10):
        step(
            state,
            rows,
            np.full(4, -5.0),
            0.1 + 0.01 * rng.random(4),
            np.zeros(4, int),
            np.zeros(4, bool),
            settings,
            clipped=np.zeros(4, int),
        )
    unknown, reason = step(
        state,
        rows,
        np.array([-5.0, -50.0, -5.0, -50.0]),
        np.array([0.1, 0.1, 1.0, 0.1]),
        np.zeros(4, dtype=int),
        np.array([True, False, False, False]),
        settings,
        clipped=np.array([3, 0, 0, 1]),  # a gap's clip count does not matter
    )
    assert unknown.tolist() == [True, True, True, True]
    assert reason.tolist() == ["gap", "loglik", "entropy_spike", "out_of_range"]
    assert state.counters == {
        "gap": 1,
        "out_of_range": 1,
        "loglik": 1,
        "entropy_spike": 1,
        "bars": 44,
    }
    looser = OODSettings(loglik_threshold=-20.0, window=10, max_clipped_features=1)
    _, reason = step(
        state,
        np.array([0, 1]),
        np.array([-5.0, -5.0]),
        np.array([0.1, 0.1]),
        np.zeros(2, int),
        np.zeros(2, bool),
        looser,
        clipped=np.array([1, 2]),
    )
    assert reason.tolist() == ["", "out_of_range"]
    nan_ll, reason = step(
        state,
        np.array([0]),
        np.array([np.nan]),
        np.array([0.1]),
        np.array([0]),
        np.array([False]),
        settings,
    )
    assert nan_ll.tolist() == [True] and reason.tolist() == ["loglik"]


def test_occupancy_collapse_and_snapshots():
    settings = OODSettings(loglik_threshold=-20.0, window=10, collapse_share=0.9)
    state = OODState.empty(2, 10)
    for t in range(12):
        raw = np.array([0, t % 3])
        step(
            state,
            np.arange(2),
            np.full(2, -1.0),
            np.full(2, 0.2),
            raw,
            np.zeros(2, dtype=bool),
            settings,
        )
    assert occupancy_collapse(state, settings).tolist() == [True, False]
    again = OODState.restore(state.snapshot())
    a = step(
        state,
        np.arange(2),
        np.full(2, -1.0),
        np.full(2, 5.0),
        np.zeros(2, dtype=int),
        np.zeros(2, dtype=bool),
        settings,
    )
    b = step(
        again,
        np.arange(2),
        np.full(2, -1.0),
        np.full(2, 5.0),
        np.zeros(2, dtype=int),
        np.zeros(2, dtype=bool),
        settings,
    )
    assert a[1].tolist() == b[1].tolist() and state.counters == again.counters


def test_bad_settings_are_refused():
    with pytest.raises(BadInputError, match="window"):
        OODSettings(loglik_threshold=-1.0, window=2)
    with pytest.raises(BadInputError, match="collapse_share"):
        OODSettings(loglik_threshold=-1.0, collapse_share=0.3)
    with pytest.raises(BadInputError, match="max_clipped_features"):
        OODSettings(loglik_threshold=-1.0, max_clipped_features=-1)
