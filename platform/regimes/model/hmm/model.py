"""The regime model: a Gaussian HMM on z_t, fitted on many sequences at once (plan 4.1-4.5).

* k-means initialisation of the means (4.2), with several restarts, the best kept by
  validation log-likelihood;
* a sticky transition matrix (4.5): diagonal 1 - 1/expected_dwell, and optionally a
  Dirichlet prior pulling Baum-Welch toward it;
* covariance regularisation (4.3): diagonal loading of the initial covariances,
  hmmlearn's covariance prior in the M-step, and an eigenvalue floor after fitting, for
  full, diag, tied or spherical covariances. A fit never
  ends with NaN parameters or a covariance that is not positive definite: degenerate data
  is either fitted with regularisation or refused with a clear error.

The estimator follows the scikit-learn contract; its fitted parameters live in
``params_`` (:class:`~regimes.model.hmm.filtering.GaussianHMMParams`), which the filter, Viterbi
and the live engine use.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from regimes.config.spec import COVARIANCE_TYPES
from regimes.errors import BadInputError, TrainingError
from regimes.model.hmm import _hmmlearn
from regimes.model.hmm.filtering import GaussianHMMParams, filter_sequences

logger = logging.getLogger(__name__)


def n_parameters(K: int, d: int, covariance_type: str) -> int:
    """Free parameters of a K-state Gaussian HMM in d dimensions (for AIC/BIC)."""
    covariance = {
        "full": K * d * (d + 1) // 2,
        "diag": K * d,
        "tied": d * (d + 1) // 2,
        "spherical": K,
    }[covariance_type]
    return (K - 1) + K * (K - 1) + K * d + covariance


def sticky_transmat(K: int, expected_dwell: float) -> np.ndarray:
    """Transition matrix with diagonal 1 - 1/expected_dwell, the rest spread evenly."""
    stay = 1.0 - 1.0 / float(expected_dwell)
    matrix = np.full((K, K), (1.0 - stay) / (K - 1))
    np.fill_diagonal(matrix, stay)
    return matrix


def check_sequences(Z, lengths: Sequence[int] | None, what: str) -> tuple[np.ndarray, list[int]]:
    Z = np.asarray(Z, dtype=np.float64)
    if Z.ndim != 2:
        raise BadInputError(f"{what}: expected z of shape (n, d), got {Z.shape}")
    bad = ~np.isfinite(Z)
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        raise BadInputError(f"{what}: z has NaN or inf at row {row}")
    lengths = [len(Z)] if lengths is None else [int(x) for x in lengths]
    if any(length <= 0 for length in lengths) or sum(lengths) != len(Z):
        raise BadInputError(
            f"{what}: sequence lengths {lengths[:5]}... must be positive and sum to {len(Z)}"
        )
    return Z, lengths


class RegimeHMM(BaseEstimator):
    """Gaussian HMM over latent state vectors, fitted from k-means with sticky transitions.

    Parameters
    ----------
    n_states : int
        K.
    covariance_type : {"diag", "full", "tied", "spherical"}
    expected_dwell : float
        Initial expected regime length in bars (sets the transition diagonal).
    transition_prior : float
        Strength (pseudo-counts per row) of a Dirichlet prior toward the sticky matrix;
        0 means none.
    diag_loading : float
        Added to every variance of the initial covariances (and passed to hmmlearn as
        ``min_covar``, which hmmlearn applies only when it initialises covariances
        itself); during Baum-Welch hmmlearn's covariance prior regularises the M-step.
    eig_floor : float
        Smallest eigenvalue a fitted covariance keeps.
    n_restarts : int
        k-means seeds tried; the best by validation log-likelihood wins.
    n_iter, tol : int, float
        Baum-Welch limits.
    random_state : int
    estimator : {"baum_welch", "jump"}
        ``baum_welch``: maximum likelihood from k-means starts. ``jump``: a statistical
        jump model (:mod:`regimes.model.hmm.jump`) finds a persistent state path, and the
        HMM is estimated from it (each state's mean and covariance, transition counts
        and the sticky transition matrix of ``expected_dwell``); no Baum-Welch, which on
        misspecified emissions trades regimes for likelihood.
    jump_penalty : float
        The jump model's penalty per state change, per dimension of z (the loss is a
        squared distance, which grows with d).
    """

    ESTIMATORS = frozenset({"baum_welch", "jump"})

    def __init__(
        self,
        n_states=6,
        covariance_type="diag",
        expected_dwell=20.0,
        transition_prior=0.0,
        diag_loading=1e-3,
        eig_floor=1e-4,
        n_restarts=3,
        n_iter=50,
        tol=1e-3,
        random_state=0,
        estimator="baum_welch",
        jump_penalty=3.0,
    ):
        self.n_states = n_states
        self.covariance_type = covariance_type
        self.expected_dwell = expected_dwell
        self.transition_prior = transition_prior
        self.diag_loading = diag_loading
        self.eig_floor = eig_floor
        self.n_restarts = n_restarts
        self.n_iter = n_iter
        self.tol = tol
        self.random_state = random_state
        self.estimator = estimator
        self.jump_penalty = jump_penalty

    # -- validation

    def _check_params(self, n_rows: int, d: int, distinct: int) -> None:
        K = self.n_states
        if not isinstance(K, int | np.integer) or not 2 <= K <= 16:
            raise BadInputError(f"n_states: expected an integer K in [2, 16], got {K!r}")
        if self.covariance_type not in COVARIANCE_TYPES:
            raise BadInputError(
                f"covariance_type: expected one of {sorted(COVARIANCE_TYPES)}, got "
                f"{self.covariance_type!r}"
            )
        if not self.expected_dwell > 1:
            raise BadInputError(f"expected_dwell: expected > 1 bar, got {self.expected_dwell!r}")
        for name in ("diag_loading", "eig_floor"):
            if not getattr(self, name) > 0:
                raise BadInputError(f"{name}: expected > 0, got {getattr(self, name)!r}")
        if self.transition_prior < 0:
            raise BadInputError(f"transition_prior: expected >= 0, got {self.transition_prior!r}")
        if self.estimator not in self.ESTIMATORS:
            raise BadInputError(
                f"estimator: expected one of {sorted(self.ESTIMATORS)}, got {self.estimator!r}"
            )
        if not self.jump_penalty >= 0:
            raise BadInputError(f"jump_penalty: expected >= 0, got {self.jump_penalty!r}")
        if not (isinstance(self.n_restarts, int | np.integer) and self.n_restarts >= 1):
            raise BadInputError(f"n_restarts: expected an integer >= 1, got {self.n_restarts!r}")
        needed = n_parameters(K, d, self.covariance_type)
        if n_rows < needed:
            raise BadInputError(
                f"HMM: {n_rows} rows cannot fit {needed} parameters (K={K}, d={d}, "
                f"{self.covariance_type} covariances); use more data, a smaller K or a "
                "simpler covariance type"
            )
        if distinct < K:
            raise BadInputError(f"HMM: only {distinct} distinct z rows for K={K} states")

    # -- fitting

    def fit(self, Z, lengths=None, Z_val=None, lengths_val=None) -> RegimeHMM:
        """Fit on sequences ``Z`` (concatenated, ``lengths`` per symbol); pick the restart
        with the best log-likelihood on ``Z_val`` (or on ``Z`` when none is given)."""
        Z, lengths = check_sequences(Z, lengths, "HMM.fit")
        distinct = len(np.unique(Z, axis=0)) if len(Z) <= 200_000 else len(Z)
        self._check_params(len(Z), Z.shape[1], distinct)
        if Z_val is not None:
            Z_val, lengths_val = check_sequences(Z_val, lengths_val, "HMM.fit validation")
        K, d = self.n_states, Z.shape[1]
        base = np.random.SeedSequence(self.random_state)
        started = time.perf_counter()
        restarts, best = [], None
        for restart, seed in enumerate(base.spawn(self.n_restarts)):
            seed_int = int(seed.generate_state(1)[0])
            try:
                fit_once = self._fit_jump if self.estimator == "jump" else self._fit_once
                params, converged, iterations, jump_loss = fit_once(Z, lengths, seed_int)
            except (np.linalg.LinAlgError, ValueError, TrainingError) as exc:
                restarts.append({"restart": restart, "error": str(exc)})
                continue
            score_Z, score_lengths = (Z_val, lengths_val) if Z_val is not None else (Z, lengths)
            loglik = float(filter_sequences(score_Z, score_lengths, params)[1].sum())
            restarts.append(
                {
                    "restart": restart,
                    "loglik": loglik,
                    "converged": converged,
                    "iterations": iterations,
                }
            )
            # The jump model's restarts compete on its own objective (the penalised loss,
            # negated), Baum-Welch's on the log-likelihood.
            objective = loglik if jump_loss is None else -jump_loss
            if jump_loss is not None:
                restarts[-1]["jump_loss"] = jump_loss
            if np.isfinite(loglik) and (best is None or objective > best[3]):
                best = (loglik, params, restart, objective)
        if best is None:
            raise TrainingError(
                f"HMM: every restart failed (K={K}, d={d}): "
                + "; ".join(r.get("error", "non-finite log-likelihood") for r in restarts)
            )
        self.params_ = best[1]
        self.restarts_ = restarts
        self.best_restart_ = best[2]
        self.score_ = best[0]
        self.n_features_in_ = d
        self.n_train_rows_ = len(Z)
        self.fit_seconds_ = time.perf_counter() - started
        return self

    def _fit_once(self, Z: np.ndarray, lengths: list[int], seed: int):
        K, d = self.n_states, Z.shape[1]
        with warnings.catch_warnings():
            # k-means on near-duplicate rows may find fewer clusters than K; the check
            # below refuses a degenerate start instead of trusting the warning.
            warnings.simplefilter("ignore", ConvergenceWarning)
            kmeans = KMeans(n_clusters=K, n_init=1, random_state=seed).fit(Z)
        labels = kmeans.labels_
        means = kmeans.cluster_centers_.astype(np.float64)
        global_var = Z.var(axis=0) + self.diag_loading
        full = np.empty((K, d, d))
        for k in range(K):
            members = Z[labels == k]
            if len(members) > d:
                full[k] = np.cov(members, rowvar=False) + np.eye(d) * self.diag_loading
            else:
                full[k] = np.diag(global_var)
        covars = _to_hmmlearn_layout(_floor_eigen(full, self.eig_floor), self.covariance_type)
        transmat = sticky_transmat(K, self.expected_dwell)
        prior = 1.0 + self.transition_prior * transmat if self.transition_prior > 0 else 1.0
        result = _hmmlearn.fit_gaussian_hmm(
            Z,
            lengths,
            covariance_type=self.covariance_type,
            startprob=np.full(K, 1.0 / K),
            transmat=transmat,
            means=means,
            covars=covars,
            transmat_prior=prior,
            min_covar=self.diag_loading,
            n_iter=self.n_iter,
            tol=self.tol,
            random_state=seed,
        )
        full_covars = _floor_eigen(
            _to_full(result.covars, self.covariance_type, K, d), self.eig_floor
        )
        startprob = _clean_distribution(result.startprob)
        transmat = np.vstack([_clean_distribution(row) for row in result.transmat])
        for name, value in (
            ("means", result.means),
            ("covars", full_covars),
            ("transmat", transmat),
        ):
            if not np.all(np.isfinite(value)):
                raise TrainingError(f"Baum-Welch produced NaN {name}")
        return (
            GaussianHMMParams(startprob, transmat, result.means, full_covars),
            result.converged,
            result.iterations,
            None,
        )

    def _fit_jump(self, Z: np.ndarray, lengths: list[int], seed: int):
        """The HMM estimated from a jump model's state path (see ``estimator``)."""
        from regimes.model.hmm.jump import fit_jump_model

        K, d = self.n_states, Z.shape[1]
        _, states, loss = fit_jump_model(Z, lengths, K, self.jump_penalty * d, seed)
        global_cov = np.cov(Z, rowvar=False).reshape(d, d)
        means, full = np.empty((K, d)), np.empty((K, d, d))
        for k in range(K):
            members = Z[states == k]
            if len(members) == 0:
                raise TrainingError(f"jump model left state {k} empty (K={K} too large)")
            means[k] = members.mean(axis=0)
            covariance = (
                np.cov(members, rowvar=False).reshape(d, d) if len(members) > d else global_cov
            )
            full[k] = covariance + np.eye(d) * self.diag_loading
        full = _floor_eigen(
            _to_full(_to_hmmlearn_layout(full, self.covariance_type), self.covariance_type, K, d),
            self.eig_floor,
        )
        # The path's own switch counts are shrunk by the penalty (it is more persistent
        # than the data by construction): the transitions are the plan's sticky matrix.
        transmat = sticky_transmat(K, self.expected_dwell)
        startprob = np.full(K, 1.0 / K)
        return GaussianHMMParams(startprob, transmat, means, full), True, 0, loss

    # -- scores

    @property
    def K(self) -> int:
        return int(self.n_states)

    def n_parameters(self) -> int:
        check_is_fitted(self, "params_")
        return n_parameters(self.K, self.params_.d, self.covariance_type)

    def loglik(self, Z, lengths=None) -> float:
        """Total log-likelihood of sequences under the fitted model (forward filter)."""
        check_is_fitted(self, "params_")
        Z, lengths = check_sequences(Z, lengths, "HMM.loglik")
        return float(filter_sequences(Z, lengths, self.params_)[1].sum())

    def information_criteria(self, Z, lengths=None) -> dict[str, float]:
        """AIC and BIC on (validation) data, with its log-likelihood and size (plan 4.4)."""
        loglik = self.loglik(Z, lengths)
        p, n = self.n_parameters(), len(Z)
        return {
            "loglik": loglik,
            "n": n,
            "parameters": p,
            "aic": -2 * loglik + 2 * p,
            "bic": -2 * loglik + p * np.log(n),
        }


