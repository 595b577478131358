"""Model artifacts are written atomically, never overwritten, and verified before use."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest

from regimes.errors import ArtifactIntegrityError, BadInputError, ConfigError, UnsafeNameError
from regimes.model import artifact as artifacts
from regimes.model.artifact import (
    ARTIFACT_KEY_ENV,
    list_artifacts,
    load_pickle,
    read_file,
    verify_artifact,
    write_artifact,
)

pytestmark = pytest.mark.unit

TIMEFRAME = "1h"
MODEL_ID = "1h-20240301T0000Z-abababababab"


@pytest.fixture(autouse=True)
def _no_key(monkeypatch):
    """Tests start unsigned whatever the calling shell exports."""
    monkeypatch.delenv(ARTIFACT_KEY_ENV, raising=False)


def _files() -> dict[str, bytes]:
    return {
        "scaler.pkl": pickle.dumps({"center": [0.0, 1.0], "scale": [1.0, 2.0]}),
        "encoder.pkl": pickle.dumps({"weights": list(range(32))}),
        "hmm.pkl": pickle.dumps({"K": 3, "transmat": [[0.9, 0.05, 0.05]] * 3}),
        "feature_spec.yaml": b"version: 1\nfeatures: [ret_1, vol_20]\n",
    }


def _metadata(**overrides) -> dict:
    metadata = {
        "model_id": MODEL_ID,
        "timeframe": TIMEFRAME,
        "created_at": "2024-03-01T00:00:00Z",
        "K": 3,
        "d": 8,
        "metrics": {"loglik": -1234.5},
    }
    metadata.update(overrides)
    return metadata


def _write(root: Path, files=None, metadata=None, model_id: str = MODEL_ID) -> Path:
    return write_artifact(
        root, TIMEFRAME, model_id, _files() if files is None else files, metadata or _metadata()
    )


def _flip_byte(path: Path, index: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    position = len(data) // 2 if index is None else index
    data[position] ^= 0x01
    path.write_bytes(bytes(data))


def _parent_entries(root: Path) -> list[str]:
    parent = root / f"timeframe={TIMEFRAME}"
    return sorted(entry.name for entry in parent.iterdir()) if parent.exists() else []


# --------------------------------------------------------------------------- round trip


def test_round_trip_writes_the_layout_and_reads_every_file_back(tmp_path):
    files = _files()
    metadata = _metadata()
    path = _write(tmp_path, files, metadata)

    assert path == tmp_path / f"timeframe={TIMEFRAME}" / f"model_id={MODEL_ID}"
    assert sorted(p.name for p in path.iterdir()) == sorted(
        [*files, "metadata.json", "metadata.sha256"]
    )
    loaded = verify_artifact(path)
    assert loaded["files"] == {
        name: hashlib.sha256(data).hexdigest() for name, data in files.items()
    }
    assert {k: v for k, v in loaded.items() if k != "files"} == metadata
    assert "files" not in metadata, "the caller's dict is not modified"
    for name, data in files.items():
        assert read_file(path, name) == data
        assert read_file(path, name, loaded) == data
    assert load_pickle(path, "hmm.pkl")["K"] == 3
    # sha256sum format, so the shell can check it too
    digest, listed = (path / "metadata.sha256").read_text().split()
    assert listed == "metadata.json"
    assert digest == hashlib.sha256((path / "metadata.json").read_bytes()).hexdigest()


def test_same_inputs_give_byte_identical_artifacts(tmp_path):
    first = _write(tmp_path / "a")
    second = _write(tmp_path / "b")
    for name in sorted(p.name for p in first.iterdir()):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_metadata_files_entry_must_match_when_given(tmp_path):
    files = _files()
    hashes = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    assert verify_artifact(_write(tmp_path, files, _metadata(files=hashes)))["files"] == hashes
    wrong = {**hashes, "hmm.pkl": "0" * 64}
    with pytest.raises(BadInputError, match="metadata\\['files'\\]"):
        _write(tmp_path / "other", files, _metadata(files=wrong))


@pytest.mark.parametrize(
    ("metadata", "match"),
    [
        ({"when": object()}, "not JSON-serialisable"),
        ({"loglik": float("nan")}, "not JSON-serialisable"),
        (["not", "a", "dict"], "expected a dict"),
    ],
)
def test_metadata_must_be_a_plain_json_dict(tmp_path, metadata, match):
    with pytest.raises(BadInputError, match=match):
        write_artifact(tmp_path, TIMEFRAME, MODEL_ID, _files(), metadata)
    assert not tmp_path.joinpath(f"timeframe={TIMEFRAME}").exists()


# --------------------------------------------------------------------------- existing ids


def test_rewriting_the_same_files_is_a_no_op(tmp_path):
    path = _write(tmp_path)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in path.iterdir()}
    # Metadata outside `files` (here created_at) does not make it a different artifact.
    again = _write(tmp_path, metadata=_metadata(created_at="2025-01-01T00:00:00Z"))
    assert again == path
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in path.iterdir()} == before
    assert _parent_entries(tmp_path) == [f"model_id={MODEL_ID}"]


def test_different_content_under_an_existing_model_id_is_refused(tmp_path):
    path = _write(tmp_path)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    changed = {**_files(), "hmm.pkl": pickle.dumps({"K": 4})}
    with pytest.raises(
        ArtifactIntegrityError,
        match=f"model_id {MODEL_ID} already exists with different content.*hmm.pkl",
    ):
        _write(tmp_path, changed)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert _parent_entries(tmp_path) == [f"model_id={MODEL_ID}"]


def test_rewrite_over_a_damaged_artifact_is_refused(tmp_path):
    path = _write(tmp_path)
    _flip_byte(path / "encoder.pkl")
    with pytest.raises(ArtifactIntegrityError, match="fails verification.*encoder.pkl"):
        _write(tmp_path)


def test_existing_directory_without_metadata_is_refused(tmp_path):
    final = tmp_path / f"timeframe={TIMEFRAME}" / f"model_id={MODEL_ID}"
    final.mkdir(parents=True)
    with pytest.raises(ArtifactIntegrityError, match="metadata.json: missing"):
        _write(tmp_path)
    assert list(final.iterdir()) == []


# --------------------------------------------------------------------------- damage


@pytest.mark.parametrize(
    "name",
    [
        "scaler.pkl",
        "encoder.pkl",
        "hmm.pkl",
        "feature_spec.yaml",
        "metadata.json",
        "metadata.sha256",
    ],
)
def test_one_changed_byte_in_any_file_is_refused_naming_it(tmp_path, name):
    path = _write(tmp_path)
    _flip_byte(path / name)
    with pytest.raises(ArtifactIntegrityError, match=name.replace(".", "\\.")):
        verify_artifact(path)


@pytest.mark.parametrize("index", [0, 10, -2])
def test_changed_byte_in_metadata_json_is_caught_wherever_it_is(tmp_path, index):
    path = _write(tmp_path)
    _flip_byte(path / "metadata.json", index)
    with pytest.raises(ArtifactIntegrityError, match="metadata\\.json: sha256"):
        verify_artifact(path)


def test_truncated_file_is_refused(tmp_path):
    path = _write(tmp_path)
    data = (path / "hmm.pkl").read_bytes()
    (path / "hmm.pkl").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactIntegrityError, match="hmm\\.pkl: sha256 .* does not match"):
        verify_artifact(path)
    with pytest.raises(ArtifactIntegrityError, match="hmm\\.pkl: sha256"):
        read_file(path, "hmm.pkl")


def test_empty_file_is_refused(tmp_path):
    path = _write(tmp_path)
    (path / "scaler.pkl").write_bytes(b"")
    with pytest.raises(ArtifactIntegrityError, match="scaler\\.pkl: sha256"):
        verify_artifact(path)


def test_missing_file_is_refused(tmp_path):
    path = _write(tmp_path)
    (path / "encoder.pkl").unlink()
    with pytest.raises(ArtifactIntegrityError, match="encoder\\.pkl: listed in metadata.json"):
        verify_artifact(path)
    with pytest.raises(ArtifactIntegrityError, match="encoder\\.pkl: missing"):
        read_file(path, "encoder.pkl")


@pytest.mark.parametrize("missing", ["metadata.json", "metadata.sha256"])
def test_missing_metadata_files_are_refused(tmp_path, missing):
    path = _write(tmp_path)
    (path / missing).unlink()
    with pytest.raises(ArtifactIntegrityError, match=f"{missing}: missing"):
        verify_artifact(path)


def test_unparsable_metadata_is_refused_even_with_a_matching_checksum(tmp_path):
    path = _write(tmp_path)
    broken = b'{"files": '
    (path / "metadata.json").write_bytes(broken)
    (path / "metadata.sha256").write_text(f"{hashlib.sha256(broken).hexdigest()}  metadata.json\n")
    with pytest.raises(ArtifactIntegrityError, match="metadata.json: not valid JSON"):
        verify_artifact(path)


@pytest.mark.parametrize(
    ("document", "match"),
    [
        ([1, 2], "expected a JSON object"),
        ({"K": 3}, "'files' missing or not an object"),
        ({"files": {"hmm.pkl": "not-a-digest"}}, "is not a sha256 hex digest"),
    ],
)
def test_malformed_metadata_is_refused(tmp_path, document, match):
    path = _write(tmp_path)
    _rewrite_metadata_consistently(path, document)
    with pytest.raises(ArtifactIntegrityError, match=f"metadata.json.*{match}"):
        verify_artifact(path)


def test_checksum_file_without_a_digest_is_refused(tmp_path):
    path = _write(tmp_path)
    (path / "metadata.sha256").write_text("\n")
    with pytest.raises(ArtifactIntegrityError, match="metadata.sha256: does not hold"):
        verify_artifact(path)


def test_metadata_listing_a_path_outside_the_artifact_is_refused(tmp_path):
    """Without a key, metadata can be rewritten: it still cannot point outside."""
    path = _write(tmp_path)
    (tmp_path / "secret").write_bytes(b"secret")
    metadata = json.loads((path / "metadata.json").read_bytes())
    metadata["files"]["../../secret"] = hashlib.sha256(b"secret").hexdigest()
    _rewrite_metadata_consistently(path, metadata)
    with pytest.raises(ArtifactIntegrityError, match="path separator"):
        verify_artifact(path)
    with pytest.raises(BadInputError, match="path separator"):
        read_file(path, "../../secret")


@pytest.mark.parametrize("extra", ["notes.txt", ".DS_Store", "subdir"])
def test_extra_file_is_refused_naming_it(tmp_path, extra):
    path = _write(tmp_path)
    if extra == "subdir":
        (path / extra).mkdir()
    else:
        (path / extra).write_bytes(b"x")
    with pytest.raises(ArtifactIntegrityError, match=f"unlisted file\\(s\\) {extra}"):
        verify_artifact(path)


def test_symlinked_file_is_refused(tmp_path):
    path = _write(tmp_path)
    outside = tmp_path / "hmm-copy.pkl"
    shutil.copyfile(path / "hmm.pkl", outside)
    (path / "hmm.pkl").unlink()
    (path / "hmm.pkl").symlink_to(outside)
    with pytest.raises(ArtifactIntegrityError, match="hmm\\.pkl: is a symbolic link"):
        verify_artifact(path)
    with pytest.raises(ArtifactIntegrityError, match="hmm\\.pkl: is a symbolic link"):
        read_file(path, "hmm.pkl")


def test_read_file_refuses_a_name_that_is_not_listed(tmp_path):
    path = _write(tmp_path)
    with pytest.raises(ArtifactIntegrityError, match="encoder\\.onnx: not listed"):
        read_file(path, "encoder.onnx")


def test_missing_directory_is_refused(tmp_path):
    with pytest.raises(ArtifactIntegrityError, match="not an artifact directory"):
        verify_artifact(tmp_path / "nowhere")


# --------------------------------------------------------------------------- signing


def _rewrite_metadata_consistently(path: Path, metadata: dict) -> None:
    """What an attacker without the key can do: edit metadata and recompute checksums."""
    data = (json.dumps(metadata, indent=2, sort_keys=True) + "\n").encode()
    (path / "metadata.json").write_bytes(data)
    (path / "metadata.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  metadata.json\n")


def test_signature_is_written_and_verified(tmp_path, monkeypatch):
    monkeypatch.setenv(ARTIFACT_KEY_ENV, "k3y")
    path = _write(tmp_path)
    expected = hmac.new(b"k3y", (path / "metadata.json").read_bytes(), hashlib.sha256)
    assert (path / "metadata.sig").read_text().strip() == expected.hexdigest()
    assert verify_artifact(path)["K"] == 3
    assert read_file(path, "feature_spec.yaml") == _files()["feature_spec.yaml"]


def test_key_is_read_at_call_time(tmp_path, monkeypatch):
    unsigned = _write(tmp_path / "a")
    assert not (unsigned / "metadata.sig").exists()
    monkeypatch.setenv(ARTIFACT_KEY_ENV, "k3y")
    assert (_write(tmp_path / "b") / "metadata.sig").exists()
    with pytest.raises(ArtifactIntegrityError, match="metadata.sig: missing"):
        verify_artifact(unsigned)


def test_consistently_rehashed_tampering_is_refused_under_a_key(tmp_path, monkeypatch):
    monkeypatch.setenv(ARTIFACT_KEY_ENV, "k3y")
    path = _write(tmp_path)
    swapped = pickle.dumps({"K": 9})
    (path / "hmm.pkl").write_bytes(swapped)
    metadata = json.loads((path / "metadata.json").read_bytes())
    metadata["files"]["hmm.pkl"] = hashlib.sha256(swapped).hexdigest()
    _rewrite_metadata_consistently(path, metadata)

    with pytest.raises(ArtifactIntegrityError, match="metadata.sig: signature does not match"):
        verify_artifact(path)
    with pytest.raises(ArtifactIntegrityError, match="metadata.sig"):
        load_pickle(path, "hmm.pkl")
    # Without the key the same directory is internally consistent: only the key protects.
    monkeypatch.delenv(ARTIFACT_KEY_ENV)
    assert load_pickle(path, "hmm.pkl") == {"K": 9}


def test_missing_signature_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(ARTIFACT_KEY_ENV, "k3y")
    path = _write(tmp_path)
    (path / "metadata.sig").unlink()
    with pytest.raises(ArtifactIntegrityError, match="metadata.sig: missing"):
        verify_artifact(path)
    with pytest.raises(ArtifactIntegrityError, match="metadata.sig: missing"):
        read_file(path, "hmm.pkl")


def test_wrong_key_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(ARTIFACT_KEY_ENV, "k3y")
    path = _write(tmp_path)
    monkeypatch.setenv(ARTIFACT_KEY_ENV, "another-key")
    with pytest.raises(ArtifactIntegrityError, match="metadata.sig: signature does not match"):
        verify_artifact(path)


def test_garbage_signature_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(ARTIFACT_KEY_ENV, "k3y")
    path = _write(tmp_path)
    (path / "metadata.sig").write_bytes("ünïcode\n".encode())
    with pytest.raises(ArtifactIntegrityError, match="metadata.sig: signature does not match"):
        verify_artifact(path)


def test_rewrite_of_an_unsigned_artifact_under_a_key_is_refused(tmp_path, monkeypatch):
    _write(tmp_path)
    monkeypatch.setenv(ARTIFACT_KEY_ENV, "k3y")
    with pytest.raises(ArtifactIntegrityError, match="fails verification.*metadata.sig: missing"):
        _write(tmp_path)


def test_empty_key_is_a_configuration_error(tmp_path, monkeypatch):
    monkeypatch.setenv(ARTIFACT_KEY_ENV, "")
    with pytest.raises(ConfigError, match=ARTIFACT_KEY_ENV):
        _write(tmp_path)
    assert not tmp_path.joinpath(f"timeframe={TIMEFRAME}").exists()


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "name",
    [
        "",
        "..",
        ".",
        "../hmm.pkl",
        "sub/hmm.pkl",
        "/etc/passwd",
        "sub\\hmm.pkl",
        "a..b",
        ".hidden",
        "hmm.pkl\x00",
        "has space.pkl",
        "metadata.json",
        "metadata.sig",
        "metadata.sha256",
        "METADATA.JSON",
        "x" * 200,
        7,
    ],
)
def test_unsafe_file_names_are_refused_before_anything_is_written(tmp_path, name):
    files = {**_files(), name: b"payload"}
    with pytest.raises(BadInputError, match="artifact file name"):
        _write(tmp_path, files)
    assert not tmp_path.joinpath(f"timeframe={TIMEFRAME}").exists()


@pytest.mark.parametrize(
    ("files", "match"),
    [({}, "non-empty mapping"), ({"hmm.pkl": "text, not bytes"}, "expected bytes")],
)
def test_files_must_be_a_non_empty_mapping_of_bytes(tmp_path, files, match):
    with pytest.raises(BadInputError, match=match):
        _write(tmp_path, files)


def test_unsafe_model_id_and_timeframe_are_refused(tmp_path):
    with pytest.raises(UnsafeNameError, match="model_id"):
        write_artifact(tmp_path, TIMEFRAME, "../escape", _files(), _metadata())
    with pytest.raises(UnsafeNameError, match="timeframe"):
        write_artifact(tmp_path, "2h", MODEL_ID, _files(), _metadata())
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- crashes


@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()])
def test_crash_while_writing_files_leaves_nothing_behind(tmp_path, monkeypatch, failure):
    real_write = artifacts._write_synced
    written: list[str] = []

    def write_then_fail(path, data):
        if written:
            raise failure
        real_write(path, data)
        written.append(path.name)

    with monkeypatch.context() as patch, pytest.raises(type(failure)):
        patch.setattr(artifacts, "_write_synced", write_then_fail)
        _write(tmp_path)
    assert written, "the failure came after a file was on disk"
    assert _parent_entries(tmp_path) == [], "neither the final nor a temporary directory"
    verify_artifact(_write(tmp_path))


def test_crash_at_the_rename_leaves_nothing_behind(tmp_path, monkeypatch):
    seen: list[tuple[str, list[str]]] = []

    def failing_rename(source, destination):
        seen.append((Path(source).name, sorted(os.listdir(source))))
        raise OSError("power cut")

    with monkeypatch.context() as patch, pytest.raises(OSError, match="power cut"):
        patch.setattr(artifacts.os, "rename", failing_rename)
        _write(tmp_path)

    ((temporary, contents),) = seen
    assert temporary.startswith(f".model_id={MODEL_ID}.tmp-")
    assert "metadata.json" in contents and "hmm.pkl" in contents
    assert _parent_entries(tmp_path) == []
    assert list_artifacts(tmp_path) == []


def test_losing_a_race_to_an_identical_writer_is_a_no_op(tmp_path, monkeypatch):
    real_rename = os.rename

    def other_writer_finishes_first(source, destination):
        shutil.copytree(source, destination)  # the other writer's identical artifact
        real_rename(source, destination)  # now fails: the destination is not empty

    with monkeypatch.context() as patch:
        patch.setattr(artifacts.os, "rename", other_writer_finishes_first)
        path = _write(tmp_path)
    assert _parent_entries(tmp_path) == [f"model_id={MODEL_ID}"]
    verify_artifact(path)


def test_losing_a_race_to_a_different_writer_is_refused(tmp_path, monkeypatch):
    real_rename = os.rename

    def other_writer_finishes_first(source, destination):
        other = tmp_path / "other"
        other.mkdir()
        (other / "hmm.pkl").write_bytes(b"other")
        metadata = json.dumps({"files": {"hmm.pkl": hashlib.sha256(b"other").hexdigest()}})
        (other / "metadata.json").write_text(metadata)
        (other / "metadata.sha256").write_text(
            f"{hashlib.sha256(metadata.encode()).hexdigest()}  metadata.json\n"
        )
        real_rename(other, destination)  # the other writer wins
        real_rename(source, destination)  # ours now fails: the destination is not empty

    with (
        monkeypatch.context() as patch,
        pytest.raises(ArtifactIntegrityError, match="already exists with different content"),
    ):
        patch.setattr(artifacts.os, "rename", other_writer_finishes_first)
        _write(tmp_path)
    assert _parent_entries(tmp_path) == [f"model_id={MODEL_ID}"]
    assert verify_artifact(tmp_path / f"timeframe={TIMEFRAME}" / f"model_id={MODEL_ID}")[
        "files"
    ].keys() == {"hmm.pkl"}


# --------------------------------------------------------------------------- pickles


class _MakesDirectoryWhenUnpickled:
    """Unpickling this runs ``os.mkdir(target)``: a visible side effect."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_load_pickle_refuses_tampered_bytes_before_unpickling_them(tmp_path):
    path = _write(tmp_path)
    marker = tmp_path / "unpickled"
    hostile = pickle.dumps(_MakesDirectoryWhenUnpickled(marker))
    (path / "hmm.pkl").write_bytes(hostile)

    with pytest.raises(ArtifactIntegrityError, match="hmm\\.pkl: sha256"):
        load_pickle(path, "hmm.pkl")
    assert not marker.exists(), "the tampered bytes were unpickled"

    # The control: these bytes really do run code when unpickled.
    pickle.loads(hostile)
    assert marker.is_dir()


