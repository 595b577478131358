"""Configuration files load into typed models; bad ones name file, field and expectation."""

from __future__ import annotations

import json
import sys
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from regimes.config.loading import (
    default_config_dir,
    load_config,
    load_feature_spec,
    load_metadata,
    load_timeframes,
    package_resource_dir,
)
from regimes.config.metadata import ModelMetadata, metadata_json_schema
from regimes.config.settings import resolve_settings
from regimes.config.spec import FIXED_FEATURES
from regimes.errors import ConfigError
from regimes.timeframes import TIMEFRAMES
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.unit
CONFIG = REPO_ROOT / "config"


def _write(tmp_path: Path, name: str, data) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def _features() -> dict:
    return yaml.safe_load((CONFIG / "features.yaml").read_text())


def _timeframes() -> dict:
    return yaml.safe_load((CONFIG / "timeframes.yaml").read_text())


def test_shipped_config_loads():
    config = load_config(CONFIG)
    assert config.features.names == FIXED_FEATURES
    assert len(FIXED_FEATURES) == 21
    assert list(config.timeframes.timeframes) == list(TIMEFRAMES)
    for name in TIMEFRAMES:
        tf = config.timeframe(name)
        assert 6 <= tf.latent_dim_range[0] <= tf.latent_dim_range[1] <= 16
        assert tf.feature_budget <= len(tf.selected_features)
        assert tf.state_ttl > timedelta(0)
    assert config.timeframe("1m").k_range == (8, 16)
    assert config.timeframe("1d").k_range == (3, 8)
    assert config.timeframe("1m").retrain_cadence == "weekly"
    assert config.timeframe("1h").retrain_cadence == "quarterly"
    assert "tod_sin" not in config.timeframe("1d").selected_features
    assert config.timeframes.session.minutes == 390


def test_price_level_features_are_made_stationary_relative_to_close():
    spec = load_feature_spec(CONFIG / "features.yaml")
    for name in ("sma_20", "ema_20", "vwap_60", "bb_middle", "macd"):
        assert spec.features[name].stationarity in ("log_ratio_to_close", "relative_to_close")
    assert spec.fingerprint() == load_feature_spec(CONFIG / "features.yaml").fingerprint()


@pytest.mark.parametrize(
    "mutate, field, expected",
    [
        (
            lambda d: d["features"].update(momentum={**d["features"]["r5"]}),
            "features",
            "unknown feature(s) ['momentum']",
        ),
        (lambda d: d["features"].pop("clv"), "features", "missing feature(s) ['clv']"),
        (
            lambda d: d["features"]["r5"].update(stationarity="log"),
            "features.r5.stationarity",
            "'none'",
        ),
        (
            lambda d: d["features"]["r5"]["windows"].update(n=0),
            "features.r5.windows.n",
            "greater than 0",
        ),
        (lambda d: d.update(version=0), "version", "greater than 0"),
        (
            lambda d: d["features"]["r5"].update(colour="red"),
            "features.r5.colour",
            "Extra inputs are not permitted",
        ),
    ],
)
def test_bad_feature_spec_names_file_field_and_expectation(tmp_path, mutate, field, expected):
    data = _features()
    mutate(data)
    path = _write(tmp_path, "features.yaml", data)
    with pytest.raises(ConfigError) as info:
        load_feature_spec(path)
    message = str(info.value)
    assert str(path) in message and f": {field}:" in message and expected in message


