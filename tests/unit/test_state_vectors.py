"""State vectors: stationarity, scaling, walk-forward splits, leakage guards, selection,
the linear encoders, ONNX parity, latent anchoring."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from regimes.config.loading import load_config
from regimes.config.timeframes import SelectionConfig, SplitConfig
from regimes.errors import ArtifactIntegrityError, BadInputError
from regimes.model.encoders.anchoring import anchor
from regimes.model.encoders.base import Encoder, make_windows
from regimes.model.encoders.latent_dim import pca_curve, save_curve
from regimes.model.encoders.pca import PCAEncoder, WindowPCAEncoder
from regimes.model.scaling import RobustPowerScaler, stationarize
from regimes.model.selection import select_features
from regimes.model.splits import FitRange, LeakageError, check_fitted_before, walk_forward_splits
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.unit
CONFIG = load_config(REPO_ROOT / "config")
SPEC = CONFIG.features


def test_stationarity_policies_are_applied_in_one_place():
    frame = pd.DataFrame(
        {
            "symbol": ["A"] * 3 + ["B"] * 2,
            "sma_20": [100.0, 101, 99, 50, 51],
            "macd": [1.0, 2, 3, 0.5, 0.5],
            "clv": [0.1, 0.2, 0.3, 0.4, 0.5],
        }
    )
    close = np.array([100.0, 100, 100, 50, 50])
    out = stationarize(frame, SPEC, ["sma_20", "macd", "clv"], close)
    np.testing.assert_allclose(out["sma_20"], np.log(frame["sma_20"] / close))
    np.testing.assert_allclose(out["macd"], frame["macd"] / close)
    np.testing.assert_array_equal(out["clv"], frame["clv"])
    diff_spec = SPEC.model_copy(deep=True)
    object.__setattr__(diff_spec.features["clv"], "stationarity", "difference")
    diffed = stationarize(frame, diff_spec, ["clv"], close)
    assert np.isnan(diffed["clv"].iloc[0]) and np.isnan(diffed["clv"].iloc[3])
    np.testing.assert_allclose(diffed["clv"].iloc[[1, 2, 4]], [0.1, 0.1, 0.1])
    live = stationarize(
        frame.iloc[[2]],
        diff_spec,
        ["clv"],
        close[[2]],
        previous=pd.DataFrame({"clv": [0.25]}, index=["A"]),
    )
    assert live["clv"].iloc[0] == pytest.approx(0.05)


def test_robust_power_scaler_gaussianizes_clips_and_refuses_bad_columns(seed):
    rng = np.random.default_rng(seed)
    X = np.column_stack(
        [
            rng.lognormal(size=2000),
            rng.standard_t(3, size=2000) * 1e-4,
            rng.normal(50, 2, size=2000),
        ]
    )
    scaler = RobustPowerScaler(clip=4.0).fit(X, feature_names=["a", "b", "c"])
    Z = scaler.transform(X)
    assert np.abs(Z).max() <= 4.0 and np.all(np.abs(Z.mean(axis=0)) < 0.1)
    assert pd.Series(X[:, 0]).skew() > 3 and abs(pd.Series(Z[:, 0]).skew()) < 0.3  # Gaussianized
    far = scaler.transform(np.array([[1e6, 1.0, -1e6]]))
    assert far.max() == 4.0 and far.min() == -4.0
    with pytest.raises(BadInputError, match=r"constant feature\(s\) \['b'\]"):
        RobustPowerScaler().fit(np.column_stack([X[:, 0], np.ones(2000)]), feature_names=["a", "b"])
    with pytest.raises(BadInputError, match="NaN or inf at row 5"):
        bad = X.copy()
        bad[5, 1] = np.nan
        scaler.transform(bad)


def _axis(n: int) -> pd.DatetimeIndex:
    return pd.date_range("2024-01-02 14:30", periods=n, freq="5min", tz="UTC")


def test_walk_forward_folds_are_ordered_with_embargo_and_aligned_across_symbols():
    ts = _axis(1000)
    stacked = pd.DatetimeIndex(np.concatenate([ts, ts[100:]]))  # two symbols, one starts late
    config = SplitConfig(
        folds=3, train_fraction=0.4, validation_fraction=0.15, test_fraction=0.1, embargo_bars=10
    )
    folds = walk_forward_splits(stacked, config)
    assert len(folds) == 3
    for fold in folds:
        assert fold.train_end < fold.val_start < fold.val_end <= fold.test_start < fold.test_end
        assert (ts.get_loc(fold.val_start) - ts.get_indexer([fold.train_end])[0]) == 10
        train, val = fold.mask(stacked, "train"), fold.mask(stacked, "validation")
        assert not (train & val).any()
        # The same time boundary applies to every symbol.
        assert stacked[train].max() < fold.val_start and stacked[val].min() >= fold.val_start
    assert folds[0].train_start == folds[2].train_start  # expanding
    rolling = walk_forward_splits(stacked, config.model_copy(update={"mode": "rolling"}))
    assert rolling[2].train_start > rolling[0].train_start
    with pytest.raises(BadInputError, match="cannot hold 3 fold"):
        walk_forward_splits(_axis(50), config)
    with pytest.raises(ValueError, match="exceeds 1"):
        SplitConfig(folds=5, train_fraction=0.5, validation_fraction=0.15)


def test_leakage_guard_fails_loudly_on_one_row_past_the_boundary():
    ts = _axis(100)
    boundary = ts[60]
    check_fitted_before("scaler", FitRange.of(ts[:60]), boundary)  # clean: passes
    with pytest.raises(LeakageError, match=r"LEAKAGE: scaler was fitted on rows up to"):
        check_fitted_before("scaler", FitRange.of(ts[:61]), boundary)  # one row past
    with pytest.raises(LeakageError, match="no recorded fit range"):
        check_fitted_before("encoder", None, boundary)


def _selection_frame(seed: int, n: int = 600) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=n)
    return pd.DataFrame(
        {
            "ts": _axis(n),
            "sma_20": base,
            "bb_middle": base + rng.normal(scale=1e-3, size=n),  # collinear with sma_20
            "r5": rng.normal(size=n),
            "r15": rng.normal(size=n),
            "rv_15": rng.normal(size=n),
            "tod_sin": np.zeros(n),  # zero variance (as on 1d bars)
            "clv": rng.normal(size=n),
        }
    )


def test_selection_drops_constant_and_collinear_features_and_respects_the_budget(seed):
    frame = _selection_frame(seed)
    candidates = ["sma_20", "bb_middle", "r5", "r15", "rv_15", "tod_sin", "clv"]
    report = select_features(frame, candidates, 4, SelectionConfig(max_abs_correlation=0.95))
    reasons = {d["feature"]: d["reason"] for d in report.dropped}
    assert reasons["tod_sin"] == "zero variance"
    assert any("collinear with" in reasons.get(name, "") for name in ("sma_20", "bb_middle"))
    assert len(report.selected) == 4 and set(report.selected) <= set(candidates)
    assert report.fit_range.end == frame["ts"].max()
    # Stability: the previous model used bb_middle, so the pair keeps bb_middle.
    stable = select_features(frame, candidates, 4, SelectionConfig(), previous=["bb_middle", "r5"])
    assert "bb_middle" in stable.selected and "sma_20" not in stable.selected
    with pytest.raises(BadInputError, match="unknown feature"):
        select_features(frame, ["clv", "rsi"], 1, SelectionConfig())
    with pytest.raises(BadInputError, match="budget 9 outside"):
        select_features(frame, candidates, 9, SelectionConfig())
    all_nan = frame.assign(clv=np.nan)
    assert {"feature": "clv", "reason": "all values missing"} in select_features(
        all_nan, candidates, 4, SelectionConfig()
    ).dropped


def test_windows_never_cross_unusable_rows():
    values = np.arange(20, dtype=float).reshape(10, 2)
    usable = np.ones(10, dtype=bool)
    usable[4] = False
    windows, ends = make_windows(values, 3, usable)
    assert ends.tolist() == [2, 3, 7, 8, 9]
    np.testing.assert_array_equal(windows[0], [0, 1, 2, 3, 4, 5])  # rows 0..2, oldest first
    assert make_windows(values[:2], 3)[0].shape == (0, 6)


def _regime_data(seed: int, n: int = 3000, features: int = 10):
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) // 150) % 2
    loadings = rng.normal(size=(3, features))
    latent = rng.normal(size=(n, 3)) + labels[:, None] * np.array([2.0, -1.0, 0.5])
    return latent @ loadings + 0.3 * rng.normal(size=(n, features)), labels


@pytest.mark.parametrize("cls, L", [(PCAEncoder, 1), (WindowPCAEncoder, 4)])
def test_linear_encoders_fit_save_load_and_onnx_parity(tmp_path, seed, cls, L):
    import onnxruntime as ort

    X, _ = _regime_data(seed)
    windows, _ = make_windows(X, L)
    names = [f"f{i}" for i in range(10)]
    encoder = cls(latent_dim=6, window_length=L).fit(windows, feature_names=names)
    Z = encoder.transform(windows)
    assert Z.shape == (len(windows), 6) and np.isfinite(Z).all()
    again = cls(latent_dim=6, window_length=L).fit(windows, feature_names=names)
    np.testing.assert_array_equal(again.transform(windows), Z)  # deterministic signs
    path = encoder.save(tmp_path / "encoder.pkl")
    loaded = Encoder.load(path, feature_names=names, window_length=L)
    np.testing.assert_array_equal(loaded.transform(windows), Z)
    with pytest.raises(ArtifactIntegrityError, match=r"saved for features .* \(missing \['f9'\]"):
        Encoder.load(path, feature_names=names[:9])
    with pytest.raises(ArtifactIntegrityError, match="window_length"):
        Encoder.load(path, feature_names=names, window_length=L + 1)
    onnx_path = encoder.export_onnx(tmp_path / "encoder.onnx")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_z = session.run(["z"], {"x": windows})[0]
    assert np.abs(onnx_z - Z).max() <= 1e-5


@pytest.mark.parametrize(
    "d, X, message",
    [
        (5, np.ones((100, 10)), r"latent_dim: expected an integer in \[6, 16\]"),
        (17, np.ones((100, 20)), r"latent_dim: expected an integer in \[6, 16\]"),
        (8, np.random.default_rng(0).normal(size=(100, 7)), "exceeds the 7 input column"),
        (6, np.random.default_rng(0).normal(size=(6, 10)), "need more than d = 6"),
        (6, np.full((100, 10), np.nan), "NaN or inf at row 0"),
        (6, np.ones((100, 10)), "every input column is constant"),
    ],
)
def test_bad_encoder_inputs_are_refused(d, X, message):
    with pytest.raises(BadInputError, match=message):
        PCAEncoder(latent_dim=d).fit(X)


def test_transform_refuses_nan_instead_of_returning_nan_z(seed):
    X, _ = _regime_data(seed)
    encoder = PCAEncoder(latent_dim=6).fit(X)
    X[7, 3] = np.inf
    with pytest.raises(BadInputError, match="NaN or inf at row 7"):
        encoder.transform(X)


def test_latent_dimension_curve_and_plot(tmp_path, seed):
    X, _ = _regime_data(seed)
    curve, chosen = pca_curve(X, (6, 10), target=0.9)
    assert curve["cumulative"].is_monotonic_increasing and 6 <= chosen <= 10
    png, csv = save_curve(curve, "d", ["cumulative"], tmp_path / "curve.png", "t", chosen)
    assert png.read_bytes()[:4] == b"\x89PNG" and pd.read_csv(csv).shape[0] == len(curve)


def test_anchoring_undoes_sign_flips_and_rotations(seed):
    rng = np.random.default_rng(seed)
    scales = np.array([5.0, 4.0, 3.0, 2.5, 2.0, 1.5])  # distinct: axes are well defined
    X = (rng.normal(size=(6000, 6)) * scales) @ np.linalg.qr(rng.normal(size=(10, 10)))[0][:6]
    X += 0.05 * rng.normal(size=X.shape)
    previous = PCAEncoder(latent_dim=6).fit(X[:4000])
    shifted = PCAEncoder(latent_dim=6).fit(X[1000:5000])
    # Flip and mix the refit's axes, as a refit on other data may do.
    mix = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    shifted.components_ = mix.T @ shifted.components_
    shared = X[1000:4000]
    report = anchor(shifted, shifted.transform_unanchored(shared), previous.transform(shared))
    assert min(report.axis_correlation_before) < 0.9
    assert min(report.axis_correlation_after) >= 0.99
    assert report.residual_after < 0.05 < report.residual_before
    np.testing.assert_allclose(
        shifted.transform(shared), shifted.transform_unanchored(shared) @ shifted.anchor_rotation_
    )
    with pytest.raises(BadInputError, match="shapes differ"):
        anchor(shifted, shifted.transform_unanchored(shared)[:, :5], previous.transform(shared))


def test_the_scaler_matches_scikit_learn_bit_for_bit_on_both_paths():
    import copy

    rng = np.random.default_rng(0)
    X = np.c_[rng.lognormal(size=800), rng.normal(size=800), -3 * rng.lognormal(size=800)]
    scaler = RobustPowerScaler().fit(X)
    scaler.power_.lambdas_[1] = 0.0  # the special cases of Yeo-Johnson
    scaler.power_.lambdas_[2] = 2.0
    reference = np.clip(scaler.power_.transform(scaler.robust_.transform(X * 30)), -5, 5)
    np.testing.assert_array_equal(scaler.transform(X * 30), reference)
    fallback = copy.deepcopy(scaler)
    fallback.power_.standardize = False  # not the fast path's case: scikit-learn's own
    unstandardized = fallback.power_.transform(fallback.robust_.transform(X * 30))
    np.testing.assert_array_equal(fallback.transform(X * 30), np.clip(unstandardized, -5, 5))
