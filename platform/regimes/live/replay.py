"""The engine's offline path: the answers a fresh engine gives to a whole history,
computed over whole histories at once (what the backfill runs).

Features come from the batch computation (bit-identical to the online one), the filter
runs over each symbol's sequence, and anti-chatter and OOD advance all symbols together
one encoded bar at a time through the same :func:`regimes.live.answer_frame.judge` the
live step calls, so the answers equal stepping the bars through a live engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from regimes.errors import BadInputError
from regimes.features.batch import compute_batch
from regimes.live import antichatter, ood
from regimes.live.answer_frame import GAP, WARMING, answer_frame, empty_outputs, judge
from regimes.live.screening import check_columns
from regimes.model.encoders.base import make_windows
from regimes.model.hmm.filtering import posterior_entropy, posterior_sequences
from regimes.model.scaling import stationarize
from regimes.model.seasonal import minutes_into_day
from regimes.paths import check_symbol

if TYPE_CHECKING:
    from regimes.live.engine import InferenceEngine


def replay_batch(engine: InferenceEngine, bars: pd.DataFrame) -> pd.DataFrame:
    """Answers of a fresh ``engine`` of the same model to ``bars`` (the history of one or
    more symbols, columns as for a step), sorted by symbol and ts; ``engine``'s own state
    is untouched."""
    return replay_with_inputs(engine, bars)[0]


def replay_with_inputs(engine: InferenceEngine, bars: pd.DataFrame):
    """:func:`replay_batch`, and the model's inputs of every answer: the selected
    features after stationarity, before scaling (same rows, same order; NaN where a
    bar has none) — what a drift report compares between windows."""
    model, timeframe = engine.model, engine.timeframe
    frame = check_columns(bars)
    if "timeframe" in frame.columns and (frame["timeframe"] != timeframe).any():
        raise BadInputError(f"replay_batch: bars of another timeframe than {timeframe}")
    for symbol in frame["symbol"].unique():
        check_symbol(symbol)
    frame = (
        frame.assign(timeframe=timeframe)
        .sort_values(["symbol", "ts"], kind="stable")
        .reset_index(drop=True)
    )
    pipeline = model.pipeline
    outputs = empty_outputs(len(frame), model.d, model.K)
    if frame.empty:
        return answer_frame(frame, timeframe, model.model_id, outputs), pd.DataFrame(
            columns=list(pipeline.features_)
        )
    features = compute_batch(frame, model.feature_spec, model.session, model.feature_names)
    close = frame["close"].to_numpy(dtype=float)
    stationary = stationarize(features, model.feature_spec, pipeline.features_, close)
    X = stationary[pipeline.features_].to_numpy()
    gap = features["is_gap"].to_numpy(dtype=bool)
    usable = ~(features["is_warmup"].to_numpy(dtype=bool) | gap) & np.isfinite(X).all(axis=1)
    scaled = np.zeros_like(X)
    clipped = np.zeros(len(frame), dtype=np.int64)
    if usable.any():
        scaled[usable] = pipeline.scaler_.transform(X[usable])
        clipped[usable] = (np.abs(scaled[usable]) >= pipeline.scaler_.clip).sum(axis=1)
        if pipeline.seasonal_ is not None:  # the engine's hook, on the same minutes
            ts_ns = pd.DatetimeIndex(frame["ts"]).as_unit("ns").asi8[usable]
            minutes = minutes_into_day(ts_ns, model.session, frame["symbol"].to_numpy()[usable])
            scaled[usable] = pipeline.seasonal_.transform(scaled[usable], minutes)
    symbols = frame["symbol"].to_numpy()
    starts = np.flatnonzero(np.r_[True, symbols[1:] != symbols[:-1]])
    ends = np.r_[starts[1:], len(frame)]
    windows, ready_rows, lengths = [], [], []
    for start, end in zip(starts, ends, strict=True):
        w, rows = make_windows(scaled[start:end], engine.L, usable[start:end])
        windows.append(w)
        ready_rows.append(rows + start)
        lengths.append(len(rows))
    ready_rows = np.concatenate(ready_rows)
    lengths = np.asarray(lengths, dtype=np.int64)
    z, posterior, loglik, h, state_id, raw, reason = outputs
    reason[:] = np.where(gap, GAP, WARMING)
    if len(ready_rows):
        z[ready_rows] = pipeline.encoder_.transform(np.concatenate(windows))
        alpha, ll = posterior_sequences(z[ready_rows], lengths, model.hmm.params_)
        posterior[ready_rows] = alpha
        loglik[ready_rows] = ll
        h[ready_rows] = posterior_entropy(alpha)
        chatter = antichatter.AntiChatterState.empty(len(starts), engine.settings.majority_window)
        health = ood.OODState.empty(len(starts), engine.ood_settings.window)
        offsets = np.r_[0, np.cumsum(lengths)[:-1]]
        for t in range(int(lengths.max())):
            active = np.flatnonzero(lengths > t)
            rows = ready_rows[offsets[active] + t]
            state_id[rows], raw[rows], reason[rows] = judge(
                chatter,
                health,
                active,
                posterior[rows],
                loglik[rows],
                h[rows],
                clipped[rows],
                engine.settings,
                engine.ood_settings,
            )
    inputs = pd.DataFrame(X, columns=list(pipeline.features_))
    return answer_frame(frame, timeframe, model.model_id, outputs), inputs
