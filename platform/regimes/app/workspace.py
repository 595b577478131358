"""The Workspace: every location of one installation, opened from resolved settings.

The CLI, the demo, the Prefect flows and the Ray jobs all start from a Workspace, so
the step settings -> database engine / config / registry / state store is written once.
Locations are checked when the Workspace opens: a home, models folder or state store
that cannot be created or written is one line naming it, before any work starts, and so
is an object-store models root (``REGIMES_MODELS_URI``) that does not answer.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from regimes.config.loading import PlatformConfig, load_config
from regimes.config.settings import Settings, resolve_settings
from regimes.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from regimes.model.store import ModelStore
    from regimes.storage.registry import Registry
    from regimes.storage.state_store import StateStore


DB_URL_ENV = "REGIMES_DB_URL"


class Workspace:
    """Resolved locations plus the resources opened from them, lazily.

    Parameters
    ----------
    settings : Settings
        Resolved by :func:`regimes.config.settings.resolve_settings`.
    config : PlatformConfig or None
        The parsed config when the caller has it already (a Ray task gets it from the
        object store); loaded from ``settings.config_dir`` on first use otherwise.

    Use :meth:`open` or :meth:`from_settings` (they check the locations); ``close()``
    (or ``with``) disposes the database engine.

    Examples
    --------
    >>> with Workspace.open(home="/tmp/regimes-doc", environ={}) as workspace:
    ...     workspace.registry_root
    '/tmp/regimes-doc/registry'
    """

    def __init__(self, settings: Settings, config: PlatformConfig | None = None):
        self.settings = settings
        self._engine: Any = None  # a SQLAlchemy Engine (only regimes.data.sql imports it)
        self._config = config
        # One of each per Workspace: the registry's read cache and its optimistic
        # concurrency both live in the object (a read, then a write, on the same one).
        self._registry: Registry | None = None
        self._state_store: StateStore | None = None
        self._model_store: ModelStore | None = None

    # -- construction

    @classmethod
    def from_settings(cls, settings: Settings, check_locations: bool = True) -> Workspace:
        """A Workspace over ``settings``, its locations checked (unless the caller only
        reads: a command that writes nothing must not fail on a folder it never uses)."""
        workspace = cls(settings)
        if check_locations:
            workspace.check_locations()
        return workspace

    @classmethod
    def open(
        cls,
        home: str | Path | None = None,
        db_url: str | None = None,
        config_dir: str | Path | None = None,
        environ: Mapping[str, str] | None = None,
        check_locations: bool = True,
    ) -> Workspace:
        """Resolve settings (CLI values > environment > file > default) and open them."""
        settings = resolve_settings(home, db_url, config_dir, environ)
        return cls.from_settings(settings, check_locations)

    def params(self) -> dict[str, str]:
        """The plain parameters a flow or a remote worker rebuilds this Workspace from
        (``Workspace.open(**params)``); credentials stay in the environment.

        A database URL with a password is never a parameter (Prefect stores flow
        parameters and shows them in its UI): it must come from ``REGIMES_DB_URL``,
        and ``db_url`` is then ``""``, which the receiving side resolves from its own
        ``REGIMES_DB_URL``.

        >>> url = "postgresql+psycopg://regimes:s3cret@db:5432/regimes"
        >>> environ = {"REGIMES_DB_URL": url}
        >>> with Workspace.open("/tmp/regimes-doc", environ=environ, check_locations=False) as w:
        ...     w.params()["db_url"]
        ''
        """
        return {
            "home": str(self.home),
            "db_url": self._db_url_parameter(),
            "config_dir": str(self.config_dir),
        }

    def _db_url_parameter(self) -> str:
        from regimes.data.sql import mask_url

        if mask_url(self.db_url) == self.db_url:  # no password in it
            return self.db_url
        if self.settings.db_url_from_env:
            return ""
        raise ConfigError(
            f"database URL {mask_url(self.db_url)}: a password in --db-url would be passed "
            f"to flows and services as a parameter (stored and shown by Prefect); set the "
            f"URL in {DB_URL_ENV} instead, or use a URL without a password (e.g. a "
            "PostgreSQL password file, ~/.pgpass)"
        )

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Dispose the database engine (its pooled connections); safe to call twice."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # -- locations

    @property
    def home(self) -> Path:
        return self.settings.home

    @property
    def db_url(self) -> str:
        return self.settings.db_url

    @property
    def config_dir(self) -> Path:
        return self.settings.config_dir

    @property
    def models_dir(self) -> Path:
        """The local folder of model artifacts (the download cache when
        ``REGIMES_MODELS_URI`` is an object store)."""
        return self.settings.models_dir

    @property
    def models_root(self) -> str:
        return self.settings.models_root

    @property
    def registry_root(self) -> str:
        return self.settings.registry_root

    @property
    def states_uri(self) -> str:
        return self.settings.states_uri

    @property
    def storage_options(self) -> dict[str, str] | None:
        return dict(self.settings.storage_options) or None

    @property
    def reports_dir(self) -> Path:
        return self.settings.reports_dir

    @property
    def synth_dir(self) -> Path:
        return self.settings.synth_dir

    @property
    def prefect_home(self) -> Path:
        return self.settings.prefect_home

    def local_locations(self) -> dict[str, Path]:
        """Every folder this Workspace may write on the local file system, by name."""
        locations = {
            "home": self.home,
            "models folder" if self.settings.models_are_local else "models cache": self.models_dir,
            "reports folder": self.reports_dir,
            "synth folder": self.synth_dir,
            "Prefect home": self.prefect_home,
        }
        if self.settings.states_are_local:
            locations["state store"] = Path(self.states_uri)
        if not self.registry_root.startswith(("s3://", "s3a://")):
            locations["registry"] = Path(self.registry_root)
        database = _sqlite_file(self.db_url)
        if database is not None:
            locations["database folder"] = database.parent
        return locations

    def check_locations(self) -> None:
        """Refuse, in one line naming it, a local location that cannot be created or
        written, or an object-store models root that does not answer. Nothing is
        created: a missing folder passes when its nearest existing parent is a folder
        that takes files.

        Raises
        ------
        StoreError
            Naming the location, its path and what is in the way.
        """
        for what, path in self.local_locations().items():
            _check_writable(what, path)
        self.model_store.check()

    # -- resources

    @property
    def config(self) -> PlatformConfig:
        """The platform config of :attr:`config_dir`, loaded once."""
        if self._config is None:
            self._config = load_config(self.config_dir)
        return self._config

    @property
    def engine(self) -> Any:
        """The SQLAlchemy engine of :attr:`db_url` (schema created), made once."""
        if self._engine is None:
            from regimes.data import sql as db

            engine = db.make_engine(self.db_url)
            db.create_schema(engine)
            self._engine = engine
        return self._engine

    def markets(self):
        """The :class:`~regimes.data.markets.MarketBook`: markets of the config plus the
        market recorded for each symbol in the database (read now: ingest may add some)."""
        from regimes.data import sql as db
        from regimes.data.markets import MarketBook

        config = self.config
        return MarketBook(config.markets, config.timeframes.session, db.read_markets(self.engine))

    @property
    def registry(self) -> Registry:
        """The model registry at :attr:`registry_root`, made once per Workspace."""
        from regimes.storage.registry import Registry

        if self._registry is None:
            options = dict(self.settings.registry_options) or None
            self._registry = Registry(self.registry_root, options)
        return self._registry

    @property
    def model_store(self) -> ModelStore:
        """The model artifacts at :attr:`models_root` (a local folder, or an object store
        with its download cache), made once per Workspace."""
        from regimes.model.store import ModelStore

        if self._model_store is None:
            self._model_store = ModelStore(
                self.models_root, self.settings.models_options, self.settings.models_cache_dir
            )
        return self._model_store

    def model_path(self, timeframe: str, model_id: str) -> Path:
        """The local folder of a registered model's artifact: where the registry recorded
        it, else its place under :attr:`models_root`; downloaded and verified into the
        cache when that is an object store (:meth:`ModelStore.artifact`)."""
        registered = self.registry.artifact_path(timeframe, model_id)
        return self.model_store.artifact(timeframe, model_id, registered)

    @property
    def state_store(self) -> StateStore:
        """The Delta state store at :attr:`states_uri` with its storage options, made once
        per Workspace."""
        from regimes.storage.state_store import StateStore

        if self._state_store is None:
            self._state_store = StateStore(self.states_uri, self.storage_options)
        return self._state_store


def _sqlite_file(url: str) -> Path | None:
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return None
    name = url[len(prefix) :].split("?", 1)[0]
    if not name or name == ":memory:":
        return None
    return Path(name).expanduser()


def _check_writable(what: str, path: Path) -> None:
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise StoreError(
            f"cannot create the {what} {path}: {existing} is a file, not a folder"
            if existing != path
            else f"cannot create the {what} {path}: a file is in the way"
        )
    # A probe file rather than os.access: root passes every access check, but not a
    # read-only file system.
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".regimes-probe-"):
            pass
    except OSError as exc:
        detail = exc.strerror or type(exc).__name__
        if existing == path:
            raise StoreError(f"cannot write the {what} {path}: {detail}") from None
        raise StoreError(f"cannot create the {what} {path}: {existing}: {detail}") from None
