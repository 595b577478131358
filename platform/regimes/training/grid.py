"""The training grid: cells, their fit and evaluation over walk-forward folds, and the
selection rule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from regimes.config.loading import PlatformConfig
from regimes.errors import BadInputError, TrainingError
from regimes.model.hmm.evaluation import mean_dwell
from regimes.model.hmm.filtering import entropy, filter_sequences
from regimes.model.hmm.model import RegimeHMM
from regimes.model.pipeline import StateVectorPipeline
from regimes.model.splits import FitRange, check_fitted_before

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
    "{min_balance} and, when a champion exists, a Hungarian co-occupancy "
    "alignment cost to it <= {alignment}). Score each by held-out likelihood and "
    "persistence, as a statistical jump model does: the mean validation log-likelihood "
    "per bar minus a jump penalty of {jump} nats per dimension of z for every change of "
    "the filtered state (x d x the validation switches per bar). The highest score wins; "
    "cells within {tie} nats/bar of it are tied and the smallest K, then the lowest mean "
    "BIC per bar, then the smallest K x d wins. K may lie below the timeframe's range. "
    "If no cell is stable, the same applies to all cells and the winner is marked "
    "unstable. Test-window figures are reported, never used to select."
)
MIN_DWELL_BARS = 2.0
MIN_OCCUPANCY_BALANCE = 0.2
TIE_NATS_PER_BAR = 0.01
JUMP_PENALTY_NATS_PER_DIM = 4.0
"""The selection's price of one state change, per dimension of z (log-likelihoods of d
dimensions grow with d, and so does what a spurious state can buy)."""
BELOW_RANGE_K = (2, 3, 4)
"""K tried below the timeframe's range by default: the data may hold fewer regimes."""
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
    default_ks = {k for k in BELOW_RANGE_K if k < k_low} | {k_low, (k_low + k_high) // 2, k_high}
    ks = list(grid.get("K", sorted(default_ks)))
    # Diagonal covariances by default (the plan's advice for stability); the grid pays
    # for the K below the range with it.
    default_covariances = ["diag"] if "diag" in tf.covariance_types else tf.covariance_types[:1]
    covariances = list(grid.get("covariance", default_covariances))
    for k in ks:
        if not (isinstance(k, int) and 2 <= k <= k_high):
            raise BadInputError(
                f"grid: K={k!r} outside [2, {k_high}] (the {timeframe} range [{k_low}, "
                f"{k_high}] and below it)"
            )
    for d in ds:
        if d is not None and not (isinstance(d, int) and d_low <= d <= d_high):
            raise BadInputError(f"grid: d={d!r} outside the {timeframe} range [{d_low}, {d_high}]")
    for covariance in covariances:
        if covariance not in tf.covariance_types:
            raise BadInputError(
                f"grid: covariance {covariance!r} not among the {timeframe} covariance types "
                f"{tf.covariance_types}"
            )
    from regimes.model.pipeline import ENCODER_KINDS

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
    # The fitted (pipeline, hmm) when asked for (the last fold's: the winner's final
    # model is exactly that fit, so it is not fitted a second time).
    fitted: tuple | None = field(default=None, repr=False, compare=False)
    # The fold's test window decoded (symbol, ts, raw, published): scored, never used
    # to select.
    test_states: pd.DataFrame | None = field(default=None, repr=False, compare=False)


def switch_rate(states: np.ndarray, lengths) -> float:
    """State changes per bar within sequences (the jump rate a jump penalty charges)."""
    bounds = np.cumsum([0, *lengths])
    switches = sum(
        int(np.count_nonzero(np.diff(states[a:b])))
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    )
    return float(switches / max(len(states), 1))


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
        regime_horizon=EXPECTED_DWELL[timeframe],
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
    """The champion of the scope: its selection is preferred, and new states are
    matched to its states (Hungarian, on posterior co-occupancy)."""

    model_id: str
    pipeline: StateVectorPipeline
    hmm: RegimeHMM

    @classmethod
    def load(cls, path) -> PreviousModel:
        from regimes.model.loaded import LoadedModel

        model = LoadedModel.load(path)
        return cls(model.model_id, model.pipeline, model.hmm)

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
    from regimes.model.hmm.alignment import align_states, co_occupancy_cost

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
    keep_fit: bool = False,
) -> CellResult:
    """Score one (cell, fold): the unit of work the Ray grid fans out. With ``keep_fit``
    the result carries the fitted pipeline and HMM too."""
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
            "val_switch_rate": switch_rate(states, lengths_val),
            "occupancy_balance": occupancy_balance(states, hmm.K),
            "val_entropy": float(entropy(log_alpha).mean()),
            "val_bars": int(len(Z_val)),
        }
        if previous is not None:
            report = align_to_previous(previous, z_val, log_alpha, validation)
            metrics["alignment_cost"] = report.cost
        test_states = decode_test_window(frame, fold, pipeline, hmm, config, timeframe)
        if test_states is not None:
            metrics.update(test_metrics(test_states, hmm.K))
        metrics["seconds"] = round(_time.perf_counter() - started, 3)
        return CellResult(
            cell,
            fold.index,
            metrics,
            fitted=(pipeline, hmm) if keep_fit else None,
            test_states=test_states,
        )
    except (BadInputError, TrainingError, np.linalg.LinAlgError) as exc:
        return CellResult(cell, fold.index, error=f"{type(exc).__name__}: {exc}")


