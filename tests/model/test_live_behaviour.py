"""Behaviour of the live layers on data with known truth: anti-chatter against the true
regime switches, OOD flags on a regime the model never saw."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from regimes.config.timeframes import AntiChatter
from regimes.data import sql as db
from regimes.data.bars import align_minutes, resample, resample_symbols
from regimes.data.synth import SynthConfig, generate
from regimes.features.store import plan_units, run_features
from regimes.live import antichatter
from regimes.live.engine import InferenceEngine
from regimes.model.hmm.filtering import GaussianHMMParams, filter_sequences
from regimes.model.loaded import LoadedModel
from regimes.training.grid import OOD_QUANTILE
from regimes.training.train import train_timeframe
from tests.model.conftest import CONFIG

pytestmark = pytest.mark.model
FLAGS = ("out_of_range", "loglik", "entropy_spike")


def _sample_hmm(rng, K=4, d=3, symbols=200, bars=600, stay=0.97):
    """Sticky K-state Gaussian HMM with overlapping emissions (the raw filter chatters)."""
    transmat = np.full((K, K), (1 - stay) / (K - 1))
    np.fill_diagonal(transmat, stay)
    means = rng.normal(size=(K, d))
    params = GaussianHMMParams(np.full(K, 1 / K), transmat, means, np.stack([np.eye(d)] * K))
    states = np.zeros((symbols, bars), dtype=np.int64)
    states[:, 0] = rng.integers(K, size=symbols)
    for t in range(1, bars):
        cumulative = transmat[states[:, t - 1]].cumsum(axis=1)
        states[:, t] = (rng.random(symbols)[:, None] > cumulative).sum(axis=1)
    Z = means[states] + rng.normal(size=(symbols, bars, d))
    log_alpha = filter_sequences(Z.reshape(-1, d), np.full(symbols, bars), params)[0]
    return states, np.exp(log_alpha).reshape(symbols, bars, K)


@pytest.mark.parametrize(
    "settings",
    [
        AntiChatter(p_switch=0.6, min_dwell_bars=3, majority_window=5),
        AntiChatter(p_switch=0.6, min_dwell_bars=2, majority_window=3),
    ],
    ids=str,
)
def test_anti_chatter_cuts_switches_without_delaying_true_ones(settings):
    rng = np.random.default_rng(3)
    truth, posterior = _sample_hmm(rng)
    N, T = truth.shape
    state = antichatter.AntiChatterState.empty(N, settings.majority_window)
    published = np.zeros_like(truth)
    raw = np.zeros_like(truth)
    for t in range(T):
        published[:, t], raw[:, t] = antichatter.step(
            state, np.arange(N), posterior[:, t], settings
        )
    true_switches = int((np.diff(truth, axis=1) != 0).sum())
    raw_switches, published_switches = state.raw_switches.sum(), state.published_switches.sum()
    assert raw_switches == int((np.diff(raw, axis=1) != 0).sum())
    assert published_switches <= 0.75 * raw_switches
    assert published_switches >= 0.85 * true_switches  # true switches are not voted away
    # Added delay per true switch (regimes lasting >= 10 bars): bars from the raw
    # state's first agreement with the new truth to the published state's.
    added, missed = [], 0
    for i in range(N):
        for t in np.flatnonzero(np.diff(truth[i]) != 0) + 1:
            end = t
            while end < T and truth[i, end] == truth[i, t]:
                end += 1
            if end - t < 10:
                continue
            r = np.flatnonzero(raw[i, t:end] == truth[i, t])
            p = np.flatnonzero(published[i, t:end] == truth[i, t])
            if len(r):
                if len(p):
                    added.append(p[0] - r[0])
                else:
                    missed += 1
    added = np.array(added)
    vote = settings.majority_window // 2  # the documented margin: half the vote window
    assert np.median(added) <= vote
    assert np.percentile(added, 95) <= settings.min_dwell_bars + vote
    assert missed <= 0.02 * len(added)


@pytest.fixture(scope="module")
def model_15m(tmp_path_factory):
    home = tmp_path_factory.mktemp("live")
    engine = db.make_engine(f"sqlite:///{home / 'regimes.db'}")
    db.create_schema(engine)
    session = CONFIG.timeframes.session
    market = generate(SynthConfig(symbols=3, days=40, seed=8, missing_rate=0.01), session)
    db.upsert_bars(engine, market.bars)
    resample_symbols(engine, session, 0.2, timeframes=["15m"])
    run_features(engine, CONFIG, plan_units(engine, ["15m"]))
    result = train_timeframe(
        engine, CONFIG, "15m", home / "models", grid={"K": [6], "covariance": ["diag"]}, seed=1
    )
    engine.dispose()
    # Held out: another market from the same generator (in distribution).
    held_out = generate(SynthConfig(symbols=6, days=30, seed=99, missing_rate=0.01), session)
    frames = []
    for _, group in held_out.bars.groupby("symbol"):
        aligned, _ = align_minutes(group, session)
        frames.append(resample(aligned, "15m", session, 0.2))
    return result, pd.concat(frames, ignore_index=True)


def _volatility_times(bars: pd.DataFrame, factor: float) -> pd.DataFrame:
    """Every log move (bar to bar and within the bar) times ``factor``."""
    out = []
    for _, group in bars.groupby("symbol"):
        group = group.copy()
        log_close = np.log(group["close"])
        scaled = log_close.iloc[0] + factor * (log_close - log_close.iloc[0])
        for column in ("open", "high", "low"):
            group[column] = np.exp(scaled + factor * (np.log(group[column]) - log_close))
        group["close"] = np.exp(scaled)
        out.append(group)
    return pd.concat(out, ignore_index=True)


def _flag_rate(path, bars):
    engine = InferenceEngine(LoadedModel.load(path))
    answers = pd.concat([engine.step(g) for _, g in bars.groupby("ts", sort=True)])
    encoded = answers.dropna(subset=["p_00"])
    assert len(encoded) > 1000
    return encoded["ood_reason"].isin(FLAGS).mean()


def test_ood_flags_a_regime_the_model_never_saw(model_15m):
    result, held_out = model_15m
    calibrated = OOD_QUANTILE  # the training quantile behind metadata.ood_threshold
    in_distribution = _flag_rate(result.path, held_out)
    assert in_distribution <= calibrated + 0.02, in_distribution
    ten_times = _flag_rate(result.path, _volatility_times(held_out, 10.0))
    assert ten_times >= 0.90, ten_times
