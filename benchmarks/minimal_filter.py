"""The limit anchor of the filter step: a minimal forward step per covariance type.

A few lines of numpy each, written for speed and nothing else: the state is alpha in
probability space (no log in, no log out), no validation, no NaN rows, no underflow
check. Emission as the project computes it for that type (two small products for
spherical / diag / tied, one whitening product for full), one product for the
prediction, per-row rescaling. The parameters are turned into these matrices once,
outside the timing. ``benchmarks/bench_hmm.py`` times ``filter_step`` against it in the
same run and reports the project's kernel as a share of it.
"""

from __future__ import annotations

import numpy as np


def minimal_step(kind: str, startprob, transmat, means, covars):
    """(first(z) -> (alpha, loglik), step(alpha, z) -> (alpha, loglik)) for ``kind``."""
    K, d = means.shape
    ones = np.ones(K)
    A = np.ascontiguousarray(transmat)
    if kind == "full":
        inverse = np.linalg.inv(np.linalg.cholesky(covars))
        weights = np.vstack(
            [
                np.transpose(inverse, (2, 0, 1)).reshape(d, K * d),
                -np.einsum("kij,kj->ki", inverse, means).reshape(1, K * d),
            ]
        )
        logdet = 2 * np.log(np.diagonal(np.linalg.cholesky(covars), axis1=1, axis2=2)).sum(1)
        constant = -0.5 * (d * np.log(2 * np.pi) + logdet)

        def emission(z):
            augmented = np.empty((len(z), d + 1))
            augmented[:, :d] = z
            augmented[:, d] = 1.0
            y = augmented @ weights
            np.square(y, out=y)
            return -0.5 * np.einsum("nkd->nk", y.reshape(len(z), K, d)) + constant

    else:
        if kind == "tied":
            inverse = np.linalg.inv(np.linalg.cholesky(covars[0]))
            whiten = inverse.T
            centres, variance = means @ inverse.T, np.ones((K, d))
            logdet = 2 * np.log(np.diag(np.linalg.cholesky(covars[0]))).sum()
        else:
            whiten = None
            centres, variance = means, np.diagonal(covars, axis1=1, axis2=2).copy()
            logdet = np.log(variance).sum(1)
        linear = np.ascontiguousarray((centres / variance).T)
        square = np.ascontiguousarray((-0.5 / variance).T)
        constant = -0.5 * (d * np.log(2 * np.pi) + logdet + (centres**2 / variance).sum(1))

        def emission(z):
            if whiten is not None:
                z = z @ whiten
            return z @ linear + np.square(z) @ square + constant

    def update(predicted, z):
        log_b = emission(z)
        peak = log_b[:, 0].copy()
        for k in range(1, K):
            np.maximum(peak, log_b[:, k], out=peak)
        alpha = np.exp(log_b - peak[:, None])
        alpha *= predicted
        total = alpha @ ones
        alpha /= total[:, None]
        return alpha, np.log(total) + peak

    def first(z):
        return update(startprob, z)

    def step(alpha, z):
        return update(alpha @ A, z)

    return first, step
