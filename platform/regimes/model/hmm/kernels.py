"""The numeric kernels of the forward filter: one Gaussian emission per covariance type and
the probability-space step with per-row rescaling (plan 4.6).

:func:`regimes.model.hmm.filtering.filter_step` is the one API; it picks the emission
kernel from the fitted covariances (:func:`covariance_kind`) and runs
:func:`forward_step`. Every kernel returns log N(z_n | mu_k, Sigma_k) for all N rows and K
states from one or two small matrix products:

* ``diag`` (Sigma_k = diag(v_k)): z times a (d, K) matrix plus z^2 times another;
* ``spherical`` (Sigma_k = s_k I): the diag kernel with v_k = (s_k, ..., s_k);
* ``tied`` (one Sigma for all states): whiten once, y = L^{-1} z, then the diag kernel on
  y (means L^{-1} mu_k, unit variances);
* ``full``: all K whitenings in one product, [z, 1] times a (d + 1, K d) matrix, then
  the squared norms per state.

The expanded quadratic forms (spherical, diag, tied) lose a few digits to cancellation
next to the whitened form: the absolute error of a log density is about
eps * (|z|^2 + |mu_k|^2) / sigma_min^2, far below 1e-9 for standardised z.

**The probability-space step and its bound.** With the largest log emission of a row
shifted out (b_k = exp(log b_k - max_j log b_j), so max b = 1), the step is
alpha_t = (alpha_{t-1} A) * b / s with s the row sum, and log p(z_t | z_1..t-1) =
log s + max. Each row is rescaled to sum 1 every bar, so rounding does not accumulate
over time: the posterior agrees with the log-space recursion to a few ulps per entry.
The one loss is underflow: a product (alpha_{t-1} A)_k b_k below the smallest double
(2^-1074) becomes 0 or loses digits, an absolute error of at most 2^-1074 / s per
posterior entry. Rows whose sum s falls below :data:`TINY_ROW_SUM` (1e-200), for example
after a long run of very unlikely bars where every predicted state is far from the bar,
and rows that are not finite, are redone in log space (:func:`log_space_rows`), so the
underflow error of a row kept in probability space is below 2^-1074 / 1e-200 < 1e-123.
"""

from __future__ import annotations

import numpy as np

COVARIANCE_KINDS = ("spherical", "diag", "tied", "full")
TINY_ROW_SUM = 1e-200
# Covariances whose off-diagonal entries (or differences between states) are within this
# share of the scale count as structurally zero (or equal): exact zeros in fitted
# parameters can pick up rounding in the eigenvalue floor.
STRUCTURE_RTOL = 1e-12


def covariance_kind(covars: np.ndarray, rtol: float = STRUCTURE_RTOL) -> str:
    """The most specific covariance type (K, d, d) covariances have: spherical, diag,
    tied or full."""
    K, d, _ = covars.shape
    diagonals = np.diagonal(covars, axis1=1, axis2=2)
    scale = np.sqrt(np.abs(diagonals[:, :, None] * diagonals[:, None, :]))
    off = covars - diagonals[:, :, None] * np.eye(d)
    if np.all(np.abs(off) <= rtol * scale):
        spread = np.abs(diagonals - diagonals.mean(axis=1, keepdims=True))
        if np.all(spread <= rtol * diagonals):
            return "spherical"
        return "diag"
    if np.all(np.abs(covars - covars[0]) <= rtol * np.abs(covars[0]).max()):
        return "tied"
    return "full"


