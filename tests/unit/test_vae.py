"""The temporal VAE encoder: contract, determinism, time-ordered early stopping,
pickling across processes, ONNX parity, refusals, and separation of two regimes."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from scipy.signal import lfilter
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression

from regimes.errors import ArtifactIntegrityError, BadInputError
from regimes.model.encoders.base import Encoder, make_windows
from regimes.model.encoders.vae import (
    HISTORY_KEYS,
    SCAN_COLUMNS,
    TemporalVAEEncoder,
    TrainingDivergedError,
    vae_latent_dim_scan,
)
from tests.conftest import TEST_SEED

pytestmark = pytest.mark.unit

N_FEATURES, WINDOW = 10, 4
FEATURES = [f"f{i}" for i in range(N_FEATURES)]
ONNX_TOLERANCE = 1e-5  # max |onnxruntime - transform|, both float32 arithmetic
# Small and quick: the whole file must stay well under a minute on two cores.
SMALL = dict(latent_dim=6, window_length=WINDOW, hidden=(32, 16), max_epochs=40, patience=3)


def two_regime_windows(n_rows: int, seed: int, switch: float = 0.01):
    """Windows of a 2-regime signal and the regime each window ends in.

    Regime 1 shifts a third of the features by 1.5 and triples the volatility of
    another third; the noise is AR(1), so single bars are ambiguous and windows help.
    Regimes last 1/switch bars on average.
    """
    rng = np.random.default_rng(seed)
    regime = np.cumsum(rng.random(n_rows) < switch) % 2
    shift, vol = np.zeros(N_FEATURES), np.ones(N_FEATURES)
    shift[: N_FEATURES // 3] = 1.5
    vol[N_FEATURES // 3 : 2 * N_FEATURES // 3] = 3.0
    noise = lfilter([1.0], [1.0, -0.5], rng.normal(size=(n_rows, N_FEATURES)), axis=0)
    values = np.where(regime[:, None] == 1, shift + vol * noise, noise)
    values = (values - values.mean(axis=0)) / values.std(axis=0)
    windows, ends = make_windows(values, WINDOW)
    return windows, regime[ends]


@pytest.fixture(scope="module")
def data():
    print(f"two-regime data seeded with {TEST_SEED}")
    return two_regime_windows(3_000, TEST_SEED)


@pytest.fixture(scope="module")
def fitted(data):
    X, _ = data
    return TemporalVAEEncoder(**SMALL).fit(X, feature_names=FEATURES)


# -- contract


def test_fit_transform_shapes_and_history(data, fitted):
    X, _ = data
    z = fitted.transform(X)
    assert z.shape == (len(X), 6) and z.dtype == np.float64
    assert np.isfinite(z).all()
    assert fitted.feature_names_in_ == tuple(FEATURES)
    assert fitted.n_features_in_ == N_FEATURES * WINDOW
    assert set(fitted.history_) == set(HISTORY_KEYS)
    assert all(len(v) == fitted.n_epochs_ for v in fitted.history_.values())
    assert 1 <= fitted.best_epoch_ <= fitted.n_epochs_ <= SMALL["max_epochs"]
    assert fitted.fit_seconds_ > 0
    assert np.isfinite([v for values in fitted.history_.values() for v in values]).all()


def test_constructor_only_stores_and_clone_gives_unfitted_copy(fitted):
    hidden = [8, 4]  # a list stays a list: __init__ stores, fit validates
    encoder = TemporalVAEEncoder(hidden=hidden, kl_weight=-1)
    assert encoder.hidden is hidden and encoder.kl_weight == -1
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params()
    assert not hasattr(copy, "network_state_")


def test_fit_restores_torch_settings_and_leaves_global_rng_alone(data):
    X, _ = data
    threads = torch.get_num_threads()
    rng_state = torch.get_rng_state()
    TemporalVAEEncoder(**{**SMALL, "max_epochs": 2}).fit(X)
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.equal(torch.get_rng_state(), rng_state)


# -- determinism and early stopping


def test_two_fits_with_the_same_seed_are_bit_identical(data, fitted):
    X, _ = data
    again = TemporalVAEEncoder(**SMALL).fit(X, feature_names=FEATURES)
    assert np.array_equal(again.transform(X), fitted.transform(X))
    assert again.history_ == fitted.history_
    other = TemporalVAEEncoder(**{**SMALL, "random_state": 1}).fit(X)
    assert not np.array_equal(other.transform(X), fitted.transform(X))


def test_early_stopping_keeps_the_best_epoch(data):
    X, _ = data
    encoder = TemporalVAEEncoder(
        **{**SMALL, "learning_rate": 1e-2, "max_epochs": 200, "patience": 2, "tol": 0.0}
    ).fit(X)
    assert encoder.n_epochs_ < 200
    assert encoder.n_epochs_ == encoder.best_epoch_ + 2
    assert encoder.best_epoch_ == int(np.argmin(encoder.history_["val_loss"])) + 1


def test_validation_is_the_tail_after_a_purge(data):
    X, _ = data
    n = len(X)
    shifted = X.copy()
    tail = n - math.ceil(0.2 * n)
    shifted[tail:] += 3.0  # only a time-ordered split never trains on this
    encoder = TemporalVAEEncoder(**{**SMALL, "max_epochs": 5}).fit(shifted)
    assert encoder.validation_start_ == tail
    assert encoder.n_train_ == tail - (WINDOW - 1)  # windows sharing bars with the tail
    history = encoder.history_
    assert min(history["val_recon"]) > 5 * max(history["train_recon"])


# -- persistence and export


def test_save_load_in_a_fresh_process_gives_identical_z(data, fitted, tmp_path):
    X, _ = data
    path = fitted.save(tmp_path / "vae.pkl")
    assert b"torch" not in path.read_bytes()  # weights are NumPy arrays, no torch pickles
    np.save(tmp_path / "X.npy", X)
    script = (
        "import sys, numpy as np\n"
        "from regimes.model.encoders.vae import TemporalVAEEncoder\n"
        "encoder = TemporalVAEEncoder.load(sys.argv[1], feature_names=sys.argv[4].split(','))\n"
        "np.save(sys.argv[3], encoder.transform(np.load(sys.argv[2])))\n"
    )
    subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-c",
            script,
            str(path),
            str(tmp_path / "X.npy"),
            str(tmp_path / "z.npy"),
            ",".join(FEATURES),
        ],
        check=True,
        timeout=120,
    )
    assert np.array_equal(np.load(tmp_path / "z.npy"), fitted.transform(X))
    reloaded = pickle.loads(pickle.dumps(fitted))
    assert np.array_equal(reloaded.transform(X), fitted.transform(X))


def test_load_refuses_another_feature_list(fitted, tmp_path):
    path = fitted.save(tmp_path / "vae.pkl")
    with pytest.raises(ArtifactIntegrityError, match="another order"):
        Encoder.load(path, feature_names=FEATURES[::-1])
    with pytest.raises(ArtifactIntegrityError, match="missing"):
        TemporalVAEEncoder.load(path, feature_names=FEATURES[:-1])


def test_onnx_matches_transform(data, fitted, tmp_path):
    X, _ = data
    path = fitted.to_onnx(tmp_path / "onnx" / "vae.onnx")
    assert path.is_file() and list(path.parent.iterdir()) == [path]
    model = onnx.load(path)
    assert {p.key: p.value for p in model.metadata_props}["regimes.feature_names"] == ",".join(
        FEATURES
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name, inp.type) == ("x", "z", "tensor(float)")
    assert isinstance(inp.shape[0], str) and inp.shape[1] == N_FEATURES * WINDOW
    random_windows = np.random.default_rng(TEST_SEED).normal(size=(257, X.shape[1]))
    for windows in (X, random_windows, X[:1]):
        onnx_z = session.run(["z"], {"x": windows.astype(np.float32)})[0]
        assert np.abs(onnx_z - fitted.transform(windows)).max() <= ONNX_TOLERANCE


# -- refusals


@pytest.mark.parametrize("latent_dim", [5, 17])
def test_latent_dim_outside_bounds_is_refused(data, latent_dim):
    X, _ = data
    with pytest.raises(BadInputError, match="latent_dim"):
        TemporalVAEEncoder(**{**SMALL, "latent_dim": latent_dim}).fit(X)


def test_nan_input_is_refused(data, fitted):
    X, _ = data
    broken = X.copy()
    broken[7, 3] = np.nan
    with pytest.raises(BadInputError, match="row 7"):
        TemporalVAEEncoder(**SMALL).fit(broken)
    with pytest.raises(BadInputError, match="row 7"):
        fitted.transform(broken)
    broken[7, 3] = 1e39  # finite in float64, inf in float32
    with pytest.raises(BadInputError, match="float32"):
        fitted.transform(broken)


@pytest.mark.parametrize(
    "param, value",
    [
        ("hidden", ()),
        ("hidden", (32, 0)),
        ("kl_weight", -0.1),
        ("kl_weight", float("nan")),
        ("learning_rate", 0.0),
        ("batch_size", 0),
        ("patience", 1.5),
        ("validation_fraction", 1.0),
    ],
)
def test_bad_parameters_are_refused_by_name(data, param, value):
    X, _ = data
    with pytest.raises(BadInputError, match=param):
        TemporalVAEEncoder(**{**SMALL, param: value}).fit(X)


def test_divergence_raises_naming_the_epoch(data):
    X, _ = data
    threads = torch.get_num_threads()
    with pytest.raises(TrainingDivergedError, match="epoch 1"):
        TemporalVAEEncoder(**{**SMALL, "learning_rate": 1e6}).fit(X)
    assert torch.get_num_threads() == threads


# -- behaviour and latent-dimension scan


def test_z_separates_two_regimes_on_held_out_windows(data, fitted):
    X, regime = data
    z = fitted.transform(X)
    head = fitted.validation_start_  # classifier fitted on training-period z only
    classifier = LogisticRegression().fit(z[:head], regime[:head])
    accuracy = classifier.score(z[head:], regime[head:])
    assert accuracy > 0.9, f"held-out regime accuracy {accuracy:.3f}"


def test_latent_dim_scan_reports_one_row_per_d(data):
    X, _ = data
    params = {k: v for k, v in SMALL.items() if k not in ("latent_dim", "window_length")}
    table = vae_latent_dim_scan(X[:1_000], [6, 8], WINDOW, **{**params, "max_epochs": 3})
    assert list(table.columns) == list(SCAN_COLUMNS)
    assert table["d"].tolist() == [6, 8]
    assert np.isfinite(table.drop(columns="d").to_numpy(dtype=float)).all()
    assert (table["epochs"] <= 3).all()
    with pytest.raises(BadInputError, match="dims"):
        vae_latent_dim_scan(X, [], WINDOW)
