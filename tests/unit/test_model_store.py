"""ModelStore over a local folder: the same answers as the artifact functions it wraps
(the S3 side runs against a real moto server in tests/integration/test_models_on_s3.py)."""

from __future__ import annotations

import pytest

from regimes.errors import BadInputError, ConfigError
from regimes.model.artifact import write_artifact
from regimes.model.store import ModelStore

pytestmark = pytest.mark.unit


def test_a_local_root_is_used_in_place(tmp_path):
    path = write_artifact(tmp_path, "1h", "m1", {"hmm.pkl": b"x"}, {"K": 3})
    store = ModelStore.of(tmp_path)
    assert not store.is_remote and store.write_root == tmp_path
    assert store.publish(path, "1h", "m1") == str(path)  # nothing to upload
    assert store.artifact("1h", "m1") == path
    assert store.artifact("1h", "other", registered=str(path)) == path  # the registry wins
    assert [a["model_id"] for a in store.list_artifacts("1h")] == ["m1"]
    assert ModelStore.of(store) is store
    store.check()  # a local root has nothing to reach


def test_a_missing_local_artifact_is_named(tmp_path):
    with pytest.raises(BadInputError, match=r"model m9 \(1h\): no artifact at .*model_id=m9"):
        ModelStore(tmp_path).artifact("1h", "m9")


def test_an_s3_root_needs_a_cache_and_names_its_locations(tmp_path):
    with pytest.raises(BadInputError, match="needs a cache_dir"):
        ModelStore("s3://bucket/models")
    store = ModelStore("s3://bucket/models/", {"AWS_SECRET_ACCESS_KEY": "secret"}, tmp_path)
    assert store.is_remote and store.write_root == tmp_path
    assert store.location("1d", "m1") == "s3://bucket/models/timeframe=1d/model_id=m1"
    assert "secret" not in repr(store)
    with pytest.raises(BadInputError, match="model_id"):
        store.location("1d", "../m1")


def test_an_s3_location_without_a_cache_is_a_config_error(tmp_path):
    registered = "s3://bucket/models/timeframe=1h/model_id=m1"
    with pytest.raises(ConfigError, match="REGIMES_MODELS_URI"):
        ModelStore(tmp_path).artifact("1h", "m1", registered=registered)