def _clean_distribution(values: np.ndarray) -> np.ndarray:
    values = np.clip(np.nan_to_num(np.asarray(values, dtype=float), nan=0.0), 0.0, None)
    total = values.sum()
    if total <= 0:
        raise TrainingError("Baum-Welch produced an all-zero probability row")
    return values / total


def _floor_eigen(covars: np.ndarray, floor: float) -> np.ndarray:
    """Symmetrise and raise every eigenvalue to at least ``floor`` (positive definite)."""
    symmetric = 0.5 * (covars + np.transpose(covars, (0, 2, 1)))
    values, vectors = np.linalg.eigh(symmetric)
    values = np.maximum(values, floor)
    return np.einsum("kij,kj,klj->kil", vectors, values, vectors)


def _to_full(covars: np.ndarray, covariance_type: str, K: int, d: int) -> np.ndarray:
    if covariance_type == "full":
        return covars.copy()
    if covariance_type == "diag":
        return np.stack([np.diag(c) for c in covars])
    if covariance_type == "tied":
        return np.broadcast_to(covars, (K, d, d)).copy()
    # spherical: one variance per state (hmmlearn may hand it back repeated per dimension)
    return np.stack([np.eye(d) * c for c in np.asarray(covars).reshape(K, -1).mean(axis=1)])


def _to_hmmlearn_layout(full: np.ndarray, covariance_type: str) -> np.ndarray:
    if covariance_type == "full":
        return full
    if covariance_type == "diag":
        return np.stack([np.diag(c) for c in full])
    if covariance_type == "tied":
        return full.mean(axis=0)
    return np.array([np.trace(c) / c.shape[0] for c in full])  # spherical
