"""The SQL data layer (SQLAlchemy 2): ``bars``, ``computed_features``, ``current_states``.

This is the only module that imports SQLAlchemy. Any SQLAlchemy URL works; SQLite is
the embedded default and PostgreSQL is tested. Every write is an idempotent upsert in
one transaction: writing the same rows twice changes nothing, and a failed write
leaves the table as it was.

Timestamps are stored as timezone-aware UTC (``timestamptz`` on PostgreSQL; on SQLite,
which has no time zones, as UTC text) and always come back as UTC-aware pandas
timestamps.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.types import TypeDecorator

from regimes.answers import CURRENT_STATE_COLUMNS, field_named
from regimes.config.spec import FIXED_FEATURES
from regimes.errors import BadInputError, StoreError
from regimes.paths import check_symbol
from regimes.timeframes import check_timeframe

logger = logging.getLogger(__name__)

BAR_COLUMNS: tuple[str, ...] = (
    "symbol",
    "timeframe",
    "ts",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "is_gap",
)
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
FEATURE_KEY: tuple[str, ...] = ("symbol", "timeframe", "ts")
_ROWS_PER_STATEMENT = 5000


class UTCDateTime(TypeDecorator):
    """A timestamp that must be timezone-aware going in and is UTC-aware coming out."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, pd.Timestamp):
            value = value.to_pydatetime()
        if value.tzinfo is None or value.utcoffset() is None:
            raise StoreError(f"refusing a naive timestamp {value!r}: timestamps must be UTC-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = MetaData()

bars = Table(
    "bars",
    metadata,
    Column("symbol", String(64), primary_key=True),
    Column("timeframe", String(8), primary_key=True),
    Column("ts", UTCDateTime(), primary_key=True),
    Column("open", Float(53), nullable=True),
    Column("high", Float(53), nullable=True),
    Column("low", Float(53), nullable=True),
    Column("close", Float(53), nullable=True),
    Column("volume", Float(53), nullable=False),
    Column("is_gap", Boolean, nullable=False, default=False),
)

computed_features = Table(
    "computed_features",
    metadata,
    Column("symbol", String(64), primary_key=True),
    Column("timeframe", String(8), primary_key=True),
    Column("ts", UTCDateTime(), primary_key=True),
    *[Column(name, Float(53), nullable=True) for name in FIXED_FEATURES],
    Column("is_warmup", Boolean, nullable=False, default=False),
    Column("is_gap", Boolean, nullable=False, default=False),
    Column("feature_spec_version", Integer, nullable=False),
    Column("feature_spec_sha256", String(64), nullable=False, default=""),
)

symbols = Table(
    "symbols",
    metadata,
    Column("symbol", String(64), primary_key=True),
    Column("market", String(64), nullable=False),
)
"""The market each symbol was ingested or generated in (``--market``; ``docs/data.md``)."""

_SQL_TYPES = {"timestamp": UTCDateTime, "int64": Integer, "bool": Boolean}
_NAME_LENGTHS = {"symbol": 64, "timeframe": 8, "model_id": 64}


def _answer_column(name: str) -> Column:
    """A ``current_states`` column from the answer schema (:mod:`regimes.answers`).

    Every mirrored value is NOT NULL: the mirror stores ``state_prob`` 0.0 for an
    UNKNOWN answer without a posterior (see ``latest_per_symbol``).
    """
    field = field_named(name)
    if field.dtype == "string":
        sql_type = String(_NAME_LENGTHS[name])
    elif field.dtype == "float64":
        sql_type = Float(53)
    else:
        sql_type = _SQL_TYPES[field.dtype]()
    return Column(name, sql_type, primary_key=name in ("symbol", "timeframe"), nullable=False)


current_states = Table(
    "current_states",
    metadata,
    *[_answer_column(name) for name in CURRENT_STATE_COLUMNS],
    Column("updated_at", UTCDateTime(), nullable=False),
)


# --------------------------------------------------------------------------- engine


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (also for URLs that do not parse)."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", str(url))


