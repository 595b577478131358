"""Anti-chatter: threshold, minimum dwell, majority vote; raw states stay visible."""

from __future__ import annotations

import numpy as np
import pytest

from regimes.config.timeframes import AntiChatter
from regimes.errors import BadInputError
from regimes.live.antichatter import NO_STATE, AntiChatterState, majority, step

pytestmark = pytest.mark.unit


def _posteriors(states, confidence=0.9, K=3):
    out = np.full((len(states), K), (1 - confidence) / (K - 1))
    out[np.arange(len(states)), states] = confidence
    return out


def _run(raw_states, settings, confidence=0.9):
    state = AntiChatterState.empty(1, settings.majority_window)
    published, raws = [], []
    for row in _posteriors(raw_states, confidence):
        p, r = step(state, np.array([0]), row[None, :], settings)
        published.append(int(p[0]))
        raws.append(int(r[0]))
    return published, raws, state


def test_single_bar_blips_are_voted_away_and_raw_stays_visible():
    settings = AntiChatter(p_switch=0.6, min_dwell_bars=1, majority_window=3)
    raw = [0, 0, 0, 1, 0, 0, 2, 0, 0]
    published, raws, _ = _run(raw, settings)
    assert published == [0] * 9
    assert raws == raw


def test_a_lasting_change_is_published_after_the_vote_turns():
    settings = AntiChatter(p_switch=0.6, min_dwell_bars=1, majority_window=3)
    published, _, _ = _run([0, 0, 0, 1, 1, 1, 1], settings)
    assert published == [0, 0, 0, 0, 1, 1, 1]


def test_low_confidence_never_switches():
    settings = AntiChatter(p_switch=0.95, min_dwell_bars=1, majority_window=1)
    published, _, _ = _run([0, 1, 0, 1], settings, confidence=0.9)
    assert published == [NO_STATE] * 4  # never confident enough to publish at all


def test_minimum_dwell_holds_a_new_state():
    settings = AntiChatter(p_switch=0.6, min_dwell_bars=3, majority_window=1)
    published, _, _ = _run([0, 1, 0, 0, 2, 2, 2], settings)
    # 0 is published at once; 1 cannot replace it before 0 has lasted 3 bars.
    assert published == [0, 0, 0, 0, 2, 2, 2]


def test_majority_ties_go_to_the_most_recent():
    history = np.array([[0, 1, 2, 2, 1]])
    assert majority(history, np.array([5]), K=3).tolist() == [1]
    assert majority(np.array([[1, -1, -1]]), np.array([1]), K=3).tolist() == [1]


def test_batched_symbols_and_exact_snapshots():
    settings = AntiChatter(p_switch=0.6, min_dwell_bars=2, majority_window=3)
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 3, size=(40, 4))
    straight = AntiChatterState.empty(4, 3)
    restarted = AntiChatterState.empty(4, 3)
    for t in range(40):
        posterior = _posteriors(raw[t])
        a, _ = step(straight, np.arange(4), posterior, settings)
        if t == 20:
            restarted = AntiChatterState.restore(restarted.snapshot())
        b, _ = step(restarted, np.arange(4), posterior, settings)
        np.testing.assert_array_equal(a, b)
    alone = AntiChatterState.empty(1, 3)
    for t in range(40):
        c, _ = step(alone, np.array([0]), _posteriors(raw[t, [2]]), settings)
    assert c[0] == a[2]
    with pytest.raises(BadInputError, match="window of 3"):
        step(
            straight,
            np.arange(4),
            _posteriors(raw[0]),
            AntiChatter(p_switch=0.6, min_dwell_bars=2, majority_window=5),
        )