def test_load_pickle_reports_verified_bytes_that_do_not_unpickle(tmp_path):
    path = _write(tmp_path, {"hmm.pkl": b"not a pickle"})
    with pytest.raises(ArtifactIntegrityError, match="hmm\\.pkl: checksum verified but"):
        load_pickle(path, "hmm.pkl")


# --------------------------------------------------------------------------- listing


def test_list_artifacts_skips_temporary_and_foreign_directories(tmp_path):
    _write(tmp_path)
    write_artifact(tmp_path, "1d", "daily-1", {"hmm.pkl": b"d"}, {"created_at": "2024-01-01"})
    write_artifact(tmp_path, "1m", "minute-1", {"hmm.pkl": b"m"}, {})
    hourly = tmp_path / f"timeframe={TIMEFRAME}"
    (hourly / f".model_id=half-done{artifacts._TEMP_MARKER}abc").mkdir()
    (hourly / "not-a-model").mkdir()
    (tmp_path / "timeframe=2h" / "model_id=x").mkdir(parents=True)

    listed = list_artifacts(tmp_path)
    assert [(a["timeframe"], a["model_id"], a["created_at"]) for a in listed] == [
        ("1m", "minute-1", None),
        ("1h", MODEL_ID, "2024-03-01T00:00:00Z"),
        ("1d", "daily-1", "2024-01-01"),
    ]
    assert listed[1]["path"] == hourly / f"model_id={MODEL_ID}"
    assert [a["model_id"] for a in list_artifacts(tmp_path, "1d")] == ["daily-1"]
    assert list_artifacts(tmp_path, "5m") == []
    assert list_artifacts(tmp_path / "missing") == []
    with pytest.raises(UnsafeNameError, match="timeframe"):
        list_artifacts(tmp_path, "2h")