def make_engine(url: str) -> Engine:
    """Create an engine for ``url``; for SQLite the parent directory is created.

    Raises
    ------
    StoreError
        When the URL is malformed or names a driver that is not installed.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(
            f"database URL {mask_url(url)!r} is not a valid SQLAlchemy URL: {exc}"
        ) from None
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            folder = Path(parsed.database).expanduser().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the database folder {folder}: {exc.strerror or exc}"
                ) from None
        kwargs["connect_args"] = {"timeout": 60}
    elif parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        # psycopg (3) is the installed driver; plain postgresql:// would ask for psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        engine = create_engine(parsed, future=True, pool_pre_ping=True, **kwargs)
    except (ArgumentError, ImportError) as exc:
        raise StoreError(f"cannot use database URL {mask_url(url)!r}: {exc}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "handle_error", _lost_connection)
    return engine


def _lost_connection(context) -> None:
    """A connection that dropped mid-statement (server gone, network cut) raises a
    :class:`StoreError` naming the database, wherever it happened (a read or a write):
    the transaction in progress rolled back on the server, so nothing of it is stored.
    SQLAlchemy still invalidates the connection, and the pool's pre-ping replaces it."""
    if context.is_disconnect and context.engine is not None:
        raise StoreError(
            f"lost the connection to the database at {describe(context.engine)}; the "
            f"transaction in progress rolled back, nothing of it was written: "
            f"{str(context.original_exception).strip().splitlines()[0]}"
        )


def _sqlite_pragmas(dbapi_connection, _record):
    cursor = dbapi_connection.cursor()
    # WAL lets readers (the service, a report) read while a writer (ingest) writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_schema(engine: Engine) -> None:
    """Create the three tables if they do not exist, and add columns that a database made
    by an earlier version lacks (idempotent)."""
    try:
        metadata.create_all(engine)
        _add_missing_columns(engine)
    except OperationalError as exc:
        raise StoreError(f"cannot create the schema at {describe(engine)}: {exc.orig}") from None


# Columns added after a table first shipped, with the value existing rows get.
_ADDED_COLUMNS = {("computed_features", "feature_spec_sha256"): "''"}


def _add_missing_columns(engine: Engine) -> None:
    inspector = inspect(engine)
    for (table_name, column_name), default in _ADDED_COLUMNS.items():
        present = {c["name"] for c in inspector.get_columns(table_name)}
        if column_name in present:
            continue
        column = metadata.tables[table_name].c[column_name]
        ddl_type = column.type.compile(dialect=engine.dialect)
        with engine.begin() as connection:
            connection.execute(
                text(
                    f"ALTER TABLE {table_name} ADD COLUMN {column_name} {ddl_type} "
                    f"NOT NULL DEFAULT {default}"
                )
            )
        logger.info("added column %s.%s to %s", table_name, column_name, describe(engine))


def describe(engine: Engine) -> str:
    """The engine's URL with any password hidden, for messages."""
    return engine.url.render_as_string(hide_password=True)


# --------------------------------------------------------------------------- upserts


def _insert_for(engine: Engine, table: Table):
    dialect = engine.dialect.name
    if dialect == "sqlite":
        return sqlite.insert(table)
    if dialect == "postgresql":
        return postgresql.insert(table)
    raise StoreError(f"upserts are implemented for sqlite and postgresql, not {dialect!r}")


def _upsert_statement(engine: Engine, table: Table, key: Sequence[str], newer_only: bool = False):
    insert = _insert_for(engine, table)
    update_columns = {c.name: insert.excluded[c.name] for c in table.columns if c.name not in key}
    where = (table.c.ts <= insert.excluded.ts) if newer_only else None
    return insert.on_conflict_do_update(index_elements=list(key), set_=update_columns, where=where)


def _check_unique(rows: list[dict[str, Any]], key: Sequence[str], table: Table) -> None:
    seen: set[tuple] = set()
    for position, row in enumerate(rows):
        identity = tuple(row[k] for k in key)
        if identity in seen:
            shown = ", ".join(f"{k}={row[k]}" for k in key)
            raise BadInputError(
                f"{table.name}: row {position + 1} repeats the key ({shown}) within one batch"
            )
        seen.add(identity)


def _write(
    engine: Engine,
    table: Table,
    rows: list[dict[str, Any]],
    key: Sequence[str],
    *,
    deletes: Sequence[Any] = (),
    newer_only: bool = False,
) -> int:
    """Run ``deletes`` then upsert ``rows``, all in one transaction."""
    if not rows and not deletes:
        return 0
    _check_unique(rows, key, table)
    statement = _upsert_statement(engine, table, key, newer_only)
    try:
        with engine.begin() as connection:
            for delete in deletes:
                connection.execute(delete)
            for start in range(0, len(rows), _ROWS_PER_STATEMENT):
                connection.execute(statement, rows[start : start + _ROWS_PER_STATEMENT])
    except SQLAlchemyError as exc:
        raise StoreError(
            f"writing {len(rows)} rows to {table.name} at {describe(engine)} failed; "
            f"nothing was written: {getattr(exc, 'orig', exc)}"
        ) from None
    return len(rows)


