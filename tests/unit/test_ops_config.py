"""config/gates.yaml and config/serve.yaml: parsed once, typed, and a bad value names the
file and the field."""

from __future__ import annotations

import pytest

from regimes.config.gates import load_gates
from regimes.config.serving import load_serve_config
from regimes.errors import ConfigError
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.unit


def test_the_shipped_files_parse_and_overrides_apply():
    gates = load_gates(REPO_ROOT / "config")
    assert gates.for_timeframe("1d").min_rows == 40
    assert gates.for_timeframe("1m").min_rows == gates.for_timeframe("5m").min_rows
    serve = load_serve_config(REPO_ROOT / "config")
    assert serve.host == "127.0.0.1" and serve.shards["1m"] >= 1


def test_missing_files_give_the_defaults(tmp_path):
    assert load_gates(tmp_path).for_timeframe("1h").bins == 10
    assert load_serve_config(tmp_path).port == 8000


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("gates.yaml", "timeframes: {1m: {feature_psi: -1}}", "timeframes.1m: feature_psi"),
        ("gates.yaml", "timeframes: {2m: {bins: 5}}", "unknown timeframe(s) ['2m']"),
        ("gates.yaml", "defaults: {shadow_agreement: 2}", "shadow_agreement"),
        ("gates.yaml", "defaults: {bins: 10, colour: red}", "colour"),
        ("serve.yaml", "shards: {1m: 0}", "shards per timeframe must be 1..64"),
        ("serve.yaml", "port: 70000", "port"),
        ("serve.yaml", "host: [1, 2]", "host"),
    ],
)
def test_bad_values_name_file_and_field(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    load = load_gates if name == "gates.yaml" else load_serve_config
    with pytest.raises(ConfigError) as caught:
        load(tmp_path)
    assert str(tmp_path / name) in str(caught.value) and message in str(caught.value)
