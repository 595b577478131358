"""The one module that imports hmmlearn: Baum-Welch fitting and a reference decode.

Everything else talks to :func:`fit_gaussian_hmm` and :func:`decode`; the filter, the
emission densities and Viterbi of the live and backfill paths are ours
(:mod:`regimes.model.hmm.filtering`), because hmmlearn's posteriors are smoothed (they use
the future) and it has no step-by-step API.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from hmmlearn import _hmmc
from hmmlearn.hmm import GaussianHMM

logger = logging.getLogger(__name__)


class _RowScaledGaussianHMM(GaussianHMM):
    """hmmlearn's probability-space ("scaling") Baum-Welch with each row's emission
    densities divided by that row's largest one before they leave log space.

    Forward-backward posteriors and the expected transitions do not change when one
    row's emissions are multiplied by a constant (the per-step scaling factors absorb
    it), so the E-step equals the log-space one up to rounding, while a row that no
    state explains (every density below ``exp(-745)``, where plain scaling divides by
    zero) still has its best state at 1. The constants' logs are added back to the
    log-likelihood the convergence monitor sees. About twice as fast as
    ``implementation="log"`` (``compute_log_xi_sum`` and the log-sum-exps dominate it).
    """

    def _fit_scaling(self, X):
        log_frameprob = self._compute_log_likelihood(X)
        row_max = log_frameprob.max(axis=1, keepdims=True)
        frameprob = np.exp(log_frameprob - row_max)
        log_prob, fwdlattice, scaling_factors = _hmmc.forward_scaling(
            self.startprob_, self.transmat_, frameprob
        )
        bwdlattice = _hmmc.backward_scaling(
            self.startprob_, self.transmat_, frameprob, scaling_factors
        )
        posteriors = self._compute_posteriors_scaling(fwdlattice, bwdlattice)
        return frameprob, log_prob + float(row_max.sum()), posteriors, fwdlattice, bwdlattice


@dataclass(frozen=True)
class BaumWelchResult:
    startprob: np.ndarray
    transmat: np.ndarray
    means: np.ndarray
    covars: np.ndarray  # in hmmlearn's layout for the covariance type
    converged: bool
    iterations: int


def fit_gaussian_hmm(
    Z: np.ndarray,
    lengths: list[int],
    *,
    covariance_type: str,
    startprob: np.ndarray,
    transmat: np.ndarray,
    means: np.ndarray,
    covars: np.ndarray,
    transmat_prior: np.ndarray | float,
    min_covar: float,
    n_iter: int,
    tol: float,
    random_state: int,
) -> BaumWelchResult:
    """Baum-Welch from the given initial parameters (``covars`` in hmmlearn's layout)."""
    K = means.shape[0]
    model = _RowScaledGaussianHMM(
        n_components=K,
        covariance_type=covariance_type,
        min_covar=min_covar,
        transmat_prior=transmat_prior,
        n_iter=n_iter,
        tol=tol,
        params="stmc",
        init_params="",
        random_state=random_state,
        implementation="scaling",
    )
    model.startprob_ = startprob
    model.transmat_ = transmat
    model.means_ = means
    model.covars_ = covars
    model.fit(Z, lengths)
    return BaumWelchResult(
        startprob=np.asarray(model.startprob_, dtype=float),
        transmat=np.asarray(model.transmat_, dtype=float),
        means=np.asarray(model.means_, dtype=float),
        covars=np.asarray(model._covars_, dtype=float),
        # hmmlearn counts stopping at n_iter as converged; only a small last change is.
        converged=bool(
            len(model.monitor_.history) >= 2
            and abs(model.monitor_.history[-1] - model.monitor_.history[-2]) < tol
        ),
        iterations=int(model.monitor_.iter),
    )


def decode(
    Z: np.ndarray,
    startprob: np.ndarray,
    transmat: np.ndarray,
    means: np.ndarray,
    covars_full: np.ndarray,
) -> tuple[float, np.ndarray]:
    """hmmlearn's Viterbi on given parameters (a reference for tests and checks)."""
    model = GaussianHMM(n_components=means.shape[0], covariance_type="full", init_params="")
    model.startprob_ = startprob
    model.transmat_ = transmat
    model.means_ = means
    model.covars_ = covars_full
    log_prob, states = model.decode(Z, algorithm="viterbi")
    return float(log_prob), np.asarray(states)


def score_window(
    Z: np.ndarray,
    startprob: np.ndarray,
    transmat: np.ndarray,
    means: np.ndarray,
    covars_full: np.ndarray,
) -> np.ndarray:
    """hmmlearn's (smoothed) posteriors of a window: what its users are told to re-run on a
    trailing window per new bar. Used as the benchmark anchor only."""
    model = GaussianHMM(n_components=means.shape[0], covariance_type="full", init_params="")
    model.startprob_ = startprob
    model.transmat_ = transmat
    model.means_ = means
    model.covars_ = covars_full
    return model.predict_proba(Z)
