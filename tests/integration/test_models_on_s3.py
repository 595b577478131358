"""Model artifacts on S3 (``REGIMES_MODELS_URI=s3://...``), against a real moto server:
uploaded with ``metadata.json`` last, downloaded and verified on every load, refused when
any object changed after registration."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import uuid
from contextlib import contextmanager

import pandas as pd
import pytest

from regimes.app.workspace import Workspace
from regimes.config.loading import load_config
from regimes.config.settings import storage_options_from_env
from regimes.data import sql as db
from regimes.data.bars import resample_symbols
from regimes.data.synth import SynthConfig, generate
from regimes.errors import ArtifactIntegrityError, BadInputError, StoreError
from regimes.features.store import plan_units, run_features
from regimes.live.engine import open_engine
from regimes.model.artifact import write_artifact
from regimes.model.loaded import LoadedModel
from regimes.model.store import ModelStore
from regimes.storage.registry import Registry
from regimes.training.train import train_timeframe
from tests.conftest import REPO_ROOT
from tests.integration.conftest import _free_port, moto_server
from tests.integration.test_cli import run

pytestmark = pytest.mark.integration
TIMEFRAME = "15m"
GRID = {"K": [6], "covariance": ["diag"]}
KEY = "models-on-s3-test-key"


def _client(endpoint: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


@pytest.fixture(scope="module")
def on_s3(s3_endpoint, tmp_path_factory):
    """One tiny 15m model trained with ``REGIMES_ARTIFACT_KEY`` set into a fresh bucket's
    ``models/`` prefix, registered with its ``s3://`` location; plus a local copy of the
    artifact as training wrote it (before any download)."""
    bucket = f"models-{uuid.uuid4().hex[:12]}"
    client = _client(s3_endpoint)
    client.create_bucket(Bucket=bucket)
    environ = {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "REGIMES_MODELS_URI": f"s3://{bucket}/models",
    }
    home = tmp_path_factory.mktemp("models-s3")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REGIMES_ARTIFACT_KEY", KEY)
        config = load_config(REPO_ROOT / "config")
        engine = db.make_engine(f"sqlite:///{home / 'regimes.db'}")
        db.create_schema(engine)
        market = generate(SynthConfig(symbols=2, days=25, seed=8), config.timeframes.session)
        db.upsert_bars(engine, market.bars)
        resample_symbols(engine, config.timeframes.session, 0.2, timeframes=[TIMEFRAME])
        run_features(engine, config, plan_units(engine, [TIMEFRAME]))
        root = environ["REGIMES_MODELS_URI"]
        options = storage_options_from_env(root, environ)
        store = ModelStore(root, options, home / ".cache" / "models")
        result = train_timeframe(engine, config, TIMEFRAME, store, grid=GRID, seed=1)
        written = store.write_root / f"timeframe={TIMEFRAME}" / f"model_id={result.model_id}"
        local_root = home / "local-models"
        shutil.copytree(written, local_root / f"timeframe={TIMEFRAME}" / written.name)
        registry = Registry(str(home / "registry"))
        registry.register(
            TIMEFRAME, result.model_id, artifact_path=result.path, actor="t", reason="test"
        )
        yield {
            "home": home,
            "engine": engine,
            "store": store,
            "result": result,
            "registry": registry,
            "local_root": local_root,
            "client": client,
            "bucket": bucket,
            "prefix": f"models/timeframe={TIMEFRAME}/model_id={result.model_id}",
            "environ": environ,
        }
    engine.dispose()
    client.close()


def _get(s3, name: str) -> bytes:
    return s3["client"].get_object(Bucket=s3["bucket"], Key=f"{s3['prefix']}/{name}")["Body"].read()


@contextmanager
def _objects_replaced(s3, replacements: dict[str, bytes | None]):
    """Objects of the registered model replaced (None: deleted), then put back."""
    client, bucket, prefix = s3["client"], s3["bucket"], s3["prefix"]
    originals = {name: _get(s3, name) for name in replacements}
    try:
        for name, data in replacements.items():
            if data is None:
                client.delete_object(Bucket=bucket, Key=f"{prefix}/{name}")
            else:
                client.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=data)
        yield
    finally:
        for name, data in originals.items():
            client.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=data)


def _load(s3) -> LoadedModel:
    result = s3["result"]
    return LoadedModel.load(s3["store"].artifact(TIMEFRAME, result.model_id, result.path))


@pytest.mark.timeout(120)
def test_models_on_s3_answer_as_the_local_artifact(on_s3, monkeypatch):
    monkeypatch.setenv("REGIMES_ARTIFACT_KEY", KEY)
    store, result, registry = on_s3["store"], on_s3["result"], on_s3["registry"]
    assert result.path == f"s3://{on_s3['bucket']}/{on_s3['prefix']}"
    assert registry.artifact_path(TIMEFRAME, result.model_id) == result.path
    listed = on_s3["client"].list_objects_v2(Bucket=on_s3["bucket"], Prefix=on_s3["prefix"])
    uploaded = sorted(item["Key"].rsplit("/", 1)[1] for item in listed["Contents"])
    assert {"metadata.json", "metadata.sha256", "metadata.sig", "hmm.pkl"} <= set(uploaded)
    assert [(a["model_id"], a["path"]) for a in store.list_artifacts()] == [
        (result.model_id, result.path)
    ]
    assert store.list_artifacts("1h") == []

    # Nothing in the cache: the model comes from S3 alone.
    shutil.rmtree(store.cache_dir)
    bars = db.read_bars(on_s3["engine"], TIMEFRAME)
    remote = open_engine(store, registry, TIMEFRAME, result.model_id)
    assert remote.model.path.is_relative_to(store.cache_dir)
    local_registry = Registry(str(on_s3["home"] / "local-registry"))
    local = open_engine(on_s3["local_root"], local_registry, TIMEFRAME, result.model_id)
    assert local.model.path.is_relative_to(on_s3["local_root"])
    pd.testing.assert_frame_equal(remote.replay_batch(bars), local.replay_batch(bars))


@pytest.mark.timeout(120)
def test_a_file_changed_on_s3_after_registration_is_refused(on_s3, monkeypatch):
    monkeypatch.setenv("REGIMES_ARTIFACT_KEY", KEY)
    model_id = on_s3["result"].model_id
    _load(on_s3)  # a good copy in the cache: it must not be what answers next
    changed = pickle.dumps({"not": "the fitted HMM"})
    with _objects_replaced(on_s3, {"hmm.pkl": changed}):
        with pytest.raises(ArtifactIntegrityError) as refused:
            _load(on_s3)
    message = str(refused.value)
    assert f"model_id {model_id}" in message
    assert f"{on_s3['result'].path}/hmm.pkl: sha256" in message
    assert "does not match" in message
    assert _load(on_s3).model_id == model_id  # put back: loads again


@pytest.mark.timeout(120)
def test_metadata_rewritten_to_match_a_changed_file_is_refused_by_its_signature(on_s3, monkeypatch):
    monkeypatch.setenv("REGIMES_ARTIFACT_KEY", KEY)
    changed = pickle.dumps({"not": "the fitted HMM"})
    metadata = json.loads(_get(on_s3, "metadata.json"))
    metadata["files"]["hmm.pkl"] = hashlib.sha256(changed).hexdigest()
    forged = json.dumps(metadata, sort_keys=True).encode()
    checksum = f"{hashlib.sha256(forged).hexdigest()}  metadata.json\n".encode()
    rewritten = {"hmm.pkl": changed, "metadata.json": forged, "metadata.sha256": checksum}

    with _objects_replaced(on_s3, rewritten):
        with pytest.raises(ArtifactIntegrityError, match="metadata.sig: signature does not match"):
            _load(on_s3)
    with _objects_replaced(on_s3, {**rewritten, "metadata.sig": None}):
        with pytest.raises(ArtifactIntegrityError, match="metadata.sig: missing") as refused:
            _load(on_s3)
    assert on_s3["result"].model_id in str(refused.value)


@pytest.mark.timeout(120)
def test_a_damaged_cache_is_replaced_by_what_s3_holds(on_s3, monkeypatch):
    monkeypatch.setenv("REGIMES_ARTIFACT_KEY", KEY)
    cached = _load(on_s3).path
    (cached / "hmm.pkl").write_bytes(b"damaged on the local disk")
    (cached / "stray.txt").write_bytes(b"left behind")
    model = _load(on_s3)
    assert model.path == cached
    assert (cached / "hmm.pkl").read_bytes() == _get(on_s3, "hmm.pkl")
    assert not (cached / "stray.txt").exists()
    assert not [p.name for p in cached.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.timeout(120)
def test_an_upload_cut_off_before_metadata_is_neither_listed_nor_loaded(on_s3, monkeypatch):
    monkeypatch.setenv("REGIMES_ARTIFACT_KEY", KEY)
    client, bucket, store = on_s3["client"], on_s3["bucket"], on_s3["store"]
    half = f"models/timeframe={TIMEFRAME}/model_id=15m-half-uploaded"
    client.put_object(Bucket=bucket, Key=f"{half}/hmm.pkl", Body=_get(on_s3, "hmm.pkl"))
    client.put_object(Bucket=bucket, Key=f"{half}/metadata.sig", Body=_get(on_s3, "metadata.sig"))
    try:
        assert [a["model_id"] for a in store.list_artifacts()] == [on_s3["result"].model_id]
        with pytest.raises(BadInputError, match="no artifact at s3://.*no metadata.json"):
            store.artifact(TIMEFRAME, "15m-half-uploaded")
    finally:
        client.delete_object(Bucket=bucket, Key=f"{half}/hmm.pkl")
        client.delete_object(Bucket=bucket, Key=f"{half}/metadata.sig")


@pytest.mark.timeout(120)
def test_a_model_id_on_s3_is_never_overwritten_with_other_files(on_s3, monkeypatch, tmp_path):
    monkeypatch.setenv("REGIMES_ARTIFACT_KEY", KEY)
    store, model_id = on_s3["store"], on_s3["result"].model_id
    other = write_artifact(tmp_path, TIMEFRAME, model_id, {"hmm.pkl": b"other"}, {"K": 2})
    with pytest.raises(ArtifactIntegrityError, match="already exists with different content"):
        store.publish(other, TIMEFRAME, model_id)
    assert _load(on_s3).model_id == model_id  # untouched


@pytest.mark.timeout(120)
def test_the_workspace_reads_models_from_regimes_models_uri(on_s3, monkeypatch):
    monkeypatch.setenv("REGIMES_ARTIFACT_KEY", KEY)
    home, result = on_s3["home"], on_s3["result"]
    with Workspace.open(home=home, environ=on_s3["environ"]) as workspace:
        store = workspace.model_store
        assert store.is_remote and store.root == on_s3["environ"]["REGIMES_MODELS_URI"]
        assert workspace.models_dir == home / ".cache" / "models"
        assert "models cache" in workspace.local_locations()
        path = store.artifact(TIMEFRAME, result.model_id)  # found by its place under the URI
        assert LoadedModel.load(path).model_id == result.model_id


@pytest.mark.timeout(60)
def test_an_s3_models_uri_nothing_answers_at_is_one_line_before_any_work(tmp_path):
    environ = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}",
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "REGIMES_MODELS_URI": "s3://nowhere/models",
    }
    refused = "REGIMES_MODELS_URI=s3://nowhere/models: bucket nowhere cannot be opened"
    with pytest.raises(StoreError, match=refused):
        Workspace.open(home=tmp_path, environ=environ)

    env = {**os.environ, **environ}
    result = run("train", "--timeframe", "15m", home=tmp_path, env=env, check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "REGIMES_MODELS_URI=s3://nowhere/models" in lines[0]
    assert "AWS_ENDPOINT_URL" in lines[0]
    assert not (tmp_path / "regimes.db").exists()  # refused before any work


@pytest.mark.timeout(60)
def test_an_s3_models_uri_of_a_missing_bucket_is_refused(s3_environ, tmp_path):
    environ = {**s3_environ, "REGIMES_MODELS_URI": "s3://no-such-bucket-here/models"}
    with pytest.raises(StoreError, match="bucket no-such-bucket-here does not exist"):
        Workspace.open(home=tmp_path, environ=environ)


@pytest.mark.timeout(120)
def test_an_s3_models_uri_that_refuses_the_credentials_is_refused_in_one_line(tmp_path):
    # A second moto server that checks credentials (the shared one accepts any).
    with moto_server(INITIAL_NO_AUTH_ACTION_COUNT="0") as endpoint:
        environ = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "not-a-known-key",
            "AWS_SECRET_ACCESS_KEY": "wrong",
            "AWS_REGION": "us-east-1",
            "REGIMES_MODELS_URI": "s3://models-bucket/models",
        }
        with pytest.raises(StoreError) as refused:
            Workspace.open(home=tmp_path, environ=environ)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("REGIMES_MODELS_URI=s3://models-bucket/models: bucket models-bucket")
    assert "ACCESS_DENIED" in message and "AWS_ACCESS_KEY_ID" in message