@pytest.mark.parametrize(
    "mutate, field, expected",
    [
        (
            lambda d: d["timeframes"]["1m"].update(k_range=[9, 4]),
            "timeframes.1m.k_range",
            "expected 2 <= min <= max <= 16",
        ),
        (
            lambda d: d["timeframes"]["5m"].update(latent_dim_range=[4, 8]),
            "timeframes.5m.latent_dim_range",
            "expected 6 <= min <= max <= 16",
        ),
        (
            lambda d: d["timeframes"]["1h"].update(latent_dim_range=[6, 20]),
            "timeframes.1h.latent_dim_range",
            "<= 16",
        ),
        (
            lambda d: d["timeframes"]["1d"].update(features=["clv", "rsi_14"]),
            "timeframes.1d.features",
            "unknown feature(s) ['rsi_14']",
        ),
        (
            lambda d: d["timeframes"]["1d"].update(feature_budget=20),
            "timeframes.1d",
            "feature_budget 20 exceeds the 16 selected feature(s)",
        ),
        (
            lambda d: d["timeframes"]["15m"].update(covariance_types=["diag", "banded"]),
            "timeframes.15m.covariance_types",
            "unknown covariance type(s) ['banded']",
        ),
        (
            lambda d: d["timeframes"]["1m"].update(retrain_cadence="daily"),
            "timeframes.1m.retrain_cadence",
            "expected one of",
        ),
        (
            lambda d: d["timeframes"]["1m"].update(state_ttl="soon"),
            "timeframes.1m.state_ttl",
            "expected a positive duration",
        ),
        (
            lambda d: d["timeframes"]["1m"]["anti_chatter"].update(p_switch=0.3),
            "timeframes.1m.anti_chatter.p_switch",
            "greater than 0.5",
        ),
        (lambda d: d["timeframes"].pop("15m"), "timeframes", "missing ['15m']"),
        (
            lambda d: d["timeframes"].update({"2h": d["timeframes"]["1h"]}),
            "timeframes",
            "unknown ['2h']",
        ),
        (lambda d: d["session"].update(close="09:00"), "session", "must be after open"),
        (
            lambda d: d["gaps"].update(max_missing_fraction=1.5),
            "gaps.max_missing_fraction",
            "less than 1",
        ),
    ],
)
def test_bad_timeframes_config_names_file_field_and_expectation(tmp_path, mutate, field, expected):
    data = _timeframes()
    mutate(data)
    path = _write(tmp_path, "timeframes.yaml", data)
    with pytest.raises(ConfigError) as info:
        load_timeframes(path)
    message = str(info.value)
    assert str(path) in message and f": {field}:" in message and expected in message, message


def test_invalid_yaml_and_wrong_shapes_are_config_errors(tmp_path):
    broken = _write(tmp_path, "timeframes.yaml", "timeframes: [1m: {\n")
    with pytest.raises(
        ConfigError, match=r"timeframes\.yaml: line \d+, column \d+: not valid YAML"
    ):
        load_timeframes(broken)
    listed = _write(tmp_path, "features.yaml", "- clv\n- r5\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level, got list"):
        load_feature_spec(listed)
    with pytest.raises(ConfigError, match="config file not found"):
        load_feature_spec(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="config directory not found"):
        load_config(tmp_path / "nowhere")


def _metadata(**overrides) -> dict:
    data = {
        "format_version": 2,
        "model_id": "1h-20240301T0000Z-abcdefabcdef",
        "timeframe": "1h",
        "created_at": "2024-03-02T00:00:00Z",
        "training_window": {"start": "2024-01-02T14:30:00Z", "end": "2024-03-01T00:00:00Z"},
        "K": 4,
        "d": 8,
        "covariance_type": "diag",
        "encoder": "pca",
        "universe": ["SYN000", "SYN001"],
        "feature_names": ["clv", "r5", "rv_15"],
        "versions": {
            "regimes": "0.1.0",
            "python": "3.11.7",
            "packages": {"numpy": "2.0"},
            "git_revision": "abc123",
            "feature_spec_version": 1,
            "feature_spec_sha256": "0" * 64,
        },
        "seed": 7,
        "state_ttl": "4h",
        "metrics": {"bic": 123.4},
        "ood_threshold": -25.0,
        "anti_chatter": {"p_switch": 0.6, "min_dwell_bars": 2, "majority_window": 3},
        "state_labels": {"0": "calm_up", "3": "volatile_down"},
        "files": {"hmm.pkl": "a" * 64, "scaler.pkl": "b" * 64},
    }
    data.update(overrides)
    return data


