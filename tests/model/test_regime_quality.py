"""Regime recovery on the synthetic market: the HMM's decoded states against the known
regimes, on bars held out in time, next to k-means on the same z.

Each case fits the state-vector pipeline (pca encoder) and the HMM on fold 0's training
window, then decodes everything from the validation start onwards: the argmax of the
filtered posterior (causal, the live path) and the Viterbi path. The 5m models are
scored against the fast regimes (minutes to hours), the 1h models against the slow
ones (days to weeks); see :mod:`regimes.data.synth`. The last test runs training's own
grid and selection rule on a variant with 2 regimes and scores the winner on the
walk-forward *test* windows against the true-parameter filter (the oracle).

What was found while building these tests (figures: ``pytest -s``, BENCHMARKS.md):

* Features decide what a timeframe's HMM finds. With every feature, the 5m HMM tracks
  the *slow* regimes (purity 0.6-0.8 against the slow truth, depending on K): the
  long-window volatility and return features carry most of the variance and are the
  most persistent structure. The 1h HMM on every feature is no better than k-means
  (about 0.5 for 3 regimes). The cases below therefore down-select: fast-reacting
  features (bar shape, short returns, volume and range relative to their recent level)
  at 5m, volatility and volume features at 1h. Training now down-selects by excess
  regime persistence (:func:`regimes.model.selection.excess_persistence`).
* Baum-Welch moves away from the truth: started from the true parameters it ends at a
  higher likelihood and a lower accuracy (1h: 0.81 -> 0.72). The Gaussian emissions are
  misspecified (heavy tails, the other regime level's volatility, intraday seasonality),
  so the states are the likelihood's, not the generator's.
* With K equal to the 4 fast regimes, Baum-Welch's filtered states stayed 0.01-0.02 below
  k-means in every seed tried (11-15). Estimating the HMM from a statistical jump model's
  persistent path instead (``estimator="jump"``, penalty 3 per dimension, restarts chosen
  on the jump loss) lifts them above it: seed 11, filtered 0.441 and Viterbi 0.456 against
  k-means 0.437 (Baum-Welch: 0.418 / 0.428). The margin is small: the fast regimes of the
  default market are mostly told apart by per-bar volume and range, whose intraday
  seasonality the features keep (the oracle, which knows the season, reaches 0.87-0.89).
* Spherical covariances beat diag, full and tied here: a state with its own full or diag
  variance absorbs the outliers of the others. ``diag_loading`` changes nothing: it becomes
  hmmlearn's ``min_covar``, which hmmlearn 0.3 reads only when it initialises the
  covariances itself (``RegimeHMM`` does not let it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from scipy.stats.contingency import association, crosstab
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from regimes.config.loading import PlatformConfig
from regimes.model.hmm.evaluation import RecoveryReport, recovery_report, truth_for_bars
from regimes.model.hmm.filtering import filter_sequences, viterbi_sequences
from regimes.model.hmm.model import RegimeHMM
from regimes.model.pipeline import StateVectorPipeline
from regimes.model.splits import walk_forward_splits
from regimes.training.grid import GridCell, fit_cell, z_sequences
from tests.model.conftest import CONFIG, feature_frame

pytestmark = pytest.mark.model

MARGIN = 0.10
"""Accuracy must beat the no-information rate by this much."""
FAST_FEATURES = ("clv", "r5", "dist_vwap_60", "stoch_k", "vol_z_60", "range_1", "range_z_60")
SLOW_FEATURES = (
    "vol_of_vol",
    "vol_z_60",
    "relvol_60",
    "range_1",
    "rv_15",
    "rv_60",
    "range_z_60",
    "bb_width",
)


@dataclass(frozen=True)
class Case:
    name: str
    timeframe: str
    minutes: int
    level: str
    K: int
    expected_dwell: float
    """Bars: the fast regimes last about 40 minutes, the slow ones about 5 sessions."""
    features: tuple[str, ...] | None
    """None: every feature the timeframe's configuration selects."""
    covariance_type: str = "spherical"
    estimator: str = "baum_welch"


