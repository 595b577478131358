"""The model registry: every model's role per scope, as an append-only Delta table of
transition events.

A *scope* is a timeframe, plus a symbol for models trained per symbol (``symbol=None``
is the pooled model of the timeframe). In each scope a model is a ``candidate`` when
registered, may run as a ``shadow`` (zero or more per scope), becomes the ``champion``
(at most one per scope; its answers are the ones published) and ends ``retired``.
Promoting a model retires the previous champion in the same commit and remembers it as
the *last good champion*, which :meth:`Registry.rollback` restores.

Atomicity. Every write is one Delta commit made with optimistic concurrency: the write
reads the registry at version N, validates against that state, and commits version N+1
with ``CommitProperties(max_commit_retries=0)``. delta-rs creates a commit file with a
put-if-absent (a no-replace rename locally, a conditional put on S3), so of two writers
that read version N only one creates N+1; without the zero-retry setting delta-rs would
rebase the loser's append (a blind append never conflicts) onto N+2. The loser re-reads:
when what its write depends on (the scope's champion and last good champion for
``promote`` / ``rollback``, the model's own role otherwise) changed since the version the
caller last read, it raises :class:`~regimes.errors.RegistryConflictError` naming the
change; when only unrelated scopes moved it validates again on the new version and
retries. Every row carries the version it was committed in.

Reads are served from a per-object cache that is refreshed only when the table version
moved (``DeltaTable.update_incremental``: a listing of the log past the known version),
so calling them per bar batch is cheap.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa

from regimes.errors import BadInputError, RegistryConflictError, StoreError
from regimes.paths import check_model_id, check_timeframe_name
from regimes.storage._store_errors import failure_reason, object_store_hint
from regimes.storage.roles import (
    ROLES,
    SET_ROLE_TRANSITIONS,
    Transition,
    _check_scope,
    _conflict,
    _Note,
    _registered,
    _scope_name,
    _seen_role,
    _Snapshot,
    _transition,
)

REGISTRY_SCHEMA = pa.schema(
    [
        pa.field("version", pa.int64(), nullable=False),
        pa.field("event_ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("timeframe", pa.string(), nullable=False),
        pa.field("symbol", pa.string()),
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("operation", pa.string(), nullable=False),
        pa.field("from_role", pa.string()),
        pa.field("to_role", pa.string(), nullable=False),
        pa.field("actor", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("evidence", pa.string(), nullable=False),
        pa.field("artifact_path", pa.string()),
    ]
)
"""One row per transition; ``symbol`` null for a pooled model, ``evidence`` JSON text."""
CURRENT_COLUMNS = (
    "timeframe",
    "symbol",
    "model_id",
    "role",
    "since",
    "actor",
    "reason",
    "evidence",
    "artifact_path",
    "version",
)
COMMIT_ATTEMPTS = 25
"""Attempts of a write whose commits keep losing to writes elsewhere in the registry."""
BACKOFF_SECONDS = (0.01, 0.5)
_TABLE_CONFIGURATION = {"delta.appendOnly": "true"}  # the audit trail is never rewritten


@dataclass(frozen=True)
class CacheInfo:
    """How often a :class:`Registry` checked the table version and (re)read the table."""

    version: int | None
    checks: int
    loads: int


class _Cache:
    """A registry object's newest snapshot and open table; never pickled (a copy sent to
    another process starts empty and reads the table itself)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.table = None
        self.snapshot: _Snapshot | None = None
        self.checks = 0
        self.loads = 0

    def __reduce__(self):
        return (_Cache, ())


