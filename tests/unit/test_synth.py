"""The synthetic market: deterministic, valid OHLCV, regimes at two speeds, gaps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from regimes.config.loading import load_timeframes
from regimes.data.synth import SynthConfig, generate
from regimes.errors import BadInputError
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.unit
SESSION = load_timeframes(REPO_ROOT / "config" / "timeframes.yaml").session


@pytest.fixture(scope="module")
def market():
    return generate(SynthConfig(symbols=4, days=30, seed=11), SESSION)


def _durations(path: np.ndarray) -> np.ndarray:
    change = np.flatnonzero(np.diff(path) != 0)
    edges = np.concatenate([[0], change + 1, [len(path)]])
    return np.diff(edges)[1:-1]  # drop the censored first and last runs


def test_same_seed_same_bars_other_seed_other_bars(market, seed):
    again = generate(SynthConfig(symbols=4, days=30, seed=11), SESSION)
    assert again.bars_sha256() == market.bars_sha256()
    pd.testing.assert_frame_equal(again.truth, market.truth)
    other = generate(SynthConfig(symbols=4, days=30, seed=12 + seed), SESSION)
    assert other.bars_sha256() != market.bars_sha256()


def test_a_symbol_gets_the_same_data_whatever_the_universe_size(market):
    bigger = generate(SynthConfig(symbols=6, days=30, seed=11), SESSION)
    first = bigger.bars[bigger.bars["symbol"] == "SYN000"].reset_index(drop=True)
    mine = market.bars[market.bars["symbol"] == "SYN000"].reset_index(drop=True)
    # The market factor is shared, so SYN000 is identical only if it does not depend on N.
    pd.testing.assert_frame_equal(first, mine)


def test_bars_are_valid_ohlcv_in_the_session(market):
    bars = market.bars
    assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()
    assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all()
    assert (bars[["open", "high", "low", "close"]] > 0).all().all()
    assert (bars["volume"] >= 0).all()
    minutes = bars["ts"].dt.hour * 60 + bars["ts"].dt.minute
    assert minutes.between(14 * 60 + 30, 21 * 60 - 1).all()
    assert (bars["ts"].dt.weekday < 5).all()
    per_day = market.truth.groupby([market.truth["symbol"], market.truth["ts"].dt.date]).size()
    assert (per_day == 390).all()
    assert not bars.duplicated(["symbol", "ts"]).any()


def test_some_bars_are_missing_and_the_truth_says_which(market):
    truth = market.truth
    missing = truth["missing"].to_numpy()
    assert 0 < missing.mean() < 0.02
    assert len(market.bars) == int((~missing).sum())
    kept = truth.loc[~truth["missing"], ["symbol", "ts"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, market.bars[["symbol", "ts"]].reset_index(drop=True))


def test_regimes_run_at_two_speeds_with_distinct_volatility(market):
    truth = market.truth
    slow_runs, fast_runs = [], []
    for _, group in truth.groupby("symbol"):
        slow_runs.extend(_durations(group["slow_regime"].to_numpy()))
        fast_runs.extend(_durations(group["fast_regime"].to_numpy()))
    assert np.median(slow_runs) >= 390  # at least a trading day
    assert 5 <= np.median(fast_runs) <= 120  # minutes to hours
    merged = market.bars.merge(truth, on=["symbol", "ts"])
    merged["r"] = merged.groupby("symbol")["close"].transform(lambda c: np.log(c).diff())
    vol = merged.groupby("slow_label", observed=True)["r"].std()
    assert vol["calm_bull"] < vol["neutral"] < vol["stress_bear"]
    fast_vol = merged.groupby("fast_label", observed=True)["r"].std()
    assert fast_vol["quiet"] < fast_vol["burst"]
    volume = merged.groupby("fast_label", observed=True)["volume"].median()
    assert volume["quiet"] < volume["burst"]


def test_params_describe_the_generator(market):
    params = market.params
    assert [r["name"] for r in params["slow_regimes"]] == ["calm_bull", "neutral", "stress_bear"]
    assert set(params["symbols"]) == {"SYN000", "SYN001", "SYN002", "SYN003"}
    assert params["config"]["seed"] == 11


@pytest.mark.parametrize(
    "config, message",
    [
        (SynthConfig(symbols=0), "--symbols"),
        (SynthConfig(days=0), "--days"),
        (SynthConfig(missing_rate=0.9), "--missing-rate"),
        (SynthConfig(seed=-1), "--seed"),
    ],
)
def test_bad_synth_arguments_are_refused(config, message):
    with pytest.raises(BadInputError, match=message):
        generate(config, SESSION)
