"""Models are self-contained: an artifact carries every setting that shapes its answers,
holds no absolute path, is refused at load when any part of it does not verify, and
stores each fitted object once."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pandas as pd
import pytest

from regimes.answers import answer_fields
from regimes.config.loading import load_config
from regimes.data import sql as db
from regimes.data.bars import resample_symbols
from regimes.data.synth import SynthConfig, generate
from regimes.errors import ArtifactIntegrityError
from regimes.features.batch import compute_batch
from regimes.features.store import plan_units, run_features
from regimes.live.engine import InferenceEngine, open_engine
from regimes.model.artifact import read_file, verify_artifact, write_artifact
from regimes.model.loaded import FORMAT_VERSION, LoadedModel
from regimes.storage.registry import Registry
from regimes.training.train import train_timeframe
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration
GRID = {"K": [6], "covariance": ["diag"]}
DERIVED_FROM_CREATED_AT = {"metadata.json", "metadata.sha256", "metadata.sig"}


def _train_in(home: Path, config_dir: Path):
    """Copy the repo's config to ``config_dir``, build a home's database from the same
    synthetic market and train a small 15m model there."""
    shutil.copytree(REPO_ROOT / "config", config_dir)
    config = load_config(config_dir)
    engine = db.make_engine(f"sqlite:///{home / 'regimes.db'}")
    db.create_schema(engine)
    market = generate(
        SynthConfig(symbols=2, days=25, seed=8, missing_rate=0.01), config.timeframes.session
    )
    db.upsert_bars(engine, market.bars)
    resample_symbols(engine, config.timeframes.session, 0.2, timeframes=["15m"])
    run_features(engine, config, plan_units(engine, ["15m"]))
    result = train_timeframe(engine, config, "15m", home / "models", grid=GRID, seed=1)
    return engine, config, result


def _with_rv_15_window(text: str, old: str, new: str) -> str:
    """``text`` (a feature spec in YAML) with rv_15's window ``old`` replaced by ``new``."""
    start = text.index("  rv_15:\n")
    at = text.index(old, start)
    assert at < text.index("  rv_60:\n"), "rv_15's window not found in its own entry"
    return text[:at] + new + text[at + len(old) :]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    home = tmp_path_factory.mktemp("home_a")
    engine, config, result = _train_in(home, tmp_path_factory.mktemp("clone_a") / "config")
    yield home, engine, config, result
    engine.dispose()


def test_editing_the_config_leaves_a_models_answers_bit_identical(trained, tmp_path):
    home, engine, config, result = trained
    registry = Registry(str(home / "registry"))
    registry.register("15m", result.model_id, artifact_path=result.path, actor="t", reason="test")
    bars = db.read_bars(engine, "15m")
    before = open_engine(home / "models", registry, "15m", result.model_id).replay_batch(bars)
    assert LoadedModel.load(result.path).differences_from(config) == []

    edited_dir = tmp_path / "config"
    shutil.copytree(config.source_dir, edited_dir)
    spec_file = edited_dir / "features.yaml"
    spec_file.write_text(_with_rv_15_window(spec_file.read_text(), "{n: 15}", "{n: 5}"))
    edited = load_config(edited_dir)
    # The edit matters: today's spec computes other rv_15 values from the same bars.
    model = LoadedModel.load(result.path)
    ours = compute_batch(bars, model.feature_spec, model.session, ["rv_15"])["rv_15"]
    theirs = compute_batch(bars, edited.features, edited.timeframes.session, ["rv_15"])["rv_15"]
    assert not ours.equals(theirs)

    after = open_engine(home / "models", registry, "15m", result.model_id).replay_batch(bars)
    pd.testing.assert_frame_equal(before, after)
    differences = LoadedModel.load(result.path).differences_from(edited)
    assert differences == ["features.rv_15.windows.n: model 15, config 5"]


def test_the_answer_frame_has_the_schemas_columns(trained):
    _, engine, _, result = trained
    model = LoadedModel.load(result.path)
    answers = InferenceEngine(model).replay_batch(db.read_bars(engine, "15m"))
    assert list(answers.columns) == [f.name for f in answer_fields(model.d, model.K)]
    assert answers["state_id"].dtype == "int64" and answers["is_unknown"].dtype == bool


def test_the_same_inputs_from_two_clones_give_the_same_model_and_bytes(trained, tmp_path_factory):
    home_a, _, config_a, first = trained
    home_b = tmp_path_factory.mktemp("home_b")
    engine_b, config_b, second = _train_in(home_b, tmp_path_factory.mktemp("clone_b") / "config")
    engine_b.dispose()
    assert config_a.source_dir != config_b.source_dir
    assert second.model_id == first.model_id
    a, b = Path(first.path), Path(second.path)
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in set(names) - DERIVED_FROM_CREATED_AT:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    meta_a, meta_b = verify_artifact(a), verify_artifact(b)
    meta_a.pop("created_at"), meta_b.pop("created_at")  # the wall clock, and only it
    assert meta_a == meta_b
    # No location of either home or config directory is stored anywhere.
    for path, places in ((a, (home_a, config_a.source_dir)), (b, (home_b, config_b.source_dir))):
        for name in names:
            data = (path / name).read_bytes()
            for place in places:
                assert str(place).encode() not in data, (name, place)
                assert str(place.parent).encode() not in data, (name, place.parent)