@dataclass(frozen=True)
class Registry:
    """The model registry table at ``root`` (a local path or an object-store URI).

    Parameters
    ----------
    root : str
        Where the table lives, e.g. ``<home>/registry`` or ``s3://bucket/registry``.
    storage_options : dict or None
        deltalake storage options for an object store (see
        :func:`regimes.config.settings.storage_options_from_env`).

    Examples
    --------
    >>> import tempfile
    >>> registry = Registry(tempfile.mkdtemp() + "/registry")
    >>> registry.champion("1h") is None, registry.version()
    (True, None)
    >>> _ = registry.register("1h", "m1", artifact_path="models/m1", actor="me", reason="trained")
    >>> registry.promote("1h", "m1", actor="me", reason="first model").version
    2
    >>> registry.champion("1h")
    'm1'
    """

    root: str
    storage_options: dict[str, str] | None = None
    _cache: _Cache = field(default_factory=_Cache, init=False, repr=False, compare=False)

    # ------------------------------------------------------------------ reads

    def champion(self, timeframe: str, symbol: str | None = None) -> str | None:
        """The champion of the scope (timeframe, symbol), or None."""
        scope = _check_scope(timeframe, symbol)
        return self._snapshot().scope(*scope).champion

    def last_good_champion(self, timeframe: str, symbol: str | None = None) -> str | None:
        """The champion :meth:`rollback` would restore, or None."""
        scope = _check_scope(timeframe, symbol)
        last_good = self._snapshot().scope(*scope).last_good
        return last_good[-1] if last_good else None

    def shadows(self, timeframe: str, symbol: str | None = None) -> list[str]:
        """The scope's shadows, in the order they became shadows."""
        timeframe, symbol = _check_scope(timeframe, symbol)
        models = self._snapshot().models.values()
        shadows = [
            m
            for m in models
            if m["timeframe"] == timeframe and m["symbol"] == symbol and m["to_role"] == "shadow"
        ]
        return [m["model_id"] for m in sorted(shadows, key=lambda m: m["version"])]

    def role(self, timeframe: str, model_id: str) -> str | None:
        """The model's role, or None when it is not registered in ``timeframe``."""
        return self._snapshot().role(check_timeframe_name(timeframe), model_id)

    def artifact_path(self, timeframe: str, model_id: str) -> str | None:
        """Where the model's artifact is (as registered), or None."""
        model = self._snapshot().model(check_timeframe_name(timeframe), model_id)
        return None if model is None else model["artifact_path"]

    def version(self) -> int | None:
        """The table's newest version, or None when nothing was registered yet."""
        return self._snapshot().version

    def current(self, timeframe: str | None = None) -> pd.DataFrame:
        """One row per model (columns :data:`CURRENT_COLUMNS`): its role and the
        transition that gave it (``since``, ``actor``, ``reason``, ``evidence``, ``version``)."""
        if timeframe is not None:
            timeframe = check_timeframe_name(timeframe)
        models = [
            {**m, "role": m["to_role"], "since": m["event_ts"]}
            for m in self._snapshot().models.values()
            if timeframe is None or m["timeframe"] == timeframe
        ]
        frame = pd.DataFrame(models, columns=[*CURRENT_COLUMNS, "event_ts", "to_role"])
        frame = frame.sort_values(["timeframe", "version"], kind="stable")
        return frame.loc[:, list(CURRENT_COLUMNS)].reset_index(drop=True)

    def events(self) -> pd.DataFrame:
        """Every transition (columns of :data:`REGISTRY_SCHEMA`), oldest first."""
        return self._snapshot().events.copy()

    def history(self) -> list[dict[str, Any]]:
        """The Delta commit log, newest first (each write's operation, actor and reason
        are in its commit metadata)."""
        with self._cache.lock:
            self._snapshot()
            return [] if self._cache.table is None else self._cache.table.history()

    def cache_info(self) -> CacheInfo:
        """Version checks and table reads this object made (reads happen only on change)."""
        cache = self._cache
        version = cache.snapshot.version if cache.snapshot else None
        return CacheInfo(version, cache.checks, cache.loads)

    # ------------------------------------------------------------------ writes

    def register(
        self,
        timeframe: str,
        model_id: str,
        *,
        artifact_path: str,
        actor: str,
        reason: str,
        symbol: str | None = None,
        evidence: Mapping[str, Any] | None = None,
    ) -> Transition:
        """Register a new model as a ``candidate`` of the scope (timeframe, symbol).

        Raises
        ------
        BadInputError
            The model is already registered in ``timeframe`` (any scope).
        RegistryConflictError
            Another writer registered it since this object last read the registry.
        """
        timeframe, symbol = _check_scope(timeframe, symbol)
        model_id = check_model_id(model_id)
        if not isinstance(artifact_path, str) or not artifact_path:
            raise BadInputError(
                f"artifact_path: expected a non-empty string, got {artifact_path!r}"
            )
        note = _Note("register", actor, reason, evidence)

        def plan(snapshot: _Snapshot) -> list[dict[str, Any]]:
            role = snapshot.role(timeframe, model_id)
            if role is not None:
                raise BadInputError(
                    f"model {model_id} ({timeframe}) is already registered ({role}); "
                    "use set_role to change its role"
                )
            return [note.row(timeframe, symbol, model_id, None, "candidate", artifact_path)]

        def watched(view: _Snapshot, latest: _Snapshot):
            return view.role(timeframe, model_id)

        rows = self._write(note, plan, watched, (timeframe, model_id))
        return _transition(rows[-1])

    def set_role(
        self,
        timeframe: str,
        model_id: str,
        role: str,
        *,
        actor: str,
        reason: str,
        evidence: Mapping[str, Any] | None = None,
    ) -> Transition:
        """Move a model between candidate, shadow and retired (see :data:`SET_ROLE_TRANSITIONS`).

        A champion cannot be retired directly: promote another model or roll back.
        """
        timeframe = check_timeframe_name(timeframe)
        if role not in ROLES:
            raise BadInputError(f"role: expected one of {list(ROLES)}, got {role!r}")
        note = _Note("set_role", actor, reason, evidence)

        def plan(snapshot: _Snapshot) -> list[dict[str, Any]]:
            model = _registered(snapshot, timeframe, model_id, self.root)
            if (model["to_role"], role) not in SET_ROLE_TRANSITIONS:
                allowed = sorted(to for frm, to in SET_ROLE_TRANSITIONS if frm == model["to_role"])
                how = (
                    " (promote another model or roll back)"
                    if model["to_role"] == "champion"
                    else ""
                )
                raise BadInputError(
                    f"model {model_id} ({timeframe}) is {model['to_role']}: set_role cannot make "
                    f"it {role}; allowed: {allowed or 'none'}{how}"
                )
            return [note.row(timeframe, model["symbol"], model_id, model["to_role"], role)]

        def watched(view: _Snapshot, latest: _Snapshot):
            return _seen_role(view, latest, timeframe, model_id)

        rows = self._write(note, plan, watched, (timeframe, model_id))
        return _transition(rows[-1])

    def promote(
        self,
        timeframe: str,
        model_id: str,
        *,
        actor: str,
        reason: str,
        evidence: Mapping[str, Any] | None = None,
    ) -> Transition:
        """Make a candidate or shadow the champion of its scope; the previous champion is
        retired in the same commit and kept as the last good champion for :meth:`rollback`.

        Raises
        ------
        RegistryConflictError
            The scope's champion or the model's role changed since this object last
            read the registry (e.g. a concurrent promotion won); nothing is written.
        """
        timeframe = check_timeframe_name(timeframe)
        note = _Note("promote", actor, reason, evidence)

        def plan(snapshot: _Snapshot) -> list[dict[str, Any]]:
            model = _registered(snapshot, timeframe, model_id, self.root)
            if model["to_role"] not in ("candidate", "shadow"):
                raise BadInputError(
                    f"model {model_id} ({timeframe}) is {model['to_role']}: only a candidate "
                    "or shadow can be promoted"
                )
            symbol = model["symbol"]
            previous = snapshot.scope(timeframe, symbol).champion
            rows = []
            if previous is not None:
                rows.append(note.row(timeframe, symbol, previous, "champion", "retired"))
            rows.append(note.row(timeframe, symbol, model_id, model["to_role"], "champion"))
            return rows

        def watched(view: _Snapshot, latest: _Snapshot):
            model = latest.model(timeframe, model_id)
            symbol = None if model is None else model["symbol"]
            champion = view.scope(timeframe, symbol).champion
            return _seen_role(view, latest, timeframe, model_id), champion

        rows = self._write(note, plan, watched, (timeframe, model_id))
        return _transition(rows[-1])

    def rollback(
        self,
        timeframe: str,
        *,
        actor: str,
        reason: str,
        symbol: str | None = None,
        evidence: Mapping[str, Any] | None = None,
        to: str | None = None,
    ) -> Transition:
        """Retire the scope's champion and make the last good champion (or ``to``, one of
        the earlier good champions) champion again.

        Raises
        ------
        BadInputError
            The scope has no champion, no earlier champion to return to, or ``to`` is
            not one of its earlier good champions.
        RegistryConflictError
            The scope's champion changed since this object last read the registry.
        """
        timeframe, symbol = _check_scope(timeframe, symbol)
        note = _Note("rollback", actor, reason, evidence)
        name = _scope_name(timeframe, symbol)

        def plan(snapshot: _Snapshot) -> list[dict[str, Any]]:
            scope = snapshot.scope(timeframe, symbol)
            if scope.champion is None:
                raise BadInputError(
                    f"rollback: {name} has no champion in the registry at {self.root}"
                )
            if not scope.last_good:
                raise BadInputError(
                    f"rollback: {name} has no earlier champion to return to "
                    f"(champion {scope.champion} is the first)"
                )
            target = scope.last_good[-1] if to is None else to
            if target not in scope.last_good:
                raise BadInputError(
                    f"rollback --to {to}: not an earlier good champion of {name}; it can "
                    f"return to {', '.join(reversed(scope.last_good))} (newest first)"
                )
            return [
                note.row(timeframe, symbol, scope.champion, "champion", "retired"),
                note.row(timeframe, symbol, target, "retired", "champion"),
            ]

        def watched(view: _Snapshot, latest: _Snapshot):
            scope = view.scope(timeframe, symbol)
            return scope.champion, tuple(scope.last_good)

        rows = self._write(note, plan, watched, None, scope=(timeframe, symbol))
        return _transition(rows[-1])

    # ------------------------------------------------------------------ internals

    def _options(self) -> dict[str, str] | None:
        return dict(self.storage_options) if self.storage_options else None

    def _reason(self, exc: BaseException) -> str:
        """``exc`` as one line, and what to check when the object store failed."""
        reason = failure_reason(exc)
        return reason + object_store_hint(self.root, self.storage_options, reason)

    def _snapshot(self) -> _Snapshot:
        """The registry at its newest version; reads the table only when it moved."""
        from deltalake import DeltaTable

        cache = self._cache
        with cache.lock:
            cache.checks += 1
            try:
                if cache.table is None:
                    if not DeltaTable.is_deltatable(self.root, self._options()):
                        cache.snapshot = _Snapshot.replay(None, _empty_events())
                        return cache.snapshot
                    table = DeltaTable(self.root, storage_options=self._options())
                    _check_schema(table, self.root)
                    cache.table = table
                else:
                    cache.table.update_incremental()
                version = cache.table.version()
                if cache.snapshot is None or cache.snapshot.version != version:
                    events = _read_events(cache.table)
                    cache.loads += 1
                    cache.snapshot = _Snapshot.replay(version, events)
            except StoreError:
                raise
            except Exception as exc:  # a damaged log must never read as an empty registry
                cache.table = None
                raise StoreError(
                    f"registry at {self.root} cannot be read: {self._reason(exc)}"
                ) from None
            return cache.snapshot

    def _write(
        self,
        note: _Note,
        plan: Callable[[_Snapshot], list[dict[str, Any]]],
        watched: Callable[[_Snapshot, _Snapshot], Any],
        model: tuple[str, str] | None,
        scope: tuple[str, str | None] | None = None,
    ) -> list[dict[str, Any]]:
        """Validate ``plan`` on the newest registry and commit its rows as the next
        version, provided what the write depends on is as this object last saw it:
        ``watched(view, latest)`` reads it from ``view`` (``latest`` only locates the model,
        e.g. its scope, when the object has not seen it yet)."""
        self._check_atomic_commits()
        with self._cache.lock:
            base = self._cache.snapshot or self._snapshot()
            wait = BACKOFF_SECONDS[0]
            for _attempt in range(COMMIT_ATTEMPTS):
                snapshot = self._snapshot()
                if watched(base, snapshot) != watched(snapshot, snapshot):
                    raise RegistryConflictError(_conflict(self.root, base, snapshot, model, scope))
                rows = plan(snapshot)
                if snapshot.version is None:  # valid: only now create the empty table
                    self._create_table()
                    continue
                version = snapshot.version + 1
                for row in rows:
                    row["version"] = version
                if self._append(rows, note, snapshot.version):
                    self._snapshot()
                    return rows
                time.sleep(wait * random.uniform(0.5, 1.5))
                wait = min(2 * wait, BACKOFF_SECONDS[1])
            raise StoreError(
                f"registry at {self.root}: {note.operation} still losing to concurrent writers "
                f"after {COMMIT_ATTEMPTS} attempts; nothing was written"
            )

    def _check_atomic_commits(self) -> None:
        """Refuse to write where a commit is not put-if-absent: with an unsafe rename two
        writers can both create version N+1 and both promotions would seem to win."""
        unsafe = (self.storage_options or {}).get("AWS_S3_ALLOW_UNSAFE_RENAME", "")
        if str(unsafe).strip().lower() in ("1", "true", "yes"):
            raise StoreError(
                f"registry at {self.root}: AWS_S3_ALLOW_UNSAFE_RENAME is set, so commits are "
                "not atomic and two promotions could both win; unset it for the registry"
            )

    def _append(self, rows: list[dict[str, Any]], note: _Note, read_version: int) -> bool:
        """Commit ``rows`` as version ``read_version + 1``; False when another writer
        committed that version first (nothing of ours is in the log then)."""
        from deltalake import CommitProperties, write_deltalake
        from deltalake.exceptions import CommitFailedError

        table = pa.Table.from_pylist(rows, schema=REGISTRY_SCHEMA)
        write_id = uuid.uuid4().hex
        metadata = {
            "regimes.operation": note.operation,
            "regimes.actor": note.actor,
            "regimes.write_id": write_id,
        }
        try:
            write_deltalake(
                self._cache.table,
                table,
                mode="append",
                commit_properties=CommitProperties(custom_metadata=metadata, max_commit_retries=0),
            )
        except CommitFailedError as exc:
            latest = self._snapshot().version
            if latest == read_version:  # not a lost race: a real failure
                raise StoreError(
                    f"registry at {self.root}: the {note.operation} was not recorded: "
                    f"{self._reason(exc)}"
                ) from None
            # The version may be our own: the store wrote the commit but its answer was
            # lost (a 503 or a timeout), and the client's retry of the put-if-absent
            # found the version taken. That is a success, not a race lost to ourselves.
            return self._committed(write_id, read_version + 1, latest)
        except Exception as exc:
            self._cache.table = None
            raise StoreError(
                f"registry at {self.root}: the {note.operation} was not recorded: "
                f"{self._reason(exc)}"
            ) from None
        return True

    def _committed(self, write_id: str, version: int, latest: int) -> bool:
        """Whether commit ``version`` is the write tagged ``write_id``."""
        for commit in self._cache.table.history(limit=latest - version + 1):
            if commit.get("version") == version:
                return commit.get("regimes.write_id") == write_id
        return False

    def _create_table(self) -> None:
        """Create the empty table (version 0) for the first write."""
        from deltalake import CommitProperties, DeltaTable

        try:
            DeltaTable.create(
                self.root,
                REGISTRY_SCHEMA,
                mode="ignore",
                name="registry",
                description="model role transitions per timeframe and symbol",
                configuration=_TABLE_CONFIGURATION,
                storage_options=self._options(),
                # a racer's create must fail, not be retried as an empty version 1
                commit_properties=CommitProperties(max_commit_retries=0),
            )
        except Exception as exc:
            try:
                made = DeltaTable.is_deltatable(self.root, self._options())  # by a racer
            except Exception:
                made = False
            if not made:
                raise StoreError(
                    f"cannot create the registry at {self.root}: {self._reason(exc)}"
                ) from None


def _empty_events() -> pd.DataFrame:
    return REGISTRY_SCHEMA.empty_table().to_pandas()


def _read_events(table) -> pd.DataFrame:
    events = table.to_pyarrow_table().to_pandas()
    events = events.astype({"symbol": object, "from_role": object, "artifact_path": object})
    events = events.where(events.notna(), None)
    # stable: the rows of one commit keep their written order (a retirement before the promotion)
    return events.sort_values("version", kind="stable").reset_index(drop=True)


def _check_schema(table, root: str) -> None:
    names = pa.schema(table.schema().to_arrow()).names
    if "to_status" in names:
        raise StoreError(
            f"registry at {root} was written by an older regimes (column to_status, role "
            f"'production'); this version cannot read it: move it aside (e.g. mv {root} "
            f"{root}.old) and register the models again (`regimes train` registers candidates)"
        )
    if names != REGISTRY_SCHEMA.names:
        raise StoreError(f"registry at {root} has another schema than this version writes: {names}")
