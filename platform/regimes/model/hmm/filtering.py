"""Gaussian emissions, the filtered posterior, Viterbi, predictive log-likelihood and
entropy (plan 4.6, 4.7).

The live path needs alpha_t(k) = p(s_t = k | z_1..t): a *filtered* posterior that uses
no future bar (hmmlearn's ``predict_proba`` is smoothed and does). The forward filter
here works in log space, batched over symbols: a step takes log alpha_{t-1} (N x K) and
z_t (N x d) for N symbols at once and returns log alpha_t and log p(z_t | z_1..t-1). The
sequence API runs the same step over time, so appending bars never changes the past.

The transition is done as a log-sum-exp with the max shifted out, via one matrix
product: log sum_j alpha_j A_jk = m + log sum_j exp(log alpha_j - m) A_jk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from regimes.errors import BadInputError

LOG_2PI = np.log(2.0 * np.pi)


@dataclass(frozen=True)
class GaussianHMMParams:
    """Parameters of a K-state Gaussian HMM in d dimensions, covariances in full form.

    Built once from fitted values; derived arrays (log probabilities, inverse Cholesky
    factors, log normalisers) are precomputed for the filter.
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
            chol = np.linalg.cholesky(covars)
        except np.linalg.LinAlgError:
            raise BadInputError("HMM parameters: a covariance is not positive definite") from None
        eye = np.broadcast_to(np.eye(d), (K, d, d))
        inverse = np.linalg.solve(chol, eye)  # L^{-1}, lower triangular
        logdet = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
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
        # y_k = L_k^{-1} (z - mu_k) for all k at once: z @ stacked_whiten - stacked_offset.
        stacked = np.transpose(inverse, (2, 0, 1)).reshape(d, K * d)
        offset = np.einsum("kij,kj->ki", inverse, means).reshape(1, K * d)
        # The last row multiplies the constant 1 appended to z: it subtracts W mu.
        object.__setattr__(
            self, "stacked_whiten", np.ascontiguousarray(np.vstack([stacked, -offset]))
        )
        object.__setattr__(self, "log_norm", -0.5 * (d * LOG_2PI + logdet))

    @property
    def K(self) -> int:
        return int(self.means.shape[0])

    @property
    def d(self) -> int:
        return int(self.means.shape[1])


def emission_logpdf(Z: np.ndarray, params: GaussianHMMParams) -> np.ndarray:
    """log N(z_n | mu_k, Sigma_k) for every row and state: (N, K).

    All K whitenings in one matrix product: y = [z, 1] [W^T; -(W mu)^T] with W the stacked
    inverse Cholesky factors (K*d x d), then the squared norms per state.
    """
    Z = np.asarray(Z, dtype=np.float64)
    if Z.ndim != 2 or Z.shape[1] != params.d:
        raise BadInputError(f"emission: expected z of shape (N, {params.d}), got {Z.shape}")
    augmented = np.empty((len(Z), params.d + 1))
    augmented[:, :-1] = Z
    augmented[:, -1] = 1.0
    whitened = augmented @ params.stacked_whiten  # (N, K*d): z W^T - W mu in one product
    np.square(whitened, out=whitened)
    quad = np.einsum("nkd->nk", whitened.reshape(len(Z), params.K, params.d))
    quad *= -0.5
    quad += params.log_norm
    return quad


def _row_max(values: np.ndarray) -> np.ndarray:
    """Max of each row; column by column, which is several times faster than
    ``max(axis=1)`` when rows are as short as K."""
    peak = values[:, 0].copy()
    for column in range(1, values.shape[1]):
        np.maximum(peak, values[:, column], out=peak)
    return peak


def predict_log(log_alpha: np.ndarray, params: GaussianHMMParams) -> np.ndarray:
    """log p(s_t = k | z_1..t-1) from a *normalised* log alpha_{t-1}: (N, K).

    A normalised posterior's largest entry is at least 1/K, so exp() needs no shift:
    entries that underflow to 0 are below 1e-308 of the total.
    """
    with np.errstate(divide="ignore"):
        predicted = np.exp(log_alpha) @ params.transmat
        np.log(predicted, out=predicted)
    return predicted


def filter_step(
    log_alpha_prev: np.ndarray | None,
    Z: np.ndarray,
    params: GaussianHMMParams,
    log_emission: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One bar for N symbols: (log alpha_t (N, K), log p(z_t | z_1..t-1) (N,)).

    ``log_alpha_prev`` is None (or a row of NaN) for a symbol's first bar: the prior is
    then the start distribution.
    """
    log_b = emission_logpdf(Z, params) if log_emission is None else log_emission.copy()
    N = log_b.shape[0]
    if log_alpha_prev is None:
        log_b += params.log_startprob
    else:
        log_alpha_prev = np.asarray(log_alpha_prev, dtype=np.float64)
        first = np.isnan(log_alpha_prev[:, 0])
        if first.any():
            log_alpha_prev = log_alpha_prev.copy()
            log_alpha_prev[first] = 0.0
            log_pred = predict_log(log_alpha_prev, params)
            log_pred[first] = params.log_startprob
        else:
            log_pred = predict_log(log_alpha_prev, params)
        log_b += log_pred
    # Normalise: log alpha_t = joint - logsumexp(joint), with the max shifted out.
    peak = _row_max(log_b)
    peak[~np.isfinite(peak)] = 0.0
    log_b -= peak[:, None]
    with np.errstate(divide="ignore"):
        log_total = np.log(np.exp(log_b) @ np.ones(log_b.shape[1]))
    log_b -= log_total[:, None]
    return log_b, (log_total + peak)[:N]


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
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.sum() != len(Z):
        raise BadInputError(f"filter: lengths sum to {lengths.sum()}, Z has {len(Z)} rows")
    log_b = emission_logpdf(Z, params)
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    log_alpha = np.empty((len(Z), params.K))
    loglik = np.empty(len(Z))
    state = np.full((len(lengths), params.K), np.nan)
    for t in range(int(lengths.max(initial=0))):
        active = np.flatnonzero(lengths > t)
        rows = starts[active] + t
        current, ll = filter_step(state[active], None, params, log_emission=log_b[rows])
        state[active] = current
        log_alpha[rows], loglik[rows] = current, ll
    return log_alpha, loglik


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


def entropy(log_alpha: np.ndarray) -> np.ndarray:
    """Posterior entropy in nats of each row: 0 when certain, log K when uniform."""
    probabilities = np.exp(log_alpha)
    with np.errstate(invalid="ignore"):
        terms = np.where(probabilities > 0, probabilities * log_alpha, 0.0)
    return -terms.sum(axis=1)
