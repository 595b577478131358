"""The pieces of honest regime scoring: synthetic variants, the true-parameter oracle,
published states and test-window figures, the jump model, selection by persistence, and
the K-selection rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from regimes.config.loading import load_config
from regimes.config.timeframes import AntiChatter
from regimes.data.bars import align_minutes, resample
from regimes.data.synth import SynthConfig, generate
from regimes.data.synth_variants import VARIANTS, variant
from regimes.errors import BadInputError
from regimes.live import antichatter
from regimes.model.hmm.evaluation import truth_for_bars
from regimes.model.hmm.jump import fit_jump_model, jump_path
from regimes.model.hmm.model import RegimeHMM
from regimes.model.selection import excess_persistence
from regimes.training.grid import select_winner
from regimes.training.oracle import SynthOracle
from regimes.training.recovery import published_states, recovery_figures, score_states
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.unit
CONFIG = load_config(REPO_ROOT / "config")
SESSION = CONFIG.timeframes.session


def test_the_default_variant_is_the_default_market_and_variants_have_their_regimes():
    default = VARIANTS["default"].config
    plain = SynthConfig(symbols=default.symbols, days=default.days, seed=default.seed)
    assert default == plain  # the demo's market, unchanged
    small = {name: v.with_size(2, 3) for name, v in VARIANTS.items()}
    seeds = {v.config.seed for v in small.values()}
    assert len(seeds) == len(small)  # a seed per variant
    counts = sorted({v.regime_count("slow_regime") for v in small.values()})
    assert {2, 3, 5} <= set(counts)
    market = generate(small["volume-range"].config, SESSION)
    assert set(market.truth["slow_regime"].unique()) == {0, 1}
    assert (market.truth["fast_regime"] == 0).all()  # one level of regimes only
    with pytest.raises(BadInputError, match="synth variant 'k7'"):
        variant("k7")


def _bars(market, timeframe: str) -> pd.DataFrame:
    frames = []
    for _, group in market.bars.groupby("symbol"):
        aligned, _ = align_minutes(group, SESSION)
        frames.append(resample(aligned, timeframe, SESSION, 0.2))
    bars = pd.concat(frames, ignore_index=True)
    return bars[~bars["is_gap"]].reset_index(drop=True)


@pytest.mark.parametrize("name", ["volume-range", "k2-vol"])
def test_the_oracle_recovers_regimes_it_knows_the_parameters_of(name):
    market = generate(VARIANTS[name].with_size(2, 8).config, SESSION)
    bars = _bars(market, "5m")
    posterior = SynthOracle(market, SESSION, 5).filtered(bars, "slow_regime")
    assert posterior.shape == (len(bars), 2)
    np.testing.assert_allclose(posterior.sum(axis=1), 1.0)
    truth = truth_for_bars(market.truth, bars["ts"], bars["symbol"], 5, "slow_regime")
    accuracy = float((posterior.argmax(axis=1) == truth).mean())
    assert accuracy >= 0.95, accuracy


def test_the_oracle_needs_the_generating_config():
    market = generate(SynthConfig(symbols=1, days=1, seed=1), SESSION)
    with pytest.raises(BadInputError, match="generating config"):
        SynthOracle(type(market)(market.bars, market.truth, market.params), SESSION, 5)


def test_published_states_follow_the_anti_chatter_step():
    rng = np.random.default_rng(0)
    posterior = rng.dirichlet(np.ones(3), size=50)
    settings = AntiChatter(p_switch=0.55, min_dwell_bars=3, majority_window=3)
    got = published_states(np.log(posterior), [30, 20], settings)
    for start, length in ((0, 30), (30, 20)):
        state = antichatter.AntiChatterState.empty(1, 3)
        for t in range(start, start + length):
            published, raw = antichatter.step(state, np.array([0]), posterior[t : t + 1], settings)
            assert got[t] == (published[0] if published[0] >= 0 else raw[0])


def test_scores_use_hungarian_up_to_the_true_count_and_purity_above_it():
    truth = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    split = np.array([0, 0, 1, 2, 2, 2, 2, 0])  # regime 0 cut in two
    scored = score_states(truth, split, [8], 3, 2)
    assert scored["measure"] == "purity" and scored["accuracy"] == 1.0
    assert score_states(truth, np.minimum(split, 1), [8], 2, 2)["measure"] == "hungarian"
    test_states = pd.DataFrame(
        {"fold": 0, "symbol": "A", "raw": split, "published": np.where(split == 1, 0, split)}
    )
    figures = recovery_figures(test_states, truth, 3, 2)
    assert figures["accuracy_filtered"] == 1.0 and figures["dwell_true"] == 4.0
    assert figures["dwell_published"] == 4.0 and figures["chance"] == 0.5


def test_each_fold_is_matched_to_the_truth_on_its_own():
    # Two folds' fits that number the same regimes the other way round: each is exact.
    truth = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    states = np.array([0, 0, 1, 1, 1, 1, 0, 0])
    folds = np.repeat([0, 1], 4)
    assert score_states(truth, states, [4, 4], 2, 2)["accuracy"] == 0.5
    assert score_states(truth, states, [4, 4], 2, 2, folds)["accuracy"] == 1.0
    test_states = pd.DataFrame({"fold": folds, "symbol": "A", "raw": states, "published": states})
    assert recovery_figures(test_states, truth, 2, 2)["accuracy_published"] == 1.0


def test_the_jump_penalty_buys_persistence():
    rng = np.random.default_rng(3)
    truth = np.repeat(rng.integers(0, 2, 40), 25)
    Z = np.c_[truth * 1.0, np.zeros(len(truth))] + rng.normal(scale=0.8, size=(len(truth), 2))
    _, free, _ = fit_jump_model(Z, [len(Z)], 2, 0.0, seed=0)
    _, sticky, _ = fit_jump_model(Z, [len(Z)], 2, 8.0, seed=0)
    changes = lambda s: int(np.count_nonzero(np.diff(s)))  # noqa: E731
    assert changes(sticky) < changes(free) / 5
    agree = max((sticky == truth).mean(), (sticky != truth).mean())
    assert agree > 0.95
    # The path is the exact minimiser for its centres: no single flip lowers the loss.
    centres = np.array([Z[sticky == k].mean(axis=0) for k in range(2)])
    states, loss = jump_path(Z, [len(Z)], centres, 8.0)
    flipped = states.copy()
    flipped[500] = 1 - flipped[500]
    cost = ((Z - centres[flipped]) ** 2).sum() + 8.0 * np.count_nonzero(np.diff(flipped))
    assert cost >= loss - 1e-9
    model = RegimeHMM(n_states=2, estimator="jump", jump_penalty=4.0, random_state=0).fit(Z)
    assert np.allclose(np.diag(model.params_.transmat), 1 - 1 / model.expected_dwell)


def test_selection_by_persistence_keeps_regime_features_and_drops_noise_and_overlap():
    rng = np.random.default_rng(5)
    n = 4000
    regime = np.repeat(rng.integers(0, 2, n // 40), 40)
    noise = rng.normal(size=n)
    frame = pd.DataFrame(
        {
            "symbol": "A",
            "range_1": regime + rng.normal(scale=0.7, size=n),  # follows the regime
            "clv": rng.normal(size=n),  # per-bar noise
            "r60": pd.Series(noise).rolling(60, min_periods=1).sum().to_numpy(),  # overlap
            "tod_sin": np.sin(np.arange(n) / 10.0),  # calendar
        }
    )
    scores = excess_persistence(frame, list(frame.columns[1:]), 20, {"r60": 61})
    assert scores["range_1"] > 0.1
    assert abs(scores["clv"]) < 0.05 and scores["r60"] < 0.05 and scores["tod_sin"] == 0.0


def _summary(rows):
    frame = pd.DataFrame(rows, columns=["K", "val_loglik_per_bar", "val_switch_rate", "mean_dwell"])
    frame["cell"] = [f"pca/d=6/K={k}/diag" for k in frame["K"]]
    frame["d"], frame["val_bic_per_bar"] = 6, 0.0
    frame["folds_ok"] = frame["folds"] = 3
    frame["stable"] = True
    return frame


def test_k_is_chosen_by_held_out_likelihood_and_persistence():
    # More states fit better but switch much more: the jump penalty keeps K small.
    winner, rule = select_winner(
        _summary([(2, -9.8, 0.02, 50.0), (3, -9.7, 0.06, 16.0), (6, -9.5, 0.12, 8.0)])
    )
    assert winner["K"] == 2 and "jump" in rule
    # A large gain at the same persistence wins.
    winner, _ = select_winner(
        _summary([(2, -9.8, 0.02, 50.0), (3, -8.8, 0.025, 40.0), (6, -8.7, 0.1, 10.0)])
    )
    assert winner["K"] == 3
