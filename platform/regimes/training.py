"""Training (plan phase 5): for one timeframe, a grid of encoder x d x K x covariance
scored on walk-forward folds, the winner by an explicit rule, refitted, packaged into a
verified artifact whose model_id derives from its inputs.

:func:`evaluate_cell` is the unit of work the engines layer fans out (one per cell and
fold); :func:`train_timeframe` runs the whole thing with any runner of those units.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from regimes.config import PlatformConfig
from regimes.errors import BadInputError, TrainingError
from regimes.hmm.evaluation import mean_dwell
from regimes.hmm.filtering import entropy, filter_sequences
from regimes.hmm.labels import state_labels, state_statistics
from regimes.hmm.model import RegimeHMM
from regimes.preprocessing import StateVectorPipeline, load_training_frame
from regimes.splits import FitRange, check_fitted_before, walk_forward_splits

logger = logging.getLogger(__name__)

# Bars a regime is expected to last at first, per timeframe (the transition diagonal's
# starting point; Baum-Welch moves it).
EXPECTED_DWELL = {"1m": 30.0, "5m": 10.0, "15m": 8.0, "1h": 20.0, "1d": 10.0}


def z_sequences(z: pd.DataFrame, d: int) -> tuple[pd.DataFrame, np.ndarray, list[int]]:
    """Rows sorted by symbol and time, the z matrix and per-symbol sequence lengths."""
    z = z.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)
    values = z[[f"z_{k:02d}" for k in range(d)]].to_numpy()
    return z, values, z.groupby("symbol", sort=False).size().tolist()


# =========================================================================== the grid
# Plan 5.1-5.6: grid search over encoder x d x K x covariance type, scored on walk-forward
# folds; the winner is refitted, packaged into a verified artifact and registered.

SELECTION_RULE = (
    "Among grid cells that fitted on every fold, keep those whose decoded regimes are "
    "stable on every fold (mean dwell >= {min_dwell} bars, occupancy balance >= "
    "{min_balance} and, when a production model exists, a Hungarian co-occupancy "
    "alignment cost to it <= {alignment}); choose the highest mean validation "
    "log-likelihood per bar; cells within {tie} nats/bar of the best are tied and the "
    "lowest mean BIC per bar among them wins, then the smallest K x d. If no cell is "
    "stable, the same ordering applies to all cells and the winner is marked unstable."
)
MIN_DWELL_BARS = 2.0
MIN_OCCUPANCY_BALANCE = 0.2
TIE_NATS_PER_BAR = 0.01
OOD_QUANTILE = 0.005


@dataclass(frozen=True)
class GridCell:
    """One grid point: encoder kind, latent dim d (None: from the variance curve), K, covariance."""

    encoder: str
    latent_dim: int | None
    n_states: int
    covariance_type: str

    @property
    def key(self) -> str:
        d = "auto" if self.latent_dim is None else str(self.latent_dim)
        return f"{self.encoder}/d={d}/K={self.n_states}/{self.covariance_type}"


def expand_grid(config: PlatformConfig, timeframe: str, grid: dict | None = None) -> list[GridCell]:
    """The grid cells of a timeframe. ``grid`` may give lists ``encoder``, ``d``, ``K`` and
    ``covariance``; by default: pca, d at the bottom of the range, K at the bottom, middle
    and top of the range, the configured covariance types. Values outside the config's
    bounds are refused."""
    tf = config.timeframe(timeframe)
    k_low, k_high = tf.k_range
    d_low, d_high = tf.latent_dim_range
    grid = dict(grid or {})
    unknown = set(grid) - {"encoder", "d", "K", "covariance"}
    if unknown:
        raise BadInputError(
            f"grid: unknown key(s) {sorted(unknown)}; use encoder, d, K, covariance"
        )
    encoders = list(grid.get("encoder", ["pca"]))
    ds = list(grid.get("d", [d_low]))
    ks = list(grid.get("K", sorted({k_low, (k_low + k_high) // 2, k_high})))
    covariances = list(grid.get("covariance", tf.covariance_types))
    for k in ks:
        if not (isinstance(k, int) and k_low <= k <= k_high):
            raise BadInputError(f"grid: K={k!r} outside the {timeframe} range [{k_low}, {k_high}]")
    for d in ds:
        if d is not None and not (isinstance(d, int) and d_low <= d <= d_high):
            raise BadInputError(f"grid: d={d!r} outside the {timeframe} range [{d_low}, {d_high}]")
    for covariance in covariances:
        if covariance not in tf.covariance_types:
            raise BadInputError(
                f"grid: covariance {covariance!r} not among the {timeframe} covariance types "
                f"{tf.covariance_types}"
            )
    from regimes.preprocessing import ENCODER_KINDS

    for encoder in encoders:
        if encoder not in ENCODER_KINDS:
            raise BadInputError(
                f"grid: encoder {encoder!r}; expected one of {sorted(ENCODER_KINDS)}"
            )
    return [GridCell(e, d, k, c) for e in encoders for d in ds for k in ks for c in covariances]


@dataclass
class CellResult:
    cell: GridCell
    fold: int
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def occupancy_balance(states: np.ndarray, K: int) -> float:
    """Normalised entropy of state occupancy: 1 = all states used equally, 0 = one state."""
    counts = np.bincount(states, minlength=K).astype(float)
    shares = counts[counts > 0] / counts.sum()
    return float(-(shares * np.log(shares)).sum() / np.log(K)) if K > 1 else 1.0


def fit_cell(
    frame: pd.DataFrame,
    fold,
    cell: GridCell,
    config: PlatformConfig,
    timeframe: str,
    seed: int,
    previous_selection: Sequence[str] | None = None,
):
    """Fit pipeline + HMM of one cell on one fold's training window (guards checked)."""
    train = frame.loc[fold.mask(frame["ts"], "train")]
    encoder_params = {"random_state": seed} if cell.encoder == "vae" else {}
    pipeline = StateVectorPipeline(
        config,
        timeframe,
        cell.encoder,
        latent_dim=cell.latent_dim,
        previous_selection=previous_selection,
        encoder_params=encoder_params,
    ).fit(train)
    pipeline.check_fold(fold)
    z_train, Z, lengths = z_sequences(pipeline.transform(train), pipeline.d)
    hmm = RegimeHMM(
        n_states=cell.n_states,
        covariance_type=cell.covariance_type,
        expected_dwell=EXPECTED_DWELL[timeframe],
        random_state=seed,
    ).fit(Z, lengths)
    check_fitted_before("hmm", FitRange.of(z_train["ts"]), fold.val_start)
    return pipeline, hmm