@dataclass(frozen=True)
class Recovery:
    case: Case
    report: RecoveryReport
    train_bars: int
    held_out_bars: int
    d: int
    features: list[str]

    def describe(self) -> str:
        figures = self.report.as_dict()
        return (
            f"{self.case.name}: {self.train_bars} train / {self.held_out_bars} held-out bars, "
            f"d={self.d}, features {self.features}\n"
            f"  accuracy filtered {figures['accuracy_filtered']:.3f} "
            f"(hungarian {figures['hungarian_filtered']:.3f}, purity "
            f"{figures['purity_filtered']:.3f}), Viterbi {figures['accuracy_viterbi']:.3f} "
            f"(hungarian {figures['hungarian_viterbi']:.3f}, purity "
            f"{figures['purity_viterbi']:.3f}), k-means {figures['accuracy_baseline']:.3f}, "
            f"chance {figures['chance']:.3f}\n"
            f"  mean dwell (bars) filtered {figures['dwell_filtered']:.1f}, Viterbi "
            f"{figures['dwell_viterbi']:.1f}, true {figures['dwell_true']:.1f}"
        )


CASES = (
    Case("5m-fast-K4", "5m", 5, "fast_regime", 4, 8.0, FAST_FEATURES, estimator="jump"),
    Case("5m-fast-K6", "5m", 5, "fast_regime", 6, 8.0, FAST_FEATURES),
    Case("1h-slow-K3", "1h", 60, "slow_regime", 3, 30.0, SLOW_FEATURES),
)


@pytest.fixture(scope="module")
def market_1h():
    # Slow regimes last about 5 sessions (35 bars of 1h): 120 sessions give each symbol
    # about 24 of them, half of them held out.
    return feature_frame(symbols=4, days=120, seed=11, timeframe="1h")


def config_with_features(timeframe: str, names) -> PlatformConfig:
    """CONFIG with the timeframe's features down-selected to ``names`` (None: as is) and
    the seasonal adjustment off: these cases pin the HMM against k-means on the z the
    figures above were measured on. With the adjustment (seed 11) both rise and the
    margin shrinks: 5m-fast-K4 (jump) 0.529 vs k-means 0.462, 5m-fast-K6 0.554 vs 0.557
    (below), 1h-slow-K3 0.651 vs 0.626 (docs/regime_model.md, "Seasonal adjustment")."""
    timeframes = CONFIG.timeframes.model_copy(deep=True)
    update = {"seasonal": None}
    if names is not None:
        update |= {"features": list(names), "feature_budget": len(names)}
    timeframes.timeframes[timeframe] = timeframes.timeframes[timeframe].model_copy(update=update)
    return PlatformConfig(CONFIG.features, timeframes, CONFIG.source_dir)


def sequence_lengths(z: pd.DataFrame) -> np.ndarray:
    """Rows per symbol of a frame sorted by symbol, then ts."""
    symbols = z["symbol"].to_numpy()
    starts = np.flatnonzero(np.r_[True, symbols[1:] != symbols[:-1]])
    return np.diff(np.r_[starts, len(symbols)])


def recover(frame: pd.DataFrame, market, case: Case) -> Recovery:
    """Fit on fold 0's training window; decode and score everything after it."""
    fold = walk_forward_splits(frame["ts"], CONFIG.timeframes.preprocessing.splits)[0]
    train = frame.loc[fold.mask(frame["ts"], "train")]
    held_out = frame.loc[frame["ts"] >= fold.val_start]
    config = config_with_features(case.timeframe, case.features)
    pipeline = StateVectorPipeline(config, case.timeframe, "pca", latent_dim=6).fit(train)
    pipeline.check_fold(fold)
    z_train, z_held_out = pipeline.transform(train), pipeline.transform(held_out)
    columns = [f"z_{k:02d}" for k in range(pipeline.d)]
    Z, Z_held_out = z_train[columns].to_numpy(), z_held_out[columns].to_numpy()
    lengths, lengths_held_out = sequence_lengths(z_train), sequence_lengths(z_held_out)
    truth = truth_for_bars(
        market.truth, z_held_out["ts"], z_held_out["symbol"], case.minutes, case.level
    )
    K_true = int(market.truth[case.level].max()) + 1
    # One thread: on the shared 2-core machines, OpenMP k-means threads spinning against
    # other processes turned 1 s fits into 10-20 s ones.
    with threadpool_limits(limits=1):
        model = RegimeHMM(
            n_states=case.K,
            covariance_type=case.covariance_type,
            expected_dwell=case.expected_dwell,
            n_restarts=3,
            random_state=0,
            estimator=case.estimator,
            jump_penalty=3.0,
        ).fit(Z, lengths)
        filtered = filter_sequences(Z_held_out, lengths_held_out, model.params_)[0]
        viterbi = viterbi_sequences(Z_held_out, lengths_held_out, model.params_)
        kmeans = KMeans(n_clusters=case.K, n_init=10, random_state=0).fit(Z)
        baseline = kmeans.predict(Z_held_out)
    report = recovery_report(
        truth, filtered.argmax(axis=1), viterbi, lengths_held_out, case.K, K_true, baseline
    )
    return Recovery(case, report, len(Z), len(Z_held_out), pipeline.d, pipeline.features_)


