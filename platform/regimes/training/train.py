"""Training one timeframe: the grid over folds, the winner refitted on the last fold,
packaged as an artifact."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from regimes.config.loading import PlatformConfig
from regimes.errors import BadInputError
from regimes.model.hmm.evaluation import mean_dwell
from regimes.model.hmm.filtering import entropy, filter_sequences
from regimes.model.hmm.labels import state_labels, state_statistics
from regimes.model.loaded import (
    ENCODER_FILE,
    FEATURE_SPEC_FILE,
    FORMAT_VERSION,
    HMM_FILE,
    RESOLVED_CONFIG_FILE,
    SCALER_FILE,
    SEASONAL_FILE,
)
from regimes.model.pipeline import StateVectorPipeline, load_training_frame
from regimes.model.splits import walk_forward_splits
from regimes.training.grid import (
    OOD_QUANTILE,
    PreviousModel,
    align_to_previous,
    evaluate_cell,
    expand_grid,
    fit_cell,
    occupancy_balance,
    select_winner,
    summarize_grid,
    z_sequences,
)
from regimes.training.provenance import _stable, data_fingerprint, git_revision, package_versions

logger = logging.getLogger(__name__)


@dataclass
class TrainingResult:
    timeframe: str
    model_id: str
    path: str
    winner: dict
    grid: pd.DataFrame
    metadata: dict
    rule: str


def train_timeframe(
    engine,
    config: PlatformConfig,
    timeframe: str,
    models_root,
    *,
    symbols: Sequence[str] | None = None,
    grid: dict | None = None,
    seed: int = 0,
    runner=None,
    truth_accuracy=None,
    previous: PreviousModel | None = None,
) -> TrainingResult:
    """Train one timeframe's pooled model: grid x folds -> winner -> final fit -> artifact.

    ``runner(frame, tasks, config, timeframe, seed, previous, keep_fit_fold)`` evaluates
    ``(fold, cell)`` tasks (keeping the fits of fold ``keep_fit_fold``) and returns their
    :class:`CellResult`; the default runs them here, one after the other (the engines
    layer passes a Ray runner). ``truth_accuracy(test_states, K)`` optionally scores the
    winner's decoded walk-forward test windows (every fold's, each decoded by the
    fold's own fit; columns fold, symbol, ts, raw, published) against known regimes
    (synthetic data) into ``metrics["truth"]``.

    ``models_root`` is a :class:`~regimes.model.store.ModelStore` or a local models
    folder; the artifact is written locally and, for an object store, uploaded
    (``TrainingResult.path`` is then its ``s3://`` location).
    """
    from regimes.model.artifact import write_artifact
    from regimes.model.store import ModelStore
    from regimes.paths import inputs_hash, make_model_id

    frame = load_training_frame(engine, config, timeframe, symbols)
    frame, skipped = drop_short_symbols(frame)
    folds = walk_forward_splits(frame["ts"], config.timeframes.preprocessing.splits)
    cells = expand_grid(config, timeframe, grid)
    tasks = [(fold, cell) for cell in cells for fold in folds]
    last = folds[-1]
    if runner is None:
        results = [
            evaluate_cell(
                frame, fold, cell, config, timeframe, seed, previous, fold.index == last.index
            )
            for fold, cell in tasks
        ]
    else:
        results = runner(frame, tasks, config, timeframe, seed, previous, last.index)
    summary = summarize_grid(results, len(folds))
    winner, rule = select_winner(summary)
    cell = next(c for c in cells if c.key == winner["cell"])

    # Final model: the last fold's training window; its validation window calibrates the
    # OOD threshold and is where the reported metrics come from; its test window stays out.
    # The grid fitted exactly that (same cell, window, selection and seed): reuse the fit.
    fitted = next(
        (r.fitted for r in results if r.cell.key == cell.key and r.fold == last.index), None
    )
    final = _fit_final(frame, last, cell, config, timeframe, seed, previous, fitted)
    metrics = {
        **_grid_metrics(summary, winner, rule, folds),
        **final.metrics(),
        "skipped_symbols": skipped,
    }
    k_low, k_high = config.timeframe(timeframe).k_range
    if cell.n_states < k_low:
        metrics["k_note"] = (
            f"K={cell.n_states} is below the plan's {timeframe} range [{k_low}, {k_high}]: "
            "held-out likelihood and persistence favour fewer regimes in these data"
        )
        logger.info("training %s: %s", timeframe, metrics["k_note"])
    test_states = _winner_test_states(results, cell)
    metrics["test"] = _test_summary(results, cell)
    if truth_accuracy is not None and test_states is not None:
        metrics["truth"] = truth_accuracy(test_states, final.hmm.K)

    resolved = {
        "timeframe": timeframe,
        "cell": cell.key,
        "grid": [c.key for c in cells],
        "feature_spec_sha256": config.features.fingerprint(),
        "timeframe_config": config.timeframe(timeframe).model_dump(mode="json"),
        "preprocessing": config.timeframes.preprocessing.model_dump(mode="json"),
        "session": None
        if config.timeframes.session is None
        else config.timeframes.session.model_dump(mode="json"),
        "universe": sorted(frame["symbol"].unique().tolist()),
        "aligned_to": None if previous is None else previous.model_id,
    }
    # Symbols left out as too short still get their calendar: a backfill answers for them.
    markets = universe_calendars(
        engine,
        config,
        sorted([*resolved["universe"], *skipped]),
        (frame["ts"].min(), frame["ts"].max()),
    )
    if markets is not None:  # absent for the session of timeframes.yaml: ids as before
        resolved["markets"] = markets
    digest = inputs_hash(resolved, data_fingerprint(frame), seed)
    model_id = make_model_id(timeframe, last.train_end.to_pydatetime(), digest)
    files = _artifact_files(config, final.pipeline, final.hmm, resolved)
    window = {
        "start": frame.loc[last.mask(frame["ts"], "train"), "ts"].min().isoformat(),
        "end": last.train_end.isoformat(),
    }
    payload = _metadata(config, model_id, timeframe, window, cell, final, metrics, seed, files)
    store = ModelStore.of(models_root)
    path = write_artifact(store.write_root, timeframe, model_id, files, payload)
    location = store.publish(path, timeframe, model_id)
    return TrainingResult(
        timeframe, model_id, location, winner.dropna().to_dict(), summary, payload, rule
    )


def _winner_test_states(results, cell) -> pd.DataFrame | None:
    """The winner's test windows, each decoded by its own fold's fit, in fold order."""
    frames = [
        r.test_states.assign(fold=r.fold)
        for r in sorted(results, key=lambda r: r.fold)
        if r.cell.key == cell.key and r.test_states is not None
    ]
    return pd.concat(frames, ignore_index=True) if frames else None


def _test_summary(results, cell) -> dict:
    """The winner's test-window figures per fold and their mean (never used to select)."""
    folds = [
        {"fold": r.fold, **{k: v for k, v in r.metrics.items() if k.startswith("test_")}}
        for r in sorted(results, key=lambda r: r.fold)
        if r.cell.key == cell.key and r.error is None and "test_bars" in r.metrics
    ]
    if not folds:
        return {}
    keys = [k for k in folds[0] if k != "fold"]
    return {"folds": folds, "mean": {k: float(np.nanmean([f[k] for f in folds])) for k in keys}}


@dataclass
class _FinalFit:
    """The winning cell refitted on the last fold, and what its validation window says."""

    pipeline: StateVectorPipeline
    hmm: object
    z_val: pd.DataFrame
    Z_val: np.ndarray
    lengths_val: list[int]
    log_alpha: np.ndarray
    loglik: np.ndarray
    labels: dict[int, str]
    alignment: object | None
    aligned_to: str | None

    @property
    def ood_threshold(self) -> float:
        return float(np.quantile(self.loglik, OOD_QUANTILE))

    def metrics(self) -> dict:
        states = self.log_alpha.argmax(axis=1)
        scores = self.hmm.information_criteria(self.Z_val, self.lengths_val)
        return {
            "validation": {
                "loglik_per_bar": float(self.loglik.mean()),
                "bic": float(scores["bic"]),
                "aic": float(scores["aic"]),
                "mean_dwell": float(mean_dwell(states, self.lengths_val)),
                "occupancy_balance": occupancy_balance(states, self.hmm.K),
                "entropy": float(entropy(self.log_alpha).mean()),
                "bars": int(len(self.Z_val)),
            },
            "hmm_restarts": self.hmm.restarts_,
            "selected_features": self.pipeline.features_,
            "dropped_features": self.pipeline.selection_.dropped,
            "fit_ranges": self.pipeline.summary().fit_ranges,
            "alignment_to_champion": None
            if self.alignment is None
            else {"model_id": self.aligned_to, **self.alignment.as_dict()},
        }


def _fit_final(frame, last, cell, config, timeframe, seed, previous, fitted=None) -> _FinalFit:
    """``cell`` fitted on the last fold (``fitted`` when the grid kept that fit, else
    fitted here), its states aligned to the champion's (when there is one) and named, all
    on the last fold's validation window."""
    if fitted is not None:
        pipeline, hmm = fitted
    else:
        selection = previous.pipeline.features_ if previous is not None else None
        pipeline, hmm = fit_cell(frame, last, cell, config, timeframe, seed, selection)
    validation = frame.loc[last.mask(frame["ts"], "validation")]
    z_val, Z_val, lengths_val = z_sequences(pipeline.transform(validation), pipeline.d)
    log_alpha, loglik = filter_sequences(Z_val, lengths_val, hmm.params_)
    alignment = None
    if previous is not None:
        # State k of the new model means what state k of the champion meant.
        from regimes.model.hmm.alignment import relabel

        alignment = align_to_previous(previous, z_val, log_alpha, validation)
        hmm.params_ = relabel(hmm.params_, alignment.mapping)
        log_alpha, loglik = filter_sequences(Z_val, lengths_val, hmm.params_)
    labels = _labels(log_alpha.argmax(axis=1), z_val, validation, hmm.K)
    return _FinalFit(
        pipeline,
        hmm,
        z_val,
        Z_val,
        lengths_val,
        log_alpha,
        loglik,
        labels,
        alignment,
        None if previous is None else previous.model_id,
    )


def _labels(states: np.ndarray, z_val: pd.DataFrame, validation: pd.DataFrame, K: int):
    """Human names of the states from the validation bars' volatility, drift and volume."""
    rows = z_val[["symbol", "ts"]].merge(validation, on=["symbol", "ts"], how="left")
    n = len(states)
    return state_labels(
        state_statistics(
            states,
            rows["rv_15"].to_numpy() if "rv_15" in rows else np.zeros(n),
            rows["r5"].to_numpy() if "r5" in rows else np.zeros(n),
            rows["relvol_60"].to_numpy() if "relvol_60" in rows else np.ones(n),
            K,
        )
    )


def _grid_metrics(summary: pd.DataFrame, winner: pd.Series, rule: str, folds) -> dict:
    import json

    # Fit times are the machine's, not the model's: the same inputs must give the same
    # bytes, so the stored grid leaves them out (the returned summary keeps them).
    timeless = summary.drop(columns=["seconds"], errors="ignore")
    return {
        "selection_rule": rule,
        "winner": winner.drop("seconds", errors="ignore").dropna().to_dict(),
        "grid": json.loads(timeless.to_json(orient="records")),
        "folds": [f.as_dict() for f in folds],
    }


def _metadata(config, model_id, timeframe, window, cell, final, metrics, seed, files) -> dict:
    """``metadata.json`` of the artifact, validated by ``ModelMetadata``, without ``files``
    (write_artifact fills them in)."""
    import json
    import platform as _platform
    from datetime import UTC, datetime

    from regimes import __version__
    from regimes.config.metadata import ModelMetadata

    tf = config.timeframe(timeframe)
    metadata = ModelMetadata(
        format_version=FORMAT_VERSION,
        model_id=model_id,
        timeframe=timeframe,
        created_at=datetime.now(UTC),
        training_window=window,
        K=final.hmm.K,
        d=final.pipeline.d,
        covariance_type=cell.covariance_type,
        encoder=cell.encoder,
        universe=json.loads(files[RESOLVED_CONFIG_FILE])["universe"],
        feature_names=final.pipeline.features_,
        versions={
            "regimes": __version__,
            "python": _platform.python_version(),
            "packages": package_versions(),
            "git_revision": git_revision(),
            "feature_spec_version": config.features.version,
            "feature_spec_sha256": config.features.fingerprint(),
        },
        seed=seed,
        state_ttl=tf.state_ttl,
        metrics=metrics,
        ood_threshold=final.ood_threshold,
        anti_chatter=tf.anti_chatter,
        state_labels=final.labels,
        files={name: "0" * 64 for name in files},  # replaced by the real hashes
    )
    payload = json.loads(metadata.to_json())
    payload.pop("files")
    return payload


def _artifact_files(
    config: PlatformConfig, pipeline: StateVectorPipeline, hmm, resolved: dict
) -> dict[str, bytes]:
    """The artifact's files, each fitted object pickled once (see
    :class:`regimes.model.loaded.LoadedModel` for what each holds).

    Nothing here may depend on where the config or the home lives: the same inputs from
    two checkouts give the same bytes (the pipeline, whose config carries its source
    directory, is stored as its parts, never pickled whole).
    """
    import json
    import pickle
    import tempfile
    from pathlib import Path

    import yaml

    def dumped(obj) -> bytes:
        return pickle.dumps(_stable(obj), protocol=pickle.HIGHEST_PROTOCOL)

    document = {**resolved, "pipeline": pipeline.own_state()}
    files = {
        SCALER_FILE: dumped(pipeline.scaler_),
        **({} if pipeline.seasonal_ is None else {SEASONAL_FILE: dumped(pipeline.seasonal_)}),
        ENCODER_FILE: dumped(pipeline.encoder_),
        HMM_FILE: dumped(hmm),
        FEATURE_SPEC_FILE: yaml.safe_dump(
            config.features.model_dump(mode="json"), sort_keys=True
        ).encode(),
        RESOLVED_CONFIG_FILE: json.dumps(document, sort_keys=True, indent=2).encode(),
    }
    with tempfile.TemporaryDirectory() as scratch:
        onnx_path = pipeline.encoder_.export_onnx(Path(scratch) / "encoder.onnx")
        files["encoder.onnx"] = onnx_path.read_bytes()
    return files


MIN_SYMBOL_ROWS = 100


def universe_calendars(
    engine, config: PlatformConfig, universe: Sequence[str], window=None
) -> dict | None:
    """The market calendar(s) of a universe as the artifact stores them; ``None`` when
    every symbol is on the ``session`` of ``timeframes.yaml`` (the artifact's
    ``session`` then says everything). One market: its calendar; several: each
    symbol's (features are computed per symbol on its own market's day, so a pooled
    model over several markets is sound; its time axis is the union of the grids).
    With a ``window`` (first, last bar time), exchange calendars carry their schedule
    over it, so a library update does not change the model."""
    from regimes.data import sql as db
    from regimes.data.markets import (
        MarketBook,
        SymbolCalendars,
        calendars_as_dict,
        freeze_calendars,
    )

    def stored(calendar):
        return calendars_as_dict(
            calendar if window is None else freeze_calendars(calendar, *window)
        )

    book = MarketBook(config.markets, config.timeframes.session, db.read_markets(engine))
    groups = book.group(universe)
    if all(book.is_legacy(market) for market in groups):
        return None
    if len(groups) == 1:
        return stored(book.calendar(next(iter(groups))))
    calendars = {symbol: book.calendar_of(symbol) for symbol in universe}
    return stored(SymbolCalendars(calendars))


def drop_short_symbols(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Leave out symbols with fewer than :data:`MIN_SYMBOL_ROWS` usable rows (neither
    warm-up nor gap), each named in a warning and returned; refuse if none is left."""
    usable = ~(frame["is_warmup"] | frame["is_gap"])
    counts = usable.groupby(frame["symbol"]).sum()
    short = {str(s): int(n) for s, n in counts.items() if n < MIN_SYMBOL_ROWS}
    for symbol, rows in short.items():
        logger.warning(
            "training: %s left out: %d usable rows, fewer than %d", symbol, rows, MIN_SYMBOL_ROWS
        )
    if len(short) == len(counts):
        raise BadInputError(
            f"training: no symbol has {MIN_SYMBOL_ROWS} usable rows "
            f"({', '.join(f'{s}: {n}' for s, n in short.items())}); a longer history is needed"
        )
    return frame[~frame["symbol"].isin(short)].reset_index(drop=True), short
