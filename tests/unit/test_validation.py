"""The validation figures on data whose answer is known: Markov chains with a given
transition matrix, returns with a given volatility per state, a backtest that must not
look ahead, bootstrap intervals that must cover the truth, charts that must parse."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree

import numpy as np
import pandas as pd
import pytest

from regimes.config.loading import load_validation
from regimes.config.validation import ValidationConfig, VerdictConfig
from regimes.errors import BadInputError, ConfigError
from regimes.validation import svg
from regimes.validation.backtest import BacktestSettings, backtest, walk_forward_positions
from regimes.validation.bootstrap import (
    block_bootstrap_indices,
    percentile_interval,
    spell_bootstrap,
)
from regimes.validation.build import ModelFacts, build_report
from regimes.validation.dwell import dwell_table, implied_dwell
from regimes.validation.html import render_html
from regimes.validation.returns import (
    TOO_LITTLE,
    ReturnSettings,
    conditioned_returns,
    forward_returns,
)
from regimes.validation.spells import spells
from regimes.validation.transitions import empirical_counts, transition_table
from regimes.validation.verdicts import ValidationVerdicts

pytestmark = pytest.mark.unit

TRANSMAT = np.array([[0.95, 0.04, 0.01], [0.05, 0.90, 0.05], [0.02, 0.08, 0.90]])
VOLS = np.array([0.005, 0.01, 0.02])  # per bar, per state


def markov_chain(transmat: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    states = np.empty(n, dtype=np.int64)
    states[0] = 0
    cumulative = transmat.cumsum(axis=1)
    draws = rng.random(n)
    for t in range(1, n):
        states[t] = min(np.searchsorted(cumulative[states[t - 1]], draws[t]), len(transmat) - 1)
    return states


def state_frame(seed: int, symbols=("A", "B"), n: int = 3000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stored-state-like rows and bars of a 3-state chain whose returns have VOLS."""
    rng = np.random.default_rng(seed)
    states, bars = [], []
    ts = pd.date_range("2010-01-04 14:30", periods=n, freq="D", tz="UTC")
    for symbol in symbols:
        chain = markov_chain(TRANSMAT, n, rng)
        # The return of bar t+1 follows the state of bar t (what a state predicts).
        shocks = rng.normal(0, 1, n) * np.r_[VOLS[0], VOLS[chain[:-1]]]
        close = 100 * np.exp(np.cumsum(shocks))
        prob = rng.uniform(0.7, 1.0, n)
        states.append(
            pd.DataFrame(
                {
                    "symbol": symbol,
                    "ts": ts,
                    "state_id": chain,
                    "raw_state_id": chain,
                    "state_prob": prob,
                    "entropy": 1 - prob,
                    "is_unknown": False,
                    "ood_reason": None,
                }
            )
        )
        bars.append(pd.DataFrame({"symbol": symbol, "ts": ts, "close": close}))
    return pd.concat(states, ignore_index=True), pd.concat(bars, ignore_index=True)


@pytest.fixture(scope="module")
def chain_data():
    return state_frame(seed=11)


# ----------------------------------------------------------------------- spells, dwell


def test_spells_mark_censored_runs_at_edges_and_next_to_unknown():
    symbols = np.array(["a"] * 7 + ["b"] * 3)
    states = np.array([0, 0, 1, 1, -1, 2, 2, 1, 1, 0])
    frame = spells(symbols, states)
    assert frame["state"].tolist() == [0, 1, 2, 1, 0]
    assert frame["length"].tolist() == [2, 2, 2, 2, 1]
    assert frame["censored"].tolist() == [True, True, True, True, True]
    inner = spells(np.array(["a"] * 5), np.array([0, 1, 1, 1, 0]))
    assert inner["censored"].tolist() == [True, False, True]


