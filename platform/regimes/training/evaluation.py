"""Accuracy of a trained model against a synthetic market's known regimes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from regimes.config.loading import PlatformConfig
from regimes.model.hmm.filtering import filter_sequences
from regimes.model.pipeline import load_training_frame
from regimes.training.grid import z_sequences

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
    validation window: Hungarian-matched and purity accuracy of the filtered states, the
    headline figure (Hungarian when K <= the true regime count, else purity) and chance
    (the share of the most common true regime).

    Only symbols present in ``truth`` are scored; returns an empty dict if none is.
    """
    from regimes.model.hmm.evaluation import headline_accuracy, matched_accuracy, truth_for_bars
    from regimes.model.loaded import LoadedModel

    model = LoadedModel.load(path)
    metadata, timeframe = model.metadata, model.timeframe
    known = sorted(set(metadata["universe"]) & set(truth["symbol"].unique()))
    if not known:
        return {}
    pipeline, hmm = model.pipeline, model.hmm
    fold = metadata["metrics"]["folds"][-1]
    frame = load_training_frame(engine, config, timeframe, known)
    window = frame[
        (frame["ts"] >= pd.Timestamp(fold["val_start"]))
        & (frame["ts"] < pd.Timestamp(fold["val_end"]))
    ]
    z, Z, lengths = z_sequences(pipeline.transform(window), pipeline.d)
    states = filter_sequences(Z, lengths, hmm.params_)[0].argmax(axis=1)
    level = TRUTH_LEVEL[timeframe]
    labels = truth_for_bars(truth, z["ts"], z["symbol"], TIMEFRAME_MINUTES[timeframe], level)
    result = matched_accuracy(states, labels, hmm.K, int(truth[level].max()) + 1)
    shares = np.bincount(labels) / len(labels)
    return {
        "level": level,
        "bars": int(len(states)),
        "hungarian": result.hungarian,
        "purity": result.purity,
        "accuracy": headline_accuracy(result),
        "chance": float(max(shares.max(), 1.0 / len(shares))),
    }