@dataclass(frozen=True)
class PreviousModel:
    """The timeframe's production model: its selection is preferred, and new states are
    matched to its states (Hungarian, on posterior co-occupancy)."""

    model_id: str
    pipeline: StateVectorPipeline
    hmm: RegimeHMM

    @classmethod
    def load(cls, path) -> PreviousModel:
        from regimes.artifacts import load_pickle, verify_artifact

        metadata = verify_artifact(path)
        return cls(
            metadata["model_id"],
            load_pickle(path, "pipeline.pkl", metadata),
            load_pickle(path, "hmm.pkl", metadata),
        )

    def posteriors(self, frame: pd.DataFrame) -> pd.DataFrame:
        z, Z, lengths = z_sequences(self.pipeline.transform(frame), self.pipeline.d)
        posterior = np.exp(filter_sequences(Z, lengths, self.hmm.params_)[0])
        out = z[["symbol", "ts"]].copy()
        out["posterior"] = list(posterior)
        return out


ALIGNMENT_THRESHOLD = 0.5  # mean 1 - P(old state | new state) above this: unstable


def align_to_previous(previous: PreviousModel, z_new: pd.DataFrame, log_alpha_new, validation):
    """Hungarian co-occupancy alignment of new states to the previous model's on the
    validation bars both can encode."""
    from regimes.hmm.alignment import align_states, co_occupancy_cost

    old = previous.posteriors(validation)
    new = z_new[["symbol", "ts"]].copy()
    new["row"] = np.arange(len(new))
    both = new.merge(old, on=["symbol", "ts"])
    if len(both) < 10:
        raise BadInputError("alignment: fewer than 10 bars shared with the previous model")
    posterior_new = np.exp(np.asarray(log_alpha_new)[both["row"].to_numpy()])
    posterior_old = np.vstack(both["posterior"].to_numpy())
    return align_states(
        co_occupancy_cost(posterior_new, posterior_old), "co_occupancy", ALIGNMENT_THRESHOLD
    )


