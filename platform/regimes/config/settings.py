"""Settings: where the platform keeps things.

The precedence CLI option > environment variable > config file > built-in default is
written here once; :func:`resolve_settings` is the only place the core reads the
environment for locations. The application layer (``regimes.app.workspace``) turns a
:class:`Settings` into open resources.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from regimes.config.loading import default_config_dir
from regimes.errors import ConfigError

"""The default config shipped as package data (``config/`` of the checkout when editable)."""

OBJECT_STORE_SCHEMES = ("s3://", "s3a://")

STORAGE_ENVIRONMENT = {
    "AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN": "AWS_SESSION_TOKEN",
    "AWS_REGION": "AWS_REGION",
    "AWS_ALLOW_HTTP": "AWS_ALLOW_HTTP",
    "AWS_S3_ALLOW_UNSAFE_RENAME": "AWS_S3_ALLOW_UNSAFE_RENAME",
    "AWS_S3_LOCKING_PROVIDER": "AWS_S3_LOCKING_PROVIDER",
    "DELTA_DYNAMO_TABLE_NAME": "DELTA_DYNAMO_TABLE_NAME",
    "AWS_CONDITIONAL_PUT": "aws_conditional_put",
}
"""Environment variable -> deltalake storage option, passed for ``s3://`` roots."""

STORE_RETRY_ENVIRONMENT = {
    "REGIMES_STORE_MAX_RETRIES": "max_retries",
    "REGIMES_STORE_RETRY_TIMEOUT": "retry_timeout",
    "REGIMES_STORE_TIMEOUT": "timeout",
    "REGIMES_STORE_CONNECT_TIMEOUT": "connect_timeout",
    "REGIMES_STORE_BACKOFF_INIT": "backoff_config.init_backoff",
    "REGIMES_STORE_BACKOFF_MAX": "backoff_config.max_backoff",
}
"""Environment variable -> the object-store client's retry and timeout option, passed for
``s3://`` roots. Unset, the client's defaults hold: 10 retries within 180 s (backoff
from 100 ms doubling up to 15 s) of requests that failed with a 5xx answer or a
timeout, each request bounded by 30 s and its connection by 5 s. ``MAX_RETRIES`` is a
whole number, the others durations such as ``500ms``, ``20s``, ``2m``."""
_DURATION = re.compile(r"^\s*(\d+\s*(ns|us|ms|s|sec|secs|m|min|mins|h|hr|hrs)\s*)+$")


def storage_options_from_env(root: str, environ: Mapping[str, str]) -> dict[str, str] | None:
    """The deltalake storage options of a table at ``root``, from an environment mapping.

    For an ``s3://`` (or ``s3a://``) root the variables of :data:`STORAGE_ENVIRONMENT`
    and :data:`STORE_RETRY_ENVIRONMENT` that are set become options; a local root needs
    none (``None``).

    Raises
    ------
    ConfigError
        A retry or timeout variable that the object-store client could not parse.

    Examples
    --------
    >>> storage_options_from_env("s3://b/registry", {"AWS_REGION": "eu-west-1", "HOME": "/"})
    {'AWS_REGION': 'eu-west-1'}
    >>> storage_options_from_env("/data/registry", {"AWS_REGION": "eu-west-1"}) is None
    True
    """
    if not root.startswith(OBJECT_STORE_SCHEMES):
        return None
    options = {key: environ[name] for name, key in STORAGE_ENVIRONMENT.items() if environ.get(name)}
    for name, key in STORE_RETRY_ENVIRONMENT.items():
        if value := environ.get(name, "").strip():
            options[key] = _check_store_setting(name, value)
    return options or None


def _check_store_setting(name: str, value: str) -> str:
    """A retry/timeout variable's value as the client parses it; ConfigError otherwise
    (the client would only fail at the first request, with a less clear message)."""
    if name == "REGIMES_STORE_MAX_RETRIES":
        if not value.isdigit():
            raise ConfigError(f"{name}={value!r}: expected a whole number of retries, e.g. 3")
    elif not _DURATION.match(value):
        raise ConfigError(f"{name}={value!r}: expected a duration such as 500ms, 20s or 2m")
    return value


