"""Training's own grid and selection rule on a synthetic variant with two regimes that
differ in volatility only (``k2-vol``), scored honestly: the winner's states on every
walk-forward fold's *test* window (each decoded by its own fold's fit), against the
true-parameter filter (the oracle) on the same bars and k-means on the same z.

The full grid of variants and timeframes lives in the benchmark (``bench_regimes``); this
is one small case of it, at 1h (regimes of about 3 sessions: 20 bars, "fast" in the
issue's terms: the goal is 0.8 x the oracle)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from regimes.data.bars import align_minutes, resample
from regimes.data.synth import generate
from regimes.data.synth_variants import VARIANTS
from regimes.features.batch import compute_batch
from regimes.features.selection import selected_features
from regimes.model.hmm.evaluation import truth_for_bars
from regimes.model.splits import walk_forward_splits
from regimes.training.grid import (
    evaluate_cell,
    expand_grid,
    select_winner,
    summarize_grid,
    z_sequences,
)
from regimes.training.oracle import SynthOracle
from regimes.training.recovery import recovery_figures, score_states
from tests.model.conftest import CONFIG

pytestmark = pytest.mark.model
TIMEFRAME, MINUTES, LEVEL = "1h", 60, "slow_regime"


@pytest.fixture(scope="module")
def selected():
    session = CONFIG.timeframes.session
    market = generate(VARIANTS["k2-vol"].with_size(3, 150).config, session)
    names = selected_features(CONFIG.features, CONFIG.timeframe(TIMEFRAME))
    frames = []
    for _, group in market.bars.groupby("symbol"):
        aligned, _ = align_minutes(group, session)
        bars = resample(aligned, TIMEFRAME, session, 0.2)
        features = compute_batch(bars, CONFIG.features, session, names)
        columns = ["symbol", "ts", "open", "high", "low", "close", "volume"]
        frames.append(features.merge(bars[columns], on=["symbol", "ts"]))
    frame = pd.concat(frames, ignore_index=True)
    folds = walk_forward_splits(frame["ts"], CONFIG.timeframes.preprocessing.splits)
    cells = expand_grid(CONFIG, TIMEFRAME, {"K": [2, 3, 4]})
    with threadpool_limits(limits=1):
        results = [
            evaluate_cell(frame, fold, cell, CONFIG, TIMEFRAME, 0, keep_fit=True)
            for cell in cells
            for fold in folds
        ]
    winner, _ = select_winner(summarize_grid(results, len(folds)))
    mine = sorted((r for r in results if r.cell.key == winner["cell"]), key=lambda r: r.fold)
    test_states = pd.concat([r.test_states.assign(fold=r.fold) for r in mine], ignore_index=True)
    truth = truth_for_bars(market.truth, test_states["ts"], test_states["symbol"], MINUTES, LEVEL)
    figures = recovery_figures(test_states, truth, int(winner["K"]), 2)
    bars = frame[~frame["is_gap"]].reset_index(drop=True)
    bars["oracle"] = SynthOracle(market, session, MINUTES).filtered(bars, LEVEL).argmax(axis=1)
    oracle = test_states[["symbol", "ts"]].merge(bars[["symbol", "ts", "oracle"]], how="left")
    figures["oracle"] = float((oracle["oracle"].to_numpy() == truth).mean())
    predicted, labels, fits = [], [], []
    for r in mine:
        pipeline, _ = r.fitted
        fold = folds[r.fold]
        _, Z_train, _ = z_sequences(pipeline.transform(frame[fold.mask(frame["ts"], "train")]), 6)
        z_test, Z_test, _ = z_sequences(
            pipeline.transform(frame[fold.mask(frame["ts"], "test")]), 6
        )
        kmeans = KMeans(n_clusters=int(winner["K"]), n_init=4, random_state=0).fit(Z_train)
        predicted.append(kmeans.predict(Z_test))
        labels.append(truth_for_bars(market.truth, z_test["ts"], z_test["symbol"], MINUTES, LEVEL))
        fits.append(np.full(len(z_test), r.fold))
    # Each fold's clusters matched to the truth on their own, as the model's states.
    figures["kmeans"] = score_states(
        np.concatenate(labels),
        np.concatenate(predicted),
        [len(z) for z in labels],
        int(winner["K"]),
        2,
        np.concatenate(fits),
    )["accuracy"]
    print(f"\nk2-vol 1h, test windows: {figures}")
    return figures


def test_the_chosen_k_is_the_true_number_of_regimes(selected):
    assert selected["K"] == 2, selected


@pytest.mark.xfail(
    strict=True,
    reason="goal not met (issue 16): at this size the winner's test-window accuracy is "
    "0.80 against an oracle of 0.97 (the 0.8 x oracle goal is met), but k-means on the "
    "same z reaches 0.86, so the +0.05 margin over k-means is not (each fold's states "
    "matched on their own; see docs/regime_model.md, 'How models are chosen')",
)
def test_test_window_accuracy_is_close_to_the_oracle_and_above_kmeans(selected):
    assert selected["accuracy_filtered"] >= 0.8 * selected["oracle"], selected
    assert selected["accuracy_filtered"] >= selected["kmeans"] + 0.05, selected


def test_published_dwell_is_within_a_factor_two_of_the_true_dwell(selected):
    ratio = selected["dwell_published"] / selected["dwell_true"]
    assert 0.5 <= ratio <= 2.0, selected
