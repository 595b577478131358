"""Where model artifacts live: a local folder, or an ``s3://`` prefix with a local cache.

``REGIMES_MODELS_URI`` (default ``<home>/models``) names the root; the layout under it
is the same either way: ``timeframe=<tf>/model_id=<id>/`` holding the files of
:mod:`regimes.model.artifact`.

On an object store:

* **writing** — training writes the artifact locally as always (temporary folder,
  rename), then :meth:`ModelStore.publish` uploads its files with ``metadata.json``
  last: an upload cut off half-way has no ``metadata.json``, so it is neither listed nor
  loadable.
* **reading** — :meth:`ModelStore.artifact` downloads every object under the model's
  prefix into a fresh folder of the cache (``<home>/.cache/models/``) and runs
  :func:`~regimes.model.artifact.verify_artifact` on what was downloaded — the sha256
  of every file and, when ``REGIMES_ARTIFACT_KEY`` is set, the HMAC of
  ``metadata.json`` — on every load. The cache is never trusted on its own: it is only
  the place where verified bytes are put so the loaders can read a folder, and it is
  replaced when it differs from what was read.

The S3 client is ``pyarrow.fs.S3FileSystem``, given the endpoint and credentials of the
``AWS_*`` variables (the storage options of :mod:`regimes.config.settings`).
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from regimes.config.settings import OBJECT_STORE_SCHEMES
from regimes.errors import ArtifactIntegrityError, BadInputError, ConfigError, StoreError
from regimes.model.artifact import (
    METADATA_FILE,
    RESERVED_NAMES,
    _file_name_problem,
    list_artifacts,
    verify_artifact,
)
from regimes.paths import artifact_dir, check_model_id, check_timeframe_name
from regimes.timeframes import TIMEFRAMES

logger = logging.getLogger(__name__)

MODELS_URI_ENV = "REGIMES_MODELS_URI"
CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 30.0
_FETCH_MARKER = ".fetch-"
_OLD_MARKER = ".old-"


class ModelStore:
    """The artifacts under one root: a local folder or ``s3://bucket/prefix``.

    Parameters
    ----------
    root : str or Path
        The models root (``REGIMES_MODELS_URI``).
    storage_options : mapping, optional
        For an ``s3://`` root: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
        ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``,
        ``AWS_ALLOW_HTTP`` (the keys of
        :data:`regimes.config.settings.STORAGE_ENVIRONMENT`); absent keys fall back to
        the AWS SDK's own defaults.
    cache_dir : str or Path, optional
        Local folder that remote artifacts are downloaded into (required for an
        ``s3://`` root).

    Examples
    --------
    >>> import tempfile
    >>> from regimes.model.artifact import write_artifact
    >>> with tempfile.TemporaryDirectory() as root:
    ...     _ = write_artifact(root, "1h", "m1", {"hmm.pkl": b"x"}, {"K": 3})
    ...     store = ModelStore(root)
    ...     [a["model_id"] for a in store.list_artifacts()], store.artifact("1h", "m1").name
    (['m1'], 'model_id=m1')
    """

    def __init__(
        self,
        root: str | Path,
        storage_options: Mapping[str, str] | None = None,
        cache_dir: str | Path | None = None,
    ):
        self.root = str(root)
        self.storage_options = dict(storage_options or {})
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        if self.is_remote and self.cache_dir is None:
            raise BadInputError(f"models root {self.root}: an s3:// root needs a cache_dir")
        self._filesystem: Any = None

    @classmethod
    def of(cls, models: ModelStore | str | Path) -> ModelStore:
        """``models`` itself, or a store over a local folder given as a path."""
        return models if isinstance(models, ModelStore) else cls(models)

    def __repr__(self) -> str:  # no storage options: they hold credentials
        return f"ModelStore({self.root!r})"

    @property
    def is_remote(self) -> bool:
        return self.root.startswith(OBJECT_STORE_SCHEMES)

    @property
    def write_root(self) -> Path:
        """Where training writes an artifact: the root itself when local; for a remote
        root, the cache (then :meth:`publish` uploads it)."""
        return self.cache_dir if self.is_remote else Path(self.root)

    def location(self, timeframe: str, model_id: str) -> str:
        """The artifact's place under the root: a folder path or an ``s3://`` URI."""
        if not self.is_remote:
            return str(artifact_dir(self.root, timeframe, model_id))
        timeframe, model_id = check_timeframe_name(timeframe), check_model_id(model_id)
        return f"{self.root.rstrip('/')}/timeframe={timeframe}/model_id={model_id}"

    # ----------------------------------------------------------------------- checks

    def check(self) -> None:
        """Refuse, in one line naming ``REGIMES_MODELS_URI``, a remote root whose bucket
        does not answer, does not exist or refuses the credentials. A local root passes
        (the Workspace checks local folders itself).

        Raises
        ------
        StoreError
        """
        if not self.is_remote:
            return
        import pyarrow.fs as pa_fs

        bucket = _bucket_and_key(self.root)[0]
        try:
            info = self._fs().get_file_info(bucket)
        except Exception as exc:
            raise self._error(f"bucket {bucket} cannot be opened", exc) from None
        if info.type != pa_fs.FileType.Directory:
            raise StoreError(
                f"{MODELS_URI_ENV}={self.root}: bucket {bucket} does not exist; create it or "
                "check the URI"
            )

    # ----------------------------------------------------------------------- writing

    def publish(self, path: str | Path, timeframe: str, model_id: str) -> str:
        """Make the artifact written at ``path`` (under :attr:`write_root`) available
        under the root and return where it is now.

        Local roots: nothing to do (``path`` is returned). Remote roots: every file is
        uploaded, ``metadata.json`` last. A model_id already there with the same files is
        left as it is; with other files it is refused (the same inputs give the same
        model_id and the same bytes).

        Raises
        ------
        ArtifactIntegrityError
            If the model_id exists remotely with different files.
        StoreError
            If the object store refuses or cannot be reached.
        """
        if not self.is_remote:
            return str(path)
        location = self.location(timeframe, model_id)
        directory = Path(path)
        metadata = verify_artifact(directory)
        existing = self._read_remote_metadata(location)
        if existing is not None:
            if existing.get("files") == metadata["files"]:
                logger.info("model artifact %s already uploaded; nothing written", location)
                return location
            raise ArtifactIntegrityError(
                f"model_id {model_id} already exists with different content at {location}; "
                "refusing to overwrite"
            )
        names = sorted(entry.name for entry in os.scandir(directory))
        # metadata.json last: until it lands, the prefix is not an artifact.
        names = [n for n in names if n != METADATA_FILE] + [METADATA_FILE]
        filesystem = self._fs()
        try:
            for name in names:
                with filesystem.open_output_stream(_key(f"{location}/{name}")) as out:
                    out.write((directory / name).read_bytes())
        except Exception as exc:
            raise self._error(f"refused the upload of {location}", exc) from None
        logger.info("uploaded model artifact %s (%d files)", location, len(names))
        return location

    # ----------------------------------------------------------------------- reading

    def artifact(self, timeframe: str, model_id: str, registered: str | None = None) -> Path:
        """The local folder of a model's artifact, ready for
        :meth:`regimes.model.loaded.LoadedModel.load`.

        ``registered`` is the artifact path the registry recorded (a folder or an
        ``s3://`` URI); None means :meth:`location`. A local folder is returned as it is
        (its loaders verify it). A remote artifact is downloaded and verified with
        :func:`~regimes.model.artifact.verify_artifact` — every file's sha256, and the
        HMAC when ``REGIMES_ARTIFACT_KEY`` is set — on every call, then placed in the
        cache.

        Raises
        ------
        BadInputError
            If there is no artifact there (a remote prefix without ``metadata.json``,
            e.g. an upload cut off half-way, counts as none).
        ArtifactIntegrityError
            If what was downloaded fails verification; the message names the model_id
            and the file.
        StoreError
            If the object store refuses or cannot be reached.
        """
        location = registered or self.location(timeframe, model_id)
        if not location.startswith(OBJECT_STORE_SCHEMES):
            path = Path(location)
            if not path.is_dir():
                raise BadInputError(f"model {model_id} ({timeframe}): no artifact at {path}")
            return path
        return self._fetch(timeframe, model_id, location)

    def list_artifacts(self, timeframe: str | None = None) -> list[dict[str, Any]]:
        """The artifacts under the root, as :func:`regimes.model.artifact.list_artifacts`
        (``path`` is the :meth:`location`); remote prefixes without ``metadata.json``
        (unfinished uploads) are skipped. Nothing is verified."""
        if not self.is_remote:
            return list_artifacts(self.root, timeframe)
        import json

        import pyarrow.fs as pa_fs

        wanted = None if timeframe is None else check_timeframe_name(timeframe)
        base = _key(self.root)
        try:
            infos = self._fs().get_file_info(
                pa_fs.FileSelector(base, recursive=True, allow_not_found=True)
            )
        except Exception as exc:
            raise self._error("cannot be listed", exc) from None
        found = []
        for info in infos:
            parts = info.path[len(base) :].strip("/").split("/")
            if info.type != pa_fs.FileType.File or len(parts) != 3 or parts[2] != METADATA_FILE:
                continue
            tf = parts[0].removeprefix("timeframe=")
            model_id = parts[1].removeprefix("model_id=")
            if not parts[0].startswith("timeframe=") or tf not in TIMEFRAMES:
                continue
            if (wanted is not None and tf != wanted) or not parts[1].startswith("model_id="):
                continue
            try:
                check_model_id(model_id)
                metadata = json.loads(self._read_object(info.path))
                created_at = metadata.get("created_at") if isinstance(metadata, dict) else None
            except BadInputError:
                continue
            except ValueError:
                created_at = None
            found.append(
                {
                    "timeframe": tf,
                    "model_id": model_id,
                    "path": self.location(tf, model_id),
                    "created_at": created_at,
                }
            )
        found.sort(key=lambda item: (TIMEFRAMES.index(item["timeframe"]), item["model_id"]))
        return found

    # ----------------------------------------------------------------------- internals

    def _fetch(self, timeframe: str, model_id: str, location: str) -> Path:
        import pyarrow.fs as pa_fs

        if self.cache_dir is None:
            raise ConfigError(
                f"model {model_id} ({timeframe}) is at {location}, an object store, but the "
                f"models root {self.root} has no cache to download it into; open the "
                f"Workspace with {MODELS_URI_ENV} set to its bucket"
            )
        final = artifact_dir(self.cache_dir, timeframe, model_id)
        prefix = _key(location).rstrip("/")
        try:
            infos = self._fs().get_file_info(pa_fs.FileSelector(prefix, allow_not_found=True))
        except Exception as exc:
            raise self._error(f"cannot list {location}", exc) from None
        names = {info.base_name: info for info in infos}
        if METADATA_FILE not in names:
            raise BadInputError(
                f"model {model_id} ({timeframe}): no artifact at {location} (no "
                f"{METADATA_FILE}: never uploaded, or the upload did not finish)"
            )
        final.parent.mkdir(parents=True, exist_ok=True)
        staged = final.parent / f".{final.name}{_FETCH_MARKER}{uuid.uuid4().hex}"
        os.mkdir(staged)
        try:
            for name, info in names.items():
                if _file_name_problem(name) is not None and name not in RESERVED_NAMES:
                    raise ArtifactIntegrityError(
                        f"model_id {model_id}: {location}/{name}: not a plain artifact file name"
                    )
                if info.type != pa_fs.FileType.File:
                    # verify_artifact refuses anything unlisted, folders included.
                    os.mkdir(staged / name)
                    continue
                (staged / name).write_bytes(self._read_object(info.path))
            try:
                verify_artifact(staged)
            except ArtifactIntegrityError as exc:
                raise ArtifactIntegrityError(
                    f"model_id {model_id}: {str(exc).replace(str(staged), location)}"
                ) from None
            _install(staged, final)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        return final

    def _read_remote_metadata(self, location: str) -> dict | None:
        import json

        import pyarrow.fs as pa_fs

        key = _key(f"{location}/{METADATA_FILE}")
        try:
            if self._fs().get_file_info(key).type != pa_fs.FileType.File:
                return None
        except Exception as exc:
            raise self._error(f"cannot read {location}", exc) from None
        try:
            metadata = json.loads(self._read_object(key))
        except ValueError:
            return {}
        return metadata if isinstance(metadata, dict) else {}

    def _read_object(self, key: str) -> bytes:
        try:
            with self._fs().open_input_stream(key) as stream:
                return stream.read()
        except Exception as exc:
            raise self._error(f"cannot read s3://{key}", exc) from None

    def _fs(self):
        if self._filesystem is None:
            self._filesystem = _s3_filesystem(self.storage_options)
        return self._filesystem

    def _error(self, what: str, exc: BaseException) -> StoreError:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StoreError(
            f"{MODELS_URI_ENV}={self.root}: {what} ({detail}); check that the endpoint "
            "(AWS_ENDPOINT_URL) answers, that the credentials (AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY) are accepted and that the bucket exists"
        )


def _bucket_and_key(uri: str) -> tuple[str, str]:
    rest = uri.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    return bucket, key.strip("/")


def _key(uri: str) -> str:
    """``bucket/key`` of an ``s3://`` URI, as pyarrow's S3 file system names objects."""
    bucket, key = _bucket_and_key(uri)
    return f"{bucket}/{key}" if key else bucket


def _s3_filesystem(options: Mapping[str, str]):
    import pyarrow.fs as pa_fs

    endpoint = options.get("AWS_ENDPOINT_URL")
    allow_http = str(options.get("AWS_ALLOW_HTTP", "")).lower() in ("1", "true", "yes")
    kwargs: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "request_timeout": REQUEST_TIMEOUT_S,
        # A few quick attempts: an endpoint that does not answer is one line in seconds,
        # not minutes of the SDK's default back-off.
        "retry_strategy": pa_fs.AwsStandardS3RetryStrategy(max_attempts=3),
    }
    if endpoint:
        kwargs["endpoint_override"] = endpoint
        if allow_http and "://" not in endpoint:
            kwargs["scheme"] = "http"
    if options.get("AWS_ACCESS_KEY_ID"):
        kwargs["access_key"] = options["AWS_ACCESS_KEY_ID"]
        kwargs["secret_key"] = options.get("AWS_SECRET_ACCESS_KEY", "")
        if options.get("AWS_SESSION_TOKEN"):
            kwargs["session_token"] = options["AWS_SESSION_TOKEN"]
    if options.get("AWS_REGION"):
        kwargs["region"] = options["AWS_REGION"]
    return pa_fs.S3FileSystem(**kwargs)


def _hashes(directory: Path) -> dict[str, str] | None:
    """name -> sha256 of every entry of ``directory`` (None if it cannot be read)."""
    from regimes.model.encoders.base import file_sha256

    try:
        return {
            entry.name: file_sha256(Path(entry.path)) if entry.is_file() else "folder"
            for entry in os.scandir(directory)
        }
    except OSError:
        return None


def _install(staged: Path, final: Path) -> None:
    """Put the verified folder ``staged`` at ``final``: kept as it is when ``final``
    already holds the same bytes (concurrent loaders of one model share it), replaced
    otherwise (a stale or damaged cache is never served)."""
    if final.is_dir() and _hashes(final) == _hashes(staged):
        shutil.rmtree(staged, ignore_errors=True)
        return
    old = final.parent / f".{final.name}{_OLD_MARKER}{uuid.uuid4().hex}"
    if final.exists():
        os.rename(final, old)
    try:
        os.rename(staged, final)
    except OSError:
        if not final.is_dir():
            raise
        # Another loader installed its verified copy first.
        shutil.rmtree(staged, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