def evaluate_cell(
    frame: pd.DataFrame,
    fold,
    cell: GridCell,
    config: PlatformConfig,
    timeframe: str,
    seed: int,
    previous: PreviousModel | None = None,
) -> CellResult:
    """Score one (cell, fold): the unit of work the Ray grid fans out."""
    import time as _time

    started = _time.perf_counter()
    try:
        selection = previous.pipeline.features_ if previous is not None else None
        pipeline, hmm = fit_cell(frame, fold, cell, config, timeframe, seed, selection)
        validation = frame.loc[fold.mask(frame["ts"], "validation")]
        z_val, Z_val, lengths_val = z_sequences(pipeline.transform(validation), pipeline.d)
        if len(Z_val) == 0:
            raise BadInputError("no validation bars could be encoded")
        log_alpha, loglik = filter_sequences(Z_val, lengths_val, hmm.params_)
        states = log_alpha.argmax(axis=1)
        scores = hmm.information_criteria(Z_val, lengths_val)
        metrics = {
            "d": pipeline.d,
            "val_loglik_per_bar": float(loglik.mean()),
            "val_bic_per_bar": float(scores["bic"] / scores["n"]),
            "val_aic_per_bar": float(scores["aic"] / scores["n"]),
            "mean_dwell": float(mean_dwell(states, lengths_val)),
            "occupancy_balance": occupancy_balance(states, hmm.K),
            "val_entropy": float(entropy(log_alpha).mean()),
            "val_bars": int(len(Z_val)),
        }
        if previous is not None:
            report = align_to_previous(previous, z_val, log_alpha, validation)
            metrics["alignment_cost"] = report.cost
        metrics["seconds"] = round(_time.perf_counter() - started, 3)
        return CellResult(cell, fold.index, metrics)
    except (BadInputError, TrainingError, np.linalg.LinAlgError) as exc:
        return CellResult(cell, fold.index, error=f"{type(exc).__name__}: {exc}")


def summarize_grid(results: Sequence[CellResult], folds: int) -> pd.DataFrame:
    """One row per cell: metrics averaged over folds, and whether it is stable."""
    rows = []
    for cell in dict.fromkeys(r.cell for r in results):
        mine = [r for r in results if r.cell == cell]
        ok = [r for r in mine if r.error is None]
        row = {
            "cell": cell.key,
            "encoder": cell.encoder,
            "d": cell.latent_dim,
            "K": cell.n_states,
            "covariance": cell.covariance_type,
            "folds_ok": len(ok),
            "folds": folds,
            "error": next((r.error for r in mine if r.error), None),
        }
        if ok:
            frame = pd.DataFrame([r.metrics for r in ok])
            row.update({f"{k}": float(frame[k].mean()) for k in frame.columns if k != "d"})
            row["d"] = int(frame["d"].iloc[0])
            row["stable"] = bool(
                len(ok) == folds
                and (frame["mean_dwell"] >= MIN_DWELL_BARS).all()
                and (frame["occupancy_balance"] >= MIN_OCCUPANCY_BALANCE).all()
                and (
                    "alignment_cost" not in frame
                    or (frame["alignment_cost"] <= ALIGNMENT_THRESHOLD).all()
                )
            )
        rows.append(row)
    return pd.DataFrame(rows)