def test_empirical_dwell_matches_the_implied_dwell_of_the_generating_chain(chain_data):
    states, _ = chain_data
    frame = spells(states["symbol"].to_numpy(), states["raw_state_id"].to_numpy())
    table = dwell_table(frame, TRANSMAT, min_spells=5)
    assert np.allclose(table["implied_dwell"], [20.0, 10.0, 10.0])
    # Geometric dwell: the mean of a few hundred spells is within ~20% of 1/(1-a_ii).
    assert table["ratio"].between(0.8, 1.2).all(), table
    assert table["share"].sum() == pytest.approx(1.0)


def test_too_few_spells_leave_the_dwell_unjudged():
    frame = spells(np.array(["a"] * 6), np.array([0, 1, 1, 0, 0, 1]))
    table = dwell_table(frame, TRANSMAT[:2, :2] / TRANSMAT[:2, :2].sum(1, keepdims=True), 5)
    assert table["mean_dwell"].isna().all() and not table["enough"].any()


def test_transition_counts_skip_symbol_boundaries_and_unknown_bars():
    counts = empirical_counts(np.array(["a", "a", "a", "b", "b"]), np.array([0, 1, -1, 1, 1]), 3)
    assert counts.tolist() == [[0, 1, 0], [0, 1, 0], [0, 0, 0]]
    table = transition_table(np.full((3, 3), 1 / 3), counts, min_diagonal=0.5)
    assert table["never_entered"].tolist() == [True, False, True]
    assert table["never_left"].tolist() == [False, True, True]
    assert not table["diagonally_dominant"].any()


def test_implied_dwell_of_an_absorbing_state_is_infinite():
    assert np.isinf(implied_dwell(np.array([[1.0, 0.0], [0.5, 0.5]]))[0])


# ------------------------------------------------------------------------- bootstrap


def test_spell_bootstrap_interval_covers_the_true_mean_mostly():
    rng = np.random.default_rng(3)
    covered = 0
    for _ in range(40):
        groups = np.repeat(np.arange(60), 5)
        # Values share a spell-level shock: bars inside a spell are not independent.
        values = rng.normal(0, 1, 60)[groups] + rng.normal(0, 0.3, len(groups))
        draws = spell_bootstrap(values, groups, np.mean, 300, rng)
        low, high = percentile_interval(draws, 0.9)
        covered += low <= 0.0 <= high
    assert covered >= 31  # 90% nominal; 40 trials


def test_spell_bootstrap_is_wider_than_pretending_bars_are_independent():
    rng = np.random.default_rng(4)
    groups = np.repeat(np.arange(40), 10)
    values = rng.normal(0, 1, 40)[groups]
    by_spell = percentile_interval(spell_bootstrap(values, groups, np.mean, 400, rng), 0.9)
    by_bar = percentile_interval(
        spell_bootstrap(values, np.arange(len(values)), np.mean, 400, rng), 0.9
    )
    assert by_spell[1] - by_spell[0] > 2 * (by_bar[1] - by_bar[0])


def test_block_bootstrap_indices_are_in_range_and_contiguous_within_blocks():
    draws = block_bootstrap_indices(50, 5, 7, np.random.default_rng(0))
    assert draws.shape == (7, 50) and draws.min() >= 0 and draws.max() < 50
    assert np.all((np.diff(draws[:, :5], axis=1) % 50) == 1)


# ------------------------------------------------------------------------- returns


def return_settings(**changes) -> ReturnSettings:
    values = dict(
        horizon=5,
        periods_per_year=252,
        min_spells=5,
        min_bars=30,
        samples=200,
        confidence=0.9,
        seed=0,
    )
    values.update(changes)
    return ReturnSettings(**values)


def test_conditioned_volatility_recovers_the_generating_volatilities(chain_data):
    states, bars = chain_data
    frame = states.merge(bars, on=["symbol", "ts"]).assign(state=states["state_id"])
    table = conditioned_returns(forward_returns(frame, 5), 3, return_settings())
    per_bar = table["volatility"].to_numpy() / np.sqrt(252)
    assert np.allclose(per_bar, VOLS, rtol=0.1), per_bar
    assert (table["volatility_low"] <= table["volatility"]).all()
    assert (table["volatility"] <= table["volatility_high"]).all()
    assert (table["spells"] > 50).all()


