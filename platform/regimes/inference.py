"""The live inference engine of one timeframe (plan 6.1, 6.3): closed bars in, regime
answers out, for many symbols at once.

Per bar: online features (:class:`~regimes.features.OnlineFeatureBuffer`) ->
stationarity -> the artifact's scaler -> a ring of the last L scaled rows (windowed
encoders) -> the encoder -> one batched filter step -> anti-chatter -> OOD checks.
Everything is the artifact's own fitted objects, so the engine computes exactly what
the batch path (:meth:`regimes.preprocessing.StateVectorPipeline.transform` then
:func:`regimes.hmm.filtering.filter_sequences`) computes on the same bars.

A bar without a complete usable window (warm-up, gap, or too soon after one) gets an
UNKNOWN answer with its reason; the filter state carries over it unchanged, as in the
batch path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from regimes import antichatter, ood
from regimes.artifacts import load_pickle, verify_artifact
from regimes.config import PlatformConfig
from regimes.features import OnlineFeatureBuffer, selected_features
from regimes.hmm.filtering import entropy, filter_step
from regimes.scaling import stationarize

UNKNOWN = -1


@dataclass
class _Rows:
    """Per-symbol arrays the engine owns besides its components."""

    log_alpha: np.ndarray  # (N, K), NaN before a symbol's first encoded bar
    window: np.ndarray  # (N, L, F) last L scaled rows, oldest first
    run: np.ndarray  # (N,) consecutive usable rows ending at the last bar


class InferenceEngine:
    """Regimes of one timeframe from one model artifact, bar by bar."""

    def __init__(self, artifact: str | Path, config: PlatformConfig, symbols=()):
        self.metadata = verify_artifact(artifact)
        self.pipeline = load_pickle(artifact, "pipeline.pkl", self.metadata)
        self.hmm = load_pickle(artifact, "hmm.pkl", self.metadata)
        self.config = config
        self.timeframe = self.metadata["timeframe"]
        self.model_id = self.metadata["model_id"]
        tf_config = config.timeframe(self.timeframe)
        self.buffer = OnlineFeatureBuffer(
            config.features,
            config.timeframes.session,
            names=selected_features(config.features, tf_config),
        )
        self.settings = tf_config.anti_chatter
        self.ood_settings = ood.OODSettings(loglik_threshold=float(self.metadata["ood_threshold"]))
        self.L = int(self.pipeline.window_length)
        self.F = len(self.pipeline.features_)
        self.K = self.hmm.K
        self.symbols: list[str] = []
        self._index: dict[str, int] = {}
        self._rows = _Rows(
            np.zeros((0, self.K)), np.zeros((0, self.L, self.F)), np.zeros(0, dtype=np.int64)
        )
        self._chatter = antichatter.AntiChatterState.empty(0, self.settings.majority_window)
        self._ood = ood.OODState.empty(0, self.ood_settings.window)
        self.add_symbols(symbols)

    def add_symbols(self, symbols) -> None:
        new = [s for s in dict.fromkeys(symbols) if s not in self._index]
        if not new:
            return
        n = len(new)
        self.buffer.add_symbols(new)
        self._rows = _Rows(
            np.vstack([self._rows.log_alpha, np.full((n, self.K), np.nan)]),
            np.concatenate([self._rows.window, np.zeros((n, self.L, self.F))]),
            np.concatenate([self._rows.run, np.zeros(n, dtype=np.int64)]),
        )
        grown = antichatter.AntiChatterState.empty(n, self.settings.majority_window)
        self._chatter = antichatter.AntiChatterState(
            *(
                np.concatenate([getattr(self._chatter, f), getattr(grown, f)])
                for f in ("published", "dwell", "history", "seen")
            )
        )
        fresh = ood.OODState.empty(n, self.ood_settings.window)
        self._ood = ood.OODState(
            np.concatenate([self._ood.entropy, fresh.entropy]),
            np.concatenate([self._ood.states, fresh.states]),
            np.concatenate([self._ood.seen, fresh.seen]),
            self._ood.counters,
        )
        for symbol in new:
            self._index[symbol] = len(self.symbols)
            self.symbols.append(symbol)

    def step(self, bars: pd.DataFrame) -> pd.DataFrame:
        """One closed bar for each of a batch of symbols (columns of ``bars``: symbol, ts,
        open, high, low, close, volume, is_gap). Returns one answer per symbol."""
        features = self.buffer.update(
            bars["symbol"].tolist(),
            pd.DatetimeIndex(bars["ts"]),
            bars["open"],
            bars["high"],
            bars["low"],
            bars["close"],
            bars["volume"],
            bars["is_gap"],
        )
        self.add_symbols(bars["symbol"].tolist())
        idx = np.array([self._index[s] for s in bars["symbol"]], dtype=np.int64)
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
        if usable.any():
            scaled = self.pipeline.scaler_.transform(X[usable])
            target = idx[usable]
            rows.window[target, :-1] = rows.window[target, 1:]
            rows.window[target, -1] = scaled
            rows.run[target] += 1
        ready = usable & (rows.run[idx] >= self.L)
        n = len(idx)
        posterior = np.full((n, self.K), np.nan)
        loglik = np.full(n, np.nan)
        z = np.full((n, self.pipeline.d), np.nan)
        if ready.any():
            target = idx[ready]
            windows = rows.window[target].reshape(len(target), self.L * self.F)
            z[ready] = self.pipeline.encoder_.transform(windows)
            log_alpha, ll = filter_step(rows.log_alpha[target], z[ready], self.hmm.params_)
            rows.log_alpha[target] = log_alpha
            posterior[ready] = np.exp(log_alpha)
            loglik[ready] = ll
        # Answers: encoded bars go through anti-chatter and OOD; the rest are UNKNOWN.
        state_id = np.full(n, UNKNOWN, dtype=np.int64)
        raw = np.full(n, UNKNOWN, dtype=np.int64)
        reason = np.full(n, "", dtype=object)
        reason[~ready] = np.where(features.is_gap[~ready], "gap", "warming up")
        h = np.full(n, np.nan)
        if ready.any():
            target = idx[ready]
            published, raw_ready = antichatter.step(
                self._chatter, target, posterior[ready], self.settings
            )
            h[ready] = entropy(np.log(np.clip(posterior[ready], 1e-300, None)))
            unknown, why = ood.step(
                self._ood,
                target,
                loglik[ready],
                h[ready],
                raw_ready,
                np.zeros(len(target), dtype=bool),
                self.ood_settings,
            )
            raw[ready] = raw_ready
            settled = published >= 0
            state_id[ready] = np.where(unknown | ~settled, UNKNOWN, published)
            reason_ready = np.where(unknown, why, np.where(settled, "", "settling"))
            reason[ready] = reason_ready
        out = pd.DataFrame(
            {
                "symbol": bars["symbol"].to_numpy(),
                "ts": pd.DatetimeIndex(bars["ts"]),
                "timeframe": self.timeframe,
                "model_id": self.model_id,
                "state_id": state_id,
                "raw_state_id": raw,
                "state_prob": np.where(
                    ready, np.nanmax(np.where(ready[:, None], posterior, 0.0), axis=1), np.nan
                ),
                "loglik": loglik,
                "entropy": h,
                "is_unknown": state_id == UNKNOWN,
                "ood_reason": np.where(reason == "", None, reason),
            }
        )
        for k in range(self.pipeline.d):
            out[f"z_{k:02d}"] = z[:, k]
        for k in range(self.K):
            out[f"p_{k:02d}"] = posterior[:, k]
        return out

    # -- exact restarts

    def snapshot(self) -> dict:
        """The whole engine state (feature buffers, filter, windows, anti-chatter, OOD)."""
        return {
            "model_id": self.model_id,
            "symbols": list(self.symbols),
            "buffer": self.buffer.snapshot(),
            "log_alpha": self._rows.log_alpha.copy(),
            "window": self._rows.window.copy(),
            "run": self._rows.run.copy(),
            "chatter": self._chatter.snapshot(),
            "ood": self._ood.snapshot(),
        }

    def restore(self, state: dict) -> InferenceEngine:
        """Load :meth:`snapshot` into this engine (built from the same artifact)."""
        from regimes.errors import BadInputError

        if state["model_id"] != self.model_id:
            raise BadInputError(
                f"engine snapshot is of model {state['model_id']}, this engine runs {self.model_id}"
            )
        self.buffer = OnlineFeatureBuffer.restore(
            state["buffer"], self.config.features, self.config.timeframes.session
        )
        self.symbols = list(state["symbols"])
        self._index = {s: i for i, s in enumerate(self.symbols)}
        self._rows = _Rows(state["log_alpha"].copy(), state["window"].copy(), state["run"].copy())
        self._chatter = antichatter.AntiChatterState.restore(state["chatter"])
        self._ood = ood.OODState.restore(state["ood"])
        return self

    def save(self, path: str | Path) -> Path:
        """Write :meth:`snapshot` atomically (pickle of plain arrays and lists)."""
        import pickle

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(pickle.dumps(self.snapshot(), protocol=pickle.HIGHEST_PROTOCOL))
        partial.replace(path)
        return path

    def load(self, path: str | Path) -> InferenceEngine:
        import pickle

        return self.restore(pickle.loads(Path(path).read_bytes()))
