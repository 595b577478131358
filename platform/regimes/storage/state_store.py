"""The Delta state store: every regime answer of every model, in one Delta table.

:class:`StateStore` is one Delta table under ``<home>/states/`` (or any object-store URI
the Workspace resolves from ``REGIMES_STATES_URI``) holding every regime answer, keyed
(symbol, timeframe, model_id, ts) and partitioned so that the tree on disk is::

    states/timeframe=<tf>/model_id=<id>/symbol=<sym>/date=YYYY-MM-DD/part-....parquet

(Partition directories are Hive-escaped: the ``^`` of an index ticker is ``%5E`` on
disk, ``symbol=%5EGSPC``; the column still holds ``^GSPC``.)

* Writes (:meth:`StateStore.write`) validate the whole batch first
  (:func:`regimes.storage.state_table.to_state_table`: columns, dtypes, UTC timestamps,
  z past d and p past K null, safe partition values, no duplicate keys, optionally a
  registered model) and then run **one** MERGE per batch: the batch is one
  commit, writing the same rows twice leaves one copy, and newer values replace older
  ones. A commit that loses a race to another writer is re-run on the new table version
  with jittered exponential backoff, so concurrent writers lose nothing. An empty batch
  makes no commit.
* Reads (:meth:`StateStore.read`) prune on the partition columns (only the files of the
  requested timeframe, model, symbols and days are opened) and filter ``ts`` exactly.
* Integrity: before every read or write the commit files of ``_delta_log`` since the
  newest checkpoint are checked: contiguous versions, every line a JSON action, and for
  MERGE/OPTIMIZE commits as many add/remove actions as their own metrics announce
  (:mod:`regimes.storage.delta_log`). A deleted, emptied or truncated commit raises
  :class:`~regimes.errors.StoreError` naming the file.
* Object stores: ``REGIMES_STATES_URI=s3://bucket/states`` and the standard ``AWS_*``
  variables, turned into storage options by the Workspace. On S3, delta-rs 1.x commits
  with a conditional put (``If-None-Match``), so concurrent writers need no lock table;
  ``AWS_S3_LOCKING_PROVIDER`` / ``AWS_S3_ALLOW_UNSAFE_RENAME`` / ``AWS_CONDITIONAL_PUT``
  are passed on for stores that need them.

Maintenance policy (run by the scheduled flows, never on the write path):

* :meth:`StateStore.compact` after the close of each session: every MERGE adds at least
  one small file per touched symbol-day; compaction rewrites them into one file per
  partition (``delta.targetFileSize``, 100 MB by default).
* :meth:`StateStore.vacuum` weekly with the default retention of
  :data:`DEFAULT_RETENTION_HOURS` (168 h = 7 days, Delta's own default): files that no
  version in the last 7 days references are deleted. Time travel
  (``DeltaTable.load_as_version``) stays possible within the retention window only, and a
  reader or writer running longer than the retention could lose files it still needs, so
  never shorten it below the longest job. Files left by failed or retried commits are
  unreferenced and go at the next vacuum.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from regimes.errors import BadInputError, RegimesError, StoreError
from regimes.paths import check_model_id, check_symbol, check_timeframe_name
from regimes.storage._store_errors import failure_reason, object_store_hint
from regimes.storage.delta_log import check_delta_log
from regimes.storage.registry import Registry
from regimes.storage.state_table import KEY_COLUMNS, PARTITION_COLUMNS, STATE_SCHEMA, to_state_table
from regimes.timeframes import TIMEFRAMES

logger = logging.getLogger(__name__)


# =========================================================================== state store

STATE_TABLE_CONFIGURATION = {
    "delta.deletedFileRetentionDuration": "interval 7 days",
    "delta.logRetentionDuration": "interval 7 days",
}
"""Table properties: data files and log entries both go after 7 days (see vacuum)."""
DEFAULT_RETENTION_HOURS = 168
""":meth:`StateStore.vacuum` keeps files any version of the last 7 days references."""
COMMIT_ATTEMPTS = 10
"""How often a commit that lost a race to another writer is re-run before giving up."""
BACKOFF_SECONDS = (0.05, 2.0)
"""First and longest wait between two attempts (doubling, with jitter)."""

_T = TypeVar("_T")


@dataclass(frozen=True)
class StateStore:
    """The Delta state table at ``root`` (a local path or an object-store URI).

    Parameters
    ----------
    root : str
        Where the table lives: ``<home>/states`` by default, or e.g. ``s3://bucket/states``.
    storage_options : dict or None
        deltalake storage options (credentials, endpoint) for an object store.

    Examples
    --------
    >>> store = StateStore("no-home-yet/states")
    >>> store.root, store.exists(), store.version()
    ('no-home-yet/states', False, None)
    """

    root: str
    storage_options: dict[str, str] | None = None

    # -- table state

    def exists(self) -> bool:
        """Whether a Delta table is at ``root``."""
        from deltalake import DeltaTable

        try:
            return DeltaTable.is_deltatable(self.root, self._options())
        except Exception as exc:
            raise StoreError(
                f"state store at {self.root} cannot be reached: {self._reason(exc)}"
            ) from None

    def version(self) -> int | None:
        """The table's newest version, or None when there is no table yet."""
        return self._open().version() if self.exists() else None

    def history(self) -> list[dict]:
        """The Delta commit log, newest first."""
        return self._open().history()

    # -- writes

    def write(self, frame: pd.DataFrame, d: int, K: int, registry: Registry | None = None) -> int:
        """Merge a batch of regime answers into the table; returns the rows written.

        The batch is one MERGE on (symbol, timeframe, model_id, ts): rows already stored
        are replaced, new ones inserted, in one commit. An empty batch makes no commit.

        Parameters
        ----------
        frame : pandas.DataFrame
            Rows as :meth:`regimes.live.engine.InferenceEngine.step` returns them: the
            columns of :data:`REQUIRED_COLUMNS`, ``z_00..z_{d-1}`` and ``p_00..p_{K-1}``.
        d, K : int
            The model's latent dimension and number of regimes: z_k for k >= d and p_k
            for k >= K must be absent or all null.
        registry : Registry, optional
            When given, every (timeframe, model_id) of the batch must be registered.

        Raises
        ------
        BadInputError
            The batch breaks the schema; the message names the column and row. Nothing
            is written.
        StoreError
            The table cannot be read or the commit failed.
        """
        table = to_state_table(frame, d, K)
        if table.num_rows == 0:
            return 0
        if registry is not None:
            _check_registered(table, registry)
        predicate = _merge_predicate(table)
        self._ensure_table()

        def merge(delta) -> dict:
            return (
                delta.merge(table, predicate, source_alias="s", target_alias="t")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute()
            )

        metrics = self._commit("merging states", merge)
        logger.debug("merged %d state rows into %s: %s", table.num_rows, self.root, metrics)
        return int(metrics["num_target_rows_inserted"] + metrics["num_target_rows_updated"])

    def compact(
        self,
        timeframe: str | None = None,
        model_id: str | None = None,
        *,
        target_size: int | None = None,
    ) -> dict[str, Any]:
        """Rewrite each partition's small files into few large ones; returns the metrics."""
        filters = []
        if timeframe is not None:
            filters.append(("timeframe", "=", check_timeframe_name(timeframe)))
        if model_id is not None:
            filters.append(("model_id", "=", check_model_id(model_id)))
        return self._commit(
            "compacting the state table",
            lambda delta: delta.optimize.compact(
                partition_filters=filters or None, target_size=target_size
            ),
        )

    def vacuum(
        self, retention_hours: int = DEFAULT_RETENTION_HOURS, *, dry_run: bool = False
    ) -> list[str]:
        """Delete files no version of the last ``retention_hours`` references.

        Returns the files deleted (or, with ``dry_run``, those that would be). See the
        module docstring for the policy; a retention shorter than the longest running
        reader or writer can delete files that job still needs.
        """
        if isinstance(retention_hours, bool) or not isinstance(retention_hours, int):
            raise BadInputError(f"retention_hours: expected an integer, got {retention_hours!r}")
        if retention_hours < 0:
            raise BadInputError(f"retention_hours: expected >= 0, got {retention_hours}")
        return self._commit(
            "vacuuming the state table",
            lambda delta: delta.vacuum(
                retention_hours=retention_hours,
                dry_run=dry_run,
                enforce_retention_duration=False,
            ),
        )

    # -- reads

    def read(
        self,
        timeframe: str,
        model_id: str,
        symbols: Sequence[str] | str | None = None,
        start: Any = None,
        end: Any = None,
        columns: Sequence[str] | None = None,
        as_arrow: bool = False,
    ) -> pd.DataFrame | pa.Table:
        """The states of one model, sorted by (symbol, ts).

        Only the partitions of ``timeframe``, ``model_id``, ``symbols`` (all when None)
        and the UTC days of ``[start, end)`` are opened; ``start`` is inclusive and
        ``end`` exclusive, both timezone-aware. ``columns`` selects columns (all of
        :data:`STATE_SCHEMA` when None). Returns pandas with a UTC-aware ``ts``, or an
        Arrow table with ``as_arrow``.

        Raises
        ------
        StoreError
            There is no table, or its log or data files are damaged: never an empty
            result instead.
        """
        wanted = _check_columns(columns)
        start_utc, end_utc = _as_utc(start, "start"), _as_utc(end, "end")
        dataset = self._dataset(timeframe, model_id, symbols, start_utc, end_utc)
        condition = None
        if start_utc is not None:
            condition = pc.field("ts") >= _ts_scalar(start_utc)
        if end_utc is not None:
            before_end = pc.field("ts") < _ts_scalar(end_utc)
            condition = before_end if condition is None else condition & before_end
        scanned = list(dict.fromkeys([*wanted, "symbol", "ts"]))
        try:
            table = dataset.to_table(columns=scanned, filter=condition)
        except Exception as exc:
            raise StoreError(
                f"reading states from {self.root} failed: {self._reason(exc)}"
            ) from None
        table = table.sort_by([("symbol", "ascending"), ("ts", "ascending")]).select(wanted)
        if as_arrow:
            return table
        frame = table.to_pandas()
        if "ts" in frame.columns:
            frame["ts"] = frame["ts"].astype("datetime64[ns, UTC]")
        return frame

    def files(
        self,
        timeframe: str,
        model_id: str,
        symbols: Sequence[str] | str | None = None,
        start: Any = None,
        end: Any = None,
    ) -> list[str]:
        """The data files :meth:`read` opens for these arguments (relative to ``root``)."""
        start_utc, end_utc = _as_utc(start, "start"), _as_utc(end, "end")
        return sorted(self._dataset(timeframe, model_id, symbols, start_utc, end_utc).files)

    def summary(self, timeframe: str | None = None) -> pd.DataFrame:
        """Per (timeframe, model_id): rows, symbols, first and last date, occupancy.

        ``occupancy`` maps each state_id (-1 = UNKNOWN) to its share of the rows.
        """
        import pyarrow as pa
        from deltalake import QueryBuilder

        columns = ["timeframe", "model_id", "rows", "symbols", "first_date", "last_date"]
        # deltalake's own engine (DataFusion) reads the few columns of every file in
        # parallel, ~12x faster than a pyarrow scan through the store's file system on a
        # table of many small partitions (a 1d model has one file per day).
        where = ""
        if timeframe is not None:
            where = f"WHERE timeframe = '{check_timeframe_name(timeframe)}'"
        query = QueryBuilder().register("states", self._open())
        try:
            per_model = pa.table(
                query.execute(
                    "SELECT timeframe, model_id, count(*) AS rows, count(DISTINCT symbol) AS "
                    "symbols, min(date) AS first_date, max(date) AS last_date FROM states "
                    f"{where} GROUP BY timeframe, model_id"
                ).read_all()
            )
            per_state = pa.table(
                query.execute(
                    "SELECT timeframe, model_id, state_id, count(*) AS n FROM states "
                    f"{where} GROUP BY timeframe, model_id, state_id"
                ).read_all()
            )
        except Exception as exc:
            raise StoreError(
                f"reading states from {self.root} failed: {self._reason(exc)}"
            ) from None
        if per_model.num_rows == 0:
            return pd.DataFrame(columns=[*columns, "occupancy"])
        models = ["timeframe", "model_id"]
        out = per_model.to_pandas()[columns]
        out["rows"] = out["rows"].astype("int64")
        out["symbols"] = out["symbols"].astype("int64")
        occupancy: dict[tuple[str, str], dict[int, float]] = {}
        for (tf, model), group in per_state.to_pandas().groupby(models):
            total = group["n"].sum()
            shares = sorted(zip(group["state_id"], group["n"], strict=True))
            occupancy[(tf, model)] = {int(s): float(n / total) for s, n in shares}
        keys = zip(out["timeframe"], out["model_id"], strict=True)
        out["occupancy"] = [occupancy[key] for key in keys]
        order = out["timeframe"].map(TIMEFRAMES.index)
        out = out.assign(_order=order).sort_values(["_order", "model_id"], kind="stable")
        return out.drop(columns="_order").reset_index(drop=True)

    # -- internals

    def _options(self) -> dict[str, str] | None:
        return dict(self.storage_options) if self.storage_options else None

    def _reason(self, exc: BaseException) -> str:
        """``exc`` as one line, and what to check when the object store failed."""
        reason = failure_reason(exc)
        return reason + object_store_hint(self.root, self.storage_options, reason)

    def _filesystem(self):
        import pyarrow.fs as pa_fs
        from deltalake.fs import DeltaStorageHandler

        return pa_fs.PyFileSystem(DeltaStorageHandler(self.root, self._options()))

    def _open(self):
        """The table at its newest version after checking its log (StoreError if none)."""
        from deltalake import DeltaTable

        if not self.exists():
            raise StoreError(self._no_table())
        self._check_log()
        try:
            return DeltaTable(self.root, storage_options=self._options())
        except Exception as exc:
            raise StoreError(
                f"state table at {self.root} cannot be opened: {self._reason(exc)}"
            ) from None

    def _no_table(self) -> str:
        import pyarrow.fs as pa_fs

        try:
            infos = self._filesystem().get_file_info(pa_fs.FileSelector("", allow_not_found=True))
            names = [info.base_name for info in infos]
        except Exception:  # an unreachable root is reported as "no table" below
            names = []
        if any(name.startswith("timeframe=") for name in names):
            return (
                f"state table at {self.root} has data files but no readable Delta log "
                f"({self.root.rstrip('/')}/_delta_log): restore the log, do not rewrite"
            )
        return f"no state table at {self.root}: no states were written there yet"

    def _check_log(self) -> None:
        check_delta_log(self.root, self._filesystem(), "state table", self._reason)

    def _ensure_table(self) -> None:
        """Create the table on the first write; refuse one with another schema."""
        from deltalake import DeltaTable

        if not self.exists():
            try:
                DeltaTable.create(
                    self.root,
                    STATE_SCHEMA,
                    mode="ignore",
                    partition_by=list(PARTITION_COLUMNS),
                    name="states",
                    description="regime answers keyed (symbol, timeframe, model_id, ts)",
                    configuration=STATE_TABLE_CONFIGURATION,
                    storage_options=self._options(),
                )
            except Exception as exc:
                if not self.exists():  # else another writer created it first: fine
                    raise StoreError(
                        f"cannot create the state table at {self.root}: {self._reason(exc)}"
                    ) from None
        stored = pa.schema(self._open().schema().to_arrow())
        expected = [(field.name, field.type) for field in STATE_SCHEMA]
        if [(field.name, field.type) for field in stored] != expected:
            raise StoreError(
                f"state table at {self.root} has another schema than this version writes: "
                f"{stored.names}"
            )

    def _commit(self, what: str, operation: Callable[[Any], _T]) -> _T:
        """Run ``operation`` on the newest table; re-run it when another commit won."""
        from deltalake.exceptions import CommitFailedError

        wait = BACKOFF_SECONDS[0]
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            delta = self._open()
            try:
                return operation(delta)
            except CommitFailedError as exc:
                if attempt == COMMIT_ATTEMPTS:
                    raise StoreError(
                        f"{what} at {self.root}: still in conflict with concurrent writers "
                        f"after {attempt} attempts: {self._reason(exc)}"
                    ) from None
                logger.info(
                    "%s at %s: commit conflict (attempt %d of %d), retrying: %s",
                    what,
                    self.root,
                    attempt,
                    COMMIT_ATTEMPTS,
                    failure_reason(exc),
                )
                time.sleep(wait * random.uniform(0.5, 1.5))
                wait = min(2 * wait, BACKOFF_SECONDS[1])
            except RegimesError:
                raise
            except Exception as exc:
                raise StoreError(f"{what} at {self.root} failed: {self._reason(exc)}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _open_dataset(self, filters: list[tuple] | None):
        delta = self._open()
        try:
            return delta.to_pyarrow_dataset(file_pruning_predicate=filters or None)
        except Exception as exc:
            raise StoreError(
                f"state table at {self.root} cannot be scanned: {self._reason(exc)}"
            ) from None

    def _dataset(
        self,
        timeframe: str,
        model_id: str,
        symbols: Sequence[str] | str | None,
        start: pd.Timestamp | None,
        end: pd.Timestamp | None,
    ):
        """A dataset of exactly the partitions the arguments select."""
        filters: list[tuple] = [
            ("timeframe", "=", check_timeframe_name(timeframe)),
            ("model_id", "=", check_model_id(model_id)),
        ]
        if symbols is not None:
            symbols = [symbols] if isinstance(symbols, str) else list(symbols)
            if not symbols:
                raise BadInputError("symbols: empty list; pass None for every symbol")
            filters.append(("symbol", "in", sorted({check_symbol(s) for s in symbols})))
        if start is not None:
            filters.append(("date", ">=", start.date().isoformat()))
        if end is not None:
            last = end.ceil("us") - pd.Timedelta(microseconds=1)
            filters.append(("date", "<=", last.date().isoformat()))
        return self._open_dataset(filters)


# --------------------------------------------------------------------------- validation


def _check_registered(table: pa.Table, registry: Registry) -> None:
    known = registry.current()
    registered = set(zip(known["timeframe"], known["model_id"], strict=True))
    pairs = table.group_by(["timeframe", "model_id"]).aggregate([]).to_pylist()
    for pair in pairs:
        if (pair["timeframe"], pair["model_id"]) not in registered:
            raise BadInputError(
                f"states: model_id {pair['model_id']} ({pair['timeframe']}) is not in the "
                f"registry at {registry.root}; register the model before writing its states"
            )


def _merge_predicate(table: pa.Table) -> str:
    """Join on the key, and name the batch's partition values so the MERGE prunes."""
    join = " AND ".join(f"t.{c} = s.{c}" for c in (*KEY_COLUMNS, "date"))
    prune = " AND ".join(
        f"t.{c} IN ({', '.join(_sql_string(v) for v in sorted(pc.unique(table[c]).to_pylist()))})"
        for c in PARTITION_COLUMNS
    )
    return f"{join} AND {prune}"


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _check_columns(columns: Sequence[str] | None) -> list[str]:
    if columns is None:
        return list(STATE_SCHEMA.names)
    columns = [columns] if isinstance(columns, str) else list(columns)
    unknown = [c for c in columns if c not in STATE_SCHEMA.names]
    if unknown or not columns:
        raise BadInputError(f"columns: unknown {unknown}; expected names from {STATE_SCHEMA.names}")
    return list(dict.fromkeys(columns))


def _as_utc(value: Any, what: str) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise BadInputError(f"{what}: expected a timestamp, got {value!r}") from None
    if stamp is pd.NaT or stamp.tzinfo is None:
        raise BadInputError(f"{what}: expected a timezone-aware timestamp, got {value!r}")
    return stamp.tz_convert("UTC")


def _ts_scalar(stamp: pd.Timestamp) -> pa.Scalar:
    """``stamp`` rounded up to the store's microseconds (exact for bounds on stored ts)."""
    return pa.scalar(stamp.ceil("us").value // 1000, pa.timestamp("us", tz="UTC"))