@pytest.fixture(scope="module", params=CASES, ids=lambda case: case.name)
def recovered(request, market_5m, market_1h) -> tuple[Case, RecoveryReport]:
    case = request.param
    frame, market = market_5m if case.timeframe == "5m" else market_1h
    recovery = recover(frame, market, case)
    print("\n" + recovery.describe())
    return case, recovery.report


def test_decoded_states_recover_the_regimes_well_above_chance(recovered):
    case, report = recovered
    figures = report.as_dict()
    bar = figures["chance"] + MARGIN
    assert figures["accuracy_filtered"] >= bar, f"{case.name}: filtered {figures}"
    assert figures["accuracy_viterbi"] >= bar, f"{case.name}: Viterbi {figures}"


def test_decoded_dwell_is_within_a_factor_two_of_the_true_dwell(recovered):
    case, report = recovered
    ratio = report.dwell_viterbi / report.dwell_true
    assert 0.5 <= ratio <= 2.0, f"{case.name}: Viterbi dwell / true dwell = {ratio:.2f}"


def test_the_temporal_model_beats_kmeans_on_the_same_z(recovered):
    case, report = recovered
    figures = report.as_dict()
    assert figures["accuracy_filtered"] > figures["accuracy_baseline"], figures
    assert figures["accuracy_viterbi"] > figures["accuracy_baseline"], figures


CLOCK_V_MAX = 0.15
"""Most Cramer's V the 5m filtered states may share with the half-hour of the trading
day. Measured on this test's case (default market, 4 symbols x 40 days, fold 0, pca,
K = 4 diag, training's own fit): with the shipped 5m seasonal adjustment V = 0.07-0.13
on market seeds 11-14 (0.072 on seed 11); with it off 0.22-0.31 (0.229 on seed 11):
without it the states were the clock (docs/regime_model.md, "The 5m states were the
clock")."""


def cramers_v(states: np.ndarray, groups: np.ndarray) -> float:
    """Cramer's V of two label arrays (0: independent, 1: one determines the other)."""
    table = crosstab(states, groups).count
    table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
    if min(table.shape) < 2:
        return 0.0
    return float(association(table, method="cramer"))


def test_5m_states_are_not_the_clock(market_5m):
    """The 5m states fitted as training fits them, with the shipped configuration, carry
    little of the time of day: the true regimes do not depend on it, so states that do
    are tracking the intraday season of volatility and volume, not regimes."""
    frame, market = market_5m
    fold = walk_forward_splits(frame["ts"], CONFIG.timeframes.preprocessing.splits)[0]
    with threadpool_limits(limits=1):
        pipeline, hmm = fit_cell(frame, fold, GridCell("pca", None, 4, "diag"), CONFIG, "5m", 0)
        held_out = frame.loc[frame["ts"] >= fold.val_start]
        z, Z, lengths = z_sequences(pipeline.transform(held_out), pipeline.d)
        states = filter_sequences(Z, lengths, hmm.params_)[0].argmax(axis=1)
    half_hour = (pipeline._minutes(z) // 30).astype(int)
    truth = truth_for_bars(market.truth, z["ts"], z["symbol"], 5, "fast_regime")
    v_states, v_truth = cramers_v(states, half_hour), cramers_v(truth, half_hour)
    print(
        f"\n5m states vs half-hour of the day: Cramer's V {v_states:.3f} (true fast regimes "
        f"{v_truth:.3f}); seasonal {CONFIG.timeframe('5m').seasonal}, {len(Z)} bars"
    )
    assert v_states < CLOCK_V_MAX, f"the 5m states follow the time of day: V = {v_states:.3f}"
