"""Fitting the regime model on state vectors (the first piece of plan phase 5).

:func:`fit_regimes_first_fold` runs one timeframe end to end on its first walk-forward
fold: the state-vector pipeline on the training window, z_t for training and validation,
the HMM's state count chosen by BIC on validation data, and readable state labels. The
full training orchestrator (grid, folds, artifacts, registry) builds on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from regimes.config import PlatformConfig
from regimes.errors import BadInputError
from regimes.hmm.evaluation import mean_dwell
from regimes.hmm.filtering import entropy, filter_sequences
from regimes.hmm.labels import state_labels, state_statistics
from regimes.hmm.model import RegimeHMM
from regimes.hmm.selection import select_state_count
from regimes.preprocessing import StateVectorPipeline, load_training_frame
from regimes.splits import FitRange, check_fitted_before, walk_forward_splits

# Bars a regime is expected to last at first, per timeframe (the transition diagonal's
# starting point; Baum-Welch moves it).
EXPECTED_DWELL = {"1m": 30.0, "5m": 10.0, "15m": 8.0, "1h": 20.0, "1d": 10.0}


def z_sequences(z: pd.DataFrame, d: int) -> tuple[pd.DataFrame, np.ndarray, list[int]]:
    """Rows sorted by symbol and time, the z matrix and per-symbol sequence lengths."""
    z = z.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)
    values = z[[f"z_{k:02d}" for k in range(d)]].to_numpy()
    return z, values, z.groupby("symbol", sort=False).size().tolist()


@dataclass
class RegimeFit:
    timeframe: str
    pipeline: StateVectorPipeline
    hmm: RegimeHMM
    selection_table: pd.DataFrame
    labels: dict[int, str]
    occupancy: dict[int, float]
    mean_dwell: float
    validation_loglik_per_bar: float
    validation_entropy: float
    hmm_fit_range: FitRange
    extra: dict[str, Any] = field(default_factory=dict)


def fit_regimes_first_fold(
    engine,
    config: PlatformConfig,
    timeframe: str,
    encoder: str = "pca",
    k_values: Sequence[int] | None = None,
    covariance_type: str = "diag",
    n_restarts: int = 2,
    random_state: int = 0,
) -> RegimeFit:
    """Pipeline + HMM for one timeframe on its first fold (train fit, validation scored)."""
    frame = load_training_frame(engine, config, timeframe)
    fold = walk_forward_splits(frame["ts"], config.timeframes.preprocessing.splits)[0]
    train = frame.loc[fold.mask(frame["ts"], "train")]
    validation = frame.loc[fold.mask(frame["ts"], "validation")]
    pipeline = StateVectorPipeline(config, timeframe, encoder).fit(train)
    pipeline.check_fold(fold)
    z_train, Z, lengths = z_sequences(pipeline.transform(train), pipeline.d)
    z_val, Z_val, lengths_val = z_sequences(pipeline.transform(validation), pipeline.d)
    if len(Z_val) == 0:
        raise BadInputError(f"{timeframe}: no validation bars could be encoded")
    low, high = config.timeframe(timeframe).k_range
    ks = sorted(set(k_values)) if k_values else list(range(low, high + 1))
    hmm, table = (
        select_state_count(
            Z,
            lengths,
            Z_val,
            lengths_val,
            (min(ks), max(ks)),
            (covariance_type,),
            expected_dwell=EXPECTED_DWELL[timeframe],
            n_restarts=n_restarts,
            random_state=random_state,
        )
        if k_values is None
        else _select_from(
            Z, lengths, Z_val, lengths_val, ks, covariance_type, timeframe, n_restarts, random_state
        )
    )
    hmm_range = FitRange.of(z_train["ts"])
    check_fitted_before("hmm", hmm_range, fold.val_start)
    log_alpha, loglik = filter_sequences(Z_val, lengths_val, hmm.params_)
    states = log_alpha.argmax(axis=1)
    stats_rows = z_val[["symbol", "ts"]].merge(validation, on=["symbol", "ts"], how="left")
    stats = state_statistics(
        states,
        stats_rows["rv_15"].to_numpy() if "rv_15" in stats_rows else np.zeros(len(states)),
        stats_rows["r5"].to_numpy() if "r5" in stats_rows else np.zeros(len(states)),
        stats_rows["relvol_60"].to_numpy() if "relvol_60" in stats_rows else np.ones(len(states)),
        hmm.K,
    )
    return RegimeFit(
        timeframe=timeframe,
        pipeline=pipeline,
        hmm=hmm,
        selection_table=table,
        labels=state_labels(stats),
        occupancy={int(k): float(v) for k, v in stats["occupancy"].items()},
        mean_dwell=float(mean_dwell(states, lengths_val)),
        validation_loglik_per_bar=float(loglik.mean()),
        validation_entropy=float(entropy(log_alpha).mean()),
        hmm_fit_range=hmm_range,
    )


def _select_from(
    Z, lengths, Z_val, lengths_val, ks, covariance_type, timeframe, n_restarts, random_state
):
    best, rows = None, []
    for K in ks:
        model, table = select_state_count(
            Z,
            lengths,
            Z_val,
            lengths_val,
            (K, K),
            (covariance_type,),
            expected_dwell=EXPECTED_DWELL[timeframe],
            n_restarts=n_restarts,
            random_state=random_state,
        )
        rows.append(table)
        score = table["bic"].iloc[0] if "bic" in table else np.inf
        if best is None or score < best[0]:
            best = (score, model)
    return best[1], pd.concat(rows, ignore_index=True)