def test_metadata_round_trips_and_schema_file_is_in_sync(tmp_path):
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(_metadata()))
    loaded = load_metadata(path)
    assert loaded.state_ttl == timedelta(hours=4)
    assert loaded.training_window.end == datetime(2024, 3, 1, tzinfo=UTC)
    assert loaded.state_labels == {0: "calm_up", 3: "volatile_down"}
    again = tmp_path / "again.json"
    again.write_text(loaded.to_json())
    assert load_metadata(again) == loaded
    shipped = json.loads((CONFIG / "metadata.schema.json").read_text())
    assert shipped == metadata_json_schema(), (
        "config/metadata.schema.json is stale: regenerate it with "
        "python -m regimes.config.metadata > config/metadata.schema.json"
    )


@pytest.mark.parametrize(
    "overrides, field, expected",
    [
        ({"K": 1}, "K", "greater than or equal to 2"),
        ({"d": 20}, "d", "less than or equal to 16"),
        ({"state_labels": {"5": "x"}}, "(top level)", "outside 0..K-1"),
        ({"files": {"hmm.pkl": "not-a-hash"}}, "files.hmm.pkl", "pattern"),
        (
            {"training_window": {"start": "2024-03-01T00:00:00Z", "end": "2024-01-01T00:00:00Z"}},
            "training_window",
            "must be after start",
        ),
        (
            {"training_window": {"start": "2024-01-01T00:00:00", "end": "2024-03-01T00:00:00"}},
            "training_window",
            "must be a UTC timestamp",
        ),
        ({"feature_names": ["clv", "alpha_beta"]}, "feature_names", "unknown feature(s)"),
        ({"timeframe": "2h"}, "timeframe", "'1m'"),
    ],
)
def test_bad_metadata_is_refused(tmp_path, overrides, field, expected):
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(_metadata(**overrides)))
    with pytest.raises(ConfigError) as info:
        load_metadata(path)
    assert f": {field}:" in str(info.value) and expected in str(info.value), str(info.value)


def test_metadata_json_errors_name_the_line(tmp_path):
    path = tmp_path / "metadata.json"
    path.write_text('{\n  "K": 4,\n  oops\n}')
    with pytest.raises(ConfigError, match=r"metadata\.json: line 3: not valid JSON"):
        load_metadata(path)
    assert ModelMetadata.model_fields["files"].description


def test_settings_precedence_cli_over_env_over_file_over_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    default = resolve_settings(environ={})
    assert default.home == tmp_path.resolve()
    assert default.db_url == f"sqlite:///{tmp_path.resolve() / 'regimes.db'}"
    assert default.config_dir == CONFIG  # the project's config/
    env = {"REGIMES_HOME": str(tmp_path / "envhome"), "REGIMES_DB_URL": "sqlite:///env.db"}
    from_env = resolve_settings(environ=env)
    assert from_env.home == (tmp_path / "envhome").resolve()
    assert from_env.db_url == "sqlite:///env.db"
    from_cli = resolve_settings(home=tmp_path / "cli", db_url="sqlite:///cli.db", environ=env)
    assert from_cli.home == (tmp_path / "cli").resolve() and from_cli.db_url == "sqlite:///cli.db"
    # A config/ inside the home (the "file" level) wins over the project default...
    (tmp_path / "cli" / "config").mkdir(parents=True)
    (tmp_path / "cli" / "config" / "timeframes.yaml").write_text("x: 1\n")
    assert (
        resolve_settings(home=tmp_path / "cli", environ={}).config_dir
        == tmp_path / "cli" / "config"
    )
    # ...and the environment and CLI win over it.
    env_config = resolve_settings(
        home=tmp_path / "cli", environ={"REGIMES_CONFIG_DIR": str(CONFIG)}
    )
    assert env_config.config_dir == CONFIG
    assert (
        resolve_settings(
            home=tmp_path / "cli", config_dir=CONFIG, environ={"REGIMES_CONFIG_DIR": "/elsewhere"}
        ).config_dir
        == CONFIG
    )