def test_a_state_seen_in_two_spells_is_too_little_data():
    n = 200
    states = np.zeros(n, dtype=int)
    states[50:80] = 1
    states[120:150] = 1
    frame = pd.DataFrame(
        {
            "symbol": "A",
            "ts": pd.date_range("2020-01-01", periods=n, freq="D", tz="UTC"),
            "state": states,
            "close": np.linspace(100, 120, n),
        }
    )
    table = conditioned_returns(forward_returns(frame, 3), 2, return_settings(min_spells=3))
    assert table.at[1, "spells"] == 2
    assert table.at[1, "note"].startswith(TOO_LITTLE) and "2 spells" in table.at[1, "note"]
    assert np.isnan(table.at[1, "volatility"]) if "volatility" in table else True


# ------------------------------------------------------------------------- backtest


def backtest_settings(**changes) -> BacktestSettings:
    values = dict(
        test_windows=4,
        min_train_fraction=0.3,
        size_cap=2.0,
        cost_bps=5.0,
        periods_per_year=252,
        min_bars=30,
        samples=200,
        confidence=0.9,
        seed=0,
    )
    values.update(changes)
    return BacktestSettings(**values)


def drifting_frame(seed: int) -> pd.DataFrame:
    """State 0 drifts up, state 1 down: a gate on the past must learn to stay out of 1."""
    rng = np.random.default_rng(seed)
    n = 2000
    chain = markov_chain(np.array([[0.95, 0.05], [0.05, 0.95]]), n, rng)
    drift = np.where(np.r_[0, chain[:-1]] == 0, 0.002, -0.002)
    close = 100 * np.exp(np.cumsum(drift + rng.normal(0, 0.005, n)))
    ts = pd.date_range("2015-01-01", periods=n, freq="D", tz="UTC")
    frame = pd.DataFrame({"symbol": "A", "ts": ts, "state": chain, "close": close})
    return forward_returns(frame, 5)


def test_gated_stays_out_of_the_losing_state_and_beats_the_baseline():
    frame = drifting_frame(5)
    positions = walk_forward_positions(frame, 2, backtest_settings())
    assert (positions.loc[positions["state"] == 0, "gated"] == 1).all()
    assert (positions.loc[positions["state"] == 1, "gated"] == 0).all()
    assert (positions["sized"] <= 2.0).all() and (positions["sized"] >= 0).all()
    result = backtest(frame, 2, backtest_settings())
    gated = result["strategies"]["gated"]
    assert gated["sharpe"] > result["strategies"]["baseline"]["sharpe"]
    assert gated["sharpe_difference_low"] > 0  # the interval excludes "no better"
    assert gated["annual_turnover"] > result["strategies"]["baseline"]["annual_turnover"]


@pytest.mark.parametrize("cut", [700, 1100, 1600])
def test_no_look_ahead_shifting_every_future_bar_changes_no_past_position(cut):
    frame = drifting_frame(6)
    settings = backtest_settings()
    before = walk_forward_positions(frame, 2, settings)
    rng = np.random.default_rng(cut)
    future = frame.copy()
    later = future.index >= cut
    # Every future bar shifted: new prices and new states after the cut.
    future.loc[later, "close"] = future.loc[later, "close"] * np.exp(
        rng.normal(0, 0.3, later.sum())
    )
    future.loc[later, "state"] = rng.integers(0, 2, later.sum())
    future = forward_returns(future.drop(columns=["next_return", "forward_return"]), 5)
    after = walk_forward_positions(future, 2, settings)
    cut_ts = frame["ts"].iloc[cut]
    past_before = before[before["ts"] < cut_ts]
    past_after = after[after["ts"] < cut_ts]
    assert len(past_before) > 0
    for strategy in ("baseline", "gated", "sized"):
        assert past_before[strategy].tolist() == past_after[strategy].tolist(), strategy
    # ...while the future positions did change (the test can fail).
    changed = before[before["ts"] >= cut_ts]["gated"].to_numpy()
    assert not np.array_equal(changed, after[after["ts"] >= cut_ts]["gated"].to_numpy())