class Emission:
    """Log Gaussian densities of K states for many rows, for one covariance type.

    Parameters
    ----------
    kind : str
        One of :data:`COVARIANCE_KINDS` (see :func:`covariance_kind`).
    means : ndarray (K, d)
    covars : ndarray (K, d, d)
        Positive definite; only the part the kind uses is read (the diagonal for diag,
        its mean for spherical, the mean over states for tied).
    """

    def __init__(self, kind: str, means: np.ndarray, covars: np.ndarray):
        if kind not in COVARIANCE_KINDS:
            raise ValueError(f"covariance kind must be one of {COVARIANCE_KINDS}, got {kind!r}")
        self.kind = kind
        K, d = means.shape
        self.K, self.d = K, d
        builder = getattr(self, f"_build_{kind}")
        builder(means, covars)

    # -- precomputation, once per model

    def _build_spherical(self, means, covars):
        variance = np.diagonal(covars, axis1=1, axis2=2).mean(axis=1)  # (K,)
        self._build_diag(means, np.broadcast_to(variance[:, None], (self.K, self.d)))

    def _build_diag(self, means, covars):
        variance = covars if covars.ndim == 2 else np.diagonal(covars, axis1=1, axis2=2)
        # log b_k = z . (mu_k / v_k) + z^2 . (-1 / (2 v_k)) + constant_k
        self.linear = np.ascontiguousarray((means / variance).T)  # (d, K)
        self.square = np.ascontiguousarray((-0.5 / variance).T)  # (d, K)
        self.constant = -0.5 * (
            self.d * np.log(2 * np.pi)
            + np.log(variance).sum(axis=1)
            + (means**2 / variance).sum(axis=1)
        )

    def _build_tied(self, means, covars):
        shared = covars.mean(axis=0)
        chol = np.linalg.cholesky(shared)
        inverse = np.linalg.solve(chol, np.eye(self.d))  # L^{-1}
        self.whiten = np.ascontiguousarray(inverse.T)  # z @ L^{-T} = (L^{-1} z)^T
        centres = means @ inverse.T  # nu_k = L^{-1} mu_k
        # log b_k = y . nu_k - |y|^2 / 2 + constant_k, y = L^{-1} z
        self.linear = np.ascontiguousarray(centres.T)
        self.square = np.full((self.d, self.K), -0.5)
        logdet = 2.0 * np.log(np.diagonal(chol)).sum()
        self.constant = -0.5 * (self.d * np.log(2 * np.pi) + logdet + (centres**2).sum(axis=1))

    def _build_full(self, means, covars):
        K, d = self.K, self.d
        chol = np.linalg.cholesky(covars)
        inverse = np.linalg.solve(chol, np.broadcast_to(np.eye(d), (K, d, d)))
        logdet = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
        stacked = np.transpose(inverse, (2, 0, 1)).reshape(d, K * d)
        offset = np.einsum("kij,kj->ki", inverse, means).reshape(1, K * d)
        # The last row multiplies the constant 1 appended to z: it subtracts L^{-1} mu.
        self.weights = np.ascontiguousarray(np.vstack([stacked, -offset]))
        self.constant = -0.5 * (d * np.log(2 * np.pi) + logdet)

    # -- the kernels

    def __call__(self, Z: np.ndarray) -> np.ndarray:
        """log N(z_n | mu_k, Sigma_k): (N, K), for (N, d) float64 ``Z``."""
        return getattr(self, f"_{self.kind}")(Z)

    def _spherical(self, Z):
        return self._diag(Z)

    def _diag(self, Z):
        # Two (N, d) x (d, K) products: faster than one product of [z, z^2].
        log_b = Z @ self.linear
        log_b += np.square(Z) @ self.square
        log_b += self.constant
        return log_b

    def _tied(self, Z):
        return self._diag(Z @ self.whiten)

    def _full(self, Z):
        N, K, d = len(Z), self.K, self.d
        augmented = np.empty((N, d + 1))
        augmented[:, :-1] = Z
        augmented[:, -1] = 1.0
        whitened = augmented @ self.weights  # (N, K*d)
        np.square(whitened, out=whitened)
        log_b = np.einsum("nkd->nk", whitened.reshape(N, K, d))
        log_b *= -0.5
        log_b += self.constant
        return log_b


def row_max(values: np.ndarray) -> np.ndarray:
    """Max of each row; column by column, which is several times faster than
    ``max(axis=1)`` when rows are as short as K."""
    peak = values[:, 0].copy()
    for column in range(1, values.shape[1]):
        np.maximum(peak, values[:, column], out=peak)
    return peak


def probability_step(
    predicted: np.ndarray, log_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The probability-space step: (alpha_t, log p(z_t | past), rows to redo).

    ``predicted`` is p(s_t = k | z_1..t-1) (N, K), ``log_b`` the log emissions (N, K),
    left as they are. Rows flagged in the third output (sum below :data:`TINY_ROW_SUM` or
    not finite) must be redone with :func:`log_space_rows`.
    """
    peak = row_max(log_b)
    alpha = log_b - peak[:, None]
    np.exp(alpha, out=alpha)
    alpha *= predicted
    total = alpha @ np.ones(alpha.shape[1])  # a product: sum(axis=1) is slow on short rows
    # A row that underflowed to 0 gives NaN here; it is flagged and redone by the caller.
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha /= total[:, None]
        loglik = np.log(total)
    loglik += peak
    redo = ~(total >= TINY_ROW_SUM)
    return alpha, loglik, redo


def forward_step(
    predicted: np.ndarray, log_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`probability_step` with log alpha_t as its first output."""
    alpha, loglik, redo = probability_step(predicted, log_b)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.log(alpha, out=alpha)
    return alpha, loglik, redo


def log_space_rows(log_predicted: np.ndarray, log_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same step in log space for rows that would underflow: (log alpha_t, loglik).

    log alpha_t = log pred + log b - logsumexp(log pred + log b), the max shifted out.
    """
    joint = log_predicted + log_b
    peak = row_max(joint)
    peak[~np.isfinite(peak)] = 0.0
    joint -= peak[:, None]
    with np.errstate(divide="ignore"):
        log_total = np.log(np.exp(joint).sum(axis=1))
    joint -= log_total[:, None]
    return joint, log_total + peak
