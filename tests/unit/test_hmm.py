"""The Gaussian HMM: fit from k-means, regularisation, filtered posteriors (parity, no
look-ahead), Viterbi vs hmmlearn, AIC/BIC selection, Hungarian alignment, labels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from regimes.errors import BadInputError
from regimes.model.hmm import _hmmlearn
from regimes.model.hmm.alignment import (
    align_states,
    co_occupancy_cost,
    gaussian_symmetric_kl,
    relabel,
)
from regimes.model.hmm.filtering import (
    GaussianHMMParams,
    entropy,
    filter_sequence,
    filter_sequences,
    filter_step,
    viterbi,
)
from regimes.model.hmm.labels import state_labels, state_statistics
from regimes.model.hmm.model import RegimeHMM, n_parameters, sticky_transmat
from regimes.model.hmm.selection import select_state_count

pytestmark = pytest.mark.unit


def _sample(seed: int, K: int = 3, d: int = 6, segments: int = 60, dwell: int = 40):
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=2.5, size=(K, d))
    states = np.repeat(rng.integers(0, K, segments), dwell)
    Z = means[states] + rng.normal(size=(len(states), d))
    return Z, states


@pytest.fixture(scope="module")
def fitted():
    Z, states = _sample(0)
    model = RegimeHMM(n_states=3, covariance_type="full", random_state=0).fit(Z, [1200, 1200])
    return model, Z, states


def _naive_filter(Z, params):
    """An independent forward pass in probability space with per-step normalisation."""
    K = params.K
    dens = np.column_stack(
        [multivariate_normal(params.means[k], params.covars[k]).pdf(Z) for k in range(K)]
    )
    alpha = np.empty((len(Z), K))
    loglik = np.empty(len(Z))
    prior = params.startprob
    for t in range(len(Z)):
        joint = prior * dens[t]
        loglik[t] = np.log(joint.sum())
        alpha[t] = joint / joint.sum()
        prior = alpha[t] @ params.transmat
    return alpha, loglik


def test_filtered_posterior_equals_an_independent_forward_pass(fitted):
    model, Z, _ = fitted
    log_alpha, loglik = filter_sequence(Z[:600], model.params_)
    alpha, naive_loglik = _naive_filter(Z[:600], model.params_)
    assert np.abs(np.exp(log_alpha) - alpha).max() <= 1e-9
    assert np.abs(loglik - naive_loglik).max() <= 1e-9
    assert np.allclose(np.exp(log_alpha).sum(axis=1), 1.0)


def test_total_predictive_loglik_is_hmmlearns_score(fitted):
    from hmmlearn.hmm import GaussianHMM

    model, Z, _ = fitted
    p = model.params_
    reference = GaussianHMM(n_components=3, covariance_type="full", init_params="")
    reference.startprob_, reference.transmat_ = p.startprob, p.transmat
    reference.means_, reference.covars_ = p.means, p.covars
    assert filter_sequence(Z, p)[1].sum() == pytest.approx(reference.score(Z), rel=1e-10)


def test_step_api_batched_over_symbols_equals_the_sequence_api(fitted):
    model, Z, _ = fitted
    p = model.params_
    a, b = Z[:300], Z[300:700]
    state = np.full((2, p.K), np.nan)
    stepped = {0: [], 1: []}
    for t in range(len(b)):
        active = [0, 1] if t < len(a) else [1]
        rows = np.array([a[t] if i == 0 else b[t] for i in active])
        current, _ = filter_step(state[active], rows, p)
        state[active] = current
        for i, row in zip(active, current, strict=True):
            stepped[i].append(row)
    assert np.abs(np.array(stepped[0]) - filter_sequence(a, p)[0]).max() <= 1e-12
    assert np.abs(np.array(stepped[1]) - filter_sequence(b, p)[0]).max() <= 1e-12
    batched, _ = filter_sequences(np.vstack([a, b]), [len(a), len(b)], p)
    assert np.abs(batched[: len(a)] - filter_sequence(a, p)[0]).max() <= 1e-12


def test_appending_future_rows_never_changes_past_posteriors(fitted):
    model, Z, _ = fitted
    past, _ = filter_sequence(Z[:500], model.params_)
    full, _ = filter_sequence(Z, model.params_)
    np.testing.assert_array_equal(past, full[:500])


def test_viterbi_agrees_with_hmmlearn_decode(fitted):
    model, Z, states = fitted
    p = model.params_
    log_prob, path = viterbi(Z, p)
    reference_prob, reference_path = _hmmlearn.decode(Z, p.startprob, p.transmat, p.means, p.covars)
    np.testing.assert_array_equal(path, reference_path)
    assert log_prob == pytest.approx(reference_prob, rel=1e-10)


def test_posterior_entropy_and_recovery(fitted):
    model, Z, states = fitted
    log_alpha, _ = filter_sequence(Z, model.params_)
    h = entropy(log_alpha)
    assert (h >= -1e-12).all() and (h <= np.log(3) + 1e-12).all()
    predicted = log_alpha.argmax(axis=1)
    matched = max(
        (predicted == perm[states]).mean()
        for perm in map(np.array, __import__("itertools").permutations(range(3)))
    )
    assert matched > 0.95


@pytest.mark.parametrize("covariance_type", ["diag", "full", "tied", "spherical"])
def test_degenerate_data_fits_with_regularisation_never_nan(covariance_type):
    Z, _ = _sample(1)
    Z[:, 2] = 3.0  # a constant dimension
    Z[100:400] = Z[100]  # many duplicated rows
    model = RegimeHMM(n_states=3, covariance_type=covariance_type, n_restarts=2).fit(Z)
    p = model.params_
    for value in (p.startprob, p.transmat, p.means, p.covars):
        assert np.isfinite(value).all()
    assert (np.linalg.eigvalsh(p.covars) > 0).all()
    assert np.isfinite(filter_sequence(Z, p)[0]).all()


@pytest.mark.parametrize(
    "Z, kwargs, message",
    [
        (
            np.random.default_rng(0).normal(size=(20, 6)),
            {"n_states": 4, "covariance_type": "full"},
            r"20 rows cannot fit \d+ parameters",
        ),
        (np.ones((500, 6)), {"n_states": 3}, "only 1 distinct z rows for K=3"),
        (np.full((500, 6), np.nan), {"n_states": 3}, "NaN or inf at row 0"),
        (np.random.default_rng(0).normal(size=(500, 6)), {"n_states": 1}, r"n_states: expected"),
        (
            np.random.default_rng(0).normal(size=(500, 6)),
            {"covariance_type": "banded"},
            "covariance_type",
        ),
        (np.random.default_rng(0).normal(size=(500, 6)), {"expected_dwell": 1.0}, "expected_dwell"),
    ],
)
def test_bad_inputs_are_refused(Z, kwargs, message):
    with pytest.raises(BadInputError, match=message):
        RegimeHMM(**kwargs).fit(Z)


def test_sticky_init_and_dirichlet_prior():
    A = sticky_transmat(4, expected_dwell=10)
    assert np.allclose(A.sum(axis=1), 1) and np.allclose(np.diag(A), 0.9)
    Z, _ = _sample(2, dwell=8)  # short regimes: Baum-Welch alone lowers the diagonal
    free = RegimeHMM(n_states=3, random_state=0, n_restarts=1).fit(Z)
    sticky = RegimeHMM(n_states=3, random_state=0, n_restarts=1, transition_prior=5000.0).fit(Z)
    assert np.diag(sticky.params_.transmat).mean() > np.diag(free.params_.transmat).mean()


def test_restarts_are_scored_on_validation_and_recorded():
    Z, _ = _sample(3)
    model = RegimeHMM(n_states=3, n_restarts=3).fit(Z[:1800], None, Z[1800:], None)
    assert len(model.restarts_) == 3 and all("loglik" in r for r in model.restarts_)
    assert model.score_ == max(r["loglik"] for r in model.restarts_)
    again = RegimeHMM(n_states=3, n_restarts=3).fit(Z[:1800], None, Z[1800:], None)
    np.testing.assert_array_equal(again.params_.means, model.params_.means)  # reproducible


def test_bic_selects_the_true_state_count():
    Z, _ = _sample(4, K=3, segments=90)
    model, table = select_state_count(
        Z[:2700], None, Z[2700:], None, (2, 5), ("diag",), n_restarts=2
    )
    assert model.K == 3
    assert list(table["K"]) == [2, 3, 4, 5] and {"aic", "bic", "loglik"} <= set(table.columns)
    assert n_parameters(3, 6, "diag") == 2 + 6 + 18 + 18


def test_hungarian_alignment_recovers_a_permutation(fitted):
    model, Z, _ = fitted
    p = model.params_
    permutation = {0: 2, 1: 0, 2: 1}
    shuffled = relabel(p, permutation)  # state i of p is state permutation[i] of shuffled
    report = align_states(gaussian_symmetric_kl(shuffled, p), "emission", threshold=1.0)
    assert report.mapping == {2: 0, 0: 1, 1: 2} or report.mapping == {
        v: k for k, v in permutation.items()
    }
    assert report.cost < 1e-9 and not report.unstable
    back = relabel(shuffled, report.mapping)
    np.testing.assert_allclose(back.means, p.means)
    posterior_old = np.exp(filter_sequence(Z, p)[0])
    posterior_new = np.exp(filter_sequence(Z, shuffled)[0])
    by_occupancy = align_states(
        co_occupancy_cost(posterior_new, posterior_old), "co_occupancy", 0.3
    )
    assert by_occupancy.mapping == report.mapping and by_occupancy.cost < 0.05
    unrelated = GaussianHMMParams(p.startprob, p.transmat, p.means + 10.0, p.covars)
    assert align_states(gaussian_symmetric_kl(unrelated, p), "emission", 1.0).unstable


def test_state_labels_name_volatility_trend_and_volume():
    rng = np.random.default_rng(5)
    states = np.repeat([0, 1, 2], 400)
    vol = np.r_[rng.uniform(0.1, 0.2, 400), rng.uniform(1, 2, 400), rng.uniform(0.4, 0.6, 400)]
    ret = np.r_[rng.normal(0.01, 0.01, 400), rng.normal(-0.02, 0.01, 400), rng.normal(0, 0.01, 400)]
    volume = np.r_[np.full(400, 0.5), np.full(400, 2.0), np.full(400, 1.0)]
    labels = state_labels(state_statistics(states, vol, ret, volume, K=4))
    assert labels[0] == "low-vol up, light volume"
    assert labels[1] == "high-vol down, heavy volume"
    assert labels[2] == "mid-vol flat, normal volume"
    assert labels[3].startswith("unvisited")


def test_hmm_round_trips_through_a_verified_artifact_and_tampering_is_refused(fitted, tmp_path):
    import pickle

    from regimes.errors import ArtifactIntegrityError
    from regimes.model.artifact import load_pickle, write_artifact

    model, Z, _ = fitted
    path = write_artifact(
        tmp_path,
        "5m",
        "5m-20240301T0000Z-abcdefabcdef",
        {"hmm.pkl": pickle.dumps(model)},
        {"K": model.K, "covariance_type": "full"},
    )
    loaded = load_pickle(path, "hmm.pkl")
    np.testing.assert_array_equal(
        filter_sequence(Z, loaded.params_)[0], filter_sequence(Z, model.params_)[0]
    )
    blob = bytearray((path / "hmm.pkl").read_bytes())
    blob[len(blob) // 2] ^= 0x01
    (path / "hmm.pkl").write_bytes(bytes(blob))
    with pytest.raises(ArtifactIntegrityError, match="hmm.pkl"):
        load_pickle(path, "hmm.pkl")


def test_duplicate_state_labels_are_numbered_all_of_them():
    states = np.repeat([0, 1, 2], 100)
    same = np.ones(300)
    labels = state_labels(state_statistics(states, same, np.zeros(300), same, K=3))
    assert sorted(labels.values()) == [
        "low-vol flat, light volume #1",
        "low-vol flat, light volume #2",
        "low-vol flat, light volume #3",
    ]


def test_baum_welch_equals_hmmlearns_log_space_fit_with_rows_no_state_explains():
    """The row-rescaled probability-space E-step fits the same parameters as hmmlearn's
    log-space one, also when some rows lie so far from every state that their emission
    densities underflow to 0 in plain probability space (hmmlearn's own "scaling" then
    fails on them)."""
    from hmmlearn.hmm import GaussianHMM

    rng = np.random.default_rng(3)
    K, d = 3, 4
    means = rng.normal(0.0, 3.0, (K, d))
    states = np.repeat(rng.integers(0, K, 120), 25)
    Z = means[states] + rng.normal(0.0, 1.0, (len(states), d))
    Z[::400] += 60.0  # log-density below -745 under every state
    lengths = [1000, 1000, len(Z) - 2000]
    start = {
        "startprob": np.full(K, 1.0 / K),
        "transmat": np.full((K, K), 0.05) + np.eye(K) * (1.0 - 0.05 * K),
        "means": means + rng.normal(0.0, 0.5, (K, d)),
        "covars": np.ones((K, d)),
    }
    fitted = _hmmlearn.fit_gaussian_hmm(
        Z,
        lengths,
        covariance_type="diag",
        transmat_prior=1.0,
        min_covar=1e-3,
        n_iter=15,
        tol=-np.inf,
        random_state=0,
        **start,
    )
    reference = GaussianHMM(
        n_components=K,
        covariance_type="diag",
        min_covar=1e-3,
        n_iter=15,
        tol=-np.inf,
        params="stmc",
        init_params="",
        implementation="log",
    )
    reference.startprob_, reference.transmat_ = start["startprob"], start["transmat"]
    reference.means_, reference.covars_ = start["means"], start["covars"]
    # At the start, some rows' densities are 0 under every state in probability space.
    initial = reference._compute_log_likelihood(Z)
    assert np.isfinite(initial).all() and (np.exp(initial).max(axis=1) == 0.0).any()
    reference.fit(Z, lengths)
    assert fitted.iterations == reference.monitor_.iter == 15
    np.testing.assert_allclose(fitted.means, reference.means_, atol=1e-8)
    np.testing.assert_allclose(fitted.transmat, reference.transmat_, atol=1e-8)
    np.testing.assert_allclose(fitted.covars, reference._covars_, atol=1e-8)
    plain = GaussianHMM(
        n_components=K,
        covariance_type="diag",
        min_covar=1e-3,
        n_iter=15,
        params="stmc",
        init_params="",
        implementation="scaling",
    )
    plain.startprob_, plain.transmat_ = start["startprob"], start["transmat"]
    plain.means_, plain.covars_ = start["means"], start["covars"]
    with pytest.raises(ValueError, match="underflow"):
        plain.fit(Z, lengths)