@dataclass(frozen=True)
class Settings:
    """Where the platform keeps things; resolved by :func:`resolve_settings`.

    Parameters
    ----------
    home : Path
        The root of every local output (database, models, registry, states, reports).
    db_url : str
        SQLAlchemy URL of the database.
    config_dir : Path
        Directory with ``features.yaml`` and ``timeframes.yaml``.
    states_uri : str
        Root of the Delta state store: a local path or ``s3://bucket/prefix``.
    storage_options : dict
        deltalake storage options (credentials, endpoint) for an object-store root;
        empty for a local one. Excluded from ``repr`` so credentials never get printed.
    registry_uri : str
        Root of the model registry's Delta table (``REGIMES_REGISTRY_URI``): a local
        path or ``s3://...``; empty means ``<home>/registry``.
    registry_options : dict
        Its storage options, as ``storage_options``.
    models_uri : str
        Root of the model artifacts (``REGIMES_MODELS_URI``): a local path or
        ``s3://...``; empty means ``<home>/models``.
    models_options : dict
        Its storage options, as ``storage_options``.
    db_url_from_env : bool
        Whether ``db_url`` came from ``REGIMES_DB_URL`` (a process started with the same
        environment finds it there: it need not be passed on, see
        :meth:`regimes.app.workspace.Workspace.params`).
    """

    home: Path
    db_url: str
    config_dir: Path
    states_uri: str
    storage_options: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    registry_uri: str = ""
    registry_options: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    models_uri: str = ""
    models_options: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    db_url_from_env: bool = field(default=False, repr=False, compare=False)

    @property
    def models_root(self) -> str:
        return self.models_uri or str(self.home / "models")

    @property
    def models_dir(self) -> Path:
        """The local folder of model artifacts: :attr:`models_root` when it is local, the
        download cache (:attr:`models_cache_dir`) when it is an object store."""
        return Path(self.models_root) if self.models_are_local else self.models_cache_dir

    @property
    def models_are_local(self) -> bool:
        return not self.models_root.startswith(OBJECT_STORE_SCHEMES)

    @property
    def models_cache_dir(self) -> Path:
        """Where artifacts of an object-store :attr:`models_root` are downloaded to (and
        verified in) before they are loaded."""
        return self.home / ".cache" / "models"

    @property
    def registry_root(self) -> str:
        return self.registry_uri or str(self.home / "registry")

    @property
    def drift_reports_root(self) -> str:
        """The Delta table of drift report summaries: beside the registry (same store,
        same storage options), ``drift_reports`` next to its folder."""
        root = self.registry_root.rstrip("/")
        if root.startswith(OBJECT_STORE_SCHEMES):
            return root.rsplit("/", 1)[0] + "/drift_reports"
        return str(Path(root).parent / "drift_reports")

    @property
    def states_dir(self) -> Path:
        """The local default of :attr:`states_uri`."""
        return self.home / "states"

    @property
    def states_are_local(self) -> bool:
        return not self.states_uri.startswith(OBJECT_STORE_SCHEMES)

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def synth_dir(self) -> Path:
        return self.home / "synth"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    @property
    def serve_dir(self) -> Path:
        """The live service's shard folders (bar journals, engine snapshots)."""
        return self.home / "serve"


def resolve_settings(
    home: str | Path | None = None,
    db_url: str | None = None,
    config_dir: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve settings with the precedence CLI > environment > file > default.

    Arguments are the CLI values (``None`` when not given); ``environ`` defaults to
    ``os.environ``. Nothing is created on disk.

    ``REGIMES_HOME``, ``REGIMES_DB_URL`` and ``REGIMES_CONFIG_DIR`` stand in for the
    arguments; ``REGIMES_STATES_URI`` moves the state store, ``REGIMES_REGISTRY_URI``
    the registry and ``REGIMES_MODELS_URI`` the model artifacts (e.g. to ``s3://...``);
    for an object-store root the AWS variables of :data:`STORAGE_ENVIRONMENT` become its
    storage options. The "file" level is a ``config/`` folder inside the home.

    Examples
    --------
    >>> s = resolve_settings("/srv/regimes", environ={})
    >>> s.db_url, s.states_uri, s.registry_root
    ('sqlite:////srv/regimes/regimes.db', '/srv/regimes/states', '/srv/regimes/registry')
    """
    env = os.environ if environ is None else environ
    resolved_home = Path(home or env.get("REGIMES_HOME") or Path.cwd()).expanduser().resolve()
    resolved_db = db_url or env.get("REGIMES_DB_URL") or f"sqlite:///{resolved_home / 'regimes.db'}"
    explicit_config = config_dir or env.get("REGIMES_CONFIG_DIR")
    if explicit_config:
        resolved_config = Path(explicit_config).expanduser().resolve()
    elif (resolved_home / "config" / "timeframes.yaml").is_file():
        resolved_config = resolved_home / "config"
    else:
        resolved_config = default_config_dir()
    states_uri = env.get("REGIMES_STATES_URI") or str(resolved_home / "states")
    options = storage_options_from_env(states_uri, env) or {}
    registry_uri = env.get("REGIMES_REGISTRY_URI") or str(resolved_home / "registry")
    models_uri = env.get("REGIMES_MODELS_URI") or str(resolved_home / "models")
    return Settings(
        home=resolved_home,
        db_url=resolved_db,
        config_dir=resolved_config,
        states_uri=states_uri,
        storage_options=options,
        registry_uri=registry_uri,
        registry_options=storage_options_from_env(registry_uri, env) or {},
        models_uri=models_uri,
        models_options=storage_options_from_env(models_uri, env) or {},
        db_url_from_env=not db_url and bool(env.get("REGIMES_DB_URL")),
    )
