"""The live inference engine of one timeframe (plan 6.1, 6.3): closed bars in, regime
answers out, for many symbols at once.

Per bar: online features (:class:`~regimes.features.online.OnlineFeatureBuffer`) ->
stationarity -> the model's scaler -> its seasonal adjustment (when it has one) -> a
ring of the last L scaled rows (windowed encoders) -> the encoder -> one batched filter
step -> anti-chatter -> OOD checks.
Everything comes from the model artifact (:class:`~regimes.model.loaded.LoadedModel`):
its feature spec, session, fitted objects, OOD and anti-chatter settings. Today's
``config/`` plays no part, so the engine computes exactly what the batch path
(:meth:`regimes.model.pipeline.StateVectorPipeline.transform` then
:func:`regimes.model.hmm.filtering.posterior_sequences`) computes on the same bars, and
the same model gives the same answers whatever the config says now.

A bar without a complete usable window (warm-up, gap, or too soon after one) gets an
UNKNOWN answer with its reason; the filter state carries over it unchanged, as in the
batch path. Bad rows are refused one by one (:mod:`regimes.live.screening`); restarts
are exact (:mod:`regimes.live.snapshot`); the offline path is
:mod:`regimes.live.replay`.

**Cold start** (plan 6.2): given a ``history`` source (:mod:`regimes.live.history`), a
symbol the engine has not seen is first warmed up on its last
:attr:`InferenceEngine.cold_start_bars` stored bars before the bar at hand, so its first
live answer is a real one when that much history exists; without history it reports
UNKNOWN "warming up" until its longest window is filled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from regimes.errors import BadInputError
from regimes.features.online import OnlineFeatureBuffer
from regimes.live import antichatter, ood
from regimes.live.answer_frame import (
    ANSWER_REASONS,
    GAP,
    WARMING,
    answer_frame,
    empty_outputs,
    judge,
    reason_counts,
)
from regimes.live.history import DatabaseHistory, History
from regimes.live.screening import BAR_COLUMNS, check_columns, rejected_frame, screen
from regimes.live.snapshot import (
    SNAPSHOT_VERSION,
    read_snapshot,
    restore_snapshot,
    take_snapshot,
    write_snapshot,
)
from regimes.model.hmm.filtering import posterior_entropy, posterior_step
from regimes.model.loaded import LoadedModel
from regimes.model.scaling import stationarize
from regimes.model.seasonal import minutes_into_day
from regimes.paths import check_model_id, check_symbol, check_timeframe_name

log = logging.getLogger(__name__)

__all__ = [
    "ANSWER_REASONS",
    "BAR_COLUMNS",
    "SNAPSHOT_VERSION",
    "DatabaseHistory",
    "History",
    "InferenceEngine",
    "open_engine",
]


@dataclass
class _Rows:
    """Per-symbol arrays the engine owns besides its components."""

    posterior: np.ndarray  # (N, K) filtered alpha, NaN before a symbol's first encoded bar
    window: np.ndarray  # (N, L, F) last L scaled rows, oldest first
    run: np.ndarray  # (N,) consecutive usable rows ending at the last bar


def open_engine(
    models,
    registry,
    timeframe: str,
    model_id: str | None = None,
    history: History | None = None,
) -> InferenceEngine:
    """The engine of ``timeframe``: ``model_id``, else the registry's champion of the
    timeframe, its artifact found through ``models`` (a
    :class:`~regimes.model.store.ModelStore` or a local models folder).

    Refuses (``BadInputError``) a timeframe without a champion, a model_id
    without an artifact, and an artifact of another timeframe; an artifact that fails
    verification (files, format version, feature spec) raises ``ArtifactIntegrityError``
    at load.
    """
    timeframe = check_timeframe_name(timeframe)
    if model_id is None:
        model_id = registry.champion(timeframe)
        if model_id is None:
            raise BadInputError(
                f"no champion model for {timeframe}; promote one (`regimes promote`) or pass "
                "a model_id (see `regimes models`)"
            )
    model_id = check_model_id(model_id)
    from regimes.model.store import ModelStore

    registered = registry.artifact_path(timeframe, model_id)
    path = ModelStore.of(models).artifact(timeframe, model_id, registered)
    model = LoadedModel.load(path)
    if model.timeframe != timeframe:
        raise BadInputError(
            f"model {model_id} is a {model.timeframe} model, not {timeframe} ({path})"
        )
    return InferenceEngine(model, history=history)


def _all_or_mask(mask: np.ndarray):
    """``mask``, or a full slice when it selects every row (views, not masked copies)."""
    return slice(None) if mask.all() else mask


def _stationarity_plan(spec, names, model_features):
    """(columns of the model's features among the buffer's, positions to take log(x /
    close), positions to divide by close), or None when a feature needs ``difference``."""
    policies = [spec.features[name].stationarity for name in model_features]
    if "difference" in policies:
        return None
    columns = np.array([list(names).index(name) for name in model_features], dtype=np.int64)
    log_ratio = np.flatnonzero([p == "log_ratio_to_close" for p in policies])
    relative = np.flatnonzero([p == "relative_to_close" for p in policies])
    return columns, log_ratio, relative


class InferenceEngine:
    """Regimes of one timeframe from one model, bar by bar.

    Parameters
    ----------
    model : LoadedModel
        The verified artifact (:meth:`regimes.model.loaded.LoadedModel.load`); the only
        source of settings.
    symbols : iterable of str
        Symbols to track from the start (others are added when they first appear).
    history : History, optional
        Cold-start source of recent bars (see :class:`DatabaseHistory`).
    """

    def __init__(self, model: LoadedModel, symbols=(), history: History | None = None):
        if not isinstance(model, LoadedModel):
            raise BadInputError(
                f"InferenceEngine: expected a LoadedModel, got {type(model).__name__} "
                "(use LoadedModel.load(path) or open_engine)"
            )
        self.model = model
        self.metadata = model.metadata
        self.pipeline = model.pipeline
        self.hmm = model.hmm
        self.history = history
        self.timeframe = model.timeframe
        self.model_id = model.model_id
        # Only the features the model reads are computed, with the warm-up and window
        # arithmetic of the model's whole selection (what the batch path computes).
        self.buffer = OnlineFeatureBuffer(
            model.feature_spec,
            model.session,
            names=self.pipeline.features_,
            selected_from=model.feature_names,
            timeframe=model.timeframe,
        )
        self.settings = model.anti_chatter
        self.ood_settings = ood.OODSettings.from_config(model.ood_threshold, model.ood)
        self._policies = _stationarity_plan(
            model.feature_spec, self.buffer.names, self.pipeline.features_
        )
        self.L = int(self.pipeline.window_length)
        self.F = len(self.pipeline.features_)
        self.K = self.hmm.K
        # Enough history for every feature window, the encoder window and full
        # anti-chatter / OOD trailing windows.
        self.cold_start_bars = (
            self.buffer.warmup_bars
            + self.L
            + max(
                self.ood_settings.window,
                self.settings.majority_window,
                self.settings.min_dwell_bars,
            )
        )
        self._rows = _Rows(
            np.zeros((0, self.K)), np.zeros((0, self.L, self.F)), np.zeros(0, dtype=np.int64)
        )
        self._chatter = antichatter.AntiChatterState.empty(0, self.settings.majority_window)
        self._ood = ood.OODState.empty(0, self.ood_settings.window)
        self._counts = self.empty_counts()
        self.last_rejected = rejected_frame([])
        self.add_symbols(symbols)

    @property
    def symbols(self) -> list[str]:
        """Tracked symbols, in the order of the state arrays (the feature buffer's)."""
        return list(self.buffer.symbols)

    def add_symbols(self, symbols) -> None:
        """Start tracking ``symbols`` (those already tracked are left as they are)."""
        unique = list(dict.fromkeys(symbols))
        rows = self.buffer.rows_of(unique)
        new = [check_symbol(s) for s, row in zip(unique, rows, strict=True) if row < 0]
        if not new:
            return
        n = len(new)
        self.buffer.add_symbols(new)
        self._rows = _Rows(
            np.vstack([self._rows.posterior, np.full((n, self.K), np.nan)]),
            np.concatenate([self._rows.window, np.zeros((n, self.L, self.F))]),
            np.concatenate([self._rows.run, np.zeros(n, dtype=np.int64)]),
        )
        self._chatter = self._chatter.extended(n)
        self._ood = self._ood.extended(n)

    # -- the step

    def step(self, bars: pd.DataFrame) -> pd.DataFrame:
        """One closed bar for each of a batch of symbols; returns one answer per accepted row.

        ``bars`` has columns symbol, ts (UTC), open, high, low, close, volume and
        optionally is_gap and timeframe. Rows refused for a reason are left out of the
        answers and listed in :attr:`last_rejected` (row, symbol, ts, reason).
        """
        frame = check_columns(bars)
        accepted, rejected, rows = screen(frame, self.timeframe, self.buffer)
        self.last_rejected = rejected_frame(rejected)
        if rejected:
            self._counts["rejected"] += len(rejected)
            log.warning(
                "%s engine refused %d row(s), first: %s",
                self.timeframe,
                len(rejected),
                rejected[0]["reason"],
            )
        if not accepted.any():
            return self._answers(frame.iloc[:0], empty_outputs(0, self.pipeline.d, self.K))
        if rejected:
            frame = frame[accepted].reset_index(drop=True)
            rows = rows[accepted]
        if (rows < 0).any():
            unseen = frame["symbol"].to_numpy()[rows < 0].tolist()
            if self.history is not None:
                self._cold_start(unseen, frame["ts"].iloc[0])
            self.add_symbols(unseen)
            rows = self.buffer.rows_of(frame["symbol"])
        return self._advance(frame, rows)

    def _cold_start(self, symbols: list[str], before: pd.Timestamp) -> None:
        """Warm ``symbols`` up on their recent stored bars; answers and counters of the
        warm-up are not reported."""
        history = self.history(symbols, before, self.cold_start_bars)
        self.add_symbols(symbols)
        if history is None or history.empty:
            return
        history = check_columns(history)
        history = history[history["symbol"].isin(symbols) & (history["ts"] < before)]
        counts = dict(self._counts)
        ood_counts = dict(self._ood.counters)
        rows = self.buffer.rows_of(symbols)
        for _, group in history.groupby("ts", sort=True):
            accepted, _, group_rows = screen(group, self.timeframe, self.buffer)
            if accepted.any():
                self._advance(group[accepted].reset_index(drop=True), group_rows[accepted])
        self._counts = counts
        self._counts["cold_started"] += len(symbols)
        self._ood.counters = ood_counts
        self._chatter.raw_switches[rows] = 0
        self._chatter.published_switches[rows] = 0

    def _advance(self, bars: pd.DataFrame, idx: np.ndarray) -> pd.DataFrame:
        """Advance the engine by one bar of each row of ``bars`` (already screened; ``idx``
        their rows in the state arrays, all symbols added)."""
        features = self.buffer.update(
            bars["symbol"].tolist(),
            pd.DatetimeIndex(bars["ts"]),
            bars["open"],
            bars["high"],
            bars["low"],
            bars["close"],
            bars["volume"],
            bars["is_gap"],
            rows=idx,
            screened=True,  # by screen(): every row here passed its checks
        )
        X = self._stationary(features, bars["close"].to_numpy(dtype=float))
        # Counts by a product (all/sum over axis 1 are slow on rows as short as F).
        columns = np.ones(X.shape[1])
        finite = (np.isfinite(X) @ columns) == X.shape[1]
        usable = ~(features.is_warmup | features.is_gap) & finite
        rows = self._rows
        rows.run[idx[~usable]] = 0
        clipped = np.zeros(len(idx), dtype=np.int64)
        if usable.any():
            every = _all_or_mask(usable)
            scaled = self.pipeline.scaler_.transform_in_place(X[every])  # X is the step's own
            clipped[every] = (np.abs(scaled) >= self.pipeline.scaler_.clip) @ columns
            scaled = self._deseasonalize(scaled, bars, every)
            target = idx[every]
            rows.window[target, :-1] = rows.window[target, 1:]
            rows.window[target, -1] = scaled
            rows.run[target] += 1
        ready = usable & (rows.run[idx] >= self.L)
        n = len(idx)
        outputs = empty_outputs(n, self.pipeline.d, self.K)
        z, posterior, loglik, h, state_id, raw, reason = outputs
        reason[~ready] = np.where(features.is_gap[~ready], GAP, WARMING)
        if ready.any():
            # Every row ready (the usual live step): views instead of masked copies.
            every = _all_or_mask(ready)
            target = idx[every]
            windows = rows.window[target].reshape(len(target), self.L * self.F)
            z[every] = self.pipeline.encoder_.transform(windows)
            alpha, ll = posterior_step(rows.posterior[target], z[every], self.hmm.params_)
            rows.posterior[target] = alpha
            posterior[every] = alpha
            loglik[every] = ll
            # Encoded bars go through anti-chatter and OOD; the rest stay UNKNOWN.
            h[every] = posterior_entropy(alpha)
            state_id[every], raw[every], reason[every] = judge(
                self._chatter,
                self._ood,
                target,
                posterior[every],
                loglik[every],
                h[every],
                clipped[every],
                self.settings,
                self.ood_settings,
            )
        self._counts["bars"] += n
        for name, count in reason_counts(reason).items():
            self._counts[name] += count
        return self._answers(bars, outputs)

    def _deseasonalize(self, scaled: np.ndarray, bars: pd.DataFrame, every) -> np.ndarray:
        """The model's seasonal adjustment of the scaled rows (identity without one), on
        each bar's minutes into its market trading day, as the batch path applies it."""
        seasonal = self.pipeline.seasonal_
        if seasonal is None:
            return scaled
        ts_ns = pd.DatetimeIndex(bars["ts"]).as_unit("ns").asi8[every]
        symbols = bars["symbol"].to_numpy()[every]
        return seasonal.transform(scaled, minutes_into_day(ts_ns, self.model.session, symbols))

    def _stationary(self, features, close: np.ndarray) -> np.ndarray:
        """The model's features of this step, made stationary, as an (n, F) array.

        Straight on the feature array (no frame): the same elementwise arithmetic as
        :func:`regimes.model.scaling.stationarize`, which a ``difference`` feature (it
        needs the previous row) still goes through."""
        names = list(features.names)
        policies = self._policies
        if policies is None:
            frame = pd.DataFrame(features.values, columns=names)
            wanted = self.pipeline.features_
            stationary = stationarize(frame, self.model.feature_spec, wanted, close)
            return stationary[wanted].to_numpy()
        columns, log_ratio, relative = policies
        X = features.values[:, columns]
        with np.errstate(invalid="ignore", divide="ignore"):
            if len(log_ratio):
                X[:, log_ratio] = np.log(X[:, log_ratio] / close[:, None])
            if len(relative):
                X[:, relative] = X[:, relative] / close[:, None]
        return X

    def _answers(self, bars: pd.DataFrame, outputs) -> pd.DataFrame:
        return answer_frame(bars, self.timeframe, self.model_id, outputs)

    # -- the offline path

    def replay_batch(self, bars: pd.DataFrame) -> pd.DataFrame:
        """The answers a fresh engine gives to ``bars`` stepped bar by bar, computed over
        whole histories at once (the backfill's path; this engine's state is untouched).
        See :func:`regimes.live.replay.replay_batch`."""
        from regimes.live.replay import replay_batch

        return replay_batch(self, bars)

    # -- monitoring

    @staticmethod
    def empty_counts() -> dict[str, int]:
        """The engine's counters at zero."""
        return {"bars": 0, "known": 0, "rejected": 0, "cold_started": 0} | {
            name: 0 for name in ANSWER_REASONS
        }

    def counters(self) -> dict:
        """Counters a monitor reads: rows answered, refused, known, UNKNOWN by reason,
        switches of the raw and the published state, symbols whose trailing window
        collapsed onto one state, and symbols cold-started from history."""
        collapsed = ood.occupancy_collapse(self._ood, self.ood_settings)
        return {
            "timeframe": self.timeframe,
            "model_id": self.model_id,
            "symbols": len(self.symbols),
            **{key: int(value) for key, value in self._counts.items()},
            "raw_switches": int(self._chatter.raw_switches.sum()),
            "published_switches": int(self._chatter.published_switches.sum()),
            "occupancy_collapse": [s for s, c in zip(self.symbols, collapsed, strict=True) if c],
        }

    def switch_counts(self) -> pd.DataFrame:
        """Per symbol: switches of the raw (argmax) state and of the published state."""
        return pd.DataFrame(
            {
                "symbol": self.symbols,
                "raw_switches": self._chatter.raw_switches.copy(),
                "published_switches": self._chatter.published_switches.copy(),
            }
        )

    # -- exact restarts (regimes.live.snapshot)

    def snapshot(self) -> dict[str, np.ndarray]:
        """The whole engine state (feature buffers, filter, windows, anti-chatter, OOD,
        counters) as a flat dict of arrays."""
        return take_snapshot(self)

    def restore(self, state: dict[str, np.ndarray]) -> InferenceEngine:
        """Load :meth:`snapshot` into this engine (built from the same model)."""
        restore_snapshot(self, state)
        return self

    def save(self, path: str | Path) -> Path:
        """Write :meth:`snapshot` to an ``.npz`` file atomically (no pickle)."""
        return write_snapshot(self.snapshot(), path)

    def load(self, path: str | Path) -> InferenceEngine:
        """Restore a snapshot written by :meth:`save`."""
        return self.restore(read_snapshot(path))
