"""Verified, atomic model-artifact directories (plan tasks 4.8 and 5.5).

An artifact is a closed set of files under ``models/timeframe=<tf>/model_id=<id>/``::

    scaler.pkl, encoder.pkl, encoder.onnx, hmm.pkl, feature_spec.yaml, ...
    metadata.json     caller's metadata plus ``files: {name: sha256}`` of every file above
    metadata.sha256   sha256 of metadata.json, in ``sha256sum`` format
    metadata.sig      HMAC-SHA256 (hex) of metadata.json, only when a key is configured

:func:`write_artifact` builds the directory under a hidden temporary name beside its
final place, fsyncs it and renames it into place, so the final path either does not
exist or holds a complete artifact. Readers go through :func:`verify_artifact`,
:func:`read_file` or :func:`load_pickle`, which check checksums (and the signature, when
``REGIMES_ARTIFACT_KEY`` is set) before any byte is returned or unpickled.

``metadata.sha256`` catches accidental damage to ``metadata.json`` (a flipped bit, a
truncated copy); only the HMAC signature protects against deliberate tampering, since
anyone who can edit the directory can also recompute plain checksums.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import pickle
import re
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from regimes.errors import ArtifactIntegrityError, BadInputError, ConfigError, UnsafeNameError
from regimes.model.encoders.base import file_sha256
from regimes.paths import artifact_dir, check_model_id, check_timeframe_name
from regimes.timeframes import TIMEFRAMES

logger = logging.getLogger(__name__)

ARTIFACT_KEY_ENV = "REGIMES_ARTIFACT_KEY"
METADATA_FILE = "metadata.json"
METADATA_CHECKSUM_FILE = "metadata.sha256"
SIGNATURE_FILE = "metadata.sig"
RESERVED_NAMES = frozenset({METADATA_FILE, METADATA_CHECKSUM_FILE, SIGNATURE_FILE})

MAX_FILE_NAME_LENGTH = 128
# Plain names only: no separators, no leading '.' (hidden and temporary entries start
# with one), nothing a shell or a partition reader would treat specially.
_FILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_TEMP_MARKER = ".tmp-"


# --------------------------------------------------------------------------- names and keys


def _file_name_problem(name: Any) -> str | None:
    """Why ``name`` cannot be an artifact member, or None if it can."""
    if not isinstance(name, str):
        return f"expected a string, got {type(name).__name__}"
    if name == "":
        return "empty name"
    if len(name) > MAX_FILE_NAME_LENGTH:
        return f"{len(name)} characters, at most {MAX_FILE_NAME_LENGTH} allowed"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if ".." in name:
        return "contains '..'"
    if name.lower() in RESERVED_NAMES:
        return f"reserved for the artifact itself ({', '.join(sorted(RESERVED_NAMES))})"
    if not _FILE_NAME_RE.match(name):
        return "only letters, digits and . _ - are allowed, starting with a letter or digit"
    return None


def check_file_name(name: Any) -> str:
    """Return ``name`` if it can be a file of an artifact, else raise :class:`BadInputError`.

    Parameters
    ----------
    name : str
        A plain file name such as ``"hmm.pkl"``.

    Raises
    ------
    BadInputError
        If ``name`` is empty, not a string, contains a path separator or ``..``, starts
        with ``.``, or is one of the artifact's own files (``metadata.json``,
        ``metadata.sha256``, ``metadata.sig``).
    """
    problem = _file_name_problem(name)
    if problem is not None:
        raise BadInputError(f"artifact file name {name!r}: {problem}")
    return name


def _artifact_key() -> bytes | None:
    """The signing key from the environment, read at call time (None when unset)."""
    key = os.environ.get(ARTIFACT_KEY_ENV)
    if key is None:
        return None
    if key == "":
        # An empty HMAC key signs nothing; refuse instead of pretending.
        raise ConfigError(f"{ARTIFACT_KEY_ENV} is set but empty; unset it or give a key")
    return key.encode("utf-8")


def _signature(key: bytes, metadata_bytes: bytes) -> str:
    return hmac.new(key, metadata_bytes, hashlib.sha256).hexdigest()


def _checksum_line(metadata_bytes: bytes) -> bytes:
    # sha256sum format, so `sha256sum -c metadata.sha256` works from a shell.
    return f"{hashlib.sha256(metadata_bytes).hexdigest()}  {METADATA_FILE}\n".encode()


# --------------------------------------------------------------------------- writing


def _serialise_metadata(metadata: Any, hashes: dict[str, str]) -> bytes:
    if not isinstance(metadata, Mapping):
        raise BadInputError(f"metadata: expected a dict, got {type(metadata).__name__}")
    given = metadata.get("files")
    if given is not None and (not isinstance(given, Mapping) or dict(given) != hashes):
        raise BadInputError(
            "metadata['files']: does not match the sha256 of the files given; "
            "leave it out and write_artifact fills it in"
        )
    document = {**metadata, "files": hashes}
    try:
        # Sorted keys and a fixed layout: the same inputs give byte-identical files.
        text = json.dumps(document, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"metadata: not JSON-serialisable ({exc})") from None
    return (text + "\n").encode("utf-8")


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    # Makes a rename or a new entry durable; directories cannot be opened on Windows.
    if not hasattr(os, "O_DIRECTORY"):
        return
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_artifact(
    models_root: str | Path,
    timeframe: str,
    model_id: str,
    files: Mapping[str, bytes],
    metadata: Mapping[str, Any],
) -> Path:
    """Write a model artifact atomically and return its directory.

    Every file, ``metadata.json`` (``metadata`` plus ``files: {name: sha256}``),
    ``metadata.sha256`` and, when ``REGIMES_ARTIFACT_KEY`` is set, ``metadata.sig`` are
    written and fsynced in a hidden sibling directory, which is then renamed into place.
    A failure at any point removes the temporary directory and leaves nothing at the
    final path; a hard crash can leave only a hidden ``.model_id=<id>.tmp-*`` directory,
    which :func:`list_artifacts` skips.

    Parameters
    ----------
    models_root : str or Path
        The ``models/`` directory.
    timeframe, model_id : str
        Validated by :func:`regimes.paths.artifact_dir`.
    files : mapping of str to bytes
        The artifact's files by plain name (see :func:`check_file_name`); at least one.
    metadata : mapping
        JSON-serialisable metadata; callers validate it against their own schema. A
        ``files`` entry, if present, must equal the checksums computed here. The mapping
        is not modified.

    Returns
    -------
    Path
        ``<models_root>/timeframe=<tf>/model_id=<id>``.

    Raises
    ------
    BadInputError
        For an unsafe timeframe, model_id or file name, non-bytes content, no files, or
        metadata that is not JSON-serialisable.
    ArtifactIntegrityError
        If the directory already exists with different files, or exists but fails
        verification. An existing artifact with the same file checksums is left as it is
        (the same inputs give the same model_id and the same bytes).
    ConfigError
        If ``REGIMES_ARTIFACT_KEY`` is set but empty.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as root:
    ...     path = write_artifact(root, "1h", "m1", {"hmm.pkl": b"x"}, {"K": 3})
    ...     verify_artifact(path)["files"]["hmm.pkl"][:12]
    '2d711642b726'
    """
    final = artifact_dir(models_root, timeframe, model_id)
    if not isinstance(files, Mapping) or not files:
        raise BadInputError("files: expected a non-empty mapping of file name to bytes")
    contents: dict[str, bytes] = {}
    for name, data in files.items():
        check_file_name(name)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise BadInputError(
                f"artifact file {name!r}: expected bytes, got {type(data).__name__}"
            )
        contents[name] = bytes(data)
    hashes = {name: hashlib.sha256(data).hexdigest() for name, data in sorted(contents.items())}
    metadata_bytes = _serialise_metadata(metadata, hashes)
    contents[METADATA_FILE] = metadata_bytes
    contents[METADATA_CHECKSUM_FILE] = _checksum_line(metadata_bytes)
    key = _artifact_key()
    if key is not None:
        contents[SIGNATURE_FILE] = (_signature(key, metadata_bytes) + "\n").encode()

    if final.exists():
        return _keep_existing(final, model_id, hashes)

    parent = final.parent
    if not parent.is_dir():
        parent.mkdir(parents=True, exist_ok=True)
        _fsync_dir(parent.parent)
    temporary = parent / f".{final.name}{_TEMP_MARKER}{uuid.uuid4().hex}"
    os.mkdir(temporary)
    try:
        for name, data in contents.items():
            _write_synced(temporary / name, data)
        _fsync_dir(temporary)
        try:
            os.rename(temporary, final)
        except OSError:
            if not final.exists():
                raise
            # Another writer finished the same model_id first: its result decides.
            shutil.rmtree(temporary, ignore_errors=True)
            return _keep_existing(final, model_id, hashes)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    _fsync_dir(parent)
    logger.info("wrote model artifact %s (%d files)", final, len(hashes))
    return final


def _keep_existing(final: Path, model_id: str, hashes: dict[str, str]) -> Path:
    """Accept an existing artifact with the same files, refuse anything else."""
    try:
        existing = _read_metadata(final)
    except ArtifactIntegrityError as exc:
        raise ArtifactIntegrityError(
            f"model_id {model_id} already exists at {final} but fails verification: {exc}"
        ) from exc
    if existing["files"] != hashes:
        differing = sorted(
            name
            for name in set(existing["files"]) | set(hashes)
            if existing["files"].get(name) != hashes.get(name)
        )
        raise ArtifactIntegrityError(
            f"model_id {model_id} already exists with different content at {final} "
            f"(differs in {', '.join(differing)}); refusing to overwrite"
        )
    try:
        _check_files(final, existing["files"])
    except ArtifactIntegrityError as exc:
        raise ArtifactIntegrityError(
            f"model_id {model_id} already exists at {final} but fails verification: {exc}"
        ) from exc
    logger.info("model artifact %s already exists with the same files; nothing written", final)
    return final


# --------------------------------------------------------------------------- reading


def _read_member(directory: Path, name: str) -> bytes:
    path = directory / name
    if path.is_symlink():
        raise ArtifactIntegrityError(f"{path}: is a symbolic link, expected a regular file")
    if not path.is_file():
        raise ArtifactIntegrityError(f"{path}: missing")
    return path.read_bytes()


def _checked_files(metadata: Any, source: str) -> dict[str, str]:
    """The ``files`` table of ``metadata``, refusing unsafe names and malformed hashes."""
    if not isinstance(metadata, dict):
        raise ArtifactIntegrityError(f"{source}: expected a JSON object")
    files = metadata.get("files")
    if not isinstance(files, dict):
        raise ArtifactIntegrityError(f"{source}: 'files' missing or not an object")
    for name, digest in files.items():
        problem = _file_name_problem(name)
        if problem is not None:
            raise ArtifactIntegrityError(f"{source}: lists file {name!r}: {problem}")
        if not isinstance(digest, str) or not _SHA256_RE.match(digest):
            raise ArtifactIntegrityError(
                f"{source}: files[{name!r}] is not a sha256 hex digest: {digest!r}"
            )
    return files


def _read_metadata(directory: Path) -> dict[str, Any]:
    """Read metadata.json after checking its checksum and, if a key is set, signature."""
    if not directory.is_dir():
        raise ArtifactIntegrityError(f"{directory}: not an artifact directory")
    metadata_path = directory / METADATA_FILE
    metadata_bytes = _read_member(directory, METADATA_FILE)

    checksum_path = directory / METADATA_CHECKSUM_FILE
    checksum_text = _read_member(directory, METADATA_CHECKSUM_FILE).decode("ascii", "replace")
    recorded = checksum_text.split()[0] if checksum_text.split() else ""
    if not _SHA256_RE.match(recorded):
        raise ArtifactIntegrityError(f"{checksum_path}: does not hold a sha256 hex digest")
    actual = hashlib.sha256(metadata_bytes).hexdigest()
    if actual != recorded:
        raise ArtifactIntegrityError(
            f"{metadata_path}: sha256 {actual} does not match {recorded} "
            f"recorded in {METADATA_CHECKSUM_FILE}"
        )

    key = _artifact_key()
    if key is not None:
        signature_path = directory / SIGNATURE_FILE
        if not signature_path.exists() and not signature_path.is_symlink():
            raise ArtifactIntegrityError(
                f"{signature_path}: missing, but {ARTIFACT_KEY_ENV} is set; "
                "refusing an unsigned artifact"
            )
        recorded_signature = _read_member(directory, SIGNATURE_FILE).strip()
        expected = _signature(key, metadata_bytes).encode()
        if not hmac.compare_digest(expected, recorded_signature):
            raise ArtifactIntegrityError(
                f"{signature_path}: signature does not match {METADATA_FILE} under the key in "
                f"{ARTIFACT_KEY_ENV} (tampered metadata or another key)"
            )

    try:
        metadata = json.loads(metadata_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactIntegrityError(f"{metadata_path}: not valid JSON ({exc})") from None
    _checked_files(metadata, str(metadata_path))
    return metadata


def _check_files(directory: Path, files: dict[str, str]) -> None:
    """Every listed file exists with its checksum, and nothing else is there."""
    allowed = set(files) | RESERVED_NAMES
    extra = sorted(entry.name for entry in os.scandir(directory) if entry.name not in allowed)
    if extra:
        raise ArtifactIntegrityError(
            f"{directory}: unlisted file(s) {', '.join(extra)} not in {METADATA_FILE}; "
            "an artifact is a closed set"
        )
    for name, expected in sorted(files.items()):
        path = directory / name
        if path.is_symlink():
            raise ArtifactIntegrityError(f"{path}: is a symbolic link, expected a regular file")
        if not path.is_file():
            raise ArtifactIntegrityError(f"{path}: listed in {METADATA_FILE} but missing")
        actual = file_sha256(path)
        if actual != expected:
            raise ArtifactIntegrityError(
                f"{path}: sha256 {actual} does not match {expected} recorded in {METADATA_FILE}"
            )


def verify_artifact(path: str | Path) -> dict[str, Any]:
    """Check a whole artifact and return its metadata.

    Checks, in order: ``metadata.json`` against ``metadata.sha256``; when
    ``REGIMES_ARTIFACT_KEY`` is set, ``metadata.sig`` (required) with a constant-time
    comparison; the JSON itself; that the directory holds exactly the listed files plus
    the metadata files; and the sha256 of every listed file.

    Parameters
    ----------
    path : str or Path
        An artifact directory, as returned by :func:`write_artifact`.

    Returns
    -------
    dict
        The parsed ``metadata.json``.

    Raises
    ------
    ArtifactIntegrityError
        On the first problem found; the message names the file and what is wrong.
    ConfigError
        If ``REGIMES_ARTIFACT_KEY`` is set but empty.
    """
    directory = Path(path)
    metadata = _read_metadata(directory)
    _check_files(directory, metadata["files"])
    return metadata


def read_file(path: str | Path, name: str, metadata: dict[str, Any] | None = None) -> bytes:
    """Return one file of an artifact after checking its sha256.

    The bytes are read once, hashed and returned, so what is returned is what was
    checked.

    Parameters
    ----------
    path : str or Path
        The artifact directory.
    name : str
        A file listed in the artifact's metadata, e.g. ``"hmm.pkl"``.
    metadata : dict, optional
        Metadata already returned by :func:`verify_artifact` for this directory. When
        None, ``metadata.json`` is read and its checksum and signature checked first
        (the other files are not hashed).

    Returns
    -------
    bytes

    Raises
    ------
    BadInputError
        If ``name`` is not a plain artifact file name.
    ArtifactIntegrityError
        If the metadata fails its checks, ``name`` is not listed, the file is missing or
        its sha256 differs from the recorded one.
    """
    directory = Path(path)
    check_file_name(name)
    if metadata is None:
        metadata = _read_metadata(directory)
    files = _checked_files(metadata, f"metadata of {directory}")
    if name not in files:
        raise ArtifactIntegrityError(
            f"{directory / name}: not listed in {METADATA_FILE} (has {', '.join(sorted(files))})"
        )
    data = _read_member(directory, name)
    actual = hashlib.sha256(data).hexdigest()
    if actual != files[name]:
        raise ArtifactIntegrityError(
            f"{directory / name}: sha256 {actual} does not match {files[name]} "
            f"recorded in {METADATA_FILE}"
        )
    return data


def load_pickle(path: str | Path, name: str, metadata: dict[str, Any] | None = None) -> Any:
    """Unpickle one file of an artifact, only after :func:`read_file` has verified it.

    Unpickling runs code chosen by whoever wrote the bytes, so unverified bytes are never
    unpickled. With ``REGIMES_ARTIFACT_KEY`` set, "verified" means written by a holder of
    the key; without it, only that the file is the one ``metadata.json`` describes.

    Parameters
    ----------
    path, name, metadata
        As for :func:`read_file`.

    Returns
    -------
    object
        The unpickled object.

    Raises
    ------
    ArtifactIntegrityError
        If verification fails (nothing is unpickled), or the verified bytes do not
        unpickle in this environment (the message carries the cause).
    """
    data = read_file(path, name, metadata)
    try:
        return pickle.loads(data)
    except Exception as exc:
        raise ArtifactIntegrityError(
            f"{Path(path) / name}: checksum verified but unpickling failed ({exc!r})"
        ) from exc


def list_artifacts(models_root: str | Path, timeframe: str | None = None) -> list[dict[str, Any]]:
    """List the artifacts under ``models_root``, without verifying them.

    Hidden entries (temporary directories of unfinished writes) and directories whose
    names are not valid ``timeframe=<tf>`` / ``model_id=<id>`` are skipped.

    Parameters
    ----------
    models_root : str or Path
        The ``models/`` directory; a missing one holds no artifacts.
    timeframe : str, optional
        Only this timeframe.

    Returns
    -------
    list of dict
        ``{"timeframe", "model_id", "path", "created_at"}`` sorted by timeframe (in
        :data:`regimes.timeframes.TIMEFRAMES` order) then model_id; ``created_at`` is the
        metadata's value, or None when absent or unreadable.
    """
    root = Path(models_root)
    wanted = None if timeframe is None else check_timeframe_name(timeframe)
    found: list[dict[str, Any]] = []
    if not root.is_dir():
        return found
    for timeframe_dir in root.iterdir():
        name = timeframe_dir.name
        if not timeframe_dir.is_dir() or not name.startswith("timeframe="):
            continue
        tf = name.removeprefix("timeframe=")
        if tf not in TIMEFRAMES or (wanted is not None and tf != wanted):
            continue
        for model_dir in timeframe_dir.iterdir():
            if not model_dir.is_dir() or not model_dir.name.startswith("model_id="):
                continue
            try:
                model_id = check_model_id(model_dir.name.removeprefix("model_id="))
            except UnsafeNameError:
                continue
            found.append(
                {
                    "timeframe": tf,
                    "model_id": model_id,
                    "path": model_dir,
                    "created_at": _created_at(model_dir),
                }
            )
    found.sort(key=lambda item: (TIMEFRAMES.index(item["timeframe"]), item["model_id"]))
    return found


def _created_at(directory: Path) -> Any:
    try:
        metadata = json.loads((directory / METADATA_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    return metadata.get("created_at") if isinstance(metadata, dict) else None
