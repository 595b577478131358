"""The live inference engine of one timeframe (plan 6.1, 6.3): closed bars in, regime
answers out, for many symbols at once.

Per bar: online features (:class:`~regimes.features.online.OnlineFeatureBuffer`) ->
stationarity -> the artifact's scaler -> a ring of the last L scaled rows (windowed
encoders) -> the encoder -> one batched filter step -> anti-chatter -> OOD checks.
Everything is the artifact's own fitted objects, so the engine computes exactly what
the batch path (:meth:`regimes.model.pipeline.StateVectorPipeline.transform` then
:func:`regimes.model.hmm.filtering.filter_sequences`) computes on the same bars.

A bar without a complete usable window (warm-up, gap, or too soon after one) gets an
UNKNOWN answer with its reason; the filter state carries over it unchanged, as in the
batch path.

Bad rows of a batch (a duplicate or out-of-order bar, a bar of another timeframe or of
another bar time than the batch, NaN/inf or non-positive prices, an unsafe symbol) are
refused one by one: they get no answer, are listed with their reason in
:attr:`InferenceEngine.last_rejected` and counted, and the rest of the batch goes on;
no state of a refused row or of any other symbol changes.

**Cold start** (plan 6.2): given a ``history`` source (:class:`DatabaseHistory` reads
the bars table), a symbol the engine has not seen is first warmed up on its last
:attr:`InferenceEngine.cold_start_bars` stored bars before the bar at hand, so its first
live answer is a real one when that much history exists; without history it reports
UNKNOWN "warming up" until its longest window is filled.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from regimes.config.loading import PlatformConfig
from regimes.errors import BadInputError, UnsafeNameError
from regimes.features.batch import valid_bars
from regimes.features.online import OnlineFeatureBuffer
from regimes.features.selection import selected_features
from regimes.live import antichatter, ood
from regimes.model.artifact import load_pickle, verify_artifact
from regimes.model.hmm.filtering import entropy, filter_step
from regimes.model.scaling import stationarize
from regimes.paths import artifact_dir, check_model_id, check_symbol, check_timeframe_name

log = logging.getLogger(__name__)

UNKNOWN = -1
BAR_COLUMNS = ("symbol", "ts", "open", "high", "low", "close", "volume")
ANSWER_REASONS = ("warming up", "gap", "settling", *ood.REASONS[1:])
# Reasons travel as small integer codes inside a step (0 = a known state).
_WARMING, _GAP, _SETTLING = 1, 2, 3
_OOD_CODE = np.array([0, _GAP, *range(4, 4 + len(ood.REASONS) - 1)], dtype=np.int8)
_REASON_OUT = np.array([None, *ANSWER_REASONS], dtype=object)
SNAPSHOT_VERSION = 2

#: A source of recent bars for cold starts: (symbols, before, bars per symbol) -> bars.
History = Callable[[Sequence[str], pd.Timestamp, int], pd.DataFrame]


@dataclass
class _Rows:
    """Per-symbol arrays the engine owns besides its components."""

    log_alpha: np.ndarray  # (N, K), NaN before a symbol's first encoded bar
    window: np.ndarray  # (N, L, F) last L scaled rows, oldest first
    run: np.ndarray  # (N,) consecutive usable rows ending at the last bar


class DatabaseHistory:
    """Cold-start history from the ``bars`` table of a database (see :mod:`regimes.data.sql`)."""

    def __init__(self, engine, timeframe: str):
        self.engine = engine
        self.timeframe = check_timeframe_name(timeframe)

    def __call__(self, symbols, before, bars_per_symbol: int) -> pd.DataFrame:
        from regimes.data import sql as db

        return db.read_recent_bars(self.engine, self.timeframe, symbols, before, bars_per_symbol)


def open_engine(
    config: PlatformConfig,
    models_dir: str | Path,
    registry,
    timeframe: str,
    model_id: str | None = None,
    history: History | None = None,
) -> InferenceEngine:
    """The engine of ``timeframe``: ``model_id``, else the registry's production model.

    Refuses (``BadInputError``) a timeframe without a production model, a model_id
    without an artifact, and an artifact of another timeframe; an artifact that fails
    its checksums raises ``ArtifactIntegrityError`` at load.
    """
    timeframe = check_timeframe_name(timeframe)
    if model_id is None:
        model_id = registry.production(timeframe)
        if model_id is None:
            raise BadInputError(
                f"no production model for {timeframe}; promote one or pass a model_id "
                "(see `regimes models`)"
            )
    model_id = check_model_id(model_id)
    registered = registry.artifact_path(timeframe, model_id)
    path = Path(registered) if registered else artifact_dir(models_dir, timeframe, model_id)
    if not path.is_dir():
        raise BadInputError(f"model {model_id} ({timeframe}): no artifact at {path}")
    engine = InferenceEngine(path, config, history=history)
    if engine.timeframe != timeframe:
        raise BadInputError(
            f"model {model_id} is a {engine.timeframe} model, not {timeframe} ({path})"
        )
    return engine


class InferenceEngine:
    """Regimes of one timeframe from one model artifact, bar by bar.

    Parameters
    ----------
    artifact : path of a model artifact (verified against its checksums at load).
    config : the platform config (feature spec, session, anti-chatter and OOD settings).
    symbols : symbols to track from the start (others are added when they first appear).
    history : optional cold-start source of recent bars (see :class:`DatabaseHistory`).
    """

    def __init__(
        self,
        artifact: str | Path,
        config: PlatformConfig,
        symbols=(),
        history: History | None = None,
    ):
        self.metadata = verify_artifact(artifact)
        self.pipeline = load_pickle(artifact, "pipeline.pkl", self.metadata)
        self.hmm = load_pickle(artifact, "hmm.pkl", self.metadata)
        self.config = config
        self.history = history
        self.timeframe = self.metadata["timeframe"]
        self.model_id = self.metadata["model_id"]
        tf_config = config.timeframe(self.timeframe)
        self.buffer = OnlineFeatureBuffer(
            config.features,
            config.timeframes.session,
            names=selected_features(config.features, tf_config),
        )
        self.settings = tf_config.anti_chatter
        self.ood_settings = ood.OODSettings.from_config(
            self.metadata["ood_threshold"], tf_config.ood
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
        self._counts = _empty_counts()
        self.last_rejected = _rejected_frame([])
        self.add_symbols(symbols)

    @property
    def symbols(self) -> list[str]:
        """Tracked symbols, in the order of the state arrays (the feature buffer's)."""
        return list(self.buffer.symbols)

    def add_symbols(self, symbols) -> None:
        unique = list(dict.fromkeys(symbols))
        new = [
            check_symbol(s) for s, row in zip(unique, self._rows_of(unique), strict=True) if row < 0
        ]
        if not new:
            return
        n = len(new)
        self.buffer.add_symbols(new)
        self._rows = _Rows(
            np.vstack([self._rows.log_alpha, np.full((n, self.K), np.nan)]),
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
        frame = _check_columns(bars)
        accepted, rejected, rows = self._screen(frame)
        self.last_rejected = _rejected_frame(rejected)
        if rejected:
            self._counts["rejected"] += len(rejected)
            log.warning(
                "%s engine refused %d row(s), first: %s",
                self.timeframe,
                len(rejected),
                rejected[0]["reason"],
            )
        if not accepted.any():
            return self._answers(frame.iloc[:0], *self._no_output(0))
        frame = frame[accepted].reset_index(drop=True)
        rows = rows[accepted]
        if (rows < 0).any():
            unseen = frame["symbol"].to_numpy()[rows < 0].tolist()
            if self.history is not None:
                self._cold_start(unseen, frame["ts"].iloc[0])
            self.add_symbols(unseen)
            rows = self._rows_of(frame["symbol"])
        return self._advance(frame, rows)

    def _rows_of(self, symbols) -> np.ndarray:
        # Every per-symbol array of the engine follows the feature buffer's rows.
        return self.buffer.rows_of(symbols)

    def _screen(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[dict], np.ndarray]:
        """Accepted-row mask, a reason for every refused row, and each row's symbol row
        in the state arrays (-1 = not seen yet). Changes no state."""
        n = len(frame)
        refused = np.zeros(n, dtype=bool)
        reasons: dict[int, str] = {}
        ts_ns = frame["ts"].to_numpy(dtype="datetime64[ns]").astype(np.int64)

        def refuse(mask: np.ndarray, why: str) -> None:
            target = mask & ~refused
            for i in np.flatnonzero(target):
                reasons[int(i)] = why
            refused[target] = True

        refuse(frame["ts"].isna().to_numpy(), "missing ts")
        if "timeframe" in frame.columns:
            other = frame["timeframe"].to_numpy() != self.timeframe
            refuse(other, f"bar of another timeframe (this engine runs {self.timeframe})")
        symbols = frame["symbol"].to_numpy()
        rows = self._rows_of(symbols)
        for i in np.flatnonzero(rows < 0):  # only symbols not seen yet need the name check
            try:
                check_symbol(symbols[i])
            except UnsafeNameError as exc:
                refuse(np.arange(n) == i, f"unsafe symbol: {exc}")
        if n and (ts_ns == ts_ns[0]).all():
            batch_ts = ts_ns[0]
        else:
            values, counts = np.unique(ts_ns, return_counts=True)
            batch_ts = values[counts == counts.max()][-1] if n else 0
        refuse(
            ts_ns != batch_ts,
            f"ts differs from the batch's bar time {pd.Timestamp(batch_ts, tz='UTC').isoformat()}"
            " (one step is one bar time)",
        )
        refuse(frame["symbol"].duplicated().to_numpy(), "symbol appears twice in the batch")
        last = self.buffer.last_times(symbols, rows)
        refuse(ts_ns == last, "duplicate bar (this bar time was already processed)")
        refuse(ts_ns < last, "out-of-order bar (older than the symbol's last bar)")
        prices = [
            frame[c].to_numpy(dtype=float) for c in ("open", "high", "low", "close", "volume")
        ]
        gap = frame["is_gap"].to_numpy(dtype=bool)
        refuse(
            ~gap & ~valid_bars(*prices),
            "invalid prices: NaN/inf, non-positive, low > high, open/close outside "
            "[low, high] or negative volume",
        )
        rejected = [
            {"row": i, "symbol": str(symbols[i]), "ts": frame["ts"].iloc[i], "reason": reasons[i]}
            for i in sorted(reasons)
        ]
        return ~refused, rejected, rows

    def _cold_start(self, symbols: list[str], before: pd.Timestamp) -> None:
        """Warm ``symbols`` up on their recent stored bars; answers and counters of the
        warm-up are not reported."""
        history = self.history(symbols, before, self.cold_start_bars)
        self.add_symbols(symbols)
        if history is None or history.empty:
            return
        history = _check_columns(history)
        history = history[history["symbol"].isin(symbols) & (history["ts"] < before)]
        counts = dict(self._counts)
        ood_counts = dict(self._ood.counters)
        rows = self._rows_of(symbols)
        for _, group in history.groupby("ts", sort=True):
            accepted, _, group_rows = self._screen(group)
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
        )
        frame = pd.DataFrame(features.values, columns=list(features.names))
        stationary = stationarize(
            frame,
            self.config.features,
            self.pipeline.features_,
            bars["close"].to_numpy(dtype=float),
        )
        X = stationary[self.pipeline.features_].to_numpy()
        usable = ~(features.is_warmup | features.is_gap) & np.isfinite(X).all(axis=1)
        rows = self._rows
        rows.run[idx[~usable]] = 0
        clipped = np.zeros(len(idx), dtype=np.int64)
        if usable.any():
            scaled = self.pipeline.scaler_.transform(X[usable])
            clipped[usable] = (np.abs(scaled) >= self.pipeline.scaler_.clip).sum(axis=1)
            target = idx[usable]
            rows.window[target, :-1] = rows.window[target, 1:]
            rows.window[target, -1] = scaled
            rows.run[target] += 1
        ready = usable & (rows.run[idx] >= self.L)
        n = len(idx)
        z, posterior, loglik, h, state_id, raw, reason = self._no_output(n)
        reason[~ready] = np.where(features.is_gap[~ready], _GAP, _WARMING)
        if ready.any():
            target = idx[ready]
            windows = rows.window[target].reshape(len(target), self.L * self.F)
            z[ready] = self.pipeline.encoder_.transform(windows)
            log_alpha, ll = filter_step(rows.log_alpha[target], z[ready], self.hmm.params_)
            rows.log_alpha[target] = log_alpha
            posterior[ready] = np.exp(log_alpha)
            loglik[ready] = ll
            # Encoded bars go through anti-chatter and OOD; the rest stay UNKNOWN.
            h[ready] = entropy(np.log(np.clip(posterior[ready], 1e-300, None)))
            state_id[ready], raw[ready], reason[ready] = self._judge(
                self._chatter,
                self._ood,
                target,
                posterior[ready],
                loglik[ready],
                h[ready],
                clipped[ready],
            )
        self._counts["bars"] += n
        counts = np.bincount(reason, minlength=len(_REASON_OUT))
        self._counts["known"] += int(counts[0])
        for code, name in enumerate(ANSWER_REASONS, start=1):
            self._counts[name] += int(counts[code])
        return self._answers(bars, z, posterior, loglik, h, state_id, raw, reason)

    # -- the offline path

    def replay_batch(self, bars: pd.DataFrame) -> pd.DataFrame:
        """The answers a fresh engine gives to ``bars`` stepped bar by bar, computed over
        whole histories at once (the backfill's path; this engine's state is untouched).

        ``bars`` is the history of one or more symbols (columns as for :meth:`step`).
        Features come from the batch computation (bit-identical to the online one), the
        filter runs over each symbol's sequence, and anti-chatter and OOD advance all
        symbols together one encoded bar at a time through the same functions the engine
        calls. Rows come back sorted by symbol and ts.
        """
        from regimes.features.batch import compute_batch
        from regimes.model.encoders.base import make_windows
        from regimes.model.hmm.filtering import filter_sequences

        frame = _check_columns(bars)
        if "timeframe" in frame.columns and (frame["timeframe"] != self.timeframe).any():
            raise BadInputError(f"replay_batch: bars of another timeframe than {self.timeframe}")
        for symbol in frame["symbol"].unique():
            check_symbol(symbol)
        frame = (
            frame.assign(timeframe=self.timeframe)
            .sort_values(["symbol", "ts"], kind="stable")
            .reset_index(drop=True)
        )
        if frame.empty:
            return self._answers(frame, *self._no_output(0))
        features = compute_batch(
            frame, self.config.features, self.config.timeframes.session, self.buffer.names
        )
        stationary = stationarize(
            features,
            self.config.features,
            self.pipeline.features_,
            frame["close"].to_numpy(dtype=float),
        )
        X = stationary[self.pipeline.features_].to_numpy()
        gap = features["is_gap"].to_numpy(dtype=bool)
        usable = ~(features["is_warmup"].to_numpy(dtype=bool) | gap) & np.isfinite(X).all(axis=1)
        scaled = np.zeros_like(X)
        clipped = np.zeros(len(frame), dtype=np.int64)
        if usable.any():
            scaled[usable] = self.pipeline.scaler_.transform(X[usable])
            clipped[usable] = (np.abs(scaled[usable]) >= self.pipeline.scaler_.clip).sum(axis=1)
        symbols = frame["symbol"].to_numpy()
        starts = np.flatnonzero(np.r_[True, symbols[1:] != symbols[:-1]])
        ends = np.r_[starts[1:], len(frame)]
        windows, ready_rows, lengths = [], [], []
        for start, end in zip(starts, ends, strict=True):
            w, rows = make_windows(scaled[start:end], self.L, usable[start:end])
            windows.append(w)
            ready_rows.append(rows + start)
            lengths.append(len(rows))
        ready_rows = np.concatenate(ready_rows)
        lengths = np.asarray(lengths, dtype=np.int64)
        n = len(frame)
        z, posterior, loglik, h, state_id, raw, reason = self._no_output(n)
        reason[:] = np.where(gap, _GAP, _WARMING)
        if len(ready_rows):
            z[ready_rows] = self.pipeline.encoder_.transform(np.concatenate(windows))
            log_alpha, ll = filter_sequences(z[ready_rows], lengths, self.hmm.params_)
            posterior[ready_rows] = np.exp(log_alpha)
            loglik[ready_rows] = ll
            h[ready_rows] = entropy(np.log(np.clip(posterior[ready_rows], 1e-300, None)))
            chatter = antichatter.AntiChatterState.empty(len(starts), self.settings.majority_window)
            health = ood.OODState.empty(len(starts), self.ood_settings.window)
            offsets = np.r_[0, np.cumsum(lengths)[:-1]]
            for t in range(int(lengths.max())):
                active = np.flatnonzero(lengths > t)
                rows = ready_rows[offsets[active] + t]
                state_id[rows], raw[rows], reason[rows] = self._judge(
                    chatter, health, active, posterior[rows], loglik[rows], h[rows], clipped[rows]
                )
        return self._answers(frame, z, posterior, loglik, h, state_id, raw, reason)

    def _judge(self, chatter, health, symbols, posterior, loglik, h, clipped):
        """Anti-chatter, then the OOD checks, for one encoded bar of ``symbols`` (their
        rows in ``chatter`` and ``health``): (state_id, raw state, reason code)."""
        published, raw = antichatter.step(chatter, symbols, posterior, self.settings)
        no_gap = np.zeros(len(symbols), dtype=bool)  # gaps never reach the encoder
        why = ood.step_codes(health, symbols, loglik, h, raw, no_gap, self.ood_settings, clipped)
        settled = published >= 0
        unknown = why != 0
        state_id = np.where(unknown | ~settled, UNKNOWN, published)
        reason = np.where(unknown, _OOD_CODE[why], np.where(settled, 0, _SETTLING))
        return state_id, raw, reason

    def _no_output(self, n: int):
        return (
            np.full((n, self.pipeline.d), np.nan),
            np.full((n, self.K), np.nan),
            np.full(n, np.nan),
            np.full(n, np.nan),
            np.full(n, UNKNOWN, dtype=np.int64),
            np.full(n, UNKNOWN, dtype=np.int64),
            np.zeros(n, dtype=np.int8),
        )

    def _answers(self, bars, z, posterior, loglik, h, state_id, raw, reason) -> pd.DataFrame:
        known = np.isfinite(posterior).all(axis=1) if len(posterior) else np.zeros(0, bool)
        state_prob = np.full(len(posterior), np.nan)
        if known.any():
            state_prob[known] = posterior[known].max(axis=1)
        columns = {
            "symbol": bars["symbol"].to_numpy(dtype=object),
            "ts": pd.DatetimeIndex(bars["ts"]),
            "timeframe": np.full(len(state_id), self.timeframe, dtype=object),
            "model_id": np.full(len(state_id), self.model_id, dtype=object),
            "state_id": state_id,
            "raw_state_id": raw,
            "state_prob": state_prob,
            "loglik": loglik,
            "entropy": h,
            "is_unknown": state_id == UNKNOWN,
            "ood_reason": _REASON_OUT[reason],
        }
        for k in range(self.pipeline.d):
            columns[f"z_{k:02d}"] = z[:, k]
        for k in range(self.K):
            columns[f"p_{k:02d}"] = posterior[:, k]
        # Fresh arrays all: no copy (and no broadcasting of scalars, ~5x faster).
        return pd.DataFrame(columns, copy=False)

    # -- monitoring

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

    # -- exact restarts

    def snapshot(self) -> dict[str, np.ndarray]:
        """The whole engine state (feature buffers, filter, windows, anti-chatter, OOD,
        counters) as a flat dict of arrays."""
        state = {f"buffer/{k}": v for k, v in self.buffer.snapshot().items()}
        state.update({f"chatter/{k}": v for k, v in self._chatter.snapshot().items()})
        ood_state = self._ood.snapshot()
        state.update(
            {
                "engine/version": np.array(SNAPSHOT_VERSION),
                "engine/model_id": np.array(self.model_id),
                "engine/symbols": np.array(self.symbols, dtype=str),
                "engine/log_alpha": self._rows.log_alpha.copy(),
                "engine/window": self._rows.window.copy(),
                "engine/run": self._rows.run.copy(),
                "engine/counts": np.array(json.dumps(self._counts)),
                "ood/entropy": ood_state["entropy"],
                "ood/states": ood_state["states"],
                "ood/seen": ood_state["seen"],
                "ood/moments": ood_state["moments"],
                "ood/counters": np.array(json.dumps(ood_state["counters"])),
            }
        )
        return state

    def restore(self, state: dict[str, np.ndarray]) -> InferenceEngine:
        """Load :meth:`snapshot` into this engine (built from the same artifact)."""
        missing = [
            key
            for key in ("engine/version", "engine/model_id", "engine/symbols", "engine/run")
            if key not in state
        ]
        if missing:
            raise BadInputError(f"engine snapshot is incomplete: no {missing}")
        if int(state["engine/version"]) != SNAPSHOT_VERSION:
            raise BadInputError(
                f"engine snapshot version {int(state['engine/version'])} is not supported"
            )
        if str(state["engine/model_id"]) != self.model_id:
            raise BadInputError(
                f"engine snapshot is of model {state['engine/model_id']}, this engine runs "
                f"{self.model_id}"
            )

        def part(prefix: str) -> dict[str, np.ndarray]:
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

        symbols = [str(s) for s in state["engine/symbols"]]
        n = len(symbols)
        W, V = self.settings.majority_window, self.ood_settings.window
        shapes = {
            "engine/log_alpha": (n, self.K),
            "engine/window": (n, self.L, self.F),
            "engine/run": (n,),
            "chatter/history": (n, W),
            "ood/entropy": (n, V),
            "ood/states": (n, V),
            "ood/seen": (n,),
        }
        for key, shape in shapes.items():
            if key not in state or np.shape(state[key]) != shape:
                got = np.shape(state[key]) if key in state else "missing"
                raise BadInputError(
                    f"engine snapshot {key!r}: expected shape {shape}, got {got} (the "
                    "anti-chatter and OOD windows must match this timeframe's config)"
                )
        for key in ("engine/counts", "ood/counters"):
            if key not in state:
                raise BadInputError(f"engine snapshot is incomplete: no {key!r}")
        # Everything into locals first: a snapshot that fails any check changes nothing.
        buffer = OnlineFeatureBuffer.restore(
            part("buffer/"), self.config.features, self.config.timeframes.session
        )
        if list(buffer.symbols) != symbols:
            raise BadInputError("engine snapshot: feature buffer and engine symbols differ")
        chatter = antichatter.AntiChatterState.restore(part("chatter/"))
        ood_state = part("ood/")
        try:
            ood_state["counters"] = json.loads(str(ood_state["counters"]))
            counts = {**_empty_counts(), **json.loads(str(state["engine/counts"]))}
        except json.JSONDecodeError as exc:
            raise BadInputError(f"engine snapshot: unreadable counters ({exc})") from None
        health = ood.OODState.restore(ood_state)
        if any(len(getattr(chatter, f)) != n for f in antichatter.FIELDS):
            raise BadInputError("engine snapshot: anti-chatter arrays do not fit the symbols")
        self.buffer = buffer
        self._rows = _Rows(
            np.array(state["engine/log_alpha"], dtype=float),
            np.array(state["engine/window"], dtype=float),
            np.array(state["engine/run"], dtype=np.int64),
        )
        self._chatter = chatter
        self._ood = health
        self._counts = counts
        return self

    def save(self, path: str | Path) -> Path:
        """Write :meth:`snapshot` to an ``.npz`` file atomically (no pickle)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        buffer = io.BytesIO()
        np.savez(buffer, **self.snapshot())
        partial.write_bytes(buffer.getvalue())
        partial.replace(path)
        return path

    def load(self, path: str | Path) -> InferenceEngine:
        """Restore a snapshot written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise BadInputError(f"{path}: no engine snapshot here")
        try:
            with np.load(path, allow_pickle=False) as data:
                state = {key: data[key] for key in data.files}
        except (OSError, ValueError) as exc:
            raise BadInputError(f"{path}: not an engine snapshot ({exc})") from None
        return self.restore(state)


def _empty_counts() -> dict[str, int]:
    return {"bars": 0, "known": 0, "rejected": 0, "cold_started": 0} | {
        name: 0 for name in ANSWER_REASONS
    }


_NONE_REJECTED = pd.DataFrame(columns=["row", "symbol", "ts", "reason"])


def _rejected_frame(rows: list[dict]) -> pd.DataFrame:
    if not rows:
        return _NONE_REJECTED  # shared and read-only by convention: most steps refuse nothing
    return pd.DataFrame(rows, columns=["row", "symbol", "ts", "reason"])


def _check_columns(bars: pd.DataFrame) -> pd.DataFrame:
    """Structural checks of a batch (whole-batch errors) and a normalised copy."""
    if not isinstance(bars, pd.DataFrame):
        raise BadInputError(f"step: expected a DataFrame of bars, got {type(bars).__name__}")
    missing = [c for c in BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise BadInputError(f"step: bars lack column(s) {missing}; expected {list(BAR_COLUMNS)}")
    ts = pd.DatetimeIndex(bars["ts"])
    if ts.tz is None:
        raise BadInputError("step: ts must be timezone-aware (UTC)")
    frame = bars.reset_index(drop=True).copy(deep=False)
    frame["ts"] = ts.tz_convert("UTC")
    for column in ("open", "high", "low", "close", "volume"):
        if frame[column].dtype.kind not in "fiu":  # a text cell: NaN, refused with its row
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    if "is_gap" not in frame.columns:
        frame["is_gap"] = False
    else:
        frame["is_gap"] = frame["is_gap"].fillna(False).astype(bool)
    return frame