def decode_test_window(frame, fold, pipeline, hmm, config, timeframe) -> pd.DataFrame | None:
    """The fold's test window decoded by a model fitted on its training window: the
    filter runs from the validation start (as a live engine would have) and the test
    rows' raw and published (anti-chatter) states are returned; None without a test
    window."""
    from regimes.training.recovery import published_states

    if fold.test_start is None:
        return None
    window = frame[(frame["ts"] >= fold.val_start) & (frame["ts"] < fold.test_end)]
    z, Z, lengths = z_sequences(pipeline.transform(window), pipeline.d)
    if len(Z) == 0:
        return None
    log_alpha, loglik = filter_sequences(Z, lengths, hmm.params_)
    published = published_states(log_alpha, lengths, config.timeframe(timeframe).anti_chatter)
    test = (z["ts"] >= fold.test_start).to_numpy()
    out = z.loc[test, ["symbol", "ts"]].reset_index(drop=True)
    out["raw"] = log_alpha[test].argmax(axis=1).astype(np.int16)
    out["published"] = published[test].astype(np.int16)
    out["loglik"] = loglik[test]
    return out


def test_metrics(test_states: pd.DataFrame, K: int) -> dict[str, float]:
    """What a fold's test window says without truth: predictive log-likelihood per bar,
    mean dwell of the raw and the published states, occupancy balance."""
    from regimes.training.recovery import sequence_lengths

    lengths = sequence_lengths(test_states["symbol"].to_numpy())
    raw = test_states["raw"].to_numpy().astype(np.int64)
    return {
        "test_loglik_per_bar": float(test_states["loglik"].mean()),
        "test_mean_dwell": float(mean_dwell(raw, lengths)),
        "test_published_dwell": float(
            mean_dwell(test_states["published"].to_numpy().astype(np.int64), lengths)
        ),
        "test_occupancy_balance": occupancy_balance(raw, K),
        "test_bars": int(len(test_states)),
    }


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
        jump=JUMP_PENALTY_NATS_PER_DIM,
    )
    complete = summary[summary["folds_ok"] == summary["folds"]]
    if complete.empty:
        errors = "; ".join(f"{r.cell}: {r.error}" for r in summary.itertuples() if r.error)
        raise TrainingError(f"no grid cell fitted on every fold: {errors}")
    pool = (complete[complete["stable"]] if complete["stable"].any() else complete).copy()
    pool["selection_score"] = penalised_score(pool)
    best = pool["selection_score"].max()
    tied = pool[pool["selection_score"] >= best - TIE_NATS_PER_BAR].copy()
    tied["size"] = tied["K"] * tied["d"]
    winner = tied.sort_values(["K", "val_bic_per_bar", "size", "cell"]).iloc[0]
    return winner, rule


def penalised_score(summary: pd.DataFrame) -> pd.Series:
    """Validation log-likelihood per bar minus the jump penalty (see SELECTION_RULE)."""
    switches = summary["val_switch_rate"] if "val_switch_rate" in summary else 0.0
    return summary["val_loglik_per_bar"] - JUMP_PENALTY_NATS_PER_DIM * summary["d"] * switches
