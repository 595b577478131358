"""The filter's per-covariance kernels: chosen from the fitted covariances, in agreement
(<= 1e-9) with the log-space forward filter the project used before them, on random
models of every covariance type and on S&P 500 daily — both forms of the step, log alpha
in and out (``filter_step``) and alpha in probability space (``posterior_step``, the live
engine's); rows that would underflow in probability space are redone in log space."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from regimes.model.hmm.filtering import (
    GaussianHMMParams,
    emission_logpdf,
    filter_sequence,
    filter_sequences,
    filter_step,
    posterior_sequences,
    posterior_step,
)
from regimes.model.hmm.kernels import COVARIANCE_KINDS, forward_step
from regimes.model.hmm.model import RegimeHMM, sticky_transmat

pytestmark = pytest.mark.unit


# -- the reference: the log-space filter as it was before the kernels (whitening as full)


def _reference_emission(Z, params):
    K, d = params.means.shape
    chol = np.linalg.cholesky(params.covars)
    inverse = np.linalg.solve(chol, np.broadcast_to(np.eye(d), (K, d, d)))
    logdet = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
    whitened = np.einsum("kij,nj->nki", inverse, Z) - np.einsum("kij,kj->ki", inverse, params.means)
    return -0.5 * (np.square(whitened).sum(axis=2) + d * np.log(2 * np.pi) + logdet)


def _reference_filter(Z, params, lengths=None):
    """Log space throughout: log pred = log(exp(log alpha) A), logsumexp normalisation."""
    lengths = [len(Z)] if lengths is None else lengths
    log_b = _reference_emission(np.asarray(Z, dtype=float), params)
    log_alpha, loglik = np.empty_like(log_b), np.empty(len(Z))
    start = 0
    for length in lengths:
        previous = None
        for t in range(start, start + length):
            with np.errstate(divide="ignore"):
                if previous is None:
                    log_pred = params.log_startprob
                else:
                    log_pred = np.log(np.exp(previous) @ params.transmat)
            joint = log_pred + log_b[t]
            peak = joint.max() if np.isfinite(joint.max()) else 0.0
            with np.errstate(divide="ignore"):
                total = np.log(np.exp(joint - peak).sum())
            log_alpha[t], loglik[t] = joint - peak - total, total + peak
            previous = log_alpha[t]
        start += length
    return log_alpha, loglik


def _agreement(Z, params, lengths=None):
    """Largest posterior and (relative) predictive log-likelihood differences, over both
    forms of the step."""
    if lengths is None:
        ours, ours_ll = filter_sequence(Z, params)
    else:
        ours, ours_ll = filter_sequences(Z, lengths, params)
    alpha, alpha_ll = posterior_sequences(Z, [len(Z)] if lengths is None else lengths, params)
    reference, reference_ll = _reference_filter(Z, params, lengths)
    scale = np.maximum(1.0, np.abs(reference_ll))
    posterior = max(
        np.abs(np.exp(ours) - np.exp(reference)).max(), np.abs(alpha - np.exp(reference)).max()
    )
    loglik = max(
        (np.abs(ours_ll - reference_ll) / scale).max(),
        (np.abs(alpha_ll - reference_ll) / scale).max(),
    )
    return posterior, loglik


def _random_params(kind: str, K: int, d: int, seed: int) -> GaussianHMMParams:
    rng = np.random.default_rng(seed)
    if kind == "full":
        factors = rng.normal(scale=0.5, size=(K, d, d))
        covars = factors @ np.transpose(factors, (0, 2, 1)) + 0.3 * np.eye(d)
    elif kind == "tied":
        factor = rng.normal(scale=0.5, size=(d, d))
        covars = np.broadcast_to(factor @ factor.T + 0.3 * np.eye(d), (K, d, d))
    elif kind == "diag":
        covars = np.stack([np.diag(v) for v in rng.uniform(0.2, 3.0, size=(K, d))])
    else:
        covars = np.stack([np.eye(d) * v for v in rng.uniform(0.2, 3.0, size=K)])
    transmat = sticky_transmat(K, 15.0) + rng.uniform(0.0, 0.02, size=(K, K))
    transmat /= transmat.sum(axis=1, keepdims=True)
    return GaussianHMMParams(
        np.full(K, 1.0 / K), transmat, rng.normal(scale=2.0, size=(K, d)), covars
    )


@pytest.mark.parametrize("kind", COVARIANCE_KINDS)
def test_each_covariance_kind_gets_its_kernel_and_agrees_with_the_log_space_filter(kind):
    params = _random_params(kind, K=5, d=4, seed=3)
    assert params.covariance_kind == kind
    rng = np.random.default_rng(4)
    Z = rng.normal(scale=2.0, size=(700, 4))
    Z[::50] *= 8.0  # outlying bars: very unlikely under every state
    assert np.abs(emission_logpdf(Z, params) - _reference_emission(Z, params)).max() <= 1e-9
    posterior, loglik = _agreement(Z, params, [300, 400])
    assert posterior <= 1e-9 and loglik <= 1e-9


def test_kernels_survive_a_pickle_and_old_pickles_are_rebuilt():
    params = _random_params("diag", K=3, d=2, seed=5)
    again = pickle.loads(pickle.dumps(params))
    assert again.covariance_kind == "diag"
    Z = np.random.default_rng(6).normal(size=(20, 2))
    np.testing.assert_array_equal(filter_sequence(Z, again)[0], filter_sequence(Z, params)[0])
    # An artifact pickled before the kernels existed holds only the instance dict.
    old = object.__new__(GaussianHMMParams)
    old.__setstate__({k: getattr(params, k) for k in ("startprob", "transmat", "means", "covars")})
    np.testing.assert_array_equal(filter_sequence(Z, old)[0], filter_sequence(Z, params)[0])


def test_a_row_that_underflows_in_probability_space_is_redone_in_log_space():
    # State 2 sits far out and is unreachable (its column of A is zero but for itself),
    # so after a long run of bars near it every reachable state's p(z | s) is below
    # exp(-1000): alpha_{t-1} A times exp(log b - max) underflows to 0 in every entry.
    transmat = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.0, 0.0, 1.0]])
    params = GaussianHMMParams(
        np.array([0.5, 0.5, 0.0]),
        transmat,
        np.array([[0.0], [3.0], [60.0]]),
        np.ones((3, 1, 1)),
    )
    Z = np.r_[np.zeros(5), np.full(30, 60.0), np.zeros(5)][:, None]
    log_alpha, loglik = filter_sequence(Z, params)
    reference, reference_ll = _reference_filter(Z, params)
    assert np.all(np.isfinite(loglik)) and np.allclose(np.exp(log_alpha).sum(axis=1), 1.0)
    assert np.abs(np.exp(log_alpha) - np.exp(reference)).max() <= 1e-9
    assert (np.abs(loglik - reference_ll) / np.abs(reference_ll)).max() <= 1e-9
    assert loglik[5:35].max() < -1000  # the run of very unlikely bars
    # Probability space alone would have lost those rows: the step flags them for redo.
    previous = log_alpha[4:5]
    predicted = np.exp(previous) @ params.transmat
    alpha, _, redo = forward_step(predicted, emission_logpdf(Z[5:6], params))
    assert redo.all() and not np.isfinite(alpha).all()
    stepped, _ = filter_step(previous, Z[5:6], params)
    np.testing.assert_allclose(np.exp(stepped), np.exp(log_alpha[5:6]), atol=1e-12)
    # The live form (alpha in probability space) redoes the same rows the same way.
    alpha, alpha_ll = posterior_sequences(Z, [len(Z)], params)
    assert np.all(np.isfinite(alpha)) and np.allclose(alpha.sum(axis=1), 1.0)
    assert np.abs(alpha - np.exp(reference)).max() <= 1e-9
    assert (np.abs(alpha_ll - reference_ll) / np.abs(reference_ll)).max() <= 1e-9
    stepped, _ = posterior_step(alpha[4:5], Z[5:6], params)
    np.testing.assert_allclose(stepped, alpha[5:6], atol=1e-12)


def test_the_live_step_takes_a_first_bar_per_row_and_equals_its_sequence_form():
    params = _random_params("diag", K=4, d=3, seed=8)
    Z = np.random.default_rng(9).normal(size=(2, 6, 3))  # 2 symbols x 6 bars
    alpha, rows = None, []
    for t in range(6):
        state = alpha
        if t == 3:  # symbol 1 starts over (a new symbol in that row): NaN means first bar
            state = alpha.copy()
            state[1] = np.nan
        alpha, _ = posterior_step(state, Z[:, t], params)
        rows.append(alpha)
    stepped = np.stack(rows, axis=1)  # (2, 6, K)
    whole, _ = posterior_sequences(Z.reshape(-1, 3), [6, 6], params)
    np.testing.assert_array_equal(stepped[0], whole[:6])
    again, _ = posterior_sequences(Z[1, 3:], [3], params)
    # One row through BLAS instead of two may round the emission's last bit differently.
    np.testing.assert_allclose(stepped[1, 3:], again, rtol=0, atol=1e-15)


@pytest.fixture(scope="module")
def sp500_z():
    """S&P 500 daily (arch's copy, no download): log return, log range, log volume change,
    standardised."""
    from arch.data import sp500

    bars = sp500.load()
    close, high, low = (np.log(bars[c].to_numpy(float)) for c in ("Adj Close", "High", "Low"))
    volume = np.log(bars["Volume"].to_numpy(float))
    Z = np.column_stack([np.diff(close), (high - low)[1:], np.diff(volume)])
    return (Z - Z.mean(axis=0)) / Z.std(axis=0)


@pytest.mark.parametrize("kind", COVARIANCE_KINDS)
def test_sp500_daily_agrees_with_the_log_space_filter(sp500_z, kind):
    model = RegimeHMM(n_states=4, covariance_type=kind, n_restarts=1, n_iter=15, random_state=0)
    model.fit(sp500_z)
    assert model.params_.covariance_kind == kind
    posterior, loglik = _agreement(sp500_z, model.params_)
    assert posterior <= 1e-9 and loglik <= 1e-9