# ------------------------------------------------------------------------- the report


def test_report_json_html_and_verdicts(chain_data):
    states, bars = chain_data
    facts = ModelFacts("m-test", "1d", TRANSMAT, {0: "calm", 1: "mid", 2: "wild"})
    config = ValidationConfig(bootstrap={"samples": 100, "confidence": 0.9, "seed": 0})
    report = build_report(states, bars, facts, config, 252.0)
    data = json.loads(json.dumps(report.as_dict(), allow_nan=False))
    over_time = data["figures"]["ood_over_time"] + data["figures"]["confidence_over_time"]
    assert all("index" not in row for row in over_time)
    assert data["headline"]["volatility_ratio_high_low"] == pytest.approx(4.0, rel=0.15)
    assert [s["state"] for s in data["headline"]["states_by_volatility"]] == [0, 1, 2]
    assert report.verdicts.passed
    assert ValidationVerdicts.from_dict(data["verdicts"]) == report.verdicts
    assert report.verdicts.check("dwell").passed is True
    html = render_html(data)
    assert "<script" not in html.lower() and "https://" not in html and "src=" not in html
    svgs = html.count("<svg")
    assert svgs >= 10
    for chunk in html.split("<svg")[1:]:
        ElementTree.fromstring("<svg" + chunk.split("</svg>")[0] + "</svg>")


def test_verdicts_fail_on_a_slow_matrix_and_low_confidence(chain_data):
    states, bars = chain_data
    sticky = np.full((3, 3), 0.001) + np.eye(3) * 0.997  # implies ~333-bar dwell
    facts = ModelFacts("m-test", "1d", sticky)
    low = states.assign(state_prob=0.4)
    config = ValidationConfig(bootstrap={"samples": 50, "confidence": 0.9, "seed": 0})
    verdicts = build_report(low, bars, facts, config, 252.0).verdicts
    assert verdicts.check("dwell").passed is False
    assert verdicts.check("confidence").passed is False
    assert verdicts.check("diagonal_dominance").passed is True
    assert not verdicts.passed


def test_empty_states_are_refused():
    states, bars = state_frame(seed=1, n=50)
    with pytest.raises(BadInputError, match="no stored states"):
        build_report(
            states.iloc[:0], bars, ModelFacts("m", "1d", TRANSMAT), ValidationConfig(), 252
        )


def test_charts_parse_as_xml_and_skip_missing_values():
    charts = [
        svg.bar_chart(["a", "b"], {"x": [1.0, None]}, "t <&>", notes=["", TOO_LITTLE]),
        svg.line_chart(["1", "2", "3"], {"y": [1.0, float("nan"), 2.0]}, "t", log=True),
        svg.heatmap([[0.9, None], [0.1, 0.8]], ["0", "1"], ["0", "1"], "h"),
    ]
    for chart in charts:
        root = ElementTree.fromstring(chart)
        assert root.get("width") == str(svg.WIDTH)
    # Many long legend entries: the picture grows taller instead of overlapping.
    names = {f"state {k}: a rather long label" for k in range(8)}
    tall = ElementTree.fromstring(svg.line_chart(["a", "b"], {n: [1, 2] for n in names}, "t"))
    assert int(tall.get("height")) > svg.HEIGHT


def test_validation_config_defaults_and_errors(tmp_path):
    assert load_validation(tmp_path / "absent.yaml") == ValidationConfig()
    bad = tmp_path / "validation.yaml"
    bad.write_text("horizon_bars: {1d: 0}\n")
    with pytest.raises(ConfigError, match=r"validation.yaml: horizon_bars"):
        load_validation(bad)
    bad.write_text("verdicts: {dwell_ratio_max: 0.5}\n")
    with pytest.raises(ConfigError, match="dwell_ratio_max"):
        load_validation(bad)
    assert VerdictConfig().min_share == 0.10