def select_winner(summary: pd.DataFrame) -> tuple[pd.Series, str]:
    """Apply :data:`SELECTION_RULE`; returns the winning row and the rule as stated."""
    rule = SELECTION_RULE.format(
        min_dwell=MIN_DWELL_BARS,
        min_balance=MIN_OCCUPANCY_BALANCE,
        tie=TIE_NATS_PER_BAR,
        alignment=ALIGNMENT_THRESHOLD,
    )
    complete = summary[summary["folds_ok"] == summary["folds"]]
    if complete.empty:
        errors = "; ".join(f"{r.cell}: {r.error}" for r in summary.itertuples() if r.error)
        raise TrainingError(f"no grid cell fitted on every fold: {errors}")
    pool = complete[complete["stable"]] if complete["stable"].any() else complete
    best = pool["val_loglik_per_bar"].max()
    tied = pool[pool["val_loglik_per_bar"] >= best - TIE_NATS_PER_BAR].copy()
    tied["size"] = tied["K"] * tied["d"]
    winner = tied.sort_values(["val_bic_per_bar", "size", "cell"]).iloc[0]
    return winner, rule


# =========================================================================== packaging


def _stable(obj):
    """A copy without wall-clock attributes (``*_seconds_``), so the same inputs pickle to
    the same bytes (a model_id's content never depends on how fast the machine was)."""
    import copy

    clone = copy.copy(obj)
    for name in [n for n in vars(clone) if n.endswith("seconds_")]:
        delattr(clone, name)
    return clone


