"""Gaussian emissions, the filtered posterior, Viterbi, predictive log-likelihood and
entropy (plan 4.6, 4.7).

The live path needs alpha_t(k) = p(s_t = k | z_1..t): a *filtered* posterior that uses
no future bar (hmmlearn's ``predict_proba`` is smoothed and does). The forward filter is
batched over symbols: a step takes log alpha_{t-1} (N x K) and z_t (N x d) for N symbols
at once and returns log alpha_t and log p(z_t | z_1..t-1). The sequence API runs the
same step over time, so appending bars never changes the past.

Inside a step (:mod:`regimes.model.hmm.kernels`) the emission kernel is chosen once per
model from the fitted covariances (spherical, diag, tied or full), and the recursion
runs in probability space with per-row rescaling: predicted = alpha_{t-1} A, then
alpha_t = predicted * exp(log b - max log b) / row sum. Rows whose sum underflows (below
1e-200) are redone in log space, so every row keeps full precision; the bound is in the
kernels' docstring and ``docs/inference.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from regimes.errors import BadInputError
from regimes.model.hmm.kernels import (
    Emission,
    covariance_kind,
    forward_step,
    log_space_rows,
    probability_step,
)

LOG_2PI = np.log(2.0 * np.pi)


@dataclass(frozen=True)
class GaussianHMMParams:
    """Parameters of a K-state Gaussian HMM in d dimensions, covariances in full form.

    Built once from fitted values; derived arrays (log probabilities and the emission
    kernel of the covariances' type, ``covariance_kind``: spherical, diag, tied or full)
    are precomputed for the filter.
    """

    startprob: np.ndarray
    transmat: np.ndarray
    means: np.ndarray
    covars: np.ndarray

    def __post_init__(self):
        startprob = np.asarray(self.startprob, dtype=np.float64)
        transmat = np.asarray(self.transmat, dtype=np.float64)
        means = np.asarray(self.means, dtype=np.float64)
        covars = np.asarray(self.covars, dtype=np.float64)
        K, d = means.shape
        if startprob.shape != (K,) or transmat.shape != (K, K) or covars.shape != (K, d, d):
            raise BadInputError(
                f"HMM parameters: shapes startprob {startprob.shape}, transmat {transmat.shape}, "
                f"means {means.shape}, covars {covars.shape} do not fit K={K}, d={d}"
            )
        for name, value in (
            ("startprob", startprob),
            ("transmat", transmat),
            ("means", means),
            ("covars", covars),
        ):
            if not np.all(np.isfinite(value)):
                raise BadInputError(f"HMM parameters: {name} contains NaN or inf")
        if abs(startprob.sum() - 1) > 1e-8 or np.any(np.abs(transmat.sum(axis=1) - 1) > 1e-8):
            raise BadInputError("HMM parameters: startprob and transmat rows must sum to 1")
        try:
            np.linalg.cholesky(covars)
        except np.linalg.LinAlgError:
            raise BadInputError("HMM parameters: a covariance is not positive definite") from None
        for name, value in (
            ("startprob", startprob),
            ("transmat", transmat),
            ("means", means),
            ("covars", covars),
        ):
            value.setflags(write=False)
            object.__setattr__(self, name, value)
        with np.errstate(divide="ignore"):
            object.__setattr__(self, "log_startprob", np.log(startprob))
            object.__setattr__(self, "log_transmat", np.log(transmat))
        kind = covariance_kind(covars)
        object.__setattr__(self, "covariance_kind", kind)
        object.__setattr__(self, "emission", Emission(kind, means, covars))

    def __reduce__(self):
        # Pickles hold the four fitted arrays only; the kernels are rebuilt at load.
        return type(self), (self.startprob, self.transmat, self.means, self.covars)

    def __setstate__(self, state: dict) -> None:
        # Pickles written before the kernels existed hold the instance dict: rebuild.
        self.__init__(state["startprob"], state["transmat"], state["means"], state["covars"])

    @property
    def K(self) -> int:
        return int(self.means.shape[0])

    @property
    def d(self) -> int:
        return int(self.means.shape[1])


def emission_logpdf(Z: np.ndarray, params: GaussianHMMParams) -> np.ndarray:
    """log N(z_n | mu_k, Sigma_k) for every row and state: (N, K).

    One or two small matrix products, by the kernel of the covariances' type
    (:class:`regimes.model.hmm.kernels.Emission`).
    """
    Z = np.asarray(Z, dtype=np.float64)
    if Z.ndim != 2 or Z.shape[1] != params.d:
        raise BadInputError(f"emission: expected z of shape (N, {params.d}), got {Z.shape}")
    return params.emission(Z)


def predict(log_alpha: np.ndarray, params: GaussianHMMParams) -> np.ndarray:
    """p(s_t = k | z_1..t-1) from a *normalised* log alpha_{t-1}: (N, K).

    A normalised posterior's largest entry is at least 1/K, so exp() needs no shift:
    entries that underflow to 0 are below 1e-308 of the total.
    """
    return np.exp(log_alpha) @ params.transmat


def predict_log(log_alpha: np.ndarray, params: GaussianHMMParams) -> np.ndarray:
    """log p(s_t = k | z_1..t-1) from a *normalised* log alpha_{t-1}: (N, K)."""
    with np.errstate(divide="ignore"):
        return np.log(predict(log_alpha, params))


def filter_step(
    log_alpha_prev: np.ndarray | None,
    Z: np.ndarray,
    params: GaussianHMMParams,
    log_emission: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One bar for N symbols: (log alpha_t (N, K), log p(z_t | z_1..t-1) (N,)).

    ``log_alpha_prev`` is None (or a row of NaN) for a symbol's first bar: the prior is
    then the start distribution. The step runs in probability space with per-row
    rescaling; a row whose sum underflows is redone in log space
    (:mod:`regimes.model.hmm.kernels`).
    """
    log_b = emission_logpdf(Z, params) if log_emission is None else log_emission
    predicted = _predicted(log_alpha_prev, log_b.shape[0], params, predict)
    log_alpha, loglik, redo = forward_step(predicted, log_b)
    if redo.any():
        with np.errstate(divide="ignore"):
            log_predicted = np.log(predicted[redo])
        log_alpha[redo], loglik[redo] = log_space_rows(log_predicted, log_b[redo])
    return log_alpha, loglik


def _propagate(posterior: np.ndarray, params: GaussianHMMParams) -> np.ndarray:
    """p(s_t = k | z_1..t-1) from alpha_{t-1} in probability space: (N, K)."""
    return posterior @ params.transmat


def _predicted(previous, N: int, params: GaussianHMMParams, propagate) -> np.ndarray:
    """The prediction of a step from the previous filter state (None, or rows of NaN for a
    symbol's first bar: the start distribution); ``propagate(state, params)`` is
    :func:`predict` for log alpha, :func:`_propagate` for alpha."""
    if previous is None:
        return np.broadcast_to(params.startprob, (N, params.K))
    previous = np.asarray(previous, dtype=np.float64)
    first = np.isnan(previous[:, 0])
    if not first.any():
        return propagate(previous, params)
    previous = previous.copy()
    previous[first] = 0.0
    predicted = propagate(previous, params)
    predicted[first] = params.startprob
    return predicted


def posterior_step(
    posterior_prev: np.ndarray | None,
    Z: np.ndarray,
    params: GaussianHMMParams,
    log_emission: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`filter_step` with the state in probability space: (alpha_t (N, K),
    log p(z_t | z_1..t-1) (N,)) from alpha_{t-1} (None, or a row of NaN, for a symbol's
    first bar). The live engine's kernel.

    The same recursion with no log in and no log out: the filtered posterior is what the
    answers publish, and exp/log over every entry are the dearest part of a step where
    numpy's float64 exp and log are not vectorised (CPUs without AVX-512). A normalised
    alpha's largest entry is at least 1/K, so nothing is lost keeping it in probability
    space: an entry that would underflow to 0 here is below 1e-308 of its row, and
    :func:`predict` turns such log entries into 0 all the same. Rows that underflow are
    redone in log space as in :func:`filter_step`.
    """
    log_b = emission_logpdf(Z, params) if log_emission is None else log_emission
    predicted = _predicted(posterior_prev, log_b.shape[0], params, _propagate)
    alpha, loglik, redo = probability_step(predicted, log_b)
    if redo.any():
        with np.errstate(divide="ignore"):
            log_predicted = np.log(predicted[redo])
        log_alpha, loglik[redo] = log_space_rows(log_predicted, log_b[redo])
        alpha[redo] = np.exp(log_alpha)
    return alpha, loglik


def posterior_sequences(
    Z: np.ndarray, lengths: Sequence[int], params: GaussianHMMParams
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`filter_sequences` in probability space: filtered posteriors (rows of Z, K)
    and predictive log-likelihoods, by the very steps the live engine takes
    (:func:`posterior_step`), so a replay equals the live answers bit for bit."""
    return _sequences(posterior_step, Z, lengths, params)


def filter_sequence(
    Z: np.ndarray, params: GaussianHMMParams, log_alpha0: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Filtered log posteriors (T, K) and predictive log-likelihoods (T,) of one sequence.

    ``log_alpha0`` continues from an earlier posterior (the state before the first row).
    """
    log_b = emission_logpdf(Z, params)
    T = log_b.shape[0]
    log_alpha = np.empty((T, params.K))
    loglik = np.empty(T)
    previous = None if log_alpha0 is None else np.asarray(log_alpha0, dtype=float)[None, :]
    for t in range(T):
        current, ll = filter_step(previous, None, params, log_emission=log_b[t : t + 1])
        log_alpha[t], loglik[t] = current[0], ll[0]
        previous = current
    return log_alpha, loglik


def filter_sequences(
    Z: np.ndarray, lengths: Sequence[int], params: GaussianHMMParams
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`filter_sequence` for many sequences at once (concatenated rows, ``lengths``),
    advancing all of them together one time index at a time."""
    return _sequences(filter_step, Z, lengths, params)


def _sequences(step, Z, lengths, params):
    """Run ``step`` over many concatenated sequences, all advancing one time index at a
    time: (state after each row (rows of Z, K), predictive log-likelihoods)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.sum() != len(Z):
        raise BadInputError(f"filter: lengths sum to {lengths.sum()}, Z has {len(Z)} rows")
    log_b = emission_logpdf(Z, params)
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    states = np.empty((len(Z), params.K))
    loglik = np.empty(len(Z))
    state = np.full((len(lengths), params.K), np.nan)
    for t in range(int(lengths.max(initial=0))):
        active = np.flatnonzero(lengths > t)
        rows = starts[active] + t
        current, ll = step(state[active], None, params, log_emission=log_b[rows])
        state[active] = current
        states[rows], loglik[rows] = current, ll
    return states, loglik


def viterbi(Z: np.ndarray, params: GaussianHMMParams) -> tuple[float, np.ndarray]:
    """Most likely state path of one sequence (offline and backtests): (log p, states)."""
    log_b = emission_logpdf(Z, params)
    T, K = log_b.shape
    if T == 0:
        return 0.0, np.empty(0, dtype=np.int64)
    back = np.empty((T, K), dtype=np.int64)
    delta = params.log_startprob + log_b[0]
    for t in range(1, T):
        scores = delta[:, None] + params.log_transmat
        back[t] = np.argmax(scores, axis=0)
        delta = scores[back[t], np.arange(K)] + log_b[t]
    states = np.empty(T, dtype=np.int64)
    states[-1] = int(np.argmax(delta))
    for t in range(T - 1, 0, -1):
        states[t - 1] = back[t, states[t]]
    return float(delta.max()), states


def viterbi_sequences(
    Z: np.ndarray, lengths: Sequence[int], params: GaussianHMMParams
) -> np.ndarray:
    out, start = [], 0
    for length in lengths:
        out.append(viterbi(Z[start : start + length], params)[1])
        start += length
    return np.concatenate(out) if out else np.empty(0, dtype=np.int64)


def posterior_entropy(posterior: np.ndarray) -> np.ndarray:
    """:func:`entropy` of posteriors in probability space (0 log 0 = 0): one log pass."""
    log_p = np.zeros_like(posterior)
    np.log(posterior, out=log_p, where=posterior > 0)
    log_p *= posterior
    return -(log_p @ np.ones(posterior.shape[1]))  # a product: sum(axis=1) is slow on short rows


def entropy(log_alpha: np.ndarray) -> np.ndarray:
    """Posterior entropy in nats of each row: 0 when certain, log K when uniform."""
    probabilities = np.exp(log_alpha)
    with np.errstate(invalid="ignore"):
        terms = np.where(probabilities > 0, probabilities * log_alpha, 0.0)
    return -terms.sum(axis=1)