def _records(frame: pd.DataFrame, columns: Sequence[str]) -> list[dict[str, Any]]:
    subset = frame.loc[:, list(columns)].copy()
    subset["ts"] = subset["ts"].astype(object)  # pd.Timestamp values; bound as datetimes
    float_columns = [c for c in columns if c != "ts" and subset[c].dtype.kind == "f"]
    records = subset.to_dict("records")
    if float_columns:
        # NULL, not NaN: NaN would compare unequal to itself and is not portable SQL.
        for record in records:
            for column in float_columns:
                value = record[column]
                if value != value:
                    record[column] = None
    return records


def _require_columns(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise BadInputError(f"{what}: missing column(s) {missing}")
    if len(frame) and (frame["ts"].dt.tz is None or str(frame["ts"].dt.tz) != "UTC"):
        raise BadInputError(f"{what}: column ts must be timezone-aware UTC")


def upsert_bars(engine: Engine, frame: pd.DataFrame) -> int:
    """Insert or replace bars keyed (symbol, timeframe, ts); returns the rows written."""
    data = _bars_frame(frame)
    return _write(engine, bars, _records(data, BAR_COLUMNS), FEATURE_KEY)


def _bars_frame(frame: pd.DataFrame) -> pd.DataFrame:
    _require_columns(frame, BAR_COLUMNS, "bars")
    for symbol in frame["symbol"].unique():
        check_symbol(symbol)
    for timeframe in frame["timeframe"].unique():
        check_timeframe(timeframe)
    data = frame.loc[:, list(BAR_COLUMNS)].copy()
    data["is_gap"] = data["is_gap"].astype(bool)
    data["volume"] = data["volume"].astype(float)
    return data


def rewrite_bars(
    engine: Engine,
    frame: pd.DataFrame,
    symbols: Sequence[str],
    timeframes: Sequence[str] = (),
    gap_rows_of: Sequence[str] = (),
) -> int:
    """Replace what a producer owns, in one transaction.

    Deletes every bar of ``symbols`` in ``timeframes``, and the gap rows of ``symbols``
    in ``gap_rows_of``, then upserts ``frame``. A rerun that produces fewer rows (other
    session, fewer days) leaves nothing stale behind; a failure leaves everything as it was.
    """
    data = _bars_frame(frame)
    names = [check_symbol(s) for s in symbols]
    deletes = []
    if timeframes:
        deletes.append(
            bars.delete().where(
                bars.c.symbol.in_(names),
                bars.c.timeframe.in_([check_timeframe(t) for t in timeframes]),
            )
        )
    if gap_rows_of:
        deletes.append(
            bars.delete().where(
                bars.c.symbol.in_(names),
                bars.c.timeframe.in_([check_timeframe(t) for t in gap_rows_of]),
                bars.c.is_gap.is_(True),
            )
        )
    return _write(engine, bars, _records(data, BAR_COLUMNS), FEATURE_KEY, deletes=deletes)


FEATURE_FLAGS: tuple[str, ...] = ("is_warmup", "is_gap")


def _features_records(
    frame: pd.DataFrame, feature_spec_version: int, feature_spec_sha256: str = ""
) -> list[dict[str, Any]]:
    _require_columns(frame, (*FEATURE_KEY, "is_warmup"), "computed_features")
    unknown = [
        c
        for c in frame.columns
        if c not in (*FEATURE_KEY, *FEATURE_FLAGS) and c not in FIXED_FEATURES
    ]
    if unknown:
        raise BadInputError(f"computed_features: unknown feature column(s) {unknown}")
    data = frame.copy()
    for name in FIXED_FEATURES:
        if name not in data.columns:
            data[name] = np.nan
    data["is_warmup"] = data["is_warmup"].astype(bool)
    data["is_gap"] = data["is_gap"].astype(bool) if "is_gap" in data.columns else False
    data["feature_spec_version"] = int(feature_spec_version)
    data["feature_spec_sha256"] = str(feature_spec_sha256)
    columns = (
        *FEATURE_KEY,
        *FIXED_FEATURES,
        *FEATURE_FLAGS,
        "feature_spec_version",
        "feature_spec_sha256",
    )
    return _records(data, columns)


def upsert_features(engine: Engine, frame: pd.DataFrame, feature_spec_version: int) -> int:
    """Insert or replace feature rows keyed (symbol, timeframe, ts).

    Features not present in ``frame`` are stored as NULL (a timeframe may down-select).
    """
    records = _features_records(frame, feature_spec_version)
    return _write(engine, computed_features, records, FEATURE_KEY)


def rewrite_features(
    engine: Engine,
    frame: pd.DataFrame,
    symbol: str,
    timeframe: str,
    feature_spec_version: int,
    feature_spec_sha256: str = "",
) -> int:
    """Replace all feature rows of (symbol, timeframe) with ``frame``, in one transaction."""
    records = _features_records(frame, feature_spec_version, feature_spec_sha256)
    delete = computed_features.delete().where(
        computed_features.c.symbol == check_symbol(symbol),
        computed_features.c.timeframe == check_timeframe(timeframe),
    )
    return _write(engine, computed_features, records, FEATURE_KEY, deletes=[delete])


def upsert_current_states(engine: Engine, frame: pd.DataFrame) -> int:
    """Insert or replace the latest state per (symbol, timeframe).

    A row older than the stored one for the same key never replaces it, also when two
    writers race: the comparison is part of the upsert statement.
    """
    columns = CURRENT_STATE_COLUMNS
    _require_columns(frame, columns, "current_states")
    data = frame.loc[:, list(columns)].sort_values("ts").groupby(["symbol", "timeframe"]).tail(1)
    data = data.assign(updated_at=pd.Timestamp.now(tz="UTC"))
    records = _records(data, (*columns, "updated_at"))
    return _write(engine, current_states, records, ("symbol", "timeframe"), newer_only=True)


def publish_current_states(
    engine: Engine,
    timeframe: str,
    model_id: str,
    frame: pd.DataFrame,
    symbols: Sequence[str] | None = None,
) -> int:
    """Make ``current_states`` of ``timeframe`` (``symbols`` only, when given) hold
    ``model_id``'s states: rows of every other model are deleted and the newest row per
    symbol of ``frame`` (that model's answers) written, in one transaction. Used when the
    champion of a scope changes, so a retired model's answer never stays published."""
    timeframe = check_timeframe(timeframe)
    condition = [current_states.c.timeframe == timeframe, current_states.c.model_id != model_id]
    if symbols is not None:
        condition.append(current_states.c.symbol.in_([check_symbol(s) for s in symbols]))
    columns = CURRENT_STATE_COLUMNS
    rows: list[dict[str, Any]] = []
    if len(frame):
        _require_columns(frame, columns, "current_states")
        if set(frame["model_id"]) != {model_id} or set(frame["timeframe"]) != {timeframe}:
            raise BadInputError(
                f"current_states: only {model_id}'s {timeframe} states can be published here"
            )
        data = frame.loc[:, list(columns)].sort_values("ts").groupby("symbol").tail(1)
        rows = _records(
            data.assign(updated_at=pd.Timestamp.now(tz="UTC")), (*columns, "updated_at")
        )
    _write(
        engine,
        current_states,
        rows,
        ("symbol", "timeframe"),
        deletes=[current_states.delete().where(*condition)],
    )
    return len(rows)


# --------------------------------------------------------------------------- reads


def _as_utc(value: datetime | str | pd.Timestamp | None, what: str) -> datetime | None:
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        raise BadInputError(f"{what}: expected a timezone-aware timestamp, got {value!r}")
    return stamp.tz_convert("UTC").to_pydatetime()


def _frame(rows: list[Any], columns: Sequence[str]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows, columns=list(columns))
    for column in ("ts", "updated_at"):
        if column in frame.columns:
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def _read(
    engine: Engine,
    table: Table,
    columns: Sequence[str],
    timeframe: str | None,
    symbols: Sequence[str] | str | None,
    start: Any,
    end: Any,
) -> pd.DataFrame:
    statement = select(*[table.c[name] for name in columns])
    if timeframe is not None:
        statement = statement.where(table.c.timeframe == check_timeframe(timeframe))
    if symbols is not None:
        symbols = [symbols] if isinstance(symbols, str) else list(symbols)
        statement = statement.where(table.c.symbol.in_([check_symbol(s) for s in symbols]))
    start_utc, end_utc = _as_utc(start, "start"), _as_utc(end, "end")
    if start_utc is not None:
        statement = statement.where(table.c.ts >= start_utc)
    if end_utc is not None:
        statement = statement.where(table.c.ts < end_utc)
    statement = statement.order_by(table.c.symbol, table.c.timeframe, table.c.ts)
    try:
        with engine.connect() as connection:
            rows = connection.execute(statement).all()
    except SQLAlchemyError as exc:
        raise StoreError(
            f"reading {table.name} from {describe(engine)} failed: {getattr(exc, 'orig', exc)}"
        ) from None
    return _frame(rows, columns)


def read_bars(
    engine: Engine,
    timeframe: str | None = None,
    symbols: Sequence[str] | str | None = None,
    start: Any = None,
    end: Any = None,
) -> pd.DataFrame:
    """Bars with ``start <= ts < end`` as a DataFrame sorted by symbol, timeframe, ts.

    Gap rows carry NaN prices and ``is_gap`` True.
    """
    frame = _read(engine, bars, BAR_COLUMNS, timeframe, symbols, start, end)
    for column in (*PRICE_COLUMNS, "volume"):
        frame[column] = frame[column].astype(float)
    frame["is_gap"] = frame["is_gap"].astype(bool)
    return frame


def read_recent_bars(
    engine: Engine, timeframe: str, symbols: Sequence[str], before: Any, bars_per_symbol: int
) -> pd.DataFrame:
    """The last ``bars_per_symbol`` bars of each symbol with ``ts < before``, sorted by
    symbol and ts (the live engine's cold start of a symbol it has not seen)."""
    if bars_per_symbol < 1:
        raise BadInputError(f"bars_per_symbol: expected >= 1, got {bars_per_symbol}")
    before_utc = _as_utc(before, "before")
    frames = []
    try:
        with engine.connect() as connection:
            for symbol in symbols:
                statement = (
                    select(*[bars.c[name] for name in BAR_COLUMNS])
                    .where(bars.c.timeframe == check_timeframe(timeframe))
                    .where(bars.c.symbol == check_symbol(symbol))
                    .where(bars.c.ts < before_utc)
                    .order_by(bars.c.ts.desc())
                    .limit(int(bars_per_symbol))
                )
                frames.append(_frame(connection.execute(statement).all()[::-1], BAR_COLUMNS))
    except SQLAlchemyError as exc:
        raise StoreError(
            f"reading bars from {describe(engine)} failed: {getattr(exc, 'orig', exc)}"
        ) from None
    frames = [f for f in frames if len(f)]
    frame = pd.concat(frames, ignore_index=True) if frames else _frame([], BAR_COLUMNS)
    for column in (*PRICE_COLUMNS, "volume"):
        frame[column] = frame[column].astype(float)
    frame["is_gap"] = frame["is_gap"].astype(bool)
    return frame


def read_features(
    engine: Engine,
    timeframe: str | None = None,
    symbols: Sequence[str] | str | None = None,
    start: Any = None,
    end: Any = None,
    features: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Feature rows (plan task 2.2), optionally only some feature columns."""
    names = list(FIXED_FEATURES if features is None else features)
    unknown = [name for name in names if name not in FIXED_FEATURES]
    if unknown:
        raise BadInputError(f"unknown feature(s) {unknown}; expected names from the fixed set")
    columns = (*FEATURE_KEY, *names, *FEATURE_FLAGS, "feature_spec_version", "feature_spec_sha256")
    frame = _read(engine, computed_features, columns, timeframe, symbols, start, end)
    frame["is_warmup"] = frame["is_warmup"].astype(bool)
    frame["is_gap"] = frame["is_gap"].astype(bool)
    for name in names:
        frame[name] = frame[name].astype(float)
    return frame


def read_current_states(engine: Engine, timeframe: str | None = None) -> pd.DataFrame:
    """The ``current_states`` table."""
    columns = [c.name for c in current_states.columns]
    return _read(engine, current_states, columns, timeframe, None, None, None)


def list_symbols(engine: Engine, timeframe: str) -> list[str]:
    """Symbols that have bars of ``timeframe``, sorted."""
    statement = (
        select(bars.c.symbol)
        .where(bars.c.timeframe == check_timeframe(timeframe))
        .distinct()
        .order_by(bars.c.symbol)
    )
    with engine.connect() as connection:
        return [row[0] for row in connection.execute(statement)]


def distinct_bar_times(
    engine: Engine, timeframe: str, symbols: Sequence[str] | None = None
) -> pd.DatetimeIndex:
    """Every ts at which any symbol (of ``symbols``, default all) has a real (non-gap) bar
    of ``timeframe``, sorted."""
    statement = select(bars.c.ts).where(
        bars.c.timeframe == check_timeframe(timeframe), bars.c.is_gap.is_(False)
    )
    if symbols is not None:
        statement = statement.where(bars.c.symbol.in_(list(symbols)))
    statement = statement.distinct().order_by(bars.c.ts)
    with engine.connect() as connection:
        values = connection.execute(statement).scalars().all()
    return pd.DatetimeIndex(pd.to_datetime(values, utc=True))


def assign_markets(engine: Engine, assignments: dict[str, str]) -> None:
    """Record the market of each symbol (upsert, one transaction)."""
    if not assignments:
        return
    create_schema(engine)
    rows = [{"symbol": check_symbol(s), "market": m} for s, m in sorted(assignments.items())]
    insert = _insert_for(engine, symbols)
    statement = insert.on_conflict_do_update(
        index_elements=["symbol"], set_={"market": insert.excluded.market}
    )
    with engine.begin() as connection:
        connection.execute(statement, rows)


def read_markets(engine: Engine) -> dict[str, str]:
    """The recorded market of every symbol (empty before any was recorded)."""
    if not inspect(engine).has_table("symbols"):
        return {}
    with engine.connect() as connection:
        return dict(connection.execute(select(symbols.c.symbol, symbols.c.market)).all())


def delete_orphan_features(engine: Engine, timeframe: str) -> int:
    """Delete feature rows of (symbol, timeframe) pairs that no longer have any bars."""
    check_timeframe(timeframe)
    with_bars = select(bars.c.symbol).where(bars.c.timeframe == timeframe).distinct()
    statement = computed_features.delete().where(
        computed_features.c.timeframe == timeframe,
        computed_features.c.symbol.not_in(with_bars),
    )
    with engine.begin() as connection:
        return int(connection.execute(statement).rowcount or 0)


def features_summary(engine: Engine) -> pd.DataFrame:
    """Per (timeframe, symbol): feature rows, warm-up rows, gap rows, spec version."""
    table = computed_features
    statement = (
        select(
            table.c.timeframe,
            table.c.symbol,
            func.count().label("rows"),
            func.sum(func.cast(table.c.is_warmup, Integer)).label("warmup"),
            func.sum(func.cast(table.c.is_gap, Integer)).label("gaps"),
            func.max(table.c.feature_spec_version).label("spec_version"),
        )
        .group_by(table.c.timeframe, table.c.symbol)
        .order_by(table.c.timeframe, table.c.symbol)
    )
    with engine.connect() as connection:
        rows = connection.execute(statement).all()
    frame = pd.DataFrame.from_records(
        rows, columns=["timeframe", "symbol", "rows", "warmup", "gaps", "spec_version"]
    )
    for column in ("warmup", "gaps"):
        frame[column] = frame[column].fillna(0).astype(int)
    return frame


def bars_summary(engine: Engine) -> pd.DataFrame:
    """Per (symbol, timeframe): bars, gap bars, first and last ts."""
    statement = (
        select(
            bars.c.symbol,
            bars.c.timeframe,
            func.count().label("bars"),
            func.sum(func.cast(bars.c.is_gap, Integer)).label("gaps"),
            func.min(bars.c.ts).label("first_ts"),
            func.max(bars.c.ts).label("last_ts"),
        )
        .group_by(bars.c.symbol, bars.c.timeframe)
        .order_by(bars.c.symbol, bars.c.timeframe)
    )
    with engine.connect() as connection:
        rows = connection.execute(statement).all()
    frame = pd.DataFrame.from_records(
        rows, columns=["symbol", "timeframe", "bars", "gaps", "first_ts", "last_ts"]
    )
    frame["gaps"] = frame["gaps"].fillna(0).astype(int)
    return frame


def count_rows(engine: Engine, table_name: str) -> int:
    """Number of rows of one of the three tables."""
    table = metadata.tables[table_name]
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())