def data_fingerprint(frame: pd.DataFrame) -> str:
    """sha256 of the training frame's content (keys, features, closes, flags)."""
    from regimes.synth import content_sha256

    columns = sorted(frame.columns)
    return content_sha256(frame.sort_values(["symbol", "ts"]).reset_index(drop=True), columns)


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in (
        "numpy",
        "pandas",
        "scikit-learn",
        "scipy",
        "hmmlearn",
        "torch",
        "onnx",
        "onnxruntime",
        "pyarrow",
        "deltalake",
        "sqlalchemy",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def git_revision() -> str | None:
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


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

    ``runner(tasks)`` evaluates a list of ``(frame, fold, cell)`` tasks and returns their
    :class:`CellResult`; the default runs them here, one after the other (the engines
    layer passes a Ray runner). ``truth_accuracy(pipeline, hmm, frame)`` optionally scores
    the final model against known regimes (synthetic data) into its metrics.
    """
    import json
    import pickle
    import platform as _platform
    from datetime import UTC, datetime

    import yaml

    from regimes import __version__
    from regimes.artifacts import write_artifact
    from regimes.config import ModelMetadata
    from regimes.paths import inputs_hash, make_model_id

    frame = load_training_frame(engine, config, timeframe, symbols)
    frame, skipped = drop_short_symbols(frame)
    splits = config.timeframes.preprocessing.splits
    folds = walk_forward_splits(frame["ts"], splits)
    cells = expand_grid(config, timeframe, grid)
    tasks = [(fold, cell) for cell in cells for fold in folds]
    if runner is None:
        results = [
            evaluate_cell(frame, fold, cell, config, timeframe, seed, previous)
            for fold, cell in tasks
        ]
    else:
        results = runner(frame, tasks, config, timeframe, seed, previous)
    summary = summarize_grid(results, len(folds))
    winner, rule = select_winner(summary)
    cell = next(c for c in cells if c.key == winner["cell"])

    # Final model: the last fold's training window; its validation window calibrates the
    # OOD threshold and is where the reported metrics come from; its test window stays out.
    last = folds[-1]
    selection = previous.pipeline.features_ if previous is not None else None
    pipeline, hmm = fit_cell(frame, last, cell, config, timeframe, seed, selection)
    validation = frame.loc[last.mask(frame["ts"], "validation")]
    z_val, Z_val, lengths_val = z_sequences(pipeline.transform(validation), pipeline.d)
    log_alpha, loglik = filter_sequences(Z_val, lengths_val, hmm.params_)
    alignment = None
    if previous is not None:
        # State k of the new model means what state k of the production model meant.
        from regimes.hmm.alignment import relabel

        alignment = align_to_previous(previous, z_val, log_alpha, validation)
        hmm.params_ = relabel(hmm.params_, alignment.mapping)
        log_alpha, loglik = filter_sequences(Z_val, lengths_val, hmm.params_)
    states = log_alpha.argmax(axis=1)
    stats_rows = z_val[["symbol", "ts"]].merge(validation, on=["symbol", "ts"], how="left")
    labels = state_labels(
        state_statistics(
            states,
            stats_rows["rv_15"].to_numpy() if "rv_15" in stats_rows else np.zeros(len(states)),
            stats_rows["r5"].to_numpy() if "r5" in stats_rows else np.zeros(len(states)),
            stats_rows["relvol_60"].to_numpy()
            if "relvol_60" in stats_rows
            else np.ones(len(states)),
            hmm.K,
        )
    )
    scores = hmm.information_criteria(Z_val, lengths_val)
    metrics = {
        "selection_rule": rule,
        "winner": winner.dropna().to_dict(),
        "grid": json.loads(summary.to_json(orient="records")),
        "folds": [f.as_dict() for f in folds],
        "validation": {
            "loglik_per_bar": float(loglik.mean()),
            "bic": float(scores["bic"]),
            "aic": float(scores["aic"]),
            "mean_dwell": float(mean_dwell(states, lengths_val)),
            "occupancy_balance": occupancy_balance(states, hmm.K),
            "entropy": float(entropy(log_alpha).mean()),
            "bars": int(len(Z_val)),
        },
        "hmm_restarts": hmm.restarts_,
        "selected_features": pipeline.features_,
        "dropped_features": pipeline.selection_.dropped,
        "fit_ranges": pipeline.summary().fit_ranges,
        "skipped_symbols": skipped,
        "alignment_to_production": None
        if alignment is None
        else {"model_id": previous.model_id, **alignment.as_dict()},
    }
    if truth_accuracy is not None:
        metrics["truth"] = truth_accuracy(pipeline, hmm, frame, last)
    ood_threshold = float(np.quantile(loglik, OOD_QUANTILE))

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
    train_end = last.train_end
    digest = inputs_hash(resolved, data_fingerprint(frame), seed)
    model_id = make_model_id(timeframe, train_end.to_pydatetime(), digest)

    tf = config.timeframe(timeframe)
    encoder_bytes = pickle.dumps(_stable(pipeline.encoder_), protocol=pickle.HIGHEST_PROTOCOL)
    files = {
        "pipeline.pkl": pickle.dumps(_stable_pipeline(pipeline), protocol=pickle.HIGHEST_PROTOCOL),
        "scaler.pkl": pickle.dumps(
            {"features": pipeline.features_, "scaler": pipeline.scaler_},
            protocol=pickle.HIGHEST_PROTOCOL,
        ),
        "encoder.pkl": encoder_bytes,
        "hmm.pkl": pickle.dumps(_stable(hmm), protocol=pickle.HIGHEST_PROTOCOL),
        "feature_spec.yaml": yaml.safe_dump(
            config.features.model_dump(mode="json"), sort_keys=True
        ).encode(),
        "resolved_config.json": json.dumps(resolved, sort_keys=True, indent=2).encode(),
    }
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as scratch:
        onnx_path = pipeline.encoder_.export_onnx(Path(scratch) / "encoder.onnx")
        files["encoder.onnx"] = onnx_path.read_bytes()
    window = {
        "start": frame.loc[last.mask(frame["ts"], "train"), "ts"].min().isoformat(),
        "end": train_end.isoformat(),
    }
    metadata = ModelMetadata(
        model_id=model_id,
        timeframe=timeframe,
        created_at=datetime.now(UTC),
        training_window=window,
        K=hmm.K,
        d=pipeline.d,
        covariance_type=cell.covariance_type,
        encoder=cell.encoder,
        universe=resolved["universe"],
        feature_names=pipeline.features_,
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
        ood_threshold=ood_threshold,
        anti_chatter=tf.anti_chatter,
        state_labels=labels,
        files={name: "0" * 64 for name in files},  # replaced by the real hashes below
    )
    payload = json.loads(metadata.to_json())
    payload.pop("files")
    path = write_artifact(models_root, timeframe, model_id, files, payload)
    return TrainingResult(
        timeframe, model_id, str(path), winner.dropna().to_dict(), summary, payload, rule
    )


def _stable_pipeline(pipeline: StateVectorPipeline):
    clone = _stable(pipeline)
    clone.encoder_ = _stable(pipeline.encoder_)
    return clone


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
    from regimes.artifacts import load_pickle, verify_artifact
    from regimes.hmm.evaluation import headline_accuracy, matched_accuracy, truth_for_bars

    metadata = verify_artifact(path)
    timeframe = metadata["timeframe"]
    known = sorted(set(metadata["universe"]) & set(truth["symbol"].unique()))
    if not known:
        return {}
    pipeline = load_pickle(path, "pipeline.pkl", metadata)
    hmm = load_pickle(path, "hmm.pkl", metadata)
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


SCOPES = frozenset({"pooled", "symbol"})
MIN_SYMBOL_ROWS = 100


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


def scope_units(
    engine, timeframes: Sequence[str], symbols: Sequence[str] | None, scope: str
) -> list[tuple[str, list[str] | None]]:
    """What gets a model: one pooled model per timeframe (``pooled``, the default) over
    ``symbols`` (all with features when None), or one model per (timeframe, symbol)."""
    from regimes import db

    if scope not in SCOPES:
        raise BadInputError(f"scope: expected one of {sorted(SCOPES)}, got {scope!r}")
    if scope == "pooled":
        return [(timeframe, list(symbols) if symbols else None) for timeframe in timeframes]
    stored = db.features_summary(engine)
    units = []
    for timeframe in timeframes:
        available = sorted(stored.loc[stored["timeframe"] == timeframe, "symbol"])
        chosen = list(symbols) if symbols else available
        missing = [s for s in chosen if s not in available]
        if missing:
            raise BadInputError(f"scope symbol: no {timeframe} features for {missing}")
        units.extend((timeframe, [symbol]) for symbol in chosen)
    return units


def train_and_register(
    engine,
    config: PlatformConfig,
    home,
    models_dir,
    timeframe: str,
    *,
    symbols: Sequence[str] | None,
    grid: dict | None,
    seed: int,
    runner=None,
    actor: str,
) -> dict:
    """One training unit as the CLI and the flow run it: align to the timeframe's
    production model when there is one (pooled scope), train, register the winner as a
    candidate, and return a summary row."""
    from regimes.store import Registry

    registry = Registry.at_home(home)
    production = registry.production(timeframe) if symbols is None else None
    previous = (
        PreviousModel.load(registry.artifact_path(timeframe, production)) if production else None
    )
    result = train_timeframe(
        engine,
        config,
        timeframe,
        models_dir,
        symbols=symbols,
        grid=grid,
        seed=seed,
        runner=runner,
        previous=previous,
    )
    if registry.status(timeframe, result.model_id) is None:
        registry.transition(
            timeframe,
            result.model_id,
            "candidate",
            actor=actor,
            reason=f"grid winner {result.winner['cell']}",
            artifact_path=result.path,
        )
    validation = result.metadata["metrics"]["validation"]
    return {
        "timeframe": timeframe,
        "model_id": result.model_id,
        "path": result.path,
        "cell": result.winner["cell"],
        "K": result.metadata["K"],
        "d": result.metadata["d"],
        "covariance": result.metadata["covariance_type"],
        "val_loglik_per_bar": validation["loglik_per_bar"],
        "val_bic": validation["bic"],
        "status": registry.status(timeframe, result.model_id),
    }