def test_each_fitted_object_is_stored_once(trained):
    _, _, _, result = trained
    path = Path(result.path)
    metadata = verify_artifact(path)
    assert metadata["format_version"] == FORMAT_VERSION
    assert set(metadata["files"]) == {
        "scaler.pkl",
        "encoder.pkl",
        "encoder.onnx",
        "hmm.pkl",
        "feature_spec.yaml",
        "resolved_config.json",
    }
    model = LoadedModel.load(path)
    owners = {
        "scaler.pkl": type(model.pipeline.scaler_).__name__,
        "encoder.pkl": type(model.pipeline.encoder_).__name__,
        "hmm.pkl": type(model.hmm).__name__,
    }
    for name, class_name in owners.items():
        for other in owners:
            pickled = (path / other).read_bytes()
            assert (class_name.encode() in pickled) == (other == name), (class_name, other)
    scaler = pickle.loads((path / "scaler.pkl").read_bytes())
    assert type(scaler).__name__ == owners["scaler.pkl"]


def _rewritten(result, tmp_path, *, metadata=None, files=None, before_writing=None) -> Path:
    """A copy of the trained artifact written through write_artifact with some metadata
    or files replaced (consistent checksums: only the content is wrong)."""
    source = Path(result.path)
    original = verify_artifact(source)
    contents = {name: read_file(source, name, original) for name in original["files"]}
    contents.update(files or {})
    document = {k: v for k, v in original.items() if k != "files"}
    document.update(metadata or {})
    for key in [k for k, v in document.items() if v is _DROP]:
        del document[key]
    if before_writing is not None:
        before_writing()
    return write_artifact(tmp_path / "models", "15m", result.model_id, contents, document)


_DROP = object()


@pytest.mark.parametrize("version", [_DROP, 1, FORMAT_VERSION + 1, "2"])
def test_an_artifact_of_another_format_is_refused_with_retrain(trained, tmp_path, version):
    _, _, _, result = trained
    path = _rewritten(result, tmp_path, metadata={"format_version": version})
    with pytest.raises(ArtifactIntegrityError) as caught:
        LoadedModel.load(path)
    message = str(caught.value)
    assert str(path / "metadata.json") in message and "retrain" in message
    assert result.model_id in message and "\n" not in message


def test_a_feature_spec_that_does_not_match_its_fingerprint_is_refused(trained, tmp_path):
    _, _, _, result = trained
    spec = (Path(result.path) / "feature_spec.yaml").read_text()
    edited = _with_rv_15_window(spec, "n: 15", "n: 5").encode()
    path = _rewritten(result, tmp_path, files={"feature_spec.yaml": edited})
    with pytest.raises(ArtifactIntegrityError, match=r"feature_spec\.yaml: fingerprint"):
        LoadedModel.load(path)


def test_a_feature_spec_that_does_not_parse_is_refused_naming_the_file(trained, tmp_path):
    _, _, _, result = trained
    path = _rewritten(result, tmp_path, files={"feature_spec.yaml": b"version: 1\nfeatures: {}\n"})
    with pytest.raises(ArtifactIntegrityError, match=r"feature_spec\.yaml: features"):
        LoadedModel.load(path)


def test_a_damaged_setting_is_refused_naming_the_file(trained, tmp_path):
    _, _, _, result = trained
    resolved = json.loads((Path(result.path) / "resolved_config.json").read_bytes())
    del resolved["pipeline"]
    path = _rewritten(
        result, tmp_path, files={"resolved_config.json": json.dumps(resolved).encode()}
    )
    with pytest.raises(ArtifactIntegrityError, match=r"resolved_config\.json: malformed"):
        LoadedModel.load(path)


@pytest.mark.parametrize("name", ["scaler.pkl", "encoder.pkl", "hmm.pkl", "feature_spec.yaml"])
def test_a_tampered_file_is_refused_at_load_naming_it(trained, tmp_path, name):
    _, _, _, result = trained
    copy = tmp_path / "artifact"
    shutil.copytree(result.path, copy)
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match=name.replace(".", r"\.")):
        LoadedModel.load(copy)


def test_a_signed_model_loads_only_under_its_key(trained, tmp_path, monkeypatch):
    _, _, _, result = trained
    path = _rewritten(
        result,
        tmp_path,
        before_writing=lambda: monkeypatch.setenv("REGIMES_ARTIFACT_KEY", "a key"),
    )
    assert (path / "metadata.sig").is_file()
    assert LoadedModel.load(path).model_id == result.model_id
    monkeypatch.setenv("REGIMES_ARTIFACT_KEY", "another key")
    with pytest.raises(ArtifactIntegrityError, match=r"metadata\.sig: signature does not match"):
        LoadedModel.load(path)
