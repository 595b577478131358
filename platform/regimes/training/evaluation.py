"""Accuracy of a trained model against a synthetic market's known regimes."""

from __future__ import annotations

import pandas as pd

from regimes.config.loading import PlatformConfig
from regimes.model.pipeline import load_training_frame
from regimes.model.splits import Fold

# =========================================================================== evaluation

TRUTH_LEVEL = {
    "1m": "fast_regime",
    "5m": "fast_regime",
    "15m": "fast_regime",
    "1h": "slow_regime",
    "1d": "slow_regime",
}
TIMEFRAME_MINUTES = {"1m": 1, "5m": 5, "15m": 15, "1h": 60, "1d": 390}


def accuracy_against_truth(engine, config: PlatformConfig, path, truth: pd.DataFrame) -> dict:
    """Score a trained artifact against known regimes (synthetic data) on its last fold's
    **test** window (the artifact is that fold's fit; neither the fit nor the selection
    saw those bars): accuracy of the filtered and of the published (anti-chatter) states
    (Hungarian when K <= the true regime count, else purity), their mean dwell next to
    the true one, and chance (the share of the most common true regime).

    Only symbols present in ``truth`` are scored; returns an empty dict if none is, or if
    the artifact's folds have no test window.
    """
    from regimes.model.loaded import LoadedModel
    from regimes.training.grid import decode_test_window

    model = LoadedModel.load(path)
    metadata, timeframe = model.metadata, model.timeframe
    known = sorted(set(metadata["universe"]) & set(truth["symbol"].unique()))
    if not known:
        return {}
    stored = metadata["metrics"]["folds"][-1]
    if stored.get("test_start") is None:
        return {}
    fold = Fold(
        **{
            k: (pd.Timestamp(v) if k != "index" and v is not None else v)
            for k, v in stored.items()
            if k in Fold.__dataclass_fields__
        }
    )
    frame = load_training_frame(engine, config, timeframe, known)
    test_states = decode_test_window(frame, fold, model.pipeline, model.hmm, config, timeframe)
    if test_states is None or test_states.empty:
        return {}
    return truth_scorer(truth, timeframe)(test_states, model.hmm.K)


def truth_scorer(truth: pd.DataFrame, timeframe: str):
    """A ``truth_accuracy(test_states, K)`` for :func:`regimes.training.train.train_timeframe`:
    the figures of :func:`regimes.training.recovery.recovery_figures` against the
    timeframe's truth level (fast regimes below 1h, slow ones from 1h), symbols not in
    ``truth`` left out."""
    from regimes.model.hmm.evaluation import truth_for_bars
    from regimes.training.recovery import recovery_figures

    level = TRUTH_LEVEL[timeframe]
    K_true = int(truth[level].max()) + 1

    def score(test_states: pd.DataFrame, K: int) -> dict:
        rows = test_states[test_states["symbol"].isin(set(truth["symbol"].unique()))]
        if rows.empty:
            return {}
        labels = truth_for_bars(
            truth, rows["ts"], rows["symbol"], TIMEFRAME_MINUTES[timeframe], level
        )
        figures = recovery_figures(rows.reset_index(drop=True), labels, K, K_true)
        # The headline ("accuracy") is the filtered states' figure; see recovery_figures.
        return {"level": level, "accuracy": figures["accuracy_filtered"], **figures}

    return score