def test_settings_resolve_the_state_store_and_its_credentials_once(tmp_path):
    local = resolve_settings(home=tmp_path, environ={"AWS_ACCESS_KEY_ID": "k"})
    assert local.states_uri == str(tmp_path.resolve() / "states") and local.states_are_local
    assert dict(local.storage_options) == {}  # AWS variables belong to object stores only
    remote = resolve_settings(
        home=tmp_path,
        environ={
            "REGIMES_STATES_URI": "s3://b/states",
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "secret",
        },
    )
    assert remote.states_uri == "s3://b/states" and not remote.states_are_local
    assert dict(remote.storage_options) == {
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "secret",
    }
    assert "secret" not in repr(remote)
    home = tmp_path.resolve()
    assert (local.models_dir, local.registry_root, local.reports_dir, local.prefect_home) == (
        home / "models",
        str(home / "registry"),
        home / "reports",
        home / "prefect",
    )


# --------------------------------------------------------------------------- default config


def test_default_config_dir_is_the_packaged_config_and_loads():
    """Editable install: the package data is the checkout's config/ itself, not a copy."""
    config_dir = default_config_dir()
    assert type(config_dir) is type(CONFIG) and config_dir.is_dir()
    assert config_dir == CONFIG
    for name in ("features.yaml", "timeframes.yaml", "metadata.schema.json"):
        assert (config_dir / name).read_bytes() == (CONFIG / name).read_bytes()
    assert load_config(config_dir).features.names == FIXED_FEATURES
    assert resolve_settings(home=CONFIG.parent / "nonexistent", environ={}).config_dir == CONFIG


def test_package_resource_dir_copies_a_zipped_package_to_a_real_directory(tmp_path, monkeypatch):
    """A package without a directory of its own (zip import) still gives a lasting Path."""
    archive = tmp_path / "bundle.zip"
    package = f"zipped_config_{tmp_path.name}"
    features = (CONFIG / "features.yaml").read_bytes()
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr(f"{package}/__init__.py", "")
        bundle.writestr(f"{package}/features.yaml", features)
    monkeypatch.syspath_prepend(str(archive))
    try:
        copied = package_resource_dir(package)
        assert not str(copied).startswith(str(archive)) and copied.is_dir()
        assert (copied / "features.yaml").read_bytes() == features
        assert package_resource_dir(package) == copied  # copied once per process
        assert load_feature_spec(copied / "features.yaml").names == FIXED_FEATURES
    finally:
        sys.modules.pop(package, None)


def test_a_missing_default_config_package_is_one_line_naming_it():
    with pytest.raises(ConfigError) as info:
        package_resource_dir("regimes.config.no_such_defaults")
    message = str(info.value)
    assert "regimes.config.no_such_defaults" in message and "REGIMES_CONFIG_DIR" in message
    assert "\n" not in message


def test_settings_resolve_the_models_root_and_its_cache(tmp_path):
    home = tmp_path.resolve()
    local = resolve_settings(home=tmp_path, environ={"AWS_ACCESS_KEY_ID": "k"})
    assert local.models_root == str(home / "models") and local.models_are_local
    assert local.models_dir == home / "models" and dict(local.models_options) == {}
    elsewhere = resolve_settings(home=tmp_path, environ={"REGIMES_MODELS_URI": "/srv/models"})
    assert elsewhere.models_dir == Path("/srv/models")
    remote = resolve_settings(
        home=tmp_path,
        environ={
            "REGIMES_MODELS_URI": "s3://b/models",
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "secret",
        },
    )
    assert remote.models_root == "s3://b/models" and not remote.models_are_local
    # Artifacts of an object store are read from (and verified in) the local cache.
    assert remote.models_dir == remote.models_cache_dir == home / ".cache" / "models"
    assert dict(remote.models_options) == {
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "secret",
    }
    assert "secret" not in repr(remote)
